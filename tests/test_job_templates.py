"""Work-pool base job templates (deployments/job_templates/): rendered as a worker renders
them, the GPU request and the node selector must reach the job.

Users report GPU requests silently dropped: a worker builds its job from the rendered
`job_configuration` with a pydantic model that ignores keys it does not know, so a GPU
request under an unknown key vanishes without an error. prefect-docker and
prefect-kubernetes are not installed here; their job-configuration fields are copied below
from prefect-docker 0.7.4 and prefect-kubernetes 0.8.0 (read by hand, see the README).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prefect.utilities.templating import apply_values
from prefect.workers.base import BaseJobConfiguration
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

TEMPLATES = Path(__file__).resolve().parents[1] / "deployments" / "job_templates"

# The fields of DockerWorkerJobConfiguration (prefect-docker 0.7.4) and
# KubernetesWorkerJobConfiguration (prefect-kubernetes 0.8.0): anything else is dropped.
DOCKER_FIELDS = {"auto_remove", "command", "container_create_kwargs", "env", "image", "image_pull_policy",
                 "labels", "mem_limit", "memswap_limit", "name", "network_mode", "networks", "privileged",
                 "registry_credentials", "stream_output", "volumes"}
KUBERNETES_FIELDS = {"annotations", "cluster_config", "command", "env", "job_manifest",
                     "job_watch_timeout_seconds", "labels", "name", "namespace",
                     "pod_watch_timeout_seconds", "stream_output"}


def load(name: str) -> dict[str, Any]:
    return json.loads((TEMPLATES / name).read_text())


def render(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The job configuration a worker builds (BaseJobConfiguration.from_template_and_values,
    without the server round trips for block and variable references): the variables'
    defaults, overridden by the deployment's job variables, applied to job_configuration."""
    jsonschema.validate(job_variables, {**template["variables"], "required": []})  # as the server does
    values = BaseJobConfiguration._get_base_config_defaults(template["variables"]["properties"])
    values.update(job_variables)
    return apply_values(copy.deepcopy(template["job_configuration"]), values)


@pytest.mark.parametrize("name", ["process.json", "docker-gpu.json", "kubernetes-gpu.json"])
def test_template_is_a_base_job_template_with_a_valid_variables_schema(name):
    template = load(name)
    assert set(template) == {"job_configuration", "variables"}
    jsonschema.Draft202012Validator.check_schema(template["variables"])
    for prop in template["variables"]["properties"].values():
        if "default" in prop:  # a default the schema itself rejects would fail every run
            jsonschema.validate(prop["default"], {**prop, "$defs": template["variables"].get("$defs", {}),
                                                  "definitions": template["variables"].get("definitions", {})})


def test_process_template_has_the_process_workers_keys_and_builds_its_configuration():
    default = ProcessWorker.get_default_base_job_template()
    template = load("process.json")
    assert template["job_configuration"] == default["job_configuration"]
    assert set(template["variables"]["properties"]) == set(default["variables"]["properties"])
    job = ProcessJobConfiguration(**render(template, {"working_dir": "/opt/solar"}))
    assert job.env["HF_HUB_OFFLINE"] == "1" and job.env["DO_NOT_TRACK"] == "true"
    assert str(job.working_dir) == "/opt/solar"


def test_docker_gpu_request_survives_rendering_and_reaches_the_engine_api():
    from docker.types import HostConfig  # docker-py, what prefect-docker creates containers with

    template = load("docker-gpu.json")
    job = render(template, {})
    assert set(job) <= DOCKER_FIELDS, f"keys prefect-docker drops silently: {set(job) - DOCKER_FIELDS}"
    kwargs = job["container_create_kwargs"]
    assert set(kwargs).isdisjoint(DOCKER_FIELDS)  # prefect-docker drops kwargs that shadow its fields
    # docker-py turns the kwargs into the engine's HostConfig, as `docker run --gpus 1` would.
    host = HostConfig(version="1.43", **kwargs)
    assert host["DeviceRequests"] == [{"Driver": "nvidia", "Count": 1, "DeviceIDs": [],
                                       "Capabilities": [["gpu"]], "Options": {}}]
    assert host["ShmSize"] == 8 * 1024**3
    assert job["volumes"] == ["solar-artifacts:/opt/solar/artifacts"]
    assert job["env"]["HF_HUB_OFFLINE"] == "1"

    two = HostConfig(version="1.43", **render(template, {"gpu_count": 2})["container_create_kwargs"])
    assert two["DeviceRequests"][0]["Count"] == 2


def test_kubernetes_gpu_limit_and_node_selector_survive_rendering():
    template = load("kubernetes-gpu.json")
    job = render(template, {"image": "registry.example/solar-worker-gpu:1"})
    assert set(job) <= KUBERNETES_FIELDS, f"keys prefect-kubernetes drops silently: {set(job) - KUBERNETES_FIELDS}"
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["name"] == "prefect-job"  # the worker requires it and fills in env/args
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}  # unset cpu/memory vanish
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["solar-artifacts"]
    assert {"name": "artifacts", "mountPath": "/opt/solar/artifacts"} in container["volumeMounts"]

    selector = {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    job = render(template, {"gpu_count": 2, "node_selector": selector, "cpu_limit": "8"})
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 2, "cpu": "8"}
    assert pod["nodeSelector"] == selector


def test_a_gpu_count_of_the_wrong_type_is_rejected_not_dropped():
    with pytest.raises(jsonschema.ValidationError, match="gpu_count|'two'"):
        render(load("kubernetes-gpu.json"), {"gpu_count": "two"})
    with pytest.raises(jsonschema.ValidationError):
        render(load("docker-gpu.json"), {"gpu_count": 0.5})
