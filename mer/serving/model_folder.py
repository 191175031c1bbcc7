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

mer.serving.packaging writes a folder (`package`, called by mer.serving.export, the final
model's driver); inference and users read one with `read_card` and `load_model` from this
module, which imports neither the writer's libraries (scipy, matplotlib, the evaluation
package) nor the driver: a predictor actor starts with torch and the model alone. Portable format:
TorchScript is deprecated in the pinned PyTorch (2.13: torch.jit.trace/save/load warn
"switch to torch.export"), and ONNX would add two dependencies; a torch.export program needs
nothing beyond torch.
"""

from __future__ import annotations

import torch
from torch import nn

from mer import storage
from mer.config import PipelineConfig, from_dict
from mer.errors import InputError
from mer.train.checkpoints import load_state
from mer.train.models import build_classifier
from mer.train.runtime import Worker, place

WEIGHTS = "model.pt"
PORTABLE = "model.pt2"
INTERPOLATOR = "interpolator.pt"  # only for key frames rendered by the learned interpolator
CARD = "model_card.json"
CARD_MD = "MODEL_CARD.md"
DIAGRAM = "reliability.png"  # where the search saved out-of-fold probabilities
CARD_FORMAT = "mer-model-card/1"


def plain_classifier(cfg: PipelineConfig, state: dict, num_classes: int) -> nn.Module:
    """The classifier of `cfg` with `state` loaded, on the CPU, in eval mode (no placement
    hooks, no frozen-block bookkeeping: nothing trains it)."""

    model = build_classifier(cfg, num_classes)
    model.load_state_dict(state)
    return model.eval()


def read_card(folder: str) -> dict:
    """The card of a finished model folder (local or s3://)."""

    uri = storage.join(folder, CARD)
    if not storage.exists(uri):
        raise InputError(
            f"{folder}: no finished model here ({CARD} missing); export one with jobs/export.py"
        )
    card = storage.read_json(uri)
    if card.get("format") != CARD_FORMAT:
        raise InputError(f"{uri}: unknown model card format {card.get('format')!r}")
    return card


def load_model(folder: str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(classifier in eval mode on `device`, card) of a model folder (local or s3://),
    placed as training-time evaluation placed it (mer.train.runtime.place)."""

    card = read_card(folder)
    cfg = from_dict(card["config"])
    device = torch.device(device)
    model = plain_classifier(cfg, load_state(storage.join(folder, WEIGHTS)), len(card["classes"]))
    place(model, Worker(0, 1, device), cfg.resources.channels_last)
    return model, card
