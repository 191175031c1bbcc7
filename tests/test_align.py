"""Head-motion compensation: a known global shift is found and removed."""

import cv2
import numpy as np
import pytest

from mer.errors import InputError
from mer.keyframes.align import estimate_shifts, stabilize


def _face(h=170, w=140, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    cv2.ellipse(img, (w // 2, h // 2), (w // 3, h // 3), 0, 0, 360, (200, 160, 120), -1)
    cv2.circle(img, (w // 3, h // 3), 6, (20, 20, 20), -1)
    return img


def test_known_shift_is_recovered_and_removed():
    base = _face()
    h, w = base.shape[:2]
    moved = [
        cv2.warpAffine(
            base, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REPLICATE
        )
        for dx, dy in [(0, 0), (2.0, -1.0), (-3.0, 1.5)]
    ]
    shifts = estimate_shifts(np.stack(moved))
    # A tenth of a pixel (the phase-plane fit; the correlation peak alone: about half).
    assert np.allclose(shifts, [[0, 0], [2.0, -1.0], [-3.0, 1.5]], atol=0.1)
    out, _ = stabilize(np.stack(moved))
    inner = (slice(10, -10), slice(10, -10))
    before = np.abs(moved[2].astype(int) - base.astype(int))[inner].mean()
    after = np.abs(out[2].astype(int) - base.astype(int))[inner].mean()
    assert after < before / 2


def _drifting(base, steps):
    h, w = base.shape[:2]
    return np.stack(
        [
            cv2.warpAffine(
                base, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REPLICATE
            )
            for dx, dy in steps
        ]
    )


def test_registered_key_frames_lose_the_drift():
    from mer.keyframes.construction import build_keyframes

    base = _face(340, 280)  # halved once before the shifts are measured
    frames = _drifting(base, [(0.3 * t, -0.2 * t) for t in range(12)])  # up to 3.3 px
    plain = build_keyframes(frames, 0, 8, 11, k=6, size=112, method="uniform")
    registered = build_keyframes(frames, 0, 8, 11, k=6, size=112, method="uniform", register=True)
    np.testing.assert_array_equal(plain.indices, registered.indices)
    inner = (slice(8, -8), slice(8, -8))

    def error(kf):  # mean |last key frame - onset key frame| inside the border
        return np.abs(kf.frames[-1].astype(int) - kf.frames[0].astype(int))[inner].mean()

    assert error(registered) < error(plain) / 4
    np.testing.assert_array_equal(registered.frames[0], plain.frames[0])  # the onset stays


def test_key_frame_resampling_moves_content_by_the_shift():
    from mer.keyframes.construction import scale_frame

    base = _face(340, 280)
    shifted = _drifting(base, [(0, 0), (4.0, -2.0)])  # content 4 px right, 2 px up
    back = scale_frame(shifted[1], 112, (4.0, -2.0))
    ref = scale_frame(base, 112, (0.0, 0.0))
    inner = (slice(6, -6), slice(6, -6))
    assert np.abs(back.astype(int) - ref.astype(int))[inner].mean() < 1.5
    moved = scale_frame(shifted[1], 112, (0.0, 0.0))
    assert np.abs(moved.astype(int) - ref.astype(int))[inner].mean() > 3


def test_reduced_gray_and_source_frames():
    from mer.keyframes.align import reduce_gray, source_frames

    frames = np.zeros((3, 301, 260, 3), np.uint8)
    gray, factor = reduce_gray(frames)
    assert gray.shape == (3, 150, 130) and factor == 2
    gray, factor = reduce_gray(frames[:, :200])
    assert gray.shape == (3, 200, 260) and factor == 1
    assert source_frames(np.array([0.0, 2.5, 3.0, 9.0]), 9) == [0, 2, 3]


def test_large_shift_is_found_from_the_coarse_peak():
    # The correlation peak is searched on halved copies; the phase plane then refines it.
    base = _face(340, 280)
    frames = _drifting(base, [(0, 0), (17.3, -9.6), (-24.8, 12.1)])
    shifts = estimate_shifts(frames)
    assert np.allclose(shifts, [[0, 0], [17.3, -9.6], [-24.8, 12.1]], atol=0.15)


def test_translate_is_warp_affine_bicubic():
    from mer.keyframes.align import translate

    base = _face(170, 140)
    h, w = base.shape[:2]
    # warpAffine rounds the sub-pixel offset to 1/32 px: these shifts are on that grid.
    for dx, dy in [(0.25, 0.5), (-2.71875, 1.1875), (5.5, -3.25), (0.0, -0.90625), (3.0, 2.0)]:
        ref = cv2.warpAffine(
            base,
            np.float32([[1, 0, -dx], [0, 1, -dy]]),
            (w, h),
            flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REPLICATE,
        )
        out = translate(base, dx, dy)
        assert out.shape == base.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1, (dx, dy)
        gray = translate(base[..., 0], dx, dy)  # (H, W) works too
        assert gray.shape == (h, w)
        assert np.abs(gray.astype(int) - ref[..., 0].astype(int)).max() <= 1
    # Off that grid the two differ only where the image changes fast.
    ref = cv2.warpAffine(
        base, np.float32([[1, 0, 2.7], [0, 1, -1.2]]), (w, h), flags=cv2.INTER_CUBIC
    )
    assert np.abs(translate(base, -2.7, 1.2).astype(int) - ref.astype(int))[5:-5, 5:-5].mean() < 0.3


def test_motion_drift_follows_the_head_and_registers_key_frames():
    # The head shifts the motion curve measures (mer.keyframes.motion.measure_motion) serve as the
    # registration: known drift, sub-pixel, measured on the grey copy the pipeline uses.
    from mer.keyframes.align import reduce_gray
    from mer.keyframes.construction import build_keyframes
    from mer.keyframes.motion import measure_motion

    base = _face(340, 280)
    steps = [(0.15 * t, -0.1 * t + 0.05 * t * t / 12) for t in range(24)]  # up to 3.5 px
    frames = _drifting(base, steps)
    gray, factor = reduce_gray(frames)
    motion = measure_motion(gray, 0)
    drift = motion.drift * factor
    assert drift.shape == (24, 2) and np.all(drift[0] == 0)
    assert np.abs(drift - np.array(steps)).max() < 0.15
    assert np.allclose(motion.curve, measure_motion(gray, 0).curve)  # deterministic

    kw = dict(k=6, size=112, method="uniform")
    plain = build_keyframes(frames, 0, 18, 23, **kw)
    registered = build_keyframes(frames, 0, 18, 23, register=True, drift=drift, **kw)
    inner = (slice(8, -8), slice(8, -8))

    def error(kf):  # mean |last key frame - onset key frame| inside the border
        return np.abs(kf.frames[-1].astype(int) - kf.frames[0].astype(int))[inner].mean()

    assert error(registered) < error(plain) / 4
    with pytest.raises(InputError, match="drift has shape"):
        build_keyframes(frames, 0, 18, 23, register=True, drift=drift[:5], **kw)


def test_motion_drift_reports_a_head_jump_it_cannot_follow():
    # A sudden jump within reach is followed (after the sample interval it falls in); a
    # larger one is reported as lost (drift None), so build_record registers that clip by
    # phase correlation instead.
    from mer.keyframes.align import reduce_gray
    from mer.keyframes.motion import measure_motion

    base = _face(340, 280)
    for jump, followed in ((16, True), (40, False)):
        steps = np.array([(0.0, 0.0)] * 12 + [(jump, jump / 2)] * 12)
        gray, factor = reduce_gray(_drifting(base, steps))
        drift = measure_motion(gray, 0).drift
        if followed:
            assert np.abs(drift * factor - steps)[14:].max() < 0.15
        else:
            assert drift is None
            assert np.abs(estimate_shifts(_drifting(base, steps)) - steps).max() < 0.15


def test_cubic_taps_are_the_keys_kernel_in_float64_rounded_once():
    # _cubic_taps computes the four weights with Python floats; they must equal the kernel
    # evaluated by numpy in float64 and rounded to float32, bit for bit (key frames unchanged).
    from mer.keyframes.align import CUBIC_A, _cubic_taps

    a = CUBIC_A
    for fraction in [0.0, 0.5, 1.0, 1e-12, *np.random.default_rng(0).random(2000)]:
        x = np.abs(np.array([-1.0, 0.0, 1.0, 2.0]) - fraction)
        near = ((a + 2) * x - (a + 3)) * x * x + 1
        far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        expected = np.where(x <= 1, near, far).astype(np.float32)
        assert np.array_equal(_cubic_taps(float(fraction)), expected), fraction
