"""Spotting on synthetic long videos: F1 per spotter, throughput, 1 vs 2 Ray workers, and one
video's score curve.

    .venv/bin/python benchmarks/spotting.py      # figures in benchmarks/spotting.json + .png

One run, on one synthetic long-video set (mer.datasets.synthetic.long_videos.generate_long,
--preset, default casme_sq-like: 4 subjects x 3 videos of 20 s at 30 fps, 0-5 micro- and
0-2 macro-expressions each, blinks and head turns; seed 0):
- features in this process (mer.spotting.stage.compute_features, use_ray=False, OpenCV on
  one thread): throughput in hours of video per hour per core (video seconds / wall
  seconds: one core works);
- the Ray Data stage with spotting.concurrency 1 and 2 (Ray started here with num_cpus=2,
  one untimed warm-up run first), each timed from the call to its return; the ratio is the
  scaling over 1 vs 2 workers. `uptime` before and after: the machine may be shared.
- every spotter on the same leave-one-subject-out folds (thresholds chosen on the training
  subjects; the learned spotter trained in this process with the same code its Ray Train
  loop runs): micro, macro and overall F1 (mer.spotting.metric), and per test subject the
  micro counts; the learned spotter's micro F1 minus each baseline's with a 95 % bootstrap
  interval over subjects (paired: the same subjects resampled for both). With 4 subjects
  that interval is wide; where it holds 0 the figure says "no evidence".
- a plot of one video (--plot-video, default the first with a micro-expression): each
  spotter's score, the true micro (red) and macro (blue) intervals, the spotted intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from mer.config import ResourcesConfig  # noqa: E402
from mer.datasets.synthetic.long_videos import generate_long  # noqa: E402
from mer.spotting import learned, spotters  # noqa: E402
from mer.spotting.metric import OVERALL, Counts, spotting_metric  # noqa: E402
from mer.spotting.peaks import PeakSettings  # noqa: E402
from mer.spotting.stage import compute_features  # noqa: E402
from mer.spotting.windows import WindowSettings  # noqa: E402

SMOKE_HELP = "tiny sizes that run in seconds (CI checks the script with it; pass --out too)"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def quiet(_: str) -> None:
    pass


def paired_interval(per_subject: dict, a: str, b: str, reps: int = 2000, seed: int = 0):
    """micro F1 of spotter a minus b, pooled over subjects, with a 95 % bootstrap interval
    over subjects (both spotters on the same resampled subjects)."""
    subjects = sorted(per_subject[a])
    rng = np.random.default_rng(seed)

    def pooled(name, chosen):
        c = sum((per_subject[name][s] for s in chosen), Counts())
        return c.f1

    diff = pooled(a, subjects) - pooled(b, subjects)
    draws = []
    for _ in range(reps):
        chosen = [subjects[i] for i in rng.integers(len(subjects), size=len(subjects))]
        draws.append(pooled(a, chosen) - pooled(b, chosen))
    lo, hi = np.quantile(draws, [0.025, 0.975])
    verdict = (
        "no evidence of a difference" if lo <= 0 <= hi else ("a better" if lo > 0 else "a worse")
    )
    return {
        "diff": round(diff, 4),
        "lo": round(float(lo), 4),
        "hi": round(float(hi), 4),
        "verdict": verdict,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("--preset", default="casme_sq-like")
    p.add_argument("--work", default="/tmp/mer-bench-spotting")
    p.add_argument("--out", default=str(HERE / "spotting.json"))
    p.add_argument("--plot", default=None, help="PNG of one video (default: --out with .png)")
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args()
    preset, options, epochs = args.preset, {}, args.epochs
    ws, ps = WindowSettings(), PeakSettings()
    if args.smoke:  # 2 videos of 1.5 s at 64 px, small grey copies: the script runs, no figure
        preset, options, epochs = "tiny", {"seconds": 1.5}, 1
        ws = WindowSettings(side=64)
    work = Path(args.work)
    record: dict = {"uptime_before": uptime(), "preset": preset, "options": options}
    t = time.perf_counter()
    vset = generate_long(str(work / f"data-{preset}"), preset, **options)
    record["generate_seconds"] = round(time.perf_counter() - t, 2)
    video_s = sum(v.n_frames / v.fps for v in vset.videos)
    record["videos"] = len(vset.videos)
    record["video_seconds"] = round(video_s, 1)
    record["truth"] = {k: sum(i.type == k for i in vset.intervals) for k in ("micro", "macro")}

    import cv2

    cv2.setNumThreads(1)
    t = time.perf_counter()
    feats, rejects, profile = compute_features(vset.videos, ws, use_ray=False, progress=quiet)
    wall = time.perf_counter() - t
    record["in_process"] = {
        "seconds": round(wall, 2),
        "hours_of_video_per_hour_per_core": round(video_s / wall, 3),
        "peak_bytes_per_window": profile["peak_bytes"],
        "rejects": rejects,
    }

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    compute_features(vset.videos[:1], ws, concurrency=1, progress=quiet)  # warm-up, untimed
    scaling = {}
    for c in (1, 2):
        t = time.perf_counter()
        compute_features(vset.videos, ws, concurrency=c, progress=quiet)
        wall = time.perf_counter() - t
        scaling[c] = {
            "seconds": round(wall, 2),
            "hours_of_video_per_hour": round(video_s / wall, 3),
        }
    ray.shutdown()
    record["ray"] = {
        "concurrency": scaling,
        "speedup_2_over_1": round(scaling[1]["seconds"] / scaling[2]["seconds"], 3),
    }

    results = {}
    for name in spotters.RULE_SPOTTERS:
        results[name] = spotters.loso_rule(name, feats, vset.intervals, ps)
    ls = learned.LearnedSettings(epochs=epochs)
    learned_out = str(work / f"learned-{preset}-{time.time():.0f}")
    t = time.perf_counter()
    results["learned"] = learned.loso_learned(
        feats, vset.intervals, ps, ls, learned_out, ResourcesConfig(), use_ray=False
    )
    record["learned_seconds"] = round(time.perf_counter() - t, 2)
    record["f1"], per_subject = {}, {}
    for name, folds in results.items():
        pred = [i for f in folds for i in f.intervals]
        m = spotting_metric(vset.intervals, pred, vset.videos)
        record["f1"][name] = {k: round(m.f1(OVERALL, k), 4) for k in ("micro", "macro", "all")}
        record["f1"][name]["counts_micro"] = vars(m.counts[OVERALL, "micro"])
        record["f1"][name]["thresholds"] = {f.test_subject: f.threshold for f in folds}
        per_subject[name] = {}
        for f in folds:
            if f.test_subject == spotters.FINAL:
                continue
            names = {v.video for v in vset.videos if v.subject == f.test_subject}
            truth = [i for i in vset.intervals if i.video in names]
            per_subject[name][f.test_subject] = spotting_metric(truth, f.intervals).counts[
                OVERALL, "micro"
            ]
    record["learned_minus"] = {
        b: paired_interval(per_subject, "learned", b) for b in spotters.RULE_SPOTTERS
    }
    record["uptime_after"] = uptime()
    record["cpu_count"] = os.cpu_count()
    plot = args.plot or str(Path(args.out).with_suffix(".png"))
    record["plot"] = draw(plot, vset, feats, results, ls, learned_out)
    Path(args.out).write_text(json.dumps(record, indent=1, default=str))
    print(
        json.dumps(
            {k: record[k] for k in ("in_process", "ray", "f1", "learned_minus")},
            indent=1,
            default=str,
        )
    )


def draw(path: str, vset, feats, results, ls, learned_out: str) -> str:
    """One video's scores with its true and spotted intervals; returns the video's name. The
    learned curve is that of the fold that held the video's subject out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_micro = [i.video for i in vset.intervals if i.type == "micro"]
    name = with_micro[0] if with_micro else vset.videos[0].video
    f = feats[name]
    t = (np.arange(f.n_frames) + f.first_frame) / f.fps
    net = learned.load_fold(learned_out, f.subject, 1 + f.blocks.shape[1], ls)
    curves = {
        "motion": spotters.score("motion", f),
        "mdmd": spotters.score("mdmd", f),
        "learned": learned.frame_scores(net, f, ls.rate),
    }
    fig, axes = plt.subplots(3, 1, figsize=(10, 6), sharex=True)
    for ax, (spotter, s) in zip(axes, curves.items(), strict=True):
        ax.plot(t, s, lw=0.8, color="k")
        for i in vset.intervals:
            if i.video == name:
                colour = "red" if i.type == "micro" else "blue"
                ax.axvspan(i.onset / f.fps, i.offset / f.fps, color=colour, alpha=0.2)
        top = float(np.max(s)) * 1.05 if len(s) else 1.0
        for fold in results[spotter]:
            for i in fold.intervals:
                if i.video == name:
                    colour = "red" if i.type == "micro" else "blue"
                    ax.hlines(top, i.onset / f.fps, i.offset / f.fps, color=colour, lw=3)
        ax.set_ylabel(spotter)
    axes[0].set_title(f"{name}: scores; shaded: true micro (red) / macro (blue); bars: spotted")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return name


if __name__ == "__main__":
    main()
