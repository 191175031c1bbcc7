"""Synthetic long videos for spotting: a procedural face recorded for tens of seconds, with a
few micro-expressions hidden among macro-expressions, blinks and head movement.

The faces and their action-unit (AU) motion are the test bed's (mer.datasets.synthetic.faces,
the `realistic` preset's model: identity-specific AU fields, emotion -> AU mixtures of
mer.datasets.synthetic.plan); what is new here is the time line. Each video holds:
  micro-expressions  0-5 per video (uniform), 0.2-0.5 s, 0.5-2 px peak at 340 x 280
  macro-expressions  0-2 per video, 0.6-3 s, 4-8 px peak (as the test bed's macro distractor)
  blinks             about 15 a minute (a Poisson process), 0.1-0.4 s each, anywhere
  head movement      a slow sway of a few px and up to 1 degree of roll all along, plus
                     0-2 quick head turns (3-8 px in 0.3-1 s) per 30 s
  flicker and noise  illumination gain flicker of 1-3 % and sensor noise of 2-4 grey levels
Expressions never overlap each other (at least 0.3 s apart); blinks and head turns fall where
they fall, on top of expressions too, as in real recordings. Durations follow the usual
definitions (a micro-expression lasts under 0.5 s; CAS(ME)^2 and SAMM Long Videos annotate
macro-expressions of 0.5-4 s); every range is our choice (docs/spotting-data.md).

Layouts (the datasets' own, so the long-video adapters read them back; frame numbers start
at 1 as in the datasets):
  casme_sq  CAS(ME)^2: rawpic/s15/15_0101disgustingteeth/img1.jpg ... at 30 fps, colour, and
            CAS(ME)^2code_final.xlsx (sheets CASFEcode_final, naming rule1, naming rule2)
  samm_lv   SAMM Long Videos: SAMM_longvideos/006_1/006_1_00001.jpg ... at 200 fps, grey,
            and SAMM_LongVideos_V1_Release.xlsx (preamble, then Subject, Filename, ...)
Both also get long_synthetic.json (the settings) and long_ground_truth.csv (one row per
event: expressions with their AUs and amplitude, blinks and head turns, which no sheet holds).
`load_long` reads a set back as a LongVideoSet through the dataset's adapter.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace

import cv2
import numpy as np

from mer import layout, storage
from mer.datasets import casme_sq, samm_lv
from mer.datasets.long_videos import LongVideoSet
from mer.datasets.synthetic.faces import (
    Face,
    au_field,
    draw_face,
    draw_morphology,
    head_maps,
)
from mer.datasets.synthetic.generator import JPEG_QUALITY, workbook
from mer.datasets.synthetic.plan import EMOTION_AUS, ClipPlan
from mer.datasets.synthetic.settings import REFERENCE_SIZE
from mer.errors import ConfigError, InputError

LAYOUTS = ("casme_sq", "samm_lv")
SETTINGS_FILE = "long_synthetic.json"
TRUTH_FILE = "long_ground_truth.csv"
DATASET = "synthetic_long"
VERSION = 1  # part of the record: a change to what the generator draws bumps it

# CAS(ME)^2's emotion column uses four words (its 'emotion' cell); SAMM-LV has none.
CASME_SQ_WORDS = {
    "happiness": "positive",
    "surprise": "surprise",
    "disgust": "negative",
    "repression": "negative",
    "fear": "negative",
    "sadness": "negative",
    "anger": "negative",
    "contempt": "negative",
}
# CAS(ME)^2 stimulus clips: (number, name in the sheet, words in the folder name). The names
# follow its naming rule 2 (emotion + index); the list is ours.
STIMULI = (
    (101, "disgust1", "disgustingteeth"),
    (102, "disgust2", "eatingworms"),
    (401, "anger1", "pickingupwallet"),
    (402, "anger2", "threeprisoners"),
    (502, "happy1", "funnyerrors"),
    (503, "happy2", "funnylaughter"),
)


@dataclass(frozen=True)
class LongSettings:
    """Every option of the long-video generator; long_synthetic.json records them."""

    layout: str = "casme_sq"  # casme_sq (30 fps, colour) | samm_lv (200 fps, grey)
    seed: int = 0
    subjects: int = 2
    videos_per_subject: int = 2
    seconds: float = 20.0
    fps: int = 0  # 0: the layout's own (casme_sq 30, samm_lv 200)
    size: tuple[int, int] = (170, 140)  # frame height, width (half a CASME II crop)
    micro: tuple[int, int] = (0, 5)  # micro-expressions per video, min max (uniform)
    macro: tuple[int, int] = (0, 2)  # macro-expressions per video
    micro_seconds: tuple[float, float] = (0.2, 0.5)
    macro_seconds: tuple[float, float] = (0.6, 3.0)
    micro_amplitude: tuple[float, float] = (0.5, 2.0)  # peak px at 340 x 280
    macro_amplitude: tuple[float, float] = (4.0, 8.0)
    gap_seconds: float = 0.3  # least time between two expressions
    blinks_per_minute: float = 15.0
    head_turns_per_minute: float = 2.0
    sway: tuple[float, float] = (0.5, 3.0)  # slow head sway, px at 340 x 280
    roll: float = 1.0  # slow head roll, degrees at most
    morphology: float = 0.3  # identity-specific AU fields (the realistic preset's)
    flicker: tuple[float, float] = (0.01, 0.03)
    noise: tuple[float, float] = (2.0, 4.0)  # sensor noise SD, grey levels

    @property
    def rate(self) -> int:
        return self.fps or (30 if self.layout == "casme_sq" else 200)


LONG_PRESETS: dict[str, dict] = {
    # Tens of seconds at each dataset's frame rate (CAS(ME)^2's real videos average 148 s,
    # SAMM-LV's 35.5 s; ours are shorter to stay cheap).
    "casme_sq-like": {"layout": "casme_sq", "subjects": 4, "videos_per_subject": 3},
    "samm_lv-like": {"layout": "samm_lv", "subjects": 4, "videos_per_subject": 3},
    # Tests: 64 x 64 frames, a few seconds.
    "tiny": {"size": (64, 64), "seconds": 3.0, "subjects": 2, "videos_per_subject": 1},
}


def long_settings(preset: str = "casme_sq-like", **options) -> LongSettings:
    """The preset's settings with `options` (any LongSettings field) on top, checked."""
    if preset not in LONG_PRESETS:
        raise ConfigError(
            f"unknown long-video preset {preset!r}; expected one of {list(LONG_PRESETS)}"
        )
    names = {f.name for f in fields(LongSettings)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"unknown long-video option(s) {unknown}; known: {sorted(names)}")
    values = {**LONG_PRESETS[preset], **options}
    s = LongSettings(**{k: _plain(k, v) for k, v in values.items()})
    if s.layout not in LAYOUTS:
        raise ConfigError(f"unknown long-video layout {s.layout!r}; expected one of {LAYOUTS}")
    if min(s.size) < 32:
        raise ConfigError(f"size={s.size!r}: frames must be at least 32 x 32 px")
    if s.subjects < 1 or s.videos_per_subject < 1 or s.rate < 1:
        raise ConfigError("subjects, videos_per_subject and fps must be positive")
    if not 0 <= s.micro[0] <= s.micro[1] or not 0 <= s.macro[0] <= s.macro[1]:
        raise ConfigError(f"micro={s.micro!r}, macro={s.macro!r}: need 0 <= min <= max")
    if s.seconds * s.rate < 32:
        raise ConfigError(f"seconds={s.seconds}: a video needs at least 32 frames")
    return s


def _plain(name: str, value):
    """Lists (JSON, YAML) become tuples and numbers take the default's type, so that equal
    settings record and hash equal (2 and 2.0 would not)."""
    default = LongSettings.__dataclass_fields__[name].default
    try:
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ConfigError(
                    f"{name}={value!r}: expected {len(default)} values like {default}"
                )
            return tuple(type(d)(v) for d, v in zip(default, value, strict=True))
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if type(default)(value) != value:
                raise ValueError(value)
            return type(default)(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: expected a value like {default!r}") from None
    return value


@dataclass(frozen=True)
class Event:
    """One thing that happens in a video; frames are 0-based indices into it."""

    kind: str  # micro | macro | blink | head_turn
    start: int
    apex: int
    end: int  # inclusive
    emotion: str = ""
    action_units: str = ""
    amplitude: float = 0.0  # px at 340 x 280 (head turn: its shift)
    direction: float = 0.0  # head turn: radians


@dataclass(frozen=True)
class VideoPlan:
    subject: int  # 1-based
    index: int  # 1-based within the subject
    subject_name: str  # s15 | 006
    video: str  # the frame folder's name
    clip_stem: str  # casme_sq: the stimulus name in the sheet (disgust1); samm_lv: the video
    n_frames: int
    events: tuple[Event, ...]
    sway: tuple[float, float, float, float]  # amplitude px, period s, phase, direction
    roll: tuple[float, float, float]  # degrees, period s, phase
    flicker: tuple[float, float, float]  # amplitude, frequency Hz, phase
    noise: float


# ---------------------------------------------------------------------------------------------
# Planning.


def plan_long(s: LongSettings) -> list[VideoPlan]:
    """Every video's events and nuisances, drawn from the seed alone (no rendering)."""
    plans = []
    fps = s.rate
    n = int(round(s.seconds * fps))
    for subject in range(1, s.subjects + 1):
        for index in range(1, s.videos_per_subject + 1):
            rng = np.random.default_rng([s.seed, subject, index, 7])
            events = _expressions(rng, s, n, fps) + _blinks(rng, s, n, fps)
            events += _head_turns(rng, s, n, fps)
            subject_name, video, stem = _names(s.layout, subject, index)
            plans.append(
                VideoPlan(
                    subject=subject,
                    index=index,
                    subject_name=subject_name,
                    video=video,
                    clip_stem=stem,
                    n_frames=n,
                    events=tuple(sorted(events, key=lambda e: (e.start, e.kind))),
                    sway=(
                        float(rng.uniform(*s.sway)),
                        float(rng.uniform(4, 12)),
                        float(rng.uniform(0, 2 * np.pi)),
                        float(rng.uniform(0, 2 * np.pi)),
                    ),
                    roll=(
                        float(rng.uniform(-s.roll, s.roll)),
                        float(rng.uniform(5, 15)),
                        float(rng.uniform(0, 2 * np.pi)),
                    ),
                    flicker=(
                        float(rng.uniform(*s.flicker)),
                        float(rng.uniform(0.1, 1.0)),
                        float(rng.uniform(0, 2 * np.pi)),
                    ),
                    noise=float(rng.uniform(*s.noise)),
                )
            )
    return plans


def _names(layout: str, subject: int, index: int) -> tuple[str, str, str]:
    if layout == "casme_sq":
        number = 14 + subject  # CAS(ME)^2's folders run s15 .. s40
        code, name, words = STIMULI[(index - 1) % len(STIMULI)]
        return f"s{number}", f"{number}_{code:04d}{words}", name
    name = f"{5 + subject:03d}"  # SAMM's subjects start at 006
    return name, f"{name}_{index}", f"{name}_{index}"


def _expressions(rng: np.random.Generator, s: LongSettings, n: int, fps: int) -> list[Event]:
    kinds = ["micro"] * int(rng.integers(s.micro[0], s.micro[1] + 1))
    kinds += ["macro"] * int(rng.integers(s.macro[0], s.macro[1] + 1))
    rng.shuffle(kinds)
    gap = int(round(s.gap_seconds * fps))
    taken: list[tuple[int, int]] = []
    events = []
    for kind in kinds:
        lo, hi = s.micro_seconds if kind == "micro" else s.macro_seconds
        length = max(3, int(round(rng.uniform(lo, hi) * fps)))
        if length + 2 > n:
            continue
        for _ in range(100):  # rejection: a free slot, away from the other expressions
            start = int(rng.integers(1, n - length))
            end = start + length - 1
            if all(end + gap < a or start > b + gap for a, b in taken):
                break
        else:
            continue  # the video is full: fewer expressions than drawn
        taken.append((start, end))
        emotion = str(rng.choice(sorted(CASME_SQ_WORDS)))
        table = EMOTION_AUS[emotion]
        weights = np.array([w for _, w in table])
        aus = table[int(rng.choice(len(table), p=weights / weights.sum()))][0]
        amp = s.micro_amplitude if kind == "micro" else s.macro_amplitude
        apex = start + int(round(rng.uniform(0.3, 0.6) * (length - 1)))
        events.append(Event(kind, start, apex, end, emotion, aus, float(rng.uniform(*amp))))
    return events


def _blinks(rng: np.random.Generator, s: LongSettings, n: int, fps: int) -> list[Event]:
    count = int(rng.poisson(s.blinks_per_minute * n / fps / 60))
    out = []
    for _ in range(count):
        length = max(2, int(round(rng.uniform(0.1, 0.4) * fps)))
        start = int(rng.integers(0, max(1, n - length)))
        end = min(n - 1, start + length - 1)
        out.append(Event("blink", start, (start + end) // 2, end, amplitude=1.0))
    return out


def _head_turns(rng: np.random.Generator, s: LongSettings, n: int, fps: int) -> list[Event]:
    count = int(rng.poisson(s.head_turns_per_minute * n / fps / 60))
    out = []
    for _ in range(count):
        length = max(3, int(round(rng.uniform(0.3, 1.0) * fps)))
        start = int(rng.integers(0, max(1, n - length)))
        end = min(n - 1, start + length - 1)
        shift, angle = float(rng.uniform(3, 8)), float(rng.uniform(0, 2 * np.pi))
        out.append(Event("head_turn", start, end, end, amplitude=shift, direction=angle))
    return out


# ---------------------------------------------------------------------------------------------
# Rendering.


def _au_plan(action_units: str) -> ClipPlan:
    """A ClipPlan carrying only what au_field reads (the AUs, equal gains, no asymmetry)."""
    return ClipPlan(
        subject=1,
        index=1,
        subject_name="",
        clip="",
        path="",
        label=-1,
        emotion="",
        action_units=action_units,
        n_frames=1,
        first=0,
        onset=0,
        apex=0,
        offset=0,
        apex_annotated=True,
        amplitude=1.0,
        au_gains=(1.0,) * 8,
        drift=(0.0, 0.0),
        sway=0.0,
        flicker=(0.0, 0.0, 0.0),
        noise=0.0,
        blink_start=-1,
        blink_frames=0,
        blink_depth=0.0,
        model="au-mixture",
    )


def _profile(event: Event, n: int) -> np.ndarray:
    """0 outside the event, a raised-cosine rise to 1 at the apex and fall back by its end."""
    t = np.arange(n, dtype=np.float64)
    rise = 0.5 - 0.5 * np.cos(
        np.pi * np.clip((t - event.start) / max(event.apex - event.start, 1), 0, 1)
    )
    fall = 0.5 + 0.5 * np.cos(
        np.pi * np.clip((t - event.apex) / max(event.end - event.apex, 1), 0, 1)
    )
    out = np.where(t <= event.apex, rise, fall)
    out[(t < event.start) | (t > event.end)] = 0.0
    return out.astype(np.float32)


def render_video(
    face: Face, plan: VideoPlan, fps: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield the video's frames (H,W,3 uint8 BGR, or H,W for a grey face)."""
    h, w = face.lid.shape
    scale = float(np.sqrt(h * w / (REFERENCE_SIZE[0] * REFERENCE_SIZE[1])))
    n = plan.n_frames
    t = np.arange(n) / fps
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    moves = []  # (per-frame px, dx, dy) of each expression
    closure = np.zeros(n, np.float32)
    tx = np.zeros(n)
    ty = np.zeros(n)
    for e in plan.events:
        level = _profile(e, n)
        if e.kind in ("micro", "macro"):
            dx, dy = au_field(face.points, _au_plan(e.action_units), (h, w), face.morph)
            moves.append((level * e.amplitude * scale, dx, dy))
        elif e.kind == "blink":
            closure = np.maximum(closure, level)
        else:  # a head turn: moves and stays (the next turn may bring it back)
            ramp = np.clip((np.arange(n) - e.start) / max(e.end - e.start, 1), 0, 1)
            ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
            tx += ramp * e.amplitude * scale * np.cos(e.direction)
            ty += ramp * e.amplitude * scale * np.sin(e.direction)
    amp, period, phase, direction = plan.sway
    sway = amp * scale * np.sin(2 * np.pi * t / period + phase)
    tx += sway * np.cos(direction)
    ty += sway * np.sin(direction)
    degrees, period, phase = plan.roll
    roll = np.deg2rad(degrees * np.sin(2 * np.pi * t / period + phase))
    amp, freq, phase = plan.flicker
    gain = 1 + amp * np.sin(2 * np.pi * freq * t + phase)
    pivot = (w / 2, h * 1.05)
    px, py = gx - np.float32(pivot[0]), gy - np.float32(pivot[1])
    for i in range(n):
        src = face.open_eyes
        if closure[i] > 0.05:
            shut = face.lid < closure[i]
            src = np.where(shut[..., None] if src.ndim == 3 else shut, face.closed_eyes, src)
        ex = np.zeros((h, w), np.float32)
        ey = np.zeros((h, w), np.float32)
        for level, dx, dy in moves:
            if level[i]:
                ex += level[i] * dx
                ey += level[i] * dy
        map_x, map_y = head_maps(px, py, pivot, roll[i], tx[i], ty[i], ex, ey)
        frame = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        frame = frame * np.float32(gain[i])
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(plan.noise)
        np.clip(frame, 0, 255, out=frame)
        yield frame.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Writing and reading back.


def generate_long(
    out: str, preset: str = "casme_sq-like", *, mapper=None, **options
) -> LongVideoSet:
    """Write a synthetic long-video set under `out` (local path or s3:// URI) in its layout
    and return it as read back by the layout's adapter (`load_long`).

    A folder already holding a set made under the same settings is read back, not redrawn; one
    made under other settings is refused (ConfigError). `mapper(fn, calls)` returns
    [fn(*c) for c in calls], e.g. as Ray tasks (mer.datasets.stage.ray_map): videos render
    side by side. Bad options raise ConfigError.
    """
    s = long_settings(preset, **options)
    record = long_record(s)
    marker = storage.join(out, SETTINGS_FILE)
    if storage.exists(marker):
        if storage.read_json(marker) != record:
            raise ConfigError(
                f"{out} holds a synthetic long-video set made under other settings; write this "
                "one elsewhere"
            )
        return load_long(out)
    plans = plan_long(s)
    (mapper or _serial)(_render_video, [(s, p, out) for p in plans])
    if s.layout == "casme_sq":
        storage.write_bytes(storage.join(out, casme_sq.SHEET), _casme_sq_sheet(plans))
    else:
        storage.write_bytes(storage.join(out, samm_lv.SHEET), _samm_lv_sheet(plans))
    storage.write_bytes(storage.join(out, TRUTH_FILE), _truth_csv(plans))
    storage.write_json(marker, record)  # last: a set interrupted midway has no marker
    return load_long(out)


def long_key(preset: str = "casme_sq-like", **options) -> str:
    """A 16-hex-digit key of the settings (mer.layout.digest of `long_record`): name the
    folder of a set by it and a rerun under other settings never meets this one."""
    return layout.digest(long_record(long_settings(preset, **options)))


def _serial(fn, calls: list[tuple]) -> list:
    return [fn(*c) for c in calls]


def _face(s: LongSettings, subject: int) -> Face:
    """The subject's face, drawn from the seed and subject alone (every video the same)."""
    rng = np.random.default_rng([s.seed, subject, 1])
    face = draw_face(rng, s.size)
    face.morph = draw_morphology(rng, s.morphology) if s.morphology else {}
    if s.layout == "samm_lv":  # SAMM is filmed in grey
        face = replace(
            face,
            open_eyes=cv2.cvtColor(face.open_eyes, cv2.COLOR_BGR2GRAY),
            closed_eyes=cv2.cvtColor(face.closed_eyes, cv2.COLOR_BGR2GRAY),
        )
    return face


def _render_video(s: LongSettings, plan: VideoPlan, out: str) -> None:
    rng = np.random.default_rng([s.seed, plan.subject, plan.index, 11])
    _write_frames(out, s.layout, plan, render_video(_face(s, plan.subject), plan, s.rate, rng))


def _write_frames(out: str, layout: str, plan: VideoPlan, frames) -> None:
    if layout == "casme_sq":
        folder = storage.join(out, "rawpic", plan.subject_name, plan.video)
    else:
        folder = storage.join(out, "SAMM_longvideos", plan.video)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    for i, frame in enumerate(frames):
        number = i + 1
        name = f"img{number}.jpg" if layout == "casme_sq" else f"{plan.video}_{number:05d}.jpg"
        ok, buf = cv2.imencode(".jpg", frame, params)
        if not ok:
            raise RuntimeError("OpenCV could not encode a .jpg frame")
        storage.write_bytes(storage.join(folder, name), buf.tobytes())


def _expressions_of(plan: VideoPlan) -> list[Event]:
    return [e for e in plan.events if e.kind in ("micro", "macro")]


def _casme_sq_sheet(plans: list[VideoPlan]) -> bytes:
    """CAS(ME)^2code_final.xlsx as published: three sheets without header rows. The first
    (CASFEcode_final) has subject number, clip name (stimulus_k), onset, apex, offset, AUs,
    emotion (negative / positive / surprise / others), type (micro- or macro-expression) and
    a self-reported emotion; 'naming rule1' maps folder names to subject numbers; 'naming
    rule2' stimulus numbers to names."""
    rows = []
    for p in plans:
        for k, e in enumerate(_expressions_of(p), 1):
            rows.append(
                [
                    p.subject,
                    f"{p.clip_stem}_{k}",
                    e.start + 1,
                    e.apex + 1,
                    e.end + 1,
                    e.action_units,
                    CASME_SQ_WORDS[e.emotion],
                    f"{e.kind}-expression",
                    e.emotion,
                ]
            )
    subjects = sorted({(p.subject, p.subject_name) for p in plans})
    rule1 = [[i, name, number] for i, (number, name) in enumerate(subjects, 1)]
    rule2 = [[code, name, words] for code, name, words in STIMULI]
    return workbook([("CASFEcode_final", rows), ("naming rule1", rule1), ("naming rule2", rule2)])


def _samm_lv_sheet(plans: list[VideoPlan]) -> bytes:
    """SAMM_LongVideos_V1_Release.xlsx as published: rows of preamble, then the header
    Subject, Filename, Inducement Code, Onset, Apex, Offset, Duration, Type, Action Units,
    Notes; Filename is <video>_<k>, Type 'Micro - 1/2' or 'Macro'."""
    preamble = [["SAMM Long Videos synthetic look-alike (mer); not the SAMM-LV dataset"]]
    preamble += [[None]] * 8
    header = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset"]
    header += ["Duration", "Type", "Action Units", "Notes"]
    rows = []
    for p in plans:
        for k, e in enumerate(_expressions_of(p), 1):
            rows.append(
                [
                    p.subject_name,
                    f"{p.video}_{k}",
                    p.index,
                    e.start + 1,
                    e.apex + 1,
                    e.end + 1,
                    e.end - e.start + 1,
                    "Micro - 1/2" if e.kind == "micro" else "Macro",
                    e.action_units,
                    None,
                ]
            )
    return workbook([("FACS_Codes", [*preamble, header, *rows])])


TRUTH_COLUMNS = ["subject", "video", "kind", "onset", "apex", "offset", "emotion"]
TRUTH_COLUMNS += ["action_units", "amplitude"]


def _truth_csv(plans: list[VideoPlan]) -> bytes:
    """Every event with the layout's frame numbers (1-based, inclusive)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TRUTH_COLUMNS)
    for p in plans:
        for e in p.events:
            writer.writerow(
                [p.subject_name, p.video, e.kind, e.start + 1, e.apex + 1, e.end + 1]
                + [e.emotion, e.action_units, round(e.amplitude, 4)]
            )
    return buf.getvalue().encode("utf-8")


def long_record(s: LongSettings) -> dict:
    """The settings that determined a set, JSON-ready (long_synthetic.json holds them)."""
    out = {"version": VERSION, **asdict(s)}
    out["fps"] = s.rate
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def load_long(root: str) -> LongVideoSet:
    """A set written by `generate_long`, read back by its layout's adapter, as dataset
    "synthetic_long" (the videos, the sheet's intervals, the adapter's rejects)."""
    uri = storage.join(str(root), SETTINGS_FILE)
    if not storage.exists(uri):
        raise InputError(f"{root} holds no {SETTINGS_FILE}; is it a synthetic long-video set?")
    layout = storage.read_json(uri).get("layout")
    if layout == "casme_sq":
        found = casme_sq.load_long(root)
    elif layout == "samm_lv":
        found = samm_lv.load_long(root)
    else:
        raise InputError(f"{uri}: unknown layout {layout!r}; expected one of {LAYOUTS}")
    videos = [replace(v, dataset=DATASET) for v in found.videos]
    rejects = [{**r, "dataset": DATASET} for r in found.rejects]
    return LongVideoSet(videos, found.intervals, rejects)


def read_truth(root: str) -> list[dict]:
    """long_ground_truth.csv as dicts (frame numbers and amplitude as numbers)."""
    text = storage.read_bytes(storage.join(str(root), TRUTH_FILE)).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    for r in rows:
        for k in ("onset", "apex", "offset"):
            r[k] = int(r[k])
        r["amplitude"] = float(r["amplitude"])
    return rows
