"""Long videos for spotting: the records every long-video adapter returns.

Spotting (mer.spotting) starts from long recordings, not from annotated clips: CAS(ME)^2's
raw long videos and SAMM Long Videos, both published as one frame folder per video with a
sheet of micro- and macro-expression intervals, and the synthetic long-video preset. Each
adapter turns its root (local path or s3:// URI) into a `LongVideoSet`:

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

from dataclasses import dataclass, field

EXPRESSION_TYPES = ("micro", "macro")


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
