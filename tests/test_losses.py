"""Focal and contrastive losses against their formulas; class-balanced alpha."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mer.errors import ConfigError
from mer.train.losses import ContrastiveLoss, EpisodeContrastiveLoss, FocalLoss, class_balance_alpha


def _focal_by_hand(logits, target, gamma, alpha):
    p = torch.softmax(logits.double(), dim=1)[torch.arange(len(target)), target]
    a = torch.ones(len(target), dtype=torch.float64) if alpha is None else alpha.double()[target]
    return -a * (1 - p) ** gamma * torch.log(p)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, [0.5, 1.0, 1.5]])
def test_focal_equals_formula(gamma, alpha):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 3, generator=g) * 3
    target = torch.randint(0, 3, (32,), generator=g)
    a = None if alpha is None else torch.tensor(alpha)
    expected = _focal_by_hand(logits, target, gamma, a).float()
    per_sample = FocalLoss(gamma, alpha, reduction="none")(logits, target)
    torch.testing.assert_close(per_sample, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(FocalLoss(gamma, alpha)(logits, target), expected.mean())
    torch.testing.assert_close(
        FocalLoss(gamma, alpha, reduction="sum")(logits, target), expected.sum()
    )


def test_focal_gamma0_uniform_alpha_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 3, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (16,), generator=g)
    for alpha in (None, [1.0, 1.0, 1.0]):
        ours = FocalLoss(gamma=0.0, alpha=alpha)(logits, target)
        torch.testing.assert_close(ours, F.cross_entropy(logits, target))


def test_focal_down_weights_easy_examples():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
    target = torch.tensor([0, 0])
    ce = FocalLoss(gamma=0.0, reduction="none")(logits, target)
    fl = FocalLoss(gamma=2.0, reduction="none")(logits, target)
    # The confident (easy) example loses far more of its weight than the hard one.
    assert fl[0] / ce[0] < 0.01 < 0.3 < fl[1] / ce[1]


def test_focal_amp_safe_under_bf16_autocast():
    torch.manual_seed(2)
    layer = torch.nn.Linear(8, 3)
    x = torch.randn(64, 8) * 4
    target = torch.randint(0, 3, (64,))
    loss_fn = FocalLoss(gamma=2.0, alpha=[0.7, 1.2, 1.1])
    reference = loss_fn(layer(x), target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        assert logits.dtype == torch.bfloat16  # autocast really is on
        loss = loss_fn(logits, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, reference, rtol=0.05, atol=1e-3)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_focal_computes_in_float32_from_low_precision_logits(dtype):
    # Logits of a model run in bf16/fp16 (autocast may leave them so on GPU): the loss is
    # still float32 and equals the float32 loss of the same (rounded) logits.
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(64, 3, generator=g) * 20).to(dtype)
    target = torch.randint(0, 3, (64,), generator=g)
    loss_fn = FocalLoss(gamma=2.0, reduction="none")
    loss = loss_fn(logits, target)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, loss_fn(logits.float(), target), rtol=0, atol=0)


def test_focal_gradient_finite_when_certain():
    logits = torch.tensor([[60.0, 0.0, 0.0]], requires_grad=True)  # p_y == 1 in float32
    FocalLoss(gamma=0.5)(logits, torch.tensor([0])).backward()
    assert torch.isfinite(logits.grad).all()


def test_focal_bad_config():
    with pytest.raises(ConfigError, match="gamma=-1"):
        FocalLoss(gamma=-1)
    with pytest.raises(ConfigError, match="reduction"):
        FocalLoss(reduction="avg")
    with pytest.raises(ConfigError, match="alpha"):
        FocalLoss(alpha=[1.0, -1.0, 1.0])
    with pytest.raises(ConfigError, match="2 weights but the model has 3 classes"):
        FocalLoss(alpha=[1.0, 1.0])(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_contrastive_equals_formula():
    g = torch.Generator().manual_seed(3)
    za = F.normalize(torch.randn(20, 8, generator=g), dim=1)
    zb = F.normalize(torch.randn(20, 8, generator=g), dim=1)
    zb[:3] = za[:3]  # identical pairs: d = 0
    same = torch.randint(0, 2, (20,), generator=g)
    same[:3] = torch.tensor([1, 0, 1])
    margin = 1.2
    d = (za - zb).double().norm(dim=1)
    expected = same * d**2 + (1 - same) * torch.clamp(margin - d, min=0) ** 2
    loss = ContrastiveLoss(margin)(za, zb, same)
    torch.testing.assert_close(loss, expected.mean().float())
    # bool masks work the same way.
    torch.testing.assert_close(ContrastiveLoss(margin)(za, zb, same.bool()), loss)


def test_contrastive_gradients_pull_same_push_different():
    za = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    zb = torch.tensor([[0.6, 0.8], [0.6, 0.8]], requires_grad=True)  # d ~ 0.89
    ContrastiveLoss(margin=1.5)(za, zb, torch.tensor([1, 0])).backward()
    toward_a = za[0] - zb[0].detach()
    assert torch.dot(-zb.grad[0], toward_a) > 0  # same: a descent step moves b toward a
    assert torch.dot(-zb.grad[1], toward_a) < 0  # different: away from a
    with pytest.raises(ConfigError, match="margin=0"):
        ContrastiveLoss(margin=0)


def test_episode_contrastive_takes_every_pair_positives_across_subjects_only():
    g = torch.Generator().manual_seed(4)
    z = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    label = torch.tensor([0, 0, 0, 1, 1, 2])
    subject = torch.tensor([0, 0, 1, 2, 2, 3])  # (0, 1) and (3, 4) share a subject
    margin = 1.3
    pos, neg = [], []
    for i in range(6):
        for j in range(i + 1, 6):
            d = (z[i] - z[j]).double().norm()
            if label[i] != label[j]:
                neg.append(torch.clamp(margin - d, min=0) ** 2)
            elif subject[i] != subject[j]:
                pos.append(d**2)
    assert len(pos) == 2  # (0, 2) and (1, 2): same-subject positives are left out
    expected = 0.5 * (torch.stack(pos).mean() + torch.stack(neg).mean())
    loss = EpisodeContrastiveLoss(margin)(z, torch.stack([label, subject], dim=1))
    torch.testing.assert_close(loss, expected.float())
    # Only negatives: the loss is their mean alone.
    only_neg = EpisodeContrastiveLoss(margin)(z[[0, 3, 5]], torch.tensor([[0, 0], [1, 1], [2, 2]]))
    d = torch.cdist(z[[0, 3, 5]].double(), z[[0, 3, 5]].double())[[0, 0, 1], [1, 2, 2]]
    torch.testing.assert_close(only_neg, (torch.clamp(margin - d, min=0) ** 2).mean().float())


def test_class_balance_alpha_mean_one_and_order():
    counts = [250, 109, 83]  # MEGC2019 composite: negative, positive, surprise
    for beta in (0.25, 0.5, 1.0):
        alpha = class_balance_alpha(counts, beta)
        assert alpha.dtype == torch.float32
        assert alpha.mean().item() == pytest.approx(1.0, abs=1e-6)
        assert alpha[0] < alpha[1] < alpha[2]  # rarer class, larger weight
    inverse = class_balance_alpha(counts, 1.0)
    assert (inverse * torch.tensor(counts, dtype=torch.float32)).std() < 1e-3  # alpha * n const
    torch.testing.assert_close(class_balance_alpha(counts, 0.0), torch.ones(3))


def test_class_balance_alpha_absent_class_and_errors():
    alpha = class_balance_alpha([10, 0, 40], 0.5)
    assert alpha[1] == 0
    assert alpha[[0, 2]].mean().item() == pytest.approx(1.0)
    assert alpha[0] > alpha[2]
    with pytest.raises(ConfigError, match="beta=1.5"):
        class_balance_alpha([1, 2, 3], 1.5)
    with pytest.raises(ConfigError, match="counts"):
        class_balance_alpha([0, 0, 0], 0.5)
    with pytest.raises(ConfigError, match="counts"):
        class_balance_alpha([3, -1, 2], 0.5)
