"""A registered study: fixed before it runs, every change refused unless marked exploratory,
and its verdicts from Holm-adjusted p over its families. The experiments are written by hand
(no training): the table is recomputed from their predictions."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from tests_paths import REPO

from mer import layout, provenance, storage
from mer.errors import ConfigError
from mer.evaluation import stats, study, study_registration, study_report, study_run

SUBJECTS = [f"s{i}" for i in range(6)]
CLIPS = [2, 3, 3, 4, 6, 9]  # unequal clips per subject, as in the real sets

REG = {
    "root": "ROOT",
    "data": {"dataset": "synthetic", "synthetic": {"subjects": 6, "clips_per_subject": 3}},
    "keyframes": {"k": 8, "size": 32},
    "model": {"width": 0.125, "embedding_dim": 16, "head_hidden": 32, "input": "delta"},
    "pretrain": {"epochs": 1, "pairs_per_epoch": 16, "batch_size": 4},
    "finetune": {"epochs": 1, "batch_size": 8, "gamma": 2.0, "beta": 0.5, "freeze": 0},
    "search": {"seeds": [0, 1]},
    "study": {
        "name": "reg",
        "selection": "fixed by hand for the test",
        # Existing presets stand in for the mechanism presets (configs/study-registered.yaml).
        "presets": ["simple", "demo"],
        "variants": [
            {
                "name": "cross-entropy",
                "claim": "focal loss",
                "set": {"finetune.gamma": 0.0, "finetune.beta": 0.0},
            },
            {"name": "scratch", "claim": "prior learning", "set": {"pretrain.enabled": False}},
        ],
        "comparisons": [
            {
                "claim": "focal loss",
                "a": "full",
                "b": "cross-entropy",
                "matters": "simple",
                "control": "demo",
            },
            {
                "claim": "the method beats the baselines",
                "a": "full",
                "b": "baselines",
                "matters": "simple",
            },
        ],
    },
}
ACCURACY = {"full": 0.8, "cross-entropy": 0.5, "scratch": 0.75, "raw-frames": 0.6}


def write_config(tmp_path, doc) -> str:
    import yaml

    doc = json.loads(json.dumps(doc).replace("ROOT", str(tmp_path)))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def write_entry(folder: str, accuracy: float, seeds, seed_key: int, code: str) -> None:
    """One entry's outer predictions, with the provenance columns a fold run records."""
    for seed in seeds:
        rng = np.random.default_rng([seed, seed_key])
        for subject, n in zip(SUBJECTS, CLIPS, strict=True):
            label = np.arange(n) % 3
            right = rng.random(n) < accuracy
            df = pd.DataFrame(
                {
                    "dataset": "d",
                    "subject": subject,
                    "clip": [f"{subject}-{c}" for c in range(n)],
                    "label": label,
                    "pred": np.where(right, label, (label + 1) % 3),
                    "run": f"d-{subject}",
                    "kind": "outer",
                    "outer": f"d-{subject}",
                    "seed": seed,
                    "code": code,
                    "platform": "cpu X, torch 0",
                    "threads": 1,
                }
            )
            storage.write_parquet(
                pa.Table.from_pandas(df, preserve_index=False),
                storage.join(folder, f"seed-{seed}", f"d-{subject}.parquet"),
            )


def write_experiments(cfg, s, code="c0de", only=None) -> None:
    """A finished experiment per (preset, variant), baselines with the full method's."""
    for k, v in enumerate(s.variants):
        if only and v.name not in only:
            continue
        for j, preset in enumerate(study.run_presets(s, v)):
            vcfg = study.variant_config(cfg, s, v, preset)
            uri = layout.experiment_uri(vcfg)
            storage.write_json(
                storage.join(uri, "_experiment.json"),
                {
                    "experiment": vcfg.search.experiment,
                    "folds": [f"d-{x}" for x in SUBJECTS],
                    "seeds": [0, 1],
                    "num_classes": 3,
                },
            )
            folder = layout.config_dir(uri, "c1")
            storage.write_json(storage.join(folder, "params.json"), {"gamma": 1.0})
            write_entry(folder, ACCURACY[v.name], [0, 1], 10 * k + j, code)
            if v.name == study.FULL:
                for b, acc in (("linear", 0.55), ("majority", 0.34)):
                    write_entry(layout.baseline_dir(uri, b), acc, [0, 1], 100 + j, code)


def UNUSED(cfg, progress):
    raise AssertionError("a refused study ran an experiment")


def test_a_study_with_comparisons_runs_only_registered(tmp_path):
    cfg, s = study.load_study(write_config(tmp_path, REG))
    ran: list[str] = []

    def run(cfg, progress):  # stands in for mer.pipeline.run_experiment: records, trains nothing
        ran.append(cfg.search.experiment)

    with pytest.raises(ConfigError, match="not registered.*--register"):
        study_run.run_study(cfg, s, run_experiment=run, progress=lambda m: None)
    assert ran == []
    reg = study_registration.register(cfg, s)
    doc = json.loads((tmp_path / "study" / "reg" / "registration.json").read_text())
    assert doc["hash"] == reg["hash"] and doc["registered"] and doc["content"]["presets"]
    assert doc["code"]["code"] == provenance.code_version().code
    assert study_registration.register(cfg, s)["hash"] == reg["hash"]  # the same content: unchanged
    study_run.run_study(cfg, s, run_experiment=run, progress=lambda m: None)
    # full on both presets, cross-entropy where its comparison is, scratch (no comparison)
    # on every preset.
    assert ran == [
        "reg-simple-full",
        "reg-demo-full",
        "reg-simple-cross-entropy",
        "reg-demo-cross-entropy",
        "reg-simple-scratch",
        "reg-demo-scratch",
    ]


def test_registered_verdicts_come_from_holm_over_each_family(tmp_path):
    cfg, s = study.load_study(write_config(tmp_path, REG))
    study_registration.register(cfg, s)
    write_experiments(cfg, s)
    table = study_run.write_study(cfg, s, progress=lambda m: None)
    # Primary: focal loss on 2 presets + full vs 2 baselines on simple = 4 comparisons;
    # exploratory, counted apart: full - scratch on 2 presets, full - baselines on demo.
    assert table["families"] == {
        "primary": {"comparisons": 4, "tests": 8},
        "exploratory": {"comparisons": 4, "tests": 8},
    }
    tests = {}
    for r in table["rows"]:
        d = r.get("full_minus_row")
        if d:
            tests[(r["preset"], r["variant"])] = d
    for family in ("primary", "exploratory"):
        cells = [(d, m) for d in tests.values() for m in ("uf1", "uar")]
        cells = [(d, m) for d, m in cells if d[m]["family"] == family]
        assert len(cells) == 8
        holm = stats.holm([d[m]["p_value"] for d, m in cells])
        assert [d[m]["p_holm"] for d, m in cells] == pytest.approx(list(holm))
        for d, m in cells:
            assert d[m]["verdict"] == stats.verdict(d[m]["p_holm"])
            assert d[m]["interval"] in ("BCa", "percentile")
    focal = next(c for c in table["claims"] if c["claim"] == "focal loss")
    assert [(k["preset"], k["role"]) for k in focal["conditions"]] == [
        ("simple", "matters"),
        ("demo", "control"),
    ]
    beats = next(c for c in table["claims"] if c["b"] == "baselines")
    assert sorted(k["b"] for k in beats["conditions"]) == ["baseline: linear", "baseline: majority"]
    # Kish's effective subjects beside each preset: 6 subjects holding 2-9 clips each.
    kish = sum(CLIPS) ** 2 / sum(n * n for n in CLIPS)
    assert [p["effective_subjects"] for p in table["presets"]] == [round(kish, 2)] * 2
    md = (tmp_path / "study" / "reg" / "study.md").read_text()
    assert "Registered " in md and table["registration"]["hash"] in md
    assert "Holm over the primary family, 4 comparisons x UF1 and UAR = 8 tests" in md
    assert "Claim: focal loss, full vs cross-entropy" in md
    assert "| simple (matters) | full - cross-entropy |" in md
    assert f"effective subjects {kish:.1f}" in md


@pytest.mark.parametrize(
    "settings, needle",
    [
        ({"long-clip": {"keyframes.k": 32}}, r"presets \['long-clip'\] that are not in"),
        ({"demo": 32}, "maps a preset to its settings"),
        ({"demo": {"search.seeds": [5]}}, "preset_settings of demo: cannot set 'search.seeds'"),
        ({"demo": {"keyframes.nope": 1}}, "nope"),
    ],
)
def test_bad_preset_settings_are_one_sentence_naming_them(tmp_path, settings, needle):
    doc = copy.deepcopy(REG)
    doc["study"]["preset_settings"] = settings
    with pytest.raises(ConfigError, match=needle):
        study.load_study(write_config(tmp_path, doc))


def test_a_variant_added_after_registration_is_refused_unless_exploratory(tmp_path):
    cfg, s = study.load_study(write_config(tmp_path, REG))
    study_registration.register(cfg, s)
    doc = copy.deepcopy(REG)
    doc["study"]["variants"].append(
        {"name": "raw-frames", "claim": "onset-delta input", "set": {"model.input": "frames"}}
    )
    cfg2, s2 = study.load_study(write_config(tmp_path, doc))
    with pytest.raises(ConfigError, match="raw-frames was added after registration.*exploratory"):
        study_run.run_study(cfg2, s2, run_experiment=UNUSED, progress=lambda m: None)
    with pytest.raises(ConfigError, match="raw-frames was added after registration"):
        study_run.write_study(cfg2, s2, progress=lambda m: None)

    doc["study"]["variants"][-1]["exploratory"] = True
    cfg3, s3 = study.load_study(write_config(tmp_path, doc))
    write_experiments(cfg3, s3)
    table = study_run.write_study(cfg3, s3, progress=lambda m: None)
    raw = [r for r in table["rows"] if r["variant"] == "raw-frames"]
    assert len(raw) == 2 and all(r["exploratory"] for r in raw)
    assert all(r["full_minus_row"]["uf1"]["family"] == "exploratory" for r in raw)
    assert not any(r["exploratory"] for r in table["rows"] if r["variant"] != "raw-frames")
    out = tmp_path / "study" / "reg"
    md = (out / "study.md").read_text()
    assert md.count("| raw-frames (exploratory) |") == 2
    csv = pd.read_csv(out / "study.csv")
    assert csv.loc[csv["variant"] == "raw-frames", "exploratory"].all()
    labels = study_report.plot_labels(table)
    assert sum(label.endswith("raw-frames (exploratory)") for label in labels) == 2
    assert (out / "study_uf1.png").stat().st_size > 0

    # A registered comparison cannot change, nor the base config.
    doc["study"]["comparisons"][0]["control"] = "simple"
    doc["study"]["comparisons"][0]["matters"] = "demo"
    cfg4, s4 = study.load_study(write_config(tmp_path, doc))
    with pytest.raises(ConfigError, match="registered comparison focal loss .* is gone"):
        study_run.write_study(cfg4, s4, progress=lambda m: None)
    cfg5, s5 = study.load_study(write_config(tmp_path, REG), ["finetune.lr=0.01"])
    with pytest.raises(ConfigError, match="differs from its registration.*finetune"):
        study_run.run_study(cfg5, s5, run_experiment=UNUSED, progress=lambda m: None)
    # Nor what a preset sets for every variant run on it.
    doc = copy.deepcopy(REG)
    doc["study"]["preset_settings"] = {"demo": {"keyframes.k": 4}}
    cfg6, s6 = study.load_study(write_config(tmp_path, doc))
    assert study.variant_config(cfg6, s6, s6.variants[0], "demo").keyframes.k == 4
    assert study.variant_config(cfg6, s6, s6.variants[0], "simple").keyframes.k == cfg6.keyframes.k
    with pytest.raises(ConfigError, match="differs from its registration.*preset_settings"):
        study_run.run_study(cfg6, s6, run_experiment=UNUSED, progress=lambda m: None)


def test_a_study_of_rows_made_by_two_code_versions_is_refused_unless_allowed(tmp_path):
    cfg, s = study.load_study(write_config(tmp_path, REG))
    study_registration.register(cfg, s)
    write_experiments(cfg, s, code="aaaa")
    write_experiments(cfg, s, code="bbbb", only=["scratch"])
    from mer.errors import InputError

    with pytest.raises(InputError, match="different code.*scratch: bbbb.*--allow-mixed"):
        study_run.write_study(cfg, s, progress=lambda m: None)
    table = study_run.write_study(cfg, s, progress=lambda m: None, allow_mixed=True)
    assert "simple: scratch, demo: scratch: bbbb" in table["mixed"][0]
    md = (tmp_path / "study" / "reg" / "study.md").read_text()
    assert "combined on request (--allow-mixed" in md and "bbbb" in md


def test_the_registered_study_config_declares_a_claim_per_mechanism_preset():
    """configs/study-registered.yaml: every claim on the preset where its mechanism should
    matter and on a control, the method against every baseline on realistic."""
    import yaml

    doc = yaml.safe_load((REPO / "configs" / "study-registered.yaml").read_text())
    s = study.parse_study(doc["study"])
    assert s.presets == [
        "dynamics",
        "scarce",
        "plentiful",
        "imbalanced",
        "balanced",
        "long-clip",
        "realistic",
    ]
    pairs = {(c.a, c.b): (c.matters, c.control) for c in s.comparisons}
    assert pairs[("full", "cross-entropy")] == ("imbalanced", "balanced")
    assert pairs[("full", "scratch")] == ("scarce", "plentiful")
    assert pairs[("full", "uniform")][0] == pairs[("full", "onset-apex")][0] == "long-clip"
    assert pairs[("full", "one-difference")][0] == "dynamics"
    assert pairs[("full", "baselines")] == ("realistic", None)
    assert not any(c.exploratory for c in s.comparisons)
    assert not any(v.exploratory for v in s.variants)
    assert len(doc["search"]["seeds"]) >= 3
    # It loads as jobs/study.py loads it, and every variant resolves on every preset it runs on.
    cfg, loaded = study.load_study(str(REPO / "configs" / "study-registered.yaml"))
    assert loaded == s
    ks = {}
    for v in loaded.variants:
        for preset in study.run_presets(loaded, v):
            vcfg = study.variant_config(cfg, loaded, v, preset)
            assert vcfg.data.synthetic["preset"] == preset, (v.name, preset)
            ks[(v.name, preset)] = vcfg.keyframes.k
    # long-clip, the interpolation condition, at K = 32 for every variant run on it (at K = 8
    # no key-frame position falls between frames); elsewhere the base K; one-difference is
    # the onset and apex frames wherever it runs.
    assert {ks[(v, "long-clip")] for v in ("full", "uniform", "onset-apex")} == {32}
    assert ks[("full", "balanced")] == ks[("uniform", "balanced")] == cfg.keyframes.k == 8
    assert {k for (v, _), k in ks.items() if v == "one-difference"} == {2}
