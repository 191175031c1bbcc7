"""A multi-node Ray cluster on one machine, for tests and the multi-node demo.

A head that runs no work (0 CPUs) and worker nodes, each its own raylet (`ray start
--address`) with its own working directory, HOME, TMPDIR and Ray temp dir under one private
folder, so that a node-local path that leaks into a stage is not found by another node and
every file the run leaves outside S3 can be listed afterwards. Token authentication is on:
the token (`ray get-auth-token --generate`) is copied into every node's HOME, as
cluster.yaml's file_mounts copy it to every machine.

Everything this module starts is found again by a marker variable in the processes'
environment (inherited by all they start) and stopped by pid (mer.testing.local_processes): never `ray stop`, which ends
every Ray of the user on the machine. Every port is chosen free. Linux only (reads /proc).

    from mer.testing.local_cluster import LocalCluster
    with LocalCluster(env={"AWS_ENDPOINT_URL": ...}) as c:
        c.start_head()
        c.add_node("decode-1", cpus=1, resources={"decode": 1})
        c.add_node("accel-1", cpus=2, resources={"accelerator": 1})
        c.submit(["python", "jobs/pipeline.py", ...], submission_id="demo")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mer.testing.local_processes import (
    CLUSTER_MARKER,
    NODE_MARKER,
    alive,
    command_name,
    free_ports,
    processes,
    signal_all,
    stop_processes,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]  # mer/testing/local_cluster.py -> the repository
BIN = Path(sys.executable).parent  # the venv's bin: `ray` and the workers' `python`
RAY = BIN / "ray"

# Stand-ins for cluster.yaml's worker types on a machine without GPUs: decode nodes carry
# `decode` as its CPU type does; accelerator nodes carry `accelerator` in place of its GPU.
DECODE = "decode"
ACCELERATOR = "accelerator"
# The settings that keep each stage on its node type (what a cluster run sets): key-frame
# actors need `decode`, training workers `accelerator` (half of one, as gpus_per_worker 0.5
# shares a GPU between two runs).
PLACEMENT = [
    f"keyframes.resources={{{DECODE}: 1}}",
    f"resources.worker_resources={{{ACCELERATOR}: 0.5}}",
]
# What the autoscaler's head needs to run the fake provider (as AutoscalingCluster.start).
FAKE_PROVIDER_ENV = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}


# ---------------------------------------------------------------- the cluster


@dataclass
class Node:
    name: str
    folder: Path  # work/ (cwd), home/, tmp/ (TMPDIR), ray/ (Ray's temp dir)
    resources: dict
    node_id: str = ""
    raylet: tuple[int, str] | None = None  # (pid, start time)

    @property
    def work(self) -> Path:
        return self.folder / "work"

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def tmp(self) -> Path:
        return self.folder / "tmp"

    @property
    def ray_dir(self) -> Path:
        return self.folder / "ray"


class Submission:
    """A running `ray job submit`: its output lines, each with the time it arrived."""

    def __init__(self, submission_id: str, proc: subprocess.Popen) -> None:
        self.id, self.proc = submission_id, proc
        self.started = time.time()
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait(self, timeout: float) -> int:
        """The submit command's exit status; kills it (not the job) past `timeout`."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(10)
        return rc

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, fragment: str) -> float | None:
        """When the first line holding `fragment` arrived (None: not yet)."""
        return next((t for t, line in list(self.lines) if fragment in line), None)


@dataclass
class LocalCluster:
    """Nodes under `folder` (a short private dir: Ray's socket paths are length-limited)."""

    env: dict = field(default_factory=dict)  # for every node and client (AWS_*, ...)
    folder: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="mer-c-", dir="/tmp"))
    )
    nodes: dict[str, Node] = field(default_factory=dict)
    gcs_port: int = 0
    dashboard: str = ""  # http://127.0.0.1:<port>: jobs and the state API

    # -- environment

    def base_env(self, home: Path, **extra: str) -> dict[str, str]:
        """This process's environment without Ray settings, as a shell with the venv on."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.pop("PYTHONPATH", None)
        env.update(
            HOME=str(home),
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            VIRTUAL_ENV=str(BIN.parent),
            PYTHONUNBUFFERED="1",
            RAY_AUTH_MODE="token",
            RAY_USAGE_STATS_ENABLED="0",
        )
        env.update(self.env)
        env.update(extra)
        return env

    @property
    def client_home(self) -> Path:
        return self.folder / "client"

    def client_env(self, **extra: str) -> dict[str, str]:
        """A user's shell: the token in its HOME, no marker (its processes are not ours)."""
        return self.base_env(self.client_home, **extra)

    def _node_env(self, node: Node, **extra: str) -> dict[str, str]:
        return self.base_env(
            node.home,
            TMPDIR=str(node.tmp),
            **{CLUSTER_MARKER: str(self.folder), NODE_MARKER: node.name},
            **extra,
        )

    def _new_node(self, name: str, resources: dict) -> Node:
        node = Node(name, self.folder / name, dict(resources))
        for d in (node.work, node.home / ".ray", node.tmp, node.ray_dir):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.client_home / ".ray" / "auth_token", node.home / ".ray" / "auth_token")
        return node

    # -- starting and stopping

    def generate_token(self) -> None:
        (self.client_home / ".ray").mkdir(parents=True, exist_ok=True)
        r = self.ray("get-auth-token", "--generate", timeout=60)
        token = self.client_home / ".ray" / "auth_token"
        if r.returncode != 0 or not token.is_file():
            raise RuntimeError(f"ray get-auth-token --generate failed:\n{r.stdout}{r.stderr}")

    def start_head(
        self,
        *,
        autoscaling_config: dict | None = None,
        env: dict | None = None,
        attempts: int = 3,
    ) -> Node:
        """`ray start --head` with 0 CPUs and a dashboard (job API, state API) on 127.0.0.1.
        With `autoscaling_config`, the head runs Ray's autoscaler with that config."""
        if not (self.client_home / ".ray" / "auth_token").is_file():
            self.generate_token()
        head = self._new_node("head", {"CPU": 0})
        out = ""
        for _ in range(attempts):
            gcs, dash, client, agent, agent_grpc, env_agent, metrics = free_ports(7)
            args = [
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={gcs}",
                "--num-cpus=0",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                "--include-dashboard=true",
                f"--ray-client-server-port={client}",
                *self._agent_ports(head, agent, agent_grpc, env_agent, metrics),
                "--disable-usage-stats",
            ]
            extra = dict(env or {})
            if autoscaling_config is not None:
                args.append(f"--autoscaling-config={self._autoscaling(autoscaling_config, gcs)}")
                extra.update(FAKE_PROVIDER_ENV, PYTHONPATH=str(self.folder / "provider"))
            r = subprocess.run(
                [str(RAY), *args],
                cwd=head.work,
                env=self._node_env(head, **extra),
                capture_output=True,
                text=True,
                timeout=180,
            )
            if r.returncode == 0 and self._find_raylet(head):
                self.gcs_port, self.dashboard = gcs, f"http://127.0.0.1:{dash}"
                self.nodes["head"] = head
                return head
            out = r.stdout + r.stderr
            stop_processes(self.folder, "head")
            shutil.rmtree(head.ray_dir, ignore_errors=True)
            head.ray_dir.mkdir()
        raise RuntimeError(f"ray start --head failed {attempts} times; last output:\n{out}")

    def _autoscaling(self, config: dict, gcs_port: int) -> Path:
        """Write the autoscaler's config, with the fake provider that starts nodes in
        folders of their own (mer.testing.fake_nodes, copied where the head can import it alone)."""
        provider = self.folder / "provider"
        provider.mkdir(exist_ok=True)
        shutil.copy(Path(__file__).with_name("fake_nodes.py"), provider / "mer_fake_nodes.py")
        config = dict(config)
        config["provider"] = {
            **config["provider"],
            "gcs_address": f"127.0.0.1:{gcs_port}",
            "folder": str(self.folder),
        }
        path = self.folder / "autoscaling.json"
        path.write_text(json.dumps(config, indent=1))
        return path

    def add_node(self, name: str, *, cpus: float, resources: dict | None = None) -> Node:
        """A worker node: `ray start --address` as its own raylet, in its own folders."""
        node = self._new_node(name, {"CPU": cpus, **(resources or {})})
        agent, agent_grpc, env_agent, metrics = free_ports(4)
        args = [
            "start",
            f"--address=127.0.0.1:{self.gcs_port}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            f"--resources={json.dumps(resources or {})}",
            *self._agent_ports(node, agent, agent_grpc, env_agent, metrics),
            "--disable-usage-stats",
        ]
        r = subprocess.run(
            [str(RAY), *args],
            cwd=node.work,
            env=self._node_env(node),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if r.returncode != 0 or not self._find_raylet(node):
            stop_processes(self.folder, name)
            raise RuntimeError(f"ray start --address for {name} failed:\n{r.stdout}{r.stderr}")
        self.nodes[name] = node
        return node

    @staticmethod
    def _agent_ports(node: Node, agent, agent_grpc, env_agent, metrics) -> list[str]:
        # Defaults (52365, ...) would collide between the nodes of one machine.
        return [
            f"--temp-dir={node.ray_dir}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={env_agent}",
            f"--metrics-export-port={metrics}",
        ]

    def _find_raylet(self, node: Node) -> bool:
        for pid, start in processes(self.folder, node.name).items():
            if command_name(pid) == "raylet":
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                ids = [w.split(b"=", 1)[1] for w in cmd if w.startswith(b"--node_id=")]
                node.node_id = ids[0].decode() if ids else ""
                node.raylet = (pid, start)
                return True
        return False

    def kill_node(self, name: str) -> list[int]:
        """A spot interruption: SIGKILL the node's raylet, then every other process of the
        node (the machine is gone). Returns the pids killed."""
        node = self.nodes[name]
        procs = processes(self.folder, name)
        if node.raylet:
            signal_all(dict([node.raylet]), signal.SIGKILL)
        signal_all(procs, signal.SIGKILL)
        wait_until(lambda: not any(alive(p, s) for p, s in procs.items()), 10)
        return sorted(procs)

    def stop(self) -> list[str]:
        """Stop every process of this cluster (by pid); the names that needed SIGKILL."""
        return stop_processes(self.folder)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients

    def ray(self, *args: str, timeout: float = 120, env: dict | None = None):
        return subprocess.run(
            [str(RAY), *args],
            cwd=REPO,
            env=env or self.client_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, entrypoint: list[str], submission_id: str) -> Submission:
        """Start `ray job submit` (it follows the job's log until the job ends)."""
        proc = subprocess.Popen(
            self.submit_command(entrypoint, submission_id),
            cwd=REPO,
            env=self.client_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return Submission(submission_id, proc)

    def submit_command(self, entrypoint: list[str], submission_id: str) -> list[str]:
        """`ray job submit --working-dir .` (run from the repository root), as a user would."""
        return [
            str(RAY),
            "job",
            "submit",
            "--address",
            self.dashboard,
            "--submission-id",
            submission_id,
            "--working-dir",
            ".",
            "--",
            *entrypoint,
        ]

    def state(self, kind: str, *filters: str, limit: int = 10000) -> list[dict]:
        """Ray's state API (`ray list <kind> --detail`): tasks, actors, nodes, workers."""
        args = ["list", kind, "--address", self.dashboard, "--detail", "--format", "json"]
        args += ["--limit", str(limit)]
        for f in filters:
            args += ["--filter", f]
        r = self.ray(*args, timeout=120)
        try:
            return json.loads(r.stdout) if r.returncode == 0 else None
        except json.JSONDecodeError:
            pass
        raise RuntimeError(f"ray list {kind} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")

    def node_names(self) -> dict[str, str]:
        """Ray node id -> our node name."""
        return {n.node_id: name for name, n in self.nodes.items()}

    def job_status(self, submission_id: str) -> str:
        """SUCCEEDED, FAILED, RUNNING, ... (state API); "" for an unknown submission."""
        jobs = [j for j in self.state("jobs") if j.get("submission_id") == submission_id]
        return str(jobs[0]["status"]) if jobs else ""

    def job_logs(self, submission_id: str) -> str:
        return self.ray("job", "logs", "--address", self.dashboard, submission_id).stdout

    # -- what a run left behind

    def files_outside_storage(self) -> dict[str, list[str]]:
        """Per node, the files a run wrote on the node's own disk: anything in its working
        directory, HOME (but the auth token) and TMPDIR, and any file in the job's unpacked
        copies of the checkout that the checkout does not have (a relative path written in
        a stage lands there). Ray's own logs and state under its temp dir are not counted.
        """
        out = {}
        for name, node in self.nodes.items():
            found = [f"work/{f}" for f in files_under(node.work)]
            found += [f"home/{f}" for f in files_under(node.home) if f != ".ray/auth_token"]
            found += [f"tmp/{f}" for f in files_under(node.tmp)]
            for pkg in node.ray_dir.glob("session_2*/runtime_resources/working_dir_files/*"):
                for f in files_under(pkg):
                    if "__pycache__" not in f and not (REPO / f).is_file():
                        found.append(f"{pkg.relative_to(node.folder)}/{f}")
            if found:
                out[name] = sorted(found)
        return out

    def ray_scratch_files(self) -> dict[str, list[str]]:
        """Per node, files under Ray's session artifacts (Tune's driver staging copies of
        what it also writes to its storage path): Ray's own, listed for the record."""
        out = {}
        for name, node in self.nodes.items():
            found = [
                p.relative_to(node.folder).as_posix()
                for p in node.ray_dir.glob("session_2*/artifacts/**/*")
                if p.is_file()
            ]
            if found:
                out[name] = sorted(found)
        return out


# ---------------------------------------------------------------- autoscaling from zero


@contextlib.contextmanager
def removed_on_exit(c: LocalCluster) -> Iterator[LocalCluster]:
    """`c`, stopped and its folder removed on exit (a failed start included); says how long
    the stop took and which processes needed SIGKILL."""
    try:
        yield c
    finally:
        t1 = time.time()
        killed = c.stop()
        shutil.rmtree(c.folder, ignore_errors=True)
        print(f"\ncluster stopped in {time.time() - t1:.0f} s; SIGKILL: {killed or 'none'}")


@contextlib.contextmanager
def placement_cluster():
    """A LocalCluster for the placement tests: head (0 CPUs), decode-1 and decode-2 (1 CPU
    each), accel-1 (3 CPUs: one training worker per half accelerator plus the Tune trials
    that drive them); stopped and removed on exit. Nodes inherit this process's AWS_*."""
    with removed_on_exit(LocalCluster()) as c:
        t0 = time.time()
        c.start_head()
        c.add_node("decode-1", cpus=1, resources={DECODE: 1})
        c.add_node("decode-2", cpus=1, resources={DECODE: 1})
        c.add_node("accel-1", cpus=3, resources={ACCELERATOR: 1})
        print(f"\ncluster of {len(c.nodes)} nodes up in {time.time() - t0:.0f} s")
        yield c


def files_under(folder: Path) -> set[str]:
    """Relative paths of the files under `folder`."""
    if not folder.is_dir():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
