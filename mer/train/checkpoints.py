"""Checkpoints: the artifact between prior learning and target learning (and the final model).

A checkpoint is a dict of tensors and plain values written with `torch.save`, read back with
`weights_only=True`, so loading one can never run code. A prior-learning folder (see
mer.layout.prior_dir) holds
  prior.pt       the backbone weights target learning starts from
  _done.json     training subjects and per-epoch metrics; written last (done iff present)
Per-epoch model and optimiser states, for resumption, are Ray Train checkpoints of the run
that learns the prior (pretrain/_runs/), which keeps the last two.
"""

from __future__ import annotations

import io

import torch

from mer import storage


def save_state(obj: dict, uri: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    storage.write_bytes(uri, buf.getvalue())


def load_state(uri: str) -> dict:
    # weights_only: a checkpoint can never run code on load (tensors and plain types only).
    return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)


def prior_file(folder: str) -> str:
    return storage.join(folder, "prior.pt")


def done_record(folder: str) -> dict | None:
    uri = storage.join(folder, "_done.json")
    return storage.read_json(uri) if storage.exists(uri) else None


def is_done(folder: str, train_subjects: list[str]) -> bool:
    """Prior learning in `folder` finished, on exactly these training subjects."""
    done = done_record(folder)
    return done is not None and done.get("train_subjects") == sorted(train_subjects)


def mark_done(
    folder: str, train_subjects: list[str], history: list[dict], probe: dict | None = None
) -> None:
    """A prior is finished: its training subjects, epoch history and, when given, what the
    k-NN probe of its held-out subjects found (mer.train.probe)."""
    record = {"train_subjects": sorted(train_subjects), "history": history}
    storage.write_json(
        storage.join(folder, "_done.json"), record if probe is None else {**record, "probe": probe}
    )
