"""The pipeline on several Ray nodes with S3 as the only shared storage, and a node lost.

A head that does no work (0 CPUs) and three worker nodes, each its own raylet with its own
working directory, HOME, TMPDIR and Ray temp dir (mer.testing.local_cluster): two decode nodes
carrying `decode`, as cluster.yaml's CPU worker type does, and one accelerator node carrying
`accelerator` in place of the GPU type's GPU. Data and run root are on a moto S3 server and
nowhere else. The tiny pipeline is submitted with `ray job submit --working-dir .` under
token authentication, with the settings a cluster run uses to keep each stage on its node
type (mer.testing.local_cluster.PLACEMENT). Then Ray's state API says where the work ran, every
node's disk is searched for files the run wrote outside S3, and the results are queried
from a fresh process through S3 alone.

Then, on the same cluster (one cluster start for the module), a worker node is lost as a
spot interruption would lose it: its raylet and every process on it killed (SIGKILL), once
during the key-frame stage and once during training. After each kill a replacement node of
the same type joins, as the autoscaler would start one. Each job is submitted with
`ray job submit` under token authentication and must succeed:

- key frames: Ray Data restarts the lost actor on the replacement node and reruns its
  chunk; every clip is written exactly once (a chunk's part has one name, so a rerun
  overwrites it) and the table lists every part.
- training: Ray Train restarts the lost worker (and Tune the trial, if its node was the
  lost one) on the replacement node from the last epoch checkpoint on S3: the prior's
  history has every epoch exactly once, the first ones by the killed worker, the rest by
  a worker on the replacement node.

Needs the `keyframes.resources` and `resources.worker_resources` settings (and Tune's
FailureConfig from resources.max_failures, for a trial that lived on the lost node).
Measured on 2 shared cores: 3-4.5 min for the pipeline (cluster start 20-55 s), 3.5-4.5 min
for the two node losses; marked slow. Linux only (reads /proc).
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
from tests_paths import REPO, wait_until

from mer.testing.local_cluster import ACCELERATOR, DECODE, PLACEMENT, placement_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
]

JOB_DEADLINE_S = 900
CHUNK_ACTOR = "MapWorker(Map(_ChunkWorker))"
SNAPSHOT = "/checkpoint_manager_snapshot.json"  # Ray Train's list of registered checkpoints
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

    pages = boto3.client("s3").get_paginator("list_objects_v2")
    return [
        o["Key"]
        for p in pages.paginate(Bucket="mer-test", Prefix=prefix)
        for o in p.get("Contents", [])
    ]


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


# ---------------------------------------------------------------- node loss, same cluster


def entrypoint(job: str, root: str, *overrides: str, extra: tuple[str, ...] = ()) -> list[str]:
    cmd = ["python", f"jobs/{job}.py", "--config", "configs/tiny.yaml", "--root", root, *extra]
    for o in (*PLACEMENT, *overrides):
        cmd += ["--set", o]
    return cmd


def replace_node_and_finish(
    cluster, job, lost: str, new: str, cpus: int, resources: dict, what: str
):
    """A spot interruption: `lost` killed with everything on it, `new` of the same type joins
    (as the autoscaler would start one); the job must still succeed."""
    killed_at = time.time()
    cluster.kill_node(lost)
    cluster.add_node(new, cpus=cpus, resources=resources)
    print(f"\nkilled {lost} {what}; {new} joined")
    rc = job.wait(JOB_DEADLINE_S)
    print(f"job finished {time.time() - killed_at:.0f} s after the kill")
    assert rc == 0, job.text()[-8000:]
    assert cluster.job_status(job.id) == "SUCCEEDED"


def test_decode_node_lost_during_the_keyframe_stage(cluster):
    from mer import storage

    run = f"kf-{uuid.uuid4().hex[:8]}"
    clips = 24
    job = cluster.submit(
        entrypoint(
            "preprocess",
            f"s3://mer-test/{run}",
            "keyframes.chunk_size=1",
            "data.synthetic.clips_per_subject=6",  # 4 subjects x 6: 24 clips, 24 chunks
        ),
        f"mer-{run}",
    )

    def markers() -> list[str]:
        return [k for k in s3_keys(f"{run}/keyframes/") if "/_chunks/" in k]

    # Both decode nodes hold a key-frame actor (one `decode` slot each): once chunks are
    # being written, decode-1 is mid-stage.
    started = wait_until(lambda: len(markers()) >= 2 or job.proc.poll() is not None, 300, 0.3)
    done_before = len(markers())
    assert started and done_before < clips, job.text()[-5000:]
    replace_node_and_finish(
        cluster,
        job,
        "decode-1",
        "decode-3",
        1,
        {DECODE: 1},
        f"with {done_before}/{clips} chunks written",
    )

    # Every clip exactly once: over every part in the folder, and as the table lists them.
    (meta_key,) = [k for k in s3_keys(f"{run}/keyframes/") if k.endswith("/_meta.json")]
    folder = f"s3://mer-test/{meta_key.rsplit('/', 1)[0]}"
    meta = storage.read_json(f"{folder}/_meta.json")
    parts = sorted(n for n in storage.listdir(folder) if n.startswith("part-"))
    assert sorted(meta["parts"]) == parts and len(parts) == clips
    names = []
    for part in parts:
        table = storage.read_parquet(f"{folder}/{part}", columns=["subject", "clip"])
        names += [f"{s}/{c}" for s, c in zip(*table.to_pydict().values(), strict=True)]
    assert len(names) == len(set(names)) == clips
    assert meta["counts"]["written"] == clips and meta["counts"]["rejected"] == 0

    # Ray's view: the actor on decode-1 died with its node; the stage ended elsewhere.
    where = cluster.node_names()
    actors = [a for a in cluster.state("actors") if a["class_name"] == CHUNK_ACTOR]
    print(
        "key-frame actors:",
        [(where.get(a["node_id"]), a["state"], a["num_restarts"]) for a in actors],
    )
    tasks = [t for t in cluster.state("tasks") if t["name"] == f"{CHUNK_ACTOR}.submit"]
    by_node = {}
    for t in tasks:
        by_node.setdefault(where.get(t["node_id"]), []).append(t["state"])
    print("chunk tasks per node:", {n: sorted(s) for n, s in by_node.items()})
    assert "decode-1" in by_node, by_node  # it was working when it was lost
    assert set(by_node) <= {"decode-1", "decode-2", "decode-3"}, by_node
    finished = [
        t for t in tasks if t["state"] == "FINISHED" and where.get(t["node_id"]) != "decode-1"
    ]
    assert len(finished) >= clips - done_before - 1, by_node


def test_accelerator_node_lost_during_training(cluster):
    from mer import config, layout, storage
    from mer.testing.fakes import write_random_keyframes

    run = f"tr-{uuid.uuid4().hex[:8]}"
    root = f"s3://mer-test/{run}"
    epochs = 6
    overrides = [f"pretrain.epochs={epochs}", "pretrain.pairs_per_epoch=96"]
    cfg = config.load(str(REPO / "configs" / "tiny.yaml"), [f"root={root}", *PLACEMENT, *overrides])
    # A finished key-frame table where this config looks for one: training only.
    write_random_keyframes(layout.keyframes_uri(cfg), subjects=4, clips=3, k=8, s=32)
    job = cluster.submit(
        entrypoint("pretrain", root, *overrides, extra=("--folds", "fake/s00")), f"mer-{run}"
    )

    def committed() -> int:
        """Epoch checkpoints Ray Train has registered (its snapshot on S3): what a restart
        resumes from. A checkpoint folder alone may not be registered yet."""
        keys = [k for k in s3_keys(f"{run}/pretrain/_runs/") if k.endswith(SNAPSHOT)]
        if not keys:
            return 0
        snapshot = json.loads(storage.read_bytes(f"s3://mer-test/{keys[0]}"))
        return len(snapshot.get("checkpoint_results") or [])

    def trainer() -> dict | None:
        alive = [
            a
            for a in cluster.state("actors")
            if a["class_name"] == "RayTrainWorker" and a["state"] == "ALIVE"
        ]
        return alive[0] if alive else None

    assert wait_until(lambda: trainer() or job.proc.poll() is not None, 400, 1), job.text()
    worker = trainer()
    assert worker and cluster.node_names()[worker["node_id"]] == "accel-1", worker
    killed_pid = worker["pid"]
    started = wait_until(lambda: committed() >= 1 or job.proc.poll() is not None, 400, 0.5)
    seen = committed()
    assert started and job.proc.poll() is None and seen < epochs, job.text()[-5000:]
    replace_node_and_finish(
        cluster,
        job,
        "accel-1",
        "accel-2",
        3,
        {ACCELERATOR: 1},
        f"(training worker pid {killed_pid}) after {seen} epoch checkpoint(s)",
    )

    (done_key,) = [k for k in s3_keys(f"{run}/pretrain/") if k.endswith("/_done.json")]
    history = json.loads(storage.read_bytes(f"s3://mer-test/{done_key}"))["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))  # none lost, none twice
    pids = [h["worker_pid"] for h in history]
    assert any(p != killed_pid for p in pids), f"training ended before the kill: {pids}"
    before = pids.index(next(p for p in pids if p != killed_pid))  # epochs the killed worker did
    assert before >= seen >= 1 and set(pids[:before]) == {killed_pid}, pids
    assert killed_pid not in pids[before:], pids
    # The rest ran on the replacement node, resumed from the checkpoint of epoch `before`.
    where = cluster.node_names()
    after = {
        where.get(a["node_id"])
        for a in cluster.state("actors")
        if a["class_name"] == "RayTrainWorker" and a["pid"] in pids[before:]
    }
    assert after == {"accel-2"}, after
    drivers = [
        (a["class_name"], where.get(a["node_id"]), a["state"])
        for a in cluster.state("actors")
        if a["class_name"].endswith(("ImplicitFunc", "TrainController"))
    ]
    print(f"Tune trial and Train controller actors (class, node, state): {drivers}")
