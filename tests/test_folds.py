"""LOSO folds keyed by (dataset, subject) and subject-grouped inner splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mer.errors import ConfigError, InputError
from mer.folds import Fold, fold_name, inner_folds, loso_folds, subject_groups


def _manifest(seed: int = 0) -> pd.DataFrame:
    # "s01" exists in both casme2 and smic: two different people, two folds. The index is
    # shuffled and non-contiguous so that positional indices differ from index labels.
    rng = np.random.default_rng(seed)
    subjects = [("casme2", "sub01"), ("casme2", "sub02"), ("casme2", "s01"), ("samm", "006"),
                ("samm", "007"), ("smic", "s01"), ("smic", "s2")]  # fmt: skip
    rows = [
        {"dataset": d, "subject": s, "clip": f"{s}_{i}", "label": int(rng.integers(0, 3))}
        for d, s in subjects
        for i in range(int(rng.integers(1, 5)))
    ]
    df = pd.DataFrame(rows).sample(frac=1, random_state=seed)
    df.index = df.index * 10 + 3
    return df


def _keys(df: pd.DataFrame) -> np.ndarray:
    return (df["dataset"] + "/" + df["subject"]).to_numpy()


def test_one_fold_per_dataset_subject():
    df = _manifest()
    folds = loso_folds(df)
    keys = _keys(df)
    assert [f.test_key for f in folds] == sorted(set(keys))
    assert len(folds) == 7
    assert {"casme2/s01", "smic/s01"} <= {f.test_key for f in folds}
    for fold in folds:
        assert isinstance(fold, Fold)
        test_key, train_idx, test_idx = fold  # unpacks as a 3-tuple
        assert len(np.intersect1d(train_idx, test_idx)) == 0
        np.testing.assert_array_equal(np.sort(np.r_[train_idx, test_idx]), np.arange(len(df)))
        assert set(keys[test_idx]) == {test_key}
        assert test_key not in set(keys[train_idx])
        # Positional: iloc finds the subject's rows even though the index is shuffled.
        assert (df.iloc[test_idx]["dataset"] + "/" + df.iloc[test_idx]["subject"] == test_key).all()
    # Every row is tested exactly once over all folds.
    all_test = np.concatenate([f.test_idx for f in folds])
    np.testing.assert_array_equal(np.sort(all_test), np.arange(len(df)))


def test_fold_name_is_filesystem_safe():
    assert fold_name("casme2/sub01") == "casme2-sub01"
    assert fold_name("samm/006") == "samm-006"
    assert fold_name("x/a b:c/d") == "x-a_b_c_d"
    assert loso_folds(_manifest())[0].name == fold_name(loso_folds(_manifest())[0].test_key)


def test_loso_errors():
    with pytest.raises(InputError, match="empty"):
        loso_folds(pd.DataFrame(columns=["dataset", "subject"]))
    with pytest.raises(InputError, match="lacks columns"):
        loso_folds(pd.DataFrame({"subject": ["a", "b"]}))
    with pytest.raises(InputError, match="one subject"):
        loso_folds(pd.DataFrame({"dataset": ["smic", "smic"], "subject": ["s1", "s1"]}))
    with pytest.raises(InputError, match="row 1"):
        loso_folds(pd.DataFrame({"dataset": ["smic", "smic"], "subject": ["s1", None]}))


@pytest.mark.parametrize("k", [2, 3, 6])
def test_inner_folds_group_training_subjects(k):
    df = _manifest()
    keys = _keys(df)
    fold = loso_folds(df)[2]
    inner = inner_folds(df, fold.train_idx, k, seed=1)
    assert len(inner) == k
    seen = []
    for val_subjects, train_idx, val_idx in inner:
        assert len(np.intersect1d(train_idx, val_idx)) == 0
        np.testing.assert_array_equal(np.sort(np.r_[train_idx, val_idx]), fold.train_idx)
        assert set(keys[val_idx]) == set(val_subjects)
        assert not set(keys[train_idx]) & set(val_subjects)  # never a subject in both
        assert fold.test_key not in val_subjects
        seen += list(val_subjects)
    # Each training subject validates exactly once; group sizes differ by at most one.
    assert sorted(seen) == sorted(set(keys[fold.train_idx]))
    sizes = [len(f.val_subjects) for f in inner]
    assert max(sizes) - min(sizes) <= 1


def test_inner_folds_seeded():
    df = _manifest()
    train = loso_folds(df)[0].train_idx
    a = [f.val_subjects for f in inner_folds(df, train, 3, seed=0)]
    assert a == [f.val_subjects for f in inner_folds(df, train, 3, seed=0)]
    others = [[f.val_subjects for f in inner_folds(df, train, 3, seed=s)] for s in range(1, 6)]
    assert any(o != a for o in others)


def test_inner_folds_errors():
    df = _manifest()
    train = loso_folds(df)[0].train_idx  # 6 training subjects
    with pytest.raises(ConfigError, match="k=7"):
        inner_folds(df, train, 7)
    with pytest.raises(ConfigError, match="k=1"):
        inner_folds(df, train, 1)
    with pytest.raises(InputError, match="empty"):
        inner_folds(df, np.array([], dtype=int), 2)
    with pytest.raises(InputError, match="outside"):
        inner_folds(df, np.array([0, len(df)]), 2)
    with pytest.raises(InputError, match="empty"):
        inner_folds(df.iloc[:0], train, 2)


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_subject_groups_partition_subjects_balanced_by_clips(n):
    counts = {f"d/s{i:02d}": int(c) for i, c in enumerate([9, 1, 4, 4, 7, 2, 2, 3, 5, 8, 1, 6])}
    groups = subject_groups(counts, n)
    assert len(groups) == n and all(groups)
    flat = [s for g in groups for s in g]
    assert sorted(flat) == sorted(counts)  # every subject in exactly one group
    totals = [sum(counts[s] for s in g) for g in groups]
    # dealt largest first to the lightest group: totals differ by at most the largest subject
    assert max(totals) - min(totals) <= max(counts.values())
    assert subject_groups(dict(reversed(counts.items())), n) == groups  # order-independent


def test_subject_groups_errors_name_the_setting():
    counts = {"d/a": 2, "d/b": 3, "d/c": 1}
    for n in (1, 4, 2.0, True):
        with pytest.raises(ConfigError, match="pretrain.prior_groups"):
            subject_groups(counts, n)
