"""A team's services on one machine: a Prefect server, an MLflow tracking server, the CPU
and GPU work pools with a process worker each, and the deployments.

    python deployments/servers.py up          # or: make servers
    source .servers/env                       # PREFECT_API_URL, MLFLOW_TRACKING_URI
    solar run --preset tiny --set execution.mode=pools
    python deployments/servers.py status
    python deployments/servers.py down        # or: make servers-down

Everything lives under `--home` (default .servers/): the Prefect home and database, the
MLflow database and artifacts, logs/ and the pids of what was started. Processes run in
their own sessions, so they outlive this command; `down` stops each with its children.
The offline settings (no telemetry, no hub) are set for every process. On a GPU machine,
start the GPU worker there instead (`prefect worker start --pool solar-gpu`) with the same
PREFECT_API_URL, MLFLOW_TRACKING_URI and the artifact root mounted at the same path.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from flows.cli import OFFLINE_ENV
from flows.local_api import wait_http

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB_TEMPLATE = REPO / "deployments" / "job_templates" / "process.json"
# The CLI's settings (no telemetry, OpenMP threads that sleep), and no hub: see README.
OFFLINE = {**OFFLINE_ENV, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def environment(home: Path, prefect_port: int, mlflow_port: int) -> dict[str, str]:
    """What every service, worker and client of this stack runs with."""
    env = {**os.environ, **OFFLINE}
    env.pop("PREFECT_PROFILE", None)
    env.update({
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_WORKER_QUERY_SECONDS": "2",  # pick up a dispatched stage within ~2 s
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "prefect" / "results"),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
    })
    return env


def start(name: str, args: list[str], env: dict[str, str], home: Path) -> int:
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(args, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    pids = read_pids(home)
    pids[name] = proc.pid
    (home / "pids.json").write_text(json.dumps(pids, indent=1))
    return proc.pid


def read_pids(home: Path) -> dict[str, int]:
    try:
        return json.loads((home / "pids.json").read_text())
    except FileNotFoundError:
        return {}


def process_gone(pid: int) -> bool:
    import psutil

    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def wait_started(url: str, name: str, pid: int, home: Path, timeout: float = 120) -> None:
    """Until `url` answers 200; a clear error with the log's tail if the process dies."""
    log = home / "logs" / f"{name}.log"
    wait_http(url, name, lambda: process_gone(pid), lambda: f"; {log}:\n{log.read_text()[-3000:]}", timeout)


def create_pools(env: dict[str, str], cpu_pool: str, gpu_pool: str, gpu_limit: int) -> None:
    """Both pools as process pools (the shipped base job template when there is one);
    the GPU pool runs at most `gpu_limit` stages at once: one per GPU of the worker."""
    args = [str(BIN / "prefect"), "work-pool", "create", "--type", "process", "--overwrite"]
    if JOB_TEMPLATE.exists():
        args += ["--base-job-template", str(JOB_TEMPLATE)]
    for pool in (cpu_pool, gpu_pool):
        subprocess.run([*args, pool], env=env, check=True, capture_output=True, timeout=120)
    subprocess.run([str(BIN / "prefect"), "work-pool", "set-concurrency-limit", gpu_pool, str(gpu_limit)],
                   env=env, check=True, capture_output=True, timeout=120)


def up(home: Path, prefect_port: int, mlflow_port: int, cpu_pool: str, gpu_pool: str,
       gpu_limit: int, deploy: bool) -> dict[str, str]:
    home = home.resolve()
    if read_pids(home):
        raise RuntimeError(f"{home}: services are recorded as running; `down` first")
    home.mkdir(parents=True, exist_ok=True)
    env = environment(home, prefect_port, mlflow_port)
    try:
        pid = start("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                       "--port", str(prefect_port)], env, home)
        mlflow_pid = start("mlflow-server", [
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
            "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination", str(home / "mlartifacts"), "--workers", "1",
        ], {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, home)  # no job runner: a lean server
        wait_started(f"{env['PREFECT_API_URL']}/health", "prefect-server", pid, home)
        create_pools(env, cpu_pool, gpu_pool, gpu_limit)
        for role, pool in (("cpu", cpu_pool), ("gpu", gpu_pool)):
            start(f"worker-{role}", [str(BIN / "prefect"), "worker", "start", "--pool", pool,
                                     "--type", "process", "--name", f"{pool}-worker"], env, home)
        wait_started(f"{env['MLFLOW_TRACKING_URI']}/health", "mlflow-server", mlflow_pid, home)
        if deploy:
            subprocess.run([sys.executable, str(REPO / "deployments" / "deploy.py"), "--cpu-pool", cpu_pool,
                            "--gpu-pool", gpu_pool], env=env, check=True, capture_output=True, timeout=300)
    except BaseException:
        down(home)
        raise
    exported = {k: env[k] for k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", *OFFLINE)}
    (home / "env").write_text("".join(f"export {k}={v}\n" for k, v in exported.items()))
    return exported


def down(home: Path, timeout: float = 20) -> list[str]:
    """SIGTERM every recorded process and its descendants, then SIGKILL what is left."""
    import psutil

    home = home.resolve()
    procs, stopped = [], []
    for name, pid in read_pids(home).items():
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
            stopped.append(name)
        except psutil.NoSuchProcess:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    (home / "pids.json").unlink(missing_ok=True)
    return stopped


def status(home: Path) -> dict[str, bool]:
    import psutil

    return {name: psutil.pid_exists(pid) for name, pid in read_pids(home.resolve()).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--home", type=Path, default=Path(".servers"), help="state, logs and data (default: .servers)")
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--cpu-pool", default="solar-cpu")
    parser.add_argument("--gpu-pool", default="solar-gpu")
    parser.add_argument("--gpu-limit", type=int, default=1, help="stages at once on the GPU pool")
    parser.add_argument("--no-deploy", dest="deploy", action="store_false", help="skip creating the deployments")
    args = parser.parse_args(argv)
    if args.command == "up":
        env = up(args.home, args.prefect_port, args.mlflow_port, args.cpu_pool, args.gpu_pool,
                 args.gpu_limit, args.deploy)
        print(f"Prefect UI  http://127.0.0.1:{args.prefect_port}\nMLflow UI   {env['MLFLOW_TRACKING_URI']}\n"
              f"clients:    source {args.home / 'env'}")
    elif args.command == "down":
        print("stopped:", ", ".join(down(args.home)) or "nothing")
    else:
        for name, alive in status(args.home).items():
            print(f"{name:16} {'running' if alive else 'gone'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
