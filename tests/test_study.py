"""The ablation study: variants as experiments on the same folds and seeds, one table whose
every row carries an interval and whose paired rows are mer.evaluation.results.compare's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from tests_paths import REPO

from mer import layout, provenance, storage
from mer.errors import ConfigError, InputError
from mer.evaluation import results, stats, study, study_report, study_run, study_table
from mer.evaluation.stage import run_search_stage
from mer.provenance import platform
from mer.testing.fakes import write_random_keyframes

TINY = {
    "root": "ROOT",
    "data": {"dataset": "synthetic", "synthetic": {"subjects": 4, "clips_per_subject": 3}},
    "keyframes": {"k": 8, "size": 32},
    "model": {"width": 0.125, "embedding_dim": 16, "head_hidden": 32, "input": "delta"},
    "pretrain": {"epochs": 1, "pairs_per_epoch": 16, "batch_size": 4},
    "finetune": {"epochs": 1, "batch_size": 8, "gamma": 2.0, "beta": 0.5, "freeze": 1},
    "search": {"seeds": [0, 1]},
    "study": {
        "name": "tiny",
        "selection": "fixed by hand for the test",
        "variants": [
            {"name": "scratch", "claim": "prior learning", "set": {"pretrain.enabled": False}},
            {
                "name": "cross-entropy",
                "claim": "focal loss",
                "set": {"finetune.gamma": 0.0, "finetune.beta": 0.0},
            },
            {"name": "freeze", "claim": "freezing", "space": {"freeze": [0, 2]}},
            {"name": "uniform", "claim": "key frames", "set": {"keyframes.method": "uniform"}},
        ],
    },
}


def write_study_config(tmp_path, doc=None) -> str:
    import yaml

    doc = json.loads(json.dumps(doc or TINY).replace("ROOT", str(tmp_path)))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_variants_are_the_base_config_with_their_overrides(tmp_path):
    cfg, s = study.load_study(write_study_config(tmp_path))
    assert [v.name for v in s.variants] == ["full", "scratch", "cross-entropy", "freeze", "uniform"]
    full = study.variant_config(cfg, s, s.variants[0])
    assert full.search.experiment == "tiny-full"
    assert full.search.space == {"gamma": [2.0], "beta": [0.5], "freeze": [1]}
    ce = study.variant_config(cfg, s, s.variants[2])
    assert ce.search.space == {"gamma": [0.0], "beta": [0.0], "freeze": [1]}
    sweep = study.variant_config(cfg, s, s.variants[3])
    assert sweep.search.space["freeze"] == [0, 2]
    uniform = study.variant_config(cfg, s, s.variants[4])
    assert layout.keyframes_uri(uniform) != layout.keyframes_uri(full)
    assert uniform.search.seeds == full.search.seeds == [0, 1]


@pytest.mark.parametrize(
    "variant, needle",
    [
        ({"name": "x", "set": {"search.seeds": [5]}}, "search.seeds"),
        ({"name": "x", "set": {"finetune.nope": 1}}, "nope"),
        ({"name": "x", "set": {"finetune.gamma": -1.0}}, "finetune.gamma"),
        ({"name": "full"}, "unique"),
        ({"name": "x", "colour": 1}, "colour"),
    ],
)
def test_a_bad_variant_is_one_sentence_naming_it(tmp_path, variant, needle):
    doc = json.loads(json.dumps(TINY))
    doc["study"]["variants"] = [variant]
    with pytest.raises(ConfigError, match=needle):
        study.load_study(write_study_config(tmp_path, doc))


def test_the_shipped_study_config_resolves_every_variant():
    cfg, s = study.load_study(str(REPO / "configs" / "study.yaml"))
    names = [v.name for v in s.variants]
    assert names[0] == "full" and len(set(names)) == len(names)
    claims = {v.claim for v in s.variants}
    for claim in ("prior learning", "focal loss", "freezing", "adaptive key frames"):
        assert claim in claims
    assert s.selection  # the output says how the full method's settings were chosen
    methods = {study.variant_config(cfg, s, v).keyframes.method for v in s.variants}
    assert methods == {"adaptive", "uniform", "onset-apex"}
    interpolations = {study.variant_config(cfg, s, v).keyframes.interpolation for v in s.variants}
    assert interpolations == {"linear", "flow", "adaconv"}
    # Freezing a prior that learns reuses dev-prior's priors (same prior hash) and sweeps depth.
    by_name = {v.name: study.variant_config(cfg, s, v) for v in s.variants}
    dev_prior, frozen = by_name["dev-prior"], by_name["dev-prior-freeze"]
    assert layout.prior_hash(frozen) == layout.prior_hash(dev_prior)
    assert layout.prior_hash(dev_prior) != layout.prior_hash(by_name["full"])
    assert frozen.search.space["freeze"] == [1, 2, 3, 4, 5]
    assert dev_prior.search.space["freeze"] == [0]
    # Added after the full method's results on these folds: exploratory, the rest declared.
    assert {v.name for v in s.variants if v.exploratory} == {
        "dev-tuned",
        "dev-prior",
        "dev-prior-freeze",
    }


def test_the_small_study_config_resolves_every_variant():
    cfg, s = study.load_study(str(REPO / "configs" / "study-simple.yaml"))
    assert [v.name for v in s.variants] == [
        "full",
        "scratch",
        "cross-entropy",
        "uniform",
        "adaconv",
    ]
    assert s.selection and cfg.search.seeds == [0, 1, 2]
    assert {study.variant_config(cfg, s, v).search.experiment for v in s.variants} == {
        f"simple-{v.name}" for v in s.variants
    }


def test_the_interpolation_study_renders_many_key_frames_between_two_frames(tmp_path):
    """configs/study-short.yaml exists so that its adaconv and flow rows mean something: its
    clips put a large share of key-frame positions between two frames (2 of its 8 subjects
    built here)."""
    import numpy as np

    from mer.datasets.synthetic.generator import generate
    from mer.keyframes.preprocess import build_keyframes_dataset
    from mer.keyframes.table import load_table

    cfg, s = study.load_study(
        str(REPO / "configs" / "study-short.yaml"),
        [f"root={tmp_path}", "data.synthetic.subjects=2"],
    )
    assert {study.variant_config(cfg, s, v).keyframes.interpolation for v in s.variants} == {
        "linear",
        "adaconv",
        "flow",
    }
    generate(layout.data_root(cfg), **cfg.data.synthetic)
    build_keyframes_dataset(cfg, use_ray=False, progress=lambda m: None)
    idx = np.stack(load_table(layout.keyframes_uri(cfg)).clips["keyframe_indices"].to_numpy())
    fractional = np.abs(idx - np.round(idx)) > 1e-6
    assert fractional.any(axis=1).all() and fractional.mean() > 0.3
    # The study table's key-frame facts count the same positions (and apex coverage).
    clips = load_table(layout.keyframes_uri(cfg)).clips
    held = sum(a in set(np.round(i).astype(int)) for a, i in zip(clips.apex, idx, strict=True))
    facts = study_table.keyframe_facts(layout.keyframes_uri(cfg))
    assert facts["interpolated"] == fractional.sum() and facts["positions"] == idx.size
    assert facts["clips"] == len(idx) and facts["apex_held"] == held
    assert study_table.keyframe_facts(str(tmp_path / "no-table")) is None


INTERP = {
    **TINY,
    "study": {
        "name": "interp",
        "variants": [
            {"name": "flow", "claim": "interpolation", "set": {"keyframes.interpolation": "flow"}},
            {"name": "uniform", "claim": "key frames", "set": {"keyframes.method": "uniform"}},
        ],
    },
}


def test_an_interpolation_variant_is_not_run_where_no_key_frame_is_interpolated(
    tmp_path,
):
    cfg, s = study.load_study(write_study_config(tmp_path, INTERP))
    full_uri = layout.keyframes_uri(study.variant_config(cfg, s, s.variants[0]))
    write_random_keyframes(full_uri, subjects=3, clips=3)  # every position a whole frame
    ran: list[str] = []

    # The variants' stages are not run: the runner only records which experiments it was asked for.
    def run(cfg, progress):
        ran.append(cfg.search.experiment)

    lines: list[str] = []
    table = study_run.run_study(
        cfg, s, run_experiment=run, progress=lines.append, only=["flow", "uniform"]
    )
    assert ran == ["interp-uniform"]  # flow's fold runs would repeat the full method's
    assert any(x.startswith("[study] flow: not testable on this set") for x in lines)
    flow = next(r for r in table["rows"] if r["variant"] == "flow")
    assert flow["status"] == "untestable" and "none of the full method's 72" in flow["reason"]
    assert "flow" not in [v for k in table["keyframes"] for v in k["variants"]]
    md = (tmp_path / "study" / "interp" / "study.md").read_text()
    assert "- flow: not testable on this set" in md
    assert next(r for r in table["rows"] if r["variant"] == "uniform")["status"] == "not run"

    # One key-frame position between two frames: the interpolation matters, flow is run.
    write_random_keyframes(full_uri, subjects=3, clips=3, positions=[0, 1, 2, 3, 4, 5, 5.5, 7])
    ran.clear()
    table = study_run.run_study(cfg, s, run_experiment=run, progress=lines.append, only=["flow"])
    assert ran == ["interp-flow"]
    assert next(r for r in table["rows"] if r["variant"] == "flow")["status"] == "not run"


# The end-to-end study is smaller still: 3 subjects (3 folds), no prior learning (priors are
# the pipeline's, tested in test_train/test_search), and one variant, a sweep on its own
# key-frame table. Each variant is its own Tune run, the test's main cost.
END = {
    **TINY,
    "data": {"dataset": "synthetic", "synthetic": {"subjects": 3, "clips_per_subject": 3}},
    "pretrain": {"enabled": False},
    "finetune": {"epochs": 1, "batch_size": 8, "gamma": 2.0, "beta": 0.5, "freeze": 0},
    "study": {
        "name": "tiny",
        "selection": "fixed by hand for the test",
        "variants": [
            {
                "name": "uniform",
                "claim": "key frames",
                "set": {"keyframes.method": "uniform"},
                "space": {"gamma": [0.0, 2.0]},
            },
        ],
    },
}


def test_a_tiny_study_end_to_end(ray_local, tmp_path):
    path = write_study_config(tmp_path, END)
    cfg, s = study.load_study(path)
    # Fake key-frame tables where each variant's stage would write them (different content
    # for the uniform variant's), so the data and key-frame stages have nothing to do.
    tables, tables_by_variant = set(), {}
    for v in s.variants:
        uri = layout.keyframes_uri(study.variant_config(cfg, s, v))
        tables_by_variant[v.name] = uri.rsplit("/", 1)[-1]
        if uri not in tables:
            write_random_keyframes(uri, subjects=3, clips=3)
            tables.add(uri)
    assert len(tables) == 2
    # So the runner is the search stage alone (no data or key-frame stage to run).
    table = study_run.run_study(cfg, s, run_experiment=run_search_stage, progress=lambda line: None)
    out = tmp_path / "study" / "tiny"
    assert sorted(os.listdir(out)) == [
        "config.yaml",
        "report.html",  # one page holding the table, verdicts and plot (tests/test_report.py)
        "study.csv",
        "study.json",
        "study.md",
        "study_uf1.png",
    ]
    doc = json.loads((out / "study.json").read_text())
    assert doc["complete"] and doc["selection"] == "fixed by hand for the test"
    rows = doc["rows"]
    # full, uniform x 2 (its gamma sweep), then the baselines
    assert [r["variant"] for r in rows] == [
        "full",
        "uniform",
        "uniform",
        "baseline: linear",
        "baseline: lbp-top",
        "baseline: flow-cnn",
        "baseline: majority",
    ]
    # A swept variant's rows in the order its space lists the values.
    assert [r["swept"] for r in rows[1:3]] == [{"gamma": 0.0}, {"gamma": 2.0}]
    full_exp = results.load_experiment(str(tmp_path / "tune" / "tiny-full"))
    full_id = doc["full"]["config_id"]
    for r in rows:
        assert r["status"] == "complete" and r["folds"] == "3/3" and r["seeds_done"] == 2
        lo, mean, hi = r["uf1"]["lo"], r["uf1"]["mean"], r["uf1"]["hi"]
        assert lo is not None and lo <= mean <= hi  # every row carries its interval
        assert r["uf1"]["sd"] is not None and r["uar"]["lo"] is not None
        if r["kind"] == "full":
            assert "full_minus_row" not in r
            continue
        # The paired row is mer.evaluation.results.compare(full, row), number for number.
        exp = results.load_experiment(str(tmp_path / "tune" / r["experiment"]))
        c = results.compare(full_exp, full_id, exp, r["config_id"])
        for m in ("uf1", "uar"):
            got = r["full_minus_row"][m]
            for k in ("difference", "ci_low", "ci_high", "p_value"):
                assert got[k] == pytest.approx(c[m][k]), (r["variant"], m, k)
            assert got["ci_low"] <= got["difference"] <= got["ci_high"]
            # Holm over the study's one family (6 comparisons x UF1, UAR): never below p.
            assert got["family"] == "primary" and 1 >= got["p_holm"] >= got["p_value"]
            assert got["verdict"] == stats.verdict(got["p_holm"])
        # Every row records the code, platform and threads its predictions were made with.
        assert r["provenance"]["code"] == [provenance.code_version().code]
    assert doc["families"] == {
        # full - row for two variants and four baselines (majority, linear, lbp-top, flow-cnn)
        "primary": {"comparisons": 6, "tests": 12},
        "exploratory": {"comparisons": 0, "tests": 0},
    }
    holm = stats.holm([r["full_minus_row"][m]["p_value"] for r in rows[1:] for m in ("uf1", "uar")])
    assert [r["full_minus_row"][m]["p_holm"] for r in rows[1:] for m in ("uf1", "uar")] == (
        pytest.approx(list(holm))
    )
    assert doc["presets"][0]["subjects"] == 3 and doc["presets"][0]["effective_subjects"] == 3
    md = (out / "study.md").read_text()
    main_table = md.split("\n\n")[5]
    assert md.split("\n\n")[1].startswith("Not registered")
    assert main_table.count("\n| ") == len(rows) and "[" in md and "p=" in md
    assert "fixed by hand for the test" in md
    # Each fold run's thread count and each key-frame table's facts are in the outputs.
    assert [r.get("threads") for r in rows] == [[1], [1], [1], None, None, None, None]
    assert "Torch threads per fold run: full 1; every other method row the same." in md
    here = platform(torch.device("cpu"))
    assert [r.get("platforms") for r in rows] == [[here]] * 3 + [None] * 4
    assert "computed on (another can move a score by itself): full, uniform gamma=" in md
    assert md.count(here) == 1
    assert doc["keyframes"] == [
        {
            "variants": ["full"],
            "table": tables_by_variant["full"],
            "clips": 9,
            "positions": 72,
            "interpolated": 0,
            "apex_held": 9,
        },
        {
            "variants": ["uniform"],
            "table": tables_by_variant["uniform"],
            "clips": 9,
            "positions": 72,
            "interpolated": 0,
            "apex_held": 9,
        },
    ]
    assert "| uniform | " + tables_by_variant["uniform"] + " | 9 | 9 of 9 | 0 of 72 |" in md
    csv = (out / "study.csv").read_text().splitlines()
    assert len(csv) == 1 + len(rows) and "full_minus_row_uf1_ci_low" in csv[0]

    # The job script's --report prints the same table from what has run.
    job = subprocess.run(
        [sys.executable, "jobs/study.py", "--config", path, "--report"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert main_table in job.stdout

    # A rerun finds every fold run done and leaves them.
    preds = sorted((tmp_path / "tune").glob("*/configs/*/seed-*/*.parquet"))
    mtimes = {p: p.stat().st_mtime for p in preds}
    assert len(preds) == 3 * 3 * 2  # 3 configurations x 3 folds x 2 seeds
    again = study_run.run_study(cfg, s, run_experiment=run_search_stage, progress=lambda line: None)
    assert again["rows"][1]["uf1"] == table["rows"][1]["uf1"]
    assert mtimes == {p: p.stat().st_mtime for p in preds}

    # A row one of whose fold runs computed on another thread count is named in the table.
    import pyarrow.parquet as pq

    one = next(p for p in preds if "tiny-uniform" in str(p))
    t = pq.read_table(one)
    t = t.set_column(t.schema.get_field_index("threads"), "threads", [[2] * len(t)])
    pq.write_table(t, one)
    swept = json.loads((one.parents[1] / "params.json").read_text())["gamma"]
    with pytest.raises(InputError, match=r"different threads.*--allow-mixed"):
        study_table.study_table(cfg, s)
    mixed = study_table.study_table(cfg, s, allow_mixed=True)
    assert any(f"uniform gamma={swept}: 1 + 2" in m for m in mixed["mixed"])
    flagged = study_report.markdown(mixed)
    assert f"on other counts (can move a score by itself): uniform gamma={swept} (1, 2)" in flagged
    assert "combined on request (--allow-mixed" in flagged

    # The same study name under another base setting is refused, naming study.name.
    cfg2, s2 = study.load_study(write_study_config(tmp_path, END), ["finetune.lr=0.01"])
    with pytest.raises(ConfigError, match="study.name"):
        study_run.run_study(cfg2, s2, run_experiment=run_search_stage, progress=lambda line: None)
    # Its table never shows those results: every row is stale and says what differs.
    stale = study_table.study_table(cfg2, s2)
    assert [r["status"] for r in stale["rows"]] == ["stale", "stale"]
    assert all("finetune.lr" in r["stale"] and "uf1" not in r for r in stale["rows"])
    assert not stale["complete"] and "Stale rows" in study_report.markdown(stale)


def test_the_table_says_what_each_variants_priors_learnt(tmp_path):
    cfg, s = study.load_study(write_study_config(tmp_path))

    # Two priors per seed for the full method's prior settings (shared by cross-entropy and
    # freeze, which change target learning only), one per seed for uniform's; one of the
    # full method's recorded before priors kept a probe; scratch learns none.
    def done(variant, seed, run, pair, probe=None):
        vcfg = study.variant_config(cfg, s, next(v for v in s.variants if v.name == variant))
        folder = study_table.prior_folder(vcfg, seed)
        record = {"train_subjects": ["x"], "history": [{"pair_accuracy": pair}]}
        storage.write_json(storage.join(folder, run, "_done.json"),
                           {**record, **({"probe": probe} if probe else {})})  # fmt: skip

    probe = {"k": 5, "clips": 3, "accuracy": 0.6, "majority_share": 0.4}
    done("full", 0, "a", 0.9, probe)
    done("full", 0, "b", 0.7, {**probe, "accuracy": 0.2})
    done("full", 1, "a", 0.5)
    done("uniform", 0, "a", 0.55, {**probe, "accuracy": 1 / 3, "majority_share": 1 / 3})
    priors = {}
    study_table._preset_priors(cfg, s, None, priors)
    records = list(priors.values())
    assert [r["variants"] for r in records] == [["full", "cross-entropy", "freeze"], ["uniform"]]
    full, uniform = records
    assert full["priors"] == 3 and full["probed"] == 2
    assert full["pair_accuracy"] == {"mean": 0.7, "min": 0.5, "max": 0.9}
    assert full["knn_accuracy"] == pytest.approx(0.4) and full["majority_share"] == 0.4
    assert uniform["priors"] == 1 and uniform["pair_accuracy"]["mean"] == 0.55
    text = "\n".join(study_report._priors_text(records))
    assert (
        "| full, cross-entropy, freeze | 3 | 0.700 [0.500, 0.900] | 0.400 (2 probed) | 0.400 |"
        in text
    )
    assert "| uniform | 1 | 0.550 [0.550, 0.550] | 0.333 (1 probed) | 0.333 |" in text
