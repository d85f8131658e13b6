"""A real Prefect server creates the scheduled runs of every scheduled deployment.

This is the test that catches an incompatible dependency set: with SQLAlchemy 2.1 the 3.8.8
server still starts and flows still run, but its scheduler creates no runs (NOTES). It starts
``prefect server start`` on loopback in its own process group (killed afterwards, even on
failure), registers the deployments the way ``deployments/serve.py`` does
(``RunnerDeployment.apply()``), and waits for SCHEDULED flow runs. A second test deploys
``deployments/prefect.yaml`` with the real ``prefect deploy`` CLI.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prefect_server import running_server, wait_for_scheduled_runs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NY = ZoneInfo("America/New_York")
SCHEDULER_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    """``{"url": api_url, "env": env}`` of a fresh server (SQLite) with a 1 s scheduler loop."""
    home = tmp_path_factory.mktemp("prefect-server")
    with running_server(home, f"sqlite+aiosqlite:///{home / 'server.db'}") as server:
        yield server


def test_scheduler_creates_runs_for_every_scheduled_deployment(server):
    from prefect import get_client
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments import DEPLOYMENTS, build_runner_deployments

    scheduled = {spec.name for spec in DEPLOYMENTS if spec.cron}
    assert len(scheduled) == 7
    with temporary_settings(updates={PREFECT_API_URL: server["url"]}):
        for deployment in build_runner_deployments():
            deployment.apply()
        with get_client(sync_client=True) as client:
            runs = wait_for_scheduled_runs(client, scheduled, SCHEDULER_TIMEOUT)
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
    assert len(deployments) == 8
    for d in deployments.values():
        assert d.work_pool_name == "cachelib-local"
        # $PWD was resolved by `prefect deploy`, run from the repository root.
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    (schedule,) = deployments["eod-bars"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 16 * * 1-5", "America/New_York")
    assert deployments["eod-bars"].parameters["timeframe"] == "1Day"
