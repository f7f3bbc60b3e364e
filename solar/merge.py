"""Model merging: weighted average (the paper's) and SLERP, tensor by tensor.

The arithmetic is pure and small; `merge_models` reads one tensor name at a time from
every input and applies it. (The merged model is held in memory until it is written.)
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from solar.model import copy_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def linear(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum_i w_i * t_i / sum_i w_i, accumulated in float32."""
    total = sum(weights)
    out = torch.zeros_like(tensors[0], dtype=torch.float32)
    for t, w in zip(tensors, weights, strict=True):
        out += t.to(torch.float32) * (w / total)
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation between a and b (flattened); linear when nearly parallel."""
    a32, b32 = a.to(torch.float32).flatten(), b.to(torch.float32).flatten()
    na, nb = a32.norm(), b32.norm()
    if na < eps or nb < eps:
        return ((1 - t) * a32 + t * b32).view(a.shape)
    cos = torch.clamp(torch.dot(a32 / na, b32 / nb), -1.0, 1.0)
    theta = torch.arccos(cos)
    if theta.abs() < 1e-4:
        out = (1 - t) * a32 + t * b32
    else:
        s = torch.sin(theta)
        out = (torch.sin((1 - t) * theta) / s) * a32 + (torch.sin(t * theta) / s) * b32
    return out.view(a.shape)


def merge_models(
    model_dirs: list[Path],
    out_dir: Path,
    method: str = "linear",
    weights: list[float] | None = None,
    t: float | None = None,
    dtype: str | None = None,
) -> dict[str, float]:
    """Merge models that share an architecture into `out_dir` (config and tokenizer of the
    first input). Raises if the inputs' tensor names or shapes differ."""
    configs = [json.loads((d / "config.json").read_text()) for d in model_dirs]
    for d, c in zip(model_dirs[1:], configs[1:], strict=True):
        for key in ("model_type", "num_hidden_layers", "hidden_size", "vocab_size"):
            if c.get(key) != configs[0].get(key):
                raise ValueError(
                    f"merge: {d} has {key}={c.get(key)!r}, {model_dirs[0]} has {configs[0].get(key)!r}"
                )
    weights = weights or [1.0] * len(model_dirs)

    with ExitStack() as stack:
        readers = [_open_all(d, stack) for d in model_dirs]
        names = sorted(readers[0])
        for d, r in zip(model_dirs[1:], readers[1:], strict=True):
            if sorted(r) != names:
                missing = set(names) ^ set(r)
                raise ValueError(f"merge: {d} differs in tensor names, e.g. {sorted(missing)[:3]}")
        merged = {}
        for name in names:
            tensors = [r[name].get_tensor(name) for r in readers]
            shapes = {tuple(x.shape) for x in tensors}
            if len(shapes) > 1:
                raise ValueError(f"merge: tensor {name} has shapes {sorted(shapes)} across inputs")
            out_dtype = DTYPES[dtype] if dtype else tensors[0].dtype
            if method == "linear":
                merged[name] = linear(tensors, weights).to(out_dtype)
            else:
                merged[name] = slerp(tensors[0], tensors[1], t).to(out_dtype)
            if not torch.isfinite(merged[name]).all():
                raise ValueError(f"merge: tensor {name} has non-finite values after merging")
    save_file(merged, out_dir / "model.safetensors", metadata={"format": "pt"})
    config = dict(configs[0])
    if dtype:
        config["dtype"] = dtype
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    copy_tokenizer(model_dirs[0], out_dir)
    return {"inputs": float(len(model_dirs)), "tensors": float(len(merged))}


def _open_all(model_dir: Path, stack: ExitStack) -> dict:
    """Map each tensor name to the open safetensors file that holds it."""
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"merge: no .safetensors weights in {model_dir}")
    index = {}
    for shard in shards:
        f = stack.enter_context(safe_open(shard, framework="pt"))
        for key in f.keys():
            index[key] = f
    return index
