"""A real ``prefect server start`` for the slow tests, in its own process group.

Shared by ``test_schedules_server.py`` (the server's database is SQLite) and
``test_team_setup.py`` (PostgreSQL). :func:`running_server` starts the server on loopback with a
1 s scheduler loop, waits for ``/health`` and kills the whole process group afterwards, even
when the test fails; :func:`start_in_own_group` and :func:`stop` do the same for any other
process a test starts (a worker).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

SERVER_START_TIMEOUT = 90.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_in_own_group(args: Sequence[str], env: Mapping[str, str], log: IO[str],
                       cwd: str | Path | None = None) -> subprocess.Popen:
    """``args`` as a new session (process group), output to ``log``: :func:`stop` kills it all."""
    return subprocess.Popen(list(args), env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=cwd)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def server_env(home: Path, database_url: str) -> dict[str, str]:
    """The environment of a test server whose own database is ``database_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(home / "home"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=database_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
    )
    return env


@contextlib.contextmanager
def running_server(home: Path, database_url: str) -> Iterator[dict[str, Any]]:
    """``{"url": api_url, "env": client env, "log": path}`` of a fresh server on ``database_url``."""
    import httpx

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = server_env(home, database_url)
    log_path = home / "server.log"
    with open(log_path, "w") as log:
        proc = start_in_own_group(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env, log)
        url = f"http://127.0.0.1:{port}/api"
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"prefect server exited with {proc.returncode}:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"prefect server not up after {SERVER_START_TIMEOUT:.0f} s")
                time.sleep(0.25)
            yield {"url": url, "env": dict(env, PREFECT_API_URL=url), "log": log_path}
        finally:
            stop(proc)


def scheduled_runs(client: Any) -> dict[str, list]:
    """``{deployment name: [scheduled flow runs]}`` on the server ``client`` talks to."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    names = {d.id: d.name for d in client.read_deployments()}
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
        limit=200,
    )
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(names.get(run.deployment_id, "?"), []).append(run)
    return out


def wait_for_scheduled_runs(client: Any, names: set[str], timeout: float) -> dict[str, list]:
    """Poll :func:`scheduled_runs` until every deployment in ``names`` has some, or ``timeout``."""
    deadline = time.monotonic() + timeout
    runs = scheduled_runs(client)
    while not names <= set(runs) and time.monotonic() < deadline:
        time.sleep(0.5)
        runs = scheduled_runs(client)
    return runs
