"""Stage outputs on disk: one directory per fingerprint, finished by a manifest.

A stage builds into a temporary sibling directory; the manifest (file sizes and hashes,
metrics, provenance) is written last and the directory renamed into place, so a crash
never leaves a directory that looks finished. A directory whose manifest is missing or
disagrees with the files is not a cache hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


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
    recorded sizes (and, with `deep`, the recorded sha256)."""
    manifest = read_manifest(path)
    if manifest is None:
        return False
    for rel, meta in manifest["files"].items():
        f = path / rel
        if not f.is_file() or f.stat().st_size != meta["size"]:
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
    (see `finish`) and the directory is renamed to `final`. On error it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError(f"{final}: stage built no manifest")
        if final.exists():  # an unfinished or tampered earlier attempt
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def finish(tmp: Path, result: StageResult, extra: dict[str, Any] | None = None) -> None:
    """Write the manifest of a built directory: the last file, hashing every other one."""
    files = {}
    for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
        files[str(f.relative_to(tmp))] = {"size": f.stat().st_size, "sha256": _sha256(f)}
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
