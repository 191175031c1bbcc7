"""Stage 1: the clip manifest becomes a key-frame table, in parallel on Ray Data.

The table (format: mer.table) goes to `mer.layout.keyframes_uri`, a folder keyed by the
hash of the data and key-frame settings; chunk completion markers under `_chunks/` let a
killed run resume at the first unfinished chunk, and `_meta.json`, written last, lists the
parts, so a half-built table is never read as complete and every clip ends up in exactly
one part. The driver only sees chunk descriptors and counts: frames stay on the workers.

A clip whose input cannot be used (missing or corrupt file, frames outside the clip, a
decoder that hangs) is a reject, recorded with its reason in `_rejects.parquet`; any other
exception is a bug and fails the stage with its traceback. More than
`keyframes.max_reject_fraction` of the clips rejected stops the run with a summary.
"""

from __future__ import annotations

import functools
import logging
import math
import platform
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from mer import layout, storage
from mer.config import PipelineConfig
from mer.errors import DecodeError, InputError
from mer.progress import Counter, emit
from mer.table import rejects_to_table

log = logging.getLogger(__name__)

# What a clip's input can raise: a reject with its reason. Anything else is our bug.
REJECTABLE = (InputError, DecodeError)


# ---------------------------------------------------------------- per-clip work (workers)


class PreparedClip(NamedTuple):
    frames: np.ndarray  # uint8 (T, H, W, C), onset..offset, face-cropped and reduced
    reduced: tuple  # mer.align.reduce_gray(frames): grey copy and its reduction factor
    motion: object  # mer.motion.Motion: the motion curve and the head drift it measured
    drift: np.ndarray | None  # per-frame head shift in frame pixels, None: phase correlation
    face_found: bool | None


def prepare_clip(row: dict, kf: dict) -> PreparedClip:
    """Decode one clip's onset..offset, crop and reduce it, measure its motion: what the key
    frames and the interpolator's training frames are made from."""
    from mer.align import MIN_SIDE, reduce_gray
    from mer.faces import crop, face_crop_box
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
    # head jump the flow lost) by phase correlation on the grey copy.
    reduced = reduce_gray(frames)
    motion = measure_motion(reduced[0], 0, mode=kf["motion"])
    drift = None
    if kf["registration"] == "motion" and motion.drift is not None:
        drift = motion.drift * reduced[1]
    return PreparedClip(frames, reduced, motion, drift, face_found)


def build_record(row: dict, kf: dict, interpolator=None) -> dict:
    """Decode one clip and build its key-frame record; raises on any failure.
    `interpolator`: the trained interpolator kf["interpolation"] "adaconv" renders with."""
    from mer.keyframes import build_keyframes

    onset, offset = int(row["onset"]), int(row["offset"])
    clip = prepare_clip(row, kf)
    face_found = clip.face_found
    apex = row.get("apex")
    apex_offset = None if apex is None or pd.isna(apex) else int(apex) - onset
    # Only the frames the key frames use are registered, each resampled once.
    keys = build_keyframes(
        clip.frames,
        0,
        apex_offset,
        len(clip.frames) - 1,
        k=kf["k"],
        size=kf["size"],
        method=kf["method"],
        interpolation=kf["interpolation"],
        mode=kf["motion"],
        motion=clip.motion.curve,
        register=kf["stabilize"],
        drift=clip.drift,
        reduced=clip.reduced,
        interpolator=interpolator,
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


def registered_frames(row: dict, kf: dict) -> np.ndarray:
    """Every frame of a clip's onset..offset registered to the onset frame and resized to
    the key frames' S x S, as key frames are rendered: uint8 (T, S, S, C). The learned
    interpolator trains on these."""
    from mer.align import estimate_shifts
    from mer.keyframes import scale_frame

    clip = prepare_clip(row, kf)
    n = len(clip.frames)
    shifts = np.zeros((n, 2))
    if kf["stabilize"]:
        if clip.drift is not None:
            shifts = clip.drift - clip.drift[0]
        else:
            shifts = np.asarray(estimate_shifts(None, 0, reduced=clip.reduced))
    return np.stack([scale_frame(f, kf["size"], shifts[t]) for t, f in enumerate(clip.frames)])


@functools.lru_cache(maxsize=2)
def load_interpolator(uri: str, size: int, channels: int):
    """The trained interpolator at `uri`, loaded once per process (mer.interpolator)."""
    import torch

    from mer.interpolator import Interpolator

    torch.set_num_threads(1)  # one Ray Data actor, one CPU
    return Interpolator.load(uri, image_size=size, channels=channels)


def process_chunk(item: dict) -> dict:
    """Ray Data map function: build one chunk's records, write its part and marker."""
    import cv2

    cv2.setNumThreads(1)  # one Ray task, one CPU: OpenCV ignores OMP_NUM_THREADS
    start = time.time()
    kf = item["kf"]
    interpolator = None
    if kf["interpolation"] == "adaconv":
        interpolator = load_interpolator(kf["interpolator_uri"], kf["size"], 3)
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
    part = None
    if records:
        from mer.table import records_to_table

        part = f"part-{_chunk_stem(item)}.parquet"
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


def _chunk_stem(item: dict) -> str:
    # The chunk size is in the name: chunk i of another chunking holds other clips.
    return f"c{item['size']}-{item['chunk']:05d}"


def _chunk_name(item: dict) -> str:
    return f"{_chunk_stem(item)}.json"


# ---------------------------------------------------------------- driver


def manifest_rows(manifest: pd.DataFrame) -> list[dict]:
    rows = []
    for rec in manifest.sort_values(["dataset", "subject", "clip"]).to_dict("records"):
        rec["apex"] = None if pd.isna(rec["apex"]) else int(rec["apex"])
        rows.append(rec)
    return rows


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """A hash of the clips a manifest lists (names, labels, frame numbers, sources)."""
    cols = ["dataset", "subject", "clip", "label", "onset", "apex", "offset", "source"]
    rows = manifest.sort_values(["dataset", "subject", "clip"])[cols].astype(str)
    return layout.digest({"rows": rows.to_numpy().tolist()})


def chunk_items(cfg: PipelineConfig, rows: list[dict]) -> list[dict]:
    """The stage's work items: `keyframes.chunk_size` manifest rows each, with the settings."""
    kf = cfg.to_dict()["keyframes"]
    if cfg.keyframes.interpolation == "adaconv":
        kf["interpolator_uri"] = layout.interpolator_file(cfg)
    cs, out = cfg.keyframes.chunk_size, layout.keyframes_uri(cfg)
    return [
        {"chunk": i, "size": cs, "rows": rows[i * cs : (i + 1) * cs], "kf": kf, "out": out}
        for i in range(math.ceil(len(rows) / cs))
    ]


def build_keyframes_dataset(
    cfg: PipelineConfig,
    manifest: pd.DataFrame | None = None,
    *,
    progress: Callable[[str], None] = emit,
    use_ray: bool = True,
) -> dict:
    """Run the key-frame stage into `layout.keyframes_uri(cfg)` (skipped when finished).

    `use_ray=False` processes the chunks one after another in this process (debugging,
    test fixtures); the output is the same.
    """
    from mer.datasets import load_manifest

    out = layout.keyframes_uri(cfg)
    h = layout.keyframes_hash(cfg)
    meta_uri = storage.join(out, "_meta.json")
    if manifest is None:
        manifest = load_manifest(
            cfg.data.dataset,
            layout.data_root(cfg),
            cfg.data.annotations,
            protocol=cfg.data.protocol,
            **cfg.data.options,
        )
    fingerprint = manifest_fingerprint(manifest)
    if storage.exists(meta_uri):
        meta = storage.read_json(meta_uri)
        if meta.get("manifest") != fingerprint:
            raise InputError(
                f"the clips or annotations under {layout.data_root(cfg)} changed since {out} "
                "was built from them; delete that folder to rebuild the key frames"
            )
        progress(f"[keyframes] {out} is up to date; skipped")
        return {**meta, "skipped": True}

    if cfg.keyframes.interpolation == "adaconv":
        file = layout.interpolator_file(cfg)
        if not storage.exists(file):
            raise InputError(
                f"keyframes.interpolation=adaconv needs the interpolator {file}, which is not "
                "trained yet; run jobs/interpolator.py with the same config first"
            )
    rows = manifest_rows(manifest)
    items = chunk_items(cfg, rows)
    _remove_stale(out, cfg.keyframes.chunk_size)
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
    counter = Counter("keyframes", len(todo), progress)
    if todo and use_ray:
        _run_chunks(todo, cfg.keyframes.concurrency, counter)
    for it in todo if not use_ray else []:
        res = process_chunk(it)
        counter.add(1, f"chunks: {res['written']} written, {res['rejected']} rejected")

    # Assemble: every chunk has a marker now.
    parts, rejects, written = [], list(manifest.attrs.get("rejects", [])), 0
    for it in items:
        marker = storage.read_json(storage.join(out, "_chunks", _chunk_name(it)))
        if marker["part"]:
            parts.append(marker["part"])
        written += marker["written"]
        rejects.extend(marker["rejects"])
    storage.write_parquet(rejects_to_table(rejects), storage.join(out, "_rejects.parquet"))
    total = len(rows) + len(manifest.attrs.get("rejects", []))
    _check_rejects(rejects, total, cfg.keyframes.max_reject_fraction, out)
    meta = {
        "hash": h,
        "settings": layout.keyframes_settings(cfg),
        "manifest": fingerprint,
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


def _check_rejects(rejects: list[dict], total: int, limit: float, out: str) -> None:
    """Stop when more than `limit` of the clips were rejected, naming the main reasons."""
    if not rejects or len(rejects) <= limit * total:
        return
    from collections import Counter as Count

    reasons = Count(str(r.get("reason", "")).split(":", 1)[0] for r in rejects)
    top = "; ".join(f"{n} x {why}" for why, n in reasons.most_common(3))
    raise InputError(
        f"{len(rejects)} of {total} clips were rejected (more than "
        f"keyframes.max_reject_fraction={limit:g}): {top}; every reason is in "
        f"{storage.join(out, '_rejects.parquet')}. Fix the data or raise the limit"
    )


def _run_chunks(todo, concurrency, counter) -> None:
    import ray

    if not ray.is_initialized():
        ray.init()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own line per chunk, with an ETA
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    # A fixed pool of `concurrency` actors: with a task pool, Ray Data 2.60's concurrency cap
    # left 0.15-0.35 s idle between a worker's tasks (a quarter of the time at 2 CPUs here);
    # actors also import OpenCV and the decoders once. One chunk in flight per actor: actors
    # come up one by one (on a cluster, on nodes that start one by one), and with Ray Data's
    # default of several in flight the first one up took both chunks of configs/tiny.yaml
    # while the second, on another node, got none. Each actor holds one CPU and the
    # resources of `keyframes.resources`: on a cluster, one only the CPU worker type
    # advertises (cluster.yaml: decode), so that no GPU node decodes.
    ds = ds.map(
        _ChunkWorker,
        num_cpus=1,
        resources=dict(todo[0]["kf"].get("resources") or {}),
        compute=ray.data.ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=1),
    )
    written = rejected = 0
    for res in ds.iter_rows():
        written += res["written"]
        rejected += res["rejected"]
        rate = (written + rejected) / max(time.monotonic() - counter.start, 1e-6)
        counter.add(1, f"chunks: {written} clips written, {rejected} rejected, {rate:.1f} clips/s")


def _remove_stale(out: str, chunk_size: int) -> None:
    """Delete parts and markers of an unfinished build with another chunk size."""
    prefix = f"c{chunk_size}-"
    for name in storage.listdir(out):
        if name.startswith("part-") and not name.startswith(f"part-{prefix}"):
            storage.remove(storage.join(out, name))
    for name in storage.listdir(storage.join(out, "_chunks")):
        if not name.startswith(prefix):
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
