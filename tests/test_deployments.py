"""Deployment definitions, checked without a server.

``deployments/prefect.yaml`` is generated from the table in ``deployments/__init__.py``; these
tests check the file is up to date, parses as Prefect's own ``prefect deploy`` models parse it,
that every entrypoint imports and every parameter set validates against its flow's signature,
and that the cron schedules fire when a trader expects across DST changes (computed with the
server's own ``CronSchedule``, the code its scheduler runs).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
UTC = timezone.utc
SYMBOLS = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA"]

# What a person asked for, written out by hand (not computed from the table under test). No
# deployment sets ``db_path``: workers find the cache in their own TRADING_CACHE_URL (a team's
# PostgreSQL) or TRADING_CACHE_DB, so no URL or password is stored with the parameters in Prefect.
EXPECTED = {
    "intraday-bars": ("flows/ingest_bars.py:ingest_bars", "*/15 9-16 * * 1-5",
                      {"symbols": SYMBOLS, "timeframe": "1Min"}),
    "eod-bars": ("flows/ingest_bars.py:ingest_bars", "30 16 * * 1-5", {"symbols": SYMBOLS, "timeframe": "1Day"}),
    "option-chains": ("flows/ingest_options.py:ingest_option_chains", "15 16 * * 1-5", {"underlyings": SYMBOLS}),
    "daily-pipeline": ("flows/daily_pipeline.py:daily_pipeline", "0 17 * * 1-5", {}),
    "nightly-cleanup": ("flows/maintenance.py:cache_maintenance", "0 2 * * *", {"vacuum": False}),
    "weekly-vacuum": ("flows/maintenance.py:cache_maintenance", "0 3 * * 0", {"vacuum": True}),
    "weekly-data-quality": ("flows/data_quality.py:data_quality", "0 6 * * 6", {}),
    "replay-backfill": ("flows/replay.py:replay_days", None, {"symbols": SYMBOLS, "source": "auto"}),
}
# Scheduled runs that collide are cancelled (the next fire catches up); manual runs queue.
COLLISION = {
    "intraday-bars": "CANCEL_NEW", "eod-bars": "CANCEL_NEW", "option-chains": "CANCEL_NEW",
    "daily-pipeline": "CANCEL_NEW", "nightly-cleanup": "CANCEL_NEW", "weekly-vacuum": "CANCEL_NEW",
    "weekly-data-quality": "CANCEL_NEW", "replay-backfill": "ENQUEUE",
}


@pytest.fixture(scope="module")
def document() -> dict:
    return yaml.safe_load(PREFECT_YAML.read_text())


def fire_times(cron: str, start: datetime, n: int) -> list[str]:
    from prefect.server.schemas.schedules import CronSchedule

    schedule = CronSchedule(cron=cron, timezone="America/New_York")
    return [d.astimezone(UTC).strftime("%Y-%m-%d %H:%M") for d in asyncio.run(schedule.get_dates(n=n, start=start))]


def test_prefect_yaml_is_generated_from_the_table():
    from deployments import render_prefect_yaml

    assert PREFECT_YAML.read_text() == render_prefect_yaml(), (
        "deployments/prefect.yaml is out of date: run `.venv/bin/python deployments/serve.py --write-prefect-yaml`"
    )


def test_prefect_yaml_parses_as_prefect_deploy_reads_it(document):
    from prefect.cli.deploy._models import (
        ConcurrencyLimitSpec,
        DeploymentConfig,
        PrefectYamlModel,
        RawScheduleConfig,
    )
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    model = PrefectYamlModel.model_validate(document)
    assert model.pull == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}]
    assert sorted(d.name for d in model.deployments) == sorted(EXPECTED)
    for raw in document["deployments"]:
        # DeploymentConfig ignores unknown keys; a typo would silently drop a setting.
        assert set(raw) <= set(DeploymentConfig.model_fields), set(raw) - set(DeploymentConfig.model_fields)
        assert raw["work_pool"]["name"] == "cachelib-local"
        for schedule in raw["schedules"]:
            RawScheduleConfig.model_validate(schedule)  # extra="forbid": no misspelt keys
            assert schedule["timezone"] == "America/New_York"
        spec = ConcurrencyLimitSpec.model_validate(raw["concurrency_limit"])
        limit = ConcurrencyLimitConfig(limit=spec.limit, collision_strategy=spec.collision_strategy)
        assert (limit.limit, limit.collision_strategy) == (1, ConcurrencyLimitStrategy(COLLISION[raw["name"]]))


def test_deployments_are_the_ones_asked_for(document):
    got = {
        d["name"]: (d["entrypoint"], d["schedules"][0]["cron"] if d["schedules"] else None, d["parameters"])
        for d in document["deployments"]
    }
    assert got == EXPECTED


def test_every_entrypoint_imports_and_its_parameters_validate(document, monkeypatch):
    from prefect.exceptions import ParameterTypeError
    from prefect.flows import Flow, load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    monkeypatch.chdir(ROOT)  # entrypoints are relative to the repository root, as for `prefect deploy`
    for raw in document["deployments"]:
        flow = load_flow_from_entrypoint(raw["entrypoint"])
        assert isinstance(flow, Flow)
        assert flow.name == raw["entrypoint"].rsplit(":", 1)[1]  # `prefect deployment run flow/name`
        schema = parameter_schema(flow)
        assert set(schema.required or []) <= set(raw["parameters"]), raw["name"]
        assert set(raw["parameters"]) <= set(schema.properties), raw["name"]
        flow.validate_parameters(dict(raw["parameters"]))
        if "vacuum" in raw["parameters"]:
            with pytest.raises(ParameterTypeError):  # the check bites
                flow.validate_parameters({"vacuum": "sometimes"})


def test_runner_deployments_for_serve_come_from_the_same_table():
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from deployments import build_runner_deployments

    built = {d.name: d for d in build_runner_deployments()}
    assert sorted(built) == sorted(EXPECTED)
    for name, (entrypoint, cron, parameters) in EXPECTED.items():
        deployment = built[name]
        assert deployment.entrypoint == entrypoint
        assert deployment.parameters == parameters
        assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy(COLLISION[name])
        assert deployment.concurrency_limit == 1
        if cron is None:
            assert deployment.schedules in (None, [])
        else:
            (schedule,) = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == (cron, "America/New_York")


def test_second_manual_backfill_queues_while_a_second_scheduled_run_is_cancelled(prefect_harness):
    """Two runs of a deployment submitted back to back, on a real Prefect API: the server's
    concurrency rule (applied when a run goes PENDING, as a worker or ``serve`` submits it) makes
    the second backfill wait ("AwaitingConcurrencySlot"), never "Cancelled"; a second run of a
    scheduled deployment is cancelled (the next fire catches up)."""
    from prefect import get_client
    from prefect.states import Pending

    from deployments import DEPLOYMENTS, build_runner_deployments

    specs = [spec for spec in DEPLOYMENTS if spec.name in ("replay-backfill", "daily-pipeline")]
    ids = {d.name: d.apply() for d in build_runner_deployments(specs)}
    outcome = {}
    with get_client(sync_client=True) as client:
        for name, deployment_id in ids.items():
            states = []
            for _ in range(2):
                run = client.create_flow_run_from_deployment(deployment_id)
                result = client.set_flow_run_state(run.id, Pending())
                states.append((result.state.type.value, result.state.name))
            outcome[name] = states
    assert outcome == {
        "replay-backfill": [("PENDING", "Pending"), ("SCHEDULED", "AwaitingConcurrencySlot")],
        "daily-pipeline": [("PENDING", "Pending"), ("CANCELLED", "Cancelled")],
    }


def test_daily_pipeline_stays_at_17_new_york_across_dst():
    # 2025-03-09: clocks spring forward; 2025-11-02: they fall back.
    assert fire_times("0 17 * * 1-5", datetime(2025, 3, 6, tzinfo=UTC), 4) == [
        "2025-03-06 22:00", "2025-03-07 22:00", "2025-03-10 21:00", "2025-03-11 21:00"]
    assert fire_times("0 17 * * 1-5", datetime(2025, 10, 31, tzinfo=UTC), 2) == [
        "2025-10-31 21:00", "2025-11-03 22:00"]


def test_intraday_schedule_covers_the_session_on_weekdays_only():
    # Friday 2025-03-07 (EST) then Monday 2025-03-10 (EDT): 09:00..16:45 local, 32 fires a day.
    times = fire_times("*/15 9-16 * * 1-5", datetime(2025, 3, 7, tzinfo=UTC), 64)
    friday, monday = times[:32], times[32:]
    assert (friday[0], friday[-1]) == ("2025-03-07 14:00", "2025-03-07 21:45")
    assert (monday[0], monday[-1]) == ("2025-03-10 13:00", "2025-03-10 20:45")


def test_maintenance_schedules_around_dst():
    # Sunday 2025-03-09 is the spring-forward day itself: 03:00 EDT exists (07:00Z).
    assert fire_times("0 3 * * 0", datetime(2025, 3, 8, tzinfo=UTC), 2) == ["2025-03-09 07:00", "2025-03-16 07:00"]
    # 02:00 does not exist that night; cron (croniter) fires once anyway, at 01:00 EST (06:00Z).
    assert fire_times("0 2 * * *", datetime(2025, 3, 8, tzinfo=UTC), 3) == [
        "2025-03-08 07:00", "2025-03-09 06:00", "2025-03-10 06:00"]
    # 2025-11-02: 01:00-02:00 happens twice; 02:00 EST happens once.
    assert fire_times("0 2 * * *", datetime(2025, 11, 1, tzinfo=UTC), 3) == [
        "2025-11-01 06:00", "2025-11-02 07:00", "2025-11-03 07:00"]
