"""SAMM Long Videos (Yap, Kendrick & Yap, FG 2020): frame folders + release sheet ->
LongVideoSet.

Layout as distributed, under `root` (a local path or s3:// URI):
  root/SAMM_longvideos/006_1/006_1_00001.jpg     one folder per long video, grey, 200 fps
  root/SAMM_LongVideos_V1_Release.xlsx          the sheet (default; V2 or V3 if only those,
                                                or the one SAMM_LongVideos*.xlsx / .csv)
The sheet has rows of preamble, then a header row (found as the row holding "Filename"):
Subject, Filename, Inducement Code, Onset, Apex, Offset, Duration, Type, Action Units, Notes.
Filename is <video>_<k> (006_1_3: the third expression of video 006_1); Type is
'Micro - 1/2' or 'Macro'. An offset of 0 means only the apex was coded: the interval ends at
the apex. Names: subject "006" (the Filename's first part), video "006_1" (the folder).
There is no emotion column: intervals carry emotion None.

Every folder under SAMM_longvideos/ is a video, expressions or not. Bad input follows
mer.datasets.common: a missing or unreadable sheet, a missing column, a frame cell that is
not a number, an unknown type or a Filename that is not <video>_<k> raises InputError naming
the sheet and row; a row whose video has no folder, whose onset is after its offset or whose
frames are outside its video's images, and a folder without images, are rejected with the
reason.
"""

from __future__ import annotations

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

DATASET = "samm_lv"
FPS = 200
SHEET = "SAMM_LongVideos_V1_Release.xlsx"
RELEASES = (SHEET, "SAMM_LongVideos_V2_Release.xlsx", "SAMM_LongVideos_V3_Release.xlsx")
FOLDER = "SAMM_longvideos"
COLUMNS = {
    "subject": ("Subject",),
    "clip": ("Filename",),
    "onset": ("Onset", "Onset Frame"),
    "apex": ("Apex", "Apex Frame"),
    "offset": ("Offset", "Offset Frame"),
    "type": ("Type",),
}
NAMES = {"onset": "Onset", "apex": "Apex", "offset": "Offset"}


def load_long(root: str, annotations: str | None = None) -> LongVideoSet:
    """The SAMM-LV long videos under `root` and the intervals of its sheet (`annotations`
    overrides the sheet: default root/SAMM_LongVideos_V1_Release.xlsx, else V2, V3, or the
    .csv export of one of them)."""
    common.check_root(root, "SAMM Long Videos")
    root = common.local_or_uri(root)
    sheet = annotations or _default_sheet(root)
    rows = common.read_sheet(sheet, COLUMNS, key="clip")
    frames_root = storage.join(root, _folder(root))
    names = common.subfolders(frames_root)
    if names is None:
        raise InputError(f"{frames_root} does not exist; is {root} the SAMM Long Videos root?")
    rejects: list[dict] = []
    videos: dict[str, LongVideo | None] = {}
    for name in names:
        folder = storage.join(frames_root, name)
        videos[name] = read_video(DATASET, name.split("_")[0], name, folder, FPS, rejects)
    intervals = []
    for row in rows:
        where = f"{sheet} row {row.row}"
        clip = common.plain_name(row.values["clip"], where)
        parts = clip.split("_")
        if len(parts) < 3:
            raise InputError(
                f"{where}: Filename {clip!r} is not <subject>_<video>_<k> (e.g. 006_1_3); "
                "fix the sheet"
            )
        subject, video = parts[0], "_".join(parts[:2])
        onset, offset = row_frames(row.values, where, NAMES)
        kind = expression_type(row.values["type"], where)
        if video not in videos:
            reason = f"{where}: no folder {video} under {frames_root}"
            common.reject(rejects, DATASET, subject, clip, reason)
            continue
        if onset is None or offset is None:
            missing = "Onset" if onset is None else "Offset and Apex"
            common.reject(rejects, DATASET, subject, clip, f"{where} has no {missing}")
            continue
        interval = Interval(video, onset, offset, kind)
        if check_interval(interval, videos[video], where, rejects, DATASET, subject):
            intervals.append(interval)
    return LongVideoSet(usable_videos(videos, frames_root), intervals, rejects)


def _default_sheet(root: str) -> str:
    """The V1, V2 or V3 release sheet (or its .csv export), else the one .xlsx or .csv whose
    name starts SAMM_LongVideos (any case); root/SAMM_LongVideos_V1_Release.xlsx if none."""
    for name in RELEASES:
        sheet = common.default_sheet(root, name)
        if storage.exists(sheet):
            return sheet
    found = sorted(
        name
        for name, kind in storage.entries(root) or []
        if kind == "file"
        and name.lower().startswith("samm_longvideos")
        and name.lower().endswith((".xlsx", ".csv"))
    )
    return storage.join(root, found[0] if len(found) == 1 else SHEET)


def _folder(root: str) -> str:
    """SAMM_longvideos, or the folder of that name in another case."""
    names = common.subfolders(root) or []
    same = [n for n in names if n.lower() == FOLDER.lower()]
    return FOLDER if FOLDER in names or not same else same[0]
