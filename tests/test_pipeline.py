"""End to end: the tiny preset through the Prefect flow, MLflow and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import pipeline
from solar.artifacts import is_complete, read_manifest, stage_dir
from solar.plan import plan
from solar.spec import load_spec


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    store = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: str(store)}), prefect_test_harness():
        yield


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


def tiny_spec(workdir, *overrides):
    return load_spec(preset="tiny", overrides=[
        f"execution.artifacts_dir={workdir / 'artifacts'}",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        *overrides,
    ])


def run(spec):
    state = pipeline(spec=spec, return_state=True)
    assert state.is_completed(), state.message
    return state.result(), state.state_details.flow_run_id


def task_runs(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(),
        )


def task_states(flow_run_id) -> dict[str, str]:
    """Task run name -> final state name ('Completed' or 'Cached') of one flow run."""
    return {r.name: r.state.name for r in task_runs(flow_run_id)}


def child_runs(spec, parent_id):
    client = MlflowClient(spec.tracking.uri)
    exp = client.get_experiment_by_name(spec.name)
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


def parent_run(spec, flow_run_id):
    client = MlflowClient(spec.tracking.uri)
    exp = client.get_experiment_by_name(spec.name)
    (run,) = client.search_runs([exp.experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    return run


@pytest.fixture(scope="module")
def first(harness, workdir):
    spec = tiny_spec(workdir)
    rows, flow_run_id = run(spec)
    return spec, rows, flow_run_id


def test_every_stage_builds_an_artifact(first):
    spec, rows, _ = first
    stages = plan(spec)
    assert {s.kind for s in stages} == {
        "base", "upscale", "pretrain", "data", "math-instruct", "math-alignment", "decontam",
        "sft", "merge", "dpo", "eval", "perplexity",
    }
    for s in stages:
        out = stage_dir(spec.execution.artifacts_dir, s.kind, s.fingerprint)
        assert is_complete(out, deep=True), s.name
        assert read_manifest(out)["fingerprint"] == s.fingerprint
    dus = stage_dir(spec.execution.artifacts_dir, "upscale", next(s for s in stages if s.kind == "upscale").fingerprint)
    assert read_manifest(dus)["metrics"]["layers"] == 6  # 2 * (4 - 1)


def test_the_table_has_every_evaluated_model_and_task(first):
    spec, rows, _ = first
    assert [r["model"] for r in rows] == spec.eval.models
    for row in rows:
        scores = [row[k] for k in ("arc", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k")]
        assert all(0 <= x <= 100 for x in scores)
        assert row["h6"] == pytest.approx(sum(scores) / 6, abs=0.02)


def test_mlflow_holds_a_child_run_per_stage_with_scores(first):
    spec, rows, flow_run_id = first
    parent = parent_run(spec, flow_run_id)
    assert parent.info.status == "FINISHED"
    children = child_runs(spec, parent.info.run_id)
    assert set(children) == {s.name for s in plan(spec)}
    assert all(c.info.status == "FINISHED" for c in children.values())
    for row in rows:
        metrics = children[f"eval-{row['model']}"].data.metrics
        assert metrics["h6"] * 100 == pytest.approx(row["h6"], abs=0.006)
        assert set(metrics) >= {"arc", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k"}
    dpo = children["dpo"]
    assert dpo.data.params["beta"] == "0.1"
    # Lineage: the decontaminated datasets it read, with their content hashes.
    inputs = {d.dataset.name: d.dataset for d in dpo.inputs.dataset_inputs}
    assert set(inputs) == {"decontam-ultrafeedback", "decontam-math-alignment"}
    for name, ds in inputs.items():
        digest = json.loads((Path(children[name].data.tags["solar.artifact"]) / "dataset.json").read_text())["digest"]
        assert ds.digest == digest[:32]
    history = MlflowClient(spec.tracking.uri).get_metric_history(dpo.info.run_id, "loss")
    assert len(history) >= 1  # the training curve
    assert children["pretrain"].data.metrics["heldout_loss"] < children["pretrain"].data.metrics["heldout_loss_before"]
    # Every model has a held-out perplexity on its own child run; pretraining lowers it.
    ppl = {name: children[name].data.metrics["heldout_ppl"] for name in ("base", "dus", "pretrain", "dpo")}
    assert ppl["pretrain"] < ppl["dus"]
    assert children["ppl-pretrain"].data.metrics["heldout_ppl"] == ppl["pretrain"]


def test_final_model_is_registered_with_scores_and_lineage(first):
    spec, rows, _ = first
    client = MlflowClient(spec.tracking.uri)
    (version,) = client.search_model_versions("name = 'tiny-dpo'")
    dpo_row = next(r for r in rows if r["model"] == "dpo")
    assert float(version.tags["score.h6"]) * 100 == pytest.approx(dpo_row["h6"], abs=0.006)
    lineage = version.tags["solar.lineage"].split(" <- ")
    assert lineage[0] == "dpo" and {"sft-a+b", "sft-a", "pretrain", "dus", "base"} <= set(lineage)
    files = {a.path for a in client.list_artifacts(version.run_id, "model")}
    assert "model/model.safetensors" in files and "model/tokenizer.json" in files


def test_identical_rerun_is_fully_cached(first, workdir):
    spec, rows, _ = first
    rerun_rows, flow_run_id = run(tiny_spec(workdir))
    assert rerun_rows == rows
    states = task_states(flow_run_id)
    stage_states = {name: s for name, s in states.items() if ":" in name}
    assert len(stage_states) == len(plan(spec))
    assert set(stage_states.values()) == {"Cached"}, stage_states
    children = child_runs(spec, parent_run(spec, flow_run_id).info.run_id)
    assert {c.data.tags.get("solar.cached") for c in children.values()} == {"true"}
    # A reused stage's record carries the spec params and data lineage of the run that built it.
    assert children["dpo"].data.params["beta"] == "0.1"
    client = MlflowClient(spec.tracking.uri)
    built = client.get_run(children["dpo"].data.tags["solar.source_run_id"])
    assert len(client.get_run(children["dpo"].info.run_id).inputs.dataset_inputs) == len(built.inputs.dataset_inputs) > 0
    # The same model is not registered twice.
    assert len(MlflowClient(spec.tracking.uri).search_model_versions("name = 'tiny-dpo'")) == 1


def test_changed_dpo_beta_reruns_only_that_branch(first, workdir):
    _, flow_run_id = run(tiny_spec(workdir, "dpo.dpo.beta=0.2"))
    states = task_states(flow_run_id)
    rebuilt = {name.split(":", 1)[1] for name, s in states.items() if ":" in name and s != "Cached"}
    assert rebuilt == {"dpo", "eval-dpo", "ppl-dpo"}


def test_stages_carry_their_pool_tag_only_where_a_concurrency_limit_exists(first, workdir):
    _, _, first_run_id = first
    assert all(not r.tags for r in task_runs(first_run_id) if ":" in r.name)
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
    try:
        _, flow_run_id = run(tiny_spec(workdir, "dpo.dpo.beta=0.3"))
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag("gpu")
    tags = {r.name: set(r.tags) for r in task_runs(flow_run_id) if ":" in r.name}
    assert tags["dpo:dpo"] == tags["sft:sft-a"] == tags["eval:eval-dpo"] == {"gpu"}
    assert tags["merge:sft-a+b"] == tags["upscale:dus"] == set()


def test_a_deleted_artifact_is_rebuilt_not_returned(first, workdir):
    spec, _, _ = first
    import shutil

    merge = next(s for s in plan(spec) if s.kind == "merge")
    shutil.rmtree(stage_dir(spec.execution.artifacts_dir, "merge", merge.fingerprint))
    _, flow_run_id = run(tiny_spec(workdir))
    states = task_states(flow_run_id)
    assert states[f"merge:{merge.name}"] == "Completed"
    assert is_complete(stage_dir(spec.execution.artifacts_dir, "merge", merge.fingerprint))
    # Rebuilt bit-identically from the same inputs, so nothing downstream reruns.
    assert states["dpo:dpo"] == "Cached"


def test_parent_run_holds_the_report_and_model_runs_hold_their_scores(first):
    spec, rows, flow_run_id = first
    client = MlflowClient(spec.tracking.uri)
    parent = parent_run(spec, flow_run_id)
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert files == {"summary/h6.md", "summary/h6.csv", "summary/h6.png"}
    table = client.download_artifacts(parent.info.run_id, "summary/h6.md")
    text = open(table).read()
    assert "## DPO variants" in text and "| dpo | sft-a+b | O | O |" in text
    children = child_runs(spec, parent.info.run_id)
    for row in rows:
        model_metrics = children[row["model"]].data.metrics
        assert model_metrics["h6"] == children[f"eval-{row['model']}"].data.metrics["h6"]


def test_solar_report_prints_the_latest_runs_table(first, workdir, capsys):
    from flows.cli import main

    spec, rows, _ = first
    assert main(["report", "--preset", "tiny", "--set", f"tracking.uri={spec.tracking.uri}"]) == 0
    out = capsys.readouterr().out
    for row in rows:
        assert row["model"] in out and f"{row['h6']:.2f}" in out
