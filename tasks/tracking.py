"""Tasks that open, record and close the pipeline's MLflow parent run."""

from __future__ import annotations

import re

import yaml
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from solar import report
from solar.artifacts import StageResult
from solar.spec import PipelineSpec
from solar.tracking import TrackingContext, end_pipeline, log_summary, record_cached, start_pipeline


@task(name="start-tracking")
def start_tracking(spec: PipelineSpec) -> TrackingContext:
    url = flow_run.ui_url or ""
    tags = {"solar.pipeline": spec.name, "prefect.flow_run_id": str(flow_run.id or "")}
    if url:
        tags["prefect.flow_run_url"] = url
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    return start_pipeline(
        spec.tracking.uri, spec.tracking.experiment or spec.name,
        f"{spec.name}-{flow_run.name or 'run'}", tags, spec_yaml,
    )


@task(name="summarize")
def summarize(results: dict[str, StageResult], tracking: TrackingContext) -> list[dict]:
    """Record stages reused from earlier runs, log the H6 table, close the parent run."""
    for result in results.values():
        if result.parent_run_id != tracking.parent_run_id:
            record_cached(tracking, result)
    rows = report.score_rows([r for r in results.values() if r.kind == "eval"])
    log_summary(
        tracking,
        {"summary/h6.md": report.to_markdown(rows), "summary/h6.csv": report.to_csv(rows)},
        {f"h6.{row['model']}": row["h6"] for row in rows if "h6" in row},
    )
    if rows:
        key = re.sub(r"[^a-z0-9-]", "-", f"{tracking.pipeline}-h6")
        create_table_artifact(rows, key=key, description="Models x H6 (percent)")
    end_pipeline(tracking)
    return rows
