"""Depth up-scaling (SOLAR sec. 2).

A base of n layers is copied twice; copy A drops its last m layers, copy B its first m;
A is stacked on B: 2(n-m) layers. Mistral-7B (n=32, m=8) gives 48 layers, 10.7B params.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from solar.model import copy_tokenizer

LAYER_KEY = re.compile(r"^(model\.layers\.)(\d+)(\..+)$")


def layer_map(n: int, m: int) -> list[int]:
    """Source layer of each up-scaled layer: [0, n-m) from copy A, then [m, n) from copy B."""
    if n < 1:
        raise ValueError(f"n={n}: the base needs at least one layer")
    if m < 0 or 2 * m >= n:
        raise ValueError(f"m={m}: need 0 <= m < n/2 = {n / 2} for a base of n={n} layers")
    return list(range(0, n - m)) + list(range(m, n))


def upscale_config(config: dict[str, Any], m: int) -> dict[str, Any]:
    """The up-scaled model's config.json: layer count, and per-layer lists sliced alike."""
    n = int(config["num_hidden_layers"])
    mapping = layer_map(n, m)
    out = dict(config)
    out["num_hidden_layers"] = len(mapping)
    for key, value in config.items():  # e.g. layer_types: one entry per layer
        if isinstance(value, list) and len(value) == n and key != "architectures":
            out[key] = [value[i] for i in mapping]
    return out


def upscale(model_dir: Path, out_dir: Path, m: int) -> dict[str, float]:
    """Write the depth up-scaled copy of `model_dir` to `out_dir`, tensor by tensor."""
    config = json.loads((model_dir / "config.json").read_text())
    n = int(config["num_hidden_layers"])
    mapping = layer_map(n, m)
    sources: dict[int, list[int]] = {}
    for new, old in enumerate(mapping):
        sources.setdefault(old, []).append(new)

    tensors = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as f:
            for key in f.keys():
                match = LAYER_KEY.match(key)
                if match is None:  # embeddings, final norm, head
                    tensors[key] = f.get_tensor(key)
                    continue
                prefix, old, suffix = match.groups()
                t = f.get_tensor(key)
                for new in sources.get(int(old), []):
                    tensors[f"{prefix}{new}{suffix}"] = t.clone()  # independent copies
    save_file(tensors, out_dir / "model.safetensors", metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(upscale_config(config, m), indent=2))
    copy_tokenizer(model_dir, out_dir)
    params = sum(t.numel() for t in tensors.values())
    return {"layers": float(len(mapping)), "params": float(params), "base_layers": float(n)}
