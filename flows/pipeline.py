"""The SOLAR pipeline flow: the DAG of the spec, one task per stage, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from solar.artifacts import StageResult
from solar.plan import plan
from solar.spec import PipelineSpec, load_spec
from solar.tracking import end_pipeline
from tasks.stages import STAGE_TASKS
from tasks.tracking import start_tracking, summarize


# One stage at a time unless a caller sizes the pool from `execution.max_parallel`
# (`with_parallelism`): on a CPU, concurrent training stages only contend for cores.
@flow(name="solar-pipeline", log_prints=False, task_runner=ThreadPoolTaskRunner(max_workers=1))
def pipeline(spec: PipelineSpec) -> list[dict]:
    """Run every stage of `spec` in dependency order; independent branches may overlap
    (up to `execution.max_parallel`). Returns the models x H6 table."""
    if spec.execution.mode != "local":
        raise ValueError(
            "execution.mode: only 'local' runs in this version; 'pools' dispatch to work "
            "pools is not built yet"
        )
    stages = plan(spec)
    root = str(Path(spec.execution.artifacts_dir).resolve())
    tracking = start_tracking(spec)
    futures: dict[str, PrefectFuture[StageResult]] = {}
    for stage in stages:
        inputs = {name: futures[name] for name in stage.inputs}
        futures[stage.name] = STAGE_TASKS[stage.kind].submit(stage, inputs, root, tracking)
    try:
        results = {name: f.result() for name, f in futures.items()}
    except BaseException:
        end_pipeline(tracking, failed=True)
        raise
    return summarize(spec, results, tracking)


@flow(name="solar-preset", log_prints=False)
def pipeline_from_preset(
    preset: Literal["tiny", "paper-ablation", "solar-10.7b"] = "paper-ablation",
    overrides: list[str] | None = None,
) -> list[dict]:
    """Run a shipped preset, with `key.path=value` overrides (as `solar run --set`)."""
    spec = load_spec(preset=preset, overrides=overrides or [])
    return with_parallelism(spec)(spec=spec)


def with_parallelism(spec: PipelineSpec):
    """The pipeline flow with a task pool of `execution.max_parallel` workers."""
    return pipeline.with_options(task_runner=ThreadPoolTaskRunner(max_workers=spec.execution.max_parallel))
