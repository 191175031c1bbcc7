"""Does the registered study's prior learn on each of its presets? Checked on the development
seed, never on the study's folds.

    python benchmarks/prior_dev.py                       # every preset, both candidates
    python benchmarks/prior_dev.py --presets scarce --candidates dev-prior
    python benchmarks/prior_dev.py --smoke --out /tmp/p.jsonl   # seconds (CI)

configs/study-registered.yaml runs its presets at generator seed 0. Here each preset is built
at generator seed 1 (the development seed) with the study's key-frame settings and its
`preset_settings`, once, without Ray, under --root; then benchmarks/method_dev.py's
probe-only protocol runs on it: the subjects in --folds groups, each held out once, a prior
learnt on the others (the library's `train_prior`, one thread), and what it learnt: the last
epoch's training pair accuracy, pair accuracy and AUC on held-in and held-out subjects, and a
k-NN probe of the held-out clips (UF1) beside a random-init network's. One JSON line per
(preset, candidate) to --out.

Candidates (prior-learning settings on top of the study's base config):
  registered-base  the base as it was (3 epochs x 128 random pairs)
  dev-prior        the prior chosen on casme2-like at generator seed 1 (benchmarks/README.md,
                   "Why it did not learn"): 30 epochs x 256 episodic pairs, dropout 0
  dev-prior-augment, dev-prior-short   added after dev-prior failed on realistic: the same
                   with pretrain.augment, and 10 epochs instead of 30
Rule, fixed before this ran: the study's full method takes the first candidate whose priors
learn on every preset, meaning a mean last-epoch training pair accuracy of at least 0.8 and a
k-NN probe UF1 above the random-init network's on that preset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

STUDY = HERE.parent / "configs" / "study-registered.yaml"
DEV_SEED = 1
CANDIDATES = {
    "registered-base": [],
    "dev-prior": [
        "pretrain.epochs=30",
        "pretrain.pairs_per_epoch=256",
        "pretrain.pairs=episodic",
        "model.dropout=0.0",
    ],
    # Tried after dev-prior failed on realistic (it memorised its training subjects there):
    # the same with augmented pairs, and a third of its budget.
    "dev-prior-augment": [
        "pretrain.epochs=30",
        "pretrain.pairs_per_epoch=256",
        "pretrain.pairs=episodic",
        "model.dropout=0.0",
        "pretrain.augment=true",
    ],
    "dev-prior-short": [
        "pretrain.epochs=10",
        "pretrain.pairs_per_epoch=256",
        "pretrain.pairs=episodic",
        "model.dropout=0.0",
    ],
}
PAIR_ACCURACY = 0.8


def preset_settings(preset: str) -> list[str]:
    """The study's settings for `preset` on the development seed, as key=value overrides."""
    from mer.evaluation.study import load_study

    _, study = load_study(str(STUDY))
    extra = [f"{k}={v}" for k, v in study.preset_settings.get(preset, {}).items()]
    return [f"data.synthetic.preset={preset}", f"data.synthetic.seed={DEV_SEED}", *extra]


def key_frames(sets: list[str], root: str, smoke: bool) -> str:
    """The preset's development table under `root`, built once without Ray as prior_arms.py
    builds its own (a random table in the smoke size)."""
    cfg = _load("method_dev").base_config(str(STUDY), [f"root={root}", *sets])
    return _load("prior_arms").key_frames(cfg, smoke)


def _load(name: str):
    """A sibling benchmark script as a module (loaded once)."""
    import importlib.util

    if name not in _LOADED:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        _LOADED[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_LOADED[name])
    return _LOADED[name]


_LOADED: dict = {}


def verdict(out: dict) -> dict:
    prior = out["prior"]
    learns = (
        prior["train_pair_accuracy"] >= PAIR_ACCURACY
        and prior["knn_prior_uf1"] > prior["knn_random_uf1"]
    )
    return {"learns": bool(learns), "rule": f"train pair accuracy >= {PAIR_ACCURACY} and "
            "k-NN UF1 above the random-init network's"}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    from mer.evaluation.study import load_study

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="*", help="default: the study's")
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES)[:2])
    ap.add_argument("--folds", type=int, default=3, help="subject groups per preset")
    ap.add_argument("--root", default="runs/prior-dev")
    ap.add_argument("--out", default=str(HERE / "prior_dev.jsonl"))
    ap.add_argument("--smoke", action="store_true", help="one preset, a random table, 1 epoch")
    args = ap.parse_args(argv)
    presets = args.presets or load_study(str(STUDY))[1].presets
    if args.smoke:
        presets = presets[:1]
    unknown = sorted(set(args.candidates) - set(CANDIDATES))
    if unknown:
        sys.exit(f"prior_dev.py: unknown candidates {unknown}; known: {list(CANDIDATES)}")
    method_dev = _load("method_dev")
    results = []
    for preset in presets:
        sets = preset_settings(preset)
        table = key_frames(sets, args.root, args.smoke)
        for name in args.candidates:
            argv_dev = ["--keyframes", os.path.abspath(table), "--config", str(STUDY),
                        "--name", f"{preset}/{name}", "--folds", str(args.folds),
                        "--probe-only", "--out", args.out]  # fmt: skip
            for item in [*sets, *CANDIDATES[name]]:
                argv_dev += ["--set", item]
            argv_dev += ["--smoke"] if args.smoke else []
            out = method_dev.main(argv_dev)
            results.append({"preset": preset, "candidate": name, **verdict(out)})
            print(json.dumps(results[-1]), flush=True)
    for r in results:
        print(f"{r['preset']:<12} {r['candidate']:<16} learns: {r['learns']}")
    return results


if __name__ == "__main__":
    main()
