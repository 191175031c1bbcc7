"""What each synthetic clip shows: emotion -> action-unit tables and clip plans (the options and
presets they follow: mer.datasets.synthetic.settings).

Two expression models:
- "templates" (v1, preset "simple"): one fixed action-unit template per class (negative
  AU4+15, positive AU12, surprise AU1+2(+26)), every subject shows every class. Two numbers,
  the motion energy of the upper and of the lower face, nearly tell the class.
- "au-mixture" (presets "demo", "casme2-like", "megc-like"): each class is a distribution
  over action-unit combinations, so the same facial regions move in every class and the
  class is in which movements combine and in their direction. Intensity runs from barely
  visible to clear, timing and profile shapes vary, subjects differ in face, expressivity,
  number of clips and class mix (some lack classes), and blinks, head drift and roll, and
  illumination changes happen in every class. Labels can be made noisy on purpose.

Where the tables come from:
- Emotion -> AU combinations: the criteria used to label CASME II (Yan et al., "CASME II: an
  improved spontaneous micro-expression database and the baseline evaluation", PLoS ONE 9(1)
  e86041, 2014: happiness AU6/AU12, disgust AU9/AU10/AU4+7, surprise AU1+2/AU25/AU2,
  repression AU15/AU17, fear AU1+4/AU20, sadness AU1/AU15/AU17), and SAMM's FACS coding and
  EMFACS-based emotion prototypes (Davison et al., "SAMM: a spontaneous micro-facial
  movement dataset", IEEE Trans. Affective Computing 9(1) 116-129, 2018; contempt is the
  one-sided AU12+AU14, anger AU4+AU7), with the AU groupings of Davison, Merghani & Yap,
  "Objective classes for micro-facial expression recognition", J. Imaging 4(10) 119, 2018.
  Which combinations we list, and every weight, are our own choice.
- Class and emotion counts: the MEGC2019 composite list (See et al., FG 2019): CASME II 145
  clips of 24 subjects (88/32/25 negative/positive/surprise), SAMM 133 of 28 (92/26/15;
  negative = anger 57, contempt 12, disgust 9, fear 8, sadness 6), SMIC-HS 164 of 16
  (70/51/43, 100 fps). CASME II's negative words are weighted 0.7 disgust / 0.3 repression
  (its 63 disgust and 27 repression clips); SMIC has no emotion words, so its negative
  clips draw from a mix of negative emotions (our choice).
- Our own choices, not measured values: intensity 0.3-3 px peak at 340 x 280 (uniform,
  times a per-subject expressivity), apex position, hold, profile powers, asymmetry, the
  Dirichlet concentrations that spread clips and classes over subjects, and every nuisance
  range (drift, roll, flicker, light gradient, noise, blinks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from mer.datasets import CLASSES_3
from mer.datasets.synthetic.settings import CLASS_APEX, CLASS_PRIOR, Settings, settings

# v1 ("templates"): CASME II 'Estimated Emotion' words per class.
EMOTION_WORDS = {0: ("disgust", "repression"), 1: ("happiness",), 2: ("surprise",)}
SMIC_ABBR = {0: "ne", 1: "po", 2: "sur"}  # SMIC-HS clip names: s1_ne_01, s1_po_02, s1_sur_01
MISSING_APEX = 0.10  # share of '/' ApexFrame cells (our choice; CASME II has a few)
BLINK_SHARE = 0.3  # share of clips with a blink (our choice)

# au-mixture: AU combinations per emotion, with weights (our choice; sources above). "L12" is
# AU12 on the image's left half only ("one-sided", as CASME II and SAMM code L/R).
EMOTION_AUS: dict[str, tuple[tuple[str, float], ...]] = {
    "happiness": (("12", 0.35), ("6+12", 0.30), ("L12", 0.1), ("R12", 0.1), ("6", 0.15)),
    "surprise": (("1+2", 0.30), ("1+2+5", 0.15), ("2", 0.10), ("25+26", 0.20), ("25", 0.10))
    + (("1+2+25", 0.15),),
    "disgust": (("9", 0.25), ("10", 0.25), ("4+7", 0.30), ("4+9", 0.20)),
    "repression": (("15+17", 0.40), ("17", 0.30), ("15", 0.30)),
    "anger": (("4+7", 0.55), ("4", 0.45)),
    "contempt": (("L14", 0.35), ("R14", 0.35), ("L12+L14", 0.15), ("R12+R14", 0.15)),
    "fear": (("20", 0.45), ("1+4", 0.35), ("1+2+4", 0.20)),
    "sadness": (("1+4", 0.35), ("15+17", 0.35), ("1+4+15", 0.30)),
}
# Emotion words per class in each source's vocabulary, with weights (sources above).
CLASS_EMOTIONS: dict[str, dict[int, tuple[tuple[str, float], ...]]] = {
    "casme2": {0: (("disgust", 0.7), ("repression", 0.3))},
    "samm": {
        0: (("anger", 57 / 92), ("contempt", 12 / 92), ("disgust", 9 / 92), ("fear", 8 / 92))
        + (("sadness", 6 / 92),)
    },
    "smic": {
        0: (("disgust", 0.3), ("sadness", 0.2), ("fear", 0.2), ("anger", 0.15))
        + (("repression", 0.15),)
    },
}
for _vocab in CLASS_EMOTIONS.values():
    _vocab.update({1: (("happiness", 1.0),), 2: (("surprise", 1.0),)})


@dataclass(frozen=True)
class ClipPlan:
    """Everything random about one clip except per-frame noise (drawn at render time).

    Frame positions (onset, apex, offset, blink_start) are 0-based indices into the clip;
    `first` is the number the layout gives to index 0. Lengths in px are at REFERENCE_SIZE.
    """

    subject: int  # 1-based, unique in the set (seeds the face)
    index: int  # 1-based within the subject
    subject_name: str  # as the manifest spells it (sub01, s01, 006)
    clip: str  # as the manifest spells it (EP02_01f, s01_ne_01, 006_1_2, clip01)
    path: str  # the clip's frame folder or video file, relative to the dataset root
    label: int  # the annotated class
    emotion: str  # the annotated emotion word (SMIC: its class folder)
    action_units: str  # CASME II style, e.g. "4+15", "L12+L14"
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
    # au-mixture; the defaults are what a v1 plan means.
    model: str = "templates"
    fps: int = 200
    dataset: str = ""  # megc2019: the source dataset (casme2 | samm | smic)
    true_label: int = -1  # the class the motion shows (differs from label under label noise)
    expressed: str = ""  # the emotion whose action units the clip shows
    asymmetry: float = 0.0  # bilateral AUs: left x (1 - a), right x (1 + a)
    hold: int = 0  # frames held at the apex
    rise_power: float = 1.0
    fall_power: float = 1.0
    roll: tuple[float, float] = (0.0, 0.0)  # degrees reached at the last frame, sway
    light: tuple[float, float] = (0.0, 0.0)  # gradient gain reached at the last frame, angle
    more_blinks: tuple[tuple[int, int, float], ...] = ()  # (start, frames, depth)
    layout: str = "casme2"  # the layout it is written in: casme2 | samm | smic | video
    # Test bed (docs/testbed.md). motion: the movement's own (onset, apex, offset) where it
    # differs from the annotated ones above (a short movement in a long annotated interval,
    # annotation jitter); () = the annotated ones. macro: a large expression outside the
    # micro-movement, (start, frames, amplitude px, action units); () = none.
    motion: tuple[int, int, int] = ()
    macro: tuple = ()

    @property
    def moves(self) -> tuple[int, int, int]:
        """(onset, apex, offset) of the movement itself."""
        return self.motion or (self.onset, self.apex, self.offset)


def plan_clips(
    preset: str = "simple", *, resolved: Settings | None = None, **options
) -> list[ClipPlan]:
    """Draw every clip's label, action units, timing and nuisances without rendering
    (settings(preset, **options), or `resolved` settings as they are)."""
    s = resolved or settings(preset, **options)
    return _plan_templates(s) if s.model == "templates" else _plan_mixture(s)


def _flips(seed: int, n: int, share: float) -> np.ndarray:
    """Per clip 0 (label kept) or 1/2 (class shifted by that much): exactly round(share x n)
    clips get another class, uniformly among the two others (own seed stream)."""
    out = np.zeros(n, np.int64)
    k = int(round(share * n))
    if k:
        rng = np.random.default_rng([seed, 3])
        out[rng.choice(n, size=k, replace=False)] = rng.integers(1, 3, size=k)
    return out


def _choose(rng: np.random.Generator, table: tuple[tuple[str, float], ...]) -> str:
    names, weights = zip(*table, strict=True)
    p = np.asarray(weights, float)
    return str(names[rng.choice(len(names), p=p / p.sum())])


# ---------------------------------------------------------------------------------------------
# v1: one template per class.


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


def _plan_templates(s: Settings) -> list[ClipPlan]:
    layout, fps = s.layout, s.fps
    lo, hi = s.frames
    rng = np.random.default_rng([s.seed, 0])
    flips = _flips(s.seed, s.subjects * s.clips_per_subject, s.label_noise)
    plans = []
    for subject in range(1, s.subjects + 1):
        labels = _subject_labels(rng, s.clips_per_subject)
        base = (subject - 1) * s.clips_per_subject
        said = (labels + flips[base : base + len(labels)]) % 3
        names = _clip_names(rng, layout, subject, said)
        for k, label in enumerate(labels, start=1):
            label, annotated = int(label), int(said[k - 1])
            subject_name, clip, path = names[k - 1]
            words = EMOTION_WORDS[annotated]
            emotion = str(rng.choice(words, p=[0.6, 0.4] if annotated == 0 else None))
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
            first = int(rng.integers(*FIRST_FRAME[layout]))
            blink_frames = max(3, int(round(rng.uniform(0.08, 0.15) * fps)))
            blink_start = int(rng.integers(0, n - 2))
            angle = rng.uniform(0, 2 * np.pi)
            drift = rng.uniform(0.5, 3.0)
            plans.append(
                ClipPlan(
                    subject=subject,
                    index=k,
                    subject_name=subject_name,
                    clip=clip,
                    path=path,
                    label=annotated,
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
                    fps=fps,
                    layout=layout,
                    true_label=label,
                    expressed=emotion if label == annotated else CLASSES_3[label],
                )
            )
    # Blinks appear in some clips of every class (where a class has two clips or more).
    for c in range(3):
        members = [i for i, p in enumerate(plans) if p.label == c]
        if len(members) >= 2 and all(plans[i].blink_start < 0 for i in members):
            p = plans[members[0]]
            plans[members[0]] = replace(p, blink_start=max(0, p.apex - p.blink_frames // 2))
    return plans


# Frame numbers start where the recording was cut (img46, 006_05562, image057180): the
# range the first number is drawn from, per layout.
FIRST_FRAME = {"casme2": (1, 200), "smic": (0, 900_000), "video": (0, 1), "samm": (1000, 9000)}


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
    if layout == "samm":
        # SAMM: <subject>_<inducement video>_<take>, e.g. 006_1_2, under SAMM/006/.
        inducements = sorted(rng.integers(1, 8, size=len(labels)))
        takes: dict[int, int] = {}
        out = []
        for code in inducements:
            takes[int(code)] = takes.get(int(code), 0) + 1
            clip = f"{s:03d}_{int(code)}_{takes[int(code)]}"
            out.append((f"{s:03d}", clip, f"SAMM/{s:03d}/{clip}"))
        return out
    return [
        (f"sub{s:02d}", f"clip{k:02d}", f"videos/sub{s:02d}/clip{k:02d}.mp4")
        for k in range(1, len(labels) + 1)
    ]


# ---------------------------------------------------------------------------------------------
# au-mixture: classes as distributions over action-unit combinations.

# Subject numbers the real datasets use (MEGC2019 list), drawn from when a source has fewer.
SUBJECT_NUMBERS = {"casme2": range(1, 27), "samm": range(6, 38), "smic": range(1, 21)}
FOLDERS = {"casme2": "CASME2", "samm": "SAMM", "smic": "SMIC"}  # megc2019 composite roots


@dataclass(frozen=True)
class _Source:
    name: str  # "" for a one-source set; else casme2 | samm | smic
    kind: str  # layout the clips are written in
    subjects: int
    class_counts: tuple[int, int, int]
    fps: int
    frames: tuple[int, int]


def _sources(s: Settings) -> list[_Source]:
    if s.layout != "megc2019":
        total = s.clips if s.clips is not None else s.subjects * s.clips_per_subject
        counts = _largest_remainder(total, s.class_shares)
        return [_Source("", s.layout, s.subjects, counts, s.fps, s.frames)]
    out = []
    for sub in s.subsets:
        # Clip lengths scale with the frame rate: a 100 fps clip has half the frames.
        lo = max(12, round(s.frames[0] * sub.fps / 200))
        hi = max(lo, round(s.frames[1] * sub.fps / 200))
        counts = tuple(int(c) for c in sub.class_counts)
        out.append(_Source(sub.name, sub.name, sub.subjects, counts, sub.fps, (lo, hi)))
    return out


def _largest_remainder(total: int, shares) -> tuple[int, int, int]:
    p = np.asarray(shares, float) / np.sum(shares)
    counts = np.floor(p * total).astype(int)
    order = np.argsort(-(p * total - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return tuple(int(c) for c in counts)


def _clip_counts(rng: np.random.Generator, subjects: int, total: int, spread: float) -> np.ndarray:
    """Clips per subject, at least one each: even, or Dirichlet(spread)-skewed as in the real
    sets (the MEGC2019 list: 1 to 39 clips per subject)."""
    if spread <= 0:
        return np.full(subjects, total // subjects) + (np.arange(subjects) < total % subjects)
    weights = rng.dirichlet(np.full(subjects, spread))
    return 1 + rng.multinomial(total - subjects, weights)


def _class_slots(
    rng: np.random.Generator, counts: np.ndarray, class_counts, concentration: float
) -> list[np.ndarray]:
    """Each subject's labels: the set's exact class counts, dealt so that every subject leans
    on its own Dirichlet class mix (small concentration: many subjects lack a class)."""
    shares = np.asarray(class_counts, float) / max(sum(class_counts), 1)
    owner = np.repeat(np.arange(len(counts)), counts)
    if concentration > 0:
        mix = rng.dirichlet(np.maximum(concentration * shares, 1e-3), size=len(counts))
    else:
        mix = np.tile(shares, (len(counts), 1))
    labels = rng.permutation(np.repeat(np.arange(3), class_counts))
    slot_label = np.full(len(owner), -1)
    for label in labels:
        free = slot_label < 0
        w = mix[owner, label] * free
        w = w if w.sum() > 0 else free.astype(float)
        slot_label[rng.choice(len(owner), p=w / w.sum())] = label
    return [slot_label[owner == k] for k in range(len(counts))]


def _plan_mixture(s: Settings) -> list[ClipPlan]:
    # Pass 1: who, how many clips, which true classes.
    people = []  # (source, subject number, true labels)
    for i, src in enumerate(_sources(s)):
        rng = np.random.default_rng([s.seed, 10, i])
        pool = SUBJECT_NUMBERS.get(src.name, range(1, src.subjects + 1))
        if len(pool) >= src.subjects and src.name:
            numbers = sorted(int(v) for v in rng.choice(pool, src.subjects, replace=False))
        else:
            numbers = list(range(1, src.subjects + 1))
        counts = _clip_counts(rng, src.subjects, sum(src.class_counts), s.clip_concentration)
        labels = _class_slots(rng, counts, src.class_counts, s.class_concentration)
        people += [(src, number, y) for number, y in zip(numbers, labels, strict=True)]
    flips = _flips(s.seed, sum(len(y) for *_, y in people), s.label_noise)
    # Pass 2: names, then every clip's own draws (one seed stream per clip).
    plans, done = [], 0
    for subject, (src, number, truth) in enumerate(people, start=1):
        rng = np.random.default_rng([s.seed, 12, subject])
        said = (truth + flips[done : done + len(truth)]) % 3
        done += len(truth)
        names = _clip_names(rng, src.kind, number, said)
        if src.name:
            prefix = FOLDERS[src.name]
            names = [(a, b, f"{prefix}/{path}") for a, b, path in names]
        factor = float(np.exp(rng.normal(0, s.expressivity)))
        for k, (true_label, label) in enumerate(zip(truth, said, strict=True), start=1):
            clip_rng = np.random.default_rng([s.seed, 11, subject, k])
            plans.append(
                _mixture_clip(
                    s, src, clip_rng, subject, k, names[k - 1], int(true_label), int(label), factor
                )
            )
    return plans


def _mixture_clip(
    s: Settings,
    src: _Source,
    rng: np.random.Generator,
    subject: int,
    k: int,
    name: tuple[str, str, str],
    true_label: int,
    label: int,
    factor: float,
) -> ClipPlan:
    vocab = src.name or ("smic" if src.kind == "smic" else "casme2")
    word = expressed = _choose(rng, CLASS_EMOTIONS[vocab][true_label])
    # Test-bed options draw only when set, so sets made without them keep their bytes.
    if s.au_choice == "class" and s.au_overlap and rng.random() < s.au_overlap:
        other = (true_label + int(rng.integers(1, 3))) % 3  # another class's movement
        expressed = _choose(rng, CLASS_EMOTIONS[vocab][other])
    aus = SHARED_AUS if s.au_choice == "shared" else _choose(rng, EMOTION_AUS[expressed])
    if src.kind == "smic":
        emotion = CLASSES_3[label]  # SMIC's class folder
    elif label == true_label:
        emotion = word  # the annotators' word for the class, whatever AUs it shows
    else:
        emotion = _choose(rng, CLASS_EMOTIONS[vocab][label])
    # Timing: apex early or late, a hold at the apex, rise and fall shaped apart.
    lo, hi = src.frames
    n = int(rng.integers(lo, hi + 1))
    if src.kind == "smic":
        onset, offset = 0, n - 1  # SMIC clips are cut to the expression itself
    else:
        margin = max(2, int(0.15 * n))
        onset = int(rng.integers(1, margin + 1))
        offset = n - 1 - int(rng.integers(1, margin + 1))
    # The movement: onset..offset, or a shorter window inside it (test bed: long clips).
    move_on, move_off = onset, offset
    if s.movement != (0, 0):
        length = min(int(rng.integers(s.movement[0], s.movement[1] + 1)), offset - onset)
        move_on = onset + int(rng.integers(0, offset - onset - length + 1))
        move_off = move_on + length
    span = move_off - move_on
    hold = int(round(span * rng.uniform(*s.hold)))
    share = s.apex_position if s.timing == "shared" else CLASS_APEX[true_label]
    top = move_on + max(1, int(round((span - hold) * rng.uniform(*share))))
    top = min(top, move_off - hold - 1)
    powers = np.exp(rng.uniform(*np.log(s.profile_power), size=2))
    motion: tuple[int, int, int] = ()
    apex = top + hold // 2
    if s.movement != (0, 0) or s.annotation_jitter:
        motion = (move_on, apex, move_off)
        if s.annotation_jitter:  # annotators disagree by a few frames
            j = s.annotation_jitter
            onset, apex, offset = (v + int(rng.integers(-j, j + 1)) for v in (onset, apex, offset))
            onset, offset = max(0, onset), min(n - 1, max(offset, onset + 2))
            apex = min(max(apex, onset + 1), offset - 1)
    # Intensity: uniform over the range, times the subject's expressivity, folded back into
    # the range at its ends.
    amplitude = _fold(rng.uniform(*s.amplitude) * factor, *s.amplitude)
    # Distractors.
    fps = src.fps
    blink_frames = max(3, int(round(rng.uniform(0.08, 0.15) * fps)))
    blink = rng.random() < s.blink_share
    blink_start = int(rng.integers(0, n - 2)) if blink else -1
    more = ()
    if blink and rng.random() < 0.25:
        more = ((int(rng.integers(0, n - 2)), blink_frames, float(rng.uniform(0.7, 1.0))),)
    angle = rng.uniform(0, 2 * np.pi)
    drift = rng.uniform(*s.drift)
    macro: tuple = ()
    if s.macro_share and rng.random() < s.macro_share:
        macro = _macro(rng, n, fps, motion or (onset, apex, offset))
    subject_name, clip, path = name
    return ClipPlan(
        subject=subject,
        index=k,
        subject_name=subject_name,
        clip=clip,
        path=path,
        label=label,
        emotion=emotion,
        action_units=aus,
        n_frames=n,
        first=int(rng.integers(*FIRST_FRAME[src.kind])),
        onset=onset,
        apex=apex,
        offset=offset,
        apex_annotated=src.kind != "smic" and bool(rng.random() >= s.missing_apex),
        amplitude=amplitude,
        au_gains=tuple(float(g) for g in rng.uniform(0.7, 1.3, size=len(aus.split("+")))),
        drift=(float(drift * np.cos(angle)), float(drift * np.sin(angle))),
        sway=float(rng.uniform(0.0, 0.5)),
        flicker=(
            float(rng.uniform(*s.flicker)),
            float(rng.uniform(1.0, 8.0)),
            float(rng.uniform(0, 2 * np.pi)),
        ),
        noise=float(rng.uniform(*s.noise)),
        blink_start=blink_start,
        blink_frames=blink_frames,
        blink_depth=float(rng.uniform(0.7, 1.0)),
        model="au-mixture",
        fps=fps,
        dataset=src.name,
        true_label=true_label,
        expressed=expressed,
        asymmetry=float(rng.uniform(-s.asymmetry, s.asymmetry)),
        hold=hold,
        rise_power=float(powers[0]),
        fall_power=float(powers[1]),
        roll=(float(rng.uniform(-s.roll, s.roll)), float(rng.uniform(-s.roll, s.roll) / 3)),
        light=(float(rng.uniform(0, s.light_change)), float(rng.uniform(0, 2 * np.pi))),
        more_blinks=more,
        layout=src.kind,
        motion=motion,
        macro=macro,
    )


# test bed, au_choice="shared": the one AU configuration every class shows (brows raised and
# lip corners pulled: upper and lower face both move).
SHARED_AUS = "1+2+12"
MACRO_AMPLITUDE = (4.0, 8.0)  # px at 340 x 280: a macro-expression, well above micro range


def _macro(rng: np.random.Generator, n: int, fps: int, moves: tuple[int, int, int]) -> tuple:
    """A macro-expression (0.15-0.4 s, any emotion's AUs, 4-8 px) before or after the
    micro-movement, where the clip has room for one; () where it has none."""
    frames = max(6, int(round(rng.uniform(0.15, 0.4) * fps)))
    before, after = moves[0], n - 1 - moves[2]
    emotion = _choose(rng, tuple((e, 1.0) for e in sorted(EMOTION_AUS)))
    aus = _choose(rng, EMOTION_AUS[emotion])
    amplitude = float(rng.uniform(*MACRO_AMPLITUDE))
    room = [(0, before), (moves[2] + 1, after)]
    room = [(a, b) for a, b in room if b >= 6]
    if not room:
        return ()
    a, b = room[int(rng.integers(0, len(room)))]
    frames = min(frames, b)
    start = a + int(rng.integers(0, b - frames + 1))
    return (start, frames, amplitude, aus)


def _fold(x: float, lo: float, hi: float) -> float:
    """x reflected back into [lo, hi] at its ends."""
    if hi <= lo:
        return lo
    period = 2 * (hi - lo)
    y = math.fmod(x - lo, period) % period
    return lo + (y if y <= hi - lo else period - y)
