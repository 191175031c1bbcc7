"""The whole job from one YAML config: data -> key frames -> prior learning -> search -> results.

    python jobs/pipeline.py                                   # configs/demo.yaml, local Ray
    python jobs/pipeline.py --config configs/casme2.yaml --root s3://my-bucket/mer
    ray job submit --working-dir . -- python jobs/pipeline.py --config configs/megc2019.yaml

Stages whose outputs exist with the same config hash are skipped; the resolved config is
written beside every stage's outputs. Ends by printing the leaderboard.
"""

import time

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    args = cli.parser(__doc__).parse_args()
    cfg = cli.load_config(args)
    t0 = time.time()
    cli.connect_ray(args)
    from mer import results
    from mer.pipeline import run_pipeline

    summary = run_pipeline(cfg)
    exp = results.load_experiment(results.resolve(cfg.search.experiment, cfg.root))
    print()
    print(results.format_table(exp))
    print(f"\npipeline finished in {time.time() - t0:.0f} s; outputs under {cfg.root}")
    print(f"query again with: python jobs/results.py {summary['uri']}")


if __name__ == "__main__":
    cli.main(main)
