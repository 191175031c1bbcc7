"""A content digest of a key-frame table: clip names, labels, key-frame positions and pixels.

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

import numpy as np
import pandas as pd


def digest(folder: str) -> tuple[str, int]:
    parts = sorted(glob.glob(os.path.join(folder, "part-*.parquet")))
    if not parts:
        raise SystemExit(f"error: no key-frame table (part-*.parquet) under {folder}")
    cols = ["dataset", "subject", "clip", "label", "keyframe_indices", "frames"]
    t = pd.concat(pd.read_parquet(p, columns=cols) for p in parts)
    h = hashlib.sha256()
    for r in t.sort_values(["dataset", "subject", "clip"]).itertuples():
        h.update(f"{r.dataset}/{r.subject}/{r.clip}/{r.label}".encode())
        h.update(np.asarray(r.keyframe_indices, dtype=np.float64).tobytes())
        h.update(np.asarray(r.frames, dtype=np.uint8).tobytes())
    return h.hexdigest()[:16], len(t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", help="a key-frame table's folder")
    d, n = digest(p.parse_args().table)
    print(f"{d}  ({n} clips)")


if __name__ == "__main__":
    main()
