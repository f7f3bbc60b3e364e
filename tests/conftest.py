import json
import os
import random

import pytest

from flows.cli import OFFLINE_ENV

# Tests never reach a hub, and nothing phones home (the CLI's settings, plus no hub).
for key, value in {**OFFLINE_ENV, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}.items():
    os.environ[key] = value


WORDS = (
    "the cat sat on a mat water boils at one hundred degrees paris is the capital of france "
    "two plus three is five mars is a planet the sun is a star birds can fly"
).split()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A small JSONL {"text"} corpus to train throwaway tokenizers on."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with path.open("w") as f:
        for _ in range(200):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(40))}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, tiny_corpus):
    """A 2-layer Mistral-architecture model with its tokenizer: read-only for tests."""
    from solar.model import build_tiny
    from solar.spec import TinyModel

    path = tmp_path_factory.mktemp("tiny-base")
    build_tiny(TinyModel(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                         num_kv_heads=1, vocab_size=300), tiny_corpus, path)
    return path
