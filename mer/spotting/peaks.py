"""A per-frame score becomes intervals: runs above a threshold, merged, typed by length.

`intervals_from_score` turns one video's score (one value per frame) into `Interval`s: each
run of frames above the threshold, runs closer than `merge_gap_s` merged into one, runs
shorter than `min_s` dropped; a run up to `micro_max_s` long is a micro-expression, a longer
one a macro-expression (MEGC's own split: a micro-expression lasts at most 0.5 s). An
interval's score is the largest score inside it. `relative_threshold` is the MEGC spotting
baselines' per-video rule: mean + p x (max - mean).

`match_counts` counts true positives as MEGC does (IoU >= 0.5 with a ground-truth interval of
the same type, each one matched at most once); the spotters choose their thresholds with it
on training subjects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mer.datasets.long_videos import Interval


@dataclass(frozen=True)
class PeakSettings:
    micro_max_s: float = 0.5  # longer runs are macro-expressions
    merge_gap_s: float = 0.1  # runs closer than this are one interval
    min_s: float = 0.06  # shorter runs are noise


def relative_threshold(score: np.ndarray, p: float) -> float:
    """mean + p x (max - mean) of one video's score."""
    mean = float(np.mean(score)) if len(score) else 0.0
    return mean + p * (float(np.max(score, initial=0.0)) - mean)


def intervals_from_score(
    video: str,
    score: np.ndarray,
    threshold: float,
    fps: float,
    first_frame: int,
    ps: PeakSettings,
) -> list[Interval]:
    """The intervals of one video where `score` exceeds `threshold` (see the module)."""
    above = np.asarray(score) > threshold
    runs = _runs(above)
    gap = max(0, round(ps.merge_gap_s * fps))
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] - 1 <= gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    out = []
    shortest = max(1, round(ps.min_s * fps))
    for a, b in merged:
        if b - a + 1 < shortest:
            continue
        kind = "micro" if (b - a + 1) <= ps.micro_max_s * fps else "macro"
        out.append(
            Interval(
                video,
                first_frame + a,
                first_frame + b,
                kind,
                score=float(np.max(score[a : b + 1])),
            )
        )
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def iou(a: Interval, b: Interval) -> float:
    inter = min(a.offset, b.offset) - max(a.onset, b.onset) + 1
    if inter <= 0:
        return 0.0
    union = (a.offset - a.onset + 1) + (b.offset - b.onset + 1) - inter
    return inter / union


def match_counts(
    predicted: Iterable[Interval], truth: Iterable[Interval], kind: str
) -> tuple[int, int, int]:
    """(true positives, predicted, ground truth) of type `kind`: a prediction is a true
    positive when its IoU with a still unmatched ground truth of that type and video is
    >= 0.5 (each ground truth matched once; predictions taken best score first)."""
    pred = sorted((p for p in predicted if p.type == kind), key=lambda p: -(p.score or 0.0))
    gts = [t for t in truth if t.type == kind]
    used = [False] * len(gts)
    tp = 0
    for p in pred:
        best, at = 0.0, -1
        for j, t in enumerate(gts):
            if not used[j] and t.video == p.video:
                v = iou(p, t)
                if v > best:
                    best, at = v, j
        if best >= 0.5:
            used[at] = True
            tp += 1
    return tp, len(pred), len(gts)


def f1(tp: int, n_pred: int, n_true: int) -> float:
    """2TP / (predicted + ground truth); 0 when both are empty."""
    return 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0
