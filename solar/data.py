"""Data sources: read each dataset in its own schema, normalise, subsample.

Every source becomes one of three row shapes, Zephyr-style, with chat messages so that the
chat template is applied once, by the trainer, from the template file:
- text:       {"text": str}
- sft:        {"prompt": [messages], "completion": [assistant message]}
- preference: {"prompt": [messages], "chosen": [assistant message], "rejected": [...]}
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from solar.spec import CUSTOM_COLUMNS, FORMATS

Row = dict[str, Any]
ROWS_FILE = "data.jsonl"
INFO_FILE = "dataset.json"
TASK_KEY = "task"  # a row's task name, kept for decontamination only


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def system(content: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": content}] if content.strip() else []


class RowError(ValueError):
    """A row that does not fit its schema, naming the column at fault."""

    def __init__(self, column: str, problem: str):
        super().__init__(f"column {column!r}: {problem}")
        self.column = column


def _field(r: Row, col: str) -> Any:
    if col not in r:
        raise RowError(col, "missing")
    return r[col]


def _str(r: Row, col: str, required: bool = True) -> str:
    """A string column; `required` ones must be present and not blank."""
    v = _field(r, col) if required else r.get(col)
    if v is None and not required:
        return ""
    if not isinstance(v, str):
        raise RowError(col, f"expected a string, got {type(v).__name__}")
    if required and not v.strip():
        raise RowError(col, "empty")
    return v


def _messages(r: Row, col: str) -> list[dict[str, str]]:
    v = _field(r, col)
    if not isinstance(v, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in v
    ):
        raise RowError(col, "expected a list of {role, content} messages")
    return v


def _alpaca(r: Row) -> Row:
    instruction, extra = _str(r, "instruction"), _str(r, "input", required=False)
    question = f"{instruction}\n\n{extra}" if extra else instruction
    return {"prompt": [user(question)], "completion": [assistant(_str(r, "output"))]}


def _openorca(r: Row) -> Row:
    return {
        "prompt": system(_str(r, "system_prompt", required=False)) + [user(_str(r, "question"))],
        "completion": [assistant(_str(r, "response"))],
    }


def _math(r: Row) -> Row:
    return {"prompt": [user(_str(r, "problem"))], "completion": [assistant(_str(r, "solution"))]}


def _metamathqa(r: Row) -> Row:
    return {"prompt": [user(_str(r, "query"))], "completion": [assistant(_str(r, "response"))]}


def _last_assistant(r: Row, col: str) -> dict[str, str]:
    for m in reversed(_messages(r, col)):
        if m["role"] == "assistant":
            return assistant(m["content"])
    raise RowError(col, "no assistant message")


def _ultrafeedback(r: Row) -> Row:
    return {
        "prompt": [user(_str(r, "prompt"))],
        "chosen": [_last_assistant(r, "chosen")],
        "rejected": [_last_assistant(r, "rejected")],
    }


def _orca_dpo(r: Row) -> Row:
    return {
        "prompt": system(_str(r, "system", required=False)) + [user(_str(r, "question"))],
        "chosen": [assistant(_str(r, "chosen"))],
        "rejected": [assistant(_str(r, "rejected"))],
    }


def _text(r: Row) -> Row:
    return {"text": _str(r, "text")}


NORMALISERS: dict[str, Callable[[Row], Row]] = {
    "text": _text,
    "alpaca": _alpaca,
    "openorca": _openorca,
    "math": _math,
    "metamathqa": _metamathqa,
    "ultrafeedback": _ultrafeedback,
    "orca-dpo": _orca_dpo,
}
assert NORMALISERS.keys() | CUSTOM_COLUMNS.keys() == FORMATS.keys()


def custom_normaliser(fmt: str, columns: dict[str, str]) -> Callable[[Row], Row]:
    """A normaliser for a user file whose spec maps roles (prompt, completion or chosen and
    rejected, optional system) to its column names."""

    def normalise_custom(r: Row) -> Row:
        sys_col = columns.get("system")
        prompt = system(_str(r, sys_col, required=False)) if sys_col else []
        out: Row = {"prompt": prompt + [user(_str(r, columns["prompt"]))]}
        for role in CUSTOM_COLUMNS[fmt][0][1:]:
            out[role] = [assistant(_str(r, columns[role]))]
        return out

    return normalise_custom


def normaliser(fmt: str, columns: dict[str, str] | None = None,
               task_column: str | None = None) -> Callable[[Row], Row]:
    """The row function of a format; with `task_column`, rows keep their task name as
    `task` (read by decontamination, dropped before training)."""
    fn = custom_normaliser(fmt, columns or {}) if fmt in CUSTOM_COLUMNS else NORMALISERS[fmt]
    if task_column is None:
        return fn

    def with_task(r: Row) -> Row:
        task = _field(r, task_column)
        if not isinstance(task, (str, int)):
            raise RowError(task_column, f"expected a task name, got {type(task).__name__}")
        return {**fn(r), TASK_KEY: str(task)}

    return with_task


def read_source(
    source: str, local: Path | None, split: str, revision: str | None,
    on_bad_line: Callable[[str], None] | None = None,
) -> Iterator[Row]:
    """Rows of a source: a local JSONL/JSON/Parquet file, or a hub dataset by id. A JSONL
    line that is not JSON is an error naming the file and line, or, given `on_bad_line`,
    reported to it and skipped."""
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
                        problem = f"{local}:{lineno}: not JSON ({e.msg})"
                        if on_bad_line is None:
                            raise ValueError(problem) from None
                        on_bad_line(problem)
    elif local.suffix == ".json":
        rows = json.loads(local.read_text())
        if isinstance(rows, dict):
            if split not in rows:
                raise ValueError(f"{local}: no split {split!r}; it has {sorted(rows)}")
            rows = rows[split]
        yield from rows
    elif local.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(local).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    else:
        raise ValueError(f"{local}: unsupported file type {local.suffix!r} (jsonl, json, parquet)")


def normalise_rows(
    rows: Iterable[Row], fn: Callable[[Row], Row], where: str,
    on_bad_row: Callable[[str], None] | None = None,
) -> Iterator[Row]:
    """Normalise rows with `fn`; a row that does not fit is an error naming `where`, the row
    (0-based) and the column, or, given `on_bad_row`, reported to it and dropped."""
    for i, r in enumerate(rows):
        try:
            if not isinstance(r, dict):
                raise RowError("*", f"expected an object, got {type(r).__name__}")
            yield fn(r)
        except RowError as e:
            problem = f"{where} row {i}: {e}"
            if on_bad_row is None:
                raise ValueError(problem) from None
            on_bad_row(problem)


def normalise(rows: Iterable[Row], fmt: str, where: str) -> list[Row]:
    """Normalise rows of schema `fmt`, naming the file, row and column of any that do not fit."""
    return list(normalise_rows(rows, normaliser(fmt), where))


def subsample(rows: list[Row], cap: int | None, seed: int) -> list[Row]:
    """At most `cap` rows, drawn without replacement with `seed`, in their original order."""
    if cap is None or len(rows) <= cap:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), cap))
    return [rows[i] for i in keep]


def prepare(
    source: str, local: Path | None, fmt: str, split: str, revision: str | None,
    cap: int | None, seed: int, out_dir: Path, columns: dict[str, str] | None = None,
    task_column: str | None = None, on_bad_row: str = "error",
) -> dict[str, float]:
    """Read, normalise and subsample one source into `out_dir/data.jsonl`, streaming: rows
    go to a scratch file, then the `cap` drawn (as `subsample` draws them) are copied."""
    bad: list[str] = []
    report = bad.append if on_bad_row == "skip" else None
    rows = normalise_rows(read_source(source, local, split, revision, report),
                          normaliser(fmt, columns, task_column), source, report)
    scratch = out_dir / f".{ROWS_FILE}.all"
    n = 0
    with scratch.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    if n == 0:
        raise ValueError(f"{source}: no rows left after reading and normalising "
                         f"({len(bad)} bad rows{': ' + bad[0] if bad else ''})")
    keep = None if cap is None or n <= cap else set(random.Random(seed).sample(range(n), cap))
    with scratch.open() as f:
        kept = write_lines(out_dir, (line for i, line in enumerate(f) if keep is None or i in keep))
    scratch.unlink()
    write_info(out_dir, source=source, format=fmt, rows=kept, rows_read=n + len(bad),
               rows_bad=len(bad), bad_examples=bad[:5])
    return {"rows_read": float(n + len(bad)), "rows": float(kept), "rows_bad": float(len(bad))}


def write_lines(out_dir: Path, lines: Iterable[str]) -> int:
    """Write JSONL lines to `out_dir/data.jsonl`; returns how many."""
    n = 0
    with (out_dir / ROWS_FILE).open("w") as f:
        for line in lines:
            f.write(line)
            n += 1
    return n


def content_digest(data_dir: Path) -> str:
    """sha256 of a prepared dataset's data.jsonl: its content's identity."""
    h = hashlib.sha256()
    with (data_dir / ROWS_FILE).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_info(out_dir: Path, **info: Any) -> dict[str, Any]:
    """`dataset.json` beside data.jsonl: rows, content hash and provenance, read by the
    consumers' lineage (`mlflow.log_input`)."""
    info = {**info, "digest": content_digest(out_dir)}
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))
    return info


def read_info(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((data_dir / INFO_FILE).read_text())
    except FileNotFoundError:
        return None


def write_rows(out_dir: Path, rows: list[Row]) -> None:
    with (out_dir / ROWS_FILE).open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_rows(data_dir: Path) -> list[Row]:
    with (data_dir / ROWS_FILE).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def mixture(data_dirs: list[Path], seed: int) -> list[Row]:
    """The rows of several prepared datasets, shuffled together with `seed` (without the
    task names that only decontamination reads)."""
    rows = [r for d in data_dirs for r in read_rows(d)]
    for r in rows:
        r.pop(TASK_KEY, None)
    random.Random(seed).shuffle(rows)
    return rows
