"""Model merging, tensor by tensor and row range by row range.

Methods (pure functions below, float32 arithmetic):
  linear            sum_i w_i t_i / sum_i w_i (the paper's)
  slerp             spherical interpolation of two models at t
  task_arithmetic   base + scale * sum_i w_i (t_i - base)
  ties              base + scale * disjoint mean of the trimmed, sign-agreeing task vectors
  dare              base + scale * sum_i w_i mask_i (t_i - base) / density, mask_i ~ Bernoulli(density)

`merge_models` checks every input (architecture, tensor names and shapes, tokenizer by
`tokenizer_policy`) from configs, tokenizer files and safetensors headers before reading a
tensor, then streams: slerp and ties make a first pass over a tensor for its norms or trim
thresholds, every method writes its output chunk by chunk, shard by shard. The linear
merge, the common one, has its own path: inputs memory-mapped chunk by chunk (no copy out
of the page cache), arithmetic into reused float32 buffers, output written with O_DIRECT.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import torch

from solar.tensorio import (
    CODES,
    DTYPES,
    TEXT_SECTIONS,
    OutTensor,
    StagedShardFile,
    TensorInfo,
    carry_files,
    map_rows,
    model_tensors,
    prefetch,
    read_rows,
    row_chunks,
    tokenizer_identity,
    tokenizer_size,
    write_model,
)

BASE_METHODS = ("task_arithmetic", "ties", "dare")
METHODS = ("linear", "slerp", *BASE_METHODS)
CHUNK_ELEMENTS = 1 << 22  # 16 MB of float32 per input per chunk: fast, and little memory
# The linear path's chunk: two float32 buffers of 4 MB, which stay in this CPU's 32 MB L3
# across the five passes over them (4M-element chunks measured 20-40% slower).
LINEAR_CHUNK = 1 << 20
TOKENIZER_POLICIES = ("strict", "first")
OUT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONFIG_KEYS = ("model_type", "architectures", "num_hidden_layers", "hidden_size", "vocab_size")


def linear(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum_i w_i * t_i / sum_i w_i, accumulated in float32."""
    n = tensors[0].numel()
    return linear_into(tensors, weights, torch.empty(n), torch.empty(n)).view(tensors[0].shape)


def linear_into(tensors: list[torch.Tensor], weights: list[float], acc: torch.Tensor,
                tmp: torch.Tensor) -> torch.Tensor:
    """`linear` into the flat float32 buffers `acc` (returned) and `tmp`, without allocating.

    Each input is upcast, multiplied by its normalised weight and added, in input order, as
    separate rounded float32 operations: a fused multiply-add (torch.add(alpha=), lerp)
    would change the last bits, and the result is defined as this weighted average."""
    total = sum(weights)
    acc.copy_(tensors[0].reshape(-1)).mul_(weights[0] / total)
    for t, w in zip(tensors[1:], weights[1:], strict=True):
        acc.add_(tmp.copy_(t.reshape(-1)).mul_(w / total))
    return acc


def slerp_coefficients(dot: float, na: float, nb: float, t: float, eps: float = 1e-8) -> tuple[float, float]:
    """(ca, cb) with slerp(a, b) = ca*a + cb*b, from a.b, |a| and |b|; linear when either
    norm vanishes or a and b are nearly parallel."""
    if na < eps or nb < eps:
        return 1 - t, t
    theta = math.acos(max(-1.0, min(1.0, dot / (na * nb))))
    if abs(theta) < 1e-4:
        return 1 - t, t
    s = math.sin(theta)
    return math.sin((1 - t) * theta) / s, math.sin(t * theta) / s


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between a and b (as flat vectors)."""
    a32, b32 = a.to(torch.float32), b.to(torch.float32)
    dot, na, nb = _dot_norms(a32, b32)
    ca, cb = slerp_coefficients(dot, math.sqrt(na), math.sqrt(nb), t)
    return ca * a32 + cb * b32


def task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float],
                    scale: float = 1.0) -> torch.Tensor:
    """base + scale * sum_i w_i (t_i - base)."""
    b = base.to(torch.float32)
    delta = sum(w * (t.to(torch.float32) - b) for t, w in zip(tensors, weights, strict=True))
    return b + scale * delta


def dare_mask(shape: tuple[int, ...], density: float, seed: int) -> torch.Tensor:
    """Keep-mask of DARE: each entry kept with probability `density`, from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < density


def dare(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float], density: float,
         scale: float, seeds: list[int]) -> torch.Tensor:
    """Task arithmetic on task vectors randomly dropped to `density` and rescaled by 1/density."""
    b = base.to(torch.float32)
    delta = torch.zeros_like(b)
    for t, w, s in zip(tensors, weights, seeds, strict=True):
        delta += w * (t.to(torch.float32) - b) * dare_mask(b.shape, density, s) / density
    return b + scale * delta


def ties(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float], density: float,
         scale: float, thresholds: list[float] | None = None) -> torch.Tensor:
    """TIES: trim each task vector to its top-`density` magnitudes (|d| >= threshold), elect
    the sign of sum_i w_i d_i per entry, average the agreeing entries weighted by w_i.
    `thresholds` (one per model) default to those of these tensors alone."""
    b = base.to(torch.float32)
    deltas = [t.to(torch.float32) - b for t in tensors]
    if thresholds is None:
        k = keep_count(b.numel(), density)
        thresholds = [kth_largest(lambda d=d: [d.abs()], k) for d in deltas]
    trimmed = [d * (d.abs() >= th) for d, th in zip(deltas, thresholds, strict=True)]
    sign = torch.sign(sum(w * d for d, w in zip(trimmed, weights, strict=True)))
    num, den = torch.zeros_like(b), torch.zeros_like(b)
    for d, w in zip(trimmed, weights, strict=True):
        agree = (torch.sign(d) == sign) & (d != 0)
        num += w * d * agree
        den += w * agree
    return b + scale * torch.where(den != 0, num / den.where(den != 0, 1.0), 0.0)


def keep_count(numel: int, density: float) -> int:
    return max(1, min(numel, math.ceil(density * numel)))


def kth_largest(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> float:
    """Exact k-th largest of non-negative values given in chunks (a fresh iterable per
    call), in two histogram passes over float32 bit patterns: no sort of the whole tensor."""
    def hist(select: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        h = torch.zeros(65536, dtype=torch.int64)
        for c in chunks():
            h += torch.bincount(select(c.to(torch.float32).reshape(-1).view(torch.int32)), minlength=65536)
        return h

    def pick(h: torch.Tensor, k: int) -> tuple[int, int]:  # bin holding the k-th from the top
        cum = h.flip(0).cumsum(0)
        i = int(torch.searchsorted(cum, torch.tensor(k)))
        return 65535 - i, int(cum[i - 1]) if i else 0

    hi, above = pick(hist(lambda bits: bits >> 16), k)
    lo, _ = pick(hist(lambda bits: bits[(bits >> 16) == hi] & 0xFFFF), k - above)
    return struct.unpack("<f", struct.pack("<i", (hi << 16) | lo))[0]


def merge_models(
    model_dirs: list[Path],
    out_dir: Path,
    method: str = "linear",
    weights: list[float] | None = None,
    t: float | None = None,
    dtype: str | None = None,
    base: Path | None = None,
    density: float | None = None,
    scale: float | None = None,
    seed: int | None = None,
    tokenizer_policy: str = "strict",
    shard_bytes: int = 1_000_000_000,
) -> dict[str, float]:
    """Merge models that share an architecture into `out_dir` (config and tokenizer of the
    first input). task_arithmetic, ties and dare need `base`. Everything is checked before
    a tensor is read: configs, tensor names and shapes, and the tokenizers by
    `tokenizer_policy` (`check_tokenizers`)."""
    if method not in METHODS:
        raise ValueError(f"merge: unknown method {method!r}; methods are {', '.join(METHODS)}")
    if method == "slerp" and (t is None or len(model_dirs) != 2):
        raise ValueError("merge: slerp merges exactly 2 models and needs t")
    if method in ("ties", "dare") and density is None:
        raise ValueError(f"merge: {method} needs density")
    if (base is not None) != (method in BASE_METHODS):
        raise ValueError(f"merge: method {method} {'needs' if base is None else 'takes no'} base model")
    if weights is not None and len(weights) != len(model_dirs):
        raise ValueError(f"merge: {len(weights)} weights for {len(model_dirs)} models")
    dirs = model_dirs + ([base] if base is not None else [])
    configs = [json.loads((d / "config.json").read_text()) for d in dirs]
    for d, c in zip(dirs[1:], configs[1:], strict=True):
        mine, first = _architecture(c), _architecture(configs[0])
        for key in sorted(mine.keys() | first.keys()):
            if mine.get(key) != first.get(key):
                raise ValueError(f"merge: {d} has {key}={mine.get(key)!r}, {dirs[0]} has {first.get(key)!r}")
    check_tokenizers(model_dirs, tokenizer_policy, base)
    infos = [model_tensors(d) for d in dirs]
    for d, info in zip(dirs[1:], infos[1:], strict=True):
        if info.keys() != infos[0].keys():
            raise ValueError(f"merge: {d} differs in tensor names, e.g. {sorted(info.keys() ^ infos[0].keys())[:3]}")
        for name, i in info.items():
            if i.shape != infos[0][name].shape:
                raise ValueError(f"merge: tensor {name} has shapes {i.shape} in {d}, {infos[0][name].shape} in {dirs[0]}")
    weights = list(weights) if weights else [1.0] * len(model_dirs)
    method_args = {"t": t, "density": density, "scale": 1.0 if scale is None else scale, "seed": seed or 0}
    out_tensors = [_out_tensor(infos[0][name], dtype) for name in sorted(infos[0])]
    following = {a.name: b.name for a, b in pairwise(out_tensors)}
    scratch, pool = Scratch(), ThreadPoolExecutor(1, thread_name_prefix="merge-map")

    def fill(out: OutTensor, f: StagedShardFile) -> None:
        srcs = [info[out.name] for info in infos]
        if out.name in following:  # a cold disk reads the next tensor while this one is merged
            for info in infos:
                prefetch(info[following[out.name]])
        if not DTYPES[srcs[0].dtype].is_floating_point:  # integer buffers: the first model's
            return f.copy(srcs[0])
        if method == "linear":
            return _linear_tensor(srcs, weights, out, f, scratch, pool)
        for chunk in merge_tensor(method, srcs[: len(model_dirs)], srcs[len(model_dirs)] if base else None,
                                  weights, **method_args):
            _check_finite(chunk, out.name)
            f.write_tensor(chunk.to(DTYPES[out.dtype]))

    try:
        total = write_model(out_dir, out_tensors, fill, shard_bytes, direct=True)
    finally:
        pool.shutdown()
    config = dict(configs[0])
    if dtype:
        config["dtype"] = dtype
        config.pop("torch_dtype", None)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    carry_files(model_dirs[0], out_dir)
    return {"inputs": float(len(model_dirs)), "tensors": float(len(out_tensors)), "bytes": float(total)}


def check_tokenizers(dirs: list[Path], policy: str, base: Path | None = None) -> None:
    """The tokenizer policy of a merge of `dirs` (relative to `base`), before any tensor is read.

    `strict`: every input has the first's tokenizer: vocabulary (tokenizer.json, with added
    tokens), special tokens (tokenizer_config.json, special_tokens_map.json) and chat
    template; the base is held to all but the chat template, which a pretrained base
    usually lacks and fine-tuned models add. `first`: the output takes the first input's
    tokenizer, allowed only when every tokenizer has the same number of tokens (so embedding
    row i is token i's in every input); the merge is then only as meaningful as the
    inputs' token ids agree."""
    if policy not in TOKENIZER_POLICIES:
        raise ValueError(f"merge: unknown tokenizer_policy {policy!r}; policies are {', '.join(TOKENIZER_POLICIES)}")
    others = dirs[1:] + ([base] if base is not None else [])
    if policy == "first":
        size = tokenizer_size(dirs[0])
        for d in others:
            if tokenizer_size(d) != size:
                raise ValueError(f"merge: {d}/tokenizer.json has {tokenizer_size(d)} tokens, {dirs[0]}/tokenizer.json "
                                 f"{size} (tokenizer_policy: first needs equal vocabulary sizes)")
        return
    first = tokenizer_identity(dirs[0])
    for d in others:
        for part, value in tokenizer_identity(d).items():
            if value != first[part] and not (d == base and part == "chat template"):
                raise ValueError(f"merge: the tokenizer of {d} differs from that of {dirs[0]} in its {part} "
                                 "(tokenizer_policy: strict; `first` takes the first model's tokenizer)")


class Scratch:
    """Reused buffers of the linear path, grown to the largest chunk seen."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, key: str, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        buf = self.buffers.get((key, dtype))
        if buf is None or buf.numel() < n:
            buf = self.buffers[(key, dtype)] = torch.empty(n, dtype=dtype)
        return buf[:n]


def _linear_tensor(srcs: list[TensorInfo], weights: list[float], out: OutTensor, f: StagedShardFile,
                   scratch: Scratch, pool: ThreadPoolExecutor) -> None:
    """One tensor of a linear merge, chunk by chunk: inputs mapped on `pool` one chunk ahead
    (mapping is system time spent by the kernel, which then overlaps the arithmetic),
    arithmetic in reused buffers, the result rounded straight into the shard's staging
    buffers."""
    dtype = DTYPES[out.dtype]
    chunks = row_chunks(srcs[0], LINEAR_CHUNK)
    for xs in _ahead(chunks, lambda r: [map_rows(s, *r) for s in srcs], pool):
        n = xs[0].numel()
        acc = linear_into(xs, weights, scratch.get("acc", n), scratch.get("tmp", n))
        del xs  # the chunk is unmapped once `_ahead` moves on
        _check_finite(acc, out.name)
        f.write_cast(acc, dtype)


def _ahead(items: list, load: Callable, pool: ThreadPoolExecutor) -> Iterator:
    """load(item) for each item in order, the next one loading on `pool` while the caller
    works on this one (one ahead only: memory stays at two items)."""
    pending = pool.submit(load, items[0]) if items else None
    for i in range(len(items)):
        current = pending.result()
        pending = pool.submit(load, items[i + 1]) if i + 1 < len(items) else None
        yield current
        del current


def _check_finite(chunk: torch.Tensor, name: str) -> None:
    # A finite sum is the fast check; only a non-finite one looks at every entry.
    if not torch.isfinite(chunk.sum()) and not torch.isfinite(chunk).all():
        raise ValueError(f"merge: tensor {name} has non-finite values after merging")


def merge_tensor(method: str, srcs: list[TensorInfo], base: TensorInfo | None, weights: list[float],
                 t: float | None, density: float | None, scale: float, seed: int):
    """Yield the merged tensor in row chunks, read from the inputs' files."""
    chunks = row_chunks(srcs[0], CHUNK_ELEMENTS)
    read = lambda info, r: read_rows(info, *r)  # noqa: E731
    if method == "slerp":
        dot = na = nb = 0.0
        for r in chunks:
            d, a2, b2 = _dot_norms(read(srcs[0], r).float(), read(srcs[1], r).float())
            dot, na, nb = dot + d, na + a2, nb + b2
        ca, cb = slerp_coefficients(dot, math.sqrt(na), math.sqrt(nb), t)
    thresholds = None
    if method == "ties":
        k = keep_count(math.prod(srcs[0].shape), density)
        thresholds = [
            kth_largest(lambda s=s: ((read(s, r).float() - read(base, r).float()).abs() for r in chunks), k)
            for s in srcs
        ]
    for r in chunks:
        xs = [read(s, r) for s in srcs]
        b = read(base, r) if base is not None else None
        if method == "linear":
            yield linear(xs, weights)
        elif method == "slerp":
            yield ca * xs[0].float() + cb * xs[1].float()
        elif method == "task_arithmetic":
            yield task_arithmetic(b, xs, weights, scale)
        elif method == "ties":
            yield ties(b, xs, weights, density, scale, thresholds)
        elif method == "dare":
            seeds = [chunk_seed(seed, srcs[0].name, i, r[0]) for i in range(len(xs))]
            yield dare(b, xs, weights, density, scale, seeds)
        else:
            raise ValueError(f"merge: unknown method {method!r}")


def chunk_seed(seed: int, name: str, model: int, row: int) -> int:
    """A DARE mask seed per (spec seed, tensor, model, first row): deterministic and
    independent of the order tensors are processed in."""
    h = hashlib.sha256(f"{seed}:{name}:{model}:{row}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _dot_norms(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return float(a @ b), float(a @ a), float(b @ b)


def _architecture(config: dict) -> dict[str, object]:
    """The config entries inputs must share, the text section's of a multimodal model too."""
    out = {key: config.get(key) for key in CONFIG_KEYS}
    for section in TEXT_SECTIONS:
        if isinstance(config.get(section), dict):
            out |= {f"{section}.{key}": config[section].get(key) for key in CONFIG_KEYS}
    return out


def _out_tensor(info: TensorInfo, dtype: str | None) -> OutTensor:
    """The output tensor: the spec's dtype for floating tensors, else the input's."""
    if dtype and DTYPES[info.dtype].is_floating_point:
        return OutTensor(info.name, CODES[OUT_DTYPES[dtype]], info.shape)
    return OutTensor(info.name, info.dtype, info.shape)
