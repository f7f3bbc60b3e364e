"""Decontamination: planted copies of eval questions and rows of Table 8 FLAN tasks are
removed, clean rows kept, and the report (per benchmark and task, with examples) reaches
the stage's MLflow run; the stage sits between a dataset and its trainers in the DAG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from solar.data import read_rows
from solar.decontam import REPORT_FILE, load_eval_index, words
from solar.plan import embedded_path, plan
from solar.spec import TABLE8_TASKS, PipelineSpec
from solar.stages import run_stage
from solar.tracking import start_pipeline


def eval_questions(benchmark: str, split: str, field: str, k: int) -> list[str]:
    path = embedded_path(f"eval/{benchmark}/{split}.jsonl")
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    return [d[field] for d in docs if len(words(d[field])) >= 10][:k]


@pytest.fixture
def planted(tmp_path) -> tuple[Path, dict[str, int]]:
    """A custom SFT file: clean rows, copies of eval questions inside longer prompts, and
    rows whose task is a Table 8 FLAN task."""
    rows, planted = [], {"clean": 0, "task": 0}
    for i in range(40):
        rows.append({"q": f"Write sentence number {i} about the weather in town {i}.",
                     "a": f"It rained in town {i}.", "task": "flan_v2/some_clean_task"})
        planted["clean"] += 1
    for benchmark, split, field in (("arc_challenge", "test", "question"), ("gsm8k", "test", "question"),
                                    ("winogrande", "validation", "sentence"), ("hellaswag", "validation", "ctx")):
        for q in eval_questions(benchmark, split, field, 3):
            rows.append({"q": f"Answer this, please.\n{q}\nThink step by step.", "a": "Done.", "task": "niv2"})
            planted[benchmark] = planted.get(benchmark, 0) + 1
    for task in TABLE8_TASKS:
        rows.append({"q": f"An innocent looking question for {task}?", "a": "Yes.", "task": task})
        planted["task"] += 1
    path = tmp_path / "planted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, planted


def spec_for(tmp_path: Path, source: Path, **decontam) -> PipelineSpec:
    return PipelineSpec.model_validate(yaml.safe_load(f"""
name: decontam-test
upscale: null
datasets:
  - name: mine
    format: custom-sft
    source: {source}
    columns: {{prompt: q, completion: a}}
    task_column: task
sft:
  - {{name: sft, base: base, datasets: [mine]}}
eval: null
decontamination: {json.dumps({"ngram": 13, "threshold": 0.5, **decontam})}
execution: {{artifacts_dir: {tmp_path / 'artifacts'}}}
"""))


def test_the_decontam_stage_sits_between_a_dataset_and_its_trainer(tmp_path, planted):
    stages = {s.name: s for s in plan(spec_for(tmp_path, planted[0]))}
    assert stages["decontam-mine"].kind == "decontam"
    assert stages["decontam-mine"].inputs == ("mine",)
    assert stages["sft"].inputs == ("base", "decontam-mine")  # named `mine` in the spec
    changed = {s.name: s.fingerprint for s in plan(spec_for(tmp_path, planted[0], ngram=8))}
    assert changed["mine"] == stages["mine"].fingerprint
    assert changed["decontam-mine"] != stages["decontam-mine"].fingerprint
    assert changed["sft"] != stages["sft"].fingerprint


def test_planted_overlaps_and_table8_tasks_are_removed_and_reported(tmp_path, planted):
    source, counts = planted
    spec = spec_for(tmp_path, source)
    stages = {s.name: s for s in plan(spec)}
    root = tmp_path / "artifacts"
    ctx = start_pipeline(f"sqlite:///{tmp_path / 'mlflow.db'}", "decontam-test", "run", {}, "")
    data = run_stage(stages["mine"], {}, root, ctx)
    result = run_stage(stages["decontam-mine"], {"mine": data}, root, ctx)

    rows = read_rows(Path(result.path))
    assert len(rows) == counts["clean"]
    assert all(r["prompt"][0]["content"].startswith("Write sentence number") for r in rows)
    assert all("task" not in r for r in rows)  # task names never reach the trainer
    report = json.loads((Path(result.path) / REPORT_FILE).read_text())
    assert report["by_task"] == {t: 1 for t in TABLE8_TASKS}
    assert report["by_benchmark"] == {b: n for b, n in counts.items() if b not in ("clean", "task")}
    assert result.metrics["removed_task"] == len(TABLE8_TASKS)
    assert result.metrics["removed.gsm8k"] == counts["gsm8k"]
    example = report["examples"]["ngram:arc_challenge"][0]
    assert example["eval"] in example["text"]

    client = MlflowClient(ctx.uri)
    files = {f.path for f in client.list_artifacts(result.run_id, "decontam")}
    assert files == {"decontam/report.json", "decontam/report.md", "decontam/removed.json"}
    table = json.loads(Path(client.download_artifacts(result.run_id, "decontam/removed.json", str(tmp_path))).read_text())
    assert len(table["data"]) == len(TABLE8_TASKS) + 4


def test_the_eval_index_is_small_and_matches_only_real_overlap():
    index = load_eval_index(embedded_path("eval"), 13, 8)
    q = eval_questions("gsm8k", "test", "question", 1)[0]
    assert index.match(f"Some preamble. {q} And more.", 0.5) is not None
    half = " ".join(words(q)[: len(words(q)) // 3])
    assert index.match(half, 0.5) is None  # a third of a question is not a copy
    assert index.match("The weather is fine today and the sun is shining on the hills.", 0.5) is None


def test_removing_every_row_is_an_error_naming_the_file(tmp_path):
    source = tmp_path / "all-bad.jsonl"
    source.write_text(json.dumps({"q": "x?", "a": "y", "task": "cot_gsm8k"}) + "\n")
    stages = {s.name: s for s in plan(spec_for(tmp_path, source))}
    data = run_stage(stages["mine"], {}, tmp_path / "artifacts")
    with pytest.raises(ValueError, match=r"data\.jsonl: decontamination removed all 1 rows"):
        run_stage(stages["decontam-mine"], {"mine": data}, tmp_path / "artifacts")


def test_a_decontam_list_must_name_datasets():
    with pytest.raises(ValueError, match=r"decontamination.datasets\[0\]: 'sft' names no dataset"):
        PipelineSpec.model_validate({
            "name": "x", "upscale": None, "eval": None,
            "datasets": [{"name": "a", "format": "alpaca", "source": "a.jsonl"}],
            "sft": [{"name": "sft", "base": "base", "datasets": ["a"]}],
            "decontamination": {"datasets": ["sft"]},
        })
