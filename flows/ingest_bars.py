"""Flow: bring the cache's bars of ``symbols`` up to date (gap-aware), for any timeframe.

Without ``start``/``end`` it covers the latest *finished* session (daily) or today's session
while the market is open (intraday); on weekends and holidays it logs the reason and skips,
since cron knows nothing of market holidays (``cachelib.market_hours.default_bars_window``).
Long ranges are cut into chunks (a calendar quarter of minute bars, a calendar year of daily
bars; ``chunk_range``), one task run each, with a progress artifact; each chunk fetches only
the sessions the cache lacks.

After the bars, one task syncs the corporate actions (splits, dividends, name changes) of the
symbols over the run's window and :data:`~cachelib.sync.ACTION_LOOKAHEAD` (90 days) beyond it,
gap-aware (``cachelib.sync.sync_corporate_actions``): the cache stores raw bars and adjusts them
at read time, so the actions must be there to read adjusted prices, and announced future actions
(a split next month) are fetched before their ex-date. Its report is ``BarsIngest.actions`` and
a line of the summary artifact.

Chunks run one after another on purpose: they share the vendor's per-key request budget
(Alpaca: 200/min), so running them in parallel would only trade progress for 429s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from prefect import flow, get_run_logger

from cachelib.market_hours import chunk_range, default_bars_window
from cachelib.pictures import ingest_coverage_markdown
from cachelib.sources import describe_source
from cachelib.sync import ACTION_LOOKAHEAD, CorporateActionSyncReport, SyncReport
from flows import _common
from flows._common import (
    Progress,
    artifact_key,
    choose_task_runner,
    display_db,
    markdown_code,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
)
from tasks.market_data import MAX_REJECTIONS_RETURNED, fetch_and_store_bars, fetch_and_store_corporate_actions

__all__ = ["BarsIngest", "ingest_bars", "ingest_stage", "bars_summary_markdown", "bars_skipped_markdown",
           "actions_text"]


@dataclass(frozen=True)
class BarsIngest:
    """The result of ``ingest_bars``: the combined sync report of its chunks, or why it skipped."""

    status: Literal["completed", "skipped"]
    timeframe: str
    db_path: str
    report: SyncReport | None = None  # None when skipped
    chunks: int = 0
    skip_reason: str | None = None
    actions: CorporateActionSyncReport | None = None  # None when skipped or not asked for


def ingest_stage(
    symbols: list[str],
    timeframe: str,
    start: date,
    end: date,
    source: str,
    db_path: str,
    clock: datetime,
    corporate_actions: bool = False,
) -> BarsIngest:
    """Run the fetch tasks for ``[start, end]`` chunk by chunk and publish the artifacts.

    With ``corporate_actions``, one more task then syncs the symbols' corporate actions over
    ``[start, end + ACTION_LOOKAHEAD]`` (once per run, whatever the number of chunks; the
    lookahead fetches announced future actions). Shared by
    :func:`ingest_bars` and ``daily_pipeline`` (which calls it in its own run).
    """
    logger = get_run_logger()
    chunks = chunk_range(start, end, timeframe)
    progress = None
    if len(chunks) > 1:
        progress = Progress(artifact_key("ingest-bars", timeframe, "progress"), len(chunks),
                            f"{timeframe} backfill {start}..{end}")
        logger.info("backfill %s..%s of %s bars in %d chunks", start, end, timeframe, len(chunks))
    reports = []
    for lo, hi in chunks:
        reports.append(fetch_and_store_bars(db_path, list(symbols), lo.isoformat(), hi.isoformat(),
                                            timeframe, source, clock.isoformat()))
        if progress is not None:
            progress.step(f"{lo}..{hi}")
    report = SyncReport.merge(reports, max_rejections=MAX_REJECTIONS_RETURNED)
    actions = None
    if corporate_actions:
        actions = fetch_and_store_corporate_actions(db_path, list(symbols), start.isoformat(),
                                                    (end + ACTION_LOOKAHEAD).isoformat(), source)
    result = BarsIngest("completed", timeframe, db_path, report, chunks=len(chunks), actions=actions)
    _publish(result, report)
    logger.info("%s bars %s..%s: %d request(s), %d rows written, %d rejected", timeframe, start, end,
                report.requests_made, report.rows_written, report.rows_rejected)
    return result


def _per_symbol_rows(r: SyncReport) -> list[dict[str, Any]]:
    return [{"symbol": sym, **counts} for sym, counts in sorted(r.per_symbol.items())]


def _rejected_rows(r: SyncReport) -> list[dict[str, Any]]:
    return [{"reason": reason, "rows": n} for reason, n in sorted(r.rejection_counts.items())]


def actions_text(a: CorporateActionSyncReport) -> str:
    """One line on a corporate-action sync, for the summary artifacts."""
    if not a.symbols_fetched:
        return f"{a.start} .. {a.end} cached already for {len(a.symbols)} symbol(s): no request"
    return (f"{a.actions_written} written for {a.fetched_start} .. {a.fetched_end}, "
            f"{len(a.symbols_fetched)} of {len(a.symbols)} symbol(s) asked, {a.requests_made} request(s)")


def bars_summary_markdown(r: SyncReport, chunks: int, db_path: str,
                          actions: CorporateActionSyncReport | None = None) -> str:
    """The ``ingest-bars-<timeframe>-summary`` artifact of a combined ingest report (and of
    its corporate-action sync, when the run made one)."""
    actions_line = "" if actions is None else f"- corporate actions: {actions_text(actions)}\n"
    return (
        f"## {r.timeframe} bars {r.start} .. {r.end}\n\n"
        f"- source: **{r.source}**, {len(r.symbols)} symbol(s), {chunks} chunk(s)\n"
        f"- sessions fetched: {r.sessions_fetched} of {r.sessions_requested} requested "
        f"(the rest were cached already)\n"
        f"- requests made: **{r.requests_made}**\n"
        f"- rows fetched {r.rows_fetched}, written **{r.rows_written}**, "
        f"rejected **{r.rows_rejected}**\n"
        f"{actions_line}"
        f"- database: {markdown_code(display_db(db_path))}\n\n"
        f"### Per symbol\n\n{markdown_table(_per_symbol_rows(r))}\n\n"
        f"### Rows rejected, by reason\n\n{markdown_table(_rejected_rows(r))}\n"
    )


def bars_skipped_markdown(timeframe: str, reason: str) -> str:
    """The summary artifact of an ``ingest_bars`` run that skipped (weekend, holiday, closed)."""
    return f"## {timeframe} bars: skipped\n\n{reason}\n"


def _publish(result: BarsIngest, r: SyncReport) -> None:
    tf = result.timeframe
    publish_markdown(artifact_key("ingest-bars", tf, "summary"),
                     bars_summary_markdown(r, result.chunks, result.db_path, result.actions),
                     f"ingest_bars {tf} summary")
    publish_markdown(artifact_key("ingest-bars", tf, "coverage"), ingest_coverage_markdown(r),
                     f"{tf} coverage map: symbols x sessions, cached / fetched now / missing / rejected")
    publish_table(artifact_key("ingest-bars", tf, "per-symbol"), _per_symbol_rows(r),
                  f"{tf} rows fetched/written/rejected per symbol")
    publish_table(artifact_key("ingest-bars", tf, "rejections"),
                  _rejected_rows(r) or [{"reason": "(none)", "rows": 0}],
                  f"{tf} rows rejected by validation, by reason")


@flow(name="ingest_bars", task_runner=choose_task_runner())
def ingest_bars(
    symbols: list[str],
    timeframe: str = "1Day",
    start: date | None = None,
    end: date | None = None,
    source: str = "auto",
    db_path: str | None = None,
) -> BarsIngest:
    """Cache the bars of ``symbols`` for ``[start, end]`` (sessions only, missing ones only).

    ``start``/``end`` default to the latest finished session (daily) or today's open session
    (intraday); one of them alone means that single day. ``source`` is ``auto`` (Alpaca when
    keys are configured, else the demo source), ``alpaca`` or ``demo``. The symbols' corporate
    actions over the same window, and 90 days beyond it for announced ones, are synced too
    (``actions`` of the result). Returns the
    combined sync report (requests, rows written/rejected, per symbol).
    """
    logger = get_run_logger()
    clock = _common.now()
    db = resolve_db_path(db_path)
    if start is None and end is None:
        window = default_bars_window(timeframe, clock)
        if window.skip_reason is not None:
            logger.info("%s; %s ingest skipped (pass start/end to backfill)", window.skip_reason, timeframe)
            publish_markdown(artifact_key("ingest-bars", timeframe, "summary"),
                             bars_skipped_markdown(timeframe, window.skip_reason),
                             f"ingest_bars {timeframe} summary")
            return BarsIngest("skipped", timeframe, db, skip_reason=window.skip_reason)
        start, end = window.start, window.end
    first, last = start or end, end or start
    assert first is not None and last is not None  # one of them is set, or the window set both
    logger.info("market data source: %s; database %s", describe_source(source), display_db(db))
    return ingest_stage(symbols, timeframe, first, last, source, db, clock, corporate_actions=True)
