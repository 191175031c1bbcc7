"""Write a synthetic micro-expression dataset (the project's default data) and summarise it.

    python jobs/synth.py runs/demo/data                     # CASME II layout, 8 x 6 clips
    python jobs/synth.py runs/demo/smic --layout smic --subjects 16 --clips-per-subject 10
    python jobs/synth.py s3://bucket/mer/data --layout video --size 170x140 --frames 40-80

See mer/datasets/synthetic.py for what the clips contain; read them back with
`mer.datasets.load_manifest("synthetic", <out>)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mer.datasets.synthetic import LAYOUTS, generate  # noqa: E402
from mer.errors import MERError  # noqa: E402


def _pair(text: str, sep: str, example: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().split(sep))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected two integers like {example}"
        ) from None
    return a, b


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="output folder or s3:// URI")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--clips-per-subject", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=LAYOUTS, default="casme2")
    parser.add_argument(
        "--size", type=lambda t: _pair(t, "x", "340x280"), default=(340, 280), help="HxW px"
    )
    parser.add_argument(
        "--frames", type=lambda t: _pair(t, "-", "40-100"), default=(40, 100), help="MIN-MAX"
    )
    parser.add_argument("--fps", type=int, default=200)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        summary = generate(
            args.out,
            subjects=args.subjects,
            clips_per_subject=args.clips_per_subject,
            seed=args.seed,
            layout=args.layout,
            size=args.size,
            frames=args.frames,
            fps=args.fps,
        )
    except MERError as e:  # bad arguments or output folder: one line, no traceback
        parser.exit(2, f"synth.py: {e}\n")
    seconds = time.perf_counter() - start
    print(json.dumps(summary, indent=2))
    print(
        f"{summary['clips']} clips ({summary['frames_written']} frames) in {seconds:.1f} s: "
        f"{summary['clips'] / seconds:.1f} clips/s, {summary['frames_written'] / seconds:.0f} "
        "frames/s"
    )
    return summary


if __name__ == "__main__":
    main()
