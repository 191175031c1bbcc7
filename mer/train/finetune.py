"""Stage 3, target learning: new head, frozen lower blocks, focal loss; predict the held-out subject.

Zhao et al. (2021) adjust the pre-trained network's structure and parameters and fine-tune
with Focal Loss (Lin et al. 2017). Our reconstruction (configurable in `FinetuneConfig`): the
siamese projection is replaced by a new two-layer head with dropout, the first `freeze` conv
blocks keep their prior-learning weights and norm statistics, alpha comes from a
class-balance exponent beta (alpha_c ~ n_c^-beta) or an explicit vector. Training runs for a
fixed epoch budget, or stops early on a validation split of the *training* subjects; the
held-out subject is only ever predicted, once, at the end.

A "fold run" trains on `train_subjects` and predicts `test_subjects`; a "unit" is one fold
run at one seed. One Ray Train run handles a configuration's units in turn (one start-up
cost for all of them) and writes each unit's per-clip predictions as soon as it finishes
(`mer.layout.predictions_uri`), tagged with the hash of every setting that made them; a
restarted run skips the units whose predictions exist with the same hash.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from mer import layout, provenance, storage
from mer.config import NUM_CLASSES, PipelineConfig, from_dict, with_params
from mer.errors import ConfigError
from mer.folds import FoldRun
from mer.keyframes.table import ClipTable, load_table
from mer.metrics import summarise, uf1
from mer.progress import Counter, emit, tune_progress
from mer.provenance import platform
from mer.train import data
from mer.train.checkpoints import load_state
from mer.train.losses import FocalLoss, class_balance_alpha
from mer.train.models import build_classifier, freeze, load_backbone_state
from mer.train.runtime import (
    Worker,
    adamw,
    fan_out,
    mean_over_workers,
    ray_worker,
    set_threads,
    set_up,
    table_on_device,
)
from mer.train.step import predict, train_step


def init_classifier(cfg: PipelineConfig, prior: str | None, num_classes: int):
    """Target learning's starting network: a new head on the prior's backbone weights (random
    ones without a prior), the first `finetune.freeze` blocks frozen."""

    torch.manual_seed(cfg.finetune.seed)
    model = build_classifier(cfg, num_classes)
    if prior:
        load_backbone_state(model, load_state(prior))
    freeze(model, cfg.finetune.freeze)
    return model


def finetune_loop(config: dict) -> None:
    """Ray Train per-worker loop: every unit in `config["units"]`, skipping finished ones."""
    import ray.train

    base = from_dict(config["cfg"])
    w = ray_worker()
    set_threads(base.resources.cpus_per_worker)
    table = load_table(config["keyframes"])
    num_classes = NUM_CLASSES[base.data.protocol]
    tally = Tally(num_classes, config["units"])
    covered: list[str] = []  # the units since the last report (progress counts each once)
    for i, unit in enumerate(config["units"]):
        preds = finished(unit)
        if preds is None:
            cfg = with_params(base, config["params"], unit.seed)
            t0 = time.time()
            preds = train_fold_run(cfg, table, unit.run, unit.prior, num_classes, w)
            preds["seconds"] = time.time() - t0
            preds["threads"] = torch.get_num_threads()  # what the fold run computed with
            preds["platform"] = platform(w.device)
            for key, value in provenance.record().items():  # the code that computed
                preds[key] = value
            preds["seed"] = unit.seed
            preds["config_id"] = config.get("config_id", "")
            preds["run_hash"] = unit.hash
            if w.is_chief:
                storage.write_parquet(_to_arrow(preds), unit.uri)
        tally.add(preds)
        covered.append(unit_key(unit.uri))
        if preds.attrs.get("trained", True) or i == len(config["units"]) - 1:
            ray.train.report(
                {
                    **tally.metrics(),
                    "units": covered,
                    "seed": unit.seed,
                    "run": unit.run.id,
                    "config_id": config.get("config_id", ""),
                }
            )
            covered = []


def unit_key(uri: str) -> str:
    """A fold run's name in progress counts: <config>/seed-<s>/<run>.parquet of its URI."""
    return "/".join(uri.rstrip("/").rsplit("/", 3)[-3:])


def finished_keys(folder: str, pattern: str) -> list[str]:
    """The unit keys of the fold runs already written under `folder` (one listing)."""
    fs, path = storage.filesystem(folder)
    return [unit_key(f) for f in fs.glob(f"{path.rstrip('/')}/{pattern}")]


def finished(unit: FoldUnit) -> pd.DataFrame | None:
    """A unit's saved predictions, None if it has not run; refuses predictions made under
    other settings (never mixes them in)."""
    if not storage.exists(unit.uri):
        return None
    preds = storage.read_parquet(unit.uri).to_pandas()
    if len(preds) and preds["run_hash"].iloc[0] != unit.hash:
        raise ConfigError(
            f"{unit.uri} holds predictions made under other settings (hash "
            f"{preds['run_hash'].iloc[0]}, this run {unit.hash}); delete it to rerun"
        )
    preds.attrs["trained"] = False
    return preds


def train_fold_run(
    cfg: PipelineConfig,
    table: ClipTable,
    run: FoldRun,
    prior: str | None,
    num_classes: int,
    w: Worker,
) -> pd.DataFrame:
    """Train one fold run from `prior` (None: from scratch) and return per-clip predictions
    for its test subjects."""
    model, epochs = train_classifier(cfg, table, run, prior, num_classes, w)
    return predict_run(cfg, table, run, model, w, epochs)


def train_classifier(
    cfg: PipelineConfig,
    table: ClipTable,
    run: FoldRun,
    prior: str | None,
    num_classes: int,
    w: Worker,
) -> tuple[torch.nn.Module, int]:
    """Target learning of one fold run on its training subjects, from `prior` (None: from
    scratch): (the trained classifier, the epochs it kept). The final model (mer.serving.export) is
    such a run with every subject training."""

    ft = cfg.finetune
    labels_all = table.clips["label"].to_numpy()
    train_idx = table.indices_of(run.train_subjects)
    val_idx = np.array([], dtype=int)
    if ft.early_stopping:
        train_idx, val_idx = _validation_split(table, train_idx, ft, run.index)

    model = init_classifier(cfg, prior, num_classes)
    ddp, forward = set_up(model, w, cfg.resources.channels_last, cfg.resources)
    frames = data.Frames.of(table.frames, w.device, table_on_device(cfg.resources, w))

    counts = np.bincount(labels_all[train_idx], minlength=num_classes)
    alpha = (
        torch.tensor(ft.alpha, dtype=torch.float32)
        if ft.alpha
        else class_balance_alpha(counts, ft.beta)
    )
    loss_fn = FocalLoss(gamma=ft.gamma, alpha=alpha.to(w.device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, ft.lr, ft.weight_decay, w)
    amp = ft.amp and w.device.type == "cuda"

    labels = labels_all[train_idx]
    best = (-1.0, None, 0)  # (val uf1, state, epoch)
    stale = epochs_run = 0
    for epoch in range(ft.epochs):
        rng, gen = data.epoch_rng(ft.seed, run.index, epoch)
        order = (
            data.balanced_order(labels, len(labels), rng)
            if ft.balanced_sampler
            else rng.permutation(len(labels))
        )
        ddp.train()
        for batch in data.shard(order, w.rank, w.world, ft.batch_size):
            x = data.to_tensor(frames[train_idx[batch]], w.device, cfg.model.input)
            if ft.augment:
                x = data.augment(x, gen)
            y = torch.from_numpy(labels[batch]).to(w.device)
            train_step(forward, loss_fn, opt, (x,), y, amp=amp)
        epochs_run = epoch + 1
        if len(val_idx):
            probs = predict(model, table.frames[val_idx], w.device, amp=amp, input=cfg.model.input)
            score = uf1(labels_all[val_idx], probs.argmax(1), num_classes)
            score = mean_over_workers({"uf1": score}, w)["uf1"]
            if score > best[0]:
                best, stale = (score, copy.deepcopy(model.state_dict()), epoch + 1), 0
            else:
                stale += 1
                if stale >= ft.patience:
                    break
    if best[1] is not None:
        model.load_state_dict(best[1])
    return model, epochs_run if best[1] is None else best[2]


def predict_run(cfg: PipelineConfig, table: ClipTable, run: FoldRun, model, w: Worker, epochs: int):
    """Per-clip predictions of a trained fold run for its test subjects (empty: none)."""
    test_idx = table.indices_of(run.test_subjects)
    amp = cfg.finetune.amp and w.device.type == "cuda"
    probs = predict(model, table.frames[test_idx], w.device, amp=amp, input=cfg.model.input)
    clips = table.clips.iloc[test_idx]
    return pd.DataFrame(
        {
            "dataset": clips["dataset"].to_numpy(),
            "subject": clips["subject"].to_numpy(),
            "clip": clips["clip"].to_numpy(),
            "label": clips["label"].to_numpy().astype(int),
            "pred": probs.argmax(1).astype(int),
            "probs": list(probs.astype(float)),
            "run": run.id,
            "kind": run.kind,
            "outer": run.outer,
            "epochs": epochs,
        }
    )


def _validation_split(table, train_idx, ft, run_index):
    """Hold out one group of training subjects for early stopping (never a test subject)."""
    keys = table.subject_keys[train_idx]
    subjects = np.array(sorted(set(keys)))
    rng = np.random.default_rng([ft.seed, run_index, 7])
    groups = np.array_split(rng.permutation(subjects), min(ft.val_groups, len(subjects)))
    is_val = np.isin(keys, list(groups[0]))
    return train_idx[~is_val], train_idx[is_val]


def _to_arrow(preds: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(preds, preserve_index=False)


class Tally:
    """Pooled metrics over the finished outer units, kept in memory as units finish."""

    def __init__(self, num_classes: int, units: list[FoldUnit]) -> None:
        self.num_classes = num_classes
        self.total = len(units)
        self.outer_total = sum(1 for u in units if u.run.kind == "outer")
        self.outer: list[pd.DataFrame] = []
        self.done = 0

    def add(self, preds: pd.DataFrame) -> None:
        self.done += 1
        if len(preds) and (preds["kind"] == "outer").all():
            self.outer.append(preds[["dataset", "subject", "clip", "label", "pred", "seed"]])

    def metrics(self) -> dict:

        m = {
            "units_done": self.done,
            "units_total": self.total,
            "outer_done": len(self.outer),
            "outer_total": self.outer_total,
        }
        if self.outer:
            # Pooled at each seed, then the mean over the seeds begun: at the last report
            # this is mer.evaluation.results' score of the configuration (Tune's own tables show it).
            outer = pd.concat(self.outer, ignore_index=True)
            per_seed = [summarise(g, self.num_classes) for _, g in outer.groupby("seed")]
            for k in ("uf1", "uar", "accuracy"):
                m[k] = float(sum(s[k] for s in per_seed) / len(per_seed))
            m["seeds_begun"] = len(per_seed)
        else:
            m.update(uf1=0.0, uar=0.0, accuracy=0.0)
        return m


# ---------------------------------------------------------------- driver


@dataclass(frozen=True)
class FoldUnit:
    """One (seed, fold run) of a configuration: the prior it starts from (None: from
    scratch), its settings hash (mer.layout.run_hash) and where its predictions go."""

    seed: int
    run: FoldRun
    prior: str | None
    hash: str
    uri: str


def fold_units(
    cfg: PipelineConfig, runs: list[FoldRun], seeds: list[int], out: str, params: dict | None = None
) -> list[FoldUnit]:
    """Every (seed, fold run) of one configuration."""
    units = []
    for seed in seeds:
        c = with_params(cfg, params or {}, seed)
        for run in runs:
            prior = layout.prior_uri(c, run.prior) if c.pretrain.enabled else None
            units.append(
                FoldUnit(
                    seed,
                    run,
                    prior,
                    layout.run_hash(c, run),
                    layout.predictions_uri(out, seed, run.id),
                )
            )
    return units


def loop_config(cfg: PipelineConfig, keyframes: str, units: list[FoldUnit], params: dict, cid: str):
    return {
        "cfg": cfg.to_dict(),
        "params": params,
        "units": units,
        "keyframes": keyframes,
        "config_id": cid,
    }


def run_finetune(
    cfg: PipelineConfig,
    keyframes: str,
    runs: list[FoldRun],
    name: str,
    *,
    progress=emit,
    loop=finetune_loop,
) -> pd.DataFrame:
    """One configuration (cfg as is, its finetune.seed) over `runs`, under
    `<root>/finetune/<name>/`; returns all its predictions. A rerun with other settings
    under the same name is refused (mer.layout.claim)."""

    out = layout.finetune_uri(cfg, name)
    layout.claim(
        out,
        layout.finetune_settings(cfg, [r.id for r in runs]),
        "target-learning results",
        "choose another --name",
    )
    storage.write_bytes(storage.join(out, "config.yaml"), cfg.to_yaml().encode())
    units = fold_units(cfg, runs, [cfg.finetune.seed], out)
    counter = Counter("finetune", len(units), progress)
    counter.keep(finished_keys(out, "seed-*/*.parquet"))

    def describe(_config, result):
        return f"fold runs: {result['run']} (pooled UF1 so far {result['uf1']:.3f})"

    fan_out(
        loop,
        [(loop_config(cfg, keyframes, units, {}, name), name)],
        cfg.resources,
        storage.join(out, "_runs"),
        "_tune",
        tune_progress(counter, describe),
    )
    return layout.read_predictions(out)
