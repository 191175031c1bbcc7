"""C3D backbone, the siamese prior-learning model and the target-learning classifier.

C3D follows Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks",
ICCV 2015: eight 3x3x3 convolutions (stride 1, padding 1) in five blocks with
64-128-256-256-512-512-512-512 channels, pool1 1x2x2 and pool2..pool5 2x2x2 (pool5 padded
0x1x1, as the common PyTorch port does to match Caffe's ceil-mode pooling: 512x1x4x4 = 8192
inputs to fc6 at 16x112x112), then fc6 and fc7 with 4096 units, ReLU and dropout 0.5. Zhao et al. (Neurocomputing 2021, "MERSiamC3D") pre-train it as a siamese
network on clip pairs (prior learning) and then adjust its structure and fine-tune it with
focal loss (target learning). The paper's abstract gives no more detail, so these are our
reconstruction and configurable: the `width` multiplier, optional BatchNorm, the embedding
projection of `SiameseC3D`, the head of `ClassifierC3D`, and freezing by whole conv block.

Input is N,C,K,S,S (channels, key frames, height, width), float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from mer.errors import ConfigError

# C3D channels per conv layer, grouped by block (Tran et al. 2015, Fig. 3).
C3D_BLOCKS = ((64,), (128,), (256, 256), (512, 512), (512, 512))
C3D_FC = 4096


@dataclass
class C3DConfig:
    # Input clip.
    in_channels: int = 3
    frames: int = 16  # K key frames
    size: int = 112  # S, height = width
    # Capacity: channels and fc units are scaled by `width` (ours; 1.0 is the paper's C3D).
    width: float = 1.0
    batch_norm: bool = False  # ours; the original C3D has no normalisation
    dropout: float = 0.5  # fc6/fc7 dropout, as Tran et al.

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ConfigError(f"C3D in_channels={self.in_channels} must be at least 1.")
        if self.size < 16 or self.size % 16:
            raise ConfigError(
                f"C3D size={self.size} must be a positive multiple of 16 (four 2x spatial "
                "pools); resize key frames to e.g. 64 or 112."
            )
        if self.frames < 2:
            raise ConfigError(
                f"C3D frames={self.frames} must be at least 2; build more key frames per clip."
            )
        if not self.width > 0:
            raise ConfigError(f"C3D width={self.width} must be positive.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"C3D dropout={self.dropout} must be in [0, 1).")

    def scaled(self, channels: int) -> int:
        return max(1, round(channels * self.width))


def _pool_out(n: int, kernel: int, padding: int = 0) -> int:
    return (n + 2 * padding - kernel) // kernel + 1


class C3D(nn.Module):
    """C3D feature extractor: five conv blocks, fc6, fc7. No classification layer."""

    def __init__(
        self,
        *,
        in_channels: int = 3,
        frames: int = 16,
        size: int = 112,
        width: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        cfg = C3DConfig(in_channels, frames, size, width, batch_norm, dropout)
        self.config = cfg
        self.frozen_depth = 0  # set by freeze(); checked in train()

        blocks = []
        c_in, t, s = in_channels, frames, size
        for i, layer_channels in enumerate(C3D_BLOCKS):
            layers: list[nn.Module] = []
            for c in layer_channels:
                c_out = cfg.scaled(c)
                layers.append(nn.Conv3d(c_in, c_out, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm3d(c_out))
                layers.append(nn.ReLU(inplace=True))
                c_in = c_out
            # pool1 keeps time (Tran et al.: "not to merge the temporal signal too early");
            # once time is down to 1 the temporal kernel becomes 1, so K=8 (or K=2) still fits.
            kt = 1 if i == 0 or t == 1 else 2
            pad = (0, 1, 1) if i == len(C3D_BLOCKS) - 1 else (0, 0, 0)
            layers.append(nn.MaxPool3d((kt, 2, 2), stride=(kt, 2, 2), padding=pad))
            t, s = _pool_out(t, kt), _pool_out(s, 2, pad[1])
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

        self.flat_dim = c_in * t * s * s  # 8192 for the original 16x112x112 input
        self.fc_dim = cfg.scaled(C3D_FC)
        self.fc6 = nn.Linear(self.flat_dim, self.fc_dim)
        self.fc7 = nn.Linear(self.fc_dim, self.fc_dim)
        self.dropout = nn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 activations (N, fc_dim) of a batch of clips N,C,K,S,S."""
        cfg = self.config
        if x.ndim != 5 or tuple(x.shape[1:]) != (cfg.in_channels, cfg.frames, cfg.size, cfg.size):
            raise ConfigError(
                f"C3D expects input N,{cfg.in_channels},{cfg.frames},{cfg.size},{cfg.size} "
                f"(N,C,K,S,S) but got {tuple(x.shape)}; match the model config to the key frames."
            )
        for block in self.blocks:
            x = block(x)
        x = self.dropout(F.relu(self.fc6(x.flatten(1))))
        return self.dropout(F.relu(self.fc7(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def train(self, mode: bool = True) -> C3D:
        super().train(mode)
        # Frozen blocks keep their norm statistics: always eval, whatever the parent says.
        for block in self.blocks[: self.frozen_depth]:
            block.eval()
        return self


class SiameseC3D(nn.Module):
    """Prior learning: one shared C3D, a linear projection, L2-normalised embeddings.

    The projection (fc7 -> Linear -> L2 norm) is our reconstruction of the siamese head.
    """

    def __init__(self, backbone: C3D, embedding_dim: int = 128) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ConfigError(f"embedding_dim={embedding_dim} must be at least 1.")
        self.backbone = backbone
        self.projection = nn.Linear(backbone.fc_dim, embedding_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.backbone.features(x)), dim=1)

    def forward(
        self, a: torch.Tensor, b: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """Embeddings of a pair of batches (za, zb), or of one batch (an episode) alone."""
        if b is None:
            return self.embed(a)
        # One backbone pass over both halves: each weight is used once per step, which is
        # faster and keeps DDP's gradient hooks simple.
        z = self.embed(torch.cat([a, b]))
        return z[: len(a)], z[len(a) :]


class ClassifierC3D(nn.Module):
    """Target learning: the (pre-trained) C3D backbone with a new classification head.

    The paper "adjusts the structure" of the prior-learning network; the head used here,
    Linear-ReLU-Dropout-Linear on fc7 (a single Linear when hidden is None), is our
    reconstruction.
    """

    def __init__(
        self,
        backbone: C3D,
        num_classes: int = 3,
        hidden: int | None = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes} must be at least 2.")
        if hidden is not None and hidden < 1:
            raise ConfigError(f"head hidden={hidden} must be at least 1, or None for no layer.")
        if not 0 <= dropout < 1:
            raise ConfigError(f"head dropout={dropout} must be in [0, 1).")
        self.backbone = backbone
        if hidden is None:
            self.head = nn.Linear(backbone.fc_dim, num_classes)
        else:
            self.head = nn.Sequential(
                nn.Linear(backbone.fc_dim, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.head(self.backbone.features(x))


def _backbone(model: nn.Module) -> C3D:
    if isinstance(model, C3D):
        return model
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, C3D):
        raise ConfigError(f"{type(model).__name__} has no C3D backbone to freeze or load.")
    return backbone


def freeze(model: nn.Module, depth: int) -> None:
    """Freeze exactly the first `depth` conv blocks (0..5) of the model's C3D backbone.

    Frozen blocks get requires_grad=False and their BatchNorm layers stay in eval mode (running
    statistics untouched) even after a later `model.train()`. Blocks from `depth` on are made
    trainable again, so calling freeze twice leaves the last depth in force. fc6/fc7 and heads
    are left as they are. Build the optimiser after freezing (or filter on requires_grad).
    """
    backbone = _backbone(model)
    n = len(backbone.blocks)
    if isinstance(depth, bool) or not isinstance(depth, Integral) or not 0 <= depth <= n:
        raise ConfigError(f"freeze depth={depth!r} must be an integer from 0 to {n}.")
    depth = int(depth)
    backbone.frozen_depth = depth
    for i, block in enumerate(backbone.blocks):
        for p in block.parameters():
            p.requires_grad_(i >= depth)
    backbone.train(backbone.training)


def load_backbone_state(classifier: nn.Module, siamese_state_dict: Mapping) -> None:
    """Copy prior-learning backbone weights (a SiameseC3D state dict) into `classifier`.

    Accepts the keys of a SiameseC3D (`backbone.*`, projection ignored), optionally prefixed
    `module.` (a DDP-wrapped model), or a bare C3D state dict. Every backbone tensor must be
    present with the same shape, else ConfigError.
    """
    state = dict(siamese_state_dict)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    backbone = _backbone(classifier)
    own = backbone.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    wrong = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [
            f"{name} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        ]
        raise ConfigError(
            "prior-learning checkpoint does not fit the classifier backbone ("
            + "; ".join(parts)
            + "); use the same C3D width, batch_norm, frames and size in both stages."
        )
    backbone.load_state_dict(state, strict=True)


def count_flops(model: nn.Module, frames: int, size: int) -> int:
    """Forward FLOPs of one clip (2 x multiply-accumulates of every Conv3d and Linear).

    `frames` and `size` must be the model's own (C3D checks its input shape). For a
    SiameseC3D this is one clip through `embed` (a pair costs twice). Runs on the meta
    device, so it allocates nothing and leaves the model's weights and statistics untouched.
    """
    backbone = _backbone(model)
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv3d):
            kt, kh, kw = module.kernel_size
            total += 2 * output.numel() * module.in_channels // module.groups * kt * kh * kw
        else:
            total += 2 * output.numel() * module.in_features

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, nn.Conv3d | nn.Linear)
    ]
    meta = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    x = torch.empty(1, backbone.config.in_channels, frames, size, size, device="meta")
    # A siamese forward takes a pair: count the pair and halve it.
    args, pairs = ((x, x), 2) if isinstance(model, SiameseC3D) else ((x,), 1)
    try:
        with torch.no_grad():
            torch.func.functional_call(model, meta, args)
    finally:
        for h in hooks:
            h.remove()
    return total // pairs


def build_backbone(cfg) -> C3D:
    """The C3D of a run config (anything with `.keyframes.k/size` and `.model.*`)."""
    return C3D(
        frames=cfg.keyframes.k,
        size=cfg.keyframes.size,
        width=cfg.model.width,
        batch_norm=cfg.model.batch_norm,
        dropout=cfg.model.dropout,
    )


def build_siamese(cfg) -> SiameseC3D:
    """Prior learning's network for a run config."""
    return SiameseC3D(build_backbone(cfg), embedding_dim=cfg.model.embedding_dim)


def build_classifier(cfg, num_classes: int) -> ClassifierC3D:
    """Target learning's network for a run config (weights random until a prior is loaded)."""
    return ClassifierC3D(
        build_backbone(cfg),
        num_classes=num_classes,
        hidden=cfg.model.head_hidden,
        dropout=cfg.model.dropout,
    )
