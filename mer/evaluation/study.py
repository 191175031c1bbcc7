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
before it runs (`register`, registration.json) and a changed config is refused
(`check_registration`) unless its new variants and comparisons are `exploratory`. Every
comparison's p is Holm-adjusted within its family (the registered comparisons, or the rows
declared with an unregistered study; every other comparison counted apart as exploratory)
and its verdict read from that adjusted p. Rows made by different code, platforms or thread
counts are refused together unless allow_mixed (mer/provenance.py). docs/study.md has the
rules.

Outputs under `<root>/study/<name>/`: study.json, study.csv, study.md, study_uf1.png.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
from dataclasses import dataclass, field

import numpy as np
import yaml

from mer import config as config_mod
from mer import layout, provenance, storage
from mer.config import PipelineConfig
from mer.errors import ConfigError, InputError
from mer.evaluation import results, stats
from mer.keyframes.table import read_keyframes

FULL = "full"
BASELINES = "baselines"  # a comparison's b: every baseline of a's experiment
# The finetune settings a one-configuration variant fixes through its one-value search space.
FIXED = ("gamma", "beta", "freeze")
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
NOTE = (
    "every row is one fixed configuration run on the same LOSO folds and seeds (nothing is "
    "chosen on these folds); UF1/UAR: mean +- SD over seeds of the pooled score, [95 % "
    "subject-bootstrap interval, BCa]; full - row: paired difference, 95 % paired "
    "subject-bootstrap interval (BCa; percentile where BCa is undefined, named), two-sided "
    "paired permutation p (mer.evaluation.results.compare) and its Holm-adjusted p over the study's "
    "family; verdicts from the adjusted p at 0.05"
)


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


# ---------------------------------------------------------------- definition


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
    known = {"name", "selection", "variants", "presets", "comparisons"}
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
    return Study(
        name=name,
        variants=variants,
        selection=str(spec.get("selection", "")),
        presets=presets,
        comparisons=comparisons,
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
    """The base config with the variant's overrides (on `preset`'s data where the study has
    presets), under its own experiment name, with a search space that fixes its finetune
    settings (or sweeps `v.space`)."""
    if preset is None and study.presets:
        preset = study.presets[0]
    d = copy.deepcopy(base.to_dict())
    if preset is not None:
        if d["data"]["dataset"] != "synthetic":
            raise ConfigError("study.presets need data.dataset=synthetic")
        d["data"]["synthetic"] = {**(d["data"].get("synthetic") or {}), "preset": preset}
    for key, value in v.overrides.items():
        section, _, name = key.partition(".")
        if section == "search" or not name:
            raise ConfigError(
                f"study variant {v.name}: cannot set {key!r} (a variant takes section.key "
                "settings outside `search`; every variant shares the base's folds and seeds)"
            )
        node = d
        for part in key.split(".")[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"study variant {v.name}: {key!r} names no config setting")
            node = node[part]
        node[key.split(".")[-1]] = copy.deepcopy(value)
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


# ---------------------------------------------------------------- registration


def registration_content(cfg: PipelineConfig, study: Study) -> dict:
    """What a registration fixes: the base config (less where outputs go and settings that
    only change speed), the seeds, the presets, every variant and every comparison."""
    base = cfg.to_dict()
    base.pop("root", None)
    for key in layout.KEYFRAMES_EXECUTION:
        base.get("keyframes", {}).pop(key, None)
    base.get("search", {}).pop("experiment", None)
    return {
        "study": study.name,
        "selection": study.selection,
        "presets": list(study.presets),
        "seeds": list(cfg.search.seeds),
        "variants": [
            {
                "name": v.name,
                "claim": v.claim,
                "set": v.overrides,
                "space": v.space,
                "presets": run_presets(study, v),
                "exploratory": v.exploratory,
            }
            for v in study.variants
        ],
        "comparisons": [dataclasses.asdict(c) for c in study.comparisons],
        "base": base,
    }


def registration_uri(cfg: PipelineConfig, study: Study) -> str:
    return storage.join(study_uri(cfg, study), "registration.json")


def register(cfg: PipelineConfig, study: Study) -> dict:
    """Write the study's registration (its content, hash, date and code version) before
    anything runs. Registering the same content again returns the registration; other
    content under a registered name is refused."""
    content = registration_content(cfg, study)
    h = layout.digest(content)
    uri = registration_uri(cfg, study)
    if storage.exists(uri):
        old = storage.read_json(uri)
        if old["hash"] == h:
            return old
        raise ConfigError(
            f"study {study.name!r} was registered on {old['registered']} (hash {old['hash']}) "
            f"with other content ({_what_differs(old['content'], content)}); a registration "
            "is never rewritten: choose another study.name"
        )
    if storage.exists(storage.join(study_uri(cfg, study), "study.json")):
        raise ConfigError(
            f"study {study.name!r} has results already ({study_uri(cfg, study)}); a "
            "registration comes before anything runs: choose another study.name"
        )
    reg = {
        "study": study.name,
        "hash": h,
        "registered": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code": provenance.record(),
        "content": content,
    }
    storage.write_json(uri, reg)
    return reg


def _what_differs(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return "differs in " + ", ".join(k for k in keys if old.get(k) != new.get(k))


def check_registration(cfg: PipelineConfig, study: Study) -> dict | None:
    """The study's registration, checked against the config now: None for a study that was
    never registered and declares no comparisons (an unregistered study, every output says
    so). Refused (one sentence): a study with comparisons that is not registered; a change
    to the registered base config, seeds, presets, variants or comparisons; a variant or
    comparison added after registration without `exploratory: true`. A registered variant
    may be marked exploratory later, never the other way."""
    uri = registration_uri(cfg, study)
    if not storage.exists(uri):
        if study.comparisons:
            raise ConfigError(
                f"study {study.name!r} declares comparisons but is not registered: register it "
                "before anything runs (jobs/study.py --register)"
            )
        return None
    reg = storage.read_json(uri)
    old, new = reg["content"], registration_content(cfg, study)
    if layout.digest(new) == reg["hash"]:
        return reg
    what = f"study {study.name!r} differs from its registration of {reg['registered']}"
    fixed = ("selection", "presets", "seeds", "base")
    changed = [k for k in fixed if old.get(k) != new.get(k)]
    if changed:
        change = layout.describe_change(
            layout.flatten("", {k: old.get(k) for k in changed}),
            layout.flatten("", {k: new.get(k) for k in changed}),
        )
        raise ConfigError(f"{what}: {change}; register the changed study under another name")
    for kind, key in (("variants", "name"), ("comparisons", None)):

        def ident(x, key=key):
            return (
                x[key]
                if key
                else json.dumps({k: v for k, v in x.items() if k != "exploratory"}, sort_keys=True)
            )

        before = {ident(x): x for x in old[kind]}
        after = {ident(x): x for x in new[kind]}
        for name, x in before.items():
            y = after.get(name)
            label = x[key] if key else f"{x['claim']} ({x['a']} vs {x['b']})"
            if y is None:
                raise ConfigError(f"{what}: the registered {kind[:-1]} {label} is gone")
            strip = {k: v for k, v in x.items() if k != "exploratory"}
            if strip != {k: v for k, v in y.items() if k != "exploratory"}:
                raise ConfigError(f"{what}: the registered {kind[:-1]} {label} was changed")
            if x["exploratory"] and not y["exploratory"]:
                raise ConfigError(
                    f"{what}: {label} was registered as exploratory and cannot become primary"
                )
        for name, y in after.items():
            if name not in before and not y["exploratory"]:
                label = y[key] if key else f"{y['claim']} ({y['a']} vs {y['b']})"
                raise ConfigError(
                    f"{what}: the {kind[:-1]} {label} was added after registration; mark it "
                    "`exploratory: true` (shown as exploratory on every row) or register a new "
                    "study"
                )
    return reg


# ---------------------------------------------------------------- the table


def variant_experiment(cfg: PipelineConfig) -> tuple[results.Experiment | None, str | None]:
    """(the variant's experiment or None, what differs when it was made under other settings
    than the config's now: its rows are then stale, never shown as results)."""
    uri = layout.experiment_uri(cfg)
    try:
        exp = results.load_experiment(uri)
    except InputError:
        return None, None
    return exp, layout.made_under_other_settings(uri, layout.experiment_settings(cfg))


def _stale_row(v: Variant, vcfg: PipelineConfig, change: str) -> dict:
    return {
        "variant": v.name,
        "claim": v.claim,
        "kind": "full" if v.name == FULL else "variant",
        "exploratory": v.exploratory,
        "settings": describe(v),
        "experiment": vcfg.search.experiment,
        "status": "stale",
        "stale": f"made with {change}; delete {layout.experiment_uri(vcfg)} and rerun "
        f"--variants {v.name}",
    }


def _score(s: dict, metric: str) -> dict:
    def clean(x):  # NaN (an interval over fewer than two subjects) is JSON null
        return None if x is None or (isinstance(x, float) and np.isnan(x)) else x

    keys = {"mean": metric, "sd": f"{metric}_sd", "lo": f"{metric}_lo", "hi": f"{metric}_hi"}
    return {k: clean(s.get(v)) for k, v in keys.items()}


def keyframe_facts(uri: str) -> dict | None:
    """What a variant's key frames are, from its finished table (positions only, no pixels):
    how many key-frame positions are interpolated (fractional) and how many clips' key frames
    hold their apex frame. Two tables with no interpolated position and the same positions
    hold the same frames, so a row that only changes the interpolator then repeats another's.
    None when the table is not there (the variant has not built it)."""

    try:
        _, df, _ = read_keyframes(uri, frames=False)
    except InputError:
        return None
    idx = [np.asarray(i, dtype=np.float64) for i in df["keyframe_indices"]]
    held = sum(int(a) in set(np.round(i).astype(int)) for a, i in zip(df["apex"], idx, strict=True))
    return {
        "table": uri.rstrip("/").rsplit("/", 1)[-1],
        "clips": len(df),
        "positions": int(sum(i.size for i in idx)),
        "interpolated": int(sum((np.abs(i - np.round(i)) > 1e-6).sum() for i in idx)),
        "apex_held": int(held),
    }


def interpolation_only(v: Variant) -> bool:
    """Whether the variant changes nothing but how key frames between two frames are made."""
    if v.name == FULL or v.space or not v.overrides:
        return False
    return all(k == "keyframes.interpolation" or k.startswith("interpolator.") for k in v.overrides)


def repeats_full(v: Variant, full_facts: dict | None) -> str | None:
    """Why the variant cannot test its claim on this set, or None: a variant that changes
    only the interpolation (`keyframes.interpolation`, `interpolator.*`) has the full method's
    key-frame positions, and where none of those is between two frames every key frame is a
    whole frame, rendered the same by every interpolation. Its fold runs would then repeat
    the full method's (same frames, settings and seeds), so it is not run."""
    if not interpolation_only(v):
        return None
    if not full_facts or full_facts.get("table") is None or full_facts["interpolated"]:
        return None
    return (
        f"not testable on this set: none of the full method's {full_facts['positions']} "
        "key-frame positions is between two frames, so every interpolation gives the same key "
        "frames and this variant's fold runs would repeat the full method's"
    )


def _computed_with(exp: results.Experiment, entry: str) -> dict:
    """The torch thread counts and platforms its fold runs computed with (either can move a
    score by itself); [] where not recorded (outputs made before they were)."""
    p = exp.outer(entry)
    threads = p["threads"].dropna() if "threads" in p.columns else []
    platforms = p["platform"].dropna() if "platform" in p.columns else []
    return {
        "threads": sorted({int(t) for t in threads}),
        "platforms": sorted({str(x) for x in platforms}),
    }


def _sweep_order(v: Variant, params: dict) -> tuple:
    """A swept variant's rows in the order its space lists the values (freeze 1, 2, ...)."""
    return tuple(
        vals.index(params.get(k)) if isinstance(vals, list) and params.get(k) in vals else 0
        for k, vals in v.space.items()
    )


def study_table(cfg: PipelineConfig, study: Study, *, allow_mixed: bool = False) -> dict:
    """Every row (per preset: variant configurations, then baselines) with its scores; where
    both it and the full method are complete, the paired comparison full - row; every
    registered comparison; Holm-adjusted p and verdicts over the study's families; the
    effective number of subjects per preset. Refused when its complete rows were made by
    different code, platforms or thread counts, unless allow_mixed (then named)."""
    reg = check_registration(cfg, study)
    rows: list[dict] = []
    keyframes: dict[str, dict] = {}  # key-frame table URI -> its facts and variants
    handles: dict[tuple, tuple] = {}  # (preset, variant or baseline, config_id) -> (exp, id)
    presets_out = []
    fulls = {}
    for preset in study.presets or [None]:
        full_cfg = variant_config(cfg, study, study.variants[0], preset)
        fulls[preset] = _preset_rows(cfg, study, preset, rows, keyframes, handles)
        if fulls[preset] is not None:
            presets_out.append(_subjects_of(preset, *fulls[preset]))
        else:
            presets_out.append({"preset": preset, "experiment": full_cfg.search.experiment})
    tests = _tests(study, rows, handles)
    families = _adjust(tests)
    prov_rows = {_row_name(r): r["provenance"] for r in rows if r.get("status") == "complete"}
    mixed = provenance.check_combinable(prov_rows, allow_mixed, f"study {study.name!r}")
    claims = _claims(study, tests)
    full0 = variant_config(cfg, study, study.variants[0])
    full_id = fulls[(study.presets or [None])[0]]
    out = {
        "study": study.name,
        "root": cfg.root,
        "protocol": "loso, fixed configurations",
        "note": NOTE,
        "selection": study.selection
        or "not stated: the full method's settings are the base config's",
        "registration": _registration_summary(reg),
        "dataset": cfg.data.dataset,
        "data": layout.data_settings(full0),
        "presets": presets_out,
        "seeds": list(cfg.search.seeds),
        "full": {
            "experiment": full0.search.experiment,
            "config_id": full_id[1] if full_id else None,
        },
        "families": families,
        "claims": claims,
        "rows": rows,
        "keyframes": list(keyframes.values()),
        "complete": all(r["status"] in ("complete", "untestable") for r in rows),
    }
    if mixed:
        out["mixed"] = mixed
    return out


def _registration_summary(reg: dict | None) -> dict | None:
    if reg is None:
        return None
    return {"hash": reg["hash"], "registered": reg["registered"], "code": reg["code"]}


def _row_name(r: dict) -> str:
    label = r["variant"] + "".join(f" {k}={x}" for k, x in (r.get("swept") or {}).items())
    return f"{r['preset']}: {label}" if r.get("preset") else label


def _subjects_of(preset: str | None, exp: results.Experiment, entry: str) -> dict:
    """The preset's held-out subjects and clips (the full method's first seed) and Kish's
    effective number of subjects."""
    p = exp.outer(entry)
    if len(p):
        p = p[p["seed"] == p["seed"].min()]
    per_subject = (p["dataset"].astype(str) + "/" + p["subject"].astype(str)).value_counts()
    return {
        "preset": preset,
        "experiment": exp.meta.get("experiment"),
        "subjects": int(len(per_subject)),
        "clips": int(per_subject.sum()),
        "clips_per_subject": [int(per_subject.min()), int(per_subject.max())]
        if len(per_subject)
        else None,
        "effective_subjects": round(stats.effective_subjects(per_subject.to_numpy()), 2),
    }


def _preset_rows(cfg, study, preset, rows, keyframes, handles):
    """Append one preset's rows; returns (full experiment, full config id) when the full
    method's experiment is there, else None."""
    full_cfg = variant_config(cfg, study, study.variants[0], preset)
    full_exp, full_stale = variant_experiment(full_cfg)
    if full_stale:
        full_exp = None  # no comparison and no baseline from results of other settings
    full_id = None
    if full_exp is not None:
        ids = [e for e, kind in full_exp.kinds.items() if kind == "method"]
        full_id = ids[0] if len(ids) == 1 else None

    def row(v: Variant | None, exp: results.Experiment, entry: str, kind: str) -> dict:
        s = results.entry_scores(exp, entry)
        params = exp.params[entry]
        r = {
            "preset": preset,
            "variant": v.name if v else f"baseline: {entry}",
            "claim": v.claim if v else "baseline",
            "kind": kind,
            "exploratory": bool(v and v.exploratory),
            "settings": describe(v) if v else _BASELINES.get(entry, entry),
            "params": {} if kind == "baseline" else params,
            "experiment": exp.meta.get("experiment"),
            "config_id": entry,
            "status": s["status"],
            "folds": f"{s['folds_done']}/{s['folds_total']}",
            "seeds_done": s["seeds_done"],
            "uf1": _score(s, "uf1"),
            "uar": _score(s, "uar"),
            "per_seed": s["per_seed"],
            "provenance": results.provenance_of(exp, entry),
        }
        if kind != "baseline":
            r.update(_computed_with(exp, entry))
        if kind == "variant" and v.space:
            r["swept"] = {k: params.get(k) for k in v.space}
            r["settings"] += " (" + ", ".join(f"{k}={x}" for k, x in r["swept"].items()) + ")"
        handles[(preset, r["variant"], entry)] = (exp, entry)
        return r

    full_uri = layout.keyframes_uri(full_cfg)
    full_facts = keyframe_facts(full_uri)
    for v in study.variants:
        if preset not in run_presets(study, v):
            continue
        vcfg = variant_config(cfg, study, v, preset)
        exp, stale = variant_experiment(vcfg)
        untestable = repeats_full(v, full_facts) if exp is None and not stale else None
        uri = layout.keyframes_uri(vcfg)
        if untestable is None:  # (an untestable variant's table is never built)
            if uri not in keyframes:
                facts = full_facts if uri == full_uri else keyframe_facts(uri)
                where = {"preset": preset} if preset else {}
                keyframes[uri] = {**where, "variants": [], **(facts or {"table": None})}
            keyframes[uri]["variants"].append(v.name)
        if stale:
            rows.append({**_stale_row(v, vcfg, stale), "preset": preset})
            continue
        if exp is None:
            rows.append(
                {
                    "preset": preset,
                    "variant": v.name,
                    "claim": v.claim,
                    "kind": "variant",
                    "exploratory": v.exploratory,
                    "settings": describe(v),
                    "experiment": vcfg.search.experiment,
                    "status": "untestable" if untestable else "not run",
                    **({"reason": untestable} if untestable else {}),
                }
            )
            continue
        entries = [e for e, kind in sorted(exp.kinds.items()) if kind == "method"]
        for entry in sorted(entries, key=lambda e: _sweep_order(v, exp.params[e])):
            rows.append(row(v, exp, entry, "full" if v.name == FULL else "variant"))
    if full_exp is not None:
        baselines = sorted(e for e, kind in full_exp.kinds.items() if kind == "baseline")
        for name in sorted(baselines, key=lambda b: (b not in _BASELINES, -_ORDER.get(b, 0), b)):
            rows.append(row(None, full_exp, name, "baseline"))
    return (full_exp, full_id) if full_id is not None else None


def _tests(study: Study, rows: list[dict], handles: dict) -> list[dict]:
    """Every comparison the study makes, each once: full - row for every other complete row
    of its preset, and every registered comparison a - b at each of its conditions. A test
    is primary when a registered comparison (or, in a study without comparisons, a row
    declared with the study) makes it, exploratory otherwise."""
    complete = {(r["preset"], r["variant"]): [] for r in rows}
    for r in rows:
        if r["status"] == "complete":
            complete[(r["preset"], r["variant"])].append(r)
    registered = bool(study.comparisons)
    tests: dict[tuple, dict] = {}

    def add(a: dict, b: dict, primary: bool, claim: str | None, role: str | None) -> dict:
        key = (a["preset"], a["variant"], a["config_id"], b["variant"], b["config_id"])
        t = tests.get(key)
        if t is None:
            exp_a, ida = handles[(a["preset"], a["variant"], a["config_id"])]
            exp_b, idb = handles[(b["preset"], b["variant"], b["config_id"])]
            c = results.compare(exp_a, ida, exp_b, idb, allow_mixed=True)
            t = tests[key] = {
                "preset": a["preset"],
                "a": _row_name({**a, "preset": None}),
                "b": _row_name({**b, "preset": None}),
                "primary": False,
                "claims": [],
                **{m: _versus_metric(c[m]) for m in ("uf1", "uar")},
            }
        t["primary"] = t["primary"] or primary
        if claim is not None:
            t["claims"].append({"claim": claim, "role": role})
        return t

    for r in rows:
        if r["kind"] == "full" or r["status"] != "complete":
            continue
        fulls = complete.get((r["preset"], FULL)) or []
        if len(fulls) == 1:
            primary = not registered and not r["exploratory"]
            r["_test"] = add(fulls[0], r, primary, None, None)
    for c in study.comparisons:
        for preset, role in c.conditions():
            a_rows = complete.get((preset, c.a)) or []
            if c.b == BASELINES:
                b_rows = [r for r in rows if r["preset"] == preset and r["kind"] == "baseline"]
                b_rows = [r for r in b_rows if r["status"] == "complete"]
            else:
                b_rows = complete.get((preset, c.b)) or []
            by = {v.name: v for v in study.variants}
            primary = not (
                c.exploratory or by[c.a].exploratory or (c.b != BASELINES and by[c.b].exploratory)
            )
            for a in a_rows:
                for b in b_rows:
                    add(a, b, primary, c.claim, role)
    out = list(tests.values())
    for r in rows:  # the row's full - row test, by reference until written out
        t = r.pop("_test", None)
        if t is not None:
            r["full_minus_row"] = t
    return out


def _versus_metric(m: dict) -> dict:
    keys = ("difference", "ci_low", "ci_high", "interval", "p_value")
    return {k: m[k] for k in keys}


def _adjust(tests: list[dict]) -> dict:
    """Holm over each family: the primary tests (UF1 and UAR each a test) and, counted apart,
    the exploratory ones. Each test's metric gets p_holm, its family and the verdict read
    from p_holm."""
    families = {}
    for family in ("primary", "exploratory"):
        members = [t for t in tests if t["primary"] == (family == "primary")]
        cells = [(t, m) for t in members for m in ("uf1", "uar")]
        adjusted = stats.holm([t[m]["p_value"] for t, m in cells]) if cells else []
        for (t, m), p in zip(cells, adjusted, strict=True):
            t[m].update(family=family, p_holm=float(p), verdict=stats.verdict(float(p)))
        families[family] = {"comparisons": len(members), "tests": len(cells)}
    return families


def _claims(study: Study, tests: list[dict]) -> list[dict]:
    """The registered comparisons with their results: one entry per claim, one condition
    per preset (and per configuration pair where a side is swept or is the baselines)."""
    out = []
    for c in study.comparisons:
        conditions = []
        for t in tests:
            for tc in t["claims"]:
                roles = dict(c.conditions())
                if tc["claim"] == c.claim and _of(c, t) and roles.get(t["preset"]) == tc["role"]:
                    conditions.append(
                        {
                            "preset": t["preset"],
                            "role": tc["role"],
                            "a": t["a"],
                            "b": t["b"],
                            "uf1": t["uf1"],
                            "uar": t["uar"],
                        }
                    )
        out.append(
            {
                **dataclasses.asdict(c),
                "family": "exploratory"
                if c.exploratory
                or any(v.exploratory for v in study.variants if v.name in (c.a, c.b))
                else "primary",
                "conditions": conditions,
            }
        )
    return out


def _of(c: Comparison, t: dict) -> bool:
    a = t["a"].split(" ")[0]
    b = t["b"].split(" ")[0]
    return a == c.a and (b == c.b or (c.b == BASELINES and t["b"].startswith("baseline:")))


_BASELINES = {
    "linear": "logistic regression on the apex - onset key-frame difference (mer.evaluation.baselines)",
    "majority": "the training subjects' most frequent class",
    "lbp-top": "LBP-TOP histograms of the key frames + linear SVM (mer.evaluation.field_baselines; "
    "the MEGC2019 baseline, published composite UF1 0.588 on real data)",
    "flow-cnn": "onset-apex Farneback flow and strain into a shallow CNN "
    "(mer.evaluation.field_baselines; STSTNet-style, published composite UF1 0.735 on real data)",
}
_ORDER = {"linear": 4, "lbp-top": 3, "flow-cnn": 2, "majority": 1}  # linear first, majority last
