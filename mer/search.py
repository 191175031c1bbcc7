"""Stage 4: Ray Tune over focal-loss gamma, alpha (beta) and freezing depth, scored over LOSO folds.

One Tune trial is one configuration; it fits one TorchTrainer that runs the configuration's
fold runs in turn (the trainer's start-up cost is paid once per configuration, not per
fold), reporting pooled metrics after each fold through `TuneReportCallback`. Fold runs go
in the same order for every configuration, so an early-stopping rule (ASHA on
`folds_done`) always compares configurations on the same folds.

Layout under `<root>/tune/<experiment>/` (local or s3://):
  _experiment.json                experiment description: folds, protocol, space, hashes
  configs/<config id>/params.json the configuration (id = hash of its parameters)
  configs/<config id>/folds/*.parquet  per-clip predictions of each finished fold run
  _tune/                          Ray Tune's own experiment state (used to resume)
Results are read from the first three only (`mer.results`), so they can be queried while the
search runs, from any process, locally or on S3. An interrupted experiment resumes: Tune
restores unfinished trials, and a trial skips fold runs whose predictions exist.

Nested protocol: each configuration also runs inner folds inside every outer training set
(`search.inner_k` groups of the training subjects); `mer.results.nested` then chooses a
configuration per held-out subject from inner folds alone. Inner runs start from the outer
fold's prior-learning weights, which never saw the held-out subject.
"""

from __future__ import annotations

import hashlib
import json
import time

from mer import storage
from mer.config import PipelineConfig, keyframes_hash, pretrain_hash
from mer.errors import ConfigError

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


def check_space(space: dict) -> None:
    """Every key must be a finetune setting; values a list or {distribution: [args]}."""
    from mer.config import FinetuneConfig

    names = set(FinetuneConfig.__dataclass_fields__)
    for key, value in (space or {}).items():
        if key not in names:
            raise ConfigError(f"search.space: {key!r} is not a finetune setting ({sorted(names)})")
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"search.space.{key}: empty list")
        elif isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS:
            pass
        else:
            raise ConfigError(
                f"search.space.{key}: expected a list or one of {DISTRIBUTIONS}: [args]"
            )


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


def experiment_uri(cfg: PipelineConfig) -> str:
    return storage.join(cfg.root, "tune", cfg.search.experiment)


def fold_runs(cfg: PipelineConfig, table, folds: list[dict]) -> list[dict]:
    """The fold runs every configuration executes: outer LOSO folds (+ inner folds if nested)."""
    from mer.folds import inner_folds
    from mer.train.finetune import outer_runs

    runs = outer_runs(folds, cfg)
    if cfg.search.protocol != "nested":
        return runs
    keys = table.subject_keys
    nested = []
    for f, outer in zip(folds, runs, strict=True):
        train_idx = table.indices_of(f["train_subjects"])
        nested.append(outer)
        k = min(cfg.search.inner_k, len(f["train_subjects"]))
        for g, inner in enumerate(inner_folds(table.clips, train_idx, k, seed=cfg.seed)):
            val = sorted(set(keys[inner.val_idx]))
            nested.append(
                {
                    "id": f"{f['name']}~inner{g}",
                    "kind": "inner",
                    "outer": f["name"],
                    "train_subjects": sorted(set(keys[inner.train_idx])),
                    "test_subjects": val,
                    "prior": outer["prior"],
                }
            )
    return nested


def _max_concurrent(cfg: PipelineConfig) -> int:
    if cfg.resources.max_concurrent:
        return cfg.resources.max_concurrent
    import ray

    res = ray.cluster_resources()
    r = cfg.resources
    per_cpu = max(r.workers, 1) * r.cpus_per_worker
    n = int(res.get("CPU", 1) // per_cpu) if per_cpu else 64
    if r.gpus_per_worker:
        n = min(n, int(res.get("GPU", 0) // (max(r.workers, 1) * r.gpus_per_worker)))
    return max(1, n)


def run_search(cfg: PipelineConfig, keyframes: str, folds: list[dict], *, progress=print) -> str:
    """Run (or resume) the search experiment; returns its URI."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from mer.train import data
    from mer.train.finetune import NUM_CLASSES, finetune_loop
    from mer.train.runtime import make_trainer

    exp = experiment_uri(cfg)
    table = data.load_table(keyframes)
    if cfg.search.folds:
        folds = [f for f in folds if f["key"] in set(cfg.search.folds)]
        if not folds:
            raise ConfigError(f"search.folds {cfg.search.folds} names no fold of this dataset")
    runs = fold_runs(cfg, table, folds)
    meta = {
        "experiment": cfg.search.experiment,
        "protocol": cfg.search.protocol,
        "inner_k": cfg.search.inner_k,
        "folds": [f["name"] for f in folds],
        "runs_per_config": len(runs),
        "num_classes": NUM_CLASSES.get(cfg.data.protocol, 3),
        "dataset": cfg.data.dataset,
        "space": cfg.search.space,
        "algorithm": cfg.search.algorithm,
        "keyframes_hash": keyframes_hash(cfg),
        "pretrain_hash": pretrain_hash(cfg),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta_uri = storage.join(exp, "_experiment.json")
    if storage.exists(meta_uri):
        old = storage.read_json(meta_uri)
        for key in ("folds", "protocol", "keyframes_hash", "pretrain_hash"):
            if old.get(key) != meta[key]:
                raise ConfigError(
                    f"{exp} already holds an experiment with a different {key}; "
                    "choose another search.experiment name or delete that folder"
                )
        meta["created"] = old["created"]
    storage.write_json(meta_uri, {**meta, "status": "running"})
    storage.write_bytes(storage.join(exp, "config.yaml"), cfg.to_yaml().encode())
    base = cfg.to_dict()
    run_storage = storage.join(exp, "_runs")

    def trial(params: dict) -> None:
        cid = config_id(params)
        out = storage.join(exp, "configs", cid)
        storage.write_json(storage.join(out, "params.json"), params)
        loop_config = {
            "cfg": base,
            "params": params,
            "runs": runs,
            "keyframes": keyframes,
            "out": out,
            "config_id": cid,
        }
        trainer = make_trainer(
            finetune_loop,
            loop_config,
            cfg.resources,
            run_storage,
            f"cfg-{cid}",
            callbacks=[TuneReportCallback()],
        )
        result = trainer.fit()
        if result.error:
            raise result.error

    fs, path = storage.pyarrow_filesystem(exp)
    trainable = ray.tune.with_resources(trial, {"CPU": 0.01})
    tune_path = storage.join(path, "_tune") if "://" in path else f"{path}/_tune"
    if ray.tune.Tuner.can_restore(tune_path, storage_filesystem=fs):
        progress(f"[search] resuming {exp}: finished fold runs are kept")
        tuner = ray.tune.Tuner.restore(
            tune_path,
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=fs,
        )
    else:
        tuner = ray.tune.Tuner(
            trainable,
            param_space=param_space(cfg.search.space, cfg.search.algorithm),
            tune_config=ray.tune.TuneConfig(
                num_samples=cfg.search.num_samples,
                max_concurrent_trials=_max_concurrent(cfg),
                search_alg=_searcher(cfg),
                scheduler=_scheduler(cfg, len(folds)),
                metric="uf1" if cfg.search.algorithm in ("optuna", "hyperopt") else None,
                mode="max" if cfg.search.algorithm in ("optuna", "hyperopt") else None,
            ),
            run_config=ray.tune.RunConfig(
                name="_tune", storage_path=path, storage_filesystem=fs, verbose=1
            ),
        )
    progress(
        f"[search] {exp}: {len(folds)} folds, {len(runs)} fold runs per configuration, "
        f"algorithm {cfg.search.algorithm}, protocol {cfg.search.protocol}"
    )
    results = tuner.fit()
    errors = [r.error for r in results if r.error]
    status = "finished" if not errors else "failed"
    storage.write_json(meta_uri, {**meta, "status": status})
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
        raise ConfigError("search.algorithm=hyperopt needs `pip install hyperopt`") from e
    return HyperOptSearch(metric="uf1", mode="max", random_state_seed=cfg.seed)


def _scheduler(cfg: PipelineConfig, n_folds: int):
    if cfg.search.early_stop != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # Rule: after 1, 2, 4, ... folds, a configuration whose pooled UF1 over those same first
    # folds is in the bottom half of its rung stops.
    return ASHAScheduler(
        time_attr="folds_done",
        metric="uf1",
        mode="max",
        max_t=n_folds,
        grace_period=1,
        reduction_factor=2,
    )
