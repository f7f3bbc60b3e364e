"""One Prefect task per stage kind, each a call of `solar.stages.run_stage`.

The cache key of a stage is its fingerprint. A cache hit must never return an artifact
that is gone or unfinished, so the key also carries a token that is renewed whenever the
artifact is found incomplete: the next run then misses the cache and rebuilds.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect import task
from prefect.context import TaskRunContext

from solar.artifacts import StageResult, is_complete, stage_dir
from solar.plan import Stage
from solar.stages import run_stage
from solar.tracking import TrackingContext

KEYS_DIR = ".cache-keys"


def stage_cache_key(context: TaskRunContext, parameters: dict) -> str:
    """`<fingerprint>-<token>`; the token is new whenever the artifact is not complete."""
    stage: Stage = parameters["stage"]
    root = Path(parameters["root"]).resolve()
    token_file = root / KEYS_DIR / stage.fingerprint
    if is_complete(stage_dir(root, stage.kind, stage.fingerprint)) and token_file.is_file():
        token = token_file.read_text().strip()
    else:
        token = uuid.uuid4().hex[:12]
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token)
    return f"solar-{stage.fingerprint}-{token}"


def stage_task(kind: str, tags: tuple[str, ...]):
    """A task that builds stages of one kind, named `<kind>:<stage name>` in the UI."""

    @task(
        name=kind,
        task_run_name=f"{kind}:{{stage.name}}",
        cache_key_fn=stage_cache_key,
        persist_result=True,
        tags=list(tags),
    )
    def build(
        stage: Stage, inputs: dict[str, StageResult], root: str, tracking: TrackingContext | None
    ) -> StageResult:
        return run_stage(stage, inputs, root, tracking)

    return build


# Which pool a kind belongs to: tagged so that concurrency limits (e.g. `gpu`) apply.
build_base = stage_task("base", ("cpu",))
upscale = stage_task("upscale", ("cpu",))
prepare_data = stage_task("data", ("cpu",))
math_instruct = stage_task("math-instruct", ("cpu",))
math_alignment = stage_task("math-alignment", ("cpu",))
decontaminate = stage_task("decontam", ("cpu",))
pretrain = stage_task("pretrain", ("gpu",))
sft = stage_task("sft", ("gpu",))
dpo = stage_task("dpo", ("gpu",))
merge = stage_task("merge", ("cpu",))
select_candidate = stage_task("select", ("cpu",))
evaluate = stage_task("eval", ("gpu",))
perplexity = stage_task("perplexity", ("gpu",))

STAGE_TASKS = {
    "base": build_base,
    "upscale": upscale,
    "data": prepare_data,
    "math-instruct": math_instruct,
    "math-alignment": math_alignment,
    "decontam": decontaminate,
    "pretrain": pretrain,
    "sft": sft,
    "dpo": dpo,
    "merge": merge,
    "select": select_candidate,
    "eval": evaluate,
    "perplexity": perplexity,
}
