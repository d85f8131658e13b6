"""Flow: one option-chain snapshot per underlying per run.

Vendors only serve the *latest* chain (no history), so the cache builds its own history from
these snapshots; each is filed under the New York trading date of its quotes, and a later
snapshot of the same day replaces the earlier one contract by contract. On weekends and
holidays the flow logs the reason and skips (the quotes would be stale copies of the last
session's). Underlyings are snapshotted in parallel tasks, so one failing underlying fails
on its own (HTTP faults are retried inside the source only, see tasks.market_data).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.futures import PrefectFutureList

from cachelib.market_hours import today_et
from flows import _common
from flows._common import (
    choose_task_runner,
    closed_reason,
    describe_source,
    markdown_code,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
)
from tasks.maintenance import cache_stats
from tasks.market_data import snapshot_option_chains

__all__ = ["ingest_option_chains", "options_stage", "submit_options", "options_summary_markdown",
           "options_skipped_markdown", "options_capture_text"]

SUMMARY_KEY = "option-chains-summary"
TABLE_KEY = "option-chains-per-underlying"


def submit_options(underlyings: list[str], source: str, db_path: str) -> PrefectFutureList:
    """Start one snapshot task per underlying on the flow's task runner; returns the futures."""
    return snapshot_option_chains.map(unmapped(db_path), list(underlyings), unmapped(source))


def _option_rows(db_path: str) -> int:
    return cache_stats(db_path)["options"]["total_rows"]


def options_stage(underlyings: list[str], source: str, db_path: str,
                  futures: PrefectFutureList | None = None, rows_before: int | None = None,
                  day: date | None = None) -> dict[str, Any]:
    """Snapshot every underlying (one task each; or wait for ``futures`` from
    :func:`submit_options`, started when the cache held ``rows_before`` option rows) and
    publish the artifacts. ``day`` is the session the caller works on, when it has one: a
    snapshot is always today's chain, never ``day``'s, and the summary says so.

    ``rows_written`` counts every contract stored; ``new_rows`` how many of them the cache did
    not hold (a later snapshot of the same trading date replaces the earlier one contract by
    contract, so re-running a job on one day writes rows without growing the cache).
    """
    if futures is None:
        rows_before = _option_rows(db_path)
        futures = submit_options(underlyings, source, db_path)
    rows = [f.result() for f in futures]
    written = sum(r["rows_written"] for r in rows)
    # Net growth of the table: exact unless another job writes option rows meanwhile.
    new_rows = None if rows_before is None else min(max(_option_rows(db_path) - rows_before, 0), written)
    summary = {
        "status": "completed",
        "underlyings": [r["underlying"] for r in rows],
        "rows_written": written,
        "new_rows": new_rows,
        "replaced_rows": None if new_rows is None else written - new_rows,
        "requests_made": sum(r["requests_made"] for r in rows),
        "rows_per_underlying": {r["underlying"]: r["rows_written"] for r in rows},
        "trading_dates": {r["underlying"]: r["trading_date"] for r in rows},
        "day": None if day is None else day.isoformat(),
        "source": rows[0]["source"] if rows else None,
        "db_path": db_path,
    }
    table = [{k: r[k] for k in ("underlying", "rows_written", "trading_date", "requests_made")} for r in rows]
    publish_markdown(SUMMARY_KEY, options_summary_markdown(summary, table), "ingest_option_chains summary")
    publish_table(TABLE_KEY, table, "contracts stored per underlying, and the trading date they are filed under")
    get_run_logger().info("option chains: %s", options_capture_text(summary))
    return summary


def options_capture_text(s: dict[str, Any]) -> str:
    """One sentence: what was captured, filed under which day, how much of it is new, and
    (for a run about a past ``day``) that day's chain cannot be fetched."""
    dates = sorted({d for d in s["trading_dates"].values() if d})
    filed = ", ".join(dates) if dates else "no trading date (empty chains)"
    text = (f"captured the latest snapshot (vendors serve only the current chain), "
            f"{s['rows_written']:,} contract(s) filed under {filed}")
    if s.get("new_rows") is not None:
        text += (f": {s['new_rows']:,} new, {s['replaced_rows']:,} replaced an earlier snapshot "
                 f"of the same day")
    day = s.get("day")
    if day is not None and dates != [day]:
        text += f"; historical chains for {day} cannot be fetched"
    return text


def options_summary_markdown(s: dict[str, Any], table: list[dict[str, Any]]) -> str:
    """The ``option-chains-summary`` artifact."""
    return (
        f"## Option chains\n\n- source: **{s['source']}**, {len(s['underlyings'])} underlying(s)\n"
        f"- {options_capture_text(s)}\n"
        f"- requests made: {s['requests_made']}\n"
        f"- database: {markdown_code(s['db_path'])}\n\n{markdown_table(table)}\n"
    )


def options_skipped_markdown(reason: str) -> str:
    """The summary artifact of an ``ingest_option_chains`` run that skipped."""
    return f"## Option chains: skipped\n\n{reason}\n"


@flow(name="ingest_option_chains", task_runner=choose_task_runner())
def ingest_option_chains(underlyings: list[str], source: str = "auto", db_path: str | None = None) -> dict[str, Any]:
    """Store one snapshot of each underlying's option chain; skip on weekends and holidays."""
    logger = get_run_logger()
    db = resolve_db_path(db_path)
    reason = closed_reason(today_et(_common.now()))
    if reason is not None:
        logger.info("%s; option-chain snapshot skipped", reason)
        publish_markdown(SUMMARY_KEY, options_skipped_markdown(reason), "ingest_option_chains summary")
        return {"status": "skipped", "reason": reason, "rows_written": 0, "requests_made": 0, "db_path": db}
    logger.info("market data source: %s; database %s", describe_source(source), db)
    return options_stage(underlyings, source, db)
