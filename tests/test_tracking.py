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


def test_url_credentials_never_reach_mlflow(tmp_path):
    """A generator or tracking URL written with its password or token: the stage params
    and the parent run's spec.yaml carry the URL without them."""
    from solar.tracking import redact, stage_run

    secret = "pw-5f1c9e"
    url = f"http://user:{secret}@127.0.0.1:9/v1"
    assert redact(url) == "http://***@127.0.0.1:9/v1"
    assert redact(f"https://{secret}@host/x") == "https://***@host/x"
    assert redact("a@b.com and sqlite:////x/mlflow.db") == "a@b.com and sqlite:////x/mlflow.db"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = start_pipeline(uri, "exp", "run", {"solar.pipeline": "exp"}, f"synthesis:\n- base_url: {url}\n")
    with stage_run(ctx, "math-instruct", {}, {"backend": "openai", "base_url": url, "nested": {"u": url}}) as run:
        child = run.run_id
    end_pipeline(ctx)
    c = MlflowClient(uri)
    params = c.get_run(child).data.params
    assert params["base_url"] == params["nested.u"] == "http://***@127.0.0.1:9/v1"
    spec = Path(c.download_artifacts(ctx.parent_run_id, "spec.yaml", str(tmp_path / "dl"))).read_text()
    assert secret not in spec and "http://***@127.0.0.1:9/v1" in spec


def test_credentials_in_urls_are_refused_without_echoing_them(capsys, tmp_path, monkeypatch):
    """Specs and run parameters are stored (Prefect keeps a run's parameters, MLflow its
    spec), so a URL with a password is refused, in the CLI and by the run form's schema,
    and the error names the field but not the secret."""
    import jsonschema
    import pytest

    from flows.cli import main
    from flows.pipeline import RunOptions

    monkeypatch.chdir(tmp_path)
    secret = "hunter2-secret"
    assert main(["run", "--preset", "tiny", "--set", f"tracking.uri=https://alice:{secret}@mlflow.example.com"]) == 2
    err = capsys.readouterr().err
    assert "tracking.uri" in err and "MLFLOW_TRACKING_PASSWORD" in err and secret not in err
    schema = RunOptions.model_json_schema()
    jsonschema.validate({"mlflow_uri": "http://127.0.0.1:5000"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"mlflow_uri": f"http://alice:{secret}@127.0.0.1:5000"}, schema)


def test_credentials_in_the_environments_uri_move_to_mlflows_variables(monkeypatch):
    from solar.tracking import resolve_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:p%40ss@mlflow.example.com/")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert resolve_uri(None) == "https://mlflow.example.com/"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
    assert resolve_uri("sqlite:////x/mlflow.db") == "sqlite:////x/mlflow.db"
