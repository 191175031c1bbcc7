"""Paths and small helpers tests share (importable without pytest's conftest machinery)."""

import os
from pathlib import Path

# A bounded wait for another process (never a speed check: callers assert on what happened).
from mer.testing.local_processes import wait_until  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[1]

# The tiny model and key frames of every CPU test that trains (each adds its own budgets
# after these; a later override wins).
TINY = [
    "keyframes.k=8",
    "keyframes.size=32",
    "model.width=0.125",
    "model.embedding_dim=16",
    "model.head_hidden=32",
]
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
