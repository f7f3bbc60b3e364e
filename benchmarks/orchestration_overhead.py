"""Orchestration overhead: the pipeline's wall time against the sum of its stages' own
compute time (each stage's `stage_seconds`, timed around its builder), and the time of a
fully cached rerun, in local mode and in pools mode, in one run.

    .venv/bin/python benchmarks/orchestration_overhead.py [--preset tiny] [--modes local pools]

Wall time is measured around the `solar run` process, so it includes interpreter start,
imports, MLflow's database setup and, in local mode, the temporary Prefect server. Pools
mode runs against `deployments/servers.py up` (Prefect server, MLflow server, a CPU and a
GPU process worker, started before the clock) and each stage that is not cached is a flow
run on a pool: a new process per stage, the cost a process worker adds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOLAR = Path(sys.executable).with_name("solar")
SERVERS = [sys.executable, str(REPO / "deployments" / "servers.py")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(preset: str, cwd: Path, overrides: list[str], env: dict[str, str]) -> float:
    args = [str(SOLAR), "run", "--preset", preset, *(f"--set={o}" for o in overrides)]
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def measure(preset: str, mode: str, tmp: Path) -> dict[str, float]:
    cwd = tmp / mode
    cwd.mkdir()
    env = dict(os.environ)
    overrides = [f"execution.artifacts_dir={cwd / 'artifacts'}"]
    home = tmp / "servers"
    if mode == "pools":
        subprocess.run([*SERVERS, "up", "--home", str(home), "--prefect-port", str(free_port()),
                        "--mlflow-port", str(free_port())], check=True, capture_output=True)
        env.update(line.removeprefix("export ").split("=", 1) for line in (home / "env").read_text().splitlines())
        overrides += ["execution.mode=pools", "execution.max_parallel=2"]
    try:
        first = run(preset, cwd, overrides, env)
        manifests = [json.loads(p.read_text()) for p in (cwd / "artifacts").glob("*/*/manifest.json")]
        compute = sum(m["metrics"].get("stage_seconds", 0.0) for m in manifests)
        cached = run(preset, cwd, overrides, env)
    finally:
        if mode == "pools":
            subprocess.run([*SERVERS, "down", "--home", str(home)], capture_output=True)
    return {"stages": len(manifests), "first": first, "compute": compute, "cached": cached}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--modes", nargs="+", default=["local", "pools"], choices=["local", "pools"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="solar-overhead-") as tmp:
        results = {mode: measure(args.preset, mode, Path(tmp)) for mode in args.modes}
    print(f"preset {args.preset}")
    print(f"{'mode':6} {'stages':>6} {'first run':>10} {'compute':>9} {'overhead':>9} {'share':>6} {'cached rerun':>13}")
    for mode, r in results.items():
        overhead = r["first"] - r["compute"]
        print(f"{mode:6} {r['stages']:6d} {r['first']:9.1f}s {r['compute']:8.1f}s {overhead:8.1f}s "
              f"{100 * overhead / r['first']:5.1f}% {r['cached']:12.1f}s")


if __name__ == "__main__":
    main()
