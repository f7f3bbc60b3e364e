"""Math data synthesis (SOLAR sec. 3): Synth. Math-Instruct and Synth. Math-Alignment.

MetaMath-style: a generator rephrases each MATH question and its solution; a rephrasing is
kept only if its final \\boxed{} answer equals the original's. Math-Alignment turns the kept
pairs into DPO triples {prompt: rephrased question, chosen: rephrased answer, rejected:
original answer}.

Backends: the offline rephraser (deterministic rewording rules, so the embedded default
runs anywhere), an OpenAI-compatible chat-completions server (vLLM, TGI, ...), and a local
transformers model. LLM generation is journaled: every finished rephrasing is appended to a
JSONL journal keyed by seed row and content hash, in a work directory that survives a
failed attempt, so a rerun after a crash only asks for what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from solar.data import assistant, read_rows, subsample, user, write_info, write_rows

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


class Generator(Protocol):
    """A chat model: messages in, the assistant's reply out."""

    def complete(self, messages: list[dict[str, str]]) -> str: ...


REPHRASE_SYSTEM = (
    "You rewrite math problems. Rephrase the question so it asks the same thing in other "
    "words, then rewrite the solution step by step. Keep every number and the final answer; "
    "end the solution with the final answer in \\boxed{}."
)
REPHRASE_PROMPT = (
    "Question:\n{question}\n\nSolution:\n{answer}\n\n"
    "Reply in exactly this form:\nRephrased question:\n<question>\nRephrased solution:\n<solution>"
)
_REPLY = re.compile(r"Rephrased question:\s*(.+?)\s*Rephrased solution:\s*(.+)", re.S | re.I)


def rephrase_messages(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": REPHRASE_SYSTEM},
            {"role": "user", "content": REPHRASE_PROMPT.format(question=question, answer=answer)}]


def parse_reply(reply: str) -> tuple[str, str] | None:
    """(question, solution) from a generator's reply; None if it is not in the asked form."""
    m = _REPLY.search(reply)
    return (m.group(1).strip(), m.group(2).strip()) if m else None


class GenerationError(RuntimeError):
    pass


class OpenAIChat:
    """An OpenAI-compatible `POST {base_url}/chat/completions` client: bounded retries with
    exponential backoff on 429, 5xx, timeouts and connection errors. Thread-safe; counts
    requests and retries."""

    RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 5, backoff: float = 1.0, temperature: float = 0.7,
                 max_tokens: int = 1024):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.model, self.max_retries, self.backoff = model, max_retries, backoff
        self.temperature, self.max_tokens = temperature, max_tokens
        self.requests = self.retries = 0
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, str]]) -> str:
        import httpx

        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.requests += 1
                self.retries += attempt > 0
            try:
                resp = self.http.post("/chat/completions", json=body)
                if resp.status_code not in self.RETRY_STATUS:
                    resp.raise_for_status()
                    return resp.json()["choices"][0]["message"]["content"]
                problem = f"HTTP {resp.status_code}"
            except (httpx.TimeoutException, httpx.TransportError) as e:
                problem = type(e).__name__
            except (httpx.HTTPStatusError, KeyError, IndexError, TypeError, ValueError) as e:
                raise GenerationError(f"{self.http.base_url}/chat/completions: {e}") from None
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2**attempt * (0.5 + random.random() / 2))
        raise GenerationError(f"{self.http.base_url}/chat/completions: {problem} after "
                              f"{self.max_retries + 1} attempts")

    def close(self) -> None:
        self.http.close()


class TransformersChat:
    """A local transformers causal LM, prompted through its tokenizer's chat template."""

    def __init__(self, model: str, temperature: float = 0.7, max_tokens: int = 1024, seed: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        # Never the custom code of a model's auto_map: a generator is not a trusted base.
        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(model, trust_remote_code=False).eval()
        self.temperature, self.max_tokens, self.seed = temperature, max_tokens, seed
        self.requests = self.retries = 0
        if self.tokenizer.chat_template is None:
            from solar.model import chat_template

            self.tokenizer.chat_template = chat_template("solar")

    def complete(self, messages: list[dict[str, str]]) -> str:
        self.requests += 1
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)
        self.torch.manual_seed(self.seed)
        with self.torch.no_grad():
            out = self.model.generate(
                **ids, max_new_tokens=self.max_tokens, do_sample=self.temperature > 0,
                temperature=self.temperature or None, pad_token_id=self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    def close(self) -> None:
        pass


def seed_key(question: str, answer: str) -> str:
    return hashlib.sha256(f"{question}\x00{answer}".encode()).hexdigest()[:16]


class Journal:
    """Append-only JSONL of finished generations, keyed by (seed row, seed hash). A torn
    last line (a crash mid-write) is ignored on reading."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[tuple[int, str], str] = {}
        if path.is_file():
            with path.open() as f:
                for line in f:
                    try:
                        e = json.loads(line)
                        self.done[(e["i"], e["key"])] = e["reply"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue
        self._lock = threading.Lock()
        self._f = path.open("a")

    def add(self, i: int, key: str, reply: str) -> None:
        line = json.dumps({"i": i, "key": key, "reply": reply}, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            self.done[(i, key)] = reply

    def close(self) -> None:
        self._f.close()


def generate_replies(
    seeds: list[tuple[str, str]], generator: Generator, journal: Journal, concurrency: int,
    on_reply: Callable[[int], None] | None = None,
) -> dict[int, str]:
    """The generator's reply for every seed, from the journal where it is there already,
    else asked with up to `concurrency` requests in flight and journaled as it arrives.
    Failed seeds are raised together at the end, after every other reply is kept."""
    keys = [seed_key(q, a) for q, a in seeds]
    todo = [i for i, k in enumerate(keys) if (i, k) not in journal.done]
    failures: list[str] = []

    def one(i: int) -> None:
        reply = generator.complete(rephrase_messages(*seeds[i]))
        journal.add(i, keys[i], reply)
        if on_reply:
            on_reply(i)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(one, i): i for i in todo}
        try:
            for fut in as_completed(futures):
                if (e := fut.exception()) is not None:
                    if not isinstance(e, GenerationError):
                        raise e
                    failures.append(f"seed row {futures[fut]}: {e}")
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    if failures:
        raise GenerationError(f"{len(failures)} of {len(todo)} generations failed (the others are "
                              f"journaled in {journal.path}; rerun to retry): {failures[0]}")
    return {i: journal.done[(i, k)] for i, k in enumerate(keys)}


def make_generator(p: dict[str, Any]) -> OpenAIChat | TransformersChat:
    """The LLM generator of a math-instruct spec; the API key is read from the environment."""
    if p["backend"] == "openai":
        key = None
        if p.get("api_key_env"):
            key = os.environ.get(p["api_key_env"])
            if key is None:
                raise ValueError(f"synthesis.api_key_env: the environment variable "
                                 f"{p['api_key_env']!r} is not set")
        return OpenAIChat(p["base_url"], p["model"], key, p["timeout"], p["max_retries"],
                          p["backoff"], p["temperature"], p["max_tokens"])
    return TransformersChat(p["model"], p["temperature"], p["max_tokens"], p["seed"])


def math_instruct(
    seed_dir: Path, out_dir: Path, rephraser: Rephraser | None, cap: int | None, seed: int,
    generator: Generator | None = None, work_dir: Path | None = None, concurrency: int = 1,
) -> dict[str, float]:
    """Rephrase every seed {prompt, completion} row, with the offline `rephraser` or an LLM
    `generator` (journaled in `work_dir`); keep those whose answers match. A rephrasing with
    no \\boxed{} answer (or an LLM reply not in the asked form) is counted as `no_answer`."""
    seeds = [(r["prompt"][-1]["content"], r["completion"][-1]["content"]) for r in read_rows(seed_dir)]
    if generator is None:
        assert rephraser is not None
        rephrased: list[tuple[str, str] | None] = [rephraser.rephrase(q, a) for q, a in seeds]
        metrics: dict[str, float] = {}
    else:
        journal = Journal((work_dir or out_dir) / "journal.jsonl")
        resumed = len(journal.done)
        try:
            replies = generate_replies(seeds, generator, journal, concurrency)
        finally:
            journal.close()
        rephrased = [parse_reply(replies[i]) for i in range(len(seeds))]
        metrics = {"resumed": float(resumed), "requests": float(getattr(generator, "requests", 0)),
                   "retries": float(getattr(generator, "retries", 0))}
    pairs, rejected, no_answer = [], 0, 0
    for (question, answer), new in zip(seeds, rephrased, strict=True):
        if new is None or last_boxed(new[1]) is None:
            no_answer += 1
        elif same_answer(answer, new[1]):
            pairs.append({"question": new[0], "answer": new[1],
                          "original_question": question, "original_answer": answer})
        else:
            rejected += 1
    if not pairs:
        raise ValueError(f"{seed_dir}: no rephrasing kept of {len(seeds)} seeds "
                         f"({rejected} wrong answers, {no_answer} without a parsable answer)")
    pairs = subsample(pairs, cap, seed)
    with (out_dir / PAIRS_FILE).open("w") as f:
        for p in pairs:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    write_rows(out_dir, [{"prompt": [user(p["question"])], "completion": [assistant(p["answer"])]}
                         for p in pairs])
    write_info(out_dir, source="math-instruct", rows=len(pairs))
    return {"seeds": float(len(seeds)), "kept": float(len(pairs)), "rejected": float(rejected),
            "no_answer": float(no_answer), **metrics}


def math_alignment(instruct_dir: Path, out_dir: Path, cap: int | None, seed: int) -> dict[str, float]:
    """DPO triples from kept rephrasings: the rephrased answer is preferred to the original."""
    with (instruct_dir / PAIRS_FILE).open() as f:
        pairs = [json.loads(line) for line in f if line.strip()]
    rows = [{"prompt": [user(p["question"])], "chosen": [assistant(p["answer"])],
             "rejected": [assistant(p["original_answer"])]} for p in pairs]
    rows = subsample(rows, cap, seed)
    write_rows(out_dir, rows)
    write_info(out_dir, source="math-alignment", rows=len(rows))
    return {"rows": float(len(rows))}
