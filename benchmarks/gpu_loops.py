"""Training throughput inside the real loops on one GPU, and the fast path's effect on UF1.

    python benchmarks/gpu_loops.py                  # on a CUDA machine (benchmarks/gpu.sh runs it)
    python benchmarks/gpu_loops.py --cpu-smoke      # tiny sizes on the CPU: checks the script

Unlike benchmarks/gpu_bench.py (one step on a batch already on the GPU), this times the
library's own loops, so what is measured is what trains:
- target learning: mer.train.finetune.train_classifier on one fold of a random key-frame
  table (K=16, S=112, the full-width C3D, batch 32, every block trainable), with the fast
  path (bf16 autocast, channels-last-3d, torch.compile, fused AdamW, the table on the GPU)
  and without it (fp32, no compile, the table on the host); epochs timed by wrapping
  mer.train.data.shard (called once per epoch), the first epoch (compilation) excluded;
- prior learning: mer.train.pretrain.train_prior the same way (pairs: two clips each), its
  epoch reports caught in this process (no Ray);
- the share of an epoch spent making batches (indexing, conversion, augmentation, each
  timed between CUDA synchronisations: an upper bound);
- UF1 of the fast path and of fp32 on the same LOSO folds and seed: the synthetic "simple"
  set (8 subjects x 6 clips) at K=16, S=112, built here without Ray.
MFU = 3 x forward FLOPs (mer.models.count_flops) x clips/s / the GPU's dense bf16 peak
(benchmarks/gpu_bench.py's table). Prior learning in bf16 is `pretrain.amp` (off by
default until a study of its loss curves says it is safe); it is timed here with it on.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def timed_epochs(fn) -> list[float]:
    """Run fn() while recording the start of each epoch (data.shard calls)."""
    from mer.train import data

    marks, inner = [], data.shard

    def shard(*args, **kwargs):
        sync()
        marks.append(time.perf_counter())
        return inner(*args, **kwargs)

    data.shard = shard
    try:
        fn()
        sync()
        marks.append(time.perf_counter())
    finally:
        data.shard = inner
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def settings(args, fast: bool) -> list[str]:
    return [
        f"keyframes.k={args.k}",
        f"keyframes.size={args.size}",
        f"model.width={args.width}",
        f"finetune.batch_size={args.batch}",
        f"pretrain.batch_size={args.batch}",
        f"finetune.epochs={args.epochs}",
        f"pretrain.epochs={args.epochs}",
        f"pretrain.pairs_per_epoch={args.pairs}",
        "finetune.freeze=0",
        "finetune.augment=true",
        "pretrain.augment=true",
        f"finetune.amp={str(fast).lower()}",
        f"pretrain.amp={str(fast).lower()}",
        f"resources.channels_last={str(fast).lower()}",
        f"resources.compile={str(fast and not args.cpu_smoke).lower()}",
        f"resources.table_on_device={str(fast).lower()}",
    ]


def measure(args, fast: bool, uri: str) -> dict:
    import numpy as np

    from mer import config
    from mer.models import build_classifier, count_flops
    from mer.table import fold_specs, load_table, outer_runs
    from mer.train import data, finetune, pretrain
    from mer.train.runtime import local_worker

    cfg = config.load(None, settings(args, fast))
    table = load_table(uri)
    run = outer_runs(fold_specs(table))[0]
    w = local_worker()
    n_train = len(table.indices_of(run["train_subjects"]))
    ft = timed_epochs(lambda: finetune.train_classifier(cfg, table, run, None, 3, w))
    job = {**run, "seed": 0, "run": run["id"], "dir": tempfile.mkdtemp()}
    reports = []
    real_report, real_mark = pretrain._report_epoch, pretrain.checkpoints.mark_done
    pretrain._report_epoch = lambda *a: reports.append(a[-2])
    pretrain.checkpoints.mark_done = lambda *a: None
    real_save = pretrain.checkpoints.save_state
    pretrain.checkpoints.save_state = lambda *a: None
    try:
        pt = timed_epochs(lambda: pretrain.train_prior(cfg, table, job, w))
    finally:
        pretrain._report_epoch, pretrain.checkpoints.mark_done = real_report, real_mark
        pretrain.checkpoints.save_state = real_save
    # Batch making alone, timed between synchronisations (an upper bound of the wait).
    frames = data.Frames.of(table.frames, w.device, fast)
    idx = table.indices_of(run["train_subjects"])
    t0 = time.perf_counter()
    for i in range(0, len(idx), args.batch):
        x = data.to_tensor(frames[idx[i : i + args.batch]], w.device, cfg.model.input)
        x = data.augment(x, __import__("torch").Generator().manual_seed(i))
        sync()
    prep = time.perf_counter() - t0
    flops = count_flops(build_classifier(cfg, 3), args.k, args.size)
    steady_ft, steady_pt = float(np.median(ft[1:])), float(np.median(pt[1:]))
    out = {
        "fast_path": fast,
        "finetune_epoch_s": [round(t, 3) for t in ft],
        "pretrain_epoch_s": [round(t, 3) for t in pt],
        "finetune_clips_per_s": round(n_train / steady_ft, 1),
        "pretrain_clips_per_s": round(2 * args.pairs / steady_pt, 1),
        "batch_making_share_of_finetune_epoch": round(prep / steady_ft, 4),
        "forward_gflop_per_clip": round(flops / 1e9, 2),
    }
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    for stage in ("finetune", "pretrain"):
        rate = out[f"{stage}_clips_per_s"]
        out[f"{stage}_mfu"] = round(3 * flops * rate / peak, 4) if peak else None
    return out


def loso_uf1(args, fast: bool, uri: str) -> float:
    import pandas as pd

    from mer import config
    from mer.metrics import summarise
    from mer.table import fold_specs, load_table, outer_runs
    from mer.train.finetune import train_fold_run
    from mer.train.runtime import local_worker

    cfg = config.load(None, [*settings(args, fast), "model.input=delta", "finetune.epochs=30"])
    table = load_table(uri)
    preds = [
        train_fold_run(cfg, table, run, None, 3, local_worker())
        for run in outer_runs(fold_specs(table))
    ]
    return summarise(pd.concat(preds), 3)["uf1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--out", default=str(HERE / "gpu_loops.json"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=1024)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 (H100/H200)")
    args = ap.parse_args()
    args.k, args.size, args.width, args.batch = (
        (8, 32, 0.125, 8) if args.cpu_smoke else (16, 112, 1.0, 32)
    )
    if args.cpu_smoke:
        args.pairs, args.epochs, args.peak_tflops = 32, 2, 0.0

    import torch

    from mer import config, layout
    from mer.datasets.synthetic import generate
    from mer.preprocess import build_keyframes_dataset
    from mer.testing import write_random_keyframes

    work = Path(tempfile.mkdtemp(prefix="mer-gpu-loops-"))
    uri = write_random_keyframes(
        str(work / "random"), subjects=8, clips=32, k=args.k, s=args.size, part_size=64
    )
    result = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "shape": {"k": args.k, "size": args.size, "width": args.width, "batch": args.batch},
        "loops": [measure(args, fast, uri) for fast in (False, True)],
    }
    cfg = config.load(
        None,
        [f"root={work}", f"keyframes.k={args.k}", f"keyframes.size={args.size}"],
    )
    generate(layout.data_root(cfg), preset="simple", subjects=8, clips_per_subject=6)
    build_keyframes_dataset(cfg, use_ray=False, progress=lambda s: None)
    kf = layout.keyframes_uri(cfg)
    result["loso_uf1"] = {"fp32": loso_uf1(args, False, kf), "fast": loso_uf1(args, True, kf)}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
