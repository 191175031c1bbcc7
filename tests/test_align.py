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
    assert np.allclose(
        shifts, [[0, 0], [2.0, -1.0], [-3.0, 1.5]], atol=0.6
    )  # phase correlation: about half a pixel here
    out, _ = stabilize(np.stack(moved))
    inner = (slice(10, -10), slice(10, -10))
    before = np.abs(moved[2].astype(int) - base.astype(int))[inner].mean()
    after = np.abs(out[2].astype(int) - base.astype(int))[inner].mean()
    assert after < before / 2


def test_registering_only_the_key_frame_sources_matches_registering_all():
    from mer.align import stabilize_at

    base = _face()
    h, w = base.shape[:2]
    frames = np.stack(
        [
            cv2.warpAffine(
                base,
                np.float32([[1, 0, 0.4 * t], [0, 1, -0.2 * t]]),
                (w, h),
                borderMode=cv2.BORDER_REPLICATE,
            )
            for t in range(10)
        ]
    )
    positions = np.array([0.0, 3.0, 5.5, 9.0])
    partial = stabilize_at(frames, positions)
    full, _ = stabilize(frames)
    for t in (0, 3, 5, 6, 9):
        assert np.array_equal(partial[t], full[t])
    assert np.array_equal(partial[4], frames[4])  # not a key-frame source: untouched
