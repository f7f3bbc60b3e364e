"""Depth up-scaling (SOLAR sec. 2).

A base of n layers is copied twice; copy A drops its last m layers, copy B its first m;
A is stacked on B: 2(n-m) layers. Mistral-7B (n=32, m=8) gives 48 layers, 10.7B params.
The general form is a list of layer ranges, stacked in order: the paper's is
[[0, n-m], [m, n]].

Works for decoders that name their layers `model.layers.N.` (Llama, Mistral, Qwen2, Gemma
and most others) and give `num_hidden_layers` in config.json. Everything is checked from
config and safetensors headers before a tensor is read; tensors are then copied as bytes,
shard by shard, so memory stays flat whatever the model size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from solar.tensorio import OutTensor, TensorInfo, carry_files, model_tensors, write_model

LAYER_KEY = re.compile(r"^(model\.layers\.)(\d+)(\..+)$")
DEFAULT_SHARD_BYTES = 1_000_000_000


def layer_map(n: int, m: int) -> list[int]:
    """Source layer of each up-scaled layer: [0, n-m) from copy A, then [m, n) from copy B."""
    if n < 1:
        raise ValueError(f"n={n}: the base needs at least one layer")
    if m < 0 or 2 * m >= n:
        raise ValueError(f"m={m}: need 0 <= m < n/2 = {n / 2} for a base of n={n} layers")
    return list(range(0, n - m)) + list(range(m, n))


def ranges_map(n: int, ranges: list[list[int]] | list[tuple[int, int]]) -> list[int]:
    """Source layer of each up-scaled layer for ranges [start, end) stacked in order."""
    if not ranges:
        raise ValueError("ranges: give at least one [start, end) layer range")
    out: list[int] = []
    for i, r in enumerate(ranges):
        if len(r) != 2 or not 0 <= r[0] < r[1] <= n:
            raise ValueError(f"ranges[{i}]: {list(r)} is not a [start, end) range with 0 <= start < end <= n={n}")
        out += range(r[0], r[1])
    return out


def source_layers(n: int, m: int | None = None, ranges: list | None = None) -> list[int]:
    """The layer map of exactly one of `m` (the paper's form) or `ranges`."""
    if (m is None) == (ranges is None):
        raise ValueError("upscale: give exactly one of m or ranges")
    return layer_map(n, m) if ranges is None else ranges_map(n, ranges)


def layer_count(config: dict[str, Any], where: str = "config.json") -> int:
    """num_hidden_layers of a decoder config, or an error naming the model type."""
    n = config.get("num_hidden_layers")
    if not isinstance(n, int):
        raise ValueError(
            f"{where}: model_type={config.get('model_type')!r} has no integer num_hidden_layers; "
            "DUS supports decoders with `model.layers.N.` weights (Llama, Mistral, Qwen2, Gemma, ...)"
        )
    return n


def upscale_config(config: dict[str, Any], m: int | None = None, ranges: list | None = None) -> dict[str, Any]:
    """The up-scaled model's config.json: layer count, and per-layer lists sliced alike."""
    n = layer_count(config)
    mapping = source_layers(n, m, ranges)
    out = dict(config)
    out["num_hidden_layers"] = len(mapping)
    for key, value in config.items():  # e.g. layer_types: one entry per layer
        if isinstance(value, list) and len(value) == n and key != "architectures":
            out[key] = [value[i] for i in mapping]
    return out


def plan_upscale(
    tensors: dict[str, TensorInfo], n: int, mapping: list[int]
) -> list[tuple[OutTensor, TensorInfo]]:
    """Each output tensor with the input tensor it copies, in output order (non-layer
    tensors first, then layer by layer). Raises unless the layers are model.layers.0..n-1."""
    layers: dict[int, list[tuple[str, TensorInfo]]] = {}
    others = []
    for name, info in tensors.items():
        match = LAYER_KEY.match(name)
        if match is None:
            others.append(info)
        else:
            layers.setdefault(int(match.group(2)), []).append((match.group(3), info))
    if sorted(layers) != list(range(n)):
        found = f"layers {min(layers)}..{max(layers)} ({len(layers)})" if layers else "no model.layers.N. tensors"
        raise ValueError(
            f"upscale: config.json says num_hidden_layers={n} but the weights have {found}; "
            "DUS supports decoders with `model.layers.N.` weights"
        )
    plan = [(OutTensor(i.name, i.dtype, i.shape), i) for i in sorted(others, key=lambda i: i.name)]
    for new, old in enumerate(mapping):
        for suffix, info in sorted(layers[old]):
            plan.append((OutTensor(f"model.layers.{new}{suffix}", info.dtype, info.shape), info))
    return plan


def upscale(
    model_dir: Path,
    out_dir: Path,
    m: int | None = None,
    ranges: list | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> dict[str, float]:
    """Write the depth up-scaled copy of `model_dir` to `out_dir`, in safetensors shards of
    at most `shard_bytes` (one tensor bigger than that gets a shard of its own).

    Duplicated layers are independent byte copies. Config (per-layer lists sliced),
    tokenizer, chat template and generation config are carried over."""
    config = json.loads((model_dir / "config.json").read_text())
    n = layer_count(config, str(model_dir / "config.json"))
    mapping = source_layers(n, m, ranges)
    plan = plan_upscale(model_tensors(model_dir), n, mapping)  # headers only: nothing read yet
    sources = {out.name: info for out, info in plan}
    total = write_model(out_dir, [out for out, _ in plan], lambda t, f: f.copy(sources[t.name]),
                        shard_bytes)
    (out_dir / "config.json").write_text(json.dumps(upscale_config(config, m, ranges), indent=2))
    carry_files(model_dir, out_dir)
    params = sum(_numel(out.shape) for out, _ in plan)
    return {"layers": float(len(mapping)), "params": float(params), "base_layers": float(n),
            "bytes": float(total)}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
