"""Stage 2, prior learning: a siamese C3D learns from clip pairs of each fold's training subjects.

Zhao et al. (2021) pre-train a siamese 3D CNN on pairs ("prior learning"); the pair rule,
loss and schedule are not in the abstract. Our reconstruction (configurable in
`PretrainConfig`): pairs balanced between same and different class, never the same clip
twice, drawn afresh each epoch from a seeded generator, contrastive loss (Hadsell et al. 2006)
on L2-normalised embeddings. Only the run's training subjects are ever sampled.

A prior-learning job is one (seed, fold run): it learns on the run's training subjects and
writes its checkpoints to `mer.layout.prior_dir` (format: mer.checkpoints). Jobs are split
into a few Ray Train runs that handle their jobs in turn (one start-up cost each), fanned
out through Tune; a worker that dies is replaced and its run resumes from the last epoch
checkpoint (`FailureConfig`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
import torch

from mer import checkpoints, layout
from mer.config import PipelineConfig, from_dict
from mer.models import build_siamese
from mer.progress import emit
from mer.table import ClipTable, load_table
from mer.train import data
from mer.train.runtime import Worker, mean_over_workers, place, ray_worker, set_threads
from mer.train.step import train_step


def pretrain_loop(config: dict) -> None:
    """Ray Train per-worker loop: each job in `config["jobs"]` in turn, skipping done ones."""
    import ray.train

    cfg = from_dict(config["cfg"])
    w = ray_worker()
    set_threads(cfg.resources.cpus_per_worker)
    table = load_table(config["keyframes"])
    resume = _resume_point(ray.train.get_checkpoint())
    for job in config["jobs"]:
        if checkpoints.is_done(job["dir"], job["train_subjects"]):
            continue
        state = resume if resume and resume["dir"] == job["dir"] else None
        train_prior(cfg, table, job, w, resume=state)
        resume = None


def train_prior(cfg: PipelineConfig, table: ClipTable, job: dict, w: Worker, resume=None):
    """Prior learning of one job; the chief writes epoch checkpoints, prior.pt and _done.json."""
    from mer.losses import ContrastiveLoss

    p = cfg.pretrain
    seed = job["seed"]
    idx = table.indices_of(job["train_subjects"])
    labels = table.clips["label"].to_numpy()[idx]
    torch.manual_seed(seed)
    model = build_siamese(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    start, history = 0, []
    if resume:
        state = resume["state"]
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["epoch"], json.loads(state["history"])
    place(model, w, cfg.resources.channels_last)
    ddp = model
    if w.world > 1:
        import ray.train.torch

        ddp = ray.train.torch.prepare_model(model)
    loss_fn = ContrastiveLoss(margin=p.margin)

    for epoch in range(start, p.epochs):
        t0 = time.time()
        rng, gen = data.epoch_rng(seed, job["index"], epoch)
        a, b, same = data.sample_pairs(labels, p.pairs_per_epoch, rng)
        ddp.train()
        tot = {"loss": 0.0, "correct": 0.0, "n": 0.0}
        for batch in data.shard(np.arange(len(a)), w.rank, w.world, p.batch_size):
            xa = data.to_tensor(table.frames[idx[a[batch]]], w.device, cfg.model.input)
            xb = data.to_tensor(table.frames[idx[b[batch]]], w.device, cfg.model.input)
            if p.augment:
                xa, xb = data.augment(xa, gen), data.augment(xb, gen)
            y = torch.from_numpy(same[batch]).to(w.device)
            loss, (za, zb) = train_step(ddp, loss_fn, opt, (xa, xb), y)
            with torch.no_grad():
                pred_same = (za - zb).norm(dim=1) < p.margin / 2
                tot["correct"] += float((pred_same == (y > 0.5)).sum())
            tot["loss"] += loss.item() * len(batch)
            tot["n"] += len(batch)
        tot = mean_over_workers(tot, w)
        metrics = {
            "run": job["run"],
            "seed": seed,
            "epoch": epoch + 1,
            "epochs": p.epochs,
            "loss": tot["loss"] / max(tot["n"], 1),
            "pair_accuracy": tot["correct"] / max(tot["n"], 1),
            "epoch_seconds": time.time() - t0,
            "worker_pid": os.getpid(),
        }
        history.append(metrics)
        _report_epoch(job["dir"], model, opt, epoch + 1, history, metrics, w)

    if w.is_chief:
        checkpoints.save_state(model.backbone.state_dict(), checkpoints.prior_file(job["dir"]))
        checkpoints.mark_done(job["dir"], job["train_subjects"], history)
    return model


def _report_epoch(folder, model, opt, epoch, history, metrics, w) -> None:
    """Report this epoch to Ray Train; the chief attaches the model and optimiser state as
    the run's checkpoint (Ray keeps the last two and resumes from the newest it
    registered)."""
    import ray.train

    if not w.is_chief:
        ray.train.report(metrics)
        return
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "history": json.dumps(history),
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, os.path.join(tmp, "state.pt"))
        with open(os.path.join(tmp, "pointer.json"), "w") as f:
            json.dump({"dir": folder, "epoch": epoch}, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _resume_point(checkpoint) -> dict | None:
    """(job folder, state) of the newest checkpoint Ray Train registered for this run."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        with open(os.path.join(d, "pointer.json")) as f:
            pointer = json.load(f)
        state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)
    return {**pointer, "state": state}


# ---------------------------------------------------------------- driver


def prior_jobs(cfg: PipelineConfig, runs: list[dict], seeds: list[int]) -> list[dict]:
    """One job per (seed, run that learns its own prior), in a stable order."""
    jobs = []
    for seed in seeds:
        seeded = layout_cfg(cfg, seed)
        for run in runs:
            if run.get("prior") != run["id"]:
                continue  # reuses another run's prior
            jobs.append(
                {
                    "seed": seed,
                    "run": run["id"],
                    "index": run["index"],
                    "train_subjects": run["train_subjects"],
                    "dir": layout.prior_dir(seeded, run["id"]),
                }
            )
    return jobs


def layout_cfg(cfg: PipelineConfig, seed: int) -> PipelineConfig:
    from mer.config import with_params

    return with_params(cfg, {}, seed)


def run_pretraining(
    cfg: PipelineConfig,
    keyframes: str,
    runs: list[dict],
    seeds: list[int] | None = None,
    *,
    progress=emit,
    loop=pretrain_loop,
) -> dict:
    """Prior learning for every (seed, run) job not yet done; returns a summary.

    `loop` is the per-worker loop (tests wrap it to inject faults, mer.testing).
    """
    from mer.progress import Counter, tune_progress
    from mer.train.runtime import fan_out, plan_resources

    seeds = seeds if seeds is not None else [cfg.pretrain.seed]
    jobs = prior_jobs(cfg, runs, seeds)
    todo = [j for j in jobs if not checkpoints.is_done(j["dir"], j["train_subjects"])]
    progress(f"[pretrain] {len(jobs) - len(todo)}/{len(jobs)} priors already learnt")
    if not todo or not cfg.pretrain.enabled:
        return {"trained": 0, "jobs": len(jobs)}
    per_run = cfg.resources.folds_per_run
    if not per_run:  # as many runs as can train at once, jobs dealt evenly between them
        _, n = plan_resources(cfg.resources, len(todo))
        per_run = -(-len(todo) // n)
    groups = [todo[i : i + per_run] for i in range(0, len(todo), per_run)]
    h = layout.prior_hash(cfg)
    configs = [
        ({"cfg": cfg.to_dict(), "jobs": g, "keyframes": keyframes}, f"{h}-{i}")
        for i, g in enumerate(groups)
    ]
    epochs = cfg.pretrain.epochs
    counter = Counter("pretrain", len(todo) * epochs, progress)

    def describe(_config, result):
        if "pair_accuracy" not in result:
            return None
        return (
            f"epochs: seed {result['seed']} {result['run']} epoch {result['epoch']}/{epochs} "
            f"loss {result['loss']:.3f} pair acc {result['pair_accuracy']:.2f}"
        )

    t0 = time.time()
    fan_out(
        loop,
        configs,
        cfg.resources,
        layout.pretrain_runs_uri(cfg),
        f"tune-{h}",
        tune_progress(counter, describe),
    )
    progress(f"[pretrain] {len(todo)} priors learnt in {time.time() - t0:.0f} s")
    return {"trained": len(todo), "jobs": len(jobs)}
