"""Deploy the SOLAR flows from local source to the CPU and GPU work pools.

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/deploy.py
    python deployments/deploy.py --only solar-preset/tiny --cpu-pool my-cpu
    python deployments/deploy.py --write-yaml     # regenerate deployments/prefect.yaml

The deployments:
- `solar-preset/paper-ablation`, `solar-preset/tiny`: the whole pipeline (CPU pool); the
  run form offers the preset, the common options, overrides and the full spec.
- `solar-sweep/ablation-sweep`: a preset over a grid of overrides, with a weekly cron
  schedule that is created inactive (turn it on in the UI).
- `solar-stage/pretrain|sft|dpo|eval` on the GPU pool and `solar-stage/cpu` on the CPU
  pool: what a pipeline in `execution.mode: pools` runs each stage as.

Workers run the flows from `--source` (default: this repository), so they must see that
directory, and the stages share the artifact root: on one machine any path, across
machines a shared volume mounted at the same path. The server checks run parameters
against each flow's signature (`enforce_parameter_schema`). The pools must exist
(`python deployments/servers.py up` creates them, or `prefect work-pool create`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CPU_POOL, GPU_POOL = "solar-cpu", "solar-gpu"
SWEEP_CRON = "0 3 * * 6"  # Saturdays 03:00, created inactive
# DPO beta x DPO data mixture x the SFT merge's weights: 12 points of the paper's ablation.
SWEEP_GRID = {
    "dpo.dpo-v1.beta": [0.05, 0.1, 0.2],
    "dpo.dpo-v1.datasets": [["ultrafeedback"], ["ultrafeedback", "math-alignment"]],
    "merges.sft-v3+v4.weights": [[0.5, 0.5], [0.4, 0.6]],
}


@dataclass(frozen=True)
class Deployment:
    flow: str  # flow name: the deployment is `<flow>/<name>`
    name: str
    entrypoint: str
    pool: str  # "cpu" or "gpu"
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None  # created inactive

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"


STAGE_DESCRIPTIONS = {
    "pretrain": "Continued pretraining of the up-scaled model.",
    "sft": "Supervised fine-tuning (TRL SFT).",
    "dpo": "Preference alignment (TRL DPO; sDPO steps).",
    "eval": "H6 evaluation and held-out perplexity.",
}

DEPLOYMENTS = [
    Deployment("solar-preset", "paper-ablation", "flows/pipeline.py:pipeline_from_preset", "cpu",
               "The SOLAR ablation DAG (Tables 3-5) on the embedded tiny model.", {"preset": "paper-ablation"}),
    Deployment("solar-preset", "tiny", "flows/pipeline.py:pipeline_from_preset", "cpu",
               "The smallest full DAG on the embedded model, in a minute or two.", {"preset": "tiny"}),
    Deployment("solar-sweep", "ablation-sweep", "flows/pipeline.py:sweep", "cpu",
               "The paper-ablation preset over a grid of DPO beta, DPO data and merge weights.",
               {"preset": "paper-ablation", "grid": SWEEP_GRID}, cron=SWEEP_CRON),
    *(Deployment("solar-stage", kind, "flows/stage.py:stage_flow", "gpu", text)
      for kind, text in STAGE_DESCRIPTIONS.items()),
    Deployment("solar-stage", "cpu", "flows/stage.py:stage_flow", "cpu",
               "Data preparation, synthesis, decontamination, DUS, merges and selection."),
]


def deploy(
    cpu_pool: str = CPU_POOL,
    gpu_pool: str = GPU_POOL,
    source: Path = REPO,
    only: list[str] | None = None,
) -> dict[str, str]:
    """Create or update the deployments (all, or those named in `only`); name -> id."""
    from prefect import flow  # imported here: nothing needs a server until this runs
    from prefect.schedules import Cron

    pools = {"cpu": cpu_pool, "gpu": gpu_pool}
    chosen = [d for d in DEPLOYMENTS if not only or d.full_name in only]
    unknown = set(only or ()) - {d.full_name for d in DEPLOYMENTS}
    if unknown:
        raise ValueError(f"--only: no deployment named {sorted(unknown)}; "
                         f"known: {[d.full_name for d in DEPLOYMENTS]}")
    ids = {}
    for d in chosen:
        remote = flow.from_source(source=str(Path(source).resolve()), entrypoint=d.entrypoint)
        ids[d.full_name] = str(remote.deploy(
            name=d.name,
            work_pool_name=pools[d.pool],
            parameters=d.parameters,
            description=d.description,
            schedules=[Cron(d.cron, active=False)] if d.cron else None,
            tags=[f"pool:{d.pool}"],
            enforce_parameter_schema=True,
            print_next_steps=False,
            ignore_warnings=True,  # the "use .serve for local development" hint
        ))
    return ids


def prefect_yaml() -> str:
    """deployments/prefect.yaml: the same deployments for `prefect deploy --all`."""
    doc = {
        "name": "solar",
        "prefect-version": "3.8.8",
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $SOLAR_REPO }}"}}],
        "deployments": [
            {
                "name": d.name,
                "description": d.description,
                "entrypoint": d.entrypoint,
                **({"parameters": d.parameters} if d.parameters else {}),
                "tags": [f"pool:{d.pool}"],
                "work_pool": {"name": {"cpu": CPU_POOL, "gpu": GPU_POOL}[d.pool]},
                **({"schedules": [{"cron": d.cron, "active": False}]} if d.cron else {}),
                "enforce_parameter_schema": True,
            }
            for d in DEPLOYMENTS
        ],
    }
    header = (
        "# Generated by `python deployments/deploy.py --write-yaml`; edit DEPLOYMENTS there.\n"
        "# `prefect deploy --all` from the repository root (SOLAR_REPO set to it) with\n"
        "# PREFECT_API_URL pointing at a server; the pools must exist.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-pool", "--pool", default=CPU_POOL, help=f"CPU work pool (default: {CPU_POOL})")
    parser.add_argument("--gpu-pool", default=GPU_POOL, help=f"GPU work pool (default: {GPU_POOL})")
    parser.add_argument("--source", type=Path, default=REPO, help="repository the workers run from")
    parser.add_argument("--only", action="append", metavar="FLOW/NAME", help="deploy just these (repeatable)")
    parser.add_argument("--write-yaml", action="store_true", help="write deployments/prefect.yaml and exit")
    args = parser.parse_args(argv)
    if args.write_yaml:
        (REPO / "deployments" / "prefect.yaml").write_text(prefect_yaml())
        return 0
    for name, deployment_id in deploy(args.cpu_pool, args.gpu_pool, args.source, args.only).items():
        print(name, deployment_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
