import json

import pytest
import torch
from safetensors.torch import load_file

from solar.dus import layer_map, upscale, upscale_config
from solar.model import build_tiny
from solar.spec import TinyModel


def test_layer_map_is_the_papers():
    # n=32, m=8: layers 0..23 of copy A, then 8..31 of copy B: 48 layers.
    mapping = layer_map(32, 8)
    assert len(mapping) == 48
    assert mapping[:24] == list(range(24))
    assert mapping[24:] == list(range(8, 32))


def test_layer_map_small_cases():
    assert layer_map(4, 1) == [0, 1, 2, 1, 2, 3]
    assert layer_map(3, 0) == [0, 1, 2, 0, 1, 2]  # the "repeat" baseline


@pytest.mark.parametrize("n,m", [(8, 4), (8, 5), (8, -1), (0, 0)])
def test_layer_map_rejects_impossible(n, m):
    with pytest.raises(ValueError):
        layer_map(n, m)


def test_upscale_config_slices_per_layer_lists():
    cfg = {"num_hidden_layers": 4, "layer_types": ["a", "b", "c", "d"], "architectures": ["X"]}
    out = upscale_config(cfg, 1)
    assert out["num_hidden_layers"] == 6
    assert out["layer_types"] == ["a", "b", "c", "b", "c", "d"]
    assert out["architectures"] == ["X"]


def test_upscale_copies_layers_bit_for_bit(tmp_path, tiny_corpus):
    base, out = tmp_path / "base", tmp_path / "dus"
    base.mkdir()
    out.mkdir()
    build_tiny(TinyModel(hidden_size=32, intermediate_size=64, num_layers=4, num_heads=2,
                         num_kv_heads=1, vocab_size=300), tiny_corpus, base)
    metrics = upscale(base, out, m=1)
    assert metrics["layers"] == 6
    src, dst = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    for new, old in enumerate(layer_map(4, 1)):
        for key in [k for k in src if k.startswith(f"model.layers.{old}.")]:
            new_key = key.replace(f"model.layers.{old}.", f"model.layers.{new}.", 1)
            assert torch.equal(dst[new_key], src[key]), new_key
    for key in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(dst[key], src[key])
    assert len(dst) == len(src) + 2 * sum(k.startswith("model.layers.0.") for k in src)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6
    assert (out / "tokenizer.json").is_file()
