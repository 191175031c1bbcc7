"""MEGC2019 composite (See et al., FG 2019): CASME II + SAMM + SMIC-HS, 3 classes, 442 clips.

The official list (combined_3class_gt.csv: no header, rows `dataset,subject,clip,label`,
e.g. `casme2,sub01,EP02_01f,1`, `samm,6,006_1_2,0`, `smic,s01,s01_ne_01,0`; label 0
negative, 1 positive, 2 surprise) decides which clips belong and their labels: the emotion
mapping alone does not reproduce it. The list is licensed with the challenge and is not in
this repository; pass its path (`annotations` or `list_path`; default
root/combined_3class_gt.csv).

Convention (ours): each source dataset sits under `root` in a folder of its own, which is
that adapter's root; keyword arguments override each one.
  root/CASME2/   CASME2_RAW_selected/ (or Cropped/), CASME2-coding-20140508.xlsx
  root/SAMM/     SAMM/006/..., SAMM_Micro_FACS_Codes_v2.xlsx
  root/SMIC/     HS/s1/micro/...
Listed names are normalised as the adapters name clips (samm subject 6 -> "006", smic s1 ->
"s01"), so either spelling on disk matches. Manifest rows: dataset = the source dataset,
subject/clip = the adapter's canonical names, label from the list, emotion from the source
sheet (SMIC: its class folder), onset/apex/offset/source/fps from the adapter; sorted by
(dataset, subject, clip).

Bad input: a malformed or repeated list line raises InputError naming the file and line. A
listed clip missing from the sheet or disk, or one its adapter cannot use, is rejected with
a reason (manifest.attrs["rejects"]); when not one of a dataset's listed clips is found,
InputError names that dataset's root. A list label that disagrees with the sheet's emotion
is kept (the list decides) and logged.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass

import pandas as pd

from mer import storage
from mer.datasets import casme2, common, samm, smic
from mer.errors import ConfigError, InputError

log = logging.getLogger(__name__)

LIST = "combined_3class_gt.csv"
SOURCES = ("casme2", "samm", "smic")
FOLDERS = {"casme2": "CASME2", "samm": "SAMM", "smic": "SMIC"}


@dataclass
class Listed:
    dataset: str
    subject: str  # canonical, as the dataset's adapter spells it
    clip: str
    label: int
    where: str  # "list.csv line 3"


def load(
    root: str,
    annotations: str | None = None,
    *,
    casme2_root: str | None = None,
    samm_root: str | None = None,
    smic_root: str | None = None,
    list_path: str | None = None,
    casme2_frames: str = "auto",
    protocol: str = "3class",
) -> pd.DataFrame:
    """The MEGC2019 composite manifest: the listed clips found under the three roots.

    `annotations` and `list_path` both name the official list (give one).
    `casme2_frames` is passed to casme2 ("auto", "raw" or "cropped").
    """
    if protocol != "3class":
        raise ConfigError(f"protocol {protocol!r}: the MEGC2019 composite is 3class only")
    if annotations and list_path and annotations != list_path:
        raise ConfigError("give the MEGC2019 list once: annotations= or list_path=, not both")
    list_uri = annotations or list_path or storage.join(root, LIST)
    roots = {
        "casme2": casme2_root or storage.join(root, FOLDERS["casme2"]),
        "samm": samm_root or storage.join(root, FOLDERS["samm"]),
        "smic": smic_root or storage.join(root, FOLDERS["smic"]),
    }
    listed = read_list(list_uri)
    rejects: list[dict] = []
    parts = []
    for name in SOURCES:
        wanted = [entry for entry in listed if entry.dataset == name]
        if wanted:
            parts.append(_load_source(name, roots[name], wanted, list_uri, casme2_frames, rejects))
    manifest = pd.concat(parts, ignore_index=True)
    manifest = manifest.sort_values(["dataset", "subject", "clip"], kind="stable")
    manifest = manifest.reset_index(drop=True)
    manifest.attrs["rejects"] = rejects
    return manifest


def _load_source(
    name: str, root: str, wanted: list[Listed], list_uri: str, frames: str, rejects: list[dict]
) -> pd.DataFrame:
    if name == "casme2":
        clips, frames_root = casme2.read_clips(root, frames=frames)
        fps, emotion_labels, absent = casme2.FPS, common.THREE_CLASS, "is not in the sheet"
    elif name == "samm":
        clips, frames_root = samm.read_clips(root)
        fps, emotion_labels, absent = samm.FPS, common.THREE_CLASS, "is not in the sheet"
    else:
        clips, frames_root = smic.read_clips(root)
        fps, emotion_labels, absent = smic.FPS, smic.THREE_CLASS, f"has no folder under {root}"
    by_name = {(c.subject, c.clip): c for c in clips}
    found, disagree = [], []
    for entry in wanted:
        clip = by_name.get((entry.subject, entry.clip))
        if clip is None:
            reason = f"listed in {entry.where} but {absent}"
            common.reject(rejects, name, entry.subject, entry.clip, reason)
            continue
        if emotion_labels.get(clip.emotion) != entry.label:
            disagree.append(f"{clip.clip} ({clip.emotion}, listed {entry.label})")
        clip.label = entry.label
        found.append(clip)
    if not found:
        raise InputError(
            f"none of the {len(wanted)} {name} clips listed in {list_uri} is under {root}; "
            f"pass {name}_root=<the {name} dataset root>"
        )
    if disagree:
        examples = ", ".join(disagree[:5]) + (" ..." if len(disagree) > 5 else "")
        log.warning(
            "%d %s clips have a list label that disagrees with their emotion "
            "(the list decides): %s",
            len(disagree),
            name,
            examples,
        )
    return common.build_manifest(name, found, fps=fps, frames_root=frames_root, rejects=rejects)


def read_list(uri: str) -> list[Listed]:
    """The official list's rows, names canonical; InputError on a malformed line."""
    try:
        text = storage.read_bytes(uri).decode("utf-8-sig")
    except InputError as e:
        raise InputError(
            f"MEGC2019 list {uri} not found; pass annotations=<path of combined_3class_gt.csv>"
        ) from e
    listed: list[Listed] = []
    seen: dict[tuple[str, str, str], Listed] = {}
    for number, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        fields = [f.strip() for f in fields]
        if not any(fields) or (number == 1 and fields[0].lower() == "dataset"):
            continue  # blank line, or a header someone added
        where = f"{uri} line {number}"
        if len(fields) != 4 or fields[0].lower() not in SOURCES or fields[3] not in ("0", "1", "2"):
            raise InputError(
                f"{where}: expected 'dataset,subject,clip,label' with dataset casme2, samm "
                f"or smic and label 0, 1 or 2; got {','.join(fields)!r}"
            )
        dataset, subject, clip = fields[0].lower(), fields[1], fields[2]
        if dataset == "casme2":
            subject = f"sub{common.subject_number(subject, where):02d}"
        elif dataset == "samm":
            subject = samm.subject_name(subject, where)
        else:
            subject, clip = smic.subject_name(subject, where), smic.clip_name(clip)
        entry = Listed(dataset, subject, clip, int(fields[3]), where)
        first = seen.setdefault((dataset, subject, clip), entry)
        if first is not entry:
            raise InputError(
                f"{uri}: {dataset} {subject}/{clip} is listed twice: {first.where} "
                f"and line {number}; keep one"
            )
        listed.append(entry)
    if not listed:
        raise InputError(f"MEGC2019 list {uri} has no rows")
    return listed
