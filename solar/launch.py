"""Multi-process training: run a training stage in N ranks with torchrun (DDP).

The parent writes the call to a JSON file and starts `torchrun --standalone
--nproc_per_node N -m solar.launch CALL.json`; every rank runs the same training
function, the Trainer/accelerate pair does the data parallelism (gloo on CPU, NCCL on
GPU), rank 0 saves. Logged metrics travel back through a JSONL file that the parent
tails while it waits, so curves still stream into the stage's run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from solar.spec import TrainSpec

LogFn = Callable[[dict[str, float], int], None]


def run_distributed(fn: str, kwargs: dict[str, Any], cfg: TrainSpec, log: LogFn, work: Path) -> dict[str, float]:
    """Call `solar.train.<fn>(**kwargs, cfg=cfg)` in `cfg.processes` ranks; rank 0's metrics."""
    work.mkdir(parents=True, exist_ok=True)
    call, metrics_file, result_file = work / "call.json", work / "metrics.jsonl", work / "result.json"
    for f in (metrics_file, result_file):
        f.unlink(missing_ok=True)
    call.write_text(json.dumps({
        "fn": fn, "cfg": cfg.model_dump(mode="json"),
        "kwargs": json.loads(json.dumps(kwargs, default=str)),  # paths as strings
        "metrics_file": str(metrics_file), "result_file": str(result_file),
    }))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={cfg.processes}", "-m", "solar.launch", str(call)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    seen = 0
    while True:
        done = proc.poll() is not None
        seen = _replay(metrics_file, seen, log)
        if done:
            break
        time.sleep(1.0)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun {fn} with {cfg.processes} processes exited with {proc.returncode}")
    return json.loads(result_file.read_text())


def _replay(path: Path, seen: int, log: LogFn) -> int:
    if not path.is_file():
        return seen
    lines = path.read_text().splitlines()
    for line in lines[seen:]:
        record = json.loads(line)
        log(record["metrics"], record["step"])
    return len(lines)


def _worker(call_path: str) -> None:
    from solar import train

    call = json.loads(Path(call_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    metrics_file = Path(call["metrics_file"])

    def log(metrics: dict[str, float], step: int) -> None:
        if rank == 0:
            with metrics_file.open("a") as f:
                f.write(json.dumps({"metrics": metrics, "step": step}) + "\n")

    kwargs = dict(call["kwargs"])
    for key in ("model_dir", "out_dir", "corpus_dir", "checkpoints", "ref_cache"):
        if kwargs.get(key) is not None:
            kwargs[key] = Path(kwargs[key])
    if "data_dirs" in kwargs:
        kwargs["data_dirs"] = [Path(d) for d in kwargs["data_dirs"]]
    cfg = TrainSpec(**call["cfg"]).model_copy(update={"processes": 1})  # no recursion
    metrics = getattr(train, call["fn"])(cfg=cfg, log=log, **kwargs)
    if rank == 0:
        Path(call["result_file"]).write_text(json.dumps(metrics))


if __name__ == "__main__":
    _worker(sys.argv[1])
