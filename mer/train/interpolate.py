"""The learned key-frame interpolator's stage: self-supervised training on Ray Train.

When `keyframes.interpolation` is adaconv, the key-frame stage renders every fractional
key-frame position with a learned adaptive-convolution interpolator (mer.keyframes.interpolator: our
reading of the paper's "adaptive convolutional neural network"). This stage trains it on
the dataset's own clips: every frame of each clip's onset..offset, registered to the onset
frame and resized to the key frames' S x S exactly as key frames are rendered
(mer.keyframes.clip_records.registered_frames), cut into triplets (two frames 2..max_gap apart and one
between them). No label is read. It sees the frames of all subjects, held-out ones
included: it learns how faces move between frames, never which class a clip has, so a LOSO
fold's test subject reaching it is like the subject's own clip reaching the key-frame
stage.

Each DDP worker decodes its share of the clips (clips that cannot be decoded are skipped
and counted, as the key-frame stage would reject them) and samples triplets from them; the
chief writes `model.pt` and `_done.json` to `mer.layout.interpolator_uri`, keyed by the data,
the frame settings and `interpolator.*`. A run whose worker dies starts training again (a
few hundred steps; no mid-run checkpoints).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from mer import layout, storage
from mer.config import PipelineConfig, from_dict
from mer.datasets import load_manifest
from mer.keyframes.clip_records import REJECTABLE, manifest_rows, registered_frames
from mer.keyframes.interpolator import (
    Interpolator,
    InterpolatorConfig,
    sample_triplets,
    train_step,
)
from mer.keyframes.settings import keyframe_settings
from mer.progress import Counter, emit, tune_progress
from mer.train.runtime import fan_out, mean_over_workers, ray_worker, set_threads, set_up

REPORT_EVERY = 25  # steps


def interpolator_loop(config: dict) -> None:
    """Ray Train per-worker loop: decode this worker's clips, train, the chief saves."""
    import ray.train

    cfg = from_dict(config["cfg"])
    ip = cfg.interpolator
    w = ray_worker()
    set_threads(cfg.resources.cpus_per_worker)
    kf = keyframe_settings(cfg.keyframes)
    clips, skipped = [], 0
    for row in config["rows"][w.rank :: w.world]:
        try:
            clips.append(registered_frames(row, kf))
        except REJECTABLE:
            skipped += 1
    torch.manual_seed(ip.seed)
    model = Interpolator(
        InterpolatorConfig(
            image_size=cfg.keyframes.size,
            channels=3,
            kernel_size=ip.kernel_size,
            base=ip.base,
            levels=ip.levels,
        )
    )
    ddp, _ = set_up(model, w, channels_last=False)
    opt = torch.optim.Adam(model.parameters(), lr=ip.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, ip.steps)
    rng = np.random.default_rng([ip.seed, w.rank])
    total, n, t0 = 0.0, 0, time.time()
    for step in range(ip.steps):
        batch = sample_triplets(clips, ip.batch_size, rng, max_gap=ip.max_gap).to(w.device)
        total += train_step(ddp, opt, batch)
        n += 1
        schedule.step()
        if (step + 1) % REPORT_EVERY == 0 or step + 1 == ip.steps:
            m = mean_over_workers({"l1": total / n}, w)
            metrics = {"step": step + 1, "steps": ip.steps, "l1": m["l1"], "clips": len(clips)}
            if step + 1 == ip.steps and w.is_chief:
                model.save(config["file"])
                storage.write_json(
                    storage.join(config["folder"], "_done.json"),
                    {
                        "settings": config["settings"],
                        "clips_per_worker": len(clips),
                        "skipped": skipped,
                        "final_l1": m["l1"],
                        "seconds": round(time.time() - t0, 1),
                    },
                )
            ray.train.report(metrics)
            total, n = 0.0, 0


def run_interpolator(cfg: PipelineConfig, *, progress=emit) -> str:
    """Train the interpolator of these settings unless it exists; returns its model URI."""

    folder, file = layout.interpolator_uri(cfg), layout.interpolator_file(cfg)
    if storage.exists(storage.join(folder, "_done.json")):
        progress(f"[interpolator] {folder} is trained; skipped")
        return file
    manifest = load_manifest(
        cfg.data.dataset,
        layout.data_root(cfg),
        cfg.data.annotations,
        protocol=cfg.data.protocol,
        **cfg.data.options,
    )
    settings = layout.interpolator_settings(cfg)
    config = {
        "cfg": cfg.to_dict(),
        "rows": manifest_rows(manifest),
        "folder": folder,
        "file": file,
        "settings": settings,
    }
    progress(
        f"[interpolator] {cfg.interpolator.steps} steps on triplets of {len(config['rows'])} "
        f"clips at {cfg.keyframes.size} px (no labels read) -> {folder}"
    )
    storage.write_bytes(storage.join(folder, "config.yaml"), cfg.to_yaml().encode())
    counter = Counter("interpolator", -(-cfg.interpolator.steps // REPORT_EVERY), progress)

    def describe(_config, result):
        if "l1" not in result:
            return None
        return f"steps: {result['step']}/{result['steps']} L1 {result['l1']:.4f}"

    fan_out(
        interpolator_loop,
        [(config, f"interp-{layout.interpolator_hash(cfg)}")],
        cfg.resources,
        storage.join(cfg.root, "interpolator", "_runs"),
        "_tune",
        tune_progress(counter, describe),
    )
    return file
