"""Target learning for one configuration: new head, freeze(d), focal loss; predict held-out subjects.

    python jobs/finetune.py --config configs/demo.yaml
    python jobs/finetune.py --config configs/demo.yaml --set finetune.gamma=1 --name gamma1 \
        --folds synthetic/sub03
    python jobs/finetune.py --config configs/demo.yaml --name scratch --set pretrain.enabled=false

Starts from each fold's prior-learning weights at pretrain.seed (jobs/pretrain.py with the
same config first). Per-clip predictions go to <root>/finetune/<name>/seed-<s>/<fold>.parquet
and the pooled UF1/UAR is printed. A name already used under other settings is refused.
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--name", default="finetune", help="output folder under <root>/finetune/")
    cli.add_resource_args(p)
    args = p.parse_args()
    cfg = cli.load_config(args)
    cli.connect_ray(args, cfg)
    from mer import layout
    from mer.config import NUM_CLASSES
    from mer.evaluation.stage import print_scores
    from mer.keyframes.table import load_table, outer_runs, prior_groups_of, select_folds
    from mer.train.finetune import run_finetune

    kf = layout.keyframes_uri(cfg)
    table = load_table(kf)
    runs = outer_runs(
        select_folds(table, args.folds), prior_groups_of(table, cfg.pretrain.prior_groups)
    )
    preds = run_finetune(cfg, kf, runs, args.name)
    print_scores(
        preds,
        f"finetune '{args.name}' seed {cfg.finetune.seed} (fixed budget, no held-out selection)",
        NUM_CLASSES[cfg.data.protocol],
    )


if __name__ == "__main__":
    cli.main(main)
