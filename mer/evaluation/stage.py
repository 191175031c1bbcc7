"""The evaluation stage's driver: both baselines and prior learning on every fold and seed of
a key-frame table (finished work skipped), then the search over seeds and settings; and the
scores line a job prints for one set of predictions.
"""

from __future__ import annotations

import pandas as pd

from mer import layout
from mer.config import NUM_CLASSES, PipelineConfig
from mer.evaluation import search
from mer.evaluation.baselines import run_baselines
from mer.keyframes.table import load_table, select_folds
from mer.metrics import summarise
from mer.progress import emit
from mer.train.pretrain import run_pretraining


def training_placed_on_workers(cfg: PipelineConfig) -> bool:
    """Whether the config places training on worker nodes (worker_resources, GPUs). flow-cnn
    trains where the method trains: on Ray Train then, else in this process, where every run
    shares one machine anyway (a trainer's start costs more than its fits; the same
    predictions either way)."""
    return bool(cfg.resources.worker_resources) or cfg.resources.gpus_per_worker > 0


def print_scores(preds: pd.DataFrame, title: str, num_classes: int = 3) -> dict:
    s = summarise(preds, num_classes)
    print(
        f"{title}: UF1 {s['uf1']:.4f}  UAR {s['uar']:.4f}  accuracy {s['accuracy']:.4f}  "
        f"({s['n']} clips)"
    )
    return s


def run_search_stage(cfg: PipelineConfig, progress=emit, keyframes: str | None = None) -> str:
    """Baselines and prior learning for every fold and seed (skipped where done), then the
    search; returns the experiment URI. `keyframes`: a table elsewhere than the config's."""
    kf = keyframes or layout.keyframes_uri(cfg)
    table = load_table(kf)
    folds = select_folds(table, cfg.search.folds)
    exp, runs = search.open_experiment(cfg, kf, table, folds)
    progress(
        f"[baselines] majority, linear (apex - onset), lbp-top and flow-cnn on the same "
        f"{len(folds)} folds"
    )
    run_baselines(
        exp,
        table,
        runs,
        cfg.search.seeds,
        NUM_CLASSES[cfg.data.protocol],
        resources=cfg.resources if training_placed_on_workers(cfg) else None,
        progress=progress,
    )
    run_pretraining(cfg, kf, runs, cfg.search.seeds, progress=progress)
    return search.run_search(cfg, kf, runs, progress=progress)
