"""The pipeline on a multi-node Ray cluster on this machine, with S3 as the only storage.

    .venv/bin/python scripts/multinode_demo.py                        # configs/tiny.yaml
    .venv/bin/python scripts/multinode_demo.py --keep                 # leave it up (Ctrl-C)
    .venv/bin/python scripts/multinode_demo.py --config configs/demo.yaml

What it does (tests/test_distributed.py checks the same, with assertions):
1. starts a local S3 endpoint (moto server) with a bucket `mer-demo`;
2. starts a Ray cluster of separate raylets (mer.testing.local_cluster), each node in its own
   folder under /tmp/mer-c-*/ with its own working dir, HOME, TMPDIR and Ray temp dir:
   a head with 0 CPUs (job driver, GCS, dashboard), decode-1 and decode-2 (1 CPU and one
   `decode` slot each: cluster.yaml's CPU type) and accel-1 (3 CPUs and one
   `accelerator`, standing in for the GPU type's GPU). Token authentication is on;
3. submits `jobs/pipeline.py --root s3://mer-demo/run` with `ray job submit --working-dir .`
   and the settings that keep each stage on its node type (mer.testing.local_cluster.PLACEMENT);
4. prints where the key-frame tasks and the training workers ran (Ray's state API), the
   files the run left on the nodes' disks (none expected) and the leaderboard, queried
   from a fresh process through S3;
5. stops only the processes it started (by pid; never `ray stop`).

Takes about 3-5 minutes with configs/tiny.yaml on 2 cores. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mer.testing.local_cluster import PLACEMENT, LocalCluster, placement_cluster  # noqa: E402
from mer.testing.s3 import LocalS3  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--keep", action="store_true", help="keep the cluster up until Ctrl-C")
    args = p.parse_args()

    server = LocalS3("mer-demo").start()  # every node inherits its AWS_* settings
    try:
        with placement_cluster() as cluster:
            run(cluster, args)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def run(cluster: LocalCluster, args: argparse.Namespace) -> None:
    print(f"dashboard: {cluster.dashboard} (token: {cluster.client_home}/.ray/auth_token)")
    root = f"s3://mer-demo/run-{uuid.uuid4().hex[:6]}"
    entry = ["python", "jobs/pipeline.py", "--config", args.config, "--root", root]
    for o in (*PLACEMENT, "keyframes.chunk_size=1"):
        entry += ["--set", o]
    print("$ ray job submit --working-dir . --", " ".join(entry))
    job = cluster.submit(entry, f"mer-demo-{uuid.uuid4().hex[:6]}")
    for _, line in iter_lines(job):
        if line.startswith("["):
            print("  ", line)
    rc = job.wait(3600)
    print(f"job {cluster.job_status(job.id)} in {time.time() - job.started:.0f} s")
    if rc != 0:
        print(job.text()[-5000:])
        return

    names = cluster.node_names()
    tasks = cluster.state("tasks")
    actors = cluster.state("actors")
    chunks = Counter(
        names[t["node_id"]] for t in tasks if t["name"] == "MapWorker(Map(_ChunkWorker)).submit"
    )
    trainers = Counter(names[a["node_id"]] for a in actors if a["class_name"] == "RayTrainWorker")
    print(f"key-frame tasks per node (state API): {dict(chunks)}")
    print(f"training workers per node (state API): {dict(trainers)}")
    print(f"files the run wrote on the nodes' disks: {cluster.files_outside_storage() or 'none'}")

    env = cluster.client_env()
    env.pop("RAY_AUTH_MODE")
    print(f"$ python jobs/results.py {root}/tune/<experiment>   # a fresh process, S3 only")
    exp = next(line for _, line in job.lines if line.startswith("query again with:"))
    subprocess.run([sys.executable, *exp.split()[4:]], cwd=REPO, env=env, check=False)
    if args.keep:
        print("cluster kept up; Ctrl-C stops it")
        while True:
            time.sleep(3600)


def iter_lines(job):
    """The job's output lines as they arrive, until `ray job submit` exits."""
    seen = 0
    while True:
        lines = job.lines[seen:]
        seen += len(lines)
        yield from lines
        if job.proc.poll() is not None and seen == len(job.lines):
            return
        time.sleep(0.5)


if __name__ == "__main__":
    main()
