"""Synthetic micro-expression clips: the project's default data, written in real dataset layouts.

Every subject is a procedurally drawn face (face shape, skin tone, feature placement, smooth
texture). Each clip warps that face with a class-specific action-unit displacement field
whose intensity rises from the onset to the apex and falls back by the offset, plus the
nuisances a real recording has: sensor noise, slow head drift, illumination flicker and
blinks. The onset frame carries no class information; only the motion does, so a model
must look at the change between frames to beat chance (tests/test_datasets_synthetic.py
checks this).

Where the numbers come from:
- 200 fps, ~280 x 340 px face crops, onset/apex/offset sheet, '/' for a missing apex:
  CASME II (Yan et al., PLoS ONE 2014) and its coding sheet CASME2-coding-20140508.xlsx.
- Class prior 250/109/83 (negative/positive/surprise): the MEGC2019 composite.
- Action units per class (AU4+AU15 negative, AU12 positive, AU1+2(+26) surprise): FACS
  prototypes as used in the CASME II emotion coding.
- Amplitudes (1-3 px peak at 280 x 340), drift, flicker, noise and blink parameters are our
  own choices, picked so that motion is subtle but learnable; they are not measured values.

Layouts written by `generate` (all also get synthetic.json and ground_truth.csv):
  casme2  CASME2_RAW_selected/subXX/EPxx_yy/imgN.jpg + CASME2-coding-20140508.xlsx
  smic    HS/sN/micro/<class>/sN_xx_NN/imageNNNNNN.bmp   (no annotations, as in SMIC-HS)
  video   videos/<subject>/<clip>.mp4 + annotations.csv (0-based frame indices)
`load` reads any of them back as a manifest (dataset "synthetic"). Drawing faces and their
motion lives in `mer.datasets.synthetic_faces`.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import pandas as pd

from mer import storage
from mer.datasets import CLASSES_3
from mer.datasets.synthetic_faces import (  # noqa: F401 (re-exported)
    REFERENCE_SIZE,
    Face,
    au_field,
    draw_face,
    intensity,
    render_clip,
)
from mer.errors import ConfigError, InputError

VERSION = 1
LAYOUTS = ("casme2", "smic", "video")

# MEGC2019 composite class counts (negative, positive, surprise) = 250 / 109 / 83.
CLASS_PRIOR = np.array([250, 109, 83]) / 442

# CASME II 'Estimated Emotion' words per class (MEGC2019 3-class grouping).
EMOTION_WORDS = {0: ("disgust", "repression"), 1: ("happiness",), 2: ("surprise",)}
SMIC_ABBR = {0: "ne", 1: "po", 2: "sur"}  # SMIC-HS clip names: s1_ne_01, s1_po_02, s1_sur_01

JPEG_QUALITY = 95  # fixed so that the same seed gives the same bytes
SHEET_NAME = "CASME2-coding-20140508.xlsx"
MISSING_APEX = 0.10  # share of '/' ApexFrame cells (our choice; CASME II has a few)
BLINK_SHARE = 0.3  # share of clips with a blink (our choice)


@dataclass(frozen=True)
class ClipPlan:
    """Everything random about one clip except per-frame noise (drawn at render time).

    Frame positions (onset, apex, offset, blink_start) are 0-based indices into the clip;
    `first` is the number the layout gives to index 0. Lengths in px are at REFERENCE_SIZE.
    """

    subject: int  # 1-based
    index: int  # 1-based within the subject
    subject_name: str  # as the manifest spells it (sub01, s01)
    clip: str  # as the manifest spells it (EP02_01f, s01_ne_01, clip01)
    path: str  # the clip's frame folder or video file, relative to the dataset root
    label: int
    emotion: str
    action_units: str  # CASME II style, e.g. "4+15"
    n_frames: int
    first: int
    onset: int
    apex: int
    offset: int
    apex_annotated: bool  # False: the sheet says '/' (or leaves the cell empty)
    amplitude: float  # peak displacement, px
    au_gains: tuple[float, ...]  # per-AU intensity factors, in action_units order
    drift: tuple[float, float]  # head translation reached at the last frame, px
    sway: float  # amplitude of a slow sinusoidal head sway, px
    flicker: tuple[float, float, float]  # gain amplitude, frequency (Hz), phase
    noise: float  # sensor noise sigma, grey levels
    blink_start: int  # -1: no blink
    blink_frames: int
    blink_depth: float  # 1.0: eyes fully closed at the blink's peak


# ---------------------------------------------------------------------------------------------
# Planning: labels, timing and nuisance parameters (cheap; no pixels).


def _subject_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Labels of one subject's n clips: one of each class where n >= 3, the rest drawn so that
    the expected shares stay at CLASS_PRIOR (our construction)."""
    if n < 3:
        return rng.choice(3, size=n, p=CLASS_PRIOR)
    q = np.clip(n * CLASS_PRIOR - 1, 0, None)
    q = q / q.sum() if q.sum() > 0 else np.full(3, 1 / 3)
    labels = np.concatenate([[0, 1, 2], rng.choice(3, size=n - 3, p=q)])
    return rng.permutation(labels)


def _action_units(rng: np.random.Generator, label: int, emotion: str) -> str:
    if label == 0:
        # disgust leans on the brows (AU4), repression on the lip corners (AU15)
        lean = "4" if emotion == "disgust" else "15"
        return "4+15" if rng.random() < 0.7 else lean
    if label == 1:
        return "12"
    return "1+2+26" if rng.random() < 0.7 else "1+2"


def plan_clips(
    *,
    subjects: int = 8,
    clips_per_subject: int = 6,
    seed: int = 0,
    layout: str = "casme2",
    frames: tuple[int, int] = (40, 100),
    fps: int = 200,
) -> list[ClipPlan]:
    """Draw every clip's label, timing and nuisances without rendering anything."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown synthetic layout {layout!r}; expected one of {LAYOUTS}")
    if subjects < 1 or clips_per_subject < 1:
        raise ConfigError("subjects and clips_per_subject must be at least 1")
    lo, hi = int(frames[0]), int(frames[1])
    if not 12 <= lo <= hi:
        raise ConfigError(
            f"frames={frames!r}: need 12 <= min <= max (a clip needs a rise and fall)"
        )
    rng = np.random.default_rng([seed, 0])
    plans = []
    for s in range(1, subjects + 1):
        labels = _subject_labels(rng, clips_per_subject)
        names = _clip_names(rng, layout, s, labels)
        for k, label in enumerate(labels, start=1):
            label = int(label)
            subject_name, clip, path = names[k - 1]
            emotion = str(rng.choice(EMOTION_WORDS[label], p=[0.6, 0.4] if label == 0 else None))
            aus = _action_units(rng, label, emotion)
            n = int(rng.integers(lo, hi + 1))
            if layout == "smic":
                onset, offset = 0, n - 1  # SMIC clips are cut to the expression itself
            else:
                margin = max(2, int(0.15 * n))
                onset = int(rng.integers(1, margin + 1))
                offset = n - 1 - int(rng.integers(1, margin + 1))
            apex = onset + int(round((offset - onset) * rng.uniform(0.3, 0.7)))
            # Frame numbers start where the recording was cut: img46..., image057180...
            first = {"casme2": (1, 200), "smic": (0, 900_000), "video": (0, 1)}[layout]
            first = int(rng.integers(*first))
            blink_frames = max(3, int(round(rng.uniform(0.08, 0.15) * fps)))
            blink_start = int(rng.integers(0, n - 2))
            angle = rng.uniform(0, 2 * np.pi)
            drift = rng.uniform(0.5, 3.0)
            plans.append(
                ClipPlan(
                    subject=s,
                    index=k,
                    subject_name=subject_name,
                    clip=clip,
                    path=path,
                    label=label,
                    emotion=emotion,
                    action_units=aus,
                    n_frames=n,
                    first=first,
                    onset=onset,
                    apex=apex,
                    offset=offset,
                    apex_annotated=bool(rng.random() >= MISSING_APEX),
                    amplitude=float(rng.uniform(1.0, 3.0)),
                    au_gains=tuple(float(g) for g in rng.uniform(0.8, 1.2, size=3)),
                    drift=(float(drift * np.cos(angle)), float(drift * np.sin(angle))),
                    sway=float(rng.uniform(0.0, 0.5)),
                    flicker=(
                        float(rng.uniform(0.005, 0.02)),
                        float(rng.uniform(1.0, 8.0)),
                        float(rng.uniform(0, 2 * np.pi)),
                    ),
                    noise=float(rng.uniform(1.0, 2.5)),
                    blink_start=blink_start if rng.random() < BLINK_SHARE else -1,
                    blink_frames=blink_frames,
                    blink_depth=float(rng.uniform(0.7, 1.0)),
                )
            )
    # Blinks appear in some clips of every class (where a class has two clips or more).
    for c in range(3):
        members = [i for i, p in enumerate(plans) if p.label == c]
        if len(members) >= 2 and all(plans[i].blink_start < 0 for i in members):
            p = plans[members[0]]
            plans[members[0]] = _replace(p, blink_start=max(0, p.apex - p.blink_frames // 2))
    return plans


def _clip_names(
    rng: np.random.Generator, layout: str, s: int, labels: np.ndarray
) -> list[tuple[str, str, str]]:
    """(subject, clip, relative path) per clip in the layout's own naming."""
    if layout == "casme2":
        # CASME II: EP<elicitation video>_<take>, some with an "f" suffix (EP02_01f).
        episodes = sorted(rng.choice(np.arange(1, max(20, len(labels)) + 1), len(labels), False))
        out = []
        for ep in episodes:
            clip = f"EP{ep:02d}_{int(rng.integers(1, 10)):02d}" + (
                "f" if rng.random() < 0.3 else ""
            )
            out.append((f"sub{s:02d}", clip, f"CASME2_RAW_selected/sub{s:02d}/{clip}"))
        return out
    if layout == "smic":
        # On disk s1/s1_ne_01 as in SMIC-HS; the manifest pads them (s01, s01_ne_01).
        seen = {0: 0, 1: 0, 2: 0}
        out = []
        for label in labels:
            seen[int(label)] += 1
            folder = f"s{s}_{SMIC_ABBR[int(label)]}_{seen[int(label)]:02d}"
            clip = f"s{s:02d}_{SMIC_ABBR[int(label)]}_{seen[int(label)]:02d}"
            path = f"HS/s{s}/micro/{CLASSES_3[int(label)]}/{folder}"
            out.append((f"s{s:02d}", clip, path))
        return out
    return [
        (f"sub{s:02d}", f"clip{k:02d}", f"videos/sub{s:02d}/clip{k:02d}.mp4")
        for k in range(1, len(labels) + 1)
    ]


def _replace(plan: ClipPlan, **changes) -> ClipPlan:
    return ClipPlan(**{**asdict(plan), **changes})


# ---------------------------------------------------------------------------------------------
# Writing the layouts.


def _write_frames(out: str, plan: ClipPlan, frames: Iterator[np.ndarray], layout: str) -> None:
    folder = storage.join(out, *plan.path.split("/"))
    for i, frame in enumerate(frames):
        number = plan.first + i
        if layout == "casme2":
            name, data = f"img{number}.jpg", _encode(".jpg", frame)
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
            writer.write(frame)
        writer.release()
        with open(local, "rb") as f:
            storage.write_bytes(storage.join(out, *plan.path.split("/")), f.read())


def _frame_number(plan: ClipPlan, index: int) -> int:
    return plan.first + index


def _casme2_sheet(plans: list[ClipPlan]) -> bytes:
    """The coding sheet with CASME II's columns (two of them unnamed and empty)."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    sheet.append(
        [
            "Subject",
            "Filename",
            None,
            "OnsetFrame",
            "ApexFrame",
            "OffsetFrame",
            None,
            "Action Units",
            "Estimated Emotion",
        ]
    )
    for p in sorted(plans, key=lambda p: (p.subject, p.clip)):
        apex = _frame_number(p, p.apex) if p.apex_annotated else "/"
        sheet.append(
            [
                p.subject,
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
    buf = io.BytesIO()
    book.save(buf)
    return _fixed_zip(buf.getvalue())


def _fixed_zip(data: bytes) -> bytes:
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


def _csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, lineterminator="\n").encode("utf-8")


def ground_truth(plans: list[ClipPlan], layout: str) -> pd.DataFrame:
    """One row per clip: names as the manifest spells them, the class, the true
    onset/apex/offset in the layout's frame numbering (the apex even where the sheet has '/'),
    whether the sheet gives the apex, the clip length, AUs, blink, and the clip's path."""
    return pd.DataFrame(
        {
            "subject": [p.subject_name for p in plans],
            "clip": [p.clip for p in plans],
            "label": [p.label for p in plans],
            "emotion": [CLASSES_3[p.label] if layout == "smic" else p.emotion for p in plans],
            "onset": [_frame_number(p, p.onset) for p in plans],
            "apex": [_frame_number(p, p.apex) for p in plans],
            "offset": [_frame_number(p, p.offset) for p in plans],
            "apex_annotated": [p.apex_annotated if layout != "smic" else False for p in plans],
            "frames": [p.n_frames for p in plans],
            "action_units": [p.action_units for p in plans],
            "blink": [p.blink_start >= 0 for p in plans],
            "path": [p.path for p in plans],
        }
    )


# Everything `generate` writes directly under `out`; synthetic.json is written last.
WRITTEN = ("CASME2_RAW_selected", "HS", "videos", SHEET_NAME, "annotations.csv", "ground_truth.csv")


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


def generate(
    out: str,
    *,
    subjects: int = 8,
    clips_per_subject: int = 6,
    seed: int = 0,
    layout: str = "casme2",
    size: tuple[int, int] = REFERENCE_SIZE,
    frames: tuple[int, int] = (40, 100),
    fps: int = 200,
) -> dict:
    """Write a synthetic dataset under `out` (a local path or s3:// URI); return a summary.

    `size` is (height, width) of every frame; `frames` the (min, max) clip length, drawn
    uniformly. The same arguments give byte-identical files. An earlier synthetic tree in
    `out` is replaced; a folder holding anything else is refused (InputError).
    """
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ConfigError(f"size={size!r}: frames must be at least 32 x 32 px to hold a face")
    if fps < 1:
        raise ConfigError(f"fps={fps!r}: must be a positive frame rate")
    plans = plan_clips(
        subjects=subjects,
        clips_per_subject=clips_per_subject,
        seed=seed,
        layout=layout,
        frames=frames,
        fps=fps,
    )
    _clear(out)
    face, face_of = None, 0
    for p in plans:
        if p.subject != face_of:  # plans come subject by subject: draw each face once
            face, face_of = (
                draw_face(np.random.default_rng([seed, 1, p.subject]), (h, w)),
                p.subject,
            )
        clip = render_clip(
            face, p, fps=fps, rng=np.random.default_rng([seed, 2, p.subject, p.index])
        )
        if layout == "video":
            _write_video(out, p, clip, fps)
        else:
            _write_frames(out, p, clip, layout)

    annotations = None
    if layout == "casme2":
        annotations = storage.join(out, SHEET_NAME)
        storage.write_bytes(annotations, _casme2_sheet(plans))
    elif layout == "video":
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
    truth = storage.join(out, "ground_truth.csv")
    storage.write_bytes(truth, _csv_bytes(ground_truth(plans, layout)))
    metadata = storage.join(out, "synthetic.json")
    meta = {
        "layout": layout,
        "seed": seed,
        "subjects": subjects,
        "clips_per_subject": clips_per_subject,
        "fps": fps,
        "size": [h, w],
        "frames": [int(frames[0]), int(frames[1])],
        "version": VERSION,
    }
    storage.write_json(metadata, meta)
    counts = {name: sum(p.label == c for p in plans) for c, name in enumerate(CLASSES_3)}
    return {
        "root": out,
        **meta,
        "clips": len(plans),
        "frames_written": sum(p.n_frames for p in plans),
        "counts": counts,
        "annotations": annotations,
        "ground_truth": truth,
        "metadata": metadata,
    }


# ---------------------------------------------------------------------------------------------
# Reading a synthetic tree back.


def load(root: str, annotations: str | None = None, **kw) -> pd.DataFrame:
    """The manifest of a tree written by `generate` (dataset "synthetic").

    casme2 and smic layouts are read by their own adapters (keyword arguments go to them);
    the video layout by its annotations.csv (or `annotations`). fps comes from synthetic.json.
    """
    meta_uri = storage.join(root, "synthetic.json")
    if not storage.exists(meta_uri):
        raise InputError(
            f"{meta_uri} not found; is {root} a tree written by mer.datasets.synthetic.generate "
            "(python jobs/synth.py)?"
        )
    meta = storage.read_json(meta_uri)
    layout = meta.get("layout")
    if layout == "casme2":
        from mer.datasets.casme2 import load as load_layout
    elif layout == "smic":
        from mer.datasets.smic import load as load_layout
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
    from mer.datasets import common

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
