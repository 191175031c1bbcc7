"""Prior-learning arms on the same folds and seeds, compared pairwise: what shared priors and
bf16 priors cost and save.

    python benchmarks/prior_arms.py sharing     # per-fold vs pretrain.prior_groups 2, 4, 8
    python benchmarks/prior_arms.py precision   # fp32 vs bf16 priors (pretrain.amp; CUDA only)
    python benchmarks/prior_arms.py sharing --smoke --arms per-fold shared-2   # seconds (CI)
    python benchmarks/prior_arms.py sharing --seeds 0 --arms shared-8   # one arm's work only

Base settings: configs/study.yaml's `dev-prior` variant (casme2-like, 26 subjects, 255 clips;
the small C3D with a 30 x 256 episodic prior, the one whose priors learn), at
`--seeds` (default 0 1 2). Each arm is the base plus its overrides; for every seed it learns
its priors (mer.train.pretrain.train_prior, one per fold or one per group), then every LOSO
fold run from its prior (mer.train.finetune.train_fold_run), in this process without Ray, so
times are the loops' own. Recorded per arm and seed: priors learnt, their seconds, the fold
runs' seconds, wall; the leak check from the priors' stored subject lists; a k-NN probe of
each prior (5 nearest clips by cosine of the backbone's fc7 features, among the prior's own
training subjects, for every clip of the fold's held-out subject, pooled); the fold runs'
predictions. Comparisons: the first arm minus each other, on UF1 of the fold runs and on the
probe's accuracy, mean over seeds with a paired subject-bootstrap interval and a paired
permutation p (mer.evaluation.stats.paired). UF1 and UAR of the fold runs are one family, as in
the study: Holm's adjustment over all of them, verdicts from the adjusted p; the probe is a
diagnostic, adjusted within its own family.

Outputs go under `--root` (default runs/prior-arms): the key-frame table (built once, without
Ray), priors and predictions keyed as the pipeline keys them, so a rerun resumes where it
stopped; the summary to `--out` (benchmarks/prior_arms_<compare>.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mer.testing.model_sizes import TINY  # noqa: E402

ARMS = {
    "sharing": [
        ("per-fold", []),
        ("shared-2", ["pretrain.prior_groups=2"]),
        ("shared-4", ["pretrain.prior_groups=4"]),
        ("shared-8", ["pretrain.prior_groups=8"]),
    ],
    "precision": [("fp32", ["pretrain.amp=false"]), ("bf16", ["pretrain.amp=true"])],
}
SMOKE = [
    *TINY,
    "pretrain.epochs=1",
    "pretrain.pairs_per_epoch=16",
    "pretrain.batch_size=4",
    "finetune.epochs=1",
    "finetune.batch_size=8",
]


def base_config(root: str, smoke: bool, extra: list[str]):
    """configs/study.yaml's dev-prior variant with `extra` overrides; on a CUDA machine keyed
    as a CUDA run (the loops here train where local_worker is: the GPU when there is one)."""
    import torch

    from mer import config
    from mer.evaluation import study as study_mod

    cfg, study = study_mod.load_study(str(HERE.parent / "configs" / "study.yaml"), [f"root={root}"])
    variant = next(v for v in study.variants if v.name == "dev-prior")
    d = study_mod.variant_config(cfg, study, variant).to_dict()
    cuda = ["resources.gpus_per_worker=1"] if torch.cuda.is_available() else []
    for item in [*(SMOKE if smoke else []), *cuda, *extra]:
        config.apply_override(d, item)
    return config.from_dict(d)


def key_frames(cfg, smoke: bool) -> str:
    """The base config's key-frame table under its root, built once without Ray (a random
    8-subject table in the smoke size)."""
    from mer import layout, storage
    from mer.datasets.stage import ensure_data
    from mer.keyframes.preprocess import build_keyframes_dataset
    from mer.testing.fakes import write_random_keyframes

    uri = layout.keyframes_uri(cfg)
    if storage.exists(storage.join(uri, "_meta.json")):
        return uri
    if smoke:
        return write_random_keyframes(
            uri, subjects=4, clips=24, per_subject=False, k=cfg.keyframes.k, s=cfg.keyframes.size
        )
    ensure_data(cfg, progress=print)
    build_keyframes_dataset(cfg, use_ray=False, progress=print)
    return uri


def probe(cfg, table, run: dict, prior_dir: str, classes: int):
    """k-NN predictions for the run's held-out clips from the saved prior's fc7 features
    (mer.train.probe), among the clips of the subjects the prior learnt on (rows like a fold
    run's predictions). Recomputed from prior.pt, so priors recorded before the library kept
    its own probe are measured the same way."""
    import torch

    from mer.train import checkpoints, probe
    from mer.train.models import build_siamese

    backbone = build_siamese(cfg).backbone
    backbone.load_state_dict(checkpoints.load_state(checkpoints.prior_file(prior_dir)))
    seen = checkpoints.done_record(prior_dir)["train_subjects"]
    ref, test = table.indices_of(seen), table.indices_of(run.test_subjects)
    labels = table.clips["label"].to_numpy()
    pred = probe.knn_probe(backbone, table.frames, labels, ref, test, torch.device("cpu"),
                           input=cfg.model.input, classes=classes)  # fmt: skip
    out = table.clips.iloc[test][["dataset", "subject", "clip", "label"]].copy()
    out["pred"] = pred
    return out


def run_arm(name, cfg, table, seed: int, store: Path) -> dict:
    """One arm at one seed: its priors, then every fold run from them (finished work is read
    back, not redone)."""
    import pandas as pd

    from mer import layout
    from mer.config import NUM_CLASSES, with_params
    from mer.keyframes.table import fold_specs, outer_runs, prior_groups_of
    from mer.train import checkpoints, finetune, pretrain
    from mer.train.runtime import local_worker

    t0 = time.perf_counter()
    classes = NUM_CLASSES[cfg.data.protocol]
    seeded, w = with_params(cfg, {}, seed), local_worker()
    runs = outer_runs(fold_specs(table), prior_groups_of(table, cfg.pretrain.prior_groups))
    jobs = pretrain.prior_jobs(cfg, runs, [seed])
    prior_s, prior_cpu, learnt = 0.0, 0.0, 0
    for job in jobs:
        if checkpoints.is_done(job.dir, job.train_subjects):
            continue
        t, c = time.perf_counter(), time.process_time()
        pretrain.train_prior(seeded, table, job, w, report=lambda *a: None)
        prior_s += time.perf_counter() - t
        prior_cpu += time.process_time() - c
        learnt += 1
    fold_s, fold_cpu, preds, knn = 0.0, 0.0, [], []
    for run in runs:
        prior = layout.prior_uri(seeded, run.prior)
        uri = store / name / f"seed-{seed}" / f"{run.id}-{layout.run_hash(seeded, run)}.parquet"
        if uri.exists():
            p = pd.read_parquet(uri)
        else:
            t, c = time.perf_counter(), time.process_time()
            p = finetune.train_fold_run(seeded, table, run, prior, classes, w)
            fold_s += time.perf_counter() - t
            fold_cpu += time.process_time() - c
            uri.parent.mkdir(parents=True, exist_ok=True)
            p.to_parquet(uri)
        preds.append(p.assign(seed=seed))
        folder = layout.prior_dir(seeded, run.prior)
        knn.append(probe(seeded, table, run, folder, classes).assign(seed=seed))
    return {
        "priors": len(jobs),
        "priors_learnt_now": learnt,
        "prior_s": round(prior_s, 1),
        "prior_cpu_s": round(prior_cpu, 1),  # CPU time: less moved by other work than wall
        "fold_runs_s": round(fold_s, 1),
        "fold_runs_cpu_s": round(fold_cpu, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "leaks": pretrain.prior_leaks(cfg, runs, [seed]),
        "preds": pd.concat(preds, ignore_index=True),
        "knn": pd.concat(knn, ignore_index=True),
    }


def compare(arms: dict, seeds: list[int], classes: int) -> dict:
    """First arm minus each other arm, per metric, paired over subjects at every seed.

    The fold runs' UF1 and UAR form one family, as in the study: Holm over every one of those
    comparisons, and each verdict from its adjusted p. The priors' k-NN accuracy is a
    diagnostic of what each prior learnt, adjusted within its own family and said so."""
    from mer.evaluation import stats

    names = list(arms)
    families = {"uf1": "fold runs (UF1, UAR)", "uar": "fold runs (UF1, UAR)",
                "knn_accuracy": "priors' k-NN probe (diagnostic)"}  # fmt: skip
    out = {}
    for metric, source in (("uf1", "preds"), ("uar", "preds"), ("knn_accuracy", "knn")):
        tables = {n: arms[n][source] for n in names}
        subjects = sorted(set(tables[names[0]]["dataset"] + "/" + tables[names[0]]["subject"]))
        cms = {n: stats.subject_confusions(t, seeds, subjects, classes) for n, t in tables.items()}
        score = "accuracy" if metric == "knn_accuracy" else metric
        rows = []
        for other in names[1:]:
            r = stats.paired(cms[names[0]], cms[other], score)
            a_seeds = stats.per_seed(cms[names[0]], score)
            b_seeds = stats.per_seed(cms[other], score)
            rows.append(
                {
                    "a": names[0],
                    "b": other,
                    "a_mean": float(a_seeds.mean()),
                    "b_mean": float(b_seeds.mean()),
                    "a_per_seed": [round(float(x), 4) for x in a_seeds],
                    "b_per_seed": [round(float(x), 4) for x in b_seeds],
                    "family": families[metric],
                    **r,
                }
            )
        out[metric] = rows
    for family in dict.fromkeys(families.values()):
        rows = [r for m, rs in out.items() if families[m] == family for r in rs]
        for row, p in zip(rows, stats.holm([r["p_value"] for r in rows]), strict=True):
            row["p_holm"] = float(p)
            row["family_size"] = len(rows)
            row["verdict"] = stats.verdict(float(p))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("compare", choices=sorted(ARMS))
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--root", default="runs/prior-arms")
    ap.add_argument("--set", nargs="*", default=[], help="overrides of the base (key=value)")
    ap.add_argument("--arms", nargs="*", help="only these arms (the first is the reference)")
    ap.add_argument("--smoke", action="store_true", help="random 4-subject table, tiny model")
    ap.add_argument("--out", help="default: benchmarks/prior_arms_<compare>.json")
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from mer.config import NUM_CLASSES
    from mer.keyframes.table import load_table

    if args.compare == "precision" and not torch.cuda.is_available() and not args.smoke:
        sys.exit("prior_arms.py precision: pretrain.amp is bf16 autocast on CUDA only; on this "
                 "CPU both arms would be fp32 (run it on a GPU machine)")  # fmt: skip
    started = time.perf_counter()
    base = base_config(args.root, args.smoke, args.set)
    table = load_table(key_frames(base, args.smoke))
    classes = NUM_CLASSES[base.data.protocol]
    arms, record = {}, {}
    chosen = [a for a in ARMS[args.compare] if not args.arms or a[0] in args.arms]
    if not chosen:
        sys.exit(f"prior_arms.py: --arms names none of {[a[0] for a in ARMS[args.compare]]}")
    for name, overrides in chosen:
        cfg = base_config(args.root, args.smoke, [*args.set, *overrides])
        per_seed = [
            run_arm(name, cfg, table, s, Path(args.root) / "prior-arms") for s in args.seeds
        ]
        arms[name] = {
            "preds": pd.concat([r["preds"] for r in per_seed]),
            "knn": pd.concat([r["knn"] for r in per_seed]),
        }
        record[name] = {
            "overrides": overrides,
            "per_seed": [
                {k: v for k, v in r.items() if k not in ("preds", "knn")} for r in per_seed
            ],
        }
    result = {
        "compare": args.compare,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "amp_effective": torch.cuda.is_available(),
        "smoke": args.smoke,
        "seeds": args.seeds,
        "subjects": len(set(table.subject_keys)),
        "clips": len(table.frames),
        "arms": record,
        # One arm: its work only (several processes can share the arms; a later run with
        # every arm reads their priors and predictions back and compares).
        "comparisons": compare(arms, args.seeds, classes) if len(arms) > 1 else {},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out or HERE / f"prior_arms_{args.compare}.json")
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    for metric, rows in result["comparisons"].items():
        for r in rows:
            print(
                f"{metric}: {r['a']} {r['a_mean']:.3f} - {r['b']} {r['b_mean']:.3f} = "
                f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], "
                f"p = {r['p_value']:.3f}, Holm {r['p_holm']:.3f} over {r['family_size']}: "
                f"{r['verdict']}"
            )
    return result


if __name__ == "__main__":
    main()
