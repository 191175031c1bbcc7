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
baselines' rule); p is the value of a grid that gives the best micro-expression F1 over the
training subjects' videos (`choose_p`, with the MEGC metric of mer.spotting.metric). Folds are leave-one-subject-out: a test subject's
intervals are never seen when its threshold is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mer.datasets.long_videos import Interval
from mer.spotting.metric import OVERALL, spotting_metric
from mer.spotting.peaks import PeakSettings, intervals_from_score, relative_threshold
from mer.spotting.stage import VideoFeatures

RULE_SPOTTERS = ("motion", "mdmd")
SPOTTERS = (*RULE_SPOTTERS, "learned")
FINAL = "_all"  # the fold of every subject: thresholds for videos outside the set
P_GRID = tuple(np.round(np.linspace(0.05, 0.95, 19), 2).tolist())
SMOOTH_S = 0.04  # moving average before thresholding (both rule-based spotters)
CONTRAST_S = 1.0  # mdmd: the feature is compared with its mean over this long


@dataclass
class FoldResult:
    """One spotter on one fold: the test subject, the threshold chosen on the others, and
    the test subject's spotted intervals."""

    spotter: str
    test_subject: str
    threshold: float  # p of the relative rule (motion, mdmd) or a probability (learned)
    train_f1: float  # micro F1 at that threshold on the training subjects
    intervals: list[Interval] = field(default_factory=list)


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
) -> list[Interval]:
    """Intervals of every video in `scores` at threshold p (relative rule or absolute)."""
    out = []
    for name, s in scores.items():
        f = feats[name]
        t = relative_threshold(s, p) if relative else p
        out.extend(intervals_from_score(name, s, t, f.fps, f.first_frame, ps))
    return out


def choose_p(
    scores: dict[str, np.ndarray],
    feats: dict[str, VideoFeatures],
    truth: list[Interval],
    ps: PeakSettings,
    grid=P_GRID,
    relative: bool = True,
) -> tuple[float, float]:
    """The grid value with the best micro F1 over these (training) videos, and that F1; ties
    go to the higher threshold (fewer intervals)."""
    names = set(scores)
    truth = [t for t in truth if t.video in names]
    best = (-1.0, 0.0)
    for p in grid:
        value = spotting_metric(truth, spot(scores, feats, p, ps, relative)).f1(OVERALL, "micro")
        if value >= best[0]:
            best = (value, float(p))
    return best[1], best[0]


def loso_rule(
    spotter: str,
    feats: dict[str, VideoFeatures],
    truth: list[Interval],
    ps: PeakSettings,
) -> list[FoldResult]:
    """A rule-based spotter on every leave-one-subject-out fold, and last the FINAL fold: the
    threshold chosen on every subject (for new videos; no intervals)."""
    scores = {n: score(spotter, f) for n, f in feats.items()}
    results = []
    for subject in sorted({f.subject for f in feats.values()}):
        train = {n: s for n, s in scores.items() if feats[n].subject != subject}
        test = {n: s for n, s in scores.items() if feats[n].subject == subject}
        p, train_f1 = choose_p(train, feats, truth, ps)
        results.append(FoldResult(spotter, subject, p, train_f1, spot(test, feats, p, ps)))
    p, train_f1 = choose_p(scores, feats, truth, ps)
    results.append(FoldResult(spotter, FINAL, p, train_f1, []))
    return results
