"""Decontamination of training data against the H6 eval sets (SOLAR sec. 4.1, Table 8).

Two filters, applied to one prepared dataset at a time, streaming its rows:
- the task-name filter: rows whose task (the dataset's `task_column`, kept by `prepare` as
  `task`) is one of the FLAN tasks of Table 8;
- the n-gram filter: rows that contain at least `threshold` of the word n-grams of some
  eval question. The eval side is small and indexed in memory (n-gram -> questions); the
  training side is never held: each row's n-grams are looked up and forgotten.

The report counts rows removed per filter, per benchmark and per task, with examples.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solar.data import ROWS_FILE, TASK_KEY, Row, write_info

REPORT_FILE = "report.json"
WORD = re.compile(r"\w+")

# What of each eval document the model is asked: the text whose copies contaminate.
EVAL_FIELDS: dict[str, tuple[str, ...]] = {
    "arc_challenge": ("question",),
    "hellaswag": ("ctx",),
    "mmlu": ("question",),
    "truthfulqa_mc": ("question",),
    "winogrande": ("sentence",),
    "gsm8k": ("question",),
}


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    for i in range(len(tokens) - n + 1):
        yield tuple(tokens[i : i + n])


@dataclass
class EvalIndex:
    """The eval questions' n-grams: n-gram -> ids of the questions that contain it."""

    n: int
    grams: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    docs: list[tuple[str, str, int]] = field(default_factory=list)  # (benchmark, text, #grams)
    lengths: set[int] = field(default_factory=set)  # n-gram sizes present (short questions)
    _k: int = field(default=0, init=False, repr=False)
    _by_prefix: dict[tuple[str, ...], list[tuple[tuple[str, ...], list[int]]]] | None = field(
        default=None, init=False, repr=False)

    def add(self, benchmark: str, text: str, min_tokens: int) -> None:
        tokens = words(text)
        if len(tokens) < min_tokens:
            return
        size = min(self.n, len(tokens))
        grams = set(ngrams(tokens, size))
        doc = len(self.docs)
        self.docs.append((benchmark, text, len(grams)))
        self.lengths.add(size)
        for g in grams:
            self.grams.setdefault(g, []).append(doc)
        self._by_prefix = None

    def match(self, text: str, threshold: float) -> int | None:
        """The eval question `text` overlaps most, if at least `threshold` of its n-grams
        occur in `text`; else None. One dictionary probe per position of `text`: n-grams
        are found by their first k words (k the shortest n-gram size), then checked whole."""
        if self._by_prefix is None:
            self._build_prefix()
        k, by_prefix = self._k, self._by_prefix
        tokens = words(text)
        found: dict[int, set[tuple[str, ...]]] = {}
        for i in range(len(tokens) - k + 1):
            candidates = by_prefix.get(tuple(tokens[i : i + k]))
            if candidates is None:
                continue
            for gram, docs in candidates:
                if len(gram) == k or tuple(tokens[i : i + len(gram)]) == gram:
                    for doc in docs:
                        found.setdefault(doc, set()).add(gram)
        best, best_frac = None, 0.0
        for doc, grams in found.items():
            frac = len(grams) / self.docs[doc][2]
            if frac >= threshold and frac > best_frac:
                best, best_frac = doc, frac
        return best

    def _build_prefix(self) -> None:
        self._k = min(self.lengths)
        self._by_prefix = {}
        for gram, docs in self.grams.items():
            self._by_prefix.setdefault(gram[: self._k], []).append((gram, docs))


def load_eval_index(root: Path, n: int, min_tokens: int) -> EvalIndex:
    """Index every eval file under `root` (one directory per benchmark, JSONL splits)."""
    if not root.is_dir():
        raise FileNotFoundError(f"decontamination.eval_data: no such directory {root}")
    index = EvalIndex(n)
    for path in sorted(root.rglob("*.jsonl")):
        benchmark = path.relative_to(root).parts[0]
        cols = EVAL_FIELDS.get(benchmark)
        with path.open() as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                doc = json.loads(line)
                for col in cols or [k for k, v in doc.items() if isinstance(v, str)]:
                    if not isinstance(doc.get(col), str):
                        raise ValueError(f"{path}:{lineno}: column {col!r}: expected a string")
                    index.add(benchmark, doc[col], min_tokens)
    if not index.docs:
        raise ValueError(f"{root}: no eval question of at least {min_tokens} words to index")
    return index


def row_text(r: Row) -> str:
    """All the text of a prepared row: the corpus text, or every message."""
    if "text" in r:
        return r["text"]
    return "\n".join(m["content"] for key in ("prompt", "completion", "chosen", "rejected")
                     for m in r.get(key, ()))


def decontaminate(
    data_dir: Path, out_dir: Path, index: EvalIndex, threshold: float, flan_tasks: list[str],
    n_examples: int = 3, name: str = "",
) -> tuple[dict[str, float], dict[str, Any]]:
    """Copy `data_dir`'s rows to `out_dir` without the contaminated ones. Returns the
    metrics and the report (also written to `out_dir/report.json`)."""
    tasks = set(flan_tasks)
    by_task: Counter[str] = Counter()
    by_benchmark: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    rows_in = kept = 0
    with (data_dir / ROWS_FILE).open() as src, (out_dir / ROWS_FILE).open("w") as dst:
        for i, line in enumerate(src):
            if not line.strip():
                continue
            rows_in += 1
            r = json.loads(line)
            task = r.pop(TASK_KEY, None)
            text = row_text(r)
            if task is not None and task in tasks:
                by_task[task] += 1
                key, match = f"task:{task}", None
            else:
                doc = index.match(text, threshold)
                if doc is None:
                    dst.write(line.rstrip("\n") + "\n" if task is None else json.dumps(r, ensure_ascii=False) + "\n")
                    kept += 1
                    continue
                benchmark, match, _ = index.docs[doc]
                by_benchmark[benchmark] += 1
                key = f"ngram:{benchmark}"
            if len(examples[key]) < n_examples:
                examples[key].append({"row": i, "text": text[:300], "eval": match})
    if rows_in and not kept:
        raise ValueError(f"{data_dir / ROWS_FILE}: decontamination removed all {rows_in} rows")
    report = {
        "dataset": name,
        "rows_in": rows_in,
        "rows_kept": kept,
        "removed_task": sum(by_task.values()),
        "removed_ngram": sum(by_benchmark.values()),
        "by_task": dict(sorted(by_task.items())),
        "by_benchmark": dict(sorted(by_benchmark.items())),
        "examples": dict(sorted(examples.items())),
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    write_info(out_dir, source=name, decontaminated=True, rows=kept)
    metrics = {"rows_in": float(rows_in), "rows": float(kept),
               "removed_task": float(report["removed_task"]),
               "removed_ngram": float(report["removed_ngram"])}
    metrics.update({f"removed.{b}": float(c) for b, c in by_benchmark.items()})
    return metrics, report


def report_table(report: dict[str, Any]) -> dict[str, list]:
    """The report as columns (MLflow `log_table`): one row per filter hit and benchmark/task."""
    cols: dict[str, list] = {"dataset": [], "filter": [], "match": [], "rows_removed": [], "example": []}
    for kind, counts in (("task", report["by_task"]), ("ngram", report["by_benchmark"])):
        for what, count in counts.items():
            ex = report["examples"].get(f"{kind}:{what}", [])
            cols["dataset"].append(report["dataset"])
            cols["filter"].append(kind)
            cols["match"].append(what)
            cols["rows_removed"].append(count)
            cols["example"].append(ex[0]["text"][:200] if ex else "")
    return cols


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Decontamination of {report['dataset']}",
        "",
        f"{report['rows_in']} rows in, {report['rows_kept']} kept; removed "
        f"{report['removed_task']} by task name, {report['removed_ngram']} by n-gram overlap.",
        "",
        "| filter | match | rows removed | example row | eval question |",
        "|---|---|---:|---|---|",
    ]
    for kind, counts in (("task", report["by_task"]), ("ngram", report["by_benchmark"])):
        for what, count in counts.items():
            ex = (report["examples"].get(f"{kind}:{what}") or [{}])[0]
            cell = (ex.get("text") or "").replace("|", "\\|").replace("\n", " ")[:120]
            ev = (ex.get("eval") or "").replace("|", "\\|").replace("\n", " ")[:120]
            lines.append(f"| {kind} | {what} | {count} | {cell} | {ev} |")
    return "\n".join(lines) + "\n"
