"""Motion curves and apex spotting for one micro-expression clip (mer.keyframes.construction places the
key frames with them).

Our reconstruction, as everything in mer.keyframes.construction; the constants are our own choices,
tuned on the synthetic clips of mer.datasets.synthetic.generator (tests/test_keyframes.py measures the
result).

Motion curve (`motion_curve`; `measure_motion` also returns the head drift that step 1
finds, which registers the key frames by default): how far the face in each frame has moved
away from the onset frame, measured on a small grayscale copy (`size` px square, low-passed
first so that it does not alias, and averaged over TEMPORAL_SHARE of the clip's frames
against sensor noise). For each frame (at most MAX_SAMPLES per clip, the curve interpolated
in between):
  1. Head motion is a translation: the median of the dense Farneback optical flow from the
     onset over textured, non-eye pixels, which a local action barely moves (least squares,
     as in ECC or an affine fit, is pulled along by a large action such as a jaw drop).
     "flow" predicts it from the neighbouring frame and corrects it by the median of the
     flow it measures anyway; "diff" measures it on a smaller copy. On the synthetic clips
     (known drift) the "flow" drift is off by 0.05 px RMS per axis (at 340 x 280, measured
     on the 170 x 140 grey copy), against 0.17 px for phase correlation (mer.keyframes.align).
  2. The frame is resampled under that translation from a larger copy (resampling the small
     copy leaves interpolation errors as large as a micro-expression) and gain-matched to
     the onset frame (illumination flicker).
  3. "flow": the flow onset -> aligned frame minus its median, per-pixel length. "diff":
     the absolute grey-level difference; cheaper, but it spots less well (its blink screen
     is the eye mask alone).
  4. Pooling: the eyes (Haar eye boxes on the onset frame, else their usual place) are
     left out, and in "flow" mode so is any pixel that ever moves more than MICRO_LIMIT
     (blinks: large and fast, not micro-expressions; unless that would leave too little).
     The curve is the mean over the ROI_SHARE of the remaining textured pixels that move
     most persistently (their ACTIVITY_QUANTILE over time), which finds the moving action
     units without facial landmarks.
Apex spotting (`spot_apex`): the peak of the curve after a centred moving average over
SMOOTH_SHARE of the clip's length (odd, at least 3 frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mer.errors import ConfigError, InputError
from mer.keyframes.faces import detect_eye_boxes

MODES = ("flow", "diff")

# Motion curve (sizes are per 64 px of face and scale with `size`).
# Side of the grey copies the curve is measured on. 63 rather than 64: OpenCV's Farneback
# flow costs about 30 % more per pixel from 64 x 64 px up (0.45 against 0.34 ms here), and
# on 144 synthetic clips 63 spots apexes as 64 does.
SIZE = 63
PRE_BLUR = 1.0  # low-pass sigma before downscaling, in output pixels
TEMPORAL_SHARE = 0.05  # frames are averaged over this share of the clip (odd, >= 1 frame)
TEXTURE_SHARE = 0.75  # pixels kept as "textured": the most textured 75 % (flow is reliable)
MICRO_LIMIT = 0.5  # px: a pixel that ever moves more is a blink or a gross movement
MICRO_DILATE = 4  # px grown around such pixels (flow spreads a blink past the lids)
ROI_SHARE = 0.20  # share of textured pixels pooled: the most persistently moving ones
ACTIVITY_QUANTILE = 0.6  # "persistent": this quantile of a pixel's motion over the clip
DIFF_BLUR = 0.5  # sigma applied to both frames before a "diff"
SHIFT_SHARE = 0.75  # "diff" measures the head shift at this share of `size` (speed)
REALIGN = 0.25  # "flow": px; a predicted head shift off by more is measured again
REALIGN_TRIES = 3  # "flow": measurements per frame; still off after them, the drift is lost
# Frames measured per clip at most; the curve is interpolated in between. On 144 synthetic
# clips (28-87 frames) 16 spots apexes as 24 did (98 % within 5 % of the clip) at 20 % less
# cost; 12 spots 97 %.
MAX_SAMPLES = 16
# Apex spotting.
SMOOTH_SHARE = 0.20  # moving-average window as a share of the clip length

# Farneback parameters for a ~64 px face (OpenCV's suggested values, one pyramid level and
# two iterations since the motions are sub-pixel: on 144 synthetic clips this spots apexes as
# well as two levels and three iterations, at 30 % less cost).
FARNEBACK = dict(
    pyr_scale=0.5, levels=1, winsize=9, iterations=2, poly_n=5, poly_sigma=1.1, flags=0
)


@dataclass
class Motion:
    """What `measure_motion` finds in a clip.

    curve: float (T,), each frame's motion relative to the onset frame (0 there).
    drift: float (T, 2), each frame's head translation (dx, dy) relative to the onset frame,
    in the given frames' pixels (content right of / below where it was): the translation
    the curve compensates, measured at the sampled frames and interpolated in between.
    None in "diff" mode (its shift is coarse), where no pixel was usable, and where the
    head moved further between two sampled frames than the flow follows and the flow
    noticed (on a textured test face at 340 x 280: a sudden jump of 24 px was followed,
    32 and 40 px were lost and noticed, 64 px was lost unnoticed).
    largest: the 99th percentile over the usable pixels of each pixel's largest movement
    (px per 64 px of face) before pixels beyond MICRO_LIMIT are left out: how far the
    movement the curve discards goes (mer.serving.quality flags movements far beyond the training
    clips'). None in "diff" mode (grey levels, not pixels) and where no pixel was usable.
    """

    curve: np.ndarray
    drift: np.ndarray | None
    largest: float | None = None


def motion_curve(
    frames: np.ndarray, onset: int = 0, *, mode: str = "flow", size: int = SIZE
) -> np.ndarray:
    """Motion of each frame relative to frame `onset`, float (T,); 0 at the onset.

    `frames` is a uint8 (T, H, W, C) or (T, H, W) clip, ideally a square face crop. See the
    module docstring for the two modes.
    """
    return measure_motion(frames, onset, mode=mode, size=size).curve


def measure_motion(
    frames: np.ndarray, onset: int = 0, *, mode: str = "flow", size: int = SIZE
) -> Motion:
    """The motion curve and the head drift of a clip relative to frame `onset` (Motion)."""
    if mode not in MODES:
        raise ConfigError(f"motion mode {mode!r} is not one of {', '.join(MODES)}")
    if size < 16:
        raise ConfigError(f"motion size {size} is too small; use at least 16 px")
    frames = check_clip(frames)
    n, h, w = frames.shape[:3]
    if not 0 <= onset < n:
        raise InputError(f"onset offset {onset} is outside the clip's {n} frames")
    # Long clips are measured every `stride` frames (at 200 fps a micro-expression takes
    # 10 frames or more to rise), always including the onset and the last frame.
    stride = -(-n // MAX_SAMPLES)
    sampled = sorted(set(range(onset % stride, n, stride)) | {onset, n - 1})
    mids = _grayscale(frames, sampled, size)
    # Resampled exactly as the head-aligned copies are (for 2 x size copies that is a 2 x 2
    # mean), so that a frame that did not move matches the onset's copy exactly.
    smalls = [_resample(m, np.zeros(2), size) for m in mids]
    first = sampled.index(onset)
    usable = _usable_pixels(frames[onset], smalls[first])
    if not usable.any():
        return Motion(np.zeros(n), None)
    measure = _flow_motion if mode == "flow" else _diff_motion
    moves, shifts = measure(mids, smalls, first, usable)
    largest = None
    if mode == "flow":
        largest = float(np.quantile(moves.max(axis=0)[usable.ravel()], 0.99)) * 64 / size
        small_motion = usable & ~_too_big(moves, size)
        if small_motion.sum() >= 0.25 * usable.sum():  # else the face moves a lot: keep all
            usable = small_motion
    grid = np.arange(n)
    curve = np.interp(grid, sampled, _pool(moves, usable.ravel()))
    drift = None
    if shifts is not None:
        # The copies are size x size whatever the frame's shape: back to the frame's pixels.
        shifts = shifts * np.array([w / size, h / size])
        drift = np.stack([np.interp(grid, sampled, shifts[:, k]) for k in (0, 1)], axis=1)
    return Motion(curve, drift, largest)


def _flow_motion(mids, smalls, first: int, usable: np.ndarray):
    """Per sampled frame, the length of the flow from the onset to the head-aligned frame,
    minus its median, and the head shift (size-pixels; None where it was lost). The head
    shift is predicted from the neighbour measured before it (walking out from the onset)
    and corrected by that median, measured again (up to REALIGN_TRIES times in all) while
    the correction is larger than REALIGN."""
    size = usable.shape[0]
    ref = smalls[first]
    mask = usable.astype(np.uint8)
    level = cv2.mean(ref, mask)[0]
    moves = np.zeros((len(mids), size * size), np.float32)
    shifts = np.zeros((len(mids), 2))
    lost = False
    for side in (range(first + 1, len(mids)), range(first - 1, -1, -1)):
        shift = np.zeros(2)
        for i in side:
            for _ in range(REALIGN_TRIES):
                aligned = _resample(mids[i], shift, size)
                aligned *= level / max(cv2.mean(aligned, mask)[0], 1e-3)
                flow = cv2.calcOpticalFlowFarneback(ref, aligned, None, **FARNEBACK)
                residual = np.median(flow[usable], axis=0)
                shift = shift + residual
                if np.abs(residual).max() < REALIGN:
                    break
            else:
                lost = True  # the head moved further than the flow can follow
            shifts[i] = shift
            dx, dy = flow[..., 0] - residual[0], flow[..., 1] - residual[1]
            moves[i] = cv2.magnitude(dx, dy).ravel()
    return moves, None if lost else shifts


def _diff_motion(mids, smalls, first: int, usable: np.ndarray):
    """Per sampled frame, the absolute grey-level difference from the onset after the head
    shift (the median flow on a smaller copy) is undone; no drift (None)."""
    size = usable.shape[0]
    ref = smalls[first]
    level = float(ref[usable].mean())
    blur = DIFF_BLUR * size / 64
    ref_blur = cv2.GaussianBlur(ref, (0, 0), blur)
    side = max(16, round(SHIFT_SHARE * size))  # the shift needs no fine detail
    coarse_ref = cv2.resize(ref, (side, side), interpolation=cv2.INTER_AREA)
    keep = cv2.resize(usable.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    keep = keep > 0 if keep.any() else np.ones_like(keep, bool)
    moves = np.zeros((len(mids), size * size), np.float32)
    for i in range(len(mids)):
        if i == first:
            continue
        coarse = cv2.resize(smalls[i], (side, side), interpolation=cv2.INTER_AREA)
        flow = cv2.calcOpticalFlowFarneback(coarse_ref, coarse, None, **FARNEBACK)
        shift = np.median(flow[keep], axis=0) * (size / side)
        aligned = _resample(mids[i], shift, size)
        aligned *= level / max(float(aligned[usable].mean()), 1e-3)
        moves[i] = np.abs(cv2.GaussianBlur(aligned, (0, 0), blur) - ref_blur).ravel()
    return moves, None  # a coarse shift, not precise enough to register key frames with


def _grayscale(frames: np.ndarray, sampled: list[int], size: int) -> list[np.ndarray]:
    """Per sampled frame, a low-passed grayscale copy at up to 2x `size`, averaged over
    TEMPORAL_SHARE of the clip around it (sensor noise). The average is taken before the
    resize (both are linear), so each sampled frame is resized once."""
    n, h, w = frames.shape[:3]
    side = min(max(h, w), 2 * size)
    half = max(1, int(round(TEMPORAL_SHARE * n)) | 1) // 2
    gray: dict[int, np.ndarray] = {}
    out = []
    for t in sampled:
        window = [min(max(j, 0), n - 1) for j in range(t - half, t + half + 1)]
        total = np.zeros(1, np.float32)
        for j in window:
            if j not in gray:
                f = frames[j]
                g = f[..., 0] if f.shape[-1] == 1 else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
                while min(g.shape) >= 2 * side:  # halving first is faster than one big step
                    g = cv2.pyrDown(g)  # (pyrDown low-passes)
                gray[j] = g
            total = total + gray[j]
        mean = cv2.resize(total / len(window), (side, side), interpolation=cv2.INTER_AREA)
        out.append(cv2.GaussianBlur(mean, (0, 0), PRE_BLUR * side / size))
    return out


def _resample(image: np.ndarray, shift: np.ndarray, size: int) -> np.ndarray:
    """`image` (a larger square copy) resampled to size x size, moved back by `shift`
    (a translation in size-pixels)."""
    s = image.shape[0] / size
    # size-pixel centres -> image-pixel centres, after the shift
    warp = np.array([[s, 0, s * shift[0] + 0.5 * s - 0.5], [0, s, s * shift[1] + 0.5 * s - 0.5]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(image, warp, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def _usable_pixels(onset_frame: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Pixels of the size x size grid whose motion counts: not the eyes, not the border,
    and among the TEXTURE_SHARE most textured (flow is only trustworthy on texture)."""
    usable = _inner(~_eye_mask(onset_frame, ref.shape[0]))
    texture = np.hypot(cv2.Sobel(ref, cv2.CV_32F, 1, 0), cv2.Sobel(ref, cv2.CV_32F, 0, 1))
    if usable.any() and texture[usable].max() > 0:
        usable &= texture >= np.quantile(texture[usable], 1 - TEXTURE_SHARE)
    return usable


def _eye_mask(onset_frame: np.ndarray, size: int) -> np.ndarray:
    """Bool size x size mask of the two eyes: Haar eye boxes on the onset frame, one found
    eye mirrored across the crop's centre, else the usual eye places in a face crop."""

    h, w = onset_frame.shape[:2]
    found = [
        ((x + bw / 2) / w, (y + bh / 2) / h, bw / w / 2, bh / h / 2)
        for x, y, bw, bh in detect_eye_boxes(onset_frame)
    ]
    left = [e for e in found if e[0] < 0.5][:1]
    right = [e for e in found if e[0] >= 0.5][:1]
    if left and not right:
        right = [(1 - left[0][0], *left[0][1:])]
    if right and not left:
        left = [(1 - right[0][0], *right[0][1:])]
    eyes = left + right if left else [(0.32, 0.42, 0.1, 0.06), (0.68, 0.42, 0.1, 0.06)]
    mask = np.zeros((size, size), np.uint8)
    for cx, cy, rx, ry in eyes:
        centre = (round(cx * size), round(cy * size))
        axes = (max(1, round(rx * size)), max(1, round(ry * size)))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return mask > 0


def _inner(mask: np.ndarray) -> np.ndarray:
    """The mask without a border of size/16 (resampling fills the border by replication)."""
    margin = max(1, mask.shape[0] // 16)
    out = np.zeros_like(mask)
    out[margin:-margin, margin:-margin] = mask[margin:-margin, margin:-margin]
    return out


def _too_big(moves: np.ndarray, size: int) -> np.ndarray:
    """Pixels that ever move more than MICRO_LIMIT, grown by MICRO_DILATE."""
    big = (moves.max(axis=0) > MICRO_LIMIT * size / 64).reshape(size, size).astype(np.uint8)
    grow = 2 * round(MICRO_DILATE * size / 64) + 1
    return cv2.dilate(big, np.ones((grow, grow), np.uint8)) > 0


def _pool(moves: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean motion over the ROI_SHARE of `keep` pixels with the most persistent motion."""
    candidates = np.flatnonzero(keep)
    if len(candidates) == 0:
        return np.zeros(len(moves))
    activity = np.quantile(moves[:, candidates], ACTIVITY_QUANTILE, axis=0)
    k = max(1, int(ROI_SHARE * len(candidates)))
    roi = candidates[np.argpartition(activity, -k)[-k:]]
    return moves[:, roi].mean(axis=1).astype(np.float64)


def smooth(curve: np.ndarray, window: int | None = None) -> np.ndarray:
    """Centred moving average; window defaults to SMOOTH_SHARE of the length (odd, >= 3)."""
    curve = np.asarray(curve, np.float64)
    n = len(curve)
    if window is None:
        window = max(3, int(round(SMOOTH_SHARE * n)) | 1)
    if n < 3 or window < 2:
        return curve
    half = window // 2
    padded = np.pad(curve, half, mode="edge")
    return np.convolve(padded, np.ones(window) / window, mode="valid")[:n]


def spot_apex(
    frames: np.ndarray | None,
    onset: int = 0,
    *,
    mode: str = "flow",
    motion: np.ndarray | None = None,
) -> int:
    """Offset of the apex: the peak at or after `onset` of the smoothed motion curve.

    `motion` is a precomputed motion_curve(frames, onset) (then `frames` may be None).
    """
    if motion is None:
        if frames is None:
            raise ConfigError("spot_apex needs frames or a precomputed motion curve")
        motion = motion_curve(frames, onset, mode=mode)
    smoothed = smooth(motion)
    return int(onset + np.argmax(smoothed[onset:]))


def check_clip(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or len(frames) == 0:
        raise InputError(
            f"expected a non-empty uint8 clip (T, H, W, C), got {frames.dtype} {frames.shape}"
        )
    return frames if frames.ndim == 4 else frames[..., None]
