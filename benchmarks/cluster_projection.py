"""The 68-fold protocol's wall time on 1, 4, 8 and 16 GPUs, per-fold vs shared priors: a
projection from measured times, placed as the pipeline places the work today.

    .venv/bin/python benchmarks/cluster_projection.py     # table on stdout, cluster_projection.json

Inputs (measured, not run again here): one prior and one target-learning fold run at
configs/megc2019.yaml's budgets on an H200 (gpu_loops.json, part "megc": prior 142 s projected
from its epochs, fold run 8.14 s, the first fold run's compilation 20 s more); a Ray trainer's
start-up (`--trainer-start-s`, 18-24 s on the CPU machine, benchmarks/README.md "Fold runs"; not
measured on a GPU cluster).

Placement modelled (mer.train.pretrain.run_pretraining, mer.evaluation.search): priors are dealt into
Ray Train runs of `resources.folds_per_run` jobs (megc2019: 4), each run one trainer on one
GPU learning its priors in turn; runs go to free GPUs as they finish (longest first). One
configuration's fold runs are one Tune trial, one trainer running every fold in turn, so
target learning does not spread over GPUs (a search of many configurations does). The
`folds_per_run: 1` columns are the same with one prior per trainer. The autoscaling test's
recorded node timeline (cluster_timeline.json) is checked against the same placement rule.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
GPUS = (1, 4, 8, 16)


def makespan(durations: list[float], gpus: int) -> float:
    """Wall time of independent runs on `gpus` GPUs, each run to the first free GPU, longest
    first (Tune starts pending trials as resources free up)."""
    free = [0.0] * gpus
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def prior_stage(priors: int, per_run: int, gpus: int, prior_s: float, start_s: float) -> float:
    """Priors dealt into runs of `per_run` (run_pretraining), each run one trainer."""
    sizes = [min(per_run, priors - i) for i in range(0, priors, per_run)]
    return makespan([start_s + n * prior_s for n in sizes], gpus)


def target_stage(folds: int, fold_s: float, compile_s: float, start_s: float) -> float:
    """One configuration: one trainer, its fold runs in turn, compiling once."""
    return start_s + compile_s + folds * fold_s


def project(measured: dict, folds: int, per_run: int, groups: list[int], start_s: float) -> dict:
    m = measured["projection_68_folds"]
    prior_s, fold_s = float(m["prior_s_each"]), float(m["fold_run_s_each"])
    compile_s = float(measured["folds_measured"][0]["seconds"]) - fold_s
    target = target_stage(folds, fold_s, compile_s, start_s)
    rows = []
    for name, priors in [("per fold", folds), *[(f"shared N={n}", n) for n in groups]]:
        row = {"priors": name, "prior_count": priors}
        for g in GPUS:
            for label, k in (("", per_run), ("_one_per_run", 1)):
                p = prior_stage(priors, k, g, prior_s, start_s)
                row[f"{g}gpu{label}_min"] = round((p + target) / 60, 1)
        rows.append(row)
    return {
        "inputs": {
            "prior_s": prior_s,
            "fold_run_s": fold_s,
            "compile_s_once": round(compile_s, 1),
            "trainer_start_s": start_s,
            "folds": folds,
            "folds_per_run": per_run,
        },
        "target_learning_min": round(target / 60, 1),
        "rows": rows,
    }


def timeline_check(timeline: dict, folds: int = 4) -> dict:
    """The recorded autoscaling run (configs/tiny.yaml: 4 folds, folds_per_run 4, one
    configuration, accelerator 0.5 per worker): the placement rule says one prior-learning
    run and one search trial, so one accelerator node for each stage, none during the key
    frames. Count the accelerator nodes alive in each stage."""
    per_run = 4  # the test's resources.folds_per_run
    t0 = timeline["submitted"]
    stages = timeline["stages"]

    def alive(stage: str) -> int:
        a, b = stages[stage]["start"], stages[stage]["end"]
        return sum(
            1
            for n in timeline["nodes"]
            if n["type"] == "ray.worker.gpu" and n["start"] < b and (n["end"] or math.inf) > a
        )

    expected = {"keyframes": 0, "pretrain": math.ceil(folds / per_run), "search": 1}
    observed = {s: alive(s) for s in expected}
    return {
        "expected_accelerator_nodes": expected,
        "observed_accelerator_nodes": observed,
        "consistent": expected == observed,
        "stages_s": {s: [round(v["start"] - t0), round(v["end"] - t0)] for s, v in stages.items()},
    }


def table(result: dict) -> str:
    head = "| priors | learnt | " + " | ".join(f"{g} GPU" for g in GPUS)
    head += " | " + " | ".join(f"{g} GPU, 1 prior/run" for g in GPUS) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(GPUS))]
    for r in result["rows"]:
        cells = [f"{r[f'{g}gpu_min']}" for g in GPUS] + [
            f"{r[f'{g}gpu_one_per_run_min']}" for g in GPUS
        ]
        lines.append(f"| {r['priors']} | {r['prior_count']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", default=str(HERE / "gpu_loops.json"))
    ap.add_argument("--timeline", default=str(HERE / "cluster_timeline.json"))
    ap.add_argument("--folds", type=int, default=68)
    ap.add_argument("--folds-per-run", type=int, default=4, help="megc2019.yaml's")
    ap.add_argument("--groups", type=int, nargs="*", default=[2, 4, 8])
    ap.add_argument("--trainer-start-s", type=float, default=21.0)
    ap.add_argument("--out", default=str(HERE / "cluster_projection.json"))
    args = ap.parse_args(argv)
    measured = json.loads(Path(args.loops).read_text())["parts"]["megc"]
    result = project(measured, args.folds, args.folds_per_run, args.groups, args.trainer_start_s)
    result["note"] = (
        "minutes, projected from measured times (not a run); priors placed in runs of "
        "folds_per_run on free GPUs, then one configuration's fold runs in one trainer"
    )
    result["timeline_check"] = timeline_check(json.loads(Path(args.timeline).read_text()))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(json.dumps(result["timeline_check"]))
    return result


if __name__ == "__main__":
    main()
