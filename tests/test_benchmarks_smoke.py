"""Every benchmark script still runs: each at its smoke size (`--smoke`, seconds on a CPU).

A benchmark that no longer runs (a renamed function, a changed config key) fails here, not
on the day someone reruns it for figures. Each script runs as a child process, as a user
runs it, with its outputs sent to a temporary folder (the stored figures are never touched).
The GPU scripts run through benchmarks/gpu.sh's dry run (SMOKE=1: CPU, tiny sizes; the CUDA
tests skip), which calls gpu_bench.py, gpu_loops.py and keyframes_adaconv.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"

# script -> its smoke command line after the script ({tmp}: a fresh folder, {table}: a small
# key-frame table). The outputs each script writes are checked below.
SMOKE = {
    "between_frames.py": ["--smoke", "--json", "{tmp}/out.json"],
    "cluster_timeline.py": ["--smoke", "--out", "{tmp}/timeline"],
    "decoders.py": ["--smoke", "--workdir", "{tmp}/work", "--out", "{tmp}/out.json"],
    "fold_runs.py": ["--smoke", "--work", "{tmp}/work", "--out", "{tmp}/out.json"],
    "inference.py": ["--smoke", "--work", "{tmp}/work", "--out", "{tmp}/out.json"],
    "interpolator.py": ["--smoke", "--work", "{tmp}/work", "--out", "{tmp}/out.json"],
    "keyframes.py": ["--smoke", "--work", "{tmp}/work", "--out", "{tmp}/out.json"],
    "keyframes_digest.py": ["{table}"],
    "linear_probes.py": ["--smoke", "--keyframes", "{table}", "--out", "{tmp}/out.jsonl"],
    "memory_format.py": ["--smoke", "--out", "{tmp}/out.json"],
    "method_dev.py": [
        "--smoke",
        "--keyframes",
        "{table}",
        "--name",
        "smoke",
        "--out",
        "{tmp}/out.jsonl",
    ],  # fmt: skip
    "prediction_quality.py": ["--smoke", "--work", "{tmp}/work", "--out", "{tmp}/out.json"],
    "prior_dev.py": ["--smoke", "--root", "{tmp}/runs", "--out", "{tmp}/out.jsonl"],
    "s3_streaming.py": ["--smoke", "--out", "{tmp}/out.json"],
    "spotting.py": [  # two generator seeds: their sets share video names
        "--smoke",
        "--seeds",
        "0",
        "1",
        "--work",
        "{tmp}/work",
        "--out",
        "{tmp}/out.json",
    ],  # fmt: skip
    "synthetic_baselines.py": ["--smoke", "--json", "{tmp}/out.json"],
    "testbed_speed.py": ["--smoke", "--presets", "dynamics", "--json", "{tmp}/out.json"],
    "train.py": ["--smoke", "--work", "{tmp}/work", "--out", "{tmp}/out.json"],
}
# Run by gpu.sh's dry run (the gpu.sh case below).
VIA_GPU_SH = {"gpu_bench.py", "gpu_loops.py", "keyframes_adaconv.py"}
# Run at their smoke sizes, with their figures checked, by tests/test_protocol_benchmarks.py.
ELSEWHERE = {"gpu_protocol.py", "cluster_projection.py", "prior_arms.py", "check_prior_leaks.py"}
OUTPUT = {  # what a run leaves in {tmp}
    "cluster_timeline.py": "timeline.png",
    "keyframes_digest.py": None,  # prints only
    "linear_probes.py": "out.jsonl",
    "method_dev.py": "out.jsonl",
    "prior_dev.py": "out.jsonl",
}


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)  # the scripts start their own Ray, never a test's
    return env


def _run(cmd: list[str], timeout: float, env: dict | None = None) -> str:
    done = subprocess.run(
        cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    from mer.testing.fakes import write_random_keyframes

    return write_random_keyframes(str(tmp_path_factory.mktemp("bench") / "kf"), subjects=4, clips=3)


def test_every_benchmark_script_has_a_smoke_run():
    scripts = {p.name for p in BENCH.glob("*.py")}
    assert scripts == set(SMOKE) | VIA_GPU_SH | ELSEWHERE, "a benchmark script without a smoke run"


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_at_smoke_size(script, table, tmp_path):
    args = [a.format(tmp=tmp_path, table=table) for a in SMOKE[script]]
    out = _run([sys.executable, str(BENCH / script), *args], timeout=600)
    expected = OUTPUT.get(script, "out.json")
    if expected is None:
        assert "(12 clips)" in out, out[-2000:]  # the digest line names the table's clips
        return
    written = tmp_path / expected
    assert written.exists() and written.stat().st_size > 0, out[-2000:]
    if expected.endswith(".json"):
        json.loads(written.read_text())  # a whole JSON document, not a half-written one


def test_gpu_sh_dry_run_runs_the_gpu_benchmarks(tmp_path):
    env = {
        **_env(),
        "SMOKE": "1",
        "STEP_BENCH": "1",
        "MFU_TRIES": "1",
        "PYTHON": sys.executable,
        "OUT": str(tmp_path),
    }
    out = _run(["bash", str(BENCH / "gpu.sh")], timeout=900, env=env)
    for name in ("gpu_bench.json", "gpu_tries.json", "gpu_loops.json", "keyframes_adaconv.json"):
        assert (tmp_path / name).exists(), f"gpu.sh wrote no {name}:\n{out[-4000:]}"
    # The tries' eager row is measured in the dry run (the compiled ones skip: --no-compile).
    tries = json.loads((tmp_path / "gpu_tries.json").read_text())["rows"]
    assert [r["status"] for r in tries].count("ok") == 1, tries
