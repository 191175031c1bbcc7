"""Method development on a development set: grouped cross-validation over its subjects, no Ray.

    .venv/bin/python benchmarks/method_dev.py --keyframes runs/study/keyframes/synthetic/<dev hash> \
        --name base --set finetune.epochs=30
    .venv/bin/python benchmarks/method_dev.py --keyframes ... --name scratch --set pretrain.enabled=false
    .venv/bin/python benchmarks/method_dev.py --keyframes ... --name probe --probe-only

Every choice of the method's settings recorded in benchmarks/README.md ("Making the method
earn its place") was made with this script on a development set: the casme2-like generator
at another seed (seed 1) than the study's (seed 0), so no figure of the study's folds ever
shaped a setting. The protocol: the development set's subjects in `--folds` groups (seeded);
each group is held out once, the others train (prior learning, then target learning, exactly
the library's `train_prior` and `train_classifier` in this process on one thread), predictions
pooled over groups: UF1 and UAR (mer.metrics.summarise). The linear baseline
(mer.evaluation.baselines, the leaderboards' `linear`) runs on the same groups. `train_uf1` is the same
models scored on their own training subjects: how well the network fits what it saw (a model
that cannot fit its training clips is underfitting, not overfitting).

With prior learning on, it also measures what the prior learnt, per group:
  - pair accuracy of the last epoch (training pairs, as reported during training) and, in
    eval mode, on held-in episodes (training subjects) and on every cross-subject pair of the
    held-out subjects (same class iff the distance is under margin / 2; balanced accuracy);
  - a k-NN probe: each held-out clip gets the majority class of its k nearest training clips
    in the embedding (cosine; k = 5), pooled UF1 over groups, for the prior and for a
    random-init network of the same seed (BatchNorm statistics recomputed on the training
    clips so the comparison is fair).
Results are appended as one JSON line per run to benchmarks/method_dev.jsonl (--out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mer import config  # noqa: E402
from mer.folds import FoldRun  # noqa: E402
from mer.keyframes.table import load_table  # noqa: E402
from mer.metrics import summarise  # noqa: E402
from mer.train import data  # noqa: E402
from mer.train.runtime import Worker  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
KNN = 5


def group_runs(table, k: int, seed: int) -> list[FoldRun]:
    """k subject groups of the table (seeded); each is one run's held-out set."""
    subjects = np.array(sorted(set(table.subject_keys)))
    groups = np.array_split(np.random.default_rng(seed).permutation(subjects), k)
    runs = []
    for i, g in enumerate(groups):
        test = sorted(g)
        runs.append(
            FoldRun(
                id=f"group{i}",
                index=i,
                kind="outer",
                outer=f"group{i}",
                train_subjects=sorted(set(subjects) - set(test)),
                test_subjects=test,
                prior=f"group{i}",
            )
        )
    return runs


def base_config(path: str, overrides: list[str]) -> config.PipelineConfig:
    d = yaml.safe_load(open(path))
    d.pop("study", None)
    for item in overrides:
        config.apply_override(d, item)
    return config.from_dict(d).validate()


@torch.no_grad()
def embed(model, frames: np.ndarray, input: str) -> np.ndarray:
    model.eval()
    out = [
        model.embed(data.to_tensor(frames[i : i + 64], None, input)).numpy()
        for i in range(0, len(frames), 64)
    ]
    return np.concatenate(out)


def knn_predict(train_z, train_y, test_z, k: int = KNN) -> np.ndarray:
    """The library's vote (mer.train.probe), here in the siamese embedding space."""
    from mer.train.probe import knn_predict

    return knn_predict(train_z, train_y, test_z, 3, k)


def _pairs(z, labels, subjects):
    """(distances, cross-subject positives, negatives) over the pairs i < j of the clips."""
    i, j = np.triu_indices(len(z), 1)
    same = labels[i] == labels[j]
    return np.linalg.norm(z[i] - z[j], axis=1), same & (subjects[i] != subjects[j]), ~same


def pair_accuracy(z, labels, subjects, threshold: float) -> float:
    """Balanced accuracy of 'same class iff distance < threshold' over cross-subject
    positives and all negatives among the clips given."""
    d, pos, neg = _pairs(z, labels, subjects)
    if not pos.any() or not neg.any():
        return float("nan")
    return 0.5 * (float((d[pos] < threshold).mean()) + float((d[neg] >= threshold).mean()))


def pair_auc(z, labels, subjects) -> float:
    """Threshold-free: the probability that a cross-subject positive pair is nearer than a
    negative pair (ROC AUC of -distance; 0.5 is chance)."""
    from sklearn.metrics import roc_auc_score

    d, pos, neg = _pairs(z, labels, subjects)
    if not pos.any() or not neg.any():
        return float("nan")
    keep = pos | neg
    return float(roc_auc_score(pos[keep], -d[keep]))


def spread(z) -> float:
    """Mean distance between two embeddings (L2-normalised: 0 is a collapse to one point,
    about 1.41 is spread over the sphere)."""
    i, j = np.triu_indices(len(z), 1)
    return float(np.linalg.norm(z[i] - z[j], axis=1).mean())


def run(args) -> dict:
    from mer.evaluation.baselines import apex_minus_onset, predict_run
    from mer.train.finetune import predict_run as predict_run_
    from mer.train.finetune import train_classifier
    from mer.train.models import build_siamese
    from mer.train.pretrain import PriorJob, train_prior
    from mer.train.step import recompute_norms

    torch.set_num_threads(args.threads)
    if args.gain is not None:  # the delta input's gain (mer.train.data.DELTA_GAIN)
        data.DELTA_GAIN = args.gain
    cfg = base_config(args.config, args.set)
    if args.pairs:  # pretrain.pairs
        cfg.pretrain.pairs = args.pairs
    table = load_table(os.path.abspath(args.keyframes))
    labels = table.clips["label"].to_numpy()
    subject_ids = np.unique(table.subject_keys, return_inverse=True)[1]
    runs = group_runs(table, args.folds, args.split_seed)
    w = Worker(0, 1, torch.device("cpu"))
    features = apex_minus_onset(table)
    preds, fits, linear, probes, seconds = [], [], [], [], []
    for seed in args.seeds:
        c = config.with_params(cfg, {}, seed)
        for r in runs:
            t0 = time.time()
            train = table.indices_of(r.train_subjects)
            test = table.indices_of(r.test_subjects)
            prior = None
            with tempfile.TemporaryDirectory() as tmp:
                if c.pretrain.enabled:
                    job = PriorJob.own(r, seed, tmp)
                    model = train_prior(c, table, job, w, report=lambda *a, **k: None)
                    prior = os.path.join(tmp, "prior.pt")
                    probe = {"seed": seed, "run": r.id}
                    probe["train_pair_accuracy"] = json.load(open(os.path.join(tmp, "_done.json")))[
                        "history"
                    ][-1]["pair_accuracy"]
                    thr = c.pretrain.margin / 2
                    z_tr = embed(model, table.frames[train], c.model.input)
                    z_te = embed(model, table.frames[test], c.model.input)
                    probe["heldin_pair_accuracy"] = pair_accuracy(
                        z_tr, labels[train], subject_ids[train], thr
                    )
                    probe["heldout_pair_accuracy"] = pair_accuracy(
                        z_te, labels[test], subject_ids[test], thr
                    )
                    probe["heldin_pair_auc"] = pair_auc(z_tr, labels[train], subject_ids[train])
                    probe["heldout_pair_auc"] = pair_auc(z_te, labels[test], subject_ids[test])
                    probe["heldin_spread"] = spread(z_tr)
                    probe["knn_prior"] = knn_predict(z_tr, labels[train], z_te).tolist()
                    torch.manual_seed(seed)
                    rand = build_siamese(c)
                    # BatchNorm statistics of the training clips, as a saved prior has them
                    recompute_norms(
                        rand, rand.embed, table.frames, train, w.device, input=c.model.input
                    )
                    r_tr = embed(rand, table.frames[train], c.model.input)
                    r_te = embed(rand, table.frames[test], c.model.input)
                    probe["knn_random"] = knn_predict(r_tr, labels[train], r_te).tolist()
                    probe["heldout_pair_accuracy_random"] = pair_accuracy(
                        r_te, labels[test], subject_ids[test], thr
                    )
                    probe["heldout_pair_auc_random"] = pair_auc(
                        r_te, labels[test], subject_ids[test]
                    )
                    probe["test"] = test.tolist()
                    probes.append(probe)
                if not args.probe_only:
                    model, epochs = train_classifier(c, table, r, prior, 3, w)
                    preds.append(predict_run_(c, table, r, model, w, epochs).assign(seed=seed))
                    # how well the same model fits its own training subjects
                    seen = dataclasses.replace(r, test_subjects=r.train_subjects)
                    fits.append(predict_run_(c, table, seen, model, w, epochs).assign(seed=seed))
            if seed == args.seeds[0]:
                linear.append(predict_run("linear", table, features, r, 3))
            seconds.append(time.time() - t0)
            print(f"{args.name}: seed {seed} {r.id} {seconds[-1]:.0f} s", flush=True)

    import pandas as pd

    out = {
        "name": args.name,
        "settings": args.set,
        "pairs": cfg.pretrain.pairs,
        "gain": args.gain if args.gain is not None else data.DELTA_GAIN,
        "keyframes": args.keyframes,
        "folds": args.folds,
        "seeds": args.seeds,
        "seconds_per_run": float(np.mean(seconds)),
        "load_average": os.getloadavg()[0],
    }
    lin = summarise(pd.concat(linear), 3)
    out["linear"] = {"uf1": lin["uf1"], "uar": lin["uar"]}
    if preds:
        per_seed = [summarise(p, 3) for p in _by_seed(preds)]
        out["uf1_per_seed"] = [s["uf1"] for s in per_seed]
        out["uar_per_seed"] = [s["uar"] for s in per_seed]
        out["uf1"] = float(np.mean(out["uf1_per_seed"]))
        out["uar"] = float(np.mean(out["uar_per_seed"]))
        out["train_uf1"] = float(np.mean([summarise(p, 3)["uf1"] for p in _by_seed(fits)]))
    if probes:
        out["prior"] = _probe_summary(probes, table, labels)
    return out


def _by_seed(preds):
    import pandas as pd

    allp = pd.concat(preds)
    return [g for _, g in allp.groupby("seed")]


def _probe_summary(probes, table, labels) -> dict:
    import pandas as pd

    clips = table.clips[["dataset", "subject", "clip", "label"]]
    out = {}
    for key in ("knn_prior", "knn_random"):
        scores = []
        for seed in sorted({p["seed"] for p in probes}):
            rows = [clips.iloc[p["test"]].assign(pred=p[key]) for p in probes if p["seed"] == seed]
            scores.append(summarise(pd.concat(rows), 3)["uf1"])
        out[f"{key}_uf1"] = float(np.mean(scores))
    for key in (
        "train_pair_accuracy",
        "heldin_pair_accuracy",
        "heldout_pair_accuracy",
        "heldout_pair_accuracy_random",
        "heldin_pair_auc",
        "heldout_pair_auc",
        "heldout_pair_auc_random",
        "heldin_spread",
    ):
        out[key] = float(np.nanmean([p[key] for p in probes]))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keyframes", required=True, help="the development set's key-frame table")
    p.add_argument("--config", default=os.path.join(REPO, "configs", "study.yaml"))
    p.add_argument("--set", action="append", default=[], help="section.key=value (repeatable)")
    p.add_argument("--name", required=True)
    p.add_argument("--folds", type=int, default=5, help="subject groups")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--gain", type=float, default=None, help="delta input gain (default 8)")
    p.add_argument("--pairs", choices=("episodic", "random"), help="prior learning's pair rule")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--probe-only", action="store_true", help="prior learning and probes only")
    p.add_argument("--out", default=os.path.join(HERE, "method_dev.jsonl"))
    p.add_argument(
        "--smoke", action="store_true", help="2 groups, one epoch each: runs in seconds (CI)"
    )
    args = p.parse_args(argv)
    if args.smoke:  # checks that the script runs on a small table, measures nothing
        args.folds = 2
        args.set += ["pretrain.epochs=1", "finetune.epochs=1"]
    out = run(args)
    print(json.dumps(out, indent=1))
    with open(args.out, "a") as f:
        f.write(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    main()
