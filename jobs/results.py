"""Query a search experiment: leaderboard, paired comparisons, per-fold detail, plots.

    python jobs/results.py runs/demo/tune/demo
    python jobs/results.py demo --root runs/demo --format json
    python jobs/results.py runs/demo/tune/demo --compare 3f2a9c01de linear    # A vs B, paired
    python jobs/results.py runs/demo/tune/demo --compare 3f2a9c01de other-exp:7b1e0c2a4d
    python jobs/results.py runs/demo/tune/demo --top
    python jobs/results.py runs/demo/tune/demo --trial 3f2a9c01de      # per fold and seed
    python jobs/results.py runs/demo/tune/demo --plots out/plots
    python jobs/results.py runs/demo/tune/demo --report out/demo     # report.html and the rest
    python jobs/results.py runs/demo/tune/demo --mlflow http://127.0.0.1:5000

Works while the experiment runs (partial rows are listed apart) and after. Scores are the
mean +- SD over seeds of the pooled LOSO score with a 95 % subject-level bootstrap interval;
the baselines (majority, linear) are rows of every leaderboard. --compare takes two entries:
a configuration id or baseline name of this experiment, or EXPERIMENT:ID for an experiment
run on the same folds and seeds. Every output names its protocol: the search score picks
hyperparameters on the folds it reports (optimistic); nested experiments also show the
honest nested-loso estimate.
A leaderboard or comparison of entries made by different code, platforms or thread counts
(mer/provenance.py) is refused unless --allow-mixed, which names them.
"""

import argparse
import json
import sys

import _bootstrap  # noqa: F401

from mer import cli


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("experiment", help="experiment URI, or a name with --root")
    p.add_argument("--root", help="run root holding tune/<experiment>")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--top", action="store_true", help="the top configuration and its ties")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="paired comparison A - B")
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="combine entries made by different code, platforms or thread counts (named)",
    )
    p.add_argument("--trial", metavar="CONFIG_ID", help="per-fold detail of one configuration")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots to DIR (local or s3://)")
    p.add_argument(
        "--report",
        metavar="DIR",
        help="write report.html (one self-contained page), leaderboard.json/.csv and plots/ "
        "to DIR (local or s3://), as the pipeline does under <root>/results/<experiment>",
    )
    p.add_argument(
        "--mlflow",
        metavar="URI",
        help="log the experiment to this MLflow tracking server (a parent run, one child run "
        "per configuration; needs requirements-mlflow.txt)",
    )
    args = p.parse_args()

    from mer.evaluation import results, results_report

    exp = results.load_experiment(results.resolve(args.experiment, args.root))
    if args.plots:
        for uri in results_report.plots(exp, args.plots):
            print(f"wrote {uri}", file=sys.stderr)
    if args.report:
        written = results_report.write_report(exp, args.report)
        print(f"wrote {written['report']}", file=sys.stderr)
    if args.mlflow:
        from mer.evaluation.tracking import log_experiment

        run_id = log_experiment(args.mlflow, exp, args.report)
        print(f"logged to MLflow at {args.mlflow} (parent run {run_id})", file=sys.stderr)
    if args.compare:
        (exp_a, a), (exp_b, b) = (entry(exp, name, args.root) for name in args.compare)
        c = results.compare(exp_a, a, exp_b, b, allow_mixed=args.allow_mixed)
        print(json.dumps(c, indent=2) if args.format == "json" else results.format_compare(c))
        return
    if not args.trial:  # a leaderboard combines its entries: the same code, platform, threads
        mixed = results.check_provenance(exp, args.allow_mixed)
        if mixed:
            print(
                "made by different code, platforms or thread counts: " + "; ".join(mixed),
                file=sys.stderr,
            )
    if args.trial:
        detail = results.fold_detail(exp, args.trial)
        header = {"config_id": args.trial, "params": exp.params[args.trial], "folds": None}
        emit(detail, args.format, {**header, "protocol": "loso-search"})
        return
    if args.top:
        s = results.summary(exp)
        if "top" not in s:
            print("no configuration has finished every fold at every seed yet", file=sys.stderr)
            sys.exit(1)
        row = next(r for r in s["leaderboard"] if r["config_id"] == s["top"]["config_id"])
        top = {**s["top"], **row, "protocol": "loso-search", "note": results.SEARCH_NOTE}
        if args.format == "json":
            print(json.dumps(top, indent=2, default=str))
        else:
            print(f"top configuration {top['config_id']} {top['params']} ({results.SEARCH_NOTE})")
            print(
                f"UF1 {results_report.interval_text(top, 'uf1')}  UAR {results_report.interval_text(top, 'uar')}"
            )
            print(f"tied with it (intervals overlap): {', '.join(top['tied']) or 'none'}")
        return
    if args.format == "table":
        print(results_report.format_table(exp))
    elif args.format == "json":
        print(json.dumps(results.summary(exp), indent=2, default=str))
    else:
        print(results.leaderboard(exp).to_csv(index=False), end="")


def entry(exp, name: str, root: str | None):
    """(experiment, entry id) of a --compare argument: ID, or EXPERIMENT:ID."""
    from mer.evaluation import results

    if ":" in name and not name.startswith("s3:"):
        other, _, eid = name.rpartition(":")
        return results.load_experiment(results.resolve(other, root)), eid
    if name.startswith("s3://") and name.count(":") > 1:
        other, _, eid = name.rpartition(":")
        return results.load_experiment(other), eid
    return exp, name


def emit(df, fmt, header) -> None:
    if fmt == "json":
        print(json.dumps({**header, "folds": df.to_dict("records")}, indent=2, default=str))
    elif fmt == "csv":
        print(df.to_csv(index=False), end="")
    else:
        print(f"configuration {header['config_id']} {header['params']} (per fold run and seed)")
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    cli.main(main)
