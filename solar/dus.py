"""Depth up-scaling (SOLAR sec. 2).

A base of n layers is copied twice; copy A drops its last m layers, copy B its first m;
A is stacked on B: 2(n-m) layers. Mistral-7B (n=32, m=8) gives 48 layers, 10.7B params.
The general form is a list of layer ranges, stacked in order: the paper's is
[[0, n-m], [m, n]].

Works for decoder-only models whose layers are tensors named `<prefix>.N.` with a layer
count in config.json: `model.layers.N.` (Llama, Mistral, Qwen2, Gemma, Phi3, ...),
`transformer.h.N.` (GPT-2, Falcon, Bloom), `gpt_neox.layers.N.`, `model.decoder.layers.N.`
(OPT), `transformer.blocks.N.` (MPT), and the text model of multimodal checkpoints
(`model.language_model.layers.N.` with `text_config`, as in Gemma3 and Mistral3; the
vision tower is carried over unchanged). The prefix is found in the weight names and must
be the only one (or the only non-vision one) with exactly the configured layer count.
Everything is checked from config and safetensors headers before a tensor is read; tensors
are then copied as bytes, chunk by chunk, shard by shard, so memory stays flat whatever the
model size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from solar.tensorio import TEXT_SECTIONS, OutTensor, TensorInfo, carry_files, model_tensors, write_model

# A layer tensor: shortest dotted prefix ending in layers/h/blocks, the index, the rest.
LAYER_KEY = re.compile(r"^((?:[A-Za-z_]\w*\.)*?(?:layers|h|blocks))\.(\d+)(\..+)$")
COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")  # first found wins
NOT_TEXT = re.compile(r"vision|visual|image|audio|speech|encoder|projector")
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


def layer_section(config: dict[str, Any], where: str = "config.json") -> tuple[str | None, str]:
    """(section, key) of the decoder's layer count: section None for the top level, else
    the multimodal text section (`text_config`, ...). An error names the model type."""
    if config.get("is_encoder_decoder"):
        raise ValueError(f"{where}: model_type={config.get('model_type')!r} is an encoder-decoder; "
                         "DUS supports decoder-only models")
    for section in (None, *TEXT_SECTIONS):
        part = config if section is None else config.get(section)
        if isinstance(part, dict):
            for key in COUNT_KEYS:
                if isinstance(part.get(key), int) and not isinstance(part.get(key), bool):
                    return section, key
    raise ValueError(
        f"{where}: model_type={config.get('model_type')!r} has no integer layer count "
        f"({', '.join(COUNT_KEYS)}, at the top or in {', '.join(TEXT_SECTIONS)}); "
        "DUS supports decoder-only models with `<prefix>.N.` layer weights"
    )


def layer_count(config: dict[str, Any], where: str = "config.json") -> int:
    """The decoder's layer count (see `layer_section`)."""
    section, key = layer_section(config, where)
    return (config if section is None else config[section])[key]


def upscale_config(config: dict[str, Any], m: int | None = None, ranges: list | None = None) -> dict[str, Any]:
    """The up-scaled model's config.json: layer count, and per-layer lists sliced alike
    (in the text section for a multimodal model)."""
    section, key = layer_section(config)
    part = config if section is None else config[section]
    n = part[key]
    mapping = source_layers(n, m, ranges)
    new = dict(part)
    new[key] = len(mapping)
    for name, value in part.items():  # e.g. layer_types: one entry per layer
        if isinstance(value, list) and len(value) == n and name != "architectures":
            new[name] = [value[i] for i in mapping]
    return new if section is None else {**config, section: new}


def layer_prefix(tensors: dict[str, TensorInfo] | list[str], n: int) -> str:
    """The dotted prefix P of the decoder layers, named `P.0.` to `P.{n-1}.` in the weights.

    Several stacks can match (a vision tower's `...encoder.layers.N.`): the one with
    exactly n layers wins, and among several, the one whose name is not a vision, audio
    or encoder part. Raises, listing what was found, when none or several remain."""
    found: dict[str, set[int]] = {}
    for name in tensors:
        if (match := LAYER_KEY.match(name)) is not None:
            found.setdefault(match.group(1), set()).add(int(match.group(2)))
    fits = [p for p, idx in found.items() if idx == set(range(n))]
    if len(fits) > 1:
        fits = [p for p in fits if not NOT_TEXT.search(p)]
    if len(fits) == 1:
        return fits[0]
    stacks = ", ".join(f"{p}.N ({min(i)}..{max(i)}, {len(i)} layers)" for p, i in sorted(found.items()))
    why = "several stacks fit" if fits else "no stack has layers 0..n-1"
    raise ValueError(f"upscale: config.json says {n} layers; {why}: "
                     f"{stacks or 'no <prefix>.layers.N. / .h.N. / .blocks.N. tensors'}; "
                     "DUS supports decoder-only models with `<prefix>.N.` layer weights")


def plan_upscale(
    tensors: dict[str, TensorInfo], n: int, mapping: list[int], prefix: str | None = None
) -> list[tuple[OutTensor, TensorInfo]]:
    """Each output tensor with the input tensor it copies, in output order (non-layer
    tensors first, then layer by layer). The layer prefix is found (`layer_prefix`) unless
    given; raises unless its layers are 0..n-1."""
    prefix = prefix or layer_prefix(tensors, n)
    layers: dict[int, list[tuple[str, TensorInfo]]] = {}
    others = []
    for name, info in tensors.items():
        match = LAYER_KEY.match(name)
        if match is None or match.group(1) != prefix:
            others.append(info)
        else:
            layers.setdefault(int(match.group(2)), []).append((match.group(3), info))
    if sorted(layers) != list(range(n)):
        raise ValueError(f"upscale: {prefix}.N has layers {sorted(layers)}, config.json says {n}")
    plan = [(OutTensor(i.name, i.dtype, i.shape), i) for i in sorted(others, key=lambda i: i.name)]
    for new, old in enumerate(mapping):
        for suffix, info in sorted(layers[old]):
            plan.append((OutTensor(f"{prefix}.{new}{suffix}", info.dtype, info.shape), info))
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
    # Direct (O_DIRECT) writes: 1.4x faster here than kernel copies into the page cache,
    # which fsync then has to write back (benchmarks/README.md).
    total = write_model(out_dir, [out for out, _ in plan], lambda t, f: f.copy(sources[t.name]),
                        shard_bytes, direct=True)
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
