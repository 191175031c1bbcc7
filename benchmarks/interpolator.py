"""Key-frame interpolation quality and speed: learned adaptive convolution vs linear blend vs
flow warp.

    .venv/bin/python benchmarks/interpolator.py   # table on stdout, figures in benchmarks/interpolator.json

One synthetic dataset (mer.datasets.synthetic.generator.generate, CASME II layout, 6 subjects x 4
clips of 40-60 frames at 340x280, seed 0). Every frame of every clip is centre-cropped to
280x280 and resampled to S x S RGB the way the key-frame stage resamples
(mer.keyframes.construction.scale_frame; no registration, so the synthetic head drift is part of the motion),
at S = 32 and 64. Subjects 1-4 train one `mer.keyframes.interpolator.Interpolator` per S (default
InterpolatorConfig: kernel 7, base 16, 3 levels; triplets with gaps up to --max-gap 16,
batch 16, --steps32 / --steps64 steps on one CPU thread). Subjects 5-6 are held out: for
gaps of 2, 4, 8 and 16 frames, every non-overlapping window (a, a + g) of each clip and every frame strictly
inside it is a target at t = (c - a) / g. Each is rendered by the linear blend (what
keyframes.interpolation "linear" does), the project's Farneback warp
(mer.keyframes.construction._flow_blend, "flow") and the learned interpolator. Scores per target on
uint8: PSNR, and SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K = 0.01/0.03,
mean of the three channels), averaged over targets; t = 0.5 and the other t are listed apart.
Most pixels barely change between frames of a micro-expression, so whole-frame scores sit
near the noise floor; "PSNR moving" pools the squared error over the pixels where a and b
differ by more than MOVING grey levels (any channel), where the methods differ; "flow p99"
is the 99th percentile of the Farneback flow's length from a to b, in px, averaged.
Throughput: frames interpolated per second on one thread (torch and OpenCV) at 32, 64 and
112 px; the learned model one pair per call (as the key-frame stage would call it) and 16
pairs per call; at 112 px an untrained model (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mer.datasets import load_manifest  # noqa: E402
from mer.datasets.synthetic.generator import generate  # noqa: E402
from mer.keyframes.construction import _flow_blend, scale_frame  # noqa: E402
from mer.keyframes.interpolator import Interpolator, InterpolatorConfig, train_interpolator  # noqa: E402
from mer.keyframes.motion import FARNEBACK  # noqa: E402
from mer.keyframes.video import read_clip  # noqa: E402

GAPS = (2, 4, 8, 16)
# Grey levels: |b - a| above this is motion, not the clips' noise (p99 of |d| at gap 1 is 3).
MOVING = 4
METHODS = ("linear", "flow", "adaconv")
TIMING_S = 1.0  # seconds per timing run (per_second)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def linear_blend(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    blend = (1 - t) * a.astype(np.float32) + t * b.astype(np.float32)
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM over pixels and channels (Gaussian window 11, sigma 1.5; borders reflected)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = x.astype(np.float64), y.astype(np.float64)

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def load_clips(root: str, sizes: tuple[int, ...]) -> dict[int, dict[str, list[np.ndarray]]]:
    """{S: {subject: [clip uint8 (T, S, S, 3), ...]}}: every frame, centre square crop."""
    manifest = load_manifest("synthetic", root)
    out: dict[int, dict[str, list[np.ndarray]]] = {s: {} for s in sizes}
    for row in manifest.itertuples():
        frames = read_clip(row.source)
        h, w = frames.shape[1:3]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = frames[:, top : top + side, left : left + side]
        for s in sizes:
            clip = np.stack([scale_frame(f, s, (0.0, 0.0)) for f in square])
            out[s].setdefault(row.subject, []).append(clip)
    return out


def held_out_targets(clips: list[np.ndarray]):
    """(a, b, target, t, gap) for every non-overlapping window of each gap."""
    for clip in clips:
        for gap in GAPS:
            for a in range(0, len(clip) - gap, gap):
                for c in range(a + 1, a + gap):
                    yield clip[a], clip[a + gap], clip[c], (c - a) / gap, gap


def evaluate(model: Interpolator, clips: list[np.ndarray]) -> list[dict]:
    scores = []
    for a, b, target, t, gap in held_out_targets(clips):
        rendered = {
            "linear": linear_blend(a, b, t),
            "flow": _flow_blend(a, b, t),
            "adaconv": model.interpolate(a, b, t),
        }
        moving = np.abs(a.astype(np.int16) - b).max(-1) > MOVING
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (a, b)]
        flow = cv2.calcOpticalFlowFarneback(*grey, None, **FARNEBACK)
        row = {"gap": gap, "t": t, "moving": 3 * int(moving.sum())}
        row["motion_p99"] = float(np.percentile(np.hypot(flow[..., 0], flow[..., 1]), 99))
        for name, frame in rendered.items():
            row[f"psnr_{name}"], row[f"ssim_{name}"] = psnr(frame, target), ssim(frame, target)
            error = frame[moving].astype(np.float64) - target[moving]
            row[f"sse_{name}"] = float((error**2).sum())
        scores.append(row)
    return scores


def summarise(scores: list[dict], size: int) -> list[dict]:
    groups = [(g, "0.5", lambda r, g=g: r["gap"] == g and r["t"] == 0.5) for g in GAPS]
    groups += [(g, "other", lambda r, g=g: r["gap"] == g and r["t"] != 0.5) for g in GAPS[1:]]
    groups.append(("all", "all", lambda r: True))
    rows = []
    for gap, ts, keep in groups:
        chosen = [r for r in scores if keep(r)]
        moving = sum(r["moving"] for r in chosen)
        row = {"size": size, "gap": gap, "t": ts, "targets": len(chosen)}
        row["moving_share"] = round(moving / (len(chosen) * 3 * size * size), 4)
        row["motion_p99_px"] = round(float(np.mean([r["motion_p99"] for r in chosen])), 2)
        for metric in ("psnr", "ssim"):
            for name in METHODS:
                row[f"{metric}_{name}"] = round(
                    float(np.mean([r[f"{metric}_{name}"] for r in chosen])), 4
                )
        for name in METHODS:  # pooled over the group's moving pixels
            mse = sum(r[f"sse_{name}"] for r in chosen) / max(moving, 1)
            row[f"psnr_moving_{name}"] = round(10 * float(np.log10(255**2 / max(mse, 1e-10))), 2)
        rows.append(row)
    return rows


def per_second(fn, *args, seconds: float | None = None) -> float:
    """Calls of fn(*args) per second: best of three runs of about `seconds` (default:
    TIMING_S) each."""
    seconds = TIMING_S if seconds is None else seconds
    fn(*args)
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn(*args)
            n += 1
        best = max(best, n / (time.perf_counter() - start))
    return best


def throughput(models: dict[int, Interpolator], sizes: tuple[int, ...]) -> list[dict]:
    from torch.utils.flop_counter import FlopCounterMode

    rng = np.random.default_rng(0)
    rows = []
    for s in sizes:
        model = models.get(s) or Interpolator(InterpolatorConfig(image_size=s)).eval()
        a, b = rng.integers(0, 256, (2, 16, s, s, 3), dtype=np.uint8)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(*(torch.rand(1, 3, s, s) for _ in range(2)), torch.tensor([0.5]))
        rows.append(
            {
                "size": s,
                "trained": s in models,
                "gflop_per_frame": round(counter.get_total_flops() / 1e9, 3),
                "linear": round(per_second(linear_blend, a[0], b[0], 0.3)),
                "flow": round(per_second(_flow_blend, a[0], b[0], 0.3)),
                "adaconv": round(per_second(model.interpolate, a[0], b[0], 0.3), 1),
                "adaconv_batch16": round(16 * per_second(model.interpolate, a, b, 0.3), 1),
            }
        )
        print(f"  throughput {rows[-1]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/mer-bench-interpolator", help="scratch (replaced)")
    ap.add_argument("--steps32", type=int, default=600)
    ap.add_argument("--steps64", type=int, default=250)
    ap.add_argument("--max-gap", type=int, default=16, help="training triplets' largest gap")
    ap.add_argument("--out", default=str(HERE / "interpolator.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (CI)")
    args = ap.parse_args()
    global TIMING_S
    clips_per_subject, frames = 4, (40, 60)
    if args.smoke:  # one clip a subject, two steps: checks that the script runs
        args.steps32 = args.steps64 = 2
        clips_per_subject, frames, TIMING_S = 1, (20, 24), 0.01
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    steps = {32: args.steps32, 64: args.steps64}

    started, load_before = time.perf_counter(), uptime()
    print(f"load before: {load_before}", flush=True)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    generate(
        str(work),
        subjects=6,
        clips_per_subject=clips_per_subject,
        seed=0,
        size=(340, 280),
        frames=frames,
    )
    clips = load_clips(str(work), tuple(steps))
    subjects = sorted(clips[32])
    train_subjects, test_subjects = subjects[:4], subjects[4:]

    results, models, training = [], {}, []
    for s, n in steps.items():
        train = [c for subj in train_subjects for c in clips[s][subj]]
        test = [c for subj in test_subjects for c in clips[s][subj]]
        t0 = time.perf_counter()
        models[s] = train_interpolator(train, steps=n, batch_size=16, max_gap=args.max_gap, seed=0)
        seconds = time.perf_counter() - t0
        training.append({"size": s, "steps": n, "seconds": round(seconds, 1), "clips": len(train)})
        print(f"  S={s}: {n} steps in {seconds:.0f} s on {len(train)} clips", flush=True)
        results += summarise(evaluate(models[s], test), s)
    speed = throughput(models, (32, 64, 112))

    metrics = ("PSNR", "PSNR moving", "SSIM")
    header = ["S", "gap", "t", "n", "moving", "flow p99"] + [
        f"{m} {n}" for m in metrics for n in METHODS
    ]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in results:
        cells = [r["size"], r["gap"], r["t"], r["targets"], f"{100 * r['moving_share']:.1f}%"]
        cells.append(f"{r['motion_p99_px']:.2f}")
        cells += [f"{r[f'psnr_{n}']:.2f}" for n in METHODS]
        cells += [f"{r[f'psnr_moving_{n}']:.2f}" for n in METHODS]
        cells += [f"{r[f'ssim_{n}']:.4f}" for n in METHODS]
        print("| " + " | ".join(map(str, cells)) + " |")
    report = {
        "command": " ".join(["python benchmarks/interpolator.py", *sys.argv[1:]]),
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, 1 thread",
        "load_before": load_before,
        "load_after": uptime(),
        "dataset": json.loads((work / "synthetic.json").read_text()),  # the generator's record
        "train_subjects": train_subjects,
        "test_subjects": test_subjects,
        "config": vars(InterpolatorConfig()),
        "parameters": sum(p.numel() for p in models[32].parameters()),
        "training": training,
        "quality": results,
        "throughput_frames_per_s": speed,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} in {report['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
