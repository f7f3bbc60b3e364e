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
    assert changed == {"dpo-v1", "dpo-v1+v2", "eval-dpo-v1", "eval-dpo-v1+v2", "ppl-dpo-v1", "ppl-dpo-v1+v2"}


def test_stage_names_do_not_enter_fingerprints():
    stages = plan(load_spec(preset="paper-ablation"))
    renamed = plan(load_spec(preset="paper-ablation", overrides=["sft.0.name=sft-alpaca", "eval.models.0=sft-alpaca"]))
    assert stages[0].fingerprint == renamed[0].fingerprint
    fp = {s.name: s.fingerprint for s in stages}
    fp2 = {s.name: s.fingerprint for s in renamed}
    assert fp["sft-v1"] == fp2["sft-alpaca"]


def test_dus_ranges_are_planned_and_checked(tmp_path):
    spec = load_spec(preset="solar-10.7b", overrides=["upscale.m=null", "upscale.ranges=[[0, 24], [8, 32]]"])
    dus = by_name(describe(spec, tmp_path))["dus"]
    assert dus["layers"] == 48 and dus["params"] == pytest.approx(10.7e9, abs=0.05e9)
    spec = load_spec(preset="solar-10.7b", overrides=["upscale.m=null", "upscale.ranges=[[0, 32], [16, 32]]"])
    assert by_name(describe(spec, tmp_path))["dus"]["layers"] == 48
    with pytest.raises(ValueError, match=r"upscale.ranges\[1\]: \[8, 33\] goes past the base's n=32"):
        load_spec(preset="solar-10.7b", overrides=["upscale.m=null", "upscale.ranges=[[0, 24], [8, 33]]"])
    with pytest.raises(ValueError, match="exactly one of m or ranges"):
        load_spec(preset="solar-10.7b", overrides=["upscale.ranges=[[0, 24], [8, 32]]"])


def test_a_merge_base_is_an_input_and_fingerprinted():
    ties = ["merges.sft-v3+v4.method=ties", "merges.sft-v3+v4.base=sft-v1", "merges.sft-v3+v4.density=0.5"]
    stages = {s.name: s for s in plan(load_spec(preset="paper-ablation", overrides=ties))}
    assert stages["sft-v3+v4"].inputs == ("sft-v3", "sft-v4", "sft-v1")
    assert "base" not in stages["sft-v3+v4"].params  # names do not enter fingerprints
    changed = {s.name: s for s in plan(load_spec(preset="paper-ablation",
                                                 overrides=ties + ["sft.sft-v1.train.max_steps=7"]))}
    assert changed["sft-v3+v4"].fingerprint != stages["sft-v3+v4"].fingerprint
    records = by_name(describe(load_spec(preset="paper-ablation", overrides=ties), "/nonexistent"))
    assert records["sft-v3+v4"]["layers"] == records["dus"]["layers"]


def test_sdpo_steps_chain_and_reuse_earlier_steps():
    two = plan(load_spec(preset="paper-ablation", overrides=["dpo.dpo-v2.sdpo=true"]))
    stages = {s.name: s for s in two}
    step1, final = stages["dpo-v2.step1"], stages["dpo-v2"]
    # (Training stages read the decontaminated version of each dataset.)
    assert step1.inputs[0] == "sft-v3" and step1.inputs[1].endswith("ultrafeedback")
    assert step1.kind == "dpo" and len(step1.inputs) == 2
    # Step 2 starts from, and is referenced to, step 1's model (its base input).
    assert final.inputs[0] == "dpo-v2.step1" and final.inputs[1].endswith("math-alignment")
    # Step 1 is the very computation of a one-dataset DPO on its data: shared fingerprint,
    # so an sDPO with one more step reuses it.
    one = {s.name: s for s in plan(load_spec(preset="paper-ablation", overrides=[
        "dpo.dpo-v2.datasets=[ultrafeedback]"]))}
    assert one["dpo-v2"].fingerprint == step1.fingerprint
    assert final.fingerprint != step1.fingerprint
    assert "eval-dpo-v2" in stages and stages["eval-dpo-v2"].inputs == ("dpo-v2",)


def test_merge_candidate_grid_is_merged_evaluated_and_selected():
    spec = load_spec(preset="paper-ablation", overrides=[
        "merges.sft-v3+v4.candidates=[{weights: [0.5, 0.5]}, {weights: [0.4, 0.6]}, "
        "{weights: [0.6, 0.4]}, {method: slerp, t: 0.5, weights: null}]"])
    stages = {s.name: s for s in plan(spec)}
    cands = [f"sft-v3+v4.c{i}" for i in range(1, 5)]
    assert all(stages[c].kind == "merge" and stages[f"eval-{c}"].inputs == (c,) for c in cands)
    assert stages["sft-v3+v4.c4"].params["method"] == "slerp"
    select = stages["sft-v3+v4"]
    assert select.kind == "select" and select.inputs == tuple(cands) + tuple(f"eval-{c}" for c in cands)
    # Downstream stages use the selected model.
    assert stages["dpo-v3"].inputs[0] == "sft-v3+v4"
    # The 0.5/0.5 candidate is the very merge the plain spec builds: shared fingerprint.
    plain = {s.name: s for s in plan(load_spec(preset="paper-ablation"))}
    assert stages["sft-v3+v4.c1"].fingerprint == plain["sft-v3+v4"].fingerprint


def test_merge_candidates_are_validated():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"candidates\[1\].*1 weights for 2 models"):
        load_spec(preset="paper-ablation", overrides=[
            "merges.sft-v3+v4.candidates=[{weights: [0.5, 0.5]}, {weights: [1.0]}]"])
    with pytest.raises(ValidationError, match=r"cannot override \['models'\]"):
        load_spec(preset="paper-ablation", overrides=[
            "merges.sft-v3+v4.candidates=[{models: [a, b]}, {weights: [1, 1]}]"])


def test_eval_settings_enter_only_eval_fingerprints():
    base = {s.name: s.fingerprint for s in plan(load_spec(preset="tiny"))}
    for override in ("eval.dtype=bfloat16", "eval.chat_template=true", "eval.tasks.arc.shots=3"):
        changed = {s.name for s in plan(load_spec(preset="tiny", overrides=[override]))
                   if s.fingerprint != base[s.name]}
        assert changed and all(name.startswith("eval-") for name in changed), override
