"""CASME II adapter (Yan et al., PLoS ONE 2014): frame folders + coding sheet -> manifest.

Layout as distributed, under `root` (a local path or s3:// URI):
  root/CASME2_RAW_selected/sub01/EP02_01f/img46.jpg    raw frames, or
  root/Cropped/sub01/EP02_01f/reg_img46.jpg            cropped and registered faces
  root/CASME2-coding-20140508.xlsx                     the coding sheet (default location)
Sheet columns: Subject (int; the folder is sub%02d), Filename, (unnamed), OnsetFrame,
ApexFrame, OffsetFrame, (unnamed), Action Units, Estimated Emotion. ApexFrame is '/' for
a few clips: their apex is <NA> (the key-frame stage spots it). 200 fps.
Canonical names: subject "sub01", clip "EP02_01f" (the sheet's Filename).

Bad input (see mer.datasets.common for the shared rules): a missing root, sheet or column,
a repeated clip, an unknown emotion word, a frame cell that is not a number, or a Filename
holding '..' or a path separator raises InputError naming the file and row; a clip whose
folder is missing or empty, whose onset is after its offset, or whose onset/offset lie
outside the frames on disk is rejected (manifest.attrs["rejects"]); an apex outside
onset..offset becomes <NA>.
"""

from __future__ import annotations

import pandas as pd

from mer import storage
from mer.datasets import common
from mer.errors import ConfigError, InputError

DATASET = "casme2"
FPS = 200
SHEET = "CASME2-coding-20140508.xlsx"
FRAME_FOLDERS = {"raw": "CASME2_RAW_selected", "cropped": "Cropped"}
COLUMNS = {
    "subject": ("Subject",),
    "clip": ("Filename",),
    "onset": ("OnsetFrame",),
    "apex": ("ApexFrame",),
    "offset": ("OffsetFrame",),
    "emotion": ("Estimated Emotion",),
}
# The sheet's header row as published: the third column (a sample index) and the seventh
# have no name.
HEADER = (
    "Subject",
    "Filename",
    None,
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    None,
    "Action Units",
    "Estimated Emotion",
)

# The usual single-dataset CASME II protocol (e.g. Wang et al., LBP-SIP, 2014; Peng et al.,
# 2017): five classes; fear (2 clips) and sadness (7) are dropped as too few.
FIVE_CLASS = {"happiness": 0, "disgust": 1, "repression": 2, "surprise": 3, "others": 4}
PROTOCOLS = {"3class": common.THREE_CLASS, "5class": FIVE_CLASS}


def load(
    root: str, annotations: str | None = None, *, protocol: str = "3class", frames: str = "auto"
) -> pd.DataFrame:
    """The CASME II manifest of `root`, labelled under `protocol` ("3class" or "5class").

    `annotations` overrides the sheet (an .xlsx or .csv path or URI; default
    root/CASME2-coding-20140508.xlsx, or the .csv of that name). `frames` picks "raw" (CASME2_RAW_selected) or "cropped" (Cropped);
    "auto" takes raw when present, else cropped.
    """
    labels = common.protocol_labels(PROTOCOLS, protocol, DATASET)
    clips, frames_root = read_clips(root, annotations, frames=frames)
    return common.build_manifest(
        DATASET, clips, fps=FPS, frames_root=frames_root, labels=labels, protocol=protocol
    )


def read_clips(
    root: str, annotations: str | None = None, *, frames: str = "auto"
) -> tuple[list[common.Clip], str]:
    """Every clip in the sheet (unlabelled, folders unchecked) and the frame folder root."""
    common.check_root(root, "CASME II")
    root = common.local_or_uri(root)
    frames_root = storage.join(root, _frame_folder(root, frames))
    sheet = annotations or common.default_sheet(root, SHEET)
    clips = common.folder_clips(sheet, COLUMNS, frames_root, subject_name)
    return clips, frames_root


def subject_name(value: object, where: str) -> str:
    """Canonical CASME II subject: 1, "1" or "01" -> "sub01" (the folder name)."""
    return f"sub{common.subject_number(value, where):02d}"


def _frame_folder(root: str, frames: str) -> str:
    if frames not in ("auto", *FRAME_FOLDERS):
        raise ConfigError(f"frames={frames!r}; use 'auto', 'raw' or 'cropped'")
    present = [f for f in FRAME_FOLDERS.values() if f in (common.subfolders(root) or [])]
    wanted = present[:1] if frames == "auto" else [FRAME_FOLDERS[frames]]
    if not wanted or wanted[0] not in present:
        expected = " or ".join(FRAME_FOLDERS.values()) if frames == "auto" else wanted[0]
        raise InputError(f"{root} holds no {expected} folder; is this the CASME II root?")
    return wanted[0]
