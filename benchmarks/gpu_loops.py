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
MFU = 3 x forward FLOPs (mer.train.models.count_flops) x clips/s / the GPU's dense bf16 peak
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

from mer.testing.epoch_timing import sync, timed  # noqa: E402


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
    from mer.keyframes.table import fold_specs, load_table, outer_runs
    from mer.train import data, finetune, pretrain
    from mer.train.models import build_classifier, count_flops
    from mer.train.runtime import local_worker

    cfg = config.load(None, settings(args, fast))
    table = load_table(uri)
    run = outer_runs(fold_specs(table))[0]
    w = local_worker()
    n_train = len(table.indices_of(run.train_subjects))
    ft = timed(lambda: finetune.train_classifier(cfg, table, run, None, 3, w))[2]
    job = pretrain.PriorJob.own(run, 0, tempfile.mkdtemp())
    reports = []
    real_report, real_mark = pretrain._report_epoch, pretrain.checkpoints.mark_done
    pretrain._report_epoch = lambda *a: reports.append(a[-2])
    pretrain.checkpoints.mark_done = lambda *a: None
    real_save = pretrain.checkpoints.save_state
    pretrain.checkpoints.save_state = lambda *a: None
    try:
        pt = timed(lambda: pretrain.train_prior(cfg, table, job, w))[2]
    finally:
        pretrain._report_epoch, pretrain.checkpoints.mark_done = real_report, real_mark
        pretrain.checkpoints.save_state = real_save
    # Batch making alone, timed between synchronisations (an upper bound of the wait).
    frames = data.Frames.of(table.frames, w.device, fast)
    idx = table.indices_of(run.train_subjects)
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


def loso_uf1(args, fast: bool, uri: str, seed: int) -> dict:
    """Pooled LOSO UF1 of one seed over every fold of the table at `uri` (no prior)."""
    import pandas as pd

    from mer import config
    from mer.keyframes.table import fold_specs, load_table, outer_runs
    from mer.metrics import summarise
    from mer.train.finetune import train_fold_run
    from mer.train.runtime import local_worker

    overrides = ["model.input=delta", f"finetune.epochs={args.uf1_epochs}", f"finetune.seed={seed}"]
    cfg = config.load(None, [*settings(args, fast), *overrides])
    table = load_table(uri)
    t0 = time.perf_counter()
    preds = [
        train_fold_run(cfg, table, run, None, 3, local_worker())
        for run in outer_runs(fold_specs(table))
    ]
    s = summarise(pd.concat(preds), 3)
    return {
        "seed": seed,
        "uf1": round(s["uf1"], 4),
        "uar": round(s["uar"], 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def prior_precision(args, uri: str, amp: bool) -> dict:
    """Prior learning of fold 0 of the table at `uri` in fp32 or under bf16 autocast (the rest
    of the fast path the same): loss and pair-accuracy curves, then the k-NN accuracy of the
    final embeddings (fp32 forward, eval mode) and of the untrained network's."""
    import numpy as np
    import torch

    from mer import config
    from mer.keyframes.table import fold_specs, load_table, outer_runs
    from mer.train import pretrain
    from mer.train.models import build_siamese
    from mer.train.runtime import local_worker

    cfg = config.load(
        None,
        [
            *settings(args, True),
            f"pretrain.amp={str(amp).lower()}",
            "model.input=delta",
            f"pretrain.epochs={args.prior_epochs}",
            f"pretrain.pairs_per_epoch={args.prior_pairs}",
        ],
    )
    table = load_table(uri)
    run = outer_runs(fold_specs(table))[0]
    job = pretrain.PriorJob.own(run, 0, tempfile.mkdtemp())
    curve = []
    t0 = time.perf_counter()
    model = pretrain.train_prior(
        cfg, table, job, local_worker(), report=lambda *a: curve.append(a[-2])
    )
    seconds = time.perf_counter() - t0
    torch.manual_seed(0)
    untrained = build_siamese(cfg).to(model.projection.weight.device)
    knn = {"trained": _knn(model, table, cfg), "untrained": _knn(untrained, table, cfg)}
    return {
        "amp": amp,
        "seconds": round(seconds, 1),
        "loss": [round(m["loss"], 5) for m in curve],
        "pair_accuracy": [round(m["pair_accuracy"], 4) for m in curve],
        "knn": knn,
        "finite": bool(np.isfinite([m["loss"] for m in curve]).all()),
    }


def _knn(model, table, cfg, k: int = 5) -> dict:
    """Leave-one-subject-out k-NN (cosine) accuracy of the embeddings on the labels: each
    clip's class by majority of its k nearest clips of other subjects."""
    import numpy as np
    import torch

    from mer.train import data

    model.eval()
    device = model.projection.weight.device
    with torch.no_grad():
        z = (
            torch.cat(
                [
                    model.embed(
                        data.to_tensor(table.frames[i : i + 32], device, cfg.model.input)
                    ).float()
                    for i in range(0, len(table.frames), 32)
                ]
            )
            .cpu()
            .numpy()
        )
    labels = table.clips["label"].to_numpy()
    subjects = table.subject_keys
    sim = z @ z.T
    hits = []
    for i in range(len(z)):
        other = np.flatnonzero(subjects != subjects[i])
        near = other[np.argsort(-sim[i, other])[:k]]
        hits.append(np.bincount(labels[near], minlength=3).argmax() == labels[i])
    return {"k": k, "accuracy": round(float(np.mean(hits)), 4)}


# ---- packing: several trainings sharing one GPU (what fractional GPUs per trial give) ----


class _Stop(Exception):
    pass


def _packing_worker(rank, argv, uri, active, idle, phase, stop, out) -> None:
    """One process training the fast-path classifier for ever; each epoch start waits while
    its rank is inactive, and each finished epoch is reported as (rank, phase, start, end)."""
    from mer import config
    from mer.keyframes.table import fold_specs, load_table, outer_runs
    from mer.train import data, finetune
    from mer.train.runtime import local_worker

    args = argparse.Namespace(**argv)
    cfg = config.load(None, [*settings(args, True), "finetune.epochs=100000"])
    table = load_table(uri)
    run = outer_runs(fold_specs(table))[0]
    inner, last = data.shard, {}

    def shard(*a, **kw):
        sync()
        now = time.perf_counter()
        if last:
            out.put((rank, last["phase"], last["start"], now))
        idle[rank] = 1
        while not active[rank]:
            if stop.is_set():
                raise _Stop
            time.sleep(0.005)
        idle[rank] = 0
        last.update(phase=phase.value, start=time.perf_counter())
        return inner(*a, **kw)

    data.shard = shard
    try:
        finetune.train_classifier(cfg, table, run, None, 3, local_worker())
    except _Stop:
        pass


def packing(args, uri: str, counts=(1, 2, 4), window: float = 12.0) -> dict:
    """Aggregate fast-path training throughput with 1, 2 and 4 processes on the GPU: the
    processes compile and warm up together, then each phase runs `n` of them for `window`
    seconds; a process's rate is its whole epochs inside the phase over their span."""
    import multiprocessing as mp
    import queue

    import numpy as np

    from mer.keyframes.table import fold_specs, load_table

    table = load_table(uri)
    n_train = len(table.indices_of(fold_specs(table)[0].train_subjects))
    ctx = mp.get_context("spawn")
    n_max = max(counts)
    active, idle = ctx.Array("i", n_max), ctx.Array("i", n_max)
    phase, stop, out = ctx.Value("i", 0), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_packing_worker,
            args=(r, vars(args), uri, active, idle, phase, stop, out),
            daemon=True,
        )
        for r in range(n_max)
    ]
    for p in procs:
        p.start()
    epochs: list[tuple] = []

    def drain(until: float) -> None:
        while time.perf_counter() < until:
            try:
                epochs.append(out.get(timeout=0.05))
            except queue.Empty:
                pass

    def quiesce() -> None:
        for r in range(n_max):
            active[r] = 0
        while not all(idle[r] for r in range(n_max)):
            drain(time.perf_counter() + 0.05)

    t0 = time.perf_counter()
    for r in range(n_max):  # warm-up: compile, then two epochs each
        active[r] = 1
    while min((sum(e[0] == r for e in epochs) for r in range(n_max)), default=0) < 2:
        if time.perf_counter() - t0 > args.packing_warmup or not all(p.is_alive() for p in procs):
            stop.set()
            return {"status": "skipped: warm-up did not finish", "epochs_seen": len(epochs)}
        drain(time.perf_counter() + 0.2)
    warmup = time.perf_counter() - t0
    quiesce()
    rows = []
    for i, n in enumerate(counts, start=1):
        phase.value = i
        for r in range(n):
            active[r] = 1
        drain(time.perf_counter() + window)
        quiesce()
        drain(time.perf_counter() + 0.2)
        rates = []
        for r in range(n):
            mine = [e for e in epochs if e[0] == r and e[1] == i]
            if mine:
                span = max(e[3] for e in mine) - min(e[2] for e in mine)
                rates.append(len(mine) * n_train / span)
        rows.append(
            {
                "processes": n,
                "clips_per_s": round(float(np.sum(rates)), 1),
                "per_process": [round(x, 1) for x in rates],
                "epochs": sum(e[1] == i for e in epochs),
            }
        )
    stop.set()
    for p in procs:
        p.join(timeout=30)
    base = rows[0]["clips_per_s"]
    for row in rows:
        row["vs_one"] = round(row["clips_per_s"] / base, 3) if base else None
    return {
        "status": "ok",
        "warmup_s": round(warmup, 1),
        "window_s": window,
        "clips_per_epoch": n_train,
        "rows": rows,
    }


# ---- the MEGC-sized composite: prior + target learning time at configs/megc2019.yaml's budgets


def megc_sized(args, deadline: float) -> dict:
    """A random key-frame table of the composite's size (68 subjects, 442 clips, K=16,
    S=112): one prior at megc2019's pretrain budget per epoch (epochs timed, then projected
    to its 20) and as many target-learning fold runs at its finetune budget as time allows
    (each timed whole: its fixed cost is its time outside the epochs). Projects the
    68-fold total from them; the projection is labelled as such."""
    import numpy as np

    from mer import config
    from mer.keyframes.table import fold_specs, load_table, outer_runs
    from mer.testing.fakes import write_random_keyframes
    from mer.train import finetune, pretrain
    from mer.train.runtime import local_worker

    subjects, clips = (8, 32) if args.cpu_smoke else (68, 442)  # smoke: the script runs
    uri = write_random_keyframes(
        str(Path(tempfile.mkdtemp(prefix="mer-megc-")) / "kf"),
        subjects=subjects,
        clips=clips,
        per_subject=False,
        k=args.k,
        s=args.size,
        part_size=64,
    )
    yaml_file = str(HERE.parent / "configs" / "megc2019.yaml")
    smoke = (
        []
        if not args.cpu_smoke
        else [
            f"keyframes.k={args.k}",
            f"keyframes.size={args.size}",
            f"model.width={args.width}",
            "pretrain.pairs_per_epoch=32",
            "finetune.epochs=2",
            "resources.compile=false",
        ]
    )
    base = config.load(yaml_file, ["root=/tmp/mer-megc", *smoke])
    epochs_prior, epochs_ft = base.pretrain.epochs, base.finetune.epochs
    out_cfg = {
        "compile": base.resources.compile,
        "channels_last": base.resources.channels_last,
        "table_on_device": base.resources.table_on_device,
    }
    table = load_table(uri)
    runs = outer_runs(fold_specs(table))
    out = {
        "subjects": len(runs),
        "clips": len(table.frames),
        "pretrain": {
            "epochs": epochs_prior,
            "pairs_per_epoch": base.pretrain.pairs_per_epoch,
            "batch_size": base.pretrain.batch_size,
            "amp": base.pretrain.amp,
        },
        "finetune": {
            "epochs": epochs_ft,
            "batch_size": base.finetune.batch_size,
            "amp": base.finetune.amp,
        },
        "resources": out_cfg,
    }
    cfg = config.load(
        yaml_file, ["root=/tmp/mer-megc", *smoke, f"pretrain.epochs={args.megc_prior_epochs}"]
    )
    job = pretrain.PriorJob.own(runs[0], 0, tempfile.mkdtemp())
    t0 = time.perf_counter()
    _, _, ep = timed(
        lambda: pretrain.train_prior(cfg, table, job, local_worker(), report=lambda *a: None)
    )
    prior_s = time.perf_counter() - t0
    steady = float(np.median(ep[1:]))
    out["prior_measured"] = {
        "epochs": args.megc_prior_epochs,
        "seconds": round(prior_s, 1),
        "epoch_s": [round(t, 3) for t in ep],
        "clips_per_s": round(2 * cfg.pretrain.pairs_per_epoch / steady, 1),
    }
    prior_full = prior_s - sum(ep) + sum(ep[:1]) + steady * (epochs_prior - 1)
    cfg = base
    folds = []
    for run in runs:
        if len(folds) >= args.megc_folds or (
            folds and time.perf_counter() + folds[-1]["seconds"] > deadline
        ):
            break
        t0 = time.perf_counter()
        _, _, ep = timed(
            lambda run=run: finetune.train_fold_run(cfg, table, run, None, 3, local_worker())
        )
        total = time.perf_counter() - t0
        folds.append(
            {
                "fold": run.id,
                "seconds": round(total, 2),
                "epochs_s": round(sum(ep), 2),
                "fixed_s": round(total - sum(ep), 2),
            }
        )
    later = folds[1:] or folds
    fold_s = float(np.mean([f["seconds"] for f in later]))
    fixed_s = float(np.mean([f["fixed_s"] for f in later]))
    out["folds_measured"] = folds
    n = len(runs)
    total = n * (prior_full + fold_s)
    out["projection_68_folds"] = {
        "note": "projected from the measured epochs and fold runs, not a run of all 68 folds; "
        "one prior per fold (the pipeline's protocol); no Ray (trainer start not counted)",
        "prior_s_each": round(prior_full, 1),
        "fold_run_s_each": round(fold_s, 2),
        "total_minutes": round(total / 60, 1),
        "target_learning_minutes": round(n * fold_s / 60, 1),
        "fixed_cost_share_of_fold_run": round(fixed_s / fold_s, 4),
    }
    return out


PARTS = ("loops", "uf1", "megc", "prior_precision", "packing")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--out", default=str(HERE / "gpu_loops.json"))
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated of {PARTS}")
    ap.add_argument(
        "--budget",
        type=float,
        default=420.0,
        help="seconds; a part that would start after its share is skipped",
    )
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=2, help="UF1 seeds per path")
    ap.add_argument("--prior-epochs", type=int, default=10)
    ap.add_argument("--prior-pairs", type=int, default=512)
    ap.add_argument("--packing-warmup", type=float, default=90.0)
    ap.add_argument(
        "--simple-keyframes",
        help="a prebuilt key-frame table of the simple set at K=16, S=112 (the key-frame stage "
        "needs OpenCV's Haar cascades, which the GPU image's OpenCV lacks)",
    )
    ap.add_argument("--megc-prior-epochs", type=int, default=3)
    ap.add_argument("--uf1-epochs", type=int, default=30, help="target-learning epochs, UF1 part")
    ap.add_argument("--megc-folds", type=int, default=4, help="at most, time allowing")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 (H100/H200)")
    args = ap.parse_args()
    args.k, args.size, args.width, args.batch = (
        (8, 32, 0.125, 8) if args.cpu_smoke else (16, 112, 1.0, 32)
    )
    if args.cpu_smoke:
        args.pairs, args.epochs, args.peak_tflops = 32, 2, 0.0
        args.seeds, args.prior_epochs, args.prior_pairs, args.megc_prior_epochs = 1, 2, 32, 2
        args.megc_folds, args.packing_warmup, args.uf1_epochs = 2, 300.0, 2
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--parts: unknown {unknown}; choose from {PARTS}")

    import torch

    from mer import config, layout
    from mer.datasets.synthetic.generator import generate
    from mer.keyframes.preprocess import build_keyframes_dataset
    from mer.testing.fakes import write_random_keyframes

    started = time.perf_counter()
    deadline = started + args.budget
    work = Path(tempfile.mkdtemp(prefix="mer-gpu-loops-"))
    subjects, clips = (4, 8) if args.cpu_smoke else (8, 64)  # smoke: the script runs, no figure
    uri = write_random_keyframes(
        str(work / "random"), subjects=subjects, clips=clips, k=args.k, s=args.size, part_size=64
    )
    result = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "shape": {"k": args.k, "size": args.size, "width": args.width, "batch": args.batch},
        "parts": {},
    }

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - started, 1)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    simple = None

    def simple_set() -> str:
        nonlocal simple
        if simple is None and args.simple_keyframes:
            simple = args.simple_keyframes
        if simple is None:
            cfg = config.load(
                None, [f"root={work}", f"keyframes.k={args.k}", f"keyframes.size={args.size}"]
            )
            n = (4, 4) if args.cpu_smoke else (8, 6)  # smoke: the script runs, no figure
            generate(layout.data_root(cfg), preset="simple", subjects=n[0], clips_per_subject=n[1])
            build_keyframes_dataset(cfg, use_ray=False, progress=lambda s: None)
            simple = layout.keyframes_uri(cfg)
        return simple

    # What each part needs at least, in seconds (on an H200): one that cannot fit is skipped.
    needs = {"loops": 60, "uf1": 120, "megc": 90, "prior_precision": 60, "packing": 90}
    for part in parts:
        left = deadline - time.perf_counter()
        if left < needs[part] and not args.cpu_smoke:
            result["parts"][part] = {"status": f"skipped: {left:.0f} s of the budget left"}
            save()
            continue
        late = time.perf_counter() - started
        t0 = time.perf_counter()
        print(f"== part {part} at {late:.0f} s", flush=True)
        try:
            if part == "loops":
                value = [measure(args, fast, uri) for fast in (False, True)]
            elif part == "uf1":
                value = {
                    path: [
                        loso_uf1(args, path == "fast", simple_set(), s) for s in range(args.seeds)
                    ]
                    for path in ("fp32", "fast")
                }
            elif part == "prior_precision":
                value = [prior_precision(args, simple_set(), amp) for amp in (False, True)]
            elif part == "packing":
                value = (
                    packing(args, uri, (1, 2), window=2.0)  # smoke: the script runs
                    if args.cpu_smoke
                    else packing(args, uri, (1, 2, 4))
                )
            else:
                value = megc_sized(args, deadline)
        except Exception as e:  # one part's failure must not lose the others' figures
            import traceback

            traceback.print_exc()
            value = {"status": f"failed: {type(e).__name__}: {e}"}
        result["parts"][part] = value
        print(f"== part {part}: {time.perf_counter() - t0:.1f} s", flush=True)
        save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
