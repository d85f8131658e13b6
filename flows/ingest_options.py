"""Flow: one option-chain snapshot per underlying per run.

Vendors only serve the *latest* chain (no history), so the cache builds its own history from
these snapshots; each is filed under the New York trading date of its quotes, and a later
snapshot of the same day replaces the earlier one contract by contract. On weekends and
holidays the flow logs the reason and skips (the quotes would be stale copies of the last
session's). Underlyings are snapshotted in parallel tasks, a chunk of underlyings per task run
(``flows._common.task_chunks``: each task run costs Prefect ~16 ms), so one failing underlying
fails its chunk (HTTP faults are retried inside the source only, see tasks.market_data).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from prefect import flow, get_run_logger, unmapped
from prefect.futures import PrefectFutureList

from cachelib.market_hours import closed_reason, today_et
from cachelib.sources import describe_source
from cachelib.store import TradingCacheManager
from cachelib.sync import OptionSyncReport
from flows import _common
from flows._common import (
    choose_task_runner,
    display_db,
    markdown_code,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
    task_chunks,
)
from tasks.market_data import STORE_TIMEOUT, snapshot_option_chains

__all__ = ["ChainsIngest", "ingest_option_chains", "options_stage", "submit_options", "options_summary_markdown",
           "options_skipped_markdown", "options_capture_text"]

SUMMARY_KEY = "option-chains-summary"
TABLE_KEY = "option-chains-per-underlying"


@dataclass(frozen=True)
class ChainsIngest:
    """The result of ``ingest_option_chains``: the merged snapshot report, or why it skipped.

    ``report.rows_written`` counts every contract stored; ``new_rows`` how many of them the
    cache did not hold (a later snapshot of the same trading date replaces the earlier one
    contract by contract, so re-running a job on one day writes rows without growing the
    cache); None when unknown. ``day`` is the session the caller worked on, when it has one.
    """

    status: Literal["completed", "skipped"]
    db_path: str
    report: OptionSyncReport | None = None  # None when skipped
    new_rows: int | None = None
    day: date | None = None
    skip_reason: str | None = None

    @property
    def replaced_rows(self) -> int | None:
        if self.report is None or self.new_rows is None:
            return None
        return self.report.rows_written - self.new_rows


def submit_options(underlyings: list[str], source: str, db_path: str) -> PrefectFutureList[list[OptionSyncReport]]:
    """Start one snapshot task per chunk of underlyings on the flow's task runner; returns the
    futures (each a list of per-underlying reports)."""
    return snapshot_option_chains.map(unmapped(db_path), task_chunks(list(underlyings)), unmapped(source))


def _option_rows(db_path: str) -> int:
    """Option-chain rows in the cache: one query, read in the flow (a ``cache_stats`` task run
    would cost Prefect ~20 ms and snapshot the whole cache for one number)."""
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        return int(cache.get_options_stats()["total_rows"])


def options_stage(underlyings: list[str], source: str, db_path: str,
                  futures: PrefectFutureList[list[OptionSyncReport]] | None = None, rows_before: int | None = None,
                  day: date | None = None) -> ChainsIngest:
    """Snapshot every underlying (a task per chunk; or wait for ``futures`` from
    :func:`submit_options`, started when the cache held ``rows_before`` option rows) and
    publish the artifacts. A snapshot is always today's chain, never ``day``'s, and the
    summary says so.
    """
    if futures is None:
        rows_before = _option_rows(db_path)
        futures = submit_options(underlyings, source, db_path)
    parts = [report for f in futures for report in f.result()]
    report = OptionSyncReport.merge(parts)
    # Net growth of the table: exact unless another job writes option rows meanwhile.
    new_rows = (None if rows_before is None
                else min(max(_option_rows(db_path) - rows_before, 0), report.rows_written))
    result = ChainsIngest("completed", db_path, report, new_rows=new_rows, day=day)
    table = _table(parts)
    publish_markdown(SUMMARY_KEY, options_summary_markdown(result, table), "ingest_option_chains summary")
    publish_table(TABLE_KEY, table, "contracts stored per underlying, and the trading date they are filed under")
    get_run_logger().info("option chains: %s", options_capture_text(result))
    return result


def _table(parts: list[OptionSyncReport]) -> list[dict[str, Any]]:
    return [{"underlying": u, "rows_written": n, "trading_date": p.trading_dates.get(u),
             "requests_made": p.requests_made}
            for p in parts for u, n in p.rows_per_underlying.items()]


def options_capture_text(result: ChainsIngest) -> str:
    """One sentence: what was captured, filed under which day, how much of it is new, and
    (for a run about a past ``day``) that day's chain cannot be fetched."""
    report = result.report or OptionSyncReport(source="")
    dates = sorted({d for d in report.trading_dates.values() if d})
    filed = ", ".join(dates) if dates else "no trading date (empty chains)"
    text = (f"captured the latest snapshot (vendors serve only the current chain), "
            f"{report.rows_written:,} contract(s) filed under {filed}")
    if result.new_rows is not None:
        text += (f": {result.new_rows:,} new, {result.replaced_rows:,} replaced an earlier snapshot "
                 f"of the same day")
    if result.day is not None and dates != [result.day.isoformat()]:
        text += f"; historical chains for {result.day} cannot be fetched"
    return text


def options_summary_markdown(result: ChainsIngest, table: list[dict[str, Any]]) -> str:
    """The ``option-chains-summary`` artifact."""
    report = result.report or OptionSyncReport(source="")
    return (
        f"## Option chains\n\n- source: **{report.source}**, {len(report.underlyings)} underlying(s)\n"
        f"- {options_capture_text(result)}\n"
        f"- requests made: {report.requests_made}\n"
        f"- database: {markdown_code(display_db(result.db_path))}\n\n{markdown_table(table)}\n"
    )


def options_skipped_markdown(reason: str) -> str:
    """The summary artifact of an ``ingest_option_chains`` run that skipped."""
    return f"## Option chains: skipped\n\n{reason}\n"


@flow(name="ingest_option_chains", task_runner=choose_task_runner())
def ingest_option_chains(underlyings: list[str], source: str = "auto", db_path: str | None = None) -> ChainsIngest:
    """Store one snapshot of each underlying's option chain; skip on weekends and holidays."""
    logger = get_run_logger()
    db = resolve_db_path(db_path)
    reason = closed_reason(today_et(_common.now()))
    if reason is not None:
        logger.info("%s; option-chain snapshot skipped", reason)
        publish_markdown(SUMMARY_KEY, options_skipped_markdown(reason), "ingest_option_chains summary")
        return ChainsIngest("skipped", db, skip_reason=reason)
    logger.info("market data source: %s; database %s", describe_source(source), display_db(db))
    return options_stage(underlyings, source, db)
