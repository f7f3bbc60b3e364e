"""The Prefect API of a `solar run` that has no Prefect server configured.

With no PREFECT_API_URL, Prefect starts a temporary server of its own at the first flow
call: it imports the whole server application into this process (~2 s here, holding the
interpreter), spawns it, and waits for it (~4 s more). `start` spawns the same server
(Prefect's command and settings, as in `prefect.server.api.server.SubprocessASGIServer`)
the moment the run begins, so that it boots on another core while this process imports
the pipeline and opens the MLflow store, and points this process's Prefect client at it.
Like Prefect's, it serves no UI, lives as long as this process and is stopped at exit.

`free_port` and `wait_http` serve every local server here (deployments/servers.py, the
tests, the screenshot scripts).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

STARTUP_TIMEOUT = 60.0  # seconds; a cold first start also creates Prefect's database
STOP_TIMEOUT = 5.0


def start() -> Callable[[], None]:
    """Start the temporary server unless a Prefect API is configured (environment or
    profile). Returns a function that waits until the server answers; call it before the
    first flow call."""
    import prefect
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return lambda: None
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
         "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
             "PREFECT__SERVER_FINAL": "1"},
        stdin=subprocess.DEVNULL,
    )
    atexit.register(stop, proc)
    api = f"http://127.0.0.1:{port}/api"
    # No UI is served, so there is no flow-run page to link to (an empty UI URL says so).
    os.environ.update({"PREFECT_API_URL": api, "PREFECT_UI_URL": ""})
    refresh_global_settings_context()

    def details() -> str:
        code = "" if proc.returncode is None else f" (exit code {proc.returncode})"
        return f"{code}; its output is above. Or start a Prefect server and set PREFECT_API_URL."

    return lambda: wait_http(f"{api}/health", f"the temporary Prefect server ({api})",
                             lambda: proc.poll() is not None, details)


def wait_http(url: str, name: str, exited: Callable[[], bool] = lambda: False,
              details: Callable[[], str] = lambda: "", timeout: float = STARTUP_TIMEOUT) -> None:
    """Until `url` answers 200. A RuntimeError naming `name`, with `details()` (say, the
    tail of its log), as soon as `exited()` says its process is gone, or after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited():
            raise RuntimeError(f"{name} exited during start-up{details()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s{details()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
