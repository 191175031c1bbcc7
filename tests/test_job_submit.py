"""The pipeline run as users run it: a real `ray start --head` with token authentication,
`ray job submit --working-dir .` of jobs/pipeline.py, then jobs/results.py in its own process.
Where the session has an MLflow server (tests/conftest.py), the job runs with
`tracking.mlflow_uri` set to it, and the pipeline's own logging is checked there.

The head is started with the venv's `ray` and the venv's bin first on PATH (what
`source .venv/bin/activate` does), so the job's `python` entrypoint is the venv's. Token
authentication is Ray's (2.60): RAY_AUTH_MODE=token on the head and on every client, the token
in ~/.ray/auth_token (made by `ray get-auth-token --generate`). HOME points at a private
temp dir so that the test never reads or writes the real ~/.ray.

Only what this module started is stopped: `ray stop` would stop every Ray of this user on
the machine. The head's processes are found by their command line (the private temp dir),
by a marker variable in their environment, and as descendants of those; they get SIGTERM,
then SIGKILL. Every port is chosen free, so the head does not collide with other tests'
local Ray instances.

Measured on 2 shared cores: about 90 s for the module (the submitted pipeline ~65 s, head
start ~10 s, stop ~2 s), plus the MLflow server's start (~20-30 s) where no earlier module
of the session started it; at a load average of 20-50 the submitted pipeline took 427 s.
Marked slow. Linux only (reads /proc).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests_paths import REPO

from mer.testing import local_processes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
]

BIN = Path(sys.executable).parent
RAY = BIN / "ray"
MARKER = "MER_TEST_RAY_HEAD"  # set in the head's environment; inherited by all it starts
JOB_DEADLINE_S = 600


def _client_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any Ray setting, as a fresh shell with the venv on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(BIN.parent),
        PYTHONUNBUFFERED="1",
    )
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


@dataclass
class Head:
    tmp: Path  # short private dir under /tmp (Ray's socket paths are length-limited)
    home: Path  # HOME of the head and the clients; holds .ray/auth_token
    dashboard: str  # http://127.0.0.1:<port>: the job submission address

    def env(self, **extra: str) -> dict[str, str]:
        return _client_env(self.home, RAY_AUTH_MODE="token", **extra)

    def ray(self, *args: str, env: dict | None = None, timeout: float = 120):
        return subprocess.run(
            [str(RAY), *args],
            cwd=REPO,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def jobs(self) -> dict[str, str]:
        """submission id -> status of every submitted job (`ray job list`, with the token)."""
        r = self.ray("job", "list", "--address", self.dashboard)
        assert r.returncode == 0, r.stdout + r.stderr
        out = {}
        for chunk in r.stdout.split("JobDetails(")[1:]:
            sid = re.search(r"submission_id='([^']+)'", chunk)
            status = re.search(r"status=<JobStatus\.(\w+)", chunk)
            if sid:
                out[sid.group(1)] = status.group(1) if status else "?"
        return out


# --- processes of this head only ----------------------------------------------------------


def head_processes(tmp: Path) -> dict[int, str]:
    """pid -> start time of every process of the head in `tmp`: by command line, environment
    marker, or descent from one of those. Never this test process or its ancestors."""
    tag = str(tmp)
    marker = f"{MARKER}={tag}".encode()
    return local_processes.matching_processes(lambda cmd, environ: tag in cmd or marker in environ)


def stop_head(tmp: Path) -> list[str]:
    """Stop the head in `tmp`: the raylet first, then the rest, then gcs_server; SIGKILL what
    outlives the grace (mer.testing.local_processes.stop_in_stages). Returns the command names of the
    processes that needed SIGKILL."""
    return local_processes.stop_in_stages(lambda: head_processes(tmp))


def start_head(tmp: Path, env: dict[str, str], attempts: int = 3) -> str:
    """`ray start --head` on 127.0.0.1; returns the dashboard (job submission) address.

    The user's command plus explicit free ports, so that other tests' Ray instances cannot
    collide with this one (a user's single head can keep the defaults). A port taken between
    choosing and binding it fails the start: what it left is stopped and it is tried again.
    """
    out = ""
    for _ in range(attempts):
        gcs, dash, client, agent_http, agent_grpc, env_agent, metrics = local_processes.free_ports(
            7
        )
        args = [
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            "--num-cpus=4",
            "--include-dashboard=true",
            f"--temp-dir={tmp / 'ray'}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={env_agent}",
            f"--metrics-export-port={metrics}",
            "--disable-usage-stats",
        ]
        r = subprocess.run(
            [str(RAY), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
        if r.returncode == 0 and head_processes(tmp):
            return f"http://127.0.0.1:{dash}"
        out = r.stdout + r.stderr
        stop_head(tmp)
        shutil.rmtree(tmp / "ray", ignore_errors=True)
    raise AssertionError(f"ray start --head failed {attempts} times; last output:\n{out}")


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 with token auth and a dashboard, started as a user would."""
    tmp = Path(tempfile.mkdtemp(prefix="mer-rj-", dir="/tmp"))
    home = tmp / "home"
    home.mkdir()
    env = _client_env(home, RAY_AUTH_MODE="token", **{MARKER: str(tmp)})
    # The raylet's worker start-up concurrency at 2: its default on a 2-core machine (the
    # smaller of cores and CPUs), set so that on any machine the job starts enough workers
    # (8, 4x) for the raylet's worker-pool warning, which must reach the run's log file and
    # not the job's output (docs/cluster.md starts a head at 16, where it does not come).
    env["RAY_worker_maximum_startup_concurrency"] = "2"
    try:
        r = subprocess.run(
            [str(RAY), "get-auth-token", "--generate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and (home / ".ray" / "auth_token").is_file(), r.stderr
        yield Head(tmp=tmp, home=home, dashboard=start_head(tmp, env))
    finally:
        t0 = time.time()
        killed = stop_head(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"\nray head stopped in {time.time() - t0:.0f} s; needed SIGKILL: {killed or 'none'}")


# --- tests --------------------------------------------------------------------------------


def submit_command(head: Head, root: Path, submission_id: str, *extra: str) -> list[str]:
    """The README's submit command (cwd: the repository root), `extra` job arguments after."""
    return [
        str(RAY),
        "job",
        "submit",
        "--address",
        head.dashboard,
        "--submission-id",
        submission_id,
        "--working-dir",
        ".",
        "--",
        "python",
        "jobs/pipeline.py",
        "--config",
        "configs/tiny.yaml",
        "--root",
        str(root),
        *extra,
    ]


def test_submit_without_valid_token_is_refused(ray_head, tmp_path):
    before = ray_head.jobs()
    bogus_home = tmp_path / "bogus-home"
    (bogus_home / ".ray").mkdir(parents=True)
    (bogus_home / ".ray" / "auth_token").write_text("0" * 64)
    attempts = {
        # A client that does not turn token mode on sends no token at all.
        "no-auth-mode": (_client_env(ray_head.home), "Authentication required"),
        "auth-disabled": (
            _client_env(ray_head.home, RAY_AUTH_MODE="disabled"),
            "Authentication required",
        ),
        "wrong-token-file": (
            _client_env(bogus_home, RAY_AUTH_MODE="token"),
            "Authentication failed",
        ),
        "wrong-token-env": (ray_head.env(RAY_AUTH_TOKEN="f" * 64), "Authentication failed"),
    }
    refused = {}
    for name, (env, expected) in attempts.items():
        sid = f"mer-refused-{name}-{uuid.uuid4().hex[:8]}"
        r = subprocess.run(
            submit_command(ray_head, tmp_path / "never", sid),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = r.stdout + r.stderr
        assert r.returncode != 0, f"{name}: submit was accepted:\n{out}"
        assert expected in out, f"{name}: expected {expected!r} in:\n{out}"
        refused[name] = sid
    # Listing jobs needs the token too; with it, none of the refused submissions exists.
    r = ray_head.ray("job", "list", "--address", ray_head.dashboard, env=_client_env(ray_head.home))
    assert r.returncode != 0 and "Authentication required" in r.stdout + r.stderr
    after = ray_head.jobs()
    assert after == before, f"jobs appeared after refused submissions: {after} vs {before}"
    assert not set(refused.values()) & set(after)
    assert not (tmp_path / "never").exists()


@dataclass
class Submitted:
    """The tiny pipeline, submitted once for the module's tests."""

    root: Path  # its run root
    sid: str  # submission id
    returncode: int  # of `ray job submit`
    output: str  # `ray job submit`'s output
    tracking_uri: str | None  # the MLflow server it logged to (tracking.mlflow_uri), if any


@pytest.fixture(scope="module")
def tracking_uri(request) -> str | None:
    """The session's MLflow server (tests/conftest.py) where there is one, else None: the
    pipeline is then submitted without tracking and the MLflow test skips."""
    try:
        return request.getfixturevalue("mlflow_server")
    except pytest.skip.Exception:
        return None


@pytest.fixture(scope="module")
def submitted(ray_head, tracking_uri, tmp_path_factory) -> Submitted:
    """configs/tiny.yaml submitted as the README shows, with `--set tracking.mlflow_uri=` the
    test server where there is one (tracking changes no result and no settings hash)."""
    tmp = tmp_path_factory.mktemp("submitted")
    root = tmp / "run"
    sid = f"mer-tiny-{uuid.uuid4().hex[:8]}"
    extra = ["--set", f"tracking.mlflow_uri={tracking_uri}"] if tracking_uri else []
    log = tmp / "submit.log"
    t0 = time.time()
    with open(log, "w") as f:
        try:
            r = subprocess.run(
                submit_command(ray_head, root, sid, *extra),
                cwd=REPO,
                env=ray_head.env(),
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=JOB_DEADLINE_S,
            )
        except subprocess.TimeoutExpired:
            ray_head.ray("job", "stop", "--address", ray_head.dashboard, sid)
            pytest.fail(f"job {sid} ran over {JOB_DEADLINE_S} s:\n{log.read_text()[-5000:]}")
    print(f"\nsubmitted pipeline finished in {time.time() - t0:.0f} s")
    return Submitted(root, sid, r.returncode, log.read_text(), tracking_uri)


def test_pipeline_as_a_submitted_job(ray_head, submitted, tmp_path):
    root, sid, submit_log = submitted.root, submitted.sid, submitted.output
    assert submitted.returncode == 0, f"ray job submit failed:\n{submit_log[-8000:]}"

    # The upload is the repository's own files: .venv/ and .git/ (Ray's default excludes)
    # and .gitignore'd paths (runs/, caches) stay behind. Checked where the head unpacked it.
    m = re.search(r"Uploading package gcs://(_ray_pkg_\w+)\.zip", submit_log)
    assert m, submit_log[:3000]
    unpacked = ray_head.tmp / "ray" / "session_latest" / "runtime_resources" / "working_dir_files"
    pkg = unpacked / m.group(1)
    assert (pkg / "jobs" / "pipeline.py").is_file() and (pkg / "configs" / "tiny.yaml").is_file()
    for left_behind in (".venv", ".git", "runs", ".pytest_cache"):
        assert not (pkg / left_behind).exists(), f"{left_behind} was uploaded"
    size = sum(f.stat().st_size for f in pkg.rglob("*") if f.is_file())
    assert size < 5 * 2**20, f"working dir upload is {size / 2**20:.1f} MiB"
    assert ray_head.jobs().get(sid) == "SUCCEEDED", ray_head.jobs()
    logs = ray_head.ray("job", "logs", "--address", ray_head.dashboard, sid).stdout
    (tmp_path / "job.log").write_text(logs)
    assert "experiment tiny (" in logs and "status: finished" in logs, logs[-5000:]
    assert "UF1" in logs and "baseline: linear" in logs, logs[-5000:]
    assert "Traceback" not in logs, logs[-5000:]  # a quiet console: progress and results
    # The raylet's worker-pool warning came (a head at start-up concurrency 2) and went to the
    # run's log file, none of it to the job's output: not even the last of a burst, which Ray
    # holds back and prints when the driver disconnects at exit (mer.cli.connect_ray).
    assert "maximum expected startup concurrency" not in logs, logs[-5000:]
    assert "maximum expected startup concurrency" not in submit_log, submit_log[-5000:]
    (run_log,) = (root / "logs").glob("run-*.log")
    assert "maximum expected startup concurrency" in run_log.read_text()
    m = re.search(r"query again with: python jobs/results\.py (\S+)", logs)
    assert m, logs[-5000:]
    exp_uri = m.group(1)
    assert exp_uri == str(root / "tune" / "tiny")

    # Query the finished experiment from a separate, ordinary process (no Ray, no token).
    env = _client_env(ray_head.home)

    def results(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "jobs/results.py", exp_uri, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    table = results()
    assert table.returncode == 0, table.stderr
    assert "experiment tiny" in table.stdout and "PARTIAL" not in table.stdout, table.stdout
    js = results("--format", "json")
    assert js.returncode == 0, js.stderr
    summary = json.loads(js.stdout)
    assert summary["experiment"] == "tiny" and summary["status"] == "finished"
    assert summary["folds_total"] == 4  # 4 synthetic subjects: 4 LOSO folds
    board = [r for r in summary["leaderboard"] if r["kind"] == "method"]
    assert len(board) == 2, board  # gamma in {0, 2} x freeze in {1}
    assert sorted(row["gamma"] for row in board) == [0.0, 2.0]
    for row in board:
        assert row["folds_done"] == row["folds_total"] == 4, row
        assert row["status"] == "complete" and row["clips"] == 12, row
        assert 0.0 <= row["uf1"] <= 1.0 and 0.0 <= row["uar"] <= 1.0, row
    assert {"majority", "linear"} <= {r["config_id"] for r in summary["leaderboard"]}
    assert not summary.get("partial")
    assert (root / "results" / "tiny" / "leaderboard.json").is_file()


def test_the_submitted_pipeline_logs_its_experiment_to_mlflow(submitted):
    """tracking.mlflow_uri set: the pipeline itself (not jobs/results.py --mlflow) logs the
    experiment as one parent run with a child per leaderboard entry, scores as written."""
    if submitted.tracking_uri is None:
        pytest.skip("no MLflow server (make mlflow-server)")
    from mlflow.tracking import MlflowClient

    assert submitted.returncode == 0, submitted.output[-8000:]
    uri = submitted.tracking_uri
    assert f"[results] logged to MLflow at {uri} (parent run " in submitted.output
    board = json.loads((submitted.root / "results" / "tiny" / "leaderboard.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name("mer/tiny")
    assert found is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([found.experiment_id], max_results=100)
    exp_uri = str(submitted.root / "tune" / "tiny")
    (parent,) = [r for r in runs if r.data.tags.get("mer.role") == "parent"]
    assert parent.data.tags["mer.uri"] == exp_uri
    assert parent.data.tags["mer.top"] == board["top"]["config_id"]
    children = {
        r.data.tags["mer.entry"]: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    rows = board["leaderboard"] + board["incomplete"]
    assert set(children) == {r["config_id"] for r in rows}
    assert {"majority", "linear"} <= set(children)
    for r in rows:
        m = children[r["config_id"]].data.metrics
        for key in ("uf1", "uf1_lo", "uf1_hi", "uar"):
            assert m[key] == pytest.approx(r[key]), (r["config_id"], key)
    listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.json", "leaderboard.csv", "report.html", "plots"} <= listed
