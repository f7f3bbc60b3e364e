"""Throughput of data preparation and decontamination on a generated source.

    .venv/bin/python benchmarks/data_prep.py [--rows 1000000] [--cap 0]

Generates an Alpaca-schema JSONL of `--rows` rows (1 in 1000 carries a copied eval question),
then runs `solar.data.prepare` and `solar.decontam.decontaminate` on it, each in its own
process so that its peak memory (max RSS) is its own, and prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("the a river mountain city cat dog red blue green runs jumps quickly slowly under over "
         "between seven twelve planet star water fire bread music garden window teacher").split()


def generate(path: Path, rows: int, seed: int = 0) -> None:
    from solar.plan import embedded_path

    evals = [json.loads(line)["question"]
             for line in embedded_path("eval/gsm8k/test.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(rows):
            instruction = " ".join(rng.choices(WORDS, k=rng.randint(8, 30)))
            if i % 1000 == 0:
                instruction += " " + rng.choice(evals)
            output = " ".join(rng.choices(WORDS, k=rng.randint(20, 80)))
            f.write(json.dumps({"instruction": instruction, "input": "", "output": output}) + "\n")


def run_prepare(src: str, out: str, cap: int | None) -> dict:
    from solar.data import prepare

    t = time.perf_counter()
    metrics = prepare(src, Path(src), "alpaca", "train", None, cap, 0, Path(out))
    return {"seconds": time.perf_counter() - t, "rows_in": metrics["rows_read"], "rows_out": metrics["rows"],
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_decontam(data: str, out: str) -> dict:
    from solar.decontam import decontaminate, load_eval_index
    from solar.plan import embedded_path

    t = time.perf_counter()
    index = load_eval_index(embedded_path("eval"), 13, 8)
    metrics, _ = decontaminate(Path(data), Path(out), index, 0.5, [], 3, "bench")
    return {"seconds": time.perf_counter() - t, "rows_in": metrics["rows_in"], "rows_out": metrics["rows"],
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_child(fn, *args) -> dict:
    with get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cap", type=int, default=0, help="subsample cap for prepare (0: none)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "source.jsonl"
        t = time.perf_counter()
        generate(src, args.rows)
        print(f"generated {args.rows:,} rows ({src.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        (tmp / "prepared").mkdir()
        (tmp / "clean").mkdir()
        prep = in_child(run_prepare, str(src), str(tmp / "prepared"), args.cap or None)
        dec = in_child(run_decontam, str(tmp / "prepared"), str(tmp / "clean"))
    print(f"\n{'':14}{'prepare':>14}{'decontaminate':>16}")
    for key, fmt in (("rows_in", "{:,.0f}"), ("rows_out", "{:,.0f}"), ("seconds", "{:.1f}"),
                     ("rows/s", "{:,.0f}"), ("peak_mib", "{:.0f}")):
        cells = []
        for r in (prep, dec):
            value = r["rows_in"] / r["seconds"] if key == "rows/s" else r[key]
            cells.append(fmt.format(value))
        label = "peak RSS (MiB)" if key == "peak_mib" else key
        print(f"{label:14}{cells[0]:>14}{cells[1]:>16}")


if __name__ == "__main__":
    main()
