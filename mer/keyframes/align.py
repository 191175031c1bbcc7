"""Global head-motion compensation: register frames to the clip's onset frame.

Micro-expressions move facial features by a pixel or two, while heads drift by several;
without registration a network mostly sees the drift. We model the head's motion as one
global translation per frame and undo it where the key frames are resampled
(mer.keyframes.construction.build_keyframes with register=True, through `translate`), so each key frame
is interpolated once. Standard MER preprocessing aligns faces per clip; the
translation-only model is our choice (`keyframes.stabilize`). The translations come either
from the motion curve, which measures them anyway (mer.keyframes.motion.measure_motion; the default,
`keyframes.registration: motion`), or from phase correlation here (`registration: phase`;
sub-pixel and robust to the small local motions we want to keep, and to sudden head jumps
larger than the motion curve's flow follows: about a tenth of the face's width between two
of its samples; mer.keyframes.motion.Motion has the measured limits).

Cost and precision: the shifts are measured on grey copies halved (2 x 2 means) while the
shorter side stays at least MIN_SIDE px. The reference's spectra are computed once. The
correlation peak (real, CCS-packed transforms, on copies halved once more while at least
PEAK_MIN_SIDE) gives the shift to about a pixel; a weighted least-squares fit of the
cross-power phase at the low frequencies (below BAND) refines it, refitted on the image
moved back by the shift found until a refit changes it by less than REFIT_TOL. Low
frequencies carry the head's outline and shading rather than the fine features an
expression moves, and the phase-plane fit has no bias towards whole pixels. On the
synthetic set (8 x 4 clips, 340 x 280 px, known drift up to 2.4 px) the error is 0.17 px
RMS per axis (95th percentile 0.18 px), at about 0.4 ms a frame on one core. OpenCV's
`phaseCorrelate` on full-size frames: 0.23 px (0.55 px), about 1.3 ms a frame; on the
halved copies: 0.66 px, since its centroid sub-pixel step is biased towards whole pixels
at that size; the peak and a parabola alone: 0.27 px (0.58 px). Key frames built with the
parabola-only shifts kept more drift at the face's border, and LOSO UF1 on the synthetic
set fell (0.64 -> 0.48 in tests/test_train.py's run).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from mer.keyframes.video import halve, halvings

MIN_SIDE = 128  # px: registration copies are halved while their shorter side stays >= this
BAND = 0.03  # cycles per pixel of those copies: the phase plane is fitted below this
PEAK_MIN_SIDE = 64  # px: the correlation peak is found on copies halved while >= this
REFIT_TOL = 0.1  # px: phase-plane refits stop once one moves the shift by less than this
MAX_REFITS = 3  # (each leaves about 15 % of the error before it)
_EDGE = cv2.BORDER_REPLICATE


def reduce_gray(frames: np.ndarray, min_side: int = MIN_SIDE) -> tuple[np.ndarray, int]:
    """Grey copies of `frames` ((T, H, W) or (T, H, W, C) uint8, RGB), halved by 2 x 2 means
    while the shorter side stays >= `min_side`: ((T, h, w) uint8, factor). A pixel (x, y) of
    a copy covers the frame pixels factor*x .. factor*x + factor-1 (an odd last row or
    column is dropped before each halving)."""
    frames = np.asarray(frames)
    times = halvings(frames.shape[1:3], min_side)
    h, w = frames.shape[1] >> times, frames.shape[2] >> times
    out = np.empty((len(frames), h, w), np.uint8)
    for t, f in enumerate(frames):
        g = (
            f
            if f.ndim == 2
            else f[..., 0]
            if f.shape[-1] == 1
            else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        )
        out[t] = halve(g, times)
    return out, 2**times


class _PhaseCorrelator:
    """Phase correlation against one reference image, its spectra computed once.

    `shift` first finds the correlation peak on halved copies (to about a pixel: a parabola
    through its neighbours), then fits the phase plane of the cross-power spectrum at the
    frequencies below BAND cycles per pixel (least squares weighted by the cross-power
    magnitude, twice, each time around the shift found so far), and refits it on the image
    moved back by that shift (module docstring).
    """

    def __init__(self, reference: np.ndarray):
        h, w = reference.shape
        self.window, self.ex, self.ey, self.band, self.freqs = _plan(h, w)
        self.reference_low_conj = np.conj(self._low(self._windowed(reference, self.window)))
        # The peak only has to land within a pixel or so (the phase plane does the rest),
        # so it is found on copies halved while their shorter side stays >= PEAK_MIN_SIDE.
        self.peak_halvings = halvings(reference.shape, PEAK_MIN_SIDE)
        small = halve(reference, self.peak_halvings)
        self.peak_window = _hanning(*small.shape)
        self.shape = (cv2.getOptimalDFTSize(small.shape[0]), cv2.getOptimalDFTSize(small.shape[1]))
        self.reference = self._spectrum(self._windowed(small, self.peak_window))

    @staticmethod
    def _windowed(image: np.ndarray, window: np.ndarray) -> np.ndarray:
        x = image if image.dtype == np.float32 else image.astype(np.float32)
        return cv2.multiply(x - cv2.mean(x)[0], window)

    def _spectrum(self, x: np.ndarray) -> np.ndarray:
        hh, ww = self.shape
        x = cv2.copyMakeBorder(x, 0, hh - x.shape[0], 0, ww - x.shape[1], cv2.BORDER_CONSTANT)
        return cv2.dft(x)  # CCS-packed: the real transform, about 4x cheaper than complex

    def _low(self, x: np.ndarray) -> np.ndarray:
        rows = x @ self.ex  # the real image through the column transform, real and imaginary
        half = rows.shape[1] // 2
        return (self.ey @ (rows[:, :half] + 1j * rows[:, half:]))[self.band]

    def shift(self, image: np.ndarray) -> tuple[float, float]:
        """(dx, dy): how far `image`'s content lies right of / below the reference's."""
        small = self._windowed(halve(image, self.peak_halvings), self.peak_window)
        cross = cv2.mulSpectrums(self._spectrum(small), self.reference, 0, conjB=True)
        power = cv2.mulSpectrums(cross, cross, 0, conjB=True)  # |cross|^2, imaginary parts 0
        cross = cv2.divSpectrums(cross, np.sqrt(power), 0)  # keep the phase only
        surface = cv2.idft(cross, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)
        _, _, _, (x, y) = cv2.minMaxLoc(surface)
        hh, ww = self.shape
        peak = surface[y, x]
        dx = x + _parabola(surface[y, (x - 1) % ww], peak, surface[y, (x + 1) % ww])
        dy = y + _parabola(surface[(y - 1) % hh, x], peak, surface[(y + 1) % hh, x])
        shift = np.array([dx - ww if dx > ww / 2 else dx, dy - hh if dy > hh / 2 else dy])
        shift *= 2**self.peak_halvings
        # Phase plane: cross = |cross| exp(-2 pi i f . shift) at the low frequencies f. The
        # window does not move with the content, which biases the fit towards 0 by about 15 %
        # of the shift it measures: so it is fitted again on the image moved back by the
        # shift so far, until a refit changes the shift by less than REFIT_TOL.
        shift = shift + self._plane(self._windowed(image, self.window), shift)
        image = image.astype(np.float32)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        for _ in range(MAX_REFITS):
            back = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
            moved = cv2.warpAffine(image, back, image.shape[::-1], flags=flags, borderMode=_EDGE)
            step = self._plane(self._windowed(moved, self.window), np.zeros(2))
            shift = shift + step
            if np.hypot(*step) < REFIT_TOL:
                break
        return float(shift[0]), float(shift[1])

    def _plane(self, windowed: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The shift of `windowed` (relative to `start`) that the low-frequency phase says,
        by weighted least squares, twice; zero where the band is empty or degenerate."""
        low = self._low(windowed) * self.reference_low_conj
        freqs = self.freqs
        weighted = freqs * np.abs(low)[:, None]
        # The 2 x 2 normal matrix [[a, b], [b, d]], solved in closed form.
        a, b, d = (
            weighted[:, 0] @ freqs[:, 0],
            weighted[:, 0] @ freqs[:, 1],
            weighted[:, 1] @ freqs[:, 1],
        )
        det = a * d - b * b
        step = np.zeros(2)
        if abs(det) <= 1e-12 * max((a + d) ** 2, 1e-30):
            return step
        for _ in range(2):
            phase = np.angle(low * np.exp(-1j * (freqs @ (start + step))))
            gx, gy = weighted.T @ phase
            step = step + np.array([d * gx - b * gy, a * gy - b * gx]) / det
        return step


@functools.lru_cache(maxsize=8)
def _hanning(h: int, w: int) -> np.ndarray:
    return cv2.createHanningWindow((w, h), cv2.CV_32F)


@functools.lru_cache(maxsize=8)
def _plan(h: int, w: int) -> tuple[np.ndarray, ...]:
    """What every correlation at h x w shares: the window, and the transform matrices and
    frequencies (in radians per pixel, times -1) of the band below BAND."""
    window = _hanning(h, w)
    # The low-frequency DFT coefficients as two small matrix products: E_y @ x @ E_x.
    fx = np.arange(int(BAND * w) + 1) / w
    fy = np.fft.fftshift(np.fft.fftfreq(h))
    fy = fy[np.abs(fy) <= BAND]
    ex = np.exp(-2j * np.pi * np.outer(np.arange(w), fx))
    ex = np.ascontiguousarray(np.hstack([ex.real, ex.imag]), dtype=np.float32)
    ey = np.exp(-2j * np.pi * np.outer(fy, np.arange(h))).astype(np.complex64)
    gx, gy = np.meshgrid(fx, fy)
    # Half plane: fx > 0, or fx = 0 and fy > 0 (the rest are conjugates or the mean).
    band = (np.hypot(gx, gy) <= BAND) & ((gx > 0) | (gy > 0))
    freqs = -2 * np.pi * np.stack([gx[band], gy[band]], axis=1)
    return window, ex, ey, band, freqs


def _parabola(left: float, centre: float, right: float) -> float:
    """Offset of the vertex of the parabola through (-1, left), (0, centre), (1, right)."""
    curvature = left - 2 * centre + right
    return 0.0 if curvature >= 0 else float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def estimate_shifts(
    frames: np.ndarray | None,
    reference: int = 0,
    *,
    reduced: tuple[np.ndarray, int] | None = None,
) -> np.ndarray:
    """(T, 2) sub-pixel (dx, dy) of each frame's content relative to frame `reference`, in
    the frames' pixels. `reduced` is reduce_gray(frames), if the caller already has it
    (then `frames` is not read and may be None)."""
    gray, factor = reduced if reduced is not None else reduce_gray(frames)
    shifts = np.zeros((len(gray), 2), dtype=np.float64)
    correlator = _PhaseCorrelator(gray[reference])
    for t, g in enumerate(gray):
        if t != reference:
            shifts[t] = correlator.shift(g)
    return shifts * factor


def stabilize(frames: np.ndarray, reference: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames shifted onto frame `reference` at full size (bicubic, `translate`); returns
    (frames, shifts)."""
    shifts = estimate_shifts(frames, reference)
    moved = [
        f if dx == dy == 0 else translate(f, dx, dy)
        for f, (dx, dy) in zip(frames, shifts, strict=True)
    ]
    return np.stack(moved), shifts


CUBIC_A = -0.75  # the cubic convolution kernel's parameter (Keys 1981), as OpenCV's INTER_CUBIC


def translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """`image` (H, W[, C], uint8 or float32) with its content moved back by (dx, dy) pixels:
    out(x, y) = image(x + dx, y + dy), bicubic (coordinates outside clamped to the border).

    A translation samples every pixel at the same sub-pixel offset, so the bicubic
    interpolation is one separable 4-tap filter plus a whole-pixel move: the same output as
    OpenCV's warpAffine with INTER_CUBIC and BORDER_REPLICATE (to +-1 grey level; warpAffine
    rounds the offset to 1/32 px) at about a quarter of its cost."""
    h, w = image.shape[:2]
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    pad = max(abs(ix), abs(iy)) + 2
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, _EDGE)
    kx, ky = _cubic_taps(dx - ix), _cubic_taps(dy - iy)
    out = cv2.sepFilter2D(padded, -1, kx, ky, anchor=(1, 1), borderType=_EDGE)
    out = out[pad + iy : pad + iy + h, pad + ix : pad + ix + w]
    return np.ascontiguousarray(out).reshape(image.shape)


def _cubic_taps(fraction: float) -> np.ndarray:
    """Weights of the pixels at -1, 0, 1, 2 for a sample `fraction` (0..1) past pixel 0.
    Four Python floats (the same float64 arithmetic as numpy's) rather than numpy on four
    elements: a tenth of the cost, which was a tenth of a key frame's resampling."""
    a = CUBIC_A
    taps = []
    for pixel in (-1.0, 0.0, 1.0, 2.0):
        x = abs(pixel - fraction)
        if x <= 1:
            taps.append(((a + 2) * x - (a + 3)) * x * x + 1)
        else:
            taps.append(((a * x - 5 * a) * x + 8 * a) * x - 4 * a)
    return np.array(taps, np.float32)


def source_frames(positions: np.ndarray, n: int) -> list[int]:
    """The frames that key frames at (fractional) `positions` are built from: floor and
    ceil of every position, within 0..n-1."""
    positions = np.asarray(positions, dtype=np.float64)
    needed = {*np.floor(positions).astype(int).tolist(), *np.ceil(positions).astype(int).tolist()}
    return sorted(t for t in needed if 0 <= t < n)
