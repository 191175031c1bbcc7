"""The yardsticks every leaderboard shows, on the same folds and seeds as the method.

- majority: every held-out clip gets the most frequent class of the fold's training clips.
- linear: logistic regression on one difference image per clip, the apex key frame minus
  the onset key frame (grey, area-reduced to at most 32 x 32, standardised), fitted on the
  fold's training subjects. Its regularisation C is chosen by grouped cross-validation over
  those training subjects only (macro F1), classes weighted inversely to their frequency.
  It sees exactly the key frames the network sees, so it measures what a linear reading of
  the apex motion gets.
- lbp-top and flow-cnn: the field's yardsticks (mer.evaluation.field_baselines), on the same key frames.
majority, linear and lbp-top are deterministic: the same predictions are stored under every
seed, so paired comparisons with the method line up seed by seed; flow-cnn trains one network
per seed and fold run, on Ray Train like the method where the caller passes its resources
(the search stage does when training is placed on worker nodes; otherwise, and for the
difficulty card, in the process). Each baseline's folder holds _settings.json (its settings,
the key-frame table's
hash, BASELINES_VERSION): predictions made under other settings are deleted and recomputed,
never returned. They cost seconds to minutes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from mer import layout, provenance, storage
from mer.evaluation import field_baselines
from mer.folds import FoldRun
from mer.keyframes.table import ClipTable
from mer.progress import Counter, emit, tune_progress
from mer.provenance import platform
from mer.train.runtime import fan_out

BASELINES = ("majority", "linear", "lbp-top", "flow-cnn")
BASELINES_VERSION = 2  # 2: predictions keyed by settings; lbp-top and flow-cnn
SEEDED = ("flow-cnn",)  # baselines whose predictions depend on the seed
FEATURE_SIDE = 32
C_GRID = (0.001, 0.01, 0.1, 1.0)


def apex_minus_onset(table: ClipTable, side: int = FEATURE_SIDE) -> np.ndarray:
    """(N, side*side) float32: grey apex key frame minus grey onset key frame."""
    frames = table.frames.astype(np.float32)  # N, K, S, S, C
    grey = frames.mean(axis=-1)  # N, K, S, S
    diff = grey[np.arange(len(grey)), apex_slots(table)] - grey[:, 0]
    s = diff.shape[-1]
    if s > side:
        f = s // side
        diff = diff[:, : side * f, : side * f].reshape(len(diff), side, f, side, f).mean((2, 4))
    return diff.reshape(len(diff), -1)


def apex_slots(table: ClipTable) -> np.ndarray:
    """(N,) the key frame nearest each clip's apex (the annotated one, else the spotted)."""
    idx = np.stack([np.asarray(v, dtype=np.float64) for v in table.clips["keyframe_indices"]])
    return np.abs(idx - table.clips["apex"].to_numpy()[:, None]).argmin(axis=1)


def features_of(name: str, table: ClipTable) -> np.ndarray | None:
    """What a baseline reads, one row (or map) per clip; None for majority."""
    if name == "linear":
        return apex_minus_onset(table)
    if name == "lbp-top":
        return field_baselines.lbp_top_features(table.frames)
    if name == "flow-cnn":
        return field_baselines.flow_inputs(table.frames, apex_slots(table))
    return None


def settings_of(name: str, table: ClipTable) -> dict:
    """What a baseline's stored predictions are keyed by."""
    own = {"majority": {}, "linear": {"side": FEATURE_SIDE, "c_grid": list(C_GRID)}}
    record = own[name] if name in own else field_baselines.settings_record(name)
    return {
        "baseline": name,
        "version": BASELINES_VERSION,
        "keyframes": table.meta.get("hash"),
        **{f"{name}.{k}": v for k, v in record.items()},
    }


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
    name: str,
    table: ClipTable,
    features: np.ndarray | None,
    run: FoldRun,
    num_classes: int,
    seed: int = 0,
) -> pd.DataFrame:
    train = table.indices_of(run.train_subjects)
    test = table.indices_of(run.test_subjects)
    labels = table.clips["label"].to_numpy()
    groups = table.subject_keys[train]
    if name == "majority":
        probs = majority(labels[train], len(test), num_classes)
    elif name == "linear":
        probs = linear(features[train], labels[train], groups, features[test], num_classes)
    elif name == "lbp-top":
        probs = field_baselines.linear_svm(
            features[train], labels[train], groups, features[test], num_classes
        )
    elif name == "flow-cnn":
        probs = field_baselines.train_flow_cnn(
            features[train], labels[train], features[test], num_classes, seed
        )
    else:
        raise ValueError(f"no baseline named {name!r}; expected one of {BASELINES}")
    return prediction_frame(table.clips, test, probs, run)


def prediction_frame(clips: pd.DataFrame, test: np.ndarray, probs: np.ndarray, run: FoldRun):
    """One fold run's stored predictions: the held-out clips `test` (rows of `clips`, a key-
    frame table's clip columns) with their class probabilities."""
    held = clips.iloc[test]
    return pd.DataFrame(
        {
            "dataset": held["dataset"].to_numpy(),
            "subject": held["subject"].to_numpy(),
            "clip": held["clip"].to_numpy(),
            "label": held["label"].to_numpy().astype(int),
            "pred": probs.argmax(1).astype(int),
            "probs": list(probs.astype(float)),
            "run": run.id,
            "kind": run.kind,
            "outer": run.outer,
        }
    )


def write_predictions(preds: pd.DataFrame, seed: int, uri: str) -> None:
    """Store one fold run's baseline predictions under `seed`, with their provenance."""
    import pyarrow as pa

    for key, value in baseline_provenance().items():
        preds[key] = value
    storage.write_parquet(pa.Table.from_pandas(preds.assign(seed=seed), preserve_index=False), uri)


@dataclass(frozen=True)
class FlowCnnUnit:
    """One flow-cnn fit: a fold run's training clips -> its held-out clips, one seed, stored
    at `uri` (rows of the key-frame table)."""

    run: FoldRun
    seed: int
    uri: str
    train: tuple[int, ...]
    test: tuple[int, ...]


def flow_cnn_loop(config: dict) -> None:
    """Ray Train loop (one worker): fit and store every flow-cnn unit of config["units"]
    not stored yet, each on one thread as in the driver (the same digits), reporting each."""
    import ray.train

    features, clips = config["features"], config["clips"]
    labels = clips["label"].to_numpy()
    for unit in config["units"]:
        if not storage.exists(unit.uri):
            train, test = np.asarray(unit.train), np.asarray(unit.test)
            with one_thread():
                probs = field_baselines.train_flow_cnn(
                    features[train], labels[train], features[test], config["classes"], unit.seed
                )
            write_predictions(prediction_frame(clips, test, probs, unit.run), unit.seed, unit.uri)
        ray.train.report({"unit": f"{unit.run.id}/seed-{unit.seed}"})


def train_flow_cnn_on_ray(
    out: str, table: ClipTable, units: list[FlowCnnUnit], num_classes: int, resources, progress
) -> None:
    """Fit flow-cnn's units in one Ray Train run (one worker: each unit is a small network on
    one thread) under <out>/_runs, as the training stages fan out theirs."""
    counter = Counter("flow-cnn", len(units), progress)
    config = {
        "features": features_of("flow-cnn", table),
        "clips": table.clips[["dataset", "subject", "clip", "label"]].reset_index(drop=True),
        "classes": num_classes,
        "units": units,
    }
    fan_out(
        flow_cnn_loop,
        [(config, "flow-cnn")],
        dataclasses.replace(resources, workers=1, gpus_per_worker=0.0),
        storage.join(out, "_runs"),
        "_tune",
        tune_progress(counter, lambda _config, result: f"fold runs: {result['unit']}"),
    )


@contextlib.contextmanager
def one_thread():
    """BLAS/OpenMP pools and torch's intra-op pool (flow-cnn) at one thread, restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(n)


def baseline_provenance() -> dict:
    """What a baseline prediction records (mer.provenance): the code, the platform and its one
    thread. Only code and platform are checked when rows are combined: baselines always run
    on one thread, whatever the fold runs beside them use."""
    import torch

    return {**provenance.record(), "platform": platform(torch.device("cpu")), "threads": 1}


def run_baselines(
    exp: str,
    table: ClipTable,
    runs: list[FoldRun],
    seeds: list[int],
    num_classes: int,
    names: tuple[str, ...] = BASELINES,
    *,
    resources=None,
    progress=emit,
) -> None:
    """Predictions of every baseline for every outer run, stored like a configuration's
    under <exp>/baselines/<name>/; skipped where present under the same settings, deleted
    and recomputed where made under others (_settings.json says which). With `resources`
    (a config's ResourcesConfig) flow-cnn trains on Ray Train like the method
    (train_flow_cnn_on_ray), else in this process; either gives the same predictions."""

    outer = [r for r in runs if r.kind == "outer"]
    if table.frames.shape[1] < 3:  # LBP on the XT / YT planes needs a frame on each side
        names = tuple(n for n in names if n != "lbp-top")
    for name in names:
        out = layout.baseline_dir(exp, name)
        settings = settings_of(name, table)
        if layout.made_under_other_settings(out, settings) is not None or (
            storage.exists(out) and not storage.exists(storage.join(out, "_settings.json"))
        ):
            storage.remove(out, recursive=True)  # made by other settings or older code
        if name == "flow-cnn" and resources is not None:
            units = [
                FlowCnnUnit(
                    run,
                    seed,
                    layout.predictions_uri(out, seed, run.id),
                    tuple(int(i) for i in table.indices_of(run.train_subjects)),
                    tuple(int(i) for i in table.indices_of(run.test_subjects)),
                )
                for run in outer
                for seed in seeds
            ]
            units = [u for u in units if not storage.exists(u.uri)]
            if units:
                train_flow_cnn_on_ray(out, table, units, num_classes, resources, progress)
            layout.claim(out, settings, f"{name} baseline predictions", "rerun")
            continue
        features = None
        for run in outer:
            uris = [layout.predictions_uri(out, s, run.id) for s in seeds]
            if all(storage.exists(u) for u in uris):
                continue
            if features is None:
                features = features_of(name, table)
            for seed, uri in zip(seeds, uris, strict=True):
                if storage.exists(uri):
                    continue
                with one_thread():  # the same digits on any core count
                    preds = predict_run(name, table, features, run, num_classes, seed)
                write_predictions(preds, seed, uri)
                if name not in SEEDED:  # the same predictions under every seed
                    for other, other_uri in zip(seeds, uris, strict=True):
                        if other != seed and not storage.exists(other_uri):
                            write_predictions(preds.copy(), other, other_uri)
                    break
        layout.claim(out, settings, f"{name} baseline predictions", "rerun")
