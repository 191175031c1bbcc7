"""C3D training step on the CPU: NCDHW against the channels-last-3d memory format.

    .venv/bin/python benchmarks/memory_format.py      # table on stdout, figures in benchmarks/memory_format.json

`resources.channels_last` (on by default) trains in channels-last-3d (mer.train.runtime.place).
This measures what it does to one forward + backward + AdamW step of the library's C3D, on
random clips, in one process with one intra-op thread (what a Ray Train worker with one CPU
gets), for the configuration the CPU demo and tests use and for a larger one. Both layouts
run on the same model weights and batches, alternated, best of --rounds passes of --steps
steps each. (On a GPU, benchmarks/gpu_bench.py measures it: 1.4x in bf16.)
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SHAPES = [  # (name, K, S, width, batch)
    ("demo and tests: K=8, S=32, width 0.125, batch 8", 8, 32, 0.125, 8),
    ("larger: K=16, S=112, width 0.25, batch 4", 16, 112, 0.25, 4),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "memory_format.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (CI)")
    args = ap.parse_args()
    shapes = SHAPES
    if args.smoke:  # the small shape, one step: checks that the script runs
        args.rounds, args.steps, shapes = 1, 1, SHAPES[:1]

    import torch

    from mer.train.models import C3D

    torch.set_num_threads(args.threads)
    results = []
    for name, k, s, width, batch in shapes:
        torch.manual_seed(0)
        base = C3D(frames=k, size=s, width=width)
        x = torch.randn(batch, 3, k, s, s)
        best = {}
        for _ in range(args.rounds):
            for channels_last in (False, True):
                model = copy.deepcopy(base)
                xx = x
                if channels_last:
                    model = model.to(memory_format=torch.channels_last_3d)
                    xx = x.contiguous(memory_format=torch.channels_last_3d)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

                def step(model=model, xx=xx, opt=opt):
                    loss = model(xx).float().pow(2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                step()  # warm-up: allocations, kernel selection
                t = time.perf_counter()
                for _ in range(args.steps):
                    step()
                ms = (time.perf_counter() - t) / args.steps * 1000
                best[channels_last] = min(best.get(channels_last, float("inf")), ms)
        row = {
            "shape": name,
            "ncdhw_ms_per_step": round(best[False], 2),
            "channels_last_3d_ms_per_step": round(best[True], 2),
            "speedup": round(best[False] / best[True], 3),
        }
        results.append(row)
        print(
            f"{name}: NCDHW {row['ncdhw_ms_per_step']} ms/step, channels-last-3d "
            f"{row['channels_last_3d_ms_per_step']} ms/step, {row['speedup']}x",
            flush=True,
        )
    out = {
        "command": "python benchmarks/memory_format.py " + " ".join(sys.argv[1:]),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "results": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
