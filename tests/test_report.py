from solar.artifacts import StageResult
from solar.report import bar_chart, paper_tables, score_rows, to_csv
from solar.spec import load_spec

TASKS = ("arc", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k")


def fake_evals(models):
    out = []
    for i, m in enumerate(models):
        scores = {t: (i + j) / 20 for j, t in enumerate(TASKS)}
        scores["h6"] = sum(scores.values()) / 6
        out.append(StageResult(f"eval-{m}", "eval", "f" * 64, "/x", scores))
    return out


def test_paper_ablation_report_has_the_papers_rows_and_columns(tmp_path):
    spec = load_spec(preset="paper-ablation")
    rows = score_rows(fake_evals(spec.eval.models))
    assert [r["model"] for r in rows] == spec.eval.models
    assert rows[1]["arc"] == 5.0 and rows[1]["h6"] == round(100 * (1 + 2 + 3 + 4 + 5 + 6) / 120, 2)
    md = paper_tables(spec, rows)
    lines = md.splitlines()
    # Table 3: which datasets each SFT variant used.
    header = next(line for line in lines if line.startswith("| Model | alpaca-gpt4"))
    assert header.split(" | ")[1:4] == ["alpaca-gpt4", "openorca", "math-instruct"]
    assert "| sft-v1 | O | X | X |" in md
    assert "| sft-v2 | O | O | X |" in md
    assert "| sft-v3 | O | O | O |" in md
    assert "| sft-v4 | O | X | O |" in md
    # Tables 4-5: DPO variants with their base and data.
    assert "| dpo-v1 | sft-v3 | O | X |" in md
    assert "| dpo-v2 | sft-v3 | O | O |" in md
    assert "| dpo-v3 | sft-v3+v4 | O | O |" in md
    assert "| sft-v3+v4 | linear | 0.5*sft-v3 + 0.5*sft-v4 |" in md
    csv = to_csv(rows).splitlines()
    assert csv[0] == "model,arc,hellaswag,mmlu,truthfulqa,winogrande,gsm8k,h6"
    assert len(csv) == 1 + len(spec.eval.models)
    bar_chart(rows, tmp_path / "h6.png", "test")
    assert (tmp_path / "h6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_subset_scores_are_marked_as_estimates():
    spec = load_spec(preset="paper-ablation")
    assert spec.eval.is_estimate
    md = paper_tables(spec, score_rows(fake_evals(["sft-v1"])))
    assert md.splitlines()[0].startswith("# paper-ablation: H6 (%) -- ESTIMATE: screened on document subsets")
    full = load_spec(preset="solar-10.7b")
    assert not full.eval.is_estimate
    assert "ESTIMATE" not in paper_tables(full, [])
