"""Decode throughput on one CPU core: decord 0.6.0 vs decord2 3.4.0, with OpenCV as a baseline.

    python benchmarks/decoders.py            # prints a table, writes benchmarks/decoders.json

requirements.txt pins decord2 (a maintained fork with decord's `import decord` API); this
script measures whether that costs or gains decode speed. Both packages install as
`import decord`, so they cannot share one environment: each decoder runs in a child Python
whose PYTHONPATH puts a `pip install --target` directory holding only that package first
(installed on the first run, --no-deps: numpy comes from this environment). The child pins
itself to one core (sched_setaffinity) before importing the decoder, with OMP/MKL/OpenBLAS
threads at 1, decord's num_threads=1 and OpenCV's setNumThreads(1) / CAP_PROP_N_THREADS=1.

Clip: written here with cv2.VideoWriter, 640x480, 300 frames, 30 fps: H.264 ('avc1') where
this OpenCV build can encode it, else MPEG-4 Part 2 ('mp4v'); the JSON records which.
Measured (our own protocol, not a published one):
- sequential: open the clip and decode every frame to an RGB uint8 array; frames/s.
- random: open the clip and fetch 16 seeded random frames (decord get_batch; OpenCV seeks
  with CAP_PROP_POS_FRAMES then reads); ms per batch.
Each figure is the best of --repeats rounds; rounds interleave the decoders so that load from
other processes on a shared machine falls on all of them alike. Both wall-clock time and the
child's CPU time (time.process_time) are recorded: on a busy shared machine the CPU-time
figure leaves out the time other processes held the core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# name -> (PyPI distribution, version); None: OpenCV from this environment.
DECODERS: dict[str, tuple[str, str] | None] = {
    "decord 0.6.0": ("decord", "0.6.0"),
    "decord2 3.4.0": ("decord2", "3.4.0"),
    "opencv": None,
}
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OPENCV_FOR_THREADS_NUM": "1",
}


# ----------------------------------------------------------------------------- parent side


def write_clip(path: Path, frames: int = 300, width: int = 640, height: int = 480) -> str:
    """Write a seeded test clip (panning texture plus moving shapes); returns the fourcc used."""
    import cv2

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(
        rng.integers(0, 256, (height + 2 * frames, width + 2 * frames, 3), dtype=np.uint8),
        (0, 0),
        3,
    )
    for fourcc in ("avc1", "mp4v"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (width, height))
        if writer.isOpened():
            break
        print(f"this OpenCV cannot write {fourcc} (FFmpeg's messages above); trying the next")
    else:
        raise RuntimeError(f"this OpenCV build can write neither H.264 nor mp4v to {path}")
    for t in range(frames):
        frame = texture[t : t + height, 2 * t : 2 * t + width].copy()
        cx = int(width / 2 + width / 3 * np.sin(t / 20))
        cv2.circle(frame, (cx, height // 2), 60, (40, 200, 90), -1)
        cv2.rectangle(frame, (t % width, 40), (t % width + 80, 120), (230, 30, 30), -1)
        writer.write(frame)
    writer.release()
    return fourcc


def ensure_package(dist: str, version: str, root: Path) -> Path:
    """A --target directory holding only `dist==version`; pip-installs it if missing."""
    target = root / f"{dist}-{version}"
    if not (target / "decord" / "__init__.py").exists():
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        cmd += ["--target", str(target), f"{dist}=={version}"]
        print(f"installing {dist}=={version} into {target}", flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"pip could not install {dist}=={version} into {target}: "
                f"{done.stderr.strip()[-500:]}; install it there by hand and rerun"
            )
    return target


def run_child(name: str, clip: Path, args: argparse.Namespace, pythonpath: Path | None) -> dict:
    env = dict(os.environ, **SINGLE_THREAD_ENV)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [sys.executable, __file__, "--child", "opencv" if name == "opencv" else "decord"]
    cmd += ["--clip", str(clip), "--cpu", str(args.cpu), "--batch", str(args.batch)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} child failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import cv2

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(HERE / "decoders.json"))
    p.add_argument("--workdir", default="/tmp/decoders", help="clip and --target installs")
    p.add_argument("--repeats", type=int, default=3, help="rounds; each figure is the best")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--batch", type=int, default=16, help="frames per random-access batch")
    p.add_argument("--cpu", type=int, default=0, help="the one core every child is pinned to")
    p.add_argument("--child", choices=["decord", "opencv"], help=argparse.SUPPRESS)
    p.add_argument("--clip", help=argparse.SUPPRESS)
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, this environment's decord only (no install): runs in seconds (CI)",
    )
    args = p.parse_args()
    decoders = DECODERS
    if args.smoke:  # checks that the script runs, measures nothing
        args.frames, args.repeats, args.batch = 20, 1, 4
        decoders = {"decord (this environment)": None, "opencv": None}
    if args.child:
        print(json.dumps(child(args.child, args.clip, args.cpu, args.batch)))
        return

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    info = machine()
    paths = {
        name: None if spec is None else ensure_package(*spec, work)
        for name, spec in decoders.items()
    }
    clip = work / f"clip_{args.frames}.mp4"
    fourcc = write_clip(clip, frames=args.frames)

    runs: dict[str, list[dict]] = {name: [] for name in decoders}
    for r in range(args.repeats):
        for name in decoders:
            runs[name].append(run_child(name, clip, args, paths[name]))
        print(f"round {r + 1}/{args.repeats} done", flush=True)

    results = []
    for name, rs in runs.items():
        results.append(
            {
                "decoder": name,
                "module": rs[0]["module"],
                "version": rs[0]["version"],
                "frames_decoded": rs[0]["frames"],
                "sequential_fps": max(x["sequential_fps"] for x in rs),
                "sequential_fps_cpu": max(x["sequential_fps_cpu"] for x in rs),
                "sequential_fps_rounds": [x["sequential_fps"] for x in rs],
                "random_ms": min(x["random_ms"] for x in rs),
                "random_ms_cpu": min(x["random_ms_cpu"] for x in rs),
                "random_ms_rounds": [x["random_ms"] for x in rs],
                "random_batch_mean": rs[0]["batch_mean"],
            }
        )
    # All decoders must return the same frames for the same indices (a wrong seek would not).
    means = [x["random_batch_mean"] for x in results]
    report = {
        "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]),
        "machine": info,
        "clip": {
            "fourcc": fourcc,
            "codec": "H.264" if fourcc == "avc1" else "MPEG-4 Part 2",
            "frames": args.frames,
            "size": [640, 480],
            "fps": 30,
            "bytes": clip.stat().st_size,
        },
        "protocol": {
            "threads": 1,
            "pinned_cpu": args.cpu,
            "repeats": args.repeats,
            "random_batch": args.batch,
            "best_of": "max frames/s, min ms",
        },
        "results": results,
        "random_batch_mean_spread": round(max(means) - min(means), 3),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {args.out}")


def print_table(report: dict) -> None:
    clip = report["clip"]
    print(
        f"\n{clip['frames']} frames {clip['size'][0]}x{clip['size'][1]} {clip['codec']}, "
        f"one core ({report['machine']['cpu']}), best of {report['protocol']['repeats']}"
    )
    print(f"{'':<26}{'sequential frames/s':^22}{'random 16 frames, ms':^22}")
    print(f"{'decoder':<16}{'version':<10}" + f"{'wall':>11}{'CPU':>11}" * 2)
    for x in report["results"]:
        print(
            f"{x['decoder']:<16}{x['version']:<10}"
            f"{x['sequential_fps']:>11.0f}{x['sequential_fps_cpu']:>11.0f}"
            f"{x['random_ms']:>11.1f}{x['random_ms_cpu']:>11.1f}"
        )


# ----------------------------------------------------------------------------- child side


def child(kind: str, clip: str, cpu: int, batch: int) -> dict:
    """One measurement in a fresh process pinned to `cpu`."""
    os.sched_setaffinity(0, {cpu})
    if kind == "decord":
        import decord

        def open_reader():
            return decord.VideoReader(clip, ctx=decord.cpu(0), num_threads=1)

        def sequential() -> int:
            vr, n = open_reader(), 0
            try:
                while True:
                    vr.next().asnumpy()
                    n += 1
            except StopIteration:
                return n

        def random_batch(idx: list[int]) -> np.ndarray:
            return open_reader().get_batch(idx).asnumpy()

        module, version = decord.__file__, decord.__version__
        total = len(open_reader())
    else:
        import cv2

        cv2.setNumThreads(1)

        def open_reader():
            return cv2.VideoCapture(clip, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])

        def sequential() -> int:
            cap, n = open_reader(), 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    return n
                cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                n += 1

        def random_batch(idx: list[int]) -> np.ndarray:
            cap, out = open_reader(), []
            for i in idx:
                cap.set(cv2.CAP_PROP_POS_FRAMES, i)
                ok, frame = cap.read()
                if not ok:
                    raise RuntimeError(f"OpenCV could not read frame {i} of {clip}")
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            return np.stack(out)

        module, version = cv2.__file__, cv2.__version__
        total = int(open_reader().get(cv2.CAP_PROP_FRAME_COUNT))

    idx = sorted(np.random.default_rng(0).choice(total, batch, replace=False).tolist())
    random_batch(idx[:1])  # warm-up: first-call costs stay out of the timings
    w0, c0 = time.perf_counter(), time.process_time()
    n = sequential()
    w1, c1 = time.perf_counter(), time.process_time()
    frames = random_batch(idx)
    w2, c2 = time.perf_counter(), time.process_time()
    return {
        "module": module,
        "version": version,
        "frames": n,
        "sequential_fps": round(n / (w1 - w0), 1),
        "sequential_fps_cpu": round(n / (c1 - c0), 1),
        "random_ms": round(1000 * (w2 - w1), 2),
        "random_ms_cpu": round(1000 * (c2 - c1), 2),
        "batch_mean": round(float(frames.mean()), 3),
    }


if __name__ == "__main__":
    main()
