"""Tiny long videos for the spotting tests: a textured grey face in a frame folder, with
local movements (a patch that shifts and comes back) at known frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mer.datasets.long_videos import Interval, LongVideo, LongVideoSet


def face(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur((rng.random((size, size)) * 255).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 30, 220, cv2.NORM_MINMAX)


def write_video(
    folder: Path,
    n: int,
    events: list[tuple[int, int, float]],
    *,
    size: int = 96,
    seed: int = 0,
    first: int = 1,
) -> None:
    """Frames first..first+n-1 as img<k>.png; each event (onset, offset, px) shifts the lower
    middle of the face by up to px (rising to the middle of the event and back)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = face(size, seed)
    rng = np.random.default_rng(seed + 1)
    y0, y1, x0, x1 = size // 2, 3 * size // 4, size // 4, 3 * size // 4
    for i in range(n):
        img = base.copy()
        for a, b, px in events:
            if a <= i <= b:
                shift = px * np.sin(np.pi * (i - a) / max(1, b - a))
                m = np.float32([[1, 0, 0], [0, 1, shift]])
                moved = cv2.warpAffine(base, m, (size, size), borderMode=cv2.BORDER_REFLECT)
                img[y0:y1, x0:x1] = moved[y0:y1, x0:x1]
        img = np.clip(img + rng.normal(0, 1.0, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"img{first + i}.png"), img)


def make_set(root: Path, subjects: int = 2, n: int = 90, fps: float = 30.0) -> LongVideoSet:
    """One video per subject, each with one micro (8 frames) and one macro (30 frames)."""
    videos, intervals = [], []
    for s in range(subjects):
        name = f"s{s + 1}_v1"
        micro = (20 + 5 * s, 27 + 5 * s, 2.5)
        macro = (55, 84, 6.0)
        write_video(root / name, n, [micro, macro], seed=s)
        videos.append(LongVideo("synthetic_long", f"s{s + 1}", name, str(root / name), fps, n, 1))
        intervals.append(Interval(name, micro[0] + 1, micro[1] + 1, "micro"))
        intervals.append(Interval(name, macro[0] + 1, macro[1] + 1, "macro"))
    return LongVideoSet(videos, intervals)
