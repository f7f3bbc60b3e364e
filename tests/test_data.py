"""Sources: every normaliser on its shipped file, custom column mappings, and every bad input
either stopped with an error naming file, row and column, or dropped and counted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from solar.data import ROWS_FILE, prepare, read_info, read_rows, subsample
from solar.plan import embedded_path
from solar.spec import DatasetSpec

SHIPPED = {
    "alpaca": ("alpaca_gpt4", "sft"),
    "openorca": ("openorca", "sft"),
    "math": ("math", "sft"),
    "metamathqa": ("metamathqa", "sft"),
    "ultrafeedback": ("ultrafeedback_cleaned", "preference"),
    "orca-dpo": ("orca_dpo_pairs", "preference"),
}


def run_prepare(tmp_path: Path, source: Path | str, fmt: str, **kw) -> tuple[dict, list[dict]]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    local = source if isinstance(source, Path) else embedded_path(source.removeprefix("embedded:"))
    metrics = prepare(str(source), local, fmt, "train", None, kw.pop("cap", None), kw.pop("seed", 0),
                      out, **kw)
    return metrics, read_rows(out)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", sorted(SHIPPED))
def test_each_normaliser_reads_its_shipped_file(tmp_path, fmt):
    name, shape = SHIPPED[fmt]
    path = embedded_path(f"sources/{name}.jsonl")
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    metrics, rows = run_prepare(tmp_path, f"embedded:sources/{name}.jsonl", fmt)
    assert metrics == {"rows_read": len(raw), "rows": len(raw), "rows_bad": 0}
    keys = {"prompt", "completion"} if shape == "sft" else {"prompt", "chosen", "rejected"}
    for row in rows:
        assert set(row) == keys
        assert row["prompt"][-1]["role"] == "user" and row["prompt"][-1]["content"].strip()
        for key in keys - {"prompt"}:
            assert [m["role"] for m in row[key]] == ["assistant"] and row[key][0]["content"].strip()
    if fmt == "openorca":  # the system prompt becomes a system message
        assert rows[0]["prompt"][0] == {"role": "system", "content": raw[0]["system_prompt"]}
    if fmt == "alpaca":  # a non-empty input is appended to the instruction
        first = raw[0]
        assert rows[0]["prompt"][0]["content"] == f"{first['instruction']}\n\n{first['input']}"


def test_text_corpus_and_content_hash(tmp_path):
    metrics, rows = run_prepare(tmp_path, "embedded:corpus.jsonl", "text", cap=100, seed=3)
    assert metrics["rows"] == 100 and all(set(r) == {"text"} for r in rows)
    info = read_info(tmp_path / "out")
    assert info["digest"] == hashlib.sha256((tmp_path / "out" / ROWS_FILE).read_bytes()).hexdigest()
    assert info["rows"] == 100


def test_streaming_cap_draws_the_same_rows_as_subsample(tmp_path):
    _, everything = run_prepare(tmp_path, "embedded:sources/math.jsonl", "math")
    _, capped = run_prepare(tmp_path, "embedded:sources/math.jsonl", "math", cap=37, seed=5)
    assert capped == subsample(everything, 37, 5)


def test_custom_formats_map_columns_from_json_and_parquet(tmp_path):
    rows = [{"q": f"question {i}", "a": f"answer {i}", "sys": "be brief" if i % 2 else ""} for i in range(6)]
    src = tmp_path / "mine.json"
    src.write_text(json.dumps({"train": rows}))
    _, out = run_prepare(tmp_path, src, "custom-sft", columns={"prompt": "q", "completion": "a", "system": "sys"})
    assert out[1] == {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "question 1"}],
                      "completion": [{"role": "assistant", "content": "answer 1"}]}
    assert out[0]["prompt"] == [{"role": "user", "content": "question 0"}]

    import pyarrow as pa
    import pyarrow.parquet as pq

    prefs = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist([{"p": "x", "good": "y", "bad": "z"}] * 3), prefs)
    _, out = run_prepare(tmp_path, prefs, "custom-preference",
                         columns={"prompt": "p", "chosen": "good", "rejected": "bad"})
    assert out == [{"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "assistant", "content": "y"}],
                    "rejected": [{"role": "assistant", "content": "z"}]}] * 3


def test_custom_format_needs_its_columns_in_the_spec():
    with pytest.raises(ValidationError, match=r"datasets\[mine\].columns: custom-preference needs a column"):
        DatasetSpec(name="mine", format="custom-preference", source="x.jsonl", columns={"prompt": "p"})
    with pytest.raises(ValidationError, match=r"datasets\[a\].columns: only custom"):
        DatasetSpec(name="a", format="alpaca", source="x.jsonl", columns={"prompt": "p"})


GOOD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


@pytest.mark.parametrize(
    "bad_line,message",
    [
        ('{"instruction": "Name a colour.", "output": ', r"bad\.jsonl:2: not JSON"),
        ({"instruction": "Name a colour.", "input": ""}, r"bad\.jsonl row 1: column 'output': missing"),
        ({"instruction": "Name a colour.", "output": 7}, r"bad\.jsonl row 1: column 'output': expected a string, got int"),
        ({"instruction": ["Name"], "output": "Blue."}, r"row 1: column 'instruction': expected a string, got list"),
        ({"instruction": "  ", "output": "Blue."}, r"row 1: column 'instruction': empty"),
        ([1, 2], r"row 1: column '\*': expected an object, got list"),
    ],
)
def test_a_bad_row_is_an_error_naming_file_row_and_column_or_dropped_and_counted(tmp_path, bad_line, message):
    src = write_jsonl(tmp_path / "bad.jsonl", [GOOD, bad_line, GOOD])
    with pytest.raises(ValueError, match=message):
        run_prepare(tmp_path, src, "alpaca")
    metrics, rows = run_prepare(tmp_path, src, "alpaca", on_bad_row="skip")
    assert metrics == {"rows_read": 3, "rows": 2, "rows_bad": 1}
    assert len(rows) == 2
    info = read_info(tmp_path / "out")
    assert info["rows_bad"] == 1 and "bad.jsonl" in info["bad_examples"][0]


def test_preference_messages_of_the_wrong_shape_are_named(tmp_path):
    row = {"prompt": "q", "chosen": [{"role": "user", "content": "q"}], "rejected": "no"}
    src = write_jsonl(tmp_path / "uf.jsonl", [row])
    with pytest.raises(ValueError, match=r"uf\.jsonl row 0: column 'chosen': no assistant message"):
        run_prepare(tmp_path, src, "ultrafeedback")


def test_nothing_left_is_an_error_naming_the_file(tmp_path):
    src = write_jsonl(tmp_path / "empty.jsonl", [{"instruction": "x"}, "not json"])
    with pytest.raises(ValueError, match=r"empty\.jsonl: no rows left .*2 bad rows"):
        run_prepare(tmp_path, src, "alpaca", on_bad_row="skip")


def test_a_task_column_is_kept_for_decontamination_and_must_exist(tmp_path):
    rows = [{"id": "flan.1", "task": "cot_gsm8k", "system_prompt": "", "question": "q", "response": "r"}]
    src = write_jsonl(tmp_path / "orca.jsonl", rows)
    _, out = run_prepare(tmp_path, src, "openorca", task_column="task")
    assert out[0]["task"] == "cot_gsm8k"
    with pytest.raises(ValueError, match=r"orca\.jsonl row 0: column 'flan_task': missing"):
        run_prepare(tmp_path, src, "openorca", task_column="flan_task")
