"""Which settings put adaptive key-frame positions between two frames (issue 31, long-clip).

    .venv/bin/python benchmarks/between_frames.py            # 6 clips per case, own sizes
    .venv/bin/python benchmarks/between_frames.py --clips 2  # a quick look

For each case (a preset with generator options on top, and optionally a denser motion
curve), renders the first clips of the set in memory (generator.render_plan), measures
the motion curve of the grey onset..offset copy and builds the adaptive key frames as the
key-frame stage does (annotated apex, linear interpolation), and counts the key-frame
positions that are not whole frames, for K = 8 (configs/testbed.yaml), 16 and 32. This is
the difficulty card's "between-frame key frames" column without writing a set. The
"full-rate curve" cases measure the motion on every frame instead of every ceil(T / 16)th
(mer.keyframes.motion.MAX_SAMPLES): a what-if, not what the stage does. Writes
benchmarks/between_frames.json (or --json); findings: docs/testbed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from unittest import mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mer.datasets.synthetic.generator import (  # noqa: E402
    Settings,
    plan_clips,
    render_plan,
    settings,
)
from mer.datasets.synthetic.settings import CLEAN_NUISANCES  # noqa: E402
from mer.keyframes import motion  # noqa: E402
from mer.keyframes.align import reduce_gray  # noqa: E402
from mer.keyframes.construction import build_keyframes  # noqa: E402

KS = (8, 16, 32)
_DEFAULT = {f.name: f.default for f in fields(Settings)}
# long-clip as it was before issue 31's fix: 200 fps, the generator's default nuisances.
OLD = {
    "fps": 200,
    "frames": (160, 240),
    "movement": (20, 40),
    "annotation_jitter": 4,
    **{k: _DEFAULT[k] for k in CLEAN_NUISANCES},
}
# The same with dynamics' clean nuisances: the movement is what the motion curve sees.
OLD_CLEAN = {**OLD, **CLEAN_NUISANCES}
# (name, preset, options, full-rate motion curve)
CASES = (
    ("casme2-like", "casme2-like", {}, False),
    ("long-clip before: 20-40 in 160-240 frames at 200 fps", "long-clip", OLD, False),
    ("long-clip before, full-rate curve", "long-clip", OLD, True),
    ("long-clip before, clean nuisances", "long-clip", OLD_CLEAN, False),
    ("long-clip before, clean nuisances, full-rate curve", "long-clip", OLD_CLEAN, True),
    (
        "long-clip before, default nuisances, 8-12 in 40-60 frames",
        "long-clip",
        {**OLD, "frames": (40, 60), "movement": (8, 12), "annotation_jitter": 2},
        False,
    ),
    ("long-clip now: 8-12 in 40-60 frames at 60 fps, clean", "long-clip", {}, False),
    (
        "short clips: 12-16 frames at 25 fps, movement = annotated interval",
        "long-clip",
        {"fps": 25, "frames": (12, 16), "movement": (0, 0), "annotation_jitter": 0},
        False,
    ),
)


def between(preset: str, options: dict, clips: int, full_rate: bool) -> dict:
    """Between-frame positions / all positions per K over the set's first `clips` clips."""
    s = settings(preset, seed=0, **options)
    counts = {k: [0, 0] for k in KS}
    samples = 10**6 if full_rate else motion.MAX_SAMPLES
    with mock.patch.object(motion, "MAX_SAMPLES", samples):
        for plan in plan_clips(resolved=s)[:clips]:
            frames = render_plan(s, plan)[plan.onset : plan.offset + 1]
            curve = motion.measure_motion(reduce_gray(frames)[0], 0).curve
            apex = plan.apex - plan.onset
            for k in KS:
                idx = build_keyframes(frames, 0, apex, len(frames) - 1, k=k, size=16, motion=curve)
                counts[k][0] += int((np.abs(idx.indices - np.round(idx.indices)) > 1e-6).sum())
                counts[k][1] += k
    return {f"K={k}": f"{a}/{b}" for k, (a, b) in counts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "between_frames.json"))
    p.add_argument(
        "--smoke", action="store_true", help="one clip of two cases (CI: the script runs)"
    )
    args = p.parse_args()
    cases = CASES
    if args.smoke:
        args.clips, cases = 1, (CASES[0], CASES[-2])
    rows = []
    for name, preset, options, full_rate in cases:
        row = {"case": name, **between(preset, options, args.clips, full_rate)}
        print(row, flush=True)
        rows.append(row)
    with open(args.json, "w") as f:
        json.dump({"clips": args.clips, "generator_seed": 0, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
