"""The Prefect flows end to end: demo source and the loopback Alpaca stub, one test harness.

Every flow runs for real (temporary Prefect API from ``prefect_harness``) against a fresh cache on
each engine (``cache_url``: a ``tmp_path`` SQLite file, then a fresh schema on the session's
PostgreSQL server, passed as the flows' ``db_path``); assertions read the cache, the returned
summary and the artifacts from the API.
The flows' clock (``flows._common.now``) is replaced where a test needs "now" to be a given
instant; dates are explicit everywhere else.
"""

from __future__ import annotations

import logging
import sqlite3
import urllib.parse
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from alpaca_stub import AlpacaStub, Fault, alpaca_env, make_daily_bars, make_option_snapshot
from pg_fixtures import engine_of

from cachelib.sources import AuthenticationError, RateLimitError

UTC = timezone.utc
# 2025-11-26 (Wednesday before Thanksgiving), a full session: 14:30Z-21:00Z.
WED_NOON = datetime(2025, 11, 26, 17, 0, tzinfo=UTC)
WED_AFTER_CLOSE = datetime(2025, 11, 26, 22, 0, tzinfo=UTC)
SATURDAY = datetime(2025, 12, 27, 15, 0, tzinfo=UTC)


# -- helpers -------------------------------------------------------------------------------------


def run(flow, **params):
    """Run ``flow``; return (state, result or exception)."""
    state = flow(**params, return_state=True)
    return state, state.result(raise_on_failure=False)


def artifacts_of(state, *keys: str) -> dict[str, list]:
    """``{key: [artifacts]}`` of ``keys`` created by the flow run of ``state`` (read from the API)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=list(keys)),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    out: dict[str, list] = {}
    for artifact in found:
        out.setdefault(artifact.key, []).append(artifact)
    return out


def query_one(db, sql: str):
    """The first column of the first row of ``sql`` on the cache at ``db`` (either engine)."""
    from cachelib.store import TradingCacheManager

    with TradingCacheManager(db, create=False) as cache:
        return cache.conn.execute(sql).fetchone()[0]


def count_rows(db, table: str) -> int:
    return query_one(db, f"SELECT COUNT(*) FROM {table}")


def count_minute_bars(db) -> int:
    """Intraday bars live in session chunks (issue 10): the bars their rows hold."""
    return query_one(db, "SELECT COALESCE(SUM(n_bars), 0) FROM bar_chunks")


def cache_exists(db) -> bool:
    """Whether a cache was created at ``db``: a SQLite file, or the tables in the URL's schema."""
    from cachelib.store import CacheNotFoundError, TradingCacheManager

    try:
        TradingCacheManager(db, create=False).close()
    except CacheNotFoundError:
        return False
    return True


@pytest.fixture
def clock(monkeypatch):
    """Set the flows' clock: ``clock(datetime)``."""
    from flows import _common

    def set_clock(instant: datetime) -> None:
        monkeypatch.setattr(_common, "now", lambda: instant)

    return set_clock


@pytest.fixture
def source_calls(monkeypatch):
    """Count every market-data source the tasks build (through ``cachelib.sources.open_source``)."""
    import cachelib.sources as sources

    calls: list[str] = []
    real = sources.get_source

    def spy(name, **kwargs):
        calls.append(name)
        return real(name, **kwargs)

    monkeypatch.setattr(sources, "get_source", spy)
    return calls


@pytest.fixture
def run_logs(caplog):
    """The test's captured logs (Prefect's at INFO and up).

    The first import of Prefect's SDK (``prefect.main``) configures logging and replaces the
    root logger's handlers, pytest's capture handler among them: it is imported here, before
    the test body, so that a test run on its own captures its logs too.
    """
    import prefect.main  # noqa: F401

    caplog.set_level(logging.INFO, logger="prefect")
    return caplog


@pytest.fixture
def stub(monkeypatch):
    """A loopback Alpaca with keys in the env; no client-side limit, millisecond backoff."""
    with AlpacaStub() as server:
        alpaca_env(monkeypatch, server)
        monkeypatch.setenv("CACHELIB_ALPACA_RATE_LIMIT", "0")
        monkeypatch.setenv("CACHELIB_ALPACA_BACKOFF_BASE", "0.001")
        monkeypatch.setenv("CACHELIB_ALPACA_MAX_RETRIES", "2")
        yield server


def seed_minute_bars(db, symbols, start, end) -> None:
    """Minute bars straight through cachelib (set-up, not under test)."""
    from cachelib.demo import DemoSource
    from cachelib.store import TradingCacheManager
    from cachelib.sync import sync_bars

    with TradingCacheManager(db) as cache:
        sync_bars(cache, DemoSource(), symbols, start, end, timeframe="1Min")


# -- ingest_bars ---------------------------------------------------------------------------------


def test_ingest_bars_backfills_daily_bars_in_yearly_chunks_and_is_gap_aware(prefect_harness, cache_url):
    from cachelib.store import TradingCacheManager
    from flows.ingest_bars import ingest_bars

    db = cache_url
    params = dict(symbols=["AAPL", "MSFT"], timeframe="1Day", start=date(2022, 12, 1), end=date(2024, 1, 31),
                  source="demo", db_path=db)
    state, summary = run(ingest_bars, **params)

    assert state.is_completed()
    # Longer than a year: cut at the calendar years. 2022-12: 21 sessions (12-26 closed);
    # 2023: 250; 2024-01: 21 -> 292 sessions x 2 symbols, one request per year.
    assert summary.chunks == 3
    report = summary.report
    assert (report.requests_made, report.rows_written, report.rows_rejected) == (3, 584, 0)
    assert report.per_symbol["AAPL"]["rows_written"] == 292
    with TradingCacheManager(db) as cache:
        assert len(cache.get("MSFT", "2023-12-01", "2024-01-31", source="demo")) == 41

    expected = {"ingest-bars-1day-summary", "ingest-bars-1day-per-symbol", "ingest-bars-1day-rejections",
                "ingest-bars-1day-progress"}
    keys = artifacts_of(state, *expected)
    assert set(keys) == expected
    assert keys["ingest-bars-1day-progress"][0].data == 100.0
    per_symbol = keys["ingest-bars-1day-per-symbol"][0].data
    assert "AAPL" in per_symbol and "292" in per_symbol

    again, second = run(ingest_bars, **params)
    assert again.is_completed()
    assert (second.report.requests_made, second.report.rows_written) == (0, 0)


def test_ingest_bars_also_syncs_the_corporate_actions_of_its_window(prefect_harness, cache_url):
    """The demo's NVDA 4:1 split (ex 2024-06-10) and AAPL's 0.24 dividends (ex 2024-05-10,
    2024-08-12 and, within the 90-day lookahead past 08-31, 2024-11-11: the first sessions on or
    after the 10th) in one request; the re-run asks nothing."""
    from cachelib.store import TradingCacheManager
    from flows.ingest_bars import ingest_bars

    db = cache_url
    params = dict(symbols=["NVDA", "AAPL"], start=date(2024, 5, 1), end=date(2024, 8, 31), source="demo",
                  db_path=db)
    state, summary = run(ingest_bars, **params)
    assert state.is_completed()
    actions = summary.actions
    assert (actions.source, actions.requests_made, actions.actions_written) == ("demo", 1, 4)
    # The actions window reaches 90 days past the bars' end (2024-08-31 + 90 days = 2024-11-29).
    assert (actions.fetched_start, actions.fetched_end) == (date(2024, 5, 1), date(2024, 11, 29))
    with TradingCacheManager(db) as cache:
        nvda = cache.get_corporate_actions("NVDA")
        aapl = cache.get_corporate_actions("AAPL")
    assert nvda[["action_type", "ex_date", "ratio"]].values.tolist() == [["forward_split", date(2024, 6, 10), 4.0]]
    assert aapl[["action_type", "ex_date", "amount"]].values.tolist() == [
        ["cash_dividend", date(2024, 5, 10), 0.24], ["cash_dividend", date(2024, 8, 12), 0.24],
        ["cash_dividend", date(2024, 11, 11), 0.24]]
    text = artifacts_of(state, "ingest-bars-1day-summary")["ingest-bars-1day-summary"][0].data
    assert "- corporate actions: 4 written for 2024-05-01 .. 2024-11-29, 2 of 2 symbol(s) asked, 1 request(s)" in text

    again, second = run(ingest_bars, **params)
    assert again.is_completed()
    assert (second.actions.requests_made, second.actions.actions_written, second.actions.symbols_fetched) == (0, 0, [])
    text = artifacts_of(again, "ingest-bars-1day-summary")["ingest-bars-1day-summary"][0].data
    assert "- corporate actions: 2024-05-01 .. 2024-11-29 cached already for 2 symbol(s): no request" in text


def test_ingest_bars_short_minute_range_across_a_quarter_is_one_chunk(prefect_harness, cache_url):
    from flows.ingest_bars import ingest_bars

    db = cache_url
    state, summary = run(ingest_bars, symbols=["SPY"], timeframe="1Min", start=date(2024, 3, 27),
                         end=date(2024, 4, 2), source="demo", db_path=db)
    assert state.is_completed()
    assert summary.chunks == 1  # a week across Q1/Q2: one task run, not two (see chunk_range)
    assert "ingest-bars-1min-progress" not in artifacts_of(state, "ingest-bars-1min-progress")
    # 03-27, 03-28, 04-01, 04-02 (03-29 Good Friday closed): 4 x 390 regular-session minutes.
    assert summary.report.rows_written == 1560
    assert count_minute_bars(db) == 1560


def test_ingest_bars_default_window_skips_weekends_and_takes_the_finished_session(
    prefect_harness, cache_url, clock, source_calls, run_logs
):
    from cachelib.store import TradingCacheManager
    from flows.ingest_bars import ingest_bars

    db = cache_url
    clock(SATURDAY)
    state, summary = run(ingest_bars, symbols=["AAPL"], source="demo", db_path=db)
    assert state.is_completed()
    assert (summary.status, summary.skip_reason, summary.report) == ("skipped", "Market closed (Weekend)", None)
    assert "Market closed (Weekend)" in run_logs.text
    assert source_calls == [] and not cache_exists(db)

    clock(WED_AFTER_CLOSE)  # 17:00 ET: today's session has closed and settled
    state, summary = run(ingest_bars, symbols=["AAPL", "MSFT"], source="demo", db_path=db)
    assert (summary.report.start, summary.report.end) == (date(2025, 11, 26), date(2025, 11, 26))
    assert summary.report.rows_written == 2
    with TradingCacheManager(db) as cache:
        assert list(cache.get("AAPL", "2025-11-01", "2025-11-30").index.date) == [date(2025, 11, 26)]


# -- ingest_bars against the loopback Alpaca -----------------------------------------------------


def _stub_feb_2024(stub: AlpacaStub, bad_bar: bool = False) -> None:
    # 2024-02-01 .. 2024-02-14: ten sessions, no holiday.
    for i, sym in enumerate(("AAPL", "MSFT")):
        bars = make_daily_bars("2024-02-01", 10, price=100.0 + 50 * i)
        if bad_bar and sym == "MSFT":
            bars[3]["h"] = bars[3]["l"] - 1.0  # high below low: must be rejected, never stored
        stub.add_bars(sym, bars)


def test_ingest_bars_from_alpaca_counts_requests_and_rejections(prefect_harness, cache_url, stub):
    from flows.ingest_bars import ingest_bars

    _stub_feb_2024(stub, bad_bar=True)
    stub.add_cash_dividend("AAPL", "2024-02-09", 0.24)  # AAPL's real dividend of that quarter
    db = cache_url
    params = dict(symbols=["AAPL", "MSFT"], start=date(2024, 2, 1), end=date(2024, 2, 14), db_path=db)
    state, summary = run(ingest_bars, **params)

    assert state.is_completed()
    report = summary.report
    assert report.source == "alpaca"
    # The corporate actions of both symbols over the window: one request, after the bars.
    assert stub.count("/v1/corporate-actions") == 1
    assert (summary.actions.requests_made, summary.actions.actions_written) == (1, 1)
    assert count_rows(db, "corporate_actions") == 1
    assert stub.count("/v2/stocks/bars") == 1  # both symbols, one page
    assert stub.requests[0].params["symbols"] == "AAPL,MSFT"
    assert report.requests_made == 1
    assert (report.rows_fetched, report.rows_written, report.rows_rejected) == (20, 19, 1)
    assert report.per_symbol["MSFT"]["rows_rejected"] == 1
    assert report.rejections[0]["symbol"] == "MSFT"
    assert count_rows(db, "bars") == 19
    rejections = artifacts_of(state, "ingest-bars-1day-rejections")["ingest-bars-1day-rejections"][0].data
    assert report.rejections[0]["reason"].split()[0] in rejections

    again, second = run(ingest_bars, **params)
    # Gap-aware: only the session whose row was rejected is asked for again (the vendor may
    # have fixed it); everything else is covered.
    assert second.report.requests_made == 1
    assert stub.count("/v2/stocks/bars") == 2
    assert stub.requests[-1].params["symbols"] == "MSFT"
    assert second.report.sessions_fetched == 1


def test_ingest_bars_429_recovers_inside_the_source(prefect_harness, cache_url, stub):
    from flows.ingest_bars import ingest_bars

    _stub_feb_2024(stub)
    stub.add_faults("/v2/stocks/bars", Fault.http(429, retry_after=0))
    state, summary = run(ingest_bars, symbols=["AAPL", "MSFT"], start=date(2024, 2, 1), end=date(2024, 2, 14),
                         db_path=cache_url)
    assert state.is_completed()
    assert stub.count("/v2/stocks/bars") == 2
    assert summary.report.rows_written == 20
    assert count_rows(cache_url, "bars") == 20


def test_ingest_bars_persistent_429_is_retried_by_the_source_only(prefect_harness, cache_url, stub, monkeypatch):
    """One retry layer: the source retries (max_retries=2 -> 3 requests), the task does not."""
    from flows.ingest_bars import ingest_bars

    monkeypatch.setenv("CACHELIB_ALPACA_MAX_RETRIES", "2")
    _stub_feb_2024(stub)
    stub.set_persistent_fault("/v2/stocks/bars", Fault.http(429, retry_after=0))
    state, error = run(ingest_bars, symbols=["AAPL", "MSFT"], start=date(2024, 2, 1), end=date(2024, 2, 14),
                       db_path=cache_url)
    assert state.is_failed()
    assert isinstance(error, RateLimitError)
    assert stub.count("/v2/stocks/bars") == 3  # 1 + 2 source retries; no task retry on top
    assert count_rows(cache_url, "bars") == 0


def test_ingest_bars_401_fails_fast_without_retries(prefect_harness, cache_url, stub, monkeypatch):
    from flows.ingest_bars import ingest_bars
    from tasks.market_data import fetch_and_store_bars

    monkeypatch.setattr(fetch_and_store_bars, "retry_delay_seconds", [0.0, 0.0, 0.0])
    _stub_feb_2024(stub)
    stub.set_persistent_fault("*", 401)
    state, error = run(ingest_bars, symbols=["AAPL"], start=date(2024, 2, 1), end=date(2024, 2, 14),
                       db_path=cache_url)
    assert state.is_failed()
    assert isinstance(error, AuthenticationError)
    assert stub.count() == 1  # no HTTP retry in the source, no task retry in Prefect
    assert count_rows(cache_url, "bars") == 0


# -- retry policy and source options (no flow run) -----------------------------------------------


def test_source_options_from_environment(monkeypatch):
    from cachelib.sources import shared_rate_limiter, source_options

    assert source_options("demo") == {}
    monkeypatch.setenv("CACHELIB_ALPACA_MAX_RETRIES", "1")
    monkeypatch.setenv("CACHELIB_ALPACA_BACKOFF_BASE", "0.25")
    monkeypatch.setenv("CACHELIB_ALPACA_RATE_LIMIT", "0")
    options = source_options("alpaca")
    assert (options["max_retries"], options["backoff_base"]) == (1, 0.25)
    assert options["rate_limiter"] is shared_rate_limiter(0.0)  # one limiter per process
    assert options["rate_limiter"].interval == 0.0
    monkeypatch.delenv("CACHELIB_ALPACA_RATE_LIMIT")
    assert source_options("auto")["rate_limiter"].max_per_minute == 200
    monkeypatch.setenv("CACHELIB_ALPACA_MAX_RETRIES", "lots")
    with pytest.raises(ValueError, match="CACHELIB_ALPACA_MAX_RETRIES"):
        source_options("auto")


def test_task_runner_choice(monkeypatch):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows._common import choose_task_runner

    monkeypatch.setenv("CACHELIB_TASK_WORKERS", "3")
    runner = choose_task_runner()
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")
    runner = choose_task_runner()
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://127.0.0.1:8786"


def test_task_chunks_keep_every_worker_busy_and_stay_small(monkeypatch):
    """Issue 13: a fan-out is one task run per chunk, as few as keep the workers busy, capped."""
    from flows._common import task_chunks

    monkeypatch.delenv("CACHELIB_TASK_CHUNK", raising=False)
    monkeypatch.setenv("CACHELIB_TASK_WORKERS", "4")
    symbols = [f"S{i}" for i in range(10)]
    assert task_chunks(symbols) == [["S0", "S1", "S2"], ["S3", "S4", "S5"], ["S6", "S7", "S8"], ["S9"]]
    assert [len(c) for c in task_chunks(list(range(20)))] == [5, 5, 5, 5]
    assert [len(c) for c in task_chunks(list(range(100)))] == [25, 25, 25, 25]
    assert [len(c) for c in task_chunks(list(range(500)))] == [25] * 20
    assert [len(c) for c in task_chunks(list(range(500)), 100)] == [100] * 5
    assert task_chunks([]) == []
    monkeypatch.setenv("CACHELIB_TASK_CHUNK", "2")
    assert task_chunks(symbols[:5]) == [["S0", "S1"], ["S2", "S3"], ["S4"]]
    monkeypatch.setenv("CACHELIB_TASK_CHUNK", "0")
    with pytest.raises(ValueError, match=r"CACHELIB_TASK_CHUNK must be a whole number >= 1, got '0'"):
        task_chunks(symbols)
    monkeypatch.delenv("CACHELIB_TASK_CHUNK")
    monkeypatch.setenv("CACHELIB_TASK_WORKERS", "four")
    with pytest.raises(ValueError, match=r"CACHELIB_TASK_WORKERS must be a whole number >= 1, got 'four'"):
        task_chunks(symbols)


def test_without_heartbeat_turns_it_off_for_the_block_only():
    """Issue 13: Prefect 3.8.8 joins a sync flow run's heartbeat thread (~1.07 s per run); runs
    started from a shell turn it off, deployments keep Prefect's default (180 s). ``None`` can
    only be set this way (an environment variable cannot say None): if Prefect renames the
    setting, this fails rather than the heartbeat silently staying on."""
    from prefect.settings import get_current_settings

    from flows._common import without_heartbeat

    assert get_current_settings().flows.heartbeat_frequency == 180
    with without_heartbeat():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == 180


def test_artifacts_in_background_all_exist_when_the_flow_returns(prefect_harness):
    """Issue 13: the daily pipeline creates its artifacts on a background thread while its next
    stage runs; every one of them, progress updates included, exists when the flow run returns,
    in the run of the flow that published it."""
    from prefect import flow

    from flows._common import Progress, artifacts_in_background, publish_markdown, publish_table

    @flow(name="background_artifacts_probe")
    def probe() -> str:
        with artifacts_in_background():
            progress = Progress("probe-progress", 2, "probe chunks")
            for i in range(12):
                publish_markdown(f"probe-md-{i}", f"## part {i}", f"markdown {i}")
            progress.step("first")
            publish_table("probe-table", [{"symbol": "AAPL", "rows": 3}], "a table")
            progress.step("second")
        return "done"

    state, result = run(probe)
    assert state.is_completed() and result == "done"
    keys = [f"probe-md-{i}" for i in range(12)] + ["probe-table", "probe-progress"]
    found = artifacts_of(state, *keys)
    assert sorted(found) == sorted(keys)
    assert [found[f"probe-md-{i}"][0].data for i in range(12)] == [f"## part {i}" for i in range(12)]
    assert found["probe-table"][0].data == '[{"symbol": "AAPL", "rows": 3}]'
    assert found["probe-progress"][0].data == 100.0
    assert found["probe-progress"][0].description == "probe chunks (2/2: second)"


def test_an_artifact_that_fails_in_the_background_fails_the_run_and_names_its_key(prefect_harness, run_logs):
    """A background artifact the API refuses (here: a key that Prefect rejects) is not lost: the
    run logs it with its key, the artifacts queued after it are still created, and the flow run
    fails with ArtifactPublishError naming it."""
    from prefect import flow

    from flows._common import ArtifactPublishError, artifacts_in_background, publish_markdown

    @flow(name="background_artifacts_failure_probe")
    def probe() -> str:
        with artifacts_in_background():
            publish_markdown("Not A Valid Key!", "## lost?", "a key Prefect refuses")
            publish_markdown("probe-after-failure", "## still here", "queued after the failure")
        return "done"

    state, error = run(probe)
    assert state.is_failed()
    assert isinstance(error, ArtifactPublishError)
    assert str(error).startswith("1 artifact(s) could not be published: 'Not A Valid Key!' (ValidationError")
    assert "artifact 'Not A Valid Key!' could not be published: ValidationError" in run_logs.text
    assert artifacts_of(state, "probe-after-failure")["probe-after-failure"][0].data == "## still here"


def test_the_flow_body_error_wins_over_a_background_artifact_error(prefect_harness, run_logs):
    """When the flow body itself raises, its error is the run's; the artifact error is logged."""
    from prefect import flow

    from flows._common import artifacts_in_background, publish_markdown

    @flow(name="background_artifacts_body_error_probe")
    def probe() -> str:
        with artifacts_in_background():
            publish_markdown("Bad Key Too", "## lost?", "a key Prefect refuses")
            raise KeyError("the body's own error")

    state, error = run(probe)
    assert state.is_failed()
    assert isinstance(error, KeyError) and error.args == ("the body's own error",)
    assert "artifact 'Bad Key Too' could not be published: ValidationError" in run_logs.text


def test_an_artifact_published_after_the_background_block_ends_is_created_in_place(prefect_harness):
    """A thread that copied the flow's context inside the block (a task's, say) may publish after
    the block has ended and its thread is gone: the artifact is then created in place."""
    import contextvars

    from prefect import flow

    from flows._common import artifacts_in_background, publish_markdown

    @flow(name="background_artifacts_late_probe")
    def probe() -> str:
        with artifacts_in_background():
            inside = contextvars.copy_context()
        inside.run(publish_markdown, "late-artifact", "## published late", "after the block")
        return "ok"

    state, result = run(probe)
    assert state.is_completed() and result == "ok"
    assert artifacts_of(state, "late-artifact")["late-artifact"][0].data == "## published late"


def task_run_names(state) -> list[str]:
    """The names of the task runs of the flow run of ``state``, sorted (read from the API)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return sorted(run.name for run in runs)


# -- ingest_option_chains ------------------------------------------------------------------------


def test_ingest_option_chains_demo_and_weekend_skip(prefect_harness, cache_url, clock, source_calls, run_logs):
    from cachelib.store import TradingCacheManager
    from flows.ingest_options import ingest_option_chains

    db = cache_url
    clock(SATURDAY)
    state, summary = run(ingest_option_chains, underlyings=["AAPL"], source="demo", db_path=db)
    assert summary.status == "skipped" and source_calls == []
    assert "Market closed (Weekend)" in run_logs.text
    assert not cache_exists(db)

    clock(WED_AFTER_CLOSE)
    state, summary = run(ingest_option_chains, underlyings=["AAPL", "SPY"], source="demo", db_path=db)
    assert state.is_completed()
    assert source_calls == ["demo"]  # 2 underlyings, one worker by default: one task run for both
    report = summary.report
    assert report.requests_made == 2
    assert set(report.rows_per_underlying) == {"AAPL", "SPY"}
    assert all(n > 0 for n in report.rows_per_underlying.values())
    with TradingCacheManager(db) as cache:
        stats = cache.get_options_stats()
    assert stats["total_rows"] == report.rows_written
    assert stats["symbols"] == ["AAPL", "SPY"]
    expected = {"option-chains-summary", "option-chains-per-underlying"}
    assert set(artifacts_of(state, *expected)) == expected


def test_ingest_option_chains_from_alpaca(prefect_harness, cache_url, clock, stub):
    from flows.ingest_options import ingest_option_chains

    clock(WED_AFTER_CLOSE)
    quote = "2025-11-26T20:59:59Z"
    stub.add_option_snapshots("AAPL", {
        "AAPL251219C00200000": make_option_snapshot(bid=5.0, ask=5.2, quote_time=quote),
        "AAPL251219P00200000": make_option_snapshot(bid=3.0, ask=3.1, quote_time=quote),
    })
    stub.set_latest_trade("AAPL", 201.5)
    state, summary = run(ingest_option_chains, underlyings=["AAPL"], db_path=cache_url)
    assert state.is_completed()
    report = summary.report
    assert report.source == "alpaca"
    assert report.rows_per_underlying == {"AAPL": 2}
    assert report.trading_dates == {"AAPL": "2025-11-26"}
    assert stub.count("/v1beta1/options/snapshots/AAPL") == 1
    # the chain, the underlying's last trade and the contracts listing (open interest)
    assert report.requests_made == stub.count() == 3
    assert count_rows(cache_url, "raw_options_chain") == 2


def test_ingest_option_chains_401_fails_fast(prefect_harness, cache_url, clock, stub, monkeypatch):
    from flows.ingest_options import ingest_option_chains
    from tasks.market_data import snapshot_option_chains

    monkeypatch.setattr(snapshot_option_chains, "retry_delay_seconds", [0.0, 0.0, 0.0])
    clock(WED_AFTER_CLOSE)
    stub.set_persistent_fault("*", 401)
    state, error = run(ingest_option_chains, underlyings=["AAPL"], db_path=cache_url)
    assert state.is_failed()
    assert isinstance(error, AuthenticationError)
    assert stub.count() == 1
    assert count_rows(cache_url, "raw_options_chain") == 0


# -- cache_maintenance ---------------------------------------------------------------------------


def test_cache_maintenance_removes_expired_rows_and_vacuums(prefect_harness, cache_url):
    from cachelib.demo import DemoSource
    from cachelib.store import TradingCacheManager
    from flows.maintenance import cache_maintenance

    db = cache_url
    bars = DemoSource().get_bars(["AAPL"], "2024-01-02", "2024-06-28", timeframe="1Day")
    with TradingCacheManager(db) as cache:
        assert cache.set("AAPL", bars, source="demo", ttl_hours=0) == 124  # expired at once
        cache.set("MSFT", DemoSource().get_bars(["MSFT"], "2024-01-02", "2024-01-31"), source="demo")

    state, summary = run(cache_maintenance, vacuum=True, db_path=db)
    assert state.is_completed()
    assert summary.rows_removed == 124
    if engine_of(db) == "sqlite":
        # 124 of 145 daily bars deleted: VACUUM drops 3 pages of 4096 bytes (the bars' leaf pages;
        # the WAL is empty after the tasks closed their connections), measured on disk below.
        assert summary.bytes_reclaimed == 3 * 4096
        conn = sqlite3.connect(db)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.close()
        assert Path(db).stat().st_size == pages * 4096
    else:
        # VACUUM ANALYZE (not FULL) keeps the freed pages for new rows: nothing given back.
        assert summary.bytes_reclaimed == 0
    assert (summary.before.cache["total_entries"], summary.after.cache["total_entries"]) == (145, 21)
    assert summary.rows[0] == {"metric": "bars", "before": 145, "after": 21, "change": -124}
    assert count_rows(db, "bars") == 21
    keys = artifacts_of(state, "cache-maintenance-summary", "cache-maintenance-stats")
    assert set(keys) == {"cache-maintenance-summary", "cache-maintenance-stats"}
    assert "124" in keys["cache-maintenance-summary"][0].data


# -- replay_days ---------------------------------------------------------------------------------


def _trades(db) -> list[tuple]:
    from cachelib.store import TradingCacheManager

    with TradingCacheManager(db, create=False) as cache:
        return [tuple(row) for row in cache.conn.execute(
            "SELECT trade_id, entry_price, exit_price, quantity, realized_pnl FROM trade_history ORDER BY trade_id"
        ).fetchall()]


def test_replay_days_matches_cachelib_and_reports_missing_sessions(prefect_harness, cache_url, tmp_path):
    """The flow's trades on either engine are those of cachelib's own replay on a SQLite file."""
    from cachelib.replay import replay_days as cachelib_replay_days
    from cachelib.store import TradingCacheManager
    from flows.replay import replay_days

    flow_db, ref_db = cache_url, str(tmp_path / "ref.db")
    for db in (flow_db, ref_db):
        seed_minute_bars(db, ["AAPL", "MSFT"], "2024-03-13", "2024-03-15")

    state, summary = run(replay_days, symbols=["AAPL", "MSFT", "NVDA"], start=date(2024, 3, 13),
                         end=date(2024, 3, 15), db_path=flow_db)
    assert state.is_completed()
    with TradingCacheManager(ref_db) as cache:
        reference = cachelib_replay_days(cache, ["AAPL", "MSFT"], "2024-03-13", "2024-03-15", max_workers=1)

    assert _trades(flow_db) == _trades(ref_db)
    assert summary.trades == reference.trades > 0
    assert summary.total_pnl == pytest.approx(reference.total_pnl)
    assert summary.sessions == 3
    assert summary.sessions_replayed == 6 and summary.bars == 6 * 390
    assert summary.missing == (("NVDA", date(2024, 3, 13)), ("NVDA", date(2024, 3, 14)), ("NVDA", date(2024, 3, 15)))
    assert summary.stats["total_trades"] == len(_trades(flow_db))
    expected = {"replay-summary", "replay-trades-per-symbol", "replay-trade-stats"}
    assert set(artifacts_of(state, *expected)) == expected

    again, second = run(replay_days, symbols=["AAPL", "MSFT"], start=date(2024, 3, 13), end=date(2024, 3, 15),
                        db_path=flow_db)
    assert _trades(flow_db) == _trades(ref_db)  # idempotent
    assert second.trades == summary.trades


def test_replay_days_with_source_ingests_missing_minute_bars_first(prefect_harness, cache_url):
    from flows.replay import replay_days

    db = cache_url
    state, summary = run(replay_days, symbols=["AAPL"], start=date(2024, 3, 14), end=date(2024, 3, 15),
                         db_path=db, source="demo")
    assert state.is_completed()
    assert summary.missing == ()
    assert summary.bars == count_minute_bars(db) == 780
    assert summary.trades == count_rows(db, "trade_history") > 0


def test_replay_days_on_a_dask_cluster(prefect_harness, cache_url, tmp_path, monkeypatch):
    """Dask workers writing the cache (either engine) record the trades the thread pool records
    in a SQLite file."""
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    from flows._common import choose_task_runner
    from flows.replay import replay_days

    dask_db, thread_db = cache_url, str(tmp_path / "threads.db")
    for db in (dask_db, thread_db):
        seed_minute_bars(db, ["AAPL", "MSFT", "SPY"], "2024-03-14", "2024-03-15")

    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        runner = choose_task_runner()
        assert isinstance(runner, DaskTaskRunner)
        state, on_dask = run(replay_days.with_options(task_runner=runner), symbols=["AAPL", "MSFT", "SPY"],
                             start=date(2024, 3, 14), end=date(2024, 3, 15), db_path=dask_db)
    assert state.is_completed()
    _, on_threads = run(replay_days, symbols=["AAPL", "MSFT", "SPY"], start=date(2024, 3, 14),
                        end=date(2024, 3, 15), db_path=thread_db)
    assert on_dask.sessions_replayed == 6
    assert on_dask.trades == on_threads.trades > 0
    assert _trades(dask_db) == _trades(thread_db)


# -- daily_pipeline ------------------------------------------------------------------------------


#: A PostgreSQL cache that cannot be reached (no server listens in that folder): a run that
#: opened it would fail with DatabaseFileError.
UNREACHABLE_PG = "postgresql://cache:secret@/cache?host=/nonexistent-cachelib-socket-dir"


@pytest.mark.parametrize(("day", "message", "engine"), [(date(2025, 12, 25), "Market closed (Holiday)", "sqlite"),
                                                        (date(2025, 12, 27), "Market closed (Weekend)", "postgresql")],
                         ids=["holiday-sqlite", "weekend-unreachable-postgresql"])
def test_daily_pipeline_skips_non_sessions(prefect_harness, tmp_path, source_calls, run_logs, day, message, engine):
    """A day without a session decides from the calendar alone: no source is built and the
    cache is never opened (no file created; an unreachable PostgreSQL server is never dialled)."""
    from flows.daily_pipeline import daily_pipeline

    db = str(tmp_path / "cache.db") if engine == "sqlite" else UNREACHABLE_PG
    state, summary = run(daily_pipeline, day=day, db_path=db)
    assert state.is_completed()
    assert (summary.status, summary.day, summary.skip_reason) == ("skipped", day, message)
    assert summary.daily_bars is None and summary.replay is None
    assert message in [r.getMessage() for r in run_logs.records]
    assert source_calls == []  # no source was even built
    if engine == "sqlite":
        assert not Path(db).exists()  # and the cache was never opened (PostgreSQL: the run completed)


def test_daily_pipeline_on_an_early_close(prefect_harness, cache_url, monkeypatch):
    from cachelib.store import TradingCacheManager
    from flows.daily_pipeline import daily_pipeline

    db = cache_url
    monkeypatch.setenv("CACHELIB_TASK_WORKERS", "1")  # one chunk per fan-out (the runner keeps its threads)
    state, summary = run(daily_pipeline, day=date(2025, 11, 28), symbols=["AAPL", "MSFT"], source="demo",
                         db_path=db)
    assert state.is_completed()
    assert summary.status == "completed" and summary.session_finished is True
    with TradingCacheManager(db) as cache:
        for sym in ("AAPL", "MSFT"):
            minutes = cache.get(sym, "2025-11-28", "2025-11-28", timeframe="1Min")
            assert len(minutes) == 210  # 09:30-12:59 ET: the market closed at 13:00
            daily = cache.get(sym, "2024-11-28", "2025-11-28", timeframe="1Day")
            assert len(daily) == 250 and daily.index[-1].date() == date(2025, 11, 28)
        history = cache.get_trade_history(start="2025-11-28", end="2025-11-28")
        options = cache.get_options_stats()
    assert summary.minute_bars.report.rows_written == 420
    assert summary.replay.sessions_replayed == 2 and summary.replay.bars == 420
    assert summary.replay.trades == len(history) > 0
    assert summary.cache_after.trades["total_trades"] == len(history)
    assert summary.option_chains.report.rows_written == options["total_rows"] > 0
    assert summary.cache_after.cache["total_entries"] == 2 * 250 + 420
    # Corporate actions of the daily window and 90 days ahead, 2024-11-28 .. 2026-02-26, one
    # request: the demo's AAPL dividends ex 2025-02-10, 05-12, 08-11, 11-10 and the announced
    # 2026-02-10 (first sessions on or after the 10th; the demo announces 30 days ahead of its
    # own clock, the machine's, which is past 2026-01-11).
    actions = summary.corporate_actions
    assert actions is summary.daily_bars.actions
    assert (actions.requests_made, actions.actions_written) == (1, 5)
    with TradingCacheManager(db) as cache:
        assert cache.get_corporate_actions("AAPL")["ex_date"].tolist() == [
            date(2025, 2, 10), date(2025, 5, 12), date(2025, 8, 11), date(2025, 11, 10), date(2026, 2, 10)]
        assert cache.get_corporate_actions("MSFT").empty
    expected = {"daily-pipeline-summary", "daily-pipeline-stages", "daily-pipeline-cache-stats",
                "ingest-bars-1day-summary", "ingest-bars-1min-summary", "option-chains-summary",
                "replay-summary", "replay-trade-stats"}
    keys = artifacts_of(state, *expected)
    assert set(keys) == expected
    assert "2025-11-28" in keys["daily-pipeline-summary"][0].data
    assert ("- corporate actions: 5 written for 2024-11-28 .. 2026-02-26, 2 of 2 symbol(s) asked, 1 request(s)"
            in keys["daily-pipeline-summary"][0].data)
    assert "corporate actions" in keys["daily-pipeline-stages"][0].data
    # Issue 13: coarse tasks, readable names. 5 task runs: the year of daily bars (one chunk:
    # no longer than a year, it is not cut at New Year); corporate actions; minute bars; one
    # snapshot chunk; one replay chunk. The cache statistics (before, after, the replay's
    # trades, the chains' rows) are reads in the flow, not task runs.
    names = task_run_names(state)
    assert names == [
        "fetch 1Day bars 2024-11-28..2025-11-28", "fetch 1Min bars 2025-11-28..2025-11-28", "fetch corporate actions 2024-11-28..2026-02-26",
        "replay 2 sessions AAPL 2025-11-28..MSFT 2025-11-28", "snapshot 2 chains AAPL..MSFT"]


def test_daily_pipeline_before_the_close_ingests_but_does_not_replay(prefect_harness, cache_url, clock, run_logs):
    from flows.daily_pipeline import daily_pipeline

    clock(WED_NOON)  # 12:00 ET on 2025-11-26; day defaults to today in New York
    db = cache_url
    state, summary = run(daily_pipeline, symbols=["SPY"], source="demo", db_path=db)
    assert state.is_completed()
    assert summary.day == date(2025, 11, 26)
    assert summary.session_finished is False and summary.replay is None
    assert summary.minute_bars.report.rows_written > 0
    assert "has not closed yet" in run_logs.text
    assert count_rows(db, "trade_history") == 0


# -- credentials ---------------------------------------------------------------------------------

PASSWORD = "secret7781"  # the session's server trusts local connections: it ignores the password


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in its user part."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{host}"))


def run_texts(state) -> list[str]:
    """Everything the Prefect API holds about the run of ``state`` that a person may read: its
    state message, its artifacts (data and description) and its logs (flow and task runs)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)  # logs reach the API in batches from a background worker
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return ([state.message or ""] + [f"{a.key} {a.description} {a.data}" for a in artifacts]
            + [log.message for log in logs])


def test_a_password_in_the_cache_url_reaches_no_artifact_log_error_or_result(prefect_harness, pg_url, run_logs):
    """Issue 12, credentials: a ``postgresql://user:password@...`` ``db_path`` is shown redacted
    (``user:***@``) in the artifacts, in every log (read back from the API and captured here), in
    a failed run's error and in the results Prefect stores. (Prefect keeps a flow run's
    *parameters* as given: a deployment should leave the password out of ``db_path`` and give
    the workers ``TRADING_CACHE_URL`` or ``PGPASSWORD`` instead.)"""
    import os

    from flows.daily_pipeline import daily_pipeline
    from flows.ingest_bars import ingest_bars
    from flows.maintenance import cache_maintenance

    run_logs.set_level(logging.INFO)
    run_logs.set_level(logging.DEBUG, logger="cachelib")
    url = with_password(pg_url, PASSWORD)
    shown = url.replace(f":{PASSWORD}@", ":***@")  # postgresql://postgres:***@/postgres?host=...

    pipeline, summary = run(daily_pipeline, day=date(2025, 11, 28), symbols=["SPY"], source="demo", db_path=url)
    assert pipeline.is_completed()
    assert summary.replay.sessions_replayed == 1 and summary.option_chains.report.rows_written > 0
    maintenance, _ = run(cache_maintenance, vacuum=True, db_path=url)
    assert maintenance.is_completed()
    unreachable = UNREACHABLE_PG.replace("secret", PASSWORD)
    failed, error = run(ingest_bars, symbols=["SPY"], start=date(2025, 11, 28), end=date(2025, 11, 28),
                        source="demo", db_path=unreachable)
    assert failed.is_failed()
    assert "cache:***@/cache?host=/nonexistent-cachelib-socket-dir" in str(error)

    texts = run_texts(pipeline) + run_texts(maintenance) + run_texts(failed) + [str(error), run_logs.text]
    everything = "\n".join(texts)
    assert PASSWORD not in everything
    # The redacted URL is what the artifacts and logs show instead.
    assert f"database: `{shown}`" in everything
    assert f"database {shown}" in run_logs.text
    stored = [p for p in Path(os.environ["PREFECT_HOME"]).rglob("*") if p.is_file() and p.suffix != ".db"]
    assert [p for p in stored if PASSWORD.encode() in p.read_bytes()] == []
