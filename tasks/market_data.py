"""Prefect tasks that talk to a market-data source: fetch bars and corporate actions, snapshot
option chains.

**One retry layer.** HTTP faults (429, 5xx, timeouts, dropped connections, stalled answers)
are retried in exactly one place: inside the source (``AlpacaSource``), which knows
``Retry-After`` and which faults are transient (``cachelib.sources.RETRYABLE_STATUS``), and
bounds its retries per request and per call. These tasks therefore run with ``retries=0``: an
error that reaches a task already outlived the source's retries, and retrying the task would
multiply the requests. The next scheduled run catches up, because the sync is gap-aware.

Tasks take database paths and plain values and build the source inside the task
(``cachelib.sources.open_source``, which reads the ``CACHELIB_ALPACA_*`` settings and shares
one rate limiter per process), so they run unchanged in a thread, a Dask worker or another
process. Results depend on the database's state, so Prefect's result caching is off.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cachelib.sources import open_source, shared_rate_limiter, source_options
from cachelib.store import TradingCacheManager
from cachelib.sync import (
    CorporateActionSyncReport,
    OptionSyncReport,
    SyncReport,
    sync_bars,
    sync_corporate_actions,
    sync_option_chains,
)

__all__ = [
    "fetch_and_store_bars",
    "fetch_and_store_corporate_actions",
    "snapshot_option_chains",
    "source_options",
    "shared_rate_limiter",
    "STORE_TIMEOUT",
    "NETWORK_TASK",
    "LOCAL_TASK",
]

#: Seconds a task waits for SQLite's write lock: parallel replay/ingest tasks share one file.
STORE_TIMEOUT = 60.0
#: A sync report's rejected rows are capped in the task result (the counts per reason are not).
MAX_REJECTIONS_RETURNED = 50

#: Options of the network tasks: no task retries (the source is the one retry layer), no caching.
NETWORK_TASK: dict[str, Any] = dict(retries=0, cache_policy=NO_CACHE, persist_result=False)
#: Options of the local tasks: a failure is a bug or a full disk, not a blip; no caching.
LOCAL_TASK: dict[str, Any] = dict(retries=0, cache_policy=NO_CACHE, persist_result=False)


@task(name="fetch_and_store_bars", task_run_name="fetch {timeframe} bars {start}..{end}", **NETWORK_TASK)
def fetch_and_store_bars(
    db_path: str,
    symbols: list[str],
    start: str,
    end: str,
    timeframe: str = "1Day",
    source: str = "auto",
    now: str | None = None,
) -> SyncReport:
    """Sync the sessions of ``symbols`` in ``[start, end]`` that the cache lacks (``sync_bars``).

    ``now`` (ISO instant) is the flow's clock: which sessions count as finished. Returns the
    sync report with at most ``MAX_REJECTIONS_RETURNED`` rejected rows listed (all counted).
    """
    clock = datetime.fromisoformat(now) if now else None
    with open_source(source) as src, TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        report = sync_bars(cache, src, symbols, start, end, timeframe=timeframe, now=clock)
    get_run_logger().info("%s %s..%s from %s: %d request(s), %d rows written, %d rejected", timeframe, start, end,
                          report.source, report.requests_made, report.rows_written, report.rows_rejected)
    return report.capped(MAX_REJECTIONS_RETURNED)


@task(name="fetch_and_store_corporate_actions", task_run_name="fetch corporate actions {start}..{end}",
      **NETWORK_TASK)
def fetch_and_store_corporate_actions(
    db_path: str, symbols: list[str], start: str, end: str, source: str = "auto",
) -> CorporateActionSyncReport:
    """Sync the corporate actions of ``symbols`` with ex-dates in ``[start, end]`` that the cache
    lacks (``sync_corporate_actions``: gap-aware, one request for all symbols when the page allows)."""
    with open_source(source) as src, TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        report = sync_corporate_actions(cache, src, symbols, start, end)
    get_run_logger().info("corporate actions %s..%s from %s: %d symbol(s) fetched, %d request(s), %d written",
                          start, end, report.source, len(report.symbols_fetched), report.requests_made,
                          report.actions_written)
    return report


def _chains_run_name() -> str:
    """``snapshot AAPL chain`` for one underlying, ``snapshot 25 chains SPY..XOM`` for a chunk."""
    from prefect.runtime import task_run

    names = _as_list(task_run.parameters.get("underlyings", []))
    if len(names) == 1:
        return f"snapshot {names[0]} chain"
    return f"snapshot {len(names)} chains {names[0] if names else ''}..{names[-1] if names else ''}"


def _as_list(underlyings: str | list[str]) -> list[str]:
    return [underlyings] if isinstance(underlyings, str) else list(underlyings)


@task(name="snapshot_option_chains", task_run_name=_chains_run_name, **NETWORK_TASK)
def snapshot_option_chains(db_path: str, underlyings: str | list[str], source: str = "auto") -> list[OptionSyncReport]:
    """Store one snapshot of each underlying's option chain (the source's latest quotes).

    One task run per chunk of underlyings (``flows._common.task_chunks``): a task run costs
    Prefect ~16 ms, so 500 underlyings as 500 runs would cost 8 s for nothing. Returns one
    report per underlying, in order, so that requests are still counted per underlying.
    """
    logger = get_run_logger()
    reports = []
    names = _as_list(underlyings)
    with open_source(source) as src, TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        for underlying in names:
            report = sync_option_chains(cache, src, [underlying])
            # DEBUG, not INFO: every record at INFO is shipped to the API and stored by the
            # server, one row per underlying (500 a run); the chunk's line below and the flow's
            # per-underlying table artifact say the same.
            logger.debug("%s chain from %s: %d contracts filed under %s", underlying, report.source,
                         report.rows_written, ", ".join(report.trading_dates.values()) or "no date")
            reports.append(report)
    merged = OptionSyncReport.merge(reports) if reports else OptionSyncReport(source=source)
    logger.info("%d chain(s) %s from %s: %d contracts filed under %s, %d request(s)", len(reports),
                f"{names[0]}..{names[-1]}" if len(names) > 1 else "".join(names), merged.source,
                merged.rows_written, ", ".join(sorted(set(merged.trading_dates.values()))) or "no date",
                merged.requests_made)
    return reports
