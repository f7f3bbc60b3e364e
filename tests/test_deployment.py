"""As users trigger it: the tiny preset as a deployment on a process work pool, picked up
by a worker, against a real local Prefect server (SQLite, 127.0.0.1, fresh PREFECT_HOME)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings

from solar.plan import plan
from solar.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "solar-test-cpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process, its group and every descendant (flow runs may have their own
    session), wait a bounded time, then SIGKILL what is left."""
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Server, process pool, worker and the `tiny` deployment; all torn down after the module."""
    tmp = tmp_path_factory.mktemp("deployment")
    work = tmp / "work"
    work.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    mlflow_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    overrides = [f"execution.artifacts_dir={tmp / 'artifacts'}", f"tracking.uri={mlflow_uri}"]
    # The flow run's cwd is the deployment's source (the repo), and MLflow puts a new
    # experiment's artifacts under ./mlruns of the cwd: create it here with its own location.
    spec = load_spec(preset="tiny", overrides=overrides)
    MlflowClient(mlflow_uri).create_experiment(spec.tracking.experiment or spec.name,
                                               artifact_location=(tmp / "mlruns").as_uri())
    # The offline settings are in os.environ already (tests/conftest.py).
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": url,
           "PREFECT_WORKER_QUERY_SECONDS": "2", "MLFLOW_TRACKING_URI": mlflow_uri,
           "PREFECT_LOCAL_STORAGE_PATH": str(tmp / "results")}
    env.pop("PREFECT_PROFILE", None)
    procs: list[subprocess.Popen] = []
    try:
        server_log = tmp / "server.log"
        server = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                        "--port", str(port)], env, work, server_log)
        procs.append(server)
        wait_healthy(url, server, server_log)
        subprocess.run([str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process"],
                       env=env, cwd=work, check=True, capture_output=True, timeout=60)
        worker_log = tmp / "worker.log"
        procs.append(start([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
                           env, work, worker_log))
        deployed = subprocess.run(  # the script as users run it, from another directory
            [sys.executable, str(REPO / "deployments" / "deploy.py"), "--pool", POOL, "--name", "tiny",
             "--preset", "tiny"], env=env, cwd=work, check=True, capture_output=True, text=True, timeout=120)
        deployment_id = deployed.stdout.split()[-1]
        with temporary_settings({PREFECT_API_URL: url}):
            yield {"tmp": tmp, "deployment_id": deployment_id, "worker_log": worker_log, "overrides": overrides}
    finally:
        for proc in reversed(procs):
            stop(proc)


def flow_runs(parent=None):
    """Every flow run on the server, or the subflow runs of `parent`."""
    flt = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])) if parent else None
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=flt)


@pytest.fixture(scope="module")
def tiny_run(stack):
    flow_run = run_deployment("solar-preset/tiny", parameters={"overrides": stack["overrides"]},
                              timeout=600, poll_interval=2)
    assert flow_run.state is not None and flow_run.state.is_completed(), (
        f"{flow_run.state}\n{stack['worker_log'].read_text()[-4000:]}")
    return flow_run


def test_deployment_runs_the_tiny_preset_on_a_worker(stack, tiny_run):
    assert str(tiny_run.deployment_id) == stack["deployment_id"]
    assert tiny_run.parameters["preset"] == "tiny"  # the deployment's default
    assert tiny_run.state.name == "Completed"
    # `pipeline_from_preset` calls the `pipeline` flow, a subflow run of the deployment's run.
    subflows = flow_runs(parent=tiny_run.id)
    with get_client(sync_client=True) as prefect:
        assert {(prefect.read_flow(r.flow_id).name, r.state.name) for r in subflows} <= {("solar-pipeline", "Completed")}
    tree = [tiny_run.id, *(r.id for r in subflows)]
    # Stages ran one at a time, as the preset's `execution.max_parallel: 1` asks.
    with get_client(sync_client=True) as prefect:
        tasks = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=tree)))
    spans = sorted((t.start_time, t.end_time) for t in tasks if ":" in t.name)
    assert len(spans) == len(plan(load_spec(preset="tiny", overrides=stack["overrides"])))
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False))
    spec = load_spec(preset="tiny", overrides=stack["overrides"])
    client = MlflowClient(spec.tracking.uri)
    exp = client.get_experiment_by_name(spec.name)
    # The MLflow parent run is tagged with a flow run of this deployment run's tree (today the
    # `solar-pipeline` subflow, whose own parent is the deployment's run), and links to it.
    parents = [r for i in tree for r in client.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{i}'")]
    assert len(parents) == 1, (tree, parents)
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["prefect.flow_run_id"] in parent.data.tags.get("prefect.flow_run_url", "")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {c.info.run_name for c in children} == {s.name for s in plan(spec)}
    assert all(c.info.status == "FINISHED" for c in children)
    # Stage artifacts and MLflow artifacts land where the run was told, not in the repo.
    assert (stack["tmp"] / "artifacts").is_dir()
    assert parent.info.artifact_uri.startswith((stack["tmp"] / "mlruns").as_uri())


def test_a_bad_preset_is_rejected_before_any_run_starts(stack, tiny_run):
    before = {r.id for r in flow_runs()}
    with pytest.raises(PrefectHTTPStatusError, match="Validation failed for field 'preset'") as rejected:
        run_deployment("solar-preset/tiny", parameters={"preset": "nope"}, timeout=0)
    assert rejected.value.response.status_code == 409
    assert {r.id for r in flow_runs()} == before
