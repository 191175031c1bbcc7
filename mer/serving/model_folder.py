"""The model folder: what a finished model is on disk, how it is written and read back.

`<root>/models/<name>/` (mer.layout.model_uri) holds

  model.pt          weights only: the classifier's state dict (mer.train.checkpoints; loading it
                    can run no code)
  model.pt2         portable: a torch.export program, uint8 key frames (N, K, S, S, 3) ->
                    class probabilities (N, classes), the input normalisation inside; it
                    loads with plain PyTorch (`torch.export.load(path).module()`), without
                    this repository
  config.yaml       the resolved config the weights were trained with
  model_card.json   classes and label mapping, input spec (key-frame settings, input mode,
                    normalisation), the config and every upstream hash, data provenance, the
                    LOSO / nested-LOSO scores with intervals beside the baselines, limitations
                    (mer.serving.model_card); written last: a folder without it is unfinished
  MODEL_CARD.md     the same, for people
  interpolator.pt   the learned interpolator, when the key frames are rendered with it
                    (keyframes.interpolation adaconv): inference builds key frames with it
  reference_features.npy  the training clips' unit fc7 embeddings: the out-of-distribution
                    score's neighbours (mer.serving.quality); the card's "trust" section holds every
                    quality threshold and the calibration
  reliability.png   the reliability diagram before and after calibration (mer.serving.calibration),
                    when the search saved out-of-fold probabilities

mer.serving.export (the final model's driver) writes a folder with `package`; inference and users
read one with `read_card` and `load_model`, without importing the driver. Portable format:
TorchScript is deprecated in the pinned PyTorch (2.13: torch.jit.trace/save/load warn
"switch to torch.export"), and ONNX would add two dependencies; a torch.export program needs
nothing beyond torch.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import torch
from torch import nn

from mer import layout, storage
from mer.config import NUM_CLASSES, PipelineConfig, from_dict
from mer.errors import InputError
from mer.folds import FoldRun
from mer.train.data import normalise

WEIGHTS = "model.pt"
PORTABLE = "model.pt2"
INTERPOLATOR = "interpolator.pt"  # only for key frames rendered by the learned interpolator
CARD = "model_card.json"
CARD_MD = "MODEL_CARD.md"
# The portable program and the PyTorch model on the same key frames: largest difference of a
# probability allowed (both run the same float32 operations; measured 0 on CPU here).
PORTABLE_TOLERANCE = 1e-5


# ---------------------------------------------------------------- the portable program


class Probabilities(nn.Module):
    """uint8 key frames (N, K, S, S, C) -> class probabilities (N, classes): the classifier
    with mer.train.data.to_tensor's normalisation in front and a softmax behind, so that the
    portable program needs no code of this repository."""

    def __init__(self, classifier: nn.Module, input: str) -> None:
        super().__init__()
        self.classifier = classifier
        self.input = input

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = normalise(frames.permute(0, 4, 1, 2, 3).float(), self.input)
        return torch.softmax(self.classifier(x).float(), dim=1)


def plain_classifier(cfg: PipelineConfig, state: dict, num_classes: int) -> nn.Module:
    """The classifier of `cfg` with `state` loaded, on the CPU, in eval mode (no placement
    hooks, no frozen-block bookkeeping: nothing trains it)."""
    from mer.train.models import build_classifier

    model = build_classifier(cfg, num_classes)
    model.load_state_dict(state)
    return model.eval()


def write_portable(model: nn.Module, cfg: PipelineConfig, uri: str, frames: np.ndarray) -> dict:
    """Export `model` (plain, eval) with torch.export to `uri`; check the program against the
    PyTorch model on `frames` (uint8 N, K, S, S, C) and return what the card says of it."""
    from mer.train.step import predict

    wrapped = Probabilities(model, cfg.model.input).eval()
    k, s = cfg.keyframes.k, cfg.keyframes.size
    example = torch.zeros((2, k, s, s, 3), dtype=torch.uint8)
    clips = torch.export.Dim("clips", min=1)
    with torch.no_grad():
        program = torch.export.export(wrapped, (example,), dynamic_shapes={"frames": {0: clips}})
    buf = io.BytesIO()
    torch.export.save(program, buf)
    blob = buf.getvalue()
    storage.write_bytes(uri, blob)
    # Read back, as a user would, and compare with the model's own evaluation.
    loaded = torch.export.load(io.BytesIO(blob)).module()
    with torch.no_grad():
        got = loaded(torch.from_numpy(np.ascontiguousarray(frames))).numpy()
    want = predict(model, frames, torch.device("cpu"), input=cfg.model.input)
    diff = float(np.abs(got - want).max()) if len(frames) else 0.0
    if not diff <= PORTABLE_TOLERANCE:
        raise RuntimeError(
            f"the exported program differs from the PyTorch model by {diff:.3g} "
            f"(> {PORTABLE_TOLERANCE:g}) on {len(frames)} clips; this is a bug"
        )
    return {
        "file": PORTABLE,
        "format": "torch.export ExportedProgram (torch.export.save)",
        "load": f"torch.export.load('{PORTABLE}').module()",
        "input": f"uint8 tensor (N, {k}, {s}, {s}, 3): key frames, RGB, N >= 1",
        "output": "float32 tensor (N, classes): class probabilities (softmax), rows sum to 1",
        "torch": torch.__version__,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "check": {
            "clips": int(len(frames)),
            "max_abs_diff": diff,
            "tolerance": PORTABLE_TOLERANCE,
            "against": "mer.train.step.predict on the PyTorch model (float32, CPU)",
        },
    }


# ---------------------------------------------------------------- the model folder


def package(
    folder: str,
    cfg: PipelineConfig,
    keyframes: str,
    run: FoldRun,
    *,
    name: str,
    training: dict,
    evaluation: dict | None = None,
    hashes: dict | None = None,
    calibration: dict | None = None,
    progress=None,
) -> dict:
    """Complete a model folder whose weights (<folder>/model.pt) `run` trained with cfg: its
    config.yaml, the portable program (checked against the weights), the quality reference
    of its training clips, the calibration (mer.serving.calibration.from_experiment, if given) and
    the card, written last. Returns the card."""
    from mer.keyframes.table import load_table
    from mer.serving import calibration as calib
    from mer.serving import model_card, quality
    from mer.train.checkpoints import load_state

    table = load_table(keyframes)
    blob = storage.read_bytes(storage.join(folder, WEIGHTS))
    model = plain_classifier(cfg, load_state(storage.join(folder, WEIGHTS)), _classes(cfg))
    storage.write_bytes(storage.join(folder, "config.yaml"), cfg.to_yaml().encode())
    # Real inputs for the check: the first key frames of the clips the run learnt from.
    check = table.frames[table.indices_of(run.train_subjects)[:16]]
    portable = write_portable(model, cfg, storage.join(folder, PORTABLE), check)
    weights = {
        "file": WEIGHTS,
        "format": "PyTorch state dict of mer.train.models.ClassifierC3D (torch.load weights_only)",
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    upstream = {
        "data": layout.data_hash(cfg),
        "keyframes": layout.keyframes_hash(cfg),
        "keyframes_table": table.meta.get("hash"),
        "prior": layout.prior_hash(cfg) if cfg.pretrain.enabled else None,
        "run": layout.run_hash(cfg, run),
        **(hashes or {}),
        "weights_sha256": weights["sha256"],
        "portable_sha256": portable["sha256"],
    }
    files = {"weights": weights, "portable": portable}
    if cfg.keyframes.interpolation == "adaconv":  # key frames need the learned interpolator
        files["interpolator"] = _copy_interpolator(cfg, folder)
        upstream["interpolator"] = layout.interpolator_hash(cfg)
    trust, feats = quality.reference(cfg, table, run.train_subjects, model, progress)
    buf = io.BytesIO()
    np.save(buf, feats.astype(np.float64))
    storage.write_bytes(storage.join(folder, quality.REFERENCE_FEATURES), buf.getvalue())
    cal = calibration or {"temperature": None, "status": "no search experiment given"}
    if cal.get("temperature") is not None:
        cal = {**cal, "diagram": calib.DIAGRAM}
        storage.write_bytes(storage.join(folder, calib.DIAGRAM), calib.diagram(cal))
    trust["calibration"] = cal
    card = model_card.build_card(
        cfg,
        name=name,
        training=training,
        data=model_card.data_provenance(cfg, keyframes, table, run.train_subjects),
        hashes=upstream,
        files=files,
        evaluation=evaluation,
    )
    card["trust"] = trust
    storage.write_bytes(storage.join(folder, CARD_MD), model_card.markdown(card).encode())
    storage.write_json(storage.join(folder, CARD), card)
    return card


def _copy_interpolator(cfg: PipelineConfig, folder: str) -> dict:
    blob = storage.read_bytes(layout.interpolator_file(cfg))
    storage.write_bytes(storage.join(folder, INTERPOLATOR), blob)
    return {
        "file": INTERPOLATOR,
        "format": "mer.keyframes.interpolator checkpoint: the learned interpolator that renders the key "
        "frames (keyframes.interpolation adaconv)",
        "sha256": hashlib.sha256(blob).hexdigest(),
    }


def _classes(cfg: PipelineConfig) -> int:
    return NUM_CLASSES[cfg.data.protocol]


def read_card(folder: str) -> dict:
    """The card of a finished model folder (local or s3://)."""
    from mer.serving import model_card

    uri = storage.join(folder, CARD)
    if not storage.exists(uri):
        raise InputError(
            f"{folder}: no finished model here ({CARD} missing); export one with jobs/export.py"
        )
    card = storage.read_json(uri)
    if card.get("format") != model_card.CARD_FORMAT:
        raise InputError(f"{uri}: unknown model card format {card.get('format')!r}")
    return card


def load_model(folder: str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(classifier in eval mode on `device`, card) of a model folder (local or s3://),
    placed as training-time evaluation placed it (mer.train.runtime.place)."""
    from mer.train.checkpoints import load_state
    from mer.train.runtime import Worker, place

    card = read_card(folder)
    cfg = from_dict(card["config"])
    device = torch.device(device)
    model = plain_classifier(cfg, load_state(storage.join(folder, WEIGHTS)), len(card["classes"]))
    place(model, Worker(0, 1, device), cfg.resources.channels_last)
    return model, card
