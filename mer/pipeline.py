"""Every stage from one config: data -> key frames -> prior learning -> search -> results.

Each stage skips itself when its output exists with the same config hash, so rerunning the
pipeline after a crash, or after changing only the search space, redoes only what changed.
"""

from __future__ import annotations

import time

import pandas as pd

from mer import storage
from mer.config import PipelineConfig
from mer.errors import InputError


def ensure_data(cfg: PipelineConfig, progress=print) -> None:
    """Generate the synthetic dataset if the config asks for it and its root holds none."""
    if cfg.data.dataset != "synthetic":
        return
    root = cfg.data_root()
    if storage.exists(storage.join(root, "synthetic.json")):
        return
    from mer.datasets.synthetic import generate

    s = dict(cfg.data.synthetic)
    progress(f"[data] generating synthetic micro-expressions under {root} ...")
    t0 = time.time()
    summary = generate(
        root,
        subjects=s.get("subjects", 8),
        clips_per_subject=s.get("clips_per_subject", 6),
        seed=s.get("seed", cfg.seed),
        layout=s.get("layout", "casme2"),
        size=tuple(s.get("size", (340, 280))),
        frames=tuple(s.get("frames", (40, 100))),
    )
    progress(f"[data] {summary.get('clips', '?')} clips in {time.time() - t0:.0f} s")


def select_folds(keyframes: str, keys: list[str] | None = None) -> list[dict]:
    from mer.train import data
    from mer.train.pretrain import fold_specs

    folds = fold_specs(data.load_table(keyframes))
    if keys:
        known = {f["key"] for f in folds}
        missing = sorted(set(keys) - known)
        if missing:
            raise InputError(f"unknown fold(s) {missing}; known: {sorted(known)}")
        folds = [f for f in folds if f["key"] in set(keys)]
    return folds


def print_scores(preds: pd.DataFrame, title: str, num_classes: int = 3) -> dict:
    from mer.metrics import summarise

    s = summarise(preds, num_classes)
    print(
        f"{title}: UF1 {s['uf1']:.4f}  UAR {s['uar']:.4f}  accuracy {s['accuracy']:.4f}  "
        f"({s['n']} clips)"
    )
    return s


def run_search_stage(cfg: PipelineConfig, progress=print) -> str:
    """Prior learning for every fold (skipped where done), then the search."""
    from mer.preprocess import keyframes_uri
    from mer.search import run_search
    from mer.train.pretrain import run_pretraining

    kf = keyframes_uri(cfg)
    folds = select_folds(kf, cfg.search.folds)
    run_pretraining(cfg, kf, folds, progress=progress)
    return run_search(cfg, kf, folds, progress=progress)


def run_pipeline(cfg: PipelineConfig, progress=print) -> dict:
    from mer import results
    from mer.preprocess import build_keyframes_dataset

    t0 = time.time()
    storage.write_bytes(storage.join(cfg.root, "config.yaml"), cfg.to_yaml().encode())
    ensure_data(cfg, progress)
    build_keyframes_dataset(cfg, progress=progress)
    exp = run_search_stage(cfg, progress)
    out = storage.join(cfg.root, "results", cfg.search.experiment)
    summary = results.write_report(results.load_experiment(exp), out)
    summary["pipeline_seconds"] = round(time.time() - t0, 1)
    progress(f"[results] {out}: leaderboard.json, leaderboard.csv, plots/")
    return summary
