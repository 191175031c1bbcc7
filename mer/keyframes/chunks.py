"""One chunk of the key-frame stage: its clips' records built, written as one Parquet part
and a completion marker. This is the code the stage's Ray Data actors run
(mer.keyframes.preprocess is the driver that plans the chunks and assembles the table).

Kept apart from the driver so that an actor imports only what a chunk needs: the driver
records provenance (mer.provenance, which imports torch), and importing torch cost each
actor about 2 CPU-seconds of start-up, the largest fixed cost of a Ray build
(benchmarks/README.md, "Key frames"). tests/test_preprocess.py checks that this module
leaves torch unimported.
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from mer import storage
from mer.errors import DecodeError
from mer.keyframes.clip_records import REJECTABLE, build_record, load_interpolator
from mer.keyframes.settings import KeyframeSettings
from mer.keyframes.table import records_to_table

CHUNK_STEPS = ("build", "to_arrow", "parquet", "marker")


def process_chunk(item: dict, kf: KeyframeSettings) -> dict:
    """Build one chunk's records with the settings `kf`, write its part and marker; its
    counts and timings."""
    import cv2

    cv2.setNumThreads(1)  # one Ray task, one CPU: OpenCV ignores OMP_NUM_THREADS
    start = time.time()
    clock = time.perf_counter()
    interpolator = None
    if kf.interpolation == "adaconv":
        interpolator = load_interpolator(kf.interpolator_uri, kf.size, 3, cuda=kf.gpus > 0)
    records, rejects = [], []
    for row in item["rows"]:
        try:
            records.append(build_record(row, kf, interpolator))
        except REJECTABLE as e:  # recorded, never dropped: the run goes on
            stage = "decode" if isinstance(e, DecodeError) else "input"
            rejects.append(
                {
                    "dataset": row["dataset"],
                    "subject": str(row["subject"]),
                    "clip": str(row["clip"]),
                    "stage": stage,
                    "reason": f"{type(e).__name__}: {e}",
                }
            )
    # Where a chunk's time goes (benchmarks/keyframes.py reports it): building the records,
    # turning them into an Arrow table, writing the Parquet part, writing the marker.
    marks = [clock, time.perf_counter()]
    part = None
    if records:
        part = f"part-{chunk_stem(item)}.parquet"
        table = records_to_table(records)
        marks.append(time.perf_counter())
        storage.write_parquet(table, storage.join(item["out"], part))
    else:
        marks.append(marks[-1])
    marks.append(time.perf_counter())
    marker = {"chunk": item["chunk"], "part": part, "written": len(records), "rejects": rejects}
    storage.write_json(storage.join(item["out"], "_chunks", chunk_name(item)), marker)
    marks.append(time.perf_counter())
    steps = dict(zip(CHUNK_STEPS, np.diff(marks).round(4).tolist(), strict=True))
    return {
        "chunk": item["chunk"],
        "written": len(records),
        "rejected": len(rejects),
        "seconds": time.time() - start,
        "started": start,
        "steps": steps,
    }


class _ChunkWorker:
    """Ray Data actor: process_chunk with the settings `kf`, one chunk at a time."""

    def __init__(self, kf: KeyframeSettings):
        # One actor, one CPU: numpy's and OpenCV's OpenBLAS start as many threads as the
        # machine has cores (Ray sets OMP_NUM_THREADS only after they are loaded).
        self.threads = threadpool_limits(1)
        self.ready = time.time()  # when this actor could take its first chunk
        self.kf = kf

    def __call__(self, item: dict) -> dict:
        return {**process_chunk(item, self.kf), "actor_ready": self.ready}


def chunk_stem(item: dict) -> str:
    # The chunk size is in the name: chunk i of another chunking holds other clips.
    return f"c{item['size']}-{item['chunk']:05d}"


def chunk_name(item: dict) -> str:
    """The file name of a chunk's completion marker under `_chunks/`."""
    return f"{chunk_stem(item)}.json"
