"""Leave-one-subject-out (LOSO) folds and subject-grouped inner splits of a clip manifest.

A subject is keyed by (dataset, subject): in the MEGC2019 composite the same subject name
in two datasets is two people, so two folds (68 folds for the 442 composite clips, See et
al., MEGC 2019). Indices are positions (0..len-1) into the manifest, not its index labels.
Inner splits group the *training* subjects of one fold into k parts, so a validation split
(or nested CV) never sees the held-out subject and never splits a subject across parts.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from numbers import Integral
from typing import NamedTuple

import numpy as np
import pandas as pd

from mer.errors import ConfigError, InputError


class Fold(NamedTuple):
    """One LOSO fold; unpacks as (test_key, train_idx, test_idx)."""

    test_key: str  # "dataset/subject"
    train_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def name(self) -> str:
        return fold_name(self.test_key)


class InnerFold(NamedTuple):
    """One inner split; unpacks as (val_subjects, inner_train_idx, inner_val_idx)."""

    val_subjects: tuple[str, ...]  # subject keys "dataset/subject"
    train_idx: np.ndarray
    val_idx: np.ndarray


@dataclass(frozen=True)
class FoldSpec:
    """One LOSO fold of a key-frame table, by subject keys (picklable, JSON-able)."""

    index: int  # position in the sorted folds
    key: str  # the held-out "dataset/subject"
    name: str  # fold_name(key)
    train_subjects: list[str]
    test_subjects: list[str]


@dataclass(frozen=True)
class FoldRun:
    """One fold run: a model trained on `train_subjects` and tested on `test_subjects`, from
    the prior named `prior`. Outer runs are the LOSO folds; inner runs split an outer run's
    training subjects (nested search). A shared prior (pretrain.prior_groups) also names the
    subjects it learns on and the index that seeds it."""

    id: str
    index: int  # seeds the run's per-epoch generators (mer.train.data)
    kind: str  # "outer" or "inner"
    outer: str  # the outer run's id (its own for an outer run)
    train_subjects: list[str]
    test_subjects: list[str]
    prior: str  # id of the prior it starts from (its own id: learnt on train_subjects)
    prior_subjects: list[str] | None = None  # shared priors only
    prior_index: int | None = None  # shared priors only

    def to_dict(self) -> dict:
        """As stored in an experiment's fold_runs.json (the shared-prior fields only where
        the run has a shared prior)."""
        d = dataclasses.asdict(self)
        if self.prior_subjects is None:
            del d["prior_subjects"], d["prior_index"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FoldRun:
        return cls(**d)


def subject_keys(manifest: pd.DataFrame) -> np.ndarray:
    """The "dataset/subject" key of every manifest row, as a numpy array of str."""
    missing = [c for c in ("dataset", "subject") if c not in manifest.columns]
    if missing:
        raise InputError(f"manifest lacks columns {missing}; LOSO folds need dataset and subject.")
    if len(manifest) == 0:
        raise InputError("manifest is empty: there are no clips to split into folds.")
    cols = manifest[["dataset", "subject"]]
    null = cols.isna().any(axis=1).to_numpy()
    if null.any():
        i = int(np.argmax(null))
        raise InputError(f"manifest row {i} has no dataset or subject; fix or drop that clip.")
    keys = cols["dataset"].astype(str) + "/" + cols["subject"].astype(str)
    return keys.to_numpy(dtype=str)


def loso_folds(manifest: pd.DataFrame) -> list[Fold]:
    """One fold per (dataset, subject), sorted by key; train is every other subject's clips."""
    keys = subject_keys(manifest)
    unique = np.unique(keys)  # sorted
    if len(unique) < 2:
        raise InputError(
            f"manifest holds one subject ({unique[0]}); leave-one-subject-out needs at least two."
        )
    positions = np.arange(len(keys))
    return [Fold(str(k), positions[keys != k], positions[keys == k]) for k in unique]


def fold_name(test_key: str) -> str:
    """A filesystem-safe fold name: "casme2/sub01" -> "casme2-sub01"."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", test_key.replace("/", "-", 1))


def inner_folds(
    manifest: pd.DataFrame, train_idx: np.ndarray, k: int, seed: int = 0
) -> list[InnerFold]:
    """Split the subjects of `train_idx` into k groups; each group is one validation split.

    Subjects are shuffled with `seed` and dealt into k groups whose sizes differ by at most
    one subject (clip counts may differ). Returned indices are positions into the manifest,
    each a subset of `train_idx`, sorted.
    """
    keys = subject_keys(manifest)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if train_idx.size == 0:
        raise InputError("train_idx is empty: there are no training clips to split.")
    if train_idx.min() < 0 or train_idx.max() >= len(keys):
        raise InputError(
            f"train_idx holds positions outside the manifest's {len(keys)} rows; pass positions "
            "from loso_folds."
        )
    train_idx = np.unique(train_idx)
    subjects = np.unique(keys[train_idx])
    if isinstance(k, bool) or not isinstance(k, Integral) or not 2 <= k <= len(subjects):
        raise ConfigError(
            f"inner folds k={k!r} must be an integer from 2 to the {len(subjects)} training "
            "subjects."
        )
    order = np.random.default_rng(seed).permutation(len(subjects))
    folds = []
    for group in np.array_split(subjects[order], k):
        in_val = np.isin(keys[train_idx], group)
        folds.append(
            InnerFold(tuple(sorted(group.tolist())), train_idx[~in_val], train_idx[in_val])
        )
    return folds


def subject_groups(clip_counts: dict[str, int], n: int) -> list[tuple[str, ...]]:
    """Split subjects into `n` groups balanced by clips, deterministically (shared priors).

    Subjects are dealt largest first (ties by key) to the group holding the fewest clips so
    far (ties: the lower group), so the groups' clip totals differ by at most the largest
    subject's clips. Depends on the subjects and their clip counts only, never on a seed or
    on which folds run. Each group is sorted; groups are in the order they were opened.
    """
    subjects = sorted(clip_counts)
    if isinstance(n, bool) or not isinstance(n, Integral) or not 2 <= n <= len(subjects):
        raise ConfigError(
            f"pretrain.prior_groups={n!r} must be an integer from 2 to the {len(subjects)} "
            "subjects it splits (null: one prior per fold run)."
        )
    order = sorted(subjects, key=lambda s: (-int(clip_counts[s]), s))
    groups: list[list[str]] = [[] for _ in range(n)]
    totals = [0] * n
    for s in order:
        g = min(range(n), key=lambda i: (totals[i], i))
        groups[g].append(s)
        totals[g] += int(clip_counts[s])
    return [tuple(sorted(g)) for g in groups]
