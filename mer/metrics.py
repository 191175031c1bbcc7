"""Pooled MER metrics: confusion matrix, UF1, UAR, accuracy, and a per-dataset summary.

MEGC2019 protocol (See, Yap et al., "MEGC 2019 - The Second Facial Micro-Expressions Grand
Challenge", FG 2019): predictions of all LOSO folds are pooled before scoring.
UF1 (unweighted F1): per class, TP/FP/FN summed over all clips, F1_c = 2TP / (2TP + FP + FN),
mean over all C classes; a class with TP + FP + FN == 0 scores 0 (scikit-learn's
f1_score(average="macro", labels=range(C), zero_division=0)).
UAR (unweighted average recall): per class, correct / count, mean over the classes present
in y_true (scikit-learn's balanced_accuracy_score).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mer.errors import InputError

PREDICTION_COLUMNS = ("dataset", "subject", "clip", "label", "pred")


def _labels(y: Sequence[int] | np.ndarray, name: str, num_classes: int) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {a.shape}.")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if (
            not np.issubdtype(a.dtype, np.number)
            or not np.all(np.isfinite(a))
            or np.any(a != np.round(a))
        ):
            raise InputError(
                f"{name} must hold integer class indices with no missing values (dtype {a.dtype})."
            )
    a = a.astype(np.int64)
    bad = (a < 0) | (a >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"{name}[{i}]={a[i]} is outside the classes 0..{num_classes - 1}; check the label "
            "mapping or num_classes."
        )
    return a


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """C x C counts, rows are true classes and columns predicted ones (scikit-learn's layout)."""
    if num_classes < 1:
        raise InputError(f"num_classes={num_classes} must be at least 1.")
    t = _labels(y_true, "y_true", num_classes)
    p = _labels(y_pred, "y_pred", num_classes)
    if t.shape != p.shape:
        raise InputError(f"y_true has {t.size} labels but y_pred has {p.size}; pass one per clip.")
    if t.size == 0:
        raise InputError("no predictions to score: y_true and y_pred are empty.")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def _uf1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def per_class_f1(cm: np.ndarray) -> list[float]:
    """F1 of each class of a confusion matrix (0 for a class never true nor predicted)."""
    tp = np.diag(cm).astype(np.float64)
    denom = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0).tolist()


def _uar(cm: np.ndarray) -> float:
    support = cm.sum(axis=1)
    present = support > 0
    return float((np.diag(cm)[present] / support[present]).mean())


def _accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / cm.sum())


def uf1(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> float:
    """Unweighted (macro) F1 over all `num_classes` classes of pooled predictions."""
    return _uf1(confusion_matrix(y_true, y_pred, num_classes))


def uar(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> float:
    """Unweighted average recall over the classes present in `y_true`."""
    return _uar(confusion_matrix(y_true, y_pred, num_classes))


def accuracy(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> float:
    """Fraction of clips predicted correctly."""
    return _accuracy(confusion_matrix(y_true, y_pred, num_classes))


def _scores(cm: np.ndarray) -> dict:
    return {
        "uf1": _uf1(cm),
        "uar": _uar(cm),
        "accuracy": _accuracy(cm),
        "n": int(cm.sum()),
    }


def summarise(predictions: pd.DataFrame, num_classes: int) -> dict:
    """Pooled scores of a predictions table (columns dataset, subject, clip, label, pred).

    Returns {uf1, uar, accuracy, n, confusion (rows true, columns predicted),
    per_dataset: {dataset: {uf1, uar, accuracy, n}}}, all plain Python values (JSON-ready).
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise InputError(
            f"predictions table lacks columns {missing}; it needs {list(PREDICTION_COLUMNS)}."
        )
    cm = confusion_matrix(predictions["label"], predictions["pred"], num_classes)
    out = _scores(cm)
    out["confusion"] = cm.tolist()
    out["per_dataset"] = {
        str(name): _scores(confusion_matrix(group["label"], group["pred"], num_classes))
        for name, group in predictions.groupby("dataset", sort=True)
    }
    return out
