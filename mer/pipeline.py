"""Every stage from one config: data -> (learned interpolator) -> key frames -> baselines,
prior learning -> search -> results -> the final model (export).

Stages meet at artifacts whose locations and keys `mer.layout` computes from the config, so
rerunning the pipeline after a crash redoes only unfinished work, a changed setting writes
new key frames and priors beside the old ones, and an experiment name already used under
other settings is refused before any training.
"""

from __future__ import annotations

import time

from mer import layout, storage
from mer.config import PipelineConfig
from mer.datasets.stage import ensure_data
from mer.evaluation import results, results_report
from mer.evaluation.stage import run_search_stage
from mer.evaluation.tracking import log_experiment
from mer.keyframes.preprocess import build_keyframes_dataset
from mer.progress import emit
from mer.serving.export import export_model
from mer.train.interpolate import run_interpolator


def run_experiment(cfg: PipelineConfig, progress=emit) -> str:
    """The stages up to the experiment (data, learned interpolator, key frames, baselines,
    priors, search); returns the experiment URI. A study runs it once per variant."""
    ensure_data(cfg, progress)
    if cfg.keyframes.interpolation == "adaconv":
        run_interpolator(cfg, progress=progress)
    build_keyframes_dataset(cfg, progress=progress)
    return run_search_stage(cfg, progress)


def run_pipeline(cfg: PipelineConfig, progress=emit) -> dict:
    """Every stage from `cfg`: the experiment, its results, the final model where
    `export.enabled`; returns the results' summary."""
    t0 = time.time()
    storage.write_bytes(storage.join(cfg.root, "config.yaml"), cfg.to_yaml().encode())
    exp = run_experiment(cfg, progress)
    out = layout.results_uri(cfg)
    experiment = results.load_experiment(exp)
    summary = results_report.write_report(experiment, out)
    if cfg.tracking.mlflow_uri:
        run_id = log_experiment(cfg.tracking.mlflow_uri, experiment, out)
        progress(f"[results] logged to MLflow at {cfg.tracking.mlflow_uri} (parent run {run_id})")
    if cfg.export.enabled:
        summary["model"] = export_model(
            cfg,
            exp,
            config_id=cfg.export.config_id or None,
            name=cfg.export.name or None,
            progress=progress,
        )
    summary["pipeline_seconds"] = round(time.time() - t0, 1)
    progress(f"[results] {out}: report.html, leaderboard.json, leaderboard.csv, plots/")
    return summary
