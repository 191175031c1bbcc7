"""Write synthetic long videos for spotting (CAS(ME)^2's or SAMM Long Videos' layout) and
summarise them.

    python jobs/synth_long.py runs/long/casme                        # preset casme_sq-like
    python jobs/synth_long.py runs/long/samm --preset samm_lv-like --set seconds=60
    python jobs/synth_long.py s3://bucket/mer/long --set subjects=8 --set 'micro=[1,5]'

Presets: casme_sq-like (30 fps, colour), samm_lv-like (200 fps, grey), tiny (tests); --set
KEY=VALUE (any field of mer.datasets.synthetic.long_videos.LongSettings, VALUE in JSON)
overrides the preset's. A folder holding a set made under the same settings is read back;
one made under other settings is refused. What the videos hold: docs/spotting-data.md. Read
them back with `mer.datasets.load_long_videos("synthetic_long", <out>)`.
"""

import argparse
import json
import time
from collections import Counter

import _bootstrap  # noqa: F401  (before mer: the repository, not jobs/, on sys.path)

from mer import cli
from mer.datasets.synthetic.long_videos import LONG_PRESETS, generate_long, long_key
from mer.errors import MERError


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="output folder or s3:// URI")
    parser.add_argument("--preset", choices=list(LONG_PRESETS), default="casme_sq-like")
    cli.add_generator_set(parser, "seconds=60")
    args = parser.parse_args(argv)
    options = dict(args.set)
    start = time.perf_counter()
    try:
        found = generate_long(args.out, args.preset, **options)
        key = long_key(args.preset, **options)
    except MERError as e:  # bad options or output folder: one line, no traceback
        parser.exit(2, f"synth_long.py: {e}\n")
    seconds = time.perf_counter() - start
    frames = sum(v.n_frames for v in found.videos)
    summary = {
        "out": args.out,
        "key": key,
        "videos": len(found.videos),
        "frames": frames,
        "hours": round(sum(v.n_frames / v.fps for v in found.videos) / 3600, 4),
        "intervals": dict(Counter(i.type for i in found.intervals)),
        "rejects": len(found.rejects),
    }
    print(json.dumps(summary, indent=2))
    print(f"{len(found.videos)} videos ({frames} frames) in {seconds:.1f} s")
    return summary


if __name__ == "__main__":
    main()
