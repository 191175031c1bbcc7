"""Face and eye boxes with OpenCV's Haar cascades, and one square face crop per clip.

The cascades are the ones shipped inside the opencv-python(-headless) wheel
(`cv2.data.haarcascades`: haarcascade_frontalface_default.xml, haarcascade_eye.xml;
Viola & Jones, CVPR 2001); nothing is downloaded.

A clip gets one crop box, found on its onset frame and used for every frame: micro-
expressions are small movements, and a box that jittered from frame to frame would add more
motion than the expression itself (our choice). Faces smaller than a fifth of the frame's
shorter side are ignored. Where no face is found the clip keeps a centre square crop and
`found` is False, so the caller can record it.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h in pixels

# Detection runs on a copy whose longer side is at most this many pixels: Haar cost grows
# with the image area, and neither a face in a frame nor the eyes in a face crop need more
# (the cascades' own windows are 24 and 20 px; our choice).
FACE_MAX_SIDE = 240
EYES_MAX_SIDE = 128
# An eye box is about a fifth of a face's width; larger windows are not searched (they cost
# about 10 % of the eye search and never matched on the synthetic faces).
EYE_MAX_SHARE = 0.4
# Rows of a face crop searched for eyes (shares of its height; the search cost grows with
# the area): below the hairline, above the nose. On the synthetic faces the boxes start at
# 0.31; this band finds both eyes on all 128 onset frames of the key-frame benchmark.
EYE_BAND = (0.15, 0.55)

_local = threading.local()  # one classifier per thread: CascadeClassifier is not thread-safe


def _cascade(name: str) -> cv2.CascadeClassifier:
    cache = _local.__dict__.setdefault("cascades", {})
    if name not in cache:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
        if cascade.empty():
            raise RuntimeError(f"OpenCV's {name} did not load; reinstall opencv-python-headless")
        cache[name] = cascade
    return cache[name]


def _gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2 or frame.shape[-1] == 1:
        return frame.reshape(frame.shape[0], frame.shape[1])
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _detect(
    frame: np.ndarray,
    cascade: str,
    min_share: float,
    max_side: int,
    max_width_share: float | None = None,
) -> list[Box]:
    """All boxes of `cascade` in `frame`, largest first, in the frame's own pixels: at least
    `min_share` of the shorter side, at most `max_width_share` of the width (if given)."""
    gray = _gray(frame)
    scale = min(1.0, max_side / max(gray.shape))
    if scale < 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    side = max(8, int(min(gray.shape) * min_share))
    limits = {"minSize": (side, side)}
    if max_width_share is not None:
        widest = max(side, int(gray.shape[1] * max_width_share))
        limits["maxSize"] = (widest, widest)
    found = _cascade(cascade).detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, **limits)
    boxes = [tuple(int(round(v / scale)) for v in b) for b in found]
    return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


def detect_face_box(frame: np.ndarray) -> Box | None:
    """The largest frontal face (x, y, w, h) in a uint8 H x W (x C) frame, or None."""
    boxes = _detect(frame, "haarcascade_frontalface_default.xml", 0.2, FACE_MAX_SIDE)
    return boxes[0] if boxes else None


def detect_eye_boxes(face: np.ndarray) -> list[Box]:
    """Up to two eye boxes (x, y, w, h) in the eye band of a face crop (EYE_BAND of its
    height), left to right, each at most EYE_MAX_SHARE of the crop's width."""
    h = face.shape[0]
    top, bottom = int(h * EYE_BAND[0]), int(h * EYE_BAND[1])
    band = face[top:bottom]
    found = _detect(band, "haarcascade_eye.xml", 0.08, EYES_MAX_SIDE, EYE_MAX_SHARE)[:2]
    boxes = [(x, y + top, w, bh) for x, y, w, bh in found]
    return sorted(boxes)


def face_crop_box(onset_frame: np.ndarray, *, margin: float = 0.2) -> tuple[Box, bool]:
    """One square crop box for a clip, from its onset frame: (box, found).

    The detected face box is grown by `margin` times its size on each side, made square
    around its centre and shifted (then if need be shrunk) to lie inside the image. No
    face: the centre square of side min(H, W), found False.
    """
    h, w = onset_frame.shape[:2]
    face = detect_face_box(onset_frame)
    if face is None:
        side = min(h, w)
        return ((w - side) // 2, (h - side) // 2, side, side), False
    x, y, fw, fh = face
    side = min(int(round(max(fw, fh) * (1 + 2 * margin))), h, w)
    cx, cy = x + fw / 2, y + fh / 2
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    return (left, top, side, side), True


def crop(frames: np.ndarray, box: Box) -> np.ndarray:
    """frames[..., y:y+h, x:x+w, :] for one frame (H, W, C) or a clip (T, H, W, C); a view."""
    x, y, w, h = box
    if frames.ndim == 3:
        return frames[y : y + h, x : x + w]
    return frames[:, y : y + h, x : x + w]
