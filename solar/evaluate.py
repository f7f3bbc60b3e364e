"""Open LLM Leaderboard "H6" evaluation through lm-evaluation-harness, fully offline.

The six tasks (ARC-Challenge, HellaSwag, MMLU, TruthfulQA-MC2, Winogrande, GSM8K) are
lm-eval YAML templates in ``solar/eval_tasks/`` that mirror the harness's own task
configs but read small local JSONL files in the hub schemas::

    data_dir/arc_challenge/{train,test}.jsonl   data_dir/mmlu/{dev,test}.jsonl
    data_dir/hellaswag/{train,validation}.jsonl data_dir/truthfulqa_mc/validation.jsonl
    data_dir/winogrande/{train,validation}.jsonl data_dir/gsm8k/{train,test}.jsonl

``evaluate_h6`` renders the templates for one run (data paths, shots, generation
length) into a temporary directory, points a ``TaskManager`` at it, runs
``lm_eval.simple_evaluate`` on an ``HFLM`` wrapping the local model, and returns plain
float scores.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import numpy as np


class H6Task(NamedTuple):
    """One leaderboard task: lm-eval task name, reported metric/filter, default shots."""

    task: str
    metric: str
    filter: str
    num_fewshot: int


#: Short name -> task spec, in leaderboard order. The only place these are written down.
H6_TASKS: Mapping[str, H6Task] = {
    "arc": H6Task("h6_arc", "acc_norm", "none", 25),
    "hellaswag": H6Task("h6_hellaswag", "acc_norm", "none", 10),
    "mmlu": H6Task("h6_mmlu", "acc", "none", 5),
    "truthfulqa": H6Task("h6_truthfulqa", "acc", "none", 0),  # mc2, stored as "acc"
    "winogrande": H6Task("h6_winogrande", "acc", "none", 5),
    "gsm8k": H6Task("h6_gsm8k", "exact_match", "strict-match", 5),
}

#: Secondary scores, not part of the H6 mean: name -> (short task name, filter).
EXTRA_SCORES: Mapping[str, tuple[str, str]] = {
    "gsm8k_flexible": ("gsm8k", "flexible-extract"),
}

TEMPLATE_PACKAGE = "solar"
TEMPLATE_DIR = "eval_tasks"


@dataclass
class TaskSettings:
    """Per-task overrides: few-shot count (None = leaderboard default), doc limit."""

    num_fewshot: int | None = None
    limit: int | None = None


def render_task_configs(
    dest: Path,
    data_dir: Path,
    tasks: Mapping[str, TaskSettings],
    max_gen_toks: int = 256,
    cache_dir: Path | None = None,
) -> None:
    """Write the requested tasks' YAMLs (placeholders filled in) and utils.py into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    templates = resources.files(TEMPLATE_PACKAGE) / TEMPLATE_DIR
    (dest / "utils.py").write_text((templates / "utils.py").read_text("utf-8"), "utf-8")
    for name, settings in tasks.items():
        spec = H6_TASKS[name]
        shots = spec.num_fewshot if settings.num_fewshot is None else settings.num_fewshot
        text = (templates / f"{spec.task}.yaml").read_text("utf-8")
        for placeholder, value in {
            "__DATA_DIR__": _yaml_str(data_dir.resolve()),
            "__CACHE_DIR__": _yaml_str((cache_dir or dest / "hf_datasets").resolve()),
            "__NUM_FEWSHOT__": str(int(shots)),
            "__MAX_GEN_TOKS__": str(int(max_gen_toks)),
        }.items():
            text = text.replace(placeholder, value)
        (dest / f"{spec.task}.yaml").write_text(text, "utf-8")


def evaluate_h6(
    model_dir: Path,
    data_dir: Path,
    out_dir: Path,
    tasks: dict[str, TaskSettings] | None = None,
    batch_size: int = 8,
    max_gen_toks: int = 256,
    device: str = "cpu",
    seed: int = 1234,
    log_samples: bool = False,
    dtype: str = "float32",
    apply_chat_template: bool = False,
) -> dict[str, float]:
    """Score the HF model in model_dir on the H6 tasks (all six when tasks is None).

    Returns ``{short task name: score, "gsm8k_flexible": ..., "h6": ...}`` as plain floats.
    ``h6`` is the mean of the primary scores of the tasks that were run (all six by
    default; only the requested ones for a subset). Writes ``out_dir/scores.json`` (the
    returned dict), ``out_dir/lm_eval_results.json`` (harness results, configs, versions,
    n-shot, JSON-safe) and, with ``log_samples``, ``out_dir/samples_<task>.jsonl``.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    settings = {name: TaskSettings() for name in H6_TASKS} if tasks is None else tasks
    unknown = sorted(set(settings) - set(H6_TASKS))
    if unknown or not settings:
        raise ValueError(f"unknown or no tasks {unknown}; choose from {list(H6_TASKS)}")
    settings = {name: settings[name] for name in H6_TASKS if name in settings}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    lm = load_hflm(Path(model_dir), batch_size=batch_size, device=device, dtype=dtype)
    with tempfile.TemporaryDirectory(prefix="h6_tasks_") as work:
        render_task_configs(Path(work), Path(data_dir), settings, max_gen_toks)
        manager = TaskManager(include_path=work, include_defaults=False)
        loaded = manager.load([H6_TASKS[name].task for name in settings])["tasks"]
        samples = _doc_indices(loaded, settings)
        # Skip lm-eval's provenance probes (`git describe` in the CWD, torch env dump) and
        # reuse compiled Jinja prompt templates (lm-eval recompiles one per field per doc).
        with (
            mock.patch("lm_eval.evaluator.get_git_commit_hash", lambda: None),
            mock.patch("lm_eval.evaluator.add_env_info", lambda storage: None),
            mock.patch("lm_eval.utils.apply_template", _apply_template),
        ):
            results = simple_evaluate(
                model=lm,
                tasks=list(loaded.values()),
                task_manager=manager,
                samples=samples or None,
                bootstrap_iters=0,
                log_samples=log_samples,
                apply_chat_template=apply_chat_template,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
    if results is None:
        raise RuntimeError("lm-eval returned no results (not rank 0?)")

    scores = extract_scores(results["results"], list(settings))
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    keep = ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples")
    harness = json_safe({key: results[key] for key in keep if key in results})
    (out_dir / "lm_eval_results.json").write_text(json.dumps(harness, indent=2) + "\n")
    if log_samples:
        for task_name, rows in results.get("samples", {}).items():
            lines = (json.dumps(json_safe(row)) + "\n" for row in rows)
            (out_dir / f"samples_{task_name}.jsonl").write_text("".join(lines))
    return scores


def load_hflm(model_dir: Path, batch_size: int = 8, device: str = "cpu", dtype: str = "float32") -> Any:
    """Load a local safetensors causal LM + tokenizer and wrap it in lm-eval's HFLM."""
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, trust_remote_code=False, use_safetensors=True, dtype=getattr(torch, dtype)
    )
    model.to(device).eval()
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def extract_scores(results: Mapping[str, Any], names: list[str]) -> dict[str, float]:
    """Pick each task's leaderboard metric out of lm-eval's results; add the h6 mean."""
    scores: dict[str, float] = {}
    for name in names:
        spec = H6_TASKS[name]
        scores[name] = float(results[spec.task][f"{spec.metric},{spec.filter}"])
    for extra, (name, filter_name) in EXTRA_SCORES.items():
        if name in names:
            spec = H6_TASKS[name]
            scores[extra] = float(results[spec.task][f"{spec.metric},{filter_name}"])
    scores["h6"] = float(np.mean([scores[name] for name in names]))
    return scores


def json_safe(obj: Any) -> Any:
    """Convert numpy values to Python ones, drop "N/A" entries, stringify the rest."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items() if not _is_na(v)}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _doc_indices(loaded: Mapping[str, Any], settings: Mapping[str, TaskSettings]) -> dict[str, list[int]]:
    """Per-task doc limits as lm-eval `samples` (its `limit` is global, not per task)."""
    samples: dict[str, list[int]] = {}
    for name, task_settings in settings.items():
        if task_settings.limit is None:
            continue
        if task_settings.limit < 1:
            raise ValueError(f"{name}: limit must be >= 1, got {task_settings.limit}")
        task_name = H6_TASKS[name].task
        n_docs = len(loaded[task_name].eval_docs)
        samples[task_name] = list(range(min(task_settings.limit, n_docs)))
    return samples


@functools.lru_cache(maxsize=256)
def _jinja_template(source: str) -> Any:
    from lm_eval.utils import env

    return env.from_string(source)


def _apply_template(template: str, doc: dict[str, Any]) -> str:
    """lm_eval.utils.apply_template, with the compiled template cached."""
    return _jinja_template(template).render(**doc)


def _is_na(value: Any) -> bool:
    return isinstance(value, str) and value == "N/A"


def _yaml_str(path: Path) -> str:
    """A path escaped for use inside a double-quoted YAML string."""
    return json.dumps(str(path))[1:-1]
