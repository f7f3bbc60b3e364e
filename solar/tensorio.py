"""Safetensors without holding a model: headers, row ranges, and shard-by-shard writing.

A model directory is read through its safetensors headers (names, dtypes, shapes, byte
offsets) and then tensor by tensor, row range by row range, with plain positioned reads.
(`safe_open` maps whole files: every page it touches counts in the process's RSS until the
file is closed, so a 15 GB model would show a 15 GB RSS.) Output is written one shard at a
time, each to a temporary file that is fsynced and renamed, with a
`model.safetensors.index.json` when there is more than one shard.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

INDEX = "model.safetensors.index.json"
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
CODES = {v: k for k, v in DTYPES.items()}
# Files a derived model carries over besides those of solar.model.copy_tokenizer.
EXTRA_FILES = ("vocab.json", "merges.txt", "added_tokens.json", "preprocessor_config.json")


def itemsize(dtype: str) -> int:
    return torch.empty((), dtype=DTYPES[dtype]).element_size()


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file and absolute byte range, with dtype code and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of one .safetensors file, from its JSON header alone."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    base = 8 + size
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {meta['dtype']}")
        a, b = meta["data_offsets"]
        out[name] = TensorInfo(name, meta["dtype"], tuple(meta["shape"]), path, base + a, base + b)
    return out


def model_tensors(model_dir: Path) -> dict[str, TensorInfo]:
    """Every tensor of a model directory (one file or index-listed shards), headers only."""
    index = model_dir / INDEX
    if index.is_file():
        files = sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no .safetensors weights")
    tensors: dict[str, TensorInfo] = {}
    for path in files:
        for name, info in read_header(path).items():
            if name in tensors:
                raise ValueError(f"{model_dir}: tensor {name} is in both {tensors[name].file.name} and {path.name}")
            tensors[name] = info
    return tensors


def row_chunks(info: TensorInfo, max_elements: int) -> list[tuple[int, int]]:
    """Row ranges [r0, r1) of at most `max_elements` elements each (at least one row)."""
    per_row = max(1, _numel(info.shape) // max(info.rows, 1))
    step = max(1, max_elements // per_row)
    return [(r, min(r + step, info.rows)) for r in range(0, info.rows, step)] or [(0, 0)]


def read_rows(info: TensorInfo, r0: int, r1: int) -> torch.Tensor:
    """Rows [r0, r1) of a tensor (the whole tensor if 0-d), by a positioned read."""
    row_bytes = info.nbytes // max(info.rows, 1)
    shape = (r1 - r0, *info.shape[1:]) if info.shape else ()
    length = (r1 - r0) * row_bytes if info.shape else info.nbytes
    if length == 0:
        return torch.empty(shape, dtype=DTYPES[info.dtype])
    buf = torch.empty(length, dtype=torch.uint8)
    with open(info.file, "rb", buffering=0) as f:
        f.seek(info.start + r0 * row_bytes)
        got = f.readinto(memoryview(buf.numpy()))
    if got != length:
        raise OSError(f"{info.file}: short read of tensor {info.name}")
    return buf.view(DTYPES[info.dtype]).view(shape)


def copy_bytes(info: TensorInfo, out: BinaryIO) -> None:
    """Append a tensor's bytes to `out` (an unbuffered file), in the kernel where possible."""
    with open(info.file, "rb", buffering=0) as src:
        offset, left = info.start, info.nbytes
        while left:
            try:
                n = os.copy_file_range(src.fileno(), out.fileno(), min(left, 1 << 30), offset)
            except (AttributeError, OSError):
                src.seek(offset)
                n = out.write(src.read(min(left, 1 << 24)))
            if n <= 0:
                raise OSError(f"{info.file}: could not copy tensor {info.name}")
            offset, left = offset + n, left - n


class ShardFile:
    """An output file whose tensor writes run on a background thread, so computing the next
    chunk overlaps writing the last (at most two chunks wait in the queue)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.written, self.error = f, 0, None
        self.queue: queue.Queue[torch.Tensor | None] = queue.Queue(maxsize=2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (t := self.queue.get()) is not None:
            try:
                if self.error is None:
                    self.f.write(memoryview(t.view(torch.uint8).numpy()))
            except BaseException as e:  # re-raised in the caller's thread
                self.error = e
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def write_tensor(self, t: torch.Tensor) -> None:
        """Append a tensor's raw little-endian bytes."""
        self._check()
        t = t.contiguous().reshape(-1)
        if t.numel():
            self.queue.put(t)
            self.written += t.numel() * t.element_size()

    def copy(self, info: TensorInfo) -> None:
        """Append an input tensor's bytes unchanged, in the kernel where possible."""
        self.drain()
        copy_bytes(info, self.f)
        self.written += info.nbytes

    def drain(self) -> None:
        self.queue.join()
        self._check()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class OutTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * itemsize(self.dtype)


def plan_shards(tensors: list[OutTensor], shard_bytes: int) -> list[list[OutTensor]]:
    """Greedy shards in tensor order, each at most `shard_bytes` unless one tensor is bigger."""
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def write_model(
    out_dir: Path,
    tensors: list[OutTensor],
    fill: Callable[[OutTensor, ShardFile], None],
    shard_bytes: int,
) -> int:
    """Write `tensors` as safetensors shards; `fill(t, f)` appends t's bytes to the shard
    with `f.write_tensor` or `f.copy`.

    Each shard goes to a temporary file, is fsynced and renamed; an index follows when
    there are several shards. Returns the bytes of tensor data written."""
    shards = plan_shards(tensors, shard_bytes)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map, total = {}, 0
    for shard, fname in zip(shards, names, strict=True):
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for t in shard:
            header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
            weight_map[t.name] = fname
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        tmp = out_dir / f".{fname}.tmp"
        try:
            with open(tmp, "wb", buffering=0) as raw:
                raw.write(struct.pack("<Q", len(blob)) + blob)
                f = ShardFile(raw)
                try:
                    for t in shard:
                        before = f.written
                        fill(t, f)
                        if f.written - before != t.nbytes:
                            raise RuntimeError(f"{fname}: {f.written - before} bytes for {t.name}, "
                                               f"expected {t.nbytes}")
                finally:
                    f.close()
                os.fsync(raw.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, out_dir / fname)
        total += offset
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / INDEX).write_text(json.dumps(index, indent=2))
    return total


def carry_files(src: Path, dst: Path) -> None:
    """Tokenizer, chat template and generation config of `src`, copied to `dst`."""
    import shutil

    from solar.model import copy_tokenizer  # imports transformers: only when needed

    copy_tokenizer(src, dst)
    for name in EXTRA_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def tokenizer_vocab(model_dir: Path) -> dict | None:
    """The vocabulary (and added tokens) of a model's tokenizer.json, None if it has none."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    added = sorted((t["id"], t["content"]) for t in data.get("added_tokens", []))
    return {"vocab": data.get("model", {}).get("vocab"), "added": added}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
