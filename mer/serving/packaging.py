"""Writing a model folder (mer.serving.model_folder says what it holds and reads it): the
portable program, checked against the weights; the quality reference of the training clips;
the calibration and its reliability diagram; the card, written last. mer.serving.export (the
final model's driver) calls `package`.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import torch
from torch import nn

from mer import layout, storage
from mer.config import NUM_CLASSES, PipelineConfig
from mer.evaluation.results_report import figure_png, private_matplotlib_cache
from mer.folds import FoldRun
from mer.keyframes.table import load_table
from mer.serving import model_card, quality
from mer.serving.model_folder import (
    CARD,
    CARD_MD,
    DIAGRAM,
    INTERPOLATOR,
    PORTABLE,
    WEIGHTS,
    plain_classifier,
)
from mer.train.checkpoints import load_state
from mer.train.data import normalise
from mer.train.step import predict

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


def write_portable(model: nn.Module, cfg: PipelineConfig, uri: str, frames: np.ndarray) -> dict:
    """Export `model` (plain, eval) with torch.export to `uri`; check the program against the
    PyTorch model on `frames` (uint8 N, K, S, S, C) and return what the card says of it."""

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
        cal = {**cal, "diagram": DIAGRAM}
        storage.write_bytes(storage.join(folder, DIAGRAM), reliability_diagram(cal))
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


def reliability_diagram(cal: dict) -> bytes:
    """The reliability diagram (PNG) before and after calibration."""
    private_matplotlib_cache()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for ax, key, title in (
        (axes[0], "before", "before"),
        (axes[1], "after", f"after (T = {cal['temperature']:.2f})"),
    ):
        bins = cal["reliability"][key]
        e = cal["ece"][key]
        centres = [(b["low"] + b["high"]) / 2 for b in bins]
        acc = [b["accuracy"] or 0.0 for b in bins]
        ax.bar(centres, acc, width=1 / len(bins), edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        for b, c in zip(bins, centres, strict=True):
            if b["clips"]:
                ax.text(c, 0.02, str(b["clips"]), ha="center", fontsize=7)
        ax.set_title(f"{title}: ECE {e['value']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]", fontsize=9)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy (clips per bin at the bottom)")
    axes[0].legend(loc="upper left", fontsize=7)
    fig.suptitle(f"Out-of-fold predictions: {cal['clips']} ({cal['subjects']} subjects)")
    return figure_png(fig, dpi=100)
