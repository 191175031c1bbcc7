"""MLflow tracking (config tracking.mlflow_uri, jobs/results.py --mlflow) against a real
`mlflow server` with a SQLite store on 127.0.0.1 (tests/conftest.py's `mlflow_server`, one per
session; the submitted pipeline of tests/test_job_submit.py logs to it too).

The server runs from its own virtualenv (`make mlflow-server`: MLflow's server pins an older
pyarrow than the project's); the project itself needs only the client
(requirements-mlflow.txt). Without the server or the client the tests skip, naming what to
install, except where MER_REQUIRE_MLFLOW=1 (CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_results import write_entry, write_meta
from tests_paths import REPO


def test_an_experiment_is_a_parent_run_with_a_child_per_configuration(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    exp = str(tmp_path / "exp")
    write_meta(exp, [0, 1, 2])
    for entry, accuracy in (("good", 0.85), ("near", 0.84), ("poor", 0.35)):
        write_entry(exp, entry, accuracy, [0, 1, 2])
    write_entry(exp, "linear", 0.6, [0, 1, 2], baseline=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "jobs/results.py", exp]
    for _ in range(2):  # logging again updates the same runs
        done = subprocess.run(
            [*cmd, "--report", str(tmp_path / "out"), "--mlflow", mlflow_server],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    js = subprocess.run(
        [*cmd, "--format", "json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    doc = json.loads(js.stdout)

    client = MlflowClient(tracking_uri=mlflow_server)
    found = client.get_experiment_by_name("mer/hand")
    runs = client.search_runs([found.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("mer.role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = {
        r.data.tags["mer.entry"]: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert len(runs) == 1 + len(children)
    rows = {r["config_id"]: r for r in doc["leaderboard"]}
    assert set(children) == set(rows)
    for entry, run in children.items():
        r, m = rows[entry], run.data.metrics
        for key in ("uf1", "uf1_sd", "uf1_lo", "uf1_hi", "uar", "uar_lo", "uar_hi"):
            assert m[key] == pytest.approx(r[key]), (entry, key)
        assert m["f1_negative"] == pytest.approx(r["f1[negative]"])
        for s in r["per_seed"]:
            assert m[f"uf1_seed_{s['seed']}"] == pytest.approx(s["uf1"])
        assert run.data.params["kind"] == r["kind"]
        if r["kind"] == "method":
            assert float(run.data.params["gamma"]) == r["gamma"]
            assert run.data.tags["mlflow.runName"].startswith(f"gamma={r['gamma']}")
        assert run.data.tags["mer.standing"] == (r["standing"] or "")
    assert parent.data.tags["mer.top"] == doc["top"]["config_id"]
    listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.json", "leaderboard.csv", "report.html", "plots"} <= listed
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/confusion_top.png" in plots
    local = client.download_artifacts(parent.info.run_id, "leaderboard.json", str(tmp_path))
    assert (
        json.loads(Path(local).read_text())["leaderboard"]
        == json.loads((tmp_path / "out" / "leaderboard.json").read_text())["leaderboard"]
    )


def test_a_study_is_a_parent_run_with_a_row_per_child_and_its_verdicts(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from mer.evaluation import study_report, tracking

    table = json.loads((REPO / "benchmarks" / "study_casme2_like.json").read_text())
    page = study_report.html(table).encode()
    parent_id = tracking.log_study(mlflow_server, table, {"study.json": b"{}", "report.html": page})
    client = MlflowClient(tracking_uri=mlflow_server)
    found = client.get_experiment_by_name(f"mer-study/{table['study']}")
    children = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    by = {r.data.tags["mer.entry"]: r for r in children}
    assert set(by) == {study_report.row_key(r) for r in table["rows"]}
    for r in table["rows"]:
        run = by[study_report.row_key(r)]
        d = (r.get("full_minus_row") or {}).get("uf1")
        if d and r["status"] == "complete":
            assert run.data.tags["mer.verdict_uf1"] == d["verdict"]
            assert run.data.metrics["full_minus_row_uf1_p_value"] == pytest.approx(d["p_value"])
        if r.get("uf1", {}).get("mean") is not None:
            assert run.data.metrics["uf1_mean"] == pytest.approx(r["uf1"]["mean"])
    assert "report.html" in {a.path for a in client.list_artifacts(parent_id)}
