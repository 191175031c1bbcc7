"""Long videos as overlapping frame windows, and the per-frame features of one window.

A long video is never read whole: `plan_windows` cuts its frame list into windows of
`window` frames that overlap by half, and `window_features` reads one window's frames (one
image decoded at a time into a small grey copy) and measures it. A worker therefore holds
O(window x side^2) bytes, whatever the video's length (tests/test_spotting_stage.py measures
the peak with tracemalloc on videos of different lengths).

Features of one window (offsets are 0-based positions in the video's frame list):
  motion   the apex spotter's signal (mer.keyframes.motion.measure_motion, "flow" mode) made
           two-sided: each frame's motion relative to the window's first frame and relative to
           its last, the smaller of the two. A movement that comes and goes inside the window
           (a micro-expression) scores high; head motion or a change that persists past the
           window's end scores low on one side. Reported for every frame of the window; the
           stage keeps the largest value over the windows that hold a frame.
  blocks   an MDMD-style feature (He et al., MEGC2020 spotting baseline): the Farneback flow
           from frame t - span to t + span (the face's median flow, head motion, removed), on
           a grid x grid of blocks (a grid, not landmark ROIs: the project finds no landmarks);
           per block, the mean flow length of the vectors in the block's main direction (the
           most populated of 8 direction bins). Reported for the frames a window owns
           (`owned`), so that each frame has exactly one value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mer import storage
from mer.errors import DecodeError, InputError
from mer.keyframes.motion import FARNEBACK, measure_motion

DIRECTION_BINS = 8


@dataclass(frozen=True)
class WindowSettings:
    """What every window of a run is cut and measured with (all in frames or pixels)."""

    side: int = 126  # grey copies are side x side px (the motion curve measures at side/2)
    grid: int = 6  # MDMD blocks per row and column
    window_s: float = 1.0  # window length; windows overlap by half
    span_s: float = 0.05  # MDMD flow from t - span to t + span

    def frames(self, fps: float) -> tuple[int, int]:
        """(window length, flow half-span) in frames at `fps`."""
        length = max(8, round(self.window_s * fps))
        span = max(1, round(self.span_s * fps))
        return length, min(span, length // 4)


@dataclass(frozen=True)
class Window:
    """One window of a long video: frames `start..stop` (offsets, inclusive) read from
    `uris`; the block features of `owned` (first, last offsets) are this window's to report."""

    video: str
    index: int
    start: int
    stop: int
    owned: tuple[int, int]
    uris: tuple[str, ...]


def video_frames(folder: str, first_frame: int, n_frames: int) -> list[str]:
    """The URIs of a video's frames `first_frame .. first_frame + n_frames - 1`, in order; a
    frame number missing inside is filled with the one before it (as mer.keyframes.video
    does), a folder without the first frame is an InputError naming it."""
    from mer.datasets.common import list_frames  # here: it loads pandas, which windows need not

    listed = dict(list_frames(folder))
    if first_frame not in listed:
        raise InputError(f"{folder}: frame {first_frame} (the video's first) is not there")
    uris, previous = [], listed[first_frame]
    for n in range(first_frame, first_frame + n_frames):
        previous = listed.get(n, previous)
        uris.append(previous)
    return uris


def plan_windows(video: str, uris: list[str], fps: float, ws: WindowSettings) -> list[Window]:
    """Windows of `ws.frames(fps)[0]` frames overlapping by half; each frame is owned by
    exactly one window (the middle halves; the first and last windows own their edges)."""
    n = len(uris)
    length, _ = ws.frames(fps)
    length = min(length, n)
    hop = max(1, length // 2)
    count = max(1, math.ceil((n - length) / hop) + 1)
    windows = []
    for i in range(count):
        start = min(i * hop, n - length)
        stop = start + length - 1
        lo = 0 if i == 0 else windows[-1].owned[1] + 1
        hi = n - 1 if i == count - 1 else start + length - 1 - length // 4
        windows.append(Window(video, i, start, stop, (lo, hi), tuple(uris[start : stop + 1])))
    return windows


def read_window(uris: tuple[str, ...] | list[str], side: int) -> np.ndarray:
    """The frames of `uris` as grey uint8 (T, side, side), decoded one at a time (a full-size
    frame is only ever held alone). Unreadable frames are a DecodeError naming the file."""
    out = np.empty((len(uris), side, side), np.uint8)
    for i, uri in enumerate(uris):
        try:
            blob = storage.read_bytes(uri)
        except FileNotFoundError as e:
            raise InputError(f"{uri}: frame file vanished while reading") from e
        image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_GRAYSCALE) if blob else None
        if image is None:
            raise DecodeError(
                f"{uri}: cannot decode this frame image (empty, truncated or corrupt)"
            )
        out[i] = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return out


def window_features(window: Window, fps: float, ws: WindowSettings) -> dict:
    """One window's features: motion (T,) for offsets start..stop, blocks (owned, grid^2) for
    the owned offsets, float32."""
    frames = read_window(window.uris, ws.side)
    return features_of_frames(frames, window.start, window.owned, fps, ws)


def features_of_frames(
    frames: np.ndarray, start: int, owned: tuple[int, int], fps: float, ws: WindowSettings
) -> dict:
    """`window_features` on frames already read (grey uint8 (T, side, side))."""
    n = len(frames)
    before = measure_motion(frames, 0, mode="flow", size=ws.side // 2).curve
    after = measure_motion(frames, n - 1, mode="flow", size=ws.side // 2).curve
    motion = np.minimum(before, after).astype(np.float32)
    _, span = ws.frames(fps)
    small = [
        cv2.resize(f, (ws.side // 2, ws.side // 2), interpolation=cv2.INTER_AREA) for f in frames
    ]
    lo, hi = owned
    blocks = np.zeros((hi - lo + 1, ws.grid * ws.grid), np.float32)
    for j, t in enumerate(range(lo, hi + 1)):
        a, b = t - span - start, t + span - start
        if a < 0 or b >= n:  # the video's own first and last frames: no flow across them
            a, b = max(a, 0), min(b, n - 1)
            if a >= b:
                continue
        blocks[j] = mdmd_blocks(small[a], small[b], ws.grid)
    return {"motion": motion, "blocks": blocks}


def mdmd_blocks(a: np.ndarray, b: np.ndarray, grid: int) -> np.ndarray:
    """Per block of a grid x grid split, the mean flow length a -> b in the block's main
    direction, after the face's median flow (head motion) is removed."""
    flow = cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)
    flow -= np.median(flow.reshape(-1, 2), axis=0)
    length, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1])
    direction = np.minimum((angle / (2 * np.pi) * DIRECTION_BINS).astype(int), DIRECTION_BINS - 1)
    h, w = length.shape
    out = np.zeros(grid * grid, np.float32)
    for r in range(grid):
        for c in range(grid):
            ys = slice(r * h // grid, (r + 1) * h // grid)
            xs = slice(c * w // grid, (c + 1) * w // grid)
            d, m = direction[ys, xs].ravel(), length[ys, xs].ravel()
            main = np.bincount(d, minlength=DIRECTION_BINS).argmax()
            out[r * grid + c] = m[d == main].mean()
    return out
