"""The yardsticks every leaderboard shows, on the same folds and seeds as the method.

- majority: every held-out clip gets the most frequent class of the fold's training clips.
- linear: logistic regression on one difference image per clip, the apex key frame minus
  the onset key frame (grey, area-reduced to at most 32 x 32, standardised), fitted on the
  fold's training subjects. Its regularisation C is chosen by grouped cross-validation over
  those training subjects only (macro F1), classes weighted inversely to their frequency.
  It sees exactly the key frames the network sees, so it measures what a linear reading of
  the apex motion gets.
Both are deterministic: the same predictions are stored under every seed, so paired
comparisons with the method line up seed by seed. They cost seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mer import layout, provenance, storage
from mer.keyframes.table import ClipTable

BASELINES = ("majority", "linear")
FEATURE_SIDE = 32
C_GRID = (0.001, 0.01, 0.1, 1.0)


def apex_minus_onset(table: ClipTable, side: int = FEATURE_SIDE) -> np.ndarray:
    """(N, side*side) float32: grey apex key frame minus grey onset key frame."""
    frames = table.frames.astype(np.float32)  # N, K, S, S, C
    grey = frames.mean(axis=-1)  # N, K, S, S
    idx = np.stack([np.asarray(v, dtype=np.float64) for v in table.clips["keyframe_indices"]])
    apex = np.abs(idx - table.clips["apex"].to_numpy()[:, None]).argmin(axis=1)
    diff = grey[np.arange(len(grey)), apex] - grey[:, 0]
    s = diff.shape[-1]
    if s > side:
        f = s // side
        diff = diff[:, : side * f, : side * f].reshape(len(diff), side, f, side, f).mean((2, 4))
    return diff.reshape(len(diff), -1)


def majority(train_labels: np.ndarray, n_test: int, num_classes: int) -> np.ndarray:
    probs = np.zeros((n_test, num_classes))
    probs[:, np.bincount(train_labels, minlength=num_classes).argmax()] = 1.0
    return probs


def linear(
    x_train: np.ndarray,
    y_train: np.ndarray,
    groups: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
) -> np.ndarray:
    """Class probabilities (n_test, num_classes) of the grouped-CV logistic regression."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present = np.unique(y_train)
    if len(present) < 2:
        return majority(y_train, len(x_test), num_classes)
    k = min(3, len(np.unique(groups)))
    if k >= 2:
        splits = list(GroupKFold(n_splits=k).split(x_train, y_train, groups))
        clf = LogisticRegressionCV(
            Cs=list(C_GRID),
            l1_ratios=(0.0,),
            cv=splits,
            scoring="f1_macro",
            class_weight="balanced",
            max_iter=2000,
            use_legacy_attributes=False,
        )
    else:
        clf = LogisticRegression(C=0.01, class_weight="balanced", max_iter=2000)
    model = make_pipeline(StandardScaler(), clf).fit(x_train, y_train)
    probs = np.zeros((len(x_test), num_classes))
    probs[:, model.classes_] = model.predict_proba(x_test)
    return probs


def predict_run(
    name: str, table: ClipTable, features: np.ndarray, run: dict, num_classes: int
) -> pd.DataFrame:
    train = table.indices_of(run["train_subjects"])
    test = table.indices_of(run["test_subjects"])
    labels = table.clips["label"].to_numpy()
    if name == "majority":
        probs = majority(labels[train], len(test), num_classes)
    else:
        groups = table.subject_keys[train]
        probs = linear(features[train], labels[train], groups, features[test], num_classes)
    clips = table.clips.iloc[test]
    return pd.DataFrame(
        {
            "dataset": clips["dataset"].to_numpy(),
            "subject": clips["subject"].to_numpy(),
            "clip": clips["clip"].to_numpy(),
            "label": labels[test].astype(int),
            "pred": probs.argmax(1).astype(int),
            "probs": list(probs.astype(float)),
            "run": run["id"],
            "kind": run.get("kind", "outer"),
            "outer": run.get("outer", run["id"]),
        }
    )


def baseline_provenance() -> dict:
    """What a baseline prediction records (mer.provenance): the code, the platform and its one
    thread. Only code and platform are checked when rows are combined: baselines always run
    on one thread, whatever the fold runs beside them use."""
    import torch

    from mer.train.runtime import platform

    return {**provenance.record(), "platform": platform(torch.device("cpu")), "threads": 1}


def run_baselines(
    exp: str, table: ClipTable, runs: list[dict], seeds: list[int], num_classes: int
) -> None:
    """Predictions of every baseline for every outer run, stored like a configuration's
    under <exp>/baselines/<name>/ (skipped where present)."""
    import pyarrow as pa

    outer = [r for r in runs if r.get("kind", "outer") == "outer"]
    features = None
    for name in BASELINES:
        out = layout.baseline_dir(exp, name)
        for run in outer:
            uris = [layout.predictions_uri(out, s, run["id"]) for s in seeds]
            if all(storage.exists(u) for u in uris):
                continue
            if features is None and name == "linear":
                features = apex_minus_onset(table)
            with threadpool_limits(1):  # one thread: the same digits on any core count
                preds = predict_run(name, table, features, run, num_classes)
            for key, value in baseline_provenance().items():
                preds[key] = value
            for seed, uri in zip(seeds, uris, strict=True):
                table_ = pa.Table.from_pandas(preds.assign(seed=seed), preserve_index=False)
                storage.write_parquet(table_, uri)
