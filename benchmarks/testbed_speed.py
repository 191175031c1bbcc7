"""Speed of the test bed: the generator per preset and the field's baselines per clip.

    .venv/bin/python benchmarks/testbed_speed.py --smoke     # 2 subjects, 64 x 64: seconds
    .venv/bin/python benchmarks/testbed_speed.py              # the presets' own sizes

For each preset, generates the set (mer.datasets.synthetic.generator.generate, in this process) and
reports ms per frame written; then, on random key frames of the study's shape (K = 8,
S = 32), the cost per clip of the lbp-top features, of the onset-apex flow inputs, of
fitting the flow-cnn on 200 clips (one fold, its fixed epoch budget) and, as the reference
measured in the same run, of the linear baseline's apex - onset features. Wall times on a
shared machine depend on its load (recorded). Writes benchmarks/testbed_speed.json (or
--json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mer.datasets.synthetic.generator import generate  # noqa: E402
from mer.evaluation import field_baselines  # noqa: E402

TESTBED = ("dynamics", "scarce", "plentiful", "imbalanced", "balanced", "long-clip", "realistic")


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def generator(presets, smoke: bool, work: str) -> dict:
    out = {}
    for preset in presets:
        options = {"seed": 0}
        if smoke:
            options.update(subjects=2, size=(64, 64))
            if preset in ("imbalanced", "balanced", "realistic"):
                options["clips"] = 12
        summary, seconds = _timed(
            lambda p=preset, o=options: generate(os.path.join(work, p), preset=p, **o)
        )
        out[preset] = {
            "clips": summary["clips"],
            "frames": summary["frames_written"],
            "seconds": round(seconds, 2),
            "ms_per_frame": round(1000 * seconds / summary["frames_written"], 3),
        }
        print(
            f"{preset:11s} {summary['clips']:4d} clips {out[preset]['ms_per_frame']:.2f} ms/frame"
        )
    return out


def baselines_speed(n: int) -> dict:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, 8, 32, 32, 3), dtype=np.uint8)
    apex = rng.integers(1, 8, n)
    y = np.arange(n) % 3
    grey = frames.astype(np.float32).mean(-1)
    _, linear_s = _timed(lambda: grey[np.arange(n), apex] - grey[:, 0])
    lbp, lbp_s = _timed(field_baselines.lbp_top_features, frames)
    flow, flow_s = _timed(field_baselines.flow_inputs, frames, apex)
    _, fit_s = _timed(field_baselines.train_flow_cnn, flow, y, flow[:10], 3, 0)
    out = {
        "clips": n,
        "linear_features_ms_per_clip": round(1000 * linear_s / n, 3),
        "lbp_top_features_ms_per_clip": round(1000 * lbp_s / n, 2),
        "lbp_top_dims": int(lbp.shape[1]),
        "flow_inputs_ms_per_clip": round(1000 * flow_s / n, 2),
        "flow_cnn_fit_s": round(fit_s, 2),
    }
    print(json.dumps(out))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a quick check")
    parser.add_argument("--presets", nargs="+", default=list(TESTBED))
    parser.add_argument(
        "--json",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "testbed_speed.json"),
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mer-testbed-") as work:
        report = {
            "smoke": args.smoke,
            "load_average_at_start": round(load, 1),
            "cpus": os.cpu_count(),
            "generator": generator(args.presets, args.smoke, work),
            "baselines": baselines_speed(30 if args.smoke else 200),
        }
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
