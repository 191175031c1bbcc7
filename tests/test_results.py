"""Leaderboard statistics from saved predictions: seeds, intervals, ranking, paired tests.

Experiments are written by hand here (no training): the numbers are checked against an
independent computation from the same per-clip predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
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
            write_fold(folder, seed, subject, label, pred, seconds=1.0)


def write_fold(folder: str, seed: int, subject: str, label, pred, **columns) -> None:
    """One seed's predictions for held-out `subject` (clips <subject>-0, -1, ...), `columns`
    added as they are."""
    df = pd.DataFrame(
        {
            "dataset": "d",
            "subject": subject,
            "clip": [f"{subject}-{c}" for c in range(len(label))],
            "label": label,
            "pred": pred,
            "run": f"d-{subject}",
            "kind": "outer",
            "outer": f"d-{subject}",
            "seed": seed,
            **columns,
        }
    )
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


def counts(p, seeds, subjects):
    """Per subject and seed the counts of true positives, true and predicted labels per
    class, written without mer.evaluation.stats: (3 (tp, true, pred), seeds, subjects, classes)."""
    out = np.zeros((3, len(seeds), len(subjects), 3))
    for i, s in enumerate(seeds):
        for j, k in enumerate(subjects):
            g = p[(p["seed"] == s) & (p["subject"] == k)]
            y, q = g["label"].to_numpy(), g["pred"].to_numpy()
            for c in range(3):
                out[:, i, j, c] = [np.sum((y == c) & (q == c)), np.sum(y == c), np.sum(q == c)]
    return out


def pooled_uf1(c, pick):
    """Mean over seeds of pooled UF1 over the subjects in each row of pick (n, subjects):
    F1 = 2 TP / (T + P) per class, averaged over classes, then over seeds."""
    tp, t, q = (c[m][:, pick].sum(axis=2) for m in range(3))  # (seeds, n, classes)
    f1 = np.divide(2 * tp, t + q, out=np.zeros_like(tp), where=(t + q) > 0)
    return f1.mean(axis=-1).mean(axis=0)


def independent_bootstrap(pa_, pb, seeds, subjects, n=20000, seed=123):
    """Paired subject bootstrap (percentile) of mean-over-seeds pooled UF1 A - B."""
    rng = np.random.default_rng(seed)
    ca, cb = counts(pa_, seeds, subjects), counts(pb, seeds, subjects)
    pick = rng.integers(0, len(subjects), size=(n, len(subjects)))
    return np.percentile(pooled_uf1(ca, pick) - pooled_uf1(cb, pick), [2.5, 97.5])


def independent_bca(pa_, pb, seeds, subjects, n=20000, seed=321):
    """The BCa interval of the same paired difference, from its textbook definition (Efron
    and Tibshirani 1993, 14.3): bias z0 from the share of replicates below the estimate,
    acceleration from the leave-one-subject-out jackknife."""
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    ca, cb = counts(pa_, seeds, subjects), counts(pb, seeds, subjects)
    k = len(subjects)
    everyone = np.arange(k)[None, :]
    estimate = (pooled_uf1(ca, everyone) - pooled_uf1(cb, everyone))[0]
    pick = rng.integers(0, k, size=(n, k))
    reps = pooled_uf1(ca, pick) - pooled_uf1(cb, pick)
    z0 = norm.ppf(np.mean(reps < estimate))
    jack_pick = np.array([np.delete(np.arange(k), i) for i in range(k)])
    jack = pooled_uf1(ca, jack_pick) - pooled_uf1(cb, jack_pick)
    d = jack.mean() - jack
    a = (d**3).sum() / (6 * ((d**2).sum()) ** 1.5)
    z = norm.ppf([0.025, 0.975])
    levels = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    return np.percentile(reps, 100 * levels)


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


def test_intervals_are_bca_and_agree_with_an_independent_bca(tmp_path):
    """With very unequal clips per subject the interval is BCa, and its bounds are the
    textbook BCa's (within Monte-Carlo error), computed here without mer.evaluation.stats."""
    exp = str(tmp_path / "unequal")
    write_meta(exp, [0, 1])
    rng = np.random.default_rng(7)
    sizes = [1, 2, 2, 3, 3, 4, 6, 10, 18, 30]  # a few subjects hold most clips
    for entry, acc in (("a", 0.75), ("b", 0.55)):
        folder = storage.join(exp, "configs", entry)
        storage.write_json(storage.join(folder, "params.json"), {"gamma": acc})
        for seed in (0, 1):
            for subject, size in zip(SUBJECTS, sizes, strict=True):
                label = rng.integers(0, 3, size)
                right = rng.random(size) < acc
                pred = np.where(right, label, (label + 1) % 3)
                write_fold(folder, seed, subject, label, pred)
    e = results.load_experiment(exp)
    c = results.compare(e, "a", e, "b")["uf1"]
    assert c["interval"] == "BCa"
    lo, hi = independent_bca(e.outer("a"), e.outer("b"), [0, 1], SUBJECTS)
    assert c["ci_low"] == pytest.approx(lo, abs=0.015)
    assert c["ci_high"] == pytest.approx(hi, abs=0.015)
    assert results.entry_scores(e, "a")["uf1_interval"] == "BCa"
    assert stats.effective_subjects(sizes) == pytest.approx(
        sum(sizes) ** 2 / sum(x * x for x in sizes)
    )
    assert stats.effective_subjects(sizes) < 5  # 10 subjects weigh like fewer than 5


def test_holm_adjusts_step_down_and_keeps_order():
    p = [0.01, 0.04, 0.03, 0.5, 0.001]
    # By hand: sorted 0.001*5, 0.01*4, 0.03*3, 0.04*2 (raised to 0.09), 0.5*1.
    assert stats.holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5, 0.005])
    assert stats.holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # monotone in p's order
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # never above 1


def test_comparing_rows_of_two_code_versions_is_refused_unless_allowed(experiment):
    from mer.errors import InputError

    folder = storage.join(experiment.uri, "configs", "near")
    for path in sorted(storage.listdir(storage.join(folder, "seed-0"))):
        uri = storage.join(folder, "seed-0", path)
        df = pd.read_parquet(uri).assign(code="0123abcd", platform="cpu A", threads=1)
        storage.write_parquet(pa.Table.from_pandas(df, preserve_index=False), uri)
    for entry in ("good",):
        for seed in (0, 1, 2):
            f = storage.join(experiment.uri, "configs", entry, f"seed-{seed}")
            for path in storage.listdir(f):
                uri = storage.join(f, path)
                df = pd.read_parquet(uri).assign(code="fedc9876", platform="cpu A", threads=1)
                storage.write_parquet(pa.Table.from_pandas(df, preserve_index=False), uri)
    exp = results.load_experiment(experiment.uri)
    with pytest.raises(InputError, match="different code.*--allow-mixed"):
        results.compare(exp, "good", exp, "near")
    c = results.compare(exp, "good", exp, "near", allow_mixed=True)
    assert any(m.startswith("code (") and "good: fedc9876" in m for m in c["mixed"])
    assert "near: 0123abcd + not recorded" in " ".join(c["mixed"])  # seeds 1-2 predate it
    assert "Made by different code" in results.format_compare(c)
    # The leaderboard combines its entries too: refused, or named when allowed.
    with pytest.raises(InputError, match="leaderboard .* different code"):
        results.check_provenance(exp)
    assert results.check_provenance(exp, allow_mixed=True)
    assert any("good: fedc9876" in m for m in results.summary(exp)["mixed"])


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


def test_a_report_whose_key_frame_table_is_gone_says_so(experiment, tmp_path):
    """The page names the table it could not read instead of failing or showing nothing."""
    gone = str(tmp_path / "moved-away")
    experiment.meta["keyframes"] = gone
    sheet = results_report.keyframe_sheet(experiment)
    assert isinstance(sheet, str) and gone in sheet
    page = results_report.html_report(experiment, images={}, sheet=sheet)
    assert "Key frames" in page and f"Not drawn: {gone}" in page
    experiment.meta.pop("keyframes")
    assert results_report.keyframe_sheet(experiment) is None  # a hand-made experiment
    assert "Key frames" not in results_report.html_report(experiment, images={})
