"""Query a search experiment: leaderboard, per-fold detail, nested estimate, plots.

Everything is recomputed from the saved per-clip predictions (`configs/<id>/folds/*.parquet`),
so the numbers can be checked independently and read while the search still runs (partial
rows are marked). Two protocols are reported, and every output names its own:
  loso-search  pooled LOSO score of each configuration. Choosing the best configuration by
               this score picks hyperparameters on the very folds it reports: optimistic.
  nested-loso  for each held-out subject, the configuration is chosen on inner folds of the
               other subjects only; the pooled score of those choices is an honest estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mer import storage
from mer.errors import InputError
from mer.metrics import summarise

SEARCH_NOTE = (
    "loso-search: hyperparameters chosen on the same folds that are scored (optimistic); "
    "see nested-loso for the honest estimate"
)


@dataclass
class Experiment:
    uri: str
    meta: dict
    params: dict  # config id -> parameters
    predictions: pd.DataFrame  # all fold runs of all configs, with config_id

    @property
    def num_classes(self) -> int:
        return int(self.meta.get("num_classes", 3))


def resolve(experiment: str, root: str | None = None) -> str:
    """An experiment URI, or a name under `<root>/tune/`."""
    if root and "/" not in experiment:
        return storage.join(root, "tune", experiment)
    return experiment


def load_experiment(uri: str) -> Experiment:
    meta_uri = storage.join(uri, "_experiment.json")
    if not storage.exists(meta_uri):
        raise InputError(f"{uri}: no search experiment here (_experiment.json missing)")
    meta = storage.read_json(meta_uri)
    params, frames = {}, []
    for cid in storage.listdir(storage.join(uri, "configs")):
        pu = storage.join(uri, "configs", cid, "params.json")
        if not storage.exists(pu):
            continue
        params[cid] = storage.read_json(pu)
        folder = storage.join(uri, "configs", cid, "folds")
        for f in storage.listdir(folder):
            if f.endswith(".parquet"):
                df = storage.read_parquet(storage.join(folder, f)).to_pandas()
                df["config_id"] = cid
                frames.append(df)
    preds = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            columns=[
                "dataset",
                "subject",
                "clip",
                "label",
                "pred",
                "run",
                "kind",
                "outer",
                "config_id",
            ]
        )
    )
    return Experiment(uri=uri, meta=meta, params=params, predictions=preds)


def _outer(preds: pd.DataFrame) -> pd.DataFrame:
    return preds[preds["kind"] == "outer"] if len(preds) else preds


def leaderboard(exp: Experiment) -> pd.DataFrame:
    """One row per configuration, best pooled UF1 first."""
    total = len(exp.meta.get("folds", []))
    rows = []
    for cid, params in exp.params.items():
        p = _outer(exp.predictions[exp.predictions["config_id"] == cid])
        done = int(p["run"].nunique()) if len(p) else 0
        row = {"config_id": cid, **params, "folds_done": done, "folds_total": total}
        row["status"] = "complete" if done == total else "partial"
        if len(p):
            s = summarise(p, exp.num_classes)
            row.update(uf1=s["uf1"], uar=s["uar"], accuracy=s["accuracy"], clips=s["n"])
            for name, d in sorted(s["per_dataset"].items()):
                row[f"uf1[{name}]"] = d["uf1"]
                row[f"uar[{name}]"] = d["uar"]
            all_runs = exp.predictions[exp.predictions["config_id"] == cid]
            row["wall_time_s"] = float(all_runs.groupby("run")["seconds"].first().sum())
        else:
            row.update(uf1=np.nan, uar=np.nan, accuracy=np.nan, clips=0, wall_time_s=0.0)
        rows.append(row)
    board = pd.DataFrame(rows)
    if len(board):
        board = board.sort_values(["uf1", "config_id"], ascending=[False, True], na_position="last")
        board.insert(0, "protocol", "loso-search")
    return board.reset_index(drop=True)


def fold_detail(exp: Experiment, config_id: str) -> pd.DataFrame:
    """Per fold run of one configuration: clips, UF1/UAR/accuracy on that fold, epochs, time."""
    if config_id not in exp.params:
        raise InputError(f"{exp.uri}: no configuration {config_id!r} (known: {sorted(exp.params)})")
    p = exp.predictions[exp.predictions["config_id"] == config_id]
    rows = []
    for run, g in p.groupby("run", sort=True):
        s = summarise(g, exp.num_classes)
        rows.append(
            {
                "run": run,
                "kind": g["kind"].iloc[0],
                "clips": s["n"],
                "uf1": s["uf1"],
                "uar": s["uar"],
                "accuracy": s["accuracy"],
                "epochs": int(g["epochs"].iloc[0]) if "epochs" in g else None,
                "seconds": float(g["seconds"].iloc[0]) if "seconds" in g else None,
            }
        )
    return pd.DataFrame(rows)


def nested(exp: Experiment) -> dict:
    """Honest estimate: per outer fold, pick the configuration by its inner-fold UF1 only."""
    if exp.meta.get("protocol") != "nested":
        raise InputError(f"{exp.uri}: experiment was not run with search.protocol=nested")
    preds = exp.predictions
    choices, chosen = [], []
    for fold in exp.meta["folds"]:
        inner = preds[(preds["kind"] == "inner") & (preds["outer"] == fold)]
        scores = {}
        for cid, g in inner.groupby("config_id"):
            scores[cid] = summarise(g, exp.num_classes)["uf1"]
        outer = preds[(preds["kind"] == "outer") & (preds["run"] == fold)]
        ready = [c for c in scores if c in set(outer["config_id"])]
        if not ready:
            continue
        best = max(sorted(ready), key=lambda c: scores[c])
        inner_subjects = sorted(set((inner["dataset"] + "/" + inner["subject"]).tolist()))
        choices.append(
            {
                "fold": fold,
                "config_id": best,
                "inner_uf1": scores[best],
                "inner_subjects": inner_subjects,
            }
        )
        chosen.append(outer[outer["config_id"] == best])
    if not chosen:
        return {"protocol": "nested-loso", "folds_done": 0, "choices": []}
    s = summarise(pd.concat(chosen, ignore_index=True), exp.num_classes)
    return {
        "protocol": "nested-loso",
        "uf1": s["uf1"],
        "uar": s["uar"],
        "accuracy": s["accuracy"],
        "per_dataset": s["per_dataset"],
        "folds_done": len(choices),
        "folds_total": len(exp.meta["folds"]),
        "choices": choices,
    }


def summary(exp: Experiment) -> dict:
    """Everything a report needs, JSON-ready."""
    board = leaderboard(exp)
    out = {
        "experiment": exp.meta.get("experiment"),
        "uri": exp.uri,
        "status": exp.meta.get("status"),
        "protocol": "loso-search",
        "note": SEARCH_NOTE,
        "folds_total": len(exp.meta.get("folds", [])),
        "leaderboard": _records(board),
    }
    if len(board) and (board["status"] != "complete").any():
        out["partial"] = True
    if exp.meta.get("protocol") == "nested":
        out["nested"] = nested(exp)
    if len(board) and not np.isnan(board["uf1"].iloc[0]):
        best = board.iloc[0]["config_id"]
        p = _outer(exp.predictions[exp.predictions["config_id"] == best])
        out["best"] = {"config_id": best, **summarise(p, exp.num_classes)}
    return out


def _records(df: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


def plots(exp: Experiment, out_dir: str) -> list[str]:
    """Confusion matrix of the best configuration, UF1 against gamma and against freeze."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    storage.makedirs(out_dir)
    board = leaderboard(exp)
    written = []
    if not len(board) or np.isnan(board["uf1"].iloc[0]):
        return written
    best = board.iloc[0]
    p = _outer(exp.predictions[exp.predictions["config_id"] == best["config_id"]])
    cm = np.asarray(summarise(p, exp.num_classes)["confusion"])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center")
    names = ["negative", "positive", "surprise"] if exp.num_classes == 3 else range(exp.num_classes)
    ax.set_xticks(range(exp.num_classes), names)
    ax.set_yticks(range(exp.num_classes), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"best config {best['config_id']} (loso-search)\nUF1 {best['uf1']:.3f}")
    written.append(_save(fig, out_dir, "confusion_best.png"))
    for param in ("gamma", "freeze"):
        if param not in board:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.scatter(board[param].astype(float), board["uf1"])
        ax.set_xlabel(param)
        ax.set_ylabel("pooled UF1 (loso-search)")
        ax.set_title(f"UF1 against {param}")
        written.append(_save(fig, out_dir, f"uf1_vs_{param}.png"))
    return written


def _save(fig, out_dir: str, name: str) -> str:
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    import matplotlib.pyplot as plt

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


def format_table(exp: Experiment) -> str:
    """The leaderboard as text, with the protocol note and the nested estimate if present."""
    board = leaderboard(exp)
    lines = [
        f"experiment {exp.meta.get('experiment')} ({exp.uri}), status: {exp.meta.get('status')}",
        f"protocol: {SEARCH_NOTE}",
    ]
    if not len(board):
        lines.append("no configuration has finished a fold yet")
        return "\n".join(lines)
    if (board["status"] != "complete").any():
        lines.append("PARTIAL: some configurations have not finished every fold")
    cols = [c for c in board.columns if c not in ("protocol",)]
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        lines.append(board[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if exp.meta.get("protocol") == "nested":
        n = nested(exp)
        if n.get("folds_done"):
            lines.append(
                f"nested-loso (honest estimate, configuration chosen per held-out subject on "
                f"inner folds only): UF1 {n['uf1']:.4f}  UAR {n['uar']:.4f}  "
                f"({n['folds_done']}/{n['folds_total']} folds)"
            )
    return "\n".join(lines)
