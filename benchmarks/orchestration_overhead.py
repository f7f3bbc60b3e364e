"""Orchestration overhead in local mode: the pipeline's wall time against the sum of its
stages' own compute time (each stage's `stage_seconds`, timed around its builder), and
the time of a fully cached rerun.

    .venv/bin/python benchmarks/orchestration_overhead.py [--preset tiny]

Wall time is measured around the `solar run` process, so it includes interpreter start,
imports, the temporary Prefect server and MLflow's database setup.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOLAR = Path(sys.executable).with_name("solar")


def run(preset: str, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(SOLAR), "run", "--preset", preset], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="solar-overhead-") as tmp:
        cwd = Path(tmp)
        first = run(args.preset, cwd)
        manifests = [json.loads(p.read_text()) for p in (cwd / "artifacts").glob("*/*/manifest.json")]
        compute = sum(m["metrics"].get("stage_seconds", 0.0) for m in manifests)
        cached = run(args.preset, cwd)
    overhead = first - compute
    print(f"preset                 {args.preset} ({len(manifests)} stages)")
    print(f"first run (wall)       {first:7.1f} s")
    print(f"sum of stage compute   {compute:7.1f} s")
    print(f"orchestration overhead {overhead:7.1f} s  ({100 * overhead / first:.1f}% of the first run)")
    print(f"fully cached rerun     {cached:7.1f} s")


if __name__ == "__main__":
    main()
