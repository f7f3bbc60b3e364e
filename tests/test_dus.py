import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import solar.dus
import solar.tensorio
from solar.dus import layer_map, layer_prefix, layer_section, ranges_map, upscale, upscale_config
from solar.model import build_tiny
from solar.spec import TinyModel
from solar.tensorio import model_tensors, read_rows


def load_all(model_dir):
    """Every tensor of a (possibly sharded) model directory."""
    return {name: read_rows(info, 0, info.rows) for name, info in model_tensors(model_dir).items()}


def assert_layers_copied(src, dst, mapping, prefix="model.layers."):
    for new, old in enumerate(mapping):
        keys = [k for k in src if k.startswith(f"{prefix}{old}.")]
        assert keys
        for key in keys:
            new_key = key.replace(f"{prefix}{old}.", f"{prefix}{new}.", 1)
            assert torch.equal(dst[new_key], src[key]), new_key
    for key in [k for k in src if not k.startswith(prefix)]:  # embeddings, norm, head, vision tower
        assert torch.equal(dst[key], src[key]), key
    per_layer = sum(k.startswith(f"{prefix}0.") for k in src)
    assert len(dst) == len(src) + (len(mapping) - max(mapping) - 1) * per_layer


def test_layer_map_is_the_papers():
    # n=32, m=8: layers 0..23 of copy A, then 8..31 of copy B: 48 layers.
    mapping = layer_map(32, 8)
    assert len(mapping) == 48
    assert mapping[:24] == list(range(24))
    assert mapping[24:] == list(range(8, 32))
    assert ranges_map(32, [[0, 24], [8, 32]]) == mapping


def test_layer_map_small_cases():
    assert layer_map(4, 1) == [0, 1, 2, 1, 2, 3]
    assert layer_map(3, 0) == [0, 1, 2, 0, 1, 2]  # the "repeat" baseline
    assert ranges_map(4, [[0, 2], [1, 4], [3, 4]]) == [0, 1, 1, 2, 3, 3]


@pytest.mark.parametrize("n,m", [(8, 4), (8, 5), (8, -1), (0, 0)])
def test_layer_map_rejects_impossible(n, m):
    with pytest.raises(ValueError):
        layer_map(n, m)


@pytest.mark.parametrize("ranges", [[], [[0, 5]], [[2, 2]], [[-1, 2]], [[3, 1]], [[0, 1, 2]]])
def test_ranges_map_rejects_outside(ranges):
    with pytest.raises(ValueError, match="ranges"):
        ranges_map(4, ranges)


def test_upscale_config_slices_per_layer_lists():
    cfg = {"num_hidden_layers": 4, "layer_types": ["a", "b", "c", "d"], "architectures": ["X"]}
    out = upscale_config(cfg, 1)
    assert out["num_hidden_layers"] == 6
    assert out["layer_types"] == ["a", "b", "c", "b", "c", "d"]
    assert out["architectures"] == ["X"]
    assert upscale_config(cfg, ranges=[[3, 4], [0, 2]])["layer_types"] == ["d", "a", "b"]


@pytest.fixture(scope="module")
def four_layer_base(tmp_path_factory, tiny_corpus):
    """Four layers, so that m=1 and [[0,3],[1,4]] are proper up-scalings."""
    base = tmp_path_factory.mktemp("base")
    build_tiny(TinyModel(hidden_size=32, intermediate_size=64, num_layers=4, num_heads=2,
                         num_kv_heads=1, vocab_size=300), tiny_corpus, base)
    return base


def test_upscale_copies_layers_bit_for_bit(tmp_path, four_layer_base):
    metrics = upscale(four_layer_base, tmp_path, m=1)
    assert metrics["layers"] == 6
    src, dst = load_file(four_layer_base / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert_layers_copied(src, dst, layer_map(4, 1))
    assert json.loads((tmp_path / "config.json").read_text())["num_hidden_layers"] == 6
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / name).is_file(), name
    from solar.model import TOKENIZER_FILES  # every file the project's models carry is carried

    assert set(TOKENIZER_FILES) <= set(solar.tensorio.CARRIED_FILES)
    # Duplicated layers are independent copies: separate byte ranges of the output.
    infos = model_tensors(tmp_path)
    a, b = infos["model.layers.1.mlp.up_proj.weight"], infos["model.layers.3.mlp.up_proj.weight"]
    assert (a.file, a.start) != (b.file, b.start)


def test_upscale_ranges_sharded_in_and_out(tmp_path, four_layer_base):
    # Re-save the base as several shards with an index, as hub models come.
    src = load_file(four_layer_base / "model.safetensors")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = sorted(src)
    parts = [names[i::3] for i in range(3)]
    weight_map = {}
    for i, part in enumerate(parts):
        fname = f"model-{i + 1:05d}-of-00003.safetensors"
        save_file({k: src[k] for k in part}, sharded / fname, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (sharded / "config.json").write_text((four_layer_base / "config.json").read_text())

    out = tmp_path / "out"
    out.mkdir()
    ranges = [[0, 3], [1, 4], [2, 3]]
    metrics = upscale(sharded, out, ranges=ranges, shard_bytes=40_000)
    assert metrics["layers"] == 7
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 2 and set(index["weight_map"].values()) == {p.name for p in shards}
    assert index["metadata"]["total_size"] == metrics["bytes"]
    assert not list(out.glob(".*tmp"))
    assert_layers_copied(src, load_all(out), ranges_map(4, ranges))
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 7


def test_upscale_a_qwen2_shaped_model_loads_and_runs(tmp_path):
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=128, use_sliding_window=True,
                         max_window_layers=2, sliding_window=16, tie_word_embeddings=False)
    torch.manual_seed(0)
    base, out = tmp_path / "qwen2", tmp_path / "dus"
    out.mkdir()
    Qwen2ForCausalLM(config).save_pretrained(base, max_shard_size="30KB")
    assert (base / "model.safetensors.index.json").is_file()
    (base / "chat_template.jinja").write_text("{{ messages }}")

    upscale(base, out, m=1, shard_bytes=50_000)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 6
    before = json.loads((base / "config.json").read_text())["layer_types"]
    assert cfg["layer_types"] == [before[i] for i in layer_map(4, 1)]
    assert (out / "chat_template.jinja").is_file() and (out / "generation_config.json").is_file()
    assert_layers_copied(load_all(base), load_all(out), layer_map(4, 1))
    model = AutoModelForCausalLM.from_pretrained(out)  # transformers reads the sharded output
    assert len(model.model.layers) == 6
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 128)


@pytest.fixture
def no_tensor_reads(monkeypatch):
    """Fail the test if any tensor data is read or copied."""
    def boom(*args, **kwargs):
        raise AssertionError("a tensor was read")

    for target, name in ((solar.tensorio, "read_rows"), (solar.tensorio, "map_rows"), (solar.tensorio, "copy_bytes"),
                         (solar.tensorio, "write_model"), (solar.dus, "write_model")):
        monkeypatch.setattr(target, name, boom)
    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", boom)


def _fake_model(path, names, config):
    path.mkdir()
    save_file({k: torch.zeros(2) for k in names}, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    "names,config,kwargs,match",
    [
        (["model.layers.0.w", "model.layers.1.w"], {"model_type": "llama", "num_hidden_layers": 2},
         {"m": 1}, "m=1: need 0 <= m < n/2"),
        (["model.layers.0.w", "model.layers.1.w"], {"model_type": "llama", "num_hidden_layers": 2},
         {"ranges": [[0, 2], [1, 3]]}, r"ranges\[1\]: \[1, 3\]"),
        (["encoder.block.0.w", "decoder.block.0.w"],
         {"model_type": "t5", "num_layers": 1, "is_encoder_decoder": True}, {"m": 0}, "is an encoder-decoder"),
        (["rnn.0.w", "rnn.1.w"], {"model_type": "odd", "depth": 2}, {"m": 0},
         "model_type='odd' has no integer layer count"),
        (["rnn.0.w", "rnn.1.w"], {"model_type": "odd", "num_hidden_layers": 2}, {"m": 0},
         "no stack has layers 0..n-1: no <prefix>.layers.N."),
        (["model.layers.0.w", "model.layers.2.w"], {"model_type": "llama", "num_hidden_layers": 2},
         {"m": 0}, r"model.layers.N \(0..2, 2 layers\)"),
        (["a.layers.0.w", "a.layers.1.w", "b.layers.0.w", "b.layers.1.w"],
         {"model_type": "odd", "num_hidden_layers": 2}, {"m": 0}, "several stacks fit"),
    ],
)
def test_upscale_errors_before_reading_a_tensor(tmp_path, no_tensor_reads, names, config, kwargs, match):
    base = _fake_model(tmp_path / "base", names, config)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=match):
        upscale(base, out, **kwargs)
    assert not list(out.iterdir())


@pytest.mark.parametrize(
    "prefix,extra",
    [
        ("model.layers", []),  # Llama, Mistral, Qwen2, Gemma
        ("transformer.h", ["transformer.wte.weight"]),  # GPT-2, Falcon, Bloom
        ("h", ["wte.weight"]),  # GPT-2 as published (no transformer. prefix)
        ("gpt_neox.layers", []),  # Pythia
        ("model.decoder.layers", []),  # OPT
        ("transformer.blocks", []),  # MPT
        # Multimodal: the vision tower has as many layers and is not the decoder.
        ("model.language_model.layers", [f"model.vision_tower.encoder.layers.{i}.w" for i in range(3)]),
        ("language_model.model.layers", [f"vision_tower.encoder.layers.{i}.w" for i in range(3)]),
    ],
)
def test_layer_prefix_of_common_families(prefix, extra):
    names = [f"{prefix}.{i}.{part}" for i in range(3) for part in ("mlp.w", "attn.h.0.w")] + extra
    assert layer_prefix(names, 3) == prefix
    with pytest.raises(ValueError, match="no stack has layers 0..n-1"):
        layer_prefix(names, 4)


def test_upscale_config_finds_the_layer_count():
    gpt2 = {"model_type": "gpt2", "n_layer": 4, "n_embd": 8}
    assert layer_section(gpt2) == (None, "n_layer") and upscale_config(gpt2, 1)["n_layer"] == 6
    nested = {"model_type": "gemma3", "text_config": {"num_hidden_layers": 4, "layer_types": list("abcd")},
              "vision_config": {"num_hidden_layers": 4}}
    out = upscale_config(nested, 1)
    assert out["text_config"]["num_hidden_layers"] == 6
    assert out["text_config"]["layer_types"] == list("abcbcd")
    assert out["vision_config"] == {"num_hidden_layers": 4} and "num_hidden_layers" not in out


def test_upscale_a_gpt2_model_loads_and_runs(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base, out = tmp_path / "gpt2", tmp_path / "dus"
    out.mkdir()
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=4, n_head=2, vocab_size=128, n_positions=64)).save_pretrained(base)
    upscale(base, out, m=1, shard_bytes=60_000)
    assert json.loads((out / "config.json").read_text())["n_layer"] == 6
    assert_layers_copied(load_all(base), load_all(out), layer_map(4, 1), prefix="transformer.h.")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(model.transformer.h) == 6
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 128)


def test_upscale_a_multimodal_gemma3_upscales_its_text_model(tmp_path):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, vocab_size=300, sliding_window=8)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                  image_size=28, patch_size=14)  # as many layers as the text model: not up-scaled
    torch.manual_seed(0)
    base, out = tmp_path / "gemma3", tmp_path / "dus"
    out.mkdir()
    Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision,
                                                mm_tokens_per_image=4)).save_pretrained(base)
    src = load_all(base)
    prefix = layer_prefix(src, 4) + "."
    assert "language_model" in prefix and any(k.startswith("vision_tower.encoder.layers.3.") for k in src)

    upscale(base, out, ranges=[[0, 3], [1, 4]])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["text_config"]["num_hidden_layers"] == 6 and cfg["vision_config"]["num_hidden_layers"] == 4
    assert_layers_copied(src, load_all(out), ranges_map(4, [[0, 3], [1, 4]]), prefix=prefix)
    model = Gemma3ForConditionalGeneration.from_pretrained(out)
    assert len(model.model.language_model.layers) == 6 and len(model.model.vision_tower.encoder.layers) == 4
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 300)
