"""Key frames for a dataset: manifest -> Ray Data -> Parquet shards under <root>/keyframes/.

    python jobs/preprocess.py --config configs/demo.yaml
    python jobs/preprocess.py --config configs/casme2.yaml --set keyframes.concurrency=16
    ray job submit --working-dir . -- python jobs/preprocess.py --config configs/smic.yaml

A second run with the same config does nothing; a changed config rebuilds; a killed run
resumes at its first unfinished chunk.
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    args = cli.parser(__doc__).parse_args()
    cfg = cli.load_config(args)
    from mer.pipeline import ensure_data
    from mer.preprocess import build_keyframes_dataset

    ensure_data(cfg)
    cli.connect_ray(args)
    build_keyframes_dataset(cfg)


if __name__ == "__main__":
    cli.main(main)
