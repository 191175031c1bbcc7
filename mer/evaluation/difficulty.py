"""The difficulty card of a synthetic set: what simple readers of its key frames reach.

From the key-frame table the key-frame stage built (mer.keyframes.preprocess) and the generator's
ground truth, under leave-one-subject-out folds keyed dataset/subject (the study's), pooled
UF1 and UAR (mer.metrics.summarise) of:

  majority        the training subjects' most frequent class.
  linear          logistic regression on the apex - onset key-frame difference
                  (mer.evaluation.baselines.linear: grey, 32 x 32, C by grouped CV on the training
                  subjects).
  multi-linear    the same on every key frame minus the onset (K - 1 differences, 16 x 16
                  each): what a linear reading of the whole sequence gets.
  multi-linear-shuffled
                  the same with each clip's K key frames (onset included, after taking the
                  differences) in a random order: a cheap control of what time order adds.
  oracle-energy   the same on two numbers per clip, the log upper- and lower-face motion
                  energy at the apex from ground_truth.csv (the generator's own AU
                  displacement, nuisances excluded): how much the face moves where, nothing
                  of direction or time.
  lbp-top         mer.evaluation.field_baselines (LBP-TOP + linear SVM).
  flow-cnn        mer.evaluation.field_baselines (onset-apex flow and strain + shallow CNN), seed 0.
  method          a small C3D (mer.train.models; width CardSettings.width, onset-delta input)
                  trained from scratch for CardSettings.epochs: the method's backbone at a
                  card's budget, not the tuned method.
  method-shuffled the same with each clip's K key frames in a random order (the same order
                  for the clip in every epoch): what is left without time order. It must
                  fall to chance where the classes differ only in time (preset dynamics).

It also counts key-frame positions that fall between two frames (interpolated).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from mer import storage
from mer.evaluation import baselines
from mer.folds import FoldRun
from mer.keyframes.table import ClipTable
from mer.metrics import summarise
from mer.train.data import to_tensor
from mer.train.models import C3D

ROWS = (
    "majority",
    "linear",
    "multi-linear",
    "multi-linear-shuffled",
    "oracle-energy",
    "lbp-top",
    "flow-cnn",
    "method",
    "method-shuffled",
)
MULTI_SIDE = 16


@dataclass(frozen=True)
class CardSettings:
    width: float = 0.125  # C3D channel multiplier of the card's method rows
    epochs: int = 15
    batch_size: int = 16
    lr: float = 5e-4
    seed: int = 0
    rows: tuple[str, ...] = ROWS


def multi_frame_differences(
    table: ClipTable, side: int = MULTI_SIDE, shuffle_seed: int | None = None
) -> np.ndarray:
    """(N, (K-1) * side^2): every key frame minus the onset key frame, grey, area-reduced;
    with `shuffle_seed`, all K differences (the onset's zeros included) of each clip in a
    random order (N, K * side^2)."""
    grey = table.frames.astype(np.float32).mean(axis=-1)  # N,K,S,S
    diff = grey[:, 1:] - grey[:, :1]
    if shuffle_seed is not None:
        diff = grey - grey[:, :1]
        order = _shuffled_orders(len(diff), diff.shape[1], shuffle_seed)
        diff = np.take_along_axis(diff, order[:, :, None, None], axis=1)
    n, k, s, _ = diff.shape
    if s > side:
        f = s // side
        diff = diff[..., : side * f, : side * f].reshape(n, k, side, f, side, f).mean((3, 5))
    return diff.reshape(n, -1)


def oracle_energy(table: ClipTable, truth: pd.DataFrame) -> np.ndarray:
    """(N, 2) log upper/lower motion energy of each clip of the table (from ground truth)."""
    key = truth.assign(subject=truth["subject"].astype(str), clip=truth["clip"].astype(str))
    key = key.set_index(["subject", "clip"])[["upper_energy", "lower_energy"]]
    rows = pd.MultiIndex.from_arrays(
        [table.clips["subject"].astype(str), table.clips["clip"].astype(str)]
    )
    values = key.reindex(rows).to_numpy(float)
    if np.isnan(values).any():
        raise ValueError("some key-frame clips have no ground_truth.csv row")
    return np.log(values + 1e-6)


def _shuffled_orders(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 31])
    return np.stack([rng.permutation(k) for _ in range(n)])


def _method_inputs(table: ClipTable, shuffle: bool, seed: int) -> torch.Tensor:

    x = to_tensor(table.frames, input="delta")  # N,C,K,S,S
    if shuffle:
        order = torch.from_numpy(_shuffled_orders(len(x), x.shape[2], seed))
        x = torch.stack([clip[:, o] for clip, o in zip(x, order, strict=True)])
    return x


def train_method(
    x: torch.Tensor, y: np.ndarray, train: np.ndarray, test: np.ndarray, n: int, s: CardSettings
) -> np.ndarray:
    """Class probabilities of the card's small C3D, trained from scratch on `train`."""

    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    _, c, k, size, _ = x.shape
    body = C3D(in_channels=c, frames=k, size=size, width=s.width, batch_norm=True, dropout=0.0)
    model = nn.Sequential(body, nn.Linear(body.fc_dim, n))
    counts = np.bincount(y[train], minlength=n).astype(np.float64)
    weight = np.where(counts > 0, counts.sum() / (n * np.maximum(counts, 1)), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weight, dtype=torch.float32))
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    yt = torch.from_numpy(y.astype(np.int64))
    idx = torch.from_numpy(train)
    model.train()
    for _ in range(s.epochs):
        order = idx[torch.randperm(len(idx), generator=gen)]
        for i in range(0, len(order), s.batch_size):
            b = order[i : i + s.batch_size]
            if len(b) < 2:  # batch norm needs two clips
                continue
            opt.zero_grad()
            loss_fn(model(x[b]), yt[b]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(x[torch.from_numpy(test)]), 1).double().numpy()


def card(
    table: ClipTable, truth: pd.DataFrame, runs: list[FoldRun], s: CardSettings = CardSettings()
) -> dict:
    """Pooled LOSO scores of every row of s.rows, and the table's key-frame statistics."""
    n_cls = 3
    labels = table.clips["label"].to_numpy()
    feats: dict[str, object] = {}
    preds: dict[str, np.ndarray] = {r: np.full(len(labels), -1) for r in s.rows}
    for name in s.rows:
        if name in ("majority", "linear", "lbp-top", "flow-cnn"):
            feats[name] = baselines.features_of(name, table)
        elif name == "multi-linear":
            feats[name] = multi_frame_differences(table)
        elif name == "multi-linear-shuffled":
            feats[name] = multi_frame_differences(table, shuffle_seed=s.seed)
        elif name == "oracle-energy":
            feats[name] = oracle_energy(table, truth)
        else:
            feats[name] = _method_inputs(table, name == "method-shuffled", s.seed)
    for run in runs:
        train = table.indices_of(run.train_subjects)
        test = table.indices_of(run.test_subjects)
        groups = table.subject_keys[train]
        for name in s.rows:
            x = feats[name]
            if name in ("majority", "linear", "lbp-top", "flow-cnn"):
                p = baselines.predict_run(name, table, x, run, n_cls, s.seed)["probs"]
                probs = np.stack(p.to_list())
            elif name in ("multi-linear", "multi-linear-shuffled", "oracle-energy"):
                probs = baselines.linear(x[train], labels[train], groups, x[test], n_cls)
            else:
                probs = train_method(x, labels, train, test, n_cls, s)
            preds[name][test] = probs.argmax(1)
    clips = table.clips[["dataset", "subject", "clip", "label"]]
    scores = {}
    for name in s.rows:
        sc = summarise(clips.assign(pred=preds[name]), n_cls)
        scores[name] = {k: sc[k] for k in ("uf1", "uar", "accuracy", "n")}
    idx = np.concatenate([np.asarray(v, float) for v in table.clips["keyframe_indices"]])
    return {
        "clips": int(len(labels)),
        "subjects": int(len(np.unique(table.subject_keys))),
        "folds": len(runs),
        "class_counts": np.bincount(labels, minlength=n_cls).tolist(),
        "keyframes": {
            "positions": int(idx.size),
            "between_frames": int(np.sum(np.abs(idx - np.round(idx)) > 1e-6)),
        },
        "settings": {**asdict(s), "rows": list(s.rows)},
        "scores": scores,
    }


def markdown(cards: dict[str, dict]) -> str:
    """One table: a row per preset, a column per reader (UF1, UAR beneath in brackets)."""
    rows = next(iter(cards.values()))["settings"]["rows"] if cards else list(ROWS)
    head = "| preset | clips | between-frame key frames | " + " | ".join(rows) + " |"
    out = [head, "|" + "---|" * (3 + len(rows))]
    for preset, c in cards.items():
        kf = c["keyframes"]
        cells = [
            f"{c['scores'][r]['uf1']:.3f} ({c['scores'][r]['uar']:.3f})" if r in c["scores"] else ""
            for r in rows
        ]
        out.append(
            f"| {preset} | {c['clips']} | {kf['between_frames']}/{kf['positions']} | "
            + " | ".join(cells)
            + " |"
        )
    out.append("")
    out.append("UF1 (UAR) pooled over leave-one-subject-out folds; chance UF1 is about 0.33.")
    return "\n".join(out) + "\n"


def write(out: str, preset: str, result: dict) -> None:
    storage.write_json(storage.join(out, f"{preset}.json"), result)
    storage.write_bytes(storage.join(out, f"{preset}.md"), markdown({preset: result}).encode())
