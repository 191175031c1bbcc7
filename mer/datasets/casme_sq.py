"""CAS(ME)^2 long videos (Qu et al., IEEE TAC 2018): raw frame folders + code sheet ->
LongVideoSet.

Layout as distributed, under `root` (a local path or s3:// URI):
  root/rawpic/s15/15_0101disgustingteeth/img1.jpg     one folder per long video, 30 fps
  root/CAS(ME)^2code_final.xlsx                       the sheet (default location)
The workbook has three sheets without header rows:
  CASFEcode_final  one row per expression: subject number, clip name (stimulus name and a
                   count, e.g. disgust1_1), onset, apex, offset, action units, emotion
                   (negative / positive / surprise / others), type (micro-expression or
                   macro-expression), self-reported emotion
  naming rule1     the subject's folder (column 2, e.g. s15; matched by its number, so 15
                   names rawpic/s15 too) and the subject's number (column 3)
  naming rule2     the stimulus number (column 1, e.g. 101) and name (column 2, disgust1)
A row's video is the folder under rawpic/<subject folder>/ whose name, after the subject's
number and '_', starts with the stimulus number in 4 digits (15_0101...). Sheets are found by
title, else by position (first, second, third). A first row holding words is taken as a
header and skipped (the published sheets have none). Without the naming sheets the workbook
still loads, with a warning: subject numbers name the rawpic folder of that number and clip
names must start with the stimulus number (0101_1). An offset of 0 means only the apex was
coded: the interval ends at the apex. Names: subject "s15", video "15_0101disgustingteeth".

Every folder under rawpic/ is a video, expressions or not. Bad input follows
mer.datasets.common: a missing or unreadable workbook, a frame cell that is not a number or
an unknown type raises InputError naming the sheet and row; a row
whose subject or stimulus has no folder, whose onset is after its offset or whose frames are
outside its video's images, and a video folder without images, are rejected with the reason.
"""

from __future__ import annotations

import logging
import re

from mer import storage
from mer.datasets import common
from mer.datasets.long_videos import (
    Interval,
    LongVideo,
    LongVideoSet,
    check_interval,
    expression_type,
    read_video,
    row_frames,
    usable_videos,
)
from mer.errors import InputError

log = logging.getLogger(__name__)

DATASET = "casme_sq"
FPS = 30
SHEET = "CAS(ME)^2code_final.xlsx"
CODES, RULE1, RULE2 = "CASFEcode_final", "naming rule1", "naming rule2"
NAMES = {"onset": "onset (column 3)", "apex": "apex (column 4)", "offset": "offset (column 5)"}


def load_long(root: str, annotations: str | None = None) -> LongVideoSet:
    """The CAS(ME)^2 long videos under `root` and the intervals of its sheet (`annotations`
    overrides the sheet: default root/CAS(ME)^2code_final.xlsx)."""
    common.check_root(root, "CAS(ME)^2")
    root = common.local_or_uri(root)
    sheet = annotations or storage.join(root, SHEET)
    book = common.read_workbook(sheet)
    codes, rule1, rule2 = _sheets(book, sheet)
    rawpic = storage.join(root, "rawpic")
    subjects = common.subfolders(rawpic)
    if subjects is None:
        raise InputError(f"{rawpic} does not exist; is {root} the CAS(ME)^2 root?")
    rejects: list[dict] = []
    videos: dict[tuple[str, str], LongVideo | None] = {}
    for subject in subjects:
        for name in common.subfolders(storage.join(rawpic, subject)) or []:
            folder = storage.join(rawpic, subject, name)
            videos[subject, name] = read_video(DATASET, subject, name, folder, FPS, rejects)
    folders = _subject_folders(rule1, sheet, subjects)
    stimuli = _stimuli(rule2, sheet)
    intervals = []
    for i, row in enumerate(codes, 1):
        if not row or common.blank(row[0]) or _is_header(codes, i, 2):
            continue
        where = f"{sheet} sheet {CODES} row {i}"
        cells = list(row) + [None] * (9 - len(row))
        values = {"onset": cells[2], "apex": cells[3], "offset": cells[4]}
        onset, offset = row_frames(values, where, NAMES)
        kind = expression_type(cells[7], where)
        clip = str(cells[1] or "").strip()
        number = _number(cells[0], where)
        subject = folders.get(number)
        if subject is None:
            reason = f"{where}: subject {number} has no folder under {rawpic} (sheet {RULE1})"
            common.reject(rejects, DATASET, str(number), clip, reason)
            continue
        stem = clip.split("_")[0].strip().lower()
        code = stimuli.get(stem, int(stem) if stem.isdigit() else None)
        if code is None:
            reason = f"{where}: clip {clip!r} names no stimulus of sheet {RULE2}"
            common.reject(rejects, DATASET, subject, clip, reason)
            continue
        video = _video_folder(videos, subject, code)
        if video is None:
            reason = f"{where}: no folder for stimulus {code:04d} under {rawpic}/{subject}"
            common.reject(rejects, DATASET, subject, clip, reason)
            continue
        if onset is None or offset is None:
            missing = "onset" if onset is None else "offset and apex"
            common.reject(rejects, DATASET, subject, clip, f"{where} has no {missing}")
            continue
        emotion = str(cells[6]).strip().lower() if not common.blank(cells[6]) else None
        interval = Interval(video, onset, offset, kind, emotion)
        if check_interval(interval, videos[subject, video], where, rejects, DATASET, subject):
            intervals.append(interval)
    return LongVideoSet(usable_videos(videos, rawpic), intervals, rejects)


def _sheets(book: dict, sheet: str):
    """The three sheets by title, else by position. A workbook without the naming sheets
    still loads: subject numbers then name the rawpic folder of the same number (15 -> s15)
    and clip names must start with the stimulus number (0101_1); a warning says so."""
    titles = list(book)
    out = []
    for position, title in enumerate((CODES, RULE1, RULE2)):
        if title in book:
            out.append(book[title])
        elif position < len(titles):
            out.append(book[titles[position]])
        else:
            log.warning(
                "%s has no sheet %r (found %s): %s",
                sheet,
                title,
                titles,
                "subject numbers name their folders"
                if title == RULE1
                else "clip names must start with the stimulus number",
            )
            out.append(None)
    return out


def _is_header(rows: list[list], i: int, column: int) -> bool:
    """True for a first row whose `column` holds words, not a number (a header some copies
    of the sheet carry; the published one has none)."""
    if i != 1:
        return False
    cell = (list(rows[0]) + [None] * (column + 1))[column]
    return isinstance(cell, str) and not cell.strip().lstrip("-").replace(".", "").isdigit()


def _number(value: object, where: str) -> int:
    match = re.fullmatch(r"[A-Za-z]*0*(\d+)(?:\.0)?", str(value).strip())
    if match is None:
        raise InputError(f"{where}: {value!r} is not a number; fix the sheet")
    return int(match.group(1))


def _subject_folders(rows: list[list] | None, sheet: str, folders: list[str]) -> dict[int, str]:
    """naming rule1: subject number (column 3) -> the rawpic folder named by column 2
    (compared by its number: 15, s15 and S15 all name rawpic/s15). Without the sheet, each
    folder's own number."""
    by_number = {}
    for name in folders:
        digits = re.findall(r"\d+", name)
        if digits:
            by_number.setdefault(int(digits[-1]), name)
    if rows is None:
        return by_number
    out = {}
    for i, row in enumerate(rows, 1):
        if _is_header(rows, i, 2):
            continue
        cells = list(row) + [None] * 3
        if common.blank(cells[1]) or common.blank(cells[2]):
            continue
        where = f"{sheet} sheet {RULE1} row {i}"
        folder = by_number.get(_number(cells[1], where))
        if folder is not None:
            out[_number(cells[2], where)] = folder
    return out


def _stimuli(rows: list[list] | None, sheet: str) -> dict[str, int]:
    """naming rule2: stimulus name (column 2, lower case) -> number (column 1)."""
    out: dict[str, int] = {}
    for i, row in enumerate(rows or [], 1):
        if _is_header(rows, i, 0):
            continue
        cells = list(row) + [None] * 2
        if common.blank(cells[0]) or common.blank(cells[1]):
            continue
        out[str(cells[1]).strip().lower()] = _number(cells[0], f"{sheet} sheet {RULE2} row {i}")
    return out


def _video_folder(videos: dict, subject: str, code: int) -> str | None:
    prefix = f"{code:04d}"
    for s, name in sorted(videos):
        if s == subject and name.split("_", 1)[-1].startswith(prefix):
            return name
    return None
