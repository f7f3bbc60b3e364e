"""The bad-spec corpus (tests/bad_specs/): every malformed spec is refused by validation,
with a message naming the field or stage, before anything runs: the CLI exits 2 and leaves
no artifacts directory, no MLflow store, nothing in its working directory."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bad_specs.corpus import VALID, bad_specs, corpus
from pydantic import ValidationError

from flows.cli import main
from solar.plan import plan
from solar.spec import PipelineSpec, load_spec

BAD = bad_specs()
IDS = [b.name for b in BAD]


def test_the_corpus_is_large_and_each_file_says_what_it_expects():
    assert len(BAD) >= 30
    assert len(set(IDS)) == len(IDS)
    assert all(b.expect.strip() and b.defect.strip() for b in BAD)
    parsed = corpus()
    assert len(parsed) == sum(not b.file_only for b in BAD) >= 30
    assert all(isinstance(data, dict) and {"name", "sft", "merges", "dpo"} <= set(data) for _, data, _ in parsed)


def test_the_spec_the_corpus_was_made_from_is_valid():
    """So each bad file fails for its one defect, not for something it shares with all."""
    spec = load_spec(path=VALID)
    names = [s.name for s in plan(spec)]
    assert len(names) == len(set(names))
    assert {"dus", "sft-a", "sft-b", "sft-a+b", "dpo", "eval-dpo"} <= set(names)


@pytest.mark.parametrize("bad", BAD, ids=IDS)
def test_bad_spec_is_refused_naming_the_field(bad):
    with pytest.raises((ValidationError, ValueError)) as info:
        load_spec(path=bad.path)
    assert bad.expect in str(info.value), f"{bad.path.name}: {bad.defect}"


@pytest.mark.parametrize("bad", BAD, ids=IDS)
def test_cli_run_refuses_bad_spec_before_anything_runs(bad, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--spec", str(bad.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("solar: invalid spec:") and bad.expect in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,name", [
    ("run", "31-upscale-m-half-of-n"),        # a cross-stage check (model validator)
    ("plan", "55-merge-weights-not-declared-sum"),
    ("run", "94-yaml-duplicate-section"),     # refused while reading the YAML
])
def test_solar_command_exits_nonzero_and_creates_nothing(command, name, tmp_path):
    bad = next(b for b in BAD if b.name == name)
    solar = Path(sys.executable).with_name("solar")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run([str(solar), command, "--spec", str(bad.path)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert bad.expect in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(cwd.iterdir()) == []  # no artifacts/, mlflow.db, .prefect-results


# --- the checks this corpus added to solar/spec.py, from the valid side -----------------


def valid() -> dict:
    return yaml.safe_load(VALID.read_text())


def test_declared_weight_sum_is_a_check_not_a_parameter():
    """weights_sum validates the weights but stays out of dumps, so fingerprints (and
    cached merges) do not change when it is declared."""
    data = valid()
    data["merges"][0].update(weights=[0.25, 0.75])
    declared = copy.deepcopy(data)
    declared["merges"][0]["weights_sum"] = 1
    a, b = PipelineSpec.model_validate(data), PipelineSpec.model_validate(declared)
    assert b.merges[0].weights_sum == 1
    assert "weights_sum" not in b.merges[0].model_dump()
    assert [s.fingerprint for s in plan(a)] == [s.fingerprint for s in plan(b)]
    declared["merges"][0]["weights"] = [0.25, 0.74]
    with pytest.raises(ValidationError, match=r"merges\[sft-a\+b\]\.weights: \[0.25, 0.74\] sum to 0.99"):
        PipelineSpec.model_validate(declared)


def test_declared_weight_sum_applies_to_candidates():
    data = valid()
    data["merges"][0].update(weights_sum=1, candidates=[{"weights": [0.5, 0.5]}, {"weights": [0.3, 0.6]}])
    with pytest.raises(ValidationError, match=r"candidates\[1\].*sum to 0.9"):
        PipelineSpec.model_validate(data)
    data["merges"][0]["candidates"][1]["weights"] = [0.3, 0.7]
    assert PipelineSpec.model_validate(data).merges[0].candidate(2).weights == [0.3, 0.7]


@pytest.mark.parametrize("name", ["sft-a.v2", "mistral-7b.v0.1+x", "a_b-c+d"])
def test_dotted_and_joined_names_stay_valid(name):
    data = valid()
    data["sft"][0]["name"] = name
    data["merges"][0]["models"] = [name, "sft-b"]
    assert PipelineSpec.model_validate(data).sft[0].name == name


def test_yaml_merge_keys_may_override_while_duplicate_keys_may_not(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(VALID.read_text().replace(
        "train: {max_steps: 8,", "train: {<<: {max_steps: 99, seed: 7}, max_steps: 8,", 1))
    spec = load_spec(path=path)
    assert spec.pretrain.train.max_steps == 8 and spec.pretrain.train.seed == 7
