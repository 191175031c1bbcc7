"""Uncertainty of pooled LOSO scores: subject-level bootstrap intervals and paired tests.

The unit of resampling is the held-out subject: a LOSO score pools the clips of all
subjects, and clips of one subject are not independent. Predictions are reduced to one
confusion matrix per (seed, subject); a resample draws subjects with replacement, pools
their matrices seed by seed, computes the metric per seed and averages over seeds, which is
the statistic the leaderboard reports (mean over seeds of the pooled metric). Resampling
uses scipy.stats.bootstrap and scipy.stats.permutation_test (paired: each subject's
predictions of the two entries swapped, the same way at every seed).

Intervals are BCa (bias-corrected and accelerated; its jackknife leaves one subject out):
with unequal clips per subject the pooled score is a ratio whose bootstrap distribution is
skewed and off-centre, and the percentile interval then runs narrow and shifted. Where BCa
is undefined (a constant statistic, fewer than three subjects) the percentile interval is
used; every interval names its method. A study's verdicts come from Holm-adjusted
permutation p-values over its family of comparisons (`holm`); `effective_subjects` is Kish's
effective sample size of subjects weighted by their clips.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from mer.errors import InputError

N_RESAMPLES = 9999
LEVEL = 0.95


def subject_confusions(
    preds: pd.DataFrame, seeds: list[int], subjects: list[str], num_classes: int
) -> np.ndarray:
    """(seeds, subjects, C, C) counts, rows true class, columns predicted."""
    out = np.zeros((len(seeds), len(subjects), num_classes, num_classes), dtype=np.int64)
    s_index = {s: i for i, s in enumerate(seeds)}
    k_index = {k: i for i, k in enumerate(subjects)}
    keys = (preds["dataset"].astype(str) + "/" + preds["subject"].astype(str)).to_numpy()
    si = np.array([s_index[int(s)] for s in preds["seed"]], dtype=np.int64)
    ki = np.array([k_index[k] for k in keys], dtype=np.int64)
    t = preds["label"].to_numpy(dtype=np.int64)
    p = preds["pred"].to_numpy(dtype=np.int64)
    np.add.at(out, (si, ki, t, p), 1)
    return out


def uf1(cm: np.ndarray) -> np.ndarray:
    """UF1 of confusion matrices (..., C, C): per-class F1 (0 where undefined), averaged."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    fp = cm.sum(axis=-2) - tp
    fn = cm.sum(axis=-1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=-1)


def uar(cm: np.ndarray) -> np.ndarray:
    """UAR of confusion matrices (..., C, C): recall averaged over the classes present."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    support = cm.sum(axis=-1).astype(np.float64)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    return recall.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def accuracy(cm: np.ndarray) -> np.ndarray:
    tp = np.diagonal(cm, axis1=-2, axis2=-1).sum(axis=-1)
    return tp / np.maximum(cm.sum(axis=(-2, -1)), 1)


METRICS = {"uf1": uf1, "uar": uar, "accuracy": accuracy}


def per_seed(cms: np.ndarray, metric: str) -> np.ndarray:
    """The pooled metric at each seed: (seeds,)."""
    return METRICS[metric](cms.sum(axis=1))


def _pooled(cms: np.ndarray, idx: np.ndarray, metric: str) -> np.ndarray:
    """Mean over seeds of the metric pooled over the subjects in idx (..., n)."""
    return METRICS[metric](cms[:, idx].sum(axis=-3)).mean(axis=0)


METHOD = "BCa"


def _subject_bootstrap(n: int, statistic, seed: int) -> tuple[float, float, str]:
    """(low, high, method): BCa interval of statistic(subject indices) over subjects drawn
    with replacement; the percentile interval where BCa is undefined."""
    for method in ("BCa", "percentile") if n >= 3 else ("percentile",):
        with warnings.catch_warnings():
            # A degenerate bootstrap distribution (constant statistic) makes BCa NaN with a
            # warning; the percentile interval of the same resamples is then the point.
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.bootstrap(
                (np.arange(n),),
                lambda idx, axis=-1: statistic(idx),
                vectorized=True,
                n_resamples=N_RESAMPLES,
                batch=500,
                confidence_level=LEVEL,
                method=method,
                rng=np.random.default_rng(seed),
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            return lo, hi, method
    return lo, hi, method


def interval(cms: np.ndarray, metric: str, seed: int = 0) -> tuple[float, float]:
    """95 % interval (BCa, see interval_method) of the mean-over-seeds pooled metric,
    resampling subjects."""
    return interval_method(cms, metric, seed)[:2]


def interval_method(cms: np.ndarray, metric: str, seed: int = 0) -> tuple[float, float, str]:
    """(low, high, method) of the 95 % subject-bootstrap interval."""
    if cms.shape[1] < 2:
        return (float("nan"), float("nan"), "none (fewer than two subjects)")
    return _subject_bootstrap(cms.shape[1], lambda idx: _pooled(cms, idx, metric), seed)


def paired(cms_a: np.ndarray, cms_b: np.ndarray, metric: str, seed: int = 0) -> dict:
    """A - B on the same subjects and seeds: difference, paired bootstrap interval,
    paired permutation p-value (two-sided)."""
    if cms_a.shape != cms_b.shape:
        raise InputError(
            f"cannot pair results of shape {cms_a.shape[:2]} and {cms_b.shape[:2]} "
            "(seeds, subjects): compare entries run on the same folds and seeds"
        )
    n = cms_a.shape[1]
    both = np.concatenate([cms_a, cms_b], axis=1)  # subjects of A, then those of B

    def diff(x, y, axis=-1):
        return _pooled(both, x, metric) - _pooled(both, y, metric)

    observed = float(diff(np.arange(n), np.arange(n) + n))
    lo, hi, method = _subject_bootstrap(n, lambda idx: diff(idx, idx + n), seed)
    perm = stats.permutation_test(
        (np.arange(n), np.arange(n) + n),
        diff,
        permutation_type="samples",
        vectorized=True,
        n_resamples=N_RESAMPLES,
        batch=500,
        alternative="two-sided",
        rng=np.random.default_rng(seed + 1),
    )
    return {
        "difference": observed,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": float(perm.pvalue),
        "interval": method,
        "exact": bool(2**n <= N_RESAMPLES),
        # One comparison's verdict from its own p; a study re-reads it from its family's
        # Holm-adjusted p (mer.evaluation.study_table).
        "verdict": verdict(float(perm.pvalue)),
    }


ALPHA = 0.05


def verdict(p: float) -> str:
    return "difference" if p < ALPHA else "no evidence of a difference"


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (the same order as given): the i-th smallest of m
    is multiplied by m - i + 1, made non-decreasing in that order, capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out


def effective_subjects(clips_per_subject) -> float:
    """Kish's effective number of subjects, (sum n)^2 / sum n^2 over each subject's clips: the
    subjects' count when every subject held as many clips, fewer the more unequal they are."""
    n = np.asarray(clips_per_subject, dtype=np.float64)
    return float(n.sum() ** 2 / (n**2).sum()) if n.size and n.sum() else 0.0
