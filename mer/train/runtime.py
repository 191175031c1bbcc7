"""The Ray Train edges shared by both stages: worker context, metric averaging, launching.

Per-worker loops (pretrain.py, finetune.py) read like plain PyTorch and call these few
functions; everything Ray-specific about building a `TorchTrainer` lives in `make_trainer`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Worker:
    rank: int
    world: int
    device: torch.device

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def worker() -> Worker:
    """This worker's rank, world size and device (inside or outside a Ray Train run)."""
    try:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        return Worker(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())
    except Exception:  # plain PyTorch (benchmarks, unit tests)
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Worker(0, 1, dev)


def mean_over_workers(values: dict[str, float], w: Worker) -> dict[str, float]:
    """Average scalar metrics over DDP workers (identity with one worker)."""
    if w.world == 1 or not torch.distributed.is_initialized():
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=w.device)
    torch.distributed.all_reduce(t)
    return {k: float(v) / w.world for k, v in zip(keys, t.tolist(), strict=True)}


def place(model: torch.nn.Module, w: Worker, channels_last: bool) -> torch.nn.Module:
    """Move `model` to the worker's device; with `channels_last`, its weights and (through a
    forward pre-hook) its 5-D inputs to the channels-last-3d memory format, in which the
    convolutions run faster: C3D training steps 1.3-1.6x on one CPU core here, 1.4x on an
    H200 in bf16 (benchmarks/README.md). Values are unchanged; only the memory layout (and
    so the floating-point summation order) differs."""
    model.to(w.device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
        model.register_forward_pre_hook(_channels_last_inputs)
    return model


def _channels_last_inputs(module, args):
    return tuple(
        a.contiguous(memory_format=torch.channels_last_3d)
        if isinstance(a, torch.Tensor) and a.dim() == 5
        else a
        for a in args
    )


def set_threads(cpus: float) -> None:
    """Match intra-op threads to the CPUs Ray gave this worker (avoids oversubscription)."""
    n = max(1, int(cpus)) if cpus else max(1, (os.cpu_count() or 1))
    torch.set_num_threads(n)


def scaling_config(resources) -> ray.train.ScalingConfig:  # noqa: F821
    import ray.train

    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return ray.train.ScalingConfig(
        num_workers=max(1, resources.workers), use_gpu=use_gpu, resources_per_worker=per_worker
    )


def make_trainer(loop, loop_config: dict, resources, storage_uri: str, name: str, callbacks=()):
    """A TorchTrainer for `loop` whose run folder is `<storage_uri>/<name>`."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from mer.storage import pyarrow_filesystem

    fs, path = pyarrow_filesystem(storage_uri)
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if resources.gpus_per_worker > 0 else "gloo"),
        scaling_config=scaling_config(resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
        ),
    )
