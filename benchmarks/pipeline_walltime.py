"""Wall time of a pipeline run from nothing, and of the identical rerun (all cache hits).

    .venv/bin/python benchmarks/pipeline_walltime.py [--preset paper-ablation]

Runs `solar run` twice in a fresh temporary working directory (own artifacts, MLflow
store and Prefect result store) and prints both wall times, their ratio, and how many
stages the rerun took from cache. Goals for paper-ablation on 2 cores: first run under
5 minutes, cached rerun under 20 s.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOLAR = Path(sys.executable).with_name("solar")


def timed_run(preset: str, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        [str(SOLAR), "run", "--preset", preset], cwd=cwd, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"solar run failed:\n{out.stderr[-3000:]}")
    return elapsed, out.stdout + out.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="paper-ablation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="solar-bench-") as tmp:
        cold, _ = timed_run(args.preset, Path(tmp))
        warm, log = timed_run(args.preset, Path(tmp))
    stages = re.findall(r"Task run '([^']+:[^']+)' - Finished in state (\w+)", log)
    cached = sum(state == "Cached" for _, state in stages)
    print(f"preset            {args.preset}")
    print(f"first run         {cold:7.1f} s")
    print(f"identical rerun   {warm:7.1f} s   ({cached}/{len(stages)} stages from cache)")
    print(f"rerun / first     {warm / cold:7.3f}")


if __name__ == "__main__":
    main()
