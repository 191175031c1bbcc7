"""A content digest of a key-frame table (clip names, labels, key-frame positions and pixels),
with how many positions are fractional (interpolated) and how many clips' key frames hold the
apex frame.

    .venv/bin/python benchmarks/keyframes_digest.py runs/study/keyframes/synthetic/<hash>

Settings hashes say which settings made a table, not that a rebuild gave the same frames. Rows
restored from a stored study run (benchmarks/study_casme2_like_runs.tar.gz) are comparable
with new rows only when the rebuilt key frames equal the ones they were made from; this
prints the digest to compare with the one recorded in benchmarks/README.md. Independent of
how Parquet laid the bytes out.
"""

import argparse
import glob
import hashlib
import os
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mer.evaluation.study_table import keyframe_facts  # noqa: E402
from mer.keyframes.table import frames_array  # noqa: E402


def read(folder: str) -> pd.DataFrame:
    parts = sorted(glob.glob(os.path.join(folder, "part-*.parquet")))
    if not parts:
        raise SystemExit(f"error: no key-frame table (part-*.parquet) under {folder}")
    cols = ["dataset", "subject", "clip", "label", "apex", "keyframe_indices"]
    frames = []
    for p in parts:  # frames as arrays, whichever way the part stores them (mer.keyframes.table)
        t = pq.read_table(p, columns=[*cols, "frames"])
        frames.append(t.drop_columns(["frames"]).to_pandas().assign(frames=list(frames_array(t))))
    return pd.concat(frames)


def digest(t: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for r in t.sort_values(["dataset", "subject", "clip"]).itertuples():
        h.update(f"{r.dataset}/{r.subject}/{r.clip}/{r.label}".encode())
        h.update(np.asarray(r.keyframe_indices, dtype=np.float64).tobytes())
        h.update(np.asarray(r.frames, dtype=np.uint8).tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", help="a key-frame table's folder")
    folder = p.parse_args().table
    t = read(folder)
    facts = keyframe_facts(folder) or {}  # the study table's counts (None: no _meta.json)
    print(f"{digest(t)}  ({len(t)} clips)")
    if facts:
        print(f"fractional key-frame positions: {facts['interpolated']} of {facts['positions']}")
        print(f"clips whose key frames hold the apex frame: {facts['apex_held']} of {len(t)}")


if __name__ == "__main__":
    main()
