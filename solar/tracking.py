"""MLflow tracking: one experiment per pipeline, a parent run per pipeline run, a child run
per stage named as the stage.

Everything goes through `MlflowClient` with explicit run ids, never the thread-local active
run, so stages running in worker threads or processes log to the right place.

Faults: an HTTP tracking server that does not answer at the start of a pipeline is an
error before any stage runs (`check_reachable`), so nothing is trained and then lost. A
server lost during a stage does not fail the stage: each of its tracking calls is retried
(`RETRY_ATTEMPTS`, exponential backoff from `RETRY_BACKOFF` seconds, on top of MLflow's own
HTTP retries, MLFLOW_HTTP_REQUEST_MAX_RETRIES), then given up with a warning; the stage's
later calls are skipped and the losses are listed in its manifest (`tracking_errors`).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from solar.spec import URL_USERINFO

DEFAULT_DB = "mlflow.db"
RETRY_ATTEMPTS = 3  # tries of one tracking call during a stage before it is given up
RETRY_BACKOFF = 1.0  # seconds before the second try, doubled before each later one
REACH_TIMEOUT = 5.0  # seconds an HTTP tracking server has to answer at pipeline start

log = logging.getLogger(__name__)


class TrackingUnavailable(RuntimeError):
    """The tracking server does not answer: raised before any stage runs."""


@dataclass(frozen=True)
class TrackingContext:
    """Where a pipeline run logs: picklable, so it can be handed to tasks."""

    uri: str
    experiment_id: str
    parent_run_id: str
    pipeline: str


def resolve_uri(uri: str | None) -> str:
    """The spec's URI, else $MLFLOW_TRACKING_URI, else a sqlite store in the working dir.

    Credentials in $MLFLOW_TRACKING_URI (`https://user:password@host`) move to
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (unless those are set), so the URI
    the run passes around (task results, stage-flow parameters in pools mode) carries none;
    the spec's own URI cannot have any (spec validation)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    if userinfo := URL_USERINFO.search(uri):
        user, _, password = unquote(userinfo[0].removesuffix("@")).partition(":")
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", user)
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", password)
        uri = URL_USERINFO.sub("", uri, count=1)
    return uri


def artifact_root(uri: str) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite store's database (MLflow's
    own default is ./mlruns of whatever directory the process runs in); a server decides
    for itself (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT) -> None:
    """Fail fast, naming the URI, if an http(s) tracking server does not answer. Without
    this, MLflow's own retries (7 with exponential backoff by default) take minutes to say
    so. Any HTTP answer counts as reachable (a proxy may not route `/health`)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLError):  # it answered; TLS settings are MLflow's to apply
            return
        raise TrackingUnavailable(
            f"tracking.uri {uri}: MLflow server unreachable ({reason}); nothing was run. "
            "Start the server, or set tracking.uri / MLFLOW_TRACKING_URI to one that answers."
        ) from e


def open_store(uri: str | None) -> None:
    """Open a local tracking store ahead of the first run (MLflow keeps it per URI): for a
    new SQLite file that creates and migrates MLflow's tables, 2-4 s here, which `solar run`
    overlaps with the start of Prefect's temporary server. A server's URI is left to
    `check_reachable` at the start of the run."""
    uri = resolve_uri(uri)
    if not uri.startswith(("http://", "https://")):
        client(uri)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def start_pipeline(
    uri: str | None, experiment: str, run_name: str, tags: dict[str, str], spec_yaml: str
) -> TrackingContext:
    """Create (or reuse) the experiment and open the pipeline's parent run."""
    uri = resolve_uri(uri)
    check_reachable(uri)
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    experiment_id = exp.experiment_id if exp else c.create_experiment(experiment, artifact_location=artifact_root(uri))
    run = c.create_run(experiment_id, run_name=run_name, tags=tags)
    c.log_text(run.info.run_id, redact(spec_yaml), "spec.yaml")
    return TrackingContext(uri, experiment_id, run.info.run_id, experiment)


def run_url(ctx: TrackingContext) -> str | None:
    """The parent run's page in the MLflow UI, for a tracking server (None for a local store,
    which has no UI until `mlflow ui` serves it)."""
    if not ctx.uri.startswith(("http://", "https://")):
        return None
    return f"{ctx.uri.rstrip('/')}/#/experiments/{ctx.experiment_id}/runs/{ctx.parent_run_id}"


def end_pipeline(ctx: TrackingContext, failed: bool = False) -> None:
    client(ctx.uri).set_terminated(ctx.parent_run_id, "FAILED" if failed else "FINISHED")


def redact(text: str) -> str:
    """`text` with the credentials of URLs replaced (`https://***@host`): a tracking or
    generator URL written with its password or token never reaches MLflow."""
    return URL_USERINFO.sub("***@", text)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as dotted keys with string values (MLflow's form), URL passwords
    redacted."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = redact(str(value))[:6000]
    return out


class StageRun:
    """A stage's child run; `log(metrics, step)` is safe to call from any thread.

    Its calls never fail the stage: a call that still fails after `RETRY_ATTEMPTS` is
    recorded in `errors` (and the stage's manifest) and the stage's later calls are skipped,
    so a lost server costs the curves, not the trained model."""

    def __init__(self, ctx: TrackingContext | None, run_id: str | None):
        self.ctx, self.run_id = ctx, run_id
        self.stage_name: str | None = None
        self.work_dir: Path | None = None  # scratch that outlives a failed attempt
        self.errors: list[str] = []  # tracking calls given up on
        self.skipped = 0  # calls not tried once tracking was lost

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        batch = metric_batch(metrics, step)
        self.call("log_batch", lambda c: c.log_batch(self.run_id, metrics=batch))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.call(f"log_text {artifact_file}", lambda c: c.log_text(self.run_id, text, artifact_file))

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        """A table (column -> values) as an MLflow table artifact (`MlflowClient.log_table`)."""
        self.call(f"log_table {artifact_file}", lambda c: c.log_table(self.run_id, columns, artifact_file))

    def log_data_inputs(self, datasets: list[dict[str, Any]]) -> None:
        """Lineage, as `mlflow.log_input`: each dataset the stage reads ({name, path, digest,
        context, ...}) as an MLflow dataset entity on the run's inputs."""
        if self.ctx is None or self.run_id is None or not datasets:
            return
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.types import ColSpec, Schema

        entries = []
        for d in datasets:
            ds = MetaDataset(_source(d["path"]), name=d["name"], digest=d["digest"][:32],
                             schema=Schema([ColSpec("string", "rows")]))
            tags = [InputTag("mlflow.data.context", d.get("context", "train"))]
            entries.append(DatasetInput(ds._to_mlflow_entity(), tags=tags))
        self.call("log_inputs", lambda c: _log_inputs_retrying(c, self.run_id, entries))

    def call(self, what: str, fn) -> None:
        """`fn(client)`, retried with backoff; given up on (and recorded) if it keeps failing."""
        if self.ctx is None or self.run_id is None:
            return
        if self.errors:  # lost earlier in this stage: don't spend the retries again
            self.skipped += 1
            return
        for attempt in range(RETRY_ATTEMPTS):
            try:
                fn(client(self.ctx.uri))
                return
            except Exception as e:  # MlflowException, requests' errors, sqlite's ...
                error = f"{what}: {type(e).__name__}: {e}"
                if attempt < RETRY_ATTEMPTS - 1:
                    time.sleep(RETRY_BACKOFF * 2**attempt)
        self.errors.append(error[:2000])
        log.warning("MLflow tracking lost in stage %s after %d tries; the stage goes on "
                    "untracked: %s", self.stage_name or self.run_id, RETRY_ATTEMPTS, error[:500])


def _log_inputs_retrying(c, run_id: str, entries: list, attempts: int = 3) -> None:
    """MLflow creates a dataset on first use; two stages logging the same new dataset at
    once race on that insert (a UNIQUE constraint error). The retry finds it created."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            c.log_inputs(run_id, datasets=entries)
            return
        except MlflowException as e:
            if "UNIQUE constraint" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextmanager
def stage_run(
    ctx: TrackingContext | None, name: str, tags: dict[str, str], params: dict[str, Any]
) -> Iterator[StageRun]:
    """Open a child run of the pipeline run for one stage; FAILED if the body raises."""
    if ctx is None:
        yield StageRun(None, None)
        return
    c = client(ctx.uri)
    run = c.create_run(
        ctx.experiment_id, run_name=name,
        tags={"mlflow.parentRunId": ctx.parent_run_id, "solar.pipeline": ctx.pipeline, **tags},
    )
    run_id = run.info.run_id
    _log_params(c, run_id, params)
    stage = StageRun(ctx, run_id)
    try:
        yield stage
    except BaseException:
        stage.call("set_terminated", lambda c: c.set_terminated(run_id, "FAILED"))
        raise
    # The artifact is in place by now: a lost server must not turn the stage into a failure.
    stage.call("set_terminated", lambda c: c.set_terminated(run_id, "FINISHED"))


def _log_params(c, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    flat = list(flatten(params).items())
    for i in range(0, len(flat), 100):  # MLflow takes at most 100 params a batch
        c.log_batch(run_id, params=[Param(k, v) for k, v in flat[i : i + 100]])


def _source(path: str):
    """An MLflow dataset source for a local directory (a `file://` URI)."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": all are local
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(Path(path).resolve().as_uri())


def metric_batch(metrics: dict[str, float], step: int = 0) -> list:
    """`metrics` as MLflow `Metric`s for `log_batch`, stamped now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(_metric_key(k), float(v), now, step) for k, v in metrics.items()]


def _metric_key(key: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / ; TRL logs keys like "rewards/chosen".
    return "".join(ch if ch.isalnum() or ch in "_-. /" else "_" for ch in key)


def record_cached(ctx: TrackingContext, result) -> str:
    """A child run for a stage this pipeline run reused, pointing at the run that built it,
    with its metrics, so every pipeline run holds a full set of child runs to compare."""
    c = client(ctx.uri)
    run = c.create_run(
        ctx.experiment_id, run_name=result.name,
        tags={
            "mlflow.parentRunId": ctx.parent_run_id,
            "solar.pipeline": ctx.pipeline,
            "solar.stage": result.name,
            "solar.kind": result.kind,
            "solar.fingerprint": result.fingerprint,
            "solar.artifact": result.path,
            "solar.cached": "true",
            "solar.source_run_id": result.run_id or "",
        },
    )
    StageRun(ctx, run.info.run_id).log(result.metrics)
    _copy_params_and_inputs(c, result.run_id, run.info.run_id)
    c.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _copy_params_and_inputs(c, source_run_id: str | None, run_id: str) -> None:
    """Give a cached stage's record the spec params and dataset lineage of the run that
    built it (when that run is in this tracking store)."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    if not source_run_id:
        return
    try:
        source = c.get_run(source_run_id)
    except MlflowException:  # built against another tracking store
        return
    params = [Param(k, v) for k, v in source.data.params.items()]
    for i in range(0, len(params), 100):
        c.log_batch(run_id, params=params[i : i + 100])
    if source.inputs and source.inputs.dataset_inputs:
        c.log_inputs(run_id, datasets=list(source.inputs.dataset_inputs))


def log_summary(
    ctx: TrackingContext, texts: dict[str, str], files: list[Path], metrics: dict[str, float]
) -> None:
    """Attach summary texts (name -> text), files and metrics to the pipeline's parent run."""
    c = client(ctx.uri)
    for name, text in texts.items():
        c.log_text(ctx.parent_run_id, text, name)
    for path in files:
        c.log_artifact(ctx.parent_run_id, str(path), "summary")
    c.log_batch(ctx.parent_run_id, metrics=metric_batch(metrics))


def pipeline_summary(uri: str | None, experiment: str, run_id: str | None = None) -> tuple[str, str]:
    """(run id, summary/h6.csv text) of a pipeline run: `run_id`, or the experiment's latest."""
    c = client(resolve_uri(uri))
    if run_id is None:
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            raise ValueError(f"no MLflow experiment {experiment!r} at {resolve_uri(uri)}")
        runs = c.search_runs(
            [exp.experiment_id], "tags.`solar.pipeline` != '' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=50,
        )
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        if not parents:
            raise ValueError(f"experiment {experiment!r} has no finished pipeline run")
        run_id = parents[0].info.run_id
    path = c.download_artifacts(run_id, "summary/h6.csv")
    return run_id, Path(path).read_text()


def register_model(
    ctx: TrackingContext, run_id: str, model_dir: Path, name: str, tags: dict[str, str]
) -> str:
    """Log `model_dir` as the `model` artifact of `run_id` and register it as a new version
    of `name` in the MLflow model registry, unless a version with the same fingerprint
    exists; returns the version."""
    from mlflow.exceptions import MlflowException

    c = client(ctx.uri)
    for existing in c.search_model_versions(f"name = '{name}'"):
        if existing.tags.get("solar.fingerprint") == tags.get("solar.fingerprint"):
            return existing.version  # this very model is registered already
    c.log_artifacts(run_id, str(model_dir), "model")
    try:
        c.create_registered_model(name)
    except MlflowException as e:  # already registered: add a version
        if "already exists" not in str(e).lower():
            raise
    version = c.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags)
    return version.version
