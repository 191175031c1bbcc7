"""Progress lines: counts, elapsed time and ETA, also for a run resumed by a new driver."""

from __future__ import annotations

import time
from types import SimpleNamespace

import cloudpickle

from mer import progress


def test_units_done_before_count_but_do_not_set_the_eta():
    lines: list[str] = []
    c = progress.Counter("search", 10, lines.append)
    c.keep(["a", "b", "c", "d"])  # a resumed run: 4 fold runs found done
    c.start = time.monotonic() - 60  # this process has worked one minute
    c.add(1, "fold runs", keys=["d", "e"])  # "d" reported again by its resumed trial
    assert lines == ["[search] 5/10 fold runs (1m00s, 4 done before, ETA 5m00s)"]
    c.add(1, keys=["e"])  # nothing new: no line
    c.add(1, keys=["f"])
    assert len(lines) == 2 and "6/10" in lines[-1] and "ETA 2m00s" in lines[-1]


def test_a_report_of_units_done_before_only_gives_no_eta():
    lines: list[str] = []
    c = progress.Counter("search", 10, lines.append)
    c.keep(["a", "b"])
    c.add(1, keys=["a", "b"])  # a resumed trial's first report: nothing new
    assert lines == [] and c.done == 2
    c.add(0)  # a line with nothing computed in this process: no rate, so no ETA
    assert lines == ["[search] 2/10 (0s, 2 done before)"]


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
    counter.keep(["a/seed-0/s00.parquet", "a/seed-0/s01.parquet"])
    progress.tune_progress(counter, describe, "exp-uri")  # the new driver, before restoring
    restored = cloudpickle.loads(blob)
    trial = SimpleNamespace(config={"c": "a"})
    units = ["a/seed-0/s00.parquet", "a/seed-0/s01.parquet", "a/seed-0/s02.parquet"]
    restored.on_trial_result(0, [trial], trial, {"run": "s02", "units": units})
    assert old == [] and counter.done == 3
    assert len(new) == 1 and new[0].startswith("[search] 3/8 config a run s02 (")
    assert "2 done before" in new[0]


def test_a_quiet_stage_still_shows_a_line_while_it_works():
    # Prior learning in a submitted job: Ray starts a trainer's processes and the first epoch
    # runs before any unit finishes; the log must not go quiet that long.
    lines: list[str] = []
    c = progress.Counter("pretrain", 4, lines.append)
    with c.heartbeat("prior learning: 4 priors in 1 run(s)", every=0.05):
        deadline = time.monotonic() + 30
        while len(lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        c.add(1, "epochs")
    assert lines[0].startswith("[pretrain] still at work: prior learning: 4 priors in 1 run(s)")
    assert "0 of 4 done" in lines[0]
    assert any(x.startswith("[pretrain] 1/4 epochs") for x in lines)
    time.sleep(0.2)
    after = len(lines)
    time.sleep(0.2)
    assert len(lines) == after  # the heartbeat stopped with its block
