"""The whole job from one YAML config: data -> key frames -> baselines and prior learning ->
search over seeds -> results.

    python jobs/pipeline.py                                   # configs/demo.yaml, local Ray
    python jobs/pipeline.py --config configs/casme2.yaml --root s3://my-bucket/mer
    ray job submit --working-dir . -- python jobs/pipeline.py --config configs/megc2019.yaml

Finished work is found and skipped (key frames and priors are keyed by their settings); an
experiment name already used under other settings is refused. Ends by printing the
leaderboard: mean +- SD over seeds, 95 % intervals, baselines.
"""

import time

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    args = cli.parser(__doc__).parse_args()
    cfg = cli.load_config(args)
    t0 = time.time()
    cli.connect_ray(args, cfg)
    from mer import layout
    from mer.evaluation import results, results_report
    from mer.pipeline import run_pipeline

    run_pipeline(cfg)
    exp = results.load_experiment(layout.experiment_uri(cfg))
    print()
    print(results_report.format_table(exp))
    print(f"\npipeline finished in {time.time() - t0:.0f} s; outputs under {cfg.root}")
    print(f"query again with: python jobs/results.py {exp.uri}")


if __name__ == "__main__":
    cli.main(main)
