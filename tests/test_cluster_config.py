"""Deployment configs: the Ray cluster launcher file (cluster.yaml) and the KubeRay RayJob.

cluster.yaml goes through the same prepare_config + validate_config that `ray up` runs before
it contacts AWS (ray/autoscaler/_private/commands.py), against the schema shipped with the
installed Ray. The remaining checks are the properties a user relies on: nothing open to the
internet, no credentials in the files, S3 through IAM roles, workers scale from zero, the head
runs no tasks, token auth on, and the same pinned requirements as a local install.
"""

from __future__ import annotations

import copy
import re
import shlex

import pytest
import yaml
from conftest import REPO

CLUSTER_YAML = REPO / "cluster.yaml"
RAYJOB_YAML = REPO / "k8s" / "rayjob.yaml"
ENTRYPOINT = "python jobs/pipeline.py --config configs/megc2019.yaml"

# AWS access key ids (long-term AKIA, temporary ASIA) and the credential field names.
CREDENTIAL_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"aws_secret_access_key", re.I),
    re.compile(r"aws_access_key_id", re.I),
    re.compile(r"aws_session_token", re.I),
]
PUBLIC_CIDRS = ("0.0.0.0/0", "::/0")


def _requirements() -> dict[str, str]:
    """requirements.txt as {distribution name: full pin line}."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[\[=<>!~ ]", line, maxsplit=1)[0].lower()
            pins[name] = line
    return pins


def _ray_pin() -> str:
    return _requirements()["ray"].split("==", 1)[1]


def _submit_commands(text: str) -> list[str]:
    """The commands after ` -- ` of every `ray job submit` in a text (continuations joined)."""
    lines = [line.lstrip("# ").rstrip() for line in text.splitlines()]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if "ray job submit" in line and " -- " in line:
            out.append(" ".join(line.split(" -- ", 1)[1].split()))
    return out


# ----------------------------------------------------------------------------- cluster.yaml


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _worker_types(cluster: dict) -> dict[str, dict]:
    return {
        name: t
        for name, t in cluster["available_node_types"].items()
        if name != cluster["head_node_type"]
    }


def _gpu_types(cluster: dict) -> dict[str, dict]:
    return {n: t for n, t in _worker_types(cluster).items() if t["resources"].get("GPU", 0) > 0}


def _cpu_types(cluster: dict) -> dict[str, dict]:
    return {n: t for n, t in _worker_types(cluster).items() if not t["resources"].get("GPU")}


def test_cluster_yaml_passes_rays_own_validation(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_rays_validation_rejects_a_misspelt_field(cluster):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = copy.deepcopy(cluster)
    bad["available_node_types"]["ray.worker.gpu"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_cluster_has_one_cpu_and_one_gpu_worker_type_that_scale_from_zero(cluster):
    assert cluster["cluster_name"] == "mer-siamc3d"
    assert cluster["provider"]["type"] == "aws"
    assert len(_cpu_types(cluster)) == 1 and len(_gpu_types(cluster)) == 1
    for name, t in _worker_types(cluster).items():
        assert t["min_workers"] == 0, name
        assert 1 <= t["max_workers"] <= cluster["max_workers"], name


def test_head_runs_no_tasks(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert not head["resources"].get("GPU")


def test_gpu_type_is_on_demand_and_cpu_type_is_spot(cluster):
    (gpu,) = _gpu_types(cluster).values()
    (cpu,) = _cpu_types(cluster).values()
    assert gpu["resources"]["GPU"] >= 1
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))
    assert "InstanceMarketOptions" not in gpu["node_config"]
    assert cpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"


def test_every_node_type_gets_s3_through_an_instance_profile(cluster):
    for name, t in cluster["available_node_types"].items():
        profile = t["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Name") or profile.get("Arn"), f"{name} has no IamInstanceProfile"


@pytest.mark.parametrize("path", [CLUSTER_YAML, RAYJOB_YAML], ids=lambda p: p.name)
def test_no_credentials_in_deployment_files(path):
    text = path.read_text()
    for pattern in CREDENTIAL_PATTERNS:
        assert not pattern.search(text), f"{path.name} matches {pattern.pattern}"


def test_nothing_is_opened_to_the_internet(cluster):
    text = CLUSTER_YAML.read_text()
    for cidr in PUBLIC_CIDRS:
        assert cidr not in text
    rules = cluster["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges", [])]
        ranges += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
        assert not set(ranges) & set(PUBLIC_CIDRS), rule
        # The dashboard is reached through `ray dashboard`'s SSH tunnel, never a rule.
        assert not rule.get("FromPort", 0) <= 8265 <= rule.get("ToPort", -1), rule


def test_token_auth_on_every_ray_start(cluster):
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert any("--head" in c for c in ray_starts) and any("--address" in c for c in ray_starts)
    for cmd in ray_starts:
        assert "RAY_AUTH_MODE=token ray start" in cmd, cmd
    # The token travels to every node from the user's machine (ray get-auth-token --generate).
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_nodes_install_the_repositorys_pinned_requirements(cluster):
    remote = next(r for r, local in cluster["file_mounts"].items() if local in (".", "./"))
    installs = [shlex.split(c) for c in cluster["setup_commands"] if "pip install" in c]
    assert any(
        words[words.index("-r") + 1] == f"{remote}/requirements.txt"
        for words in installs
        if "-r" in words
    ), cluster["setup_commands"]
    assert (REPO / "requirements.txt").is_file()


def test_docker_image_is_the_pinned_ray_version(cluster):
    image = cluster["docker"]["image"]
    assert image.startswith(f"rayproject/ray:{_ray_pin()}-"), image
    assert image.endswith("-gpu")


# ----------------------------------------------------------------------------- k8s/rayjob.yaml


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]


@pytest.fixture(scope="module")
def rayjob(manifests) -> dict:
    (job,) = [d for d in manifests if d.get("kind") == "RayJob"]
    return job


def _pod_specs(rayjob: dict) -> dict[str, dict]:
    spec = rayjob["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    for group in spec["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]["spec"]
    return pods


def _gpu_limit(pod: dict) -> int:
    return sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in pod["containers"])


def test_rayjob_is_a_ray_io_v1_rayjob(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True


def test_rayjob_runs_the_pipeline_entrypoint(rayjob):
    assert rayjob["spec"]["entrypoint"] == ENTRYPOINT
    assert (REPO / "jobs" / "pipeline.py").is_file()
    # The same command that cluster.yaml documents for `ray job submit`.
    assert ENTRYPOINT in _submit_commands(CLUSTER_YAML.read_text())


@pytest.mark.parametrize("page", ["README.md", "docs/cluster.md"])
def test_rayjob_entrypoint_matches_the_readme(rayjob, page):
    """The README's cluster quick-start and the cluster page submit what the RayJob runs."""
    commands = _submit_commands((REPO / page).read_text())
    assert rayjob["spec"]["entrypoint"] in commands


def test_rayjob_config_file_exists(rayjob):
    config = rayjob["spec"]["entrypoint"].split("--config", 1)[1].split()[0]
    assert (REPO / config).is_file(), f"k8s/rayjob.yaml runs {config}, which is not shipped"
    assert yaml.safe_load((REPO / config).read_text())


def test_rayjob_images_are_the_pinned_ray_version(rayjob):
    version = _ray_pin()
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == version
    for name, pod in _pod_specs(rayjob).items():
        for c in pod["containers"]:
            assert c["image"].startswith(f"rayproject/ray:{version}"), (name, c["image"])


def test_rayjob_head_runs_no_tasks_and_has_no_gpu(rayjob):
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert _gpu_limit(head["template"]["spec"]) == 0


def test_rayjob_autoscales_a_cpu_and_a_gpu_group_from_zero(rayjob):
    spec = rayjob["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpus = {n: _gpu_limit(g["template"]["spec"]) for n, g in groups.items()}
    assert sorted(gpus.values())[0] == 0 and sorted(gpus.values())[-1] >= 1, gpus
    for name, g in groups.items():
        assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1, name
        assert g.get("replicas", 0) == 0, name


def test_rayjob_token_auth_on(rayjob):
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"


def test_rayjob_s3_through_an_irsa_service_account(manifests, rayjob):
    accounts = {d["metadata"]["name"]: d for d in manifests if d.get("kind") == "ServiceAccount"}
    for name, pod in _pod_specs(rayjob).items():
        account = accounts.get(pod.get("serviceAccountName"))
        assert account, f"{name} pods have no service account from this file"
        assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]


def test_rayjob_has_no_inline_secrets(manifests, rayjob):
    assert not [d for d in manifests if d.get("kind") == "Secret"]
    for name, pod in _pod_specs(rayjob).items():
        for c in pod["containers"]:
            for env in c.get("env", []):
                secretish = re.search(r"TOKEN|SECRET|PASSWORD|KEY|AWS_", env["name"], re.I)
                assert not (secretish and "value" in env), (name, env["name"])


def test_rayjob_installs_the_repositorys_pinned_requirements(rayjob):
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"]
    pins = _requirements()
    pins.pop("ray")  # the image provides Ray itself
    assert sorted(runtime_env["pip"]) == sorted(pins.values())


# ----------------------------------------------------------------------------- stage placement
# Key-frame actors ask for `decode` (keyframes.resources), which only the CPU worker type
# advertises; training workers ask for GPUs, which only the GPU type has. So no GPU node
# decodes, and the autoscaler starts the right type for each stage (tests/test_autoscaling.py
# watches it with these node types at a small scale).
DECODE = "decode"


def test_only_the_cpu_type_decodes(cluster):
    (cpu,) = _cpu_types(cluster).values()
    (gpu,) = _gpu_types(cluster).values()
    assert cpu["resources"][DECODE] == cpu["resources"]["CPU"]  # one key-frame actor per CPU
    assert DECODE not in gpu["resources"]
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert DECODE not in head["resources"]


def _start_resources(group: dict) -> dict:
    """A KubeRay group's custom resources (rayStartParams resources: a quoted JSON string)."""
    import json

    raw = group["rayStartParams"].get("resources")
    return json.loads(json.loads(raw)) if raw else {}


def test_rayjob_only_the_cpu_group_decodes(rayjob):
    spec = rayjob["spec"]["rayClusterSpec"]
    for group in spec["workerGroupSpecs"]:
        gpus = _gpu_limit(group["template"]["spec"])
        decode = _start_resources(group).get(DECODE, 0)
        if gpus:
            assert decode == 0, group["groupName"]
        else:
            cpus = int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
            assert decode == cpus, group["groupName"]
    assert DECODE not in _start_resources(spec["headGroupSpec"])


def test_stand_in_node_types_follow_cluster_yaml(cluster):
    """The autoscaling test's node types are cluster.yaml's, scaled to this machine."""
    from mer.testing.autoscaler_stand_in import stand_in_node_types
    from mer.testing.local_cluster import ACCELERATOR

    types = stand_in_node_types(cluster, {"ray.worker.cpu": 1, "ray.worker.gpu": 3})
    assert types["ray.worker.cpu"]["resources"] == {"CPU": 1, DECODE: 1}
    assert types["ray.worker.gpu"]["resources"] == {"CPU": 3, ACCELERATOR: 1}
    assert all(t["min_workers"] == 0 for t in types.values())
