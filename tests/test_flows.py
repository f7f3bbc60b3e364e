"""The flows' parameters and routing, without a server: run-form options, sweep grids,
which deployment and pool each stage kind goes to in pools mode."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import ValidationError

import flows.pipeline as pipeline_module
from flows.pipeline import RunOptions, check_deployments, resolve_spec, sweep
from solar.plan import plan
from solar.spec import load_spec
from tasks.stages import GPU_KINDS, STAGE_TASKS, deployment_of


def test_run_options_become_overrides_and_empty_keeps_the_preset():
    assert RunOptions().overrides() == []
    opts = RunOptions(mode="pools", max_parallel=3, artifacts_dir="/shared/a", mlflow_uri="http://m:5000")
    assert opts.overrides() == ['execution.mode="pools"', "execution.max_parallel=3",
                                'execution.artifacts_dir="/shared/a"', 'tracking.uri="http://m:5000"']
    spec = resolve_spec("tiny", opts, ["dpo.dpo.beta=0.3"], None)
    assert (spec.execution.mode, spec.execution.max_parallel, spec.execution.artifacts_dir) == ("pools", 3, "/shared/a")
    assert spec.tracking.uri == "http://m:5000" and spec.dpo[0].beta == 0.3
    untouched = resolve_spec("tiny", RunOptions(), None, None)
    assert untouched == load_spec(preset="tiny")
    with pytest.raises(ValidationError, match="max_parallel"):
        RunOptions(max_parallel=-1)
    with pytest.raises(ValidationError, match="gpus"):
        RunOptions(gpus=2)


def test_a_full_spec_replaces_the_preset_and_options_still_apply():
    spec = load_spec(preset="tiny", overrides=["name=mine"])
    resolved = resolve_spec("paper-ablation", RunOptions(max_parallel=2), None, spec)
    assert resolved.name == "mine" and resolved.execution.max_parallel == 2
    assert [s.name for s in resolved.sft] == ["sft-a", "sft-b"]  # the tiny spec's, not the preset's


def test_a_sweep_validates_every_point_before_running_any(monkeypatch):
    ran = []
    monkeypatch.setattr(pipeline_module, "with_parallelism", lambda spec: ran.append(spec))
    with pytest.raises(ValidationError, match="beta"):
        sweep.fn(preset="tiny", grid={"dpo.dpo.beta": [0.1, -1.0]})
    assert ran == []


def test_a_sweep_runs_the_product_of_the_grid_with_tagged_points(monkeypatch):
    specs = []

    class Recorder:
        def __init__(self, spec):
            specs.append(spec)

        def with_options(self, **kwargs):
            return lambda spec: [{"model": "dpo", "h6": spec.dpo[0].beta}]

    monkeypatch.setattr(pipeline_module, "with_parallelism", Recorder)
    monkeypatch.setattr(pipeline_module, "create_table_artifact", lambda *a, **k: None)
    rows = sweep.fn(preset="tiny", grid={"dpo.dpo.beta": [0.1, 0.2], "merges.sft-a+b.weights": [[0.5, 0.5], [0.3, 0.7]]})
    assert [(s.dpo[0].beta, s.merges[0].weights) for s in specs] == [
        (0.1, [0.5, 0.5]), (0.1, [0.3, 0.7]), (0.2, [0.5, 0.5]), (0.2, [0.3, 0.7])]
    assert specs[3].tracking.tags == {"solar.sweep.point": "3", "solar.sweep.dpo.dpo.beta": "0.2",
                                      "solar.sweep.merges.sft-a+b.weights": "[0.3, 0.7]"}
    assert [r["h6"] for r in rows] == [0.1, 0.1, 0.2, 0.2]
    # Points share everything upstream of what they change: the SFT stages are one set.
    fps = [{s.name: s.fingerprint for s in plan(spec)} for spec in specs]
    assert len({f["sft-a"] for f in fps}) == 1 and len({f["pretrain"] for f in fps}) == 1
    assert len({f["sft-a+b"] for f in fps}) == 2 and len({f["dpo"] for f in fps}) == 4


def test_every_stage_kind_has_a_deployment_on_the_right_pool():
    assert set(STAGE_TASKS) >= set(GPU_KINDS)
    for kind in STAGE_TASKS:
        name = deployment_of(kind)
        flow, _, deployment = name.partition("/")
        assert flow == "solar-stage"
        assert (deployment in ("pretrain", "sft", "dpo", "eval")) == (kind in GPU_KINDS), kind
    assert deployment_of("perplexity") == "solar-stage/eval"
    assert deployment_of("merge") == deployment_of("upscale") == "solar-stage/cpu"


def test_pools_mode_without_a_server_is_a_clear_error_before_anything_runs():
    with temporary_settings({PREFECT_API_URL: ""}):
        with pytest.raises(ValueError, match="execution.mode: 'pools' needs a Prefect server"):
            check_deployments({"sft"})
