"""Shared parts of the dataset adapters: sheets, names, emotions, frame folders, rejects.

An adapter reads its sheet (or walks its folders) into `Clip`s, then `build_manifest` turns
them into the manifest: it applies the label protocol, checks each clip's frame folder and
frame numbers, and records every clip it cannot use in `manifest.attrs["rejects"]`.

Decisions shared by every adapter (our own, the datasets' documentation is silent):
- A sheet that is missing, unreadable, lacks a required column, repeats a clip, names an
  unknown emotion, holds a frame number that is not a number, or names a folder outside
  the dataset root raises InputError: the sheet itself needs fixing.
- A single clip that cannot be used (no onset/offset, onset after offset, folder missing or
  empty, onset/offset outside the frames on disk, emotion outside the protocol) is rejected
  with a reason and the rest load.
- An apex outside onset..offset is treated as unannotated (apex <NA>, logged): the clip
  keeps its place and the key-frame stage spots the apex itself.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mer import storage
from mer.datasets import MANIFEST_COLUMNS
from mer.errors import ConfigError, InputError

log = logging.getLogger(__name__)

# Frame folders (the image-sequence datasets' layout; mer.keyframes.video decodes them).

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def list_frames(folder: str, *, missing_ok: bool = False) -> list[tuple[int, str]] | None:
    """(frame number, URI) of each image in `folder`, sorted by frame number.

    The frame number is the last run of digits in the file name: img46.jpg -> 46,
    reg_img46.jpg -> 46, 006_01234.jpg -> 1234, image0123456.bmp -> 123456. A missing folder
    is an InputError, or None with `missing_ok`.
    """
    entries = storage.entries(folder)
    if entries is None:
        if missing_ok:
            return None
        raise InputError(f"frame folder {folder} does not exist")
    frames = []
    for name, kind in entries:
        stem, ext = posixpath.splitext(name)
        digits = re.findall(r"\d+", stem)
        if kind == "file" and ext.lower() in IMAGE_EXTENSIONS and digits:
            frames.append((int(digits[-1]), storage.join(folder, name)))
    return sorted(frames)


# One spelling per emotion. The sheets write them differently: CASME II lower case
# ("happiness", "others"), SAMM v2 capitalised ("Happiness", "Other"), CAS(ME)^3 short
# ("happy", "sad").
EMOTIONS = (
    "anger",
    "contempt",
    "disgust",
    "fear",
    "happiness",
    "others",
    "repression",
    "sadness",
    "surprise",
)
EMOTION_SPELLINGS = {"happy": "happiness", "sad": "sadness", "other": "others"}

# MEGC2019 composite classes (See et al., "MEGC 2019 - the second facial micro-expressions
# grand challenge", FG 2019): negative groups repression, anger, contempt, disgust, fear
# and sadness; positive is happiness; surprise is surprise. "others" is outside.
THREE_CLASS = {
    "anger": 0,
    "contempt": 0,
    "disgust": 0,
    "fear": 0,
    "repression": 0,
    "sadness": 0,
    "happiness": 1,
    "surprise": 2,
}


@dataclass
class Clip:
    """One clip as read from a sheet or a folder walk, before its folder is checked."""

    subject: str  # canonical spelling (see each adapter)
    clip: str
    emotion: str
    onset: int | None  # None: the first frame in the folder (SMIC has no annotation)
    apex: int | None
    offset: int | None  # None: the last frame in the folder
    folder: str  # URI of the frame folder
    where: str  # "sheet.xlsx row 12" or the folder URI, for messages
    problem: str | None = None  # why the clip cannot be used, found while reading it
    label: int = -1


@dataclass
class SheetRow:
    row: int  # 1-based row (xlsx) or line (csv) number, as a spreadsheet program shows it
    values: dict[str, Any]  # field -> cell value, for the fields asked for


# Roots, folders and frames.


def check_root(root: str, what: str) -> None:
    """Raise InputError unless `root` (local path or s3:// URI) is an existing folder."""
    fs, path = storage.filesystem(root)
    try:
        found = fs.isdir(path)
    except Exception as e:  # S3: no credentials, access denied, bad endpoint, ...
        raise InputError(
            f"cannot read the {what} root {root} ({type(e).__name__}: {e}); "
            "check the URI and the AWS credentials"
        ) from e
    if not found:
        raise InputError(f"the {what} root {root} does not exist; check the path or URI")


def subfolders(uri: str) -> list[str] | None:
    """Names of the folders directly under `uri`, sorted; None if `uri` does not exist."""
    entries = storage.entries(uri)
    if entries is None:
        return None
    return sorted(name for name, kind in entries if kind == "directory")


def local_or_uri(root: str) -> str:
    """An absolute path for a local root (so sources work from any working dir), else as is."""
    root = str(root)
    return root if "://" in root else os.path.abspath(root)


# Sheets.


def default_sheet(root: str, name: str) -> str:
    """root/name, or root/<name as .csv> when only a CSV export of the sheet is there."""
    sheet = storage.join(root, name)
    export = storage.join(root, posixpath.splitext(name)[0] + ".csv")
    if not storage.exists(sheet) and storage.exists(export):
        return export
    return sheet


def read_sheet(uri: str, columns: Mapping[str, tuple[str, ...]], *, key: str) -> list[SheetRow]:
    """Rows of an xlsx or csv sheet below its header row, as {field: value}.

    `columns` maps each field to the header names it may have; names are compared without
    case, spaces or punctuation ("Onset Frame" == "OnsetFrame"). The header row is the
    first row holding one of `columns[key]` (SAMM has 12 rows of preamble above it).
    Rows whose `key` cell is blank are skipped (notes, trailing empty rows).
    """
    table = _read_table(uri)
    wanted = {f: [_norm(n) for n in names] for f, names in columns.items()}
    header_at = next(
        (i for i, cells in enumerate(table) if any(_norm(c) in wanted[key] for c in cells)), None
    )
    if header_at is None:
        raise InputError(
            f"{uri}: no header row with a {columns[key][0]!r} column; "
            "is this the right annotation sheet?"
        )
    header = [_norm(c) for c in table[header_at]]
    index = {}
    for field, names in wanted.items():
        at = next((header.index(n) for n in names if n in header), None)
        if at is None:
            found = [str(c) for c in table[header_at] if c not in (None, "")]
            raise InputError(
                f"{uri}: the header row (row {header_at + 1}) has no "
                f"{columns[field][0]!r} column; found {found}"
            )
        index[field] = at
    rows = []
    for i in range(header_at + 1, len(table)):
        cells = table[i]
        values = {f: (cells[j] if j < len(cells) else None) for f, j in index.items()}
        if _blank(values[key]):
            continue
        rows.append(SheetRow(i + 1, values))
    if not rows:
        raise InputError(f"{uri}: the sheet has no clip rows below its header row")
    return rows


def read_workbook(uri: str) -> dict[str, list[list[Any]]]:
    """Every worksheet of an xlsx file as {sheet title: rows} (row i of the list is
    spreadsheet row i + 1, blank rows included); a .csv is one sheet named after the file.
    InputError naming `uri` when it is missing or unreadable."""
    data = _sheet_bytes(uri)
    if uri.lower().endswith(".csv"):
        text = data.decode("utf-8-sig", errors="replace")
        return {posixpath.basename(uri): [list(r) for r in csv.reader(io.StringIO(text))]}
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), data_only=True)
    except Exception as e:  # zipfile.BadZipFile, KeyError, InvalidFileException, ...
        raise InputError(
            f"{uri}: not a readable .xlsx workbook ({type(e).__name__}); "
            "pass the sheet as .xlsx or .csv"
        ) from e
    return {
        sheet.title: [
            list(r) for r in sheet.iter_rows(min_row=1, max_row=sheet.max_row, values_only=True)
        ]
        for sheet in book.worksheets
    }


def _sheet_bytes(uri: str) -> bytes:
    fs, path = storage.filesystem(uri)
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        raise InputError(
            f"annotation sheet {uri} not found; pass annotations=<path or URI of the sheet>"
        ) from e
    except PermissionError as e:
        raise InputError(f"{uri}: access denied ({e}); check the AWS credentials") from e


def _read_table(uri: str) -> list[list[Any]]:
    """The rows of a csv, or of an xlsx file's first worksheet (read_workbook's rows)."""
    return next(iter(read_workbook(uri).values()))


def _norm(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower()) if name is not None else ""


def blank(value: Any) -> bool:
    """True for an empty cell (None or only spaces)."""
    return value is None or str(value).strip() == ""


_blank = blank


# Cells: names, frame numbers, emotions.


def subject_number(value: Any, where: str) -> int:
    """The number in a subject cell or folder name: 6, "006", "sub06", "s6" -> 6."""
    match = re.fullmatch(r"[A-Za-z]*0*(\d+)(?:\.0)?", str(value).strip())
    if match is None:
        raise InputError(f"{where}: subject {value!r} is not a subject number; fix the sheet")
    return int(match.group(1))


def plain_name(value: Any, where: str, column: str = "Filename") -> str:
    """A folder name taken from a sheet; refuses anything that could leave the dataset root."""
    name = str(value).strip()
    if ".." in name or "/" in name or "\\" in name or ":" in name or not name:
        raise InputError(
            f"{where}: {column} {name!r} is not a plain folder name (it is empty, absolute, "
            "or holds '..' or a path separator) and could point outside the dataset root; "
            "fix the sheet"
        )
    return name


def frame_number(value: Any, where: str, column: str) -> int | None:
    """A frame number cell; None where the sheet marks it missing ('/', '-', blank, < 0)."""
    if _blank(value) or str(value).strip() in ("/", "-"):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if number != number or number != int(number):  # NaN or fractional
        raise InputError(f"{where}: {column} {value!r} is not a frame number; fix the sheet")
    return int(number) if number >= 0 else None


def emotion_word(value: Any, where: str) -> str:
    """The canonical spelling of an emotion cell; InputError for a word we do not know."""
    word = " ".join(str(value if value is not None else "").lower().split())
    word = EMOTION_SPELLINGS.get(word, word)
    if word not in EMOTIONS:
        raise InputError(
            f"{where}: unknown emotion {value!r}; expected one of {', '.join(EMOTIONS)} "
            "(or happy, sad, other); fix the sheet"
        )
    return word


def sheet_clip(
    row: SheetRow,
    where: str,
    *,
    subject: str,
    clip: str,
    folder: str,
    columns: Mapping[str, tuple[str, ...]],
) -> Clip:
    """A Clip from a sheet row's emotion and onset/apex/offset cells (names given)."""
    v = row.values
    names = {f: n[0] for f, n in columns.items()}
    onset = frame_number(v["onset"], where, names["onset"])
    apex = frame_number(v["apex"], where, names["apex"])
    offset = frame_number(v["offset"], where, names["offset"])
    problem = None
    if onset is None or offset is None:
        missing = names["onset"] if onset is None else names["offset"]
        problem = f"{where} has no {missing}"
    emotion = emotion_word(v["emotion"], where)
    return Clip(subject, clip, emotion, onset, apex, offset, folder, where, problem)


def check_duplicates(clips: list[Clip]) -> None:
    """InputError naming both rows when two sheet rows describe the same clip."""
    seen: dict[tuple[str, str], Clip] = {}
    for c in clips:
        first = seen.setdefault((c.subject, c.clip), c)
        if first is not c:
            raise InputError(
                f"clip {c.subject}/{c.clip} appears twice: {first.where} and {c.where}; "
                "keep one row"
            )


# Protocols and the manifest.


def protocol_labels(tables: Mapping[str, Mapping[str, int]], protocol: str, dataset: str):
    if protocol not in tables:
        raise ConfigError(
            f"protocol {protocol!r} is not defined for {dataset}; use one of {', '.join(tables)}"
        )
    return tables[protocol]


def reject(rejects: list[dict], dataset: str, subject: str, clip: str, reason: str) -> None:
    rejects.append(
        {
            "dataset": dataset,
            "subject": subject,
            "clip": clip,
            "stage": "manifest",
            "reason": reason,
        }
    )
    log.warning("%s %s/%s skipped: %s", dataset, subject, clip, reason)


def build_manifest(
    dataset: str,
    clips: list[Clip],
    *,
    fps: int,
    frames_root: str,
    labels: Mapping[str, int] | None = None,
    protocol: str = "",
    rejects: list[dict] | None = None,
) -> pd.DataFrame:
    """Check each clip's folder and frame numbers; return the sorted manifest.

    `labels` maps emotion -> class (clips with other emotions are rejected); None keeps
    each clip's own `label` (the MEGC2019 list sets it). Raises InputError when clips were
    given but not one of their folders exists under `frames_root` (a wrong root).
    """
    rejects = [] if rejects is None else rejects
    rows = []
    looked = missing = 0
    for c in clips:
        if c.problem:
            reject(rejects, dataset, c.subject, c.clip, c.problem)
            continue
        if labels is not None:
            if c.emotion not in labels:
                reason = f"emotion {c.emotion!r} is outside the {protocol} protocol"
                reject(rejects, dataset, c.subject, c.clip, reason)
                continue
            c.label = labels[c.emotion]
        if c.onset is not None and c.offset is not None and c.onset > c.offset:
            reason = f"onset frame {c.onset} is after offset frame {c.offset} ({c.where})"
            reject(rejects, dataset, c.subject, c.clip, reason)
            continue
        looked += 1
        frames = list_frames(c.folder, missing_ok=True)
        if frames is None:
            missing += 1
            reject(rejects, dataset, c.subject, c.clip, f"clip folder {c.folder} does not exist")
            continue
        if not frames:
            reason = f"clip folder {c.folder} holds no image frames"
            reject(rejects, dataset, c.subject, c.clip, reason)
            continue
        first, last = frames[0][0], frames[-1][0]
        onset = first if c.onset is None else c.onset
        offset = last if c.offset is None else c.offset
        if onset < first or offset > last:
            reason = (
                f"onset..offset frames {onset}..{offset} ({c.where}) are outside the frames "
                f"{first}..{last} in {c.folder}"
            )
            reject(rejects, dataset, c.subject, c.clip, reason)
            continue
        apex = c.apex
        if apex is not None and not onset <= apex <= offset:
            log.warning(
                f"{dataset} {c.subject}/{c.clip}: apex frame {apex} is outside onset..offset "
                f"{onset}..{offset} ({c.where}); treating the apex as unannotated"
            )
            apex = None
        rows.append((c, onset, apex, offset))
    if looked and missing == looked:
        raise InputError(
            f"none of the {looked} {dataset} clip folders exists under {frames_root}; "
            "check the dataset root"
        )
    manifest = manifest_frame(
        {
            "dataset": [dataset] * len(rows),
            "subject": [c.subject for c, *_ in rows],
            "clip": [c.clip for c, *_ in rows],
            "label": [c.label for c, *_ in rows],
            "emotion": [c.emotion for c, *_ in rows],
            "onset": [r[1] for r in rows],
            "apex": [r[2] for r in rows],
            "offset": [r[3] for r in rows],
            "source": [c.folder for c, *_ in rows],
            "fps": [fps] * len(rows),
        }
    )
    manifest.attrs["rejects"] = rejects
    return manifest


def manifest_frame(columns: Mapping[str, list]) -> pd.DataFrame:
    """A manifest DataFrame with MANIFEST_COLUMNS, their dtypes, sorted by (subject, clip)."""

    df = pd.DataFrame({c: columns[c] for c in MANIFEST_COLUMNS})
    df = df.astype(
        {
            "dataset": "str",
            "subject": "str",
            "clip": "str",
            "label": "int64",
            "emotion": "str",
            "onset": "int64",
            "apex": "Int64",
            "offset": "int64",
            "source": "str",
            "fps": "int64",
        }
    )
    return df.sort_values(["subject", "clip"], kind="stable").reset_index(drop=True)


def folder_clips(sheet: str, columns: dict, frames_root: str, subject_name) -> list[Clip]:
    """One Clip per sheet row of a `<frames_root>/<subject>/<clip>/` dataset (CASME II, SAMM).

    `subject_name(value, where)` turns the sheet's Subject cell into the folder name.
    """
    clips = []
    for row in read_sheet(sheet, columns, key="clip"):
        where = f"{sheet} row {row.row}"
        subject = subject_name(row.values["subject"], where)
        clip = plain_name(row.values["clip"], where)
        folder = storage.join(frames_root, subject, clip)
        clips.append(
            sheet_clip(row, where, subject=subject, clip=clip, folder=folder, columns=columns)
        )
    check_duplicates(clips)
    return clips
