"""One Prefect task per stage kind, each a call of `solar.stages.run_stage`, in this
process (execution mode `local`) or as a run of the kind's stage deployment on its work
pool (mode `pools`: GPU kinds on the GPU pool, the rest on the CPU pool).

The cache key of a stage is its fingerprint. A cache hit must never return an artifact
that is gone or unfinished, so the key also carries a token that is renewed whenever the
artifact is found incomplete: the next run then misses the cache and rebuilds.

A stage that fails transiently (a dropped connection, a timeout, an I/O hiccup) is retried
`RETRIES` times after `RETRY_DELAYS` seconds; bad input (ValueError, a missing file) and a
full disk fail at once. Change both per task with `task.with_options(retries=...,
retry_delay_seconds=...)`. A retry resumes from the stage's checkpoints and journals.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect import task
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from solar.artifacts import DiskFull, StageResult, Verify, is_complete, load_result, stage_dir
from solar.plan import Stage
from solar.stages import BUILDERS, run_stage
from solar.tracking import TrackingContext

KEYS_DIR = ".cache-keys"
RETRIES = 2
RETRY_DELAYS = exponential_backoff(backoff_factor=10)(RETRIES)  # [10, 20] seconds
# OSErrors that are about the input or the disk, not the moment: retrying cannot help.
PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                       FileExistsError, DiskFull)

# Which pool a kind runs on in `pools` mode, and the deployment of the `solar-stage` flow
# that runs it there: one per GPU stage kind, one for every CPU kind.
GPU_KINDS = ("pretrain", "sft", "dpo", "eval", "perplexity")
STAGE_FLOW = "solar-stage"


def deployment_of(kind: str) -> str:
    """`solar-stage/<name>` of the deployment that builds stages of `kind` in pools mode."""
    if kind == "perplexity":
        return f"{STAGE_FLOW}/eval"  # an eval-kind job: a forward pass over held-out text
    return f"{STAGE_FLOW}/{kind if kind in GPU_KINDS else 'cpu'}"


def stage_cache_key(context: TaskRunContext, parameters: dict) -> str:
    """`<fingerprint>-<token>`; the token is new whenever the artifact is not complete."""
    stage: Stage = parameters["stage"]
    root = Path(parameters["root"]).resolve()
    token_file = root / KEYS_DIR / stage.fingerprint
    deep = parameters.get("verify", "fast") == "hash"
    if is_complete(stage_dir(root, stage.kind, stage.fingerprint), deep) and token_file.is_file():
        token = token_file.read_text().strip()
    else:
        token = uuid.uuid4().hex[:12]
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token)
    return f"solar-{stage.fingerprint}-{token}"


def is_transient(error: BaseException | None) -> bool:
    """Worth retrying: connection errors and timeouts (requests' and the hub's errors are
    OSErrors too) and I/O errors, but not bad input, a missing file or a full disk."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return isinstance(error, OSError) and not isinstance(error, PERMANENT_OS_ERRORS)


def retry_transient(task, task_run, state) -> bool:
    """Prefect's `retry_condition_fn`: retry a failed stage only if its error is transient."""
    error = state.data if isinstance(state.data, BaseException) else None
    return is_transient(error)


def pool_of(kind: str) -> str:
    """`gpu` or `cpu`: the pool (and the task tag) of a stage kind."""
    return "gpu" if kind in GPU_KINDS else "cpu"


def limited_pools() -> set[str]:
    """The pools with a tag concurrency limit on the Prefect server (e.g. `prefect
    concurrency-limit create gpu 1`). Only their stages are tagged: Prefect asks the server
    for a slot for every tag of every task run, which cost ~0.25 s a stage while the
    pipeline ran here (more than most stages of the tiny preset compute)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    limited = set()
    with get_client(sync_client=True) as client:
        for pool in ("cpu", "gpu"):
            try:
                client.read_global_concurrency_limit_by_name(f"tag:{pool}")
            except ObjectNotFound:
                continue
            limited.add(pool)
    return limited


def stage_task(kind: str):
    """A task that builds stages of one kind, named `<kind>:<stage name>` in the UI.
    Untagged; `tagged(kind, limited)` adds the pool tag where a limit applies."""

    @task(
        name=kind,
        task_run_name=f"{kind}:{{stage.name}}",
        cache_key_fn=stage_cache_key,
        persist_result=True,
        retries=RETRIES,
        retry_delay_seconds=RETRY_DELAYS,
        retry_jitter_factor=0.2,
        retry_condition_fn=retry_transient,
    )
    def build(
        stage: Stage,
        inputs: dict[str, StageResult],
        root: str,
        tracking: TrackingContext | None,
        dispatch: bool = False,
        verify: Verify = "fast",
    ) -> StageResult:
        if not dispatch:
            return run_stage(stage, inputs, root, tracking, verify)
        return dispatch_stage(stage, inputs, root, tracking, verify)

    return build


def dispatch_stage(
    stage: Stage, inputs: dict[str, StageResult], root: str, tracking: TrackingContext | None,
    verify: Verify = "fast",
) -> StageResult:
    """Run `stage` as a run of its kind's deployment and wait for it; the artifact, which
    the stage flow wrote under the shared `root`, is the result."""
    from prefect.deployments import run_deployment

    name = deployment_of(stage.kind)
    run = run_deployment(
        name,
        parameters={"stage": stage, "inputs": inputs, "root": root, "tracking": tracking, "verify": verify},
        flow_run_name=f"{stage.kind}:{stage.name}",
        timeout=None,  # training takes as long as it takes; the flow run has its own limits
        poll_interval=1,  # seconds; a finished stage is noticed within ~1 s
    )
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise RuntimeError(f"stage {stage.name}: flow run {run.name} of {name} ended {state}: "
                           f"{run.state.message if run.state else ''}")
    return load_result(stage_dir(Path(root), stage.kind, stage.fingerprint))


STAGE_TASKS = {kind: stage_task(kind) for kind in BUILDERS}  # one task per stage kind


def tagged(kind: str, limited: set[str]):
    """The task of `kind`, tagged with its pool if that pool's tag has a concurrency limit."""
    pool = pool_of(kind)
    return STAGE_TASKS[kind].with_options(tags=[pool]) if pool in limited else STAGE_TASKS[kind]
