"""One training step and one prediction pass: what both training loops, the GPU benchmark and
the GPU tests run, so what is measured is what trains.

The forward pass runs under bf16 autocast when `amp` is set (CUDA); the losses compute in
float32 whatever autocast does outside them (mer.train.losses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from mer.train.data import to_tensor


def forward_loss(
    model: torch.nn.Module, loss_fn, inputs: tuple, target: torch.Tensor, *, amp: bool = False
) -> tuple[torch.Tensor, Any]:
    """(loss, model outputs) for one batch; a model returning a tuple (the siamese pair)
    passes every element to the loss before `target`."""
    with torch.autocast(target.device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    return loss_fn(*outs, target), out


def train_step(
    model: torch.nn.Module,
    loss_fn,
    optimizer: torch.optim.Optimizer,
    inputs: tuple,
    target: torch.Tensor,
    *,
    amp: bool = False,
) -> tuple[torch.Tensor, Any]:
    """Forward, loss, backward, optimiser step; returns the (detached) loss and outputs."""
    loss, out = forward_loss(model, loss_fn, inputs, target, amp=amp)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), out


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    frames: np.ndarray,
    device: torch.device,
    *,
    amp: bool = False,
    input: str = "frames",
    batch_size: int = 64,
) -> np.ndarray:
    """Softmax probabilities (N, C) of a classifier for uint8 key frames (N, K, S, S, C)."""
    batches = eval_batches(
        model, model, frames, device, amp=amp, input=input, batch_size=batch_size
    )
    out = [torch.softmax(logits.float(), dim=1).cpu().numpy() for logits in batches]
    return np.concatenate(out) if out else np.zeros((0, 1))


@torch.no_grad()
def eval_batches(
    model: torch.nn.Module,
    forward: Callable[[torch.Tensor], Any],
    frames: np.ndarray,
    device: torch.device,
    *,
    amp: bool = False,
    input: str = "frames",
    batch_size: int = 64,
) -> Iterator[Any]:
    """`forward(x)` of each batch of uint8 key frames in turn, `model` in eval mode, under bf16
    autocast when `amp` is set (predict's pass; mer.serving.quality's takes the features too)."""
    model.eval()
    for i in range(0, len(frames), batch_size):
        x = to_tensor(frames[i : i + batch_size], device, input)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = forward(x)
        yield out


@torch.no_grad()
def recompute_norms(
    model: torch.nn.Module,
    forward,
    frames,
    idx: np.ndarray,
    device: torch.device,
    *,
    input: str = "frames",
    batch_size: int = 32,
) -> int:
    """Replace every BatchNorm's running statistics in `model` by their plain average over the
    clips `idx` of `frames` (a data.Frames or an array), passed through `forward` in train mode
    ("precise BN"). The running averages a training run leaves (momentum 0.1, starting from
    mean 0 and variance 1) still carry the initial values after a few dozen steps; with the
    small onset-delta inputs that variance swamps the real one and every clip looks alike in
    eval mode. Frozen blocks (already in eval mode) keep theirs. Returns the norms updated."""
    kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    norms = [m for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    model.train()
    live = [m for m in norms if m.training]
    momenta = [m.momentum for m in live]
    for m in live:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    try:
        # Near-equal batches: the cumulative average weighs every batch the same.
        for batch in np.array_split(np.asarray(idx), max(1, -(-len(idx) // batch_size))):
            if len(batch):
                forward(to_tensor(frames[batch], device, input))
    finally:
        for m, momentum in zip(live, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return len(live)
