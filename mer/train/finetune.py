"""Stage 3, target learning: new head, frozen lower blocks, focal loss; predict the held-out subject.

Zhao et al. (2021) adjust the pre-trained network's structure and parameters and fine-tune
with Focal Loss (Lin et al. 2017). Our reconstruction (configurable in `FinetuneConfig`): the
siamese projection is replaced by a new two-layer head with dropout, the first `freeze` conv
blocks keep their prior-learning weights and norm statistics, alpha comes from a
class-balance exponent beta (alpha_c ~ n_c^-beta) or an explicit vector. Training runs for a
fixed epoch budget, or stops early on a validation split of the *training* subjects; the
held-out subject is only ever predicted, once, at the end.

A "fold run" trains on `train_subjects` and predicts `test_subjects`. One Ray Train run
handles a list of fold runs in turn (one start-up cost for all of them) and writes each
run's per-clip predictions to `<out>/folds/<run id>.parquet` as soon as it finishes; a
restarted run skips the fold runs whose predictions exist.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pandas as pd
import torch

from mer import storage
from mer.config import PipelineConfig, from_dict
from mer.train import data
from mer.train.runtime import make_trainer, mean_over_workers, place, set_threads, worker

NUM_CLASSES = {"3class": 3, "5class": 5}


def apply_params(cfg: PipelineConfig, params: dict) -> PipelineConfig:
    """A copy of cfg with search parameters (gamma, beta, alpha, freeze, lr, ...) applied."""
    cfg = copy.deepcopy(cfg)
    for k, v in params.items():
        if not hasattr(cfg.finetune, k):
            raise KeyError(f"search parameter {k!r} is not a finetune setting")
        setattr(cfg.finetune, k, v)
    return cfg.validate()


def build_classifier(cfg: PipelineConfig, num_classes: int):
    from mer.models import C3D, ClassifierC3D

    backbone = C3D(
        frames=cfg.keyframes.k,
        size=cfg.keyframes.size,
        width=cfg.model.width,
        batch_norm=cfg.model.batch_norm,
        dropout=cfg.model.dropout,
    )
    return ClassifierC3D(
        backbone, num_classes=num_classes, hidden=cfg.model.head_hidden, dropout=cfg.model.dropout
    )


def predictions_uri(out: str, run_id: str) -> str:
    return storage.join(out, "folds", f"{run_id}.parquet")


def finetune_loop(config: dict) -> None:
    """Ray Train per-worker loop: every fold run in `config["runs"]`, skipping finished ones."""
    import ray.train

    cfg = apply_params(from_dict(config["cfg"]), config.get("params", {}))
    w = worker()
    set_threads(cfg.resources.cpus_per_worker)
    table = data.load_table(config["keyframes"])
    out = config["out"]
    num_classes = NUM_CLASSES.get(cfg.data.protocol, 3)
    for i, run in enumerate(config["runs"]):
        if storage.exists(predictions_uri(out, run["id"])):
            continue
        t0 = time.time()
        preds = train_fold_run(cfg, table, run, i, num_classes, w)
        if w.is_chief:
            preds["seconds"] = time.time() - t0
            preds["config_id"] = config.get("config_id", "")
            storage.write_parquet(_to_arrow(preds), predictions_uri(out, run["id"]))
        ray.train.report(progress_metrics(out, config["runs"], num_classes))


def train_fold_run(cfg, table, run: dict, run_index: int, num_classes: int, w) -> pd.DataFrame:
    """Train one fold run and return per-clip predictions for its test subjects."""
    from mer.losses import FocalLoss, class_balance_alpha
    from mer.models import freeze, load_backbone_state

    ft = cfg.finetune
    labels_all = table.clips["label"].to_numpy()
    train_idx = table.indices_of(run["train_subjects"])
    test_idx = table.indices_of(run["test_subjects"])
    val_idx = np.array([], dtype=int)
    if ft.early_stopping:
        train_idx, val_idx = _validation_split(table, train_idx, ft, run_index)

    torch.manual_seed(ft.seed)
    model = build_classifier(cfg, num_classes)
    if run.get("prior"):
        load_backbone_state(model, _load_prior(run["prior"]))
    freeze(model, ft.freeze)
    place(model, w, cfg.resources.channels_last)
    ddp = model
    if w.world > 1:
        import ray.train.torch

        ddp = ray.train.torch.prepare_model(model)

    counts = np.bincount(labels_all[train_idx], minlength=num_classes)
    alpha = (
        torch.tensor(ft.alpha, dtype=torch.float32)
        if ft.alpha
        else class_balance_alpha(counts, ft.beta)
    )
    loss_fn = FocalLoss(gamma=ft.gamma, alpha=alpha.to(w.device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=ft.lr, weight_decay=ft.weight_decay)
    amp = ft.amp and w.device.type == "cuda"

    best = (-1.0, None, 0)  # (val uf1, state, epoch)
    stale = 0
    epochs_run = 0
    for epoch in range(ft.epochs):
        rng = np.random.default_rng([ft.seed, run_index, epoch])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        labels = labels_all[train_idx]
        order = (
            data.balanced_order(labels, len(labels), rng)
            if ft.balanced_sampler
            else rng.permutation(len(labels))
        )
        ddp.train()
        for batch in data.shard(order, w.rank, w.world, ft.batch_size):
            x = data.to_tensor(table.frames[train_idx[batch]], w.device, cfg.model.input)
            if ft.augment:
                x = data.augment(x, gen)
            y = torch.from_numpy(labels[batch]).to(w.device)
            with torch.autocast(w.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = ddp(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epochs_run = epoch + 1
        if len(val_idx):
            from mer.metrics import uf1

            pred = predict(model, table.frames[val_idx], w.device, amp, cfg.model.input).argmax(1)
            score = mean_over_workers({"uf1": uf1(labels_all[val_idx], pred, num_classes)}, w)
            if score["uf1"] > best[0]:
                best = (score["uf1"], copy.deepcopy(model.state_dict()), epoch + 1)
                stale = 0
            else:
                stale += 1
                if stale >= ft.patience:
                    break
    if best[1] is not None:
        model.load_state_dict(best[1])

    probs = predict(model, table.frames[test_idx], w.device, amp, cfg.model.input)
    clips = table.clips.iloc[test_idx]
    return pd.DataFrame(
        {
            "dataset": clips["dataset"].to_numpy(),
            "subject": clips["subject"].to_numpy(),
            "clip": clips["clip"].to_numpy(),
            "label": clips["label"].to_numpy().astype(int),
            "pred": probs.argmax(1).astype(int),
            "probs": list(probs.astype(float)),
            "run": run["id"],
            "kind": run.get("kind", "outer"),
            "outer": run.get("outer", run["id"]),
            "epochs": epochs_run if best[1] is None else best[2],
        }
    )


@torch.no_grad()
def predict(
    model, frames: np.ndarray, device, amp: bool, input: str = "frames", batch_size: int = 32
) -> np.ndarray:
    """Softmax probabilities (N, C) for uint8 key frames."""
    model.eval()
    out = []
    for i in range(0, len(frames), batch_size):
        x = data.to_tensor(frames[i : i + batch_size], device, input)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


def _validation_split(table, train_idx, ft, run_index):
    """Hold out one group of training subjects for early stopping (never a test subject)."""
    keys = table.subject_keys[train_idx]
    subjects = np.array(sorted(set(keys)))
    rng = np.random.default_rng([ft.seed, run_index, 7])
    groups = np.array_split(rng.permutation(subjects), min(ft.val_groups, len(subjects)))
    val = set(groups[0])
    is_val = np.isin(keys, list(val))
    return train_idx[~is_val], train_idx[is_val]


def _load_prior(uri: str) -> dict:
    from mer.train.pretrain import load_state

    return load_state(uri)


def _to_arrow(preds: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(preds, preserve_index=False)


def read_predictions(out: str) -> pd.DataFrame:
    """Every finished fold run's predictions under `out` (empty frame if none yet)."""
    files = [f for f in storage.listdir(storage.join(out, "folds")) if f.endswith(".parquet")]
    if not files:
        return pd.DataFrame(columns=["dataset", "subject", "clip", "label", "pred", "run", "kind"])
    return pd.concat(
        [storage.read_parquet(storage.join(out, "folds", f)).to_pandas() for f in files],
        ignore_index=True,
    )


def progress_metrics(out: str, runs: list[dict], num_classes: int) -> dict:
    """Pooled metrics over the outer fold runs finished so far (the same folds for every config)."""
    from mer.metrics import summarise

    preds = read_predictions(out)
    outer = preds[preds["kind"] == "outer"] if len(preds) else preds
    n_outer = sum(1 for r in runs if r.get("kind", "outer") == "outer")
    m = {
        "runs_done": int(preds["run"].nunique()) if len(preds) else 0,
        "folds_done": int(outer["run"].nunique()) if len(outer) else 0,
        "folds_total": n_outer,
    }
    if len(outer):
        s = summarise(outer, num_classes)
        m.update(uf1=s["uf1"], uar=s["uar"], accuracy=s["accuracy"])
    else:
        m.update(uf1=0.0, uar=0.0, accuracy=0.0)
    return m


# ---------------------------------------------------------------- driver


def outer_runs(folds: list[dict], cfg: PipelineConfig) -> list[dict]:
    """One fold run per LOSO fold, starting from that fold's prior-learning weights."""
    from mer.train.pretrain import prior_uri

    return [
        {
            "id": f["name"],
            "kind": "outer",
            "outer": f["name"],
            "train_subjects": f["train_subjects"],
            "test_subjects": f["test_subjects"],
            "prior": prior_uri(cfg.root, f["name"]) if cfg.pretrain.enabled else None,
        }
        for f in folds
    ]


def run_finetune(
    cfg: PipelineConfig,
    keyframes: str,
    runs: list[dict],
    out: str,
    *,
    params: dict | None = None,
    name: str = "finetune",
    progress=print,
) -> pd.DataFrame:
    """Fit one TorchTrainer over `runs` with one configuration; return all predictions."""
    loop_config = {
        "cfg": cfg.to_dict(),
        "params": params or {},
        "runs": runs,
        "keyframes": keyframes,
        "out": out,
    }
    storage.write_bytes(storage.join(out, "config.yaml"), cfg.to_yaml().encode())
    trainer = make_trainer(
        finetune_loop, loop_config, cfg.resources, storage.join(out, "_runs"), name
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    preds = read_predictions(out)
    progress(
        f"[finetune] {preds['run'].nunique() if len(preds) else 0}/{len(runs)} fold runs done -> {out}"
    )
    return preds
