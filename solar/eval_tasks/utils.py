"""Doc processing and scoring hooks for the h6_* task YAMLs.

Re-implementations of lm-eval's hellaswag/utils.py, winogrande/preprocess_winogrande.py
and truthfulqa/utils.py (mc2 only), so the tasks need nothing beyond numpy/datasets.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np


def _hellaswag_clean(text: str) -> str:
    """Strip WikiHow bracket artifacts and double spaces, as lm-eval's hellaswag does."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_process_docs(dataset: Any) -> Any:
    """Add `query`, `choices` and `gold` to every HellaSwag doc."""

    def _process(doc: dict[str, Any]) -> dict[str, Any]:
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {
            "query": _hellaswag_clean(doc["activity_label"] + ": " + ctx),
            "choices": [_hellaswag_clean(ending) for ending in doc["endings"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(_process)


def winogrande_doc_to_text(doc: dict[str, Any]) -> int:
    """Index of the correct option (an int tells lm-eval the choices are contexts)."""
    return {"1": 0, "2": 1}[doc["answer"]]


def winogrande_doc_to_target(doc: dict[str, Any]) -> str:
    """The sentence after the blank: the continuation scored under each context."""
    idx = doc["sentence"].index("_") + 1
    return doc["sentence"][idx:].strip()


def winogrande_doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """The sentence up to the blank, filled with each option."""
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]


def truthfulqa_mc2_process_results(
    doc: dict[str, Any], results: list[tuple[float, bool]]
) -> dict[str, float]:
    """MC2: normalised probability mass on the true answers.

    Same value as lm-eval's exp(ll) / sum(exp(ll)); the max is subtracted first so very
    negative log-likelihoods cannot underflow to 0/0.
    """
    lls = np.array([ll for ll, _ in results], dtype=np.float64)
    probs = np.exp(lls - lls.max())
    probs_norm = probs / np.sum(probs)
    labels = np.array(doc["mc2_targets"]["labels"])
    return {"acc": float(np.sum(probs_norm[labels == 1]))}
