"""The final model of a search: the chosen configuration trained on every subject, packaged
as a model folder (mer.serving.model_folder: weights, a portable torch.export program, the model
card) under `<root>/models/<name>/` (mer.layout.model_uri), with `_settings.json`, what the
weights depend on (a rerun under other settings is refused).

A search ends with LOSO scores per configuration (mer.evaluation.results). Which configuration: the one
nested LOSO chose for the most held-out subjects (when the experiment ran search.protocol
nested), else the top of the leaderboard by mean UF1 over seeds, or the id given. It is
trained exactly as each of its fold runs was (mer.train.finetune.train_fold_run: prior
learning, then target learning with the same budget and seed), on all subjects, on Ray
Train; the card carries the experiment's LOSO scores with intervals beside the baselines.
"""

from __future__ import annotations

import collections
import time

import numpy as np
import torch
from torch import nn

from mer import layout, storage
from mer.config import NUM_CLASSES, PipelineConfig, from_dict, with_params
from mer.errors import ConfigError, InputError
from mer.evaluation import results
from mer.folds import FoldRun
from mer.keyframes.table import load_table
from mer.progress import Counter, emit, tune_progress
from mer.serving import calibration, model_card
from mer.serving.model_folder import CARD, CARD_MD, PORTABLE, WEIGHTS
from mer.serving.packaging import package
from mer.train import checkpoints, finetune
from mer.train.checkpoints import is_done
from mer.train.pretrain import PriorJob, prior_jobs, train_prior
from mer.train.runtime import fan_out, ray_worker, set_threads

# ---------------------------------------------------------------- choosing a configuration


def choose_config(exp, config_id: str | None = None) -> dict:
    """{"config_id", "params", "rule", "note"}: the configuration a final model is trained
    with (see the module docstring for the rule)."""

    methods = sorted(c for c, kind in exp.kinds.items() if kind == "method")
    if config_id:
        if config_id not in methods:
            raise InputError(
                f"{exp.uri}: no configuration {config_id!r}; known: {', '.join(methods) or 'none'}"
            )
        return _choice(exp, config_id, "given", "chosen by the user (--config-id)")
    if exp.meta.get("protocol") == "nested":
        n = results.nested(exp)
        if not n.get("choices") or n["folds_done"] < n["folds_total"]:
            raise InputError(
                f"{exp.uri}: nested LOSO has chosen a configuration for {n['folds_done']} of "
                f"{n['folds_total']} held-out subjects; let the search finish or pass "
                "--config-id"
            )
        votes = collections.Counter(c["config_id"] for c in n["choices"])
        inner = collections.defaultdict(list)
        for c in n["choices"]:
            inner[c["config_id"]].append(c["inner_uf1"])
        # Most held-out subjects; ties: the higher mean inner-fold UF1, then the id.
        best = max(sorted(votes), key=lambda c: (votes[c], float(np.mean(inner[c]))))
        note = (
            f"nested LOSO chose it for {votes[best]} of {n['folds_total']} held-out subjects "
            "(on inner folds only)"
        )
        return {**_choice(exp, best, "nested-loso", note), "votes": dict(votes)}
    top = results.top_config(exp)
    if top is None:
        raise InputError(
            f"{exp.uri}: no configuration has finished every fold at every seed; let the "
            "search finish or pass --config-id"
        )
    note = "top of the leaderboard by mean pooled UF1 over seeds (loso-search)"
    return _choice(exp, top, "loso-search", note)


def _choice(exp, cid: str, rule: str, note: str) -> dict:
    return {"config_id": cid, "params": dict(exp.params[cid]), "rule": rule, "note": note}


def final_run(subjects: list[str]) -> FoldRun:
    """The fold run of a final model: every subject trains, none is held out; it learns its
    own prior ("all")."""
    return FoldRun(
        id="all",
        index=0,
        kind="final",
        outer="all",
        train_subjects=sorted(subjects),
        test_subjects=[],
        prior="all",
    )


# ---------------------------------------------------------------- training (Ray Train)


def train_classifier(cfg: PipelineConfig, table, run: FoldRun, prior: str | None, num_classes, w):
    """(trained classifier, predictions of the run's test subjects): one fold run exactly as
    target learning trains it (mer.train.finetune), keeping the network."""

    model, epochs = finetune.train_classifier(cfg, table, run, prior, num_classes, w)
    return model, finetune.predict_run(cfg, table, run, model, w, epochs)


def weights_of(model: nn.Module) -> dict:
    """A plain state dict: CPU, contiguous (placement may have made weights channels-last)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def export_loop(config: dict) -> None:
    """Ray Train per-worker loop: prior learning of the run where it is not done yet, then
    target learning; the chief writes the weights (and, if the run holds subjects out, their
    predictions). A replaced worker restarts the step it was in."""
    import ray.train

    cfg = from_dict(config["cfg"])
    w = ray_worker()
    set_threads(cfg.resources.cpus_per_worker)
    table = load_table(config["keyframes"])
    job = config["prior_job"]
    if job and not _prior_done(job):
        train_prior(cfg, table, job, w)
        if w.world > 1:
            torch.distributed.barrier()  # the chief has written prior.pt
    t0 = time.time()
    model, preds = train_classifier(
        cfg, table, config["run"], config["prior"], NUM_CLASSES[cfg.data.protocol], w
    )
    if w.is_chief:
        if config.get("predictions") and len(preds):
            import pyarrow as pa

            storage.write_parquet(
                pa.Table.from_pandas(preds, preserve_index=False), config["predictions"]
            )
        checkpoints.save_state(weights_of(model), config["weights"])
    ray.train.report({"run": config["run"].id, "seconds": time.time() - t0})


def train_weights(
    cfg: PipelineConfig,
    keyframes: str,
    run: FoldRun,
    weights: str,
    *,
    predictions: str | None = None,
    progress=emit,
) -> None:
    """Train `run` with cfg (its params and seed applied) in one Ray Train run: prior
    learning where it is not done (the same job, folder and function as
    mer.train.pretrain), then target learning; writes the weights to `weights` and, for a
    run with test subjects, their per-clip predictions to `predictions`."""

    seed = cfg.finetune.seed
    job, prior = None, None
    if cfg.pretrain.enabled:
        # None when the run reuses another run's prior, or its own is learnt already.
        jobs = [j for j in prior_jobs(cfg, [run], [seed]) if not _prior_done(j)]
        job = jobs[0] if jobs else None
        prior = layout.prior_uri(with_params(cfg, {}, seed), run.prior)
    loop_config = {
        "cfg": cfg.to_dict(),
        "keyframes": keyframes,
        "run": run,
        "prior_job": job,
        "prior": prior,
        "weights": weights,
        "predictions": predictions,
    }
    epochs = cfg.pretrain.epochs if job else 0
    counter = Counter("export", epochs + 1, progress)
    progress(
        f"[export] {'prior learning, then ' if job else ''}target learning on "
        f"{len(run.train_subjects)} subjects ({cfg.finetune.epochs} epochs)"
    )

    def describe(_config, result):
        if "pair_accuracy" in result:
            return (
                f"prior learning epoch {result['epoch']}/{epochs} loss {result['loss']:.3f} "
                f"pair acc {result['pair_accuracy']:.2f}"
            )
        return f"target learning done in {result['seconds']:.0f} s"

    name = f"train-{layout.run_hash(cfg, run)}"
    fan_out(
        export_loop,
        [(loop_config, name)],
        cfg.resources,
        storage.join(cfg.root, "models", "_runs"),
        f"_tune-{name}",
        tune_progress(counter, describe),
    )


def _prior_done(job: PriorJob) -> bool:

    return is_done(job.dir, job.train_subjects)


# ---------------------------------------------------------------- the driver

# How to run the search an export needs, for the error when there is none; a job passes its
# own arguments (jobs/export.py), a library caller gets this.
SEARCH_COMMAND = "python jobs/tune.py --config <the config> (or jobs/pipeline.py)"


def search_ran(cfg: PipelineConfig, experiment: str | None = None, command: str = "") -> str:
    """The URI of the experiment an export reads; an InputError naming the command to run
    first when no search has run there (checked before Ray starts)."""

    exp_uri = results.resolve(experiment or cfg.search.experiment, cfg.root)
    if not storage.exists(storage.join(exp_uri, "_experiment.json")):
        raise InputError(
            f"nothing to export: no search has run at {exp_uri} yet; run it first: "
            f"{command or SEARCH_COMMAND}"
        )
    return exp_uri


def export_model(
    cfg: PipelineConfig,
    experiment: str | None = None,
    *,
    config_id: str | None = None,
    name: str | None = None,
    seed: int | None = None,
    progress=emit,
) -> str:
    """Train the chosen configuration of `experiment` (URI or name under <root>/tune/;
    default cfg's) on all subjects and write its model folder; returns the folder URI.

    cfg must be the config the experiment ran with (checked against the experiment's
    settings). Weights made under the same settings are kept (only the card is refreshed,
    with the experiment's current scores); a name holding another model is refused."""

    exp_uri = search_ran(cfg, experiment)
    exp = results.load_experiment(exp_uri)
    _check_same_settings(cfg, exp_uri)
    choice = choose_config(exp, config_id)
    seed = exp.seeds[0] if seed is None else int(seed)
    final_cfg = with_params(cfg, choice["params"], seed)
    keyframes = exp.meta["keyframes"]
    table = load_table(keyframes)
    run = final_run(sorted(set(table.subject_keys)))
    name = name or cfg.search.experiment
    folder = layout.model_uri(cfg, name)
    settings = {
        **layout.run_settings(final_cfg, run),
        "keyframes.uri": keyframes,
        "selection.config_id": choice["config_id"],
    }
    layout.claim(folder, settings, "a final model", "choose another --name")
    progress(
        f"[export] {exp.meta.get('experiment')}: config {choice['config_id']} "
        f"{choice['params']} ({choice['note']}), seed {seed}; {len(table.clips)} clips of "
        f"{len(run.train_subjects)} subjects -> {folder}"
    )
    weights_uri = storage.join(folder, WEIGHTS)
    if storage.exists(weights_uri):
        progress(f"[export] {weights_uri} was trained under the same settings; kept")
    else:
        train_weights(final_cfg, keyframes, run, weights_uri, progress=progress)
    training = {
        **choice,
        "experiment": exp_uri,
        "seed": seed,
        "run": f"all {len(run.train_subjects)} subjects, none held out",
        "epochs": (
            f"{final_cfg.finetune.epochs} (fixed budget, as in every fold run)"
            if not final_cfg.finetune.early_stopping
            else f"at most {final_cfg.finetune.epochs}, early stopping on a validation split "
            "of the training subjects"
        ),
        "prior": "prior learning on all subjects at the same seed"
        if final_cfg.pretrain.enabled
        else "none (target learning from random weights)",
    }
    package(
        folder,
        final_cfg,
        keyframes,
        run,
        name=name,
        training=training,
        evaluation=model_card.evaluation(exp, choice),
        hashes={
            "experiment": exp.meta.get("settings_hash"),
            "model_settings": layout.digest(settings),
        },
        calibration=calibration.from_experiment(exp, choice["config_id"]),
        progress=progress,
    )
    progress(f"[export] done: {folder} ({WEIGHTS}, {PORTABLE}, {CARD}, {CARD_MD})")
    return folder


def _check_same_settings(cfg: PipelineConfig, exp_uri: str) -> None:
    """Refuse a config other than the one the experiment ran with (its scores would not
    describe the model)."""
    uri = storage.join(exp_uri, "_settings.json")
    if not storage.exists(uri):
        return
    old = storage.read_json(uri)
    now = layout.experiment_settings(cfg)
    if old.get("hash") != layout.digest(now):
        change = layout.describe_change(old.get("settings", {}), now)
        raise ConfigError(
            f"{exp_uri} was searched with {change}; export with the config the search ran "
            f"with (its copy is {storage.join(exp_uri, 'config.yaml')})"
        )
