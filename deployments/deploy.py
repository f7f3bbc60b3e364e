"""Deploy the SOLAR pipeline from local source to a Prefect process work pool.

    PREFECT_API_URL=http://127.0.0.1:4200/api python deployments/deploy.py --pool solar-cpu

The worker runs the flow from `--source` (default: this repository), so it must see that
directory. The server checks run parameters against the flow's signature
(`enforce_parameter_schema`): an unknown preset is rejected before a run is created.
The work pool must exist (`prefect work-pool create solar-cpu --type process`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/pipeline.py:pipeline_from_preset"


def deploy(
    work_pool: str = "solar-cpu",
    source: Path = REPO,
    name: str = "paper-ablation",
    preset: str = "paper-ablation",
) -> str:
    """Create or update the deployment `solar-preset/<name>`; returns its id."""
    from prefect import flow  # imported here: nothing needs a server until this runs

    remote = flow.from_source(source=str(Path(source).resolve()), entrypoint=ENTRYPOINT)
    deployment_id = remote.deploy(
        name=name,
        work_pool_name=work_pool,
        parameters={"preset": preset},
        description=f"The SOLAR pipeline, preset {preset!r}, from {source}.",
        enforce_parameter_schema=True,
        print_next_steps=False,
        ignore_warnings=True,  # the "use .serve for local development" hint
    )
    return str(deployment_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="solar-cpu", help="process work pool (default: solar-cpu)")
    parser.add_argument("--source", type=Path, default=REPO, help="repository the worker runs from")
    parser.add_argument("--name", default="paper-ablation", help="deployment name")
    parser.add_argument("--preset", default="paper-ablation", help="default preset parameter")
    args = parser.parse_args(argv)
    print(deploy(args.pool, args.source, args.name, args.preset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
