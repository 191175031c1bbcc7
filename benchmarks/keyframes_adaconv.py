"""Key-frame stage throughput with each interpolation: linear blend, flow warp, the learned
interpolator (adaconv) on the CPU and, where there is one, on a CUDA GPU.

    .venv/bin/python benchmarks/keyframes_adaconv.py   # table on stdout, keyframes_adaconv.json

Data: configs/study-short.yaml's clips (the synthetic simple preset, 8 subjects x 6 clips of
12-20 frames; K = 16, S = 32), where about half of the key-frame positions fall between two
frames, so the interpolation is on the stage's path for every clip. Each variant builds the
whole table with `build_keyframes_dataset(use_ray=False)` in this process (one chunk after
another, OpenCV and torch on one thread, as one Ray Data actor does), timed from call to
return; best of --rounds passes, passes interleaved so the machine's drift falls on all.
The interpolator is an untrained one of the default config saved where the stage looks for
it: its speed does not depend on its weights (its frames do; those are studied in
benchmarks/README.md, "Key-frame interpolation").
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "keyframes_adaconv.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (CI)")
    args = ap.parse_args()
    data = []
    if args.smoke:  # 2 clips, one round: checks that the script runs, measures nothing
        args.rounds = 1
        data = ["data.synthetic.subjects=2", "data.synthetic.clips_per_subject=1"]

    import numpy as np
    import torch

    from mer import layout
    from mer.datasets.synthetic.generator import generate
    from mer.evaluation.study import load_study
    from mer.keyframes.interpolator import Interpolator, InterpolatorConfig
    from mer.keyframes.preprocess import build_keyframes_dataset
    from mer.keyframes.table import load_table

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="mer-kf-adaconv-"))
    base, _ = load_study(str(HERE.parent / "configs" / "study-short.yaml"), [f"root={work}", *data])
    clips = generate(layout.data_root(base), **base.data.synthetic)["clips"]
    variants = {"linear": [], "flow": [], "adaconv-cpu": ["keyframes.interpolation=adaconv"]}
    if torch.cuda.is_available():
        variants["adaconv-cuda"] = ["keyframes.interpolation=adaconv", "keyframes.gpus=1"]
    best: dict[str, float] = {}
    fractional = None
    for _ in range(args.rounds):
        for name, extra in variants.items():
            if name == "flow":
                extra = ["keyframes.interpolation=flow"]
            cfg, _ = load_study(
                str(HERE.parent / "configs" / "study-short.yaml"), [f"root={work}", *data, *extra]
            )
            if cfg.keyframes.interpolation == "adaconv":
                size = cfg.keyframes.size
                Interpolator(InterpolatorConfig(image_size=size, channels=3)).save(
                    layout.interpolator_file(cfg)
                )
            out = layout.keyframes_uri(cfg)
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            build_keyframes_dataset(cfg, use_ray=False, progress=lambda m: None)
            seconds = time.perf_counter() - t0
            best[name] = min(best.get(name, float("inf")), seconds)
            if fractional is None:
                idx = np.stack(load_table(out).clips["keyframe_indices"].to_numpy())
                fractional = float(np.mean(np.abs(idx - np.round(idx)) > 1e-6))
    rows = [
        {
            "variant": name,
            "seconds": round(s, 2),
            "clips_per_s": round(clips / s, 2),
            "vs_linear": round(best["linear"] / s, 3),
        }
        for name, s in best.items()
    ]
    result = {
        "command": "python benchmarks/keyframes_adaconv.py",
        "machine": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "clips": clips,
        "k": base.keyframes.k,
        "size": base.keyframes.size,
        "fractional_share": round(fractional or 0.0, 3),
        "rounds": args.rounds,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"{'variant':<14}{'s':>8}{'clips/s':>10}{'vs linear':>11}")
    for r in rows:
        print(f"{r['variant']:<14}{r['seconds']:>8}{r['clips_per_s']:>10}{r['vs_linear']:>11}")


if __name__ == "__main__":
    main()
