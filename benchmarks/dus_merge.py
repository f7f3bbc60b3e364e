"""DUS and merging at real model sizes: wall time and peak memory next to a plain copy.

    .venv/bin/python benchmarks/dus_merge.py               # 1.1B Llama-shaped, 22 -> 36 layers, 2-model linear merge
    .venv/bin/python benchmarks/dus_merge.py --cold        # the same, inputs evicted from the page cache first
    .venv/bin/python benchmarks/dus_merge.py --mistral-7b  # Mistral-7B-shaped (14.5 GB) -> 48 layers (21.5 GB)

Generates random bf16 models in safetensors shards (with config.json) in a temporary
directory under --workdir, then runs, each in its own subprocess: a plain copy of the base
model's files with fsync; DUS; and (not with --mistral-7b) a two-model 0.5/0.5 linear
merge. The operations alternate, repeat after repeat, and each row shows its best (lowest)
wall time: the machine's two cores are shared, and the best run is the least disturbed.
For each: wall time, the CPU time (user + system) of the operation itself, the process's
peak RSS (VmHWM), its RSS after imports (the interpreter's baseline), the difference, and
the ratio of wall time to copy+sync: of the input model, and of the same bytes the
operation writes (for DUS, a copy of its output). With --cold every input is evicted from
the page cache (posix_fadvise DONTNEED, after a sync) before each operation. Generated
files are deleted at the end. Goals: peak RSS under 1 GB above the baseline whatever the
model size; wall time within 1.5x of copy+sync.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # TinyLlama-1.1B and Mistral-7B-v0.1
    "llama-1.1b": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=2048,
                       intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                       num_key_value_heads=4, vocab_size=32000),
    "mistral-7b": dict(model_type="mistral", architectures=["MistralForCausalLM"], hidden_size=4096,
                       intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32000),
}


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for n in range(c["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes |= {p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                   p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                   p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                   p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                   p + "post_attention_layernorm.weight": (h,)}
    return shapes | {"model.norm.weight": (h,), "lm_head.weight": (v, h)}


def generate(out: Path, config: dict, seed: int, shard_mb: int) -> int:
    """A random bf16 model in shards of `shard_mb`, written by the library's shard writer."""
    import torch

    from solar.tensorio import OutTensor, write_model

    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    tensors = [OutTensor(n, "BF16", s) for n, s in tensor_shapes(config).items()]
    write_model(out, tensors, lambda t, f: f.write_tensor(
        (torch.randn(t.shape, generator=g) * 0.02).to(torch.bfloat16)), shard_mb * 1_000_000)
    (out / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16", "rms_norm_eps": 1e-5}, indent=2))
    return sum(p.stat().st_size for p in out.iterdir())


# --- the measured operations, each run in a fresh interpreter -------------------------


def worker(op: str, args: list[str]) -> None:
    import resource  # noqa: F401  (imports done before the baseline is taken)

    import solar.dus
    import solar.merge

    baseline = _status("VmRSS")
    start, cpu = time.perf_counter(), _cpu()
    if op == "copy":
        src, dst = Path(args[0]), Path(args[1])
        dst.mkdir()
        for f in sorted(src.iterdir()):
            shutil.copyfile(f, dst / f.name)
            with open(dst / f.name, "rb+") as fh:
                os.fsync(fh.fileno())
    elif op == "dus":
        out = Path(args[1])
        out.mkdir()
        solar.dus.upscale(Path(args[0]), out, ranges=json.loads(args[2]), shard_bytes=int(args[3]))
    elif op == "merge":
        out = Path(args[2])
        out.mkdir()
        solar.merge.merge_models([Path(args[0]), Path(args[1])], out, "linear", [0.5, 0.5],
                                 shard_bytes=int(args[3]))
    print(json.dumps({"baseline": baseline, "peak": _status("VmHWM"), "inner": time.perf_counter() - start,
                      "cpu": _cpu() - cpu}))


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def evict(*model_dirs: str) -> None:
    """Drop the models' files from the page cache, so the next operation reads the disk."""
    os.sync()
    for d in model_dirs:
        for f in Path(d).iterdir():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def measure(op: str, *args: str, cold: tuple[str, ...] = ()) -> dict:
    os.sync()  # start from no dirty pages, so no run pays for the writeback of the last
    evict(*cold)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--worker", op, *args], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "DO_NOT_TRACK": "true"})
    wall = time.perf_counter() - start
    if out.returncode:
        sys.exit(f"{op} failed:\n{out.stderr[-3000:]}")
    return {"wall": wall, **json.loads(out.stdout.strip().splitlines()[-1])}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mistral-7b", action="store_true", help="Mistral-7B-shaped: DUS 32 -> 48 layers")
    parser.add_argument("--workdir", default=str(ROOT.parent), help="where the temporary models go")
    parser.add_argument("--shard-mb", type=int, default=500, help="shard size of the generated inputs")
    parser.add_argument("--out-shard-mb", type=int, default=1000, help="shard size of the outputs")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each operation (the best is shown)")
    parser.add_argument("--cold", action="store_true", help="evict the inputs from the page cache before each run")
    args = parser.parse_args()
    config = SHAPES["mistral-7b" if args.mistral_7b else "llama-1.1b"]
    n = config["num_hidden_layers"]
    ranges = [[0, 24], [8, 32]] if args.mistral_7b else [[0, 18], [4, 22]]
    out_shard = str(args.out_shard_mb * 1_000_000)
    out_layers = sum(b - a for a, b in ranges)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="solar-dus-merge-", dir=args.workdir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        size = generate(tmp / "a", config, 0, args.shard_mb)
        if not args.mistral_7b:
            generate(tmp / "b", config, 1, args.shard_mb)
        params = sum(_numel(s) for s in tensor_shapes(config).values())
        print(f"generated {params / 1e9:.2f}B params, {size / 1e9:.2f} GB bf16, {n} layers, "
              f"{len(list((tmp / 'a').glob('*.safetensors')))} shards per model in {time.perf_counter() - t0:.0f} s")
        for _ in range(args.repeat):  # interleaved, so drifts of the disk hit every operation alike
            a, b = str(tmp / "a"), str(tmp / "b")
            ops = [("copy+sync (input model)", tmp / "copy", (a,), "copy", a, str(tmp / "copy")),
                   (f"DUS {n} -> {out_layers} layers", tmp / "dus", (a,), "dus", a, str(tmp / "dus"),
                    json.dumps(ranges), out_shard),
                   ("copy+sync (DUS output)", tmp / "copy", (str(tmp / "dus"),), "copy", str(tmp / "dus"),
                    str(tmp / "copy"))]
            if not args.mistral_7b:
                ops.append(("linear merge 0.5/0.5", tmp / "out", (a, b), "merge", a, b, str(tmp / "out"), out_shard))
            for label, written, reads, op, *op_args in ops:
                result = measure(op, *op_args, cold=reads if args.cold else ())
                runs.setdefault(label, []).append({**result, "bytes": dir_bytes(written)})
                if op != "dus":  # the DUS output is copied next
                    shutil.rmtree(written)
            shutil.rmtree(tmp / "dus")
    best = {label: min(rs, key=lambda r: r["wall"]) for label, rs in runs.items()}
    rows = {label: {"wall": best[label]["wall"], "cpu": best[label]["cpu"], "peak": max(r["peak"] for r in rs),
                    "baseline": min(r["baseline"] for r in rs), "bytes": rs[0]["bytes"]}
            for label, rs in runs.items()}
    same = {"copy+sync (DUS output)": "copy+sync (DUS output)", f"DUS {n} -> {out_layers} layers": "copy+sync (DUS output)"}
    print(f"\nDUS {n} -> {out_layers} layers {ranges}; merge: linear 0.5/0.5 of two models; inputs in "
          f"{args.shard_mb} MB shards, outputs in {args.out_shard_mb} MB shards; "
          f"{'inputs evicted from the page cache; ' if args.cold else 'inputs page-cached; '}"
          f"best of {args.repeat}, all walls of the row: see below\n")
    print("| operation | written | wall | CPU | peak RSS | baseline RSS | above baseline | x copy+sync of input "
          "| x copy+sync of the same bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    copy_in = rows["copy+sync (input model)"]["wall"]
    for label, r in rows.items():
        print(f"| {label} | {r['bytes'] / 1e9:.2f} GB | {r['wall']:.1f} s | {r['cpu']:.1f} s | {r['peak'] / 2**30:.2f} GiB | "
              f"{r['baseline'] / 2**30:.2f} GiB | {max(0, r['peak'] - r['baseline']) / 2**20:.0f} MiB | "
              f"{r['wall'] / copy_in:.2f} | {r['wall'] / rows[same.get(label, 'copy+sync (input model)')]['wall']:.2f} |")
    print()
    for label, rs in runs.items():
        walls = ", ".join(f"{r['wall']:.1f}" for r in rs)
        print(f"{label}: walls {walls} s")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(ROOT))
        worker(sys.argv[2], sys.argv[3:])
    else:
        main()
