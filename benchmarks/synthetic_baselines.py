"""How hard is each synthetic preset? Three baselines under leave-one-subject-out.

    .venv/bin/python benchmarks/synthetic_baselines.py            # simple, demo, casme2-like
    .venv/bin/python benchmarks/synthetic_baselines.py --presets megc-like --seed 1
    .venv/bin/python benchmarks/synthetic_baselines.py --presets casme2-like --size 170x140

For each preset the script generates the set (timed; mer.datasets.synthetic.generator.generate) and
scores, over LOSO folds keyed dataset/subject, pooled UF1 and UAR (mer.metrics.summarise;
UF1 is the macro F1 over the 3 classes of all folds' predictions pooled) of:
  majority  the most frequent class among the training subjects' clips.
  linear    logistic regression on the apex-minus-onset grey difference: the onset and
            apex frames read with mer.keyframes.video.read_clip, grey, resized to 32 x 32 (area),
            apex minus onset, 1024 numbers. The apex is the ground truth's (the sheet's,
            where it gives one).
  oracle    'oracle region energy': logistic regression on two numbers per clip, the log
            of the upper- and lower-face motion energy at the apex from ground_truth.csv
            (the generator's own AU displacement, nuisances excluded). It knows exactly how
            much each half of the face moves, and nothing of direction.
Both regressions standardise their features, weight classes by inverse frequency, and pick
C from (0.01, 0.1, 1) by pooled UF1 over a 3-fold GroupKFold of the training subjects only;
the held-out subject is never seen before its prediction. Labels are the annotated ones.

Writes benchmarks/synthetic_baselines.json (or --json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import cv2
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mer.datasets.synthetic.generator import PRESETS, generate  # noqa: E402
from mer.keyframes.video import read_clip  # noqa: E402
from mer.metrics import summarise, uf1  # noqa: E402

GRID = (0.01, 0.1, 1.0)
SIDE = 32


def apex_minus_onset(root: str, truth: pd.DataFrame) -> np.ndarray:
    """One row of SIDE x SIDE grey apex-minus-onset differences per clip."""

    def grey(source: str, number: int) -> np.ndarray:
        frame = read_clip(source, int(number), int(number))[0]
        g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
        return cv2.resize(g, (SIDE, SIDE), interpolation=cv2.INTER_AREA).ravel()

    rows = []
    for r in truth.itertuples():
        source = os.path.join(root, *r.path.split("/"))
        rows.append(grey(source, r.apex) - grey(source, r.onset))
    return np.stack(rows)


def region_energy(truth: pd.DataFrame) -> np.ndarray:
    return np.log(truth[["upper_energy", "lower_energy"]].to_numpy(float) + 1e-6)


def _model(c: float):
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    return make_pipeline(StandardScaler(), lr)


def _fit_predict(x_train, y_train, groups, x_test) -> tuple[np.ndarray, float]:
    """Predictions for x_test of the C chosen by inner GroupKFold on the training subjects."""
    k = min(3, len(np.unique(groups)))
    best_c, best = GRID[-1], -1.0
    for c in GRID:
        pred = np.empty_like(y_train)
        for tr, va in GroupKFold(n_splits=k).split(x_train, y_train, groups):
            if len(np.unique(y_train[tr])) < 2:
                pred[va] = np.bincount(y_train[tr], minlength=3).argmax()
                continue
            pred[va] = _model(c).fit(x_train[tr], y_train[tr]).predict(x_train[va])
        score = uf1(y_train, pred, 3)
        if score > best:
            best_c, best = c, score
    return _model(best_c).fit(x_train, y_train).predict(x_test), best_c


def loso_scores(truth: pd.DataFrame, features: dict[str, np.ndarray | None]) -> dict:
    """Pooled LOSO summaries (mer.metrics.summarise) per baseline; None features = majority."""
    keys = (truth["dataset"] + "/" + truth["subject"].astype(str)).to_numpy()
    y = truth["label"].to_numpy()
    out = {}
    for name, x in features.items():
        pred = np.empty_like(y)
        chosen = []
        for key in np.unique(keys):
            test, train = keys == key, keys != key
            if x is None or len(np.unique(y[train])) < 2:
                pred[test] = np.bincount(y[train], minlength=3).argmax()
                continue
            pred[test], c = _fit_predict(x[train], y[train], keys[train], x[test])
            chosen.append(c)
        table = truth[["dataset", "subject", "clip", "label"]].assign(pred=pred)
        out[name] = summarise(table, 3)
        if chosen:
            out[name]["c_chosen"] = {str(c): chosen.count(c) for c in GRID}
    return out


def run_preset(preset: str, work: str, options: dict) -> dict:
    root = os.path.join(work, preset)
    load = os.getloadavg()[0]  # the machine is shared: wall times depend on it
    start, cpu = time.perf_counter(), time.process_time()
    summary = generate(root, preset=preset, **options)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    truth = pd.read_csv(os.path.join(root, "ground_truth.csv"), dtype={"subject": str})
    with open(os.path.join(root, "synthetic.json")) as f:
        recorded = json.load(f)
    features = {
        "majority": None,
        "linear": apex_minus_onset(root, truth),
        "oracle": region_energy(truth),
    }
    start = time.perf_counter()
    # One BLAS thread: these small fits ran ~50x slower with BLAS threads fighting other
    # work for the two cores (threadpool_limits limits the BLAS already loaded: sklearn's).
    with threadpool_limits(1):
        scores = loso_scores(truth, features)
    return {
        "settings": recorded,
        "clips": summary["clips"],
        "subjects": summary["subjects_total"],
        "frames": summary["frames_written"],
        "counts": summary["counts"],
        "subjects_lacking_a_class": int(
            (truth.groupby(["dataset", "subject"])["label"].nunique() < 3).sum()
        ),
        "load_average_at_start": round(load, 1),
        "generate_s": round(seconds, 2),
        "generate_cpu_s": round(cpu, 2),
        "generate_ms_per_frame": round(1000 * seconds / summary["frames_written"], 3),
        "generate_cpu_ms_per_frame": round(1000 * cpu / summary["frames_written"], 3),
        "generate_ms_per_clip": round(1000 * seconds / summary["clips"], 1),
        "baselines_s": round(time.perf_counter() - start, 1),
        "baselines": scores,
    }


def _pair(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["simple", "demo", "casme2-like"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=_pair, default=None, help="HxW px (default: the preset's)")
    parser.add_argument("--work", default=None, help="where the sets go (default: a temp dir)")
    parser.add_argument(
        "--json",
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "synthetic_baselines.json"
        ),
    )
    parser.add_argument(
        "--smoke", action="store_true", help="simple preset, 4 subjects x 3 clips, 64x64 (CI)"
    )
    args = parser.parse_args(argv)
    smoke = {}
    if args.smoke:  # checks that the script runs, measures nothing
        args.presets, args.size = ["simple"], (64, 64)
        smoke = {"subjects": 4, "clips_per_subject": 3}
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; expected {list(PRESETS)}")
    options = {"seed": args.seed, **({"size": args.size} if args.size else {}), **smoke}
    results = {}
    with tempfile.TemporaryDirectory(prefix="mer-baselines-") as tmp:
        for preset in args.presets:
            results[preset] = run_preset(preset, args.work or tmp, options)
            r = results[preset]
            print(
                f"{preset:12s} {r['clips']:4d} clips {r['subjects']:3d} subjects  generated in "
                f"{r['generate_s']:6.1f} s, CPU {r['generate_cpu_s']:.1f} s "
                f"({r['generate_ms_per_frame']:.2f} ms/frame)"
            )
            for name, s in r["baselines"].items():
                print(f"    {name:9s} UF1 {s['uf1']:.3f}  UAR {s['uar']:.3f}")
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "numpy": np.__version__,
        },
        "presets": results,
    }
    if os.path.exists(args.json):  # keep presets measured by other invocations
        with open(args.json) as f:
            old = json.load(f)
        report["presets"] = {**old.get("presets", {}), **results}
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
