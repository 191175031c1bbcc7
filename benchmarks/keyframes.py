"""Key-frame stage throughput: decode only vs full key-frame construction vs the Ray Data stage.

    .venv/bin/python benchmarks/keyframes.py      # table on stdout, figures in benchmarks/keyframes.json

One run, on one synthetic dataset (mer.datasets.synthetic.generator.generate, CASME II layout: JPEG
frame folders, default frame size 340x280, 16 subjects x 16 clips = 256, about CASME II's
255; seed 0), measures clips/s for:
- decode: `mer.keyframes.video.read_clip` over each clip's onset..offset at full size, in this process;
- construction: `mer.keyframes.clip_records.build_record` with the default `keyframes` config (decode at
  the reduced scale it picks, motion curve, registration, `build_keyframes`), in this
  process, once with OpenCV's default thread count and once with `cv2.setNumThreads(1)`
  (what one core does); then, to show where the time goes, with full-size decoding (the
  reduced-scale decode switched off here, in the benchmark only), with registration by
  phase correlation, with stabilize off and with motion "diff" (none is the default);
- the Ray Data stage: `build_keyframes_dataset` with keyframes.concurrency 1 and 2 (that
  many Ray Data actors, each running OpenCV on one thread), each on a fresh output root,
  Ray started here with num_cpus=2. chunk_size 8: 256 clips make 32 chunks, so two actors
  stay busy to the end. Timed from the call to its return (actor start-up, Parquet parts,
  markers and `_meta.json` included), after one untimed warm-up build, so Ray's own
  start-up is left out.
Each in-process figure is the best of --rounds passes; the Ray runs go 1, 2, 2, 1 (--rounds
2) and each concurrency keeps its best, so slow drift of the machine's load falls on both.
Wall-clock and this process's CPU time are both recorded; `uptime` before and after.
Before the Ray runs and after the last, `machine_parallelism` times two pure-Python jobs in
two processes against one job in one: 2.0 on an idle 2-core machine, less while other work
holds a core. On a shared machine that figure bounds the concurrency-2 gain.
Each Ray run also records where its time went (`time_split`: actor start-up, the chunks'
build / Arrow / Parquet / marker steps, the rest idle or Ray Data's) and Ray Data's stats.
Targets (issue 37): construction / decode >= 0.75; Ray concurrency 2 / 1 >= 1.7 (or >= 0.9 x
the measured two-process parallelism when that is lower); Ray concurrency 1 / construction on
one OpenCV thread >= 0.9.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# Targets (issue 37): construction / decode; Ray concurrency 2 / 1 (or 0.9 x the machine's
# measured two-process parallelism where that is lower); Ray concurrency 1 / in-process
# construction on one OpenCV thread.
TARGET_CONSTRUCTION_RATIO = 0.75
TARGET_SCALING = 1.7
TARGET_RAY_OVER_PROCESS = 0.9
SMOKE_HELP = "tiny sizes that run in seconds (CI checks the script with it; pass --out too)"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _spin(n: int) -> int:
    x = 0
    for i in range(n):
        x += i
    return x


def machine_parallelism(seconds: float = 1.0) -> float:
    """How much faster two CPU-bound processes finish two jobs than one process does.

    2.0 on an idle 2-core machine; less when other work holds the cores. It bounds what the
    Ray Data stage can gain from concurrency 2 at the time of measurement.
    """
    from concurrent.futures import ProcessPoolExecutor

    n = 1_000_000
    t = time.perf_counter()
    _spin(n)
    n = int(n * seconds / (time.perf_counter() - t))
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_spin, [1000, 1000]))  # start both workers
        t = time.perf_counter()
        pool.submit(_spin, n).result()
        one = time.perf_counter() - t
        t = time.perf_counter()
        list(pool.map(_spin, [n, n]))
        two = time.perf_counter() - t
    return round(2 * one / two, 3)


def timed_pass(fn, rows: list[dict]) -> dict:
    """Run fn(row) over every row; wall and CPU seconds, clips/s on both clocks."""
    w0, c0 = time.perf_counter(), time.process_time()
    frames = sum(fn(r) for r in rows)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "clips_per_s": round(len(rows) / wall, 2),
        "clips_per_cpu_s": round(len(rows) / cpu, 2),
        "frames": int(frames),
    }


def time_split(profile: dict, t0: float, wall: float, actors: int) -> dict:
    """Where a Ray build's wall time went, from its chunks' own timings (mer.keyframes.preprocess):
    actor start-up (call to each actor's first readiness), the chunk steps summed over
    actors, and the rest of the actors' time (idle: between chunks, Ray Data's own work,
    markers to _meta.json), in actor-seconds and as shares of actors x wall."""
    chunks = profile["chunks"]
    ready = sorted({c["actor_ready"] for c in chunks})
    steps = {k: sum(c["steps"][k] for c in chunks) for k in chunks[0]["steps"]}
    startup = sum(r - t0 for r in ready) + (actors - len(ready)) * wall
    busy = sum(c["seconds"] for c in chunks)
    total = actors * wall
    split = {"actor_startup": startup, **steps, "idle_and_ray": total - startup - busy}
    stats = profile["ray_data_stats"]
    return {
        "actor_seconds": {k: round(v, 3) for k, v in split.items()},
        "shares": {k: round(v / total, 3) for k, v in split.items()},
        "first_chunk_after_s": round(min(c["started"] for c in chunks) - t0, 3),
        "ray_data_stats": [line.strip() for line in stats.splitlines() if "wall time" in line],
    }


def best(passes: list[dict]) -> dict:
    return {
        **max(passes, key=lambda p: p["clips_per_s"]),
        "all_clips_per_s": [p["clips_per_s"] for p in passes],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/mer-bench-keyframes", help="scratch folder (replaced)")
    ap.add_argument("--subjects", type=int, default=16)
    ap.add_argument("--clips", type=int, default=16, help="clips per subject")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=8)
    ap.add_argument("--out", default=str(HERE / "keyframes.json"))
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:  # 4 clips, one round: checks that the script runs, measures nothing
        args.subjects, args.clips, args.rounds, args.chunk_size = 2, 2, 1, 2

    import cv2

    from mer import config
    from mer.datasets import load_manifest
    from mer.datasets.synthetic.generator import generate
    from mer.keyframes.clip_records import build_record
    from mer.keyframes.preprocess import build_keyframes_dataset, manifest_rows
    from mer.keyframes.settings import keyframe_settings
    from mer.keyframes.video import read_clip

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    load_before = uptime()
    print(f"load before: {load_before}", flush=True)
    summary = generate(str(work / "data"), subjects=args.subjects, clips_per_subject=args.clips)
    manifest = load_manifest("synthetic", str(work / "data"))
    rows = manifest_rows(manifest)
    print(
        f"{len(rows)} clips, {summary['frames_written']} frames written, "
        f"{summary['size'][0]}x{summary['size'][1]} px",
        flush=True,
    )

    def cfg_for(root: Path, concurrency: int) -> config.PipelineConfig:
        return config.load(
            None,
            [
                f"root={root}",
                f"data.root={work / 'data'}",
                f"keyframes.concurrency={concurrency}",
                f"keyframes.chunk_size={args.chunk_size}",
            ],
        )

    section = cfg_for(work, 1).keyframes
    kf = keyframe_settings(section)

    def decode(row: dict) -> int:
        return len(read_clip(row["source"], row["onset"], row["offset"], timeout=kf.decode_timeout))

    def construct(row: dict) -> int:
        return len(build_record(row, kf)["frames"])

    # Warm-up: imports, OpenCV's cascades and thread pool, the page cache.
    for r in rows[:2]:
        decode(r)
        construct(r)
    default_threads = cv2.getNumThreads()
    dec, con, con1 = [], [], []
    for _ in range(args.rounds):
        cv2.setNumThreads(default_threads)
        dec.append(timed_pass(decode, rows))
        con.append(timed_pass(construct, rows))
        cv2.setNumThreads(1)
        con1.append(timed_pass(construct, rows))
        print(
            f"  pass: decode {dec[-1]['clips_per_s']} clips/s, construction "
            f"{con[-1]['clips_per_s']} ({default_threads} OpenCV threads), "
            f"{con1[-1]['clips_per_s']} (1 thread)",
            flush=True,
        )
    cv2.setNumThreads(default_threads)
    dec, con, con1 = best(dec), best(con), best(con1)
    decoded_frames = dec["frames"]

    # Where the construction time goes: the same pass with the costly optional steps off.
    # Not the default config (diff spots apexes less well; see mer/keyframes/motion.py).
    variants = {}
    import mer.keyframes.video

    def full_size_decode(fn):
        """fn with frames kept at full size: mer.keyframes.video's read_clip ignoring min_side and
        reduce_frames doing nothing (build_record looks both up per call)."""

        def run(row):
            read, reduce = mer.keyframes.video.read_clip, mer.keyframes.video.reduce_frames
            mer.keyframes.video.read_clip = lambda *a, min_side=None, **k: read(*a, **k)
            mer.keyframes.video.reduce_frames = lambda frames, min_side: frames
            try:
                return fn(row)
            finally:
                mer.keyframes.video.read_clip, mer.keyframes.video.reduce_frames = read, reduce

        return run

    for name, change in [
        ("full-size decode", None),
        ("registration phase", {"registration": "phase"}),
        ("stabilize off", {"stabilize": False}),
        ("motion diff", {"motion": "diff"}),
        ("stabilize off, motion diff", {"stabilize": False, "motion": "diff"}),
    ]:
        kv = dataclasses.replace(kf, **(change or {}))
        fn = lambda r, kv=kv: len(build_record(r, kv)["frames"])  # noqa: E731
        if change is None:
            fn, change = full_size_decode(fn), {"decode": "full size (benchmark-only switch)"}
        passes = [timed_pass(fn, rows) for _ in range(args.rounds)]
        variants[name] = {**best(passes), "change": change}
        variants[name]["over_decode"] = round(variants[name]["clips_per_s"] / dec["clips_per_s"], 3)
        print(f"  construction, {name}: {variants[name]['clips_per_s']} clips/s", flush=True)

    import ray

    def ray_stage(label: str, env: dict) -> dict[int, dict]:
        """Warm-up build, then concurrency 1, 2, 2, 1 on fresh roots; best of each."""
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env} if env else None,
        )
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-run INFO lines
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            warm = {r["clip"] for r in rows[: 2 * args.chunk_size]}
            build_keyframes_dataset(
                cfg_for(work / "ray-warmup", 2),
                manifest[manifest["clip"].isin(warm)],
                progress=lambda s: None,
            )
            shutil.rmtree(work / "ray-warmup", ignore_errors=True)
            parallelism.append(machine_parallelism(0.05 if args.smoke else 1.0))
            print(f"  two CPU-bound processes on this machine now: {parallelism[-1]}x one")
            order = [1, 2, 2, 1] * (args.rounds // 2) + [1, 2] * (args.rounds % 2)
            runs: dict[int, list[dict]] = {1: [], 2: []}
            for i, n in enumerate(order):
                root = work / f"ray-c{n}-{i}"
                load = os.getloadavg()[0]
                t0, epoch = time.perf_counter(), time.time()
                meta = build_keyframes_dataset(cfg_for(root, n), manifest, progress=lambda s: None)
                wall = time.perf_counter() - t0
                assert meta["counts"]["written"] == len(rows), meta["counts"]
                runs[n].append(
                    {
                        "wall_s": round(wall, 3),
                        "clips_per_s": round(len(rows) / wall, 2),
                        "load_1min_at_start": load,
                        "where_the_time_went": time_split(meta["profile"], epoch, wall, n),
                    }  # fmt: skip
                )
                print(f"  ray data, {label}, concurrency {n}: {runs[n][-1]['clips_per_s']} clips/s")
                shutil.rmtree(root, ignore_errors=True)
        finally:
            ray.shutdown()
        return {n: best(r) for n, r in runs.items()}

    parallelism: list[float] = []
    ray_runs = ray_stage("1 OpenCV thread per task", {})
    ray1, ray2 = ray_runs[1], ray_runs[2]
    parallelism.append(machine_parallelism(0.05 if args.smoke else 1.0))
    load_after = uptime()

    ratio_construction = con["clips_per_s"] / dec["clips_per_s"]
    ratio_construction_cpu = con["clips_per_cpu_s"] / dec["clips_per_cpu_s"]
    scaling = ray2["clips_per_s"] / ray1["clips_per_s"]
    ray_over_process = ray1["clips_per_s"] / con1["clips_per_s"]
    target_scaling = min(TARGET_SCALING, 0.9 * min(parallelism))
    # Two processes cannot run less than 1x or more than (cores)x one: outside that, the
    # machine's load moved during the measurement and the scaling target means nothing.
    judged = all(1.0 <= p <= (os.cpu_count() or 2) + 0.1 for p in parallelism)
    result = {
        "command": "python benchmarks/keyframes.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": _cpu_name(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "ray": ray.__version__,
            "opencv_default_threads": default_threads,
            "uptime_before": load_before,
            "uptime_after": load_after,
            "two_process_speedup": parallelism,
        },
        "data": {
            "clips": len(rows),
            "frames_decoded": decoded_frames,
            "frames_per_clip_mean": round(decoded_frames / len(rows), 1),
            "size_hw": summary["size"],
            "layout": "casme2",
            "keyframes_config": dataclasses.asdict(section),
            "chunk_size": args.chunk_size,
        },
        "decode": dec,
        "construction": con,
        "construction_1_thread": con1,
        "construction_variants": variants,
        "ray_concurrency_1": ray1,
        "ray_concurrency_2": ray2,
        "ratios": {
            "construction_over_decode": round(ratio_construction, 3),
            "construction_over_decode_cpu_time": round(ratio_construction_cpu, 3),
            "ray_2_over_1": round(scaling, 3),
            "ray_1_over_construction_1_thread": round(ray_over_process, 3),
            "targets": {
                "construction_over_decode": TARGET_CONSTRUCTION_RATIO,
                "ray_2_over_1": round(target_scaling, 3),
                "ray_1_over_construction_1_thread": TARGET_RAY_OVER_PROCESS,
            },
            "ray_2_over_1_judged": judged,
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print()
    print(f"{'what':<44} {'clips/s':>9} {'clips/CPU-s':>12}")
    for name, r in [
        ("decode only (read_clip)", dec),
        (f"construction (build_record, {default_threads} OpenCV threads)", con),
        ("construction (build_record, 1 OpenCV thread)", con1),
        ("Ray Data stage, concurrency 1", ray1),
        ("Ray Data stage, concurrency 2", ray2),
    ]:
        print(
            f"{name:<44} {r['clips_per_s']:>9.2f} {r.get('clips_per_cpu_s', float('nan')):>12.2f}"
        )
    for name, v in variants.items():
        print(
            f"construction, {name}: {v['clips_per_s']:.2f} clips/s, {v['over_decode']:.2f} x decode"
        )
    for name, value, target in [
        ("construction / decode", ratio_construction, TARGET_CONSTRUCTION_RATIO),
        ("Ray concurrency 2 / 1", scaling, target_scaling),
        ("Ray concurrency 1 / construction (1 thread)", ray_over_process, TARGET_RAY_OVER_PROCESS),
    ]:
        verdict = "met" if value >= target else "MISSED"
        if name.startswith("Ray concurrency 2") and not judged:
            verdict = f"not judged: two CPU-bound processes ran {parallelism} x one"
        print(f"{name}: {value:.2f} (target >= {target:.2f}: {verdict})")
    for n, r in ((1, ray1), (2, ray2)):
        print(f"Ray concurrency {n}, shares of actors x wall: {r['where_the_time_went']['shares']}")
    print(f"two CPU-bound processes vs one, during the run: {parallelism}")
    print(f"load after: {load_after}")
    print(f"wrote {args.out}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
