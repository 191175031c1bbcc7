"""Progress lines: counts, elapsed time and ETA, also for a run resumed by a new driver."""

from __future__ import annotations

import time
from types import SimpleNamespace

import cloudpickle

from mer import progress


def test_units_kept_from_before_count_but_do_not_set_the_eta():
    lines: list[str] = []
    c = progress.Counter("search", 10, lines.append)
    c.start = time.monotonic() - 60  # this process has worked one minute
    c.add(5, "fold runs", reused=4)  # a resumed run: 4 found done, 1 computed in that minute
    assert lines[-1].startswith("[search] 5/10 fold runs (1m00s, 4 kept from before, ETA 5m")
    c.add(1)
    assert "ETA 2m0" in lines[-1]  # 2 computed in a minute: 4 to go at 30 s each


def test_nothing_computed_yet_gives_no_eta():
    lines: list[str] = []
    c = progress.Counter("search", 10, lines.append)
    c.add(3, reused=3)
    assert "ETA" not in lines[-1] and "3 kept from before" in lines[-1]


def test_a_restored_callback_counts_on_the_new_drivers_counter():
    # Tune pickles the callbacks with the experiment; Tuner.restore unpickles them in the next
    # driver. The restored callback must report through what that driver registered under
    # the same key, not through a copy of the dead driver's counter and clock.
    def describe(config, result):
        return f"config {config['c']} run {result['run']}"

    old: list[str] = []
    blob = cloudpickle.dumps(
        progress.tune_progress(progress.Counter("search", 8, old.append), describe, "exp-uri")
    )
    new: list[str] = []
    counter = progress.Counter("search", 8, new.append)
    progress.tune_progress(counter, describe, "exp-uri")  # the new driver, before restoring
    restored = cloudpickle.loads(blob)
    trial = SimpleNamespace(config={"c": "a"})
    restored.on_trial_result(0, [trial], trial, {"run": "s01", "units_new": 3, "units_reused": 2})
    assert old == []
    assert counter.done == 3 and counter.reused == 2
    assert new == [new[0]] and new[0].startswith("[search] 3/8 config a run s01 (")
    assert "2 kept from before" in new[0]
