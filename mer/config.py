"""Run configuration: one dataclass per stage, loadable from YAML, overridable from the CLI.

A `PipelineConfig` holds every stage's settings. Every field is type- and range-checked on
load (mer.config_checks), each problem reported in one sentence naming the setting, so a typo
never reaches a worker. Which settings key which outputs is `mer.layout`'s business; every run
writes its resolved config beside its outputs (`config.yaml`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml

from mer import storage
from mer.config_checks import NUM_CLASSES, SEARCHABLE, check_finetune, typed, validate
from mer.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # casme2 | samm | smic | casme3 | megc2019 | synthetic
    root: str = ""  # dataset root (local path or s3://); "" = under <run root>/data/
    annotations: str | None = None  # sheet or MEGC2019 list; None = the dataset's default
    protocol: str = "3class"  # 3class | 5class
    options: dict = field(default_factory=dict)  # extra adapter arguments (megc2019 roots)
    # Generator settings (mer.datasets.synthetic.generator.generate's keyword arguments: a preset and
    # options on top), used when dataset == "synthetic"; made once per distinct settings.
    synthetic: dict = field(default_factory=lambda: {"preset": "simple"})


@dataclass
class KeyframeConfig:
    k: int = 16  # key frames per clip
    size: int = 112  # S: key frames are S x S
    method: str = "adaptive"  # adaptive | uniform | onset-apex
    motion: str = "flow"  # motion curve for apex spotting and placement: flow | diff
    interpolation: str = "linear"  # linear | flow | adaconv (the learned interpolator)
    face_crop: bool = False  # off for already-cropped sets (CASME II Cropped, synthetic)
    stabilize: bool = True  # register frames to the onset frame (global head motion)
    # Where the registration's head shifts come from: "motion", the shifts the motion curve
    # measures anyway (flow median; interpolated between its samples), or "phase", phase
    # correlation of each frame the key frames use (mer.keyframes.align).
    registration: str = "motion"
    decode_timeout: float = 60.0  # seconds before a hung decode is abandoned
    # Execution (not part of the output hash).
    concurrency: int = 2  # Ray Data pool size: parallel key-frame tasks
    chunk_size: int = 16  # clips per task and per Parquet part
    # Ray resources each key-frame actor asks for besides its CPU, e.g. {decode: 1}: only
    # the node type that advertises them decodes (cluster.yaml's CPU type, never a GPU node).
    resources: dict = field(default_factory=dict)
    # GPU share each key-frame actor asks for (e.g. 0.25): with interpolation adaconv the
    # interpolator renders there; 0 renders on the actor's CPU. Nothing else uses the GPU.
    gpus: float = 0.0
    # A run whose share of rejected clips exceeds this stops with a summary of the reasons.
    max_reject_fraction: float = 0.2


@dataclass
class InterpolatorStageConfig:
    """The learned key-frame interpolator (mer.keyframes.interpolator), trained when
    keyframes.interpolation is adaconv, on the dataset's own frames (no labels)."""

    kernel_size: int = 7  # per-pixel 1-D kernels: reach (k - 1) / 2 px per frame
    base: int = 16  # U-Net channels at full resolution
    levels: int = 3  # U-Net halvings
    steps: int = 600
    batch_size: int = 16  # triplets per step and worker
    lr: float = 1e-3
    max_gap: int = 8  # frames between the two inputs: 2..max_gap
    seed: int = 0


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
    # Pair rule: "random" (batch_size pairs per step, half same class, any subjects) or
    # "episodic" (class-balanced episodes of 2 x batch_size clips, every pair inside one,
    # positives across subjects only); mer.train.pretrain.
    pairs: str = "random"
    augment: bool = True
    # BatchNorm statistics of the saved prior recomputed over the training clips after the
    # last epoch (mer.train.step.recompute_norms); False keeps the running averages, which a
    # short run leaves far from the data (benchmarks/README.md, "Prior learning").
    precise_norms: bool = True
    seed: int = 0  # a search replaces it with each of search.seeds
    # Shared priors: null learns one prior per fold run (the paper's reading); N splits the
    # subjects into N groups balanced by clips and learns one prior per group on every
    # subject outside it, used by the folds whose held-out subject the group holds (inner
    # folds likewise inside each outer training set; mer.keyframes.table.outer_runs, nested_runs).
    prior_groups: int | None = None
    # bf16 autocast on GPU. Off until a GPU study of the contrastive loss over whole epochs
    # says it is safe: under CPU autocast its gradient direction disagreed with fp32.
    amp: bool = False


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
    seed: int = 0  # a search replaces it with each of search.seeds


@dataclass
class ResourcesConfig:
    workers: int = 1  # Ray Train workers per run (DDP)
    # CPUs per worker and concurrent runs (Tune trials); 0 = derived from the cluster so
    # that every run's reservation fits at once, the same for one run as for many (a run's
    # CPUs are its torch thread count; mer.train.runtime.plan_resources).
    cpus_per_worker: float = 0.0
    gpus_per_worker: float = 0.0  # fractions share a GPU between concurrent runs
    max_concurrent: int = 0
    folds_per_run: int = 0  # prior-learning folds one run handles in turn; 0 = derived
    # Convolutions in the channels-last-3d memory format (faster on CPUs and GPUs here).
    channels_last: bool = True
    # torch.compile the training forward pass; null = on for CUDA, off on CPUs (compiling
    # costs about a minute on a CPU core, more than the demo's fold runs).
    compile: bool | None = None
    # Each worker copies its key-frame table to its device once and indexes batches there
    # (no host copies per batch); null = on for CUDA.
    table_on_device: bool | None = None
    max_failures: int = 2  # worker failures a run survives (resumes from checkpoint)
    # Ray resources each training worker asks for besides CPUs and GPUs, e.g.
    # {accelerator: 1}: only the node type that advertises them trains.
    worker_resources: dict = field(default_factory=dict)


@dataclass
class SearchConfig:
    experiment: str = "search"
    algorithm: str = "grid"  # grid | random | optuna | hyperopt
    num_samples: int = 1  # random/adaptive: configurations (grid: must be 1; see seeds)
    # Each entry: a list (grid/choice) or {"uniform": [lo, hi]} / {"loguniform": [lo, hi]}.
    space: dict = field(
        default_factory=lambda: {"gamma": [0.0, 2.0], "beta": [0.5], "freeze": [0, 2]}
    )
    # Every configuration runs every fold once per seed; the seed drives prior learning and
    # target learning (it replaces pretrain.seed and finetune.seed).
    seeds: list = field(default_factory=lambda: [0])
    early_stop: str = "none"  # none | asha (compares configurations on the same folds)
    protocol: str = "loso"  # loso | nested
    inner_k: int = 3  # nested: inner folds (groups of training subjects)
    # nested: inner runs start from priors trained without their validation subjects
    # ("own"), or reuse the outer fold's prior ("outer": cheaper, labelled as such).
    inner_prior: str = "own"
    folds: list | None = None  # restrict to these fold keys ("dataset/subject"); None = all


@dataclass
class ExportConfig:
    enabled: bool = True  # pipeline: after the search, train the final model (mer.serving.export)
    name: str = ""  # <root>/models/<name>/; "" = search.experiment
    config_id: str = ""  # "" = the nested-LOSO choice, else the leaderboard's top


@dataclass
class TrackingConfig:
    # An MLflow tracking server (http://host:5000, or a local sqlite:///... / file: store);
    # "" = none. Results are logged after they are written (mer.evaluation.tracking); needs the
    # optional client, `pip install -r requirements-mlflow.txt`.
    mlflow_uri: str = ""


@dataclass
class SpottingConfig:
    """Spotting in long videos (mer.spotting; jobs/spot.py)."""

    # Long videos: casme_sq (CAS(ME)^2) | samm_lv (SAMM Long Videos) | synthetic_long.
    dataset: str = "synthetic_long"
    root: str = ""  # the long videos' root (local path or s3://); "" = under <run root>/data/
    annotations: str | None = None  # the sheet; None = the dataset's default
    options: dict = field(default_factory=dict)  # extra adapter or generator arguments
    spotters: list = field(default_factory=lambda: ["motion", "mdmd", "learned"])
    # Windows (mer.spotting.windows): grey copies side x side px, grid x grid MDMD blocks,
    # windows of window_s seconds overlapping by half, MDMD flow over 2 x span_s seconds.
    side: int = 126
    grid: int = 6
    window_s: float = 1.0
    span_s: float = 0.05
    # Intervals (mer.spotting.peaks): rule "threshold" (runs above the threshold) or "peaks"
    # (an interval of one of peak_lengths_s seconds, chosen per fold on the training subjects,
    # centred on each local maximum above it); longer than micro_max_s is macro.
    interval_rule: str = "threshold"
    peak_lengths_s: list = field(default_factory=lambda: [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5])
    micro_max_s: float = 0.5
    merge_gap_s: float = 0.1
    min_s: float = 0.06
    # The learned spotter (mer.spotting.learned); Ray Train workers come from `resources`.
    rate: float = 30.0
    hidden: int = 32
    epochs: int = 40
    lr: float = 0.003
    seed: int = 0
    # Execution (not part of the output hash).
    concurrency: int = 2  # Ray Data pool size: windows measured side by side


@dataclass
class PipelineConfig:
    root: str = "runs/demo"  # run root: local path or s3://bucket/prefix
    seed: int = 0  # inner-fold splits and adaptive searchers
    data: DataConfig = field(default_factory=DataConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    interpolator: InterpolatorStageConfig = field(default_factory=InterpolatorStageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    spotting: SpottingConfig = field(default_factory=SpottingConfig)

    def validate(self) -> PipelineConfig:
        validate(self)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "keyframes": KeyframeConfig,
    "interpolator": InterpolatorStageConfig,
    "model": ModelConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "resources": ResourcesConfig,
    "search": SearchConfig,
    "export": ExportConfig,
    "tracking": TrackingConfig,
    "spotting": SpottingConfig,
}


def from_dict(d: dict | None, source: str = "config") -> PipelineConfig:
    """Build a PipelineConfig from a (partial) dict; unknown keys and wrong types are errors."""
    d = copy.deepcopy(d or {})
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section '{key}' must be a mapping")
            cls = SECTIONS[key]
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - names)
            if unknown:
                raise ConfigError(
                    f"{source}: unknown key(s) {unknown} in '{key}'; known: {sorted(names)}"
                )
            for f in dataclasses.fields(cls):
                if f.name in value:
                    value[f.name] = typed(f"{key}.{f.name}", value[f.name], f.type)
            kwargs[key] = cls(**value)
        elif key == "root":
            kwargs[key] = typed("root", value, "str")
        elif key == "seed":
            kwargs[key] = typed("seed", value, "int")
        else:
            raise ConfigError(f"{source}: unknown section '{key}'")
    return PipelineConfig(**kwargs)


def load(path: str | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load YAML (local or s3://), apply `section.key=value` overrides, validate."""
    d: dict = {}
    if path:
        try:
            d = yaml.safe_load(storage.read_bytes(path)) or {}
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
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw  # a plain string the YAML parser dislikes (e.g. "a: b: c")
    parts = key.strip().split(".")
    check_override_key(item, parts)
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: '{p}' is not a section")
    node[parts[-1]] = value


def check_override_key(item: str, parts: list[str]) -> None:
    """An override names a known section and key; if not, the error names the `--set` it came
    from (not the config file, which never held the key)."""
    top = [*SECTIONS, "root", "seed"]
    section = parts[0]
    if section in ("root", "seed"):
        if len(parts) > 1:
            raise ConfigError(f"--set {item}: '{section}' is a setting, not a section")
        return
    if section not in SECTIONS:
        raise ConfigError(
            f"--set {item}: unknown section '{section}'{_did_you_mean(section, top)}; "
            f"known: {sorted(top)}"
        )
    names = sorted(f.name for f in dataclasses.fields(SECTIONS[section]))
    # A whole section (`--set "model={width: 1.0}"`) is checked with the rest of the config.
    if len(parts) > 1 and parts[1] not in names:
        raise ConfigError(
            f"--set {item}: unknown key '{parts[1]}' in '{section}'"
            f"{_did_you_mean(parts[1], names)}; known: {names}"
        )


def _did_you_mean(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def with_params(cfg: PipelineConfig, params: dict, seed: int | None = None) -> PipelineConfig:
    """A copy of cfg with search parameters applied to `finetune` and, with `seed`, that seed
    as pretrain.seed and finetune.seed."""
    cfg = copy.deepcopy(cfg)
    annotations = {f.name: f.type for f in dataclasses.fields(FinetuneConfig)}
    for k, v in params.items():
        if k not in SEARCHABLE:
            raise ConfigError(f"search parameter {k!r} is not a searchable finetune setting")
        setattr(cfg.finetune, k, typed(f"finetune.{k}", v, annotations[k]))
    if seed is not None:
        cfg.pretrain.seed = int(seed)
        cfg.finetune.seed = int(seed)
    check_finetune(cfg.finetune, "finetune", NUM_CLASSES[cfg.data.protocol])
    return cfg
