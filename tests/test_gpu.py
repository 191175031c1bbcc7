"""CUDA checks of the target-learning step: bf16 autocast vs fp32, focal loss, frozen blocks.

Marked `gpu` and skipped without a CUDA device, so `make test` on a CPU machine skips them;
benchmarks/gpu.sh runs them on a GPU machine (`python -m pytest -q -m gpu tests/test_gpu.py`).
The fp32 references run with TF32 off (PyTorch lets cuDNN use TF32 for fp32 convolutions by
default, which would make the "fp32" side itself a reduced-precision result).
"""

from __future__ import annotations

import pytest
import torch

from mer.train.losses import FocalLoss, class_balance_alpha
from mer.train.models import C3D, ClassifierC3D, freeze
from mer.train.step import forward_loss, train_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (run benchmarks/gpu.sh on a GPU machine)",
    ),
]

K, S = 16, 112  # the default key-frame shape, so cuDNN runs the kernels training uses


@pytest.fixture
def cuda():
    """The CUDA device with TF32 off for the test (restored after)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield torch.device("cuda")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def classifier(width: float = 0.25, dropout: float = 0.0) -> ClassifierC3D:
    # Dropout off: the fp32 and bf16 passes must see the same network.
    torch.manual_seed(0)
    backbone = C3D(frames=K, size=S, width=width, batch_norm=True, dropout=dropout)
    return ClassifierC3D(backbone, num_classes=3, hidden=64, dropout=dropout)


def batch(device, n: int = 4):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, K, S, S, generator=g) * 2 - 1
    y = torch.tensor([0, 1, 2, 0] * (n // 4) + [1] * (n % 4))
    return x.to(device), y.to(device)


def loss_and_grads(model, x, y, loss_fn, bf16: bool):
    model.zero_grad(set_to_none=True)
    # The training step's own forward and loss (mer.train.step): forward under autocast.
    loss, logits = forward_loss(model, loss_fn, (x,), y, amp=bf16)
    loss.backward()
    grads = {n: p.grad.flatten().float() for n, p in model.named_parameters()}
    return loss.detach(), logits.detach(), grads


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def test_bf16_autocast_training_step_is_finite_and_close_to_fp32(cuda):
    model = classifier().to(cuda).train()
    x, y = batch(cuda)
    loss_fn = FocalLoss(gamma=2.0, alpha=class_balance_alpha([2, 1, 1], 0.5)).to(cuda)
    l32, z32, g32 = loss_and_grads(model, x, y, loss_fn, bf16=False)
    l16, z16, g16 = loss_and_grads(model, x, y, loss_fn, bf16=True)
    assert z16.dtype == torch.bfloat16 and l16.dtype == torch.float32
    assert torch.isfinite(l16) and all(torch.isfinite(g).all() for g in g16.values())
    assert l16.item() == pytest.approx(l32.item(), rel=0.05, abs=1e-3)
    # bf16 keeps 8 mantissa bits: logits within a few percent of their spread.
    assert (z16.float() - z32).abs().max() <= 0.1 * z32.std() + 2e-3
    # Gradients: the head's agree closely. Through the BatchNorm'd conv stack at random
    # initialisation the weight gradients are sums that mostly cancel, so bf16 rounding
    # shows more (cosine about 0.9 under CPU autocast); a broken path gives about 0.
    head = [n for n in g32 if n.startswith("head.")]
    assert cosine(torch.cat([g16[n] for n in head]), torch.cat([g32[n] for n in head])) > 0.98
    everything = cosine(torch.cat(list(g16.values())), torch.cat(list(g32.values())))
    assert everything > 0.7, f"bf16 gradient direction differs from fp32 (cosine {everything})"


def test_focal_loss_under_autocast_matches_fp32(cuda):
    g = torch.Generator().manual_seed(2)
    # Logits from confident (p near 1) to uncertain, where (1 - p)^gamma matters most.
    features = (torch.randn(256, 32, generator=g) * 3).to(cuda)
    y = torch.randint(0, 5, (256,), generator=g).to(cuda)
    head = torch.nn.Linear(32, 5).to(cuda)
    for gamma in (0.0, 0.5, 2.0):
        loss_fn = FocalLoss(gamma=gamma, alpha=[0.5, 1.0, 1.5, 1.0, 2.0]).to(cuda)
        head.zero_grad(set_to_none=True)
        ref = loss_fn(head(features), y)
        ref.backward()
        gref = head.weight.grad.clone()

        head.zero_grad(set_to_none=True)
        with torch.autocast(cuda.type, dtype=torch.bfloat16):
            logits = head(features)
            loss = loss_fn(logits, y)  # the loss itself inside the autocast region
        loss.backward()
        assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
        assert torch.isfinite(loss) and torch.isfinite(head.weight.grad).all()
        assert loss.item() == pytest.approx(ref.item(), rel=2e-2), gamma
        cos = torch.nn.functional.cosine_similarity(
            head.weight.grad.flatten(), gref.flatten(), dim=0
        )
        assert cos > 0.99, (gamma, cos.item())
        # Inside, the loss computes in fp32: bf16 logits give the loss of their fp32 values.
        with torch.autocast(cuda.type, dtype=torch.bfloat16):
            inside = loss_fn(logits.detach(), y)
        assert inside.item() == pytest.approx(loss_fn(logits.detach().float(), y).item(), rel=1e-6)


@pytest.mark.parametrize("depth", [2, 5])
def test_freeze_keeps_first_blocks_after_an_optimizer_step(cuda, depth):
    model = classifier(width=0.125, dropout=0.5).to(cuda)
    freeze(model, depth)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Every parameter goes to AdamW (with weight decay): frozen ones must still not move.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    loss_fn = FocalLoss(gamma=2.0).to(cuda)
    x, y = batch(cuda)
    model.train()
    for _ in range(2):
        train_step(model, loss_fn, opt, (x,), y, amp=True)  # what both training loops run
    after = model.state_dict()
    frozen = [
        k for k in before if k.startswith(tuple(f"backbone.blocks.{i}." for i in range(depth)))
    ]
    assert frozen and any("running_mean" in k for k in frozen)
    for k in frozen:  # weights and BatchNorm statistics alike
        assert torch.equal(before[k], after[k]), f"{k} changed although block is frozen"
    moved = [k for k in before if k not in frozen and before[k].is_floating_point()]
    assert any(not torch.equal(before[k], after[k]) for k in moved if "blocks" in k or "fc" in k)
    assert not torch.equal(before["head.3.weight"], after["head.3.weight"])


def test_training_input_on_cuda_matches_cpu(cuda):
    # mer.train.finetune converts and augments each batch on the training device, drawing
    # the augmentation from a CPU generator: the GPU must give the CPU's clips.
    from mer.train import data

    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (4, 8, 32, 32, 3), dtype=torch.uint8, generator=g).numpy()
    for input in ("frames", "delta"):
        cpu = data.to_tensor(frames, None, input)
        gpu = data.to_tensor(frames, cuda, input)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu)
        a = data.augment(cpu, torch.Generator().manual_seed(4))
        b = data.augment(gpu, torch.Generator().manual_seed(4))
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=0)


def test_key_frame_interpolator_on_cuda_renders_the_cpus_frames(cuda, tmp_path):
    # keyframes.gpus > 0: the key-frame actors load the learned interpolator onto their GPU
    # (mer.keyframes.clip_records.load_interpolator); its frames may differ from the CPU's by rounding.
    import numpy as np

    from mer.keyframes.clip_records import load_interpolator
    from mer.keyframes.interpolator import Interpolator, InterpolatorConfig

    torch.manual_seed(0)
    uri = str(tmp_path / "ip.pt")
    Interpolator(InterpolatorConfig(image_size=32, channels=3)).save(uri)
    cpu = load_interpolator(uri, 32, 3)
    gpu = load_interpolator(uri, 32, 3, cuda=True)
    assert gpu.identity.device.type == "cuda"
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    t = np.linspace(0.1, 0.9, 5)
    diff = np.abs(cpu.interpolate(a, b, t).astype(int) - gpu.interpolate(a, b, t).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
