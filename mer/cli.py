"""Command-line plumbing shared by the `jobs/` entry points: config arguments and Ray start-up."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mer import config as config_mod
from mer.config import PipelineConfig
from mer.errors import MERError

REPO = Path(__file__).resolve().parents[1]


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
    return p


def add_resource_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", nargs="*", help="fold keys (dataset/subject); default all")
    p.add_argument("--workers", type=int, help="Ray Train workers (DDP) per run")
    p.add_argument("--gpus-per-worker", type=float)
    p.add_argument("--cpus-per-worker", type=float)


def apply_resource_args(cfg: PipelineConfig, args: argparse.Namespace) -> None:
    for name in ("workers", "gpus_per_worker", "cpus_per_worker"):
        if getattr(args, name) is not None:
            setattr(cfg.resources, name, getattr(args, name))


def load_config(args: argparse.Namespace) -> PipelineConfig:
    overrides = list(args.set)
    if args.root:
        overrides.append(f"root={args.root}")
    cfg = config_mod.load(args.config, overrides)
    # A job submitted with `ray job submit` runs in an unpacked copy of the checkout: a
    # relative root would land there. Local roots are made absolute where the job starts.
    from mer.storage import is_remote

    if not is_remote(cfg.root):
        if os.environ.get("RAY_JOB_ID") and not os.path.isabs(cfg.root):
            print(
                f"warning: root {cfg.root!r} is relative inside a submitted job; outputs go "
                "to the job's working copy. Pass --root with an absolute path or s3://.",
                file=sys.stderr,
            )
        cfg.root = os.path.abspath(cfg.root)
    return cfg


def connect_ray(args: argparse.Namespace) -> None:
    """Join the cluster a job was submitted to, or start a local Ray for this process."""
    import ray

    if ray.is_initialized():
        return
    address = args.address or os.environ.get("RAY_ADDRESS")
    logging.getLogger("ray").setLevel(logging.WARNING)
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # A local instance; workers import `mer` from this checkout.
        ray.init(
            address="local",
            num_cpus=int(args.num_cpus) if args.num_cpus else None,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
        )


def main(fn) -> None:
    """Run a job's main; a user-caused error prints one line and exits 2, not a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        fn()
    except MERError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
