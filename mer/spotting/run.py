"""A spotting run: a LongVideoSet's features (mer.spotting.stage), every configured spotter
on the same leave-one-subject-out folds, and the outputs under `mer.layout.spotting_uri`:

  intervals.csv, intervals.parquet  one row per spotted interval: video, onset, offset, score,
                                    type, and the spotter, subject and threshold that made it
  thresholds.json                   per spotter, each fold's threshold (with the peaks rule,
                                    its interval length) and its training F1, and the FINAL
                                    one chosen on every subject (new videos are spotted with
                                    it: jobs/predict.py)
  metric.json                       where the set has ground truth: per spotter, the MEGC
                                    metric's rows (mer.spotting.metric: IoU >= 0.5; TP, FP, FN,
                                    precision, recall, F1 per dataset and overall, for micro,
                                    macro and all)
  learned/                          the learned spotter's weights per fold
  config.yaml                       the resolved config (jobs/predict.py --spot reads it)
  _settings.json                    the settings that made the folder (a rerun under other
                                    settings is refused; the same settings read it back)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from mer import layout, storage
from mer.config import PipelineConfig, load
from mer.datasets import load_long_videos
from mer.datasets.long_videos import Interval, LongVideo, LongVideoSet
from mer.datasets.synthetic.long_videos import generate_long
from mer.errors import InputError
from mer.progress import emit
from mer.spotting import learned, spotters
from mer.spotting.learned import LearnedSettings, loso_learned
from mer.spotting.metric import spotting_metric
from mer.spotting.peaks import PeakSettings
from mer.spotting.spotters import FINAL, FoldResult, loso_rule
from mer.spotting.stage import compute_features
from mer.spotting.windows import WindowSettings

COLUMNS = ["video", "onset", "offset", "score", "type", "spotter", "subject", "threshold"]


@dataclass
class SpottingRun:
    out: str
    intervals: pd.DataFrame  # COLUMNS
    thresholds: dict
    metric: dict | None
    rejects: list[dict]
    profile: dict
    skipped: bool = False


def load_set(
    cfg: PipelineConfig, mapper=None, progress: Callable[[str], None] = emit
) -> LongVideoSet:
    """The long videos `cfg.spotting` names; a synthetic set is generated first where it is
    missing (`mapper`: how its videos render, e.g. as Ray tasks, mer.datasets.stage.ray_map)."""
    sp = cfg.spotting
    root = layout.long_data_root(cfg)
    if sp.dataset == "synthetic_long":
        progress(f"[data] synthetic long videos under {root} ...")
        return generate_long(root, mapper=mapper, **sp.options)
    return load_long_videos(sp.dataset, root, sp.annotations)


def window_settings(cfg: PipelineConfig) -> WindowSettings:
    sp = cfg.spotting
    return WindowSettings(side=sp.side, grid=sp.grid, window_s=sp.window_s, span_s=sp.span_s)


def peak_settings(cfg: PipelineConfig) -> PeakSettings:
    sp = cfg.spotting
    return PeakSettings(
        micro_max_s=sp.micro_max_s,
        merge_gap_s=sp.merge_gap_s,
        min_s=sp.min_s,
        rule=sp.interval_rule,
        lengths_s=tuple(float(x) for x in sp.peak_lengths_s),
    )


def learned_settings(cfg: PipelineConfig) -> LearnedSettings:
    sp = cfg.spotting
    return LearnedSettings(rate=sp.rate, hidden=sp.hidden, epochs=sp.epochs, lr=sp.lr, seed=sp.seed)


def run_spotting(
    cfg: PipelineConfig,
    vset: LongVideoSet,
    *,
    use_ray: bool = True,
    progress: Callable[[str], None] = emit,
) -> SpottingRun:
    """Spot every video of `vset` with every spotter of `cfg.spotting.spotters` (see the
    module); a finished run with the same settings is read back."""
    out = layout.spotting_uri(cfg)
    settings = layout.spotting_settings(cfg)
    layout.claim(out, settings, "spotting results", "set spotting.* back or root elsewhere")
    done = storage.join(out, "intervals.parquet")
    if storage.exists(done) and storage.exists(storage.join(out, "thresholds.json")):
        progress(f"[spotting] {out} is up to date; skipped")
        metric_uri = storage.join(out, "metric.json")
        return SpottingRun(
            out,
            storage.read_parquet(done).to_pandas(),
            storage.read_json(storage.join(out, "thresholds.json")),
            storage.read_json(metric_uri) if storage.exists(metric_uri) else None,
            [],
            {},
            skipped=True,
        )
    features_uri = layout.spotting_features_uri(cfg)
    layout.claim(
        features_uri, layout.spotting_features_settings(cfg), "spotting features", "delete it"
    )
    feats, rejects, profile = compute_features(
        vset.videos,
        window_settings(cfg),
        out=features_uri,
        concurrency=cfg.spotting.concurrency,
        use_ray=use_ray,
        progress=progress,
    )
    truth = [t for t in vset.intervals if t.video in feats]
    ps = peak_settings(cfg)
    results: list[FoldResult] = []
    for name in cfg.spotting.spotters:
        progress(f"[spotting] {name}: {len(feats)} videos, leave-one-subject-out")
        if name == "learned":
            results += loso_learned(
                feats,
                truth,
                ps,
                learned_settings(cfg),
                storage.join(out, "learned"),
                cfg.resources,
                use_ray=use_ray,
            )
        else:
            results += loso_rule(name, feats, truth, ps)
    table = intervals_frame(results)
    thresholds = thresholds_record(results)
    metric = metric_record(results, truth, vset.videos) if truth else None
    storage.write_bytes(storage.join(out, "intervals.csv"), table.to_csv(index=False).encode())
    storage.write_json(storage.join(out, "thresholds.json"), thresholds)
    storage.write_bytes(storage.join(out, "config.yaml"), cfg.to_yaml().encode())
    if metric is not None:
        storage.write_json(storage.join(out, "metric.json"), metric)
    if rejects:
        storage.write_json(storage.join(out, "rejects.json"), rejects)
    # Written last: its presence means the run finished.
    storage.write_parquet(pa.Table.from_pandas(table, preserve_index=False), done)
    progress(f"[spotting] {len(table)} intervals -> {out}")
    return SpottingRun(out, table, thresholds, metric, rejects, profile)


def intervals_frame(results: list[FoldResult]) -> pd.DataFrame:
    rows = [
        {
            "video": i.video,
            "onset": i.onset,
            "offset": i.offset,
            "score": i.score,
            "type": i.type,
            "spotter": r.spotter,
            "subject": r.test_subject,
            "threshold": r.threshold,
        }
        for r in results
        for i in r.intervals
    ]
    return pd.DataFrame(rows, columns=COLUMNS).astype(
        {"onset": "int64", "offset": "int64", "score": "float64", "threshold": "float64"}
    )


def thresholds_record(results: list[FoldResult]) -> dict:
    out: dict = {}
    for r in results:
        entry = out.setdefault(r.spotter, {"folds": {}, "final": None})
        record = {"threshold": r.threshold, "train_micro_f1": round(r.train_f1, 4)}
        if r.length_s is not None:
            record["length_s"] = r.length_s
        if r.test_subject == FINAL:
            entry["final"] = record
        else:
            entry["folds"][r.test_subject] = record
    return out


def metric_record(
    results: list[FoldResult], truth: list[Interval], videos: list[LongVideo]
) -> dict:
    """Per spotter, the MEGC metric's rows (mer.spotting.metric: tp, fp, fn, precision,
    recall, F1 per dataset and overall, micro, macro and all), pooled over the folds' test
    subjects."""
    out = {}
    for spotter in dict.fromkeys(r.spotter for r in results):
        pred = [i for r in results if r.spotter == spotter for i in r.intervals]
        out[spotter] = spotting_metric(truth, pred, videos).rows()
    return out


def summary_lines(run: SpottingRun) -> list[str]:
    """What jobs/spot.py prints: where the outputs are, and per spotter its overall micro and
    macro F1 where there is ground truth."""
    lines = [f"intervals: {run.out}/intervals.csv ({len(run.intervals)} rows)"]
    for spotter, rows in (run.metric or {}).items():
        got = {r["type"]: r for r in rows if r["dataset"] == "overall"}
        parts = [
            f"{t} F1 {got[t]['f1']:.3f} (TP {got[t]['tp']}, FP {got[t]['fp']}, FN {got[t]['fn']})"
            for t in ("micro", "macro")
            if t in got
        ]
        lines.append(f"{spotter:8s} " + "; ".join(parts))
    if run.rejects:
        lines.append(f"{len(run.rejects)} videos rejected: {run.out}/rejects.json")
    return lines


def spot_new_videos(
    run_folder: str,
    spotter: str,
    videos: list[LongVideo],
    *,
    use_ray: bool = True,
    progress: Callable[[str], None] = emit,
) -> tuple[list[Interval], list[dict], dict]:
    """Spot videos outside the run's set with `spotter` as the run at `run_folder` left it:
    its window and interval settings (config.yaml) and its FINAL threshold and interval length
    (chosen on every subject of the run's set; the learned spotter's FINAL network). Returns
    the intervals, the rejected videos, and what was used (spotter, run, threshold,
    settings)."""
    cfg = load(storage.join(run_folder, "config.yaml"))
    record = storage.read_json(storage.join(run_folder, "thresholds.json"))
    if spotter not in record or not record[spotter].get("final"):
        raise InputError(
            f"{run_folder} has no final threshold for spotter {spotter!r} (it ran "
            f"{', '.join(record)}); choose one of those or rerun jobs/spot.py with it"
        )
    p = float(record[spotter]["final"]["threshold"])
    length_s = record[spotter]["final"].get("length_s")
    feats, rejects, _ = compute_features(
        videos,
        window_settings(cfg),
        concurrency=cfg.spotting.concurrency,
        use_ray=use_ray,
        progress=progress,
    )
    ps = peak_settings(cfg)
    if spotter == "learned":
        ls = learned_settings(cfg)
        some = next(iter(feats.values()), None)
        n_inputs = 1 + (some.blocks.shape[1] if some is not None else cfg.spotting.grid**2)
        model = learned.load_fold(storage.join(run_folder, "learned"), FINAL, n_inputs, ls)
        scores = {n: learned.frame_scores(model, f, ls.rate) for n, f in feats.items()}
        intervals = spotters.spot(scores, feats, p, ps, relative=False, length_s=length_s)
    else:
        scores = {n: spotters.score(spotter, f) for n, f in feats.items()}
        intervals = spotters.spot(scores, feats, p, ps, length_s=length_s)
    used = {
        "spotter": spotter,
        "run": run_folder,
        "settings_hash": layout.digest(
            storage.read_json(storage.join(run_folder, "_settings.json"))["settings"]
        ),
        "threshold": p,
        "length_s": length_s,
        "threshold_rule": "probability" if spotter == "learned" else "mean + p x (max - mean)",
        "train_micro_f1": record[spotter]["final"]["train_micro_f1"],
        "dataset": cfg.spotting.dataset,
        "window": dataclasses.asdict(window_settings(cfg)),
        "intervals": dataclasses.asdict(ps),
    }
    return intervals, rejects, used
