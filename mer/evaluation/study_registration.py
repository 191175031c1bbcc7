"""A study's registration: what it fixes before anything runs, and the check against it.

`register` writes registration.json under the study's folder (its content, hash, date and
code version) once; `check_registration` compares the study as configured now with it and
refuses a change to the base config, seeds, presets (or their settings), or a registered
variant or comparison, and an addition not marked `exploratory` (docs/study.md has the rules).
"""

from __future__ import annotations

import dataclasses
import json
import time

from mer import layout, provenance, storage
from mer.config import PipelineConfig
from mer.errors import ConfigError
from mer.evaluation.study import Study, run_presets, study_uri


def registration_content(cfg: PipelineConfig, study: Study) -> dict:
    """What a registration fixes: the base config (less where outputs go and settings that
    only change speed), the seeds, the presets and their settings, every variant and every
    comparison."""
    base = cfg.to_dict()
    base.pop("root", None)
    for key in layout.KEYFRAMES_EXECUTION:
        base.get("keyframes", {}).pop(key, None)
    base.get("search", {}).pop("experiment", None)
    content = {
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
    if study.preset_settings:  # absent when none: a study registered before they existed
        content["preset_settings"] = study.preset_settings
    return content


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
    to the registered base config, seeds, presets (or their settings), variants or
    comparisons; a variant or comparison added after registration without `exploratory:
    true`. A registered variant may be marked exploratory later, never the other way."""
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
    fixed = ("selection", "presets", "preset_settings", "seeds", "base")
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
