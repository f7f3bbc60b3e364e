"""Checks of a model directory, run before any stage reads its tensors.

A bad input should stop a stage at once with an error that names the file, not deep inside
transformers or half-way through writing an output: a corrupt or truncated safetensors file,
a config.json that does not describe the weights beside it (transformers would silently
initialise missing layers at random), a tokenizer with more tokens than the embedding has
rows (ids past the end index out of range at run time), pickled weights (unpickling runs
arbitrary code), and custom modeling code the spec did not ask to trust.

Everything here reads headers and JSON only; nothing loads a tensor's data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from solar.dus import LAYER_KEY, NOT_TEXT, layer_section
from solar.tensorio import INDEX, CorruptSafetensors, read_header, tokenizer_size

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Input embeddings of the decoder families DUS knows (see solar.dus for their layers).
EMBEDDINGS = (
    "model.embed_tokens.weight",  # Llama, Mistral, Qwen2, Gemma, ...
    "model.language_model.embed_tokens.weight", "language_model.model.embed_tokens.weight",
    "transformer.wte.weight", "transformer.word_embeddings.weight", "gpt_neox.embed_in.weight",
    "model.decoder.embed_tokens.weight",
)


class ModelCheckError(ValueError):
    """A model directory that no stage should read: the message names file and field."""


@dataclass(frozen=True)
class Weight:
    """A tensor's shape and the file it lives in (from a header, never its data)."""

    shape: tuple[int, ...]
    file: Path


def safetensors_header(path: Path) -> dict[str, Weight]:
    """The tensors of one .safetensors file, after checking the header parses and the
    tensor data fits the file exactly (`tensorio.read_header`)."""
    try:
        infos = read_header(path)
    except CorruptSafetensors as e:
        raise ModelCheckError(str(e)) from None
    return {name: Weight(info.shape, info.file) for name, info in infos.items()}


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files a loader would read: those of the index, else every one."""
    index = model_dir / INDEX
    if not index.is_file():
        return sorted(model_dir.glob("*.safetensors"))
    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ModelCheckError(f"{index}: not a safetensors index ({e})") from None
    files = [model_dir / name for name in names]
    for f in files:
        if not f.is_file():
            raise ModelCheckError(f"{index}: lists {f.name}, which is missing")
    return files


def pickled_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)


def pickled_shapes(files: list[Path]) -> dict[str, Weight]:
    """Shapes of pickled state dicts, unpickled with torch.load(weights_only=True) onto the
    meta device: only tensors and plain containers are rebuilt, no code runs, no data is read."""
    out: dict[str, Weight] = {}
    for path in files:
        try:
            state = torch.load(path, map_location="meta", weights_only=True)
        except Exception as e:  # UnpicklingError for anything but tensors and containers
            lines = str(e).splitlines()
            why = next((ln.strip() for ln in lines if "Unsupported" in ln), lines[0] if lines else "")
            raise ModelCheckError(f"{path}: refused by torch.load(weights_only=True), which rebuilds "
                                  f"only tensors and plain containers: {why}") from None
        if not isinstance(state, dict):
            raise ModelCheckError(f"{path}: holds a {type(state).__name__}, not a state dict")
        out.update({k: Weight(tuple(v.shape), path) for k, v in state.items() if isinstance(v, torch.Tensor)})
    return out


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, None if absent; an error naming the file if it does not parse."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelCheckError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelCheckError(f"{path}: not a JSON object")
    return data


def check_config(model_dir: Path, config: dict[str, Any], weights: dict[str, Weight]) -> None:
    """config.json against the weights: layer indices, hidden size and vocabulary rows."""
    where = model_dir / "config.json"
    try:
        section, key = layer_section(config, str(where))
    except ValueError:  # no layer count DUS knows: nothing to compare the layers with
        section, key = None, None
    n = (config if section is None else config[section])[key] if key else None
    stacks: dict[str, dict[int, str]] = {}  # the decoder's layer stack(s): prefix -> index -> a tensor
    for name in weights:
        if (m := LAYER_KEY.match(name)) is not None and not NOT_TEXT.search(m.group(1)):
            stacks.setdefault(m.group(1), {}).setdefault(int(m.group(2)), name)
    if isinstance(n, int) and len(stacks) == 1:
        ((prefix, layers),) = stacks.items()
        if extra := sorted(i for i in layers if i >= n):
            t = layers[extra[0]]
            raise ModelCheckError(f"{where}: {key}={n}, but tensor {t} in "
                                  f"{weights[t].file.name} belongs to layer {extra[0]}")
        if missing := [i for i in range(n) if i not in layers]:
            raise ModelCheckError(f"{where}: {key}={n}, but no {prefix}.{missing[0]}.* "
                                  f"tensor is in the weights (layers {sorted(layers)} are)")
    emb = next((e for e in EMBEDDINGS if e in weights), None)
    if emb is None or len(weights[emb].shape) != 2:
        return
    rows, cols = weights[emb].shape
    for key, value, dim in (("vocab_size", rows, 0), ("hidden_size", cols, 1)):
        want = config.get(key)
        if isinstance(want, int) and want != value:
            raise ModelCheckError(f"{where}: {key}={want}, but tensor {emb} in {weights[emb].file.name} "
                                  f"has shape {list(weights[emb].shape)} (dimension {dim} is {value})")


def check_tokenizer(model_dir: Path, weights: dict[str, Weight]) -> None:
    """Every token id must index a row of the input embedding. Fewer tokens than rows is
    fine: models pad their vocabulary to a round size."""
    emb = next((e for e in EMBEDDINGS if e in weights), None)
    size = tokenizer_size(model_dir)
    if emb is None or size is None or not weights[emb].shape:
        return
    rows = weights[emb].shape[0]
    if size > rows:
        raise ModelCheckError(f"{model_dir}: the tokenizer (tokenizer.json) has {size} token ids, but "
                              f"the model's embedding {emb} has {rows} rows; ids >= {rows} have no embedding")


def custom_code(model_dir: Path) -> list[str]:
    """The custom code files that config.json or tokenizer_config.json name in `auto_map`."""
    code = []
    for name in ("config.json", "tokenizer_config.json"):
        auto_map = (read_json(model_dir / name) or {}).get("auto_map") or {}
        for ref in auto_map.values() if isinstance(auto_map, dict) else []:
            for r in ref if isinstance(ref, list) else [ref]:
                if isinstance(r, str):
                    code.append(r.split("--")[-1].rsplit(".", 1)[0] + ".py")
    return sorted(set(code))


def check_remote_code(model_dir: Path, trust_remote_code: bool) -> None:
    """Custom code runs only when the spec says `trust_remote_code: true`. Without it, a
    model type transformers knows is loaded with transformers' own class (its auto_map is
    ignored, its code never imported); any other cannot be loaded, and this says why."""
    code = custom_code(model_dir)
    if not code or trust_remote_code:
        return
    from transformers import CONFIG_MAPPING

    model_type = (read_json(model_dir / "config.json") or {}).get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ModelCheckError(
            f"{model_dir / 'config.json'}: model_type={model_type!r} needs the custom code its "
            f"auto_map names ({', '.join(code)}), which is not run unless base.trust_remote_code "
            "is true")


def check_model_dir(model_dir: Path, allow_pickle: bool = False) -> str:
    """Check a model directory before anything reads its tensors; returns the weight format
    a loader will use ("safetensors" or "pickle"). Raises ModelCheckError naming the file.

    Pickled weights (*.bin, *.pt, *.pth, *.ckpt) are refused unless `allow_pickle`, and are
    then only ever unpickled with torch.load(weights_only=True). A directory that also has
    safetensors weights is read from those; its pickles are never opened."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelCheckError(f"{model_dir}: not a model directory")
    config = read_json(model_dir / "config.json")
    if config is None:
        raise ModelCheckError(f"{model_dir}: no config.json")
    files = weight_files(model_dir)
    if files:
        fmt, weights = "safetensors", {}
        for f in files:
            weights.update(safetensors_header(f))
    else:
        pickles = pickled_files(model_dir)
        if not pickles:
            raise ModelCheckError(f"{model_dir}: no weights (*.safetensors)")
        if not allow_pickle:
            raise ModelCheckError(
                f"{model_dir}: pickled weights {[p.name for p in pickles]} are refused: unpickling "
                "can run arbitrary code. Convert them to safetensors, or set base.allow_pickle: true "
                "(they are then read with torch.load(weights_only=True))")
        fmt, weights = "pickle", pickled_shapes(pickles)
    check_config(model_dir, config, weights)
    check_tokenizer(model_dir, weights)
    return fmt
