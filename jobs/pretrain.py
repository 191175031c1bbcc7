"""Prior learning: a siamese C3D per LOSO fold on clip pairs of that fold's training subjects.

    python jobs/pretrain.py --config configs/demo.yaml
    python jobs/pretrain.py --config configs/megc2019.yaml --workers 2 --gpus-per-worker 1
    python jobs/pretrain.py --config configs/demo.yaml --folds synthetic/sub01 synthetic/sub02

One prior per fold at pretrain.seed; checkpoints per epoch and the final prior weights go to
<root>/pretrain/<settings hash>/<fold>/ (jobs/preprocess.py must have run with the same
config).
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = cli.parser(__doc__)
    cli.add_resource_args(p)
    args = p.parse_args()
    cfg = cli.load_config(args)
    cli.connect_ray(args, cfg)
    from mer import layout
    from mer.keyframes.table import load_table, outer_runs, prior_groups_of, select_folds
    from mer.train.pretrain import run_pretraining

    kf = layout.keyframes_uri(cfg)
    table = load_table(kf)
    groups = prior_groups_of(table, cfg.pretrain.prior_groups)
    run_pretraining(cfg, kf, outer_runs(select_folds(table, args.folds), groups))


if __name__ == "__main__":
    cli.main(main)
