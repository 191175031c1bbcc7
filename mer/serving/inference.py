"""Batch inference on new clips with Ray Data: videos or frame folders in, class probabilities
out, one row per clip.

    python jobs/predict.py --model runs/demo/models/demo --input NEW_CLIPS/ --out PREDS/

  clips   every video file and every folder of numbered frame images under --input (a
          local folder or an s3:// prefix), each whole clip the interval and its apex
          spotted; or the rows of a CSV (`path, onset, offset[, apex]`)
    -> KeyFrames actors (CPU; mer.serving.clip_keyframes, no torch imported):
       mer.keyframes.clip_records.build_record, the function that built the training key
       frames, with the key-frame settings the model card records
    -> Predictor actors (CPU or a share of a GPU): the model (mer.serving.model_folder.load_model) on
       batches of key frames through mer.train.step.predict, the normalisation and forward
       pass of training-time evaluation
    -> <out>/predictions.parquet, .csv   one row per clip: path, source, onset, apex, offset,
                                        apex_source, prob_<class>... (calibrated), pred,
                                        pred_class, flagged, flags, the quality measures,
                                        ood_score, flag_<name>..., raw_prob_<class>...
                                        (mer.serving.quality; docs/prediction-quality.md)
       <out>/rejects.parquet, .csv      clips that could not be used: path, source, onset,
                                        offset, stage, reason
       <out>/_summary.json              model, input, counts (flags included), seconds
A clip that cannot be decoded, whose interval lies outside its frames, or that is shorter
than mer.serving.clip_keyframes.MIN_FRAMES frames is a reject with its reason; nothing aborts the batch.
Frames stay on the workers: the driver receives probabilities only.
"""

from __future__ import annotations

import io
import logging
import math
import posixpath
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mer import storage
from mer.datasets.common import IMAGE_EXTENSIONS
from mer.errors import ConfigError, InputError
from mer.keyframes.settings import KeyframeSettings, keyframe_settings
from mer.keyframes.video import VIDEO_EXTENSIONS
from mer.progress import Counter, emit
from mer.serving.clip_keyframes import KEYFRAME_BATCH, UNSET, KeyFrames
from mer.serving.model_folder import read_card
from mer.serving.predictor import Predictor
from mer.serving.quality import (
    FLAG_COLUMNS,
    MEASURES,
    counts,
    flag,
)

log = logging.getLogger(__name__)

UNKNOWN = "unknown"  # pred_class of a flagged clip under --abstain
REJECT_COLUMNS = ["path", "source", "onset", "offset", "stage", "reason"]


# ---------------------------------------------------------------- which clips


def find_clips(input_uri: str) -> list[dict]:
    """Every video file and every folder holding frame images under `input_uri` (itself a
    video or frame folder, a folder, or an s3:// prefix), as whole clips; hidden files are
    skipped, other files ignored."""

    fs, root = storage.filesystem(input_uri)
    try:
        if not fs.exists(root):
            raise InputError(f"--input {input_uri}: no such folder, file or prefix")
        if fs.isfile(root):
            return [_clip(posixpath.basename(root), input_uri)]
        found = fs.find(root)
    except PermissionError as e:
        raise InputError(f"--input {input_uri}: access denied ({e})") from None
    root = root.rstrip("/")
    videos, folders = [], set()
    for path in found:
        rel = posixpath.relpath(path, root)
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        ext = posixpath.splitext(path)[1].lower()
        if ext in VIDEO_EXTENSIONS:
            videos.append(rel)
        elif ext in IMAGE_EXTENSIONS:
            folders.add(posixpath.dirname(rel))
    out = [_clip(rel, storage.join(input_uri, rel)) for rel in videos]
    for rel in folders:
        if rel in ("", "."):  # the input is itself a frame folder
            out.append(_clip(posixpath.basename(root), input_uri))
        else:
            out.append(_clip(rel, storage.join(input_uri, rel)))
    return sorted(out, key=lambda c: c["path"])


def _clip(path: str, source: str, onset=UNSET, apex=UNSET, offset=UNSET) -> dict:
    return {"path": path, "source": source, "onset": onset, "apex": apex, "offset": offset}


def read_clip_list(csv_uri: str, input_uri: str) -> tuple[list[dict], list[dict]]:
    """(clips, rejects) of a CSV with columns path, onset, offset and optionally apex: `path`
    relative to `input_uri` (or an absolute path / URI); frame numbers in the source's own
    numbering (videos from 0); a blank onset/offset is the clip's first/last frame, a blank
    apex is spotted. A row one cannot use is a reject; a CSV without those columns is an
    error."""
    try:
        df = pd.read_csv(io.BytesIO(storage.read_bytes(csv_uri)), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, FileNotFoundError) as e:
        raise InputError(f"--clips {csv_uri}: not a readable CSV ({e})") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ("path", "onset", "offset") if c not in df.columns]
    if missing:
        raise InputError(
            f"--clips {csv_uri}: column(s) {missing} missing; expected path, onset, offset "
            "and optionally apex"
        )
    clips, rejects = [], []
    for line, row in enumerate(df.to_dict("records"), start=2):
        path = str(row["path"]).strip()
        absolute = path.startswith("/") or "://" in path
        source = path if absolute else storage.join(input_uri, path)
        try:
            if not path:
                raise InputError("the path is empty")
            numbers = {k: _frame_number(row.get(k, ""), k) for k in ("onset", "apex", "offset")}
        except InputError as e:
            rejects.append(_reject(_clip(path, source), "input", f"{csv_uri} line {line}: {e}"))
            continue
        clips.append(_clip(path, source, numbers["onset"], numbers["apex"], numbers["offset"]))
    return clips, rejects


def _frame_number(value, what: str) -> int:
    text = str(value).strip()
    if not text:
        return UNSET
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"{what} {text!r} is not a frame number") from None
    if not number.is_integer() or number < 0:
        raise InputError(f"{what} {text!r} is not a frame number (a whole number >= 0)")
    return int(number)


def _reject(clip: dict, stage: str, reason: str) -> dict:
    return {
        "path": clip["path"],
        "source": clip["source"],
        "onset": int(clip["onset"]),
        "offset": int(clip["offset"]),
        "stage": stage,
        "reason": reason,
    }


# ---------------------------------------------------------------- per clip (workers)


def model_keyframe_settings(model: str, card: dict) -> KeyframeSettings:
    """The key-frame settings of a model folder's card (a setting newer than the card: its
    default), with the learned interpolator the folder carries when the key frames are
    rendered with one, as the key-frame stage built the model's training key frames."""
    return keyframe_settings(
        card["config"]["keyframes"],
        lambda: storage.join(model, card["files"]["interpolator"]["file"]),
    )


# ---------------------------------------------------------------- the driver


@dataclass(frozen=True)
class Pools:
    """The actor pools of predict_clips (its keyword arguments of the same names)."""

    batch_size: int  # clips per Predictor forward pass
    predictors: int
    cpus_per_predictor: float
    gpus_per_predictor: float
    keyframe_workers: int  # KeyFrames actors; 0: plan_keyframe_pool decides

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_predictor > 0 else "cpu"


def plan_keyframe_pool(
    cpus: float, nodes: int, keyframe_workers: int, predictors: int, cpus_per_predictor: float
) -> tuple[int, float]:
    """(KeyFrames actors, CPUs each). On one node every actor must fit beside the predictors
    at once: by default one actor per CPU left, each taking an equal share of it."""
    free = cpus - predictors * cpus_per_predictor
    if nodes > 1 or cpus == 0:  # a cluster (or an autoscaler) provides what is asked
        return keyframe_workers or max(1, int(cpus) or 1), 1.0
    if free <= 0:
        raise ConfigError(
            f"--predictors {predictors} x --cpus-per-predictor {cpus_per_predictor:g} leave no "
            f"CPU of this machine's {cpus:g} for key frames; lower them"
        )
    n = keyframe_workers or max(1, math.ceil(free - 1e-9))
    return n, min(1.0, math.floor(100 * free / n) / 100)


def predict_clips(
    model: str,
    input: str,
    out: str,
    clips: str | None = None,
    *,
    batch_size: int = 32,
    predictors: int = 1,
    cpus_per_predictor: float = 0.25,
    gpus_per_predictor: float = 0.0,
    keyframe_workers: int = 0,
    abstain: bool = False,
    progress=emit,
) -> dict:
    """Predict every clip under `input` (or listed in the CSV `clips`) with the model folder
    `model`; writes <out>/predictions.*, rejects.* and _summary.json. Returns the summary.
    Every prediction carries its quality measures and flags (mer.serving.quality); `abstain`: a
    flagged clip's pred_class is "unknown" (pred -1), its probabilities kept."""

    for name, value in (("--batch-size", batch_size), ("--predictors", predictors)):
        if value < 1:
            raise ConfigError(f"{name} {value} must be at least 1")
    t0 = time.time()
    card = read_card(model)
    kf = model_keyframe_settings(model, card)
    pools = Pools(batch_size, predictors, cpus_per_predictor, gpus_per_predictor, keyframe_workers)
    if clips:
        items, listed = read_clip_list(clips, input)
    else:
        items, listed = find_clips(input), []
    progress(
        f"[predict] {len(items) + len(listed)} clips from {clips or input}; model "
        f"{card['name']} ({', '.join(card['classes'])}; key frames K={kf.k} S={kf.size} "
        f"{kf.method}) on {pools.device}"
    )
    rows: list[pd.DataFrame] = []
    if items:
        rows = _run(items, kf, model, pools, progress)
    empty = pd.DataFrame(columns=[*_columns(card), "stage", "reason"])
    done = pd.concat(rows, ignore_index=True) if rows else empty
    failed = done[done["reason"] != ""]
    rejects = listed + [_reject(r, r["stage"], r["reason"]) for r in failed.to_dict("records")]
    preds = _with_flags(done[done["reason"] == ""], card, abstain)
    preds = preds[_columns(card)].sort_values(["path", "onset"])
    rej = pd.DataFrame(rejects, columns=REJECT_COLUMNS).sort_values(["path", "onset"])
    _write_table(preds.reset_index(drop=True), out, "predictions")
    _write_table(rej.reset_index(drop=True), out, "rejects")
    seconds = time.time() - t0
    summary = {
        "model": model,
        "model_name": card["name"],
        "weights_sha256": card["files"]["weights"]["sha256"],
        "classes": card["classes"],
        "input": input,
        "clips_csv": clips,
        "clips": len(items) + len(listed),
        "predicted": int(len(preds)),
        "rejected": int(len(rej)),
        "reject_stages": {str(k): int(v) for k, v in rej["stage"].value_counts().items()},
        "flagged": counts(preds),
        "abstain": abstain,
        "abstained": int((preds["pred_class"] == UNKNOWN).sum()),
        "calibrated": _temperature(card) is not None,
        "temperature": _temperature(card),
        "seconds": round(seconds, 2),
        "device": pools.device,
        "batch_size": batch_size,
        "predictors": predictors,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_json(storage.join(out, "_summary.json"), summary)
    unknown = f", {summary['abstained']} answered unknown" if abstain else ""
    progress(
        f"[predict] done: {len(preds)} clips predicted ({summary['flagged']['any']} flagged"
        f"{unknown}), {len(rej)} rejected ({seconds:.0f} s); "
        f"{storage.join(out, 'predictions.parquet')}, rejects in "
        f"{storage.join(out, 'rejects.parquet')}"
    )
    return summary


def _columns(card: dict) -> list[str]:
    probs = [f"prob_{c}" for c in card["classes"]]
    return [
        "path",
        "source",
        "onset",
        "apex",
        "offset",
        "apex_source",
        *probs,
        "pred",
        "pred_class",
        "flagged",
        "flags",
        *MEASURES,
        "ood_score",
        *FLAG_COLUMNS,
        *[f"raw_{p}" for p in probs],
    ]


def _temperature(card: dict) -> float | None:
    return ((card.get("trust") or {}).get("calibration") or {}).get("temperature")


def _with_flags(done: pd.DataFrame, card: dict, abstain: bool) -> pd.DataFrame:
    """The predicted rows with their measures typed, their flags (mer.serving.quality.flag) and,
    with `abstain`, pred -1 / pred_class "unknown" where a flag is raised."""

    out = done.drop(columns=[*FLAG_COLUMNS, "flags", "flagged"], errors="ignore")
    for c in ("length", "frame_height", "frame_width", "apex_offset"):
        out[c] = out[c].astype(np.int64) if len(out) else out[c]
    out["face_found"] = out["face_found"].astype(bool)
    out = pd.concat([out, flag(out, card.get("trust"))], axis=1)
    if abstain and len(out):
        out.loc[out["flagged"], "pred"] = -1
        out.loc[out["flagged"], "pred_class"] = UNKNOWN
    return out


def keyframes_step(ds, kf: KeyframeSettings, actors: int, cpus: float, per_call: int):
    """`ds` (clip items) mapped to key frames by a pool of `actors` KeyFrames actors of
    `cpus` CPUs each, `per_call` clips a call: the pipeline's first step
    (benchmarks/inference.py times it alone)."""
    import ray

    return ds.map_batches(
        KeyFrames,
        fn_constructor_kwargs={"kf": kf},
        batch_size=per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus,
    )


def _run(
    items: list[dict], kf: KeyframeSettings, model: str, pools: Pools, progress
) -> list[pd.DataFrame]:
    """Key frames then predictions of `items` through the actor pools `pools`: the rows of
    every batch of output, as they come."""
    import ray

    if not ray.is_initialized():
        ray.init()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own line per batch, with an ETA
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    cpus = float(ray.cluster_resources().get("CPU", 0))
    n_kf, kf_cpus = plan_keyframe_pool(
        cpus, nodes, pools.keyframe_workers, pools.predictors, pools.cpus_per_predictor
    )
    # Blocks of a few clips, at least one per actor.
    per_block = min(KEYFRAME_BATCH, math.ceil(len(items) / n_kf))
    blocks = math.ceil(len(items) / per_block)
    n_kf = min(n_kf, blocks)
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = keyframes_step(ds, kf, n_kf, kf_cpus, per_block)
    ds = ds.map_batches(
        Predictor,
        fn_constructor_kwargs={
            "model": model,
            "device": pools.device,
            "batch_size": pools.batch_size,
            "cpus": pools.cpus_per_predictor,
        },
        batch_size=pools.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pools.predictors),
        num_cpus=pools.cpus_per_predictor,
        num_gpus=pools.gpus_per_predictor or None,
    )
    gpus = pools.gpus_per_predictor
    progress(
        f"[predict] {n_kf} key-frame actor(s) x {kf_cpus:g} CPU, {pools.predictors} predictor(s)"
        f" x {pools.cpus_per_predictor:g} CPU{f' + {gpus:g} GPU' if gpus else ''}"
        f", batches of {pools.batch_size}"
    )
    counter = Counter("predict", len(items), progress)
    rows, ok = [], 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        rows.append(batch)
        ok += int((batch["reason"] == "").sum())
        seen = counter.done + len(batch)
        rate = seen / max(time.monotonic() - counter.start, 1e-6)
        counter.add(len(batch), f"clips: {ok} predicted, {seen - ok} rejected, {rate:.1f} clips/s")
    return rows


def _write_table(df: pd.DataFrame, out: str, stem: str) -> None:
    import pyarrow as pa

    storage.write_parquet(
        pa.Table.from_pandas(df, preserve_index=False), storage.join(out, f"{stem}.parquet")
    )
    storage.write_bytes(storage.join(out, f"{stem}.csv"), df.to_csv(index=False).encode())


def read_output(out: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, rejects) of a finished predict run."""
    return (
        storage.read_parquet(storage.join(out, "predictions.parquet")).to_pandas(),
        storage.read_parquet(storage.join(out, "rejects.parquet")).to_pandas(),
    )
