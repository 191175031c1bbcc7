"""Make the checkout importable when a job runs as `python jobs/X.py` (no install step)."""

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
