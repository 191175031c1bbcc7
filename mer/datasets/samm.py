"""SAMM adapter (Davison et al., IEEE TAC 2018): frame folders + FACS sheet -> manifest.

Layout as distributed, under `root` (a local path or s3:// URI; the folder holding SAMM/):
  root/SAMM/006/006_1_2/006_05562.jpg     grayscale frames, numbered as in the long video
  root/SAMM_Micro_FACS_Codes_v2.xlsx      the sheet (default location)
The sheet has 12 rows of preamble; its header row (row 13, found as the row holding
"Filename") reads Subject, Filename, Inducement Code, Onset Frame, Apex Frame, Offset Frame,
Duration, Type, Action Units, Estimated Emotion, ... An apex cell of -1 or '/' is <NA>.
200 fps. Canonical names: subject "006" (3 digits), clip "006_1_2" (the sheet's Filename).

Bad input follows mer.datasets.common (the same rules as CASME II): sheet-level problems
raise InputError naming the file and row; a clip that cannot be used is rejected with a
reason (manifest.attrs["rejects"]); an apex outside onset..offset becomes <NA>.
"""

from __future__ import annotations

import pandas as pd

from mer import storage
from mer.datasets import common

DATASET = "samm"
FPS = 200
SHEET = "SAMM_Micro_FACS_Codes_v2.xlsx"
COLUMNS = {
    "subject": ("Subject",),
    "clip": ("Filename",),
    "onset": ("Onset Frame",),
    "apex": ("Apex Frame",),
    "offset": ("Offset Frame",),
    "emotion": ("Estimated Emotion",),
}

# The usual single-dataset SAMM protocol (e.g. Khor et al., ELRCN, FG 2018): five classes;
# disgust, fear and sadness (fewer than 10 clips each) are dropped.
FIVE_CLASS = {"anger": 0, "contempt": 1, "happiness": 2, "surprise": 3, "others": 4}
PROTOCOLS = {"3class": common.THREE_CLASS, "5class": FIVE_CLASS}


def load(root: str, annotations: str | None = None, *, protocol: str = "3class") -> pd.DataFrame:
    """The SAMM manifest of `root`, labelled under `protocol` ("3class" or "5class").

    `annotations` overrides the sheet (an .xlsx or .csv path or URI; default
    root/SAMM_Micro_FACS_Codes_v2.xlsx, or the .csv of that name).
    """
    labels = common.protocol_labels(PROTOCOLS, protocol, DATASET)
    clips, frames_root = read_clips(root, annotations)
    return common.build_manifest(
        DATASET, clips, fps=FPS, frames_root=frames_root, labels=labels, protocol=protocol
    )


def read_clips(root: str, annotations: str | None = None) -> tuple[list[common.Clip], str]:
    """Every clip in the sheet (unlabelled, folders unchecked) and the frame folder root."""
    common.check_root(root, "SAMM")
    root = common.local_or_uri(root)
    frames_root = storage.join(root, "SAMM")
    sheet = annotations or common.default_sheet(root, SHEET)
    clips = common.folder_clips(sheet, COLUMNS, frames_root, subject_name)
    return clips, frames_root


def subject_name(value: object, where: str) -> str:
    """Canonical SAMM subject: 6, "6" or "006" -> "006" (the folder name)."""
    return f"{common.subject_number(value, where):03d}"
