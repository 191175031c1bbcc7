"""Stage 1: the clip manifest becomes key-frame Parquet shards, in parallel on Ray Data.

Output under `<root>/keyframes/<dataset>/` (local or s3://):
  part-<hash>-<chunk>.parquet   one row per clip (DESIGN.md "Key-frame record")
  _rejects.parquet              clips that could not be used: dataset, subject, clip, stage, reason
  _meta.json                    resolved config, config hash, counts, parts, library versions
  _chunks/<hash>-<chunk>.json   per-chunk completion markers (resumption)

`_meta.json` is written last and lists the parts, so a killed run leaves nothing that a later
stage reads as complete; rerunning resumes at the first unfinished chunk and every clip ends
up in exactly one part. The driver only sees chunk descriptors and counts: frames stay on
the workers, so memory does not grow with the dataset.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from mer import storage
from mer.config import PipelineConfig, keyframes_hash, section_dict

log = logging.getLogger(__name__)

REJECT_COLUMNS = ["dataset", "subject", "clip", "stage", "reason"]


def keyframes_uri(cfg: PipelineConfig) -> str:
    return storage.join(cfg.root, "keyframes", cfg.data.dataset)


# ---------------------------------------------------------------- per-clip work (workers)


def build_record(row: dict, kf: dict) -> dict:
    """Decode one clip and build its key-frame record; raises on any failure."""
    from mer.align import MIN_SIDE, reduce_gray
    from mer.faces import crop, face_crop_box
    from mer.keyframes import build_keyframes
    from mer.motion import measure_motion
    from mer.video import read_clip, reduce_frames

    onset, offset = int(row["onset"]), int(row["offset"])
    # Everything after decoding works at a few hundred pixels at most (key frames of `size`,
    # the motion curve and registration at >= MIN_SIDE), so the face is halved by pixel
    # means as often as it stays at least that large: frame folders as they are decoded,
    # a face crop or a video afterwards (mer.video).
    need = max(int(kf["size"]), MIN_SIDE)
    face_found = None
    if kf["face_crop"]:
        frames = read_clip(row["source"], onset, offset, timeout=kf["decode_timeout"])
        box, face_found = face_crop_box(frames[0])
        frames = crop(frames, box)
    else:
        frames = read_clip(
            row["source"], onset, offset, timeout=kf["decode_timeout"], min_side=need
        )
    frames = reduce_frames(frames, need)
    # One grey copy, halved while its shorter side stays >= 128 px, serves the motion curve
    # (which compensates head motion itself) and the registration of the key frames to the
    # onset frame (so they show facial motion rather than drift): by default with the head
    # shifts the motion curve measured, else (or where the curve has none: "diff" mode, a
    # head jump the flow lost) by phase correlation on the grey copy. Only the frames the
    # key frames use are registered, each resampled once.
    reduced = reduce_gray(frames)
    motion = measure_motion(reduced[0], 0, mode=kf["motion"])
    drift = None  # phase correlation (mer.align) on the frames the key frames use
    if kf["registration"] == "motion" and motion.drift is not None:
        drift = motion.drift * reduced[1]
    apex = row.get("apex")
    apex_offset = None if apex is None or pd.isna(apex) else int(apex) - onset
    keys = build_keyframes(
        frames,
        0,
        apex_offset,
        len(frames) - 1,
        k=kf["k"],
        size=kf["size"],
        method=kf["method"],
        interpolation=kf["interpolation"],
        mode=kf["motion"],
        motion=motion.curve,
        register=kf["stabilize"],
        drift=drift,
        reduced=reduced,
    )
    keyframes = keys.frames
    return {
        "dataset": row["dataset"],
        "subject": str(row["subject"]),
        "clip": str(row["clip"]),
        "label": int(row["label"]),
        "emotion": str(row["emotion"]),
        "onset": onset,
        "apex": onset + int(keys.apex),
        "offset": offset,
        "apex_source": keys.apex_source,
        "keyframe_indices": (onset + np.asarray(keys.indices, dtype=np.float64)).tolist(),
        "frames": np.ascontiguousarray(keyframes, dtype=np.uint8),
        "source": row["source"],
        "fps": float(row["fps"]),
        "face_found": face_found,
    }


def records_to_table(records: list[dict]) -> pa.Table:
    """Key-frame records -> Arrow table; `frames` is a fixed-shape uint8 tensor column."""
    frames = np.stack([r["frames"] for r in records])
    cols = {k: [r[k] for r in records] for k in records[0] if k != "frames"}
    table = pa.table(
        {
            "dataset": pa.array(cols["dataset"], pa.string()),
            "subject": pa.array(cols["subject"], pa.string()),
            "clip": pa.array(cols["clip"], pa.string()),
            "label": pa.array(cols["label"], pa.int64()),
            "emotion": pa.array(cols["emotion"], pa.string()),
            "onset": pa.array(cols["onset"], pa.int64()),
            "apex": pa.array(cols["apex"], pa.int64()),
            "offset": pa.array(cols["offset"], pa.int64()),
            "apex_source": pa.array(cols["apex_source"], pa.string()),
            "keyframe_indices": pa.array(cols["keyframe_indices"], pa.list_(pa.float64())),
            "frames": pa.FixedShapeTensorArray.from_numpy_ndarray(frames),
            "source": pa.array(cols["source"], pa.string()),
            "fps": pa.array(cols["fps"], pa.float64()),
            "face_found": pa.array(cols["face_found"], pa.bool_()),
        }
    )
    return table


def process_chunk(item: dict) -> dict:
    """Ray Data map function: build one chunk's records, write its part and marker."""
    import cv2

    cv2.setNumThreads(1)  # one Ray task, one CPU: OpenCV ignores OMP_NUM_THREADS
    start = time.time()
    records, rejects = [], []
    for row in item["rows"]:
        try:
            records.append(build_record(row, item["kf"]))
        except Exception as e:  # recorded, never dropped: the run goes on
            stage = "decode" if "Decode" in type(e).__name__ else "keyframes"
            rejects.append(
                {
                    "dataset": row["dataset"],
                    "subject": str(row["subject"]),
                    "clip": str(row["clip"]),
                    "stage": stage,
                    "reason": f"{type(e).__name__}: {e}",
                }
            )
    part = None
    if records:
        part = f"part-{item['hash']}-{item['chunk']:05d}.parquet"
        storage.write_parquet(records_to_table(records), storage.join(item["out"], part))
    marker = {"chunk": item["chunk"], "part": part, "written": len(records), "rejects": rejects}
    storage.write_json(storage.join(item["out"], "_chunks", _chunk_name(item)), marker)
    return {
        "chunk": item["chunk"],
        "written": len(records),
        "rejected": len(rejects),
        "seconds": time.time() - start,
    }


class _ChunkWorker:
    """Ray Data actor: process_chunk, one chunk at a time."""

    def __call__(self, item: dict) -> dict:
        return process_chunk(item)


def _chunk_name(item: dict) -> str:
    return f"{item['hash']}-{item['chunk']:05d}.json"


# ---------------------------------------------------------------- driver


def manifest_rows(manifest: pd.DataFrame) -> list[dict]:
    rows = []
    for rec in manifest.sort_values(["dataset", "subject", "clip"]).to_dict("records"):
        rec["apex"] = None if pd.isna(rec["apex"]) else int(rec["apex"])
        rows.append(rec)
    return rows


def build_keyframes_dataset(
    cfg: PipelineConfig,
    manifest: pd.DataFrame | None = None,
    *,
    progress: Callable[[str], None] = print,
    use_ray: bool = True,
) -> dict:
    """Run the key-frame stage (skipped when its output has the same config hash).

    `use_ray=False` processes the chunks one after another in this process (debugging,
    test fixtures); the output is the same.
    """
    out = keyframes_uri(cfg)
    h = keyframes_hash(cfg)
    meta_uri = storage.join(out, "_meta.json")
    if storage.exists(meta_uri):
        meta = storage.read_json(meta_uri)
        if meta.get("hash") == h:
            progress(f"[keyframes] {out} is up to date (config {h}); skipped")
            meta["skipped"] = True
            return meta
        # A different config: the old table goes before any new part is written.
        progress(f"[keyframes] config changed ({meta.get('hash')} -> {h}); rebuilding")
        storage.remove(meta_uri)
    _remove_stale(out, h)

    if manifest is None:
        from mer.datasets import load_manifest

        manifest = load_manifest(
            cfg.data.dataset,
            cfg.data_root(),
            cfg.data.annotations,
            protocol=cfg.data.protocol,
            **cfg.data.options,
        )
    rows = manifest_rows(manifest)
    kf = section_dict(cfg, "keyframes")
    cs = cfg.keyframes.chunk_size
    items = [
        {"chunk": i, "rows": rows[i * cs : (i + 1) * cs], "kf": kf, "hash": h, "out": out}
        for i in range(math.ceil(len(rows) / cs))
    ]
    done = set(storage.listdir(storage.join(out, "_chunks")))
    todo = [it for it in items if _chunk_name(it) not in done]
    if len(todo) < len(items):
        progress(f"[keyframes] resuming: {len(items) - len(todo)}/{len(items)} chunks done")
    progress(
        f"[keyframes] {len(rows)} clips in {len(items)} chunks -> {out} "
        f"(k={cfg.keyframes.k}, size={cfg.keyframes.size}, method={cfg.keyframes.method}, "
        f"{cfg.keyframes.concurrency} parallel tasks)"
    )
    started = time.time()
    if todo and use_ray:
        _run_chunks(todo, cfg.keyframes.concurrency, progress, started)
    for it in todo if not use_ray else []:
        process_chunk(it)

    # Assemble: every chunk has a marker now.
    parts, rejects, written = [], list(manifest.attrs.get("rejects", [])), 0
    for it in items:
        marker = storage.read_json(storage.join(out, "_chunks", _chunk_name(it)))
        if marker["part"]:
            parts.append(marker["part"])
        written += marker["written"]
        rejects.extend(marker["rejects"])
    reject_table = pa.Table.from_pylist(
        [{c: str(r.get(c, "")) for c in REJECT_COLUMNS} for r in rejects],
        schema=pa.schema([(c, pa.string()) for c in REJECT_COLUMNS]),
    )
    storage.write_parquet(reject_table, storage.join(out, "_rejects.parquet"))
    meta = {
        "hash": h,
        "config": {"data": section_dict(cfg, "data"), "keyframes": kf},
        "counts": {
            "manifest": len(rows),
            "written": written,
            "rejected": len(rejects),
            "by_label": _count_labels(manifest),
        },
        "parts": parts,
        "seconds": round(time.time() - started, 2),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_json(meta_uri, meta)
    storage.write_bytes(storage.join(out, "config.yaml"), cfg.to_yaml().encode())
    progress(
        f"[keyframes] done: {written} clips written, {len(rejects)} rejected "
        f"({meta['seconds']} s); rejects in {storage.join(out, '_rejects.parquet')}"
    )
    return meta


def _run_chunks(todo, concurrency, progress, started) -> None:
    import ray

    if not ray.is_initialized():
        ray.init()
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    # A fixed pool of `concurrency` actors, each fed its next chunk while it works: with a
    # task pool, Ray Data 2.60's concurrency cap left 0.15-0.35 s idle between a worker's
    # tasks (a quarter of the time at 2 CPUs here); actors also import OpenCV and the
    # decoders once. Each actor holds one CPU.
    ds = ds.map(_ChunkWorker, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=concurrency))
    seen = written = rejected = 0
    for res in ds.iter_rows():
        seen += 1
        written += res["written"]
        rejected += res["rejected"]
        rate = (written + rejected) / max(time.time() - started, 1e-6)
        progress(
            f"[keyframes] chunk {res['chunk']} done ({seen}/{len(todo)} this run): "
            f"{written} written, {rejected} rejected, {rate:.1f} clips/s"
        )


def _remove_stale(out: str, h: str) -> None:
    """Delete parts and markers of other configs (a previous, different build)."""
    for name in storage.listdir(out):
        if name.startswith("part-") and not name.startswith(f"part-{h}-"):
            storage.remove(storage.join(out, name))
    for name in storage.listdir(storage.join(out, "_chunks")):
        if not name.startswith(f"{h}-"):
            storage.remove(storage.join(out, "_chunks", name))


def _count_labels(manifest: pd.DataFrame) -> dict:
    if manifest.empty:
        return {}
    return {str(k): int(v) for k, v in manifest["label"].value_counts().sort_index().items()}


def _versions() -> dict:
    import cv2
    import decord
    import ray

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "opencv": cv2.__version__,
        "decord": getattr(decord, "__version__", "?"),
        "ray": ray.__version__,
    }


# ---------------------------------------------------------------- readers


def read_keyframes(uri: str, *, frames: bool = True) -> tuple[dict, pd.DataFrame, np.ndarray]:
    """Read a finished key-frame table: (meta, per-clip DataFrame, frames N,K,S,S,C uint8).

    Only the parts listed in `_meta.json` are read: a half-written build is never mixed in.
    """
    from mer.errors import InputError

    meta_uri = storage.join(uri, "_meta.json")
    if not storage.exists(meta_uri):
        raise InputError(
            f"{uri}: no finished key-frame table (_meta.json missing); run jobs/preprocess.py"
        )
    meta = storage.read_json(meta_uri)
    if not meta["parts"]:
        raise InputError(f"{uri}: the key-frame table holds no clips (all rejected?)")
    tables = [storage.read_parquet(storage.join(uri, p)) for p in meta["parts"]]
    table = pa.concat_tables(tables)
    arr = None
    if frames:
        arr = table.column("frames").combine_chunks().to_numpy_ndarray()
    df = table.drop_columns(["frames"]).to_pandas()
    return meta, df, arr
