"""The temporary Prefect server of a `solar run` with no server configured: started at
once, used by the run's flows, stopped at exit; a configured server is used instead."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil

from flows.cli import OFFLINE_ENV

SCRIPT = textwrap.dedent("""
    import os, sys
    from flows import local_api
    from flows.cli import exit_now

    wait = local_api.start()
    wait()
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    @flow
    def answer():
        return 42

    print(os.getpid(), PREFECT_API_URL.value(), repr(PREFECT_UI_URL.value()), answer(), flush=True)
    exit_now(0)
""")


def run_script(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({**OFFLINE_ENV, **env_extra})
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                          timeout=180, cwd=os.getcwd())


def servers_on(port: int) -> list[psutil.Process]:
    """uvicorn processes started for `port`, wherever they were reparented to."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if "uvicorn" in args and "--port" in args and args[args.index("--port") + 1] == str(port):
            found.append(proc)
    return found


def test_without_a_server_a_temporary_one_serves_the_run_and_stops_at_exit(tmp_path):
    out = run_script({"PREFECT_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr[-3000:]
    _, api, ui, result = out.stdout.split()
    assert api.startswith("http://127.0.0.1:") and api.endswith("/api")
    assert ui == "''"  # no UI is served, so runs get no dead links
    assert result == "42"
    port = int(api.split(":")[2].split("/")[0])
    assert not servers_on(port)  # stopped, not orphaned
    listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert port not in listening


def test_a_configured_server_is_used_and_none_is_started(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import local_api

    def spawn(*args, **kwargs):
        raise AssertionError(f"a server was started: {args}")

    monkeypatch.setattr(local_api.subprocess, "Popen", spawn)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # as a profile would
        wait = local_api.start()
    wait()


def test_a_server_that_dies_at_start_is_a_clear_error(tmp_path):
    out = run_script({"PREFECT_HOME": str(tmp_path / "home"),
                      "PREFECT_SERVER_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:////nonexistent/dir/prefect.db"})
    assert out.returncode != 0
    assert "the temporary Prefect server" in out.stderr and "exited during start-up (exit code" in out.stderr, out.stderr[-2000:]
