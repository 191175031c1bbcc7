"""Autoscaling from zero, drawn: Ray's autoscaler starts decode nodes for the key-frame stage
and accelerator nodes for training, and removes them when idle.

    .venv/bin/python benchmarks/cluster_timeline.py      # ~6 min on 2 cores
    .venv/bin/python benchmarks/cluster_timeline.py --plot-only   # redraw from the JSON

The scenario of tests/test_autoscaling.py: a head with 0 CPUs running Ray's autoscaler with
the fake multi-node provider (mer.testing.fake_nodes; worker nodes are raylets on this machine),
node types from cluster.yaml at this machine's scale (a 1-CPU decode type with `decode`,
a 3-CPU accelerator type with `accelerator` in place of the GPU; both min 0, max 2), idle
timeout 0.3 min; S3 is a moto server. The tiny pipeline (one search configuration) is
submitted with the placement settings of a cluster run. Ray's node list gives each worker
node's type, start and end; the job's progress lines give the stages. Writes
benchmarks/cluster_timeline.json and benchmarks/cluster_timeline.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mer.testing.autoscaler_stand_in import (  # noqa: E402
    fake_autoscaling_config,
    node_timeline,
    stage_times,
    stand_in_node_types,
)
from mer.testing.local_cluster import PLACEMENT, LocalCluster  # noqa: E402
from mer.testing.local_processes import wait_until  # noqa: E402
from mer.testing.s3 import LocalS3  # noqa: E402

IDLE_TIMEOUT_MIN = 0.3
OUT = REPO / "benchmarks" / "cluster_timeline"
COLOURS = {"ray.worker.cpu": "tab:blue", "ray.worker.gpu": "tab:orange"}
LABELS = {"ray.worker.cpu": "decode (CPU type)", "ray.worker.gpu": "accelerator (GPU type)"}


def record() -> dict:
    import yaml

    server = LocalS3("mer-test").start()  # every node inherits its AWS_* settings
    types = stand_in_node_types(
        yaml.safe_load((REPO / "cluster.yaml").read_text()),
        {"ray.worker.cpu": 1, "ray.worker.gpu": 3},
    )
    cluster = LocalCluster()
    try:
        cluster.start_head(autoscaling_config=fake_autoscaling_config(types, IDLE_TIMEOUT_MIN))
        entry = ["python", "jobs/pipeline.py", "--config", "configs/tiny.yaml"]
        entry += ["--root", f"s3://mer-test/timeline-{uuid.uuid4().hex[:6]}"]
        for o in (
            *PLACEMENT,
            "keyframes.chunk_size=1",
            "resources.max_concurrent=2",
            "resources.folds_per_run=4",
            "search.space={gamma: [0.0], freeze: [1]}",
        ):
            entry += ["--set", o]
        job = cluster.submit(entry, f"timeline-{uuid.uuid4().hex[:6]}")
        if job.wait(1800) != 0:
            raise SystemExit(job.text()[-5000:])
        job_end = time.time()

        def idle() -> bool:
            nodes = cluster.state("nodes")
            return not [n for n in nodes if n["state"] == "ALIVE" and not n["is_head_node"]]

        wait_until(idle, timeout=300, interval=5)
        return {
            "command": "python jobs/pipeline.py --config configs/tiny.yaml --set "
            + " --set ".join(entry[entry.index("--set") + 1 :: 2]),
            "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
            "node_types": types,
            "submitted": job.started,
            "job_end": job_end,
            "stages": {k: {"start": a, "end": b} for k, (a, b) in stage_times(job).items()},
            "nodes": node_timeline(cluster.state("nodes"), types),
        }
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)
        server.close()


def plot(rec: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = rec["submitted"]
    workers = [n for n in rec["nodes"] if n["type"] in COLOURS]
    last = max([rec["job_end"], *(n["end"] or rec["job_end"] for n in workers)]) - t0 + 10
    fig, (gantt, count) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, height_ratios=[3, 2])
    for ax in (gantt, count):
        for i, s in enumerate(rec["stages"].values()):
            ax.axvspan(s["start"] - t0, s["end"] - t0, color="0.9" if i % 2 else "0.82", lw=0)
        ax.axvline(rec["job_end"] - t0, color="k", lw=1, ls="--")
    for stage, s in rec["stages"].items():
        gantt.text((s["start"] + s["end"]) / 2 - t0, len(workers) + 0.3, stage, ha="center")
    gantt.text(rec["job_end"] - t0, -0.9, " job ends", fontsize=8)
    for row, n in enumerate(workers):
        end = (n["end"] or rec["job_end"]) - t0
        gantt.barh(row, end - (n["start"] - t0), left=n["start"] - t0, color=COLOURS[n["type"]])
    gantt.set_yticks(range(len(workers)), [LABELS[n["type"]] for n in workers], fontsize=8)
    gantt.set_ylim(-1, len(workers) + 1)
    gantt.set_title(
        "Autoscaling from zero: worker nodes and pipeline stages\n"
        f"(Ray's fake multi-node provider, idle timeout {rec['idle_timeout_minutes']} min)",
        fontsize=10,
    )
    times = sorted(
        {0.0, last, *(n["start"] - t0 for n in workers)}
        | {(n["end"] or 0) - t0 for n in workers if n["end"]}
    )
    for kind, colour in COLOURS.items():
        alive = [
            sum(
                1
                for n in workers
                if n["type"] == kind and n["start"] - t0 <= t < ((n["end"] or 1e18) - t0)
            )
            for t in times
        ]
        count.step(times, alive, where="post", color=colour, label=LABELS[kind])
    count.set_ylabel("nodes alive")
    count.set_xlabel("seconds since `ray job submit`")
    count.legend(loc="upper right", fontsize=8)
    count.set_xlim(0, last)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plot-only", action="store_true", help="redraw from the JSON")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="redraw the stored JSON into --out (CI; tests/test_autoscaling.py runs the scenario)",
    )
    p.add_argument("--out", default=str(OUT), help="the figures' path, without suffix")
    args = p.parse_args()
    json_path, png_path = Path(args.out).with_suffix(".json"), Path(args.out).with_suffix(".png")
    if args.smoke:  # the scenario takes minutes; the drawing and the summary are checked here
        shutil.copyfile(OUT.with_suffix(".json"), json_path)
    elif not args.plot_only:
        json_path.write_text(json.dumps(record(), indent=1))
    rec = json.loads(json_path.read_text())
    plot(rec, png_path)
    t0 = rec["submitted"]
    for n in rec["nodes"]:
        end = f"{n['end'] - t0:6.1f}" if n["end"] else "  alive"
        print(f"{n['type']:16s} {n['start'] - t0:6.1f} .. {end}")
    print({k: (round(v["start"] - t0), round(v["end"] - t0)) for k, v in rec["stages"].items()})
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
