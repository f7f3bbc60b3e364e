"""Bad models stop their stage with an error naming the file, and leave nothing finished:
corrupt or truncated safetensors, a config that does not describe its weights, a tokenizer
larger than the embedding, pickled weights (refused unless allowed, and then read with
weights_only), and a merge whose inputs make non-finite values."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from solar.artifacts import StageResult, stage_dir
from solar.checks import ModelCheckError, check_model_dir
from solar.plan import Stage, plan
from solar.spec import MergeSpec, PipelineSpec, UpscaleSpec
from solar.stages import run_stage

WEIGHTS = "model.safetensors"


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(model_dir: Path, **changes) -> None:
    path = model_dir / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def rewrite_weights(model_dir: Path, edit) -> None:
    tensors = load_file(model_dir / WEIGHTS)
    edit(tensors)
    save_file(tensors, model_dir / WEIGHTS, metadata={"format": "pt"})


def base_stage(model_dir: Path, root: Path, **base) -> Stage:
    spec = PipelineSpec.model_validate({
        "name": "bad", "base": {"model": str(model_dir), **base}, "upscale": None, "eval": None,
        "execution": {"artifacts_dir": str(root)},
    })
    (stage,) = plan(spec)
    return stage


def assert_nothing_finished(root: Path, stage: Stage) -> None:
    """No finished artifact, and no half-built one left behind."""
    out = stage_dir(root.resolve(), stage.kind, stage.fingerprint)
    assert not out.exists()
    if out.parent.exists():
        assert not list(out.parent.glob(f".{out.name}.tmp*"))


def build_base_expecting(model_dir: Path, tmp_path: Path, match: str, **base) -> None:
    root = tmp_path / "artifacts"
    stage = base_stage(model_dir, root, **base)
    with pytest.raises(ValueError, match=match):
        run_stage(stage, {}, root)
    assert_nothing_finished(root, stage)


def result(name: str, path: Path) -> StageResult:
    return StageResult(name, "base", name * 8, str(path))


# ------------------------------------------------------------------ corrupt safetensors


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))  # the first 8 bytes: a huge header length


def header_not_json(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 32) + b"\xff" * 32 + b"\x00" * 64)


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1000])


@pytest.mark.parametrize("damage,match", [
    (garbage, r"model.safetensors: corrupt safetensors file: header length \d+ does not fit"),
    (header_not_json, r"model.safetensors: corrupt safetensors file: the header is not JSON"),
    (truncated, r"model.safetensors: truncated safetensors file: the header places (\d+) bytes "
                r"of tensor data, the file holds (\d+)"),
])
def test_a_corrupt_base_is_refused_before_loading(tmp_path, tiny_base, damage, match):
    model = copy_model(tiny_base, tmp_path / "model")
    damage(model / WEIGHTS)
    build_base_expecting(model, tmp_path, match)


def test_a_truncated_upscale_input_is_refused_before_a_tensor_is_read(tmp_path, tiny_base):
    model = copy_model(tiny_base, tmp_path / "model")
    size = (model / WEIGHTS).stat().st_size
    truncated(model / WEIGHTS)
    root = tmp_path / "artifacts"
    params = UpscaleSpec(m=0).model_dump(mode="json", exclude={"name", "base"})
    stage = Stage("dus", "upscale", ("base",), params, "d" * 64)
    with pytest.raises(ModelCheckError) as e:
        run_stage(stage, {"base": result("base", model)}, root)
    held = int(str(e.value).rsplit(" ", 1)[1])
    assert str(model / WEIGHTS) in str(e.value)
    assert held == size - 1000 - 8 - struct.unpack("<Q", (model / WEIGHTS).read_bytes()[:8])[0]
    assert_nothing_finished(root, stage)


# ------------------------------------------------------------------ config vs weights


@pytest.mark.parametrize("changes,match", [
    ({"num_hidden_layers": 3}, r"config.json: num_hidden_layers=3, but no model.layers.2.\* tensor "
                               r"is in the weights \(layers \[0, 1\] are\)"),
    ({"num_hidden_layers": 1}, r"config.json: num_hidden_layers=1, but tensor model.layers.1.\S+ in "
                               r"model.safetensors belongs to layer 1"),
    ({"hidden_size": 64}, r"config.json: hidden_size=64, but tensor model.embed_tokens.weight in "
                          r"model.safetensors has shape \[300, 32\] \(dimension 1 is 32\)"),
    ({"vocab_size": 512}, r"config.json: vocab_size=512, but tensor model.embed_tokens.weight in "
                          r"model.safetensors has shape \[300, 32\] \(dimension 0 is 300\)"),
])
def test_a_config_that_does_not_match_its_weights_is_refused(tmp_path, tiny_base, changes, match):
    model = copy_model(tiny_base, tmp_path / "model")
    edit_config(model, **changes)
    build_base_expecting(model, tmp_path, match)


def test_a_weight_the_config_needs_but_the_checkpoint_lacks_is_not_made_up(tmp_path, tiny_base):
    # transformers would initialise a missing tensor at random, with only a warning.
    model = copy_model(tiny_base, tmp_path / "model")
    rewrite_weights(model, lambda t: t.pop("model.norm.weight"))
    build_base_expecting(model, tmp_path, r"lacks weights its config needs, e\.g\. \['model\.norm\.weight'\]")


def test_a_merge_input_whose_config_disagrees_with_its_weights_is_refused(tmp_path, tiny_base):
    a = copy_model(tiny_base, tmp_path / "a")
    b = copy_model(tiny_base, tmp_path / "b")
    edit_config(b, num_hidden_layers=1)
    root = tmp_path / "artifacts"
    stage = merge_stage()
    with pytest.raises(ModelCheckError, match=rf"{b}/config.json: num_hidden_layers=1, but tensor model.layers.1"):
        run_stage(stage, {"a": result("a", a), "b": result("b", b)}, root)
    assert_nothing_finished(root, stage)


# ------------------------------------------------------------------ tokenizer vs embedding


def grow_tokenizer(model_dir: Path, extra: int) -> None:
    path = model_dir / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    top = max(vocab.values())
    vocab.update({f"<extra{i}>": top + 1 + i for i in range(extra)})
    path.write_text(json.dumps(data))


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path, tiny_base):
    model = copy_model(tiny_base, tmp_path / "model")
    grow_tokenizer(model, 10)
    build_base_expecting(model, tmp_path, r"the tokenizer \(tokenizer.json\) has 310 token ids, but the "
                                          r"model's embedding model.embed_tokens.weight has 300 rows")
    # Training and perplexity stages load through load_model: refused there too.
    from solar.model import load_model

    with pytest.raises(ModelCheckError, match="has 310 token ids"):
        load_model(model)


def test_a_tokenizer_smaller_than_the_embedding_is_fine(tmp_path, tiny_base):
    # Models pad their vocabulary to a round number of rows: fewer tokens is normal.
    model = copy_model(tiny_base, tmp_path / "model")
    rewrite_weights(model, lambda t: t.update({k: torch.cat([t[k], t[k][:20]]) for k in
                                               ("model.embed_tokens.weight", "lm_head.weight")}))
    edit_config(model, vocab_size=320)
    assert check_model_dir(model) == "safetensors"


# ------------------------------------------------------------------ pickled weights


def pickled_model(tiny_base: Path, dst: Path) -> Path:
    """tiny_base with its weights as a torch.save'd state dict instead of safetensors."""
    model = copy_model(tiny_base, dst)
    torch.save(load_file(model / WEIGHTS), model / "pytorch_model.bin")
    (model / WEIGHTS).unlink()
    return model


class WritesAMarker:
    """Unpickling this runs a command (what a hostile checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_refused_unless_allowed(tmp_path, tiny_base):
    model = pickled_model(tiny_base, tmp_path / "model")
    build_base_expecting(model, tmp_path, r"pickled weights \['pytorch_model.bin'\] are refused: "
                                          r"unpickling can run arbitrary code.*base.allow_pickle: true")


def test_allowed_pickles_load_only_through_weights_only(tmp_path, tiny_base, monkeypatch):
    model = pickled_model(tiny_base, tmp_path / "model")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    root = tmp_path / "artifacts"
    built = run_stage(base_stage(model, root, allow_pickle=True), {}, root)
    assert calls and all(w is True for w in calls), calls
    out = Path(built.path)
    assert not list(out.glob("*.bin"))
    loaded, original = load_file(out / WEIGHTS), load_file(tiny_base / WEIGHTS)
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[k], original[k]) for k in original)


def test_a_hostile_pickle_is_refused_even_when_allowed(tmp_path, tiny_base):
    model = pickled_model(tiny_base, tmp_path / "model")
    marker = tmp_path / "pwned"
    state = torch.load(model / "pytorch_model.bin", weights_only=True)
    state["model.norm.weight"] = WritesAMarker(marker)
    with open(model / "pytorch_model.bin", "wb") as f:
        pickle.dump(state, f)
    build_base_expecting(model, tmp_path, r"pytorch_model.bin: refused by torch.load\(weights_only=True\)",
                         allow_pickle=True)
    assert not marker.exists()


def test_pickles_beside_safetensors_are_never_opened(tmp_path, tiny_base):
    model = copy_model(tiny_base, tmp_path / "model")
    marker = tmp_path / "pwned"
    with open(model / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": WritesAMarker(marker)}, f)
    root = tmp_path / "artifacts"
    built = run_stage(base_stage(model, root), {}, root)
    assert (Path(built.path) / WEIGHTS).is_file() and not marker.exists()


# ------------------------------------------------------------------ non-finite merges


def merge_stage() -> Stage:
    params = MergeSpec(name="m", models=["a", "b"]).model_dump(
        mode="json", exclude={"name", "models", "base", "candidates", "select_by"})
    return Stage("m", "merge", ("a", "b"), params, "e" * 64)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_a_merge_that_makes_non_finite_weights_stops(tmp_path, tiny_base, bad):
    a = copy_model(tiny_base, tmp_path / "a")
    b = copy_model(tiny_base, tmp_path / "b")
    name = "model.layers.1.mlp.up_proj.weight"
    rewrite_weights(b, lambda t: t[name].view(-1).__setitem__(7, bad))
    root = tmp_path / "artifacts"
    stage = merge_stage()
    with pytest.raises(ValueError, match=rf"merge: tensor {name} has non-finite values after merging"):
        run_stage(stage, {"a": result("a", a), "b": result("b", b)}, root)
    assert_nothing_finished(root, stage)


@pytest.mark.parametrize("prefix, count_key, embedding", [
    ("transformer.h", "n_layer", "transformer.wte.weight"),          # GPT-2
    ("model.layers", "num_hidden_layers", "model.embed_tokens.weight"),  # Llama, Mistral, ...
])
def test_the_layer_check_follows_the_layer_names_dus_knows(tmp_path, prefix, count_key, embedding):
    """The config/weights check reads the layer stack as DUS does, so a GPT-2-named model
    whose config claims a layer the weights lack is refused, and a whole one passes."""
    from solar.checks import ModelCheckError, check_model_dir

    model = tmp_path / "m"
    model.mkdir()
    tensors = {f"{prefix}.{i}.mlp.weight": torch.zeros(2, 2) for i in range(3)}
    tensors[embedding] = torch.zeros(10, 2)
    save_file(tensors, model / "model.safetensors")
    (model / "config.json").write_text(json.dumps({count_key: 3, "vocab_size": 10}))
    assert check_model_dir(model) == "safetensors"
    (model / "config.json").write_text(json.dumps({count_key: 4, "vocab_size": 10}))
    with pytest.raises(ModelCheckError, match=rf"{count_key}=4, but no {prefix}\.3\.\* tensor"):
        check_model_dir(model)
    (model / "config.json").write_text(json.dumps({count_key: 3, "vocab_size": 12}))
    with pytest.raises(ModelCheckError, match=rf"vocab_size=12, but tensor {embedding}"):
        check_model_dir(model)
