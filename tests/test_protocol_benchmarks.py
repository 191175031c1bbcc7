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
