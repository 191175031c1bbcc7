"""Target learning for one configuration: new head, freeze(d), focal loss; predict held-out subjects.

    python jobs/finetune.py --config configs/demo.yaml
    python jobs/finetune.py --config configs/demo.yaml --set finetune.gamma=1 --folds synthetic/sub03
    python jobs/finetune.py --config configs/demo.yaml --name scratch --set pretrain.enabled=false

Starts from each fold's prior-learning weights (run jobs/pretrain.py first). Per-clip
predictions go to <root>/finetune/<name>/folds/<fold>.parquet; the pooled UF1/UAR is printed.
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--name", default="finetune", help="output folder under <root>/finetune/")
    cli.add_resource_args(p)
    args = p.parse_args()
    cfg = cli.load_config(args)
    cli.apply_resource_args(cfg, args)
    cli.connect_ray(args)
    from mer import storage
    from mer.pipeline import print_scores, select_folds
    from mer.preprocess import keyframes_uri
    from mer.train.finetune import outer_runs, run_finetune

    kf = keyframes_uri(cfg)
    folds = select_folds(kf, args.folds)
    out = storage.join(cfg.root, "finetune", args.name)
    preds = run_finetune(cfg, kf, outer_runs(folds, cfg), out, name=args.name)
    print_scores(preds, f"finetune '{args.name}' (fixed budget, no held-out selection)")


if __name__ == "__main__":
    cli.main(main)
