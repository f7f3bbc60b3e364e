"""Open LLM Leaderboard "H6" evaluation through lm-evaluation-harness.

Two sources of task definitions, one code path (``evaluate_h6``), the same score keys:

* local (the default, fully offline): lm-eval YAML templates in ``solar/eval_tasks/``
  that mirror the harness's own task configs but read small local JSONL files in the hub
  schemas::

    data_dir/arc_challenge/{train,test}.jsonl   data_dir/mmlu/{dev,test}.jsonl
    data_dir/hellaswag/{train,validation}.jsonl data_dir/truthfulqa_mc/validation.jsonl
    data_dir/winogrande/{train,validation}.jsonl data_dir/gsm8k/{train,test}.jsonl

* hub (``hub=True``): the harness's registered leaderboard tasks (arc_challenge,
  hellaswag, the mmlu group, truthfulqa_mc2, winogrande, gsm8k), their YAML configs as
  installed, with the leaderboard's shots. Their datasets come from the hub, or, with a
  ``data_dir`` in the layout above, from those local files (``dataset_path: json``; the
  only change made to a registered config): air-gapped machines and tests.

``evaluate_h6`` loads the tasks, points lm-eval at them, runs ``lm_eval.simple_evaluate``
on an ``HFLM`` wrapping the local model, and returns plain float scores.
"""

from __future__ import annotations

import functools
import json
import math
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import numpy as np


class H6Task(NamedTuple):
    """One leaderboard task: local lm-eval task name, reported metric/filter, leaderboard
    shots, the harness's registered task (a group for MMLU) and the local data subdirectory."""

    task: str
    metric: str
    filter: str
    num_fewshot: int
    registered: str
    subdir: str


#: Short name -> task spec, in leaderboard order. The only place these are written down.
H6_TASKS: Mapping[str, H6Task] = {
    "arc": H6Task("h6_arc", "acc_norm", "none", 25, "arc_challenge", "arc_challenge"),
    "hellaswag": H6Task("h6_hellaswag", "acc_norm", "none", 10, "hellaswag", "hellaswag"),
    "mmlu": H6Task("h6_mmlu", "acc", "none", 5, "mmlu", "mmlu"),
    # mc2, stored as "acc"
    "truthfulqa": H6Task("h6_truthfulqa", "acc", "none", 0, "truthfulqa_mc2", "truthfulqa_mc"),
    "winogrande": H6Task("h6_winogrande", "acc", "none", 5, "winogrande", "winogrande"),
    "gsm8k": H6Task("h6_gsm8k", "exact_match", "strict-match", 5, "gsm8k", "gsm8k"),
}

#: The directories of lm_eval/tasks that define the registered tasks above. Indexing only
#: these takes about a second; the whole registry (14k tasks) about ten.
REGISTERED_DIRS = ("arc", "hellaswag", "mmlu/default", "truthfulqa", "winogrande", "gsm8k")

#: The column by which a group's local file is split among its subtasks: each registered
#: MMLU subtask reads the rows whose `subject` is its `dataset_name` (as cais/mmlu does).
GROUP_SPLIT_COLUMN = "subject"

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


@dataclass
class LoadedTasks:
    """Tasks ready for simple_evaluate: the TaskManager that built them (without one the
    harness indexes its whole registry, ~10 s), the objects to run (tasks and groups), the
    leaf tasks behind each short name, the results key that holds its score, and where the
    task definitions and data came from (written to lm_eval_results.json)."""

    manager: Any
    run: list[Any]
    leaves: dict[str, dict[str, Any]]
    result_keys: dict[str, str]
    provenance: dict[str, Any]


def evaluate_h6(
    model_dir: Path,
    data_dir: Path | None,
    out_dir: Path,
    tasks: dict[str, TaskSettings] | None = None,
    batch_size: int = 8,
    max_gen_toks: int = 256,
    device: str = "cpu",
    seed: int = 1234,
    log_samples: bool = False,
    dtype: str = "float32",
    apply_chat_template: bool = False,
    hub: bool = False,
) -> dict[str, float]:
    """Score the HF model in model_dir on the H6 tasks (all six when tasks is None).

    ``hub=False`` runs the local task templates over ``data_dir``; ``hub=True`` runs the
    harness's registered tasks, reading their hub datasets, or the files of ``data_dir``
    when it is given. A task's `limit` counts documents per lm-eval task: for hub MMLU,
    per subject (as the harness's own ``--limit`` does).

    Returns ``{short task name: score, "gsm8k_flexible": ..., "h6": ...}`` as plain floats.
    ``h6`` is the mean of the primary scores of the tasks that were run (all six by
    default; only the requested ones for a subset). Writes ``out_dir/scores.json`` (the
    returned dict), ``out_dir/lm_eval_results.json`` (harness results, configs, versions,
    n-shot, and under ``solar`` where tasks and data came from; JSON-safe) and, with
    ``log_samples``, ``out_dir/samples_<task>.jsonl``.
    """
    from lm_eval import simple_evaluate

    settings = {name: TaskSettings() for name in H6_TASKS} if tasks is None else tasks
    unknown = sorted(set(settings) - set(H6_TASKS))
    if unknown or not settings:
        raise ValueError(f"unknown or no tasks {unknown}; choose from {list(H6_TASKS)}")
    settings = {name: settings[name] for name in H6_TASKS if name in settings}
    if data_dir is None and not hub:
        raise ValueError("local evaluation needs a data_dir")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    lm = load_hflm(Path(model_dir), batch_size=batch_size, device=device, dtype=dtype)
    with tempfile.TemporaryDirectory(prefix="h6_tasks_") as tmp:
        work, data = Path(tmp), None if data_dir is None else Path(data_dir)
        if hub:
            loaded = load_registered_tasks(work, settings, data)
        else:
            assert data is not None
            loaded = load_local_tasks(work, settings, data, max_gen_toks)
        samples = _doc_indices(loaded.leaves, settings)
        # Skip lm-eval's provenance probes (`git describe` in the CWD, torch env dump) and
        # reuse compiled Jinja prompt templates (lm-eval recompiles one per field per doc).
        with (
            mock.patch("lm_eval.evaluator.get_git_commit_hash", lambda: None),
            mock.patch("lm_eval.evaluator.add_env_info", lambda storage: None),
            mock.patch("lm_eval.utils.apply_template", _apply_template),
        ):
            results = simple_evaluate(
                model=lm,
                tasks=loaded.run,
                task_manager=loaded.manager,
                samples=samples or None,
                bootstrap_iters=0,
                log_samples=log_samples,
                apply_chat_template=apply_chat_template,
                # The harness's --gen_kwargs: the registered gsm8k sets no length itself.
                gen_kwargs={"max_gen_toks": int(max_gen_toks)},
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
    if results is None:
        raise RuntimeError("lm-eval returned no results (not rank 0?)")

    scores = extract_scores(results["results"], list(settings), loaded.result_keys)
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    keep = ("results", "configs", "versions", "n-shot", "higher_is_better", "n-samples")
    harness = json_safe({key: results[key] for key in keep if key in results})
    harness["solar"] = json_safe(loaded.provenance)
    (out_dir / "lm_eval_results.json").write_text(json.dumps(harness, indent=2) + "\n")
    if log_samples:
        for task_name, rows in results.get("samples", {}).items():
            lines = (json.dumps(json_safe(row)) + "\n" for row in rows)
            (out_dir / f"samples_{task_name}.jsonl").write_text("".join(lines))
    return scores


def load_local_tasks(
    work: Path, settings: Mapping[str, TaskSettings], data_dir: Path, max_gen_toks: int
) -> LoadedTasks:
    """The solar/eval_tasks templates, rendered into work for data_dir, loaded."""
    from lm_eval.tasks import TaskManager

    render_task_configs(work, data_dir, settings, max_gen_toks)
    manager = TaskManager(include_path=str(work), include_defaults=False)
    loaded = manager.load([H6_TASKS[name].task for name in settings])["tasks"]
    return LoadedTasks(
        manager=manager,
        run=list(loaded.values()),
        leaves={name: {H6_TASKS[name].task: loaded[H6_TASKS[name].task]} for name in settings},
        result_keys={name: H6_TASKS[name].task for name in settings},
        provenance={"source": "local templates", "data_dir": str(data_dir)},
    )


def registered_tasks_root() -> Path:
    """lm_eval/tasks of the installed harness: where its registered task YAMLs live."""
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def registered_task_manager() -> Any:
    """A TaskManager over the installed harness's own leaderboard task directories."""
    from lm_eval.tasks import TaskManager

    root = registered_tasks_root()
    return TaskManager(include_path=[str(root / d) for d in REGISTERED_DIRS], include_defaults=False)


def registered_leaves(manager: Any, name: str) -> list[str]:
    """The leaf tasks of a registered task, group or tag, in the group's order."""
    from lm_eval.tasks._index import Kind

    entry = manager.task_index.get(name)
    if entry is None:
        raise KeyError(f"lm-eval has no registered task {name!r} under {REGISTERED_DIRS}")
    if entry.kind is Kind.TAG:
        return sorted(entry.tags)
    if entry.kind is Kind.GROUP:
        members = [m if isinstance(m, str) else m["task"] for m in entry.cfg["task"]]
        return [leaf for member in members for leaf in registered_leaves(manager, member)]
    return [name]


@functools.cache
def registered_task_versions() -> dict[str, Any]:
    """Each registered leaderboard task's `metadata.version`, for the eval fingerprint; a
    group (MMLU) as its own version, its subtask count and their distinct versions."""
    try:
        manager = registered_task_manager()
    except ImportError:
        return {"lm_eval": "absent"}
    versions: dict[str, Any] = {}
    for spec in H6_TASKS.values():
        version = _version(manager, spec.registered)
        leaves = registered_leaves(manager, spec.registered)
        if leaves == [spec.registered]:
            versions[spec.registered] = version
        else:
            versions[spec.registered] = {
                "version": version,
                "tasks": len(leaves),
                "task_versions": sorted({str(_version(manager, leaf)) for leaf in leaves}),
            }
    return versions


def load_registered_tasks(work: Path, settings: Mapping[str, TaskSettings], data_dir: Path | None) -> LoadedTasks:
    """The harness's registered leaderboard tasks with the leaderboard's (or the given)
    shots; with data_dir, each reads its local files instead of its hub dataset.

    A group (MMLU) runs as an inline group of its registered subtasks with the group's own
    `aggregate_metric_list` (acc weighted by size: the mean over all documents, the number
    the registered nested group also gives). With data_dir, only the subjects present in
    the local file run.
    """
    from lm_eval.tasks._index import Kind

    manager = registered_task_manager()
    root = registered_tasks_root()
    run: list[Any] = []
    leaves: dict[str, dict[str, Any]] = {}
    provenance: dict[str, Any] = {"source": "hub" if data_dir is None else f"local files: {data_dir}"}
    for name, task_settings in settings.items():
        spec = H6_TASKS[name]
        shots = spec.num_fewshot if task_settings.num_fewshot is None else task_settings.num_fewshot
        local = None if data_dir is None else data_dir / spec.subdir
        entry = manager.task_index[spec.registered]
        if entry.kind is Kind.GROUP:
            loaded = _load_one(manager, _group_configs(manager, spec.registered, shots, local, work))
            run.append(_group(entry.cfg, loaded["tasks"]))
        else:
            cfg = _registered_config(manager, spec.registered, shots)
            if local is not None:
                _override_dataset(cfg, _split_files(local), work)
            loaded = _load_one(manager, cfg)
            run.append(loaded["tasks"][spec.registered])
        leaves[name] = loaded["tasks"]
        provenance[spec.registered] = {
            "config": str(Path(entry.yaml_path).relative_to(root)),
            "version": _version(manager, spec.registered),
            "num_fewshot": shots,
            "tasks": {leaf: _version(manager, leaf) for leaf in loaded["tasks"]},
        }
    return LoadedTasks(manager, run, leaves, {name: H6_TASKS[name].registered for name in settings}, provenance)


def _group(cfg: Mapping[str, Any], tasks: Mapping[str, Any]) -> Any:
    """A Group over the given tasks with a registered group's name, aggregation and
    metadata. Built here, not by TaskManager.load of an inline group dict, which passes
    the group's own keys (aggregate_metric_list) on to every subtask's config."""
    from lm_eval.api.group import Group
    from lm_eval.config.group import GroupConfig

    group = Group.from_config(GroupConfig(
        group=cfg["group"], task=list(tasks), aggregate_metric_list=cfg.get("aggregate_metric_list"),
        metadata=cfg.get("metadata"),
    ))
    for task in tasks.values():
        group.add(task)
    return group


def _registered_config(manager: Any, name: str, shots: int) -> dict[str, Any]:
    """A registered task's full config (includes and !function resolved, as the harness
    builds it), with the shots set."""
    from lm_eval.tasks._yaml_loader import load_yaml

    cfg = load_yaml(manager.task_index[name].yaml_path, resolve_func=True)
    for key in ("tag", "group", "task_list"):  # registry structure, not task config
        cfg.pop(key, None)
    cfg["num_fewshot"] = int(shots)
    return cfg


def _group_configs(manager: Any, group: str, shots: int, local: Path | None, work: Path) -> list[dict[str, Any]]:
    """The configs of a registered group's subtasks; with local, each subtask reads the
    rows of the group's local files whose GROUP_SPLIT_COLUMN is its dataset_name."""
    per_value = None if local is None else _split_group_files(local, work / "groups" / group)
    configs = []
    for leaf in registered_leaves(manager, group):
        cfg = _registered_config(manager, leaf, shots)
        if per_value is not None:
            files = per_value.pop(cfg.get("dataset_name"), None)
            if files is None:
                continue  # a subject the local files do not hold
            value = cfg.get("dataset_name")
            _override_dataset(cfg, files, work, f"{local}/{{split}}.jsonl ({GROUP_SPLIT_COLUMN} {value!r})")
        configs.append(cfg)
    if per_value:
        raise ValueError(
            f"{local}: {GROUP_SPLIT_COLUMN} values {sorted(per_value)} match no registered "
            f"{group} subtask's dataset_name"
        )
    if not configs:
        raise ValueError(f"{local}: no rows for any registered {group} subtask")
    return configs


def _split_files(directory: Path) -> dict[str, Path]:
    """split name -> JSONL file of a local benchmark directory (`test.jsonl` is `test`)."""
    files = {path.stem: path for path in sorted(directory.glob("*.jsonl"))}
    if not files:
        raise FileNotFoundError(f"{directory}: no *.jsonl split files")
    return files


SAFE_VALUE = re.compile(r"[A-Za-z0-9_.-]+")


def _split_group_files(directory: Path, dest: Path) -> dict[str, dict[str, Path]]:
    """Write each split file's rows into dest/<value>/<split>.jsonl by GROUP_SPLIT_COLUMN."""
    per_value: dict[str, dict[str, list[str]]] = {}
    for split, path in _split_files(directory).items():
        for lineno, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            value = json.loads(line).get(GROUP_SPLIT_COLUMN)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{path}: row {lineno}: no {GROUP_SPLIT_COLUMN!r} string")
            if not SAFE_VALUE.fullmatch(value) or value in (".", ".."):
                # the value names a directory below: never a path out of it
                raise ValueError(f"{path}: row {lineno}: {GROUP_SPLIT_COLUMN} {value!r} is not a plain "
                                 "name (letters, digits, '_', '-', '.')")
            per_value.setdefault(value, {}).setdefault(split, []).append(line + "\n")
    written: dict[str, dict[str, Path]] = {}
    for value, splits in per_value.items():
        (dest / value).mkdir(parents=True, exist_ok=True)
        for split, lines in splits.items():
            (dest / value / f"{split}.jsonl").write_text("".join(lines), "utf-8")
        written[value] = {split: dest / value / f"{split}.jsonl" for split in splits}
    return written


def _override_dataset(cfg: dict[str, Any], files: Mapping[str, Path], work: Path, origin: str = "") -> None:
    """Point a registered config at local JSONL files (the one change made to it), after
    checking the splits it reads are there: the one it scores and the one its few-shot
    examples come from. `origin` names the user's file in errors when the
    files are split copies ("{split}" is filled in)."""
    shots = int(cfg.get("num_fewshot") or 0)
    fewshot = cfg.get("fewshot_split") or cfg.get("training_split") or cfg.get("validation_split")
    # The few-shot split is read even at 0 shots: the harness builds its sampler up front.
    for split in [cfg.get("test_split") or cfg.get("validation_split"), fewshot]:
        if split and split not in files:
            where = origin.format(split=split) if origin else next(iter(files.values())).parent / f"{split}.jsonl"
            raise FileNotFoundError(f"{cfg['task']}: needs split {split!r}: {where} is missing")
    if shots and fewshot:  # else the harness's sampler fails with a bare assertion
        rows = sum(1 for line in files[fewshot].read_text("utf-8").splitlines() if line.strip())
        if rows < shots:
            where = origin.format(split=fewshot) if origin else files[fewshot]
            raise ValueError(f"{cfg['task']}: {shots}-shot needs {shots} rows, {where} has {rows}")
    cfg["dataset_path"] = "json"
    cfg["dataset_name"] = None
    cfg["dataset_kwargs"] = {
        "data_files": {split: str(path.resolve()) for split, path in files.items()},
        "cache_dir": str((work / "hf_datasets").resolve()),
    }


def _load_one(manager: Any, spec: dict[str, Any] | list[dict[str, Any]]) -> Any:
    """Build one task, or a group's subtasks, from full configs (this downloads or reads
    their data), naming the first task on failure."""
    specs = spec if isinstance(spec, list) else [spec]
    try:
        return manager.load(specs)
    except Exception as e:
        names = [s["task"] for s in specs]
        what = names[0] if len(names) == 1 else f"{names[0]} (and {len(names) - 1} more)"
        raise RuntimeError(f"lm-eval task {what}: loading its dataset failed: {e}") from e


def _version(manager: Any, name: str) -> Any:
    return manager.task_index[name].cfg.get("metadata", {}).get("version")


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


def extract_scores(
    results: Mapping[str, Any], names: list[str], keys: Mapping[str, str] | None = None
) -> dict[str, float]:
    """Pick each task's leaderboard metric out of lm-eval's results (under keys[name],
    default the local task name); add the h6 mean."""
    keys = keys or {name: H6_TASKS[name].task for name in names}
    scores: dict[str, float] = {}
    for name in names:
        spec = H6_TASKS[name]
        scores[name] = float(results[keys[name]][f"{spec.metric},{spec.filter}"])
    for extra, (name, filter_name) in EXTRA_SCORES.items():
        if name in names:
            spec = H6_TASKS[name]
            scores[extra] = float(results[keys[name]][f"{spec.metric},{filter_name}"])
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


def _doc_indices(
    leaves: Mapping[str, Mapping[str, Any]], settings: Mapping[str, TaskSettings]
) -> dict[str, list[int]]:
    """Per-task doc limits as lm-eval `samples` (its `limit` is global, not per task); a
    short name's limit applies to each of its leaf tasks."""
    samples: dict[str, list[int]] = {}
    for name, task_settings in settings.items():
        if task_settings.limit is None:
            continue
        if task_settings.limit < 1:
            raise ValueError(f"{name}: limit must be >= 1, got {task_settings.limit}")
        for task_name, task in leaves[name].items():
            samples[task_name] = list(range(min(task_settings.limit, len(task.eval_docs))))
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
