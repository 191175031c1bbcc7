"""Make the checkout importable when a job runs as `python jobs/X.py` (no install step).

Python puts the script's folder (jobs/) first on sys.path; it holds inspect.py, which would
shadow the standard library's `inspect` for every later import. So jobs/ leaves the path
(this module is its only import from there) and the repository root takes its place. Jobs
import this module before anything that could import `inspect`.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != HERE]
if REPO not in sys.path:
    sys.path.insert(0, REPO)
