"""Tasks that open, record and close the pipeline's MLflow parent run."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import yaml
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from solar import report
from solar.artifacts import StageResult
from solar.spec import PipelineSpec
from solar.tracking import (
    StageRun,
    TrackingContext,
    end_pipeline,
    log_summary,
    metric_batch,
    record_cached,
    register_model,
    run_url,
    start_pipeline,
)


@task(name="start-tracking")
def start_tracking(spec: PipelineSpec) -> TrackingContext:
    # Link the run the user started (a deployment's run wraps this flow as a subflow).
    this, root = str(flow_run.id or ""), str(flow_run.root_flow_run_id or flow_run.id or "")
    url = (flow_run.ui_url or "").replace(this, root)  # "/flow-runs/..." when no UI is served
    tags = {**spec.tracking.tags, "solar.pipeline": spec.name, "prefect.flow_run_id": root}
    if root != this:
        tags["prefect.subflow_run_id"] = this
    if url.startswith(("http://", "https://")):
        tags["prefect.flow_run_url"] = url
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    ctx = start_pipeline(
        spec.tracking.uri, spec.tracking.experiment or spec.name,
        f"{spec.name}-{flow_run.name or 'run'}", tags, spec_yaml,
    )
    # ... and the flow run links back to the MLflow run (its Artifacts tab).
    if link := run_url(ctx):
        create_link_artifact(link, link_text=f"MLflow run {ctx.parent_run_id}", key="mlflow-run",
                             description=f"The pipeline's parent run in MLflow ({ctx.pipeline})")
    else:
        create_markdown_artifact(
            f"MLflow run `{ctx.parent_run_id}` in `{ctx.uri}`: `mlflow ui --backend-store-uri {ctx.uri}`",
            key="mlflow-run", description="The pipeline's parent run in MLflow")
    return ctx


@task(name="summarize")
def summarize(
    spec: PipelineSpec, results: dict[str, StageResult], tracking: TrackingContext
) -> list[dict]:
    """Record stages reused from earlier runs, put each model's scores on its child run,
    log the paper-layout tables and chart, close the parent run. The models and the table
    are done by now, so a tracking server lost here costs the record, not the run: what
    could not be recorded is listed in the flow run's `tracking-lost` artifact."""
    evals = [r for r in results.values() if r.kind == "eval"]
    ppl = [r for r in results.values() if r.kind == "perplexity"]
    rows = report.score_rows(evals)
    tables = report.paper_tables(spec, rows) + report.perplexity_table(ppl)
    lost = record_summary(spec, results, tracking, rows, tables)
    if rows:
        key = re.sub(r"[^a-z0-9-]", "-", f"{tracking.pipeline}-h6")
        create_table_artifact(rows, key=key, description="Models x H6 (percent)")
        create_markdown_artifact(tables, key=f"{key}-tables", description="Paper-layout tables")
    if lost:
        listing = "\n".join(f"- `{error[:500]}`" for error in lost)
        create_markdown_artifact(f"MLflow run `{tracking.parent_run_id}` at `{tracking.uri}` misses:\n\n{listing}",
                                 key="tracking-lost", description="What the summary could not record in MLflow")
    return rows


def record_summary(
    spec: PipelineSpec, results: dict[str, StageResult], tracking: TrackingContext,
    rows: list[dict], tables: str,
) -> list[str]:
    """The summary's MLflow calls, each retried; once one is given up on, the rest are
    skipped. Returns what was lost (empty when everything was recorded)."""
    summary = StageRun(tracking, tracking.parent_run_id)
    summary.stage_name = "summary"
    run_ids = {}
    for result in results.values():
        if result.parent_run_id == tracking.parent_run_id:
            run_ids[result.name] = result.run_id
        else:  # reused: a child run of this pipeline run points at the one that built it
            summary.call(f"record cached {result.name}",
                         lambda c, r=result: run_ids.update({r.name: record_cached(tracking, r)}))
    # Each model's run gets its scores, so the compare view over model runs lines them up.
    prefixes = {"eval": "eval-", "perplexity": "ppl-"}
    for r in results.values():
        if r.kind in prefixes and run_ids.get(model := r.name.removeprefix(prefixes[r.kind])):
            summary.call(f"scores of {model}",
                         lambda c, run=run_ids[model], m=r.metrics: c.log_batch(run, metrics=metric_batch(m)))
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "h6.png"
        if rows:
            estimate = " (estimate on document subsets)" if spec.eval and spec.eval.is_estimate else ""
            report.bar_chart(rows, chart, f"{spec.name}: H6 by task (%){estimate}")
        summary.call("summary report", lambda c: log_summary(
            tracking,
            {"summary/h6.md": tables, "summary/h6.csv": report.to_csv(rows)},
            [chart] if rows else [],
            {f"h6.{row['model']}": row["h6"] for row in rows if "h6" in row},
        ))
    if spec.tracking.register_stage and run_ids.get(spec.tracking.register_stage):
        summary.call("model registration", lambda c: register_final(spec, results, run_ids, tracking))
    summary.call("closing the parent run", lambda c: end_pipeline(tracking))
    return summary.errors + ([f"{summary.skipped} later calls skipped"] if summary.skipped else [])


def register_final(
    spec: PipelineSpec, results: dict[str, StageResult], run_ids: dict[str, str], tracking: TrackingContext
) -> str:
    """Register the spec's final model with its scores and lineage (its ancestor stages)."""
    name = spec.tracking.register_stage
    final = results[name]
    tags = {
        "solar.stage": name,
        "solar.fingerprint": final.fingerprint,
        "solar.lineage": " <- ".join(report.lineage(results, name)),
        "solar.pipeline_run_id": tracking.parent_run_id,
    }
    evaluated = results.get(f"eval-{name}")
    if evaluated:
        tags.update({f"score.{k}": f"{v:.4f}" for k, v in evaluated.metrics.items() if k != "stage_seconds"})
    model = spec.tracking.registered_name or f"{spec.name}-{name}"
    return register_model(tracking, run_ids[name], Path(final.path), model, tags)
