"""Stage 1: the clip manifest becomes a key-frame table, in parallel on Ray Data.

The table (format: mer.keyframes.table) goes to `mer.layout.keyframes_uri`, a folder keyed by the
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

import logging
import math
import platform
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from mer import layout, provenance, storage
from mer.actor_pools import fixed_pool
from mer.config import KeyframeConfig, PipelineConfig
from mer.datasets import load_manifest
from mer.errors import InputError
from mer.keyframes.chunks import _ChunkWorker, chunk_name, process_chunk
from mer.keyframes.clip_records import manifest_rows
from mer.keyframes.settings import KeyframeSettings, keyframe_settings
from mer.keyframes.table import rejects_to_table
from mer.progress import Counter, emit
from mer.provenance import platform as torch_platform

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- driver


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """A hash of the clips a manifest lists (names, labels, frame numbers, sources)."""
    cols = ["dataset", "subject", "clip", "label", "onset", "apex", "offset", "source"]
    rows = manifest.sort_values(["dataset", "subject", "clip"])[cols].astype(str)
    return layout.digest({"rows": rows.to_numpy().tolist()})


def chunk_items(cfg: PipelineConfig, rows: list[dict]) -> list[dict]:
    """The stage's work items: `keyframes.chunk_size` manifest rows each."""
    cs, out = cfg.keyframes.chunk_size, layout.keyframes_uri(cfg)
    return [
        {"chunk": i, "size": cs, "rows": rows[i * cs : (i + 1) * cs], "out": out}
        for i in range(math.ceil(len(rows) / cs))
    ]


def chunk_settings(cfg: PipelineConfig) -> KeyframeSettings:
    """The settings every chunk's clips are built with: cfg's, with its trained interpolator."""
    return keyframe_settings(cfg.keyframes, lambda: layout.interpolator_file(cfg))


def build_keyframes_dataset(
    cfg: PipelineConfig,
    manifest: pd.DataFrame | None = None,
    *,
    progress: Callable[[str], None] = emit,
    use_ray: bool = True,
) -> dict:
    """Run the key-frame stage into `layout.keyframes_uri(cfg)` (skipped when finished).

    `use_ray=False` processes the chunks one after another in this process (debugging,
    test fixtures); the output is the same. Returns _meta.json's content plus "profile":
    each chunk's timings (process_chunk's result) and Ray Data's statistics.
    """

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
    kf = chunk_settings(cfg)
    _remove_stale(out, cfg.keyframes.chunk_size)
    done = set(storage.listdir(storage.join(out, "_chunks")))
    todo = [it for it in items if chunk_name(it) not in done]
    if len(todo) < len(items):
        progress(f"[keyframes] resuming: {len(items) - len(todo)}/{len(items)} chunks done")
    progress(
        f"[keyframes] {len(rows)} clips in {len(items)} chunks -> {out} "
        f"(k={cfg.keyframes.k}, size={cfg.keyframes.size}, method={cfg.keyframes.method}, "
        f"{cfg.keyframes.concurrency} parallel tasks)"
    )
    started = time.time()
    counter = Counter("keyframes", len(todo), progress)
    chunks, stats = [], ""
    if todo and use_ray:
        chunks, stats = _run_chunks(todo, kf, cfg.keyframes, counter)
    for it in todo if not use_ray else []:
        chunks.append(process_chunk(it, kf))
        res = chunks[-1]
        counter.add(1, f"chunks: {res['written']} written, {res['rejected']} rejected")

    # Assemble: every chunk has a marker now.
    parts, rejects, written = [], list(manifest.attrs.get("rejects", [])), 0
    for it in items:
        marker = storage.read_json(storage.join(out, "_chunks", chunk_name(it)))
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
        "provenance": _provenance(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_json(meta_uri, meta)
    storage.write_bytes(storage.join(out, "config.yaml"), cfg.to_yaml().encode())
    progress(
        f"[keyframes] done: {written} clips written, {len(rejects)} rejected "
        f"({meta['seconds']} s); rejects in {storage.join(out, '_rejects.parquet')}"
    )
    # Not in _meta.json (timings are no part of the table): where this run's time went.
    return {**meta, "profile": {"started": started, "chunks": chunks, "ray_data_stats": stats}}


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


def _run_chunks(
    todo: list[dict], kf: KeyframeSettings, keyframes: KeyframeConfig, counter: Counter
) -> tuple[list[dict], str]:
    """Every chunk of `todo` through a pool of `keyframes.concurrency` actors, each building
    with the settings `kf`; each chunk's result (process_chunk's, with its actor's start)
    and Ray Data's own statistics."""
    import ray

    if not ray.is_initialized():
        ray.init()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own line per chunk, with an ETA
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    # A fixed pool of `concurrency` actors: with a task pool, Ray Data 2.60's concurrency cap
    # left 0.15-0.35 s idle between a worker's tasks (a quarter of the time at 2 CPUs here);
    # actors also import OpenCV and the decoders once. How many chunks each may hold at
    # once: mer.actor_pools.items_in_flight. Each actor holds one CPU and the
    # resources of `keyframes.resources`: on a cluster, one only the CPU worker type
    # advertises (cluster.yaml: decode), so that no GPU node decodes.
    # The settings go to each actor once, not with every chunk: Ray Data would store them
    # in the items' Arrow blocks as pickled objects (and warn about it).
    ds = ds.map(
        _ChunkWorker,
        fn_constructor_kwargs={"kf": kf},
        num_cpus=1,
        # A GPU share only where the learned interpolator renders (keyframes.gpus).
        num_gpus=kf.gpus if kf.interpolation == "adaconv" else 0,
        resources=dict(keyframes.resources),
        compute=fixed_pool(keyframes.concurrency, len(todo)),
    )
    written = rejected = 0
    results = []
    for res in ds.iter_rows():
        results.append(res)
        written += res["written"]
        rejected += res["rejected"]
        rate = (written + rejected) / max(time.monotonic() - counter.start, 1e-6)
        counter.add(1, f"chunks: {written} clips written, {rejected} rejected, {rate:.1f} clips/s")
    return results, ds.stats()


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


def _provenance() -> dict:
    """The code, platform and thread count of the process that built the table
    (mer.provenance; the workers that decoded the clips ran the same code)."""
    import torch

    return {
        **provenance.record(),
        "platform": torch_platform(torch.device("cpu")),
        "threads": torch.get_num_threads(),
    }


def _versions() -> dict:
    import cv2

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "opencv": cv2.__version__,
        "decord": _installed("decord2"),
        "ray": _installed("ray"),
    }


def _installed(package: str) -> str:
    """A package's version without importing it (the key-frame stage also runs without Ray)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
