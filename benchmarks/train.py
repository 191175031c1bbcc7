"""Fine-tuning cost of Ray Train, and how a worker should get its fold's key frames.

    .venv/bin/python benchmarks/train.py          # table on stdout, figures in benchmarks/train.json

1. Epoch time, plain PyTorch vs Ray Train with one worker. Both run the library's own
   target-learning code on the same key-frame table and fold: plain calls
   `mer.train.finetune.train_fold_run` with `Worker(0, 1, cpu)` in a fresh Python process
   (as `python train.py` would; in this long-lived driver process, which has written the
   tables and holds Ray's client, its epochs ran about 9% slower); Ray runs
   `finetune_loop` (which calls the same `train_fold_run`) in a TorchTrainer built by
   `mer.train.runtime.make_trainer`, as `run_finetune` does. Both use the same torch thread
   count (`set_threads(resources.cpus_per_worker)`). The only instrumentation is a wrapper
   around `mer.train.data.shard`, which `train_fold_run` calls once at the start of every
   epoch: the time between two calls is one epoch's wall time (its batches: tensor
   conversion, augmentation, forward, focal loss, backward, AdamW). The first epoch and
   everything before it (imports, Ray start-up, model build) are excluded; so is the last
   epoch, which no later call closes. Runs go plain, Ray, Ray, plain (--rounds 2): plain
   before Ray starts and after it stops, so the Ray runs pay for Ray's background processes
   on this small machine and the plain ones do not.
   Table (written here, no video): 8 subjects x 6 clips, K=8, S=32, random frames whose
   colour encodes the label; model width 0.125, head 32, batch 8; fold 0 trains on 42 clips.
2. Getting one fold's training clips into a Ray Train worker, two ways, for the same table:
   (a) per-worker load, as the code does: `data.load_table(uri)` (reads the Parquet parts
   listed in _meta.json into one uint8 array) and index the fold's rows; (b) Ray Data:
   `ray.data.read_parquet(parts).filter(expr=subject in fold)` passed to the TorchTrainer
   and consumed in the worker with `get_dataset_shard("train").iter_torch_batches`
   (streaming_split underneath). Timed inside the worker; each way's second pass (the next
   epoch) too. Tables: the small one above, and one the size of the MEGC2019 composite at
   the default key-frame size (442 clips, 68 subjects, K=16, S=112: 266 MB of uint8, in
   parts of 16 clips as the key-frame stage writes them). The files are read once before
   timing, so both ways read from the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

TARGET_RAY_OVER_PLAIN = 1.10
SMALL = dict(subjects=8, clips=6, k=8, s=32)
COMPOSITE = dict(subjects=68, clips=442, k=16, s=112)  # clips in total, spread over subjects


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def write_table(uri: str, *, subjects: int, clips: int, k: int, s: int, per_subject: bool = True):
    """A finished key-frame table of random frames (label in the colour), parts of 16 clips."""
    from mer.testing.fakes import write_random_keyframes

    shutil.rmtree(uri, ignore_errors=True)
    return write_random_keyframes(
        uri,
        subjects=subjects,
        clips=clips,
        k=k,
        s=s,
        dataset="bench",
        part_size=16,
        per_subject=per_subject,
    )


def fold_run(uri: str):
    from mer.keyframes.table import fold_specs, load_table, outer_runs

    return outer_runs(fold_specs(load_table(uri)))[0]


def epoch_times(marks: list[float]) -> list[float]:
    """Steady-state epoch times from the per-epoch marks: the first interval is dropped."""
    return [b - a for a, b in zip(marks, marks[1:], strict=False)][1:]


def _timed_shard(marks: list[float]):
    """Wrap mer.train.data.shard so that each call (one per epoch) records a timestamp."""
    from mer.train import data

    inner = data.shard

    def shard(*args, **kwargs):
        marks.append(time.perf_counter())
        return inner(*args, **kwargs)

    data.shard = shard
    return inner


def timed_finetune_loop(config: dict) -> None:
    """Ray Train loop: the library's finetune_loop, with epoch marks written to a file."""
    from mer.train import data
    from mer.train.finetune import finetune_loop

    marks: list[float] = []
    inner = _timed_shard(marks)
    t0 = time.perf_counter()
    try:
        finetune_loop(config)
    finally:
        data.shard = inner
    Path(config["timings"]).write_text(
        json.dumps({"marks": marks, "loop_s": time.perf_counter() - t0, "pid": os.getpid()})
    )


def run_plain(cfg, uri: str, run) -> dict:
    import torch

    from mer.keyframes.table import load_table
    from mer.train import data
    from mer.train.finetune import train_fold_run
    from mer.train.runtime import Worker, set_threads

    set_threads(cfg.resources.cpus_per_worker)
    table = load_table(uri)
    marks: list[float] = []
    inner = _timed_shard(marks)
    t0 = time.perf_counter()
    try:
        train_fold_run(cfg, table, run, None, 3, Worker(0, 1, torch.device("cpu")))
    finally:
        data.shard = inner
    return {"marks": marks, "loop_s": time.perf_counter() - t0, "threads": torch.get_num_threads()}


def run_ray(cfg, uri: str, run: dict, work: Path, name: str) -> dict:
    from mer.train.finetune import fold_units, loop_config
    from mer.train.runtime import fit, make_trainer

    timings = work / f"{name}.json"
    units = fold_units(cfg, [run], [cfg.finetune.seed], str(work / name))
    config = {**loop_config(cfg, uri, units, {}, name), "timings": str(timings)}
    t0 = time.perf_counter()
    fit(make_trainer(timed_finetune_loop, config, cfg.resources, str(work / "_runs"), name))
    res = json.loads(timings.read_text())
    res["fit_s"] = time.perf_counter() - t0
    return res


def data_loop(config: dict) -> None:
    """Ray Train loop: one fold's training clips into this worker, both ways, two passes."""
    import numpy as np
    import ray.train

    from mer.keyframes.table import load_table

    res = {}
    # (a) per-worker load of the Parquet table, then index the fold (what mer.train does).
    for p in ("first", "second"):
        t0 = time.perf_counter()
        table = load_table(config["uri"])  # cached after the first pass, as in training
        idx = table.indices_of(config["train_subjects"])
        frames = np.ascontiguousarray(table.frames[idx])
        labels = table.clips["label"].to_numpy()[idx]
        res[f"load_table_{p}_s"] = time.perf_counter() - t0
    res["load_table_clips"] = len(frames)
    assert len(labels) == len(frames)
    del table, frames
    # (b) Ray Data shard, streamed into the worker as torch batches.
    shard = ray.train.get_dataset_shard("train")
    for p in ("first", "second"):
        t0 = time.perf_counter()
        n = 0
        for batch in shard.iter_torch_batches(batch_size=config["batch_size"]):
            n += len(batch["frames"])
        res[f"ray_data_{p}_s"] = time.perf_counter() - t0
    res["ray_data_clips"] = n
    Path(config["timings"]).write_text(json.dumps(res))


def _frames_as_tensors(batch):
    import pyarrow as pa

    from mer.keyframes.table import frames_array

    i = batch.schema.get_field_index("frames")
    frames = pa.FixedShapeTensorArray.from_numpy_ndarray(frames_array(batch))
    return batch.set_column(i, "frames", frames)


def run_data(uri: str, run: dict, work: Path, name: str, batch_size: int, resources) -> dict:
    import ray
    import ray.train
    from ray.data.expressions import col
    from ray.train.torch import TorchConfig, TorchTrainer

    from mer.keyframes.table import read_keyframes
    from mer.train.runtime import scaling_config

    meta, clips, _ = read_keyframes(uri)  # warm the page cache for both ways
    subjects = [s.split("/", 1)[1] for s in run.train_subjects]
    paths = [os.path.join(uri, p) for p in meta["parts"]]
    ds = (
        ray.data.read_parquet(paths)
        .filter(expr=col("subject").is_in(subjects))
        .select_columns(["frames", "label"])
        # The parts hold each clip's frames as one binary value (mer.keyframes.table): back to arrays.
        .map_batches(_frames_as_tensors, batch_format="pyarrow")
    )
    trainer = TorchTrainer(
        data_loop,
        train_loop_config={
            "uri": uri,
            "train_subjects": run.train_subjects,
            "batch_size": batch_size,
            "timings": str(work / f"{name}.json"),
        },
        torch_config=TorchConfig(backend="gloo"),
        # The run's own resources: ResourcesConfig()'s cpus_per_worker 0 (chosen at run time)
        # makes an empty bundle, which Ray Train refuses.
        scaling_config=scaling_config(resources),
        run_config=ray.train.RunConfig(name=name, storage_path=str(work / "_runs")),
        datasets={"train": ds},
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    m = json.loads((work / f"{name}.json").read_text())
    assert m["load_table_clips"] == m["ray_data_clips"], m
    return {"clips_in_table": len(clips), "fold_clips": m["load_table_clips"], **m}


def summarise(epochs: list[float]) -> dict:
    return {
        "epochs": len(epochs),
        "median_s": round(statistics.median(epochs), 4),
        "mean_s": round(statistics.fmean(epochs), 4),
        "min_s": round(min(epochs), 4),
        "max_s": round(max(epochs), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/mer-bench-train", help="scratch folder (replaced)")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per fine-tuning run")
    ap.add_argument("--rounds", type=int, default=2, help="plain/Ray pairs (ABBA order)")
    ap.add_argument("--threads", type=int, default=1, help="resources.cpus_per_worker")
    ap.add_argument("--no-composite", action="store_true", help="skip the 266 MB table")
    ap.add_argument("--out", default=str(HERE / "train.json"))
    ap.add_argument("--plain-child", help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (CI)")
    args = ap.parse_args()
    small_shape = SMALL
    if args.smoke:  # 3 epochs (one is timed), one round, small table only: checks the script
        args.epochs, args.rounds, args.no_composite = 3, 1, True
        small_shape = {**SMALL, "subjects": 3, "clips": 4}
    if args.plain_child:
        from mer.config import from_dict
        from mer.folds import FoldRun

        job = json.loads(args.plain_child)
        run = FoldRun.from_dict(job["run"])
        print(json.dumps(run_plain(from_dict(job["cfg"]), job["uri"], run)), flush=True)
        return

    import ray
    import torch

    from mer import config

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_before = uptime()
    print(f"load before: {load_before}", flush=True)
    small = write_table(str(work / "keyframes" / "small"), **small_shape)
    run = fold_run(small)
    cfg = config.load(
        None,
        [
            f"root={work}",
            "keyframes.k=8",
            "keyframes.size=32",
            "model.width=0.125",
            "model.head_hidden=32",
            "pretrain.enabled=false",
            f"finetune.epochs={args.epochs}",
            "finetune.batch_size=8",
            f"resources.cpus_per_worker={args.threads}",
            "resources.max_failures=0",
        ],
    )

    plain: list[dict] = []
    ray_runs: list[dict] = []

    def one_plain():
        job = json.dumps({"cfg": cfg.to_dict(), "uri": small, "run": run.to_dict()})
        child = [sys.executable, __file__, "--plain-child", job]
        out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
        plain.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  plain: epochs {_fmt(epoch_times(plain[-1]['marks']))}", flush=True)

    half = max(1, args.rounds // 2)
    for _ in range(half):
        one_plain()
    ray.init(
        address="local",
        num_cpus=args.threads + 3,  # logical: the Train controller and Ray Data tasks need slots
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        for i in range(args.rounds):
            ray_runs.append(run_ray(cfg, small, run, work, f"ray-{i}"))
            print(f"  ray:   epochs {_fmt(epoch_times(ray_runs[-1]['marks']))}", flush=True)
        loading = {"small": run_data(small, run, work, "data-small", 8, cfg.resources)}
        print(f"  data, small table: {loading['small']}", flush=True)
        if not args.no_composite:
            big = write_table(str(work / "keyframes" / "composite"), per_subject=False, **COMPOSITE)
            loading["composite"] = run_data(
                big, fold_run(big), work, "data-composite", 16, cfg.resources
            )
            print(f"  data, composite-size table: {loading['composite']}", flush=True)
    finally:
        ray.shutdown()
    for _ in range(args.rounds - half):
        one_plain()
    load_after = uptime()

    plain_epochs = [t for r in plain for t in epoch_times(r["marks"])]
    ray_epochs = [t for r in ray_runs for t in epoch_times(r["marks"])]
    ps, rs = summarise(plain_epochs), summarise(ray_epochs)
    ratio = rs["median_s"] / ps["median_s"]
    result = {
        "command": "python benchmarks/train.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "torch_threads": plain[0]["threads"],
            "uptime_before": load_before,
            "uptime_after": load_after,
        },
        "setup": {
            "table": small_shape,
            "fold_train_clips": loading["small"]["fold_clips"],
            "model": {"width": 0.125, "head_hidden": 32, "batch_norm": True},
            "finetune": {"epochs": args.epochs, "batch_size": 8, "augment": True},
        },
        "epoch_time": {
            "plain": ps,
            "ray_train_1_worker": rs,
            "plain_runs_s": [[round(t, 4) for t in epoch_times(r["marks"])] for r in plain],
            "ray_runs_s": [[round(t, 4) for t in epoch_times(r["marks"])] for r in ray_runs],
            "ray_fit_s": [round(r["fit_s"], 2) for r in ray_runs],
            "ray_loop_s": [round(r["loop_s"], 2) for r in ray_runs],
            "plain_loop_s": [round(r["loop_s"], 2) for r in plain],
            "ratio_ray_over_plain_median": round(ratio, 3),
            "target": TARGET_RAY_OVER_PLAIN,
        },
        "data_loading": {
            name: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
            for name, r in loading.items()
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print()
    print(f"{'steady-state epoch':<28} {'median s':>9} {'mean s':>8} {'epochs':>7}")
    for name, s in [("plain PyTorch", ps), ("Ray Train, 1 worker", rs)]:
        print(f"{name:<28} {s['median_s']:>9.4f} {s['mean_s']:>8.4f} {s['epochs']:>7}")
    verdict = "met" if ratio <= TARGET_RAY_OVER_PLAIN else "MISSED"
    print(f"Ray / plain: {ratio:.3f} (target <= {TARGET_RAY_OVER_PLAIN}: {verdict})")
    print()
    print(f"{'fold data into a worker':<28} {'clips':>6} {'load_table s':>13} {'Ray Data s':>11}")
    for name, r in loading.items():
        for p in ("first", "second"):
            print(
                f"{name + ' (' + p + ' pass)':<28} {r['fold_clips']:>6} "
                f"{r[f'load_table_{p}_s']:>13.4f} {r[f'ray_data_{p}_s']:>11.4f}"
            )
    print(f"load after: {load_after}")
    print(f"wrote {args.out}")


def _fmt(times: list[float]) -> str:
    return " ".join(f"{t:.3f}" for t in times)


if __name__ == "__main__":
    main()
