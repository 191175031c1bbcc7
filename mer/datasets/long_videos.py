"""Long videos for spotting: the records every long-video adapter returns.

Spotting (mer.spotting) starts from long recordings, not from annotated clips: CAS(ME)^2's
raw long videos and SAMM Long Videos, both published as one frame folder per video with a
sheet of micro- and macro-expression intervals, and the synthetic long-video preset. Each
adapter turns its root (local path or s3:// URI) into a `LongVideoSet` (mer.datasets.load_long_videos picks it):

  videos     one `LongVideo` per recording: where its frames are, its frame rate, how many
             frames and the number of the first one (frame numbers are the dataset's own)
  intervals  the ground truth, one `Interval` per annotated expression (type micro or macro,
             onset and offset inclusive, in the video's own frame numbers)
  rejects    videos or sheet rows that cannot be used, each with its reason, as the clip
             adapters record them (dicts with dataset, subject, clip, stage, reason)

Frames are read a window at a time (`LongVideo.frames` is a folder: a 60 s, 200 fps video
is 12,000 images and never needs to be held whole).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mer.datasets import common
from mer.errors import InputError

log = logging.getLogger(__name__)

EXPRESSION_TYPES = ("micro", "macro")
LONG_DATASETS = ("casme_sq", "samm_lv", "synthetic_long")


@dataclass(frozen=True)
class LongVideo:
    dataset: str  # "casme_sq" (CAS(ME)^2), "samm_lv" (SAMM Long Videos), "synthetic_long"
    subject: str  # canonical subject name, as the clip adapters spell it
    video: str  # the video's name, unique within its dataset
    frames: str  # URI of the video's frame folder
    fps: float
    n_frames: int
    first_frame: int  # frame number of the first image in the folder


@dataclass(frozen=True)
class Interval:
    video: str
    onset: int  # the dataset's own frame numbers, both ends inclusive
    offset: int
    type: str  # one of EXPRESSION_TYPES
    emotion: str | None = None  # the sheet's emotion word, where there is one
    score: float | None = None  # a spotter's confidence (None for ground truth)


@dataclass
class LongVideoSet:
    videos: list[LongVideo]
    intervals: list[Interval]
    rejects: list[dict] = field(default_factory=list)


# Shared by the long-video adapters.


def expression_type(value: object, where: str) -> str:
    """ "micro" or "macro" from a Type cell: CAS(ME)^2 writes micro-expression /
    macro-expression, SAMM-LV 'Micro - 1/2' / 'Macro'. InputError for anything else."""
    word = str(value if value is not None else "").strip().lower()
    for kind in EXPRESSION_TYPES:
        if word.startswith(kind):
            return kind
    raise InputError(
        f"{where}: type {value!r} is neither a micro- nor a macro-expression; fix the sheet"
    )


def read_video(
    dataset: str, subject: str, video: str, folder: str, fps: float, rejects: list[dict]
) -> LongVideo | None:
    """The LongVideo of one frame folder, or None (rejected with its reason) when the folder
    is missing or holds no images. n_frames counts the images; a gap in their numbers is
    logged (the frames keep their own numbers)."""
    frames = common.list_frames(folder, missing_ok=True)
    if frames is None:
        common.reject(rejects, dataset, subject, video, f"video folder {folder} does not exist")
        return None
    if not frames:
        common.reject(rejects, dataset, subject, video, f"video folder {folder} holds no images")
        return None
    first, last = frames[0][0], frames[-1][0]
    if last - first + 1 != len(frames):
        log.warning(
            "%s %s: %d images numbered %d..%d (some numbers are missing)",
            dataset,
            video,
            len(frames),
            first,
            last,
        )
    return LongVideo(dataset, subject, video, folder, float(fps), len(frames), first)


def usable_videos(videos: dict, folder: str) -> list[LongVideo]:
    """The videos of `videos` (read_video's results by folder) that hold images; InputError
    when there are folders under `folder` and none of them does (a wrong root, most likely)."""
    found = [v for v in videos.values() if v is not None]
    if videos and not found:
        raise InputError(f"none of the {len(videos)} video folders under {folder} holds images")
    return found


def check_interval(
    interval: Interval,
    video: LongVideo | None,
    where: str,
    rejects: list[dict],
    dataset: str,
    subject: str,
) -> bool:
    """True when `interval` lies inside its video's frames; else rejects it with the reason."""
    clip = f"{interval.video} {interval.onset}..{interval.offset}"
    if video is None:
        reason = f"{where}: its video {interval.video} is not usable (see its own reject)"
        common.reject(rejects, dataset, subject, clip, reason)
        return False
    if interval.onset > interval.offset:
        reason = f"{where}: onset {interval.onset} is after offset {interval.offset}"
        common.reject(rejects, dataset, subject, clip, reason)
        return False
    last = video.first_frame + video.n_frames - 1
    if interval.onset < video.first_frame or interval.offset > last:
        reason = (
            f"{where}: frames {interval.onset}..{interval.offset} are outside the video's "
            f"frames {video.first_frame}..{last}"
        )
        common.reject(rejects, dataset, subject, clip, reason)
        return False
    return True


def row_frames(values: dict, where: str, names: dict[str, str]) -> tuple[int | None, int | None]:
    """(onset, offset) of a sheet row. An offset of 0 or blank means the coders marked only
    the apex: the interval ends at the apex (as the MEGC baselines read both sheets)."""
    onset = common.frame_number(values["onset"], where, names["onset"])
    apex = common.frame_number(values["apex"], where, names["apex"])
    offset = common.frame_number(values["offset"], where, names["offset"])
    if not offset:
        offset = apex or None
    return onset, offset
