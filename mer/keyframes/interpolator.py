"""A learned key-frame interpolator: adaptive separable convolution, conditioned on time.

The paper (Zhao et al., Neurocomputing 448 (2021); only the abstract is known to us) builds
its key-frame sequence with "an adaptive construction method based on adaptive
convolutional neural network". We read "adaptive convolution" as kernel-based video frame
interpolation: Niklaus, Mai and Liu, "Video Frame Interpolation via Adaptive Convolution",
CVPR 2017, and "Video Frame Interpolation via Adaptive Separable Convolution", ICCV 2017.
There a CNN looks at two neighbouring frames and predicts, for every output pixel, one local
kernel per frame; the output pixel is the sum of each kernel applied to that frame's patch
around the pixel, so motion estimation and resampling are one learned step with no optical
flow. The separable form predicts a vertical and a horizontal 1-D kernel (2k numbers, not
k^2) per pixel and frame. That reading, and every detail below, is our reconstruction.

`Interpolator` renders the frame at any time t in [0, 1] between frames 0 and 1 in one pass
(time-conditioned, not recursive bisection, so a key frame at fractional position 3.3 costs
one call):
- a U-Net (`levels` halvings, `base` channels doubling per level, BatchNorm) sees both
  frames, their difference and a constant t plane, given again at every decoder level;
- per pixel it predicts 1-D kernels for each frame (k = `kernel_size`) and a blend weight w.
  Each kernel is the identity plus a learned residual scaled by the distance to its frame
  (t for frame 0, 1 - t for frame 1), and w = t + t (1 - t) tanh(s). Hence an untrained
  model is exactly the linear blend, t = 0 and t = 1 return the endpoints exactly, and for
  linear motion the residual the network must produce barely depends on t.
- k = 7 reaches 3 px per frame (6 px between the two frames at t = 0.5): micro-expression
  motion in registered faces is well under a pixel between neighbouring frames at S = 32
  and a few pixels over the training gaps at S = 112.
Training is self-supervised (`sample_triplets`, `train_step`, `train_interpolator`): frames
a and b = a + g of one clip (2 <= g <= max_gap), target a frame c between them at
t = (c - a) / g, L1 loss; no labels are read.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mer import storage
from mer.errors import ConfigError, InputError

__all__ = [
    "Interpolator",
    "InterpolatorConfig",
    "TripletBatch",
    "sample_triplets",
    "separable_local_conv",
    "train_interpolator",
    "train_step",
]

log = logging.getLogger(__name__)

FORMAT = "mer.keyframes.interpolator/1"  # checkpoint format tag; bump when the architecture changes


@dataclass
class InterpolatorConfig:
    # Frames it is trained for (and refuses others): key frames are S x S x C.
    image_size: int = 112
    channels: int = 3  # 3 RGB, 1 grey
    # Kernels: odd, reach (kernel_size - 1) / 2 px per frame.
    kernel_size: int = 7
    # U-Net capacity.
    base: int = 16  # channels at full resolution, doubled per level
    levels: int = 3  # halvings; sizes need not divide by 2**levels (padded)

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"interpolator kernel_size={self.kernel_size} must be odd, e.g. 7")
        if self.channels not in (1, 3):
            raise ConfigError(f"interpolator channels={self.channels} must be 1 (grey) or 3")
        if self.image_size < 8 or self.base < 1 or self.levels < 0:
            raise ConfigError(
                f"interpolator image_size={self.image_size}, base={self.base}, "
                f"levels={self.levels} must be >= 8, >= 1 and >= 0"
            )


def separable_local_conv(frame: torch.Tensor, kv: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """Per-pixel separable convolution: out[b,c,y,x] = sum_ij kv[b,i,y,x] kh[b,j,y,x]
    frame[b,c,y+i-r,x+j-r], r = (k-1)/2, replicate padding at the borders.

    frame (B, C, H, W); kv, kh (B, k, H, W). Loops over the k x k offsets on views of the
    padded frame, so autograd keeps about k frame-sized tensors, not the k^2 of an unfold.
    """
    k = kv.shape[1]
    r = k // 2
    h, w = frame.shape[-2:]
    padded = F.pad(frame, (r, r, r, r), mode="replicate") if r else frame
    out = None
    for i in range(k):
        rows = padded[:, :, i : i + h, :]
        across = sum(kh[:, j : j + 1] * rows[..., j : j + w] for j in range(k))
        term = kv[:, i : i + 1] * across
        out = term if out is None else out + term
    return out


def _block(cin: int, cout: int) -> nn.Sequential:
    # BatchNorm: without it the small net sits on the linear blend for hundreds of steps.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _plane(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1).expand(-1, 1, *like.shape[-2:]).to(like.dtype)


class Interpolator(nn.Module):
    """forward(frame0, frame1, t): frames float (B, C, H, W) in [0, 1], t (B,) in [0, 1] ->
    the frame at time t (B, C, H, W), not clamped. See the module docstring."""

    def __init__(self, config: InterpolatorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or InterpolatorConfig()
        widths = [cfg.base * 2**i for i in range(cfg.levels + 1)]
        self.down = nn.ModuleList(
            [_block(3 * cfg.channels + 1, widths[0])]
            + [_block(widths[i - 1], widths[i]) for i in range(1, cfg.levels + 1)]
        )
        self.up = nn.ModuleList(
            [_block(widths[i + 1] + widths[i] + 1, widths[i]) for i in reversed(range(cfg.levels))]
        )
        k = cfg.kernel_size
        self.head = nn.Conv2d(widths[0], 4 * k + 1, 3, padding=1)
        # Zero head: the untrained model is the linear blend, training starts from there.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer(
            "identity", F.one_hot(torch.tensor(k // 2), k).float().view(1, k, 1, 1)
        )

    def forward(self, frame0: torch.Tensor, frame1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, w = frame0.shape[-2:]
        t = t.to(frame0.dtype).view(-1, 1, 1, 1)
        # The difference is given outright: with the spatial gradients it says the motion.
        x = torch.cat([frame0 - 0.5, frame1 - 0.5, frame1 - frame0, _plane(t, frame0)], 1)
        step = 2**self.config.levels
        x = F.pad(x, (0, -w % step, 0, -h % step), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(F.avg_pool2d(x, 2) if i else x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip, _plane(t, skip)], 1))
        k = self.config.kernel_size
        kv0, kh0, kv1, kh1, s = self.head(x)[..., :h, :w].split([k, k, k, k, 1], 1)
        weight = t + t * (1 - t) * torch.tanh(s)
        warped0 = separable_local_conv(frame0, self.identity + t * kv0, self.identity + t * kh0)
        back = 1 - t
        warped1 = separable_local_conv(
            frame1, self.identity + back * kv1, self.identity + back * kh1
        )
        return (1 - weight) * warped0 + weight * warped1

    def check(self, image_size: int | None, channels: int | None, source: str = "") -> None:
        """Refuse (ConfigError) frames of another size or channel count than trained for."""
        cfg = self.config
        size, channels = image_size or cfg.image_size, channels or cfg.channels
        if (size, channels) != (cfg.image_size, cfg.channels):
            raise ConfigError(
                f"interpolator {source or '(in memory)'} was trained on {cfg.image_size} px "
                f"frames with {cfg.channels} channel(s), but these are {size} px with "
                f"{channels}; train one at the key frames' size and channels"
            )

    @torch.inference_mode()
    def interpolate(self, a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
        """The frame(s) at time t between uint8 frames a and b, (H, W, C) or (N, H, W, C);
        t a float or (N,). Returns uint8 of a's shape."""
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.ndim not in (3, 4):
            raise InputError(f"frames of shapes {a.shape} and {b.shape}: need two (N,) H, W, C")
        single = a.ndim == 3
        a4, b4 = (a[None], b[None]) if single else (a, b)
        cfg = self.config
        if a4.shape[1:] != (cfg.image_size, cfg.image_size, cfg.channels):
            raise ConfigError(
                f"frames of shape {a4.shape[1:]}: this interpolator was trained on "
                f"{cfg.image_size}x{cfg.image_size}x{cfg.channels} frames"
            )
        device = self.identity.device
        ts = torch.tensor(np.broadcast_to(np.asarray(t, np.float32), (len(a4),)), device=device)
        was_training = self.training
        self.eval()
        out = self(to_tensor(a4, device), to_tensor(b4, device), ts)
        self.train(was_training)
        frames = (out.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return frames[0] if single else frames

    def save(self, uri: str) -> None:
        """Weights and config (plain types) in one torch.save file at `uri` (local or s3://)."""
        buf = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"format": FORMAT, "config": asdict(self.config), "state_dict": state}, buf)
        storage.write_bytes(uri, buf.getvalue())

    @classmethod
    def load(
        cls, uri: str, *, image_size: int | None = None, channels: int | None = None
    ) -> Interpolator:
        """The interpolator saved at `uri`, in eval mode on the CPU; with image_size/channels
        given, one trained for other frames is refused (ConfigError)."""
        try:
            data = storage.read_bytes(uri)
        except InputError as e:
            raise InputError(
                f"{uri}: no interpolator checkpoint there; train one first or fix the path"
            ) from e
        try:
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            config = InterpolatorConfig(**ckpt["config"]) if ckpt["format"] == FORMAT else None
        except Exception as e:  # corrupt bytes, another file type, unknown config keys
            raise InputError(
                f"{uri} is not a {FORMAT} interpolator checkpoint ({type(e).__name__}); retrain it"
            ) from e
        if config is None:
            raise InputError(f"{uri} is a {ckpt['format']!r} checkpoint, not {FORMAT}; retrain it")
        model = cls(config)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            raise InputError(
                f"{uri}: its weights do not fit its config {asdict(config)}; retrain it"
            ) from e
        model.check(image_size, channels, source=uri)
        return model.eval()


# Training: self-supervised on frame triplets of the clips themselves.


def to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(255)


class TripletBatch(NamedTuple):
    frame0: torch.Tensor  # float (N, C, H, W) in [0, 1]
    frame1: torch.Tensor
    target: torch.Tensor  # the frame at time t between frame0 and frame1
    t: torch.Tensor  # float (N,)

    def to(self, device: torch.device | str) -> TripletBatch:
        return TripletBatch(*(x.to(device, non_blocking=True) for x in self))


def sample_triplets(
    clips: list[np.ndarray], n: int, rng: np.random.Generator, max_gap: int = 8
) -> TripletBatch:
    """n triplets from uint8 clips (T, H, W, C), all of one H, W, C: frames a and b = a + g
    of a random clip (g uniform in 2..max_gap, less where the clip is shorter), the target
    a frame strictly between at t = (c - a) / g. Half are reversed in time (t -> 1 - t) and
    half mirrored left-right, so neither direction of motion is favoured."""
    shapes = {c.shape[1:] for c in clips}
    if len(shapes) != 1:
        raise InputError(f"clips have frames of shapes {sorted(shapes)}; resize them to one")
    usable = [c for c in clips if len(c) >= 3]
    if not usable or max_gap < 2:
        raise InputError(f"max_gap={max_gap} and no clip longer than 2 frames: need a gap of 2+")
    a, b, c, t = [], [], [], np.empty(n, np.float32)
    for m in range(n):
        clip = usable[rng.integers(len(usable))]
        gap = int(rng.integers(2, min(max_gap, len(clip) - 1) + 1))
        start = int(rng.integers(0, len(clip) - gap))
        mid = int(rng.integers(1, gap))
        first, last, t[m] = clip[start], clip[start + gap], mid / gap
        if rng.random() < 0.5:
            first, last, t[m] = last, first, 1 - t[m]
        frames = [first, last, clip[start + mid]]
        if rng.random() < 0.5:
            frames = [f[:, ::-1] for f in frames]
        for out, f in zip((a, b, c), frames, strict=True):
            out.append(f)
    return TripletBatch(
        to_tensor(np.stack(a)), to_tensor(np.stack(b)), to_tensor(np.stack(c)), torch.from_numpy(t)
    )


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: TripletBatch) -> float:
    """One L1 step on a batch (already on the model's device); returns the loss. `model` may
    be wrapped (DistributedDataParallel): only its forward is called. Its BatchNorm layers
    use each worker's own batch statistics (torch.nn.SyncBatchNorm if those are small)."""
    model.train()
    loss = F.l1_loss(model(batch.frame0, batch.frame1, batch.t), batch.target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_interpolator(
    clips: list[np.ndarray],
    config: InterpolatorConfig | None = None,
    *,
    steps: int = 2000,
    batch_size: int = 16,
    lr: float = 1e-3,
    max_gap: int = 8,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log_every: int = 0,
) -> Interpolator:
    """Train an interpolator on triplets of `clips` (uint8 (T, S, S, C) at the key frames'
    size); Adam with a cosine-decaying learning rate. Returns it in eval mode."""
    if not clips:
        raise InputError("no clips to train the interpolator on; check the key-frame dataset")
    h, w, c = clips[0].shape[1:]
    config = config or InterpolatorConfig(image_size=h, channels=c)
    if (h, w, c) != (config.image_size, config.image_size, config.channels):
        raise ConfigError(
            f"clips have {h}x{w}x{c} frames but the interpolator config asks for "
            f"{config.image_size}x{config.image_size}x{config.channels}; resize them first"
        )
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Interpolator(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    for step in range(steps):
        batch = sample_triplets(clips, batch_size, rng, max_gap=max_gap).to(device)
        loss = train_step(model, optimizer, batch)
        schedule.step()
        if log_every and (step + 1) % log_every == 0:
            log.info("interpolator step %d/%d: L1 %.5f", step + 1, steps, loss)
    return model.eval()
