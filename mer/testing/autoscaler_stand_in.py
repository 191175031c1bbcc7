"""cluster.yaml's worker types as stand-ins for Ray's fake autoscaler on one machine, and
what a run on it did: which nodes lived when (`ray list nodes`) and when each stage of
jobs/pipeline.py ran (its progress lines as `ray job submit` saw them). Used by
tests/test_autoscaling.py and benchmarks/cluster_timeline.py with mer.testing.local_cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mer.testing.local_cluster import ACCELERATOR

if TYPE_CHECKING:
    from mer.testing.local_cluster import Submission


def stand_in_node_types(cluster: dict, cpus: dict[str, float], max_workers: int = 2) -> dict:
    """cluster.yaml's worker types at this machine's scale, for Ray's fake multi-node
    provider: `cpus[type]` logical CPUs each, custom resources scaled with the CPUs (a CPU
    type's decode slots), a GPU replaced by as many `accelerator` (no GPU here), min 0."""
    head = cluster["head_node_type"]
    types = {}
    for name, t in cluster["available_node_types"].items():
        if name == head:
            continue
        res = dict(t["resources"])
        scale = cpus[name] / res.pop("CPU")
        gpus = res.pop("GPU", 0)
        out = {"CPU": cpus[name], **{k: v * scale for k, v in res.items()}}
        if gpus:
            out[ACCELERATOR] = gpus
        types[name] = {
            "resources": out,
            "node_config": {},
            "min_workers": 0,
            "max_workers": min(max_workers, t["max_workers"]),
        }
    return types


def fake_autoscaling_config(node_types: dict, idle_timeout_minutes: float) -> dict:
    """The whole autoscaler config for Ray's fake multi-node provider (Ray 2.60's wheel lacks
    the example.yaml that ray.cluster_utils.AutoscalingCluster reads), through
    mer.testing.fake_nodes: worker nodes are raylets on this machine that the autoscaler on the
    head starts and stops. LocalCluster.start_head adds the GCS address and folder."""
    return {
        "cluster_name": "mer-fake",
        "max_workers": sum(t["max_workers"] for t in node_types.values()),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "external",
            "module": "mer_fake_nodes.PrivateFolderNodeProvider",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            **node_types,
        },
        "head_node_type": "ray.head.default",
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def node_timeline(nodes: list[dict], node_types: dict) -> list[dict]:
    """Ray's node list (`ray list nodes --detail`) as (type, node id, start, end) rows,
    seconds since the epoch (end None while alive); the type is the node type whose
    resources it carries."""
    rows = []
    for n in nodes:
        total = n.get("resources_total", {})
        kind = "head" if n.get("is_head_node") else "?"
        for name, t in node_types.items():
            extra = [k for k in t["resources"] if k != "CPU"]
            if not n.get("is_head_node") and all(k in total for k in extra):
                kind = name
        end = _epoch(n.get("end_time_ms"))
        rows.append(
            {
                "type": kind,
                "node_id": n["node_id"],
                "state": n["state"],
                "start": _epoch(n["start_time_ms"]),
                "end": end if n["state"] == "DEAD" and end else None,
            }
        )
    return sorted(rows, key=lambda r: r["start"])


# The progress lines that open and close each stage of jobs/pipeline.py.
STAGE_LINES = {
    "keyframes": ("[keyframes]", "[keyframes] done"),
    "pretrain": ("[pretrain]", "priors learnt"),
    "search": ("[search]", "[results]"),
}


def stage_times(job: Submission) -> dict[str, tuple[float, float]]:
    """stage -> (start, end) in seconds since the epoch, from when the job's progress
    lines reached `ray job submit` (about a second after they were printed)."""
    out = {}
    for stage, (first, last) in STAGE_LINES.items():
        start, end = job.first(first), job.first(last)
        if start and end:
            out[stage] = (start, end)
    return out


def _epoch(value) -> float:
    """Seconds since the epoch of a state API time: milliseconds, or (with --detail) the
    local time as "YYYY-MM-DD HH:MM:SS[.ffffff]" (datetime.fromtimestamp's str)."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float):
        return value / 1000
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()  # naive: local time, as Ray wrote it
