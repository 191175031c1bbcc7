"""Losses of the two training stages: contrastive (prior learning) and focal (target learning).

ContrastiveLoss: Hadsell, Chopra and LeCun, "Dimensionality Reduction by Learning an
Invariant Mapping", CVPR 2006. FocalLoss: Lin et al., "Focal Loss for Dense Object
Detection", ICCV 2017, in its multi-class form. Zhao et al. (MERSiamC3D, 2021) name both
losses but not their settings; the margin, gamma and alpha defaults here are ours.
Both compute in float32 whatever autocast does outside them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mer.errors import ConfigError

REDUCTIONS = ("mean", "sum", "none")


class ContrastiveLoss(nn.Module):
    """L = same * d^2 + (1 - same) * max(0, margin - d)^2, averaged over pairs.

    d is the Euclidean distance between the two embeddings; `same` is 1 for a pair of the
    same class and 0 otherwise. We drop Hadsell et al.'s factor 1/2 on both terms: it only
    halves the gradient, which the learning rate absorbs. With L2-normalised embeddings
    d lies in [0, 2], so margin 1.0 asks different-class pairs to be at least 1 apart.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if not margin > 0:
            raise ConfigError(f"contrastive margin={margin} must be positive.")
        self.margin = float(margin)

    def forward(self, za: torch.Tensor, zb: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        if za.shape != zb.shape or za.ndim != 2 or same.shape != za.shape[:1]:
            raise ValueError(
                f"contrastive loss needs za, zb (N, D) and same (N,); got {tuple(za.shape)}, "
                f"{tuple(zb.shape)}, {tuple(same.shape)}"
            )
        with torch.autocast(device_type=za.device.type, enabled=False):
            diff = za.float() - zb.float()
            d2 = diff.pow(2).sum(dim=1)
            # sqrt has an infinite gradient at 0; the epsilon only matters for identical pairs.
            d = torch.sqrt(d2 + 1e-12)
            same = same.float()
            loss = same * d2 + (1 - same) * F.relu(self.margin - d).pow(2)
            return loss.mean()


class EpisodeContrastiveLoss(nn.Module):
    """The contrastive loss of ContrastiveLoss over every pair of one episode's embeddings.

    target is (N, 2): each clip's class and an integer id of its subject. Positive pairs
    share a class and come from different subjects (a same-subject pair would let identity
    stand in for expression); negative pairs differ in class, from any subject (a
    same-subject negative is a hard one: it pushes identity apart). The two means are
    averaged, so positives and negatives weigh equally as in ContrastiveLoss's balanced
    pairs; an episode without one kind contributes the other only. Our reconstruction of
    "inspired by few-shot learning" (episodes of mer.train.data.sample_episodes).
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if not margin > 0:
            raise ConfigError(f"contrastive margin={margin} must be positive.")
        self.margin = float(margin)

    def forward(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or target.shape != (len(z), 2):
            raise ValueError(
                f"episode contrastive loss needs z (N, D) and target (N, 2); got "
                f"{tuple(z.shape)} and {tuple(target.shape)}"
            )
        with torch.autocast(device_type=z.device.type, enabled=False):
            d2, pos, neg = episode_pairs(z.float(), target)
            d = torch.sqrt(d2 + 1e-12)
            parts = []
            if pos.any():
                parts.append(d2[pos].mean())
            if neg.any():
                parts.append(F.relu(self.margin - d[neg]).pow(2).mean())
            return torch.stack(parts).mean() if parts else z.sum() * 0.0


def episode_pairs(z: torch.Tensor, target: torch.Tensor):
    """(squared distances, positive mask, negative mask) over the pairs i < j of an episode:
    positives share a class across subjects, negatives differ in class."""
    n = len(z)
    i, j = torch.triu_indices(n, n, 1, device=z.device)
    d2 = (z[i] - z[j]).pow(2).sum(dim=1)
    label, subject = target[:, 0], target[:, 1]
    same = label[i] == label[j]
    return d2, same & (subject[i] != subject[j]), ~same


class FocalLoss(nn.Module):
    """Multi-class focal loss FL = -alpha_y (1 - p_y)^gamma log p_y.

    gamma=0 with alpha None is cross-entropy. `alpha` is None (all ones) or one weight per
    class (see class_balance_alpha). reduction "mean" divides by the number of samples as
    Lin et al. do, not by the sum of the weights as torch's weighted cross_entropy does.
    Logits are cast to float32 inside, so the loss is the same under bf16/fp16 autocast.
    Targets must be class indices in [0, C); they are not checked here (that would force a
    GPU sync per step): labels are validated when the manifest is built.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Sequence[float] | torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if not gamma >= 0:
            raise ConfigError(f"focal gamma={gamma} must be >= 0.")
        if reduction not in REDUCTIONS:
            raise ConfigError(f"focal reduction={reduction!r} must be one of {REDUCTIONS}.")
        self.gamma = float(gamma)
        self.reduction = reduction
        if alpha is not None:
            alpha = torch.as_tensor(alpha, dtype=torch.float32).flatten()
            if alpha.numel() == 0 or not torch.isfinite(alpha).all() or (alpha < 0).any():
                raise ConfigError(
                    f"focal alpha={alpha.tolist()} must be one finite, non-negative weight "
                    "per class."
                )
        self.register_buffer("alpha", alpha)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or target.shape != logits.shape[:1]:
            raise ValueError(
                f"focal loss needs logits (N, C) and target (N,); got {tuple(logits.shape)} "
                f"and {tuple(target.shape)}"
            )
        if self.alpha is not None and self.alpha.numel() != logits.shape[1]:
            raise ConfigError(
                f"focal alpha has {self.alpha.numel()} weights but the model has "
                f"{logits.shape[1]} classes; give one weight per class."
            )
        with torch.autocast(device_type=logits.device.type, enabled=False):
            target = target.long()
            logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None])[:, 0]
            loss = -logp
            if self.gamma > 0:
                # 1 - p computed as -expm1(log p) stays accurate when p is near 1; the floor
                # keeps the gradient of (1 - p)^gamma finite for gamma < 1 when p == 1.
                one_minus_p = (-torch.expm1(logp)).clamp_min(1e-12)
                loss = one_minus_p.pow(self.gamma) * loss
            if self.alpha is not None:
                loss = self.alpha[target] * loss
            if self.reduction == "mean":
                return loss.mean()
            if self.reduction == "sum":
                return loss.sum()
            return loss


def class_balance_alpha(
    counts: Sequence[float] | np.ndarray | torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-class focal weights alpha_c proportional to n_c^-beta, with mean 1.

    beta=0 gives all ones, beta=1 inverse class frequency; values in between soften it (our
    reconstruction: the paper does not say how its alpha was set). A class with count 0 gets
    alpha 0 (it has no training samples, so its weight never enters the loss) and the mean
    is taken over the classes present, so the loss keeps the scale of cross-entropy.
    """
    if not 0 <= beta <= 1:
        raise ConfigError(f"class-balance beta={beta} must be in [0, 1].")
    n = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if n.numel() == 0 or not torch.isfinite(n).all() or (n < 0).any() or not (n > 0).any():
        raise ConfigError(
            f"class counts {n.tolist()} must be non-negative with at least one class present."
        )
    present = n > 0
    alpha = torch.zeros_like(n)
    alpha[present] = n[present].pow(-float(beta))
    alpha[present] /= alpha[present].mean()
    return alpha.float()
