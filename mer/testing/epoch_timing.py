"""The wall time of a training call and of each of its epochs, measured between CUDA
synchronisations (the GPU benchmarks: benchmarks/gpu_loops.py, benchmarks/gpu_protocol.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

from mer.train import data

T = TypeVar("T")


def sync() -> None:
    """Wait for the work queued on the GPU (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], T]) -> tuple[T, float, list[float]]:
    """(fn(), seconds, per-epoch seconds): epochs marked by mer.train.data.shard's calls
    (once per epoch), between CUDA synchronisations."""
    marks, inner = [], data.shard

    def shard(*args, **kwargs):
        sync()
        marks.append(time.perf_counter())
        return inner(*args, **kwargs)

    data.shard = shard
    t0 = time.perf_counter()
    try:
        value = fn()
        sync()
    finally:
        data.shard = inner
    end = time.perf_counter()
    marks.append(end)
    return value, end - t0, [b - a for a, b in zip(marks, marks[1:], strict=False)]
