"""Search focal-loss gamma, alpha (beta) and freezing depth over all LOSO folds with Ray Tune.

    python jobs/tune.py --config configs/demo.yaml
    python jobs/tune.py --config configs/megc2019.yaml --set search.experiment=gamma-sweep \
        --set search.algorithm=optuna --set search.num_samples=24 --max-concurrent 8
    python jobs/tune.py --config configs/demo.yaml --set search.protocol=nested

Every configuration runs every fold at every seed of search.seeds, after the baselines and
the priors it needs. Rerunning the same command resumes an interrupted experiment without
redoing finished fold runs; rerunning it under other settings is refused (pick another
search.experiment). Query it (while it runs too) with jobs/results.py.
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--max-concurrent", type=int, help="concurrent configurations (trials)")
    args = p.parse_args()
    extra = (
        [] if args.max_concurrent is None else [f"resources.max_concurrent={args.max_concurrent}"]
    )
    cfg = cli.load_config(args, extra)
    cli.connect_ray(args, cfg)
    from mer.evaluation.stage import run_search_stage

    run_search_stage(cfg)


if __name__ == "__main__":
    cli.main(main)
