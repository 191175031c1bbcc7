"""Paths and small helpers tests share (importable without pytest's conftest machinery)."""

import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEGC2019_LIST = SHARED / "data" / "megc2019" / "combined_3class_gt.csv"


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held. A bounded
    wait for another process (never a speed check: callers assert on what happened)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
