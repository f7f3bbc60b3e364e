"""The results table: models x the six H6 tasks and their mean, as the paper prints them."""

from __future__ import annotations

import csv
import io

from solar.artifacts import StageResult

COLUMNS = (
    ("arc", "ARC"),
    ("hellaswag", "HellaSwag"),
    ("mmlu", "MMLU"),
    ("truthfulqa", "TruthfulQA"),
    ("winogrande", "Winogrande"),
    ("gsm8k", "GSM8K"),
    ("h6", "H6"),
)


def score_rows(evals: list[StageResult]) -> list[dict[str, float | str]]:
    """One row per evaluated model, scores in percent (as in the paper's tables)."""
    rows = []
    for r in evals:
        row: dict[str, float | str] = {"model": r.name.removeprefix("eval-")}
        for key, _ in COLUMNS:
            if key in r.metrics:
                row[key] = round(100 * r.metrics[key], 2)
        rows.append(row)
    return rows


def to_markdown(rows: list[dict[str, float | str]]) -> str:
    header = "| Model | " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    lines = [header, rule]
    for row in rows:
        cells = [f"{row[k]:.2f}" if k in row else "-" for k, _ in COLUMNS]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, float | str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["model"] + [k for k, _ in COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def print_table(rows: list[dict[str, float | str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("Model")
    for _, name in COLUMNS:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(str(row["model"]), *(f"{row[k]:.2f}" if k in row else "-" for k, _ in COLUMNS))
    Console().print(table)
