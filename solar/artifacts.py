"""Stage outputs on disk: one directory per fingerprint, finished by a manifest.

A stage builds into a temporary sibling directory; the manifest (file sizes, mtimes and
hashes, metrics, provenance) is written last and the directory renamed into place, so a
crash never leaves a directory that looks finished. A directory whose manifest is missing or
disagrees with the files is not a cache hit.

Verification has two levels (`execution.verify`). `fast` compares each file's size and
modification time (mtime_ns) with the manifest: a stat per file, microseconds even for a
10.7B model, and it catches a file deleted, truncated, or rewritten in any ordinary way
(a rewrite sets a new mtime). `hash` re-hashes every file on every cache hit: it also
catches a same-size change whose mtime was put back (`touch -d`, `cp -p` of another
file, bit rot), at the cost of reading the whole artifact (~1 s per GB) each time.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MANIFEST = "manifest.json"
Verify = Literal["fast", "hash"]


class DiskFull(OSError):
    """No space left while building a stage. Not transient: retrying cannot help until
    space is freed, so task retries skip it."""


@dataclass
class StageResult:
    """What a stage hands downstream: where its artifact is, and what it measured."""

    name: str
    kind: str
    fingerprint: str
    path: str
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None  # the MLflow run that built it
    parent_run_id: str | None = None  # the pipeline run it was built in


def stage_dir(root: str | os.PathLike, kind: str, fingerprint: str) -> Path:
    return Path(root) / kind / fingerprint[:20]


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def is_complete(path: Path, deep: bool = False) -> bool:
    """True if `path` holds a finished artifact: a manifest whose files all exist with the
    recorded sizes and mtimes (and, with `deep`, the recorded sha256). See the module
    docstring for what each level catches."""
    manifest = read_manifest(path)
    if manifest is None:
        return False
    for rel, meta in manifest["files"].items():
        f = path / rel
        try:
            st = f.stat()
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != meta["size"]:
            return False
        if "mtime_ns" in meta and st.st_mtime_ns != meta["mtime_ns"]:
            return False
        if deep and _sha256(f) != meta["sha256"]:
            return False
    return True


def load_result(path: Path) -> StageResult:
    m = read_manifest(path)
    if m is None:
        raise FileNotFoundError(f"{path}: no {MANIFEST}; the stage did not finish")
    return StageResult(
        name=m["name"], kind=m["kind"], fingerprint=m["fingerprint"], path=str(path),
        metrics=m.get("metrics", {}), run_id=m.get("run_id"), parent_run_id=m.get("parent_run_id"),
    )


@contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield a temporary directory to build in; on success the caller writes the manifest
    (see `finish`) and the directory is renamed to `final`. On error it is removed; a full
    disk is raised as `DiskFull` naming the stage's path."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(final)
    tmp = final.parent / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError(f"{final}: stage built no manifest")
        if final.exists():  # an unfinished or tampered earlier attempt
            shutil.rmtree(final)
        os.replace(tmp, final)
    except Exception as e:
        if _is_disk_full(e):
            raise DiskFull(errno.ENOSPC, f"disk full: no space left on device while building "
                           f"{final} (the partial build was removed; free space or point "
                           f"execution.artifacts_dir elsewhere): {e}", str(tmp)) from e
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    # safetensors' writer raises its own error type: "I/O error: No space left on device".
    return "No space left on device" in str(e)


def _remove_orphans(final: Path) -> None:
    """Remove temporary build directories of `final` whose process died (SIGKILL, OOM):
    they are never taken as finished, but would hold disk. Only this host's, and only
    those whose process is gone, so a concurrent build of the same stage is left alone."""
    host = socket.gethostname()
    for orphan in final.parent.glob(f".{final.name}.tmp-{host}-*"):
        pid = orphan.name.removeprefix(f".{final.name}.tmp-{host}-").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(orphan, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def finish(tmp: Path, result: StageResult, extra: dict[str, Any] | None = None) -> None:
    """Write the manifest of a built directory: the last file, hashing every other one."""
    files = {}
    for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
        st = f.stat()
        files[str(f.relative_to(tmp))] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                          "sha256": _sha256(f)}
    manifest = {
        "name": result.name,
        "kind": result.kind,
        "fingerprint": result.fingerprint,
        "metrics": result.metrics,
        "run_id": result.run_id,
        "parent_run_id": result.parent_run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
        **(extra or {}),
    }
    write_json_atomic(tmp / MANIFEST, manifest)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
