"""Test support: key-frame tables without video, and fault injection around the training
loops (kept here, out of the loops themselves).

The wrappers take a per-worker loop (mer.train.pretrain.pretrain_loop, ...) and return one
to pass as `loop=` to the stage's driver; they patch the loop's module in the worker
process only for the duration of the call.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time

import numpy as np
import pandas as pd

from mer import storage
from mer.keyframes.table import ClipTable, records_to_table
from mer.train import pretrain


def toy_table(subjects: int = 4, per: int = 6, k: int = 4, size: int = 16) -> ClipTable:
    """An in-memory key-frame table of random frames (seeded): `per` clips of each of
    `subjects` subjects (s0, s1, ...), labels 0, 1, 2 in turn, k key frames at 0..k-1."""
    rng = np.random.default_rng(0)
    n = subjects * per
    clips = pd.DataFrame(
        {
            "dataset": "synthetic",
            "subject": [f"s{i // per}" for i in range(n)],
            "clip": [f"c{i}" for i in range(n)],
            "label": np.arange(n) % 3,
            "apex": 2.0,
            "keyframe_indices": [np.arange(k, dtype=float) for _ in range(n)],
        }
    )
    frames = rng.integers(0, 255, (n, k, size, size, 3), dtype=np.uint8)
    return ClipTable(meta={"hash": "toy"}, clips=clips, frames=frames)


def write_random_keyframes(
    uri: str,
    *,
    subjects: int = 4,
    clips: int = 6,
    k: int = 8,
    s: int = 32,
    dataset: str = "fake",
    part_size: int = 0,
    per_subject: bool = True,
    positions: list[float] | None = None,
) -> str:
    """A finished key-frame table (parts and `_meta.json`, as mer.keyframes.preprocess writes them) of
    random frames whose colour encodes the label (clip i: label i % 3, that channel at 255).
    Every clip's key frames are at `positions` (default: frames 0..k-1).

    `clips` per subject (per_subject), or `clips` in all spread round-robin over `subjects`.
    `part_size` clips per Parquet part (0: one part). Seeded: the same arguments give the
    same table.
    """
    n = subjects * clips if per_subject else clips
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        label = i % 3
        frames = rng.integers(0, 200, (k, s, s, 3), dtype=np.uint8)
        frames[..., label] = 255
        subject = i // clips if per_subject else i % subjects
        records.append(
            {
                "dataset": dataset,
                "subject": f"s{subject:02d}",
                "clip": f"c{i:04d}",
                "label": label,
                "emotion": "x",
                "onset": 0,
                "apex": k // 2,
                "offset": k - 1,
                "apex_source": "annotated",
                "keyframe_indices": [float(j) for j in (positions or range(k))],
                "frames": frames,
                "source": "none",
                "fps": 200.0,
                "face_found": None,
            }
        )
    size = part_size or n
    parts = []
    for start in range(0, n, size):
        part = f"part-{dataset}-{start // size:05d}.parquet"
        storage.write_parquet(
            records_to_table(records[start : start + size]), storage.join(uri, part)
        )
        parts.append(part)
    storage.write_json(storage.join(uri, "_meta.json"), {"hash": dataset, "parts": parts})
    return uri


def kill_once_at_report(loop, *, run: str, epoch: int, marker: str, rank: int = 0, delay=0.0):
    """`loop`, except that the rank-`rank` worker process dies (os._exit) when it is about
    to report `epoch` of job `run`, once: a marker file records its pid. The epoch's work
    is done but not yet committed, so the replacement resumes from the epoch before."""
    fault = {"run": run, "epoch": epoch, "marker": marker, "rank": rank, "delay": delay}
    return functools.partial(_faulty, loop, fault)


def _faulty(loop, fault: dict, config: dict) -> None:
    import ray.train

    real = ray.train.report

    def report(metrics, *args, **kwargs):
        ctx = ray.train.get_context()
        hit = metrics.get("run") == fault["run"] and metrics.get("epoch") == fault["epoch"]
        if hit and ctx.get_world_rank() == fault["rank"] and not os.path.exists(fault["marker"]):
            with open(fault["marker"], "w") as f:
                f.write(str(os.getpid()))
            time.sleep(fault["delay"])
            os._exit(1)
        return real(metrics, *args, **kwargs)

    ray.train.report = report
    try:
        loop(config)
    finally:
        ray.train.report = real


def record_parameters(loop, folder: str):
    """`loop`, writing a digest of each worker's prior-learning parameters after each job
    to <folder>/<run>-rank<r>.txt (DDP replicas must end identical)."""
    return functools.partial(_recording, loop, folder)


def _recording(loop, folder: str, config: dict) -> None:

    real = pretrain.train_prior

    def train_prior(cfg, table, job, w, resume=None):
        model = real(cfg, table, job, w, resume=resume)
        # Parameters, not buffers: each replica updates BatchNorm statistics from its batch.
        h = hashlib.sha256()
        for name, t in sorted(model.named_parameters()):
            h.update(name.encode())
            h.update(t.detach().cpu().numpy().tobytes())
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{job.run}-rank{w.rank}.txt"), "w") as f:
            f.write(h.hexdigest())
        return model

    pretrain.train_prior = train_prior
    try:
        loop(config)
    finally:
        pretrain.train_prior = real
