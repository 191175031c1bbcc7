"""The prepared protocol benchmarks run at their smoke sizes (what a GPU call or an idle CPU
machine will run at full size): whole groups within the budget, no leak, a projection."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

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
