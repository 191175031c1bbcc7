"""The paper's claims as an ablation study: every variant on the same folds and seeds, one table.

    python jobs/study.py --config configs/study.yaml
    python jobs/study.py --config configs/study.yaml --variants full scratch   # just these
    python jobs/study.py --config configs/study.yaml --report                  # table only
    ray job submit --working-dir . -- python jobs/study.py --config configs/study.yaml \
        --root s3://my-bucket/mer/study

Each variant (the full method, then every `study.variants` entry of the config) runs as its
own experiment `<study>-<variant>` through the pipeline's stages: data, the learned
interpolator when a variant uses it, its key-frame table, baselines, priors and target
learning at every seed of search.seeds. Rerunning resumes (finished fold runs are kept); a
changed base config under the same study name is refused. The table (mean +- SD over seeds,
95 % interval, paired difference to the full method with its interval and p-value) goes to
<root>/study/<name>/study.{json,csv,md} with a plot, study_uf1.png, and a page that
holds them all, report.html; it is printed.
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--variants", nargs="*", help="run only these variants (default: all)")
    p.add_argument("--report", action="store_true", help="write the table from what has run")
    args = p.parse_args()

    from mer.evaluation import study as study_mod
    from mer.evaluation.study_report import markdown
    from mer.pipeline import run_experiment

    overrides = list(args.set) + ([f"root={args.root}"] if args.root else [])
    cfg, study = study_mod.load_study(args.config, overrides)
    cli.settle(cfg, args.config)
    if args.report:
        table = study_mod.write_study(cfg, study)
    else:
        cli.connect_ray(args, cfg)
        table = study_mod.run_study(cfg, study, run_experiment=run_experiment, only=args.variants)
    if cfg.tracking.mlflow_uri:
        from mer import storage
        from mer.evaluation.tracking import log_study

        names = ("study.json", "study.csv", "study.md", "study_uf1.png", "report.html")
        files = {n: storage.read_bytes(storage.join(table["uri"], n)) for n in names}
        run_id = log_study(cfg.tracking.mlflow_uri, table, files)
        print(f"[study] logged to MLflow at {cfg.tracking.mlflow_uri} (parent run {run_id})")
    print()
    print(markdown(table))


if __name__ == "__main__":
    cli.main(main)
