"""What a run shows on the console: our own progress lines, with counts and an ETA.

Ray's own logs go to the run's log file (`mer.cli.quiet_ray`); a stage prints one line per
unit of work it finishes (a key-frame chunk, a prior-learning epoch, a fold run), saying
how far it is and how long the rest should take. Tune trials report through
`tune_progress`, a Tune callback in the driver, so lines come from one process in order.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def emit(line: str) -> None:
    print(line, flush=True)


class Counter:
    """Units of work done out of a total, with elapsed time and a linear ETA.

    Units may be named (`keys`): a named unit counts once, however often it is reported (a
    resumed trial reports again the units it finds done). Units a resumed run found done
    before it started (`keep`) count towards `done` but not towards the rate: elapsed time
    and ETA are this process's, from the units it computed itself.
    """

    def __init__(self, stage: str, total: int, emit: Callable[[str], None] = emit) -> None:
        self.stage, self.total, self.emit = stage, max(1, total), emit
        self.done = 0
        self.kept = 0  # units done before this process started
        self.seen: set[str] = set()
        self.start = time.monotonic()
        self.last = self.start  # when the last line was shown

    @contextlib.contextmanager
    def heartbeat(self, doing: str, every: float = 20.0) -> Iterator[None]:
        """While the block runs, a line every `every` seconds in which no unit finished
        (Ray starting a trainer's processes, a long first epoch): a job's log never goes
        quiet for minutes. The line says what is under way and how long it has been."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(min(every, max(0.01, self.last + every - time.monotonic()))):
                quiet = time.monotonic() - self.last
                if quiet >= every:
                    self.last = time.monotonic()
                    self.emit(
                        f"[{self.stage}] still at work: {doing} ({self.done} of {self.total} "
                        f"done, none for {duration(quiet)}; {duration(self.last - self.start)})"
                    )

        thread = threading.Thread(target=beat, name=f"mer-heartbeat-{self.stage}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def keep(self, keys) -> None:
        """Units found done before this process started (a resumed run)."""
        new = set(keys) - self.seen
        self.seen |= new
        self.done += len(new)
        self.kept += len(new)

    def add(self, n: int = 1, note: str = "", keys=None) -> None:
        """`n` units done, or the units named `keys` (those not counted yet)."""
        if keys is not None:
            new = [k for k in keys if k not in self.seen]
            if not new:
                return
            self.seen.update(new)
            n = len(new)
        self.done += n
        elapsed = time.monotonic() - self.start
        computed = self.done - self.kept
        tail = ""
        if self.done < self.total and computed > 0:
            tail = f", ETA {duration(elapsed / computed * (self.total - self.done))}"
        kept = f", {self.kept} done before" if self.kept else ""
        self.last = time.monotonic()
        self.emit(
            f"[{self.stage}] {self.done}/{self.total}{' ' + note if note else ''} "
            f"({duration(elapsed)}{kept}{tail})"
        )


# The counters of this process's Tune runs, by key. A Tune callback holds only its key: Tune
# pickles its callbacks with the experiment and `Tuner.restore` unpickles them in the next
# driver, where a callback holding the counter itself would count on the dead driver's clock
# and tally. Unpickled, a callback finds the counter the new driver registered under its key.
_LIVE: dict[str, tuple[Counter, Callable[[dict, dict], str | None]]] = {}


def tune_progress(
    counter: Counter, describe: Callable[[dict, dict], str | None], key: str | None = None
):
    """A Tune callback that counts each trial result `describe(config, result)` names (None:
    not a unit of work) and prints it through `counter`. A result's `units` names the units
    it covers (each counted once); without it a result is one unit. `key` names the run
    across restores (the experiment's URI); by default a fresh one."""
    import uuid

    key = key or uuid.uuid4().hex
    _LIVE[key] = (counter, describe)
    return _callback(key)


def _callback(key: str):
    import ray.tune

    class _Progress(ray.tune.Callback):
        def __reduce__(self):  # pickled as its key (see _LIVE)
            return _callback, (key,)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if key not in _LIVE:  # restored by a driver that registered no counter
                return
            counter, describe = _LIVE[key]
            note = describe(trial.config, result)
            if note is not None:
                counter.add(1, note, result.get("units"))

        def on_trial_error(self, iteration, trials, trial, **info):
            if key in _LIVE:
                counter = _LIVE[key][0]
                counter.emit(f"[{counter.stage}] a run failed: {trial.error_file or trial}")

    return _Progress()
