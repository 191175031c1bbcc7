"""The synthetic generator's options: every setting (`Settings`), the presets ("simple",
"demo", "casme2-like", "megc-like", and the test bed's "dynamics", "scarce", "plentiful",
"imbalanced", "balanced", "long-clip", "realistic": docs/testbed.md), how options are checked, and what synthetic.json records.
What each clip then shows is drawn in mer.datasets.synthetic.plan; where the figures come
from is said there too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from mer.errors import ConfigError

# The generator's version, part of the data hash (mer.layout.data_settings).
VERSION = 2  # 2: presets and the au-mixture model; "simple" frames are v1's, byte for byte

REFERENCE_SIZE = (340, 280)  # height, width of a CASME II face crop: amplitudes are quoted here

LAYOUTS = ("casme2", "smic", "video", "megc2019")
MODELS = ("templates", "au-mixture")

# MEGC2019 composite class counts (negative, positive, surprise) = 250 / 109 / 83.
CLASS_PRIOR = np.array([250, 109, 83]) / 442
CASME2_SHARES = (88 / 145, 32 / 145, 25 / 145)  # the CASME II part of the MEGC2019 list


@dataclass(frozen=True)
class Subset:
    """One source dataset of a megc2019-layout set (written in that dataset's own layout)."""

    name: str  # casme2 | samm | smic
    subjects: int
    class_counts: tuple[int, int, int]  # clips per class: negative, positive, surprise
    fps: int
    grey: bool = False
    scale: tuple[float, float] = (1.0, 1.0)  # frame height, width relative to `size`


# The MEGC2019 composite's shape (See et al., FG 2019). Frame sizes relative to a CASME II
# crop (our choice): SAMM's faces are filmed larger, SMIC's smaller.
MEGC_SUBSETS = (
    Subset("casme2", 24, (88, 32, 25), 200),
    Subset("samm", 28, (92, 26, 15), 200, grey=True, scale=(1.2, 1.4)),
    Subset("smic", 16, (70, 51, 43), 100, scale=(0.7, 0.7)),
)


@dataclass(frozen=True)
class Settings:
    """Every option of the generator; synthetic.json records the ones that were used."""

    # Model and output.
    model: str = "templates"  # templates (v1) | au-mixture
    layout: str = "casme2"  # casme2 | smic | video | megc2019 (au-mixture only)
    seed: int = 0
    size: tuple[int, int] = REFERENCE_SIZE  # frame (height, width); megc2019: CASME II part
    frames: tuple[int, int] = (40, 100)  # clip length (min, max) at fps; megc2019: at 200 fps
    fps: int = 200
    # Subjects and clips (one source; megc2019 takes them from `subsets`).
    subjects: int = 8
    clips_per_subject: int = 6
    clips: int | None = None  # au-mixture: total clips; None = subjects x clips_per_subject
    clip_concentration: float = 0.0  # Dirichlet spread of clips over subjects; 0 = even
    class_shares: tuple[float, float, float] = tuple(float(p) for p in CLASS_PRIOR)
    class_concentration: float = 2.0  # Dirichlet spread of each subject's class mix
    subsets: tuple[Subset, ...] = ()  # megc2019 only
    label_noise: float = 0.0  # share of clips whose annotated class is another one
    missing_apex: float = 0.10  # share of sheet rows with no apex ('/', SAMM -1)
    # Expressions.
    amplitude: tuple[float, float] = (0.3, 3.0)  # peak displacement, px at 340 x 280
    expressivity: float = 0.25  # SD of a subject's log intensity factor
    apex_position: tuple[float, float] = (0.15, 0.6)  # share of onset..offset before the apex
    hold: tuple[float, float] = (0.0, 0.15)  # share of onset..offset held at the apex
    profile_power: tuple[float, float] = (0.6, 1.8)  # time warp of rise and fall
    asymmetry: float = 0.2  # left/right gain difference of bilateral AUs, at most
    # Distractors, in every class.
    blink_share: float = 0.35  # clips with a blink (a quarter of them blink twice)
    drift: tuple[float, float] = (0.2, 1.2)  # head translation by the last frame, px
    roll: float = 0.3  # head roll by the last frame, degrees at most
    flicker: tuple[float, float] = (0.005, 0.02)  # illumination gain amplitude
    light_change: float = 0.05  # light gradient across the face by the last frame, at most
    noise: tuple[float, float] = (1.0, 2.5)  # sensor noise SD, grey levels
    # Test-bed mechanisms (docs/testbed.md); the defaults leave them off, and a set made with
    # them off is byte for byte what it was before they existed.
    au_choice: str = "class"  # class: AUs follow the class | shared: drawn without the label
    au_overlap: float = 0.0  # share of clips showing the AUs of another class's emotion
    timing: str = "shared"  # shared: apex_position for all | class: CLASS_APEX by true class
    movement: tuple[int, int] = (0, 0)  # frames the movement lasts inside onset..offset; 0: all
    annotation_jitter: int = 0  # annotated onset / apex / offset off by up to this many frames
    morphology: float = 0.0  # identity-specific AU fields: place, size, gain and angle spread
    macro_share: float = 0.0  # clips with a large expression outside the micro-movement


# What the v1 templates model reads; the other options belong to au-mixture.
TEMPLATE_OPTIONS = ("model", "layout", "seed", "size", "frames", "fps", "subjects")
TEMPLATE_OPTIONS += ("clips_per_subject", "label_noise")
# What a megc2019 set takes from `subsets` instead.
SUBSET_OPTIONS = ("subjects", "clips_per_subject", "clips", "class_shares", "fps")

# CASME II's size and class shares: 26 subjects, 255 clips, unevenly spread over subjects.
_CASME2_SIZED = {
    "model": "au-mixture",
    "subjects": 26,
    "clips": 255,
    "clip_concentration": 1.0,
    "class_shares": CASME2_SHARES,
}
PRESETS: dict[str, dict] = {
    "simple": {},  # v1: what generate() wrote before presets existed
    "demo": {"model": "au-mixture", "subjects": 8, "clips_per_subject": 6},
    "casme2-like": {**_CASME2_SIZED},
    "megc-like": {
        "model": "au-mixture",
        "layout": "megc2019",
        "clip_concentration": 1.0,
        "subsets": MEGC_SUBSETS,
    },
}
# The test bed (docs/testbed.md): one mechanism per preset, and "realistic" with all at once.
# Apex position as a share of onset..offset per true class under timing="class": fast onset
# and slow offset, slow onset and fast offset, symmetric (with profile_power 1 the three give
# the same frames in another order; docs/testbed.md).
CLASS_APEX = ((0.12, 0.28), (0.72, 0.88), (0.42, 0.58))
EQUAL_SHARES = (1 / 3, 1 / 3, 1 / 3)
_POPULATION = {"model": "au-mixture", "subjects": 16, "class_shares": EQUAL_SHARES}
# Clear movements, little head motion, light or sensor noise and no blinks: what a preset
# studying time alone needs (dynamics), and what lets the motion curve see a short movement
# (long-clip).
CLEAN_NUISANCES = {
    "amplitude": (3.0, 5.0),
    "drift": (0.1, 0.4),
    "roll": 0.1,
    "blink_share": 0.0,
    "flicker": (0.002, 0.005),
    "light_change": 0.0,
    "noise": (0.5, 1.0),
}
PRESETS.update(
    {
        "dynamics": {
            **_POPULATION,
            "clips_per_subject": 12,
            "class_concentration": 0.0,
            "au_choice": "shared",
            "timing": "class",
            "profile_power": (1.0, 1.0),
            **CLEAN_NUISANCES,  # the mechanism here is time alone, not size or nuisances
            "missing_apex": 0.0,
        },
        "scarce": {**_POPULATION, "clips_per_subject": 3, "class_concentration": 0.0},
        "plentiful": {**_POPULATION, "clips_per_subject": 18, "class_concentration": 0.0},
        "imbalanced": {**_CASME2_SIZED},
        "balanced": {**_CASME2_SIZED, "class_shares": EQUAL_SHARES},
        # A 60 fps camera: a 0.13-0.2 s movement is 8-12 frames inside a 40-60 frame
        # annotated interval, so K = 32 adaptive key frames crowd onto it and many fall
        # between two frames. At 200 fps (20-40 frame movements in 160-240 frames) none did,
        # at any K up to 32 (docs/testbed.md, "Why long-clip had no between-frame key frames").
        # Clean nuisances as in dynamics: the motion curve must see the movement.
        "long-clip": {
            **_POPULATION,
            "clips_per_subject": 9,
            "fps": 60,
            "frames": (40, 60),
            "movement": (8, 12),
            "annotation_jitter": 2,
            **CLEAN_NUISANCES,
        },
        "realistic": {
            **_CASME2_SIZED,
            "layout": "video",
            "frames": (80, 160),
            "movement": (20, 50),
            "au_overlap": 0.3,
            "timing": "class",
            "morphology": 0.3,
            "amplitude": (0.3, 1.5),
            "drift": (0.5, 3.0),
            "roll": 1.0,
            "blink_share": 0.5,
            "macro_share": 0.3,
            "flicker": (0.01, 0.03),
            "light_change": 0.15,
            "noise": (2.0, 4.0),
            "annotation_jitter": 3,
            "label_noise": 0.1,
        },
    }
)
OPTIONS = tuple(f.name for f in fields(Settings))


def settings(preset: str = "simple", **options) -> Settings:
    """The preset's settings with `options` (any Settings field) on top, checked."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset {preset!r}; expected one of {list(PRESETS)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"unknown synthetic option(s) {unknown}; known: {', '.join(OPTIONS)}")
    values = {**PRESETS[preset], **options}
    values = {k: _plain(k, v) for k, v in values.items()}
    s = Settings(**values)
    if s.model not in MODELS:
        raise ConfigError(f"unknown synthetic model {s.model!r}; expected one of {MODELS}")
    if s.model == "templates":
        extra = sorted(set(values) - set(TEMPLATE_OPTIONS))
        if extra or s.layout == "megc2019":
            raise ConfigError(
                f"option(s) {extra or ['layout=megc2019']} need model 'au-mixture'; pass a "
                "preset such as 'casme2-like' or model='au-mixture'"
            )
    _check(s, set(options))
    return s


def _plain(name: str, value):
    """Lists (YAML, JSON) become tuples and numbers take the default's type, so that equal
    settings compare and record equal (2 and 2.0 would hash apart)."""
    if name == "subsets":
        return tuple(
            v if isinstance(v, Subset) else Subset(**{**v, **_tuples(v)}) for v in value or ()
        )
    default = Settings.__dataclass_fields__[name].default
    if isinstance(default, tuple) and default:
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ConfigError(f"{name}={value!r}: expected {len(default)} values like {default}")
        return tuple(type(d)(v) for d, v in zip(default, value, strict=True))
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    return value


def _tuples(d: dict) -> dict:
    return {k: tuple(v) for k, v in d.items() if isinstance(v, list)}


def _check(s: Settings, given: set[str]) -> None:
    if s.layout not in LAYOUTS:
        raise ConfigError(f"unknown synthetic layout {s.layout!r}; expected one of {LAYOUTS}")
    h, w = s.size
    if h < 32 or w < 32:
        raise ConfigError(f"size={s.size!r}: frames must be at least 32 x 32 px to hold a face")
    if s.fps < 1:
        raise ConfigError(f"fps={s.fps!r}: must be a positive frame rate")
    lo, hi = s.frames
    if not 12 <= lo <= hi:
        raise ConfigError(
            f"frames={s.frames!r}: need 12 <= min <= max (a clip needs a rise and fall)"
        )
    if s.subjects < 1 or s.clips_per_subject < 1:
        raise ConfigError("subjects and clips_per_subject must be at least 1")
    if s.clips is not None and s.clips < s.subjects:
        raise ConfigError(f"clips={s.clips}: need at least one clip per subject ({s.subjects})")
    if not 0 <= s.label_noise <= 1 or not 0 <= s.missing_apex <= 1:
        raise ConfigError("label_noise and missing_apex are shares: 0..1")
    if not 0 < s.amplitude[0] <= s.amplitude[1]:
        raise ConfigError(f"amplitude={s.amplitude!r}: need 0 < min <= max (px)")
    if s.au_choice not in ("class", "shared") or s.timing not in ("shared", "class"):
        raise ConfigError(
            f"au_choice={s.au_choice!r}, timing={s.timing!r}: expected au_choice class|shared "
            "and timing shared|class"
        )
    lo, hi = s.movement
    if (lo, hi) != (0, 0) and not 8 <= lo <= hi <= s.frames[0] * 0.7:
        raise ConfigError(
            f"movement={s.movement!r}: need 8 <= min <= max <= 0.7 x the shortest clip "
            f"({s.frames[0]} frames), or (0, 0)"
        )
    for name in ("au_overlap", "macro_share"):
        if not 0 <= getattr(s, name) <= 1:
            raise ConfigError(f"{name}={getattr(s, name)!r}: a share, 0..1")
    if s.annotation_jitter < 0 or s.morphology < 0:
        raise ConfigError("annotation_jitter and morphology must be >= 0")
    if min(s.class_shares) < 0 or sum(s.class_shares) <= 0:
        raise ConfigError(f"class_shares={s.class_shares!r}: three non-negative shares")
    if s.layout == "megc2019":
        if not s.subsets:
            raise ConfigError("layout megc2019 needs subsets (the megc-like preset has them)")
        clash = sorted(given & set(SUBSET_OPTIONS))
        if clash:
            raise ConfigError(f"layout megc2019 takes {clash} from subsets=; pass subsets")
        for sub in s.subsets:
            if sub.name not in ("casme2", "samm", "smic") or sub.subjects < 1:
                raise ConfigError(f"subset {sub}: name casme2|samm|smic, subjects >= 1")
            if sum(sub.class_counts) < sub.subjects:
                raise ConfigError(f"subset {sub.name}: fewer clips than subjects")
    elif s.subsets:
        raise ConfigError("subsets= is for layout megc2019 only")


# Options added with the test bed: left out of a record (and of a data hash) at their
# defaults, so that sets made before they existed keep their records and keys.
TESTBED_OPTIONS = (
    "au_choice",
    "au_overlap",
    "timing",
    "movement",
    "annotation_jitter",
    "morphology",
    "macro_share",
)


def without_unused(values: dict) -> dict:
    """`values` (asdict of Settings) less the test-bed options left at their defaults."""
    defaults = Settings()
    return {
        k: v
        for k, v in values.items()
        if k not in TESTBED_OPTIONS or tuple_or(v) != tuple_or(getattr(defaults, k))
    }


def tuple_or(v):
    return tuple(v) if isinstance(v, list) else v


def record(s: Settings) -> dict:
    """The settings that determined the output, JSON-ready (synthetic.json holds them)."""
    out = without_unused(asdict(s))
    if s.model == "templates":
        out = {k: out[k] for k in TEMPLATE_OPTIONS}
    elif s.layout == "megc2019":
        out = {k: v for k, v in out.items() if k not in SUBSET_OPTIONS}
    else:
        out.pop("subsets")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
