"""Safetensors without holding a model: headers, row ranges, and shard-by-shard writing.

A model directory is read through its safetensors headers (names, dtypes, shapes, byte
offsets) and then tensor by tensor, row range by row range: with plain positioned reads
(`read_rows`), or, where a chunk is only read, through a memory map of that range alone
(`map_rows`, no copy; unmapped when the chunk is dropped). (`safe_open` maps whole files:
every page it touches counts in the process's RSS until the file is closed, so a 15 GB
model would show a 15 GB RSS.) Output is written one shard at a time, each to a temporary
file that is fsynced and renamed, with a `model.safetensors.index.json` when there is more
than one shard. With `direct=True` shards are written with O_DIRECT from a few aligned
staging buffers: no page-cache copy and no writeback at fsync, which on this machine's
disk is 3-5x faster than buffered writes of the same bytes (benchmarks/README.md).
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import queue
import struct
import threading
import warnings
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
# Config sections of a multimodal model's text decoder (Gemma3, Mistral3: text_config).
TEXT_SECTIONS = ("text_config", "language_config", "llm_config")
STAGING_BYTES = 8 << 20  # per staging buffer of a direct write (3 of them): big writes, little memory
# Files a derived model carries over from its (first) input: tokenizer, chat template,
# generation config. A superset of solar.model.TOKENIZER_FILES (tests/test_dus.py checks),
# listed here so that DUS and merging need not import transformers (1.2 s) to copy them.
CARRIED_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "chat_template.json", "tokenizer.model", "generation_config.json",
    "vocab.json", "merges.txt", "added_tokens.json", "preprocessor_config.json",
)


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


MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


class CorruptSafetensors(ValueError):
    """A .safetensors file whose header does not describe its bytes; the message names it."""


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of one .safetensors file, from its JSON header alone, after checking the
    header parses and the tensor data fits the file exactly (as the safetensors library
    requires): a corrupt or truncated file is an error before any tensor is read."""
    size = path.stat().st_size
    if size < 8:
        raise CorruptSafetensors(f"{path}: corrupt safetensors file: {size} bytes, shorter than "
                                 "the 8-byte header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, MAX_HEADER):
            raise CorruptSafetensors(f"{path}: corrupt safetensors file: header length {n} does not "
                                     f"fit the file of {size} bytes")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptSafetensors(f"{path}: corrupt safetensors file: the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise CorruptSafetensors(f"{path}: corrupt safetensors file: the header is not a JSON object")
    base, out, end = 8 + n, {}, 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = _tensor_range(path, name, meta)
        out[name] = TensorInfo(name, meta["dtype"], tuple(meta["shape"]), path, base + a, base + b)
        end = max(end, b)
    data = size - base
    if end > data:
        raise CorruptSafetensors(f"{path}: truncated safetensors file: the header places "
                                 f"{end} bytes of tensor data, the file holds {data}")
    if end < data:
        raise CorruptSafetensors(f"{path}: corrupt safetensors file: {data - end} bytes after the "
                                 "last tensor's data")
    return out


def _tensor_range(path: Path, name: str, meta: object) -> tuple[int, int]:
    """A header entry's [start, end) data offsets, once its dtype, shape and size agree."""
    where = f"{path}: corrupt safetensors file: tensor {name}"
    if not isinstance(meta, dict) or meta.get("dtype") not in DTYPES:
        raise CorruptSafetensors(f"{where}: no known dtype in {meta!r}"[:500])
    shape, offsets = meta.get("shape"), meta.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise CorruptSafetensors(f"{where}: shape {shape!r} is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CorruptSafetensors(f"{where}: data_offsets {offsets!r} is not a [start, end] byte range")
    need = _numel(tuple(shape)) * itemsize(meta["dtype"])
    if offsets[1] - offsets[0] != need:
        raise CorruptSafetensors(f"{where}: {offsets[1] - offsets[0]} bytes of data for "
                                 f"{meta['dtype']} {shape}, which needs {need}")
    return offsets[0], offsets[1]


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
    offset, length, shape = _row_span(info, r0, r1)
    if length == 0:
        return torch.empty(shape, dtype=DTYPES[info.dtype])
    buf = torch.empty(length, dtype=torch.uint8)
    with open(info.file, "rb", buffering=0) as f:
        f.seek(offset)
        got = f.readinto(memoryview(buf.numpy()))
    if got != length:
        raise OSError(f"{info.file}: short read of tensor {info.name}")
    return buf.view(DTYPES[info.dtype]).view(shape)


def _row_span(info: TensorInfo, r0: int, r1: int) -> tuple[int, int, tuple[int, ...]]:
    """(absolute byte offset, length, shape) of rows [r0, r1) of a tensor."""
    if not info.shape:
        return info.start, info.nbytes, ()
    row_bytes = info.nbytes // max(info.rows, 1)
    return info.start + r0 * row_bytes, (r1 - r0) * row_bytes, (r1 - r0, *info.shape[1:])


def map_rows(info: TensorInfo, r0: int, r1: int) -> torch.Tensor:
    """Rows [r0, r1) of a tensor as a read-only view of a memory map of just those bytes.

    No copy out of the page cache (a positioned read copies every byte once more); the map
    is unmapped when the tensor is freed, so only the chunks alive count in RSS. Never write
    to the result: the pages are mapped read-only and a write kills the process."""
    offset, length, shape = _row_span(info, r0, r1)
    if length == 0:
        return torch.empty(shape, dtype=DTYPES[info.dtype])
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    fd = os.open(info.file, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, length + offset - aligned, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                       prot=mmap.PROT_READ, offset=aligned)
    finally:
        os.close(fd)  # the map keeps the file
    with warnings.catch_warnings():  # "buffer is not writable": deliberate, see the docstring
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.frombuffer(mm, dtype=torch.uint8, count=length, offset=offset - aligned)
    return flat.view(DTYPES[info.dtype]).view(shape)


def prefetch(info: TensorInfo) -> None:
    """Ask the kernel to start reading a tensor's bytes (no-op where unsupported), so a read
    from a cold disk overlaps the work on the tensor before it."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(info.file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, info.start, info.nbytes, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


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


class StagedShardFile:
    """An output file written from a few page-aligned staging buffers, by a background
    thread, at aligned offsets: what O_DIRECT needs (a file opened without it works too).

    Tensor bytes are copied into the current buffer at once (so the caller may reuse its
    tensor); a full buffer goes to the writer thread and the next free one is taken, so
    filling one overlaps writing another and memory stays at `buffers` x `buffer_bytes`.
    The last buffer is padded to the block size and the file truncated back on close."""

    BLOCK = 4096

    def __init__(self, fd: int, path: Path, buffer_bytes: int | None = None, buffers: int = 3) -> None:
        self.fd, self.path, self.size = fd, path, buffer_bytes or STAGING_BYTES
        if self.size % self.BLOCK:
            raise ValueError(f"{path}: staging buffers of {self.size} bytes are not whole {self.BLOCK}-byte blocks")
        self.written, self.error = 0, None
        self.free: queue.Queue[tuple[mmap.mmap, torch.Tensor]] = queue.Queue()
        for _ in range(buffers):
            mm = mmap.mmap(-1, self.size)  # anonymous: page-aligned
            self.free.put((mm, torch.frombuffer(mm, dtype=torch.uint8)))
        self.full: queue.Queue[tuple[mmap.mmap, torch.Tensor, int, int] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.buf, self.pos, self.offset = self.free.get(), 0, 0

    def _run(self) -> None:
        while (item := self.full.get()) is not None:
            mm, view, length, offset = item
            try:
                if self.error is None:
                    self._pwrite(memoryview(mm)[:length], offset)
            except BaseException as e:  # re-raised in the caller's thread
                self.error = e
            finally:
                self.free.put((mm, view))

    def _pwrite(self, data: memoryview, offset: int) -> None:
        try:
            n = os.pwrite(self.fd, data, offset)
        except OSError as e:  # O_DIRECT accepted at open but not here: write buffered
            flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            if e.errno != errno.EINVAL or not flags & getattr(os, "O_DIRECT", 0):
                raise
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            n = os.pwrite(self.fd, data, offset)
        if n != len(data):
            raise OSError(f"{self.path}: short write ({n} of {len(data)} bytes at {offset})")

    def _append(self, data: torch.Tensor) -> None:
        """Copy flat uint8 `data` into the staging buffers, handing on each one that fills."""
        done = 0
        while done < data.numel():
            n = min(data.numel() - done, self.size - self.pos)
            self.buf[1][self.pos:self.pos + n].copy_(data[done:done + n])
            self.pos, done = self.pos + n, done + n
            if self.pos == self.size:
                self._hand_on(self.size)

    def _hand_on(self, length: int) -> None:
        self._check()
        self.full.put((*self.buf, length, self.offset))
        self.offset += length
        self.buf, self.pos = self.free.get(), 0

    def write_header(self, blob: bytes) -> None:
        self._append(torch.frombuffer(bytearray(blob), dtype=torch.uint8))

    def write_tensor(self, t: torch.Tensor) -> None:
        """Append a tensor's raw little-endian bytes (copied before this returns)."""
        t = t.contiguous().reshape(-1)
        if t.numel():
            self._append(t.view(torch.uint8))
            self.written += t.numel() * t.element_size()

    def write_cast(self, t: torch.Tensor, dtype: torch.dtype) -> None:
        """Append `t` converted to `dtype` (as `t.to(dtype)` rounds), converting straight
        into the staging buffers: no intermediate tensor, no extra copy."""
        size = torch.empty((), dtype=dtype).element_size()
        if self.pos % size:  # an odd offset (after an odd-sized tensor): convert, then copy
            return self.write_tensor(t.to(dtype))
        t, done = t.reshape(-1), 0
        while done < t.numel():
            k = min(t.numel() - done, (self.size - self.pos) // size)
            self.buf[1][self.pos:self.pos + k * size].view(dtype).copy_(t[done:done + k])
            self.pos, done = self.pos + k * size, done + k
            if self.pos == self.size:
                self._hand_on(self.size)
        self.written += t.numel() * size

    def copy(self, info: TensorInfo) -> None:
        """Append an input tensor's bytes unchanged."""
        for r0, r1 in row_chunks(info, max(1, self.size // itemsize(info.dtype))):
            self.write_tensor(map_rows(info, r0, r1))

    def close(self) -> None:
        """Write the last, partial buffer (padded to a block), wait, cut the padding off."""
        end = self.offset + self.pos
        if self.pos:
            padded = -(-self.pos // self.BLOCK) * self.BLOCK
            self.buf[1][self.pos:padded].zero_()
            self.full.put((*self.buf, padded, self.offset))
        self.full.put(None)
        self.thread.join()
        self._check()
        os.ftruncate(self.fd, end)

    def _check(self) -> None:
        if self.error is not None:
            raise self.error


def open_direct(path: Path) -> int:
    """A new file opened for writing with O_DIRECT, or without it where the filesystem
    refuses it (tmpfs, some overlays)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        return os.open(path, flags | getattr(os, "O_DIRECT", 0), 0o644)
    except OSError:
        return os.open(path, flags, 0o644)


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
    fill: Callable[[OutTensor, ShardFile | StagedShardFile], None],
    shard_bytes: int,
    direct: bool = False,
) -> int:
    """Write `tensors` as safetensors shards; `fill(t, f)` appends t's bytes to the shard
    with `f.write_tensor` or `f.copy`.

    Each shard goes to a temporary file, is fsynced and renamed; an index follows when
    there are several shards. `direct` writes through `StagedShardFile` (O_DIRECT where
    the filesystem allows), else through `ShardFile` (buffered, kernel copies for `copy`).
    Returns the bytes of tensor data written."""
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
            _write_shard(tmp, struct.pack("<Q", len(blob)) + blob, shard, fill, direct)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, out_dir / fname)
        total += offset
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / INDEX).write_text(json.dumps(index, indent=2))
    return total


def _write_shard(tmp: Path, header: bytes, shard: list[OutTensor],
                 fill: Callable[[OutTensor, ShardFile | StagedShardFile], None], direct: bool) -> None:
    """One shard: header, then every tensor by `fill` (checked for its byte count), fsynced."""
    fd = open_direct(tmp) if direct else os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with open(fd, "wb", buffering=0) as raw:
        if direct:
            f: ShardFile | StagedShardFile = StagedShardFile(fd, tmp)
            f.write_header(header)
        else:
            raw.write(header)
            f = ShardFile(raw)
        try:
            for t in shard:
                before = f.written
                fill(t, f)
                if f.written - before != t.nbytes:
                    raise RuntimeError(f"{tmp.name.removeprefix('.').removesuffix('.tmp')}: "
                                       f"{f.written - before} bytes for {t.name}, expected {t.nbytes}")
        finally:
            f.close()
        os.fsync(fd)


def carry_files(src: Path, dst: Path) -> None:
    """Tokenizer, chat template and generation config of `src`, copied to `dst`."""
    import shutil

    for name in CARRIED_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token",
                "additional_special_tokens", "extra_special_tokens")


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _content(token: object) -> object:
    """A special token as its text: configs spell them as strings or AddedToken dicts."""
    if isinstance(token, dict) and "content" in token:
        return token["content"]
    if isinstance(token, list):
        return [_content(t) for t in token]
    if isinstance(token, dict):
        return {k: _content(v) for k, v in sorted(token.items())}
    return token


def tokenizer_identity(model_dir: Path) -> dict[str, object]:
    """What makes two tokenizers the same for merging, part by part: the vocabulary of
    tokenizer.json, its added tokens, the special tokens (tokenizer_config.json over
    special_tokens_map.json) and the chat template (tokenizer_config.json or
    chat_template.jinja / chat_template.json). None for parts a model does not have."""
    data = _json(model_dir / "tokenizer.json")
    config = _json(model_dir / "tokenizer_config.json")
    specials = {**_json(model_dir / "special_tokens_map.json"), **config}
    template = config.get("chat_template")
    if (model_dir / "chat_template.jinja").is_file():
        template = (model_dir / "chat_template.jinja").read_text()
    elif (model_dir / "chat_template.json").is_file():
        template = _json(model_dir / "chat_template.json").get("chat_template")
    added = data.get("added_tokens")
    return {
        "vocabulary": data.get("model", {}).get("vocab"),
        "added tokens": None if added is None else sorted((t["id"], t["content"], bool(t.get("special")))
                                                           for t in added),
        "special tokens": {k: _content(specials[k]) for k in SPECIAL_KEYS if specials.get(k)} or None,
        "chat template": template,
    }


def tokenizer_size(model_dir: Path) -> int | None:
    """Ids a model's tokenizer.json can produce (highest id of the vocabulary and the added
    tokens, + 1); None without one or without ids."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    vocab = (data.get("model") or {}).get("vocab") if isinstance(data, dict) else None
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab or [])))  # Unigram: a list
    ids += [t["id"] for t in (data.get("added_tokens") or []) if isinstance(t, dict) and "id" in t]
    ints = [i for i in ids if isinstance(i, int)]
    return max(ints) + 1 if ints else None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
