"""Ray's fake multi-node provider with each worker node in its own folders.

Ray's FakeMultiNodeProvider starts every worker node in the head's Ray temp dir, so that all
nodes share one `runtime_resources/` folder: a node that unpacks the job's working dir
there replaces the folder the driver runs in (seen here: the driver's cwd vanished). This
provider gives each node its own temp dir, HOME and TMPDIR under `provider.folder`, as
mer.testing.local_cluster does for the nodes it starts itself, and marks the node's processes with
its name. It is loaded by the autoscaler on the head (`provider.type: external`), which
imports it from a copy beside the cluster's folders: it imports nothing from `mer`.
"""

from __future__ import annotations

import copy
import json
import os

import ray
import ray._private.ray_constants as ray_constants
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)


class PrivateFolderNodeProvider(FakeMultiNodeProvider):
    """FakeMultiNodeProvider (Ray 2.60) whose nodes get `<folder>/<type>-<n>/{ray,home,tmp}`."""

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        resources = copy.deepcopy(resources)
        with self.lock:
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            next_id = self._next_hex_node_id()
            name = f"{node_type.rsplit('.', 1)[-1]}-{int(next_id[-5:])}"
            folder = os.path.join(self.provider_config["folder"], name)
            for sub in ("ray", "home/.ray", "tmp"):
                os.makedirs(os.path.join(folder, sub), exist_ok=True)
            token = os.path.join(os.environ["HOME"], ".ray", "auth_token")
            if os.path.isfile(token):
                with (
                    open(token) as src,
                    open(os.path.join(folder, "home/.ray/auth_token"), "w") as dst,
                ):
                    dst.write(src.read())
            ray_params = ray._private.parameter.RayParams(
                min_worker_port=0,
                max_worker_port=0,
                dashboard_port=None,
                dashboard_agent_listen_port=0,
                num_cpus=resources.pop("CPU", 0),
                num_gpus=resources.pop("GPU", 0),
                object_store_memory=resources.pop("object_store_memory", None),
                resources=resources,
                labels=labels,
                redis_address=self._gcs_address,
                gcs_address=self._gcs_address,
                temp_dir=os.path.join(folder, "ray"),
                env_vars={
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": next_id,
                    "RAY_CLOUD_INSTANCE_ID": next_id,
                    "RAY_NODE_TYPE_NAME": node_type,
                    ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                    ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels),
                    "HOME": os.path.join(folder, "home"),
                    "TMPDIR": os.path.join(folder, "tmp"),
                    "MER_LOCAL_NODE": name,
                },
            )
            node = ray._private.node.Node(
                ray_params, head=False, shutdown_at_exit=False, spawn_reaper=False
            )
            self._nodes[next_id] = {
                "tags": {
                    TAG_RAY_NODE_KIND: NODE_KIND_WORKER,
                    TAG_RAY_USER_NODE_TYPE: node_type,
                    TAG_RAY_NODE_NAME: next_id,
                    TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                    **tags,
                },
                "node": node,
            }
