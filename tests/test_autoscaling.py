"""Autoscaling from zero, watched: Ray's autoscaler starts decode nodes for the key-frame
stage and accelerator nodes for training, and removes every worker node once idle.

The head runs the autoscaler with Ray's fake multi-node provider (worker nodes are raylets
on this machine, each in its own folders: mer.testing.fake_nodes), started by pid as in
mer.testing.local_cluster, never with ray.cluster_utils.AutoscalingCluster (its start and shutdown
run `ray stop --force`, which ends every Ray of the user on the machine). The node types
are cluster.yaml's worker types at this machine's scale (mer.testing.autoscaler_stand_in.
stand_in_node_types: a 1-CPU decode type carrying `decode`, a 3-CPU accelerator type
carrying `accelerator` in place of the GPU), both from 0, idle timeout 0.3 min. The tiny
pipeline (one search configuration) is submitted with the placement settings of a cluster
run; the node timeline (type, start, end) and the stages are written as JSON
(benchmarks/cluster_timeline.py draws the same run: benchmarks/cluster.md).

Needs the `keyframes.resources` and `resources.worker_resources` settings. Measured on 2
shared cores: 3-6 min (head 12-46 s, the job 2.5-4.5 min with node start-ups of 5-35 s
each, scale-down ~10 s after the job); marked slow. Linux only (reads /proc).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml
from tests_paths import REPO, wait_until

from mer.testing.autoscaler_stand_in import (
    fake_autoscaling_config,
    node_timeline,
    stage_times,
    stand_in_node_types,
)
from mer.testing.local_cluster import PLACEMENT, LocalCluster, removed_on_exit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
]

IDLE_TIMEOUT_MIN = 0.3
CPU_TYPE, GPU_TYPE = "ray.worker.cpu", "ray.worker.gpu"
JOB_DEADLINE_S = 900
SCALE_DOWN_S = IDLE_TIMEOUT_MIN * 60 + 90  # idle timeout, autoscaler rounds, node stop


@pytest.fixture(scope="module")
def node_types() -> dict:
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    return stand_in_node_types(cluster, {CPU_TYPE: 1, GPU_TYPE: 3})


@pytest.fixture(scope="module")
def autoscaling_cluster(s3_endpoint, node_types):
    with removed_on_exit(LocalCluster()) as c:
        t0 = time.time()
        c.start_head(autoscaling_config=fake_autoscaling_config(node_types, IDLE_TIMEOUT_MIN))
        print(f"\nautoscaling head up in {time.time() - t0:.0f} s")
        yield c


def test_pipeline_scales_decode_and_accelerator_nodes_from_zero_and_back(
    autoscaling_cluster, node_types, tmp_path
):
    c = autoscaling_cluster
    workers = [n for n in c.state("nodes") if not n["is_head_node"]]
    assert workers == [], workers  # from zero
    run = f"as-{uuid.uuid4().hex[:8]}"
    entrypoint = ["python", "jobs/pipeline.py", "--config", "configs/tiny.yaml"]
    entrypoint += ["--root", f"s3://mer-test/{run}"]
    overrides = [
        *PLACEMENT,
        "keyframes.chunk_size=1",
        "resources.max_concurrent=2",
        "resources.folds_per_run=4",  # prior learning: one run of the 4 folds
        "search.space={gamma: [0.0], freeze: [1]}",  # one configuration
    ]
    for o in overrides:
        entrypoint += ["--set", o]
    job = c.submit(entrypoint, f"mer-{run}")
    rc = job.wait(JOB_DEADLINE_S)
    job_end = time.time()
    assert rc == 0, job.text()[-8000:]
    assert c.job_status(job.id) == "SUCCEEDED"
    stages = stage_times(job)
    assert set(stages) == {"keyframes", "pretrain", "search"}, job.text()[-5000:]

    def no_worker_alive() -> bool:
        return not [n for n in c.state("nodes") if n["state"] == "ALIVE" and not n["is_head_node"]]

    assert wait_until(no_worker_alive, timeout=SCALE_DOWN_S, interval=5), c.state("nodes")
    scaled_down = time.time()
    nodes = c.state("nodes")
    timeline = node_timeline(nodes, node_types)
    record = {
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "node_types": node_types,
        "submitted": job.started,
        "job_end": job_end,
        "all_workers_gone_by": scaled_down,
        "stages": {k: {"start": a, "end": b} for k, (a, b) in stages.items()},
        "nodes": timeline,
    }
    out = tmp_path / "timeline.json"
    out.write_text(json.dumps(record, indent=1))
    t0 = job.started
    print(f"\njob {job_end - t0:.0f} s, all worker nodes gone {scaled_down - job_end:.0f} s later")
    for r in timeline:
        end = f"{r['end'] - t0:6.1f}" if r["end"] else "  alive"
        print(f"  {r['type']:15s} {r['start'] - t0:6.1f} .. {end}")
    print(f"  stages: { {k: (round(a - t0), round(b - t0)) for k, (a, b) in stages.items()} }")

    workers = [r for r in timeline if r["type"] != "head"]
    assert all(r["type"] in (CPU_TYPE, GPU_TYPE) for r in workers), workers
    decode = [r for r in workers if r["type"] == CPU_TYPE]
    accel = [r for r in workers if r["type"] == GPU_TYPE]
    kf_start, kf_end = stages["keyframes"]
    # Two key-frame actors, one decode slot per node: two decode nodes for that stage.
    assert len([r for r in decode if t0 < r["start"] < kf_end]) >= 2, timeline
    # Accelerator nodes only once training asked for them.
    assert accel and all(r["start"] > kf_end for r in accel), (timeline, stages)
    assert all(r["state"] == "DEAD" and r["end"] for r in workers), timeline

    # Where the work ran (state API): decoding on decode nodes, training on accelerators.
    kind = {r["node_id"]: r["type"] for r in timeline}
    tasks = c.state("tasks")
    chunks = [
        kind[t["node_id"]] for t in tasks if t["name"] == "MapWorker(Map(_ChunkWorker)).submit"
    ]
    assert len(chunks) >= 12 and set(chunks) == {CPU_TYPE}, chunks
    trainers = [
        kind[a["node_id"]] for a in c.state("actors") if a["class_name"] == "RayTrainWorker"
    ]
    assert len(trainers) >= 2 and set(trainers) == {GPU_TYPE}, trainers
