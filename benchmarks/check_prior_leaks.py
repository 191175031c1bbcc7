"""Check from storage that no prior saw its fold's test subjects, for a run root made by the
pipeline (per-fold or shared priors, outer and inner fold runs).

    python benchmarks/check_prior_leaks.py --config configs/demo.yaml [--set k=v ...] [--root R]

Plans the fold runs of the config as the search does (mer.evaluation.search.fold_runs: LOSO, or nested
with its inner runs; the subject groups of `pretrain.prior_groups`), then reads every prior's
`_done.json` under the root (the training subjects it was learnt on) at every seed of
`search.seeds` and prints one line per run whose prior holds one of the run's held-out
subjects (for an inner run also its outer fold's test subject), or is missing. Exit 0 when
there is none, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides (key=value)")
    ap.add_argument("--root", help="the run root (default: the config's)")
    args = ap.parse_args(argv)

    from mer import config, layout
    from mer.evaluation.search import fold_runs
    from mer.keyframes.table import fold_specs, load_table
    from mer.train.pretrain import prior_leaks

    cfg = config.load(args.config, [*args.set, *([f"root={args.root}"] if args.root else [])])
    table = load_table(layout.keyframes_uri(cfg))
    runs = fold_runs(cfg, table, fold_specs(table))
    seeds = list(cfg.search.seeds)
    problems = prior_leaks(cfg, runs, seeds)
    priors = {r.prior for r in runs}
    for line in problems:
        print(line)
    print(
        f"{len(runs)} fold runs ({sum(r.kind == 'inner' for r in runs)} inner), "
        f"{len(priors)} priors per seed, seeds {seeds}: "
        + ("no prior saw its fold's test subjects" if not problems else f"{len(problems)} problems")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
