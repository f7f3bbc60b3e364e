"""docker/: the team compose file and the worker images, checked statically.

No Docker engine runs here and the `docker compose` plugin is absent, so the compose file
is validated against the Compose Specification schema (tests/data/compose_spec.json), by
Debian's `docker-compose` 1.29 when it is installed, and for the points a schema cannot
see: references between services, the shared artifacts path, the GPU reservation, secrets.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
ARTIFACTS = "/opt/solar/artifacts"  # the default artifacts_dir under the repo the flow runs from
SECRET_NAME = re.compile(r"(^|_)(PASSWORD|SECRET|TOKEN|ACCESS_KEY|SECRET_KEY|API_KEY)(_|$)")
REQUIRED_VAR = re.compile(r"^\$\{[A-Z_]+:\?[^}]*\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_file_matches_the_compose_specification_schema(compose):
    schema = json.loads((REPO / "tests" / "data" / "compose_spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    broken = {**compose, "services": {**compose["services"], "postgres": {**compose["services"]["postgres"],
                                                                          "helthcheck": {}}}}
    assert not validator.is_valid(broken)  # the schema does reject a misspelt key


def test_every_service_has_an_image_or_a_build_whose_files_exist(compose):
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == REPO, name
            assert (context / service["build"]["dockerfile"]).is_file(), name
    built = {s["image"]: s["build"]["dockerfile"] for s in compose["services"].values() if "build" in s}
    assert built == {"solar-worker-cpu:latest": "docker/Dockerfile.cpu",
                     "solar-worker-gpu:latest": "docker/Dockerfile.gpu"}
    # Services that reuse a built image name one that compose builds.
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("solar-"):
            assert service["image"] in built, name


def test_dependencies_exist_and_their_conditions_can_be_met(compose):
    services = compose["services"]
    for name, service in services.items():
        for target, how in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, it has no check"
            if how["condition"] == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is a one-shot service"
            assert "profiles" not in services[target], f"{name} depends on optional {target}"
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_workers_share_the_artifacts_volume_at_the_same_path(compose):
    mounts = {}
    for name in ("worker-cpu", "worker-gpu"):
        service = compose["services"][name]
        mounts[name] = [v for v in service["volumes"] if v.split(":")[1] == ARTIFACTS]
        env = env_of(service)
        assert env["PREFECT_LOCAL_STORAGE_PATH"].startswith(ARTIFACTS + "/"), name  # shared result cache
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        for key, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DO_NOT_TRACK": "true",
                           "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
            assert env[key] == value, (name, key)
    assert mounts["worker-cpu"] == mounts["worker-gpu"] == [f"artifacts:{ARTIFACTS}"]
    assert compose["volumes"]["artifacts"]["name"] == "solar-artifacts"
    # The docker-gpu work pool's flow-run containers mount the same named volume and network.
    pool = json.loads((REPO / "deployments" / "job_templates" / "docker-gpu.json").read_text())
    assert pool["variables"]["properties"]["volumes"]["default"] == [f"solar-artifacts:{ARTIFACTS}"]
    assert pool["variables"]["properties"]["networks"]["default"] == [compose["networks"]["default"]["name"]]
    assert pool["variables"]["properties"]["image"]["default"] == compose["services"]["worker-gpu"]["image"]


def test_gpu_worker_reserves_nvidia_gpus_and_the_cpu_worker_none(compose):
    devices = compose["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "deploy" not in compose["services"]["worker-cpu"]


def test_databases_and_artifact_store_are_wired(compose):
    services = compose["services"]
    assert env_of(services["postgres"])["POSTGRES_DB"] == "prefect"
    init = [v for v in services["postgres"]["volumes"] if "/docker-entrypoint-initdb.d/" in v]
    assert len(init) == 1
    sql = (DOCKER / init[0].split(":")[0]).read_text()
    assert "CREATE DATABASE mlflow;" in sql
    prefect_db = env_of(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://") and prefect_db.endswith("@postgres:5432/prefect")
    args = dict(a.removeprefix("--").split("=", 1) for a in services["mlflow"]["command"] if a.startswith("--"))
    assert args["backend-store-uri"].startswith("postgresql://") and args["backend-store-uri"].endswith("/mlflow")
    assert args["artifacts-destination"].startswith("s3://")
    assert "mlflow" in args["allowed-hosts"].split(",")  # the workers' Host header
    mlflow_env = env_of(services["mlflow"])
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "mc mb" in " ".join(services["minio-init"]["entrypoint"])


def test_no_plaintext_secrets_in_the_compose_file(compose):
    for name, service in compose["services"].items():
        for key, value in env_of(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VAR.match(value), f"{name}.environment.{key} must be a ${{VAR:?}} reference"
    # Credentials inside URLs are references too (values only: comments may show examples).
    text = json.dumps(compose)
    for user, password in re.findall(r"://([^:/@\s]+):([^@\s]+)@", text):
        assert REQUIRED_VAR.match(password), f"password of {user!r} in a URL is not a ${{VAR:?}} reference"
    example = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    referenced = set(re.findall(r"\$\{([A-Z_]+)[:?}-]", text))
    assert referenced <= set(example), f"variables missing from docker/.env.example: {referenced - set(example)}"
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


@pytest.mark.parametrize(("dockerfile", "pool", "base"), [
    ("Dockerfile.cpu", "solar-cpu", "python:3.11-slim"),
    ("Dockerfile.gpu", "solar-gpu", "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04"),
])
def test_images_install_the_same_package_and_start_their_pools_worker(dockerfile, pool, base):
    steps = dockerfile_instructions(DOCKER / dockerfile)
    assert steps[0] == ("FROM", base)
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert '"torch==2.13.0"' in runs and "pip install -c constraints.txt ." in runs
    copied = [args.split()[:-1] for word, args in steps if word == "COPY"]
    sources = [src for srcs in copied for src in srcs]
    for src in sources:
        assert (REPO / src).exists(), f"{dockerfile} copies missing {src}"
    # BuildKit reads <Dockerfile>.dockerignore; an allowlist that misses a COPY source breaks the build.
    allowed = [line[1:].rstrip("/") for line in (DOCKER / f"{dockerfile}.dockerignore").read_text().splitlines()
               if line.startswith("!")]
    assert sorted(allowed) == sorted(sources), dockerfile
    cmd = json.loads(next(args for word, args in steps if word == "CMD"))
    assert cmd[:3] == ["prefect", "worker", "start"]
    assert cmd[cmd.index("--pool") + 1] == pool and cmd[cmd.index("--type") + 1] == "process"
    assert (REPO / cmd[cmd.index("--base-job-template") + 1].removeprefix("/opt/solar/")).is_file()
    env = " ".join(args for word, args in steps if word == "ENV")
    for setting in ("HF_HUB_OFFLINE=1", "DO_NOT_TRACK=true", f"PREFECT_LOCAL_STORAGE_PATH={ARTIFACTS}/"):
        assert setting in env, (dockerfile, setting)
    assert any(word == "USER" and args != "root" for word, args in steps)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose 1.29 not installed")
def test_docker_compose_1_29_accepts_the_file_and_requires_the_secrets(tmp_path):
    cmd = ["docker-compose", "-f", str(DOCKER / "compose.yaml"), "--project-directory", str(tmp_path)]
    ok = subprocess.run([*cmd, "--env-file", str(DOCKER / ".env.example"), "--profile", "gpu", "config"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    rendered = yaml.safe_load(ok.stdout)
    assert set(rendered["services"]) == {"postgres", "minio", "minio-init", "prefect-server", "mlflow", "deploy",
                                         "worker-cpu", "worker-gpu"}
    url = rendered["services"]["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url == "postgresql+asyncpg://solar:change-me-postgres@postgres:5432/prefect"
    missing = subprocess.run([*cmd, "config", "-q"], capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr, shlex.join(missing.args)


def test_a_one_shot_service_creates_the_pools_and_the_deployments(compose):
    deploy = compose["services"]["deploy"]
    script = " ".join(deploy["command"])
    assert "solar-cpu solar-gpu" in script and "set-concurrency-limit solar-gpu" in script
    assert "deployments/job_templates/process.json" in script and "python deployments/deploy.py" in script
    assert deploy["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert deploy["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert deploy["restart"] == "no"
