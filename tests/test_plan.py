import json

import pytest

from flows.cli import main
from solar.plan import describe, plan
from solar.spec import load_spec


def by_name(records):
    return {r["name"]: r for r in records}


def test_solar_10_7b_is_planned_offline_at_48_layers_and_10_7b(tmp_path):
    records = by_name(describe(load_spec(preset="solar-10.7b"), tmp_path))
    assert records["base"]["layers"] == 32
    assert records["base"]["params"] == pytest.approx(7.24e9, abs=0.01e9)  # Mistral-7B
    assert records["dus"]["layers"] == 48
    assert records["dus"]["params"] == pytest.approx(10.7e9, abs=0.05e9)
    assert records["final"]["layers"] == 48  # merges and trained models keep the shape
    assert not any(r["cached"] for r in records.values())


def test_m_zero_is_the_repeat_baseline(tmp_path):
    spec = load_spec(preset="solar-10.7b", overrides=["upscale.m=0"])
    assert by_name(describe(spec, tmp_path))["dus"]["layers"] == 64


def test_plan_json_records(capsys):
    assert main(["plan", "--preset", "paper-ablation", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    for r in records:
        assert {"name", "kind", "inputs", "cached"} <= set(r)
        if r["kind"] in ("base", "upscale", "pretrain", "sft", "merge", "dpo"):
            assert isinstance(r["layers"], int) and isinstance(r["params"], int)
    names = [r["name"] for r in records]
    for stage in ("sft-v1", "sft-v2", "sft-v3", "sft-v4", "sft-v3+v4", "dpo-v1", "dpo-v2", "dpo-v3", "dpo-v1+v2"):
        assert stage in names and f"eval-{stage}" in names
    # Inputs always come before their consumers.
    for i, r in enumerate(records):
        assert all(names.index(x) < i for x in r["inputs"])
    assert by_name(records)["dus"]["layers"] == 12


def test_invalid_spec_is_refused_naming_the_field(capsys):
    assert main(["plan", "--preset", "paper-ablation", "--set", "dpo.dpo-v2.base=nope"]) == 2
    assert "dpo[1].base: 'nope' names no stage" in capsys.readouterr().err


def test_changing_a_dpo_beta_changes_only_its_branch():
    before = {s.name: s.fingerprint for s in plan(load_spec(preset="paper-ablation"))}
    after = {s.name: s.fingerprint for s in plan(load_spec(preset="paper-ablation", overrides=["dpo.dpo-v1.beta=0.3"]))}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"dpo-v1", "dpo-v1+v2", "eval-dpo-v1", "eval-dpo-v1+v2"}


def test_stage_names_do_not_enter_fingerprints():
    stages = plan(load_spec(preset="paper-ablation"))
    renamed = plan(load_spec(preset="paper-ablation", overrides=["sft.0.name=sft-alpaca", "eval.models.0=sft-alpaca"]))
    assert stages[0].fingerprint == renamed[0].fingerprint
    fp = {s.name: s.fingerprint for s in stages}
    fp2 = {s.name: s.fingerprint for s in renamed}
    assert fp["sft-v1"] == fp2["sft-alpaca"]
