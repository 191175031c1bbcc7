"""Sizing runs to the cluster: every reservation fits at once, or one sentence says why not."""

from __future__ import annotations

import pytest

from mer import config
from mer.errors import ConfigError
from mer.train.runtime import TRIAL_CPU, plan_resources


def resources(*overrides):
    return config.load(None, list(overrides)).resources


def test_derived_settings_fit_two_runs_on_two_cpus():
    r, n = plan_resources(resources(), runs=4, cluster={"CPU": 2})
    assert n == 2
    assert n * (r.workers * r.cpus_per_worker + TRIAL_CPU) <= 2
    r, n = plan_resources(resources("resources.workers=2"), runs=3, cluster={"CPU": 2})
    assert n == 1 and 2 * r.cpus_per_worker + TRIAL_CPU <= 2


def test_a_runs_cpus_do_not_depend_on_how_many_runs_there_are():
    # A run's CPUs set its torch thread count, and another thread count gives other numbers:
    # one run alone (a one-configuration search, the last prior of a resumed stage) gets
    # what it would get beside others.
    many, n = plan_resources(resources(), runs=4, cluster={"CPU": 2})
    one, n1 = plan_resources(resources(), runs=1, cluster={"CPU": 2})
    assert (n, n1) == (2, 1) and one.cpus_per_worker == many.cpus_per_worker == 0.99
    on_gpu, n = plan_resources(
        resources("resources.gpus_per_worker=1"), runs=1, cluster={"CPU": 16, "GPU": 2}
    )
    assert n == 1 and on_gpu.cpus_per_worker == 7.99  # the node holds two such runs
    # Set by hand, concurrency is still capped at the number of runs.
    r, n = plan_resources(resources("resources.max_concurrent=2"), runs=1, cluster={"CPU": 2})
    assert n == 1 and r.cpus_per_worker == 0.99


def test_hand_set_settings_that_cannot_all_start_are_refused():
    # The demo's old settings: two trials of one 1-CPU worker each, plus 0.01 per trial.
    bad = resources("resources.cpus_per_worker=1", "resources.max_concurrent=2")
    with pytest.raises(ConfigError, match=r"max_concurrent=2.*2\.02 CPUs.*has 2") as e:
        plan_resources(bad, runs=4, cluster={"CPU": 2})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="one run reserves"):
        plan_resources(resources("resources.cpus_per_worker=3"), runs=1, cluster={"CPU": 2})
    r, n = plan_resources(resources("resources.cpus_per_worker=0.99"), runs=4, cluster={"CPU": 2})
    assert n == 2  # what fits, when concurrency is left to be derived


def test_gpus_limit_concurrency_and_a_missing_gpu_is_named():
    r, n = plan_resources(
        resources("resources.gpus_per_worker=0.5"), runs=8, cluster={"CPU": 16, "GPU": 1}
    )
    assert n == 2
    with pytest.raises(ConfigError, match="GPUs"):
        plan_resources(resources("resources.gpus_per_worker=1"), runs=1, cluster={"CPU": 4})
