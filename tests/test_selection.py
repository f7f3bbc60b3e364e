import json

from solar.artifacts import StageResult, finish
from solar.selection import best_candidate, select


def built(path, name, metrics, files=None):
    path.mkdir()
    for rel, text in (files or {}).items():
        (path / rel).write_text(text)
    finish(path, StageResult(name, "x", "f" * 64, str(path), metrics))
    return path


def test_best_candidate_takes_the_first_maximum():
    assert best_candidate([{"h6": 0.3}, {"h6": 0.5}, {"h6": 0.5}], "h6") == 1
    assert best_candidate([{"h6": 0.3, "arc": 0.9}, {"h6": 0.5, "arc": 0.1}], "arc") == 0


def test_select_copies_the_winner_and_records_all_scores(tmp_path):
    cands = [built(tmp_path / f"c{i}", f"m.c{i}", {}, {"model.safetensors": f"weights {i}"}) for i in (1, 2, 3)]
    evals = [built(tmp_path / f"e{i}", f"eval-m.c{i}", {"h6": h}) for i, h in ((1, 0.31), (2, 0.42), (3, 0.40))]
    out = tmp_path / "out"
    out.mkdir()
    metrics = select(cands, evals, out, "h6")
    assert metrics == {"selected": 2.0, "selected_h6": 0.42}
    assert (out / "model.safetensors").read_text() == "weights 2"
    assert not (out / "manifest.json").exists()  # the stage writes its own
    record = json.loads((out / "selection.json").read_text())
    assert record["selected"] == "m.c2" and [c["h6"] for c in record["candidates"]] == [0.31, 0.42, 0.40]
