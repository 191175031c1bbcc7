"""What a fold run costs beyond its compute: bare PyTorch vs the library vs Ray Train.

    .venv/bin/python benchmarks/fold_runs.py          # table on stdout, figures in fold_runs.json

The same target-learning work three ways, one CPU thread each, on the demo's shape (K=8,
S=32, width 0.125, 8 subjects x 6 clips, 8 LOSO folds of 42 training clips, random frames
whose colour encodes the label; no video):
  bare     a hand-written loop: model, AdamW, focal loss, the fold's batches from tensors
           made beforehand, then one prediction pass over the held-out clips. Nothing else.
  library  mer.train.finetune.train_fold_run per fold, in this process (tensors per batch,
           class weights, the model built and placed as training does).
  ray      mer.train.finetune.run_finetune: one TorchTrainer in a Tune trial running all 8
           fold runs in turn, as a search's configuration does. Per fold: the `seconds`
           each unit recorded; in all: the wall time including Tune and trainer start-up.
Ratios are against `bare` measured in the same run. A second table times the bare step at
several batch sizes (clips/s), the knob the demo's budget depends on most.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SHAPE = dict(subjects=8, clips=6, k=8, s=32)
MODEL = ["model.width=0.125", "model.head_hidden=64", "model.input=delta", "pretrain.enabled=false"]


def bare(cfg, table, runs) -> float:
    """Seconds for every fold run as a minimal PyTorch loop."""
    import numpy as np
    import torch

    from mer.train.data import to_tensor
    from mer.train.losses import FocalLoss, class_balance_alpha
    from mer.train.models import build_classifier, freeze

    ft = cfg.finetune
    labels = table.clips["label"].to_numpy()
    t0 = time.perf_counter()
    for run in runs:
        tr, te = table.indices_of(run.train_subjects), table.indices_of(run.test_subjects)
        x = to_tensor(table.frames[tr], None, cfg.model.input)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        xt = to_tensor(table.frames[te], None, cfg.model.input)
        y = torch.from_numpy(labels[tr])
        torch.manual_seed(0)
        model = build_classifier(cfg, 3).to(memory_format=torch.channels_last_3d)
        freeze(model, ft.freeze)
        opt = torch.optim.AdamW(model.parameters(), lr=ft.lr, weight_decay=ft.weight_decay)
        loss_fn = FocalLoss(
            ft.gamma, class_balance_alpha(np.bincount(labels[tr], minlength=3), ft.beta)
        )
        rng = np.random.default_rng(0)
        model.train()
        for _ in range(ft.epochs):
            order = torch.from_numpy(rng.permutation(len(tr)))
            for i in range(0, len(order), ft.batch_size):
                b = order[i : i + ft.batch_size]
                loss = loss_fn(model(x[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            model(xt.contiguous(memory_format=torch.channels_last_3d))
    return time.perf_counter() - t0


def library(cfg, table, runs) -> float:
    from mer.train.finetune import train_fold_run
    from mer.train.runtime import local_worker

    t0 = time.perf_counter()
    for run in runs:
        train_fold_run(cfg, table, run, None, 3, local_worker())
    return time.perf_counter() - t0


def step_speed(cfg, table, batch: int, seconds: float = 4.0) -> float:
    """Training clips per second of the bare step at one batch size."""
    import torch

    from mer.train.data import to_tensor
    from mer.train.losses import FocalLoss
    from mer.train.models import build_classifier

    x = to_tensor(table.frames[:batch], None, cfg.model.input)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    y = torch.from_numpy(table.clips["label"].to_numpy()[:batch])
    model = build_classifier(cfg, 3).to(memory_format=torch.channels_last_3d).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = FocalLoss(2.0)
    n, t0 = 0, None
    while t0 is None or time.perf_counter() - t0 < seconds:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if t0 is None:
            t0 = time.perf_counter()  # the first step warms up
        else:
            n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/mer-bench-folds", help="scratch folder (replaced)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=str(HERE / "fold_runs.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (CI)")
    args = ap.parse_args()
    shape, rounds, step_seconds = SHAPE, 2, 4.0
    if args.smoke:  # 3 folds, one epoch: checks that the script runs, measures nothing
        shape, rounds, step_seconds, args.epochs = {**SHAPE, "subjects": 3, "clips": 4}, 1, 0.2, 1

    import ray
    import torch

    from mer import config
    from mer.keyframes.table import fold_specs, load_table, outer_runs
    from mer.testing.fakes import write_random_keyframes
    from mer.train.finetune import run_finetune

    torch.set_num_threads(1)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    uri = write_random_keyframes(str(work / "kf"), **shape)
    table = load_table(uri)
    runs = outer_runs(fold_specs(table))
    cfg = config.load(
        None,
        [
            f"root={work}",
            "keyframes.k=8",
            "keyframes.size=32",
            *MODEL,
            f"finetune.epochs={args.epochs}",
            f"finetune.batch_size={args.batch}",
            "finetune.augment=false",
            "resources.cpus_per_worker=1",
        ],
    )
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"load before: {load}", flush=True)
    times = {"bare": [], "library": []}
    for _ in range(rounds):  # bare, library, library, bare: drift in the machine's load cancels
        times["bare"].append(bare(cfg, table, runs))
        times["library"].append(library(cfg, table, runs))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    preds = run_finetune(cfg, uri, runs, "bench", progress=lambda s: None)
    ray_wall = time.perf_counter() - t0
    ray.shutdown()
    ray_units = float(preds.groupby("run")["seconds"].first().sum())
    b = min(times["bare"])
    result = {
        "machine": platform.processor() or platform.machine(),
        "load_before": load,
        "folds": len(runs),
        "epochs": args.epochs,
        "batch_size": args.batch,
        "bare_s": round(b, 2),
        "library_s": round(min(times["library"]), 2),
        "ray_units_s": round(ray_units, 2),
        "ray_wall_s": round(ray_wall, 2),
        "library_over_bare": round(min(times["library"]) / b, 3),
        "ray_units_over_bare": round(ray_units / b, 3),
        "ray_wall_over_bare": round(ray_wall / b, 3),
        "fixed_cost_s": round(ray_wall - ray_units, 2),
        "step_clips_per_s": {
            str(n): round(step_speed(cfg, table, n, step_seconds), 1) for n in (8, 16, 32)
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
