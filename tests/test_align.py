"""Head-motion compensation: a known global shift is found and removed."""

import cv2
import numpy as np

from mer.align import estimate_shifts, stabilize


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
    from mer.keyframes import build_keyframes

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
    from mer.keyframes import _scaled

    base = _face(340, 280)
    shifted = _drifting(base, [(0, 0), (4.0, -2.0)])  # content 4 px right, 2 px up
    back = _scaled(shifted[1], 112, (4.0, -2.0))
    ref = _scaled(base, 112, (0.0, 0.0))
    inner = (slice(6, -6), slice(6, -6))
    assert np.abs(back.astype(int) - ref.astype(int))[inner].mean() < 1.5
    moved = _scaled(shifted[1], 112, (0.0, 0.0))
    assert np.abs(moved.astype(int) - ref.astype(int))[inner].mean() > 3


def test_reduced_gray_and_source_frames():
    from mer.align import reduce_gray, source_frames

    frames = np.zeros((3, 301, 260, 3), np.uint8)
    gray, factor = reduce_gray(frames)
    assert gray.shape == (3, 150, 130) and factor == 2
    gray, factor = reduce_gray(frames[:, :200])
    assert gray.shape == (3, 200, 260) and factor == 1
    assert source_frames(np.array([0.0, 2.5, 3.0, 9.0]), 9) == [0, 2, 3]
