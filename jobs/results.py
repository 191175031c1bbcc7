"""Query a search experiment: leaderboard, best configuration, per-fold detail, plots.

    python jobs/results.py runs/demo/tune/demo
    python jobs/results.py demo --root runs/demo --format json
    python jobs/results.py s3://bucket/mer/tune/gamma-sweep --best
    python jobs/results.py runs/demo/tune/demo --trial 3f2a9c01de      # per-fold detail
    python jobs/results.py runs/demo/tune/demo --plots out/plots

Works while the experiment runs (partial rows are marked) and after. Every output names its
protocol: the search score picks hyperparameters on the folds it reports (optimistic);
experiments run with search.protocol=nested also show the honest nested-loso estimate.
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
    p.add_argument("--best", action="store_true", help="only the best configuration")
    p.add_argument("--trial", metavar="CONFIG_ID", help="per-fold detail of one configuration")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots to DIR (local or s3://)")
    args = p.parse_args()

    from mer import results

    exp = results.load_experiment(results.resolve(args.experiment, args.root))
    if args.plots:
        for uri in results.plots(exp, args.plots):
            print(f"wrote {uri}", file=sys.stderr)
    if args.trial:
        detail = results.fold_detail(exp, args.trial)
        emit(
            detail,
            args.format,
            {
                "config_id": args.trial,
                "params": exp.params[args.trial],
                "protocol": "loso-search",
                "folds": None,
            },
        )
        return
    if args.best:
        s = results.summary(exp)
        best = s.get("best")
        if best is None:
            print("no configuration has finished a fold yet", file=sys.stderr)
            sys.exit(1)
        best = {
            **best,
            "params": exp.params[best["config_id"]],
            "protocol": "loso-search",
            "note": results.SEARCH_NOTE,
            "partial": s.get("partial", False),
        }
        if args.format == "json":
            print(json.dumps(best, indent=2, default=str))
        else:
            print(
                f"best configuration {best['config_id']} {best['params']} ({results.SEARCH_NOTE})"
            )
            print(
                f"UF1 {best['uf1']:.4f}  UAR {best['uar']:.4f}  accuracy {best['accuracy']:.4f}"
                + ("  PARTIAL" if best["partial"] else "")
            )
        return
    if args.format == "table":
        print(results.format_table(exp))
    elif args.format == "json":
        print(json.dumps(results.summary(exp), indent=2, default=str))
    else:
        print(results.leaderboard(exp).to_csv(index=False), end="")


def emit(df, fmt, header) -> None:
    if fmt == "json":
        print(json.dumps({**header, "folds": df.to_dict("records")}, indent=2, default=str))
    elif fmt == "csv":
        print(df.to_csv(index=False), end="")
    else:
        print(f"configuration {header['config_id']} {header['params']} (per fold run)")
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    cli.main(main)
