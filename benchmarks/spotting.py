"""Spotting on synthetic long videos: F1 per spotter and interval rule, throughput, 1 vs 2
Ray workers, and one video's score curve.

    .venv/bin/python benchmarks/spotting.py      # figures in benchmarks/spotting.json + .png
    # the rules on a larger set: 8 subjects, generator seeds 0 and 1, no timings
    .venv/bin/python benchmarks/spotting.py --subjects 8 --seeds 0 1 --no-timing \
        --out benchmarks/spotting_8x2.json

One run, on one or more synthetic long-video sets (mer.datasets.synthetic.long_videos.
generate_long, --preset, default casme_sq-like: 4 subjects (--subjects) x 3 videos of 20 s at
30 fps, 0-5 micro- and 0-2 macro-expressions each, blinks and head turns; one set per
generator seed of --seeds, default 0). Sets are written under --work and read back by a later
run with the same settings; so are the features, except those of the timed set.
- features of the first set in this process (mer.spotting.stage.compute_features,
  use_ray=False, OpenCV on one thread): throughput in hours of video per hour per core
  (video seconds / wall seconds: one core works);
- the Ray Data stage with spotting.concurrency 1 and 2 (Ray started here with num_cpus=2,
  one untimed warm-up run first), each timed from the call to its return; the ratio is the
  scaling over 1 vs 2 workers. `uptime` before and after: the machine may be shared.
  --no-timing skips both (features then come from --work where a run left them);
- every spotter under every interval rule of --rules (mer.spotting.peaks: threshold, peaks)
  on the same leave-one-subject-out folds of each set (threshold, and the peaks rule's
  interval length, chosen on the training subjects; the learned spotter trained once per set
  in this process with the same code its Ray Train loop runs, its networks shared by the
  rules): micro, macro and overall F1 (mer.spotting.metric) pooled over every set, and per
  test subject the micro counts; per rule the learned spotter's micro F1 minus each
  baseline's, and per spotter the peaks rule's minus the threshold rule's, with a 95 %
  bootstrap interval over subjects (paired: the same subjects resampled for both; a subject
  of each set is one unit). With 4 subjects that interval is wide; where it holds 0 the
  figure says "no evidence".
- a plot of one video of the first set (the first with a micro-expression): each spotter's
  score, the true micro (red) and macro (blue) intervals, the spotted intervals per rule.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from mer.config import ResourcesConfig  # noqa: E402
from mer.datasets.synthetic.long_videos import generate_long, long_key  # noqa: E402
from mer.layout import digest  # noqa: E402
from mer.spotting import learned, spotters  # noqa: E402
from mer.spotting.metric import OVERALL, Counts, spotting_metric  # noqa: E402
from mer.spotting.peaks import RULES, PeakSettings  # noqa: E402
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
    p.add_argument("--subjects", type=int, default=None, help="default: the preset's")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="generator seeds")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    p.add_argument("--no-timing", action="store_true", help="skip the throughput timings")
    p.add_argument("--work", default="/tmp/mer-bench-spotting")
    p.add_argument("--out", default=str(HERE / "spotting.json"))
    p.add_argument("--plot", default=None, help="PNG of one video (default: --out with .png)")
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args()
    preset, options, epochs = args.preset, {}, args.epochs
    if args.subjects:
        options["subjects"] = args.subjects
    ws = WindowSettings()
    if args.smoke:  # 2 videos of 1.5 s at 64 px, small grey copies: the script runs, no figure
        preset, options, epochs = "tiny", {"seconds": 1.5}, 1
        ws = WindowSettings(side=64)
    work = Path(args.work)
    record: dict = {
        "uptime_before": uptime(),
        "preset": preset,
        "options": options,
        "seeds": args.seeds,
        "rules": args.rules,
        "peak_lengths_s": list(PeakSettings(rule="peaks").lengths_s),
    }
    t = time.perf_counter()
    vsets = {}
    for seed in args.seeds:
        key = long_key(preset, seed=seed, **options)
        vsets[seed] = generate_long(
            str(work / f"data-{preset}-{key}"), preset, seed=seed, **options
        )
    record["generate_seconds"] = round(time.perf_counter() - t, 2)
    videos = [v for vs in vsets.values() for v in vs.videos]
    intervals = [i for vs in vsets.values() for i in vs.intervals]
    record["videos"] = len(videos)
    record["video_seconds"] = round(sum(v.n_frames / v.fps for v in videos), 1)
    record["truth"] = {k: sum(i.type == k for i in intervals) for k in ("micro", "macro")}

    import cv2

    cv2.setNumThreads(1)
    feats = {}
    for n, (seed, vset) in enumerate(vsets.items()):
        if n == 0 and not args.no_timing:
            feats[seed] = timings(record, vset, ws)
            continue
        cache = str(
            work / f"features-{long_key(preset, seed=seed, **options)}-{digest(asdict(ws))}"
        )
        feats[seed], rejects, _ = compute_features(
            vset.videos, ws, out=cache, use_ray=False, progress=quiet
        )
        record.setdefault("rejects", []).extend(rejects)

    ls = learned.LearnedSettings(epochs=epochs)
    stamp = f"{time.time():.0f}"
    learned_out = {s: str(work / f"learned-{preset}-{s}-{stamp}") for s in vsets}
    learned_seconds = 0.0
    results: dict = {}  # rule -> spotter -> seed -> folds
    for rule in args.rules:
        ps = PeakSettings(rule=rule)
        results[rule] = {name: {} for name in spotters.SPOTTERS}
        for seed, vset in vsets.items():
            for name in spotters.RULE_SPOTTERS:
                results[rule][name][seed] = spotters.loso_rule(
                    name, feats[seed], vset.intervals, ps
                )
            t = time.perf_counter()
            results[rule]["learned"][seed] = learned.loso_learned(
                feats[seed],
                vset.intervals,
                ps,
                ls,
                learned_out[seed],
                ResourcesConfig(),
                use_ray=False,
            )
            learned_seconds += time.perf_counter() - t
    record["learned_seconds"] = round(learned_seconds, 2)  # the networks train under the first rule
    record["f1"], per_subject = {}, {}
    for rule, by_spotter in results.items():
        record["f1"][rule] = {}
        for name, by_seed in by_spotter.items():
            record["f1"][rule][name], per_subject[rule, name] = scores_of(by_seed, vsets)
    record["learned_minus"] = {
        rule: {
            b: paired_interval(per_subject, (rule, "learned"), (rule, b))
            for b in spotters.RULE_SPOTTERS
        }
        for rule in args.rules
    }
    if {"threshold", "peaks"} <= set(args.rules):
        record["peaks_minus_threshold"] = {
            name: paired_interval(per_subject, ("peaks", name), ("threshold", name))
            for name in spotters.SPOTTERS
        }
    record["uptime_after"] = uptime()
    record["cpu_count"] = os.cpu_count()
    plot = args.plot or str(Path(args.out).with_suffix(".png"))
    first = args.seeds[0]
    record["plot"] = draw(
        plot,
        vsets[first],
        feats[first],
        {rule: {n: r[first] for n, r in by.items()} for rule, by in results.items()},
        ls,
        learned_out[first],
    )
    Path(args.out).write_text(json.dumps(record, indent=1, default=str))
    shown = ("in_process", "ray", "f1", "learned_minus", "peaks_minus_threshold")
    print(json.dumps({k: record[k] for k in shown if k in record}, indent=1, default=str))


def timings(record: dict, vset, ws: WindowSettings) -> dict:
    """Features of `vset` in this process (timed, and returned), then on Ray Data with 1 and
    2 actors (timed); the figures go into `record`."""
    video_s = sum(v.n_frames / v.fps for v in vset.videos)
    t = time.perf_counter()
    feats, rejects, profile = compute_features(vset.videos, ws, use_ray=False, progress=quiet)
    wall = time.perf_counter() - t
    record["in_process"] = {
        "videos": len(vset.videos),
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
    return feats


def scores_of(by_seed: dict, vsets: dict) -> tuple[dict, dict]:
    """One spotter's folds on every set: its F1 pooled over the sets (and each fold's
    choices), and per subject ("<seed>:<subject>") its micro counts. Sets are scored one by
    one and their counts summed: two seeds' sets share video names."""
    pooled = {k: Counts() for k in ("micro", "macro", "all")}
    for seed, folds in by_seed.items():
        pred = [i for f in folds for i in f.intervals]
        m = spotting_metric(vsets[seed].intervals, pred, vsets[seed].videos)
        pooled = {k: c + m.counts[OVERALL, k] for k, c in pooled.items()}
    out: dict = {k: round(c.f1, 4) for k, c in pooled.items()}
    out["counts_micro"] = vars(pooled["micro"])
    out["thresholds"] = {
        f"{s}:{f.test_subject}": f.threshold for s, fs in by_seed.items() for f in fs
    }
    lengths = {f"{s}:{f.test_subject}": f.length_s for s, fs in by_seed.items() for f in fs}
    if any(x is not None for x in lengths.values()):
        out["lengths_s"] = lengths
    per_subject = {}
    for seed, folds in by_seed.items():
        for f in folds:
            if f.test_subject == spotters.FINAL:
                continue
            names = {v.video for v in vsets[seed].videos if v.subject == f.test_subject}
            t = [i for i in vsets[seed].intervals if i.video in names]
            per_subject[f"{seed}:{f.test_subject}"] = spotting_metric(t, f.intervals).counts[
                OVERALL, "micro"
            ]
    out["micro_per_seed"] = {}
    for seed in by_seed:
        c = sum((v for k, v in per_subject.items() if k.startswith(f"{seed}:")), Counts())
        out["micro_per_seed"][seed] = {"f1": round(c.f1, 4), **vars(c)}
    out["counts_micro_per_subject"] = {k: vars(v) for k, v in per_subject.items()}
    # Each interval belongs to one test subject's fold: the subjects' counts add up.
    assert sum(per_subject.values(), Counts()) == pooled["micro"], "micro counts do not add up"
    return out, per_subject


def draw(path: str, vset, feats, results, ls, learned_out: str) -> str:
    """One video's scores with its true and spotted intervals (`results`: rule -> spotter ->
    folds; one row of bars per rule, the first rule on top); returns the video's name. The
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
        for row, (rule, by_spotter) in enumerate(results.items()):
            y = top * (1 - 0.08 * row)
            ax.text(t[0], y, rule, fontsize=7, va="center", ha="right")
            for fold in by_spotter[spotter]:
                for i in fold.intervals:
                    if i.video == name:
                        colour = "red" if i.type == "micro" else "blue"
                        ax.hlines(y, i.onset / f.fps, i.offset / f.fps, color=colour, lw=3)
        ax.set_ylabel(spotter)
    axes[0].set_title(
        f"{name}: scores; shaded: true micro (red) / macro (blue); bars: spotted per rule"
    )
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return name


if __name__ == "__main__":
    main()
