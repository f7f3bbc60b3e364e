"""The results table: models x the six H6 tasks and their mean, as the paper prints them."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from solar.artifacts import StageResult
from solar.spec import PipelineSpec

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
    table.add_column("Model", no_wrap=True)
    for _, name in COLUMNS:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(str(row["model"]), *(f"{row[k]:.2f}" if k in row else "-" for k, _ in COLUMNS))
    console = Console()
    console.width = max(console.width, 112)  # full names even when piped (rich assumes 80)
    console.print(table)


def _cells(row: dict[str, float | str]) -> list[str]:
    return [f"{row[k]:.2f}" if k in row else "-" for k, _ in COLUMNS]


def _md_table(header: list[str], lines: list[list[str]], numeric_from: int) -> str:
    align = ["---"] * numeric_from + ["---:"] * (len(header) - numeric_from)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def estimate_note(spec: PipelineSpec) -> str:
    if spec.eval is None or not spec.eval.is_estimate:
        return ""
    limits = {name: t.limit for name, t in spec.eval.tasks.items() if t.limit is not None}
    return (" -- ESTIMATE: screened on document subsets ("
            + ", ".join(f"{k} {v}" for k, v in limits.items()) + " docs), not leaderboard numbers")


def paper_tables(spec: PipelineSpec, rows: list[dict[str, float | str]]) -> str:
    """The report in the layout of the paper's Tables 3-5 (O/X marks which datasets a
    variant trained on) and its merge tables, in markdown."""
    scores = {str(r["model"]): r for r in rows}
    titles = [t for _, t in COLUMNS]
    parts = [f"# {spec.name}: H6 (%){estimate_note(spec)}\n", _md_table(["Model"] + titles, [
        [str(r["model"])] + _cells(r) for r in rows], 1)]

    def variant_table(title: str, variants: list, with_base: bool) -> None:
        evaluated = [v for v in variants if v.name in scores]
        if not evaluated:
            return
        datasets = list(dict.fromkeys(d for v in evaluated for d in v.datasets))
        header = ["Model"] + (["Base"] if with_base else []) + datasets + titles
        lines = [
            [v.name] + ([v.base] if with_base else [])
            + ["O" if d in v.datasets else "X" for d in datasets] + _cells(scores[v.name])
            for v in evaluated
        ]
        parts.append(f"\n## {title}\n\n" + _md_table(header, lines, len(header) - len(titles)))

    variant_table("SFT variants (as Table 3)", spec.sft, with_base=False)
    variant_table("DPO variants (as Tables 4-5)", spec.dpo, with_base=True)
    merges = [m for m in spec.merges if m.name in scores or m.candidates]
    if merges:
        lines = []
        for m in merges:
            variants = [m.candidate(i) for i in range(1, len(m.candidates) + 1)] if m.candidates else [m]
            scored = [v for v in variants if v.name in scores]
            by = [float(scores[v.name].get(m.select_by, -1)) for v in scored]
            winner = scored[by.index(max(by))].name if m.candidates and scored else None  # as selection.py
            for v in scored:
                how = v.method + (f" t={v.t}" if v.t is not None else "")
                weights = v.weights or [1.0] * len(v.models)
                inputs = " + ".join(f"{w:g}*{x}" for w, x in zip(weights, v.models, strict=True))
                mark = " (selected)" if v.name == winner else ""
                lines.append([v.name + mark, how, inputs] + _cells(scores[v.name]))
        parts.append("\n## Merges (as Tables 6-7)\n\n" + _md_table(["Model", "Method", "Inputs"] + titles, lines, 3))
    return "".join(parts)


def lineage(results: dict[str, StageResult], name: str) -> list[str]:
    """`name` and every stage it was built from, nearest first (from the manifests)."""
    from solar.artifacts import read_manifest

    order, queue = [], [name]
    while queue:
        current = queue.pop(0)
        if current in order or current not in results:
            continue
        order.append(current)
        manifest = read_manifest(Path(results[current].path)) or {}
        queue += list(manifest.get("inputs", {}))
    return order


def perplexity_table(results: list[StageResult]) -> str:
    """Held-out perplexity of every model, in DAG order: base, up-scaled, pretrained, ..."""
    if not results:
        return ""
    lines = [[r.name.removeprefix("ppl-"), f"{r.metrics['heldout_nll']:.4f}", f"{r.metrics['heldout_ppl']:.2f}"]
             for r in results]
    return "\n## Held-out perplexity (the DUS story: base, up-scaled, pretrained)\n\n" + _md_table(
        ["Model", "NLL", "Perplexity"], lines, 1)


def bar_chart(rows: list[dict[str, float | str]], path: Path, title: str) -> None:
    """Grouped bars: one group per task (and H6), one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, _ in COLUMNS]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(keys)), 4.5), dpi=110)
    for i, row in enumerate(rows):
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(keys))]
        ax.bar(xs, [float(row.get(k, 0.0)) for k in keys], width, label=str(row["model"]))
    ax.set_xticks(range(len(keys)), [t for _, t in COLUMNS])
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(5, len(rows)), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
