"""Prior learning: a siamese C3D per LOSO fold on clip pairs of that fold's training subjects.

    python jobs/pretrain.py --config configs/demo.yaml
    python jobs/pretrain.py --config configs/megc2019.yaml --workers 2 --gpus-per-worker 1
    python jobs/pretrain.py --config configs/demo.yaml --folds synthetic/sub01 synthetic/sub02

Checkpoints per epoch and the final prior weights go to <root>/pretrain/<fold>/.
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = cli.parser(__doc__)
    cli.add_resource_args(p)
    args = p.parse_args()
    cfg = cli.load_config(args)
    cli.apply_resource_args(cfg, args)
    cli.connect_ray(args)
    from mer.pipeline import select_folds
    from mer.preprocess import keyframes_uri
    from mer.train.pretrain import run_pretraining

    kf = keyframes_uri(cfg)
    run_pretraining(cfg, kf, select_folds(kf, args.folds))


if __name__ == "__main__":
    cli.main(main)
