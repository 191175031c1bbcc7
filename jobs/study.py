"""The paper's claims as an ablation study: every variant on the same folds and seeds, one table.

    python jobs/study.py --config configs/study.yaml
    python jobs/study.py --config configs/study.yaml --variants full scratch   # just these
    python jobs/study.py --config configs/study.yaml --report                  # table only
    python jobs/study.py --config configs/study-registered.yaml --register     # before runs
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

A study that declares `comparisons` is registered before anything runs: --register writes
<root>/study/<name>/registration.json (the content's hash, the date, the code version), and
every later run or report refuses a config that differs from it, except for variants and
comparisons added with `exploratory: true`, shown as exploratory on every row (docs/study.md).
Rows made by different code, platforms or thread counts are refused together unless
--allow-mixed, which names them in the table.
"""

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--variants", nargs="*", help="run only these variants (default: all)")
    p.add_argument("--report", action="store_true", help="write the table from what has run")
    p.add_argument(
        "--register",
        action="store_true",
        help="write the study's registration (before anything runs) and stop",
    )
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="combine rows made by different code, platforms or thread counts (named)",
    )
    args = p.parse_args()

    from mer.evaluation import study as study_mod
    from mer.evaluation.study_registration import register, registration_uri
    from mer.evaluation.study_report import markdown
    from mer.evaluation.study_run import run_study, write_study
    from mer.pipeline import run_experiment

    overrides = list(args.set) + ([f"root={args.root}"] if args.root else [])
    cfg, study = study_mod.load_study(args.config, overrides)
    cli.settle(cfg, args.config)
    if args.register:
        reg = register(cfg, study)
        print(
            f"study {study.name} registered {reg['registered']} (hash {reg['hash']}, code "
            f"{reg['code']['commit'] or reg['code']['code']}): "
            f"{registration_uri(cfg, study)}"
        )
        return
    if args.report:
        table = write_study(cfg, study, allow_mixed=args.allow_mixed)
    else:
        cli.connect_ray(args, cfg)
        table = run_study(
            cfg,
            study,
            run_experiment=run_experiment,
            only=args.variants,
            allow_mixed=args.allow_mixed,
        )
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
