"""Paths and small helpers tests share (importable without pytest's conftest machinery)."""

from pathlib import Path

# A bounded wait for another process (never a speed check: callers assert on what happened).
from mer.testing.local_processes import wait_until  # noqa: F401 (re-exported)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEGC2019_LIST = SHARED / "data" / "megc2019" / "combined_3class_gt.csv"
