"""Synthetic micro-expression clips: the project's default data, written in real dataset layouts.

Every subject is a procedurally drawn face (face shape, skin tone, feature placement, smooth
texture). Each clip warps that face with an action-unit (AU) displacement field whose
intensity rises from the onset to the apex and falls back by the offset, plus the nuisances
a real recording has: sensor noise, head drift, illumination changes and blinks. The onset
frame carries no class information; only the motion does.

Presets (named sets of options, see `mer.datasets.synthetic.settings` for every option and for
where its numbers come from; explicit options override the preset's):
  simple       v1, the default: one AU template per class (negative AU4+15, positive AU12,
               surprise AU1+2(+26)), 8 subjects x 6 clips, every subject shows every class.
               The upper- and lower-face motion energy nearly tell the class: it tests the
               plumbing, not the method.
  demo         8 subjects x 6 clips of the au-mixture model (small enough for `make demo`).
  casme2-like  26 subjects, 255 clips, CASME II's class shares, uneven clips per subject.
  megc-like    the MEGC2019 composite's shape in its three layouts: CASME II-like (24
               subjects, 145 clips, 200 fps, colour), SAMM-like (28, 133, 200 fps, grey,
               larger frames), SMIC-like (16, 164, 100 fps, colour, smaller frames), with the
               official list's class counts per source.
  dynamics, scarce, plentiful, imbalanced, balanced, long-clip, realistic
               the test bed: one mechanism each (classes that differ only in time, few vs
               many clips, CASME II vs equal shares, a short movement in a long annotated
               interval), and everything real recordings have at once (docs/testbed.md).
In the au-mixture model a class is a distribution over AU combinations taken from the
emotion-AU relations used to code CASME II (Yan et al., PLoS ONE 2014) and SAMM (Davison et
al., IEEE TAC 2018), so every class moves the brows, eyes and mouth and the class is in which
movements combine and in their direction. Intensities run from barely visible (0.3 px) to
clear (3 px); subjects, timing, distractors and class mixes vary (our choices, named there).

Layouts written by `generate` (all also get synthetic.json, the settings, and
ground_truth.csv, one row per clip: names, annotated and true class, emotion, true onset /
apex / offset, AUs and side, amplitude, timing, upper/lower-face motion energy at the apex,
distractors):
  casme2    CASME2_RAW_selected/subXX/EPxx_yy/imgN.jpg + CASME2-coding-20140508.xlsx
  smic      HS/sN/micro/<class>/sN_xx_NN/imageNNNNNN.bmp   (no annotations, as in SMIC-HS)
  video     videos/<subject>/<clip>.mp4 + annotations.csv (0-based frame indices)
  megc2019  CASME2/ (casme2 layout), SAMM/ (SAMM/006/006_1_2/006_NNNNN.jpg, grey, and
            SAMM_Micro_FACS_Codes_v2.xlsx), SMIC/ (smic layout) and combined_3class_gt.csv,
            the list `load_manifest("megc2019", root)` reads (au-mixture only)
`load` reads any of them back as a manifest: dataset "synthetic" for the one-source layouts;
for megc2019 the rows keep their source's name (casme2, samm, smic) as the composite does.
Drawing faces and their motion lives in `mer.datasets.synthetic.faces`.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator

import cv2
import numpy as np
import pandas as pd

from mer import storage
from mer.datasets import CLASSES_3, casme2, common, megc2019, smic
from mer.datasets.synthetic.faces import (  # noqa: F401 (re-exported)
    REFERENCE_SIZE,
    Face,
    au_field,
    draw_face,
    draw_morphology,
    intensity,
    parse_aus,
    region_energy,
    render_clip,
    vary_face,
)
from mer.datasets.synthetic.plan import FOLDERS, ClipPlan, plan_clips  # noqa: F401 (re-exported)
from mer.datasets.synthetic.settings import (  # noqa: F401 (re-exported)
    CLASS_PRIOR,
    LAYOUTS,
    PRESETS,
    VERSION,
    Settings,
    Subset,
    record,
    settings,
)
from mer.errors import ConfigError, InputError

JPEG_QUALITY = 95  # fixed so that the same seed gives the same bytes
SHEET_NAME = "CASME2-coding-20140508.xlsx"
SAMM_SHEET = "SAMM_Micro_FACS_Codes_v2.xlsx"
MEGC_LIST = "combined_3class_gt.csv"
# SAMM's estimated-emotion words as its sheet spells them.
SAMM_WORDS = {"others": "Other"}


# ---------------------------------------------------------------------------------------------
# Writing the layouts.


def _write_frames(out: str, plan: ClipPlan, frames: Iterator[np.ndarray]) -> None:
    folder = storage.join(out, *plan.path.split("/"))
    for i, frame in enumerate(frames):
        number = plan.first + i
        if plan.layout == "casme2":
            name, data = f"img{number}.jpg", _encode(".jpg", frame)
        elif plan.layout == "samm":
            name, data = f"{plan.subject_name}_{number:05d}.jpg", _encode(".jpg", frame)
        else:
            name, data = f"image{number:06d}.bmp", _encode(".bmp", frame)
        storage.write_bytes(storage.join(folder, name), data)


def _encode(ext: str, frame: np.ndarray) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, frame, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ext} frame")
    return buf.tobytes()


def _write_video(out: str, plan: ClipPlan, frames: Iterator[np.ndarray], fps: int) -> None:
    # This opencv-python-headless build has no H.264 encoder (avc1 fails to open), so the
    # clips are MPEG-4 Part 2 ("mp4v"), which decord reads back.
    with tempfile.TemporaryDirectory(prefix="mer-synth-") as tmp:
        local = os.path.join(tmp, "clip.mp4")
        writer = None
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(local, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise ConfigError(
                        "this OpenCV build cannot write mp4v video; use layout 'casme2' or 'smic'"
                    )
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            writer.write(frame)
        writer.release()
        with open(local, "rb") as f:
            storage.write_bytes(storage.join(out, *plan.path.split("/")), f.read())


def _frame_number(plan: ClipPlan, index: int) -> int:
    return plan.first + index


def _subject_number(plan: ClipPlan) -> int:
    return int(re.sub(r"\D", "", plan.subject_name))


def _casme2_sheet(plans: list[ClipPlan]) -> bytes:
    """The coding sheet with CASME II's columns (two of them unnamed and empty)."""
    rows = []
    for p in sorted(plans, key=lambda p: (_subject_number(p), p.clip)):
        apex = _frame_number(p, p.apex) if p.apex_annotated else "/"
        rows.append(
            [
                _subject_number(p),
                p.clip,
                None,
                _frame_number(p, p.onset),
                apex,
                _frame_number(p, p.offset),
                None,
                p.action_units,
                p.emotion,
            ]
        )
    return workbook([("Sheet1", [casme2.HEADER, *rows])])


def _samm_sheet(plans: list[ClipPlan]) -> bytes:
    """SAMM's FACS sheet: 12 rows of preamble, the header on row 13, an apex of -1 where the
    coders gave none, capitalised emotion words (as in SAMM_Micro_FACS_Codes_v2.xlsx)."""
    preamble = [
        ["SAMM synthetic look-alike (mer.datasets.synthetic.generator); not the SAMM dataset"]
    ]
    preamble += [[None]] * 11
    header = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame"]
    header += ["Offset Frame", "Duration", "Type", "Action Units", "Estimated Emotion", "Notes"]
    rows = []
    for p in sorted(plans, key=lambda p: (p.subject_name, p.clip)):
        onset, offset = _frame_number(p, p.onset), _frame_number(p, p.offset)
        rows.append(
            [
                p.subject_name,
                p.clip,
                int(p.clip.split("_")[1]),
                onset,
                _frame_number(p, p.apex) if p.apex_annotated else -1,
                offset,
                offset - onset + 1,
                "Micro - 1/2",
                p.action_units,
                SAMM_WORDS.get(p.emotion, p.emotion.capitalize()),
                None,
            ]
        )
    return workbook([("FACS_Codes", [*preamble, header, *rows])])


def workbook(sheets: list[tuple[str, list]]) -> bytes:
    """An .xlsx of (title, rows) sheets in that order, its bytes fixed (fixed_zip)."""
    import openpyxl

    book = openpyxl.Workbook()
    for i, (title, rows) in enumerate(sheets):
        sheet = book.active if i == 0 else book.create_sheet()
        sheet.title = title
        for row in rows:
            sheet.append(row)
    buf = io.BytesIO()
    book.save(buf)
    return fixed_zip(buf.getvalue())


def fixed_zip(data: bytes) -> bytes:
    """Re-pack an xlsx with fixed member dates and document times, so bytes depend only on
    content (openpyxl stamps the save time into both)."""
    stamp = "2014-05-08T00:00:00Z"  # the CASME II sheet's date, as good as any
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                text = body.decode("utf-8")
                text = re.sub(r"(<dcterms:(created|modified)[^>]*>)[^<]*", rf"\g<1>{stamp}", text)
                body = text.encode("utf-8")
            member = zipfile.ZipInfo(info.filename, date_time=(2014, 5, 8, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(member, body)
    return buf.getvalue()


def _megc_list(plans: list[ClipPlan]) -> bytes:
    """The composite's list as the official one spells it: casme2,sub01,EP02_01f,1 /
    samm,6,006_1_2,0 / smic,s01,s01_ne_01,0 (label 0 negative, 1 positive, 2 surprise)."""
    lines = []
    for p in sorted(plans, key=lambda p: (("casme2", "samm", "smic").index(p.dataset), p.path)):
        subject = str(_subject_number(p)) if p.dataset == "samm" else p.subject_name
        lines.append(f"{p.dataset},{subject},{p.clip},{p.label}\n")
    return "".join(lines).encode("utf-8")


def _csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _truth_frame(plans: list[ClipPlan], energies: list[tuple[float, float]]) -> pd.DataFrame:
    """ground_truth.csv, one row per clip: names as the manifest spells them, the annotated and the true class,
    the true onset/apex/offset in the layout's frame numbering (the apex even where the sheet
    has '/'), whether the sheet gives the apex, AUs, intensity, timing, the upper- and
    lower-face motion energy at the apex (px^2 at 340 x 280, mean over each half), the
    distractors, and the clip's path under the set's root."""

    def column(f):
        return [f(p) for p in plans]

    return pd.DataFrame(
        {
            "dataset": column(lambda p: p.dataset or "synthetic"),
            "subject": column(lambda p: p.subject_name),
            "clip": column(lambda p: p.clip),
            "label": column(lambda p: p.label),
            "true_label": column(lambda p: p.true_label),
            "emotion": column(lambda p: CLASSES_3[p.label] if p.layout == "smic" else p.emotion),
            "expressed": column(lambda p: p.expressed),
            "onset": column(lambda p: _frame_number(p, p.onset)),
            "apex": column(lambda p: _frame_number(p, p.apex)),
            "offset": column(lambda p: _frame_number(p, p.offset)),
            "apex_annotated": column(lambda p: p.apex_annotated and p.layout != "smic"),
            "frames": column(lambda p: p.n_frames),
            "fps": column(lambda p: p.fps),
            "action_units": column(lambda p: p.action_units),
            "side": column(lambda p: _side(p.action_units)),
            "amplitude": column(lambda p: round(p.amplitude, 4)),
            "rise": column(lambda p: p.moves[1] - p.hold // 2 - p.moves[0]),
            "hold": column(lambda p: p.hold),
            "fall": column(lambda p: p.moves[2] - (p.moves[1] - p.hold // 2 + p.hold)),
            # The movement itself where it differs from the annotation (test bed).
            "motion_onset": column(lambda p: _frame_number(p, p.moves[0])),
            "motion_apex": column(lambda p: _frame_number(p, p.moves[1])),
            "motion_offset": column(lambda p: _frame_number(p, p.moves[2])),
            "macro": column(lambda p: p.macro[3] if p.macro else "none"),
            "rise_power": column(lambda p: round(p.rise_power, 4)),
            "fall_power": column(lambda p: round(p.fall_power, 4)),
            "upper_energy": [float(f"{u:.6g}") for u, _ in energies],
            "lower_energy": [float(f"{v:.6g}") for _, v in energies],
            "blinks": column(lambda p: (p.blink_start >= 0) + len(p.more_blinks)),
            "drift": column(lambda p: round(float(np.hypot(*p.drift)), 4)),
            "roll": column(lambda p: round(p.roll[0], 4)),
            "light": column(lambda p: round(p.light[0], 4)),
            "path": column(lambda p: p.path),
        }
    )


def _side(action_units: str) -> str:
    sides = {side for side, _ in parse_aus(action_units)}
    return "both" if sides == {""} else "+".join(sorted(s or "both" for s in sides))


# Everything `generate` writes directly under `out`; synthetic.json is written last.
WRITTEN = (
    "CASME2_RAW_selected",
    "HS",
    "videos",
    *FOLDERS.values(),
    SHEET_NAME,
    MEGC_LIST,
    "annotations.csv",
    "ground_truth.csv",
)


def _clear(out: str) -> None:
    """Make `out` ready: remove an earlier synthetic tree there (complete or cut short), but
    refuse a folder that holds other things, so that no one's data is deleted."""
    present = storage.listdir(out)
    others = [name for name in present if name not in (*WRITTEN, "synthetic.json")]
    if others and "synthetic.json" not in present:
        raise InputError(
            f"{out} already holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''} "
            "and is not a synthetic dataset; write to an empty or new folder"
        )
    for name in (*WRITTEN, "synthetic.json"):
        if name in present:
            storage.remove(storage.join(out, name), recursive=True)
    storage.makedirs(out)


def frame_size(s: Settings, dataset: str = "") -> tuple[int, int]:
    """(height, width) of the frames of one source of the set."""
    scale = next((sub.scale for sub in s.subsets if sub.name == dataset), (1.0, 1.0))
    return int(round(s.size[0] * scale[0])), int(round(s.size[1] * scale[1]))


def _face(s: Settings, plan: ClipPlan) -> Face:
    face = draw_face(np.random.default_rng([s.seed, 1, plan.subject]), frame_size(s, plan.dataset))
    if s.model == "templates":
        return face
    grey = any(sub.grey for sub in s.subsets if sub.name == plan.dataset)
    face = vary_face(face, np.random.default_rng([s.seed, 4, plan.subject]), grey=grey)
    if s.morphology:  # identity-specific AU fields (test bed)
        face.morph = draw_morphology(np.random.default_rng([s.seed, 5, plan.subject]), s.morphology)
    return face


def ground_truth(preset: str = "simple", **options) -> pd.DataFrame:
    """The ground_truth.csv that generate(out, preset, **options) writes, without rendering
    or writing a frame (faces and AU fields are drawn, which takes a few ms per clip)."""
    s = settings(preset, **options)
    plans = plan_clips(resolved=s)
    face, face_of = None, 0
    energies = []
    for p in plans:
        if p.subject != face_of:
            face, face_of = _face(s, p), p.subject
        field = au_field(face.points, p, face.lid.shape, face.morph)
        energies.append(region_energy(face, p, field))
    return _truth_frame(plans, energies)


def render_plan(s: Settings, plan: ClipPlan) -> np.ndarray:
    """One planned clip's frames (T, H, W, C uint8) in memory, exactly as generate() writes
    them for a frame layout (same face, AU field and noise draws): for checks of what the
    key-frame stage sees without writing a set."""
    face = _face(s, plan)
    field = au_field(face.points, plan, face.lid.shape, face.morph)
    rng = np.random.default_rng([s.seed, 2, plan.subject, plan.index])
    return np.stack(list(render_clip(face, plan, fps=plan.fps, rng=rng, field=field)))


def _render_subject(s, plans: list, out: str) -> list:
    """Render and write one subject's clips; their region energies, in order."""
    face = _face(s, plans[0])  # one face per subject
    energies = []
    for p in plans:
        field = au_field(face.points, p, face.lid.shape, face.morph)
        energies.append(region_energy(face, p, field))
        rng = np.random.default_rng([s.seed, 2, p.subject, p.index])
        clip = render_clip(face, p, fps=p.fps, rng=rng, field=field)
        if p.layout == "video":
            _write_video(out, p, clip, p.fps)
        else:
            _write_frames(out, p, clip)
    return energies


def _serial(fn, calls: list[tuple]) -> list:
    return [fn(*args) for args in calls]


def generate(out: str, *, preset: str = "simple", mapper=None, **options) -> dict:
    """Write a synthetic dataset under `out` (a local path or s3:// URI); return a summary.

    `preset` is simple | demo | casme2-like | megc-like; `options` are any fields of
    `mer.datasets.synthetic.settings.Settings` and override the preset's (subjects,
    clips_per_subject, seed, layout, size=(height, width), frames=(min, max) length, fps,
    label_noise, amplitude=(min, max) px, roll, ...). The same settings give byte-identical
    files. An earlier synthetic tree in `out` is replaced; a folder holding anything else is
    refused (InputError). Bad options raise ConfigError. `mapper(fn, calls)` returns
    `[fn(*args) for args in calls]`, one call per subject, in order; by default here and one at
    a time (the pipeline passes one that runs them as Ray tasks).
    """
    s = settings(preset, **options)
    plans = plan_clips(resolved=s)
    _clear(out)
    by_subject: dict[int, list[int]] = {}
    for i, p in enumerate(plans):
        by_subject.setdefault(p.subject, []).append(i)
    order = [i for ix in by_subject.values() for i in ix]
    groups = [[plans[i] for i in ix] for ix in by_subject.values()]
    # Each clip's generator is seeded by the clip alone: any order or process, same files.
    parts = (mapper or _serial)(_render_subject, [(s, g, out) for g in groups])
    energies = [0.0] * len(plans)
    for i, e in zip(order, (e for part in parts for e in part), strict=True):
        energies[i] = e

    annotations = None
    if s.layout == "casme2":
        annotations = storage.join(out, SHEET_NAME)
        storage.write_bytes(annotations, _casme2_sheet(plans))
    elif s.layout == "video":
        annotations = storage.join(out, "annotations.csv")
        table = pd.DataFrame(
            {
                "subject": [p.subject_name for p in plans],
                "clip": [p.clip for p in plans],
                "onset": [p.onset for p in plans],
                "apex": [p.apex if p.apex_annotated else pd.NA for p in plans],
                "offset": [p.offset for p in plans],
                "emotion": [p.emotion for p in plans],
            }
        ).astype({"apex": "Int64"})
        storage.write_bytes(annotations, _csv_bytes(table))
    elif s.layout == "megc2019":
        for name, sheet, write in (
            ("casme2", SHEET_NAME, _casme2_sheet),
            ("samm", SAMM_SHEET, _samm_sheet),
        ):
            part = [p for p in plans if p.dataset == name]
            if part:
                storage.write_bytes(storage.join(out, FOLDERS[name], sheet), write(part))
        annotations = storage.join(out, MEGC_LIST)
        storage.write_bytes(annotations, _megc_list(plans))
    truth = storage.join(out, "ground_truth.csv")
    storage.write_bytes(truth, _csv_bytes(_truth_frame(plans, energies)))
    metadata = storage.join(out, "synthetic.json")
    meta = {"version": VERSION, "preset": preset, **record(s)}
    storage.write_json(metadata, meta)
    counts = {name: sum(p.label == c for p in plans) for c, name in enumerate(CLASSES_3)}
    return {
        "root": out,
        **meta,
        "clips": len(plans),
        "subjects_total": len({(p.dataset, p.subject_name) for p in plans}),
        "frames_written": sum(p.n_frames for p in plans),
        "counts": counts,
        "annotations": annotations,
        "ground_truth": truth,
        "metadata": metadata,
    }


# ---------------------------------------------------------------------------------------------
# Reading a synthetic tree back.


def load(root: str, annotations: str | None = None, **kw) -> pd.DataFrame:
    """The manifest of a tree written by `generate`.

    casme2 and smic layouts are read by their own adapters (keyword arguments go to them),
    the video layout by its annotations.csv (or `annotations`); their rows say dataset
    "synthetic", fps from synthetic.json. megc2019 is read by the MEGC2019 adapter with the
    list the generator wrote (or `annotations`); its rows keep casme2 / samm / smic.
    """
    meta_uri = storage.join(root, "synthetic.json")
    if not storage.exists(meta_uri):
        raise InputError(
            f"{meta_uri} not found; is {root} a tree written by mer.datasets.synthetic.generator.generate "
            "(python jobs/synth.py)?"
        )
    meta = storage.read_json(meta_uri)
    layout = meta.get("layout")
    if layout == "megc2019":
        manifest = megc2019.load(root, annotations, **kw)
        fps = {sub["name"]: int(sub["fps"]) for sub in meta["subsets"]}
        rejects = manifest.attrs.get("rejects", [])
        manifest = manifest.assign(fps=manifest["dataset"].map(fps).astype("int64"))
        manifest.attrs["rejects"] = rejects
        return manifest
    if layout == "casme2":
        load_layout = casme2.load
    elif layout == "smic":
        load_layout = smic.load
    elif layout == "video":
        load_layout = _load_video
    else:
        raise InputError(f"{meta_uri}: unknown layout {layout!r}; expected one of {LAYOUTS}")
    manifest = load_layout(root, annotations, **kw)
    rejects = [{**r, "dataset": "synthetic"} for r in manifest.attrs.get("rejects", [])]
    manifest = manifest.assign(dataset="synthetic", fps=int(meta["fps"]))
    manifest.attrs["rejects"] = rejects
    return manifest


def _load_video(root: str, annotations: str | None = None, *, protocol: str = "3class"):

    labels = common.protocol_labels({"3class": common.THREE_CLASS}, protocol, "synthetic")
    root = common.local_or_uri(root)
    sheet = annotations or storage.join(root, "annotations.csv")
    rows = common.read_sheet(
        sheet,
        {f: (f,) for f in ("subject", "clip", "onset", "apex", "offset", "emotion")},
        key="clip",
    )
    clips, rejects = [], []
    listed: dict[str, list[str]] = {}
    for row in rows:
        where = f"{sheet} row {row.row}"
        v = row.values
        subject = common.plain_name(v["subject"], where, "subject")
        clip = common.plain_name(v["clip"], where, "clip")
        c = common.sheet_clip(
            row,
            where,
            subject=subject,
            clip=clip,
            folder=storage.join(root, "videos", subject, f"{clip}.mp4"),
            columns={f: (f,) for f in ("onset", "apex", "offset")},
        )
        if subject not in listed:
            listed[subject] = storage.listdir(storage.join(root, "videos", subject))
        if c.problem is None and f"{clip}.mp4" not in listed[subject]:
            c.problem = f"video {c.folder} does not exist"
        if c.problem is None and c.emotion not in labels:
            c.problem = f"emotion {c.emotion!r} is outside the {protocol} protocol"
        if c.problem is None and c.onset > c.offset:
            c.problem = f"onset frame {c.onset} is after offset frame {c.offset} ({where})"
        if c.problem:
            common.reject(rejects, "synthetic", subject, clip, c.problem)
            continue
        if c.apex is not None and not c.onset <= c.apex <= c.offset:
            c.apex = None
        c.label = labels[c.emotion]
        clips.append(c)
    common.check_duplicates(clips)
    manifest = common.manifest_frame(
        {
            "dataset": ["synthetic"] * len(clips),
            "subject": [c.subject for c in clips],
            "clip": [c.clip for c in clips],
            "label": [c.label for c in clips],
            "emotion": [c.emotion for c in clips],
            "onset": [c.onset for c in clips],
            "apex": [c.apex for c in clips],
            "offset": [c.offset for c in clips],
            "source": [c.folder for c in clips],
            "fps": [0] * len(clips),  # set from synthetic.json by load()
        }
    )
    manifest.attrs["rejects"] = rejects
    return manifest
