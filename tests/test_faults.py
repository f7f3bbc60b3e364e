"""Faults around a whole pipeline run: `solar run` killed with SIGKILL in the middle of DUS,
SFT, a merge and DPO, then rerun; the MLflow server unreachable at the start or lost in a
stage; transient stage failures retried by Prefect.

The kill test runs the real CLI in a subprocess against a local Prefect server, on a small
spec (base, DUS, SFT, merge, DPO), and kills the whole process tree at four points in turn:
each rerun is the next point's run, the last one finishes. A kill point is seen from
outside (the stage's `.tmp-` build directory, or a whole checkpoint in its work dir); the
process tree is stopped (SIGSTOP) at once, what is on disk is recorded, then it is killed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from flows.local_api import free_port, wait_http
from solar.artifacts import StageResult, is_complete, read_manifest, stage_dir
from solar.plan import plan
from solar.spec import PipelineSpec
from solar.stages import run_stage, work_dir
from tasks.stages import KEYS_DIR

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAIN = {"max_steps": 8, "batch_size": 4, "max_length": 64, "learning_rate": 5.0e-4,
         "logging_steps": 2, "save_steps": 4}
SPEC = {
    "name": "faults",
    "base": {"name": "base", "model": "embedded",
             "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_layers": 4, "num_heads": 4,
                      "num_kv_heads": 2, "vocab_size": 1024, "seed": 0}},
    # 1 MB shards: a build of several fsynced files, long enough to be caught in the act.
    "upscale": {"name": "dus", "base": "base", "m": 1, "shard_size_mb": 1},
    "datasets": [
        {"name": "alpaca", "format": "alpaca", "source": "embedded:sources/alpaca_gpt4.jsonl", "cap": 64},
        {"name": "ultrafeedback", "format": "ultrafeedback",
         "source": "embedded:sources/ultrafeedback_cleaned.jsonl", "cap": 32},
    ],
    "sft": [{"name": "sft", "base": "dus", "datasets": ["alpaca"], "train": TRAIN}],
    "merges": [{"name": "avg", "method": "linear", "models": ["dus", "sft"], "weights": [0.5, 0.5],
                "shard_size_mb": 1}],
    "dpo": [{"name": "dpo", "base": "avg", "datasets": ["ultrafeedback"], "beta": 0.1,
             "train": {**TRAIN, "learning_rate": 5.0e-5}}],
    "eval": None,
}
STAGES = {s.name: s for s in plan(PipelineSpec.model_validate(SPEC))}
DUS = dataclasses.replace(STAGES["dus"], params={**STAGES["dus"].params, "m": 0})  # for the 2-layer test model
# In DAG order: each rerun reuses what the earlier runs finished and dies at the next point.
KILLS = [("dus", "build"), ("sft", "checkpoint"), ("avg", "build"), ("dpo", "checkpoint")]


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_tree(proc: subprocess.Popen, sig: int) -> None:
    """`sig` to the process group and to every descendant (some start their own session)."""
    procs = tree(proc.pid)
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def build_dirs(final: Path) -> list[str]:
    return [p.name for p in final.parent.glob(f".{final.name}.tmp-*")] if final.parent.is_dir() else []


def step_into_build(proc: subprocess.Popen, final: Path) -> str:
    """With the run stopped as the stage starts, let it run in ~1 ms slices until its build
    directory exists: the kill then lands mid-build however fast the build is and however
    late this process is scheduled on a busy machine. Returns with the run stopped."""
    for _ in range(100_000):
        if hits := build_dirs(final):
            return hits[0]
        if is_complete(final) or proc.poll() is not None:
            pytest.fail(f"{final} finished (or the run ended) between two slices")
        os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.001)
        os.killpg(proc.pid, signal.SIGSTOP)
    pytest.fail(f"{final}: no build directory after 100000 slices")


def cache_key_renewed(token: Path) -> Callable[[], str | None]:
    before = token.read_text() if token.is_file() else None

    def seen() -> str | None:
        try:
            now = token.read_text()
        except OSError:
            return None
        return now if now and now != before else None
    return seen


def checkpoint_saved(checkpoints: Path) -> Callable[[], int | None]:
    """The step of a whole checkpoint: its trainer_state.json, written last, parses."""
    def seen() -> int | None:
        for state in checkpoints.glob("checkpoint-*/trainer_state.json"):
            try:
                return int(json.loads(state.read_text())["global_step"])
            except (ValueError, KeyError, OSError):
                continue
        return None
    return seen


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One local Prefect server for the module: each run then starts in seconds, not in the
    ~15 s of a temporary server of its own. Yields the environment that points at it."""
    tmp = tmp_path_factory.mktemp("prefect")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PYTHONPATH": str(REPO)}
    for var in ("PREFECT_PROFILE", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    proc = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 env, tmp, tmp / "server.log")
    try:
        wait_http(f"{env['PREFECT_API_URL']}/health", "prefect server", lambda: proc.poll() is not None,
                  lambda: f":\n{(tmp / 'server.log').read_text()[-3000:]}", timeout=90)
        yield env
    finally:
        signal_tree(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            signal_tree(proc, signal.SIGKILL)
            proc.wait(timeout=10)


def write_spec(tmp: Path) -> Path:
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(
        {**SPEC, "execution": {"artifacts_dir": str(tmp / "artifacts")},
         "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"}}))
    return path


def solar_run(spec: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "run", "--spec", str(spec),
            *(a for o in overrides for a in ("--set", o))]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, server):
    """Run `solar run` four times, killing it at each point of KILLS, then to the end.
    Returns what was on disk at each kill and the final state."""
    tmp = tmp_path_factory.mktemp("faults")
    spec_file = write_spec(tmp)
    spec = PipelineSpec.model_validate(yaml.safe_load(spec_file.read_text()))
    stages = {s.name: s for s in plan(spec)}
    root = (tmp / "artifacts").resolve()
    env, log, cmd = server, tmp / "run.log", solar_run(spec_file)
    kills: dict[str, dict] = {}
    t0 = time.monotonic()
    for name, point in KILLS:
        s = stages[name]
        final = stage_dir(root, s.kind, s.fingerprint)
        # A build is caught as it starts: its cache key's token is renewed just before it runs.
        seen = (cache_key_renewed(root / KEYS_DIR / s.fingerprint) if point == "build"
                else checkpoint_saved(work_dir(root, s.fingerprint) / "checkpoints"))
        proc = start(cmd, env, tmp, log)
        deadline = time.monotonic() + 240
        while (hit := seen()) is None:
            if proc.poll() is not None:
                pytest.fail(f"run ended ({proc.returncode}) before the {name} kill point:\n"
                            f"{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                signal_tree(proc, signal.SIGKILL)
                pytest.fail(f"no {name} kill point in 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.002)
        signal_tree(proc, signal.SIGSTOP)  # frozen: what is on disk now is what the kill leaves
        if point == "build":
            hit = step_into_build(proc, final)
        kills[name] = {
            "hit": hit,
            "complete": {n: is_complete(stage_dir(root, t.kind, t.fingerprint)) for n, t in stages.items()},
            "manifests": {n: (stage_dir(root, t.kind, t.fingerprint) / "manifest.json").stat().st_mtime_ns
                          for n, t in stages.items() if is_complete(stage_dir(root, t.kind, t.fingerprint))},
        }
        signal_tree(proc, signal.SIGKILL)
        kills[name]["returncode"] = proc.wait(timeout=30)
        kills[name]["seconds"] = round(time.monotonic() - t0, 1)
        if name == "sft":  # as if killed while writing later checkpoints: before, and in, trainer_state.json
            partials = [work_dir(root, s.fingerprint) / "checkpoints" / f"checkpoint-{n}" for n in (6, 7)]
            for partial in partials:
                partial.mkdir()
                (partial / "model.safetensors").write_bytes(b"half a checkpoint")
            (partials[0] / "trainer_state.json").write_text('{"global_step": 6, "log_hist')
            kills[name]["partials"] = partials
    proc = start(cmd, env, tmp, log)
    returncode = proc.wait(timeout=300)
    assert returncode == 0, log.read_text()[-4000:]
    print("kill points reached after (s):", {n: k["seconds"] for n, k in kills.items()},
          "end:", round(time.monotonic() - t0, 1))
    return {"tmp": tmp, "root": root, "spec": spec, "stages": stages, "kills": kills, "log": log}


def ancestors(stages: dict, name: str) -> set[str]:
    found: set[str] = set()
    for parent in stages[name].inputs:
        found |= {parent, *ancestors(stages, parent)}
    return found


def manifest(chain, name: str) -> dict:
    s = chain["stages"][name]
    return read_manifest(stage_dir(chain["root"], s.kind, s.fingerprint))


@pytest.mark.parametrize("name,point", KILLS)
def test_killed_mid_stage_then_rerun(chain, name, point):
    kill = chain["kills"][name]
    assert kill["returncode"] == -signal.SIGKILL
    # Killed in the act: the stage was not finished, everything before it in the DAG was.
    assert not kill["complete"][name], f"{name} had finished before the kill"
    assert all(kill["complete"][n] for n in ancestors(chain["stages"], name))
    # Finished stages were reused by the reruns, not rebuilt: same manifest, same file.
    for finished, mtime in kill["manifests"].items():
        s = chain["stages"][finished]
        assert (stage_dir(chain["root"], s.kind, s.fingerprint) / "manifest.json").stat().st_mtime_ns == mtime, finished
    # The killed stage is finished now, every file as its manifest says.
    s = chain["stages"][name]
    assert is_complete(stage_dir(chain["root"], s.kind, s.fingerprint), deep=True)
    if point == "checkpoint":  # training resumed from the checkpoint the kill left
        step = kill["hit"]
        assert 0 < step < TRAIN["max_steps"]
        metrics = manifest(chain, name)["metrics"]
        assert metrics["resumed_from_step"] == step
        assert metrics["train_steps"] == TRAIN["max_steps"]
    if name == "sft":  # the half-written checkpoints were dropped, not resumed from
        assert not any(p.exists() for p in kill["partials"])


def test_no_temporary_or_work_dirs_are_left(chain):
    root = chain["root"]
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
    assert not (root / ".work").exists() or not any((root / ".work").iterdir())


def test_the_last_run_reused_every_finished_stage_in_mlflow(chain):
    client = MlflowClient(chain["spec"].tracking.uri)
    exp = client.get_experiment_by_name("faults")
    parents = [r for r in client.search_runs([exp.experiment_id], "tags.`solar.pipeline` = 'faults'",
                                             order_by=["attributes.start_time DESC"])
               if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == len(KILLS) + 1
    last = parents[0]
    assert last.info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{last.info.run_id}'")
    built = {c.info.run_name for c in children if c.data.tags.get("solar.cached") != "true"}
    assert built == {"dpo"}  # only the stage killed last was built by the last run
    assert {c.info.run_name for c in children} == set(chain["stages"])


def test_the_final_models_equal_an_uninterrupted_build(chain, tmp_path):
    """The same stages built straight through (no kills, no Prefect, no tracking), from the
    base and data the chain built (never interrupted; copied with their mtimes)."""
    results = {}
    for s in chain["stages"].values():
        if s.kind in ("base", "data"):
            src = stage_dir(chain["root"], s.kind, s.fingerprint)
            shutil.copytree(src, stage_dir(tmp_path.resolve(), s.kind, s.fingerprint))
        results[s.name] = run_stage(s, {n: results[n] for n in s.inputs}, tmp_path)
    assert {n for n, r in results.items() if r.kind in ("base", "data")} == {"base", "alpaca", "ultrafeedback"}
    for name in ("dus", "sft", "avg", "dpo"):
        s = chain["stages"][name]
        a = weights(stage_dir(chain["root"], s.kind, s.fingerprint))
        b = weights(Path(results[name].path))
        assert a.keys() == b.keys(), name
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), (name, k)
    # Training moved the weights, so equality means something.
    w = {name: weights(Path(results[name].path))["lm_head.weight"] for name in ("dus", "sft", "avg", "dpo")}
    assert not torch.allclose(w["dus"], w["sft"], atol=1e-5)
    assert not torch.allclose(w["avg"], w["dpo"], atol=1e-7)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model directory, whatever its sharding."""
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(shard))
    assert out, f"{model_dir}: no weights"
    return out


# ---------------------------------------------------------------------------------------
# Services: MLflow unreachable at the start, MLflow lost in a stage, Prefect task retries


def test_unreachable_mlflow_fails_before_any_stage_runs(server, tmp_path):
    """The real CLI with a tracking server that is not there: a clear error naming the URI,
    in seconds (not after MLflow's minutes of HTTP retries), and no artifact at all."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec = write_spec(tmp_path)
    start_time = time.monotonic()
    done = subprocess.run(solar_run(spec, f"tracking.uri={uri}"), env=server, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - start_time
    assert done.returncode != 0
    assert f"tracking.uri {uri}: MLflow server unreachable" in done.stderr + done.stdout
    # No stage started: no artifact, no work dir, no cache key (Prefect's own results only).
    made = {p.name for p in (tmp_path / "artifacts").iterdir()} if (tmp_path / "artifacts").exists() else set()
    assert made <= {".prefect-results"}, made
    assert elapsed < 90, elapsed


def test_start_pipeline_checks_the_server_quickly(tmp_path):
    from solar.tracking import TrackingUnavailable, start_pipeline

    uri = f"http://127.0.0.1:{free_port()}/"
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=f"tracking.uri {uri}: MLflow server unreachable"):
        start_pipeline(uri, "x", "run", {}, "")
    assert time.monotonic() - t0 < 10


class FlakyClient:
    """An MlflowClient whose metric logging and run closing fail while `state["failures"]`
    lasts: the server lost after the stage started."""

    def __init__(self, real, state: dict):
        self.real, self.state = real, state

    def _maybe_fail(self, what: str) -> None:
        self.state["attempts"].append(what)
        if self.state["failures"] > 0:
            self.state["failures"] -= 1
            raise ConnectionError(f"{what}: connection refused (MLflow down)")

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        if metrics:
            self._maybe_fail("log_batch")
        return self.real.log_batch(run_id, metrics=metrics, params=params, tags=tags)

    def set_terminated(self, run_id, status=None):
        self._maybe_fail("set_terminated")
        return self.real.set_terminated(run_id, status)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def flaky_tracking(tmp_path, monkeypatch):
    import solar.tracking as tracking

    ctx = tracking.start_pipeline(f"sqlite:///{tmp_path / 'mlflow.db'}", "faults", "run", {}, "")
    state: dict = {"failures": 0, "attempts": []}
    real = tracking.client
    monkeypatch.setattr(tracking, "client", lambda uri: FlakyClient(real(uri), state))
    monkeypatch.setattr(tracking, "RETRY_BACKOFF", 0.01)
    return ctx, state, real(ctx.uri)


def test_mlflow_lost_mid_stage_keeps_the_trained_model_and_reports_it(flaky_tracking, tmp_path, tiny_base, caplog):
    """SFT trains while every metric log fails: the model is saved, the loss is in the
    manifest, each failing call was tried a bounded number of times, then no more."""
    from solar.data import assistant, user, write_rows
    from solar.tracking import RETRY_ATTEMPTS

    ctx, state, _ = flaky_tracking
    state["failures"] = 10**6
    data = tmp_path / "data"
    data.mkdir()
    write_rows(data, [{"prompt": [user(f"what is {i} plus {i}?")], "completion": [assistant(str(2 * i))]}
                      for i in range(16)])
    sft = dataclasses.replace(STAGES["sft"], params={**STAGES["sft"].params, "train": {
        **STAGES["sft"].params["train"], "max_steps": 4, "save_steps": None}})
    inputs = {"dus": StageResult("dus", "upscale", "d" * 64, str(tiny_base)),
              "alpaca": StageResult("alpaca", "data", "a" * 64, str(data))}
    with caplog.at_level("WARNING", logger="solar.tracking"):
        result = run_stage(sft, inputs, tmp_path / "artifacts", ctx)
    out = Path(result.path)
    assert is_complete(out, deep=True) and (out / "model.safetensors").is_file()
    m = read_manifest(out)
    assert m["metrics"]["train_steps"] == 4 and "train_loss_last" in m["metrics"]
    assert m["tracking_errors"][0].startswith("log_batch: ConnectionError")
    assert m["tracking_errors"][-1].endswith("later calls skipped")
    assert state["attempts"] == ["log_batch"] * RETRY_ATTEMPTS  # bounded, then given up
    assert "MLflow tracking lost in stage sft" in caplog.text


def test_a_tracking_call_that_fails_briefly_is_retried(flaky_tracking, tmp_path, tiny_base):
    ctx, state, real = flaky_tracking
    state["failures"] = 2  # fewer than RETRY_ATTEMPTS
    base = StageResult("base", "base", "b" * 64, str(tiny_base))
    result = run_stage(DUS, {"base": base}, tmp_path / "artifacts", ctx)
    assert read_manifest(Path(result.path))["tracking_errors"] == []
    run = real.get_run(result.run_id)
    assert run.data.metrics["layers"] == 4 and run.info.status == "FINISHED"


def test_mlflow_lost_at_the_summary_costs_the_record_not_the_run(flaky_tracking, tmp_path, caplog):
    """The models and the table are done when the summary records them: with the server
    gone, each call is tried a bounded number of times, the rest is skipped, and the
    losses are returned (for the flow run's `tracking-lost` artifact) instead of raised."""
    from solar.spec import load_spec
    from solar.tracking import RETRY_ATTEMPTS
    from tasks.tracking import record_summary

    ctx, state, real = flaky_tracking
    child = real.create_run(ctx.experiment_id, run_name="sft", tags={"mlflow.parentRunId": ctx.parent_run_id})
    results = {
        "sft": StageResult("sft", "sft", "s" * 64, str(tmp_path), {}, child.info.run_id, ctx.parent_run_id),
        "eval-sft": StageResult("eval-sft", "eval", "e" * 64, str(tmp_path), {"arc": 0.25, "h6": 0.3},
                                "r", ctx.parent_run_id),
    }
    spec = load_spec(preset="tiny")
    assert record_summary(spec, results, ctx, [], "") == []  # the server is up: all recorded
    assert real.get_run(child.info.run_id).data.metrics["arc"] == 0.25
    assert real.get_run(ctx.parent_run_id).info.status == "FINISHED"

    state["failures"], state["attempts"] = 10**6, []
    with caplog.at_level("WARNING", logger="solar.tracking"):
        lost = record_summary(spec, results, ctx, [], "")
    assert lost[0].startswith("scores of sft: ConnectionError") and lost[-1] == "2 later calls skipped"
    assert state["attempts"] == ["log_batch"] * RETRY_ATTEMPTS
    assert "MLflow tracking lost in stage summary" in caplog.text


@pytest.fixture
def prefect_api(server, tmp_path):
    """Flows of this process run against the module's server."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    with temporary_settings({PREFECT_API_URL: server["PREFECT_API_URL"],
                             PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "results")}):
        yield
        # Send logs and events while the server is up (else the exit waits on retries).
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)


@pytest.mark.parametrize("error,calls", [
    (ConnectionError("connection reset by peer"), 2),  # transient: retried, then built
    (TimeoutError("read timed out"), 2),
    (ValueError("bad input: not retried"), 1),
])
def test_stage_tasks_retry_transient_failures_only(prefect_api, tmp_path, tiny_base, monkeypatch, error, calls):
    from prefect import flow

    from solar.stages import BUILDERS
    from tasks.stages import STAGE_TASKS

    seen = []
    real = BUILDERS["upscale"]

    def fails_once(p, inputs, out, run):
        seen.append(out)
        if len(seen) == 1:
            raise error
        return real(p, inputs, out, run)

    monkeypatch.setitem(BUILDERS, "upscale", fails_once)
    task = STAGE_TASKS["upscale"].with_options(retry_delay_seconds=0)  # as configured, minus the wait
    base = StageResult("base", "base", "b" * 64, str(tiny_base))

    @flow
    def one_stage():
        return task(DUS, {"base": base}, str(tmp_path / "artifacts"), None)

    if calls == 1:
        with pytest.raises(type(error)):
            one_stage()
        assert not (stage_dir((tmp_path / "artifacts").resolve(), "upscale", DUS.fingerprint)).exists()
    else:
        assert is_complete(Path(one_stage().path), deep=True)
    assert len(seen) == calls


def test_retry_policy_is_bounded_and_skips_permanent_errors():
    import errno

    from solar.artifacts import DiskFull
    from tasks.stages import STAGE_TASKS, is_transient, retry_transient

    for task in STAGE_TASKS.values():
        assert task.retries == 2 and task.retry_delay_seconds == [10, 20]
        assert task.retry_condition_fn is retry_transient
    assert is_transient(ConnectionError()) and is_transient(TimeoutError())
    assert is_transient(OSError(errno.EIO, "I/O error"))
    for permanent in (ValueError("x"), FileNotFoundError("x"), PermissionError("x"),
                      DiskFull(errno.ENOSPC, "disk full"), RuntimeError("x"), None):
        assert not is_transient(permanent), permanent
