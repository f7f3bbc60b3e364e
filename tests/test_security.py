"""Security: custom model code runs only when the spec trusts it; secrets from the
environment reach no MLflow record, artifact, database or log; spec names and paths cannot
write outside the artifact root."""

from __future__ import annotations

import json
import logging
import re
import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import solar.model
from solar.artifacts import stage_dir
from solar.checks import ModelCheckError
from solar.plan import plan
from solar.spec import BaseSpec, PipelineSpec, load_spec
from solar.stages import run_stage, work_dir
from tests.chat_server import LocalChatServer

# ------------------------------------------------------------------ trust_remote_code

CODE = "from pathlib import Path\nPath({marker!r}).write_text('custom code ran')\n"


def custom_code_model(tiny_base: Path, dst: Path, marker: Path, model_type: str) -> Path:
    """tiny_base whose configs point (auto_map) at modeling/tokenizer code that, once
    imported, writes `marker`."""
    shutil.copytree(tiny_base, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(model_type=model_type, auto_map={
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
    })
    (dst / "config.json").write_text(json.dumps(config))
    tok = json.loads((dst / "tokenizer_config.json").read_text())
    tok["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (dst / "tokenizer_config.json").write_text(json.dumps(tok))
    for name in ("configuration_evil.py", "modeling_evil.py", "tokenization_evil.py"):
        (dst / name).write_text(CODE.format(marker=str(marker)))
    return dst


def base_stage(model: Path, root: Path, **base):
    spec = PipelineSpec.model_validate({
        "name": "sec", "base": {"model": str(model), **base}, "upscale": None, "eval": None,
        "execution": {"artifacts_dir": str(root)},
    })
    (stage,) = plan(spec)
    return stage


def test_trust_remote_code_is_off_by_default():
    assert BaseSpec().trust_remote_code is False and BaseSpec().allow_pickle is False
    assert load_spec(preset="solar-10.7b").base.trust_remote_code is False


def test_custom_code_of_an_unknown_model_type_is_refused_not_run(tmp_path, tiny_base):
    marker = tmp_path / "marker"
    model = custom_code_model(tiny_base, tmp_path / "model", marker, "evil")
    root = tmp_path / "artifacts"
    with pytest.raises(ModelCheckError, match=r"model_type='evil' needs the custom code its auto_map names "
                                              r"\(configuration_evil.py, modeling_evil.py, tokenization_evil.py\), "
                                              r"which is not run unless base.trust_remote_code is true"):
        run_stage(base_stage(model, root), {}, root)
    # The other loaders (training, perplexity, the transformers generator) refuse too.
    from solar.model import load_model, load_tokenizer
    from solar.synth import TransformersChat

    for load in (load_model, lambda p: TransformersChat(str(p))):
        with pytest.raises(ValueError, match="trust_remote_code"):
            load(model)
    # The tokenizer's class is one transformers has: loaded with that, its auto_map ignored.
    assert type(load_tokenizer(model)).__module__.startswith("transformers.")
    assert not marker.exists()


def test_a_known_model_type_loads_with_transformers_own_code(tmp_path, tiny_base):
    marker = tmp_path / "marker"
    model = custom_code_model(tiny_base, tmp_path / "model", marker, "mistral")
    root = tmp_path / "artifacts"
    built = run_stage(base_stage(model, root), {}, root)
    assert not marker.exists()
    assert not list(Path(built.path).glob("*.py"))  # no custom code carried downstream
    from solar.model import load_model

    assert type(load_model(Path(built.path))).__name__ == "MistralForCausalLM"
    assert not marker.exists()


def test_only_a_spec_that_trusts_remote_code_asks_for_it(tmp_path, tiny_base, monkeypatch):
    marker = tmp_path / "marker"
    model = custom_code_model(tiny_base, tmp_path / "model", marker, "evil")
    calls = []

    class Stop(Exception):
        pass

    class Recorder:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            calls.append((args, kwargs))
            raise Stop  # the call is what matters; the code is not run here

    monkeypatch.setattr(solar.model, "AutoModelForCausalLM", Recorder)
    root = tmp_path / "artifacts"
    with pytest.raises(Stop):
        run_stage(base_stage(model, root, trust_remote_code=True), {}, root)
    ((args, kwargs),) = calls
    assert args == (str(model),) and kwargs["trust_remote_code"] is True
    assert kwargs["weights_only"] is True and kwargs["use_safetensors"] is True
    calls.clear()
    with pytest.raises(ModelCheckError):  # untrusted: refused before transformers is asked
        run_stage(base_stage(model, root), {}, root)
    assert calls == [] and not marker.exists()


# ------------------------------------------------------------------ path escapes

BAD_NAMES = ["../x", "a/b", "/etc/x", "..", ".", ".hidden", "x/../../y", "a\\b", "", "A", "a b", "a" * 65]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("where", ["base", "datasets", "sft", "merges"])
def test_stage_names_that_could_be_paths_are_refused(name, where):
    data = {"name": "p", "upscale": None, "eval": None,
            "datasets": [{"name": "d", "format": "alpaca", "source": "embedded:sources/alpaca.jsonl"}],
            "sft": [{"name": "s1", "base": "base", "datasets": ["d"]},
                    {"name": "s2", "base": "base", "datasets": ["d"]}],
            "merges": [{"name": "m", "models": ["s1", "s2"]}]}
    if where == "base":
        data["base"] = {"name": name}
    else:
        data[where][0]["name"] = name
    with pytest.raises(ValidationError, match=f"{where}"):
        PipelineSpec.model_validate(data)
    with pytest.raises(ValidationError):
        PipelineSpec.model_validate({"name": name})


def test_every_stage_writes_under_the_artifact_root(tmp_path):
    # Dotted names (the pattern allows single dots), and a root spelled with "..".
    root = tmp_path / "a" / ".." / "root"
    spec = PipelineSpec.model_validate({
        "name": "p", "upscale": {"name": "up.1", "m": 1},
        "datasets": [{"name": "a.b", "format": "alpaca", "source": "embedded:sources/alpaca.jsonl"}],
        "sft": [{"name": "x.y", "base": "up.1", "datasets": ["a.b"]},
                {"name": "y.z", "base": "up.1", "datasets": ["a.b"]}],
        "merges": [{"name": "x.y+y.z", "models": ["x.y", "y.z"]}],
        "decontamination": {}, "execution": {"artifacts_dir": str(root)},
    })
    real = root.resolve()
    assert real == tmp_path / "root"
    stages = plan(spec)
    assert {"decontam-a.b", "eval-x.y+y.z", "up.1"} <= {s.name for s in stages}
    for stage in stages:
        assert re.fullmatch(r"[0-9a-f]{64}", stage.fingerprint), stage.name
        for path in (stage_dir(real, stage.kind, stage.fingerprint), work_dir(root, stage.fingerprint)):
            assert path.resolve().is_relative_to(real), (stage.name, path)
            assert ".." not in path.relative_to(real).parts


def test_a_stage_built_through_a_dotted_root_writes_only_under_it(tmp_path, tiny_base):
    root = tmp_path / "x" / ".." / "root"
    before = set(tmp_path.rglob("*"))
    built = run_stage(base_stage(tiny_base, root), {}, root)
    created = set(tmp_path.rglob("*")) - before
    assert created and Path(built.path).is_relative_to(tmp_path / "root")
    assert all(p.resolve().is_relative_to(tmp_path / "root") for p in created), created


# ------------------------------------------------------------------ secrets


class EchoChat(LocalChatServer):
    """An OpenAI-compatible server on 127.0.0.1 that rephrases by restating (so answers
    match) and records the Authorization headers it was sent."""

    def __init__(self):
        self.auth: list[str] = []
        super().__init__()

    def handle(self, h, body: dict) -> None:
        self.auth.append(h.headers.get("Authorization", ""))
        prompt = body["messages"][-1]["content"]
        q = re.search(r"Question:\n(.*?)\n\nSolution:\n", prompt, re.S).group(1)
        s = re.search(r"\n\nSolution:\n(.*?)\n\nReply in", prompt, re.S).group(1)
        text = f"Rephrased question:\nPut another way: {q}\nRephrased solution:\n{s}"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Every field: message, args, exception text and extras such as task_run_name.
        self.lines.append(" ".join(f"{k}={v!r}" for k, v in vars(record).items()))


def find(needles: dict[str, str], sources: dict[str, bytes]) -> set[tuple[str, str]]:
    """(needle name, source name) for every needle found in a source."""
    return {(n, s) for n, value in needles.items() for s, blob in sources.items() if value.encode() in blob}


def mlflow_sources(uri: str, experiment: str, download: Path) -> dict[str, bytes]:
    """Everything MLflow holds about the experiment's runs, as blobs to scan: params, tags,
    metric keys, dataset inputs, and every artifact file."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for run in client.search_runs([exp.experiment_id]):
        rid = run.info.run_id
        out[f"params:{rid}"] = json.dumps(run.data.params).encode()
        out[f"tags:{rid}"] = json.dumps({**run.data.tags, "run_name": run.info.run_name}).encode()
        out[f"metrics:{rid}"] = json.dumps(sorted(run.data.metrics)).encode()
        inputs = run.inputs.dataset_inputs if run.inputs else []
        out[f"inputs:{rid}"] = json.dumps([[d.dataset.name, d.dataset.source, d.dataset.digest]
                                           for d in inputs]).encode()
        local = Path(client.download_artifacts(rid, "", str(download / rid)))
        for f in local.rglob("*"):
            if f.is_file():
                out[f"artifact:{rid}/{f.relative_to(local)}"] = f.read_bytes()
    return out


def files_under(root: Path, label: str) -> dict[str, bytes]:
    return {f"{label}:{f}": f.read_bytes() for f in root.rglob("*") if f.is_file()}


@pytest.fixture
def prefect_harness(tmp_path):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "prefect-results")}), \
            prefect_test_harness():
        yield tmp_path / "prefect-results"


def test_secrets_from_the_environment_are_nowhere_in_tracking_artifacts_or_logs(
    tmp_path, monkeypatch, prefect_harness, tiny_base
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    from flows.pipeline import pipeline

    secrets = {"HF_TOKEN": f"hf_{uuid.uuid4().hex}", "API key": f"sk-{uuid.uuid4().hex}"}
    canary = f"canary-{uuid.uuid4().hex[:12]}"  # not a secret: proves each scan can see
    monkeypatch.setenv("HF_TOKEN", secrets["HF_TOKEN"])
    monkeypatch.setenv("SOLAR_SECRET_API_KEY", secrets["API key"])
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact store ./mlruns lands here
    root, db = tmp_path / "artifacts", tmp_path / "mlflow.db"
    capture = Capture()
    loggers = [logging.getLogger(), logging.getLogger("prefect"), logging.getLogger("prefect.extra")]
    with EchoChat() as server:
        spec = PipelineSpec.model_validate(yaml.safe_load(f"""
name: secrets
base: {{model: "{tiny_base}"}}
upscale: {{m: 0}}
eval: null
datasets: [{{name: {canary}, format: math, source: "embedded:sources/math.jsonl", cap: 4}}]
synthesis:
  - {{kind: math-instruct, name: math-instruct, seed_dataset: {canary}, backend: openai,
     base_url: "{server.base_url}", model: {canary}-model, api_key_env: SOLAR_SECRET_API_KEY,
     max_concurrency: 2, timeout: 5}}
  - {{kind: math-alignment, name: math-alignment, source: math-instruct}}
tracking: {{uri: "sqlite:///{db}"}}
execution: {{artifacts_dir: "{root}"}}
"""))
        for lg in loggers:
            lg.addHandler(capture)
        try:
            state = pipeline.with_options(flow_run_name=canary)(spec=spec, return_state=True)
        finally:
            for lg in loggers:
                lg.removeHandler(capture)
        assert state.is_completed(), state.message
    assert server.auth and set(server.auth) == {f"Bearer {secrets['API key']}"}  # the key was used

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    prefect_db = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    sources = {
        **mlflow_sources(f"sqlite:///{db}", "secrets", tmp_path / "downloads"),
        "prefect-api-logs": "\n".join(f"{lg.name} {lg.message}" for lg in logs).encode(),
        "captured-logs": "\n".join(capture.lines).encode(),
        **files_under(root, "stage-artifacts"),
        **files_under(tmp_path / "mlruns", "mlflow-artifact-store"),
        **{f"mlflow-db:{f.name}": f.read_bytes() for f in tmp_path.glob("mlflow.db*")},
        **{f"prefect-db:{f.name}": f.read_bytes() for f in prefect_db.parent.glob(prefect_db.name + "*")},
        **files_under(prefect_harness, "prefect-results"),
    }
    found = find({**secrets, "canary": canary}, sources)
    assert not {hit for hit in found if hit[0] != "canary"}, sorted(found)
    # Each kind of place was scanned, and a value there would have been found.
    seen = {source.split(":")[0] for name, source in found if name == "canary"}
    assert seen >= {"params", "tags", "artifact", "prefect-api-logs", "captured-logs", "stage-artifacts",
                    "mlflow-db", "prefect-db"}, seen
