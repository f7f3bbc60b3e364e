"""One stage as a flow of its own: what a work pool's worker runs in `pools` mode.

The pipeline flow (mode `pools`) starts a run of `solar-stage/<deployment>` for each stage
that is not cached, on the pool of its kind, and waits for it. The stage writes its
artifact under the shared artifact root and logs to the pipeline's MLflow parent run, so
the result the pipeline needs is the artifact's manifest, not the flow's return value.
"""

from __future__ import annotations

from prefect import flow

from solar.artifacts import StageResult, Verify
from solar.plan import Stage
from solar.stages import run_stage
from solar.tracking import TrackingContext


@flow(name="solar-stage", log_prints=False)
def stage_flow(
    stage: Stage,
    inputs: dict[str, StageResult],
    root: str,
    tracking: TrackingContext | None = None,
    verify: Verify = "fast",
) -> str:
    """Build `stage` from its inputs' artifacts into `root` (a no-op when it is built);
    returns the artifact's path."""
    return run_stage(stage, inputs, root, tracking, verify).path
