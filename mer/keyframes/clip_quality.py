"""The quality measures of one clip as the key-frame builder prepared it (MEASURES): what
mer.serving.quality judges against a model's training clips to flag a prediction, measured
here, in the key-frame stage, so that building a record can add them
(mer.keyframes.clip_records.build_record(quality=True)).
"""

from __future__ import annotations

import numpy as np

from mer.keyframes.faces import detect_face_box
from mer.keyframes.motion import smooth
from mer.keyframes.settings import KeyframeSettings
from mer.keyframes.video import probe

EDGE_FRAMES = 1  # an apex this close to the onset or offset is "at the edge"

MEASURES = (
    "length",
    "frame_height",
    "frame_width",
    "face_found",
    "face_share",
    "motion_snr",
    "largest_motion",
    "apex_offset",
    "keyframe_gap",
)


def motion_snr(curve: np.ndarray) -> float:
    """Peak of the smoothed motion curve over the curve's jitter around that smoothing."""
    curve = np.asarray(curve, np.float64)
    if len(curve) == 0:
        return 0.0
    smoothed = smooth(curve)
    jitter = float(np.mean(np.abs(curve - smoothed)))
    return float(smoothed.max()) / max(jitter, 1e-6)


def measure(clip, apex: int, keyframe_indices, source: str, kf: KeyframeSettings) -> dict:
    """The MEASURES of one prepared clip (mer.clip_records.PreparedClip); `apex` and
    `keyframe_indices` are offsets into the clip."""
    n = len(clip.frames)
    info = probe(str(source), timeout=kf.decode_timeout)
    face_found, share = clip.face_found, clip.face_share
    if face_found is None:  # not face-cropped: look for one on the (reduced) first frame
        first = clip.frames[0]
        box = detect_face_box(first)
        face_found = box is not None
        share = max(box[2], box[3]) / min(first.shape[:2]) if box else None
    indices = np.asarray(keyframe_indices, np.float64)
    largest = clip.motion.largest
    return {
        "length": int(n),
        "frame_height": int(info["height"]),
        "frame_width": int(info["width"]),
        "face_found": bool(face_found),
        "face_share": float("nan") if share is None else float(share),
        "motion_snr": motion_snr(clip.motion.curve),
        "largest_motion": float("nan") if largest is None else float(largest),
        "apex_offset": int(apex),
        "keyframe_gap": float(np.abs(indices - apex).min()) if len(indices) else float("nan"),
    }
