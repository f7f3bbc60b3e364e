"""As a team runs it: `deployments/servers.py up` starts a Prefect server, an MLflow server
and a process worker on each of the CPU and GPU pools on 127.0.0.1 and deploys every flow;
the tiny pipeline is triggered through the API as the UI does, in `pools` mode, then a
two-point sweep over the same artifact root. `down` stops everything it started."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.deploy import DEPLOYMENTS, prefect_yaml
from flows.local_api import free_port
from solar.plan import plan
from solar.spec import load_spec
from tasks.stages import GPU_KINDS

REPO = Path(__file__).resolve().parents[1]
SERVERS = [sys.executable, str(REPO / "deployments" / "servers.py")]
CPU_POOL, GPU_POOL = "test-cpu", "test-gpu"
# The tiny DAG without decontamination and perplexity stages, one model evaluated: every
# stage kind is still there, in 14 stages rather than 27.
TRIM = ["decontamination=null", "eval.perplexity_corpus=null", "eval.models=[dpo]"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pools")
    home = tmp / "servers"
    args = ["--home", str(home), "--prefect-port", str(free_port()), "--mlflow-port", str(free_port()),
            "--cpu-pool", CPU_POOL, "--gpu-pool", GPU_POOL]
    try:
        up = subprocess.run([*SERVERS, "up", *args], cwd=tmp, capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stderr[-4000:]
        env = dict(line.removeprefix("export ").split("=", 1) for line in (home / "env").read_text().splitlines())
        pids = json.loads((home / "pids.json").read_text())
        assert set(pids) == {"prefect-server", "mlflow-server", "worker-cpu", "worker-gpu"}
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            yield {"tmp": tmp, "home": home, "env": env, "pids": pids,
                   "options": {"mode": "pools", "max_parallel": 2, "artifacts_dir": str(tmp / "artifacts")}}
    finally:
        procs = []
        for pid in json.loads((home / "pids.json").read_text()).values() if (home / "pids.json").exists() else ():
            try:
                procs += [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        subprocess.run([*SERVERS, "down", "--home", str(home)], timeout=120)
        _, alive = psutil.wait_procs(procs, timeout=10)
        assert not alive, f"still running after down: {alive}"


def flow_runs(*, parent=None, ids=None):
    flt = None
    if parent:
        flt = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
    elif ids:
        flt = FlowRunFilter(id=FlowRunFilterId(any_=list(ids)))
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=flt, limit=200)


def stage_runs() -> list:
    """Every run of a `solar-stage/*` deployment, with its deployment's name."""
    with get_client(sync_client=True) as client:
        names = {d.id: d.name for d in client.read_deployments() if d.entrypoint.endswith("stage_flow")}
        return [(names[r.deployment_id], r) for r in client.read_flow_runs(limit=200) if r.deployment_id in names]


def run(name: str, parameters: dict, stack) -> object:
    flow_run = run_deployment(name, parameters=parameters, timeout=900, poll_interval=2)
    assert flow_run.state is not None and flow_run.state.is_completed(), (
        f"{flow_run.state}\n{(stack['home'] / 'logs' / 'worker-cpu.log').read_text()[-4000:]}")
    return flow_run


@pytest.fixture(scope="module")
def pipeline_run(stack):
    return run("solar-preset/tiny", {"options": stack["options"], "overrides": TRIM}, stack)


def test_every_deployment_is_on_its_pool_and_the_yaml_agrees(stack):
    with get_client(sync_client=True) as client:
        deployed = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
    assert set(deployed) == {d.full_name for d in DEPLOYMENTS}
    for d in DEPLOYMENTS:
        assert deployed[d.full_name].work_pool_name == {"cpu": CPU_POOL, "gpu": GPU_POOL}[d.pool], d.full_name
    assert {d.name for d in DEPLOYMENTS if d.pool == "gpu"} == {"pretrain", "sft", "dpo", "eval"}
    sweep = deployed["solar-sweep/ablation-sweep"]
    assert [(s.schedule.cron, s.active) for s in sweep.schedules] == [("0 3 * * 6", False)]
    with get_client(sync_client=True) as client:
        gpu = client.read_work_pool(GPU_POOL)
    assert gpu.concurrency_limit == 1
    # deployments/prefect.yaml is what deploy.py would write.
    assert (REPO / "deployments" / "prefect.yaml").read_text() == prefect_yaml()


def test_the_run_form_exposes_the_options_and_the_full_spec(stack):
    with get_client(sync_client=True) as client:
        schema = client.read_deployment_by_name("solar-preset/tiny").parameter_openapi_schema
    assert list(schema["properties"]) == ["preset", "options", "overrides", "spec"]
    assert schema["properties"]["preset"]["enum"] == ["tiny", "paper-ablation", "solar-10.7b"]
    spec = schema["definitions"]["PipelineSpec"]
    assert {"base", "upscale", "pretrain", "sft", "merges", "dpo", "eval", "execution"} <= set(spec["properties"])
    assert spec["additionalProperties"] is False
    assert set(schema["definitions"]["RunOptions"]["properties"]) == {"mode", "max_parallel", "artifacts_dir", "mlflow_uri"}


@pytest.mark.parametrize("parameters, field", [
    ({"preset": "nope"}, "preset"),
    ({"options": {"max_parallel": -1}}, "options.max_parallel"),
    ({"options": {"mode": "cluster"}}, "options.mode"),
    ({"options": {"gpus": 2}}, "options"),
    ({"spec": {"name": "x", "sft": [{"name": "s", "base": "b", "datasets": ["d"], "lr": 1}]}}, "spec"),
])
def test_bad_parameters_are_rejected_by_the_server(stack, parameters, field):
    before = {r.id for r in flow_runs()}
    with pytest.raises(PrefectHTTPStatusError, match=f"Validation failed for field '{field}") as rejected:
        run_deployment("solar-preset/tiny", parameters=parameters, timeout=0)
    assert rejected.value.response.status_code == 409
    assert {r.id for r in flow_runs()} == before


def test_a_spec_the_schema_cannot_judge_fails_before_any_stage(stack):
    """A dangling name passes JSON-schema validation; the flow refuses it at start, and no
    stage is dispatched."""
    spec = load_spec(preset="tiny").model_dump(mode="json")
    spec["dpo"][0]["base"] = "no-such-model"
    dispatched = len(stage_runs())
    flow_run = run_deployment("solar-preset/tiny", parameters={"spec": spec}, timeout=600, poll_interval=2)
    assert flow_run.state.is_failed()
    assert "dpo" in flow_run.state.message and "no-such-model" in flow_run.state.message
    assert len(stage_runs()) == dispatched


def test_pools_mode_runs_gpu_stages_on_the_gpu_pool(stack, pipeline_run):
    spec = load_spec(preset="tiny", overrides=[*TRIM, f"execution.artifacts_dir={stack['options']['artifacts_dir']}"])
    stages = {s.name: s for s in plan(spec)}
    runs = stage_runs()
    ran = {r.name.split(":", 1)[1]: (deployment, r) for deployment, r in runs}
    assert set(ran) == set(stages)  # every stage was dispatched, once
    assert len(runs) == len(stages)
    for name, (deployment, r) in ran.items():
        kind = stages[name].kind
        assert r.state.is_completed(), name
        assert r.work_pool_name == (GPU_POOL if kind in GPU_KINDS else CPU_POOL), (name, r.work_pool_name)
        assert deployment == (kind if kind in GPU_KINDS else "cpu")
    assert pipeline_run.work_pool_name == CPU_POOL
    # The MLflow server holds the pipeline's parent run, linked to the flow run the user
    # started, and one finished child run per stage (logged by the stage flows).
    client = MlflowClient(stack["env"]["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(spec.name)
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{pipeline_run.id}'")
    assert parent.info.status == "FINISHED"
    assert str(pipeline_run.id) in parent.data.tags["prefect.flow_run_url"]
    # ... and the flow run links to it: a link artifact of the pipeline's flow run.
    (inner,) = flow_runs(parent=pipeline_run.id)
    with get_client(sync_client=True) as client_:
        links = [a for a in client_.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[inner.id])))
                 if a.key == "mlflow-run"]
    url = f"{stack['env']['MLFLOW_TRACKING_URI']}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}"
    assert len(links) == 1 and f"({url})" in links[0].data, [a.data for a in links]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {c.info.run_name for c in children} == set(stages)
    assert all(c.info.status == "FINISHED" for c in children)
    (dpo,) = [c for c in children if c.info.run_name == "dpo"]
    assert 0 <= dpo.data.metrics["h6"] <= 100  # the final model's scores on its own run


def test_a_sweep_reuses_the_shared_upstream(stack, pipeline_run):
    """Two DPO betas over the pipeline's artifact root: each point trains its own DPO stage;
    base, DUS, pretraining, both SFTs and the merge were trained once, by the first run."""
    before = Counter(r.name for _, r in stage_runs())
    sweep = run("solar-sweep/ablation-sweep", {
        "preset": "tiny", "grid": {"dpo.dpo.beta": [0.2, 0.3]}, "options": stack["options"], "overrides": TRIM,
    }, stack)
    new = Counter(r.name for _, r in stage_runs()) - before
    assert new == Counter({"dpo:dpo": 2, "eval:eval-dpo": 2}), new
    everything = Counter(r.name for _, r in stage_runs())
    assert everything["pretrain:pretrain"] == 1 and everything["sft:sft-a"] == 1 and everything["merge:sft-a+b"] == 1
    points = flow_runs(parent=sweep.id)
    assert sorted(r.name for r in points) == ["point-0", "point-1"]
    client = MlflowClient(stack["env"]["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("tiny")
    tagged = client.search_runs([exp.experiment_id], "tags.`solar.sweep.point` != ''")
    assert sorted(r.data.tags["solar.sweep.dpo.dpo.beta"] for r in tagged) == ["0.2", "0.3"]
