"""Orchestration overhead: the pipeline's wall time against the sum of its stages' own
compute time (each stage's `stage_seconds`, timed around its builder), and the time of a
fully cached rerun, in local mode and in pools mode, in one run.

    .venv/bin/python benchmarks/orchestration_overhead.py [--preset tiny] [--modes local servers pools]

Wall time is measured around the `solar run` process, so it includes interpreter start,
imports and creating the MLflow database. `local`: stages in the process, no server
configured (the run starts Prefect's temporary server, a new SQLite MLflow store).
`servers`: stages in the process too, against `deployments/servers.py up` (a Prefect and an
MLflow server started before the clock, as a team runs). `pools`: the same servers plus a
CPU and a GPU process worker; each stage that is not cached is a flow run on a pool, a new
process per stage, the cost a process worker adds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flows.local_api import free_port

REPO = Path(__file__).resolve().parents[1]
SOLAR = Path(sys.executable).with_name("solar")
SERVERS = [sys.executable, str(REPO / "deployments" / "servers.py")]


def run(preset: str, cwd: Path, overrides: list[str], env: dict[str, str]) -> float:
    args = [str(SOLAR), "run", "--preset", preset, *(f"--set={o}" for o in overrides)]
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def measure(preset: str, mode: str, tmp: Path) -> dict[str, float]:
    """One first run from nothing (a new artifact root and MLflow store) and its cached rerun."""
    cwd = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=tmp))
    env = dict(os.environ)
    overrides = [f"execution.artifacts_dir={cwd / 'artifacts'}"]
    home = cwd / "servers"
    if mode in ("servers", "pools"):
        subprocess.run([*SERVERS, "up", "--home", str(home), "--prefect-port", str(free_port()),
                        "--mlflow-port", str(free_port())], check=True, capture_output=True)
        env.update(line.removeprefix("export ").split("=", 1) for line in (home / "env").read_text().splitlines())
        if mode == "pools":
            overrides += ["execution.mode=pools", "execution.max_parallel=2"]
    try:
        first = run(preset, cwd, overrides, env)
        manifests = [json.loads(p.read_text()) for p in (cwd / "artifacts").glob("*/*/manifest.json")]
        compute = sum(m["metrics"].get("stage_seconds", 0.0) for m in manifests)
        cached = run(preset, cwd, overrides, env)
    finally:
        if mode in ("servers", "pools"):
            subprocess.run([*SERVERS, "down", "--home", str(home)], capture_output=True)
    return {"stages": len(manifests), "first": first, "compute": compute, "cached": cached}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode; the median run is shown")
    parser.add_argument("--modes", nargs="+", default=["local", "servers", "pools"],
                        choices=["local", "servers", "pools"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="solar-overhead-") as tmp:
        results = {}
        for mode in args.modes:
            runs = sorted((measure(args.preset, mode, Path(tmp)) for _ in range(args.repeat)),
                          key=lambda r: r["first"])
            results[mode] = runs[len(runs) // 2]  # the run of median wall time, all its figures
            results[mode]["overhead"] = results[mode]["first"] - results[mode]["compute"]
    print(f"preset {args.preset}, the median of {args.repeat} run(s) per mode by wall time")
    print(f"{'mode':7} {'stages':>6} {'first run':>10} {'compute':>9} {'overhead':>9} {'share':>6} {'cached rerun':>13}")
    for mode, r in results.items():
        print(f"{mode:7} {r['stages']:6.0f} {r['first']:9.1f}s {r['compute']:8.1f}s {r['overhead']:8.1f}s "
              f"{100 * r['overhead'] / r['first']:5.1f}% {r['cached']:12.1f}s")


if __name__ == "__main__":
    main()
