"""One clip's key-frame record: decode, crop, spot the apex, place and render the key frames.

The per-clip work of the key-frame stage (mer.keyframes.preprocess runs it over the manifest on Ray
Data), shared with the stages and tools that need one clip's key frames the same way: the
learned interpolator's training frames (mer.train.interpolate), batch inference
(mer.serving.inference) and inspection (mer.keyframes.inspection). Inputs that cannot be used raise one of
REJECTABLE (a per-clip reject with its reason); anything else is a bug.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pandas as pd

from mer.errors import ConfigError, DecodeError, InputError
from mer.keyframes.align import MIN_SIDE, estimate_shifts, reduce_gray
from mer.keyframes.clip_quality import measure
from mer.keyframes.construction import build_keyframes, scale_frame
from mer.keyframes.faces import crop, face_crop_box
from mer.keyframes.motion import measure_motion
from mer.keyframes.settings import KeyframeSettings
from mer.keyframes.video import read_clip, reduce_frames

# What a clip's input can raise: a reject with its reason. Anything else is our bug.
REJECTABLE = (InputError, DecodeError)


class PreparedClip(NamedTuple):
    frames: np.ndarray  # uint8 (T, H, W, C), onset..offset, face-cropped and reduced
    reduced: tuple  # mer.keyframes.align.reduce_gray(frames): grey copy and its reduction factor
    motion: object  # mer.keyframes.motion.Motion: the motion curve and the head drift it measured
    drift: np.ndarray | None  # per-frame head shift in frame pixels, None: phase correlation
    face_found: bool | None
    face_share: float | None = None  # face_crop: the detected face's side / frame's shorter side


def prepare_clip(row: dict, kf: KeyframeSettings) -> PreparedClip:
    """Decode one clip's onset..offset, crop and reduce it, measure its motion: what the key
    frames and the interpolator's training frames are made from."""

    onset, offset = int(row["onset"]), int(row["offset"])
    # Everything after decoding works at a few hundred pixels at most (key frames of `size`,
    # the motion curve and registration at >= MIN_SIDE), so the face is halved by pixel
    # means as often as it stays at least that large: frame folders as they are decoded,
    # a face crop or a video afterwards (mer.keyframes.video).
    need = max(int(kf.size), MIN_SIDE)
    face_found, face_share = None, None
    if kf.face_crop:
        frames = read_clip(row["source"], onset, offset, timeout=kf.decode_timeout)
        box, face_found = face_crop_box(frames[0])
        face_share = box[2] / min(frames.shape[1:3]) if face_found else None
        frames = crop(frames, box)
    else:
        frames = read_clip(row["source"], onset, offset, timeout=kf.decode_timeout, min_side=need)
    frames = reduce_frames(frames, need)
    # One grey copy, halved while its shorter side stays >= 128 px, serves the motion curve
    # (which compensates head motion itself) and the registration of the key frames to the
    # onset frame (so they show facial motion rather than drift): by default with the head
    # shifts the motion curve measured, else (or where the curve has none: "diff" mode, a
    # head jump the flow lost) by phase correlation on the grey copy.
    reduced = reduce_gray(frames)
    motion = measure_motion(reduced[0], 0, mode=kf.motion)
    drift = None
    if kf.registration == "motion" and motion.drift is not None:
        drift = motion.drift * reduced[1]
    return PreparedClip(frames, reduced, motion, drift, face_found, face_share)


def build_record(
    row: dict, kf: KeyframeSettings, interpolator=None, *, quality: bool = False
) -> dict:
    """Decode one clip and build its key-frame record; raises on any failure.
    `interpolator`: the trained interpolator kf.interpolation "adaconv" renders with.
    `quality`: add the clip's quality measures (mer.keyframes.clip_quality.measure) under "quality"."""

    onset, offset = int(row["onset"]), int(row["offset"])
    clip = prepare_clip(row, kf)
    face_found = clip.face_found
    apex = row.get("apex")
    apex_offset = None if apex is None or pd.isna(apex) else int(apex) - onset
    # Only the frames the key frames use are registered, each resampled once.
    keys = build_keyframes(
        clip.frames,
        0,
        apex_offset,
        len(clip.frames) - 1,
        k=kf.k,
        size=kf.size,
        method=kf.method,
        interpolation=kf.interpolation,
        mode=kf.motion,
        motion=clip.motion.curve,
        register=kf.stabilize,
        drift=clip.drift,
        reduced=clip.reduced,
        interpolator=interpolator,
    )
    keyframes = keys.frames
    record = {
        "dataset": row["dataset"],
        "subject": str(row["subject"]),
        "clip": str(row["clip"]),
        "label": int(row["label"]),
        "emotion": str(row["emotion"]),
        "onset": onset,
        "apex": onset + int(keys.apex),
        "offset": offset,
        "apex_source": keys.apex_source,
        "keyframe_indices": (onset + np.asarray(keys.indices, dtype=np.float64)).tolist(),
        "frames": np.ascontiguousarray(keyframes, dtype=np.uint8),
        "source": row["source"],
        "fps": float(row["fps"]),
        "face_found": face_found,
    }
    if quality:  # how far to trust a prediction on this clip (not in the key-frame table)
        record["quality"] = measure(clip, int(keys.apex), keys.indices, row["source"], kf)
    return record


def registered_frames(row: dict, kf: KeyframeSettings) -> np.ndarray:
    """Every frame of a clip's onset..offset registered to the onset frame and resized to
    the key frames' S x S, as key frames are rendered: uint8 (T, S, S, C). The learned
    interpolator trains on these."""

    clip = prepare_clip(row, kf)
    n = len(clip.frames)
    shifts = np.zeros((n, 2))
    if kf.stabilize:
        if clip.drift is not None:
            shifts = clip.drift - clip.drift[0]
        else:
            shifts = np.asarray(estimate_shifts(None, 0, reduced=clip.reduced))
    return np.stack([scale_frame(f, kf.size, shifts[t]) for t, f in enumerate(clip.frames)])


@functools.lru_cache(maxsize=2)
def load_interpolator(uri: str, size: int, channels: int, cuda: bool = False):
    """The trained interpolator at `uri` (mer.keyframes.interpolator), on this process's GPU with
    `cuda` (keyframes.gpus > 0; an error if the actor got none), else on its CPU."""
    # torch only here: the key-frame actors load this module and need it only with adaconv.
    import torch

    from mer.keyframes.interpolator import Interpolator

    torch.set_num_threads(1)  # one Ray Data actor, one CPU
    model = Interpolator.load(uri, image_size=size, channels=channels)
    if not cuda:
        return model
    if not torch.cuda.is_available():
        raise ConfigError("keyframes.gpus > 0 but this key-frame worker sees no CUDA GPU")
    # Full fp32 (no TF32): the frames the CPU renders, up to rounding. The model is small.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    return model.to("cuda")


def manifest_rows(manifest: pd.DataFrame) -> list[dict]:
    rows = []
    for rec in manifest.sort_values(["dataset", "subject", "clip"]).to_dict("records"):
        rec["apex"] = None if pd.isna(rec["apex"]) else int(rec["apex"])
        rows.append(rec)
    return rows
