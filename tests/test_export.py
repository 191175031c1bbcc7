"""The final model of a search: which configuration, trained on every subject on Ray Train,
its weights-only checkpoint, portable program and model card; reruns and refusals."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from tests_paths import TINY, run_job

from mer import config, layout, storage
from mer.errors import ConfigError, InputError
from mer.evaluation import results, search
from mer.evaluation.baselines import run_baselines
from mer.keyframes.table import load_table, select_folds
from mer.serving.export import choose_config, export_model, final_run
from mer.serving.model_folder import load_model
from mer.serving.packaging import PORTABLE_TOLERANCE
from mer.train.checkpoints import load_state
from mer.train.models import build_classifier
from mer.train.step import predict

EXPORT = [
    *TINY,
    "pretrain.epochs=1",
    "pretrain.pairs_per_epoch=16",
    "pretrain.batch_size=8",
    "finetune.epochs=1",
    "finetune.batch_size=8",
    "resources.cpus_per_worker=1",
    "search.experiment=exp",
    "search.protocol=nested",
    "search.inner_k=2",
    "search.space={gamma: [0.0, 2.0], freeze: [1]}",
]
# Made-up accuracies per configuration: A wins the held-out folds (loso-search), B the
# inner folds, so nested LOSO chooses B for every held-out subject.
A = {"gamma": 0.0, "freeze": 1}
B = {"gamma": 2.0, "freeze": 1}
QUALITY = {"A": (A, {"outer": 0.95, "inner": 0.3}), "B": (B, {"outer": 0.6, "inner": 0.95})}


def fabricate_experiment(cfg, keyframes: str) -> str:
    """A finished nested experiment whose configurations' per-clip predictions are made up
    (results are recomputed from predictions alone), with overconfident probabilities (the
    predicted class at 0.75-0.99 whatever the accuracy); the baselines are real."""
    table = load_table(keyframes)
    exp, runs = search.open_experiment(cfg, keyframes, table, select_folds(table))
    run_baselines(exp, table, runs, cfg.search.seeds, 3)
    rng = np.random.default_rng(0)
    labels = table.clips["label"].to_numpy()
    for params, accuracy in QUALITY.values():
        out = storage.join(exp, "configs", search.config_id(params))
        storage.write_json(storage.join(out, "params.json"), params)
        for seed in cfg.search.seeds:
            for run in runs:
                idx = table.indices_of(run.test_subjects)
                right = rng.random(len(idx)) < accuracy[run.kind]
                pred = np.where(right, labels[idx], (labels[idx] + 1) % 3)
                top = rng.uniform(0.75, 0.99, len(idx))
                probs = np.repeat(((1 - top) / 2)[:, None], 3, axis=1)
                probs[np.arange(len(idx)), pred] = top
                clips = table.clips.iloc[idx]
                preds = pd.DataFrame(
                    {
                        "dataset": clips["dataset"].to_numpy(),
                        "subject": clips["subject"].to_numpy(),
                        "clip": clips["clip"].to_numpy(),
                        "label": labels[idx],
                        "pred": pred,
                        "probs": list(probs),
                        "run": run.id,
                        "kind": run.kind,
                        "outer": run.outer,
                        "seed": seed,
                        "seconds": 1.0,
                    }
                )
                storage.write_parquet(
                    pa.Table.from_pandas(preds, preserve_index=False),
                    layout.predictions_uri(out, seed, run.id),
                )
    meta_uri = storage.join(exp, "_experiment.json")
    storage.write_json(meta_uri, {**storage.read_json(meta_uri), "status": "finished"})
    return exp


@pytest.fixture(scope="module")
def exported(ray_local, fake_keyframes, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = config.load(None, [f"root={root}", *EXPORT])
    exp = fabricate_experiment(cfg, fake_keyframes)
    lines: list[str] = []
    folder = export_model(cfg, progress=lines.append)
    return {"cfg": cfg, "exp": exp, "folder": folder, "lines": lines, "kf": fake_keyframes}


def test_the_configuration_is_the_nested_choice_else_the_top_else_the_given_one(exported):
    exp = results.load_experiment(exported["exp"])
    a, b = search.config_id(A), search.config_id(B)
    nested = choose_config(exp)
    assert (nested["config_id"], nested["rule"], nested["votes"]) == (b, "nested-loso", {b: 4})
    assert results.top_config(exp) == a  # the optimistic pick differs
    exp.meta["protocol"] = "loso"
    assert choose_config(exp)["config_id"] == a
    assert choose_config(exp, a)["rule"] == "given"
    with pytest.raises(InputError, match="no configuration 'nope'"):
        choose_config(exp, "nope")


def test_final_model_learns_from_every_subject_and_carries_its_card(exported):
    cfg, folder = exported["cfg"], exported["folder"]
    assert folder == os.path.join(cfg.root, "models", "exp")
    assert sorted(os.listdir(folder)) == [
        "MODEL_CARD.md",
        "_settings.json",
        "config.yaml",
        "model.pt",
        "model.pt2",
        "model_card.json",
        "reference_features.npy",
        "reliability.png",
    ]
    subjects = [f"fake/s{i:02d}" for i in range(4)]
    settings = storage.read_json(os.path.join(folder, "_settings.json"))["settings"]
    assert settings["run.train_subjects"] == subjects and settings["run.test_subjects"] == []
    assert settings["finetune.gamma"] == 2.0 and settings["finetune.seed"] == 0
    final_cfg = config.with_params(cfg, B, 0)
    done = storage.read_json(os.path.join(layout.prior_dir(final_cfg, "all"), "_done.json"))
    assert done["train_subjects"] == subjects  # prior learning on all subjects too
    # Weights only: a plain state dict of the classifier, read with weights_only=True.
    state = load_state(os.path.join(folder, "model.pt"))
    assert set(state) == set(build_classifier(final_cfg, 3).state_dict())
    assert all(isinstance(v, torch.Tensor) for v in state.values())

    card = json.loads(open(os.path.join(folder, "model_card.json")).read())
    assert card["classes"] == ["negative", "positive", "surprise"]
    assert card["label_mapping"]["positive"] == ["happiness"]
    assert "repression" in card["label_mapping"]["negative"]
    spec = card["input"]
    assert (
        spec["keyframes"].items()
        >= {
            "k": 8,
            "size": 32,
            "method": "adaptive",
            "motion": "flow",
            "interpolation": "linear",
            "face_crop": False,
            "stabilize": True,
            "registration": "motion",
            "decode_timeout": 60.0,
        }.items()
    )
    assert not set(spec["keyframes"]) & {"concurrency", "chunk_size"}  # speed, not content
    assert spec["input_mode"] == "frames" and "127.5" in spec["normalisation"]
    assert spec["tensor"]["shape"] == ["N", 8, 32, 32, 3]
    assert card["config"] == final_cfg.to_dict()
    t = card["training"]
    assert (t["config_id"], t["rule"], t["seed"]) == (search.config_id(B), "nested-loso", 0)
    h = card["hashes"]
    assert h["run"] == layout.run_hash(final_cfg, final_run(subjects))
    assert h["prior"] == layout.prior_hash(final_cfg) and h["keyframes"] and h["data"]
    assert h["experiment"] == layout.digest(layout.experiment_settings(cfg))
    blob = open(os.path.join(folder, "model.pt"), "rb").read()
    assert h["weights_sha256"] == hashlib.sha256(blob).hexdigest()
    d = card["data"]
    assert (d["dataset"], d["protocol"], d["clips"], d["subjects"]) == (
        "synthetic",
        "3class",
        24,
        4,
    )
    assert d["subject_keys"] == subjects
    ev = card["evaluation"]
    assert ev["estimate"] == "nested_loso"
    for block in (ev["nested_loso"], ev["loso_search"], *ev["baselines"].values()):
        assert 0 <= block["uf1_lo"] <= block["uf1"] <= block["uf1_hi"] <= 1
    assert sorted(ev["baselines"]) == ["flow-cnn", "lbp-top", "linear", "majority"]
    exp = results.load_experiment(exported["exp"])
    assert ev["loso_search"]["uf1"] == pytest.approx(
        results.entry_scores(exp, search.config_id(B))["uf1"]
    )
    assert ev["nested_loso"]["uf1"] == pytest.approx(results.nested(exp)["uf1"])
    assert any("reconstruction" in x for x in card["limitations"])
    assert any("synthetic" in x for x in card["limitations"])
    md = open(os.path.join(folder, "MODEL_CARD.md")).read()
    for text in ("nested-loso", "baseline: majority", "baseline: linear", "## Limitations"):
        assert text in md
    assert any("nested LOSO chose it for 4 of 4" in line for line in exported["lines"])


def test_portable_program_loads_without_this_repository_and_matches(exported, tmp_path):
    folder = exported["folder"]
    frames = load_table(exported["kf"]).frames
    np.save(tmp_path / "frames.npy", frames)
    script = (
        "import importlib.util, sys, numpy as np, torch\n"
        "assert importlib.util.find_spec('mer') is None, 'the repository is importable'\n"
        f"m = torch.export.load({os.path.join(folder, 'model.pt2')!r}).module()\n"
        "with torch.no_grad():\n"
        "    p = m(torch.from_numpy(np.load('frames.npy'))).numpy()\n"
        "np.save('probs.npy', p)\n"
    )
    # -I: no PYTHONPATH, no user site, no current directory on sys.path.
    done = subprocess.run(
        [sys.executable, "-I", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(tmp_path / "probs.npy")
    model, card = load_model(folder)
    want = predict(model, frames, torch.device("cpu"), input=card["config"]["model"]["input"])
    diff = np.abs(got - want).max()
    print(f"\nportable program vs PyTorch model, {len(frames)} clips: max |diff| {diff:.2e}")
    assert got.shape == (24, 3) and diff <= PORTABLE_TOLERANCE
    assert card["files"]["portable"]["check"]["max_abs_diff"] <= PORTABLE_TOLERANCE


def test_rerun_keeps_the_weights_and_other_settings_are_refused(exported):
    cfg, folder = exported["cfg"], exported["folder"]
    weights = os.path.join(folder, "model.pt")
    before = os.path.getmtime(weights)
    lines: list[str] = []
    assert export_model(cfg, progress=lines.append) == folder
    assert os.path.getmtime(weights) == before
    assert any("kept" in line for line in lines)
    # Another configuration under the same name is refused, naming the setting.
    with pytest.raises(ConfigError, match="finetune.gamma.*choose another --name"):
        export_model(cfg, config_id=search.config_id(A), progress=lines.append)
    # A config other than the one the search ran with is refused.
    other = config.load(None, [f"root={cfg.root}", *EXPORT, "finetune.lr=0.01"])
    with pytest.raises(ConfigError, match="finetune.lr"):
        export_model(other, progress=lines.append)
    assert os.path.getmtime(weights) == before


def test_export_job_prints_the_model_and_its_estimate(exported, ray_local, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(exported["cfg"].to_yaml())
    address = ray_local.get_runtime_context().gcs_address
    job = run_job(["jobs/export.py", "--config", str(cfg_path), "--address", address], timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert f"model {exported['folder']}: config {search.config_id(B)}" in job.stdout
    assert "nested-loso UF1" in job.stdout
    with pytest.raises(InputError, match="nothing to export: no search has run at .*nope"):
        export_model(exported["cfg"], "nope")


def test_ece_of_the_calibrated_model_is_recomputable_from_the_out_of_fold_predictions(exported):
    """The card's calibration: a temperature fitted on the chosen configuration's held-out
    predictions at every seed; its ECE figures recomputed here from those predictions."""
    from mer.serving.calibration import ece, log_probs, nll, scale

    # ECE by hand: bins 0.9-1.0 (right, 0.9) and 0.6-0.7 (wrong, 0.6), half the clips each.
    assert ece(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1])) == pytest.approx(0.35)

    folder = exported["folder"]
    card = json.loads(open(os.path.join(folder, "model_card.json")).read())
    cal = card["trust"]["calibration"]
    assert cal["config_id"] == search.config_id(B) and cal["kind"] == "outer"
    exp = results.load_experiment(exported["exp"])
    oof = exp.outer(cal["config_id"])
    assert len(oof) == cal["clips"] == 24 * len(exported["cfg"].search.seeds)
    assert cal["subjects"] == 4
    probs, labels = np.stack(oof["probs"].to_numpy()), oof["label"].to_numpy()
    t = cal["temperature"]
    assert ece(probs, labels) == pytest.approx(cal["ece"]["before"]["value"])
    assert ece(scale(log_probs(probs), t), labels) == pytest.approx(cal["ece"]["after"]["value"])
    # T minimises the negative log-likelihood; the made-up probabilities are overconfident.
    assert nll(log_probs(probs), labels, t) <= min(
        nll(log_probs(probs), labels, t * f) for f in (0.8, 1.25)
    )
    assert t > 1 and cal["ece"]["after"]["value"] < cal["ece"]["before"]["value"]
    for figure in cal["ece"].values():  # (a resampled ECE is biased up: no value in between)
        assert 0 <= figure["lo"] <= figure["hi"] <= 1
    png = open(os.path.join(folder, "reliability.png"), "rb").read()
    assert png.startswith(b"\x89PNG")
    md = open(os.path.join(folder, "MODEL_CARD.md")).read()
    assert "## Calibration" in md and f"T = {t:.3f}" in md and "## Prediction quality" in md
    # The fake key frames have no videos: the decoded measures set no threshold, and say so.
    th = card["trust"]["thresholds"]
    assert (card["trust"]["measured_clips"], card["trust"]["unreadable_clips"]) == (0, 24)
    assert th["no_movement"]["threshold"] is None and not th["no_face"]["active"]
    assert th["ood"]["threshold"] > 0 and th["length"]["low"] > 0
