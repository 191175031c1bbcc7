"""Paths tests share (importable without pytest's conftest machinery)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEGC2019_LIST = SHARED / "data" / "megc2019" / "combined_3class_gt.csv"
