"""The predictor actor of batch inference (mer.serving.inference): a batch of key frames ->
class probabilities, calibrated, with the out-of-distribution score.

Kept apart from the driver so that a predictor imports torch and the model folder's reader
alone: through the driver it also imported scipy and the evaluation package (about a second
of CPU on every predictor's start, beside key-frame actors that need every core).
tests/test_inference.py checks what this module leaves unimported.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from mer import storage
from mer.serving.calibration import scale
from mer.serving.model_folder import load_model
from mer.serving.quality import REFERENCE_FEATURES, forward, ood_scores
from mer.train.runtime import set_threads


class Predictor:
    """Ray Data actor holding the model: a batch of key frames -> class probabilities
    (calibrated with the card's temperature, where it has one; raw_prob_<class>
    uncalibrated) and the out-of-distribution score (mer.serving.quality)."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 32, cpus: float = 1):

        set_threads(cpus)
        self.device = torch.device(device)
        self.model, card = load_model(model, self.device)
        self.classes = list(card["classes"])
        self.input = card["config"]["model"]["input"]
        self.amp = bool(card["config"]["finetune"]["amp"]) and self.device.type == "cuda"
        self.batch_size = batch_size
        self.temperature = (card.get("trust") or {}).get("calibration", {}).get("temperature")
        self.reference = None
        if card.get("trust"):
            blob = storage.read_bytes(storage.join(model, REFERENCE_FEATURES))
            self.reference = np.load(io.BytesIO(blob))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:

        ok = np.asarray([r == "" for r in batch["reason"]], dtype=bool)
        probs = np.full((len(ok), len(self.classes)), np.nan)
        raw, ood = probs.copy(), np.full(len(ok), np.nan)
        if ok.any():
            logits, feats = forward(
                self.model,
                batch["frames"][ok],
                self.device,
                amp=self.amp,
                input=self.input,
                batch_size=self.batch_size,
            )
            raw[ok] = scale(logits, 1.0)
            probs[ok] = scale(logits, self.temperature) if self.temperature else raw[ok]
            if self.reference is not None:
                ood[ok] = ood_scores(feats, self.reference)
        pred = np.where(ok, np.nan_to_num(probs, nan=-1.0).argmax(1), -1)
        out = {c: batch[c] for c in batch if c != "frames"}
        for j, name in enumerate(self.classes):
            out[f"prob_{name}"] = probs[:, j]
            out[f"raw_prob_{name}"] = raw[:, j]
        out["ood_score"] = ood
        out["pred"] = pred.astype(np.int64)
        out["pred_class"] = np.asarray(
            [self.classes[p] if p >= 0 else "" for p in pred], dtype=object
        )
        return out
