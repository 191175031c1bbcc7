"""The pipeline on several Ray nodes with S3 as the only shared storage.

A head that does no work (0 CPUs) and three worker nodes, each its own raylet with its own
working directory, HOME, TMPDIR and Ray temp dir (mer.testing.local_cluster): two decode nodes
carrying `decode`, as cluster.yaml's CPU worker type does, and one accelerator node carrying
`accelerator` in place of the GPU type's GPU. Data and run root are on a moto S3 server and
nowhere else. The tiny pipeline is submitted with `ray job submit --working-dir .` under
token authentication, with the settings a cluster run uses to keep each stage on its node
type (mer.testing.local_cluster.PLACEMENT). Then Ray's state API says where the work ran, every
node's disk is searched for files the run wrote outside S3, and the results are queried
from a fresh process through S3 alone.

Needs the `keyframes.resources` and `resources.worker_resources` settings. Measured on 2
shared cores: 3-4.5 min for the module (cluster start 20-55 s, the submitted pipeline
135-222 s, with the machine's load); marked slow. Linux only (reads /proc).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tests_paths import REPO

from mer.testing.local_cluster import ACCELERATOR, PLACEMENT, placement_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
]

JOB_DEADLINE_S = 900
KEYFRAME_TASK = "MapWorker(Map(_ChunkWorker)).submit"  # one Ray Data task per chunk
TRAIN_WORKER = "RayTrainWorker"


@pytest.fixture(scope="module")
def cluster(s3_endpoint):
    """mer.testing.local_cluster.placement_cluster; nodes inherit the AWS_* settings of s3_endpoint."""
    with placement_cluster() as c:
        yield c


def _named_in_checkout(*fragments: str) -> list[str]:
    """Paths in the checkout (not .venv/.git) whose name holds one of `fragments`: a run
    root or an "s3:" folder made by a local write of an S3 URI."""
    found = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in (".venv", ".git")]
        found += [os.path.join(folder, n) for n in dirs + files if any(f in n for f in fragments)]
    return found


def s3_keys(prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3")
    keys, token = [], None
    while True:
        kw = {"Bucket": "mer-test", "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def test_pipeline_on_several_nodes_with_s3_only(cluster):
    run = f"dist-{uuid.uuid4().hex[:8]}"
    root = f"s3://mer-test/{run}"
    overrides = [
        *PLACEMENT,
        "resources.max_concurrent=2",  # two runs at a time: both halves of the accelerator
    ]
    entrypoint = ["python", "jobs/pipeline.py", "--config", "configs/tiny.yaml", "--root", root]
    for o in overrides:
        entrypoint += ["--set", o]
    job = cluster.submit(entrypoint, f"mer-{run}")
    rc = job.wait(JOB_DEADLINE_S)
    elapsed = time.time() - job.started
    print(f"\nsubmitted pipeline finished in {elapsed:.0f} s (rc {rc})")
    assert rc == 0, job.text()[-8000:]
    assert cluster.job_status(job.id) == "SUCCEEDED"
    logs = cluster.job_logs(job.id)
    assert "experiment tiny (" in logs and "status: finished" in logs, logs[-5000:]

    # Where the work ran, from Ray's state API.
    names = cluster.node_names()
    tasks = cluster.state("tasks")
    actors = cluster.state("actors")
    chunk_nodes = [names[t["node_id"]] for t in tasks if t["name"] == KEYFRAME_TASK]
    # configs/tiny.yaml: 12 clips in chunks of 8, so two tasks, one per decode node.
    assert len(chunk_nodes) >= 2, sorted(chunk_nodes)  # a retry may add attempts
    assert set(chunk_nodes) == {"decode-1", "decode-2"}, sorted(chunk_nodes)
    trainers = [a for a in actors if a["class_name"] == TRAIN_WORKER]
    train_tasks = [t for t in tasks if t["name"] == f"{TRAIN_WORKER}.run_train_fn"]
    # Prior learning: 4 folds in 2 runs; search: 2 configurations: 4 trainers in all.
    assert len(trainers) >= 4 and len(train_tasks) >= 4, (trainers, train_tasks)
    assert {names[a["node_id"]] for a in trainers} == {"accel-1"}
    assert {names[t["node_id"]] for t in train_tasks} == {"accel-1"}
    for a in trainers:  # in a placement group: accelerator_group_<id>: 0.5, ...
        asked = {k.split("_group_")[0]: v for k, v in a["required_resources"].items()}
        assert asked.get(ACCELERATOR) == 0.5, a["required_resources"]

    # Nothing on any node's disk: every output went to S3.
    assert cluster.files_outside_storage() == {}
    print(f"Ray's own scratch files (not outputs): {cluster.ray_scratch_files()}")
    assert not _named_in_checkout(run, "s3:"), "a stage wrote into the checkout"
    keys = s3_keys(f"{run}/")
    for prefix in ("data/", "keyframes/", "pretrain/", "tune/tiny/", "results/tiny/", "logs/"):
        assert any(k.startswith(f"{run}/{prefix}") for k in keys), (prefix, keys[:50])
    assert f"{run}/results/tiny/leaderboard.json" in keys

    # The results, from a fresh process that reaches S3 only (no Ray, no token).
    env = cluster.client_env()
    env.pop("RAY_AUTH_MODE")
    r = subprocess.run(
        [sys.executable, "jobs/results.py", f"{root}/tune/tiny", "--format", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["experiment"] == "tiny" and summary["status"] == "finished"
    board = [row for row in summary["leaderboard"] if row["kind"] == "method"]
    assert len(board) == 2, board
    for row in board:
        assert row["folds_done"] == row["folds_total"] == 4, row
        assert row["status"] == "complete" and row["clips"] == 12, row
