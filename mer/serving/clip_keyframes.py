"""The key-frame side of batch inference (mer.serving.inference): one clip's key-frame record
with its unset interval taken from the source, and the KeyFrames Ray Data actor that builds
them for a batch of clips.

Kept apart from the driver and the Predictor so that a KeyFrames actor imports no torch
(about 2 CPU-seconds of start-up per actor; tests/test_inference.py checks it).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from mer.errors import DecodeError, InputError
from mer.keyframes.clip_quality import MEASURES
from mer.keyframes.settings import KeyframeSettings

UNSET = -1  # a frame number not given (whole clip / apex to spot)
# Shortest interval (onset..offset inclusive) a clip may have: onset, apex and offset apart
# (our choice; real micro-expressions span 8 frames or more at 100-200 fps).
MIN_FRAMES = 3
# A whole clip is decoded at once (mer.keyframes.video.read_clip): longer recordings (more than this
# many bytes of decoded frames: 39 s of 640x480 at 30 fps) must come with intervals.
MAX_DECODED_BYTES = 1 << 30
KEYFRAME_BATCH = 4  # clips per KeyFrames call: a few hundred ms of work each
CLIP_COLUMNS = ["path", "source", "onset", "apex", "offset"]


def clip_record(clip: dict, kf: KeyframeSettings, interpolator=None) -> dict:
    """The key-frame record of one clip (mer.keyframes.clip_records.build_record, as in training), its
    unset onset/offset taken from the source's first/last frame; raises InputError or
    DecodeError for a clip that cannot be used. `interpolator`: the learned interpolator of
    keyframes.interpolation adaconv."""
    # Imported on the first clip, not with this module: the actor class must load without torch.
    from mer.keyframes.clip_records import build_record
    from mer.keyframes.video import probe

    source = str(clip["source"])
    onset, apex, offset = int(clip["onset"]), int(clip["apex"]), int(clip["offset"])
    fps, info = float("nan"), None
    if onset == UNSET or offset == UNSET:
        info = probe(source, timeout=kf.decode_timeout)
        onset = info["first"] if onset == UNSET else onset
        offset = info["last"] if offset == UNSET else offset
        fps = float(info["fps"] or "nan")
    n = offset - onset + 1
    if n < MIN_FRAMES:
        raise InputError(
            f"{source}: too short: the interval {onset}..{offset} holds {max(n, 0)} frame(s); "
            f"a clip needs at least {MIN_FRAMES} (onset, apex, offset)"
        )
    if info and n * info["height"] * info["width"] * 3 > MAX_DECODED_BYTES:
        raise InputError(
            f"{source}: too long to decode whole ({n} frames of {info['width']}x"
            f"{info['height']}, over {MAX_DECODED_BYTES >> 30} GiB); list the intervals to "
            "predict with --clips"
        )
    if apex != UNSET and not onset <= apex <= offset:
        raise InputError(f"{source}: apex {apex} lies outside the interval {onset}..{offset}")
    row = {
        "dataset": "",
        "subject": "",
        "clip": str(clip["path"]),
        "label": -1,
        "emotion": "",
        "onset": onset,
        "apex": None if apex == UNSET else apex,
        "offset": offset,
        "source": source,
        "fps": fps,
    }
    return build_record(row, kf, interpolator, quality=True)


class KeyFrames:
    """Ray Data actor: a batch of clips -> their key frames (zeros, and a reason, for a clip
    that cannot be used)."""

    def __init__(self, kf: KeyframeSettings) -> None:
        import cv2

        cv2.setNumThreads(1)  # one actor, one CPU: OpenCV ignores OMP_NUM_THREADS
        # and OpenBLAS (numpy's, OpenCV's) starts one thread per core of the machine
        self.threads = threadpool_limits(1)
        self.kf = kf
        self.shape = (kf.k, kf.size, kf.size, 3)
        self.interpolator = None
        if kf.interpolation == "adaconv":
            from mer.keyframes.clip_records import load_interpolator

            self.interpolator = load_interpolator(kf.interpolator_uri, kf.size, 3)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["path"])
        rows = [self.record({c: batch[c][i] for c in CLIP_COLUMNS}) for i in range(n)]
        text = ("path", "source", "apex_source", "stage", "reason")
        return {
            **{c: np.asarray([r[c] for r in rows], dtype=object) for c in text},
            **{c: np.asarray([r[c] for r in rows], np.int64) for c in ("onset", "apex", "offset")},
            **{c: np.asarray([r["quality"][c] for r in rows], np.float64) for c in MEASURES},
            "frames": np.stack([r["frames"] for r in rows]),
        }

    def record(self, clip: dict) -> dict:
        """One clip's output row: its key frames, or zeros and why it cannot be used."""
        out = {"path": str(clip["path"]), "source": str(clip["source"]), "stage": "", "reason": ""}
        try:
            rec = clip_record(clip, self.kf, self.interpolator)
            kept = ("onset", "apex", "offset", "apex_source", "frames", "quality")
            return {**out, **{c: rec[c] for c in kept}}
        except (InputError, DecodeError) as e:
            stage = "decode" if isinstance(e, DecodeError) else "input"
            out.update(stage=stage, reason=f"{type(e).__name__}: {e}")
        return {
            **out,
            "onset": int(clip["onset"]),
            "apex": UNSET,
            "offset": int(clip["offset"]),
            "apex_source": "",
            "frames": np.zeros(self.shape, np.uint8),
            "quality": dict.fromkeys(MEASURES, float("nan")),
        }
