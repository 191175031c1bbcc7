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
    assert np.allclose(shifts, [[0, 0], [2.0, -1.0], [-3.0, 1.5]], atol=0.6)  # phase correlation: about half a pixel here
    out, _ = stabilize(np.stack(moved))
    inner = (slice(10, -10), slice(10, -10))
    before = np.abs(moved[2].astype(int) - base.astype(int))[inner].mean()
    after = np.abs(out[2].astype(int) - base.astype(int))[inner].mean()
    assert after < before / 2
