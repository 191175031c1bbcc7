"""How far to trust one prediction: per-clip quality measures and flags, and an
out-of-distribution score, each judged against the training clips of the model.

Measures (`measure`, mer.keyframes.clip_quality, on the clip as the key-frame builder
prepared it, mer.keyframes.clip_records):
  length, frame_height, frame_width   the interval's length (frames) and the source's frame size
  face_found, face_share              a frontal face (mer.keyframes.faces) on the first frame, and its
                                      side as a share of the frame's shorter side
  motion_snr                          the motion curve's peak (after mer.keyframes.motion.smooth) over
                                      its own noise floor: the mean absolute jitter of the
                                      curve around that moving average
  largest_motion                      how far the pixels move that the curve leaves out as
                                      beyond the micro range (mer.keyframes.motion.Motion.largest)
  apex_offset, keyframe_gap           the apex within the interval, and the distance in
                                      frames from the apex to the nearest key frame
Out-of-distribution score (`ood_scores`): the mean cosine distance of the clip's fc7
embedding (the classifier's backbone features) to its OOD_NEIGHBOURS nearest training clips.

`reference` (at export, mer.serving.packaging.package) measures the training clips and sets every
threshold from them: the rules are FLAG_RULES; the numbers and how many training clips they
come from are recorded in the model card ("trust"). No threshold is set on test clips.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mer.errors import DecodeError, InputError
from mer.keyframes.clip_quality import EDGE_FRAMES, MEASURES, measure, motion_snr  # noqa: F401 (read by inference)
from mer.keyframes.clip_records import prepare_clip
from mer.keyframes.settings import KeyframeSettings, keyframe_settings
from mer.train.step import eval_batches

# Training clips decoded to set the decoded measures' thresholds (a seeded sample).
REFERENCE_CLIPS = 64
REFERENCE_SEED = 0
# Clip length, frame size, face size: flagged outside [training min / RANGE_MARGIN, training
# max * RANGE_MARGIN] (lengths and sizes of a new recording of the same kind fall a little
# outside the range a few dozen training clips happen to span).
RANGE_MARGIN = 1.25
# Motion strength, largest motion, OOD score: flagged beyond a low (high) training quantile
# divided (multiplied) by THRESHOLD_MARGIN.
LOW_QUANTILE, HIGH_QUANTILE = 0.01, 0.99
THRESHOLD_MARGIN = 1.5
# The face detector must have found a face on this share of training clips for "no face"
# to mean anything (drawn or cropped faces may never be found).
FACE_REQUIRED_SHARE = 0.9
OOD_NEIGHBOURS = 5
# The OOD threshold is never lower: distances this small are rounding or an untrained
# embedding (one puts every clip at ~1e-8 in float32). Distances are computed in float64;
# a small trained network's fc7 features lie close together (distances ~1e-5).
OOD_FLOOR = 1e-6
REFERENCE_FEATURES = "reference_features.npy"

FLAG_RULES = {
    "no_face": "no frontal face on the first frame (active only where the detector found one "
    f"on at least {FACE_REQUIRED_SHARE:.0%} of the training clips)",
    "face_size": "the face's share of the shorter side outside the training range "
    f"(/ x {RANGE_MARGIN:g})",
    "no_movement": f"motion_snr or largest_motion below the training clips' {LOW_QUANTILE:g} "
    f"quantile / {THRESHOLD_MARGIN:g} (a still clip's curve is noise: compressed, its jitter "
    "can look like a peak; lossless, peak and jitter are both ~0)",
    "beyond_micro": f"largest_motion above the training clips' {HIGH_QUANTILE:g} quantile "
    f"x {THRESHOLD_MARGIN:g}",
    "apex_edge": f"apex within {EDGE_FRAMES} frame of the onset or offset (fixed rule; the "
    "training share is recorded)",
    "length": f"length (frames) outside the training range (/ x {RANGE_MARGIN:g})",
    "frame_size": f"frame height or width outside the training range (/ x {RANGE_MARGIN:g})",
    "keyframe_gap": "no key frame within the training clips' largest apex gap (at least "
    f"{EDGE_FRAMES} frame) of the apex",
    "ood": f"ood_score above the training clips' {HIGH_QUANTILE:g} quantile (each against the "
    f"others) x {THRESHOLD_MARGIN:g}, and at least {OOD_FLOOR:g}",
}


# ---------------------------------------------------------------- measures of one clip


def measure_row(row: dict, kf: KeyframeSettings) -> dict:
    """The MEASURES of a training clip (a key-frame table row: its apex and key frames)."""
    clip = prepare_clip(row, kf)
    onset = int(row["onset"])
    indices = np.asarray(row["keyframe_indices"], np.float64) - onset
    return measure(clip, int(row["apex"]) - onset, indices, row["source"], kf)


# ---------------------------------------------------------------- the model's own features


@torch.no_grad()  # as mer.train.step.predict: no autograd graph kept per batch
def forward(
    model: torch.nn.Module,
    frames: np.ndarray,
    device: torch.device,
    *,
    amp: bool = False,
    input: str = "frames",
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C), fc7 features (N, D)) of a ClassifierC3D for uint8 key frames: the
    forward pass of mer.train.step.predict, split where the head begins."""

    def head_and_features(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = model.backbone.features(x)
        return model.head(f), f

    batches = eval_batches(
        model, head_and_features, frames, device, amp=amp, input=input, batch_size=batch_size
    )
    logits, feats = [], []
    for out, f in batches:
        logits.append(out.float().cpu().numpy())
        feats.append(f.float().cpu().numpy())
    if not logits:
        return np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)
    return np.concatenate(logits), np.concatenate(feats)


def _unit(feats: np.ndarray) -> np.ndarray:
    feats = np.asarray(feats, np.float64)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def ood_scores(feats: np.ndarray, reference: np.ndarray, *, exclude_self: bool = False):
    """Mean cosine distance of each row of `feats` to its OOD_NEIGHBOURS nearest rows of
    `reference` (unit rows); `exclude_self`: feats is reference, each row left out."""
    if len(feats) == 0:
        return np.zeros(0)
    d = 1.0 - _unit(feats) @ np.asarray(reference, np.float64).T
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    k = max(1, min(OOD_NEIGHBOURS, d.shape[1] - int(exclude_self)))
    return np.sort(d, axis=1)[:, :k].mean(axis=1).astype(np.float64)


# ---------------------------------------------------------------- thresholds (at export)


def _range(values, what: str, n: int) -> dict:
    values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if len(values) == 0:
        return {"low": None, "high": None, "from": f"no {what} measured on training clips"}
    lo, hi = float(values.min()), float(values.max())
    return {
        "low": lo / RANGE_MARGIN,
        "high": hi * RANGE_MARGIN,
        "training": [lo, hi],
        "from": f"{what} of {len(values)} training clips: {lo:.4g}..{hi:.4g}",
    }


def _quantile(values, q: float, scale: float, what: str) -> dict:
    values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if len(values) == 0:
        return {"threshold": None, "from": f"no {what} measured on training clips"}
    at = float(np.quantile(values, q))
    return {
        "threshold": at * scale,
        "training": [float(values.min()), float(np.median(values)), float(values.max())],
        "from": f"{what} of {len(values)} training clips: {q:g} quantile {at:.4g} "
        f"(min {values.min():.4g}, median {np.median(values):.4g}, max {values.max():.4g})",
    }


def reference(cfg, table, subjects: list[str], model: torch.nn.Module, progress=None) -> tuple:
    """(thresholds, unit fc7 features of the training clips) of a model trained on the
    clips of `subjects` in the key-frame table: see the module docstring."""
    idx = np.asarray(table.indices_of(subjects))
    clips = table.clips.iloc[idx].reset_index(drop=True)
    kf = keyframe_settings(cfg.keyframes)
    _, feats = forward(model, table.frames[idx], torch.device("cpu"), input=cfg.model.input)
    feats = _unit(feats)
    loo = ood_scores(feats, feats, exclude_self=True)
    ood = _quantile(loo, HIGH_QUANTILE, THRESHOLD_MARGIN, "ood_score (each against the others)")

    onset, offset = clips["onset"].to_numpy(), clips["offset"].to_numpy()
    apex = clips["apex"].to_numpy() - onset
    lengths = offset - onset + 1
    gaps = [
        float(np.abs(np.asarray(k) - a - o).min())
        for k, a, o in zip(clips["keyframe_indices"], apex, onset, strict=True)
    ]
    edge = (apex <= EDGE_FRAMES) | (apex >= lengths - 1 - EDGE_FRAMES)

    # The decoded measures, on a seeded sample of the training clips.
    rng = np.random.default_rng(REFERENCE_SEED)
    pick = sorted(rng.choice(len(clips), min(len(clips), REFERENCE_CLIPS), replace=False))
    measured, unreadable = [], 0
    for i in pick:
        try:
            measured.append(measure_row(clips.iloc[i].to_dict(), kf))
        except (InputError, DecodeError):
            unreadable += 1  # e.g. the sources moved since training: those measures stay unset
    if progress:
        progress(
            f"[export] quality reference: {len(measured)} training clips measured "
            f"({unreadable} unreadable), {len(clips)} embedded"
        )
    m = pd.DataFrame(measured, columns=list(MEASURES))
    found = m["face_found"].astype(bool) if len(m) else pd.Series(dtype=bool)
    face_share = float(found.mean()) if len(m) else float("nan")
    flags = {
        "no_face": {
            "active": bool(len(m) and face_share >= FACE_REQUIRED_SHARE),
            "from": f"face found on {int(found.sum())} of {len(m)} training clips measured",
        },
        "face_size": _range(m["face_share"][found] if len(m) else [], "face share", len(m)),
        "no_movement": _quantile(m["motion_snr"], LOW_QUANTILE, 1 / THRESHOLD_MARGIN, "motion_snr"),
        "no_movement_largest": _quantile(
            m["largest_motion"], LOW_QUANTILE, 1 / THRESHOLD_MARGIN, "largest_motion (px per 64)"
        ),
        "beyond_micro": _quantile(
            m["largest_motion"], HIGH_QUANTILE, THRESHOLD_MARGIN, "largest_motion (px per 64)"
        ),
        "apex_edge": {
            "active": True,
            "from": f"fixed rule; the apex is at the edge in {int(edge.sum())} of "
            f"{len(clips)} training clips",
        },
        "length": _range(lengths, "length (frames)", len(clips)),
        "frame_height": _range(m["frame_height"], "frame height (px)", len(m)),
        "frame_width": _range(m["frame_width"], "frame width (px)", len(m)),
        "keyframe_gap": {
            "threshold": max(float(EDGE_FRAMES), float(max(gaps, default=0.0))),
            "from": f"largest apex-to-key-frame gap of {len(gaps)} training clips: "
            f"{max(gaps, default=0.0):g} frames (at least {EDGE_FRAMES})",
        },
        "ood": {
            **ood,
            "threshold": None if ood["threshold"] is None else max(ood["threshold"], OOD_FLOOR),
            "floor": OOD_FLOOR,
            "neighbours": OOD_NEIGHBOURS,
            "features": REFERENCE_FEATURES,
        },
    }
    trust = {
        "rules": FLAG_RULES,
        "thresholds": flags,
        "training_clips": int(len(clips)),
        "measured_clips": int(len(m)),
        "unreadable_clips": int(unreadable),
        "ood_score": f"mean cosine distance of the fc7 embedding to its {OOD_NEIGHBOURS} "
        "nearest training clips",
    }
    return trust, feats


# ---------------------------------------------------------------- flags (at prediction)


def _outside(values: pd.Series, t: dict) -> np.ndarray:
    if t.get("low") is None:
        return np.zeros(len(values), bool)
    v = values.to_numpy(np.float64)
    return np.isfinite(v) & ((v < t["low"]) | (v > t["high"]))


def _beyond(values: pd.Series, t: dict, below: bool) -> np.ndarray:
    if t.get("threshold") is None:
        return np.zeros(len(values), bool)
    v = values.to_numpy(np.float64)
    return np.isfinite(v) & ((v < t["threshold"]) if below else (v > t["threshold"]))


def flag(df: pd.DataFrame, trust: dict | None) -> pd.DataFrame:
    """flag_<name> columns (bool), `flags` (the raised ones, ';'-joined) and `flagged` for
    rows holding the MEASURES and ood_score; a model folder without thresholds (exported
    before them) raises only the fixed-rule flags."""
    t = (trust or {}).get("thresholds", {})
    out = pd.DataFrame(index=df.index)
    n = df["length"].to_numpy(np.float64)
    apex = df["apex_offset"].to_numpy(np.float64)
    found = df["face_found"].astype(bool).to_numpy()
    out["flag_no_face"] = ~found if t.get("no_face", {}).get("active") else np.zeros(len(df), bool)
    out["flag_face_size"] = found & _outside(df["face_share"], t.get("face_size", {}))
    out["flag_no_movement"] = _beyond(
        df["motion_snr"], t.get("no_movement", {}), below=True
    ) | _beyond(df["largest_motion"], t.get("no_movement_largest", {}), below=True)
    out["flag_beyond_micro"] = _beyond(df["largest_motion"], t.get("beyond_micro", {}), False)
    out["flag_apex_edge"] = (apex <= EDGE_FRAMES) | (apex >= n - 1 - EDGE_FRAMES)
    out["flag_length"] = _outside(df["length"], t.get("length", {}))
    out["flag_frame_size"] = _outside(df["frame_height"], t.get("frame_height", {})) | _outside(
        df["frame_width"], t.get("frame_width", {})
    )
    gap = t.get("keyframe_gap", {}).get("threshold", EDGE_FRAMES)
    out["flag_keyframe_gap"] = df["keyframe_gap"].to_numpy(np.float64) > gap
    out["flag_ood"] = _beyond(df["ood_score"], t.get("ood", {}), below=False)
    names = [c for c in out.columns]
    raised = out[names].to_numpy()
    out["flags"] = [
        ";".join(c.removeprefix("flag_") for c, r in zip(names, row, strict=True) if r)
        for row in raised
    ]
    out["flagged"] = raised.any(axis=1)
    return out


FLAG_COLUMNS = [f"flag_{n}" for n in FLAG_RULES]


def counts(preds: pd.DataFrame) -> dict:
    """Clips raising each flag, and clips raising any (for _summary.json)."""
    out = {c.removeprefix("flag_"): int(preds[c].sum()) for c in FLAG_COLUMNS if c in preds}
    out["any"] = int(preds["flagged"].sum()) if "flagged" in preds else 0
    return out


def markdown(trust: dict) -> list[str]:
    """The model card's "Prediction quality" section (MODEL_CARD.md)."""
    lines = [
        "## Prediction quality",
        "",
        f"Thresholds set on the training clips ({trust['training_clips']} embedded, "
        f"{trust['measured_clips']} decoded and measured); jobs/predict.py writes a flag_<name> "
        "column per rule and `--abstain` answers `unknown` for any flagged clip.",
        "",
        "| flag | rule | from |",
        "|---|---|---|",
    ]
    th = trust["thresholds"]
    source = {**th, "frame_size": th.get("frame_height", {})}
    if "no_movement_largest" in th:  # two parts
        both = f"{th['no_movement'].get('from')}; {th['no_movement_largest'].get('from')}"
        source["no_movement"] = {"from": both}
    for name, rule in trust["rules"].items():
        lines.append(f"| {name} | {rule} | {source.get(name, {}).get('from', '-')} |")
    cal = trust.get("calibration") or {}
    lines += ["", "## Calibration", ""]
    if cal.get("temperature") is None:
        lines.append(f"Not calibrated: {cal.get('status', 'no search experiment')}.")
    else:
        lines += [
            f"Temperature scaling fitted on {cal['clips']} out-of-fold predictions "
            f"({cal['subjects']} subjects, seeds {cal['seeds']}) of the search: T = "
            f"{cal['temperature']:.3f}. prob_<class> columns are calibrated; the portable "
            "program (model.pt2) returns uncalibrated probabilities (divide log-probabilities "
            "by T and renormalise).",
            "",
            f"| ECE ({cal['bins']} bins) | value | 95 % interval over subjects |",
            "|---|---|---|",
        ]
        for key, label in (
            ("before", "before (raw)"),
            ("after_cross", "after, T fitted without the clip's subject"),
            ("after", "after, T fitted on all (in-sample)"),
        ):
            e = cal["ece"][key]
            lines.append(f"| {label} | {e['value']:.3f} | [{e['lo']:.3f}, {e['hi']:.3f}] |")
        lines += ["", f"Reliability diagram: `{cal['diagram']}`."]
    return lines
