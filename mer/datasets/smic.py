"""SMIC-HS adapter (Li et al., FG 2013): class folders -> manifest (there is no sheet).

Layout as distributed, under `root` (a local path or s3:// URI; the folder holding HS/):
  root/HS/s1/micro/negative/s1_ne_01/image0123456.bmp
The class folder (negative, positive, surprise) gives the label and the emotion column.
SMIC has no onset/apex/offset annotation: onset and offset are the first and last frame
numbers in the clip folder, apex is <NA> (the key-frame stage spots it). 100 fps.
Subjects and clips are spelled s1 / s01 and s1_ne_01 / s01_ne_01 on disk; canonical names
are zero-padded as in the MEGC2019 list: subject "s01", clip "s01_ne_01".

Bad input: a missing root or HS folder, an unknown class folder, or two folders with the
same canonical name (s1 and s01) raise InputError; an empty clip folder is rejected
(manifest.attrs["rejects"]). Folders other than micro/ (non_micro/) are not read.
"""

from __future__ import annotations

import re

import pandas as pd

from mer import storage
from mer.datasets import common
from mer.errors import ConfigError, InputError

DATASET = "smic"
FPS = 100
# SMIC-HS micro-expression classes, in the MEGC2019 composite order.
THREE_CLASS = {"negative": 0, "positive": 1, "surprise": 2}
PROTOCOLS = {"3class": THREE_CLASS}


def load(root: str, annotations: str | None = None, *, protocol: str = "3class") -> pd.DataFrame:
    """The SMIC-HS manifest of `root`. `annotations` must be None: SMIC has no sheet."""
    labels = common.protocol_labels(PROTOCOLS, protocol, DATASET)
    if annotations is not None:
        raise ConfigError(f"SMIC has no annotation sheet; got annotations={annotations!r}")
    clips, frames_root = read_clips(root)
    return common.build_manifest(
        DATASET, clips, fps=FPS, frames_root=frames_root, labels=labels, protocol=protocol
    )


def read_clips(root: str) -> tuple[list[common.Clip], str]:
    """Every clip folder under root/HS/*/micro/<class>/ (folders listed, frames not)."""
    common.check_root(root, "SMIC")
    root = common.local_or_uri(root)
    frames_root = storage.join(root, "HS")
    subjects = common.subfolders(frames_root)
    if subjects is None:
        raise InputError(f"{root} holds no HS folder; is this the SMIC root?")
    clips = []
    for subject_dir in subjects:
        if not re.fullmatch(r"[sS]\d+", subject_dir):
            continue
        subject = subject_name(subject_dir)
        micro = storage.join(frames_root, subject_dir, "micro")
        for class_dir in common.subfolders(micro) or []:
            emotion = class_dir.lower()
            if emotion not in THREE_CLASS:
                raise InputError(
                    f"{storage.join(micro, class_dir)}: unknown class folder; "
                    f"expected {', '.join(THREE_CLASS)}"
                )
            for clip_dir in common.subfolders(storage.join(micro, class_dir)) or []:
                folder = storage.join(micro, class_dir, clip_dir)
                clip = clip_name(clip_dir)
                clips.append(common.Clip(subject, clip, emotion, None, None, None, folder, folder))
    common.check_duplicates(clips)
    return clips, frames_root


def subject_name(name: str, where: str = "") -> str:
    """Canonical SMIC subject: "s1" or "s01" -> "s01"."""
    return f"s{common.subject_number(name, where or name):02d}"


def clip_name(name: str) -> str:
    """Canonical SMIC clip: "s1_ne_1" or "s01_ne_01" -> "s01_ne_01" (others unchanged)."""
    match = re.fullmatch(r"[sS](\d+)_([A-Za-z]+)_(\d+)", name.strip())
    if match is None:
        return name
    return f"s{int(match.group(1)):02d}_{match.group(2).lower()}_{int(match.group(3)):02d}"
