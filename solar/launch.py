"""Multi-process training: run a training stage in N ranks with torchrun (DDP) or
`accelerate launch` (DDP, FSDP, DeepSpeed from an accelerate config file).

The parent writes the call to a JSON file and starts `torchrun --standalone
--nproc_per_node N -m solar.launch CALL.json` (or `accelerate launch --config_file CFG
--num_processes N -m solar.launch CALL.json`); every rank runs the same training
function, the Trainer/accelerate pair does the data parallelism (gloo on CPU, NCCL on
GPU), rank 0 saves. Logged metrics travel back through a JSONL file that the parent
tails while it waits, so curves still stream into the stage's run.
"""

from __future__ import annotations

import json
import os
import socket
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
    proc = subprocess.Popen(launch_command(cfg, call),
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    seen = 0
    while True:
        done = proc.poll() is not None
        seen = _replay(metrics_file, seen, log)
        if done:
            break
        time.sleep(1.0)
    if proc.returncode != 0:
        raise RuntimeError(f"{cfg.launcher} {fn} with {cfg.processes} processes exited with {proc.returncode}")
    return json.loads(result_file.read_text())


def launch_command(cfg: TrainSpec, call: Path) -> list[str]:
    """The command that starts `cfg.processes` ranks of `python -m solar.launch CALL`."""
    if cfg.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={cfg.processes}", "-m", "solar.launch", str(call)]
    config = check_accelerate_config(cfg)
    # --num_processes overrides the file's count; a free port lets two stages run side by side.
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--num_processes", str(cfg.processes), "--main_process_port", str(_free_port()),
            "-m", "solar.launch", str(call)]


def check_accelerate_config(cfg: TrainSpec) -> Path:
    """Read `cfg.accelerate_config` with accelerate's own loader and refuse, before anything
    starts, what cannot run here: FSDP and DeepSpeed need CUDA GPUs, and a `--cpu` config
    runs one process whatever `--num_processes` says (accelerate 1.15)."""
    import torch
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    path = Path(cfg.accelerate_config or "")
    if not path.is_file():
        raise FileNotFoundError(f"train.accelerate_config: no such file {str(path)!r}")
    config = load_config_from_file(str(path))
    kind = config.distributed_type
    gpu = cfg.device != "cpu" and torch.cuda.is_available()
    if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED) and not gpu:
        raise ValueError(f"train.accelerate_config: {path} is a {kind.value} config, which needs CUDA GPUs; "
                         "this machine has none (use deployments/accelerate/ddp.yaml or launcher: torchrun)")
    if getattr(config, "use_cpu", False) and cfg.processes > 1:
        raise ValueError(f"train.accelerate_config: {path} sets use_cpu, with which accelerate runs one "
                         f"process, not train.processes={cfg.processes}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    cfg = TrainSpec(**call["cfg"]).model_copy(update={"processes": 1, "launcher": "torchrun",
                                                      "accelerate_config": None})  # no recursion
    metrics = getattr(train, call["fn"])(cfg=cfg, log=log, **kwargs)
    if rank == 0:
        Path(call["result_file"]).write_text(json.dumps(metrics))


if __name__ == "__main__":
    _worker(sys.argv[1])
