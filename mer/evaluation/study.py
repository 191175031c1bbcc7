"""The paper's claims as an ablation study: variants of one config, compared pairwise.

A study is a base config (the full method) and a named list of variants, each a few
overrides of it. Zhao et al. (2021) claim that prior learning, focal loss, freezing lower
blocks and adaptive key frames each help; a variant removes or changes one of them
(`configs/study.yaml`). Every variant runs as its own experiment,
`search.experiment = <study>-<variant>`, through the pipeline's own stages (data, the learned
interpolator where needed, its key-frame table, baselines, priors, target learning), all on
the same LOSO folds and `search.seeds`, so every output is keyed by its settings and a rerun
resumes where it stopped. A variant is one fixed configuration (a one-value search space of
its finetune gamma, beta and freeze), or a sweep of searchable finetune settings
(`space: {freeze: [1, 2, 3]}`), one row per configuration.

Nothing is chosen on the reported folds: every row is a fixed configuration, so each score is
that configuration's pooled LOSO score (mean and SD over seeds, BCa subject-bootstrap
interval), and each row carries the paired comparison `mer.evaluation.results.compare(full, row)`:
full - row with a paired subject-bootstrap interval and a permutation p-value. The baselines
(majority, linear, lbp-top, flow-cnn: mer.evaluation.baselines) of the full method's
experiment are rows too. How the full method's own settings were chosen
is the study's `selection` text, written into every output.

A study may run on several generator presets (`presets`, one experiment per preset and
variant, `<study>-<preset>-<variant>`) and declare `comparisons`: each claim a - b on the
preset where its mechanism should matter and on a control preset. Such a study is registered
before it runs (registration.json) and a changed config is refused unless its new variants
and comparisons are `exploratory`. Every comparison's p is Holm-adjusted within its family
(the registered comparisons, or the rows declared with an unregistered study; every other
comparison counted apart as exploratory) and its verdict read from that adjusted p. Rows made
by different code, platforms or thread counts are refused together unless allow_mixed
(mer/provenance.py). docs/study.md has the rules.

This module is the study's definition: the records, reading and checking a study config, and
each variant's own config. The rest of the study, in import order (each module imports only
this one and those listed before it):

study_registration   register a study before it runs; check the config against it
study_table          the rows, paired tests, Holm adjustment, claims, key-frame facts
study_report         the table rendered: Markdown, CSV rows, the UF1 plot, report.html
study_run            run every variant's experiments; write the table's files under
                     `<root>/study/<name>/` (study.json, study.csv, study.md,
                     study_uf1.png, report.html, config.yaml)
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import yaml

from mer import config as config_mod
from mer import storage
from mer.config import PipelineConfig
from mer.errors import ConfigError

FULL = "full"
BASELINES = "baselines"  # a comparison's b: every baseline of a's experiment
# The finetune settings a one-configuration variant fixes through its one-value search space.
FIXED = ("gamma", "beta", "freeze")
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass
class Variant:
    name: str
    claim: str = ""  # which claim of the paper it tests ("prior learning", ...)
    overrides: dict = field(default_factory=dict)  # {"section.key": value}
    space: dict = field(default_factory=dict)  # searchable finetune settings swept (lists)
    presets: list[str] = field(default_factory=list)  # where it runs ([]: see run_presets)
    exploratory: bool = False  # declared after results were seen (or not registered)


@dataclass
class Comparison:
    """A registered claim: a - b on the preset where its mechanism should matter and on one
    where it should not (the control). b = "baselines": a against every baseline there."""

    claim: str
    a: str
    b: str
    matters: str
    control: str | None = None
    exploratory: bool = False

    def conditions(self) -> list[tuple[str, str]]:
        """[(preset, role)]: where the comparison is made, and what that preset is for."""
        out = [(self.matters, "matters")]
        return out + ([(self.control, "control")] if self.control else [])


@dataclass
class Study:
    name: str
    variants: list[Variant]  # the first is the full method, named "full"
    selection: str = ""  # how the full method's settings were chosen (never these folds)
    presets: list[str] = field(default_factory=list)  # [] : the base config's data alone
    comparisons: list[Comparison] = field(default_factory=list)
    # {preset: {"section.key": value}}: what a preset needs of every variant run on it
    # (long-clip's key frames at K = 32), before the variant's own overrides.
    preset_settings: dict = field(default_factory=dict)


def load_study(path: str, overrides: list[str] | None = None) -> tuple[PipelineConfig, Study]:
    """(base config, study) from a study YAML: a pipeline config plus a `study:` section.
    `overrides` (`section.key=value`) apply to the base config, so to every variant."""
    try:
        doc = yaml.safe_load(storage.read_bytes(path)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("study"), dict):
        raise ConfigError(f"{path}: a study config needs a `study:` section (configs/study.yaml)")
    spec = doc.pop("study")
    for item in overrides or []:
        config_mod.apply_override(doc, item)
    cfg = config_mod.from_dict(doc, source=path).validate()
    study = parse_study(spec, path)
    for v in study.variants:  # every variant must resolve to a valid config now, not later
        for preset in run_presets(study, v):
            variant_config(cfg, study, v, preset)
    return cfg, study


def parse_study(spec: dict, source: str = "study") -> Study:
    known = {"name", "selection", "variants", "presets", "preset_settings", "comparisons"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in 'study'; known: {sorted(known)}")
    name = str(spec.get("name", ""))
    if not NAME.match(name):
        raise ConfigError(f"{source}: study.name={name!r} must be lower-case letters, digits, -_.")
    variants = [Variant(FULL, "the full method")]
    seen = {FULL}
    for i, v in enumerate(spec.get("variants") or []):
        if not isinstance(v, dict) or "name" not in v:
            raise ConfigError(f"{source}: study.variants[{i}] needs a name")
        extra = sorted(set(v) - {"name", "claim", "set", "space", "presets", "exploratory"})
        if extra:
            raise ConfigError(f"{source}: study.variants[{i}] has unknown key(s) {extra}")
        vname = str(v["name"])
        if not NAME.match(vname) or vname in seen:
            raise ConfigError(
                f"{source}: study variant name {vname!r} must be unique, lower-case letters, "
                "digits, -_."
            )
        seen.add(vname)
        sets = v.get("set") or {}
        space = v.get("space") or {}
        if not isinstance(sets, dict) or not isinstance(space, dict):
            raise ConfigError(f"{source}: study variant {vname}: set and space are mappings")
        variants.append(
            Variant(
                vname,
                str(v.get("claim", "")),
                dict(sets),
                dict(space),
                [str(p) for p in v.get("presets") or []],
                bool(v.get("exploratory", False)),
            )
        )
    if spec.get("variants") and any(v.name == FULL for v in variants[1:]):
        raise ConfigError(f"{source}: the variant name {FULL!r} is the base config's")
    presets = [str(p) for p in spec.get("presets") or []]
    if len(set(presets)) != len(presets) or not all(NAME.match(p) for p in presets):
        raise ConfigError(f"{source}: study.presets {presets} must be unique preset names")
    for v in variants:
        wrong = sorted(set(v.presets) - set(presets))
        if wrong:
            raise ConfigError(
                f"{source}: study variant {v.name}: presets {wrong} are not in study.presets "
                f"{presets}"
            )
    comparisons = [
        parse_comparison(c, i, variants, presets, source)
        for i, c in enumerate(spec.get("comparisons") or [])
    ]
    preset_settings = spec.get("preset_settings") or {}
    if not isinstance(preset_settings, dict) or not all(
        isinstance(v, dict) for v in preset_settings.values()
    ):
        raise ConfigError(
            f"{source}: study.preset_settings maps a preset to its settings "
            "({long-clip: {keyframes.k: 32}})"
        )
    wrong = sorted(set(map(str, preset_settings)) - set(presets))
    if wrong:
        raise ConfigError(
            f"{source}: study.preset_settings names presets {wrong} that are not in "
            f"study.presets {presets}"
        )
    return Study(
        name=name,
        variants=variants,
        selection=str(spec.get("selection", "")),
        presets=presets,
        comparisons=comparisons,
        preset_settings={str(p): dict(v) for p, v in preset_settings.items()},
    )


def parse_comparison(
    c: dict, i: int, variants: list[Variant], presets: list[str], source: str
) -> Comparison:
    where = f"{source}: study.comparisons[{i}]"
    if not isinstance(c, dict):
        raise ConfigError(f"{where} must be a mapping (claim, a, b, matters, control)")
    extra = sorted(set(c) - {"claim", "a", "b", "matters", "control", "exploratory"})
    missing = [k for k in ("claim", "a", "b", "matters") if not c.get(k)]
    if extra or missing:
        raise ConfigError(f"{where}: unknown key(s) {extra}, missing {missing}")
    comp = Comparison(
        str(c["claim"]),
        str(c["a"]),
        str(c["b"]),
        str(c["matters"]),
        str(c["control"]) if c.get("control") else None,
        bool(c.get("exploratory", False)),
    )
    names = {v.name for v in variants}
    for side in (comp.a, comp.b):
        if side not in names and not (side == BASELINES and side == comp.b):
            raise ConfigError(
                f"{where}: {side!r} is no variant of the study (known: {sorted(names)}; b may "
                f"be {BASELINES!r}: every baseline)"
            )
    if comp.control is None and comp.b != BASELINES:
        raise ConfigError(
            f"{where} ({comp.claim}): a claim names the preset where its mechanism should "
            "matter and a control preset where it should not (control:)"
        )
    for preset, _ in comp.conditions():
        if presets and preset not in presets:
            raise ConfigError(f"{where}: preset {preset!r} is not in study.presets {presets}")
        if not presets:
            raise ConfigError(f"{where}: comparisons need study.presets")
    by = {v.name: v for v in variants}
    for side in (comp.a, comp.b):
        v = by.get(side)
        if v is None or v.name == FULL or not v.presets:
            continue
        absent = [p for p, _ in comp.conditions() if p not in v.presets]
        if absent:
            raise ConfigError(f"{where}: variant {side} does not run on {absent}")
    return comp


def run_presets(study: Study, v: Variant) -> list[str | None]:
    """The presets a variant runs on: [None] (the base config's data) in a study without
    presets; the full method on every preset; a variant on its `presets`, else on those its
    comparisons name, else on every preset."""
    if not study.presets:
        return [None]
    if v.name == FULL:
        return list(study.presets)
    if v.presets:
        return [p for p in study.presets if p in v.presets]
    named = {p for c in study.comparisons if v.name in (c.a, c.b) for p, _ in c.conditions()}
    return [p for p in study.presets if p in named] if named else list(study.presets)


def variant_config(
    base: PipelineConfig, study: Study, v: Variant, preset: str | None = None
) -> PipelineConfig:
    """The base config on `preset`'s data where the study has presets, with that preset's
    `preset_settings`, then the variant's overrides, under its own experiment name, with a
    search space that fixes its finetune settings (or sweeps `v.space`)."""
    if preset is None and study.presets:
        preset = study.presets[0]
    d = copy.deepcopy(base.to_dict())
    if preset is not None:
        if d["data"]["dataset"] != "synthetic":
            raise ConfigError("study.presets need data.dataset=synthetic")
        d["data"]["synthetic"] = {**(d["data"].get("synthetic") or {}), "preset": preset}
        _set(d, study.preset_settings.get(preset, {}), f"study.preset_settings of {preset}")
    _set(d, v.overrides, f"study variant {v.name}")
    ft = d["finetune"]
    space = {k: [ft[k]] for k in FIXED}
    if ft.get("alpha") is not None:
        space["alpha"] = [ft["alpha"]]
    space.update(copy.deepcopy(v.space))
    d["search"]["space"] = space
    d["search"]["algorithm"] = "grid"
    d["search"]["num_samples"] = 1
    d["search"]["experiment"] = experiment_name(study, v, preset)
    try:
        return config_mod.from_dict(d, source=f"study variant {v.name}").validate()
    except ConfigError as e:
        raise ConfigError(f"study variant {v.name}: {e}") from None


def _set(d: dict, overrides: dict, who: str) -> None:
    """`overrides` ({"section.key": value}) set in the config dict `d`."""
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section == "search" or not name:
            raise ConfigError(
                f"{who}: cannot set {key!r} (a study takes section.key settings outside "
                "`search`; every variant shares the base's folds and seeds)"
            )
        node = d
        for part in key.split(".")[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{who}: {key!r} names no config setting")
            node = node[part]
        node[key.split(".")[-1]] = copy.deepcopy(value)


def experiment_name(study: Study, v: Variant, preset: str | None = None) -> str:
    if preset is not None:
        return f"{study.name}-{preset}-{v.name}"
    return f"{study.name}-{v.name}"


def describe(v: Variant) -> str:
    """The variant's settings in words (its overrides, then what it sweeps)."""
    parts = [f"{k}={val}" for k, val in v.overrides.items()]
    parts += [f"{k} in {val}" for k, val in v.space.items()]
    return ", ".join(parts) or "the base config"


def study_uri(cfg: PipelineConfig, study: Study) -> str:
    """Where the study's table and plot go: <root>/study/<name>/."""
    return storage.join(cfg.root, "study", study.name)
