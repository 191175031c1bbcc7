"""Stage 4: Ray Tune over focal-loss gamma, alpha (beta) and freezing depth, scored over LOSO folds.

One Tune trial is one configuration; it fits one TorchTrainer that runs the configuration's
units (every fold run at every seed of `search.seeds`) in turn, so a trainer's start-up
cost is paid once per configuration, reporting pooled metrics as units finish. Units go in
the same order for every configuration, so an early-stopping rule (ASHA on `outer_done`)
always compares configurations on the same folds and seeds. Priors are learnt before the
search, one per (seed, fold run) or, with `pretrain.prior_groups`, one per (seed, group of
subjects), and shared by every configuration of that seed.

Layout under `<root>/tune/<experiment>/` (local or s3://):
  _settings.json, _experiment.json   the settings the experiment is tied to; its description
  configs/<config id>/params.json    the configuration (id = hash of its parameters)
  configs/<config id>/seed-<s>/<run>.parquet   per-clip predictions of each finished unit
  baselines/<name>/seed-<s>/<run>.parquet      the same for the baselines (mer.evaluation.baselines)
  _tune/                             Ray Tune's own state (used to resume)
Results are read from the files above only (`mer.evaluation.results`), so they can be queried while the
search runs, from any process, locally or on S3. Rerunning resumes; rerunning under other
settings is refused (mer.layout.claim).

Nested protocol: each configuration also runs inner folds inside every outer training set
(`search.inner_k` groups of the training subjects); `mer.evaluation.results.nested` then chooses a
configuration per held-out subject from inner folds alone. Inner runs start from priors
learnt without their validation subjects (or, with `search.inner_prior: outer`, from the
outer fold's prior, labelled as such). Adaptive searchers and schedulers are refused with
nested (mer.config): their decisions would see held-out subjects' scores.
"""

from __future__ import annotations

import hashlib
import json
import time

from mer import config, layout, storage
from mer.config import NUM_CLASSES, PipelineConfig
from mer.errors import ConfigError, InputError
from mer.folds import FoldRun, FoldSpec
from mer.keyframes.table import ClipTable, nested_runs, outer_runs, prior_groups_of
from mer.progress import Counter, emit, tune_progress
from mer.train.finetune import finetune_loop, finished_keys, fold_units, loop_config
from mer.train.runtime import plan_resources, trainer_trial, tune_loggers, tune_run_config


def param_space(space: dict, algorithm: str) -> dict:
    """Config search space -> Ray Tune param space (lists are grids for algorithm 'grid')."""
    from ray import tune

    out = {}
    for key, value in space.items():
        if isinstance(value, list):
            out[key] = tune.grid_search(value) if algorithm == "grid" else tune.choice(value)
        else:
            ((dist, args),) = value.items()
            out[key] = getattr(tune, dist)(*args) if dist != "choice" else tune.choice(args)
    return out


def config_id(params: dict) -> str:
    blob = json.dumps(params, sort_keys=True, default=float).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def fold_runs(cfg: PipelineConfig, table: ClipTable, folds: list[FoldSpec]) -> list[FoldRun]:
    """The fold runs every configuration executes: outer LOSO folds (+ inner folds if nested)."""
    n = cfg.pretrain.prior_groups
    if cfg.search.protocol != "nested":
        return outer_runs(folds, prior_groups_of(table, n))
    return nested_runs(table, folds, cfg.search.inner_k, cfg.seed, cfg.search.inner_prior, n)


def trial_count(cfg: PipelineConfig) -> int:
    s = cfg.search
    if s.algorithm != "grid":
        return s.num_samples
    n = 1
    for v in s.space.values():
        n *= len(v) if isinstance(v, list) else 1
    return n


def open_experiment(
    cfg: PipelineConfig, keyframes: str, table: ClipTable, folds: list[FoldSpec]
) -> tuple[str, list[FoldRun]]:
    """Tie `tune/<experiment>/` to this config's settings (or refuse), describe it in
    _experiment.json; returns (its URI, the fold runs every configuration executes)."""
    exp = layout.experiment_uri(cfg)
    layout.claim(
        exp,
        layout.experiment_settings(cfg),
        f"an experiment '{cfg.search.experiment}'",
        "choose another search.experiment",
    )
    runs = fold_runs(cfg, table, folds)
    inner: dict[str, list[str]] = {}
    for r in runs:
        if r.kind == "inner":
            inner.setdefault(r.outer, []).append(r.id)
    meta = {
        "experiment": cfg.search.experiment,
        "protocol": cfg.search.protocol,
        "inner_k": cfg.search.inner_k,
        "inner_prior": cfg.search.inner_prior,
        "folds": [f.name for f in folds],
        "inner_runs": inner,
        "seeds": list(cfg.search.seeds),
        "runs_per_config": len(runs),
        "num_classes": NUM_CLASSES[cfg.data.protocol],
        "dataset": cfg.data.dataset,
        "space": cfg.search.space,
        "algorithm": cfg.search.algorithm,
        "keyframes": keyframes,
        "keyframes_hash": layout.keyframes_hash(cfg),
        "settings_hash": layout.digest(layout.experiment_settings(cfg)),
        "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta_uri = storage.join(exp, "_experiment.json")
    if storage.exists(meta_uri):
        meta["created"] = storage.read_json(meta_uri).get("created", meta["created"])
    storage.write_json(meta_uri, meta)
    storage.write_bytes(storage.join(exp, "config.yaml"), cfg.to_yaml().encode())
    storage.write_json(storage.join(exp, "fold_runs.json"), [r.to_dict() for r in runs])
    return exp, runs


def trainable(experiment: str, resources=None):
    """The Tune trainable of the search experiment at `experiment` (a URI), rebuilt from what
    the experiment stored (config.yaml, fold_runs.json, the key frames named in
    _experiment.json). This is what `ray.tune.Tuner.restore(<experiment>/_tune,
    trainable=mer.evaluation.search.trainable(<experiment>))` expects; `resources` default to the
    config's (resolve them with mer.train.runtime.plan_resources to run trials)."""

    runs_uri = storage.join(experiment, "fold_runs.json")
    if not storage.exists(runs_uri):
        raise InputError(
            f"{experiment}: no fold_runs.json (not a search experiment, or one made before "
            "experiments stored their fold runs: rerun jobs/tune.py on it to write it)"
        )
    cfg = config.load(storage.join(experiment, "config.yaml"))
    meta = storage.read_json(storage.join(experiment, "_experiment.json"))
    return _trainable(
        cfg,
        meta["keyframes"],
        [FoldRun.from_dict(r) for r in storage.read_json(runs_uri)],
        experiment,
        resources or cfg.resources,
    )


def _trainable(cfg: PipelineConfig, keyframes: str, runs: list[FoldRun], exp: str, resources):
    """One configuration per trial: a TorchTrainer running its fold runs at every seed."""

    seeds = list(cfg.search.seeds)

    def make_config(params: dict) -> tuple[dict, str]:
        cid = config_id(params)
        out = layout.config_dir(exp, cid)
        storage.write_json(storage.join(out, "params.json"), params)
        units = fold_units(cfg, runs, seeds, out, params)
        return loop_config(cfg, keyframes, units, params, cid), f"cfg-{cid}"

    return trainer_trial(finetune_loop, make_config, resources, storage.join(exp, "_runs"))


def run_search(cfg: PipelineConfig, keyframes: str, runs: list[FoldRun], *, progress=emit) -> str:
    """Run (or resume) the search over `runs` (open_experiment's); returns its URI."""
    import ray.tune

    exp = layout.experiment_uri(cfg)
    meta_uri = storage.join(exp, "_experiment.json")
    meta = storage.read_json(meta_uri)
    seeds = list(cfg.search.seeds)
    n_outer = sum(1 for r in runs if r.kind == "outer")

    n_trials = trial_count(cfg)
    resources, concurrency = plan_resources(cfg.resources, n_trials)
    counter = Counter("search", n_trials * len(runs) * len(seeds), progress)
    counter.keep(finished_keys(storage.join(exp, "configs"), "*/seed-*/*.parquet"))

    def describe(config, result):
        so_far = f" (pooled UF1 so far {result['uf1']:.3f})" if "uf1" in result else ""
        return (
            f"fold runs: config {config_id(dict(config))} seed {result['seed']} "
            f"{result['run']}{so_far}"
        )

    trial = _trainable(cfg, keyframes, runs, exp, resources)
    fs, path = storage.pyarrow_filesystem(exp)
    tune_path = storage.join(path, "_tune") if "://" in path else f"{path}/_tune"
    # Tune's own per-trial files (result.json, progress.csv, TensorBoard events) next to its
    # state: ExperimentAnalysis, Tuner.restore(...).get_results() and TensorBoard read them.
    run_config = tune_run_config(
        exp,
        "_tune",
        [tune_progress(counter, describe, exp), *tune_loggers()],
        resources.max_failures,
    )
    if ray.tune.Tuner.can_restore(tune_path, storage_filesystem=fs):
        progress(
            f"[search] resuming {exp}: {counter.kept} of {counter.total} fold runs were done "
            "before and are kept"
        )
        tuner = ray.tune.Tuner.restore(
            tune_path,
            trial,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=fs,
        )
    else:
        adaptive = cfg.search.algorithm in ("optuna", "hyperopt")
        tuner = ray.tune.Tuner(
            trial,
            param_space=param_space(cfg.search.space, cfg.search.algorithm),
            tune_config=ray.tune.TuneConfig(
                num_samples=cfg.search.num_samples,
                max_concurrent_trials=concurrency,
                search_alg=_searcher(cfg),
                scheduler=_scheduler(cfg, n_outer * len(seeds)),
                metric="uf1" if adaptive else None,
                mode="max" if adaptive else None,
            ),
            run_config=run_config,
        )
    progress(
        f"[search] {exp}: {n_trials} configurations x {len(seeds)} seeds x {len(runs)} fold "
        f"runs, {concurrency} at a time ({resources.workers} worker(s) x "
        f"{resources.cpus_per_worker:g} CPU each); protocol {cfg.search.protocol}"
    )
    with counter.heartbeat("target learning: fold runs under way"):
        results = tuner.fit()
    errors = [r.error for r in results if r.error]
    storage.write_json(meta_uri, {**meta, "status": "finished" if not errors else "failed"})
    if errors:
        raise RuntimeError(f"{len(errors)} search trial(s) failed; first: {errors[0]}")
    return exp


def _searcher(cfg: PipelineConfig):
    alg = cfg.search.algorithm
    if alg in ("grid", "random"):
        return None
    if alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric="uf1", mode="max", seed=cfg.seed)
    try:
        from ray.tune.search.hyperopt import HyperOptSearch
    except ImportError as e:  # pragma: no cover - optional
        raise ConfigError("config search.algorithm=hyperopt needs `pip install hyperopt`") from e
    return HyperOptSearch(metric="uf1", mode="max", random_state_seed=cfg.seed)


def _scheduler(cfg: PipelineConfig, n_units: int):
    if cfg.search.early_stop != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # Rule: after 1, 2, 4, ... outer units (folds, seed by seed), a configuration whose pooled
    # UF1 over those same units is in the bottom half of its rung stops.
    return ASHAScheduler(
        time_attr="outer_done",
        metric="uf1",
        mode="max",
        max_t=n_units,
        grace_period=1,
        reduction_factor=2,
    )
