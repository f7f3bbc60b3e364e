"""Run one stage of the plan: find it built, or build it atomically and track it.

`run_stage` is what an orchestrator calls (a Prefect task, a notebook, a script): it is a
plain function from a planned stage and its inputs' results to the stage's result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from solar.artifacts import StageResult, building, finish, is_complete, load_result, stage_dir
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
    from solar.dus import upscale

    return upscale(inputs[0], out, p["m"])


def build_data(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.data import prepare

    local = resolve_local_source(p["source"])
    return prepare(p["source"], local, p["format"], p["split"], p["revision"], p["cap"], p["seed"], out)


def build_math_instruct(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.synth import OfflineRephraser, math_instruct

    return math_instruct(inputs[0], out, OfflineRephraser(p["seed"]), p["cap"], p["seed"])


def build_math_alignment(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.synth import math_alignment

    return math_alignment(inputs[0], out, p["cap"], p["seed"])


def build_pretrain(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.train import pretrain

    return pretrain(inputs[0], inputs[1], out, TrainSpec(**p["train"]), run.log)


def build_sft(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.train import sft

    return sft(inputs[0], inputs[1:], out, TrainSpec(**p["train"]), p["chat_template"], run.log)


def build_dpo(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.train import dpo

    return dpo(inputs[0], inputs[1:], out, TrainSpec(**p["train"]), p["beta"], p["loss_type"],
               p["chat_template"], run.log)


def build_merge(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.merge import merge_models

    return merge_models(inputs, out, p["method"], p["weights"], p["t"], p["dtype"])


def build_eval(p: dict[str, Any], inputs: list[Path], out: Path, run: StageRun) -> dict[str, float]:
    from solar.evaluate import TaskSettings, evaluate_h6

    if not p["data"].startswith("embedded:"):
        raise ValueError(f"eval.data: {p['data']!r}: only the embedded eval sets run offline here")
    tasks = {name: TaskSettings(num_fewshot=t["shots"], limit=t["limit"]) for name, t in p["tasks"].items()}
    scores = evaluate_h6(
        inputs[0], embedded_path(p["data"].removeprefix("embedded:")), out, tasks=tasks,
        batch_size=p["batch_size"], max_gen_toks=p["max_gen_toks"], seed=p["seed"],
    )
    run.log_text(json.dumps(scores, indent=2), "scores.json")
    return scores


BUILDERS: dict[str, Builder] = {
    "base": build_base,
    "upscale": build_upscale,
    "data": build_data,
    "math-instruct": build_math_instruct,
    "math-alignment": build_math_alignment,
    "pretrain": build_pretrain,
    "sft": build_sft,
    "dpo": build_dpo,
    "merge": build_merge,
    "eval": build_eval,
}


def run_stage(
    stage: Stage,
    inputs: dict[str, StageResult],
    root: str | Path,
    tracking: TrackingContext | None = None,
) -> StageResult:
    """Build `stage` from its inputs' artifacts into `root`, unless it is built already.

    The output appears at its fingerprint's directory only once complete; its manifest
    records the metrics, and the MLflow child run its params, curves and metrics."""
    out = stage_dir(Path(root).resolve(), stage.kind, stage.fingerprint)
    if is_complete(out):
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
        metrics = BUILDERS[stage.kind](stage.params, input_dirs, tmp, run)
        run.log(metrics)
        result = StageResult(
            stage.name, stage.kind, stage.fingerprint, str(out), metrics, run.run_id,
            tracking.parent_run_id if tracking else None,
        )
        finish(tmp, result, extra={
            "params": stage.params,
            "inputs": {name: inputs[name].fingerprint for name in stage.inputs},
        })
    return result
