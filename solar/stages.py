"""Run one stage of the plan: find it built, or build it atomically and track it.

`run_stage` is what an orchestrator calls (a Prefect task, a notebook, a script): it is a
plain function from a planned stage and its inputs' results to the stage's result.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from solar.artifacts import StageResult, Verify, building, finish, is_complete, load_result, stage_dir
from solar.plan import Stage, embedded_path, resolve_local_source
from solar.spec import BaseSpec, TinyModel, TrainSpec
from solar.tracking import StageRun, TrackingContext, stage_run

Builder = Callable[[dict[str, Any], list[Path], Path, StageRun], dict[str, float]]


def build_base(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.model import build_tiny, fetch_base

    if p["model"] == "embedded":
        return build_tiny(TinyModel(**p["tiny"]), embedded_path("corpus.jsonl"), out)
    return fetch_base(BaseSpec(**{k: v for k, v in p.items() if k in BaseSpec.model_fields}), out)


def build_upscale(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.checks import check_model_dir
    from solar.dus import upscale

    check_model_dir(inputs[0])  # headers, config and tokenizer before a tensor is read
    return upscale(inputs[0], out, p["m"], p["ranges"], p["shard_size_mb"] * 1_000_000)


def build_data(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.data import prepare

    local = resolve_local_source(p["source"])
    return prepare(p["source"], local, p["format"], p["split"], p["revision"], p["cap"], p["seed"], out,
                   p["columns"], p["task_column"], p["on_bad_row"])


def build_math_instruct(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.synth import OfflineRephraser, make_generator, math_instruct

    if p["backend"] == "offline":
        return math_instruct(inputs[0], out, OfflineRephraser(p["seed"]), p["cap"], p["seed"])
    generator = make_generator(p)  # journals in the work dir, which outlives a failed attempt
    try:
        return math_instruct(inputs[0], out, None, p["cap"], p["seed"], generator, run.work_dir,
                             p["max_concurrency"])
    finally:
        generator.close()


def build_decontam(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.decontam import decontaminate, load_eval_index, report_markdown, report_table

    eval_root = resolve_local_source(p["eval_data"])
    if eval_root is None:
        raise ValueError(f"decontamination.eval_data: {p['eval_data']!r}: give a local directory "
                         "of eval sets (one subdirectory per benchmark), not a hub id")
    index = load_eval_index(eval_root, p["ngram"], p["min_tokens"])
    metrics, report = decontaminate(inputs[0], out, index, p["threshold"], p["flan_tasks"],
                                    p["examples"], name=run.stage_name or inputs[0].name)
    run.log_text(json.dumps(report, indent=2, ensure_ascii=False), "decontam/report.json")
    run.log_text(report_markdown(report), "decontam/report.md")
    run.log_table(report_table(report), "decontam/removed.json")
    return metrics


def build_math_alignment(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.synth import math_alignment

    return math_alignment(inputs[0], out, p["cap"], p["seed"])


def checkpoints(run: StageRun) -> Path | None:
    """Training checkpoints live in the stage's work dir, which outlives a killed attempt.
    A checkpoint killed while being written (the trainer writes `trainer_state.json` last)
    is removed, so the trainer resumes from the newest whole one."""
    if not run.work_dir:
        return None
    path = run.work_dir / "checkpoints"
    for partial in path.glob("checkpoint-*"):
        if partial.is_dir() and not _whole_checkpoint(partial):
            shutil.rmtree(partial, ignore_errors=True)
    return path


def _whole_checkpoint(path: Path) -> bool:
    try:
        json.loads((path / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def ref_cache(run: StageRun) -> Path | None:
    """Reference log-probs shared by DPO stages: `<root>/.refcache`, beside the work dirs."""
    return run.work_dir.parent.parent / ".refcache" if run.work_dir else None


def build_pretrain(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.train import pretrain

    return pretrain(inputs[0], inputs[1], out, TrainSpec(**p["train"]), run.log, checkpoints(run))


def build_sft(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.train import sft

    return sft(inputs[0], inputs[1:], out, TrainSpec(**p["train"]), p["chat_template"], run.log,
               checkpoints(run))


def build_dpo(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.train import dpo

    return dpo(inputs[0], inputs[1:], out, TrainSpec(**p["train"]), p["beta"], p["loss_type"],
               p["chat_template"], run.log, checkpoints(run), ref_cache(run))


def build_merge(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.checks import check_model_dir
    from solar.merge import merge_models

    for model_dir in inputs:  # headers, config and tokenizer before a tensor is read
        check_model_dir(model_dir)
    based = p["method"] in ("task_arithmetic", "ties", "dare")  # the base is the last input
    return merge_models(
        inputs[:-1] if based else inputs, out, p["method"], p["weights"], p["t"], p["dtype"],
        base=inputs[-1] if based else None, density=p["density"], scale=p["scale"], seed=p["seed"],
        tokenizer_policy=p["tokenizer_policy"], shard_bytes=p["shard_size_mb"] * 1_000_000,
    )


def build_eval(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.evaluate import TaskSettings, evaluate_h6

    hub = p["data"] == "hub"  # the harness's registered tasks; else solar/eval_tasks
    if not hub and not p["data"].startswith("embedded:"):
        raise ValueError(f"eval.data: {p['data']!r}: give embedded:<dir> or hub")
    if hub:  # None: the registered tasks download their hub datasets
        overrides = p.get("dataset_overrides")
        data_dir = resolve_local_source(overrides) if overrides else None
    else:
        data_dir = embedded_path(p["data"].removeprefix("embedded:"))
    tasks = {name: TaskSettings(num_fewshot=t["shots"], limit=t["limit"]) for name, t in p["tasks"].items()}
    scores = evaluate_h6(
        inputs[0], data_dir, out, tasks=tasks,
        batch_size=p["batch_size"], max_gen_toks=p["max_gen_toks"], seed=p["seed"],
        dtype=p["dtype"], apply_chat_template=p["chat_template"], hub=hub,
    )
    run.log_text(json.dumps(scores, indent=2), "scores.json")
    return scores


def build_perplexity(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.data import read_rows
    from solar.perplexity import perplexity, split_heldout

    _, heldout = split_heldout([r["text"] for r in read_rows(inputs[1])])
    return perplexity(inputs[0], heldout, p["max_length"], p["batch_size"])


def build_select(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.selection import select

    half = len(inputs) // 2  # candidates, then their evaluations
    return select(inputs[:half], inputs[half:], out, p["select_by"])


BUILDERS: dict[str, Builder] = {
    "base": build_base,
    "upscale": build_upscale,
    "data": build_data,
    "math-instruct": build_math_instruct,
    "math-alignment": build_math_alignment,
    "decontam": build_decontam,
    "pretrain": build_pretrain,
    "sft": build_sft,
    "dpo": build_dpo,
    "merge": build_merge,
    "select": build_select,
    "eval": build_eval,
    "perplexity": build_perplexity,
}


def run_stage(
    stage: Stage,
    inputs: dict[str, StageResult],
    root: str | Path,
    tracking: TrackingContext | None = None,
    verify: Verify = "fast",
) -> StageResult:
    """Build `stage` from its inputs' artifacts into `root`, unless it is built already
    (checked as `verify` says, see solar/artifacts.py).

    The output appears at its fingerprint's directory only once complete; its manifest
    records the metrics, and the MLflow child run its params, curves and metrics."""
    out = stage_dir(Path(root).resolve(), stage.kind, stage.fingerprint)
    if is_complete(out, deep=verify == "hash"):
        return load_result(out)
    missing = [name for name in stage.inputs if name not in inputs]
    if missing:
        raise ValueError(f"stage {stage.name}: inputs {missing} were not given")
    input_dirs = [Path(inputs[name].path) for name in stage.inputs]
    tags = {
        "solar.stage": stage.name,
        "solar.kind": stage.kind,
        "solar.fingerprint": stage.fingerprint,
        "solar.inputs": ",".join(stage.inputs),
        "solar.artifact": str(out),
    }
    with stage_run(tracking, stage.name, tags, stage.params) as run, building(out) as tmp:
        # Scratch that survives a failed attempt (e.g. a generation journal), gone on success.
        run.work_dir, run.stage_name = work_dir(root, stage.fingerprint), stage.name
        if stage.kind in ("pretrain", "sft", "dpo"):
            run.log_data_inputs(data_inputs(stage, inputs))
        start = time.perf_counter()
        with collector_skips_what_exists():
            metrics = BUILDERS[stage.kind](stage.params, input_dirs, tmp, run)
        metrics["stage_seconds"] = time.perf_counter() - start  # the stage's own compute
        run.log(metrics)
        result = StageResult(
            stage.name, stage.kind, stage.fingerprint, str(out), metrics, run.run_id,
            tracking.parent_run_id if tracking else None,
        )
        finish(tmp, result, extra={
            "params": stage.params,
            "inputs": {name: inputs[name].fingerprint for name in stage.inputs},
            # MLflow calls given up on (server lost mid-stage): the model is fine, its run is not.
            "tracking_errors": run.errors + ([f"{run.skipped} later calls skipped"] if run.skipped else []),
        })
    shutil.rmtree(run.work_dir, ignore_errors=True)
    return result


@contextlib.contextmanager
def collector_skips_what_exists():
    """Hide every object alive now (the libraries' modules, classes and caches: millions of
    objects once torch, transformers and lm-eval are loaded) from Python's cycle collector
    until the block ends, so that the full collections libraries force (accelerate's
    `free_memory` before and after each training run) only walk what the stage made: each
    took ~0.5 s here. Nothing leaks: the objects rejoin the collector afterwards."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def work_dir(root: str | Path, fingerprint: str) -> Path:
    """`<root>/.work/<fingerprint>`: where a stage keeps what a retry should not redo."""
    return Path(root).resolve() / ".work" / fingerprint[:20]


def data_inputs(stage: Stage, inputs: dict[str, StageResult]) -> list[dict[str, Any]]:
    """The prepared datasets a training stage reads, with their content hashes (lineage)."""
    from solar.data import read_info

    out = []
    for name in stage.inputs:
        info = read_info(Path(inputs[name].path))
        if info is not None:
            out.append({"name": name, "path": inputs[name].path, "digest": info["digest"],
                        "rows": info.get("rows"), "source": info.get("source"),
                        "context": "train"})
    return out
