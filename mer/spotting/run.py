"""A spotting run: a LongVideoSet's features (mer.spotting.stage), every configured spotter
on the same leave-one-subject-out folds, and the outputs under `mer.layout.spotting_uri`:

  intervals.csv, intervals.parquet  one row per spotted interval: video, onset, offset, score,
                                    type, and the spotter, subject and threshold that made it
  thresholds.json                   per spotter, each fold's threshold and its training F1,
                                    and the FINAL one chosen on every subject (new videos are
                                    spotted with it: jobs/predict.py)
  metric.json                       where the set has ground truth: per spotter, TP, predicted,
                                    ground truth, precision, recall, F1 for micro, macro and
                                    both together (IoU >= 0.5, mer.spotting.peaks.match_counts)
  learned/                          the learned spotter's weights per fold
  _settings.json                    the settings that made the folder (a rerun under other
                                    settings is refused; the same settings read it back)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from mer import layout, storage
from mer.config import PipelineConfig
from mer.datasets.long_videos import Interval, LongVideoSet
from mer.progress import emit
from mer.spotting.learned import LearnedSettings, loso_learned
from mer.spotting.peaks import PeakSettings, f1, match_counts
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


def window_settings(cfg: PipelineConfig) -> WindowSettings:
    sp = cfg.spotting
    return WindowSettings(side=sp.side, grid=sp.grid, window_s=sp.window_s, span_s=sp.span_s)


def peak_settings(cfg: PipelineConfig) -> PeakSettings:
    sp = cfg.spotting
    return PeakSettings(micro_max_s=sp.micro_max_s, merge_gap_s=sp.merge_gap_s, min_s=sp.min_s)


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
    metric = spotting_metric(results, truth) if truth else None
    storage.write_bytes(storage.join(out, "intervals.csv"), table.to_csv(index=False).encode())
    storage.write_json(storage.join(out, "thresholds.json"), thresholds)
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
        if r.test_subject == FINAL:
            entry["final"] = record
        else:
            entry["folds"][r.test_subject] = record
    return out


def spotting_metric(results: list[FoldResult], truth: list[Interval]) -> dict:
    """Per spotter: TP, predicted, ground truth, precision, recall and F1 for micro, macro
    and both, pooled over the folds' test subjects."""
    out = {}
    for spotter in dict.fromkeys(r.spotter for r in results):
        pred = [i for r in results if r.spotter == spotter for i in r.intervals]
        row = {}
        total = [0, 0, 0]
        for kind in ("micro", "macro"):
            tp, n_pred, n_true = match_counts(pred, truth, kind)
            total = [total[0] + tp, total[1] + n_pred, total[2] + n_true]
            row[kind] = _prf(tp, n_pred, n_true)
        row["overall"] = _prf(*total)
        out[spotter] = row
    return out


def _prf(tp: int, n_pred: int, n_true: int) -> dict:
    return {
        "tp": tp,
        "predicted": n_pred,
        "truth": n_true,
        "precision": tp / n_pred if n_pred else 0.0,
        "recall": tp / n_true if n_true else 0.0,
        "f1": f1(tp, n_pred, n_true),
    }
