"""Synthetic faces and their motion: procedural faces, action-unit displacement fields, rendering.

The drawing half of `mer.datasets.synthetic.generator` (`synthetic_plan` decides what each clip shows,
`synthetic` writes dataset layouts). Each subject's face is drawn once; each frame warps it
with the clip's AU field at the intensity of its onset -> apex -> offset profile, plus
nuisances: sensor noise, head drift and roll, illumination flicker and gradient, blinks.
Everything here is our construction for testing, not a model of real faces; the AU motion
directions paraphrase the FACS descriptions (Ekman, Friesen & Hager, FACS manual, 2002).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from mer.datasets.synthetic.plan import ClipPlan
from mer.datasets.synthetic.settings import REFERENCE_SIZE

# ---------------------------------------------------------------------------------------------
# Faces: drawn once per subject.


@dataclass
class Face:
    open_eyes: np.ndarray  # H,W,3 float32 BGR (H,W for a grey face)
    closed_eyes: np.ndarray  # same face with both eyelids shut
    lid: np.ndarray  # H,W float32: 0 at the top of an eye opening, 1 at its bottom, 9 outside
    points: dict[str, tuple[float, float]]  # landmarks (x, y) in px
    split: float = 0.0  # row between eyes and nostrils: upper face above, lower face below
    # Identity-specific AU morphology (test bed): (AU, landmark) -> (shift x, shift y as a
    # share of the bump's radius, radius factor, gain factor, direction turn in radians).
    morph: dict = field(default_factory=dict)


def draw_morphology(rng: np.random.Generator, spread: float) -> dict:
    """One subject's AU morphology: every bump moved by up to `spread` of its radius, its
    radius and gain scaled by exp(N(0, spread)), its direction turned by N(0, spread) rad."""
    out = {}
    for au in sorted(AU_BUMPS, key=int):
        for landmark, _, _ in AU_BUMPS[au]:
            shift = rng.uniform(-spread, spread, 2)
            size, gain, turn = np.exp(rng.normal(0, spread, 2)).tolist() + [rng.normal(0, spread)]
            out[(au, landmark)] = (float(shift[0]), float(shift[1]), size, gain, float(turn))
    return out


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-ish noise with features about `cell` px across (cubic upsampling)."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _ellipse_mask(h: int, w: int, center, axes) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    c = (int(round(center[0] * 16)), int(round(center[1] * 16)))
    a = (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16))))
    cv2.ellipse(m, c, a, 0, 0, 360, 255, -1, cv2.LINE_AA, shift=4)
    return m.astype(np.float32) / 255


def _paint(img: np.ndarray, mask: np.ndarray, color) -> None:
    """Alpha-blend a colour into img where mask (0..1) is set."""
    img += mask[..., None] * (np.asarray(color, np.float32) - img)


def _poly_mask(h: int, w: int, pts: np.ndarray, thickness: float = 0.0) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    p = np.round(np.asarray(pts) * 16).astype(np.int32).reshape(-1, 1, 2)
    if thickness > 0:
        t = max(1, int(round(thickness)))
        cv2.polylines(m, [p], False, 255, t, cv2.LINE_AA, shift=4)
    else:
        cv2.fillPoly(m, [p], 255, cv2.LINE_AA, shift=4)
    return m.astype(np.float32) / 255


def _arc(x0: float, x1: float, y: float, bend: float, n: int = 12) -> np.ndarray:
    """Points of a parabola from (x0, y) to (x1, y) bulging by `bend` (negative: upwards)."""
    t = np.linspace(0, 1, n)
    return np.stack([x0 + (x1 - x0) * t, y + bend * 4 * t * (1 - t)], axis=1)


def draw_face(rng: np.random.Generator, size: tuple[int, int]) -> Face:
    """Draw one subject: head shape, skin tone, features and texture all vary with rng."""
    h, w = size
    s = np.sqrt(h * w / (REFERENCE_SIZE[0] * REFERENCE_SIZE[1]))
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    # Background: a dim, slightly graded wall.
    bg = rng.uniform(25, 90) + rng.uniform(-15, 15) * (yy / h - 0.5)
    img = np.repeat((np.ones((h, w), np.float32) * bg)[..., None], 3, axis=2)
    img += rng.uniform(-8, 8, size=3).astype(np.float32)

    # Head and skin.
    cx, cy = w * (0.5 + rng.uniform(-0.02, 0.02)), h * (0.54 + rng.uniform(-0.015, 0.015))
    ax, ay = w * rng.uniform(0.37, 0.44), h * rng.uniform(0.40, 0.46)
    light = rng.uniform(0.45, 0.95)
    skin = np.array([0.60, 0.74, 0.95]) * 255 * light + rng.uniform(-8, 8, 3)
    hair = rng.uniform(10, 70) * np.array([1.0, 1.05, 1.15]) * rng.uniform(0.8, 1.2, 3)
    # Hair: a cap a little larger than the head, down to a hairline that curves lower at the
    # temples; its edge is softened so it moves smoothly under sub-pixel warps.
    hair_mask = _ellipse_mask(h, w, (cx, cy - ay * 0.06), (ax * 1.07, ay * 1.05))
    hairline = cy - ay * (rng.uniform(0.5, 0.65) - rng.uniform(0.2, 0.45) * ((xx - cx) / ax) ** 2)
    edge = max(1.0, 2.0 * s)
    hair_mask *= np.clip((hairline - yy) / edge + 0.5, 0, 1)
    face_mask = _ellipse_mask(h, w, (cx, cy), (ax, ay))
    r2 = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
    shade = 1.0 - 0.22 * np.clip(r2, 0, 1) ** 1.5  # rounder look: darker towards the rim
    texture = (
        1.0 + 0.04 * _smooth_noise(rng, h, w, 24 * s) + 0.015 * _smooth_noise(rng, h, w, 4 * s)
    )
    skin_img = skin[None, None, :].astype(np.float32) * (shade * texture)[..., None]
    img += face_mask[..., None] * (skin_img - img)
    hair_img = (
        hair[None, None, :].astype(np.float32)
        * (1 + 0.08 * _smooth_noise(rng, h, w, 3 * s))[..., None]
    )
    img += hair_mask[..., None] * (hair_img - img)

    # Eyes, brows, nose, mouth: placement jittered per subject, by a few percent of the crop
    # (face crops are aligned on the eyes, so features move less than the face outline).
    ey = cy - h * rng.uniform(0.06, 0.09)
    ex = w * rng.uniform(0.15, 0.18)
    ew = w * rng.uniform(0.055, 0.07)
    eh = ew * rng.uniform(0.38, 0.5)
    brow_gap = eh * rng.uniform(1.9, 2.5)
    brow_t = h * rng.uniform(0.018, 0.028)
    brow_len = ew * rng.uniform(2.1, 2.6)
    iris = rng.uniform(20, 90) * rng.uniform(0.6, 1.4, 3)
    my = cy + h * rng.uniform(0.19, 0.22)
    mw = w * rng.uniform(0.09, 0.12)
    lip_h = h * rng.uniform(0.012, 0.02)
    ny = ey + (my - ey) * rng.uniform(0.55, 0.65)
    lips = skin * np.array([0.75, 0.7, 1.0]) * rng.uniform(0.8, 0.95)

    points: dict[str, tuple[float, float]] = {}
    lid = np.full((h, w), 9.0, np.float32)
    eye_regions = []
    for side, name in ((-1, "l"), (1, "r")):
        x = cx + side * ex
        inner, outer = x - side * brow_len * 0.45, x + side * brow_len * 0.55
        by = ey - brow_gap
        pts = _arc(inner, outer, by, -brow_t * rng.uniform(0.5, 1.5))
        pts[:, 1] += np.linspace(0, rng.uniform(-0.5, 0.8) * brow_t, len(pts))  # brow slant
        _paint(img, 0.85 * _poly_mask(h, w, pts, brow_t), hair)
        points[f"brow_inner_{name}"] = tuple(pts[1])
        points[f"brow_mid_{name}"] = tuple(pts[len(pts) // 2])
        points[f"brow_outer_{name}"] = tuple(pts[-2])
        eye_regions.append(((x, ey), (ew, eh)))
        points[f"eye_{name}"] = (x, ey)
        points[f"lid_upper_{name}"] = (x, ey - eh)
        points[f"lid_lower_{name}"] = (x, ey + eh)
        points[f"cheek_{name}"] = (x + side * ew * 0.3, ey + eh * 2.6)
        points[f"nose_wing_{name}"] = (cx + side * w * 0.03, ny)
        inside = _ellipse_mask(h, w, (x, ey), (ew, eh)) > 0.5
        lid = np.where(inside, (yy - (ey - eh)) / (2 * eh), lid).astype(np.float32)
    closed = img.copy()
    for (x, y), (a, b) in eye_regions:
        socket_ = _ellipse_mask(h, w, (x, y), (a * 1.25, b * 1.6))
        _paint(img, 0.25 * socket_, skin * 0.8)
        _paint(closed, 0.25 * socket_, skin * 0.8)
        _paint(img, _ellipse_mask(h, w, (x, y), (a, b)), (215, 220, 225))
        _paint(img, _ellipse_mask(h, w, (x, y), (b * 0.85, b * 0.85)), iris)
        _paint(img, _ellipse_mask(h, w, (x, y), (b * 0.4, b * 0.4)), (10, 10, 10))
        lash = _arc(x - a, x + a, y, -b * 1.1)
        _paint(img, 0.9 * _poly_mask(h, w, lash, max(1.0, 1.5 * s)), hair * 0.6)
        _paint(closed, _ellipse_mask(h, w, (x, y), (a, b)), skin * 0.9)
        shut = _arc(x - a, x + a, y + b * 0.3, b * 0.5)
        _paint(closed, 0.9 * _poly_mask(h, w, shut, max(1.0, 1.5 * s)), hair * 0.6)

    for target in (img, closed):
        nose = np.array([[cx - w * 0.01, ey + eh], [cx - w * 0.035, ny]])
        _paint(target, 0.35 * _poly_mask(h, w, nose, 2 * s), skin * 0.7)
        for side in (-1, 1):
            nostril = _ellipse_mask(h, w, (cx + side * w * 0.03, ny), (w * 0.014, h * 0.007))
            _paint(target, 0.7 * nostril, skin * 0.45)
        upper = np.concatenate(
            [_arc(cx - mw, cx + mw, my, -lip_h * 0.6), _arc(cx + mw, cx - mw, my - lip_h, 0)[1:-1]]
        )
        lower = np.concatenate(
            [_arc(cx - mw, cx + mw, my, 0), _arc(cx + mw, cx - mw, my, lip_h * 2.2)[1:-1]]
        )
        _paint(target, _poly_mask(h, w, upper), lips)
        _paint(target, _poly_mask(h, w, lower), lips * 1.05)
        _paint(
            target, 0.8 * _poly_mask(h, w, _arc(cx - mw, cx + mw, my, lip_h * 0.3), s), lips * 0.4
        )
    points.update(
        mouth_l=(cx - mw, my),
        mouth_r=(cx + mw, my),
        lip_lower=(cx, my + lip_h * 1.6),
        upper_lip=(cx, my - lip_h),
        nose_root=(cx, ey),
        chin=(cx, cy + ay * 0.85),
    )
    blur = 0.5 * max(s, 0.5)
    img = cv2.GaussianBlur(img, (0, 0), blur)
    closed = cv2.GaussianBlur(closed, (0, 0), blur)
    return Face(img, closed, lid, points, split=float((ey + ny) / 2))


def vary_face(face: Face, rng: np.random.Generator, *, grey: bool = False) -> Face:
    """The same face zoomed and shifted a little in its crop (crops are never aligned
    exactly; our choice: zoom 0.92-1.08, shift up to 3 % of the crop), grey if asked."""
    h, w = face.lid.shape
    zoom = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-0.03, 0.03, 2) * (w, h)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, zoom)
    m[:, 2] += shift
    warp = dict(dsize=(w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    images = [cv2.warpAffine(im, m, **warp) for im in (face.open_eyes, face.closed_eyes)]
    if grey:
        images = [cv2.cvtColor(im, cv2.COLOR_BGR2GRAY) for im in images]
    lid = cv2.warpAffine(
        face.lid, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=9
    )
    points = {k: tuple(float(v) for v in m @ (x, y, 1.0)) for k, (x, y) in face.points.items()}
    split = float((m @ (w / 2, face.split, 1.0))[1])
    return Face(images[0], images[1], lid, points, split)


# ---------------------------------------------------------------------------------------------
# Motion: action-unit displacement fields, intensity profile, nuisances.

# Local displacement bumps per AU: (landmark, direction (outwards, down), radius as a share of
# the face width). "Outwards" is away from the face's midline, mirrored per side. Directions
# follow the FACS descriptions in the image plane (our reconstruction): AU1/AU2 raise the
# inner/outer brows, AU4 pulls them down and together, AU5 raises the upper lid, AU6 lifts
# the cheek and lower lid, AU7 tightens the lids, AU9 wrinkles the nose (wings up, inner brows
# down), AU10 raises the upper lip, AU12 pulls the lip corners up and out, AU14
# tightens them inwards, AU15 pulls them down, AU17 pushes chin and lower lip up, AU20
# stretches the lips sideways, AU25 parts the lips, AU26 drops the jaw. Midline landmarks
# (nose_root, upper_lip, lip_lower, chin) get one bump. The first six are the v1 templates.
AU_BUMPS: dict[str, list[tuple[str, tuple[float, float], float]]] = {
    "1": [("brow_inner", (0.0, -1.0), 0.06), ("brow_mid", (0.0, -0.6), 0.05)],
    "2": [("brow_outer", (0.0, -1.0), 0.06), ("brow_mid", (0.0, -0.5), 0.05)],
    "4": [("brow_inner", (-0.6, 1.0), 0.06), ("brow_mid", (-0.3, 0.8), 0.05)],
    "12": [("mouth", (0.8, -0.7), 0.06)],
    "15": [("mouth", (0.2, 1.0), 0.055)],
    "26": [("chin", (0.0, 0.7), 0.16), ("lip_lower", (0.0, 0.5), 0.06)],
    "5": [("lid_upper", (0.0, -1.0), 0.035)],
    "6": [("cheek", (-0.2, -1.0), 0.07), ("lid_lower", (0.0, -0.5), 0.035)],
    "7": [("lid_lower", (0.0, -1.0), 0.03), ("lid_upper", (0.0, 0.4), 0.03)],
    "9": [
        ("nose_wing", (-0.3, -1.0), 0.04),
        ("nose_root", (0.0, -0.3), 0.04),
        ("brow_inner", (-0.5, 0.5), 0.05),
    ],
    "10": [("upper_lip", (0.0, -1.0), 0.05), ("nose_wing", (0.0, -0.4), 0.035)],
    "14": [("mouth", (-0.9, -0.15), 0.045)],
    "17": [("chin", (0.0, -1.0), 0.09), ("lip_lower", (0.0, -0.6), 0.05)],
    "20": [("mouth", (1.0, 0.15), 0.055)],
    "25": [("lip_lower", (0.0, 1.0), 0.04), ("upper_lip", (0.0, -0.3), 0.035)],
}
SIDES = {"": (-1, 1), "L": (-1,), "R": (1,)}  # L, R: the image's left or right half only


def parse_aus(action_units: str) -> list[tuple[str, str]]:
    """("L", "12") pairs of an AU string such as "6+12" or "L12+L14" (side "" = both)."""
    out = []
    for token in action_units.split("+"):
        side, au = (token[0], token[1:]) if token[:1] in ("L", "R") else ("", token)
        if au not in AU_BUMPS:
            raise ValueError(f"action unit {token!r} has no displacement field here")
        out.append((side, au))
    return out


def au_field(
    points: dict[str, tuple[float, float]],
    plan: ClipPlan,
    shape: tuple[int, int],
    morph: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Displacement (dx, dy) in px of the clip's AUs at full intensity, peak length 1.

    Bilateral AUs are stronger on one side by `plan.asymmetry` (0.1: left x0.9, right x1.1).
    `morph` (Face.morph) moves, sizes, scales and turns each bump for one subject.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx = np.zeros((h, w), np.float32)
    dy = np.zeros((h, w), np.float32)
    side_gain = {0: 1.0, -1: 1.0 - plan.asymmetry, 1: 1.0 + plan.asymmetry}
    for (only, au), gain in zip(parse_aus(plan.action_units), plan.au_gains, strict=False):
        for landmark, (out, down), radius in AU_BUMPS[au]:
            sides = (
                ((0, landmark),)
                if landmark in points
                else tuple((k, f"{landmark}_{'l' if k < 0 else 'r'}") for k in SIDES[only])
            )
            shift_x, shift_y, size, own, turn = (morph or {}).get((au, landmark), (0, 0, 1, 1, 0))
            c, s = np.cos(turn), np.sin(turn)
            for side, name in sides:
                x, y = points[name]
                r = radius * w
                x, y, r = x + shift_x * r * (side or 1), y + shift_y * r, r * size
                g = gain * own * side_gain[side if not only else 0]
                g = g * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * r * r))
                ox, oy = out * side, down
                if turn:
                    ox, oy = c * ox - s * oy * (side or 1), s * ox * (side or 1) + c * oy
                dx += g * ox
                dy += g * oy
    peak = float(np.sqrt(dx * dx + dy * dy).max())
    return dx / max(peak, 1e-6), dy / max(peak, 1e-6)


def intensity(plan: ClipPlan) -> np.ndarray:
    """Expression intensity per frame: 0 outside onset..offset, raised-cosine rise to 1 at
    the apex, `plan.hold` frames held there (centred on the apex), and a fall back to 0 at
    the offset (smooth at both ends). rise_power / fall_power warp the time of each half:
    above 1 a slow start, below 1 a sudden one (asymmetric profiles; our choice)."""
    t = np.arange(plan.n_frames, dtype=np.float64)
    onset, apex, offset = plan.moves  # the movement's own (test bed: not the annotated ones)
    top0 = apex - plan.hold // 2
    top1 = top0 + plan.hold
    rise = 0.5 - 0.5 * np.cos(_phase(t, onset, top0, plan.rise_power))
    fall = 0.5 + 0.5 * np.cos(_phase(t, top1, offset, plan.fall_power))
    out = np.where(t <= top0, rise, np.where(t <= top1, 1.0, fall))
    out[(t <= onset) | (t >= offset)] = 0.0
    return out.astype(np.float32)


def macro_level(plan: ClipPlan, n: int) -> np.ndarray:
    """The macro-expression distractor's displacement per frame, px at REFERENCE_SIZE: a
    raised-cosine bump over its frames (zeros where the plan has none)."""
    out = np.zeros(n, np.float32)
    if plan.macro:
        start, frames, amplitude, _ = plan.macro
        k = (np.arange(n) - start) / max(frames, 1)
        inside = (k >= 0) & (k <= 1)
        out[inside] = amplitude * np.sin(np.pi * k[inside]) ** 2
    return out


def _phase(t: np.ndarray, start: int, stop: int, power: float) -> np.ndarray:
    if power == 1:  # v1's exact arithmetic, so that v1 clips keep their bytes
        return np.pi * (t - start) / max(stop - start, 1)
    return np.pi * np.clip((t - start) / max(stop - start, 1), 0, 1) ** power


def region_energy(face: Face, plan: ClipPlan, field: tuple[np.ndarray, np.ndarray]):
    """(upper, lower): mean squared AU displacement at the apex over the rows above and below
    `face.split`, in px^2 at REFERENCE_SIZE. The generator's own ground truth of where the
    face moves, nuisances excluded (the 'oracle region energy' baseline reads it)."""
    dx, dy = field
    squared = (dx * dx + dy * dy) * np.float32(plan.amplitude**2)
    row = int(np.clip(round(face.split), 1, squared.shape[0] - 1))
    return float(squared[:row].mean()), float(squared[row:].mean())


def _noise_table(sigma: float) -> np.ndarray:
    """Gaussian sensor noise as a 256-entry lookup (inverse CDF at the byte's mid-quantile),
    read with cv2.LUT from random bytes: several times cheaper than sampling floats."""
    from statistics import NormalDist

    q = [NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)]
    table = np.asarray(q, np.float64)
    return (table / table.std() * sigma + 0.5).astype(np.float32).reshape(1, 256)


def head_maps(px, py, pivot, roll, tx, ty, ex, ey) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap's (map_x, map_y) for a head rolled by `roll` radians about `pivot` and moved
    by (tx, ty), less the expression's displacement (ex, ey): each pixel samples the face at
    the point they brought there. (px, py): the pixel grid less the pivot (float32)."""
    c, s = np.float32(np.cos(roll)), np.float32(np.sin(roll))
    ox = np.float32(pivot[0] - c * tx - s * ty)
    oy = np.float32(pivot[1] + s * tx - c * ty)
    return c * px + s * py + ox - ex, c * py - s * px + oy - ey


def render_clip(
    face: Face,
    plan: ClipPlan,
    *,
    fps: int,
    rng: np.random.Generator,
    field: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the clip's frames (H,W,3 uint8 BGR, or H,W for a grey face): the face warped by
    the AU field (`field`, else au_field's) at the frame's intensity plus head drift and roll,
    with blinks, flicker, an illumination gradient and sensor noise."""
    h, w = face.lid.shape
    scale = float(np.sqrt(h * w / (REFERENCE_SIZE[0] * REFERENCE_SIZE[1])))
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = field if field is not None else au_field(face.points, plan, (h, w), face.morph)
    n = plan.n_frames
    t = np.arange(n)
    level = intensity(plan) * plan.amplitude * scale
    macro = macro_level(plan, n) * scale
    if plan.macro:  # the distractor's own field, on the same face
        other = replace(plan, action_units=plan.macro[3], au_gains=(1.0,) * 8)
        mdx, mdy = au_field(face.points, other, (h, w), face.morph)
    # Slow head drift: a steady translation reaching `drift` at the last frame, plus a sway
    # across it.
    u = t / max(n - 1, 1)
    sway = plan.sway * np.sin(np.pi * u)
    norm = np.hypot(*plan.drift) or 1.0
    across = (-plan.drift[1] / norm, plan.drift[0] / norm)
    tx = scale * (plan.drift[0] * u + across[0] * sway)
    ty = scale * (plan.drift[1] * u + across[1] * sway)
    # Head roll about the neck (below the chin): reaches roll[0] degrees at the last frame,
    # plus a sway of roll[1] degrees.
    roll = np.deg2rad(plan.roll[0] * u + plan.roll[1] * np.sin(np.pi * u))
    pivot = (w / 2, h * 1.05)
    px, py = gx - np.float32(pivot[0]), gy - np.float32(pivot[1])
    # Illumination flicker: a slow sinusoidal gain plus frame-to-frame jitter; and a light
    # gradient across the face that grows to plan.light[0] (gain difference edge to centre)
    # in the direction plan.light[1] (radians).
    amp, freq, phase = plan.flicker
    gain = 1 + amp * np.sin(2 * np.pi * freq * t / fps + phase) + rng.normal(0, 0.002, n)
    light = plan.light[0] * u
    ramp = (np.cos(plan.light[1]) * (gx - w / 2) + np.sin(plan.light[1]) * (gy - h / 2)) / (w / 2)
    ramp = ramp.astype(np.float32)
    # Blinks: the lids close and reopen over blink_frames (they may run past the last frame).
    closure = np.zeros(n)
    for start, frames, depth in ((plan.blink_start, plan.blink_frames, plan.blink_depth),) + tuple(
        plan.more_blinks
    ):
        if start >= 0:
            k = (t - start) / frames
            inside = (k >= 0) & (k <= 1)
            closure[inside] = np.maximum(closure[inside], depth * np.sin(np.pi * k[inside]))
    v1 = plan.model == "templates"
    noise_scale = np.float32(plan.noise * 2.0)  # the sum of 3 U(0,1) has std 1/2
    table = None if v1 else _noise_table(plan.noise)
    for i in range(n):
        src = face.open_eyes
        if closure[i] > 0.05:
            shut = face.lid < closure[i]
            shut = shut[..., None] if src.ndim == 3 else shut
            src = np.where(shut, face.closed_eyes, face.open_eyes)
        if macro[i]:
            ex, ey = level[i] * dx + macro[i] * mdx, level[i] * dy + macro[i] * mdy
        else:
            ex, ey = level[i] * dx, level[i] * dy
        if roll[i] == 0:
            map_x = gx - ex - np.float32(tx[i])
            map_y = gy - ey - np.float32(ty[i])
        else:  # sample the face at the point the roll and drift brought here
            map_x, map_y = head_maps(px, py, pivot, roll[i], tx[i], ty[i], ex, ey)
        frame = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        if v1:
            # Sensor noise: a sum of three uniforms (near-Gaussian, std 1 after scaling) is ~3x
            # cheaper than numpy's normal sampler, which dominated the render time.
            noise = rng.random((3, *frame.shape), dtype=np.float32).sum(axis=0)
            frame = cv2.scaleAdd(frame, float(gain[i]), noise_scale * (noise - 1.5) + 0.5)
        else:
            if light[i]:
                shade = np.float32(gain[i]) + np.float32(light[i] * gain[i]) * ramp
                frame = frame * (shade[..., None] if frame.ndim == 3 else shade)
            else:
                frame *= np.float32(gain[i])
            noise = cv2.LUT(rng.integers(0, 256, frame.shape, dtype=np.uint8), table)
            frame += noise
        np.clip(frame, 0, 255, out=frame)
        yield frame.astype(np.uint8)
