"""Clips drawn by hand, as a new user makes them: a face of a few ellipses whose mouth opens
around mid-clip (tests/test_inference.py, benchmarks/prediction_quality.py), and a writer of
frames as MPEG-4 video."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def drawn_face(
    side: int,
    t: int,
    n: int,
    mouth: float,
    *,
    background: int = 200,
    skin: tuple[int, int, int] = (150, 170, 210),
) -> np.ndarray:
    """Frame `t` of `n` (side x side, BGR uint8) of a drawn face (no texture) whose mouth opens
    by `mouth` px around mid-clip."""
    im = np.full((side, side, 3), background, np.uint8)
    c = side // 2
    cv2.ellipse(im, (c, c), (int(side * 0.35), int(side * 0.45)), 0, 0, 360, skin, -1)
    for dx in (-1, 1):
        cv2.circle(im, (c + dx * int(side * 0.13), int(side * 0.4)), side // 30, (40, 40, 40), -1)
    open_ = mouth * np.exp(-(((t - n / 2) / (n / 8)) ** 2))
    axes = (int(side * 0.14), max(1, int(side * 0.04 + open_)))
    cv2.ellipse(im, (c, int(side * 0.68)), axes, 0, 0, 180, (60, 40, 120), 2)
    return im


def write_video(path: str | Path, frames: list[np.ndarray], fps: int = 30) -> None:
    """`frames` (H, W, 3 BGR uint8) as MPEG-4 video (mp4v) at `path`, in the container its
    extension names (.mp4, .avi)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write MPEG-4 video to {path}")
    for f in frames:
        writer.write(f)
    writer.release()
