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
that configuration's pooled LOSO score (mean and SD over seeds, subject-bootstrap interval),
and each row carries the paired comparison `mer.results.compare(full, row)`: full - row with a
paired subject-bootstrap interval and a permutation p-value. The baselines (majority, linear,
lbp-top, flow-cnn: mer.baselines) of the full method's experiment are rows too. How the full method's own settings were chosen
is the study's `selection` text, written into every output.

Outputs under `<root>/study/<name>/`: study.json, study.csv, study.md, study_uf1.png.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import numpy as np
import yaml

from mer import config as config_mod
from mer import layout, results, storage
from mer.config import PipelineConfig
from mer.errors import ConfigError, InputError
from mer.progress import emit

FULL = "full"
# The finetune settings a one-configuration variant fixes through its one-value search space.
FIXED = ("gamma", "beta", "freeze")
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
NOTE = (
    "every row is one fixed configuration run on the same LOSO folds and seeds (nothing is "
    "chosen on these folds); UF1/UAR: mean +- SD over seeds of the pooled score, [95 % "
    "subject-bootstrap interval]; full - row: paired difference, 95 % paired subject-bootstrap "
    "interval, two-sided paired permutation p (mer.results.compare)"
)


@dataclass
class Variant:
    name: str
    claim: str = ""  # which claim of the paper it tests ("prior learning", ...)
    overrides: dict = field(default_factory=dict)  # {"section.key": value}
    space: dict = field(default_factory=dict)  # searchable finetune settings swept (lists)


@dataclass
class Study:
    name: str
    variants: list[Variant]  # the first is the full method, named "full"
    selection: str = ""  # how the full method's settings were chosen (never these folds)


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
        variant_config(cfg, study, v)
    return cfg, study


def parse_study(spec: dict, source: str = "study") -> Study:
    known = {"name", "selection", "variants"}
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
        extra = sorted(set(v) - {"name", "claim", "set", "space"})
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
        variants.append(Variant(vname, str(v.get("claim", "")), dict(sets), dict(space)))
    if spec.get("variants") and any(v.name == FULL for v in variants[1:]):
        raise ConfigError(f"{source}: the variant name {FULL!r} is the base config's")
    return Study(name=name, variants=variants, selection=str(spec.get("selection", "")))


def variant_config(base: PipelineConfig, study: Study, v: Variant) -> PipelineConfig:
    """The base config with the variant's overrides, under its own experiment name, with a
    search space that fixes its finetune settings (or sweeps `v.space`)."""
    d = copy.deepcopy(base.to_dict())
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
    d["search"]["experiment"] = experiment_name(study, v)
    try:
        return config_mod.from_dict(d, source=f"study variant {v.name}").validate()
    except ConfigError as e:
        raise ConfigError(f"study variant {v.name}: {e}") from None


def experiment_name(study: Study, v: Variant) -> str:
    return f"{study.name}-{v.name}"


def study_uri(cfg: PipelineConfig, study: Study) -> str:
    """Where the study's table and plot go: <root>/study/<name>/."""
    return storage.join(cfg.root, "study", study.name)


# ---------------------------------------------------------------- running


def run_study(
    cfg: PipelineConfig, study: Study, *, progress=emit, only: list[str] | None = None
) -> dict:
    """Run (or resume) every variant's experiment, then write the study's table and plot.
    `only`: run just these variants (the table still lists every variant, partial ones apart).
    """
    from mer.pipeline import ensure_data, run_search_stage
    from mer.preprocess import build_keyframes_dataset

    names = [v.name for v in study.variants]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ConfigError(f"unknown study variant(s) {unknown}; known: {names}")
    for i, v in enumerate(study.variants):
        if only and v.name not in only:
            continue
        vcfg = variant_config(cfg, study, v)
        progress(f"[study] variant {i + 1}/{len(study.variants)}: {v.name} ({describe(v)})")
        untestable = None
        if interpolation_only(v) and _experiment(vcfg)[0] is None:  # (reads full's table)
            full_uri = layout.keyframes_uri(variant_config(cfg, study, study.variants[0]))
            untestable = repeats_full(v, keyframe_facts(full_uri))
        if untestable:
            progress(f"[study] {v.name}: {untestable}; not run")
            continue
        ensure_data(vcfg, progress)
        if vcfg.keyframes.interpolation == "adaconv":
            from mer.train.interpolate import run_interpolator

            run_interpolator(vcfg, progress=progress)
        build_keyframes_dataset(vcfg, progress=progress)
        try:
            run_search_stage(vcfg, progress)
        except ConfigError as e:
            if "holds an experiment" not in str(e):
                raise
            raise ConfigError(
                f"{e}. The study {study.name!r} was run under other settings: choose another "
                "study.name"
            ) from None
    return write_study(cfg, study, progress=progress)


def describe(v: Variant) -> str:
    parts = [f"{k}={val}" for k, val in v.overrides.items()]
    parts += [f"{k} in {val}" for k, val in v.space.items()]
    return ", ".join(parts) or "the base config"


# ---------------------------------------------------------------- the table


def _experiment(cfg: PipelineConfig) -> tuple[results.Experiment | None, str | None]:
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


def _versus(c: dict) -> dict:
    return {
        m: {k: c[m][k] for k in ("difference", "ci_low", "ci_high", "p_value", "verdict")}
        for m in ("uf1", "uar")
    }


def keyframe_facts(uri: str) -> dict | None:
    """What a variant's key frames are, from its finished table (positions only, no pixels):
    how many key-frame positions are interpolated (fractional) and how many clips' key frames
    hold their apex frame. Two tables with no interpolated position and the same positions
    hold the same frames, so a row that only changes the interpolator then repeats another's.
    None when the table is not there (the variant has not built it)."""
    from mer.table import read_keyframes

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


def study_table(cfg: PipelineConfig, study: Study) -> dict:
    """Every row (variant configurations, then baselines) with its scores and, where both it
    and the full method are complete, the paired comparison full - row."""
    full_cfg = variant_config(cfg, study, study.variants[0])
    full_exp, full_stale = _experiment(full_cfg)
    if full_stale:
        full_exp = None  # no comparison and no baseline from results of other settings
    full_id = None
    if full_exp is not None:
        ids = [e for e, kind in full_exp.kinds.items() if kind == "method"]
        full_id = ids[0] if len(ids) == 1 else None
    full_done = (
        full_id is not None and results.entry_scores(full_exp, full_id)["status"] == "complete"
    )
    rows = []

    def row(v: Variant | None, exp: results.Experiment, entry: str, kind: str) -> dict:
        s = results.entry_scores(exp, entry)
        params = exp.params[entry]
        r = {
            "variant": v.name if v else f"baseline: {entry}",
            "claim": v.claim if v else "baseline",
            "kind": kind,
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
        }
        if kind != "baseline":
            r.update(_computed_with(exp, entry))
        if kind == "variant" and v.space:
            r["swept"] = {k: params.get(k) for k in v.space}
            r["settings"] += " (" + ", ".join(f"{k}={x}" for k, x in r["swept"].items()) + ")"
        if s["status"] == "complete" and full_done and not (v and v.name == FULL):
            r["full_minus_row"] = _versus(results.compare(full_exp, full_id, exp, entry))
        return r

    keyframes: dict[str, dict] = {}  # key-frame table URI -> its facts and variants
    full_uri = layout.keyframes_uri(full_cfg)
    full_facts = keyframe_facts(full_uri)
    for v in study.variants:
        vcfg = variant_config(cfg, study, v)
        exp, stale = _experiment(vcfg)
        untestable = repeats_full(v, full_facts) if exp is None and not stale else None
        uri = layout.keyframes_uri(vcfg)
        if untestable is None:  # (an untestable variant's table is never built)
            if uri not in keyframes:
                facts = full_facts if uri == full_uri else keyframe_facts(uri)
                keyframes[uri] = {"variants": [], **(facts or {"table": None})}
            keyframes[uri]["variants"].append(v.name)
        if stale:
            rows.append(_stale_row(v, vcfg, stale))
            continue
        if exp is None:
            rows.append(
                {
                    "variant": v.name,
                    "claim": v.claim,
                    "kind": "variant",
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
        for name in ("linear", "lbp-top", "flow-cnn", "majority"):
            if name in full_exp.params:
                rows.append(row(None, full_exp, name, "baseline"))
    return {
        "study": study.name,
        "root": cfg.root,
        "protocol": "loso, fixed configurations",
        "note": NOTE,
        "selection": study.selection
        or "not stated: the full method's settings are the base config's",
        "dataset": cfg.data.dataset,
        "data": layout.data_settings(cfg),
        "seeds": list(cfg.search.seeds),
        "full": {"experiment": full_cfg.search.experiment, "config_id": full_id},
        "rows": rows,
        "keyframes": list(keyframes.values()),
        "complete": all(r["status"] in ("complete", "untestable") for r in rows),
    }


_BASELINES = {
    "linear": "logistic regression on the apex - onset key-frame difference (mer.baselines)",
    "majority": "the training subjects' most frequent class",
    "lbp-top": "LBP-TOP histograms of the key frames + linear SVM (mer.field_baselines; the "
    "MEGC2019 baseline, published composite UF1 0.588 on real data)",
    "flow-cnn": "onset-apex Farneback flow and strain into a shallow CNN (mer.field_baselines; "
    "STSTNet-style, published composite UF1 0.735 on real data)",
}


def write_study(cfg: PipelineConfig, study: Study, *, progress=emit) -> dict:
    """study.json, study.csv, study.md and study_uf1.png under <root>/study/<name>/."""
    import pandas as pd

    from mer.study_report import flat_rows, markdown, plot

    table = study_table(cfg, study)
    out = study_uri(cfg, study)
    storage.write_json(storage.join(out, "study.json"), table)
    csv = pd.DataFrame(flat_rows(table)).to_csv(index=False)
    storage.write_bytes(storage.join(out, "study.csv"), csv.encode())
    storage.write_bytes(storage.join(out, "study.md"), markdown(table).encode())
    storage.write_bytes(storage.join(out, "study_uf1.png"), plot(table))
    storage.write_bytes(storage.join(out, "config.yaml"), cfg.to_yaml().encode())
    progress(f"[study] {out}: study.json, study.csv, study.md, study_uf1.png")
    table["uri"] = out
    return table
