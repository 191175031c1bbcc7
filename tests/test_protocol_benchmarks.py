"""The prepared protocol benchmarks run at their smoke sizes (what a GPU call or an idle CPU
machine will run at full size): whole groups within the budget, no leak, a projection."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mer.evaluation import stats

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_protocol_smoke_runs_whole_groups_leak_free_and_projects_the_rest(tmp_path):
    out = tmp_path / "gpu_protocol.json"
    # A budget smaller than one group: exactly one whole group runs, then it stops.
    result = _load("gpu_protocol").main(
        ["--cpu-smoke", "--groups", "2", "--budget", "0.01", "--out", str(out)]
    )
    assert json.loads(out.read_text()) == result
    assert result["groups_run"] == result["priors_learnt"] == 1
    group = result["group_runs"][0]
    assert result["fold_runs"] == len(group["folds"]) == 4  # 8 subjects in 2 balanced groups
    assert result["leaks"] == []  # read back from the stored subject lists
    p = result["projection"]
    assert p["priors_minutes"] == pytest.approx(2 * p["prior_s_each"] / 60, abs=0.01)
    assert p["target_learning_minutes"] == pytest.approx(8 * p["fold_run_s_each"] / 60, abs=0.01)
    assert 0 < p["fixed_share_of_fold_run"] < 1


def test_cluster_projection_places_priors_as_the_pipeline_does_and_matches_the_timeline(tmp_path):
    proj = _load("cluster_projection")
    assert proj.makespan([2, 4, 3, 3], 2) == 6  # longest first, each to the first free GPU
    assert proj.makespan([5, 5, 5], 4) == 5
    assert proj.prior_stage(68, 4, 1, 10.0, 1.0) == 17 * (1 + 4 * 10)  # 17 runs of 4, in turn
    assert proj.prior_stage(4, 4, 16, 10.0, 1.0) == 41  # one run of 4: more GPUs do not help
    result = proj.main(["--out", str(tmp_path / "p.json")])
    rows = {r["priors"]: r for r in result["rows"]}
    for key in rows["per fold"]:
        if key.endswith("_min"):  # shared priors never cost more than per-fold ones
            assert all(rows[n][key] <= rows["per fold"][key] for n in rows)
    assert rows["per fold"]["1gpu_min"] > rows["per fold"]["16gpu_min"]
    assert result["timeline_check"]["consistent"], result["timeline_check"]


@pytest.mark.parametrize(
    "arms", [["sharing", "--arms", "per-fold", "shared-2"], ["precision", "--seeds", "0"]]
)
def test_prior_arms_smoke_pairs_every_arm_on_the_same_folds_and_seeds(tmp_path, arms):
    out = tmp_path / "arms.json"
    argv = [*arms, "--smoke", "--root", str(tmp_path / "runs"), "--out", str(out)]
    result = _load("prior_arms").main(argv if "--seeds" in arms else [*argv, "--seeds", "0", "1"])
    assert json.loads(out.read_text())["compare"] == arms[0]
    names = list(result["arms"])
    assert len(names) == 2
    for name in names:
        for seed in result["arms"][name]["per_seed"]:
            assert seed["leaks"] == []  # read back from the stored subject lists
    if arms[0] == "sharing":  # 4 subjects: 4 per-fold priors, 2 shared
        assert [result["arms"][n]["per_seed"][0]["priors"] for n in names] == [4, 2]
    else:
        assert result["amp_effective"] is False  # on the CPU both arms train in fp32
    assert sorted(result["comparisons"]) == ["knn_accuracy", "uar", "uf1"]
    for metric, rows in result["comparisons"].items():
        (row,) = rows
        assert row["a"] == names[0] and row["b"] == names[1]
        assert row["difference"] == pytest.approx(row["a_mean"] - row["b_mean"])
        assert row["ci_low"] <= row["difference"] <= row["ci_high"]
        assert row["p_holm"] >= row["p_value"]
        # UF1 and UAR are adjusted together (one family, as in the study); the probe alone.
        assert row["family_size"] == (1 if metric == "knn_accuracy" else 2)
    uf1, uar = result["comparisons"]["uf1"][0], result["comparisons"]["uar"][0]
    assert [uf1["p_holm"], uar["p_holm"]] == pytest.approx(
        stats.holm([uf1["p_value"], uar["p_value"]])
    )


def test_check_prior_leaks_reads_the_stored_subject_lists_of_a_run_root(tmp_path, capsys):
    from mer import config, layout
    from mer.evaluation.search import fold_runs
    from mer.keyframes.table import fold_specs, load_table
    from mer.testing.fakes import write_random_keyframes
    from mer.train import checkpoints
    from mer.train.pretrain import prior_jobs

    tiny = str(BENCH.parent / "configs" / "tiny.yaml")
    sets = ["pretrain.prior_groups=2", "search.protocol=nested", "search.inner_k=2"]
    cfg = config.load(tiny, [f"root={tmp_path}", *sets])
    write_random_keyframes(layout.keyframes_uri(cfg), subjects=4, clips=3)
    table = load_table(layout.keyframes_uri(cfg))
    jobs = prior_jobs(cfg, fold_runs(cfg, table, fold_specs(table)), list(cfg.search.seeds))
    check = _load("check_prior_leaks").main
    argv = ["--config", tiny, "--root", str(tmp_path), "--set", *sets]
    assert check(argv) == 1  # no prior learnt yet: every run is reported
    for job in jobs:
        checkpoints.mark_done(job.dir, job.train_subjects, [])
    assert check(argv) == 0
    assert "no prior saw its fold's test subjects" in capsys.readouterr().out
    checkpoints.mark_done(jobs[0].dir, sorted(set(table.subject_keys)), [])
    assert check(argv) == 1
