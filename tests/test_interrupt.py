"""Ctrl-C stops a running study within 15 s, and a rerun resumes it: the terminal's SIGINT
goes to the job's whole process group (the driver and the Ray processes it started)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from tests_paths import REPO, wait_until

from mer import layout
from mer.evaluation import study

STUDY = {
    "root": "ROOT",
    "data": {"dataset": "synthetic", "synthetic": {"subjects": 3, "clips_per_subject": 3}},
    "keyframes": {"k": 8, "size": 32},
    "model": {"width": 0.125, "embedding_dim": 16, "head_hidden": 32, "input": "delta"},
    "pretrain": {"enabled": False},
    # Enough epochs that the signal lands while fold runs are still to come.
    "finetune": {"epochs": 100, "batch_size": 8, "gamma": 2.0, "beta": 0.5, "freeze": 0},
    "search": {"seeds": [0]},
    "study": {"name": "stop", "selection": "fixed by hand for the test", "variants": []},
}


def start(path: str, log) -> subprocess.Popen:
    # As a terminal runs it: its own session and process group, which Ctrl-C signals whole.
    return subprocess.Popen(
        [sys.executable, "jobs/study.py", "--config", path, "--num-cpus", "2"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(p: subprocess.Popen) -> None:
    """Whatever the job left in its own process group (only this test's processes)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=30)


def test_ctrl_c_stops_a_study_within_15_s_and_a_rerun_resumes(tmp_path):
    from mer.datasets.synthetic.generator import generate
    from mer.keyframes.preprocess import build_keyframes_dataset

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(STUDY).replace("ROOT", str(tmp_path)))))
    cfg, s = study.load_study(str(path))
    full = study.variant_config(cfg, s, s.variants[0])
    # Data and key frames made here, without Ray: the job finds them and goes to fold runs.
    root = layout.data_root(full)
    generate(root, **full.data.synthetic)
    layout.claim(root, layout.data_settings(full), "a synthetic dataset", "test")
    build_keyframes_dataset(full, use_ray=False, progress=lambda m: None)

    preds = tmp_path / "tune" / "stop-full" / "configs"
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        p = start(str(path), log)
        try:
            # A hang guard, not a speed check: the job ends or writes a fold run.
            wait_until(lambda: any(preds.glob("*/seed-0/*.parquet")) or p.poll() is not None, 600)
            assert p.poll() is None, log_path.read_text()[-3000:]
            if not any(preds.glob("*/seed-0/*.parquet")):
                pytest.fail("no fold run finished in 10 minutes")
            os.killpg(p.pid, signal.SIGINT)  # Ctrl-C in the job's terminal
            t0 = time.time()
            try:
                rc = p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                rc = None
            stopped_after = time.time() - t0
        finally:
            kill_group(p)
    out = log_path.read_text()
    assert rc == 130, f"still running 15 s after SIGINT (rc {rc}):\n{out[-3000:]}"
    assert stopped_after < 15
    assert "interrupted: finished work is kept" in out
    kept = {f: f.stat().st_mtime for f in preds.glob("*/seed-0/*.parquet")}
    assert 1 <= len(kept) < 3  # stopped between fold runs: some done, some not

    with open(tmp_path / "second.log", "w") as log:
        p = start(str(path), log)
        try:
            rc = p.wait(timeout=600)
        finally:
            kill_group(p)
    out = (tmp_path / "second.log").read_text()
    assert rc == 0, out[-3000:]
    done = sorted(preds.glob("*/seed-0/*.parquet"))
    assert len(done) == 3  # the rerun finished the study
    assert {f: f.stat().st_mtime for f in kept} == kept  # and kept what was done
    table = json.loads((tmp_path / "study" / "stop" / "study.json").read_text())
    assert table["complete"]
