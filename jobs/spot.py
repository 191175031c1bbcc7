"""Spot micro- and macro-expressions in long videos: windows on Ray Data, three spotters on
the same leave-one-subject-out folds, intervals and (with ground truth) the MEGC metric.

    python jobs/spot.py --config configs/spotting.yaml
    python jobs/spot.py --set spotting.dataset=samm_lv --set spotting.root=s3://B/SAMM_LV
    python jobs/spot.py --set spotting.spotters=[motion,mdmd] --set spotting.concurrency=8

Output under <root>/spotting/<dataset>/<settings hash>/: intervals.csv and intervals.parquet
(one row per interval: video, onset, offset, score, type, spotter, subject, threshold),
thresholds.json (each fold's and the final one), metric.json (where the set has ground
truth). Features are kept per video under <root>/spotting/<dataset>/features/<hash>/; a
rerun with the same settings reads everything back (docs/spotting.md).
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    args = cli.parser(__doc__).parse_args()
    cfg = cli.load_config(args)
    from mer import layout
    from mer.datasets.stage import ray_map
    from mer.spotting.run import load_set, run_spotting, summary_lines

    root = layout.long_data_root(cfg)  # a real dataset without a root fails before Ray starts
    cli.connect_ray(args, cfg)
    vset = load_set(cfg, mapper=ray_map(root))
    run = run_spotting(cfg, vset)
    for line in summary_lines(run):
        print(line)


if __name__ == "__main__":
    cli.main(main)
