"""The data stage: the dataset root a config names, a synthetic dataset rendered there once
per generator setting (subjects side by side as Ray tasks when the driver has joined Ray).

Real datasets are read where they lie (`data.root`); the adapters in mer.datasets turn them
into the clip manifest that the key-frame stage (mer.keyframes.preprocess) reads.
"""

from __future__ import annotations

import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mer import layout, storage
from mer.config import PipelineConfig
from mer.datasets.synthetic.generator import generate
from mer.errors import ConfigError
from mer.progress import emit


def ensure_data(cfg: PipelineConfig, progress=emit) -> str:
    """The dataset root; a synthetic dataset is generated there once per generator setting
    (a folder holding one made under other settings is refused)."""
    root = layout.data_root(cfg)
    if cfg.data.dataset != "synthetic":
        return root
    settings = layout.data_settings(cfg)
    marker = storage.join(root, "_settings.json")
    if storage.exists(marker):
        layout.claim(
            root, settings, "a synthetic dataset", "set data.root elsewhere (or leave it empty)"
        )
        return root
    if storage.exists(storage.join(root, "synthetic.json")):
        raise ConfigError(
            f"{root} holds a synthetic dataset whose generator settings are unknown; delete "
            "it or set data.root elsewhere (or leave it empty)"
        )
    progress(f"[data] generating synthetic micro-expressions under {root} ...")
    t0 = time.time()
    summary = generate(root, mapper=ray_map(root, cfg.keyframes.resources), **cfg.data.synthetic)
    layout.claim(root, settings, "a synthetic dataset", "set data.root elsewhere")
    progress(f"[data] {summary.get('clips', '?')} clips in {time.time() - t0:.0f} s")
    return root


def ray_map(root: str, resources: dict | None = None):
    """A generate() mapper running each call as a Ray task (one CPU each, plus `resources`:
    the key-frame actors' own, so that on a cluster the same CPU nodes render the data and
    no GPU node starts for it): subjects render side by side. Local files stay on this node;
    an s3:// root lets any node write. None (render in this process) when it has not joined
    Ray, or for a local root on a node with no CPU for tasks."""
    if not ray.is_initialized():
        return None
    options: dict = {"num_cpus": 1, "resources": dict(resources or {})}
    if not storage.is_remote(root):
        here = ray.get_runtime_context().get_node_id()
        has = next((n["Resources"] for n in ray.nodes() if n["NodeID"] == here), {})
        need = {"CPU": 1, **options["resources"]}
        if any(has.get(k, 0) < v for k, v in need.items()):  # a head that takes no such work
            return None
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)

    def run(fn, calls: list[tuple]) -> list:
        task = ray.remote(**options)(fn)
        return ray.get([task.remote(*args) for args in calls])

    return run
