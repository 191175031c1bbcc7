"""Ray Tune across LOSO folds: search over seeds, baselines, results, nested protocol, Ctrl+C
and driver kill + resume, S3."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import write_fake_keyframes
from sklearn.metrics import balanced_accuracy_score, f1_score
from tests_paths import REPO, TINY, run_job, wait_until

from mer import config, layout, storage
from mer.evaluation import baselines, results
from mer.evaluation.stage import run_search_stage
from mer.keyframes.table import outer_runs, select_folds
from mer.testing.fakes import toy_table

SEARCH = [
    "data.dataset=synthetic",
    *TINY,
    "pretrain.epochs=1",
    "pretrain.pairs_per_epoch=32",
    "pretrain.batch_size=8",
    "finetune.epochs=1",
    "finetune.batch_size=8",
    "search.space={gamma: [0.0, 2.0], freeze: [1]}",
]


def tiny_cfg(root, *extra):
    return config.load(None, [f"root={root}", *SEARCH, *extra])


def search(cfg, keyframes):
    return run_search_stage(cfg, progress=lambda s: None, keyframes=keyframes)


def test_nested_search_of_two_configs_over_four_folds(ray_local, fake_keyframes, tmp_path):
    cfg = tiny_cfg(tmp_path, "search.experiment=t1", "search.protocol=nested", "search.inner_k=2")
    exp_uri = search(cfg, fake_keyframes)
    exp = results.load_experiment(exp_uri)
    board = results.leaderboard(exp)
    assert (
        sorted(board["kind"]) == ["baseline"] * 4 + ["method"] * 2
    )  # majority, linear, lbp-top, flow-cnn
    assert (board["folds_done"] == 4).all() and (board["status"] == "complete").all()
    board = board[board["kind"] == "method"]

    # Pooled metrics equal those recomputed from the saved per-clip predictions alone.
    for row in board.to_dict("records"):
        folder = tmp_path / "tune" / "t1" / "configs" / row["config_id"] / "seed-0"
        frames = [pd.read_parquet(folder / f) for f in sorted(os.listdir(folder))]
        p = pd.concat(frames)
        p = p[p["kind"] == "outer"]
        assert len(p) == 24  # every clip predicted exactly once as a held-out clip
        assert row["uf1"] == pytest.approx(
            f1_score(p["label"], p["pred"], average="macro", labels=[0, 1, 2], zero_division=0)
        )
        assert row["uar"] == pytest.approx(balanced_accuracy_score(p["label"], p["pred"]))

    # Nested: every outer fold's choice used no data of its subject.
    n = results.nested(exp)
    assert n["protocol"] == "nested-loso" and n["folds_done"] == 4
    for choice in n["choices"]:
        subject = "fake/" + choice["fold"].split("-", 1)[1]
        assert subject not in choice["inner_subjects"]
    inner = exp.predictions[exp.predictions["kind"] == "inner"]
    for outer, g in inner.groupby("outer"):
        assert outer.split("-", 1)[1] not in set(g["subject"])
    # Inner runs start from priors learnt without their validation subjects (and without
    # the outer held-out subject).
    seeded = config.with_params(cfg, {}, 0)
    for run_id, g in inner.groupby("run"):
        done = storage.read_json(os.path.join(layout.prior_dir(seeded, run_id), "_done.json"))
        learnt_on = set(done["train_subjects"])
        assert not learnt_on & set(g["dataset"] + "/" + g["subject"]), run_id
        assert "fake/" + g["outer"].iloc[0].split("-", 1)[1] not in learnt_on

    # jobs/results.py reads it back as a table and as JSON, protocol named.
    table = run_job(["jobs/results.py", exp_uri], timeout=120)
    assert table.returncode == 0, table.stderr
    assert "loso-search" in table.stdout and "nested-loso" in table.stdout
    js = run_job(
        ["jobs/results.py", "t1", "--root", str(tmp_path), "--format", "json"], timeout=120
    )
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["protocol"] == "loso-search" and "optimistic" in doc["note"]
    rows = {r["config_id"]: r for r in doc["leaderboard"]}
    assert set(rows) == set(board["config_id"]) | {"majority", "linear", "lbp-top", "flow-cnn"}
    assert rows["linear"]["kind"] == "baseline" and rows["linear"]["uf1_lo"] is not None
    assert doc["nested"]["uf1"] == pytest.approx(n["uf1"])
    top = doc["top"]["config_id"]
    detail = run_job(["jobs/results.py", exp_uri, "--trial", top, "--format", "csv"], timeout=120)
    assert detail.returncode == 0 and detail.stdout.count("\n") == 1 + 4 + 8  # outer + inner
    assert_ray_reads_the_experiment(exp_uri, doc)
    plots = run_job(["jobs/results.py", exp_uri, "--plots", str(tmp_path / "plots")], timeout=120)
    assert plots.returncode == 0, plots.stderr
    # UF1 against gamma (two values searched), not against freeze (one value).
    assert sorted(os.listdir(tmp_path / "plots")) == [
        "confusion_top.png",
        "uf1_intervals.png",
        "uf1_per_seed.png",
        "uf1_vs_gamma.png",
    ]


def assert_ray_reads_the_experiment(exp_uri: str, doc: dict) -> None:
    """Ray's own result API and TensorBoard see one row / run per configuration, with its
    searched parameters and, for a finished search, the UF1/UAR jobs/results.py reports."""
    import ray.tune
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    from mer.evaluation import search

    methods = {r["config_id"]: r for r in doc["leaderboard"] if r["kind"] == "method"}
    tune_dir = f"{exp_uri}/_tune"
    frames = {
        "ExperimentAnalysis": ray.tune.ExperimentAnalysis(tune_dir).dataframe(),
        "ResultGrid": ray.tune.Tuner.restore(tune_dir, trainable=search.trainable(exp_uri))
        .get_results()
        .get_dataframe(),
    }
    for name, df in frames.items():
        assert sorted(df["config_id"]) == sorted(methods), name
        for row in df.to_dict("records"):
            r = methods[row["config_id"]]
            assert row["uf1"] == pytest.approx(r["uf1"]), name
            assert row["uar"] == pytest.approx(r["uar"]), name
            for key in ("gamma", "freeze"):
                assert row[f"config/{key}"] == r[key], name
    # What `tensorboard --logdir <experiment>/_tune` loads: a run per trial with its UF1 curve.
    mux = EventMultiplexer().AddRunsFromDirectory(tune_dir)
    mux.Reload()
    curves = [mux.Scalars(run, "ray/tune/uf1") for run in mux.Runs()]
    assert len(curves) == len(methods) and all(curves)
    finals = sorted(c[-1].value for c in curves)
    assert finals == pytest.approx(sorted(r["uf1"] for r in methods.values()))


def test_search_stopped_by_ctrl_c_then_killed_resumes_each_time_without_rerunning_folds(
    ray_local, tmp_path
):
    """One experiment interrupted twice, as users interrupt them: Ctrl+C to the driver (Tune
    saves its state and returns from fit() as if done; the job must stop there, exit 130 and
    leave the experiment unfinished), then a rerun whose driver and everything it forked is
    killed outright (SIGKILL to its process group). Each rerun keeps every finished fold run,
    and the last one finishes the experiment counting each fold run once."""
    cfg_path = tmp_path / "cfg.yaml"
    cfg = tiny_cfg(
        tmp_path, "search.experiment=resume", "finetune.epochs=3", "resources.max_concurrent=1"
    )
    write_fake_keyframes(layout.keyframes_uri(cfg))  # where jobs/tune.py looks for them
    cfg_path.write_text(cfg.to_yaml())
    address = ray_local.get_runtime_context().gcs_address
    args = ["jobs/tune.py", "--config", str(cfg_path), "--address", address]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token"}
    exp_uri = str(tmp_path / "tune" / "resume")
    folds_dir = tmp_path / "tune" / "resume" / "configs"

    def finished() -> dict[str, float]:
        return {str(f): f.stat().st_mtime for f in folds_dir.glob("*/seed-*/*.parquet")}

    # 1. Ctrl+C in the driver's terminal (the driver only).
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: finished() or proc.poll() is not None, timeout=300)
        assert proc.poll() is None, "the driver ended before its first fold run"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted:" in err and "rerun the same command to resume" in err
    done = finished()
    assert 1 <= len(done) < 8, f"{len(done)} of 8 fold runs: the interrupt came too late"
    assert storage.read_json(f"{exp_uri}/_experiment.json")["status"] == "running"
    assert results.summary(results.load_experiment(exp_uri))["partial"]

    # 2. The rerun, killed with everything it forked once it has finished one more fold run.
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        start_new_session=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: len(finished()) > len(done) or proc.poll() is not None, timeout=300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = finished()
    assert all(before[f] == t for f, t in done.items()), "a fold run finished before was rerun"
    assert len(done) < len(before) < 8, f"{len(before)} of 8: nothing left to resume"
    # Queried mid-experiment: running, and not every configuration's fold runs are there (a
    # configuration whose trial has not begun has no row yet, so `partial` alone can miss it).
    midway = results.summary(results.load_experiment(exp_uri))
    methods = [r for r in midway["leaderboard"] if r["kind"] == "method"]
    assert midway["status"] == "running" and len(methods) < 2, midway

    # 3. The last rerun finishes it, keeping every fold run finished before.
    rerun = run_job(args, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for f, mtime in before.items():
        assert os.path.getmtime(f) == mtime, f"{f} was rerun"
    # The new driver says how many fold runs it keeps and counts each fold run once, on its
    # own clock (the ETA from what it computes).
    kept = re.search(r"resuming .*: (\d+) of 8 fold runs were done before", rerun.stdout)
    assert kept and int(kept.group(1)) >= len(before), rerun.stdout
    lines = [x for x in rerun.stdout.splitlines() if x.startswith("[search] ") and "/8 " in x]
    assert lines[-1].startswith("[search] 8/8 ") and "done before" in lines[-1], lines
    counts = [int(x.split()[1].split("/")[0]) for x in lines]
    assert counts == sorted(set(counts)), lines  # every fold run counted once
    assert storage.read_json(f"{exp_uri}/_experiment.json")["status"] == "finished"
    assert "partial" not in results.summary(results.load_experiment(exp_uri))
    board = results.leaderboard(results.load_experiment(exp_uri))
    board = board[board["kind"] == "method"]
    assert len(board) == 2 and (board["folds_done"] == 4).all()


def test_experiment_on_s3_queried_from_another_process(s3_endpoint, ray_local):
    root = "s3://mer-test/search-run"
    kf = write_fake_keyframes(f"{root}/keyframes/synthetic")
    # An adaptive searcher (Optuna through Ray Tune) sampling gamma from a distribution.
    cfg = tiny_cfg(
        root,
        "search.experiment=s3exp",
        "search.algorithm=optuna",
        "search.num_samples=2",
        "search.space={gamma: {uniform: [0.0, 3.0]}, freeze: [0, 2]}",
    )
    exp_uri = search(cfg, kf)
    assert exp_uri == f"{root}/tune/s3exp"
    assert storage.exists(layout.prior_uri(config.with_params(cfg, {}, 0), "fake-s00"))
    out = run_job(["jobs/results.py", exp_uri, "--format", "json"], timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    methods = [r for r in doc["leaderboard"] if r["kind"] == "method"]
    assert len(methods) == 2 and all(r["folds_done"] == 4 for r in methods)
    assert np.isfinite(methods[0]["uf1"]) and doc["top"]["config_id"] == methods[0]["config_id"]


def test_seeds_intervals_and_paired_comparison_from_a_real_search(ray_local, tmp_path):
    kf = write_fake_keyframes(str(tmp_path / "kf"), subjects=6, clips=3)
    cfg = tiny_cfg(
        tmp_path,
        "search.experiment=seeds",
        "search.seeds=[0, 1]",
        "search.space={gamma: [2.0], freeze: [1]}",
    )
    exp_uri = search(cfg, kf)
    out = run_job(["jobs/results.py", exp_uri, "--format", "json"], timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["seeds"] == [0, 1]
    method = next(r for r in doc["leaderboard"] if r["kind"] == "method")
    assert [s["seed"] for s in method["per_seed"]] == [0, 1]
    assert all(s["folds_done"] == 6 for s in method["per_seed"])
    assert method["uf1"] == pytest.approx(np.mean([s["uf1"] for s in method["per_seed"]]))
    assert method["uf1_lo"] <= method["uf1"] <= method["uf1_hi"]
    assert method["standing"] == "top" and doc["top"]["config_id"] == method["config_id"]
    assert_ray_reads_the_experiment(exp_uri, doc)  # UF1/UAR: means over the two seeds
    # Both seeds' predictions exist and were made under different seeds.
    preds = results.load_experiment(exp_uri).outer(method["config_id"])
    assert sorted(preds["seed"].unique()) == [0, 1]
    cmp = run_job(
        [
            "jobs/results.py",
            exp_uri,
            "--compare",
            method["config_id"],
            "linear",
            "--format",
            "json",
        ],
        timeout=120,
    )
    assert cmp.returncode == 0, cmp.stderr
    c = json.loads(cmp.stdout)
    assert c["seeds"] == [0, 1] and c["subjects"] == 6
    linear = next(r for r in doc["leaderboard"] if r["config_id"] == "linear")
    assert c["uf1"]["a"] == pytest.approx(method["uf1"])
    assert c["uf1"]["b"] == pytest.approx(linear["uf1"])
    assert c["uf1"]["difference"] == pytest.approx(method["uf1"] - linear["uf1"])
    assert c["uf1"]["ci_low"] <= c["uf1"]["difference"] <= c["uf1"]["ci_high"]
    assert 0 < c["uf1"]["p_value"] <= 1


def test_flow_cnn_baseline_on_ray_train_stores_the_driver_s_predictions_and_reuses_them(
    ray_local, tmp_path, monkeypatch
):
    """flow-cnn trained on Ray Train (as the search stage runs it) stores, per seed and fold
    run, the predictions and settings key that training in the driver gives; a rerun finds
    them and starts no trainer."""
    table = toy_table(subjects=3)  # 6 clips each
    runs = outer_runs(select_folds(table, None))[:2]
    driver, on_ray = str(tmp_path / "driver"), str(tmp_path / "ray")
    baselines.run_baselines(driver, table, runs, [0, 1], 3, names=("flow-cnn",))
    resources = config.ResourcesConfig()
    quiet = {"resources": resources, "progress": lambda s: None}
    baselines.run_baselines(on_ray, table, runs, [0, 1], 3, names=("flow-cnn",), **quiet)

    def read(exp):
        out = layout.baseline_dir(exp, "flow-cnn")
        preds = layout.read_predictions(out).sort_values(["seed", "run", "clip"])
        return preds.reset_index(drop=True), storage.read_json(storage.join(out, "_settings.json"))

    (a, key_a), (b, key_b) = read(driver), read(on_ray)
    assert key_a == key_b
    assert len(b) == 2 * sum(len(r.test_subjects) * 6 for r in runs)
    assert (a[["seed", "run", "clip", "pred"]] == b[["seed", "run", "clip", "pred"]]).all().all()
    np.testing.assert_allclose(np.stack(a["probs"]), np.stack(b["probs"]), rtol=0, atol=1e-12)

    def no_trainer(*args, **kw):
        raise AssertionError("a rerun started a trainer")

    monkeypatch.setattr(baselines, "train_flow_cnn_on_ray", no_trainer)
    baselines.run_baselines(on_ray, table, runs, [0, 1], 3, names=("flow-cnn",), **quiet)
    pd.testing.assert_frame_equal(read(on_ray)[0], b)


def test_flow_cnn_goes_to_ray_train_where_the_config_places_training_on_workers():
    from mer.evaluation.stage import training_placed_on_workers

    assert not training_placed_on_workers(tiny_cfg("/tmp/x"))  # one machine: in the process
    assert training_placed_on_workers(tiny_cfg("/tmp/x", "resources.gpus_per_worker=1"))
    on_nodes = tiny_cfg("/tmp/x", "resources.worker_resources={accelerator: 1}")
    assert training_placed_on_workers(on_nodes)
    megc = config.load(str(REPO / "configs" / "megc2019.yaml"))  # the cluster's dataset configs
    assert training_placed_on_workers(megc)
