"""Pooled UF1/UAR/accuracy against scikit-learn, and the per-dataset summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.metrics import confusion_matrix as sk_confusion

from mer.errors import InputError
from mer.metrics import accuracy, confusion_matrix, summarise, uar, uf1

C = 3


def _sk_uf1(t, p):
    return f1_score(t, p, average="macro", labels=list(range(C)), zero_division=0)


def _pooled_folds(seed: int) -> pd.DataFrame:
    """Predictions of several LOSO folds: one fold holds a single class, class 2 is never
    predicted, and the datasets differ in size."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset, subjects in (("casme2", 4), ("samm", 3), ("smic", 2)):
        for s in range(subjects):
            n = int(rng.integers(3, 9))
            label = rng.integers(0, C, n)
            if (dataset, s) == ("samm", 1):
                label[:] = 1  # a fold with one class only
            pred = np.where(rng.random(n) < 0.5, label, rng.integers(0, C, n))
            pred[pred == 2] = 0  # class 2 never predicted
            rows += [
                {"dataset": dataset, "subject": f"s{s}", "clip": f"c{i}", "label": t, "pred": q}
                for i, (t, q) in enumerate(zip(label, pred, strict=True))
            ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn_on_pooled_folds(seed):
    df = _pooled_folds(seed)
    t, p = df["label"].to_numpy(), df["pred"].to_numpy()
    assert 2 in t and 2 not in p
    assert uf1(t, p, C) == pytest.approx(_sk_uf1(t, p))
    assert uar(t, p, C) == pytest.approx(balanced_accuracy_score(t, p))
    assert accuracy(t, p, C) == pytest.approx(accuracy_score(t, p))
    np.testing.assert_array_equal(confusion_matrix(t, p, C), sk_confusion(t, p, labels=[0, 1, 2]))


def test_pooling_differs_from_averaging_folds():
    # The protocol pools clips before scoring; a per-fold mean would give another number.
    df = _pooled_folds(0)
    per_fold = [uf1(g["label"], g["pred"], C) for _, g in df.groupby(["dataset", "subject"])]
    assert uf1(df["label"], df["pred"], C) != pytest.approx(np.mean(per_fold))


def test_class_absent_from_truth_and_predictions():
    # Class 2 appears nowhere: F1 0 under zero_division=0 (it still counts in UF1's mean),
    # and UAR averages only the classes present in y_true.
    t = np.array([0, 0, 1, 1, 1])
    p = np.array([0, 1, 1, 1, 0])
    assert uf1(t, p, C) == pytest.approx(_sk_uf1(t, p))
    assert uf1(t, p, C) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert uar(t, p, C) == pytest.approx(balanced_accuracy_score(t, p))
    assert uar(t, p, C) == pytest.approx((1 / 2 + 2 / 3) / 2)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_single_class_predictions():
    t = np.array([1, 1, 1, 1])
    p = np.array([1, 1, 0, 1])
    assert uf1(t, p, C) == pytest.approx(_sk_uf1(t, p))
    assert uar(t, p, C) == pytest.approx(balanced_accuracy_score(t, p))


def test_summarise_overall_and_per_dataset_equal_sklearn():
    df = _pooled_folds(7)
    out = summarise(df, C)
    json.dumps(out)  # plain Python values only
    assert out["n"] == len(df)
    assert out["uf1"] == pytest.approx(_sk_uf1(df["label"], df["pred"]))
    assert out["uar"] == pytest.approx(balanced_accuracy_score(df["label"], df["pred"]))
    assert out["accuracy"] == pytest.approx(accuracy_score(df["label"], df["pred"]))
    assert out["confusion"] == sk_confusion(df["label"], df["pred"], labels=[0, 1, 2]).tolist()
    assert sorted(out["per_dataset"]) == ["casme2", "samm", "smic"]
    for name, sub in df.groupby("dataset"):
        got = out["per_dataset"][name]
        assert got["n"] == len(sub)
        assert got["uf1"] == pytest.approx(_sk_uf1(sub["label"], sub["pred"]))
        assert got["uar"] == pytest.approx(balanced_accuracy_score(sub["label"], sub["pred"]))
        assert got["accuracy"] == pytest.approx(accuracy_score(sub["label"], sub["pred"]))


def test_labels_out_of_range_are_clear_errors():
    with pytest.raises(InputError, match=r"y_pred\[2\]=3 is outside the classes 0..2"):
        uf1([0, 1, 2], [0, 1, 3], C)
    with pytest.raises(InputError, match=r"y_true\[0\]=-1"):
        uar([-1, 1], [0, 1], C)
    with pytest.raises(InputError, match="one per clip"):
        uf1([0, 1], [0], C)
    with pytest.raises(InputError, match="empty"):
        uf1([], [], C)
    with pytest.raises(InputError, match="integer class indices"):
        uf1(pd.Series([0, None], dtype="Int64"), [0, 1], C)
    with pytest.raises(InputError, match="lacks columns"):
        summarise(pd.DataFrame({"label": [0], "pred": [0]}), C)
