"""The spotting stage's Ray Data pass: long videos -> windows -> per-frame features.

Every window of every video (mer.spotting.windows) is one Ray Data row; a fixed pool of
actors (one CPU each, as the key-frame stage's) reads and measures windows side by side, on
any node: a window carries its frames' URIs, so an s3:// video is read where the window runs.
The driver sees only the windows' features (a few floats per frame) and stitches each
video's: `motion` takes the largest value over the windows holding a frame, `blocks` the
value of the one window owning it. A video one of whose frames cannot be read is a reject,
recorded with its reason; the run goes on.

Features are written once per video and settings under `features_uri` (mer.layout), one
.npz per video; a rerun with the same settings reads them back.
"""

from __future__ import annotations

import io
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from mer import storage
from mer.actor_pools import fixed_pool
from mer.datasets.long_videos import LongVideo
from mer.errors import DecodeError, InputError
from mer.progress import Counter, emit
from mer.spotting.windows import (
    Window,
    WindowSettings,
    plan_windows,
    video_frames,
    window_features,
)


@dataclass
class VideoFeatures:
    """One video's per-frame features (offset i is frame first_frame + i)."""

    video: str
    subject: str
    fps: float
    first_frame: int
    motion: np.ndarray  # float32 (n,)
    blocks: np.ndarray  # float32 (n, grid^2)

    @property
    def n_frames(self) -> int:
        return len(self.motion)


def process_window(item: dict) -> dict:
    """Ray Data map function: one window's features, or its reject reason. `peak_bytes` is the
    largest amount of memory Python-visible allocations (numpy, OpenCV's arrays) reached
    while the window was read and measured: O(window), whatever the video's length."""
    import cv2

    cv2.setNumThreads(1)  # one Ray task, one CPU
    window = Window(
        item["video"],
        item["index"],
        item["start"],
        item["stop"],
        tuple(item["owned"]),
        tuple(item["uris"]),
    )
    ws = WindowSettings(**item["ws"])
    tracing = not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    out = {
        "video": window.video,
        "index": window.index,
        "start": window.start,
        "owned_first": window.owned[0],
        "reason": "",
    }
    try:
        feats = window_features(window, item["fps"], ws)
        out.update(motion=feats["motion"], blocks=feats["blocks"])
    except (InputError, DecodeError) as e:  # this video's input, not our code
        out.update(
            motion=np.zeros(0, np.float32),
            blocks=np.zeros((0, ws.grid**2), np.float32),
            reason=f"{type(e).__name__}: {e}",
        )
    out["peak_bytes"] = tracemalloc.get_traced_memory()[1]
    if tracing:
        tracemalloc.stop()
    out["seconds"] = time.perf_counter() - start
    out["frames"] = window.stop - window.start + 1
    return out


class _WindowWorker:
    def __call__(self, item: dict) -> dict:
        return process_window(item)


def window_items(videos: list[LongVideo], ws: WindowSettings) -> tuple[list[dict], list[dict]]:
    """Every window of every video as a Ray Data row; videos whose frames cannot be listed
    are rejects (dicts as the adapters record them)."""
    items, rejects = [], []
    for v in videos:
        try:
            uris = video_frames(v.frames, v.first_frame, v.n_frames)
        except InputError as e:
            rejects.append(_reject(v, str(e)))
            continue
        for w in plan_windows(v.video, uris, v.fps, ws):
            items.append(
                {
                    "video": w.video,
                    "index": w.index,
                    "start": w.start,
                    "stop": w.stop,
                    "owned": list(w.owned),
                    "uris": list(w.uris),
                    "fps": v.fps,
                    "ws": asdict(ws),
                }
            )
    return items, rejects


def _reject(v: LongVideo, reason: str) -> dict:
    return {
        "dataset": v.dataset,
        "subject": v.subject,
        "clip": v.video,
        "stage": "spotting",
        "reason": reason,
    }


def compute_features(
    videos: list[LongVideo],
    ws: WindowSettings,
    *,
    out: str | None = None,
    concurrency: int = 2,
    use_ray: bool = True,
    progress: Callable[[str], None] = emit,
) -> tuple[dict[str, VideoFeatures], list[dict], dict]:
    """Each video's features (read from `out` where already written there), the rejected
    videos, and a profile (windows, frames, seconds, the largest window peak_bytes).

    `use_ray=False` measures the windows one after another in this process (same output)."""
    done: dict[str, VideoFeatures] = {}
    todo = []
    for v in videos:
        cached = _read(out, v) if out else None
        if cached is not None:
            done[v.video] = cached
        else:
            todo.append(v)
    items, rejects = window_items(todo, ws)
    progress(
        f"[spotting] {len(todo)} videos ({len(videos) - len(todo)} done before) in "
        f"{len(items)} windows, {concurrency} parallel"
    )
    started = time.time()
    counter = Counter("spotting", len(items), progress)
    results = []
    if items and use_ray:
        import ray

        if not ray.is_initialized():
            ray.init()
        ray.data.DataContext.get_current().enable_progress_bars = False
        blocks = min(len(items), 64 * concurrency)
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        # As the key-frame stage: a fixed pool (mer.actor_pools), a block per task.
        ds = ds.map(_WindowWorker, num_cpus=1, compute=fixed_pool(concurrency, blocks))
        for res in ds.iter_rows():
            results.append(res)
            counter.add(1, "windows")
    for it in items if not use_ray else []:
        results.append(process_window(it))
        counter.add(1, "windows")
    feats, bad = _stitch(todo, results, ws)
    for v in todo:
        if v.video in bad:
            rejects.append(_reject(v, bad[v.video]))
        elif v.video in feats:
            done[v.video] = feats[v.video]
            if out:
                _write(out, feats[v.video])
    profile = {
        "windows": len(results),
        "frames": int(sum(r["frames"] for r in results)),
        "seconds": round(time.time() - started, 3),
        "window_seconds": float(sum(r["seconds"] for r in results)),
        "peak_bytes": int(max((r["peak_bytes"] for r in results), default=0)),
    }
    return done, rejects, profile


def _stitch(videos, results, ws) -> tuple[dict[str, VideoFeatures], dict[str, str]]:
    by = {v.video: v for v in videos}
    motion = {v.video: np.zeros(v.n_frames, np.float32) for v in videos}
    blocks = {v.video: np.zeros((v.n_frames, ws.grid**2), np.float32) for v in videos}
    bad: dict[str, str] = {}
    for r in results:
        name = r["video"]
        if r["reason"]:
            bad.setdefault(name, r["reason"])
            continue
        m = np.asarray(r["motion"], np.float32)
        s = r["start"]
        motion[name][s : s + len(m)] = np.maximum(motion[name][s : s + len(m)], m)
        b = np.asarray(r["blocks"], np.float32).reshape(-1, ws.grid**2)
        blocks[name][r["owned_first"] : r["owned_first"] + len(b)] = b
    feats = {
        n: VideoFeatures(n, by[n].subject, by[n].fps, by[n].first_frame, motion[n], blocks[n])
        for n in by
        if n not in bad
    }
    return feats, bad


def _file(out: str, v: LongVideo) -> str:
    return storage.join(out, f"{v.video}.npz")


def _read(out: str, v: LongVideo) -> VideoFeatures | None:
    uri = _file(out, v)
    if not storage.exists(uri):
        return None
    with np.load(io.BytesIO(storage.read_bytes(uri))) as z:
        return VideoFeatures(v.video, v.subject, v.fps, v.first_frame, z["motion"], z["blocks"])


def _write(out: str, f: VideoFeatures) -> None:
    buf = io.BytesIO()
    np.savez(buf, motion=f.motion, blocks=f.blocks)
    storage.write_bytes(storage.join(out, f"{f.video}.npz"), buf.getvalue())
