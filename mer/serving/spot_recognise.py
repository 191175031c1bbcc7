"""Spot-then-recognise: long videos -> spotted micro-expression intervals -> key frames ->
the exported model -> one row per interval with class probabilities.

Every frame folder under the input is a long video (at `fps`). A spotting run
(jobs/spot.py's output folder) supplies the spotter, its window and interval settings and its
final threshold (chosen on every subject of that run's labelled set: mer.spotting.run.
spot_new_videos). The micro-expression intervals become the clip list of the ordinary
prediction pipeline (mer.serving.inference.predict_clips), so key frames and the model run
exactly as for annotated clips. Outputs under `out`, besides predict_clips's own:

  spotted.csv / spotted.parquet  every spotted interval (path, onset, offset, score, type);
                                 the predictions carry the spotter's score as spot_score
  model_card.json, MODEL_CARD.md the model's card with a spotting section: which spotter, run
                                 and thresholds found the intervals
  _summary.json                  predict_clips's summary plus the spotting record
"""

from __future__ import annotations

import posixpath

import pandas as pd
import pyarrow as pa

from mer import storage
from mer.datasets.common import list_frames
from mer.datasets.long_videos import LongVideo
from mer.errors import InputError
from mer.keyframes.video import VIDEO_EXTENSIONS
from mer.progress import emit
from mer.serving import model_card
from mer.serving.inference import find_clips, predict_clips, read_output
from mer.serving.model_folder import read_card
from mer.spotting.run import spot_new_videos

SPOTTED_COLUMNS = ["path", "onset", "offset", "score", "type"]


def long_videos(input_uri: str, fps: float) -> list[LongVideo]:
    """Every frame folder under `input_uri` as a long video at `fps` (video files are not
    read as long videos: decode them to frame folders first)."""
    if fps <= 0:
        raise InputError(f"--fps {fps} must be positive (the long videos' frame rate)")
    out = []
    for clip in find_clips(input_uri):
        if posixpath.splitext(clip["source"])[1].lower() in VIDEO_EXTENSIONS:
            raise InputError(
                f"{clip['source']}: spotting reads long videos as frame folders; "
                "extract its frames to a folder first"
            )
        frames = list_frames(clip["source"])
        first, last = frames[0][0], frames[-1][0]
        out.append(
            LongVideo(
                "input", clip["path"], clip["path"], clip["source"], fps, last - first + 1, first
            )
        )
    if not out:
        raise InputError(f"--input {input_uri}: no frame folders (long videos) under it")
    return out


def spot_then_recognise(
    model: str,
    input_uri: str,
    out: str,
    spot_run: str,
    spotter: str,
    fps: float,
    *,
    progress=emit,
    **predict_options,
) -> dict:
    """Spot every long video under `input_uri`, classify its micro-expression intervals with
    the model folder `model`; see the module for the outputs. Returns the summary."""
    card = read_card(model)  # a missing model fails before any spotting work
    videos = long_videos(input_uri, fps)
    progress(f"[predict] spotting {len(videos)} long videos with {spotter} from {spot_run}")
    intervals, rejects, used = spot_new_videos(spot_run, spotter, videos, progress=progress)
    spotted = pd.DataFrame(
        [(i.video, i.onset, i.offset, i.score, i.type) for i in intervals], columns=SPOTTED_COLUMNS
    )
    _write(spotted, out, "spotted")
    micro = spotted[spotted["type"] == "micro"]
    clips_csv = storage.join(out, "_spotted_clips.csv")
    storage.write_bytes(clips_csv, micro[["path", "onset", "offset"]].to_csv(index=False).encode())
    progress(f"[predict] {len(spotted)} intervals spotted, {len(micro)} micro-expressions")
    summary = predict_clips(model, input_uri, out, clips_csv, progress=progress, **predict_options)
    preds, _ = read_output(out)
    preds = preds.merge(
        micro.rename(columns={"score": "spot_score"})[["path", "onset", "offset", "spot_score"]],
        on=["path", "onset", "offset"],
        how="left",
    )
    _write(preds, out, "predictions")
    carded = model_card.with_spotting(card, used)
    storage.write_json(storage.join(out, "model_card.json"), carded)
    storage.write_bytes(storage.join(out, "MODEL_CARD.md"), model_card.markdown(carded).encode())
    summary = {
        **summary,
        "spotting": used,
        "long_videos": len(videos),
        "spotted": int(len(spotted)),
        "spotted_micro": int(len(micro)),
        "spotting_rejects": rejects,
    }
    storage.write_json(storage.join(out, "_summary.json"), summary)
    return summary


def _write(df: pd.DataFrame, out: str, stem: str) -> None:
    storage.write_parquet(
        pa.Table.from_pandas(df, preserve_index=False), storage.join(out, f"{stem}.parquet")
    )
    storage.write_bytes(storage.join(out, f"{stem}.csv"), df.to_csv(index=False).encode())
