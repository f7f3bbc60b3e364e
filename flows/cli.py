"""The `solar` command: plan and run pipelines from presets or spec files.

    solar plan --preset paper-ablation [--json]
    solar run --preset paper-ablation [--set dpo.dpo-v1.beta=0.2]
    solar run --spec my.yaml
    solar report --preset paper-ablation [--run-id ID]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from solar.spec import PRESETS, PipelineSpec, load_spec

OFFLINE_ENV = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Idle OpenMP threads sleep instead of spinning: with spinning, torch on a 2-core
    # machine slows ~10x whenever another process (the Prefect server) takes a core.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="solar", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("plan", "validate a spec and print its DAG"),
        ("run", "run a pipeline"),
        ("report", "print the models x H6 table of a finished run"),
    ):
        p = sub.add_parser(name, help=help_)
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--preset", choices=PRESETS)
        src.add_argument("--spec", type=Path, help="a pipeline spec YAML file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec field, e.g. dpo.dpo-v1.beta=0.2 (repeatable)")
        if name == "plan":
            p.add_argument("--json", action="store_true", help="one JSON record per stage")
        if name == "report":
            p.add_argument("--run-id", help="the MLflow parent run (default: the latest)")
    args = parser.parse_args(argv)
    for key, value in OFFLINE_ENV.items():  # before torch is imported
        os.environ.setdefault(key, value)

    try:
        spec = load_spec(args.preset, args.spec, args.overrides)
    except (ValidationError, ValueError, FileNotFoundError) as e:
        print(f"solar: invalid spec: {e}", file=sys.stderr)
        return 2
    if args.command == "plan":
        return plan_command(spec, args.json)
    if args.command == "report":
        return report_command(spec, args.run_id)
    return run_command(spec)


def entry() -> NoReturn:
    """The `solar` console script: `main`, then a quick exit."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown: after a run, freeing the modules and objects
    of torch, transformers, lm-eval and friends took ~3 s here, more than most stages of the
    tiny preset compute. Everything that must outlive the process is on disk by then
    (artifacts and manifests renamed into place, MLflow and Prefect calls returned), and
    what a normal exit does first is done here too: wait for non-daemon threads, run the
    exit handlers (Prefect's log and event workers drain, its temporary server stops,
    logging flushes), flush stdout and stderr."""
    threading._shutdown()  # joins non-daemon threads, runs threading's exit callbacks
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def plan_command(spec: PipelineSpec, as_json: bool) -> int:
    from solar.plan import describe

    records = describe(spec, spec.execution.artifacts_dir)
    if as_json:
        print(json.dumps(records, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{spec.name}: {len(records)} stages")
    for col in ("stage", "kind", "inputs", "cached", "layers", "params"):
        table.add_column(col, justify="right" if col in ("layers", "params") else "left")
    for r in records:
        params = r.get("params")
        table.add_row(
            r["name"], r["kind"], ", ".join(r["inputs"]), "yes" if r["cached"] else "no",
            "" if r.get("layers") is None else str(r["layers"]),
            "" if params is None else human(params),
        )
    Console().print(table)
    return 0


def run_command(spec: PipelineSpec) -> int:
    root = Path(spec.execution.artifacts_dir).resolve()
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(root / ".prefect-results"))

    from flows import local_api

    api_ready = local_api.start()  # boots while the pipeline is imported and the store opened
    from flows.pipeline import with_parallelism
    from solar.report import print_table
    from solar.tracking import open_store

    open_store(spec.tracking.uri)
    try:
        api_ready()
    except RuntimeError as e:
        print(f"solar: {e}", file=sys.stderr)
        return 1
    rows = with_parallelism(spec)(spec=spec)
    print_table(rows, f"{spec.name}: models x H6 (%){' -- estimate on doc subsets' if spec.eval and spec.eval.is_estimate else ''}")
    return 0


def report_command(spec: PipelineSpec, run_id: str | None) -> int:
    import csv

    from solar.report import print_table
    from solar.tracking import pipeline_summary

    try:
        run_id, text = pipeline_summary(spec.tracking.uri, spec.tracking.experiment or spec.name, run_id)
    except Exception as e:  # no experiment, no run, no artifact
        print(f"solar: no report: {e}", file=sys.stderr)
        return 1
    rows = [{k: (v if k == "model" or v == "" else float(v)) for k, v in row.items() if v != ""}
            for row in csv.DictReader(text.splitlines())]
    print_table(rows, f"{spec.name}: models x H6 (%), run {run_id}")
    return 0


def human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


if __name__ == "__main__":
    entry()
