"""Every stage from one config: data -> (learned interpolator) -> key frames -> baselines,
prior learning -> search -> results -> the final model (export).

Stages meet at artifacts whose locations and keys `mer.layout` computes from the config, so
rerunning the pipeline after a crash redoes only unfinished work, a changed setting writes
new key frames and priors beside the old ones, and an experiment name already used under
other settings is refused before any training.
"""

from __future__ import annotations

import time

import pandas as pd

from mer import layout, storage
from mer.config import NUM_CLASSES, PipelineConfig
from mer.progress import emit


def ensure_data(cfg: PipelineConfig, progress=emit) -> str:
    """The dataset root; a synthetic dataset is generated there once per generator setting
    (a folder holding one made under other settings is refused)."""
    root = layout.data_root(cfg)
    if cfg.data.dataset != "synthetic":
        return root
    settings = layout.data_settings(cfg)
    marker = storage.join(root, "_settings.json")
    if storage.exists(marker):
        layout.claim(
            root, settings, "a synthetic dataset", "set data.root elsewhere (or leave it empty)"
        )
        return root
    if storage.exists(storage.join(root, "synthetic.json")):
        from mer.errors import ConfigError

        raise ConfigError(
            f"{root} holds a synthetic dataset whose generator settings are unknown; delete "
            "it or set data.root elsewhere (or leave it empty)"
        )
    from mer.datasets.synthetic import generate

    progress(f"[data] generating synthetic micro-expressions under {root} ...")
    t0 = time.time()
    summary = generate(root, mapper=_ray_map(root, cfg.keyframes.resources), **cfg.data.synthetic)
    layout.claim(root, settings, "a synthetic dataset", "set data.root elsewhere")
    progress(f"[data] {summary.get('clips', '?')} clips in {time.time() - t0:.0f} s")
    return root


def print_scores(preds: pd.DataFrame, title: str, num_classes: int = 3) -> dict:
    from mer.metrics import summarise

    s = summarise(preds, num_classes)
    print(
        f"{title}: UF1 {s['uf1']:.4f}  UAR {s['uar']:.4f}  accuracy {s['accuracy']:.4f}  "
        f"({s['n']} clips)"
    )
    return s


def run_search_stage(cfg: PipelineConfig, progress=emit, keyframes: str | None = None) -> str:
    """Baselines and prior learning for every fold and seed (skipped where done), then the
    search; returns the experiment URI. `keyframes`: a table elsewhere than the config's."""
    from mer import search
    from mer.baselines import run_baselines
    from mer.table import load_table, select_folds
    from mer.train.pretrain import run_pretraining

    kf = keyframes or layout.keyframes_uri(cfg)
    table = load_table(kf)
    folds = select_folds(table, cfg.search.folds)
    exp, runs = search.open_experiment(cfg, kf, table, folds)
    progress(
        f"[baselines] majority, linear (apex - onset), lbp-top and flow-cnn on the same "
        f"{len(folds)} folds"
    )
    run_baselines(exp, table, runs, cfg.search.seeds, NUM_CLASSES[cfg.data.protocol])
    run_pretraining(cfg, kf, runs, cfg.search.seeds, progress=progress)
    return search.run_search(cfg, kf, runs, progress=progress)


def run_pipeline(cfg: PipelineConfig, progress=emit) -> dict:
    from mer import results, results_report
    from mer.preprocess import build_keyframes_dataset

    t0 = time.time()
    storage.write_bytes(storage.join(cfg.root, "config.yaml"), cfg.to_yaml().encode())
    ensure_data(cfg, progress)
    if cfg.keyframes.interpolation == "adaconv":
        from mer.train.interpolate import run_interpolator

        run_interpolator(cfg, progress=progress)
    build_keyframes_dataset(cfg, progress=progress)
    exp = run_search_stage(cfg, progress)
    out = layout.results_uri(cfg)
    summary = results_report.write_report(results.load_experiment(exp), out)
    if cfg.export.enabled:
        from mer.export import export_model

        summary["model"] = export_model(
            cfg,
            exp,
            config_id=cfg.export.config_id or None,
            name=cfg.export.name or None,
            progress=progress,
        )
    summary["pipeline_seconds"] = round(time.time() - t0, 1)
    progress(f"[results] {out}: leaderboard.json, leaderboard.csv, plots/")
    return summary


def _ray_map(root: str, resources: dict | None = None):
    """A generate() mapper running each call as a Ray task (one CPU each, plus `resources`:
    the key-frame actors' own, so that on a cluster the same CPU nodes render the data and
    no GPU node starts for it): subjects render side by side. Local files stay on this node;
    an s3:// root lets any node write. None (render in this process) when it has not joined
    Ray, or for a local root on a node with no CPU for tasks."""
    import ray

    if not ray.is_initialized():
        return None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict = {"num_cpus": 1, "resources": dict(resources or {})}
    if not storage.is_remote(root):
        here = ray.get_runtime_context().get_node_id()
        has = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == here), {})
        need = {"CPU": 1, **options["resources"]}
        if any(has.get(k, 0) < v for k, v in need.items()):  # a head that takes no such work
            return None
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)

    def run(fn, calls: list[tuple]) -> list:
        task = ray.remote(**options)(fn)
        return ray.get([task.remote(*args) for args in calls])

    return run
