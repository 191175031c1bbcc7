"""Calibrated probabilities: temperature scaling fitted on a search's out-of-fold
predictions, its expected calibration error (ECE) before and after with intervals over
subjects (the reliability diagram of a model folder: mer.serving.packaging).

The out-of-fold predictions are the `outer` predictions of the chosen configuration at every
seed (each clip predicted by a fold model that never saw its subject: mer.evaluation.search). Logits
are recovered as log-probabilities (softmax is invariant to the constant lost). ECE: the
clip-weighted mean |accuracy - confidence| over BINS equal-width bins of the top-class
probability. Three figures: before; after with T fitted on all (in-sample); after with, for
each subject, T fitted on the other subjects only (cross-fitted, the honest one). Intervals:
a percentile bootstrap over subjects (all of a subject's clips and seeds together).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BINS = 10
RESAMPLES = 1000
SEED = 0
LOG_T_BOUNDS = (-3.0, 3.0)  # temperatures searched in [0.05, 20]


def log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0))


def scale(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature), rows."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = scale(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1.0))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of `labels`."""
    # scipy here, not at the top: predictor actors import this module for `scale`, and
    # scipy.optimize was a third of their start-up beyond torch (export fits, nothing else).
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda lt: nll(logits, labels, float(np.exp(lt))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
    )
    return float(np.exp(res.x))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per equal-width bin of the top-class probability: clips, mean confidence, accuracy."""
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == labels
    which = np.minimum((conf * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        out.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "clips": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else None,
                "accuracy": float(right[m].mean()) if m.any() else None,
            }
        )
    return out


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: clip-weighted mean |accuracy - confidence| over bins."""
    n = len(labels)
    return float(
        sum(
            b["clips"] / n * abs(b["accuracy"] - b["confidence"])
            for b in reliability(probs, labels, bins)
            if b["clips"]
        )
    )


def out_of_fold(exp, config_id: str) -> pd.DataFrame | None:
    """The configuration's outer (held-out subject) predictions at every seed with their
    probabilities: subject (dataset/subject), clip, seed, label, probs; None where the
    experiment saved no probabilities."""
    p = exp.outer(config_id)
    if "probs" not in p or not len(p) or p["probs"].isna().any():
        return None
    p = p.assign(subject=p["dataset"].astype(str) + "/" + p["subject"].astype(str))
    cols = ["subject", "clip", "seed", "label", "probs"]
    return p[cols].sort_values(["subject", "clip", "seed"]).reset_index(drop=True)


def _interval(subjects: np.ndarray, statistic) -> tuple[float, float]:
    keys = np.unique(subjects)
    rows = {k: np.flatnonzero(subjects == k) for k in keys}
    rng = np.random.default_rng(SEED)
    values = []
    for _ in range(RESAMPLES):
        draw = rng.choice(keys, len(keys), replace=True)
        values.append(statistic(np.concatenate([rows[k] for k in draw])))
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def calibrate(oof: pd.DataFrame) -> dict:
    """Temperature and ECE figures (see the module docstring) of out-of-fold predictions."""
    logits = log_probs(np.stack(oof["probs"].to_numpy()))
    labels = oof["label"].to_numpy(int)
    subjects = oof["subject"].to_numpy()
    t = fit_temperature(logits, labels)
    raw = scale(logits, 1.0)
    fitted = scale(logits, t)
    cross = np.zeros_like(raw)
    per_subject = {}
    for s in np.unique(subjects):
        m = subjects == s
        per_subject[str(s)] = fit_temperature(logits[~m], labels[~m]) if (~m).any() else t
        cross[m] = scale(logits[m], per_subject[str(s)])

    def figure(probs):
        lo, hi = _interval(subjects, lambda i: ece(probs[i], labels[i]))
        return {"value": ece(probs, labels), "lo": lo, "hi": hi}

    return {
        "method": "temperature scaling (one T for all classes), NLL on out-of-fold predictions",
        "temperature": t,
        "clips": int(len(oof)),
        "unique_clips": int(oof[["subject", "clip"]].drop_duplicates().shape[0]),
        "subjects": int(len(np.unique(subjects))),
        "seeds": sorted(int(s) for s in oof["seed"].unique()),
        "bins": BINS,
        "ece": {"before": figure(raw), "after": figure(fitted), "after_cross": figure(cross)},
        "reliability": {"before": reliability(raw, labels), "after": reliability(fitted, labels)},
        "interval": f"95 % percentile bootstrap over subjects, {RESAMPLES} resamples, seed {SEED}",
        "cross_fitted_temperatures": per_subject,
    }


def from_experiment(exp, config_id: str) -> dict:
    """calibrate() of the configuration's out-of-fold predictions, with where they came from;
    {"temperature": None, "status": why} where there are none with probabilities."""
    oof = out_of_fold(exp, config_id)
    source = {"experiment": exp.uri, "config_id": config_id, "kind": "outer"}
    if oof is None:
        return {
            "temperature": None,
            "status": "the experiment saved no out-of-fold probabilities",
            **source,
        }
    if oof["label"].nunique() < 2 or len(oof) < 2:
        return {"temperature": None, "status": "too few out-of-fold predictions", **source}
    return {**calibrate(oof), **source}
