"""A study's table: every row's scores, its paired comparisons and what qualifies them.

`study_table` reads back each variant's experiment (and the full method's baselines) on each
preset, scores every row, makes every comparison the study calls for once (full - row, and
each registered claim a - b on its presets), Holm-adjusts the p-values within each family
(`_adjust`) and reads the verdicts from the adjusted p; the key-frame facts say which rows an
interpolation cannot change (`keyframe_facts`, `repeats_full`). mer.evaluation.study_report
renders the table; mer.evaluation.study_run writes it out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mer import layout, provenance, storage
from mer.config import PipelineConfig, with_params
from mer.errors import InputError
from mer.evaluation import results, stats
from mer.evaluation.study import (
    BASELINES,
    FULL,
    Comparison,
    Study,
    Variant,
    describe,
    run_presets,
    variant_config,
)
from mer.evaluation.study_registration import check_registration
from mer.keyframes.table import read_keyframes

# The table's note: how every number in it was made and read.
NOTE = (
    "every row is one fixed configuration run on the same LOSO folds and seeds (nothing is "
    "chosen on these folds); UF1/UAR: mean +- SD over seeds of the pooled score, [95 % "
    "subject-bootstrap interval, BCa]; full - row: paired difference, 95 % paired "
    "subject-bootstrap interval (BCa; percentile where BCa is undefined, named), two-sided "
    "paired permutation p (mer.evaluation.results.compare) and its Holm-adjusted p over the study's "
    "family; verdicts from the adjusted p at 0.05"
)


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
    priors: dict[tuple, dict] = {}  # per-seed prior folders -> what those priors learnt
    handles: dict[tuple, tuple] = {}  # (preset, variant or baseline, config_id) -> (exp, id)
    presets_out = []
    fulls = {}
    for preset in study.presets or [None]:
        full_cfg = variant_config(cfg, study, study.variants[0], preset)
        fulls[preset] = _preset_rows(cfg, study, preset, rows, keyframes, handles)
        _preset_priors(cfg, study, preset, priors)
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
        "priors": list(priors.values()),
        "complete": all(r["status"] in ("complete", "untestable") for r in rows),
    }
    if mixed:
        out["mixed"] = mixed
    return out


def _preset_priors(cfg, study: Study, preset: str | None, priors: dict) -> None:
    """What the priors of each variant that learns one on `preset` learnt (prior_facts); the
    variants that share the same priors (same prior settings at every seed) share a record."""
    for v in study.variants:
        if preset not in run_presets(study, v):
            continue
        vcfg = variant_config(cfg, study, v, preset)
        if not vcfg.pretrain.enabled:
            continue
        folders = tuple(prior_folder(vcfg, seed) for seed in cfg.search.seeds)
        if folders not in priors:
            where = {"preset": preset} if preset else {}
            priors[folders] = {**where, "variants": [], **prior_facts(folders)}
        priors[folders]["variants"].append(v.name)


def prior_folder(cfg: PipelineConfig, seed: int) -> str:
    """The folder holding every prior of `cfg`'s prior settings at `seed`."""
    return storage.join(cfg.root, "pretrain", layout.prior_hash(with_params(cfg, {}, seed)))


def prior_facts(folders: tuple[str, ...]) -> dict:
    """From each learnt prior's _done.json under `folders`: how many there are, the last
    epoch's training pair accuracy (0.5 is chance) and the k-NN probe of its held-out subjects
    (mer.train.probe) beside those clips' majority-class share, as means (and the pair
    accuracy's range). Priors recorded before the probe existed are counted, not probed."""
    pairs, knn, majority = [], [], []
    for folder in folders:
        for name, kind in storage.entries(folder) or []:
            uri = storage.join(folder, name, "_done.json")
            if kind != "directory" or name.startswith("_") or not storage.exists(uri):
                continue
            done = storage.read_json(uri)
            history = done.get("history") or [{}]
            if "pair_accuracy" in history[-1]:
                pairs.append(history[-1]["pair_accuracy"])
            probe = done.get("probe") or {}
            if "accuracy" in probe:
                knn.append(probe["accuracy"])
                majority.append(probe["majority_share"])
    facts = {"priors": len(pairs), "probed": len(knn)}
    if pairs:
        facts["pair_accuracy"] = {
            "mean": round(float(np.mean(pairs)), 4),
            "min": round(float(np.min(pairs)), 4),
            "max": round(float(np.max(pairs)), 4),
        }
    if knn:
        facts["knn_accuracy"] = round(float(np.mean(knn)), 4)
        facts["majority_share"] = round(float(np.mean(majority)), 4)
    return facts


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
