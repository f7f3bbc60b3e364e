"""Where tracking writes: a SQLite store keeps its artifacts beside the database, never in
whatever directory the process happens to run in."""

from __future__ import annotations

import os
from pathlib import Path

from mlflow.tracking import MlflowClient

from solar.tracking import end_pipeline, start_pipeline


def test_a_sqlite_stores_artifacts_go_beside_its_database(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    (tmp_path / "db").mkdir()
    ctx = start_pipeline(uri, "exp", "run", {"solar.pipeline": "exp"}, "name: exp\n")
    end_pipeline(ctx)
    exp = MlflowClient(uri).get_experiment_by_name("exp")
    assert exp.artifact_location == (tmp_path / "db" / "mlruns").as_uri()
    run = MlflowClient(uri).get_run(ctx.parent_run_id)
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "db" / "mlruns")
    assert os.listdir(elsewhere) == []  # nothing in the working directory
