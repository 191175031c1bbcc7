"""Leaderboard statistics from saved predictions: seeds, intervals, ranking, paired tests.

Experiments are written by hand here (no training): the numbers are checked against an
independent computation from the same per-clip predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from mer import storage
from mer.evaluation import results, results_report, stats

SUBJECTS = [f"s{i:02d}" for i in range(10)]
CLIPS = 4  # per subject


def write_entry(exp: str, entry: str, accuracy: float, seeds, folds=SUBJECTS, baseline=False):
    """Predictions of one entry: each clip right with probability `accuracy` (seeded)."""
    folder = storage.join(exp, "baselines" if baseline else "configs", entry)
    if not baseline:
        storage.write_json(storage.join(folder, "params.json"), {"gamma": accuracy})
    for seed in seeds:
        rng = np.random.default_rng([seed, int(accuracy * 1000), len(entry)])
        for subject in folds:
            label = np.arange(CLIPS) % 3
            right = rng.random(CLIPS) < accuracy
            pred = np.where(right, label, (label + 1 + rng.integers(0, 2, CLIPS)) % 3)
            df = pd.DataFrame(
                {
                    "dataset": "d",
                    "subject": subject,
                    "clip": [f"{subject}-{c}" for c in range(CLIPS)],
                    "label": label,
                    "pred": pred,
                    "run": f"d-{subject}",
                    "kind": "outer",
                    "outer": f"d-{subject}",
                    "seed": seed,
                    "seconds": 1.0,
                }
            )
            import pyarrow as pa

            storage.write_parquet(
                pa.Table.from_pandas(df, preserve_index=False),
                storage.join(folder, f"seed-{seed}", f"d-{subject}.parquet"),
            )


def write_meta(exp: str, seeds):
    storage.write_json(
        storage.join(exp, "_experiment.json"),
        {
            "experiment": "hand",
            "folds": [f"d-{s}" for s in SUBJECTS],
            "seeds": list(seeds),
            "num_classes": 3,
            "space": {"gamma": [0.5, 0.6, 0.9]},
            "status": "finished",
        },
    )


@pytest.fixture
def experiment(tmp_path):
    exp = str(tmp_path / "exp")
    seeds = [0, 1, 2]
    write_meta(exp, seeds)
    write_entry(exp, "good", 0.85, seeds)
    write_entry(exp, "near", 0.84, seeds)
    write_entry(exp, "poor", 0.35, seeds)
    write_entry(exp, "partial", 0.99, [0])  # finished one seed of three
    write_entry(exp, "linear", 0.6, seeds, baseline=True)
    return results.load_experiment(exp)


def test_scores_are_means_over_seeds_of_pooled_scores(experiment):
    s = results.entry_scores(experiment, "good")
    per_seed = []
    for seed in (0, 1, 2):
        p = experiment.outer("good")
        p = p[p["seed"] == seed]
        per_seed.append(
            f1_score(p["label"], p["pred"], average="macro", labels=[0, 1, 2], zero_division=0)
        )
    assert [r["uf1"] for r in s["per_seed"]] == pytest.approx(per_seed)
    assert s["uf1"] == pytest.approx(np.mean(per_seed))
    assert s["uf1_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert s["uf1_lo"] < s["uf1"] < s["uf1_hi"]


def test_leaderboard_ranks_complete_configurations_only_and_marks_ties(experiment):
    board = results.leaderboard(experiment)
    by = board.set_index("config_id")
    # The partial configuration scores highest but is never ranked or called top.
    assert by.loc["partial", "status"] == "partial" and pd.isna(by.loc["partial", "rank"])
    assert by.loc["partial", "uf1"] > by.loc["good", "uf1"]
    assert results.top_config(experiment) == "good"
    assert by.loc["good", "standing"] == "top" and by.loc["good", "rank"] == 1
    # "near" is within the interval of "good": tied; "poor" is clearly below.
    assert by.loc["near", "standing"] == "tied"
    assert by.loc["poor", "standing"] == "below"
    assert by.loc["linear", "kind"] == "baseline" and pd.isna(by.loc["linear", "rank"])
    summary = results.summary(experiment)
    assert [r["config_id"] for r in summary["incomplete"]] == ["partial"]
    assert "partial" not in {r["config_id"] for r in summary["leaderboard"]}
    assert summary["top"]["tied"] == ["near"]
    assert all(len(r["per_seed"]) == 3 for r in summary["leaderboard"])
    text = results_report.format_table(experiment)
    assert "best" not in text and "baseline: linear" in text and "PARTIAL" in text


def independent_bootstrap(pa_, pb, seeds, subjects, n=20000, seed=123):
    """Paired subject bootstrap of mean-over-seeds pooled UF1 A - B, written without
    mer.evaluation.stats: per subject and seed the counts of true positives, true and predicted labels
    per class; resampled subjects' counts are summed and scored as F1 = 2 TP / (T + P)."""
    rng = np.random.default_rng(seed)

    def counts(p):
        out = np.zeros((3, len(seeds), len(subjects), 3))  # (tp, true, pred), seed, subject, class
        for i, s in enumerate(seeds):
            for j, k in enumerate(subjects):
                g = p[(p["seed"] == s) & (p["subject"] == k)]
                y, q = g["label"].to_numpy(), g["pred"].to_numpy()
                for c in range(3):
                    out[:, i, j, c] = [np.sum((y == c) & (q == c)), np.sum(y == c), np.sum(q == c)]
        return out

    def uf1(c, pick):  # c: counts; pick: (n, subjects) indices
        tp, t, q = (c[m][:, pick].sum(axis=2) for m in range(3))  # (seeds, n, classes)
        f1 = np.divide(2 * tp, t + q, out=np.zeros_like(tp), where=(t + q) > 0)
        return f1.mean(axis=-1).mean(axis=0)  # mean over classes, then over seeds

    ca, cb = counts(pa_), counts(pb)
    pick = rng.integers(0, len(subjects), size=(n, len(subjects)))
    return np.percentile(uf1(ca, pick) - uf1(cb, pick), [2.5, 97.5])


def test_paired_comparison_agrees_with_an_independent_bootstrap(experiment):
    c = results.compare(experiment, "near", experiment, "linear")
    lo, hi = independent_bootstrap(
        experiment.outer("near"), experiment.outer("linear"), [0, 1, 2], SUBJECTS
    )
    assert c["uf1"]["ci_low"] == pytest.approx(lo, abs=0.01)
    assert c["uf1"]["ci_high"] == pytest.approx(hi, abs=0.01)
    assert c["subjects"] == len(SUBJECTS) and c["seeds"] == [0, 1, 2]
    # Swapping A and B flips the difference and keeps the p-value.
    r = results.compare(experiment, "linear", experiment, "near")
    assert r["uf1"]["difference"] == pytest.approx(-c["uf1"]["difference"])
    assert r["uf1"]["p_value"] == pytest.approx(c["uf1"]["p_value"], abs=0.02)


def test_permutation_p_value_separates_a_real_gap_from_none(experiment):
    far = results.compare(experiment, "good", experiment, "poor")["uf1"]
    assert far["p_value"] < 0.01 and far["verdict"] == "difference" and far["ci_low"] > 0
    same = results.compare(experiment, "good", experiment, "good")["uf1"]
    assert same["difference"] == 0 and same["p_value"] == pytest.approx(1.0)
    assert same["verdict"] == "no evidence of a difference"


def test_comparison_needs_the_same_folds_and_seeds(experiment, tmp_path):
    from mer.errors import InputError

    with pytest.raises(InputError, match="has not finished"):
        results.compare(experiment, "good", experiment, "partial")
    other = str(tmp_path / "other")
    write_meta(other, [0, 1, 2])
    write_entry(other, "x", 0.8, [0, 1, 2], folds=SUBJECTS[:-1])
    exp2 = results.load_experiment(other)
    exp2.meta["folds"] = exp2.meta["folds"][:-1]
    with pytest.raises(InputError, match="same held-out subjects"):
        results.compare(experiment, "good", exp2, "x")


def test_interval_of_a_constant_score_is_a_point():
    cms = np.zeros((2, 5, 3, 3), dtype=np.int64)
    for k in range(5):
        cms[:, k] = np.diag([1, 1, 1])
    lo, hi = stats.interval(cms, "uf1")
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


def test_per_class_f1_is_the_mean_over_seeds_and_in_the_text_table(experiment):
    s = results.entry_scores(experiment, "good")
    p = experiment.outer("good")
    for c, name in enumerate(["negative", "positive", "surprise"]):
        per_seed = [
            f1_score(g["label"], g["pred"], labels=[c], average=None, zero_division=0)[0]
            for _, g in p.groupby("seed")
        ]
        assert s[f"f1[{name}]"] == pytest.approx(np.mean(per_seed))
    text = results_report.format_table(experiment)
    assert "F1 per class (negative / positive / surprise)" in text
    line = next(x for x in text.splitlines() if "gamma=0.85" in x)
    assert " / ".join(f"{s[f'f1[{n}]']:.3f}" for n in experiment.class_names) in line
