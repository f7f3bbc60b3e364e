"""A cached artifact that was deleted, truncated or changed is rebuilt, never reused; a full
disk during a stage write is a clear error that leaves nothing that looks finished.

The stages are real (DUS of the tiny test model, a merge downstream of it) and run through
`run_stage`, the call each Prefect task makes; `stage_cache_key` is the task's cache key."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from solar.artifacts import DiskFull, StageResult, building, is_complete, read_manifest, stage_dir
from solar.plan import Stage, plan
from solar.spec import PipelineSpec
from solar.stages import run_stage
from tasks.stages import stage_cache_key


def planned_params() -> dict[str, dict]:
    """Stage params as the planner writes them (defaults included), by stage name."""
    spec = PipelineSpec.model_validate({
        "name": "t", "base": {"name": "base", "model": "embedded"}, "eval": None,
        "upscale": {"name": "dus", "base": "base", "m": 0},
        "merges": [{"name": "avg", "models": ["base", "dus"], "weights": [0.5, 0.5]}],
    })
    return {s.name: s.params for s in plan(spec)}


PARAMS = planned_params()
DUS = Stage("dus", "upscale", ("base",), PARAMS["dus"], "d" * 64)  # m=0: the layers twice
# Downstream of DUS: the average of the DUS model with itself, i.e. the DUS model again.
MERGE = Stage("avg", "merge", ("dus", "dus"), PARAMS["avg"], "e" * 64)


@pytest.fixture
def built(tmp_path, tiny_base):
    """A finished DUS artifact, the base as its input, and its weights as first built."""
    root = tmp_path / "artifacts"
    base = StageResult("base", "base", "b" * 64, str(tiny_base))
    result = run_stage(DUS, {"base": base}, root)
    # Copied out of the file: load_file maps it, so truncating it would change these too.
    good = {k: v.clone() for k, v in load_file(Path(result.path) / "model.safetensors").items()}
    return root, base, Path(result.path), good


def key(root: Path, verify: str = "fast") -> str:
    return stage_cache_key(None, {"stage": DUS, "root": str(root), "verify": verify})


def same_size_change(weights: Path, restore_mtime: bool) -> None:
    """Flip one byte of the last tensor's data: same size, different content."""
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    if restore_mtime:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("fault", ["deleted", "truncated", "same-size", "same-size-mtime-restored"])
def test_a_tampered_artifact_is_not_a_cache_hit_and_is_rebuilt(built, fault):
    root, base, out, good = built
    weights = out / "model.safetensors"
    key_before = key(root)
    assert key(root) == key_before  # a sound artifact keeps its cache key
    created = read_manifest(out)["created"]
    if fault == "deleted":
        weights.unlink()
    elif fault == "truncated":
        with weights.open("r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    else:
        same_size_change(weights, restore_mtime=fault == "same-size-mtime-restored")

    if fault == "same-size-mtime-restored":
        # The documented limit of `fast`: size and mtime agree, so only `hash` sees it.
        assert is_complete(out) and key(root) == key_before
        assert not is_complete(out, deep=True)
        assert key(root, "hash") != key_before
        result = run_stage(DUS, {"base": base}, root, verify="hash")
    else:
        assert not is_complete(out)
        assert key(root) != key_before  # a new token: Prefect's cache misses
        result = run_stage(DUS, {"base": base}, root)
    assert is_complete(out, deep=True)
    rebuilt = load_file(weights)
    assert rebuilt.keys() == good.keys()
    assert all(torch.equal(rebuilt[k], good[k]) for k in good)
    assert read_manifest(out)["created"] >= created and result.path == str(out)
    # Downstream reads the good DUS model: the merge of it with itself is it again.
    merged = run_stage(MERGE, {"dus": result}, root)
    m = load_file(Path(merged.path) / "model.safetensors")
    assert all(torch.equal(m[k], good[k]) for k in good)


def test_a_same_size_change_with_restored_mtime_is_reused_in_fast_mode(built):
    """The trade-off, pinned: `fast` never reads the data, so this one it returns."""
    root, base, out, good = built
    same_size_change(out / "model.safetensors", restore_mtime=True)
    result = run_stage(DUS, {"base": base}, root)  # verify="fast": a hit, not rebuilt
    served = load_file(Path(result.path) / "model.safetensors")
    assert not all(torch.equal(served[k], good[k]) for k in good)


def test_the_manifest_records_size_mtime_and_hash_of_every_file(built):
    _, _, out, _ = built
    files = read_manifest(out)["files"]
    assert "model.safetensors" in files and "config.json" in files
    for rel, meta in files.items():
        st = (out / rel).stat()
        assert (meta["size"], meta["mtime_ns"]) == (st.st_size, st.st_mtime_ns), rel
        assert len(meta["sha256"]) == 64


def test_disk_full_during_a_stage_write_is_a_clear_error_and_leaves_nothing(tmp_path, tiny_base, monkeypatch):
    """Simulated: every fsync of the shard writer reports ENOSPC (as NFS or a delayed
    allocation does). The error says so and names the stage's path; the rerun builds it."""
    root = tmp_path / "artifacts"
    base = StageResult("base", "base", "b" * 64, str(tiny_base))

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_space)
        with pytest.raises(DiskFull) as e:
            run_stage(DUS, {"base": base}, root)
    out = stage_dir(root.resolve(), DUS.kind, DUS.fingerprint)
    assert e.value.errno == errno.ENOSPC
    assert "disk full" in str(e.value) and str(out) in str(e.value)
    assert not out.exists()
    assert not list(out.parent.glob(".*tmp-*"))  # the partial build is gone
    assert not is_complete(out)
    result = run_stage(DUS, {"base": base}, root)  # with space again
    assert is_complete(Path(result.path), deep=True)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 256 KB tmpfs, if this machine lets us mount one (root in a container may)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_real_disk_full_on_a_small_tmpfs(small_tmpfs, tiny_base):
    """DUS of the tiny model (~300 KB out) into a 256 KB filesystem: ENOSPC for real."""
    root = small_tmpfs / "artifacts"
    base = StageResult("base", "base", "b" * 64, str(tiny_base))
    with pytest.raises(DiskFull, match="disk full") as e:
        run_stage(DUS, {"base": base}, root)
    out = stage_dir(root.resolve(), DUS.kind, DUS.fingerprint)
    assert str(out) in str(e.value)
    assert not out.exists() and not list(out.parent.glob(".*tmp-*"))
    assert shutil.disk_usage(small_tmpfs).used < 64 * 1024  # the partial shards were removed
    # safetensors' own writer (as the trainers and the base stage use) on the full disk.
    with pytest.raises(DiskFull, match="disk full"), building(small_tmpfs / "x" / "y") as tmp:
        save_file({"w": torch.zeros(200_000)}, tmp / "model.safetensors")
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_tmpfs)], check=True)
    result = run_stage(DUS, {"base": base}, root)
    assert is_complete(Path(result.path), deep=True)
