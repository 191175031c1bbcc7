"""What a prior learnt, without training anything on it: a k-nearest-neighbour probe.

Each held-out clip is classed by the majority label of its k nearest clips among the prior's
own training clips, by cosine similarity of the backbone's fc7 features (what target
learning starts from; the siamese projection is not saved with a prior). A prior whose
features separate the classes across subjects scores above the majority class; one that
learnt nothing scores about where a random network does. Prior learning records it for
every prior it learns (mer.train.pretrain: `probe` in the prior's _done.json, printed by the
pretrain stage), on the held-out subjects of the folds that start from that prior.
"""

from __future__ import annotations

import numpy as np
import torch

from mer.train import data

K = 5


@torch.no_grad()
def features(backbone, frames, idx: np.ndarray, device, *, input: str, batch_size: int = 64):
    """L2-normalised fc7 features (N, D) as a numpy array of the clips `idx` of `frames` (a
    data.Frames or an array), in eval mode (the mode is restored after)."""
    was = backbone.training
    backbone.eval()
    try:
        out = [
            backbone.features(data.to_tensor(frames[idx[i : i + batch_size]], device, input))
            for i in range(0, len(idx), batch_size)
        ]
    finally:
        backbone.train(was)
    if not out:
        return np.zeros((0, 1), dtype=np.float32)
    return torch.nn.functional.normalize(torch.cat(out).float(), dim=1).cpu().numpy()


def knn_predict(ref: np.ndarray, ref_labels: np.ndarray, test: np.ndarray, classes: int,
                k: int = K) -> np.ndarray:  # fmt: skip
    """The majority label of each test row's k most similar reference rows (rows unit-norm:
    cosine); a tie goes to the lower label."""
    if len(test) == 0:
        return np.zeros(0, dtype=np.int64)
    near = np.argsort(-(test @ ref.T), axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(test), classes))
    for j in range(near.shape[1]):
        np.add.at(votes, (np.arange(len(test)), ref_labels[near[:, j]]), 1.0)
    return votes.argmax(axis=1).astype(np.int64)


def knn_probe(backbone, frames, labels: np.ndarray, ref: np.ndarray, test: np.ndarray, device,
              *, input: str, classes: int, k: int = K) -> np.ndarray:  # fmt: skip
    """Predicted labels of the clips `test` from their k nearest among the clips `ref`."""
    z_ref = features(backbone, frames, ref, device, input=input)
    z_test = features(backbone, frames, test, device, input=input)
    return knn_predict(z_ref, labels[ref], z_test, classes, k)


def summary(pred: np.ndarray, truth: np.ndarray, classes: int, subjects: list[str],
            k: int = K) -> dict:  # fmt: skip
    """The record a prior keeps: accuracy and UF1 of the probe, the clips and subjects it ran
    on, and the majority-class share of those clips (what always guessing one class gets).
    No held-out clip (a fold without test clips): the counts alone."""
    from mer import metrics

    record = {"k": k, "clips": int(len(truth)), "subjects": sorted(subjects)}
    if len(truth) == 0:
        return record
    return {
        **record,
        "accuracy": metrics.accuracy(truth, pred, classes),
        "uf1": metrics.uf1(truth, pred, classes),
        "majority_share": float(np.bincount(truth, minlength=classes).max() / len(truth)),
    }
