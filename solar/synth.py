"""Math data synthesis (SOLAR sec. 3): Synth. Math-Instruct and Synth. Math-Alignment.

MetaMath-style: a generator rephrases each MATH question and its solution; a rephrasing is
kept only if its final \\boxed{} answer equals the original's. Math-Alignment turns the kept
pairs into DPO triples {prompt: rephrased question, chosen: rephrased answer, rejected:
original answer}.

The backend here is the offline rephraser (deterministic rewording rules), so the embedded
default runs anywhere; LLM backends implement the same `Rephraser` protocol.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Protocol

from solar.data import assistant, read_rows, subsample, user, write_rows

PAIRS_FILE = "pairs.jsonl"


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in `text`, braces balanced; None if there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def normalise_answer(answer: str) -> str:
    """Compare answers up to spacing, `$`, `\\left/\\right`, `\\dfrac` vs `\\frac`, a trailing
    period, and thousands separators."""
    a = answer.strip().strip("$").rstrip(".")
    a = a.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    a = a.replace("\\left", "").replace("\\right", "").replace("\\!", "")
    a = re.sub(r"(\d),(\d{3})", r"\1\2", a)
    return re.sub(r"\s+", "", a)


def same_answer(original: str, rephrased: str) -> bool:
    a, b = last_boxed(original), last_boxed(rephrased)
    return a is not None and b is not None and normalise_answer(a) == normalise_answer(b)


class Rephraser(Protocol):
    def rephrase(self, question: str, answer: str) -> tuple[str, str]: ...


class OfflineRephraser:
    """Rule-based MetaMath-style rephrasing: reworded question, restated worked answer."""

    QUESTION = (
        "Rephrase and solve: {q}",
        "Here is a problem to work through. {q}",
        "Consider the following question. {q}",
        "{q} Explain your reasoning step by step.",
        "A student asks: \"{q}\" What is the answer?",
    )
    ANSWER = (
        "Let's solve this step by step. {a}",
        "We work through the problem carefully. {a}",
        "Here is a worked solution. {a}",
    )
    REWORDS = (
        (r"\bWhat is\b", "Determine"),
        (r"\bFind\b", "Compute"),
        (r"\bCompute\b", "Calculate"),
        (r"\bHow many\b", "What is the number of"),
    )

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def rephrase(self, question: str, answer: str) -> tuple[str, str]:
        q = question
        for pattern, repl in self.REWORDS:
            if self.rng.random() < 0.5:
                q = re.sub(pattern, repl, q, count=1)
        box = last_boxed(answer)
        restated = f" So the final answer is $\\boxed{{{box}}}$." if box is not None else ""
        return (
            self.rng.choice(self.QUESTION).format(q=q),
            self.rng.choice(self.ANSWER).format(a=answer) + restated,
        )


def math_instruct(
    seed_dir: Path, out_dir: Path, rephraser: Rephraser, cap: int | None, seed: int
) -> dict[str, float]:
    """Rephrase every seed {prompt, completion} row; keep those whose answers match."""
    seeds = read_rows(seed_dir)
    pairs, rejected = [], 0
    for row in seeds:
        question, answer = row["prompt"][-1]["content"], row["completion"][-1]["content"]
        new_q, new_a = rephraser.rephrase(question, answer)
        if same_answer(answer, new_a):
            pairs.append({"question": new_q, "answer": new_a,
                          "original_question": question, "original_answer": answer})
        else:
            rejected += 1
    pairs = subsample(pairs, cap, seed)
    with (out_dir / PAIRS_FILE).open("w") as f:
        for p in pairs:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    write_rows(out_dir, [{"prompt": [user(p["question"])], "completion": [assistant(p["answer"])]}
                         for p in pairs])
    return {"seeds": float(len(seeds)), "kept": float(len(pairs)), "rejected": float(rejected)}


def math_alignment(instruct_dir: Path, out_dir: Path, cap: int | None, seed: int) -> dict[str, float]:
    """DPO triples from kept rephrasings: the rephrased answer is preferred to the original."""
    with (instruct_dir / PAIRS_FILE).open() as f:
        pairs = [json.loads(line) for line in f if line.strip()]
    rows = [{"prompt": [user(p["question"])], "chosen": [assistant(p["answer"])],
             "rejected": [assistant(p["original_answer"])]} for p in pairs]
    rows = subsample(rows, cap, seed)
    write_rows(out_dir, rows)
    return {"rows": float(len(rows))}
