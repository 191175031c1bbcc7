"""Train the learned key-frame interpolator (keyframes.interpolation: adaconv) on Ray Train.

    python jobs/interpolator.py --config configs/demo.yaml --set keyframes.interpolation=adaconv
    python jobs/interpolator.py --config configs/casme2.yaml --set keyframes.interpolation=adaconv \
        --set interpolator.steps=4000 --gpus-per-worker 1

Self-supervised on frame triplets of the dataset's own clips at the key frames' size; no
labels are read (mer/train/interpolate.py). Output: <root>/interpolator/<hash>/model.pt;
jobs/preprocess.py and jobs/pipeline.py with interpolation adaconv use it (the pipeline
trains it first when it is missing).
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = cli.parser(__doc__)
    cli.add_resource_args(p)
    args = p.parse_args()
    cfg = cli.load_config(args)
    from mer.datasets.stage import ensure_data

    ensure_data(cfg)
    cli.connect_ray(args, cfg)
    from mer.train.interpolate import run_interpolator

    print(f"interpolator: {run_interpolator(cfg)}")


if __name__ == "__main__":
    cli.main(main)
