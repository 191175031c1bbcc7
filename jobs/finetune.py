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
    p.add_argument("--folds", nargs="*", help="fold keys (dataset/subject); default all")
    p.add_argument("--workers", type=int)
    p.add_argument("--gpus-per-worker", type=float)
    p.add_argument("--cpus-per-worker", type=float)
    args = p.parse_args()
    cfg = cli.load_config(args)
    for name in ("workers", "gpus_per_worker", "cpus_per_worker"):
        if getattr(args, name) is not None:
            setattr(cfg.resources, name, getattr(args, name))
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
