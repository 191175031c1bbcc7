"""CAS(ME)^3 part A adapter (Li et al., IEEE TPAMI 2022): frame folders + sheet -> manifest.

Layout, under `root` (a local path or s3:// URI):
  root/spNO.1/a/color/0.jpg ... n.jpg                 one folder per subject and material
  root/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx      the sheet (default location)
Sheet columns: Subject, Filename (the material, e.g. "a"), Onset, Apex, Offset, ..., emotion
(frame numbers are JPEG indices inside the material's color folder). 30 fps.
One material holds several micro-expressions, so the canonical clip name is our own:
f"{subject}_{material}_{onset}" (e.g. "spNO.1_a_123"); subject is the sheet's Subject.
source is the material's color folder; onset..offset select the clip's frames inside it.

Bad input follows mer.datasets.common: sheet-level problems (including a Subject or
Filename holding '..' or a path separator) raise InputError naming the file and row; a clip
that cannot be used is rejected with a reason; an apex outside onset..offset becomes <NA>.
"""

from __future__ import annotations

import pandas as pd

from mer import storage
from mer.datasets import common

DATASET = "casme3"
FPS = 30
SHEET = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
COLUMNS = {
    "subject": ("Subject",),
    "clip": ("Filename",),
    "onset": ("Onset",),
    "apex": ("Apex",),
    "offset": ("Offset",),
    "emotion": ("emotion", "Estimated Emotion"),
}
PROTOCOLS = {"3class": common.THREE_CLASS}


def load(root: str, annotations: str | None = None, *, protocol: str = "3class") -> pd.DataFrame:
    """The CAS(ME)^3 part A manifest of `root`, labelled under `protocol` ("3class").

    `annotations` overrides the sheet (an .xlsx or .csv path or URI; default
    root/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx, or the .csv of that name).
    """
    labels = common.protocol_labels(PROTOCOLS, protocol, DATASET)
    clips, frames_root = read_clips(root, annotations)
    return common.build_manifest(
        DATASET, clips, fps=FPS, frames_root=frames_root, labels=labels, protocol=protocol
    )


def read_clips(root: str, annotations: str | None = None) -> tuple[list[common.Clip], str]:
    """Every clip in the sheet (unlabelled, folders unchecked) and the frame folder root."""
    common.check_root(root, "CAS(ME)^3")
    root = common.local_or_uri(root)
    sheet = annotations or common.default_sheet(root, SHEET)
    clips = []
    for row in common.read_sheet(sheet, COLUMNS, key="clip"):
        where = f"{sheet} row {row.row}"
        subject = common.plain_name(row.values["subject"], where, column="Subject")
        material = common.plain_name(row.values["clip"], where)
        folder = storage.join(root, subject, material, "color")
        onset = common.frame_number(row.values["onset"], where, "Onset")
        clip = f"{subject}_{material}_{onset if onset is not None else f'row{row.row}'}"
        clips.append(
            common.sheet_clip(
                row, where, subject=subject, clip=clip, folder=folder, columns=COLUMNS
            )
        )
    common.check_duplicates(clips)
    return clips, root
