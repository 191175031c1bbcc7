"""What the linear baseline's advantage is made of: logistic regressions on other readings of
the same key frames, on the development set's groups (benchmarks/method_dev.py's protocol).

    .venv/bin/python benchmarks/linear_probes.py --keyframes runs/study/keyframes/synthetic/<dev hash>

The linear baseline (mer.evaluation.baselines) reads ONE difference image per clip, the key frame
nearest the annotated apex minus the onset key frame. The network reads all K key frames
minus the onset and must find the apex itself. Each probe below is the baseline's regression
(standardised, class-balanced, C by grouped CV over the training subjects only) on another
feature set, pooled UF1/UAR over the same subject groups:
  - apex-onset at 32, 16 and 8 px (the baseline is the 32 px one);
  - apex-1..apex+1 and apex-2..apex+2: the deltas of the key frames around the apex (16 px);
  - all deltas: every key frame minus the onset (16 px), what the network is given;
  - max-motion: the key frame that differs most from the onset (no annotation used).
Appends one JSON line per table to benchmarks/linear_probes.jsonl (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from method_dev import group_runs  # noqa: E402

from mer.evaluation import baselines  # noqa: E402
from mer.keyframes.table import load_table  # noqa: E402
from mer.metrics import summarise  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def pool(x: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks of the last two axes."""
    s = x.shape[-1]
    return x.reshape(*x.shape[:-2], s // f, f, s // f, f).mean((-3, -1))


def features(table) -> dict[str, np.ndarray]:
    grey = table.frames.astype(np.float32).mean(-1)  # N, K, S, S
    n, k, s = grey.shape[:3]
    idx = np.stack([np.asarray(v, np.float64) for v in table.clips["keyframe_indices"]])
    apex = np.abs(idx - table.clips["apex"].to_numpy()[:, None]).argmin(1)
    delta = grey - grey[:, :1]
    half = pool(delta, max(1, s // 16))  # N, K, 16, 16

    def around(offsets):
        cols = [half[np.arange(n), np.clip(apex + o, 0, k - 1)].reshape(n, -1) for o in offsets]
        return np.concatenate(cols, 1)

    moved = np.abs(delta).sum((2, 3)).argmax(1)
    return {
        "apex-onset 32 px (the baseline)": baselines.apex_minus_onset(table, 32),
        "apex-onset 16 px": baselines.apex_minus_onset(table, 16),
        "apex-onset 8 px": baselines.apex_minus_onset(table, 8),
        "apex-1..apex+1, 16 px": around([-1, 0, 1]),
        "apex-2..apex+2, 16 px": around([-2, -1, 0, 1, 2]),
        "all deltas, 16 px (the network's input)": half[:, 1:].reshape(n, -1),
        "max-motion key frame - onset, 32 px": delta[np.arange(n), moved].reshape(n, -1),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keyframes", required=True, help="the development set's key-frame table")
    p.add_argument("--folds", type=int, default=5, help="subject groups")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(HERE, "linear_probes.jsonl"))
    p.add_argument("--smoke", action="store_true", help="2 groups: runs in seconds (CI)")
    args = p.parse_args(argv)
    if args.smoke:  # checks that the script runs on a small table, measures nothing
        args.folds = 2
    table = load_table(os.path.abspath(args.keyframes))
    runs = group_runs(table, args.folds, args.split_seed)
    out = {
        "keyframes": args.keyframes,
        "method": table.meta.get("settings", {}).get("keyframes.method"),
        "folds": args.folds,
        "probes": {},
    }
    for name, x in features(table).items():
        preds = pd.concat([baselines.predict_run("linear", table, x, r, 3) for r in runs])
        s = summarise(preds, 3)
        out["probes"][name] = {"uf1": s["uf1"], "uar": s["uar"], "dims": int(x.shape[1])}
        print(
            f"{name:42s} {x.shape[1]:5d} dims  UF1 {s['uf1']:.3f}  UAR {s['uar']:.3f}", flush=True
        )
    with open(args.out, "a") as f:
        f.write(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    main()
