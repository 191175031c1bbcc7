"""Shared fixtures: a real local S3 endpoint (moto server), one local Ray per module and a
local MLflow tracking server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# MLflow's server, from its own virtualenv (`make mlflow-server`; it pins an older pyarrow).
MLFLOW_SERVER = Path(os.environ.get("MER_MLFLOW_SERVER", REPO / ".venv-mlflow" / "bin" / "mlflow"))
SHARED = REPO.parent / "shared"
MEGC2019_LIST = SHARED / "data" / "megc2019" / "combined_3class_gt.csv"

sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 with bucket `mer-test`; yields the endpoint URL.

    Sets the AWS_* variables so that s3fs, pyarrow and child processes (Ray workers
    started after this fixture) all reach it. Stopped at the end of the session.
    """
    from mer.testing.s3 import LocalS3

    with LocalS3("mer-test") as s3:
        yield s3.url


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A local MLflow server (SQLite store) for the session; yields its URL. Skips, naming
    what to install, without the server or the client, except where MER_REQUIRE_MLFLOW=1 (CI)."""
    if os.environ.get("MER_REQUIRE_MLFLOW") != "1":
        if not MLFLOW_SERVER.exists():
            pytest.skip(f"no MLflow server at {MLFLOW_SERVER} (make mlflow-server)")
        pytest.importorskip("mlflow", reason="no MLflow client (make venv-mlflow)")
    from mer.testing.mlflow_server import LocalMLflow

    with LocalMLflow(MLFLOW_SERVER, tmp_path_factory.mktemp("mlflow")) as server:
        yield server.url


@pytest.fixture(scope="module")
def ray_local(s3_endpoint):
    """One local Ray instance per test module (never joins a stale cluster).

    Started after the S3 endpoint so that Ray's workers inherit its AWS_* settings.
    """
    import ray

    ray.init(
        address="local",
        num_cpus=2,  # as many logical CPUs as this 2-core machine has
        # With the dashboard, as on a cluster: Ray Train's PlacementGroupCleaner asks the
        # state API whether a Train controller is alive and frees the workers' placement
        # group of one that died with its driver (Ctrl+C, a kill). Without it the cleaner
        # cannot ask, a leaked group keeps its CPUs, and the next search waits for them
        # forever (seen: the interrupted-search test's rerun, then every later test).
        include_dashboard=True,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def write_fake_keyframes(uri: str, subjects: int = 4, clips: int = 6, k: int = 8, s: int = 32):
    """A finished key-frame table of random frames whose colour encodes the label (no video)."""
    from mer.testing.fakes import write_random_keyframes

    return write_random_keyframes(uri, subjects=subjects, clips=clips, k=k, s=s)


@pytest.fixture(scope="session")
def fake_keyframes(tmp_path_factory):
    return write_fake_keyframes(str(tmp_path_factory.mktemp("fake") / "keyframes" / "fake"))


@pytest.fixture(scope="session")
def synthetic_keyframes(tmp_path_factory):
    """Synthetic micro-expressions (8 subjects x 6 clips) as a finished key-frame table."""
    from mer import config
    from mer.datasets.synthetic.generator import generate
    from mer.keyframes.preprocess import build_keyframes_dataset
    from mer.layout import keyframes_uri

    root = tmp_path_factory.mktemp("synthetic-run")
    data = root / "data"
    generate(
        str(data),
        subjects=8,
        clips_per_subject=6,
        seed=0,
        layout="casme2",
        size=(340, 280),
        frames=(40, 70),
    )
    cfg = config.load(
        None, [f"root={root}", f"data.root={data}", "keyframes.k=8", "keyframes.size=32"]
    )
    build_keyframes_dataset(cfg, use_ray=False, progress=lambda s: None)
    return keyframes_uri(cfg)


# `make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadfile`): each
# module stays whole on one worker, so its one Ray is started once. Much of a Ray test is
# waiting (start-up, polling, trainers' controllers), so two modules side by side fill the
# two cores that one leaves half idle. xdist hands out modules in collection order: the
# longest go first (from CI's --durations), so the last one to start is a short one.
LONGEST_FIRST = [  # modules over a minute in CI at 50ef3e6 (seconds, one process)
    "test_distributed.py",  # 429 (265, and test_node_loss.py's 164 before they shared a cluster)
    "test_benchmarks_smoke.py",  # 412
    "test_search.py",  # 355
    "test_train.py",  # 280
    "test_job_submit.py",  # 214
    "test_autoscaling.py",  # 212
    "test_inference.py",  # 88
    "test_interrupt.py",  # 78
    "test_study.py",  # 74
    "test_export.py",  # 71
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    order = {}  # module -> (rank, first position): modules stay contiguous, in their order
    for i, item in enumerate(items):
        order.setdefault(item.path.name, (rank.get(item.path.name, len(rank)), i))
    items.sort(key=lambda item: order[item.path.name])  # stable: tests keep their order
