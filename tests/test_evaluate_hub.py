"""`eval.data: hub`: the harness's own registered leaderboard tasks, tested offline.

The registered tasks (arc_challenge, hellaswag, the mmlu group, truthfulqa_mc2, winogrande,
gsm8k) run on the tiny model over the embedded eval files, which are in the hub schemas,
through `dataset_overrides`. Every dataset load is watched: any load that is not of local
JSON files, and any socket connect, fails the test. Compared with the offline templates on
the same documents: ARC, HellaSwag, TruthfulQA, Winogrande and GSM8K prompts are
identical, so per-sample log-likelihoods and scores must agree. MMLU differs in the
few-shot examples only (registered: the first 5 dev rows of the doc's own subject; offline:
the first 5 of the whole dev file), so its prompts are checked against that rule, its score
is recomputed from the logged log-likelihoods, and at 0 shots both modes must agree.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from solar.evaluate import TaskSettings, evaluate_h6, load_registered_tasks, registered_tasks_root
from solar.plan import embedded_path, eval_params, fingerprint
from solar.spec import EvalSpec, PipelineSpec

#: The Open LLM Leaderboard (v1) settings, written down here independently of solar.evaluate.
LEADERBOARD_SHOTS = {
    "arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0, "winogrande": 5, "gsm8k": 5,
}
#: The registered configs and the hub datasets they name.
REGISTERED = {
    "arc": ("arc_challenge", "arc/arc_challenge.yaml", "allenai/ai2_arc", "ARC-Challenge"),
    "hellaswag": ("hellaswag", "hellaswag/hellaswag.yaml", "Rowan/hellaswag", None),
    "truthfulqa": ("truthfulqa_mc2", "truthfulqa/truthfulqa_mc2.yaml", "truthfulqa/truthful_qa", "multiple_choice"),
    "winogrande": ("winogrande", "winogrande/default.yaml", "allenai/winogrande", "winogrande_xl"),
    "gsm8k": ("gsm8k", "gsm8k/gsm8k.yaml", "openai/gsm8k", "main"),
}
LIMIT = 6  # docs per task (MMLU: all 60, so both modes score the same documents)
SETTINGS = {name: TaskSettings(limit=LIMIT) for name in ("arc", "hellaswag", "truthfulqa", "winogrande", "gsm8k")}
SETTINGS["mmlu"] = TaskSettings()


def read_yaml(relative: str, resolve_func: bool = False) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(registered_tasks_root() / relative, resolve_func=resolve_func)


@pytest.fixture(scope="module")
def guard() -> Iterator[list[tuple[str, str | None]]]:
    """Record every datasets.load_dataset call; refuse any that is not local JSON files
    (such a load would go to the hub) and any socket connect."""
    import datasets

    calls: list[tuple[str, str | None]] = []
    real = datasets.load_dataset

    def load_dataset(path: str, name: str | None = None, **kwargs: Any) -> Any:
        calls.append((path, name))
        if path != "json":
            raise ConnectionError(f"test guard: load_dataset({path!r}, {name!r}) would reach the hub")
        return real(path, name, **kwargs)

    def connect(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError(f"test guard: socket connect {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets, "load_dataset", load_dataset)
        mp.setattr(socket.socket, "connect", connect)
        yield calls
    assert os.environ["HF_DATASETS_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.fixture(scope="module")
def hub_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded eval files, with MMLU's dev split grown to the five rows per subject
    that cais/mmlu has (the embedded file has 1-5), the embedded rows first."""
    root = tmp_path_factory.mktemp("hub_data")
    shutil.copytree(embedded_path("eval"), root, dirs_exist_ok=True)
    dev = [json.loads(line) for line in (root / "mmlu/dev.jsonl").read_text().splitlines()]
    for subject in sorted({row["subject"] for row in dev}):
        for i in range(5 - sum(row["subject"] == subject for row in dev)):
            dev.append({"question": f"Extra {subject} question {i}?", "subject": subject,
                        "choices": [f"w{i}", f"x{i}", f"y{i}", f"z{i}"], "answer": i % 4})
    (root / "mmlu/dev.jsonl").write_text("".join(json.dumps(row) + "\n" for row in dev))
    return root


@pytest.fixture(scope="module")
def runs(tiny_base: Path, hub_data: Path, guard, tmp_path_factory: pytest.TempPathFactory):
    """The same model, documents and shots in both modes, with per-sample logs."""
    out = tmp_path_factory.mktemp("h6_hub")
    kwargs = {"tasks": SETTINGS, "max_gen_toks": 16, "log_samples": True}
    local = evaluate_h6(tiny_base, hub_data, out / "local", **kwargs)
    hub = evaluate_h6(tiny_base, hub_data, out / "hub", hub=True, **kwargs)
    return local, hub, out


def samples(out: Path, task: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / f"samples_{task}.jsonl").read_text().splitlines()]


def test_registered_tasks_versions_and_leaderboard_shots(runs, guard) -> None:
    _, _, out = runs
    harness = json.loads((out / "hub/lm_eval_results.json").read_text())
    subjects = sorted(t for t in harness["configs"] if t.startswith("mmlu_"))
    assert subjects == ["mmlu_astronomy", "mmlu_elementary_mathematics",
                        "mmlu_high_school_biology", "mmlu_high_school_geography"]
    for task, config, _, _ in REGISTERED.values():
        registered = read_yaml(config, resolve_func=True)
        version = registered.get("metadata", {}).get("version")
        assert harness["versions"][task] == version, task
        assert harness["solar"][task]["config"] == config and harness["solar"][task]["version"] == version
        got = harness["configs"][task]
        assert got["dataset_path"] == "json"  # the override, the one change
        assert got["metric_list"] == registered["metric_list"], task
        text = registered["doc_to_text"]  # a template, or a function (logged as its source)
        assert got["doc_to_text"] == (inspect.getsource(text) if callable(text) else text), task
    mmlu_template = read_yaml("mmlu/default/_default_template_yaml")
    for task in subjects:
        subject = read_yaml(f"mmlu/default/{task}.yaml")
        assert harness["configs"][task]["description"] == subject["description"]
        assert harness["configs"][task]["doc_to_text"] == mmlu_template["doc_to_text"]
        assert harness["versions"][task] == mmlu_template["metadata"]["version"]
    assert harness["versions"]["mmlu"] == str(read_yaml("mmlu/default/_mmlu.yaml")["metadata"]["version"])

    expected = {t: n for t, n in LEADERBOARD_SHOTS.items() if t != "mmlu"}
    expected |= {t: LEADERBOARD_SHOTS["mmlu"] for t in ["mmlu", *subjects]}
    assert harness["n-shot"] == expected
    assert harness["n-samples"]["arc_challenge"]["effective"] == LIMIT
    assert sum(harness["n-samples"][t]["effective"] for t in subjects) == 60
    assert guard and {path for path, _ in guard} == {"json"}


def test_same_report_rows_and_scores_where_prompts_are_identical(runs) -> None:
    local, hub, out = runs
    assert list(hub) == list(local) == ["arc", "hellaswag", "mmlu", "truthfulqa", "winogrande",
                                        "gsm8k", "gsm8k_flexible", "h6"]
    pairs = {"arc": "arc_challenge", "hellaswag": "hellaswag", "truthfulqa": "truthfulqa_mc2",
             "winogrande": "winogrande", "gsm8k": "gsm8k"}
    for short, task in pairs.items():
        a, b = samples(out / "local", f"h6_{short}"), samples(out / "hub", task)
        assert len(a) == len(b) == LIMIT * (2 if short == "gsm8k" else 1), short  # gsm8k: 2 filters
        for x, y in zip(a, b, strict=True):
            assert x["doc"] == y["doc"] and x["arguments"] == y["arguments"], short
            if short != "gsm8k":
                assert np.allclose([r[0] for r in x["filtered_resps"]], [r[0] for r in y["filtered_resps"]],
                                   atol=1e-5), short
            else:
                assert x["filtered_resps"] == y["filtered_resps"]
        assert hub[short] == pytest.approx(local[short], abs=1e-9), short
    assert hub["gsm8k_flexible"] == local["gsm8k_flexible"]
    assert local["gsm8k_flexible"] > 0 or local["winogrande"] > 0  # not a comparison of zeros
    primary = ["arc", "hellaswag", "mmlu", "truthfulqa", "winogrande", "gsm8k"]
    assert hub["h6"] == pytest.approx(np.mean([hub[k] for k in primary]))


def test_mmlu_registered_subjects_fewshot_and_group_score(runs, hub_data: Path) -> None:
    local, hub, out = runs
    dev = [json.loads(line) for line in (hub_data / "mmlu/dev.jsonl").read_text().splitlines()]
    local_rows = {r["doc"]["question"]: r for r in samples(out / "local", "h6_mmlu")}
    hits, seen = [], set()
    for path in sorted((out / "hub").glob("samples_mmlu_*.jsonl")):
        for row in samples(out / "hub", path.stem.removeprefix("samples_")):
            doc = row["doc"]
            shots = [d for d in dev if d["subject"] == doc["subject"]][:5]
            lines = [f"{d['question'].strip()}\n" + "\n".join(f"{k}. {c}" for k, c in zip("ABCD", d["choices"], strict=True))
                     + f"\nAnswer: {'ABCD'[d['answer']]}" for d in shots]
            question = local_rows[doc["question"]]["arguments"][0][0].split("\n\n")[-1]
            intro = f"The following are multiple choice questions (with answers) about {doc['subject'].replace('_', ' ')}.\n\n"
            assert row["arguments"][0][0] == intro + "\n\n".join(lines) + "\n\n" + question
            lls = [r[0] for r in row["filtered_resps"]]
            hits.append(float(np.argmax(lls) == doc["answer"]))
            seen.add(doc["question"])
    assert seen == set(local_rows) and len(hits) == 60
    assert hub["mmlu"] == pytest.approx(np.mean(hits))  # the group's acc, weighted by size


def test_mmlu_zero_shot_matches_offline(tiny_base: Path, hub_data: Path, guard, tmp_path: Path) -> None:
    tasks = {"mmlu": TaskSettings(num_fewshot=0)}
    local = evaluate_h6(tiny_base, hub_data, tmp_path / "local", tasks=tasks, log_samples=True)
    hub = evaluate_h6(tiny_base, hub_data, tmp_path / "hub", tasks=tasks, log_samples=True, hub=True)
    local_lls = {r["doc"]["question"]: [x[0] for x in r["filtered_resps"]]
                 for r in samples(tmp_path / "local", "h6_mmlu")}
    hub_lls = {r["doc"]["question"]: [x[0] for x in r["filtered_resps"]]
               for path in (tmp_path / "hub").glob("samples_mmlu_*.jsonl")
               for r in samples(tmp_path / "hub", path.stem.removeprefix("samples_"))}
    assert local_lls.keys() == hub_lls.keys() and len(hub_lls) == 60
    for question, lls in local_lls.items():
        assert np.allclose(lls, hub_lls[question], atol=1e-5), question
    assert hub["mmlu"] == pytest.approx(local["mmlu"], abs=1e-12)


@pytest.mark.parametrize("short", [*REGISTERED, "mmlu"])
def test_without_overrides_the_real_hub_datasets_are_asked_for(short: str, guard, tmp_path: Path) -> None:
    before = len(guard)
    with pytest.raises(RuntimeError, match="loading its dataset failed"):
        load_registered_tasks(tmp_path, {short: TaskSettings()}, None)
    path, name = guard[before]
    if short == "mmlu":
        assert path == "cais/mmlu" and name == "abstract_algebra"  # the group's first subtask
    else:
        assert (path, name) == REGISTERED[short][2:]


def test_override_errors_name_the_users_file(tmp_path: Path) -> None:
    embedded = embedded_path("eval")
    with pytest.raises(ValueError, match=r"mmlu_astronomy: 5-shot needs 5 rows, .*/eval/mmlu/dev\.jsonl "
                                         r"\(subject 'astronomy'\) has 1"):
        load_registered_tasks(tmp_path / "w1", {"mmlu": TaskSettings()}, embedded)
    shutil.copytree(embedded / "arc_challenge", tmp_path / "data/arc_challenge")
    (tmp_path / "data/arc_challenge/train.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"arc_challenge: needs split 'train': .*/data/arc_challenge/train"):
        load_registered_tasks(tmp_path / "w2", {"arc": TaskSettings(num_fewshot=0)}, tmp_path / "data")


def test_overrides_need_hub_and_fingerprint_has_registered_versions(hub_data: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="eval.dataset_overrides: only with eval.data: hub"):
        EvalSpec(dataset_overrides=str(hub_data))
    spec = PipelineSpec(name="t", upscale=None, eval={"data": "hub", "dataset_overrides": str(hub_data)})
    p = eval_params(spec)
    n_subjects = len(list((registered_tasks_root() / "mmlu/default").glob("mmlu_*.yaml")))
    assert p["registered_tasks"]["arc_challenge"] == read_yaml("arc/arc_easy.yaml")["metadata"]["version"]
    assert p["registered_tasks"]["truthfulqa_mc2"] == 3.0
    assert p["registered_tasks"]["mmlu"] == {"version": 2, "tasks": n_subjects, "task_versions": ["1.0"]}
    assert n_subjects == 57 and "harness" in p and "data_digest" in p
    assert "registered_tasks" not in eval_params(PipelineSpec(name="t", upscale=None))

    other = tmp_path / "other"
    shutil.copytree(hub_data, other)
    (other / "gsm8k/test.jsonl").write_text((other / "gsm8k/test.jsonl").read_text().splitlines()[0] + "\n")
    changed = eval_params(PipelineSpec(name="t", upscale=None, eval={"data": "hub", "dataset_overrides": str(other)}))
    assert changed["data_digest"] != p["data_digest"]

    import solar.evaluate

    bumped = {**p["registered_tasks"], "gsm8k": 4.0}  # a harness upgrade that changes gsm8k
    monkeypatch.setattr(solar.evaluate, "registered_task_versions", lambda: bumped)
    assert fingerprint("eval", eval_params(spec), ["m"]) != fingerprint("eval", p, ["m"])


def test_eval_stage_routes_hub_mode(tiny_base: Path, hub_data: Path, guard, tmp_path: Path) -> None:
    from solar.stages import build_eval

    class Run:
        def log_text(self, text: str, name: str) -> None:
            self.logged = (name, json.loads(text))

    spec = PipelineSpec(name="t", upscale=None, eval={"data": "hub", "dataset_overrides": str(hub_data),
                                        "tasks": {"arc": {"shots": 0, "limit": 2}}})
    run = Run()
    scores = build_eval(eval_params(spec), [tiny_base], tmp_path, run)
    assert run.logged == ("scores.json", scores) and list(scores) == ["arc", "h6"]
    harness = json.loads((tmp_path / "lm_eval_results.json").read_text())
    assert list(harness["results"]) == ["arc_challenge"] and harness["n-shot"] == {"arc_challenge": 0}


@pytest.mark.parametrize("subject", ["../../escaped", "a/b", "..", "/abs"])
def test_a_group_value_that_is_a_path_is_refused(tmp_path: Path, subject: str) -> None:
    """Local MMLU rows are split into one directory per `subject`: a subject that is a path
    must not write outside the work directory."""
    from solar.evaluate import _split_group_files

    data = tmp_path / "mmlu"
    data.mkdir()
    row = {"question": "q", "choices": ["a", "b", "c", "d"], "answer": 0}
    lines = [json.dumps({**row, "subject": "astronomy"}), json.dumps({**row, "subject": subject})]
    (data / "test.jsonl").write_text("\n".join(lines) + "\n")
    dest = tmp_path / "work" / "groups"
    with pytest.raises(ValueError, match=r"test\.jsonl: row 2: subject .* is not a plain name"):
        _split_group_files(data, dest)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and data not in p.parents]
    assert outside == []  # nothing was written, inside or out
