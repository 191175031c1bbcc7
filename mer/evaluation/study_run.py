"""Running a study: every variant's experiments, then the study's table written out.

`run_study` runs (or resumes) each variant's experiment on each preset it runs on, through the
pipeline's `run_experiment` that it is handed, and `write_study` writes the table
(mer.evaluation.study_table) under `<root>/study/<name>/`: study.json, study.csv, study.md,
study_uf1.png, report.html (mer.evaluation.study_report) and the config.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from mer import layout, storage
from mer.config import PipelineConfig
from mer.errors import ConfigError
from mer.evaluation.study import (
    Study,
    describe,
    run_presets,
    study_uri,
    variant_config,
)
from mer.evaluation.study_registration import check_registration
from mer.evaluation.study_report import flat_rows, html, markdown, plot
from mer.evaluation.study_table import (
    interpolation_only,
    keyframe_facts,
    repeats_full,
    study_table,
    variant_experiment,
)
from mer.progress import emit


def run_study(
    cfg: PipelineConfig,
    study: Study,
    *,
    run_experiment: Callable[[PipelineConfig, Callable], str],
    progress=emit,
    only: list[str] | None = None,
    allow_mixed: bool = False,
) -> dict:
    """Run (or resume) every variant's experiments (one per preset it runs on), then write
    the study's table and plot. `run_experiment(config, progress)` runs one experiment's
    stages (mer.pipeline.run_experiment; the study itself calls no other stage's driver).
    A study that declares comparisons runs only as registered (check_registration).
    `only`: run just these variants (the table still lists every variant, partial ones
    apart). `allow_mixed`: write the table even where its rows were made by different
    code, platforms or thread counts (named in it)."""
    check_registration(cfg, study)
    names = [v.name for v in study.variants]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ConfigError(f"unknown study variant(s) {unknown}; known: {names}")
    for i, v in enumerate(study.variants):
        if only and v.name not in only:
            continue
        for preset in run_presets(study, v):
            vcfg = variant_config(cfg, study, v, preset)
            on = f" on {preset}" if preset else ""
            progress(f"[study] variant {i + 1}/{len(study.variants)}: {v.name}{on} ({describe(v)})")
            untestable = None
            # (reads the full method's key-frame table)
            if interpolation_only(v) and variant_experiment(vcfg)[0] is None:
                full_cfg = variant_config(cfg, study, study.variants[0], preset)
                untestable = repeats_full(v, keyframe_facts(layout.keyframes_uri(full_cfg)))
            if untestable:
                progress(f"[study] {v.name}{on}: {untestable}; not run")
                continue
            try:
                run_experiment(vcfg, progress)
            except ConfigError as e:
                if "holds an experiment" not in str(e):
                    raise
                raise ConfigError(
                    f"{e}. The study {study.name!r} was run under other settings: choose "
                    "another study.name"
                ) from None
    return write_study(cfg, study, progress=progress, allow_mixed=allow_mixed)


def write_study(
    cfg: PipelineConfig, study: Study, *, progress=emit, allow_mixed: bool = False
) -> dict:
    """study.json, study.csv, study.md, study_uf1.png and report.html (one
    self-contained page) under <root>/study/<name>/."""
    table = study_table(cfg, study, allow_mixed=allow_mixed)
    out = study_uri(cfg, study)
    storage.write_json(storage.join(out, "study.json"), table)
    csv = pd.DataFrame(flat_rows(table)).to_csv(index=False)
    storage.write_bytes(storage.join(out, "study.csv"), csv.encode())
    storage.write_bytes(storage.join(out, "study.md"), markdown(table).encode())
    png = plot(table)
    storage.write_bytes(storage.join(out, "study_uf1.png"), png)
    storage.write_bytes(storage.join(out, "report.html"), html(table, png).encode())
    storage.write_bytes(storage.join(out, "config.yaml"), cfg.to_yaml().encode())
    progress(f"[study] {out}: study.json, study.csv, study.md, study_uf1.png, report.html")
    table["uri"] = out
    return table
