"""Offline tests for solar.evaluate: H6 scoring of a tiny random Mistral via lm-eval."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from solar.evaluate import (
    H6_TASKS,
    TaskSettings,
    evaluate_h6,
    render_task_configs,
)

N_TEST = 8
WORDS = (
    "the a of to and in is was for on with as by at from that this it which water "
    "plant animal energy heat light sun moon earth rock soil cell body blood heart "
    "man woman boy girl dog cat car house tree river city school book ball game "
    "runs walks jumps makes takes gives finds moves grows falls opens closes "
    "small large hot cold fast slow red blue green new old good bad many few"
).split()
SUBJECTS = ["high_school_biology", "college_physics", "world_religions"]


def sentence(rng: random.Random, lo: int = 4, hi: int = 9) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    return " ".join(words).capitalize()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def arc_row(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "id": f"arc-{i}",
        "question": sentence(rng) + "?",
        "choices": {
            "text": [sentence(rng, 1, 12) for _ in range(4)],  # lengths differ: acc != acc_norm
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": rng.choice("ABCD"),
    }


def hellaswag_row(rng: random.Random, i: int) -> dict[str, Any]:
    ctx_a, ctx_b = sentence(rng) + ".", sentence(rng, 2, 4).lower()
    return {
        "ind": i,
        "activity_label": rng.choice(["Cooking", "Running a marathon", "Home [title]"]),
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "ctx": ctx_a + " " + ctx_b,
        "endings": [sentence(rng, 2, 8).lower() + " [step]." for _ in range(4)],
        "source_id": f"src-{i}",
        "split": "val",
        "split_type": "indomain",
        "label": str(rng.randrange(4)),
    }


def mmlu_row(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "question": sentence(rng) + "?",
        "subject": SUBJECTS[i % len(SUBJECTS)],
        "choices": [sentence(rng, 1, 3) for _ in range(4)],
        "answer": rng.randrange(4),
    }


def truthfulqa_row(rng: random.Random, i: int) -> dict[str, Any]:
    n = rng.randint(3, 5)
    labels = [1] * rng.randint(1, n - 1)
    labels += [0] * (n - len(labels))
    return {
        "question": sentence(rng) + "?",
        "mc1_targets": {"choices": [sentence(rng) + "." for _ in range(4)], "labels": [1, 0, 0, 0]},
        "mc2_targets": {"choices": [sentence(rng) + "." for _ in range(n)], "labels": labels},
    }


def winogrande_row(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "sentence": f"{sentence(rng)} _ {sentence(rng).lower()}.",
        "option1": rng.choice(WORDS),
        "option2": rng.choice(WORDS),
        "answer": rng.choice("12"),
    }


def gsm8k_row(rng: random.Random, i: int) -> dict[str, Any]:
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    return {
        "question": f"{sentence(rng)} has {a} and gets {b} more. How many now?",
        "answer": f"It has {a} + {b} = <<{a}+{b}={a + b}>>{a + b}.\n#### {a + b}",
    }


#: directory/file -> (row builder, number of rows)
FIXTURE_FILES = {
    "arc_challenge/train.jsonl": (arc_row, 30),
    "arc_challenge/test.jsonl": (arc_row, N_TEST),
    "hellaswag/train.jsonl": (hellaswag_row, 12),
    "hellaswag/validation.jsonl": (hellaswag_row, N_TEST),
    "mmlu/dev.jsonl": (mmlu_row, 6),
    "mmlu/test.jsonl": (mmlu_row, N_TEST),
    "truthfulqa_mc/validation.jsonl": (truthfulqa_row, N_TEST),
    "winogrande/train.jsonl": (winogrande_row, 8),
    "winogrande/validation.jsonl": (winogrande_row, N_TEST),
    "gsm8k/train.jsonl": (gsm8k_row, 8),
    "gsm8k/test.jsonl": (gsm8k_row, N_TEST),
}


def write_fixture_data(root: Path) -> Path:
    """Tiny eval files in the hub schemas, enough few-shot rows for leaderboard shots."""
    rng = random.Random(0)
    for rel, (build, n) in FIXTURE_FILES.items():
        write_jsonl(root / rel, [build(rng, i) for i in range(n)])
    return root


def build_tiny_model(out: Path) -> Path:
    """A random 2-layer Mistral with a byte-level BPE tokenizer trained on toy text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(1)
    corpus = [sentence(rng, 3, 15) + rng.choice([".", "?", " #### 12", ": A. B. C. D."]) for _ in range(400)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=512,
            special_tokens=["<s>", "</s>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = MistralForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture_data(tmp_path_factory.mktemp("eval_data"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_mistral"))


@pytest.fixture(scope="module")
def run(model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One full-default H6 run with per-sample logs."""
    out = tmp_path_factory.mktemp("h6_out")
    scores = evaluate_h6(model_dir, data_dir, out, max_gen_toks=32, log_samples=True)
    return scores, out


def load_samples(out: Path, short: str) -> list[dict[str, Any]]:
    path = out / f"samples_{H6_TASKS[short].task}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scores_are_floats_and_h6_is_the_mean(run) -> None:
    scores, out = run
    assert list(scores) == [*H6_TASKS, "gsm8k_flexible", "h6"]
    for name, value in scores.items():
        assert type(value) is float and 0.0 <= value <= 1.0, (name, value)
    assert scores["h6"] == pytest.approx(np.mean([scores[name] for name in H6_TASKS]))
    assert json.loads((out / "scores.json").read_text()) == scores


def test_harness_results_file_is_json_safe_and_uses_leaderboard_shots(run) -> None:
    _, out = run
    harness = json.loads((out / "lm_eval_results.json").read_text())
    expected = {spec.task: spec.num_fewshot for spec in H6_TASKS.values()}
    assert harness["n-shot"] == expected
    assert all(harness["n-samples"][task]["effective"] == N_TEST for task in expected)
    text = json.dumps(harness)
    assert "N/A" not in text and "NaN" not in text
    assert harness["results"]["h6_arc"]["acc_norm,none"] == run[0]["arc"]


def test_prompts_follow_harness_formats(run, data_dir: Path) -> None:
    _, out = run
    arc = load_samples(out, "arc")[0]
    context, continuation = arc["arguments"][0]
    assert context.count("Question: ") == 26 and context.endswith("\nAnswer:")
    assert continuation == " " + arc["doc"]["choices"]["text"][0]

    mmlu = load_samples(out, "mmlu")
    for row in mmlu:
        context = row["arguments"][0][0]
        subject = row["doc"]["subject"].replace("_", " ")
        assert context.startswith(
            f"The following are multiple choice questions (with answers) about {subject}.\n\n"
        )
        assert context.count("\nAnswer:") == 6 and context.endswith(
            "D. " + row["doc"]["choices"][3] + "\nAnswer:"
        )
        assert [arg[1] for arg in row["arguments"]] == [" A", " B", " C", " D"]

    tqa = load_samples(out, "truthfulqa")[0]
    context = tqa["arguments"][0][0]
    assert context.startswith("Q: What is human life expectancy in the United States?\n")
    assert context.endswith("\n\nQ: " + tqa["doc"]["question"] + "\nA:")
    assert context.count("Q: ") == 7

    hs = load_samples(out, "hellaswag")[0]
    assert "[" not in hs["arguments"][0][0] + "".join(a[1] for a in hs["arguments"])
    assert hs["arguments"][0][0].count("\n\n") == 10


def test_arc_acc_norm_recomputed_from_loglikelihoods(run, model_dir: Path) -> None:
    scores, out = run
    rows = load_samples(out, "arc")
    assert len(rows) == N_TEST
    hits, raw_hits = [], []
    for row in rows:
        lls = np.array([resp[0] for resp in row["filtered_resps"]], dtype=float)
        choices = row["doc"]["choices"]["text"]
        gold = row["doc"]["choices"]["label"].index(row["doc"]["answerKey"])
        # lm-eval normalises by len(choice) (characters, no leading space); ASCII here.
        lengths = np.array([len(c.encode("utf-8")) for c in choices], dtype=float)
        hits.append(float(np.argmax(lls / lengths) == gold))
        raw_hits.append(float(np.argmax(lls) == gold))
        assert row["acc_norm"] == hits[-1]
    assert scores["arc"] == pytest.approx(np.mean(hits))
    assert np.mean(raw_hits) != np.mean(hits)  # the fixture tells acc_norm from acc

    # The logged log-likelihoods themselves, recomputed with a plain forward pass.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    row = rows[0]
    for (context, continuation), resp in zip(row["arguments"], row["filtered_resps"], strict=True):
        ctx_ids = tokenizer(context, add_special_tokens=False).input_ids
        all_ids = tokenizer(context + continuation, add_special_tokens=False).input_ids
        cont_ids = all_ids[len(ctx_ids) :]
        with torch.no_grad():
            logits = model(torch.tensor([all_ids[:-1]])).logits[0, -len(cont_ids) :]
        ll = torch.log_softmax(logits, -1).gather(1, torch.tensor(cont_ids)[:, None]).sum()
        assert float(ll) == pytest.approx(resp[0], abs=1e-3)


@pytest.mark.parametrize("short", ["mmlu", "winogrande"])
def test_acc_recomputed_from_loglikelihoods(run, short: str) -> None:
    scores, out = run
    rows = load_samples(out, short)
    assert len(rows) == N_TEST
    hits = []
    for row in rows:
        lls = [resp[0] for resp in row["filtered_resps"]]
        doc = row["doc"]
        gold = doc["answer"] if short == "mmlu" else int(doc["answer"]) - 1
        hits.append(float(int(np.argmax(lls)) == gold))
        if short == "winogrande":  # partial scoring: same suffix, one context per option
            blank = doc["sentence"].index("_")
            prefixes = [doc["sentence"][:blank] + doc[f"option{k}"] for k in (1, 2)]
            assert [arg[0][-len(p) :] for arg, p in zip(row["arguments"], prefixes, strict=True)] == prefixes
            suffix = " " + doc["sentence"][blank + 1 :].strip()
            assert {arg[1] for arg in row["arguments"]} == {suffix}
    assert scores[short] == pytest.approx(np.mean(hits))


def test_truthfulqa_mc2_recomputed(run) -> None:
    scores, out = run
    values = []
    for row in load_samples(out, "truthfulqa"):
        probs = np.exp([resp[0] for resp in row["filtered_resps"]])
        labels = np.array(row["doc"]["mc2_targets"]["labels"])
        values.append(probs[labels == 1].sum() / probs.sum())
    assert scores["truthfulqa"] == pytest.approx(np.mean(values))


def test_gsm8k_filters_on_handwritten_completions(data_dir: Path, tmp_path: Path) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.tasks import TaskManager

    render_task_configs(tmp_path, data_dir, {"gsm8k": TaskSettings()})
    task = TaskManager(include_path=str(tmp_path), include_defaults=False).load(["h6_gsm8k"])["tasks"][
        "h6_gsm8k"
    ]
    doc = {"question": "How many?", "answer": "6 * 7 = 42.\n#### 42"}
    completions = {
        "The answer is 6 * 7 = 42.\n#### 42": (1, 1),
        "So 1,000 - 958 = 42 apples.": (0, 1),  # no '####': only flexible-extract hits
        "#### 42 as 6 * 7 is 2 less than 44": (1, 0),  # flexible takes the last number
        "#### 41": (0, 0),
    }
    task._instances = [Instance("generate_until", doc, ("ctx", {}), 0, resps=[text]) for text in completions]
    task.apply_filters()
    for inst, expected in zip(task.instances, completions.values(), strict=True):
        got = tuple(
            task.process_results(doc, [inst.filtered_resps[name]])["exact_match"]
            for name in ("strict-match", "flexible-extract")
        )
        assert got == expected, (inst.resps, inst.filtered_resps)
    assert task.instances[0].filtered_resps["strict-match"] == "42"


def test_overrides_limit_and_determinism(run, model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    settings = {"arc": TaskSettings(num_fewshot=25), "winogrande": TaskSettings(num_fewshot=1, limit=3)}
    scores = evaluate_h6(model_dir, data_dir, tmp_path, tasks=settings)
    assert list(scores) == ["arc", "winogrande", "h6"]
    assert scores["arc"] == run[0]["arc"]  # same seed, same shots -> same score
    assert scores["h6"] == pytest.approx((scores["arc"] + scores["winogrande"]) / 2)
    harness = json.loads((tmp_path / "lm_eval_results.json").read_text())
    assert harness["n-shot"] == {"h6_arc": 25, "h6_winogrande": 1}
    assert harness["n-samples"]["h6_winogrande"]["effective"] == 3
    with pytest.raises(ValueError):
        evaluate_h6(model_dir, data_dir, tmp_path, tasks={"boolq": TaskSettings()})


def test_chat_template_and_dtype_reach_the_harness(tiny_base: Path, data_dir: Path, tmp_path: Path) -> None:
    settings = {"arc": TaskSettings(num_fewshot=0, limit=2)}
    plain = evaluate_h6(tiny_base, data_dir, tmp_path / "plain", tasks=settings, log_samples=True)
    chat = evaluate_h6(tiny_base, data_dir, tmp_path / "chat", tasks=settings, log_samples=True,
                       apply_chat_template=True, dtype="bfloat16")
    assert 0 <= chat["arc"] <= 1 and 0 <= plain["arc"] <= 1
    assert "### User:" in (tmp_path / "chat" / "samples_h6_arc.jsonl").read_text()
    assert "### User:" not in (tmp_path / "plain" / "samples_h6_arc.jsonl").read_text()
