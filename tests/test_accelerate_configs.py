"""GPU-pool training configs (deployments/accelerate/), the `accelerate` launcher and the
QLoRA option: what can be checked without a GPU, checked for real."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from pydantic import ValidationError

from solar.launch import check_accelerate_config, launch_command
from solar.spec import LoraSpec, TrainSpec
from solar.train import check_quantize, quantization_config, sft

CONFIGS = Path(__file__).resolve().parents[1] / "deployments" / "accelerate"


def accelerate_spec(name: str, **kw) -> TrainSpec:
    return TrainSpec(launcher="accelerate", accelerate_config=str(CONFIGS / name), **kw)


@pytest.mark.parametrize(("name", "kind"), [("ddp.yaml", DistributedType.MULTI_GPU),
                                            ("fsdp.yaml", DistributedType.FSDP),
                                            ("deepspeed-zero3.yaml", DistributedType.DEEPSPEED)])
def test_each_config_loads_with_accelerates_own_loader(name, kind):
    config = load_config_from_file(str(CONFIGS / name))  # raises on unknown keys
    assert config.distributed_type == kind
    assert config.mixed_precision == "bf16" and not config.use_cpu


def test_fsdp_config_shards_fully_and_wraps_real_decoder_layer_classes():
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers.models.llama import modeling_llama
    from transformers.models.mistral import modeling_mistral

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / "fsdp.yaml"),
                                               "--num_processes", "2", "-m", "solar.launch", "call.json"])
    # The environment accelerate's launcher hands every rank (it wants to see GPUs).
    with mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("torch.cuda.device_count", return_value=2):
        args, _, _ = _validate_launch_command(args)
        env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and args.num_processes == 2
    assert env["FSDP_SHARDING_STRATEGY"] == "FULL_SHARD"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"  # the saved model is one full model
    wrapped = env["FSDP_TRANSFORMER_CLS_TO_WRAP"].split(",")
    assert wrapped == ["MistralDecoderLayer", "LlamaDecoderLayer"]
    assert hasattr(modeling_mistral, wrapped[0]) and hasattr(modeling_llama, wrapped[1])


def test_deepspeed_config_is_zero3_saving_16bit_weights():
    config = load_config_from_file(str(CONFIGS / "deepspeed-zero3.yaml"))
    assert config.deepspeed_config["zero_stage"] == 3
    assert config.deepspeed_config["zero3_save_16bit_model"] is True
    # Left to the trainer ("auto"), so they cannot disagree with train.batch_size and friends.
    assert "gradient_accumulation_steps" not in config.deepspeed_config


def test_launcher_fields_are_checked_by_the_spec():
    with pytest.raises(ValidationError, match="accelerate_config"):
        TrainSpec(launcher="accelerate")
    with pytest.raises(ValidationError, match="accelerate_config"):
        TrainSpec(accelerate_config="deployments/accelerate/ddp.yaml")
    with pytest.raises(ValidationError, match="lora.quantize"):
        TrainSpec(device="cpu", lora=LoraSpec(quantize="4bit"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
@pytest.mark.parametrize("name", ["fsdp.yaml", "deepspeed-zero3.yaml"])
def test_sharded_configs_are_refused_before_launch_on_a_cpu_machine(name, tmp_path):
    spec = accelerate_spec(name, processes=2)
    with pytest.raises(ValueError, match=r"train\.accelerate_config: .* needs CUDA GPUs"):
        launch_command(spec, tmp_path / "call.json")
    with pytest.raises(FileNotFoundError, match=r"train\.accelerate_config: no such file"):
        check_accelerate_config(TrainSpec(launcher="accelerate", accelerate_config=str(tmp_path / "none.yaml")))


def test_accelerate_command_carries_config_process_count_and_module(tmp_path):
    cmd = launch_command(accelerate_spec("ddp.yaml", processes=2), tmp_path / "call.json")
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1] == str(CONFIGS / "ddp.yaml")
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert int(cmd[cmd.index("--main_process_port") + 1]) > 0
    assert cmd[-3:] == ["-m", "solar.launch", str(tmp_path / "call.json")]


def test_ddp_config_launches_two_cpu_ranks_through_accelerate(tmp_path, tiny_base):
    """accelerate launch with ddp.yaml, on CPU: two gloo ranks (world size 2) train and rank
    0 saves a model (FACTS: `--cpu` would silently run one)."""
    from safetensors.torch import load_file

    from solar.data import assistant, user, write_rows

    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    write_rows(data, [{"prompt": [user(f"what is {i} plus one?")], "completion": [assistant(str(i + 1))]}
                      for i in range(16)])
    cfg = accelerate_spec("ddp.yaml", processes=2, max_steps=2, batch_size=4, max_length=64,
                          logging_steps=1, save_steps=None)
    logged = []
    metrics = sft(tiny_base, [data], out, cfg, "solar", lambda m, s: logged.append(m))
    assert metrics["world_size"] == 2 and metrics["train_steps"] == 2
    assert any("loss" in m for m in logged)
    assert load_file(out / "model.safetensors").keys() == load_file(tiny_base / "model.safetensors").keys()


def test_quantize_is_refused_at_stage_start_without_cuda_before_data_is_read(tmp_path):
    cfg = TrainSpec(lora=LoraSpec(quantize="4bit"))
    with mock.patch("torch.cuda.is_available", return_value=False):
        with pytest.raises(ValueError, match=r"train\.lora\.quantize: 4bit .* needs a CUDA GPU"):
            # The data directory does not exist: the check must come first.
            sft(tmp_path / "no-model", [tmp_path / "no-data"], tmp_path / "out", cfg, "solar", lambda m, s: None)


def test_quantize_names_bitsandbytes_when_it_is_missing():
    cfg = TrainSpec(lora=LoraSpec(quantize="8bit"))
    with mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("importlib.util.find_spec", return_value=None):
        with pytest.raises(ValueError, match=r"train\.lora\.quantize: 8bit needs the bitsandbytes package"):
            check_quantize(cfg)


def test_qlora_quantization_config_is_nf4_double_quant_bf16():
    assert quantization_config(TrainSpec(lora=LoraSpec())) is None
    with mock.patch("torch.cuda.is_available", return_value=True):
        four = quantization_config(TrainSpec(lora=LoraSpec(quantize="4bit")))
        eight = quantization_config(TrainSpec(lora=LoraSpec(quantize="8bit")))
    assert four.load_in_4bit and not four.load_in_8bit
    assert four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16
    assert eight.load_in_8bit and not eight.load_in_4bit

