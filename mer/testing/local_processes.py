"""The processes of a local cluster (mer.testing.local_cluster): found by a marker variable in their
environment, which every process they start inherits, and stopped by pid in stages (SIGTERM,
a grace, SIGKILL). Never by name and never with `ray stop`, which ends every Ray of the user
on the machine. Also free ports and a polling wait. Linux only (reads /proc).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

CLUSTER_MARKER = "MER_LOCAL_CLUSTER"  # every process of this cluster: its folder
NODE_MARKER = "MER_LOCAL_NODE"  # the node a process belongs to
STOP_GRACE_S = 15.0  # per stop stage, before SIGKILL


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(condition, timeout: float, interval: float = 0.2) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


# ---------------------------------------------------------------- processes, by marker


def proc_table() -> dict[int, tuple[int, str, list[bytes], str]]:
    """pid -> (ppid, command line, environment entries, start time) of readable processes."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            try:
                environ = (d / "environ").read_bytes().split(b"\0")
            except OSError:
                environ = []
            out[int(d.name)] = (int(fields[1]), cmd, environ, fields[19])
        except (OSError, ValueError, IndexError):
            continue
    return out


def processes(folder: Path, node: str | None = None) -> dict[int, str]:
    """pid -> start time of the processes of the cluster in `folder` (of one node, if given):
    by marker variable or command line, and their descendants. Never this process or its
    ancestors."""
    tag = str(folder) if node is None else str(folder / node)
    marker = f"{CLUSTER_MARKER}={folder}".encode()
    node_marker = f"{NODE_MARKER}={node}".encode()

    def match(cmd: str, environ: list[bytes]) -> bool:
        if node is None:
            return marker in environ or tag in cmd
        return (marker in environ and node_marker in environ) or f"{tag}/" in cmd

    return matching_processes(match)


def matching_processes(match) -> dict[int, str]:
    """pid -> start time of every process for which `match(command line, environment
    entries)` holds, and of their descendants. Never this process or its ancestors."""
    table = proc_table()
    ours = {pid for pid, (_, cmd, environ, _) in table.items() if match(cmd, environ)}
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(ours)
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in ours:
                ours.add(c)
                stack.append(c)
    protected, pid = set(), os.getpid()
    while pid > 1 and pid in table:
        protected.add(pid)
        pid = table[pid][0]
    return {p: table[p][3] for p in ours - protected}


def alive(pid: int, start: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] != "Z" and fields[19] == start  # the same process, not a zombie


def command_name(pid: int) -> str:
    """raylet, gcs_server, monitor.py, ray::IDLE, ...: what a process runs."""
    try:
        words = [
            w.decode(errors="replace")
            for w in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if w
        ]
    except OSError:
        return str(pid)
    if not words:
        return str(pid)
    script = next((w for w in words[1:3] if w.endswith(".py")), "")
    return Path(script).name if script else Path(words[0]).name if "/" in words[0] else words[0]


def signal_all(procs: dict[int, str], sig: int) -> None:
    for pid, start in procs.items():
        if alive(pid, start):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def stop_processes(folder: Path, node: str | None = None) -> list[str]:
    """Stop the cluster's (or one node's) processes (stop_in_stages)."""
    return stop_in_stages(lambda: processes(folder, node))


def stop_in_stages(find) -> list[str]:
    """Stop the processes `find()` returns (pid -> start time): raylets, then all but GCS,
    then GCS (terminated all at once, GCS and the autoscaler's monitor hang ~15 s); SIGKILL
    what outlives the grace. Returns the names of the processes that needed SIGKILL."""
    procs = find()
    for stage in ({"raylet"}, None, {"gcs_server"}):
        procs.update(find())  # late-comers: workers started while stopping
        live = {p: s for p, s in procs.items() if alive(p, s)}
        if stage is None:
            chosen = {p: s for p, s in live.items() if command_name(p) != "gcs_server"}
        else:
            chosen = {p: s for p, s in live.items() if command_name(p) in stage}
        signal_all(chosen, signal.SIGTERM)
        wait_until(lambda c=chosen: not any(alive(p, s) for p, s in c.items()), STOP_GRACE_S)
    procs.update(find())
    killed = [command_name(p) for p, s in procs.items() if alive(p, s)]
    signal_all(procs, signal.SIGKILL)
    return killed
