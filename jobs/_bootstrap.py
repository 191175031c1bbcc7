"""Make the checkout importable when a job runs as `python jobs/X.py` (no install step): the
repository root goes on sys.path. Python has put the script's folder (jobs/) first; no job
is named after a standard library module, so it can stay there.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
