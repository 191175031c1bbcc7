"""Key frames decoded straight from S3: the memory of a decode node, and nothing on its disk.

    .venv/bin/python benchmarks/s3_streaming.py                    # 300 videos and 60 frame folders
    .venv/bin/python benchmarks/s3_streaming.py --videos 60 --folders 0   # quicker

For each dataset (synthetic clips of CASME II's size, 340 x 280 px, 60-100 frames, as
MPEG-4 videos or as JPEG frame folders) a moto S3 server holds the data and the run root,
and a mer.testing.local_cluster cluster runs the key-frame stage: a head with 0 CPUs and two decode
nodes of 1 CPU, each its own raylet with its own HOME, TMPDIR and Ray temp dir.
`jobs/preprocess.py` is submitted with `ray job submit`; its driver (on the head) generates
the data onto S3, then two key-frame actors, one per decode node, read each clip's objects
from S3 into memory and decode them there (mer.keyframes.video: a video's bytes go to decord as a
file-like object, a folder's frames are fetched concurrently and decoded one by one).

While the job runs, every process of each decode node (raylet, agents, the key-frame actor
and its decoder helper) is sampled every 0.25 s from /proc: the node's memory is the sum of
their resident sets (VmRSS), and each process's peak is its VmHWM. After the job, the
nodes' working directories, HOMEs and TMPDIRs are listed (mer.testing.local_cluster.
LocalCluster.files_outside_storage). Figures go to benchmarks/s3_streaming.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mer.testing.local_cluster import DECODE, LocalCluster  # noqa: E402
from mer.testing.local_processes import command_name, processes  # noqa: E402
from mer.testing.s3 import LocalS3  # noqa: E402

SIZE = [280, 340]  # height, width: CASME II's face crops
FRAMES = [60, 100]


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes (empty if it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _label(pid: int) -> str:
    """key-frame actor, decoder (its helper process: mer.keyframes.decoder), or the command."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    if b"ChunkWorker" in cmd:
        return "key-frame actor"
    if b"mer.keyframes.decoder" in cmd:
        return "decoder"
    return command_name(pid)


class NodeSampler(threading.Thread):
    """Samples the processes of some nodes of a LocalCluster until stopped."""

    def __init__(self, cluster: LocalCluster, nodes: list[str], interval: float = 0.25):
        super().__init__(daemon=True)
        self.cluster, self.nodes, self.interval = cluster, nodes, interval
        self.peak_node = dict.fromkeys(nodes, 0)  # peak of the summed VmRSS
        self.peak_process: dict[tuple[str, int], tuple[str, int]] = {}  # -> (name, VmHWM)
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for node in self.nodes:
                total = 0
                for pid in processes(self.cluster.folder, node):
                    st = _status(pid)
                    total += st.get("VmRSS", 0)
                    key = (node, pid)
                    name, hwm = self.peak_process.get(key, ("", 0))
                    if name not in ("key-frame actor", "decoder"):
                        name = _label(pid)
                    self.peak_process[key] = (name, max(hwm, st.get("VmHWM", 0)))
                self.peak_node[node] = max(self.peak_node[node], total)
            self.stop_event.wait(self.interval)


def run_dataset(cluster: LocalCluster, layout: str, clips: int) -> dict:
    import boto3

    run = f"stream-{layout}-{clips}-{uuid.uuid4().hex[:6]}"
    subjects = min(10, clips)
    entry = ["python", "jobs/preprocess.py", "--config", "configs/tiny.yaml"]
    entry += ["--root", f"s3://mer-test/{run}"]
    for o in (
        f"data.synthetic.subjects={subjects}",
        f"data.synthetic.clips_per_subject={-(-clips // subjects)}",
        f"data.synthetic.layout={layout}",
        f"data.synthetic.size={SIZE}",
        f"data.synthetic.frames={FRAMES}",
        "keyframes.chunk_size=16",
    ):
        entry += ["--set", o]
    sampler = NodeSampler(cluster, ["decode-1", "decode-2"])
    sampler.start()
    job = cluster.submit(entry, f"mer-{run}")
    rc = job.wait(7200)
    sampler.stop_event.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(job.text()[-5000:])
    s3 = boto3.client("s3")
    sizes = [
        o["Size"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket="mer-test", Prefix=f"{run}/data/"
        )
        for o in page.get("Contents", [])
    ]
    kf_line = next(line for _, line in job.lines if line.startswith("[keyframes] done"))
    peaks = sampler.peak_process.values()
    actor = max((hwm for name, hwm in peaks if name == "key-frame actor"), default=0)
    decoder = max((hwm for name, hwm in peaks if name == "decoder"), default=0)
    n_clips = subjects * -(-clips // subjects)
    return {
        "layout": layout,
        "clips": n_clips,
        "dataset_bytes": sum(sizes),
        "largest_object_bytes": max(sizes),
        "decoded_clip_bytes_max": FRAMES[1] * SIZE[0] * SIZE[1] * 3,
        "keyframes_line": kf_line,
        "peak_node_rss_bytes": sampler.peak_node,
        "peak_process_hwm_bytes": {
            f"{node}:{name}:{pid}": hwm for (node, pid), (name, hwm) in sampler.peak_process.items()
        },
        "peak_keyframe_actor_hwm_bytes": actor,
        "peak_decoder_hwm_bytes": decoder,
        "files_outside_storage": cluster.files_outside_storage(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, nargs="*", default=[60, 300])
    p.add_argument("--folders", type=int, nargs="*", default=[60])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "s3_streaming.json"))
    p.add_argument("--smoke", action="store_true", help="2 videos, no folders: quick (CI)")
    args = p.parse_args()
    if args.smoke:  # the same cluster and job on 2 clips: checks the script, measures nothing
        args.videos, args.folders = [2], []

    server = LocalS3("mer-test").start()  # every node inherits its AWS_* settings
    cluster = LocalCluster()
    results = []
    try:
        cluster.start_head()
        cluster.add_node("decode-1", cpus=1, resources={DECODE: 1})
        cluster.add_node("decode-2", cpus=1, resources={DECODE: 1})
        for layout, counts in (("video", args.videos), ("casme2", args.folders)):
            for n in counts:
                t0 = time.time()
                r = run_dataset(cluster, layout, n)
                r["seconds"] = round(time.time() - t0, 1)
                results.append(r)
                mib = {k: round(v / 2**20) for k, v in r["peak_node_rss_bytes"].items()}
                print(
                    f"{layout} x {r['clips']}: data {r['dataset_bytes'] / 2**20:.0f} MiB on S3; "
                    f"peak node RSS {mib} MiB; key-frame actor peak "
                    f"{r['peak_keyframe_actor_hwm_bytes'] / 2**20:.0f} MiB, its decoder "
                    f"{r['peak_decoder_hwm_bytes'] / 2**20:.0f} MiB; "
                    f"files outside S3: {r['files_outside_storage'] or 'none'}",
                    flush=True,
                )
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)
        server.close()
    Path(args.out).write_text(
        json.dumps({"size": SIZE, "frames": FRAMES, "runs": results}, indent=1)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
