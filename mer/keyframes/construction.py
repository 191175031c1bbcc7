"""Key-frame construction for one micro-expression clip (motion curves and apex spotting:
mer.keyframes.motion).

From the paper (Zhao et al., Neurocomputing 448 (2021); only the abstract is known to us):
each clip is summarised into a key-frame sequence by an "adaptive construction method" that
drops redundant frames and emphasises the movement around the apex frame; the key frames
feed both training stages. The paper builds it on an "adaptive convolutional neural
network" whose details we do not have.

Everything below is our reconstruction; the constants are our own choices, tuned on the
synthetic clips of mer.datasets.synthetic.generator (tests/test_keyframes.py measures the result).

Key frames (`build_keyframes`, method "adaptive"): K positions between onset and offset,
onset and apex always among them. The other K-2 are placed by inverting the cumulative sum
of a density that adds (a) the squared motion level above its minimum (high around the
apex: LEVEL_SHARE of the mass), (b) the motion change |d motion / dt| (where the face is
changing) and (c) a uniform FLOOR, so still stretches keep a few frames. They are split
between onset..apex and apex..offset in proportion to each side's mass; the last lands on
the offset. A position whose nearest whole frame is unique is snapped to it; positions
sharing a frame (a short clip, or motion packed into a few frames) stay fractional and
their frames are interpolated between the two neighbours: a linear blend, with
interpolation="flow" both neighbours warped along the optical flow between them and
blended, or with "adaconv" rendered by a learned adaptive-convolution interpolator
(mer.keyframes.interpolator, trained on the dataset's own frames by its own stage). Baselines: "uniform" (evenly spaced onset..offset) and "onset-apex" (evenly spaced
onset..apex), with the same snapping and interpolation. With `register` on, each source
frame's head shift relative to the onset frame (the motion curve's drift if given, else
phase correlation: mer.keyframes.align) is undone at the frame's own size; frames are then resized
to S x S by 2 x 2 means while at least twice S and INTER_AREA for the rest; pass a square
face crop (mer.keyframes.faces) so that nothing is stretched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from mer.errors import ConfigError, InputError
from mer.keyframes.align import estimate_shifts, reduce_gray, source_frames, translate
from mer.keyframes.motion import FARNEBACK, check_clip, motion_curve, smooth, spot_apex
from mer.keyframes.video import halve, halvings

__all__ = [
    "KeyFrames",
    "adaptive_positions",
    "build_keyframes",
    "motion_curve",
    "scale_frame",
    "spot_apex",
]

log = logging.getLogger(__name__)

METHODS = ("adaptive", "uniform", "onset-apex")
INTERPOLATIONS = ("linear", "flow", "adaconv")

# Adaptive density.
LEVEL_SHARE = 0.6  # share of the adaptive density that follows the (squared) motion level
FLOOR = 0.2  # share spread uniformly; the rest (0.2) follows the motion change


@dataclass
class KeyFrames:
    """The key frames of one clip.

    frames: uint8 (K, S, S, C). indices: float (K,) source positions, offsets into the
    frames given (fractional where interpolated). apex: offset of the apex used.
    apex_source: "annotated" or "spotted". note: why an annotated apex was not used ("").
    """

    frames: np.ndarray
    indices: np.ndarray
    apex: int
    apex_source: str
    note: str = ""


# Key frames.


def build_keyframes(
    frames: np.ndarray,
    onset: int,
    apex: int | None,
    offset: int,
    k: int = 16,
    size: int = 112,
    method: str = "adaptive",
    *,
    interpolation: str = "linear",
    motion: np.ndarray | None = None,
    mode: str = "flow",
    register: bool = False,
    drift: np.ndarray | None = None,
    reduced: tuple[np.ndarray, int] | None = None,
    interpolator=None,
) -> KeyFrames:
    """K key frames of size x size from a clip (see the module docstring).

    `frames`: uint8 (T, H, W, C), ideally a square face crop. onset/apex/offset are offsets
    into `frames` (0-based); apex None, or outside onset..offset, is spotted. `motion` is an
    optional precomputed motion_curve(frames, onset, mode=mode) (used for spotting and the
    adaptive density; computed on onset..offset otherwise). Positions are non-decreasing;
    the onset is always first, and the apex is among them except with "uniform".
    `register`: undo each source frame's head shift relative to the onset frame as it is
    resampled: `drift` ((T, 2) dx, dy per frame of `frames`, relative to frame `onset`; for
    example mer.keyframes.motion.measure_motion's) if given, else measured on just the frames the key
    frames use by phase correlation (mer.keyframes.align.estimate_shifts; `reduced` is
    mer.keyframes.align.reduce_gray(frames) if the caller has it already). `interpolator`: the
    mer.keyframes.interpolator.Interpolator that interpolation "adaconv" renders with.
    """
    if k < 2:
        raise ConfigError(f"k={k}: a key-frame sequence needs at least 2 frames (onset, apex)")
    if size < 1:
        raise ConfigError(f"size={size}: key frames need a positive side length")
    if method not in METHODS:
        raise ConfigError(f"key-frame method {method!r} is not one of {', '.join(METHODS)}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}"
        )
    if interpolation == "adaconv" and interpolator is None:
        raise ConfigError(
            "interpolation 'adaconv' needs a trained interpolator (mer.keyframes.interpolator)"
        )
    frames = check_clip(frames)
    n = len(frames)
    if not 0 <= onset <= offset < n:
        raise InputError(f"onset..offset {onset}..{offset} is not a range in the {n} frames given")

    note = ""
    if apex is not None and not onset <= apex <= offset:
        note = f"annotated apex {apex} is outside onset..offset {onset}..{offset}; spotted instead"
        log.warning(note)
        apex = None
    curve = None
    if apex is None or method == "adaptive":
        if motion is not None:
            curve = np.asarray(motion, np.float64)[onset : offset + 1]
        else:
            curve = motion_curve(frames[onset : offset + 1], 0, mode=mode)
    if apex is None:
        apex, source = onset + spot_apex(None, 0, motion=curve), "spotted"
    else:
        source = "annotated"

    if method == "uniform":
        positions = np.linspace(onset, offset, k)
    elif method == "onset-apex":
        positions = np.linspace(onset, apex, k)
    else:
        positions = onset + adaptive_positions(curve, apex - onset, k)
    positions = _snap(positions)
    shifts: dict[int, np.ndarray] = {}
    if register and drift is not None:
        drift = np.asarray(drift, np.float64)
        if drift.shape != (n, 2):
            raise InputError(f"drift has shape {drift.shape}; expected ({n}, 2), one per frame")
        shifts = {t: drift[t] - drift[onset] for t in source_frames(positions, n)}
    elif register:
        needed = sorted({onset, *source_frames(positions, n)})
        if reduced is None:
            gray, factor = reduce_gray(frames[needed])
        else:
            gray, factor = reduced[0][needed], reduced[1]
        found = estimate_shifts(None, needed.index(onset), reduced=(gray, factor))
        shifts = dict(zip(needed, found, strict=True))
    rendered = _render(frames, positions, size, interpolation, shifts, interpolator)
    return KeyFrames(rendered, positions, apex, source, note)


def adaptive_positions(curve: np.ndarray, apex: int, k: int) -> np.ndarray:
    """K non-decreasing positions in 0..len(curve)-1 (onset = 0) that hold 0 and `apex`."""
    n = len(curve)
    last = n - 1
    if last == 0:
        return np.zeros(k)
    smoothed = smooth(curve, 3)
    level = (smoothed - smoothed.min()) ** 2  # squared: the frames near the apex stand out
    change = np.abs(np.gradient(smoothed))
    density = np.full(n, FLOOR / n)
    for part, share in ((level, LEVEL_SHARE), (change, 1 - LEVEL_SHARE - FLOOR)):
        total = part.sum()
        density += share * (part / total if total > 0 else np.full(n, 1 / n))
    # Mass between frames i and i+1 (trapezoids) and its running sum: position <-> mass.
    cum = np.concatenate([[0.0], np.cumsum((density[:-1] + density[1:]) / 2)])
    rise, fall = cum[apex], cum[last] - cum[apex]
    extra = k - 2
    if apex == last:
        n_rise = extra  # no falling side: all the others go before the apex
    elif apex == 0:
        n_rise = 0
    else:
        n_rise = int(round(extra * rise / (rise + fall)))
    n_fall = extra - n_rise
    # Rising side strictly between onset and apex; falling side after the apex, the last
    # one on the offset.
    rise_at = rise * np.arange(1, n_rise + 1) / (n_rise + 1)
    fall_at = cum[apex] + fall * np.arange(1, n_fall + 1) / max(n_fall, 1)
    grid = np.arange(n, dtype=np.float64)
    before = np.interp(rise_at, cum, grid)
    after = np.interp(fall_at, cum, grid)
    positions = np.concatenate([[0.0], before, [float(apex)], after])
    return np.maximum.accumulate(np.clip(positions, 0, last))


def _snap(positions: np.ndarray) -> np.ndarray:
    """Snap each position to its nearest whole frame where no other position shares it."""
    positions = np.asarray(positions, np.float64)
    nearest = np.floor(positions + 0.5)
    values, counts = np.unique(nearest, return_counts=True)
    shared = np.isin(nearest, values[counts > 1])
    whole = np.isclose(positions, nearest, rtol=0, atol=1e-9)
    return np.where(shared & ~whole, positions, nearest)


def _render(
    frames: np.ndarray,
    positions: np.ndarray,
    size: int,
    interpolation: str,
    shifts: dict[int, np.ndarray],
    interpolator=None,
) -> np.ndarray:
    cache: dict[int, np.ndarray] = {}

    def resized(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = scale_frame(frames[i], size, shifts.get(i, (0.0, 0.0)))
        return cache[i]

    out = np.empty((len(positions), size, size, frames.shape[-1]), np.uint8)
    for j, p in enumerate(positions):
        lo = int(np.floor(p))
        frac = float(p - lo)
        if frac < 1e-6 or lo + 1 >= len(frames):
            out[j] = resized(min(lo, len(frames) - 1))
        elif interpolation == "flow":
            out[j] = _flow_blend(resized(lo), resized(lo + 1), frac)
        elif interpolation == "adaconv":
            out[j] = interpolator.interpolate(resized(lo), resized(lo + 1), frac)
        else:
            a, b = resized(lo).astype(np.float32), resized(lo + 1).astype(np.float32)
            out[j] = np.clip((1 - frac) * a + frac * b + 0.5, 0, 255).astype(np.uint8)
    return out


def scale_frame(frame: np.ndarray, size: int, shift) -> np.ndarray:
    """`frame` (H, W, C) at size x size, its content first moved back by `shift` (dx, dy in
    frame pixels) at the frame's own size, then halved by 2 x 2 means while at least twice
    the output, then area-resampled.

    The shift is bicubic (mer.keyframes.align.translate): an interpolated frame is blurred by an
    amount that depends on its sub-pixel shift (the onset frame, never shifted, not at all),
    and in differences between key frames that blur looks like motion; bicubic blurs far
    less than bilinear. (Shifting at the output size is worse still.)"""
    c = frame.shape[-1]
    dx, dy = float(shift[0]), float(shift[1])
    if dx or dy:
        frame = translate(frame, dx, dy)
    frame = halve(frame, halvings(frame.shape, size))
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, c)


def _flow_blend(a: np.ndarray, b: np.ndarray, frac: float) -> np.ndarray:
    """The frame `frac` of the way from a to b: a warped forward and b backward along the
    flow a -> b (sampled at the output pixel, a common approximation), then blended."""
    ga = a[..., 0] if a.shape[-1] == 1 else cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    gb = b[..., 0] if b.shape[-1] == 1 else cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    flow = cv2.calcOpticalFlowFarneback(ga, gb, None, **FARNEBACK)
    h, w = ga.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    fx, fy = flow[..., 0], flow[..., 1]
    border = cv2.BORDER_REPLICATE
    from_a = cv2.remap(a, xs - frac * fx, ys - frac * fy, cv2.INTER_LINEAR, borderMode=border)
    back = 1 - frac
    from_b = cv2.remap(b, xs + back * fx, ys + back * fy, cv2.INTER_LINEAR, borderMode=border)
    blend = back * from_a.reshape(a.shape).astype(np.float32) + frac * from_b.reshape(
        b.shape
    ).astype(np.float32)
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)
