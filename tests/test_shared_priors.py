"""Shared priors (`pretrain.prior_groups`): no prior sees its fold's test subject, outer or
inner, checked on the plan and read back from the subject lists stored with the priors;
grouping deterministic and balanced; every N keys its own priors; the default keeps the
per-fold priors and their keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mer import config, layout
from mer.keyframes.table import ClipTable, fold_specs, nested_runs, outer_runs, prior_groups_of
from mer.train import checkpoints
from mer.train.pretrain import prior_jobs, prior_leaks

# Uneven clips per subject, two datasets sharing a subject name (two people).
CLIPS = {"a/s01": 7, "a/s02": 2, "a/s03": 5, "a/s04": 3, "b/s01": 6, "b/s05": 1, "b/s06": 4,
         "b/s07": 2, "b/s08": 5}  # fmt: skip


def _table() -> ClipTable:
    rows = [
        {"dataset": key.split("/")[0], "subject": key.split("/")[1], "clip": f"{key}-{i}",
         "label": i % 3}
        for key, n in CLIPS.items()
        for i in range(n)
    ]  # fmt: skip
    clips = pd.DataFrame(rows)
    return ClipTable(meta={}, clips=clips, frames=np.zeros((len(clips), 1, 1, 1, 1), np.uint8))


def _cfg(root, *extra):
    return config.load(None, [f"root={root}", *extra])


def _plan(n, protocol, inner_prior="own"):
    table = _table()
    folds = fold_specs(table)
    if protocol == "outer":
        return outer_runs(folds, prior_groups_of(table, n))
    return nested_runs(table, folds, 3, seed=0, inner_prior=inner_prior, prior_groups=n)


@pytest.mark.parametrize("n", [2, 3, 4, 9])
@pytest.mark.parametrize("protocol", ["outer", "nested"])
def test_no_prior_sees_its_folds_test_subjects_outer_and_inner(n, protocol):
    runs = _plan(n, protocol)
    outer_test = {r.id: set(r.test_subjects) for r in runs if r.kind == "outer"}
    assert len(outer_test) == len(CLIPS)
    for run in runs:
        seen = set(run.prior_subjects)
        assert not seen & set(run.test_subjects), run.id
        assert not seen & outer_test[run.outer], run.id  # inner: nor the outer test subject
        assert seen <= set(run.train_subjects)  # a prior learns on training subjects only
    priors = {r.prior for r in runs if r.kind == "outer"}
    assert len(priors) == n  # one per group, shared by the group's folds


@pytest.mark.parametrize("n", [None, 2, 4])
@pytest.mark.parametrize("protocol", ["outer", "nested"])
def test_each_priors_probe_subjects_are_held_out_subjects_it_never_saw(tmp_path, n, protocol):
    runs = _plan(n, protocol)
    outer_test = {r.id: set(r.test_subjects) for r in runs if r.kind == "outer"}
    jobs = prior_jobs(_cfg(tmp_path), runs, [0])
    for job in jobs:
        users = [r for r in runs if r.prior == job.run]
        assert set(job.held_out) == {s for r in users for s in r.test_subjects}
        assert job.held_out and not set(job.held_out) & set(job.train_subjects)
        for r in users:  # an inner prior is probed on inner validation subjects only
            if r.kind == "inner":
                assert not set(job.held_out) & outer_test[r.outer]


def test_inner_runs_share_priors_inside_each_outer_training_set():
    runs = _plan(2, "nested")
    for outer in (r for r in runs if r.kind == "outer"):
        inner = [r for r in runs if r.outer == outer.id and r.kind == "inner"]
        assert len(inner) == 3 and len({r.prior for r in inner}) == 2
        for r in inner:  # the prior learns on the outer training subjects outside its group
            assert set(r.prior_subjects) < set(outer.train_subjects)


def test_inner_prior_outer_reuses_the_outer_folds_shared_prior_and_is_flagged_not_leaky(tmp_path):
    runs = _plan(3, "nested", inner_prior="outer")
    cfg = _cfg(tmp_path, "pretrain.prior_groups=3")
    for job in prior_jobs(cfg, runs, [0]):
        checkpoints.mark_done(job.dir, job.train_subjects, [])
    assert len(prior_jobs(cfg, runs, [0])) == 3
    assert prior_leaks(cfg, runs, [0]) == []  # outer test subjects are still never seen


@pytest.mark.parametrize("protocol", ["outer", "nested"])
def test_stored_subject_lists_pass_the_leak_check_and_a_leaky_prior_is_caught(tmp_path, protocol):
    cfg = _cfg(tmp_path, "pretrain.prior_groups=4")
    runs = _plan(4, protocol)
    jobs = prior_jobs(cfg, runs, [0, 1])
    assert len({j.dir for j in jobs}) == len(jobs)  # one folder per (seed, prior)
    for job in jobs:
        checkpoints.mark_done(job.dir, job.train_subjects, [])
    assert prior_leaks(cfg, runs, [0, 1]) == []
    # A prior that saw every subject is reported for every run that starts from it.
    victim = jobs[0]
    checkpoints.mark_done(victim.dir, sorted(CLIPS), [])
    leaks = prior_leaks(cfg, runs, [0, 1])
    users = [r for r in runs if r.prior == victim.run]
    assert len(leaks) == len(users) > 0 and all(victim.run in line for line in leaks)


def test_a_prior_not_learnt_is_reported(tmp_path):
    cfg = _cfg(tmp_path, "pretrain.prior_groups=2")
    runs = _plan(2, "outer")
    assert len(prior_leaks(cfg, runs, [0])) == len(runs)


def test_grouping_is_deterministic_and_the_same_whichever_folds_run():
    table = _table()
    assert prior_groups_of(table, 3) == prior_groups_of(table, 3)
    everyone = outer_runs(fold_specs(table), prior_groups_of(table, 3))
    some = outer_runs(fold_specs(table)[2:5], prior_groups_of(table, 3))
    by_id = {r.id: r for r in everyone}
    assert all(r.prior == by_id[r.id].prior for r in some)


def test_each_n_keys_its_own_priors(tmp_path):
    dirs = {}
    for n in (None, 2, 3, 4):
        extra = [] if n is None else [f"pretrain.prior_groups={n}"]
        cfg = _cfg(tmp_path, *extra)
        dirs[n] = {j.dir for j in prior_jobs(cfg, _plan(n, "outer"), [0])}
    hashes = {n: layout.prior_hash(_cfg(tmp_path, f"pretrain.prior_groups={n}")) for n in (2, 3)}
    assert hashes[2] != hashes[3] != layout.prior_hash(_cfg(tmp_path))
    for a in dirs:
        for b in dirs:
            assert a == b or not dirs[a] & dirs[b]  # no N ever finds another N's priors


def test_default_is_one_prior_per_fold_run_under_the_keys_it_had(tmp_path):
    cfg = _cfg(tmp_path)
    table = _table()
    assert prior_groups_of(table, cfg.pretrain.prior_groups) is None
    runs = nested_runs(table, fold_specs(table), 3, seed=0)
    assert all(r.prior == r.id and r.prior_subjects is None for r in runs)
    jobs = prior_jobs(cfg, runs, [0])
    assert [(j.run, j.index, j.train_subjects) for j in jobs] == [
        (r.id, r.index, r.train_subjects) for r in runs
    ]
    # The setting is absent from every key at its default, so those hashes are the ones
    # written before shared priors existed (per-fold priors, experiments, finetune runs).
    for settings in (
        layout.prior_settings(cfg),
        layout.experiment_settings(cfg),
        layout.finetune_settings(cfg, ["a-s01"]),
    ):
        assert not any("prior_groups" in k for k in settings)
    shared = _cfg(tmp_path, "pretrain.prior_groups=2")
    assert layout.prior_settings(shared)["pretrain.prior_groups"] == 2
    assert "pretrain.prior_groups" in layout.experiment_settings(shared)


def test_more_groups_than_subjects_is_one_sentence_naming_the_setting():
    from mer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pretrain.prior_groups=10 .* 9 subjects"):
        prior_groups_of(_table(), 10)


@pytest.mark.parametrize("protocol", ["loso", "nested"])
def test_the_search_plans_shared_priors_from_the_config(tmp_path, protocol):
    from mer.evaluation.search import fold_runs

    extra = ["search.protocol=nested", "search.inner_k=3"] if protocol == "nested" else []
    cfg = _cfg(tmp_path, "pretrain.prior_groups=3", *extra)
    table = _table()
    runs = fold_runs(cfg, table, fold_specs(table))
    assert {r.kind for r in runs} == ({"outer", "inner"} if extra else {"outer"})
    assert len({r.prior for r in runs if r.kind == "outer"}) == 3
    for job in prior_jobs(cfg, runs, [0]):
        checkpoints.mark_done(job.dir, job.train_subjects, [])
    assert prior_leaks(cfg, runs, [0]) == []
