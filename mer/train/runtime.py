"""The Ray Train and Ray Tune edges shared by both training stages.

Per-worker loops (pretrain.py, finetune.py) read like plain PyTorch and call a few functions
from here: the worker's rank and device, metric averaging, model placement. Launching is
here too: `plan_resources` sizes runs so that every reservation fits the cluster at once,
`make_trainer` builds a TorchTrainer, `fit` runs one and raises its error, and
`trainer_trial` is the one Tune trial both stages fan out with (a trial builds and fits one
TorchTrainer, the Ray Train V2 pattern).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mer.errors import ConfigError
from mer.storage import pyarrow_filesystem

# What a Tune trial that only drives a TorchTrainer reserves: Tune needs a non-zero request,
# and it counts against the same CPUs as the trainer's workers (the controller takes 0).
TRIAL_CPU = 0.01


@dataclass
class Worker:
    rank: int
    world: int
    device: torch.device

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def ray_worker() -> Worker:
    """This worker's rank, world size and device, inside a Ray Train run."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    return Worker(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())


def local_worker() -> Worker:
    """A single process outside Ray Train (benchmarks, unit tests, inference)."""
    return Worker(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


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


def compile_model(model: torch.nn.Module, resources, w: Worker):
    """`model` under torch.compile where `resources.compile` asks for it (None: on CUDA)."""
    on = resources.compile if resources.compile is not None else w.device.type == "cuda"
    return torch.compile(model) if on else model


def set_up(model: torch.nn.Module, w: Worker, channels_last: bool, resources=None):
    """A model made ready for a training loop, the same way in every loop: placed on the
    worker's device (`place`), wrapped for DDP when there are several workers, and compiled
    where `resources.compile` asks (`compile_model`; no `resources`: never). Returns
    (ddp, forward): the (wrapped) model to train and the callable that computes."""
    place(model, w, channels_last)
    ddp = model
    if w.world > 1:
        import ray.train.torch  # only inside a Ray Train worker

        ddp = ray.train.torch.prepare_model(model)
    forward = compile_model(ddp, resources, w) if resources is not None else ddp
    return ddp, forward


def adamw(params, lr: float, weight_decay: float, w: Worker) -> torch.optim.AdamW:
    """AdamW, its fused kernel on CUDA (one launch for all parameters)."""
    fused = w.device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def table_on_device(resources, w: Worker) -> bool:
    return (
        resources.table_on_device
        if resources.table_on_device is not None
        else (w.device.type == "cuda")
    )


def set_threads(cpus: float) -> None:
    """Match intra-op threads to the CPUs this worker holds: `cpus`, or (0, the config's
    "derived") the CPUs Ray reserved for this process, or all of the machine's outside Ray.

    Getting this wrong is expensive: two 1-CPU trainers that each open 2 OpenMP threads on
    2 cores ran their fold runs 5x slower than with one thread each (benchmarks/README.md,
    "Fold runs"). Call it in the thread that computes (Ray Train's training thread)."""
    if not cpus:
        cpus = ray_cpus()
    n = max(1, round(cpus)) if cpus else max(1, (os.cpu_count() or 1))
    torch.set_num_threads(n)


def ray_cpus() -> float:
    """CPUs Ray reserved for the current task or actor; 0 outside Ray and in a driver."""
    import ray

    if not ray.is_initialized():
        return 0.0
    try:
        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
    except AssertionError:  # Ray: "only available when the process is a worker" (a driver)
        return 0.0


# ---------------------------------------------------------------- resources


def plan_resources(resources, runs: int, cluster: dict | None = None):
    """(resources with cpus_per_worker resolved, concurrent runs) for `runs` runs, each a
    Tune trial (TRIAL_CPU) driving `workers` workers.

    On one node (a laptop, a single VM) everything must fit at once, or no trainer could
    start while another holds the CPU it waits for (Ray Train gives up after 60 s and
    retries): left at 0, `cpus_per_worker` and `max_concurrent` are derived so that they
    fit; set by hand, they are checked and a misfit is one sentence. On a cluster of several
    nodes, or one that autoscales from no CPUs, settings are taken as given (default one CPU
    per worker): the autoscaler adds what they ask for.
    """
    import ray

    r = copy.deepcopy(resources)
    if cluster is None:
        cluster = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    else:
        nodes = 1
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    w, runs = r.workers, max(1, runs)
    if cpus == 0 or nodes > 1:
        r.cpus_per_worker = r.cpus_per_worker or 1.0
        return r, r.max_concurrent or runs
    fit_gpu = math.inf
    if r.gpus_per_worker > 0:
        fit_gpu = math.floor(gpus / (w * r.gpus_per_worker) + 1e-9)
        if fit_gpu < 1:
            raise ConfigError(
                f"config resources: one run needs {w * r.gpus_per_worker:g} GPUs "
                f"(resources.workers x resources.gpus_per_worker) but the cluster has {gpus:g}"
            )
    if not r.cpus_per_worker:
        # Sized for as many runs as the node holds, not for how many there are: a run's CPUs
        # set its torch thread count, and the same fold run gives other numbers on another
        # thread count, so a config's results must not depend on how many runs it came with
        # (a one-configuration search, the last prior of a resumed stage).
        n = r.max_concurrent or min(fit_gpu, max(1, math.floor(cpus / w)))
        r.cpus_per_worker = math.floor(100 * (cpus / n - TRIAL_CPU) / w) / 100
        if r.cpus_per_worker <= 0:
            raise ConfigError(
                f"config resources.max_concurrent={n} leaves no CPU for each of its runs' "
                f"{w} worker(s) on this cluster's {cpus:g} CPUs; lower it or leave it 0"
            )
        return r, min(n, runs)
    per_run = w * r.cpus_per_worker + TRIAL_CPU
    fit = math.floor(cpus / per_run + 1e-9)
    if fit < 1:
        raise ConfigError(
            f"config resources: one run reserves {per_run:g} CPUs (resources.workers={w} x "
            f"resources.cpus_per_worker={r.cpus_per_worker:g} + {TRIAL_CPU} for its trial) but "
            f"the cluster has {cpus:g}; lower resources.cpus_per_worker or leave it 0"
        )
    if r.max_concurrent > min(fit, fit_gpu):
        raise ConfigError(
            f"config resources.max_concurrent={r.max_concurrent}: that many runs reserve "
            f"{r.max_concurrent * per_run:g} CPUs ({w} worker(s) x {r.cpus_per_worker:g} + "
            f"{TRIAL_CPU} each) but the cluster has {cpus:g}, so one would wait for CPUs "
            f"that never free up; use at most {min(fit, fit_gpu)} or leave it 0"
        )
    return r, min(r.max_concurrent or min(fit, fit_gpu), runs)


def scaling_config(resources) -> ray.train.ScalingConfig:  # noqa: F821
    import ray.train

    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker, **resources.worker_resources}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return ray.train.ScalingConfig(
        num_workers=resources.workers, use_gpu=use_gpu, resources_per_worker=per_worker
    )


# ---------------------------------------------------------------- launching


def make_trainer(loop, loop_config: dict, resources, storage_uri: str, name: str, callbacks=()):
    """A TorchTrainer for `loop` whose run folder is `<storage_uri>/<name>`."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

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


# Ray Train's controller polls its workers every 2 s by default and takes one report per
# worker per poll (each worker's report queue holds one), so a loop that reports more often
# waits: 20 reports in a row took 1.91 s each, 0.19 s at a 0.2 s poll (benchmarks/README.md,
# "Fold runs"). Ray passes this variable from the process that fits a trainer to its
# controller; one already set (the shell, the job's runtime environment) is left alone.
TRAIN_POLL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def fit(trainer):
    """Run a trainer to the end; its error (after the retries FailureConfig allows) is raised."""
    import os

    os.environ.setdefault(*TRAIN_POLL)
    result = trainer.fit()
    if result.error:
        raise result.error
    return result


def trainer_trial(
    loop, loop_config: Callable[[dict], tuple[dict, str]], resources, storage_uri: str
):
    """A Tune trainable (Tune records its name, "trial"; Tuner.restore checks it):
    `loop_config(params)` gives (train loop config, run name); the trial fits one
    TorchTrainer with it, forwarding every report to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    def trial(params: dict) -> None:
        config, name = loop_config(params)
        trainer = make_trainer(
            loop, config, resources, storage_uri, name, callbacks=[TuneReportCallback()]
        )
        fit(trainer)

    return ray.tune.with_resources(trial, {"CPU": TRIAL_CPU})


def tune_loggers() -> list:
    """Tune's per-trial result.json, progress.csv and TensorBoard event files. Jobs switch
    off Tune's automatic loggers at verbose 0 (mer.cli); these are asked for explicitly."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback(), TBXLoggerCallback()]


def tune_run_config(storage_uri: str, name: str, callbacks=(), max_failures: int = 0):
    """Where a Tuner keeps its state (local or s3://); progress is ours (`callbacks`).
    `max_failures`: restarts of a trial lost with its node (and the Train controller it
    hosts); the restarted trial's TorchTrainer resumes its run from storage."""
    import ray.tune

    fs, path = pyarrow_filesystem(storage_uri)
    return ray.tune.RunConfig(
        name=name,
        storage_path=path,
        storage_filesystem=fs,
        verbose=0,
        callbacks=list(callbacks),
        failure_config=ray.tune.FailureConfig(max_failures=max_failures),
    )


def fan_out(loop, loop_configs: list[tuple[dict, str]], resources, storage_uri, name, progress):
    """Fit one TorchTrainer per (loop config, run name), as many at a time as fit, each in a
    Tune trial (also a single one: its reports reach the driver's `progress` callback)."""
    import ray.tune

    r, concurrency = plan_resources(resources, len(loop_configs))
    tuner = ray.tune.Tuner(
        trainer_trial(loop, lambda p: loop_configs[p["run"]], r, storage_uri),
        param_space={"run": ray.tune.grid_search(list(range(len(loop_configs))))},
        tune_config=ray.tune.TuneConfig(max_concurrent_trials=concurrency),
        run_config=tune_run_config(storage_uri, name, [progress], r.max_failures),
    )
    results = tuner.fit()
    errors = [res.error for res in results if res.error]
    if errors:
        raise errors[0]
    return results
