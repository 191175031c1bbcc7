"""Type and range checks of a run configuration (`mer.config`): each problem is one sentence
naming the setting and what it allows, raised as a ConfigError before anything runs.

`typed` converts one loaded value to its field's type; `validate` checks a whole
PipelineConfig's ranges and cross-setting rules; `check_space` checks a search space value by
value against the finetune ranges (`check_finetune`). The dataclasses themselves live in
mer.config, which calls these on load; this module imports nothing of it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

# The data stage's registry and generator settings: both import nothing above mer.errors.
from mer.datasets import DATASETS
from mer.datasets.synthetic.settings import settings as synthetic_settings
from mer.errors import ConfigError

NUM_CLASSES = {"3class": 3, "5class": 5}
# The search space may set these finetune fields (what target learning reads per run).
SEARCHABLE = ("gamma", "beta", "alpha", "freeze", "lr", "weight_decay", "epochs", "batch_size")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


def typed(name: str, value: Any, annotation: str) -> Any:
    """`value` as the field's type, or a ConfigError naming the setting."""
    kinds = [a.strip() for a in str(annotation).split("|")]
    if value is None and "None" in kinds:
        return None
    kind = kinds[0]
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "list" and isinstance(value, list):
        return value
    if kind == "dict" and isinstance(value, dict):
        return value
    what = {
        "bool": "true or false",
        "int": "an integer",
        "float": "a finite number",
        "str": "a string",
        "list": "a list",
        "dict": "a mapping",
    }[kind]
    extra = " or null" if "None" in kinds else ""
    raise ConfigError(f"config {name}={value!r} must be {what}{extra}")


def _bad(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config {name}={value!r} is out of range: {allowed}")


def _one_of(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise _bad(name, value, "one of " + ", ".join(str(a) for a in allowed))


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise _bad(name, value, f">= {low:g}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise _bad(name, value, "> 0")


def validate(cfg) -> None:
    """Range checks of a mer.config.PipelineConfig a user can trip; one sentence naming the
    setting and its allowed range."""
    if not cfg.root:
        raise ConfigError("config root is empty: give a local folder or s3://bucket/prefix")
    d = cfg.data
    _one_of("data.dataset", d.dataset, DATASETS)
    _one_of("data.protocol", d.protocol, tuple(NUM_CLASSES))
    if d.dataset == "synthetic":
        _check_synthetic(d.synthetic)
    kf = cfg.keyframes
    _at_least("keyframes.k", kf.k, 2)
    if kf.size < 16 or kf.size % 16:
        raise _bad("keyframes.size", kf.size, "a multiple of 16 (C3D pools the frame four times)")
    _one_of("keyframes.method", kf.method, ("adaptive", "uniform", "onset-apex"))
    _one_of("keyframes.motion", kf.motion, ("flow", "diff"))
    _one_of("keyframes.interpolation", kf.interpolation, ("linear", "flow", "adaconv"))
    _one_of("keyframes.registration", kf.registration, ("motion", "phase"))
    _positive("keyframes.decode_timeout", kf.decode_timeout)
    _at_least("keyframes.concurrency", kf.concurrency, 1)
    _at_least("keyframes.gpus", kf.gpus, 0)
    _at_least("keyframes.chunk_size", kf.chunk_size, 1)
    _check_ray_resources("keyframes.resources", kf.resources)
    if not 0 <= kf.max_reject_fraction <= 1:
        raise _bad("keyframes.max_reject_fraction", kf.max_reject_fraction, "in [0, 1]")
    ip = cfg.interpolator
    if ip.kernel_size < 3 or ip.kernel_size % 2 == 0:
        raise _bad("interpolator.kernel_size", ip.kernel_size, "an odd number >= 3")
    _at_least("interpolator.base", ip.base, 1)
    _at_least("interpolator.levels", ip.levels, 1)
    if kf.size % 2**ip.levels:
        raise _bad("interpolator.levels", ip.levels, f"at most log2 of a divisor of {kf.size}")
    _at_least("interpolator.steps", ip.steps, 1)
    _at_least("interpolator.batch_size", ip.batch_size, 1)
    _positive("interpolator.lr", ip.lr)
    _at_least("interpolator.max_gap", ip.max_gap, 2)
    _at_least("interpolator.seed", ip.seed, 0)
    m = cfg.model
    _one_of("model.input", m.input, ("frames", "delta"))
    if not 0 < m.width <= 4:
        raise _bad("model.width", m.width, "in (0, 4]")
    if not 0 <= m.dropout < 1:
        raise _bad("model.dropout", m.dropout, "in [0, 1)")
    _at_least("model.embedding_dim", m.embedding_dim, 1)
    _at_least("model.head_hidden", m.head_hidden, 1)
    p = cfg.pretrain
    _at_least("pretrain.epochs", p.epochs, 1)
    _at_least("pretrain.pairs_per_epoch", p.pairs_per_epoch, 2)
    _at_least("pretrain.batch_size", p.batch_size, 1)
    _positive("pretrain.lr", p.lr)
    _at_least("pretrain.weight_decay", p.weight_decay, 0)
    _positive("pretrain.margin", p.margin)
    _one_of("pretrain.pairs", p.pairs, ("random", "episodic"))
    _at_least("pretrain.seed", p.seed, 0)
    if p.prior_groups is not None and p.prior_groups < 2:
        raise _bad(
            "pretrain.prior_groups",
            p.prior_groups,
            ">= 2 groups of subjects (at most the subjects; null: one prior per fold run)",
        )
    check_finetune(cfg.finetune, "finetune", NUM_CLASSES[d.protocol])
    r = cfg.resources
    _at_least("resources.workers", r.workers, 1)
    _at_least("resources.cpus_per_worker", r.cpus_per_worker, 0)
    _at_least("resources.gpus_per_worker", r.gpus_per_worker, 0)
    _at_least("resources.max_concurrent", r.max_concurrent, 0)
    _at_least("resources.folds_per_run", r.folds_per_run, 0)
    _at_least("resources.max_failures", r.max_failures, 0)
    _check_ray_resources("resources.worker_resources", r.worker_resources)
    s = cfg.search
    if not s.experiment or "/" in s.experiment:
        raise _bad("search.experiment", s.experiment, "a non-empty name without '/'")
    _one_of("search.algorithm", s.algorithm, ("grid", "random", "optuna", "hyperopt"))
    _at_least("search.num_samples", s.num_samples, 1)
    if s.algorithm == "grid" and s.num_samples != 1:
        raise _bad(
            "search.num_samples",
            s.num_samples,
            "1 with algorithm grid (repeats of a configuration are search.seeds)",
        )
    if not s.seeds or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in s.seeds):
        raise _bad("search.seeds", s.seeds, "a non-empty list of non-negative integers")
    if len(set(s.seeds)) != len(s.seeds):
        raise _bad("search.seeds", s.seeds, "distinct seeds")
    _one_of("search.protocol", s.protocol, ("loso", "nested"))
    _one_of("search.early_stop", s.early_stop, ("none", "asha"))
    _one_of("search.inner_prior", s.inner_prior, ("own", "outer"))
    _at_least("search.inner_k", s.inner_k, 2)
    if s.protocol == "nested" and (s.algorithm in ("optuna", "hyperopt") or s.early_stop != "none"):
        # An adaptive searcher or a scheduler acts on the reported (pooled outer-fold)
        # scores, which would let held-out subjects shape the candidates.
        raise ConfigError(
            f"config search.protocol=nested cannot be combined with search.algorithm="
            f"{s.algorithm} / search.early_stop={s.early_stop}: their decisions would see the "
            "held-out subjects' scores; use algorithm grid or random with early_stop none"
        )
    if s.folds is not None and not all(isinstance(f, str) for f in s.folds):
        raise _bad("search.folds", s.folds, 'a list of "dataset/subject" keys or null')
    check_space(s.space, cfg)
    if "/" in cfg.export.name:
        raise _bad("export.name", cfg.export.name, "a name without '/'")
    _check_spotting(cfg.spotting)


LONG_DATASETS = ("casme_sq", "samm_lv", "synthetic_long")
SPOTTERS = ("motion", "mdmd", "learned")
INTERVAL_RULES = ("threshold", "peaks")  # mer.spotting.peaks.RULES


def _check_spotting(sp) -> None:
    _one_of("spotting.dataset", sp.dataset, LONG_DATASETS)
    if not sp.spotters or any(s not in SPOTTERS for s in sp.spotters):
        raise _bad("spotting.spotters", sp.spotters, f"a non-empty list from {list(SPOTTERS)}")
    if sp.side < 32 or sp.side % 2:
        raise _bad("spotting.side", sp.side, "an even number >= 32")
    _at_least("spotting.grid", sp.grid, 1)
    for name in ("window_s", "span_s", "micro_max_s", "min_s", "rate", "lr"):
        _positive(f"spotting.{name}", getattr(sp, name))
    _at_least("spotting.merge_gap_s", sp.merge_gap_s, 0)
    _one_of("spotting.interval_rule", sp.interval_rule, INTERVAL_RULES)
    lengths = sp.peak_lengths_s
    # Micro intervals: none longer than micro_max_s (checked where the peaks rule uses them).
    longest = sp.micro_max_s if sp.interval_rule == "peaks" else math.inf
    if (
        not isinstance(lengths, list)
        or not lengths
        or any(isinstance(x, bool) or not isinstance(x, int | float) for x in lengths)
        or not all(0 < x <= longest for x in lengths)
    ):
        raise _bad(
            "spotting.peak_lengths_s",
            lengths,
            f"a non-empty list of seconds in (0, spotting.micro_max_s={sp.micro_max_s}]",
        )
    _at_least("spotting.hidden", sp.hidden, 1)
    _at_least("spotting.epochs", sp.epochs, 1)
    _at_least("spotting.seed", sp.seed, 0)
    _at_least("spotting.concurrency", sp.concurrency, 1)


def _check_ray_resources(name: str, resources: dict) -> None:
    """Custom Ray resources: names other than CPU, GPU and memory (those have settings of
    their own) with non-negative amounts."""
    for key, amount in resources.items():
        if key in ("CPU", "GPU", "memory") or not isinstance(key, str):
            raise _bad(
                name, resources, "custom resource names (CPUs and GPUs have their own settings)"
            )
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            raise _bad(f"{name}.{key}", amount, "a non-negative number")


def check_finetune(ft, name: str, num_classes: int) -> None:
    _at_least(f"{name}.epochs", ft.epochs, 1)
    _at_least(f"{name}.batch_size", ft.batch_size, 1)
    _positive(f"{name}.lr", ft.lr)
    _at_least(f"{name}.weight_decay", ft.weight_decay, 0)
    _at_least(f"{name}.gamma", ft.gamma, 0)
    if not 0 <= ft.beta <= 1:
        raise _bad(f"{name}.beta", ft.beta, "in [0, 1]")
    if ft.alpha is not None and (
        len(ft.alpha) != num_classes
        or any(isinstance(a, bool) or not isinstance(a, int | float) or a < 0 for a in ft.alpha)
    ):
        raise _bad(f"{name}.alpha", ft.alpha, f"{num_classes} non-negative per-class weights")
    if isinstance(ft.freeze, bool) or not isinstance(ft.freeze, int) or not 0 <= ft.freeze <= 5:
        raise _bad(f"{name}.freeze", ft.freeze, "an integer 0-5 (conv blocks)")
    _at_least(f"{name}.val_groups", ft.val_groups, 2)
    _at_least(f"{name}.patience", ft.patience, 1)
    _at_least(f"{name}.seed", ft.seed, 0)


def _check_synthetic(options: dict) -> None:
    try:
        synthetic_settings(**options)
    except ConfigError as e:
        raise ConfigError(f"config data.synthetic: {e}") from None
    except TypeError as e:  # e.g. a preset given twice
        raise ConfigError(f"config data.synthetic: {e}") from None


def check_space(space: dict, cfg) -> None:
    """Every key a searchable finetune setting; values a non-empty list whose every value is
    valid for that setting, or {distribution: [args]} within the setting's range."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("config search.space must be a non-empty mapping of settings")
    for key, value in space.items():
        if key not in SEARCHABLE:
            raise ConfigError(
                f"config search.space: {key!r} is not a searchable finetune setting "
                f"({', '.join(SEARCHABLE)})"
            )
        annotation = {f.name: f.type for f in dataclasses.fields(cfg.finetune)}[key]
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"config search.space.{key} is an empty list")
            candidates = value
        elif isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS:
            ((dist, args),) = value.items()
            if not isinstance(args, list) or not args:
                raise ConfigError(f"config search.space.{key}: {dist} needs a list of arguments")
            if dist in ("uniform", "loguniform", "randint"):
                if len(args) != 2 or not all(isinstance(a, int | float) for a in args):
                    raise ConfigError(f"config search.space.{key}: {dist} needs [low, high]")
                if not args[0] < args[1] or (dist == "loguniform" and args[0] <= 0):
                    raise ConfigError(f"config search.space.{key}: {dist} bounds {args} are empty")
                candidates = [args[0], args[1] - (1 if dist == "randint" else 0)]
            else:
                candidates = args
        else:
            raise ConfigError(
                f"config search.space.{key}: expected a list or one of "
                f"{', '.join(DISTRIBUTIONS)}: [args]"
            )
        for v in candidates:
            ft = copy.deepcopy(cfg.finetune)
            setattr(ft, key, typed(f"search.space.{key}", v, annotation))
            check_finetune(ft, "search.space", NUM_CLASSES[cfg.data.protocol])
