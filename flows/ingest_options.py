"""Flow: one option-chain snapshot per underlying per run.

Vendors only serve the *latest* chain (no history), so the cache builds its own history from
these snapshots; each is filed under the New York trading date of its quotes, and a later
snapshot of the same day replaces the earlier one contract by contract. On weekends and
holidays the flow logs the reason and skips (the quotes would be stale copies of the last
session's). Underlyings are snapshotted in parallel tasks, so one failing underlying is
retried on its own.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.futures import PrefectFutureList

from cachelib.market_hours import today_et
from flows import _common
from flows._common import (
    choose_task_runner,
    closed_reason,
    describe_source,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
)
from tasks.market_data import snapshot_option_chains

__all__ = ["ingest_option_chains", "options_stage", "submit_options"]

SUMMARY_KEY = "option-chains-summary"
TABLE_KEY = "option-chains-per-underlying"


def submit_options(underlyings: list[str], source: str, db_path: str) -> PrefectFutureList:
    """Start one snapshot task per underlying on the flow's task runner; returns the futures."""
    return snapshot_option_chains.map(unmapped(db_path), list(underlyings), unmapped(source))


def options_stage(underlyings: list[str], source: str, db_path: str,
                  futures: PrefectFutureList | None = None) -> dict[str, Any]:
    """Snapshot every underlying (one task each; or wait for ``futures`` from
    :func:`submit_options`) and publish the artifacts."""
    if futures is None:
        futures = submit_options(underlyings, source, db_path)
    rows = [f.result() for f in futures]
    summary = {
        "status": "completed",
        "underlyings": [r["underlying"] for r in rows],
        "rows_written": sum(r["rows_written"] for r in rows),
        "requests_made": sum(r["requests_made"] for r in rows),
        "rows_per_underlying": {r["underlying"]: r["rows_written"] for r in rows},
        "trading_dates": {r["underlying"]: r["trading_date"] for r in rows},
        "source": rows[0]["source"] if rows else None,
        "db_path": db_path,
    }
    table = [{k: r[k] for k in ("underlying", "rows_written", "trading_date", "requests_made")} for r in rows]
    publish_markdown(
        SUMMARY_KEY,
        f"## Option chains\n\n- source: **{summary['source']}**, {len(rows)} underlying(s)\n"
        f"- contracts stored: **{summary['rows_written']}**, requests made: {summary['requests_made']}\n"
        f"- database: `{db_path}`\n\n{markdown_table(table)}\n",
        "ingest_option_chains summary",
    )
    publish_table(TABLE_KEY, table, "contracts stored per underlying, and the trading date they are filed under")
    get_run_logger().info("option chains: %d contract(s) for %d underlying(s), %d request(s)",
                          summary["rows_written"], len(rows), summary["requests_made"])
    return summary


@flow(name="ingest_option_chains", task_runner=choose_task_runner())
def ingest_option_chains(underlyings: list[str], source: str = "auto", db_path: str | None = None) -> dict[str, Any]:
    """Store one snapshot of each underlying's option chain; skip on weekends and holidays."""
    logger = get_run_logger()
    db = resolve_db_path(db_path)
    reason = closed_reason(today_et(_common.now()))
    if reason is not None:
        logger.info("%s; option-chain snapshot skipped", reason)
        publish_markdown(SUMMARY_KEY, f"## Option chains: skipped\n\n{reason}\n", "ingest_option_chains summary")
        return {"status": "skipped", "reason": reason, "rows_written": 0, "requests_made": 0, "db_path": db}
    logger.info("market data source: %s; database %s", describe_source(source), db)
    return options_stage(underlyings, source, db)
