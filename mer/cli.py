"""Command-line plumbing shared by the `jobs/` entry points: config arguments, checks that
run before Ray starts, Ray start-up, and a quiet console.

By default the console shows our own progress lines (`[stage] done/total ... ETA`) and
results; Ray's own log lines and its workers' output go to the run's log file
(`<root>/logs/<time>.log` for a local root, a local temporary file otherwise), whose path is
printed first. `--verbose` shows everything on the console instead.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from mer import config as config_mod
from mer import storage
from mer.config import PipelineConfig
from mer.errors import ConfigError, MERError
from mer.storage import check_reachable, is_remote, join

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDER = "YOUR-BUCKET"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"), help="YAML config")
    p.add_argument("--root", help="run root (local path or s3://bucket/prefix); overrides root")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set finetune.gamma=1.5 (repeatable)",
    )
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--num-cpus", type=float, help="logical CPUs of a local Ray (default: cores)")
    p.add_argument(
        "--verbose", action="store_true", help="Ray's logs and workers' output on the console"
    )
    return p


def add_resource_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", nargs="*", help="fold keys (dataset/subject); default all")
    p.add_argument("--workers", type=int, help="Ray Train workers (DDP) per run")
    p.add_argument("--gpus-per-worker", type=float)
    p.add_argument("--cpus-per-worker", type=float)


def add_generator_set(p: argparse.ArgumentParser, example: str, prefix: str = ""):
    """`--set KEY=VALUE` (repeatable) for a synthetic-data job: KEY a generator option, VALUE
    read as JSON (a plain word stays text: layout=smic); `prefix`, the config's spelling of
    the same option (data.synthetic.), is dropped from KEY. Returns the KEY=VALUE parser."""

    def key_value(text: str) -> tuple[str, object]:
        key, sep, value = text.partition("=")
        key = key.removeprefix(prefix)
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. {example}")
        try:
            return key, json.loads(value)
        except json.JSONDecodeError:
            return key, value

    p.add_argument(
        "--set",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a generator option, e.g. --set {example} (repeatable)",
    )
    return key_value


def load_config(args: argparse.Namespace, extra: list[str] | None = None) -> PipelineConfig:
    """The resolved config of a job's arguments, checked (storage included) before Ray starts."""
    overrides = list(args.set)
    if args.root:
        overrides.append(f"root={args.root}")
    for name in ("workers", "gpus_per_worker", "cpus_per_worker"):
        if getattr(args, name, None) is not None:
            overrides.append(f"resources.{name}={getattr(args, name)}")
    overrides += extra or []
    return settle(config_mod.load(args.config, overrides), args.config)


def settle(cfg: PipelineConfig, source: str | None) -> PipelineConfig:
    """A loaded config made ready to run: a local root made absolute, storage checked, a
    real dataset with the demo's tiny model warned about. Returns `cfg`."""

    # A job submitted with `ray job submit` runs in an unpacked copy of the checkout: a
    # relative root would land there. Local roots are made absolute where the job starts.
    if not is_remote(cfg.root):
        if os.environ.get("RAY_JOB_ID") and not os.path.isabs(cfg.root):
            print(
                f"warning: root {cfg.root!r} is relative inside a submitted job; outputs go "
                "to the job's working copy. Pass --root with an absolute path or s3://.",
                file=sys.stderr,
            )
        cfg.root = os.path.abspath(cfg.root)
    check_storage(cfg)
    warn_small_model(cfg, source)
    return cfg


def check_storage(cfg: PipelineConfig) -> None:
    """Every URI the config names is usable: no placeholder bucket, the bucket exists and the
    credentials reach it (one sentence naming the URI, before any work)."""

    uris = [("root", cfg.root), ("data.root", cfg.data.root)]
    uris.append(("data.annotations", cfg.data.annotations or ""))
    for name, uri in uris:
        if PLACEHOLDER in uri:
            raise ConfigError(
                f"config {name}={uri} still holds the placeholder {PLACEHOLDER}; set it to your "
                "bucket (e.g. --root s3://my-bucket/mer)"
            )
    for name, uri in uris:
        if uri:
            check_reachable(uri, name)


def warn_small_model(cfg: PipelineConfig, config_path: str | None) -> None:
    """Say so when a real dataset is run with the CPU demo's tiny model settings."""
    if cfg.data.dataset == "synthetic":
        return
    small = cfg.model.width < 0.5 or cfg.keyframes.size < 64
    if small:
        print(
            f"warning: data.dataset={cfg.data.dataset} runs with a demo-sized model "
            f"(model.width={cfg.model.width:g}, keyframes.size={cfg.keyframes.size}, from "
            f"{config_path or 'the defaults'}); for real data start from configs/"
            f"{cfg.data.dataset}.yaml or set model.width and keyframes.size",
            file=sys.stderr,
        )


# The folders a job created for its log (a new local root and its new parents, deepest
# first) and the log: a job that then fails on bad input before writing anything else removes
# them again (main), so a mistyped --root or a command run too early leaves no folder behind.
_CREATED: list[str] = []
_LOG: list[str] = []


def log_file(cfg: PipelineConfig) -> tuple[str, str]:
    """(local file Ray's logs of this run go to, where they end up): <root>/logs/<time>.log.
    For an S3 root the local file is temporary: uploaded there and removed at exit, so a
    run leaves nothing outside S3."""

    name = time.strftime("run-%Y%m%d-%H%M%S.log")
    if not is_remote(cfg.root):
        folder = os.path.join(cfg.root, "logs")
        missing = Path(os.path.abspath(folder))
        while not missing.exists():
            _CREATED.append(str(missing))
            missing = missing.parent
        os.makedirs(folder, exist_ok=True)
        _LOG.append(os.path.join(folder, name))
        return os.path.join(folder, name), os.path.join(folder, name)
    fd, path = tempfile.mkstemp(prefix="mer-run-", suffix=".log")
    os.close(fd)
    uri = join(cfg.root, "logs", name)
    atexit.register(_upload_log, path, uri)
    return path, uri


def _upload_log(path: str, uri: str) -> None:

    try:
        with open(path, "rb") as f:
            storage.write_bytes(uri, f.read())
    except Exception as e:  # the run's result does not depend on its log
        print(f"warning: the log {path} was not uploaded to {uri} ({e})", file=sys.stderr)
        return
    os.remove(path)


def quiet_ray(path: str) -> None:
    """Send Ray's Python log records to `path` instead of the console."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "ray.data", "ray.tune", "ray.train", "filelock"):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)


# A log line of Ray's C++ core ("[2026-11-30 11:16:29,297 E 8228 8228] core_worker.cc:2465: ..."):
# the driver's core worker writes it to its own log file and, at ERROR, to stderr too.
_NATIVE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,]+ [A-Z] \d+ \d+\] \S+\.cc:\d+:")
# The raylet's "WARNING: 28 PYTHON worker processes have been started on node ... which is
# 14x the maximum expected startup concurrency (2)", sent each time the count reaches another
# multiple (from 4x) of the raylet's start-up concurrency (the smaller of its cores and CPUs).
# The raylet publishes it as an error message of the driver's job; the driver's error listener
# prints it to stdout as "(raylet) ..." through Ray's log deduplicator, which prints the first
# at once and holds the later ones (same text but the numbers) until its window passes or
# the driver disconnects. Each configuration and each prior run is a Tune trial, a Train
# controller and its workers, so a job holds a few dozen Python processes, and on a small
# head started without RAY_worker_maximum_startup_concurrency (docs/cluster.md) the warning
# came a dozen times into the job's output. It asks nothing of the user: the log file keeps
# it. Other raylet messages (a worker killed for memory, a crashed actor) still show.
_STARTUP_WARNING = re.compile(rb"worker processes have been started on node.*startup concurrency")


def _route_lines(fd: int, to_log, path: str) -> None:
    """Route the lines on file descriptor `fd` for which `to_log(line)` holds to `path`; pass
    the rest through.

    Called after Ray has started its daemons, so only this process's output is piped."""
    real = os.dup(fd)
    r, w = os.pipe()
    os.dup2(w, fd)
    os.close(w)

    def pump() -> None:
        with os.fdopen(r, "rb", buffering=0) as src, open(path, "ab", buffering=0) as log:
            pending = b""
            while chunk := src.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if to_log(line):
                        log.write(line + b"\n")
                    else:
                        os.write(real, line + b"\n")
            if pending:
                os.write(real, pending)

    thread = threading.Thread(target=pump, name=f"mer-fd{fd}", daemon=True)
    thread.start()

    def restore() -> None:
        (sys.stdout if fd == 1 else sys.stderr).flush()
        os.dup2(real, fd)  # closes the pipe's last writer: the pump drains and stops
        thread.join(timeout=5)

    atexit.register(restore)


def connect_ray(args: argparse.Namespace, cfg: PipelineConfig | None = None) -> None:
    """Join the cluster a job was submitted to, or start a local Ray for this process."""
    import ray

    # Ctrl+C stops the job. Tune's own handler would save its state and return from fit() as
    # if it had finished, and the job would go on to its next stage (a study to its next
    # variant) from a partial search. Stopped here, a rerun resumes as after a kill.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if ray.is_initialized():
        return
    verbose = getattr(args, "verbose", False)
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables: off at verbose 0
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if not address:
        # Each configuration starts a Tune trial, a Train controller and its workers as new
        # processes; the raylet warns at 4x its start-up concurrency (the CPU count).
        os.environ.setdefault("RAY_worker_maximum_startup_concurrency", "16")
    path = None
    if not verbose and cfg is not None:
        path, final = log_file(cfg)
        when = "" if path == final else ", at the end of the run"
        print(f"[ray] logs: {final}{when} (--verbose shows them here)")
        quiet_ray(path)
    common = {
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.WARNING,
    }
    if address:
        ray.init(address=address, **common)
    else:
        # A local instance; workers import `mer` from this checkout.
        ray.init(
            address="local",
            num_cpus=int(args.num_cpus) if args.num_cpus else None,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
            **common,
        )
    if path:
        import ray.data  # noqa: F401  (configures its own console logging on import)

        quiet_ray(path)
        # The raylet's worker-pool warning can reach the driver on stderr too (a submitted job's
        # output showed it there).
        _route_lines(
            2, lambda line: _NATIVE_LINE.match(line) or _STARTUP_WARNING.search(line), path
        )
        _route_lines(1, _STARTUP_WARNING.search, path)
        # Ray disconnects at exit (its atexit hook) and then prints what its deduplicator
        # still holds, such as the last warning of a burst; exit hooks run last registered
        # first, so without this the routing was undone before and that line reached the
        # console (a submitted job's output). Registered after the routing, this runs
        # before it: Ray's own exit-time shutdown (its grace for late messages included),
        # whose second call at exit then does nothing.
        atexit.register(ray.shutdown, _exiting_interpreter=True)


# Ctrl-C: the job is gone within this many seconds, whatever still runs (docs/study.md).
STOP_WITHIN_S = 12.0
_interrupted = threading.Event()


def _on_sigint(signum, frame) -> None:
    """Ctrl-C (SIGINT to the terminal's process group): KeyboardInterrupt in the main thread,
    and a watchdog that ends the process STOP_WITHIN_S later if the interrupt was caught
    somewhere or the exit hangs. A second Ctrl-C ends it at once."""
    if _interrupted.is_set():
        os._exit(130)
    _interrupted.set()
    watchdog = threading.Timer(STOP_WITHIN_S, os._exit, args=(130,))
    watchdog.daemon = True
    watchdog.start()
    raise KeyboardInterrupt


def _leave(code: int) -> None:
    """Exit now: run the exit handlers (Ray's shutdown, the log upload) and leave without
    joining other threads. A plain sys.exit first joined every non-daemon thread the Ray
    libraries had started, then shut Ray down: an interrupted study took 20-45 s to go
    (docs/study.md, "Stopping")."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - leaving anyway; the watchdog bounds this call
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(fn) -> None:
    """Run a job's main; a user-caused error prints one line and exits 2, not a traceback.
    Ctrl-C stops the job within STOP_WITHIN_S seconds with exit status 130; every finished
    output was written whole (temporary name + rename), so a rerun resumes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        fn()
    except KeyboardInterrupt:
        print(
            "interrupted: finished work is kept; rerun the same command to resume",
            file=sys.stderr,
        )
        _leave(130)
    except MERError as e:
        print(f"error: {e}", file=sys.stderr)
        _remove_unused_folders()
        sys.exit(2)
    finally:  # a caller in this process (a test) gets its own Ctrl-C back
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _remove_unused_folders() -> None:
    """After a failed job: the log and the folders made for it, where the job wrote nothing
    else (a folder that holds anything more is kept, with the log beside the outputs)."""
    if not _CREATED:
        return  # the root was there before: its logs/ is where failed runs' logs belong
    root = Path(_CREATED[0]).parent  # _CREATED[0] is <root>/logs
    if any(p.name != "logs" for p in root.iterdir()):
        return
    for log in _LOG:
        with contextlib.suppress(OSError):
            os.remove(log)
    for folder in _CREATED:
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty
