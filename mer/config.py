"""Run configuration: one dataclass per stage, loadable from YAML, overridable from the CLI.

A `PipelineConfig` holds every stage's settings. Each stage hashes only the sections that
change its output (`stage_hash`), so editing the search space does not rebuild key frames.
Every run writes its resolved config beside its outputs (`config.yaml`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from mer.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # casme2 | samm | smic | casme3 | megc2019 | synthetic
    root: str = ""  # dataset root (local path or s3://); "" = <run root>/data/<dataset>
    annotations: str | None = None  # sheet or MEGC2019 list; None = the dataset's default
    protocol: str = "3class"
    options: dict = field(default_factory=dict)  # extra adapter arguments (megc2019 roots)
    # Synthetic data made when dataset == "synthetic" and the root holds none yet.
    synthetic: dict = field(
        default_factory=lambda: {
            "subjects": 8,
            "clips_per_subject": 6,
            "seed": 0,
            "layout": "casme2",
            "size": [340, 280],
            "frames": [40, 100],
        }
    )


@dataclass
class KeyframeConfig:
    k: int = 16  # key frames per clip
    size: int = 112  # S: key frames are S x S
    method: str = "adaptive"  # adaptive | uniform | onset-apex
    motion: str = "flow"  # motion curve for apex spotting and placement: flow | diff
    interpolation: str = "linear"  # linear | flow
    face_crop: bool = False  # off for already-cropped sets (CASME II Cropped, synthetic)
    stabilize: bool = True  # register frames to the onset frame (global head motion)
    # Where the registration's head shifts come from: "motion", the shifts the motion curve
    # measures anyway (flow median; interpolated between its samples), or "phase", phase
    # correlation of each frame the key frames use (mer.align).
    registration: str = "motion"
    decode_timeout: float = 60.0  # seconds before a hung decode is abandoned
    # Execution (not part of the output hash).
    concurrency: int = 2  # Ray Data pool size: parallel key-frame tasks
    chunk_size: int = 16  # clips per task and per Parquet part


@dataclass
class ModelConfig:
    width: float = 1.0  # C3D channel multiplier (1.0 = Tran et al. 2015)
    input: str = "frames"  # frames (the paper) | delta (key frames minus onset, amplified)
    batch_norm: bool = True
    dropout: float = 0.5
    embedding_dim: int = 128  # siamese embedding size
    head_hidden: int = 256  # target-learning head (our reconstruction)


@dataclass
class PretrainConfig:
    enabled: bool = True  # False: target learning starts from random weights
    epochs: int = 10
    pairs_per_epoch: int = 512
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 1.0
    augment: bool = True
    seed: int = 0


@dataclass
class FinetuneConfig:
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    gamma: float = 2.0  # focal-loss focusing parameter
    beta: float = 0.5  # class-balance exponent: alpha_c ~ n_c^-beta (ignored if alpha set)
    alpha: list | None = None  # explicit per-class alpha
    freeze: int = 2  # conv blocks (0-5) frozen after prior learning
    balanced_sampler: bool = False
    # Early stopping on a validation split of the *training* subjects (never the held-out).
    early_stopping: bool = False
    val_groups: int = 4  # training subjects split into this many groups; one validates
    patience: int = 5
    amp: bool = True  # bf16 autocast on GPU; ignored on CPU
    augment: bool = True
    seed: int = 0


@dataclass
class ResourcesConfig:
    workers: int = 1  # Ray Train workers per run (DDP)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # fractions share a GPU between concurrent runs
    max_concurrent: int = 0  # concurrent runs (Tune trials); 0 = as many as fit
    folds_per_run: int = 0  # folds one prior-learning run handles in turn; 0 = all
    # Convolutions in the channels-last-3d memory format (faster on CPUs and GPUs here).
    channels_last: bool = True
    max_failures: int = 2  # worker failures a run survives (resumes from checkpoint)


@dataclass
class SearchConfig:
    experiment: str = "search"
    algorithm: str = "grid"  # grid | random | optuna | hyperopt
    num_samples: int = 1  # random/adaptive: configurations; grid: repeats of the grid
    # Each entry: a list (grid/choice) or {"uniform": [lo, hi]} / {"loguniform": [lo, hi]}.
    space: dict = field(
        default_factory=lambda: {"gamma": [0.0, 2.0], "beta": [0.5], "freeze": [0, 2]}
    )
    early_stop: str = "none"  # none | asha (compares configurations on the same folds)
    protocol: str = "loso"  # loso | nested
    inner_k: int = 3  # nested: inner folds (groups of training subjects)
    folds: list | None = None  # restrict to these fold keys ("dataset/subject"); None = all


@dataclass
class PipelineConfig:
    root: str = "runs/demo"  # run root: local path or s3://bucket/prefix
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def validate(self) -> PipelineConfig:
        validate(self)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def data_root(self) -> str:
        from mer.storage import join

        return self.data.root or join(self.root, "data", self.data.dataset)


SECTIONS = {f.name: f.type for f in dataclasses.fields(PipelineConfig)}

# Settings that change how fast a stage runs but not what it writes.
_EXECUTION_ONLY = {"keyframes": {"concurrency", "chunk_size"}}


def _section_classes() -> dict[str, type]:
    return {
        "data": DataConfig,
        "keyframes": KeyframeConfig,
        "model": ModelConfig,
        "pretrain": PretrainConfig,
        "finetune": FinetuneConfig,
        "resources": ResourcesConfig,
        "search": SearchConfig,
    }


def from_dict(d: dict | None, source: str = "config") -> PipelineConfig:
    """Build a PipelineConfig from a (partial) dict; unknown keys are errors."""
    d = copy.deepcopy(d or {})
    classes = _section_classes()
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in classes:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section '{key}' must be a mapping")
            names = {f.name for f in dataclasses.fields(classes[key])}
            unknown = sorted(set(value) - names)
            if unknown:
                raise ConfigError(
                    f"{source}: unknown key(s) {unknown} in '{key}'; known: {sorted(names)}"
                )
            kwargs[key] = classes[key](**value)
        elif key in ("root", "seed"):
            kwargs[key] = value
        else:
            raise ConfigError(f"{source}: unknown section '{key}'")
    return PipelineConfig(**kwargs)


def load(path: str | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load YAML (local or s3://), apply `section.key=value` overrides, validate."""
    d: dict = {}
    if path:
        from mer.storage import read_bytes

        try:
            d = yaml.safe_load(read_bytes(path)) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        apply_override(d, item)
    return from_dict(d, source=path or "config").validate()


def apply_override(d: dict, item: str) -> None:
    """Apply one `a.b=value` override (value parsed as YAML: 2, 0.5, [1, 2], true, s3://x)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.strip().split(".")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: '{p}' is not a section")
    node[parts[-1]] = value


def validate(cfg: PipelineConfig) -> None:
    """Range checks a user can trip; one sentence naming the setting and its allowed range."""
    from mer.datasets import DATASETS

    def bad(name, value, allowed):
        raise ConfigError(f"config {name}={value!r} is out of range: {allowed}")

    if cfg.data.dataset not in DATASETS:
        bad("data.dataset", cfg.data.dataset, f"one of {', '.join(DATASETS)}")
    kf = cfg.keyframes
    if kf.k < 2:
        bad("keyframes.k", kf.k, "at least 2 (onset and apex)")
    if kf.size < 16 or kf.size % 16:
        bad("keyframes.size", kf.size, "a multiple of 16 (C3D pools the frame four times)")
    if kf.method not in ("adaptive", "uniform", "onset-apex"):
        bad("keyframes.method", kf.method, "adaptive, uniform or onset-apex")
    if kf.motion not in ("flow", "diff"):
        bad("keyframes.motion", kf.motion, "flow or diff")
    if kf.interpolation not in ("linear", "flow"):
        bad("keyframes.interpolation", kf.interpolation, "linear or flow")
    if kf.registration not in ("motion", "phase"):
        bad("keyframes.registration", kf.registration, "motion or phase")
    if kf.concurrency < 1 or kf.chunk_size < 1:
        bad("keyframes.concurrency/chunk_size", (kf.concurrency, kf.chunk_size), ">= 1")
    if cfg.model.input not in ("frames", "delta"):
        bad("model.input", cfg.model.input, "frames or delta")
    if not 0 < cfg.model.width <= 4:
        bad("model.width", cfg.model.width, "in (0, 4]")
    ft = cfg.finetune
    if ft.gamma < 0:
        bad("finetune.gamma", ft.gamma, ">= 0")
    if not 0 <= ft.beta <= 1:
        bad("finetune.beta", ft.beta, "in [0, 1]")
    if ft.alpha is not None and (
        not isinstance(ft.alpha, list) or any(float(a) < 0 for a in ft.alpha)
    ):
        bad("finetune.alpha", ft.alpha, "a list of non-negative per-class weights")
    if not 0 <= ft.freeze <= 5:
        bad("finetune.freeze", ft.freeze, "0-5 conv blocks")
    for name, v in (("finetune.epochs", ft.epochs), ("pretrain.epochs", cfg.pretrain.epochs)):
        if v < 1:
            bad(name, v, ">= 1")
    if ft.early_stopping and ft.val_groups < 2:
        bad("finetune.val_groups", ft.val_groups, ">= 2")
    r = cfg.resources
    if r.workers < 0 or r.cpus_per_worker < 0 or r.gpus_per_worker < 0:
        bad("resources", (r.workers, r.cpus_per_worker, r.gpus_per_worker), "non-negative")
    s = cfg.search
    if s.algorithm not in ("grid", "random", "optuna", "hyperopt"):
        bad("search.algorithm", s.algorithm, "grid, random, optuna or hyperopt")
    if s.protocol not in ("loso", "nested"):
        bad("search.protocol", s.protocol, "loso or nested")
    if s.early_stop not in ("none", "asha"):
        bad("search.early_stop", s.early_stop, "none or asha")
    if s.protocol == "nested" and s.inner_k < 2:
        bad("search.inner_k", s.inner_k, ">= 2")
    from mer.search import check_space  # noqa: PLC0415 (avoid a cycle at import time)

    check_space(s.space)


def section_dict(cfg: PipelineConfig, name: str) -> dict:
    d = dataclasses.asdict(getattr(cfg, name))
    for k in _EXECUTION_ONLY.get(name, ()):
        d.pop(k, None)
    return d


def stage_hash(cfg: PipelineConfig, *sections: str) -> str:
    """Short hash of the named sections (execution-only settings excluded)."""
    payload = {s: section_dict(cfg, s) for s in sections}
    if "data" in payload:
        payload["data"]["root"] = cfg.data_root()
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def keyframes_hash(cfg: PipelineConfig) -> str:
    return stage_hash(cfg, "data", "keyframes")


def pretrain_hash(cfg: PipelineConfig) -> str:
    h = stage_hash(cfg, "model", "pretrain")
    return hashlib.sha256((keyframes_hash(cfg) + h).encode()).hexdigest()[:16]
