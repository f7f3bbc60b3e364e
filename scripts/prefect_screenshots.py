"""Screenshots of the Prefect UI for docs/: the pipeline deployment's run form and the
graph of its latest finished flow run.

    make servers && source .servers/env
    # trigger solar-preset/tiny once (UI, or run_deployment), wait for it to finish
    .venv/bin/python scripts/prefect_screenshots.py

Needs Debian's `chromium` (headless). Writes docs/prefect-run-form.png and
docs/prefect-flow-run.png.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort

DOCS = Path(__file__).resolve().parents[1] / "docs"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def shoot(url: str, out: Path, size: str, wait_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                        f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=180)
    print(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployment", default="solar-preset/tiny")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time for the UI to load")
    args = parser.parse_args()
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise SystemExit("PREFECT_API_URL is not set: `source .servers/env` first")
    ui = api.removesuffix("/api")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(args.deployment)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))),
            sort=FlowRunSort.START_TIME_DESC, limit=1,
        )
        if not runs:
            raise SystemExit(f"{args.deployment} has no completed flow run yet")
        # The preset flow wraps the `solar-pipeline` subflow, whose graph holds the stages.
        inner = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[runs[0].id])))
        shown = next((r for r in inner if r.name and not r.name.startswith(("point-",)) and r.deployment_id is None),
                     runs[0])
    DOCS.mkdir(exist_ok=True)
    shoot(f"{ui}/deployments/deployment/{deployment.id}/run", DOCS / "prefect-run-form.png", "1400,1500", args.wait_ms)
    shoot(f"{ui}/runs/flow-run/{shown.id}", DOCS / "prefect-flow-run.png", "1600,1000", args.wait_ms)


if __name__ == "__main__":
    main()
