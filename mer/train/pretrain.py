"""Stage 2, prior learning: a siamese C3D learns from clip pairs of each fold's training subjects.

Zhao et al. (2021) pre-train a siamese 3D CNN on pairs ("prior learning") in a way they call
inspired by few-shot learning; the pair rule, loss and schedule are not in the abstract. Our
reconstruction (configurable in `PretrainConfig`), with a contrastive loss (Hadsell et al.
2006) on L2-normalised embeddings and only the run's training subjects ever sampled:
- "episodic": each step embeds one episode, 2 x batch_size clips with the
  classes balanced and each class's clips from different subjects (data.sample_episodes),
  and the loss takes every pair inside it: positives of one class across subjects, negatives
  of different classes (losses.EpisodeContrastiveLoss). Pairs cross subjects, so identity
  is no shortcut, and a step sees about batch_size^2 pairs for the price of 2 x batch_size
  clips.
- "random" (the default, the first version): batch_size pairs per step, half of one class,
  half not, drawn from any subjects (data.sample_pairs).
Both draw afresh each epoch from a seeded generator; pair accuracy (same class iff the
distance is under margin / 2; balanced over positives and negatives) is reported per epoch.
After the last epoch the prior's BatchNorm statistics are recomputed over its training clips
(`pretrain.precise_norms`): the running averages of a short run still carry their initial
variance, which with the small onset-delta inputs made every clip embed alike in eval mode
(and froze stale statistics into blocks that target learning keeps frozen).
benchmarks/README.md ("Prior learning and the method on casme2-like") has what each rule and
budget learnt there.

A prior-learning job is one (seed, prior): by default one per fold run, learnt on the run's
training subjects (the paper's reading); with `pretrain.prior_groups: N` one per group of
subjects, learnt on every subject outside the group and shared by the folds whose held-out
subjects the group holds (mer.keyframes.table.outer_runs). Either way no prior sees its fold's test
subjects, which `prior_leaks` checks from the subject lists stored with the priors. A job
writes its checkpoints to `mer.layout.prior_dir` (format: mer.train.checkpoints). Jobs are split
into a few Ray Train runs that handle their jobs in turn (one start-up cost each), fanned
out through Tune; a worker that dies is replaced and its run resumes from the last epoch
checkpoint (`FailureConfig`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from mer import layout, provenance
from mer.config import NUM_CLASSES, PipelineConfig, from_dict, with_params
from mer.folds import FoldRun
from mer.keyframes.table import ClipTable, load_table
from mer.progress import Counter, emit, tune_progress
from mer.provenance import platform
from mer.train import checkpoints, data, probe
from mer.train.losses import ContrastiveLoss, EpisodeContrastiveLoss, episode_pairs
from mer.train.models import build_siamese
from mer.train.runtime import (
    Worker,
    adamw,
    fan_out,
    mean_over_workers,
    plan_resources,
    ray_worker,
    set_threads,
    set_up,
    table_on_device,
)
from mer.train.step import recompute_norms, train_step


@dataclass(frozen=True)
class PriorJob:
    """One prior to learn: at `seed`, on `train_subjects`, into `dir` (its id `run`, the fold
    run's or the shared prior's; `index` seeds its per-epoch generators). `held_out`: the
    held-out subjects of the fold runs that start from it, where its k-NN probe is measured
    (mer.train.probe; never any of `train_subjects`)."""

    seed: int
    run: str
    index: int
    train_subjects: list[str]
    dir: str
    held_out: tuple[str, ...] = ()

    @classmethod
    def own(cls, run: FoldRun, seed: int, dir: str) -> PriorJob:
        """The prior a fold run learns on its own training subjects."""
        held = tuple(sorted(set(run.test_subjects) - set(run.train_subjects)))
        return cls(seed, run.id, run.index, run.train_subjects, dir, held)


def pretrain_loop(config: dict) -> None:
    """Ray Train per-worker loop: each job in `config["jobs"]` in turn, skipping done ones."""
    import ray.train

    cfg = from_dict(config["cfg"])
    w = ray_worker()
    set_threads(cfg.resources.cpus_per_worker)
    table = load_table(config["keyframes"])
    resume = _resume_point(ray.train.get_checkpoint())
    for job in config["jobs"]:
        if checkpoints.is_done(job.dir, job.train_subjects):
            continue
        state = resume if resume and resume["dir"] == job.dir else None
        train_prior(cfg, table, job, w, resume=state)
        resume = None


def train_prior(
    cfg: PipelineConfig, table: ClipTable, job: PriorJob, w: Worker, resume=None, report=None
):
    """Prior learning of one job; the chief writes epoch checkpoints, prior.pt and _done.json.
    `report(folder, model, opt, epoch, history, metrics, w)` ends each epoch (default: to
    Ray Train, with a checkpoint; benchmarks outside Ray pass their own)."""

    p = cfg.pretrain
    report = report or _report_epoch
    rule = p.pairs
    seed = job.seed
    idx = table.indices_of(job.train_subjects)
    labels = table.clips["label"].to_numpy()[idx]
    subjects = np.unique(table.subject_keys[idx], return_inverse=True)[1]
    torch.manual_seed(seed)
    model = build_siamese(cfg)
    opt = adamw(model.parameters(), p.lr, p.weight_decay, w)
    start, history = 0, []
    if resume:
        state = resume["state"]
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = state["epoch"], json.loads(state["history"])
        if "rng" in state:
            torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and w.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], w.device)
    ddp, forward = set_up(model, w, cfg.resources.channels_last, cfg.resources)
    frames = data.Frames.of(table.frames, w.device, table_on_device(cfg.resources, w))
    amp = p.amp and w.device.type == "cuda"
    if rule == "episodic":
        loss_fn = EpisodeContrastiveLoss(margin=p.margin)
    else:
        loss_fn = ContrastiveLoss(margin=p.margin)

    for epoch in range(start, p.epochs):
        t0 = time.time()
        rng, gen = data.epoch_rng(seed, job.index, epoch)
        ddp.train()
        tot = {"loss": 0.0, "steps": 0.0, "pos_hit": 0.0, "pos": 0.0, "neg_hit": 0.0, "neg": 0.0}
        if rule == "episodic":
            steps = max(w.world, p.pairs_per_epoch // p.batch_size)
            episodes = data.sample_episodes(labels, subjects, steps, 2 * p.batch_size, rng)
            for batch in data.shard(np.arange(steps), w.rank, w.world, 1):
                e = episodes[batch[0]]
                x = data.to_tensor(frames[idx[e]], w.device, cfg.model.input)
                if p.augment:
                    x = data.augment(x, gen)
                y = torch.from_numpy(np.stack([labels[e], subjects[e]], axis=1)).to(w.device)
                loss, z = train_step(forward, loss_fn, opt, (x,), y, amp=amp)
                _count_pairs(tot, *pair_hits(z.detach(), y, p.margin / 2))
                tot["loss"] += loss.item()
                tot["steps"] += 1
        else:
            a, b, same = data.sample_pairs(labels, p.pairs_per_epoch, rng)
            for batch in data.shard(np.arange(len(a)), w.rank, w.world, p.batch_size):
                xa = data.to_tensor(frames[idx[a[batch]]], w.device, cfg.model.input)
                xb = data.to_tensor(frames[idx[b[batch]]], w.device, cfg.model.input)
                if p.augment:
                    xa, xb = data.augment(xa, gen), data.augment(xb, gen)
                y = torch.from_numpy(same[batch]).to(w.device)
                loss, (za, zb) = train_step(forward, loss_fn, opt, (xa, xb), y, amp=amp)
                with torch.no_grad():
                    near = (za - zb).norm(dim=1) < p.margin / 2
                    pos = y > 0.5
                _count_pairs(tot, (near & pos).sum(), pos.sum(), (~near & ~pos).sum(), (~pos).sum())
                tot["loss"] += loss.item()
                tot["steps"] += 1
        tot = mean_over_workers(tot, w)
        metrics = {
            "run": job.run,
            "seed": seed,
            "epoch": epoch + 1,
            "epochs": p.epochs,
            "pairs": rule,
            "loss": tot["loss"] / max(tot["steps"], 1),
            # Balanced over positive and negative pairs: 0.5 is chance whatever their mix.
            "pair_accuracy": 0.5
            * (tot["pos_hit"] / max(tot["pos"], 1) + tot["neg_hit"] / max(tot["neg"], 1)),
            "epoch_seconds": time.time() - t0,
            "threads": torch.get_num_threads(),
            "platform": platform(w.device),
            **provenance.record(),
            "worker_pid": os.getpid(),
        }
        history.append(metrics)
        report(job.dir, model, opt, epoch + 1, history, metrics, w)

    if w.is_chief:
        if p.precise_norms:
            recompute_norms(
                model,
                model.embed,
                frames,
                idx,
                w.device,
                input=cfg.model.input,
                batch_size=2 * p.batch_size,
            )
        checkpoints.save_state(model.backbone.state_dict(), checkpoints.prior_file(job.dir))
        checkpoints.mark_done(
            job.dir, job.train_subjects, history, held_out_probe(cfg, table, job, model, frames, w)
        )
    return model


def held_out_probe(cfg, table: ClipTable, job: PriorJob, model, frames, w: Worker) -> dict:
    """The k-NN probe of a learnt prior (mer.train.probe): each clip of the job's held-out
    subjects classed by its nearest clips among the prior's training clips."""
    classes = NUM_CLASSES[cfg.data.protocol]
    labels = table.clips["label"].to_numpy()
    ref, test = table.indices_of(job.train_subjects), table.indices_of(list(job.held_out))
    pred = probe.knn_probe(
        model.backbone, frames, labels, ref, test, w.device, input=cfg.model.input, classes=classes
    )
    return probe.summary(pred, labels[test], classes, list(job.held_out))


def pair_hits(z: torch.Tensor, target: torch.Tensor, threshold: float):
    """(positives within threshold, positives, negatives beyond it, negatives) of an episode's
    embeddings (losses.episode_pairs' pairs)."""

    d2, pos, neg = episode_pairs(z.float(), target)
    near = d2 < threshold**2
    return (near & pos).sum(), pos.sum(), (~near & neg).sum(), neg.sum()


def _count_pairs(tot: dict, pos_hit, pos, neg_hit, neg) -> None:
    tot["pos_hit"] += float(pos_hit)
    tot["pos"] += float(pos)
    tot["neg_hit"] += float(neg_hit)
    tot["neg"] += float(neg)


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
        # Dropout draws from the global generator: a resumed run continues its sequence, so
        # it learns the prior an uninterrupted run learns (every rank holds the same state).
        "rng": torch.get_rng_state(),
    }
    if w.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(w.device)
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


def prior_jobs(cfg: PipelineConfig, runs: list[FoldRun], seeds: list[int]) -> list[PriorJob]:
    """One job per (seed, prior the runs start from), in a stable order: a run learns its own
    prior, reuses another run's, or (shared priors, mer.keyframes.table.outer_runs) names the prior's
    training subjects, which every run of that prior shares."""
    jobs = []
    held: dict[str, set] = {}  # a prior's probe subjects: the runs' held-out ones it never saw
    for run in runs:
        held.setdefault(run.prior, set()).update(run.test_subjects)
    for seed in seeds:
        seeded = layout_cfg(cfg, seed)
        seen = set()
        for run in runs:
            if run.prior_subjects is not None:
                if run.prior in seen:
                    continue
                subjects, index = run.prior_subjects, run.prior_index
            elif run.prior == run.id:
                subjects, index = run.train_subjects, run.index
            else:
                continue  # reuses another run's prior
            seen.add(run.prior)
            probe_subjects = tuple(sorted(held[run.prior] - set(subjects)))
            folder = layout.prior_dir(seeded, run.prior)
            jobs.append(PriorJob(seed, run.prior, index, subjects, folder, probe_subjects))
    return jobs


def prior_leaks(cfg: PipelineConfig, runs: list[FoldRun], seeds: list[int]) -> list[str]:
    """Read back from storage the training subjects of every run's prior (its _done.json) and
    return one line per run whose prior saw a subject the run must not: its held-out
    subjects, and for an inner run its outer fold's too (unless the run starts from the outer
    run's prior by choice, `search.inner_prior: outer`, which is labelled as such). A prior
    not learnt is a line too. Empty: no prior saw its fold's test subjects."""
    outer_test = {r.id: set(r.test_subjects) for r in runs if r.kind == "outer"}
    outer_prior = {r.id: r.prior for r in runs if r.kind == "outer"}
    problems = []
    for seed in seeds:
        seeded = layout_cfg(cfg, seed)
        for run in runs:
            done = checkpoints.done_record(layout.prior_dir(seeded, run.prior))
            if done is None:
                problems.append(f"seed {seed} {run.id}: prior {run.prior} not learnt")
                continue
            held = set(outer_test.get(run.outer, ()))
            if run.kind != "inner" or run.prior != outer_prior.get(run.outer):
                held |= set(run.test_subjects)
            seen = sorted(held & set(done["train_subjects"]))
            if seen:
                problems.append(f"seed {seed} {run.id}: prior {run.prior} saw {seen}")
    return problems


def layout_cfg(cfg: PipelineConfig, seed: int) -> PipelineConfig:

    return with_params(cfg, {}, seed)


def run_pretraining(
    cfg: PipelineConfig,
    keyframes: str,
    runs: list[FoldRun],
    seeds: list[int] | None = None,
    *,
    progress=emit,
    loop=pretrain_loop,
) -> dict:
    """Prior learning for every (seed, run) job not yet done; returns a summary.

    `loop` is the per-worker loop (tests wrap it to inject faults, mer.testing.fakes).
    """

    seeds = seeds if seeds is not None else [cfg.pretrain.seed]
    jobs = prior_jobs(cfg, runs, seeds)
    if not cfg.pretrain.enabled:
        progress("[pretrain] off (pretrain.enabled: false): target learning starts from scratch")
        return {"trained": 0, "jobs": len(jobs)}
    todo = [j for j in jobs if not checkpoints.is_done(j.dir, j.train_subjects)]
    progress(f"[pretrain] {len(jobs) - len(todo)}/{len(jobs)} priors already learnt")
    if not todo:
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
    with counter.heartbeat(f"prior learning: {len(todo)} priors in {len(groups)} run(s)"):
        fan_out(
            loop,
            configs,
            cfg.resources,
            layout.pretrain_runs_uri(cfg),
            f"tune-{h}",
            tune_progress(counter, describe),
        )
    progress(f"[pretrain] {len(todo)} priors learnt in {time.time() - t0:.0f} s")
    for line in what_priors_learnt(todo):
        progress(line)
    return {"trained": len(todo), "jobs": len(jobs)}


def what_priors_learnt(jobs: list[PriorJob]) -> list[str]:
    """One line per learnt prior, from its _done.json: the last epoch's pair accuracy (0.5 is
    chance) and its k-NN probe on held-out subjects beside the majority class's share; then
    the means. A prior recorded before the probe existed says so."""
    lines, pairs, knn, majority = [], [], [], []
    for job in jobs:
        done = checkpoints.done_record(job.dir) or {}
        last = (done.get("history") or [{}])[-1]
        p = done.get("probe") or {}
        line = f"[pretrain] prior seed {job.seed} {job.run}:"
        if "pair_accuracy" in last:
            pairs.append(last["pair_accuracy"])
            line += f" pair accuracy {last['pair_accuracy']:.2f} (last epoch)"
        if "accuracy" in p:
            knn.append(p["accuracy"])
            majority.append(p["majority_share"])
            line += (
                f", {p['k']}-NN accuracy {p['accuracy']:.2f} on {p['clips']} held-out clips "
                f"(majority class {p['majority_share']:.2f})"
            )
        elif "probe" not in done:
            line += ", no k-NN probe recorded"
        lines.append(line)
    if len(jobs) > 1 and knn:
        lines.append(
            f"[pretrain] {len(jobs)} priors: mean pair accuracy {np.mean(pairs):.2f}, mean "
            f"k-NN accuracy {np.mean(knn):.2f} (majority class {np.mean(majority):.2f})"
        )
    return lines
