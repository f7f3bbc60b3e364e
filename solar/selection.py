"""Merge selection (the paper's Table 7 procedure): of a grid of merge candidates, each
evaluated, the best by one score becomes the model downstream stages use."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from solar.artifacts import MANIFEST, read_manifest


def best_candidate(scores: list[dict[str, float]], key: str) -> int:
    """Index of the highest `key` (the first one on a tie)."""
    values = [s[key] for s in scores]
    return values.index(max(values))


def select(candidates: list[Path], evals: list[Path], out_dir: Path, key: str) -> dict[str, float]:
    """Put the best candidate's files in `out_dir` (hard links where the filesystem allows)
    and record every candidate's score in `selection.json`."""
    scores = [read_manifest(e)["metrics"] for e in evals]
    best = best_candidate(scores, key)
    winner = candidates[best]
    for src in winner.rglob("*"):
        if src.is_file() and src.name != MANIFEST:
            dst = out_dir / src.relative_to(winner)
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
    (out_dir / "selection.json").write_text(json.dumps({
        "select_by": key,
        "selected": read_manifest(winner)["name"],
        "candidates": [{"name": read_manifest(c)["name"], key: s[key]} for c, s in zip(candidates, scores, strict=True)],
    }, indent=2))
    return {"selected": float(best + 1), f"selected_{key}": scores[best][key]}
