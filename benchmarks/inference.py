"""Batch inference throughput: the Ray Data predict pipeline against key-frame construction
alone, on the same clips and CPUs.

    .venv/bin/python benchmarks/inference.py    # table on stdout, figures in inference.json

One synthetic dataset (mer.datasets.synthetic.generator.generate, `video` layout: MPEG-4 files,
340x280, 16 subjects x 16 clips = 256 clips, seed 0), predicted whole-clip (interval = the
whole file, apex spotted: what `jobs/predict.py --input DIR` does). The model is the
demo's (configs/demo.yaml: K=8, S=32, C3D width 0.125, delta input) with random weights,
packaged as a model folder (mer.serving.packaging.package); throughput does not depend on the
weights' values. Ray is started here with num_cpus=2 (this machine's cores). Measured:
- key frames alone: the pipeline's key-frame stage by itself (the same KeyFrames actors,
  two of them with one CPU each: all the CPUs), its output consumed and dropped;
- predict: mer.serving.inference.predict_clips end to end (key-frame actors, the model in a
  Predictor actor pool with --cpus-per-predictor 0.25, Parquet/CSV written);
- the model alone: its forward pass on ready key frames (mer.train.step.predict, as the
  Predictor runs it), in this process, one thread, for the demo's model and for the default
  full-size C3D (K=16, S=112, width 1.0), to show where a CPU-only deployment of the full
  model stands.
Each Ray figure is timed from the call to its last row (actor start-up included), after an
untimed warm-up; the two Ray measurements alternate (--rounds 2: key frames, predict,
predict, key frames) and each keeps its best, so slow drift of the machine's load falls on
both. `uptime` before and after, and two CPU-bound processes against one
(benchmarks/keyframes.py: 2.0 on an idle 2-core machine).
Target (from the task): predict / key frames alone >= 0.9 (the model is never the
bottleneck on CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from mer.testing.model_sizes import DEMO_MODEL  # noqa: E402

TARGET = 0.9


def model_folder(work: Path, overrides: list[str]) -> str:
    """A model folder with random weights for `overrides` (the card says so)."""
    import torch

    from mer import config
    from mer.serving.export import final_run
    from mer.serving.model_folder import WEIGHTS
    from mer.serving.packaging import package
    from mer.testing.fakes import write_random_keyframes
    from mer.train.checkpoints import save_state
    from mer.train.models import build_classifier

    cfg = config.load(None, [f"root={work}", *overrides])
    kf = write_random_keyframes(
        str(work / "kf"), subjects=2, clips=3, k=cfg.keyframes.k, s=cfg.keyframes.size
    )
    folder = work / "model"
    torch.manual_seed(0)
    save_state(build_classifier(cfg, 3).state_dict(), str(folder / WEIGHTS))
    run = final_run(["fake/s00", "fake/s01"])
    package(str(folder), cfg, kf, run, name="bench", training={"note": "random weights"})
    return str(folder)


def keyframes_alone(items: list[dict], kf, actors: int) -> float:
    """Seconds for the pipeline's key-frame stage by itself over `items`."""
    import math

    import ray

    from mer.serving.clip_keyframes import KEYFRAME_BATCH
    from mer.serving.inference import keyframes_step

    t0 = time.perf_counter()
    ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / KEYFRAME_BATCH))
    ds = keyframes_step(ds, kf, actors, 1.0, KEYFRAME_BATCH)
    n = rejected = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        n += len(batch["path"])
        rejected += sum(1 for r in batch["reason"] if r)
    assert n == len(items) and rejected == 0, (n, rejected)
    return time.perf_counter() - t0


def model_alone(overrides: list[str], clips: int) -> float:
    """clips/s of the forward pass (mer.train.step.predict, as the Predictor runs it) on ready
    key frames, random weights, one thread, in this process."""
    import numpy as np
    import torch

    from mer import config
    from mer.serving.model_folder import plain_classifier
    from mer.train.models import build_classifier
    from mer.train.runtime import Worker, place
    from mer.train.step import predict

    cfg = config.load(None, ["root=/tmp/unused", *overrides])
    torch.set_num_threads(1)
    model = plain_classifier(cfg, build_classifier(cfg, 3).state_dict(), 3)
    place(model, Worker(0, 1, torch.device("cpu")), cfg.resources.channels_last)
    k, s = cfg.keyframes.k, cfg.keyframes.size
    frames = np.random.default_rng(0).integers(0, 255, (clips, k, s, s, 3), dtype=np.uint8)
    predict(model, frames[:2], torch.device("cpu"), input=cfg.model.input)  # warm-up
    t0 = time.perf_counter()
    predict(model, frames, torch.device("cpu"), input=cfg.model.input, batch_size=32)
    return clips / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/mer-bench-inference", help="scratch folder (replaced)")
    ap.add_argument("--subjects", type=int, default=16)
    ap.add_argument("--clips", type=int, default=16, help="clips per subject")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "inference.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (CI)")
    args = ap.parse_args()
    if args.smoke:  # 4 clips, one round: checks that the script runs, measures nothing
        args.subjects, args.clips, args.rounds = 2, 2, 1
    spin = 0.05 if args.smoke else 1.0

    import ray
    from keyframes import machine_parallelism, uptime

    from mer.datasets.synthetic.generator import generate
    from mer.serving.inference import (
        find_clips,
        model_keyframe_settings,
        plan_keyframe_pool,
        predict_clips,
    )
    from mer.serving.model_folder import read_card

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    load_before = uptime()
    print(f"load before: {load_before}", flush=True)
    summary = generate(
        str(work / "data"), subjects=args.subjects, clips_per_subject=args.clips, layout="video"
    )
    items = find_clips(str(work / "data" / "videos"))
    demo = model_folder(work / "demo", DEMO_MODEL)
    kf = model_keyframe_settings(demo, read_card(demo))
    print(f"{len(items)} clips ({summary['frames_written']} frames), models written", flush=True)

    model_demo, model_full = (
        model_alone(DEMO_MODEL, 4 if args.smoke else 256),
        model_alone([], 1 if args.smoke else 8),
    )
    print(f"model alone: demo {model_demo:.1f} clips/s, full {model_full:.2f} clips/s", flush=True)

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": {"PYTHONPATH": str(HERE.parent)}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    quiet = lambda s: None  # noqa: E731
    actors, share = plan_keyframe_pool(2, 1, 0, 1, 0.25)
    # Warm-up (worker processes, imports): a few clips through both.
    keyframes_alone(items[:8], kf, 2)
    predict_clips(demo, str(work / "data" / "videos"), str(work / "warm"), progress=quiet)
    parallelism = [machine_parallelism(spin)]
    timings: dict[str, list[float]] = {"keyframes": [], "predict": []}
    order = ["keyframes", "predict", "predict", "keyframes"] * args.rounds
    for what in order[: 2 * args.rounds]:
        if what == "keyframes":
            seconds = keyframes_alone(items, kf, 2)
        else:
            t0 = time.perf_counter()
            s = predict_clips(
                demo, str(work / "data" / "videos"), str(work / "out"), progress=quiet
            )
            seconds = time.perf_counter() - t0
            assert s["predicted"] == len(items), s
        timings[what].append(seconds)
        print(f"{what}: {len(items) / seconds:.2f} clips/s ({seconds:.1f} s)", flush=True)
    parallelism.append(machine_parallelism(spin))
    load_after = uptime()
    ray.shutdown()

    rate = {k: [round(len(items) / s, 2) for s in v] for k, v in timings.items()}
    ratio = max(rate["predict"]) / max(rate["keyframes"])
    import cv2
    import torch

    result = {
        "command": " ".join(["python", "benchmarks/inference.py", *sys.argv[1:]]),
        "machine": {
            "cpus": 2,
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "opencv": cv2.__version__,
            "ray": ray.__version__,
            "uptime_before": load_before,
            "uptime_after": load_after,
            "two_process_speedup": parallelism,
            "gpu": "none in this session (no device lent): no GPU figure",
        },
        "data": {
            "clips": len(items),
            "frames_written": summary["frames_written"],
            "layout": "video (MPEG-4 Part 2)",
            "size_hw": summary["size"],
            "keyframes_config": {k: getattr(kf, k) for k in ("k", "size", "method", "motion")},
            "mode": "whole clips, apex spotted",
        },
        "pipeline": {
            "keyframe_actors": actors,
            "cpus_per_keyframe_actor": share,
            "predictors": 1,
            "cpus_per_predictor": 0.25,
            "batch_size": 32,
        },
        "keyframes_alone": {"clips_per_s": rate["keyframes"], "actors": 2, "cpus_each": 1},
        "predict": {"clips_per_s": rate["predict"]},
        "model_alone_one_thread": {
            "demo_clips_per_s": round(model_demo, 1),
            "full_size_clips_per_s": round(model_full, 2),
            "full_size": "K=16, S=112, width 1.0 (the config defaults)",
        },
        "predict_over_keyframes": round(ratio, 3),
        "target": TARGET,
        "met": ratio >= TARGET,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"predict / key frames alone: {ratio:.2f} (target >= {TARGET}: "
        f"{'met' if ratio >= TARGET else 'MISSED'}); best of {rate}"
    )
    print(f"two CPU-bound processes vs one, during the run: {parallelism}")
    print(f"load after: {load_after}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
