"""Held-out perplexity: the number that shows the DUS story (SOLAR sec. 2).

The up-scaled model starts worse than its base (the seam between the two copies) and
continued pretraining recovers it. One deterministic held-out split of the corpus serves
both the pretraining stage (never trained on) and the perplexity stage of every model.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

HELDOUT_EVERY = 20  # one text in 20 (5%) is held out


def is_heldout(text: str) -> bool:
    """A stable 5% of texts, chosen by content hash (independent of order and caps)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % HELDOUT_EVERY == 0


def split_heldout(texts: list[str]) -> tuple[list[str], list[str]]:
    train = [t for t in texts if not is_heldout(t)]
    heldout = [t for t in texts if is_heldout(t)]
    if not heldout:  # a tiny corpus: hold out the first text rather than nothing
        train, heldout = texts[1:], texts[:1]
    return train, heldout


@torch.no_grad()
def perplexity(model_dir: Path, texts: list[str], max_length: int = 256, batch_size: int = 8) -> dict[str, float]:
    """Token-weighted mean negative log-likelihood of `texts` (each truncated to
    `max_length` tokens) under the model, and its exponential."""
    from solar.model import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    total_nll, total_tokens = 0.0, 0
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True,
                          truncation=True, max_length=max_length)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        logits = model(**batch).logits[:, :-1]  # (B, T-1, V): position t predicts t+1
        targets = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += int((targets != -100).sum())
    loss = total_nll / max(1, total_tokens)
    return {"heldout_nll": loss, "heldout_ppl": math.exp(loss), "heldout_tokens": float(total_tokens)}
