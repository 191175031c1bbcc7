"""Stage 2, prior learning: a siamese C3D learns from clip pairs of each fold's training subjects.

Zhao et al. (2021) pre-train a siamese 3D CNN on pairs ("prior learning"); the pair rule,
loss and schedule are not in the abstract. Our reconstruction (configurable in
`PretrainConfig`): pairs balanced between same and different class, never the same clip
twice, drawn afresh each epoch from a seeded generator, contrastive loss (Hadsell et al. 2006)
on L2-normalised embeddings. Only the fold's training subjects are ever sampled.

Outputs per fold, under `<root>/pretrain/<fold>/`:
  epoch-NNN.pt   model + optimiser state after each epoch (resumption; weights-only format)
  prior.pt       the final backbone weights that target learning starts from
  _done.json     config hash and per-epoch metrics; written last (a fold is done iff present)
Several folds can share one Ray Train run (`resources.folds_per_run`), which pays the
run's start-up cost once; a worker that dies is replaced and the run resumes from the last
epoch checkpoint (`FailureConfig`).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time

import numpy as np
import torch

from mer import storage
from mer.config import PipelineConfig, from_dict, pretrain_hash
from mer.train import data
from mer.train.runtime import make_trainer, mean_over_workers, place, set_threads, worker


def fold_dir(root: str, fold_name: str) -> str:
    return storage.join(root, "pretrain", fold_name)


def prior_uri(root: str, fold_name: str) -> str:
    return storage.join(fold_dir(root, fold_name), "prior.pt")


def is_done(root: str, fold_name: str, h: str) -> bool:
    uri = storage.join(fold_dir(root, fold_name), "_done.json")
    return storage.exists(uri) and storage.read_json(uri).get("hash") == h


def save_state(obj: dict, uri: str) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    storage.write_bytes(uri, buf.getvalue())


def load_state(uri: str) -> dict:
    # weights_only: a checkpoint can never run code on load (tensors and plain types only).
    return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)


def build_siamese(cfg: PipelineConfig):
    from mer.models import C3D, SiameseC3D

    backbone = C3D(
        frames=cfg.keyframes.k,
        size=cfg.keyframes.size,
        width=cfg.model.width,
        batch_norm=cfg.model.batch_norm,
        dropout=cfg.model.dropout,
    )
    return SiameseC3D(backbone, embedding_dim=cfg.model.embedding_dim)


def pretrain_loop(config: dict) -> None:
    """Ray Train per-worker loop: prior learning for each fold in `config["folds"]` in turn."""
    import ray.train

    from mer.losses import ContrastiveLoss

    cfg = from_dict(config["cfg"])
    p = cfg.pretrain
    w = worker()
    set_threads(cfg.resources.cpus_per_worker)
    table = data.load_table(config["keyframes"])
    h = config["hash"]
    resume = _resume_point(ray.train.get_checkpoint())

    for fold in config["folds"]:
        if is_done(cfg.root, fold["name"], h):
            continue
        idx = table.indices_of(fold["train_subjects"])
        labels = table.clips["label"].to_numpy()[idx]
        torch.manual_seed(p.seed)
        model = build_siamese(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        start, history = 0, []
        if resume and resume["fold"] == fold["name"]:
            state = load_state(storage.join(fold_dir(cfg.root, fold["name"]), resume["file"]))
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start, history = state["epoch"], json.loads(state["history"])
        place(model, w, cfg.resources.channels_last)
        ddp = ray.train.torch.prepare_model(model) if w.world > 1 else model
        loss_fn = ContrastiveLoss(margin=p.margin)

        for epoch in range(start, p.epochs):
            t0 = time.time()
            rng = np.random.default_rng([p.seed, fold["index"], epoch])
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            a, b, same = data.sample_pairs(labels, p.pairs_per_epoch, rng)
            ddp.train()
            tot = {"loss": 0.0, "correct": 0.0, "n": 0.0}
            for batch in data.shard(np.arange(len(a)), w.rank, w.world, p.batch_size):
                xa = data.to_tensor(table.frames[idx[a[batch]]], w.device, cfg.model.input)
                xb = data.to_tensor(table.frames[idx[b[batch]]], w.device, cfg.model.input)
                if p.augment:
                    xa, xb = data.augment(xa, gen), data.augment(xb, gen)
                y = torch.from_numpy(same[batch]).to(w.device)
                za, zb = ddp(xa, xb)
                loss = loss_fn(za, zb, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                _maybe_fail(config.get("_fault"), fold["name"], epoch, w)  # mid-epoch
                with torch.no_grad():
                    pred_same = (za - zb).norm(dim=1) < p.margin / 2
                    tot["correct"] += float((pred_same == (y > 0.5)).sum())
                tot["loss"] += loss.item() * len(batch)
                tot["n"] += len(batch)
            tot = mean_over_workers(tot, w)
            metrics = {
                "fold": fold["name"],
                "epoch": epoch + 1,
                "loss": tot["loss"] / max(tot["n"], 1),
                "pair_accuracy": tot["correct"] / max(tot["n"], 1),
                "epoch_seconds": time.time() - t0,
                "worker_pid": os.getpid(),
            }
            history.append(metrics)
            _report_epoch(cfg.root, fold["name"], model, opt, epoch + 1, history, metrics, w)

        if config.get("_digest_dir"):  # test hook: DDP replicas must end identical
            _write_digest(config["_digest_dir"], fold["name"], model, w)
        if w.is_chief:
            d = fold_dir(cfg.root, fold["name"])
            save_state(model.backbone.state_dict(), storage.join(d, "prior.pt"))
            storage.write_json(storage.join(d, "_done.json"), {"hash": h, "history": history})
        resume = None


def _report_epoch(root, fold_name, model, opt, epoch, history, metrics, w) -> None:
    """Save this epoch's state (chief) and report it to Ray Train with a pointer checkpoint."""
    import ray.train

    if not w.is_chief:
        ray.train.report(metrics)
        return
    file = f"epoch-{epoch:03d}.pt"
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "history": json.dumps(history),
    }
    save_state(state, storage.join(fold_dir(root, fold_name), file))
    old = storage.join(fold_dir(root, fold_name), f"epoch-{epoch - 2:03d}.pt")
    if epoch > 2 and storage.exists(old):
        storage.remove(old)  # keep the last two epochs
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "pointer.json"), "w") as f:
            json.dump({"fold": fold_name, "file": file, "epoch": epoch}, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _resume_point(checkpoint) -> dict | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        with open(os.path.join(d, "pointer.json")) as f:
            return json.load(f)


def _write_digest(folder: str, fold_name: str, model, w) -> None:
    import hashlib

    # Parameters, not buffers: each replica updates BatchNorm running stats from its own batch.
    h = hashlib.sha256()
    for name, t in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(t.detach().cpu().numpy().tobytes())
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{fold_name}-rank{w.rank}.txt"), "w") as f:
        f.write(h.hexdigest())


def _maybe_fail(fault: dict | None, fold_name: str, epoch: int, w) -> None:
    """Test hook: kill this worker process once at (fold, epoch); a marker file records it."""
    if not fault or fault["fold"] != fold_name or fault["epoch"] != epoch:
        return
    if w.rank == fault.get("rank", 0) and not os.path.exists(fault["marker"]):
        with open(fault["marker"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(fault.get("delay", 0.0))
        os._exit(1)


# ---------------------------------------------------------------- driver


def fold_specs(table: data.ClipTable) -> list[dict]:
    """LOSO folds of the key-frame table as plain dicts (picklable, stable order)."""
    from mer.folds import fold_name, loso_folds

    keys = table.subject_keys
    specs = []
    for i, f in enumerate(loso_folds(table.clips)):
        specs.append(
            {
                "index": i,
                "key": f.test_key,
                "name": fold_name(f.test_key),
                "train_subjects": sorted(set(keys[f.train_idx])),
                "test_subjects": sorted(set(keys[f.test_idx])),
            }
        )
    return specs


def run_pretraining(
    cfg: PipelineConfig,
    keyframes: str,
    folds: list[dict] | None = None,
    *,
    progress=print,
    _fault=None,
    _digest_dir=None,
) -> dict:
    """Prior learning for every fold that is not yet done with this config; returns a summary."""
    h = pretrain_hash(cfg)
    if folds is None:
        folds = fold_specs(data.load_table(keyframes))
    todo = [f for f in folds if not is_done(cfg.root, f["name"], h)]
    progress(f"[pretrain] {len(folds) - len(todo)}/{len(folds)} folds already done (config {h})")
    if not todo or not cfg.pretrain.enabled:
        return {"hash": h, "trained": 0, "folds": len(folds)}
    per_run = cfg.resources.folds_per_run or len(todo)
    groups = [todo[i : i + per_run] for i in range(0, len(todo), per_run)]
    loop_configs = [
        {
            "cfg": cfg.to_dict(),
            "folds": g,
            "keyframes": keyframes,
            "hash": h,
            "_fault": _fault,
            "_digest_dir": _digest_dir,
        }
        for g in groups
    ]
    storage_uri = storage.join(cfg.root, "pretrain", "_runs")
    t0 = time.time()
    if len(groups) == 1:
        trainer = make_trainer(pretrain_loop, loop_configs[0], cfg.resources, storage_uri, f"{h}-0")
        _print_history(trainer.fit(), progress)
    else:
        _fit_concurrently(loop_configs, cfg, storage_uri, h, progress)
    progress(f"[pretrain] {len(todo)} folds trained in {time.time() - t0:.0f} s")
    return {"hash": h, "trained": len(todo), "folds": len(folds)}


def _print_history(result, progress) -> None:
    if result.error:
        raise result.error
    for m in (
        result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
    ):
        progress(
            f"[pretrain] {m.get('fold')} epoch {m.get('epoch')}: loss {m.get('loss', 0):.4f} "
            f"pair acc {m.get('pair_accuracy', 0):.3f}"
        )


def _fit_concurrently(loop_configs, cfg, storage_uri, h, progress) -> None:
    """One Tune trial per fold group, each fitting its own TorchTrainer (Train V2 pattern)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    def driver(trial_config):
        i = trial_config["group"]
        trainer = make_trainer(
            pretrain_loop,
            loop_configs[i],
            cfg.resources,
            storage_uri,
            f"{h}-{i}",
            callbacks=[TuneReportCallback()],
        )
        result = trainer.fit()
        if result.error:
            raise result.error

    fs, path = storage.pyarrow_filesystem(storage_uri)
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(driver, {"CPU": 0.01}),
        param_space={"group": ray.tune.grid_search(list(range(len(loop_configs))))},
        tune_config=ray.tune.TuneConfig(max_concurrent_trials=cfg.resources.max_concurrent or None),
        run_config=ray.tune.RunConfig(
            name=f"tune-{h}", storage_path=path, storage_filesystem=fs, verbose=1
        ),
    )
    results = tuner.fit()
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"prior learning failed in {len(errors)} fold group(s): {errors[0]}")
