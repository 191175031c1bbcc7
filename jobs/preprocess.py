"""Key frames for a dataset: manifest -> Ray Data -> Parquet parts under <root>/keyframes/.

    python jobs/preprocess.py --config configs/demo.yaml
    python jobs/preprocess.py --config configs/casme2.yaml --set keyframes.concurrency=16
    ray job submit --working-dir . -- python jobs/preprocess.py --config configs/smic.yaml

The table goes to keyframes/<dataset>/<settings hash>/: a second run with the same settings
does nothing, other settings build a new table beside it, a killed run resumes at its first
unfinished chunk. With keyframes.interpolation adaconv the learned interpolator is trained
first where it is missing (jobs/interpolator.py).
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    args = cli.parser(__doc__).parse_args()
    cfg = cli.load_config(args)
    from mer.datasets.stage import ensure_data
    from mer.keyframes.preprocess import build_keyframes_dataset

    ensure_data(cfg)
    cli.connect_ray(args, cfg)
    if cfg.keyframes.interpolation == "adaconv":
        from mer.train.interpolate import run_interpolator

        run_interpolator(cfg)
    build_keyframes_dataset(cfg)


if __name__ == "__main__":
    cli.main(main)
