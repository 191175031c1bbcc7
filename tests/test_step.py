"""The one training step and its fast paths, on the CPU: compiled, and with the key-frame
table held where the batches are made (the GPU paths run the same code; tests/test_gpu.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests_paths import TINY

from mer import config
from mer.train import data
from mer.train.losses import FocalLoss
from mer.train.models import C3D, ClassifierC3D
from mer.train.runtime import Worker, compile_model
from mer.train.step import forward_loss, train_step


def tiny(seed: int = 0) -> ClassifierC3D:
    torch.manual_seed(seed)
    # No dropout: the compiled and eager passes must see the same network.
    backbone = C3D(frames=8, size=32, width=0.125, batch_norm=True, dropout=0.0)
    return ClassifierC3D(backbone, 3, 16, 0.0)


def test_frames_on_the_device_give_the_same_batches():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (10, 8, 32, 32, 3), dtype=np.uint8)
    host = data.Frames(frames, torch.device("cpu"), on_device=False)
    dev = data.Frames(frames, torch.device("cpu"), on_device=True)
    idx = np.array([7, 2, 2, 9])
    assert isinstance(dev[idx], torch.Tensor) and isinstance(host[idx], np.ndarray)
    for input in ("frames", "delta"):
        torch.testing.assert_close(
            data.to_tensor(dev[idx], None, input), data.to_tensor(host[idx], None, input)
        )


def test_a_fold_run_with_the_table_on_the_device_is_the_same_run(fake_keyframes):
    from mer.keyframes.table import fold_specs, load_table, outer_runs
    from mer.train.finetune import train_fold_run

    table = load_table(fake_keyframes)
    run = outer_runs(fold_specs(table))[0]
    w = Worker(0, 1, torch.device("cpu"))
    probs = []
    for on in ("false", "true"):
        cfg = config.load(
            None,
            [
                *TINY,
                "model.head_hidden=16",
                "finetune.epochs=2",
                "pretrain.enabled=false",
                f"resources.table_on_device={on}",
            ],
        )
        probs.append(np.stack(train_fold_run(cfg, table, run, None, 3, w)["probs"]))
    np.testing.assert_array_equal(probs[0], probs[1])


@pytest.mark.slow
def test_the_compiled_step_trains_like_the_eager_one():
    # torch.compile on the CPU (inductor, C++): about a minute here, so marked slow.
    x = torch.rand(4, 3, 8, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 2, 0])
    losses = []
    for compiled in (False, True):
        model = tiny()
        res = config.load(None, [f"resources.compile={str(compiled).lower()}"]).resources
        forward = compile_model(model, res, Worker(0, 1, torch.device("cpu")))
        assert (forward is not model) == compiled
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        run = [train_step(forward, FocalLoss(2.0), opt, (x,), y)[0].item() for _ in range(3)]
        losses.append(run + [forward_loss(forward, FocalLoss(2.0), (x,), y)[0].item()])
    # The same function: the first loss agrees to float precision; after optimiser steps the
    # two summation orders drift apart a little.
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-5)
    np.testing.assert_allclose(losses[1], losses[0], rtol=0.05)
    assert losses[1][-1] < losses[1][0]  # it learns


def test_recomputed_norms_are_the_average_over_the_given_clips():
    from mer.train.models import freeze
    from mer.train.step import recompute_norms

    model = tiny()
    freeze(model, 1)  # block 0 frozen: its statistics must stay
    frozen = model.backbone.blocks[0][1]
    frozen.running_mean.fill_(0.25)
    frames = np.random.default_rng(0).integers(0, 256, (14, 8, 32, 32, 3), dtype=np.uint8)
    idx = np.arange(2, 14)  # 12 clips, 3 equal batches of 4
    model.eval()
    live = model.backbone.blocks[1][1]  # the first BatchNorm of block 1
    with torch.no_grad():
        x = data.to_tensor(frames[idx], None, "delta")
        seen = model.backbone.blocks[1][0](model.backbone.blocks[0](x)).mean(dim=(0, 2, 3, 4))
    assert not torch.allclose(live.running_mean, seen)
    n = recompute_norms(model, model, frames, idx, torch.device("cpu"), input="delta", batch_size=4)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert n == len(norms) - 1  # every norm but the frozen block's
    torch.testing.assert_close(live.running_mean, seen, rtol=1e-4, atol=1e-6)
    assert torch.all(frozen.running_mean == 0.25)
    assert all(m.momentum == 0.1 for m in norms)
    assert not model.training
