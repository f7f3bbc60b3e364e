"""Screenshots of what a user looks at after `make run`, for docs/.

    .venv/bin/python scripts/screenshots.py [--preset paper-ablation]

Starts a lean MLflow server on 127.0.0.1 over ./mlflow.db and ./mlruns, opens the compare
view of the latest pipeline run's model runs (each carries its H6 scores) in headless
Chromium (Debian's `chromium` package), and copies the run's bar chart. Writes
docs/mlflow-compare.png and docs/h6-chart.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from flows.local_api import wait_http

MODEL_KINDS = ("sft", "merge", "dpo")
PORT = 5055


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="paper-ablation")
    args = parser.parse_args()
    root, docs = Path.cwd(), Path(__file__).resolve().parents[1] / "docs"
    docs.mkdir(exist_ok=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    url = f"http://127.0.0.1:{PORT}"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--workers", "1", "--host", "127.0.0.1",
         "--port", str(PORT), "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "mlruns")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"{url}/health", f"MLflow server at {url}", lambda: server.poll() is not None)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(url)
        exp = client.get_experiment_by_name(args.preset)
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=500)
        parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                    and r.data.tags.get("solar.kind") in MODEL_KINDS]
        children.sort(key=lambda r: r.info.run_name)
        ids = json.dumps([r.info.run_id for r in children])
        page = (f"{url}/#/compare-runs?runs={urllib.parse.quote(ids)}"
                f"&experiments={urllib.parse.quote(json.dumps([exp.experiment_id]))}")
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1600,2600", "--virtual-time-budget=20000",
                 f"--screenshot={docs / 'mlflow-compare.png'}", page],
                check=True, capture_output=True, timeout=120,
            )
        chart = client.download_artifacts(parent.info.run_id, "summary/h6.png")
        shutil.copy(chart, docs / "h6-chart.png")
        print(f"wrote {docs / 'mlflow-compare.png'} and {docs / 'h6-chart.png'} (run {parent.info.run_id})")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
