"""What a run shows on the console: our own progress lines, with counts and an ETA.

Ray's own logs go to the run's log file (`mer.cli.quiet_ray`); a stage prints one line per
unit of work it finishes (a key-frame chunk, a prior-learning epoch, a fold run), saying
how far it is and how long the rest should take. Tune trials report through
`tune_progress`, a Tune callback in the driver, so lines come from one process in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable


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
    """Units of work done out of a total, with elapsed time and a linear ETA."""

    def __init__(self, stage: str, total: int, emit: Callable[[str], None] = emit) -> None:
        self.stage, self.total, self.emit = stage, max(1, total), emit
        self.done = 0
        self.start = time.monotonic()

    def add(self, n: int = 1, note: str = "") -> None:
        self.done += n
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        tail = f", ETA {duration(eta)}" if self.done < self.total else ""
        self.emit(
            f"[{self.stage}] {self.done}/{self.total}{' ' + note if note else ''} "
            f"({duration(elapsed)}{tail})"
        )


def tune_progress(counter: Counter, describe: Callable[[dict, dict], str | None]):
    """A Tune callback that counts each trial result `describe(config, result)` names (None:
    not a unit of work) and prints it through `counter`."""
    import ray.tune

    class _Progress(ray.tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            note = describe(trial.config, result)
            if note is not None:
                counter.add(1, note)

        def on_trial_error(self, iteration, trials, trial, **info):
            counter.emit(f"[{counter.stage}] a run failed: {trial.error_file or trial}")

    return _Progress()
