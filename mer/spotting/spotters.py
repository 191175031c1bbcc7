"""Spotters: per-frame scores from a video's features, thresholds chosen per fold on the
training subjects only, intervals for the test subject.

  motion   training-free: the two-sided motion curve (mer.spotting.windows), smoothed over
           SMOOTH_S. Only its threshold is chosen on the training subjects.
  mdmd     MDMD-style baseline (He et al., MEGC2020): per frame the mean of the strongest third
           of the blocks' main-direction flow lengths, minus its mean over the surrounding
           window (the baseline's feature contrast), clipped at 0.
  learned  a small temporal network on windows of the features (mer.spotting.learned), trained
           on the training subjects.

Both rule-based spotters threshold each video at mean + p x (max - mean) (the MEGC
baselines' rule). A score becomes intervals by the rule of mer.spotting.peaks (runs above
the threshold, or fixed-length intervals around peaks); p, and for the peaks rule the
interval length, are the grid values that give the best micro-expression F1 over the
training subjects' videos (`choose`, with the MEGC metric of mer.spotting.metric). Folds are
leave-one-subject-out: a test subject's intervals are never seen when its settings are
chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mer.datasets.long_videos import Interval
from mer.spotting.metric import OVERALL, spotting_metric
from mer.spotting.peaks import PeakSettings, intervals, relative_threshold
from mer.spotting.stage import VideoFeatures

RULE_SPOTTERS = ("motion", "mdmd")
SPOTTERS = (*RULE_SPOTTERS, "learned")
FINAL = "_all"  # the fold of every subject: thresholds for videos outside the set
P_GRID = tuple(np.round(np.linspace(0.05, 0.95, 19), 2).tolist())
SMOOTH_S = 0.04  # moving average before thresholding (both rule-based spotters)
CONTRAST_S = 1.0  # mdmd: the feature is compared with its mean over this long


@dataclass
class FoldResult:
    """One spotter on one fold: the test subject, the threshold (and interval length)
    chosen on the others, and the test subject's spotted intervals."""

    spotter: str
    test_subject: str
    threshold: float  # p of the relative rule (motion, mdmd) or a probability (learned)
    train_f1: float  # micro F1 with these settings on the training subjects
    intervals: list[Interval] = field(default_factory=list)
    length_s: float | None = None  # peaks rule: each micro interval's length


@dataclass(frozen=True)
class Choice:
    """What a fold chose on its training subjects, and the micro F1 it gave there."""

    threshold: float
    length_s: float | None  # None: the threshold rule (runs set the lengths)
    train_f1: float


def score(spotter: str, f: VideoFeatures) -> np.ndarray:
    """The per-frame score of a rule-based spotter."""
    if spotter == "motion":
        return _smooth(f.motion, f.fps, SMOOTH_S)
    if spotter == "mdmd":
        b = np.sort(f.blocks, axis=1)[:, -max(1, f.blocks.shape[1] // 3) :]
        s = _smooth(b.mean(axis=1), f.fps, SMOOTH_S)
        return np.maximum(s - _smooth(s, f.fps, CONTRAST_S), 0.0)
    raise ValueError(f"no rule-based spotter {spotter!r}")


def _smooth(x: np.ndarray, fps: float, seconds: float) -> np.ndarray:
    n = max(1, round(seconds * fps)) | 1
    if n == 1 or len(x) == 0:
        return np.asarray(x, np.float64)
    pad = np.pad(np.asarray(x, np.float64), n // 2, mode="edge")
    return np.convolve(pad, np.ones(n) / n, mode="valid")


def spot(
    scores: dict[str, np.ndarray],
    feats: dict[str, VideoFeatures],
    p: float,
    ps: PeakSettings,
    relative: bool = True,
    length_s: float | None = None,
) -> list[Interval]:
    """Intervals of every video in `scores` at threshold p (relative rule or absolute), by
    the rule of `ps` (the peaks rule with intervals of `length_s`)."""
    out = []
    for name, s in scores.items():
        f = feats[name]
        t = relative_threshold(s, p) if relative else p
        out.extend(intervals(name, s, t, f.fps, f.first_frame, ps, length_s))
    return out


def choose(
    scores: dict[str, np.ndarray],
    feats: dict[str, VideoFeatures],
    truth: list[Interval],
    ps: PeakSettings,
    grid=P_GRID,
    relative: bool = True,
) -> Choice:
    """The threshold from `grid` (and, for the peaks rule, the interval length from
    `ps.lengths_s`) with the best micro F1 over these (training) videos. Ties go to the
    higher threshold (fewer intervals), then to the shorter length."""
    names = set(scores)
    truth = [t for t in truth if t.video in names]
    best = Choice(0.0, None, -1.0)
    for length_s in sorted(ps.length_grid(), key=lambda x: -1 if x is None else -x):
        for p in grid:
            pred = spot(scores, feats, p, ps, relative, length_s)
            value = spotting_metric(truth, pred).f1(OVERALL, "micro")
            if value > best.train_f1 or (value == best.train_f1 and p >= best.threshold):
                best = Choice(float(p), length_s, value)
    return best


def loso_rule(
    spotter: str,
    feats: dict[str, VideoFeatures],
    truth: list[Interval],
    ps: PeakSettings,
) -> list[FoldResult]:
    """A rule-based spotter on every leave-one-subject-out fold, and last the FINAL fold: the
    settings chosen on every subject (for new videos; no intervals)."""
    scores = {n: score(spotter, f) for n, f in feats.items()}
    results = []
    for subject in sorted({f.subject for f in feats.values()}):
        train = {n: s for n, s in scores.items() if feats[n].subject != subject}
        test = {n: s for n, s in scores.items() if feats[n].subject == subject}
        c = choose(train, feats, truth, ps)
        found = spot(test, feats, c.threshold, ps, length_s=c.length_s)
        results.append(FoldResult(spotter, subject, c.threshold, c.train_f1, found, c.length_s))
    c = choose(scores, feats, truth, ps)
    results.append(FoldResult(spotter, FINAL, c.threshold, c.train_f1, [], c.length_s))
    return results
