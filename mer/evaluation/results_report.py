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
from mer.evaluation.results import (
    SEARCH_NOTE,
    STAT_NOTE,
    Experiment,
    entry_scores,
    leaderboard,
    nested,
    records,
    summary,
    top_config,
)
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
            what = " ".join(f"{k}={params.get(k)}" for k in space)
        table.append(
            {
                "rank": "" if r.get("rank") is None else r["rank"],
                "config": r["config_id"] if r["kind"] != "baseline" else "-",
                "settings": what,
                "folds x seeds": f"{r['folds_done']}/{r['folds_total']} x {r['seeds_done']}",
                "UF1": interval_text(r, "uf1"),
                "UAR": interval_text(r, "uar"),
                "standing": r.get("standing") or ("partial" if r["status"] != "complete" else ""),
            }
        )
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        lines.append(pd.DataFrame(table).to_string(index=False))
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
    """Intervals of every complete entry with the baselines as reference lines, per-seed
    points, the top configuration's confusion matrix, UF1 against gamma and freeze."""
    private_matplotlib_cache()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    storage.makedirs(out_dir)
    board = leaderboard(exp)
    written = []
    complete = board[board["status"] == "complete"] if len(board) else board
    if not len(complete):
        return written
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

    fig, ax = plt.subplots(figsize=(6, 0.5 * len(methods) + 1.8))
    y = np.arange(len(methods))[::-1]
    err = np.array([methods["uf1"] - methods["uf1_lo"], methods["uf1_hi"] - methods["uf1"]])
    ax.errorbar(methods["uf1"], y, xerr=err, fmt="o", capsize=3, color="tab:blue")
    ax.set_yticks(
        y, [f"{c} ({s})" for c, s in zip(methods["config_id"], methods["standing"], strict=True)]
    )
    reference_lines(ax, vertical=True)
    ax.set_xlabel("pooled UF1, mean over seeds, 95 % subject bootstrap (loso-search)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("UF1 per configuration")
    written.append(_save(fig, out_dir, "uf1_intervals.png"))

    fig, ax = plt.subplots(figsize=(6, 0.5 * len(complete) + 1.8))
    for i, (_, r) in enumerate(complete.iloc[::-1].iterrows()):
        seeds = entry_scores(exp, r["config_id"])["per_seed"]
        xs = [s["uf1"] for s in seeds if "uf1" in s]
        ax.scatter(xs, [i] * len(xs), color="tab:red" if r["kind"] == "baseline" else "tab:blue")
    ax.set_yticks(range(len(complete)), list(complete["config_id"].iloc[::-1]))
    ax.set_xlabel("pooled UF1 at each seed")
    ax.set_title("spread over seeds")
    written.append(_save(fig, out_dir, "uf1_per_seed.png"))

    top = top_config(exp)
    if top:
        cm = np.asarray(summarise(exp.outer(top), exp.num_classes)["confusion"])
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(cm, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center")
        names = (
            ["negative", "positive", "surprise"] if exp.num_classes == 3 else range(exp.num_classes)
        )
        ax.set_xticks(range(exp.num_classes), names)
        ax.set_yticks(range(exp.num_classes), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"top config {top}, all seeds (loso-search)")
        written.append(_save(fig, out_dir, "confusion_top.png"))
    for param in ("gamma", "freeze"):
        if param not in methods or methods[param].isna().all():
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        err = np.array([methods["uf1"] - methods["uf1_lo"], methods["uf1_hi"] - methods["uf1"]])
        ax.errorbar(methods[param].astype(float), methods["uf1"], yerr=err, fmt="o", capsize=3)
        reference_lines(ax, vertical=False)
        ax.set_xlabel(param)
        ax.set_ylabel("pooled UF1 (loso-search)")
        ax.set_title(f"UF1 against {param}")
        ax.legend(fontsize=7)
        written.append(_save(fig, out_dir, f"uf1_vs_{param}.png"))
    return written


def _save(fig, out_dir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    uri = storage.join(out_dir, name)
    storage.write_bytes(uri, buf.getvalue())
    return uri


def write_report(exp: Experiment, out: str) -> dict:
    """leaderboard.json / leaderboard.csv / plots/*.png under `out` (local or s3://)."""
    s = summary(exp)
    storage.write_json(storage.join(out, "leaderboard.json"), s)
    storage.write_bytes(
        storage.join(out, "leaderboard.csv"), leaderboard(exp).to_csv(index=False).encode()
    )
    s["plots"] = plots(exp, storage.join(out, "plots"))
    return s
