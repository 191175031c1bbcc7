"""Write a synthetic micro-expression dataset (the project's default data) and summarise it.

    python jobs/synth.py runs/demo/data                     # preset simple: CASME II layout, 8 x 6
    python jobs/synth.py runs/demo/data --preset demo       # what `make demo` uses
    python jobs/synth.py runs/c2 --preset casme2-like --label-noise 0.1
    python jobs/synth.py runs/megc --preset megc-like --size 170x140
    python jobs/synth.py runs/demo/smic --layout smic --subjects 16 --clips-per-subject 10
    python jobs/synth.py s3://bucket/mer/data --layout video --size 170x140 --frames 40-80
    python jobs/synth.py runs/x --preset demo --set roll=1.0 --set amplitude=[0.5,2]

Presets: simple | demo | casme2-like | megc-like; the flags and --set KEY=VALUE (any field
of mer.datasets.synthetic.settings.Settings, VALUE in JSON; `data.synthetic.KEY` as in a
config works too) override the preset's. --option KEY=VALUE is the old spelling of --set.
See mer/datasets/synthetic/generator.py for what the clips contain; read them back with
`mer.datasets.load_manifest("synthetic", <out>)` (megc-like: also "megc2019").
"""

import argparse
import json
import sys
import time

import _bootstrap  # noqa: F401  (before mer: the repository, not jobs/, on sys.path)

from mer import cli
from mer.datasets.synthetic.generator import LAYOUTS, PRESETS, generate
from mer.errors import MERError


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
    parser.add_argument("--preset", choices=list(PRESETS), default="simple")
    # Unset flags leave the preset's value.
    parser.add_argument("--subjects", type=int)
    parser.add_argument("--clips-per-subject", type=int)
    parser.add_argument("--clips", type=int, help="total clips (not preset simple)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--layout", choices=LAYOUTS)
    parser.add_argument("--size", type=lambda t: _pair(t, "x", "340x280"), help="HxW px")
    parser.add_argument("--frames", type=lambda t: _pair(t, "-", "40-100"), help="MIN-MAX")
    parser.add_argument("--fps", type=int)
    parser.add_argument("--label-noise", type=float, help="share of clips labelled wrongly")
    option = cli.add_generator_set(parser, "roll=1.0", prefix="data.synthetic.")
    parser.add_argument(
        "--option", type=option, action="append", default=[], help="deprecated: use --set"
    )
    args = parser.parse_args(argv)
    if args.option:
        print("synth.py: --option is deprecated and will go; use --set KEY=VALUE", file=sys.stderr)
    flags = ("subjects", "clips_per_subject", "clips", "seed", "layout", "size", "frames", "fps")
    options = {k: getattr(args, k) for k in (*flags, "label_noise")}
    options = {k: v for k, v in options.items() if v is not None}
    options.update(dict(args.option + args.set))

    start = time.perf_counter()
    try:
        summary = generate(args.out, preset=args.preset, **options)
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
