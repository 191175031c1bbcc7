"""Reports of a search experiment: the text leaderboard, the plots, the report folder.

`mer.evaluation.results` loads an experiment and computes every score and the JSON summary from its
saved predictions; this module only renders them: the printed table, plots/*.png, and the
report folder (leaderboard.json, leaderboard.csv, plots/). Every output names its protocol
(SEARCH_NOTE) and how its intervals were made (STAT_NOTE).
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import sys
import tempfile

import numpy as np
import pandas as pd

from mer import storage
from mer.errors import InputError
from mer.evaluation import html_page as h
from mer.evaluation.results import (
    SEARCH_NOTE,
    STAT_NOTE,
    Experiment,
    entry_scores,
    label,
    leaderboard,
    nested,
    records,
    summary,
    top_config,
)
from mer.keyframes.inspection import KeyframeGrid, keyframe_grid
from mer.metrics import summarise


def interval_text(r: dict, metric: str) -> str:
    """'mean +- SD [lo, hi]' of one metric of a summary row, '-' when it has no score."""
    if r.get(metric) is None or (isinstance(r.get(metric), float) and np.isnan(r[metric])):
        return "-"
    text = f"{r[metric]:.3f} +- {r.get(f'{metric}_sd') or 0:.3f}"
    lo, hi = r.get(f"{metric}_lo"), r.get(f"{metric}_hi")
    if lo is not None and not np.isnan(lo):
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def class_f1_text(exp: Experiment, r: dict) -> str:
    """'0.512 / 0.301 / 0.644': each class's F1 (mean over seeds), in class order."""
    values = [r.get(f"f1[{c}]") for c in exp.class_names]
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        return "-"
    return " / ".join(f"{v:.3f}" for v in values)


def format_table(exp: Experiment) -> str:
    """The leaderboard as text: protocol, statistics, baselines, incomplete rows apart."""
    board = leaderboard(exp)
    lines = [
        f"experiment {exp.meta.get('experiment')} ({exp.uri}), status: {exp.meta.get('status')}",
        f"protocol: {SEARCH_NOTE}",
        f"scores: {STAT_NOTE}; seeds {exp.seeds}",
    ]
    if not len(board):
        lines.append("no configuration has finished a fold yet")
        return "\n".join(lines)
    space = list(exp.meta.get("space", {}))
    table = []
    for r in records(board):
        if r["kind"] == "baseline":
            what = f"baseline: {r['config_id']}"
        else:
            params = exp.params[r["config_id"]]
            what = " ".join(f"{k}={params.get(k)}" for k in space or params)
        table.append(
            {
                "rank": "" if r.get("rank") is None else r["rank"],
                "config": r["config_id"] if r["kind"] != "baseline" else "-",
                "settings": what,
                "folds x seeds": f"{r['folds_done']}/{r['folds_total']} x {r['seeds_done']}",
                "UF1": interval_text(r, "uf1"),
                "UAR": interval_text(r, "uar"),
                "F1 per class": class_f1_text(exp, r),
                "standing": r.get("standing") or ("partial" if r["status"] != "complete" else ""),
            }
        )
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        lines.append(pd.DataFrame(table).to_string(index=False))
    lines.append(f"F1 per class ({' / '.join(exp.class_names)}): mean over seeds")
    if (board["status"] != "complete").any():
        lines.append("PARTIAL: rows marked partial have not finished every fold at every seed")
    if exp.meta.get("protocol") == "nested":
        n = nested(exp)
        if n.get("folds_done"):
            lines.append(
                f"{n['protocol']} (honest estimate: configuration chosen per held-out subject "
                f"on inner folds only): UF1 {interval_text(n, 'uf1')}  UAR {interval_text(n, 'uar')} "
                f"({n['folds_done']}/{n['folds_total']} folds)"
            )
    return "\n".join(lines)


def private_matplotlib_cache() -> None:
    """Unless the user chose one, matplotlib's font cache goes to a temporary folder removed
    at exit instead of ~/.cache: a run on a cluster leaves no file outside its S3 root."""
    if "MPLCONFIGDIR" in os.environ or "matplotlib" in sys.modules:
        return
    folder = tempfile.mkdtemp(prefix="mer-mpl-")
    os.environ["MPLCONFIGDIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def plots(exp: Experiment, out_dir: str) -> list[str]:
    """Write plot_images' PNGs to `out_dir` (local or s3://); returns their URIs."""
    storage.makedirs(out_dir)
    written = []
    for name, png in plot_images(exp).items():
        uri = storage.join(out_dir, name)
        storage.write_bytes(uri, png)
        written.append(uri)
    return written


def plot_images(exp: Experiment) -> dict[str, bytes]:
    """{file name: PNG}: intervals of every complete entry with the baselines as reference
    lines, per-seed points, the top configuration's confusion matrix, and UF1 against each
    searched number that takes more than one value among the complete configurations."""
    private_matplotlib_cache()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = leaderboard(exp)
    out: dict[str, bytes] = {}
    complete = board[board["status"] == "complete"] if len(board) else board
    if not len(complete):
        return out
    methods = complete[complete["kind"] == "method"]
    baselines = complete[complete["kind"] == "baseline"]
    colours = {"majority": "grey", "linear": "tab:red"}

    def reference_lines(ax, vertical: bool) -> None:
        for _, b in baselines.iterrows():
            line = ax.axvline if vertical else ax.axhline
            line(
                b["uf1"],
                ls="--",
                color=colours.get(b["config_id"], "k"),
                label=f"baseline: {b['config_id']}",
            )

    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(methods) + 1.8))
    y = np.arange(len(methods))[::-1]
    err = np.array([methods["uf1"] - methods["uf1_lo"], methods["uf1_hi"] - methods["uf1"]])
    ax.errorbar(methods["uf1"], y, xerr=err, fmt="o", capsize=3, color="tab:blue")
    ax.set_yticks(
        y,
        [
            f"{label(exp, c)} {s}"
            for c, s in zip(methods["config_id"], methods["standing"], strict=True)
        ],
        fontsize=8,
    )
    reference_lines(ax, vertical=True)
    ax.set_xlabel("pooled UF1, mean over seeds, 95 % subject bootstrap (loso-search)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("UF1 per configuration")
    out["uf1_intervals.png"] = figure_png(fig)

    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(complete) + 1.8))
    for i, (_, r) in enumerate(complete.iloc[::-1].iterrows()):
        seeds = entry_scores(exp, r["config_id"])["per_seed"]
        xs = [s["uf1"] for s in seeds if "uf1" in s]
        ax.scatter(xs, [i] * len(xs), color="tab:red" if r["kind"] == "baseline" else "tab:blue")
    ax.set_yticks(
        range(len(complete)), [label(exp, c) for c in complete["config_id"].iloc[::-1]], fontsize=8
    )
    ax.set_xlabel("pooled UF1 at each seed")
    ax.set_title("spread over seeds")
    out["uf1_per_seed.png"] = figure_png(fig)

    top = top_config(exp)
    if top:
        cm = np.asarray(summarise(exp.outer(top), exp.num_classes)["confusion"])
        fig, ax = plt.subplots(figsize=(4.8, 4.8))
        ax.imshow(cm, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                dark = cm[i, j] > cm.max() / 2
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="w" if dark else "k")
        names = exp.class_names
        ax.set_xticks(range(exp.num_classes), names)
        ax.set_yticks(range(exp.num_classes), names, rotation=90, va="center")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        # Two short lines: the settings can be long, and a title wider than the axes is cut.
        ax.set_title(f"top configuration, all seeds (loso-search)\n{label(exp, top)}", fontsize=8)
        out["confusion_top.png"] = figure_png(fig)
    for param in exp.meta.get("space") or ("gamma", "freeze"):
        if param not in methods or not _varies(methods[param]):
            continue  # one value: nothing to draw UF1 against
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        err = np.array([methods["uf1"] - methods["uf1_lo"], methods["uf1_hi"] - methods["uf1"]])
        ax.errorbar(methods[param].astype(float), methods["uf1"], yerr=err, fmt="o", capsize=3)
        reference_lines(ax, vertical=False)
        ax.set_xlabel(param)
        ax.set_ylabel("pooled UF1 (loso-search)")
        ax.set_title(f"UF1 against {param}")
        ax.legend(fontsize=7)
        out[f"uf1_vs_{param}.png"] = figure_png(fig)
    return out


def _varies(values: pd.Series) -> bool:
    """A numeric parameter with more than one value."""
    v = pd.to_numeric(values, errors="coerce")
    return bool(v.notna().all() and v.nunique() > 1)


def figure_png(fig, dpi: int = 120) -> bytes:
    """A matplotlib figure, laid out tight, as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


KEYFRAMES_PNG = "keyframes.png"


def keyframe_sheet(exp: Experiment) -> KeyframeGrid | str | None:
    """A few clips' key frames (one per class) from the key-frame table the experiment
    trained on (its _experiment.json names it); the reason where that table cannot be read
    (moved, deleted); None where the experiment names no table."""
    uri = exp.meta.get("keyframes")
    if not uri:
        return None
    private_matplotlib_cache()
    try:
        return keyframe_grid(uri, exp.class_names, seed=0)
    except InputError as e:
        return str(e)


def write_report(exp: Experiment, out: str) -> dict:
    """leaderboard.json, leaderboard.csv, plots/*.png (keyframes.png: the key-frame grid)
    and report.html (one self-contained page) under `out` (local or s3://)."""
    s = summary(exp)
    storage.write_json(storage.join(out, "leaderboard.json"), s)
    storage.write_bytes(
        storage.join(out, "leaderboard.csv"), leaderboard(exp).to_csv(index=False).encode()
    )
    images = plot_images(exp)
    sheet = keyframe_sheet(exp)
    storage.makedirs(storage.join(out, "plots"))
    s["plots"] = []
    pngs = {**images, **({KEYFRAMES_PNG: sheet.png} if isinstance(sheet, KeyframeGrid) else {})}
    for name, png in pngs.items():
        s["plots"].append(storage.join(out, "plots", name))
        storage.write_bytes(s["plots"][-1], png)
    s["report"] = storage.join(out, "report.html")
    storage.write_bytes(s["report"], html_report(exp, images, sheet).encode())
    return s


SCORE_KEYS = ("uf1", "uf1_sd", "uf1_lo", "uf1_hi", "uar", "uar_sd", "uar_lo", "uar_hi")
PLOT_CAPTIONS = {
    "uf1_intervals.png": "UF1 of each configuration with its 95 % interval; dashed: baselines",
    "uf1_per_seed.png": "UF1 at each seed: the spread a single run would hide",
    "confusion_top.png": "confusion matrix of the top configuration, all seeds pooled",
}


def html_report(
    exp: Experiment,
    images: dict[str, bytes] | None = None,
    sheet: KeyframeGrid | str | None = None,
) -> str:
    """One self-contained page: protocol and what the numbers support, the leaderboard with
    intervals and baselines, per-class F1, the nested estimate, the per-dataset breakdown,
    the plots and a few clips' key frames (inline). Every number is summary(exp)'s, rounded
    to three decimals. `images`: plot_images(exp), `sheet`: keyframe_sheet(exp), made here
    when not given."""
    s = summary(exp)
    images = plot_images(exp) if images is None else images
    sheet = keyframe_sheet(exp) if sheet is None else sheet
    rows = s["leaderboard"] + s["incomplete"]
    name = s.get("experiment") or exp.uri
    folds, seeds = s["folds_total"], s["seeds"]
    facts = [f"Experiment {name} at {exp.uri}", f"status {s.get('status')}"]
    if exp.meta.get("dataset"):
        facts.append(f"dataset {exp.meta['dataset']}")
    facts.append(f"{folds} leave-one-subject-out folds x seeds {seeds}")
    if exp.meta.get("space"):
        how = exp.meta.get("algorithm") or "search"
        facts.append(f"{how} over {exp.meta['space']}")
    about = h.paragraph("; ".join(facts) + ".")
    support = [
        f"Protocol: {SEARCH_NOTE}.",
        f"Scores: {STAT_NOTE}.",
        "No configuration is called best: those marked 'tied' cannot be told apart from the "
        "top one at this number of subjects and seeds.",
        "A claim that one row beats another needs a paired comparison on the same folds and "
        "seeds: python jobs/results.py <experiment> --compare A B (difference, interval, p).",
    ]
    if s.get("partial"):
        support.append("PARTIAL: some rows have not finished every fold at every seed.")
    headers = ["rank", "settings", "folds x seeds", "UF1", "SD", "low", "high"]
    headers += ["UAR", "SD", "low", "high"]
    headers += [f"F1 {c}" for c in exp.class_names] + ["standing"]
    body, classes = [], []
    for r in rows:
        e = r["config_id"]
        cells: list = [
            "" if r.get("rank") is None else str(r["rank"]),
            label(exp, e),
            f"{r['folds_done']}/{r['folds_total']} x {r['seeds_done']}",
        ]
        cells += [h.number(r.get(k), e, k) for k in SCORE_KEYS]
        cells += [h.number(r.get(f"f1[{c}]"), e, f"f1[{c}]") for c in exp.class_names]
        cells.append(r.get("standing") or ("partial" if r["status"] != "complete" else ""))
        body.append(cells)
        kind = "baseline" if r["kind"] == "baseline" else ""
        classes.append("partial" if r["status"] != "complete" else kind)
    parts = [
        h.section("About", about),
        h.section("What the numbers can support", h.items(support)),
        h.section(
            "Leaderboard (loso-search)",
            h.table(headers, body, classes),
            h.paragraph(
                "UF1 and UAR: mean over seeds, SD over seeds, [low, high] the 95 % "
                "subject-level bootstrap interval; F1 per class: mean over seeds.",
                "note",
            ),
        ),
    ]
    n = s.get("nested")
    if n and n.get("folds_done"):
        cells = [h.number(n.get(k), "nested", k) for k in SCORE_KEYS]
        parts.append(
            h.section(
                "Nested estimate (honest)",
                h.paragraph(
                    f"{n['protocol']}: for each held-out subject the configuration is chosen "
                    f"on inner folds of the other subjects only ({n['folds_done']} of "
                    f"{n['folds_total']} folds)."
                ),
                h.table(["UF1", "SD", "low", "high", "UAR", "SD", "low", "high"], [cells]),
            )
        )
    datasets = sorted({k[4:-1] for r in rows for k in r if k.startswith("uf1[")})
    if datasets:
        body = [
            [label(exp, r["config_id"])]
            + [h.number(r.get(f"uf1[{d}]"), r["config_id"], f"uf1[{d}]") for d in datasets]
            for r in rows
        ]
        parts.append(
            h.section("UF1 per dataset (mean over seeds)", h.table(["entry", *datasets], body))
        )
    if images:
        figures = [
            h.image(png, PLOT_CAPTIONS.get(fname, fname.removesuffix(".png").replace("_", " ")))
            for fname, png in images.items()
        ]
        parts.append(h.section("Plots", *figures))
    if sheet is not None:
        parts.append(keyframes_section(sheet))
    return h.page(f"Experiment {name}", *parts)


def keyframes_section(sheet: KeyframeGrid | str) -> str:
    """The key-frame grid with a table of its rows (clip, class, apex, positions), or why
    there is none."""
    if isinstance(sheet, str):
        return h.section("Key frames", h.paragraph(f"Not drawn: {sheet}", "note"))
    body = [
        [
            c.name,
            h.Cell(c.class_name, c.name, "keyframes.class"),
            h.Cell(str(c.apex), c.name, "keyframes.apex"),
            h.Cell(", ".join(f"{p:g}" for p in c.positions), c.name, "keyframes.positions"),
        ]
        for c in sheet.clips
    ]
    return h.section(
        "Key frames",
        h.paragraph(
            f"{len(sheet.clips)} clips (one per class, seeded) of the key-frame table the "
            f"experiment trained on, {sheet.uri}: each row a clip's key frames as the model "
            "sees them, titled with their positions (source frames)."
        ),
        h.image(sheet.png, "key frames of a few clips; red: the key frame nearest the apex"),
        h.table(["clip", "class", "apex (source frame)", "key-frame positions"], body),
    )
