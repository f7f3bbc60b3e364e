"""The SOLAR pipeline flow: the DAG of the spec, one task per stage, tracked in MLflow.

Three flows users start (from the CLI, or from the Prefect UI through deployments):
`pipeline` runs a spec; `pipeline_from_preset` runs a shipped preset with the common knobs
and overrides, or a full spec; `sweep` runs a preset over a grid of overrides, one
pipeline run per point, sharing every stage the points have in common through the cache.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from solar.artifacts import StageResult
from solar.plan import plan
from solar.spec import PipelineSpec, Url, load_spec, spec_from_dict
from solar.tracking import end_pipeline
from tasks.stages import deployment_of, limited_pools, tagged
from tasks.tracking import start_tracking, summarize

Preset = Literal["tiny", "paper-ablation", "solar-10.7b"]


# One stage at a time unless a caller sizes the pool from `execution.max_parallel`
# (`with_parallelism`): on a CPU, concurrent training stages only contend for cores.
@flow(name="solar-pipeline", log_prints=False, task_runner=ThreadPoolTaskRunner(max_workers=1))
def pipeline(spec: PipelineSpec) -> list[dict]:
    """Run every stage of `spec` in dependency order; independent branches may overlap
    (up to `execution.max_parallel`). In `pools` mode each stage that is not cached runs
    as a flow run on its kind's work pool. Returns the models x H6 table."""
    stages = plan(spec)
    root = str(Path(spec.execution.artifacts_dir).resolve())
    dispatch = spec.execution.mode == "pools"
    if dispatch:
        check_deployments({stage.kind for stage in stages})
    tracking = start_tracking(spec)
    limited = limited_pools()
    futures: dict[str, PrefectFuture[StageResult]] = {}
    for stage in stages:
        inputs = {name: futures[name] for name in stage.inputs}
        futures[stage.name] = tagged(stage.kind, limited).submit(
            stage, inputs, root, tracking, dispatch, verify=spec.execution.verify)
    try:
        results = {name: f.result() for name, f in futures.items()}
    except BaseException:
        end_pipeline(tracking, failed=True)
        raise
    return summarize(spec, results, tracking)


def check_deployments(kinds: set[str]) -> None:
    """Before anything runs in pools mode: the stage deployments of these kinds exist on
    the server (with no server there is no worker either, and the run would wait forever)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ValueError("execution.mode: 'pools' needs a Prefect server with workers (PREFECT_API_URL "
                         "is not set); start them with `python deployments/servers.py up`")
    missing = []
    with get_client(sync_client=True) as client:
        for name in sorted({deployment_of(kind) for kind in kinds}):
            try:
                client.read_deployment_by_name(name)
            except ObjectNotFound:
                missing.append(name)
    if missing:
        raise ValueError(f"execution.mode: 'pools' dispatches to deployments {missing}, which "
                         f"{PREFECT_API_URL.value()} does not have; run `python deployments/deploy.py`")


class RunOptions(BaseModel):
    """The knobs most runs change, shown first in the run form; "preset", 0 and "" keep
    what the preset (or spec) says."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    mode: Literal["preset", "local", "pools"] = Field(
        "preset", description="local: stages run in this flow run; pools: each on its CPU/GPU work pool")
    max_parallel: NonNegativeInt = Field(0, description="independent stages run at once")
    artifacts_dir: str = Field("", description="stage artifacts root (every worker must see it)")
    mlflow_uri: Url = Field(
        "", description="MLflow tracking URI (credentials go in the workers' environment)")

    def overrides(self) -> list[str]:
        chosen = {
            "execution.mode": self.mode if self.mode != "preset" else None,
            "execution.max_parallel": self.max_parallel or None,
            "execution.artifacts_dir": self.artifacts_dir or None,
            "tracking.uri": self.mlflow_uri or None,
        }
        return [f"{path}={json.dumps(value)}" for path, value in chosen.items() if value is not None]


DEFAULT_OPTIONS = RunOptions()


def resolve_spec(
    preset: Preset, options: RunOptions | None, overrides: list[str] | None, spec: PipelineSpec | None
) -> PipelineSpec:
    """The full `spec` if given, else the preset; then the options, then the overrides."""
    every = [*(options or RunOptions()).overrides(), *(overrides or [])]
    if spec is None:
        return load_spec(preset=preset, overrides=every)
    return spec_from_dict(spec.model_dump(mode="json"), every)


@flow(name="solar-preset", log_prints=False)
def pipeline_from_preset(
    preset: Preset = "paper-ablation",
    options: RunOptions = DEFAULT_OPTIONS,
    overrides: list[str] | None = None,
    spec: PipelineSpec | None = None,
) -> list[dict]:
    """Run a shipped preset with the common `options` and `key.path=value` overrides (as
    `solar run --set`), or a whole `spec` instead of the preset."""
    resolved = resolve_spec(preset, options, overrides, spec)
    return with_parallelism(resolved)(spec=resolved)


@flow(name="solar-sweep", log_prints=False)
def sweep(
    preset: Preset = "paper-ablation",
    grid: dict[str, list[Any]] | None = None,
    options: RunOptions = DEFAULT_OPTIONS,
    overrides: list[str] | None = None,
) -> list[dict]:
    """One pipeline run per point of the grid (`{"dpo.dpo-v1.beta": [0.05, 0.1], ...}`, the
    product of its lists). Every point's spec is validated before any runs; the points
    run one after another, so each reuses the stages an earlier point built."""
    grid = grid or {}
    keys = list(grid)
    points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]
    specs = []
    for i, point in enumerate(points):
        tags = {"solar.sweep.point": str(i), **{f"solar.sweep.{k}": json.dumps(v) for k, v in point.items()}}
        point_overrides = [f"{k}={json.dumps(v)}" for k, v in point.items()]
        tag_override = f"tracking.tags={json.dumps(tags)}"
        specs.append(resolve_spec(preset, options, [*(overrides or []), *point_overrides, tag_override], None))
    rows = []
    for i, (point, spec) in enumerate(zip(points, specs, strict=True)):
        table = with_parallelism(spec).with_options(flow_run_name=f"point-{i}")(spec=spec)
        for row in table:
            rows.append({"point": i, **{k: json.dumps(v) for k, v in point.items()}, **row})
    if rows:
        create_table_artifact(rows, key="solar-sweep", description=f"{preset}: H6 of every model at every grid point")
    return rows


def with_parallelism(spec: PipelineSpec):
    """The pipeline flow with a task pool of `execution.max_parallel` workers."""
    return pipeline.with_options(task_runner=ThreadPoolTaskRunner(max_workers=spec.execution.max_parallel))
