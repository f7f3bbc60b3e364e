import copy

import pytest
import yaml
from pydantic import ValidationError

from solar.spec import PipelineSpec, apply_override, load_spec, preset_path


@pytest.fixture
def ablation() -> dict:
    return yaml.safe_load(preset_path("paper-ablation").read_text())


def error_of(data: dict) -> str:
    with pytest.raises(ValidationError) as info:
        PipelineSpec.model_validate(data)
    return str(info.value)


@pytest.mark.parametrize("preset", ["tiny", "paper-ablation", "solar-10.7b"])
def test_presets_validate(preset):
    spec = load_spec(preset=preset)
    assert spec.name == preset


def test_paper_ablation_has_the_papers_stages(ablation):
    spec = PipelineSpec.model_validate(ablation)
    assert [s.name for s in spec.sft] == ["sft-v1", "sft-v2", "sft-v3", "sft-v4"]
    assert [d.name for d in spec.dpo] == ["dpo-v1", "dpo-v2", "dpo-v3"]
    assert {m.name for m in spec.merges} == {"sft-v3+v4", "dpo-v1+v2"}
    mix = {s.name: s.datasets for s in spec.sft}
    assert mix["sft-v1"] == ["alpaca-gpt4"]
    assert mix["sft-v2"] == ["alpaca-gpt4", "openorca"]
    assert mix["sft-v3"] == ["alpaca-gpt4", "openorca", "math-instruct"]
    assert mix["sft-v4"] == ["alpaca-gpt4", "math-instruct"]
    dpo = {d.name: (d.base, d.datasets) for d in spec.dpo}
    assert dpo["dpo-v1"] == ("sft-v3", ["ultrafeedback"])
    assert dpo["dpo-v2"] == ("sft-v3", ["ultrafeedback", "math-alignment"])
    assert dpo["dpo-v3"] == ("sft-v3+v4", ["ultrafeedback", "math-alignment"])


def test_unknown_field_is_named(ablation):
    ablation["sft"][0]["learning_rate"] = 1e-4
    msg = error_of(ablation)
    assert "sft.0.learning_rate" in msg and "Extra inputs are not permitted" in msg


def test_dangling_reference_is_named(ablation):
    ablation["dpo"][0]["base"] = "sft-v9"
    assert "dpo[0].base: 'sft-v9' names no stage" in error_of(ablation)


def test_reference_of_wrong_kind_is_named(ablation):
    ablation["sft"][1]["datasets"] = ["alpaca-gpt4", "ultrafeedback"]  # preference data in SFT
    assert "sft[1].datasets[1]: 'ultrafeedback' is a data stage, but a sft stage is needed" in error_of(ablation)


def test_cycle_is_named(ablation):
    ablation["dpo"][2]["base"] = "dpo-v1+v2"  # dpo-v3 <- dpo-v1+v2 <- dpo-v3
    ablation["merges"][1]["models"] = ["dpo-v1", "dpo-v3"]
    msg = error_of(ablation)
    assert "cycle between stages" in msg and "dpo-v3" in msg and "dpo-v1+v2" in msg


def test_duplicate_name_is_named(ablation):
    ablation["sft"][1]["name"] = "sft-v1"
    assert "sft[1].name: stage name 'sft-v1' is already used by sft[0].name" in error_of(ablation)


@pytest.mark.parametrize(
    "path,value,field",
    [
        (("upscale", "m"), 4, "upscale.m: m=4 must be < n/2"),
        (("upscale", "m"), -1, "upscale.m"),
        (("sft", 0, "train", "max_steps"), 0, "sft.0.train.max_steps"),
        (("sft", 0, "train", "learning_rate"), -1e-3, "sft.0.train.learning_rate"),
        (("dpo", 0, "beta"), 0, "dpo.0.beta"),
        (("datasets", 1, "cap"), 0, "datasets.1.cap"),
        (("merges", 0, "weights"), [0.5], "merges[sft-v3+v4].weights: 1 weights for 2 models"),
        (("merges", 0, "weights"), [-1, 2], "merges[sft-v3+v4].weights: must be >= 0"),
        (("base", "tiny", "num_heads"), 3, "base.tiny.hidden_size (128) must be divisible"),
        (("sft", 0, "name"), "../escape", "sft.0.name"),
        (("datasets", 0, "format"), "csv-of-mine", "datasets.0.format"),
    ],
)
def test_impossible_numbers_and_names_are_named(ablation, path, value, field):
    node = ablation
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert field in error_of(ablation)


def test_slerp_needs_t_and_two_models(ablation):
    bad = copy.deepcopy(ablation)
    bad["merges"][0] = {"name": "s", "method": "slerp", "models": ["sft-v3", "sft-v4"]}
    assert "merges[s].t: a slerp merge needs t" in error_of(bad)


def test_overrides_by_index_and_by_name(ablation):
    apply_override(ablation, "dpo.dpo-v2.beta=0.3")
    apply_override(ablation, "sft.0.train.max_steps=7")
    apply_override(ablation, "eval.tasks.arc.shots=3")
    spec = PipelineSpec.model_validate(ablation)
    assert spec.dpo[1].beta == 0.3
    assert spec.sft[0].train.max_steps == 7
    assert spec.eval.tasks["arc"].shots == 3
    with pytest.raises(ValueError, match="no element named 'dpo-v7'"):
        apply_override(ablation, "dpo.dpo-v7.beta=0.3")
    with pytest.raises(ValueError, match="expected key.path=value"):
        apply_override(ablation, "dpo.beta")
