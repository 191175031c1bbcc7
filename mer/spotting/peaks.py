"""A per-frame score becomes intervals, by one of two rules (`PeakSettings.rule`).

  threshold  each run of frames above the threshold is an interval: runs closer than
             `merge_gap_s` merged into one, runs shorter than `min_s` dropped.
  peaks      the MEGC spotting baselines' rule (MDMD, He et al., MEGC2020: peaks of the
             feature contrast, a fixed-length interval around each; later methods add a
             minimum distance between peaks): each local maximum above the threshold is the
             centre of an interval of `length_s` seconds (chosen per fold on the training
             subjects, mer.spotting.spotters.choose); a peak within `length_s` of a higher
             kept peak is suppressed, so micro intervals never overlap. A peak whose run
             above the threshold (merged and filtered as in the threshold rule) is longer
             than `micro_max_s` belongs to a macro-expression: that run is its interval.

Either way an interval up to `micro_max_s` long is a micro-expression, a longer one a
macro-expression (MEGC's own split: a micro-expression lasts at most 0.5 s), and an
interval's score is the largest score inside it. `relative_threshold` is the MEGC spotting
baselines' per-video rule: mean + p x (max - mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mer.datasets.long_videos import Interval

RULES = ("threshold", "peaks")


@dataclass(frozen=True)
class PeakSettings:
    micro_max_s: float = 0.5  # longer runs are macro-expressions
    merge_gap_s: float = 0.1  # runs closer than this are one interval
    min_s: float = 0.06  # shorter runs are noise
    rule: str = "threshold"  # threshold | peaks (see the module)
    # peaks: the micro-interval lengths a fold chooses from (on its training subjects).
    lengths_s: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"interval rule {self.rule!r}; expected one of {RULES}")

    def length_grid(self) -> tuple[float | None, ...]:
        """The interval lengths a fold chooses from: None (runs set the length) for the
        threshold rule."""
        return tuple(self.lengths_s) if self.rule == "peaks" else (None,)


def relative_threshold(score: np.ndarray, p: float) -> float:
    """mean + p x (max - mean) of one video's score."""
    mean = float(np.mean(score)) if len(score) else 0.0
    return mean + p * (float(np.max(score, initial=0.0)) - mean)


def intervals(
    video: str,
    score: np.ndarray,
    threshold: float,
    fps: float,
    first_frame: int,
    ps: PeakSettings,
    length_s: float | None = None,
) -> list[Interval]:
    """One video's intervals by `ps.rule` (the peaks rule needs `length_s`)."""
    if ps.rule == "peaks":
        if length_s is None:
            raise ValueError("the peaks rule needs an interval length")
        return intervals_from_peaks(video, score, threshold, fps, first_frame, ps, length_s)
    return intervals_from_score(video, score, threshold, fps, first_frame, ps)


def intervals_from_score(
    video: str,
    score: np.ndarray,
    threshold: float,
    fps: float,
    first_frame: int,
    ps: PeakSettings,
) -> list[Interval]:
    """The threshold rule: the runs of one video where `score` exceeds `threshold`."""
    score = np.asarray(score)
    return [
        _interval(video, score, a, b, first_frame, ps, fps)
        for a, b in _runs_above(score, threshold, fps, ps)
    ]


def intervals_from_peaks(
    video: str,
    score: np.ndarray,
    threshold: float,
    fps: float,
    first_frame: int,
    ps: PeakSettings,
    length_s: float,
) -> list[Interval]:
    """The peaks rule: a `length_s` interval centred on each local maximum above
    `threshold`, suppressed within `length_s` of a higher one; a peak inside a run longer
    than `micro_max_s` gives that run, once, as a macro-expression."""
    score = np.asarray(score)
    n = len(score)
    length = max(1, round(length_s * fps))
    runs = _runs_above(score, threshold, fps, ps)
    run_of = np.full(n, -1)
    for k, (a, b) in enumerate(runs):
        run_of[a : b + 1] = k
    longest_micro = ps.micro_max_s * fps
    kept: list[int] = []
    macro_runs: set[int] = set()
    for i in _local_maxima(score, threshold):  # highest first
        k = run_of[i]
        if k < 0:  # its run was dropped as too short
            continue
        a, b = runs[k]
        if b - a + 1 > longest_micro:
            macro_runs.add(int(k))
        elif all(abs(i - j) >= length for j in kept):
            kept.append(i)
    out = [_interval(video, score, *runs[k], first_frame, ps, fps) for k in sorted(macro_runs)]
    for i in kept:
        a = min(max(0, i - length // 2), max(0, n - length))
        out.append(_interval(video, score, a, min(n, a + length) - 1, first_frame, ps, fps))
    return sorted(out, key=lambda x: x.onset)


def _interval(
    video: str, score: np.ndarray, a: int, b: int, first_frame: int, ps: PeakSettings, fps: float
) -> Interval:
    kind = "micro" if (b - a + 1) <= ps.micro_max_s * fps else "macro"
    return Interval(
        video, first_frame + a, first_frame + b, kind, score=float(np.max(score[a : b + 1]))
    )


def _runs_above(
    score: np.ndarray, threshold: float, fps: float, ps: PeakSettings
) -> list[tuple[int, int]]:
    """(first, last) of each run above `threshold`, runs closer than merge_gap_s merged,
    runs shorter than min_s dropped."""
    gap = max(0, round(ps.merge_gap_s * fps))
    merged: list[list[int]] = []
    for a, b in _runs(score > threshold):
        if merged and a - merged[-1][1] - 1 <= gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    shortest = max(1, round(ps.min_s * fps))
    return [(a, b) for a, b in merged if b - a + 1 >= shortest]


def _local_maxima(score: np.ndarray, threshold: float) -> list[int]:
    """Indices of the local maxima above `threshold`, highest first (ties: earlier first).
    A plateau counts once, at its middle."""
    if len(score) == 0:
        return []
    starts = np.flatnonzero(np.concatenate([[True], score[1:] != score[:-1]]))
    ends = np.concatenate([starts[1:] - 1, [len(score) - 1]])
    values = score[starts]
    padded = np.concatenate([[-np.inf], values, [-np.inf]])
    top = (values > padded[:-2]) & (values > padded[2:]) & (values > threshold)
    peaks = (starts[top] + ends[top]) // 2
    return [int(k) for k in peaks[np.lexsort((peaks, -score[peaks]))]]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]
