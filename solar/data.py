"""Data sources: read each dataset in its own schema, normalise, subsample.

Every source becomes one of three row shapes, Zephyr-style, with chat messages so that the
chat template is applied once, by the trainer, from the template file:
- text:       {"text": str}
- sft:        {"prompt": [messages], "completion": [assistant message]}
- preference: {"prompt": [messages], "chosen": [assistant message], "rejected": [...]}
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from solar.spec import FORMATS

Row = dict[str, Any]
ROWS_FILE = "data.jsonl"


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def system(content: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": content}] if content.strip() else []


def _alpaca(r: Row) -> Row:
    question = r["instruction"] if not r.get("input") else f"{r['instruction']}\n\n{r['input']}"
    return {"prompt": [user(question)], "completion": [assistant(r["output"])]}


def _openorca(r: Row) -> Row:
    return {
        "prompt": system(r.get("system_prompt") or "") + [user(r["question"])],
        "completion": [assistant(r["response"])],
    }


def _math(r: Row) -> Row:
    return {"prompt": [user(r["problem"])], "completion": [assistant(r["solution"])]}


def _metamathqa(r: Row) -> Row:
    return {"prompt": [user(r["query"])], "completion": [assistant(r["response"])]}


def _last_assistant(messages: list[dict[str, str]], where: str) -> dict[str, str]:
    for m in reversed(messages):
        if m["role"] == "assistant":
            return assistant(m["content"])
    raise ValueError(f"{where}: no assistant message")


def _ultrafeedback(r: Row) -> Row:
    return {
        "prompt": [user(r["prompt"])],
        "chosen": [_last_assistant(r["chosen"], "chosen")],
        "rejected": [_last_assistant(r["rejected"], "rejected")],
    }


def _orca_dpo(r: Row) -> Row:
    return {
        "prompt": system(r.get("system") or "") + [user(r["question"])],
        "chosen": [assistant(r["chosen"])],
        "rejected": [assistant(r["rejected"])],
    }


def _text(r: Row) -> Row:
    return {"text": r["text"]}


NORMALISERS: dict[str, Callable[[Row], Row]] = {
    "text": _text,
    "alpaca": _alpaca,
    "openorca": _openorca,
    "math": _math,
    "metamathqa": _metamathqa,
    "ultrafeedback": _ultrafeedback,
    "orca-dpo": _orca_dpo,
}
assert NORMALISERS.keys() == FORMATS.keys()


def read_source(source: str, local: Path | None, split: str, revision: str | None) -> Iterator[Row]:
    """Rows of a source: a local JSONL/JSON/Parquet file, or a hub dataset by id."""
    if local is None:
        from datasets import load_dataset

        yield from load_dataset(source.removeprefix("hub:"), split=split, revision=revision)
        return
    if not local.is_file():
        raise FileNotFoundError(f"{source}: no such file {local}")
    if local.suffix == ".jsonl":
        with local.open() as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{local}:{lineno}: not JSON ({e.msg})") from None
    elif local.suffix == ".json":
        rows = json.loads(local.read_text())
        yield from rows if isinstance(rows, list) else rows[split]
    elif local.suffix == ".parquet":
        from datasets import load_dataset

        yield from load_dataset("parquet", data_files=str(local), split="train")
    else:
        raise ValueError(f"{local}: unsupported file type {local.suffix!r} (jsonl, json, parquet)")


def normalise(rows: Iterable[Row], fmt: str, where: str) -> list[Row]:
    """Normalise rows of schema `fmt`, naming the file and row of any that do not fit."""
    fn = NORMALISERS[fmt]
    out = []
    for i, r in enumerate(rows):
        try:
            out.append(fn(r))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where} row {i}: does not fit the {fmt!r} schema ({e!r})") from None
    return out


def subsample(rows: list[Row], cap: int | None, seed: int) -> list[Row]:
    """At most `cap` rows, drawn without replacement with `seed`, in their original order."""
    if cap is None or len(rows) <= cap:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), cap))
    return [rows[i] for i in keep]


def prepare(
    source: str, local: Path | None, fmt: str, split: str, revision: str | None,
    cap: int | None, seed: int, out_dir: Path,
) -> dict[str, float]:
    """Read, normalise and subsample one source into `out_dir/data.jsonl`."""
    rows = normalise(read_source(source, local, split, revision), fmt, source)
    kept = subsample(rows, cap, seed)
    write_rows(out_dir, kept)
    return {"rows_read": float(len(rows)), "rows": float(len(kept))}


def write_rows(out_dir: Path, rows: list[Row]) -> None:
    with (out_dir / ROWS_FILE).open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_rows(data_dir: Path) -> list[Row]:
    with (data_dir / ROWS_FILE).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def mixture(data_dirs: list[Path], seed: int) -> list[Row]:
    """The rows of several prepared datasets, shuffled together with `seed`."""
    rows = [r for d in data_dirs for r in read_rows(d)]
    random.Random(seed).shuffle(rows)
    return rows
