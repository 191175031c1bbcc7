"""A per-frame score becomes intervals: runs above a threshold, merged, typed by length.

`intervals_from_score` turns one video's score (one value per frame) into `Interval`s: each
run of frames above the threshold, runs closer than `merge_gap_s` merged into one, runs
shorter than `min_s` dropped; a run up to `micro_max_s` long is a micro-expression, a longer
one a macro-expression (MEGC's own split: a micro-expression lasts at most 0.5 s). An
interval's score is the largest score inside it. `relative_threshold` is the MEGC spotting
baselines' per-video rule: mean + p x (max - mean).
"""

from __future__ import annotations

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
