"""A real Prefect server creates the scheduled runs of every scheduled deployment.

This is the test that catches an incompatible dependency set: with SQLAlchemy 2.1 the 3.8.8
server still starts and flows still run, but its scheduler creates no runs (NOTES). It starts
``prefect server start`` on loopback in its own process group (killed afterwards, even on
failure), registers the deployments the way ``deployments/serve.py`` does
(``RunnerDeployment.apply()``), and waits for SCHEDULED flow runs. A second test deploys
``deployments/prefect.yaml`` with the real ``prefect deploy`` CLI.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NY = ZoneInfo("America/New_York")
SERVER_START_TIMEOUT = 90.0
SCHEDULER_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
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


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    """``{"url": api_url, "env": env}`` of a fresh server with a 1 s scheduler loop."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(home / "home"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'server.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
    )
    log = open(home / "server.log", "w")  # noqa: SIM115 - the server writes to it until the fixture ends
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited with {proc.returncode}:\n{(home / 'server.log').read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not up after {SERVER_START_TIMEOUT:.0f} s")
            time.sleep(0.25)
        client_env = dict(env, PREFECT_API_URL=url)
        yield {"url": url, "env": client_env, "log": home / "server.log"}
    finally:
        _stop(proc)
        log.close()


def _scheduled_runs(client) -> dict[str, list]:
    """``{deployment name: [scheduled flow runs]}``."""
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


def test_scheduler_creates_runs_for_every_scheduled_deployment(server):
    from prefect import get_client
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments import DEPLOYMENTS, build_runner_deployments

    scheduled = {spec.name for spec in DEPLOYMENTS if spec.cron}
    assert len(scheduled) == 6
    with temporary_settings(updates={PREFECT_API_URL: server["url"]}):
        for deployment in build_runner_deployments():
            deployment.apply()
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + SCHEDULER_TIMEOUT
            runs = _scheduled_runs(client)
            while set(runs) < scheduled and time.monotonic() < deadline:
                time.sleep(0.5)
                runs = _scheduled_runs(client)
            deployment = client.read_deployment_by_name("daily_pipeline/daily-pipeline")

    missing = scheduled - set(runs)
    assert not missing, f"no scheduled runs for {sorted(missing)}; server log: {server['log']}"
    assert "replay-backfill" not in runs  # manual only
    for run in runs["daily-pipeline"]:  # 17:00 New York on weekdays, whatever the UTC offset
        local = run.expected_start_time.astimezone(NY)
        assert (local.hour, local.minute, local.weekday() < 5) == (17, 0, True)
    for run in runs["intraday-bars"]:
        local = run.expected_start_time.astimezone(NY)
        assert 9 <= local.hour <= 16 and local.minute % 15 == 0 and local.weekday() < 5
    for run in runs["weekly-vacuum"]:
        local = run.expected_start_time.astimezone(NY)
        assert (local.weekday(), local.hour) == (6, 3)
        assert run.parameters == {"vacuum": True}
    assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    assert deployment.global_concurrency_limit.limit == 1


def test_prefect_deploy_accepts_the_yaml(server):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = dict(server["env"], PWD=str(ROOT))  # as a shell in the repository root would have it
    cli = [sys.executable, "-m", "prefect", "--no-prompt"]
    subprocess.run([*cli, "work-pool", "create", "cachelib-local", "--type", "process", "--overwrite"],
                   env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    done = subprocess.run([*cli, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    with temporary_settings(updates={PREFECT_API_URL: server["url"]}), get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert len(deployments) == 7
    for d in deployments.values():
        assert d.work_pool_name == "cachelib-local"
        # $PWD was resolved by `prefect deploy`, run from the repository root.
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    (schedule,) = deployments["eod-bars"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 16 * * 1-5", "America/New_York")
    assert deployments["eod-bars"].parameters["timeframe"] == "1Day"
