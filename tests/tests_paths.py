"""Paths and small helpers tests share (importable without pytest's conftest machinery)."""

import os
import subprocess
import sys
from pathlib import Path

# A bounded wait for another process (never a speed check: callers assert on what happened).
from mer.testing.local_processes import wait_until  # noqa: F401 (re-exported)

# The tiny model and key frames of every CPU test that trains.
from mer.testing.model_sizes import TINY  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEGC2019_LIST = SHARED / "data" / "megc2019" / "combined_3class_gt.csv"


def file_bytes(root: str) -> dict[str, bytes]:
    """Every file under `root`: its path relative to `root` -> its bytes."""
    out = {}
    for folder, _, names in os.walk(root):
        for n in names:
            path = os.path.join(folder, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def run_job(args: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """`python ARGS` from the repository root, as a user runs a job against the tests' Ray
    (the checkout on PYTHONPATH, token authentication; `env` on top of this process's),
    its output captured as text; `kw` goes to subprocess.run (timeout=...)."""
    e = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=e, capture_output=True, text=True, **kw
    )
