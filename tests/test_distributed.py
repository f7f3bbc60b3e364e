"""Two CPU processes (torchrun, gloo) train one SFT stage."""

import json

from safetensors.torch import load_file

from solar.data import assistant, user, write_rows
from solar.spec import TrainSpec
from solar.train import sft


def sft_data(path):
    path.mkdir()
    write_rows(path, [{"prompt": [user(f"what is {i} times two?")], "completion": [assistant(str(2 * i))]}
                      for i in range(32)])
    return path


def test_two_process_sft_has_world_size_two_and_saves_a_model(tmp_path, tiny_base):
    base, data, out = tiny_base, sft_data(tmp_path / "data"), tmp_path / "out"
    out.mkdir()
    logged = []
    cfg = TrainSpec(max_steps=4, batch_size=4, max_length=64, logging_steps=1, save_steps=None, processes=2)
    metrics = sft(base, [data], out, cfg, "solar", lambda m, s: logged.append((s, m)))
    assert metrics["world_size"] == 2
    assert metrics["train_steps"] == 4
    assert any("loss" in m for _, m in logged)  # curves came back from rank 0
    weights = load_file(out / "model.safetensors")
    start = load_file(base / "model.safetensors")
    assert weights.keys() == start.keys()
    assert not all((weights[k] == start[k]).all() for k in weights)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert (out / "tokenizer.json").is_file()


def test_lora_sft_saves_merged_full_weights(tmp_path, tiny_base):
    from solar.spec import LoraSpec

    base, data, out = tiny_base, sft_data(tmp_path / "data"), tmp_path / "out"
    out.mkdir()
    cfg = TrainSpec(max_steps=3, batch_size=4, max_length=64, learning_rate=1e-2, save_steps=None,
                    lora=LoraSpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    sft(base, [data], out, cfg, "solar", lambda m, s: None)
    weights, start = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    assert weights.keys() == start.keys()  # plain model, no lora_A/lora_B tensors
    changed = {k for k in weights if not (weights[k] == start[k]).all()}
    # Only the adapted projections moved: LoRA trains nothing else.
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
