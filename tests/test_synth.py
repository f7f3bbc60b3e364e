"""Synth. Math-Instruct through an OpenAI-compatible server started here on 127.0.0.1: flaky
(500, 429, stalls past the client timeout), killed mid-generation and resumed. The server
counts requests per prompt, so re-requests and duplicates are seen, not guessed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from solar.data import read_rows
from solar.plan import plan
from solar.spec import PipelineSpec
from solar.stages import run_stage, work_dir
from solar.synth import PAIRS_FILE, OpenAIChat, last_boxed, parse_reply
from tests.chat_server import LocalChatServer

API_KEY = "sk-test-not-a-secret-0123456789"
SEEDS = 24


class ChatServer(LocalChatServer):
    """POST /v1/chat/completions in the OpenAI protocol. The reply rephrases the question
    and restates the solution: correct for most seeds, a wrong answer for questions whose
    index is 1 mod 7, no \\boxed{} for 2 mod 7. With `flaky`, a prompt's first attempts get a
    500, a 429 or a stall past the client timeout. Bounded: at most `max_requests`."""

    def __init__(self, flaky: bool = False, stall: float = 0.0, delay: float = 0.0, max_requests: int = 400):
        self.flaky, self.stall, self.delay, self.max_requests = flaky, stall, delay, max_requests
        self.requests: Counter[str] = Counter()  # question -> requests
        self.served: Counter[str] = Counter()  # question -> complete replies written
        self.log: list[tuple[float, str]] = []
        self.auth: set[str] = set()
        self.lock = threading.Lock()
        super().__init__()

    def handle(self, h: BaseHTTPRequestHandler, body: dict) -> None:
        prompt = body["messages"][-1]["content"]
        question = re.search(r"Question:\n(.*?)\n\nSolution:\n", prompt, re.S).group(1)
        solution = re.search(r"\n\nSolution:\n(.*?)\n\nReply in", prompt, re.S).group(1)
        with self.lock:
            self.requests[question] += 1
            attempt = self.requests[question]
            self.log.append((time.monotonic(), question))
            self.auth.add(h.headers.get("Authorization", ""))
            total = sum(self.requests.values())
        try:
            if h.path != "/v1/chat/completions" or total > self.max_requests:
                return self.send(h, 503 if total > self.max_requests else 404, {"error": "no"})
            bucket = sum(map(ord, question)) % 4
            if self.flaky and attempt == 1 and bucket == 0:
                return self.send(h, 500, {"error": {"message": "internal"}})
            if self.flaky and attempt <= 2 and bucket == 1:
                return self.send(h, 429, {"error": {"message": "slow down"}})
            if self.flaky and attempt == 1 and bucket == 2:
                time.sleep(self.stall)  # the client has given up by now
                return self.send(h, 200, self.reply(question, solution), question=None)
            time.sleep(self.delay)
            self.send(h, 200, self.reply(question, solution), question=question)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def reply(self, question: str, solution: str) -> dict:
        index = sum(map(ord, question)) % 7
        answer = solution
        if index == 1:
            answer = f"{solution} Correction: the answer is \\boxed{{-12345}}."
        elif index == 2:
            answer = solution.replace("\\boxed", "\\fbox")
        content = f"Rephrased question:\nIn other words: {question}\nRephrased solution:\nStep by step. {answer}"
        return {"id": "x", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}

    def send(self, h, status: int, payload: dict, question: str | None = None) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()
        if status == 200 and question is not None:
            with self.lock:
                self.served[question] += 1


def spec_for(tmp_path: Path, base_url: str, **synth) -> PipelineSpec:
    s = {"kind": "math-instruct", "name": "math-instruct", "seed_dataset": "math", "backend": "openai",
         "base_url": base_url, "model": "rephraser", "api_key_env": "SOLAR_TEST_KEY",
         "max_concurrency": 4, "timeout": 0.5, "max_retries": 4, "backoff": 0.02, **synth}
    return PipelineSpec.model_validate(yaml.safe_load(f"""
name: synth-test
upscale: null
eval: null
datasets: [{{name: math, format: math, source: "embedded:sources/math.jsonl", cap: {SEEDS}}}]
synthesis: [{json.dumps(s)}]
execution: {{artifacts_dir: {tmp_path / 'artifacts'}}}
"""))


def stages_of(spec):
    return {s.name: s for s in plan(spec)}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("SOLAR_TEST_KEY", API_KEY)


def seed_questions(result) -> list[str]:
    return [r["prompt"][-1]["content"] for r in read_rows(Path(result.path))]


def check_output(result, seeds: list[str]) -> None:
    m = result.metrics
    assert m["seeds"] == len(seeds) == m["kept"] + m["rejected"] + m["no_answer"]
    expect = Counter(sum(map(ord, q)) % 7 for q in seeds)
    assert m["rejected"] == expect[1] and m["no_answer"] == expect[2]
    pairs = [json.loads(line) for line in (Path(result.path) / PAIRS_FILE).read_text().splitlines()]
    originals = [p["original_question"] for p in pairs]
    assert len(set(originals)) == len(originals) == m["kept"]  # nothing duplicated
    assert set(originals) == {q for q in seeds if sum(map(ord, q)) % 7 not in (1, 2)}  # nothing lost
    assert all(p["question"] == f"In other words: {p['original_question']}" for p in pairs)
    assert all(last_boxed(p["answer"]) == last_boxed(p["original_answer"]) for p in pairs)


def test_a_flaky_server_is_retried_and_nothing_is_lost_or_duplicated(tmp_path):
    with ChatServer(flaky=True, stall=1.5) as server:
        spec = spec_for(tmp_path, server.base_url)
        stages = stages_of(spec)
        root = tmp_path / "artifacts"
        data = run_stage(stages["math"], {}, root)
        result = run_stage(stages["math-instruct"], {"math": data}, root)
    seeds = seed_questions(data)
    check_output(result, seeds)
    assert set(server.served) == set(seeds) and set(server.served.values()) == {1}
    buckets = {q: sum(map(ord, q)) % 4 for q in seeds}
    assert set(buckets.values()) == {0, 1, 2, 3}  # every failure mode was met
    assert all(server.requests[q] == {0: 2, 1: 3, 2: 2, 3: 1}[b] for q, b in buckets.items())
    retries = sum(server.requests.values()) - len(seeds)
    assert retries > 0 and result.metrics["retries"] == retries
    assert result.metrics["requests"] == sum(server.requests.values())
    assert server.auth == {f"Bearer {API_KEY}"}  # the key is sent ...
    for path in root.rglob("*"):  # ... and never written anywhere
        if path.is_file():
            assert API_KEY not in path.read_text(errors="ignore"), path
    assert not work_dir(root, stages["math-instruct"].fingerprint).exists()  # journal cleaned up


def test_retries_are_bounded_and_the_failure_names_the_seed(tmp_path):
    with ChatServer(max_requests=0) as server:  # every request: 503
        client = OpenAIChat(server.base_url, "m", None, timeout=1, max_retries=2, backoff=0.01)
        with pytest.raises(Exception, match=r"HTTP 503 after 3 attempts"):
            client.complete([{"role": "user", "content": "Question:\nq\n\nSolution:\ns\n\nReply in"}])
        assert client.requests == 3 and client.retries == 2


CHILD = """
import sys, yaml
sys.path.insert(0, {repo!r})
from solar.spec import PipelineSpec
from solar.plan import plan
from solar.artifacts import load_result
from solar.stages import run_stage
spec = PipelineSpec.model_validate(yaml.safe_load(open({spec!r})))
stages = {{s.name: s for s in plan(spec)}}
run_stage(stages["math-instruct"], {{"math": load_result(__import__("pathlib").Path({data!r}))}}, {root!r})
"""


def test_a_killed_generation_resumes_without_asking_again(tmp_path):
    with ChatServer(delay=0.15) as server:
        spec = spec_for(tmp_path, server.base_url, max_concurrency=2)
        stages = stages_of(spec)
        root = tmp_path / "artifacts"
        data = run_stage(stages["math"], {}, root)
        spec_file = tmp_path / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
        journal = work_dir(root, stages["math-instruct"].fingerprint) / "journal.jsonl"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(repo=str(Path(__file__).parents[1]), spec=str(spec_file),
                                                data=data.path, root=str(root))],
            env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and child.poll() is None:
            if journal.is_file() and len(journal.read_text().splitlines()) >= 6:
                break
            time.sleep(0.02)
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stderr.close()
        killed_at = time.monotonic()
        finished = {json.loads(line)["i"] for line in journal.read_text().splitlines() if line.endswith("}")}
        assert 6 <= len(finished) < SEEDS
        before = Counter(server.requests)

        result = run_stage(stages["math-instruct"], {"math": data}, root)
    seeds = seed_questions(data)
    check_output(result, seeds)
    asked_after = Counter(q for t, q in server.log if t > killed_at)
    assert not {seeds[i] for i in finished} & set(asked_after)  # finished ones never asked again
    assert set(asked_after) | {seeds[i] for i in finished} == set(seeds)
    assert result.metrics["resumed"] >= len(finished)
    assert sum(asked_after.values()) == SEEDS - result.metrics["resumed"]
    assert sum(before.values()) + sum(asked_after.values()) == sum(server.requests.values())


def test_reply_parsing():
    assert parse_reply("Rephrased question:\nA?\nRephrased solution:\nB \\boxed{1}") == ("A?", "B \\boxed{1}")
    assert parse_reply("I cannot help with that.") is None


def test_the_transformers_backend_generates_from_a_local_model(tmp_path, tiny_corpus):
    from solar.model import build_tiny
    from solar.spec import TinyModel
    from solar.synth import TransformersChat

    build_tiny(TinyModel(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                         vocab_size=300), tiny_corpus, tmp_path)
    chat = TransformersChat(str(tmp_path), temperature=0.0, max_tokens=8)
    reply = chat.complete([{"role": "user", "content": "What is two plus three?"}])
    assert isinstance(reply, str) and chat.requests == 1


class ScriptedChat:
    """A generator that answers from a script, for the counting rules alone."""

    def __init__(self, replies: dict[str, str]):
        self.replies, self.requests, self.retries = replies, 0, 0

    def complete(self, messages):
        self.requests += 1
        question = re.search(r"Question:\n(.*?)\n\nSolution:", messages[-1]["content"], re.S).group(1)
        return self.replies[question]


def test_unparsable_wrong_and_right_rephrasings_are_counted_apart(tmp_path):
    from solar.data import write_rows
    from solar.synth import math_instruct

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    write_rows(seeds, [{"prompt": [{"role": "user", "content": f"q{i}"}],
                        "completion": [{"role": "assistant", "content": f"so \\boxed{{{i}}}"}]} for i in range(4)])
    form = "Rephrased question:\nQ\nRephrased solution:\n{}"
    chat = ScriptedChat({"q0": form.format("it is \\boxed{0}"), "q1": form.format("it is \\boxed{7}"),
                         "q2": form.format("it is 2"), "q3": "Sorry, I can't."})
    out = tmp_path / "out"
    out.mkdir()
    metrics = math_instruct(seeds, out, None, None, 0, chat, tmp_path / "work", 2)
    assert {k: metrics[k] for k in ("seeds", "kept", "rejected", "no_answer")} == {
        "seeds": 4, "kept": 1, "rejected": 1, "no_answer": 2}
    # Rerun on the journal: nothing is asked again.
    metrics = math_instruct(seeds, out, None, None, 0, chat, tmp_path / "work", 2)
    assert chat.requests == 4 and metrics["resumed"] == 4


def test_a_missing_api_key_variable_is_named_not_shown(monkeypatch):
    from solar.synth import make_generator

    monkeypatch.delenv("SOLAR_TEST_KEY")
    spec = spec_for(Path("/tmp"), "http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="environment variable 'SOLAR_TEST_KEY' is not set"):
        make_generator(stages_of(spec)["math-instruct"].params)


def test_an_llm_backend_needs_its_endpoint_or_model():
    from pydantic import ValidationError

    from solar.spec import MathInstructSpec

    with pytest.raises(ValidationError, match=r"synthesis\[m\].base_url: the openai backend needs base_url and model"):
        MathInstructSpec(name="m", backend="openai", model="x")
    with pytest.raises(ValidationError, match=r"synthesis\[m\].model: the transformers backend needs a model"):
        MathInstructSpec(name="m", backend="transformers")
