"""Where every output lives under the run root, and which settings key it (the hash contract).

Each stage's output is tied to a hash of every resolved setting that determines it, chained
through its inputs:

  data        generator settings (synthetic), or dataset, root, annotation sheet, protocol
  interpolator data + keyframes frame settings + interpolator.*  interpolator/<hash>/
  key frames  data + keyframes.* (+ interpolator, with adaconv) keyframes/<dataset>/<hash>/
  prior       key frames + model.* + pretrain.* (its seed) + numerics
                                                       pretrain/<hash>/<run id>/
  fold run    prior (or none) + key frames + model.* + finetune.* (its seed, the searched
              values) + numerics + the run's subjects  (stored in each prediction file)
  experiment  all of the above + search.* except the name: tune/<experiment>/_settings.json
  finetune    the same for one configuration:          finetune/<name>/_settings.json

"numerics" are the execution settings that change what training computes: DDP workers
(each takes its share of a batch), the channels-last layout (summation order) and the
device (CUDA runs with bf16 autocast). CPU counts, concurrency and chunking only change
speed and are left out. Content-keyed folders (key frames, priors) never clash; named
folders (experiments, finetune runs) refuse a rerun under other settings with one sentence
naming the settings that differ (`claim`). A rerun with the same settings finds and skips
finished work.

What made an output is recorded, not hashed (mer/provenance.py): every key-frame table,
prior, fold run and baseline prediction records the code version (`code`, a hash of the
`mer` package source; `commit`, the git commit with "+dirty"), the platform and the thread
count. None of them is in a hash above, so a new commit never recomputes finished work and
a rerun on one machine stays bit for bit identical. They are checked when rows are
combined: a comparison or a study refuses rows made by different code, platforms or thread
counts unless told `--allow-mixed`, and then names them (docs/study.md, "Provenance").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pandas as pd

from mer import storage
from mer.config import PipelineConfig
from mer.datasets.synthetic.settings import VERSION as GENERATOR_VERSION
from mer.datasets.synthetic.settings import settings as synthetic_settings
from mer.datasets.synthetic.settings import without_unused
from mer.errors import ConfigError
from mer.folds import FoldRun

# keyframes.* settings that change speed or run control, not the key frames written.
KEYFRAMES_EXECUTION = ("concurrency", "chunk_size", "max_reject_fraction", "resources", "gpus")


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """{"a.b.c": leaf} for nested dicts (lists and scalars are leaves)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k in sorted(value):
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), value[k]))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def digest(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _section(cfg: PipelineConfig, name: str, drop: tuple[str, ...] = ()) -> dict:
    d = {k: v for k, v in cfg.to_dict()[name].items() if k not in drop}
    return flatten(name, d)


def _pretrain(cfg: PipelineConfig, drop: tuple[str, ...] = ()) -> dict:
    """The pretrain section as a key. pretrain.precise_norms (added later) only shapes a
    prior, so without prior learning it is left out and those results keep their key;
    pretrain.prior_groups likewise, and at its default (one prior per fold run) always."""
    if not cfg.pretrain.enabled:
        drop = (*drop, "precise_norms", "prior_groups")
    return _section(cfg, "pretrain", _per_fold_priors(cfg, drop))


def _per_fold_priors(cfg: PipelineConfig, drop: tuple[str, ...]) -> tuple[str, ...]:
    """`drop` plus pretrain.prior_groups at its default, so per-fold priors (and everything
    keyed by them) keep the keys they had before shared priors existed; any N is in the key,
    so a change of N never reuses another N's priors."""
    return (*drop, "prior_groups") if cfg.pretrain.prior_groups is None else drop


# ---------------------------------------------------------------- data


def data_settings(cfg: PipelineConfig) -> dict:
    d = cfg.data
    if d.dataset == "synthetic":
        # The resolved generator settings: a preset and the same values spelt out are one set
        # (test-bed options at their defaults left out: older sets keep their keys).
        resolved = without_unused(dataclasses.asdict(synthetic_settings(**d.synthetic)))
        return {
            "data.dataset": "synthetic",
            "data.generator_version": GENERATOR_VERSION,
            "data.protocol": d.protocol,
            **flatten("data.synthetic", resolved),
        }
    return {
        "data.dataset": d.dataset,
        "data.root": data_root(cfg),
        "data.annotations": d.annotations,
        "data.protocol": d.protocol,
        **flatten("data.options", d.options),
    }


def data_hash(cfg: PipelineConfig) -> str:
    return digest(data_settings(cfg))


def data_root(cfg: PipelineConfig) -> str:
    """The dataset root: `data.root`, else (synthetic) one folder per generator setting."""
    if cfg.data.root:
        return cfg.data.root
    if cfg.data.dataset == "synthetic":
        return storage.join(cfg.root, "data", "synthetic", data_hash(cfg))
    return storage.join(cfg.root, "data", cfg.data.dataset)


# ---------------------------------------------------------------- key frames


def keyframes_settings(cfg: PipelineConfig) -> dict:
    settings = {**data_settings(cfg), **_section(cfg, "keyframes", KEYFRAMES_EXECUTION)}
    if cfg.keyframes.interpolation == "adaconv":
        settings["interpolator.hash"] = interpolator_hash(cfg)
        if cfg.keyframes.gpus > 0:  # a CUDA interpolator may round a frame differently
            settings["interpolator.device"] = "cuda"
    return settings


def keyframes_hash(cfg: PipelineConfig) -> str:
    return digest(keyframes_settings(cfg))


def keyframes_uri(cfg: PipelineConfig) -> str:
    return storage.join(cfg.root, "keyframes", cfg.data.dataset, keyframes_hash(cfg))


# ---------------------------------------------------------------- learned interpolator

# keyframes.* settings that shape the frames the interpolator trains on.
INTERPOLATOR_FRAMES = ("size", "face_crop", "stabilize", "registration", "motion")


def interpolator_settings(cfg: PipelineConfig) -> dict:
    frames = {f"keyframes.{k}": getattr(cfg.keyframes, k) for k in INTERPOLATOR_FRAMES}
    return {**data_settings(cfg), **frames, **_section(cfg, "interpolator"), **numerics(cfg)}


def interpolator_hash(cfg: PipelineConfig) -> str:
    return digest(interpolator_settings(cfg))


def interpolator_uri(cfg: PipelineConfig) -> str:
    """The learned interpolator of these data and settings: model.pt, _done.json."""
    return storage.join(cfg.root, "interpolator", interpolator_hash(cfg))


def interpolator_file(cfg: PipelineConfig) -> str:
    return storage.join(interpolator_uri(cfg), "model.pt")


# ---------------------------------------------------------------- training


def numerics(cfg: PipelineConfig) -> dict:
    r = cfg.resources
    return {
        "resources.workers": r.workers,
        "resources.channels_last": r.channels_last,
        "resources.device": "cuda" if r.gpus_per_worker > 0 else "cpu",
    }


def prior_settings(cfg: PipelineConfig) -> dict:
    return {
        "keyframes.hash": keyframes_hash(cfg),
        **_section(cfg, "model"),
        **_section(cfg, "pretrain", _per_fold_priors(cfg, ("enabled",))),
        **numerics(cfg),
    }


def prior_hash(cfg: PipelineConfig) -> str:
    return digest(prior_settings(cfg))


def prior_dir(cfg: PipelineConfig, run_id: str) -> str:
    """Prior learning of one fold run (its training subjects) at cfg's pretrain.seed; with
    shared priors `run_id` names the subject group and hashes its training subjects
    (mer.keyframes.table.outer_runs)."""
    return storage.join(cfg.root, "pretrain", prior_hash(cfg), run_id)


def prior_uri(cfg: PipelineConfig, run_id: str) -> str:
    return storage.join(prior_dir(cfg, run_id), "prior.pt")


def pretrain_runs_uri(cfg: PipelineConfig) -> str:
    """Ray Train's own folders of the runs that learn priors (their epoch checkpoints)."""
    return storage.join(cfg.root, "pretrain", "_runs")


def run_settings(cfg: PipelineConfig, run: FoldRun) -> dict:
    """Everything that determines one fold run's predictions (cfg carries its seed and the
    searched values)."""
    return {
        "keyframes.hash": keyframes_hash(cfg),
        "prior.hash": prior_hash(cfg) if cfg.pretrain.enabled else None,
        "prior.run": run.prior,
        **_section(cfg, "model"),
        **_section(cfg, "finetune"),
        **numerics(cfg),
        "run.train_subjects": sorted(run.train_subjects),
        "run.test_subjects": sorted(run.test_subjects),
    }


def run_hash(cfg: PipelineConfig, run: FoldRun) -> str:
    return digest(run_settings(cfg, run))


def seed_dir(out: str, seed: int) -> str:
    """Per-clip predictions of one configuration at one seed: <out>/seed-<s>/<run>.parquet."""
    return storage.join(out, f"seed-{seed}")


def predictions_uri(out: str, seed: int, run_id: str) -> str:
    return storage.join(seed_dir(out, seed), f"{run_id}.parquet")


def read_predictions(out: str):
    """Every finished unit's per-clip predictions under `out` (seed-*/<run>.parquet) as one
    pandas DataFrame; empty if none yet."""
    frames = []
    for folder in storage.listdir(out):
        if not folder.startswith("seed-"):
            continue
        for f in storage.listdir(storage.join(out, folder)):
            if f.endswith(".parquet"):
                frames.append(storage.read_parquet(storage.join(out, folder, f)).to_pandas())
    columns = ["dataset", "subject", "clip", "label", "pred", "run", "kind", "outer", "seed"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


# ---------------------------------------------------------------- named outputs


def experiment_uri(cfg: PipelineConfig) -> str:
    return storage.join(cfg.root, "tune", cfg.search.experiment)


def config_dir(experiment: str, config_id: str) -> str:
    """One configuration of an experiment: params.json and seed-<s>/<run>.parquet."""
    return storage.join(experiment, "configs", config_id)


def baseline_dir(experiment: str, name: str) -> str:
    """One baseline's predictions in an experiment, laid out like a configuration's."""
    return storage.join(experiment, "baselines", name)


def results_uri(cfg: PipelineConfig) -> str:
    return storage.join(cfg.root, "results", cfg.search.experiment)


def finetune_uri(cfg: PipelineConfig, name: str) -> str:
    return storage.join(cfg.root, "finetune", name)


def model_uri(cfg: PipelineConfig, name: str) -> str:
    return storage.join(cfg.root, "models", name)


def experiment_settings(cfg: PipelineConfig) -> dict:
    """What an experiment's results depend on. Seeds come from search.seeds, searched
    finetune values from the space, so pretrain.seed, finetune.seed and those are left out."""
    searched = tuple(cfg.search.space)
    return {
        **keyframes_settings(cfg),
        **_section(cfg, "model"),
        **_pretrain(cfg, ("seed",)),
        **_section(cfg, "finetune", ("seed", *searched)),
        **numerics(cfg),
        **_section(cfg, "search", ("experiment",)),
        "seed": cfg.seed,
    }


def finetune_settings(cfg: PipelineConfig, folds: list[str]) -> dict:
    """What a `jobs/finetune.py --name` run's results depend on."""
    return {
        **keyframes_settings(cfg),
        **_section(cfg, "model"),
        **_pretrain(cfg),
        **_section(cfg, "finetune"),
        **numerics(cfg),
        "folds": sorted(folds),
    }


def describe_change(old: dict, new: dict, limit: int = 3) -> str:
    """'finetune.lr=0.0005 (this run: 0.001), ...' for the settings that differ."""
    keys = sorted(
        k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>")
    )
    parts = [f"{k}={old.get(k, '<unset>')!r} (this run: {new.get(k, '<unset>')!r})" for k in keys]
    more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def claim(folder: str, settings: dict, what: str, remedy: str) -> None:
    """Tie `folder` to `settings` (its _settings.json), or refuse when it holds results made
    under other settings."""
    change = made_under_other_settings(folder, settings)
    if change is not None:
        raise ConfigError(
            f"{folder} holds {what} made with {change}; {remedy}, or delete that folder"
        )
    uri = storage.join(folder, "_settings.json")
    if not storage.exists(uri):
        storage.write_json(uri, {"hash": digest(settings), "settings": settings})


def made_under_other_settings(folder: str, settings: dict) -> str | None:
    """None when `folder` is unclaimed or claimed with `settings`; otherwise what differs
    ('finetune.lr=0.0005 (this run: 0.001)')."""
    uri = storage.join(folder, "_settings.json")
    if not storage.exists(uri):
        return None
    old = storage.read_json(uri)
    if old.get("hash") == digest(settings):
        return None
    return describe_change(old.get("settings", {}), settings) or "other settings"


# ---------------------------------------------------------------- spotting

# spotting.* settings that change speed, not what is spotted.
SPOTTING_EXECUTION = ("concurrency",)
# spotting.* settings the per-frame features depend on (the rest shape scores and intervals).
SPOTTING_FEATURES = ("side", "grid", "window_s", "span_s")
SPOTTING_DATA = ("dataset", "root", "annotations", "options")


def long_data_root(cfg: PipelineConfig) -> str:
    """The long videos' root: `spotting.root`, else (synthetic_long) one folder per
    generator setting under <run root>/data/."""
    sp = cfg.spotting
    if sp.root:
        return sp.root
    if sp.dataset != "synthetic_long":
        raise ConfigError(f"spotting.dataset={sp.dataset} needs spotting.root (where it lies)")
    # The generator refuses a folder made under other settings, so a key of the options as
    # given is enough (a preset and its values spelt out get two folders).
    return storage.join(cfg.root, "data", "synthetic_long", digest(flatten("", sp.options)))


def spotting_data_settings(cfg: PipelineConfig) -> dict:
    sp = cfg.spotting
    return {
        "spotting.dataset": sp.dataset,
        "spotting.root": long_data_root(cfg),
        "spotting.annotations": sp.annotations,
        **flatten("spotting.options", sp.options),
    }


def spotting_features_settings(cfg: PipelineConfig) -> dict:
    """What the per-frame features of mer.spotting.stage depend on: the videos and windows."""
    d = cfg.to_dict()["spotting"]
    return {
        **spotting_data_settings(cfg),
        **{f"spotting.{k}": d[k] for k in SPOTTING_FEATURES},
    }


def spotting_features_uri(cfg: PipelineConfig) -> str:
    """One .npz of features per video: spotting/<dataset>/features/<hash>/."""
    h = digest(spotting_features_settings(cfg))
    return storage.join(cfg.root, "spotting", cfg.spotting.dataset, "features", h)


def spotting_settings(cfg: PipelineConfig) -> dict:
    """Everything that determines a spotting run's intervals: the features, every other
    spotting setting but the execution ones, and (learned spotter) the training workers."""
    skip = (*SPOTTING_EXECUTION, *SPOTTING_FEATURES, *SPOTTING_DATA)
    return {
        "spotting.features": digest(spotting_features_settings(cfg)),
        **_section(cfg, "spotting", skip),
        "resources.workers": cfg.resources.workers,
    }


def spotting_hash(cfg: PipelineConfig) -> str:
    return digest(spotting_settings(cfg))


def spotting_uri(cfg: PipelineConfig) -> str:
    """A spotting run's intervals, metric and learned weights: spotting/<dataset>/<hash>/."""
    return storage.join(cfg.root, "spotting", cfg.spotting.dataset, spotting_hash(cfg))
