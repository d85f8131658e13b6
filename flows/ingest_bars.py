"""Flow: bring the cache's bars of ``symbols`` up to date (gap-aware), for any timeframe.

Without ``start``/``end`` it covers the latest *finished* session (daily) or today's session
while the market is open (intraday); on weekends and holidays it logs the reason and skips,
since cron knows nothing of market holidays. Long ranges are cut into chunks (a calendar
quarter of minute bars, a calendar year of daily bars), one task run each, with a progress
artifact; each chunk fetches only the sessions the cache lacks.

Chunks run one after another on purpose: they share the vendor's per-key request budget
(Alpaca: 200/min), so running them in parallel would only trade progress for 429s.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from prefect import flow, get_run_logger

from flows import _common
from flows._common import (
    Progress,
    artifact_key,
    choose_task_runner,
    chunk_range,
    default_bars_window,
    describe_source,
    markdown_code,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
)
from tasks.market_data import fetch_and_store_bars

__all__ = ["ingest_bars", "ingest_stage", "bars_summary_markdown", "bars_skipped_markdown"]

_SUM_FIELDS = ("sessions_requested", "sessions_fetched", "requests_made", "rows_fetched",
               "rows_written", "rows_rejected", "calls")
_SYMBOL_FIELDS = ("sessions_fetched", "rows_fetched", "rows_written", "rows_rejected")


def _combine(reports: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {f: sum(r[f] for r in reports) for f in _SUM_FIELDS}
    total["seconds"] = round(sum(r["seconds"] for r in reports), 3)
    per_symbol: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    rejections: list[dict[str, str]] = []
    for report in reports:
        for sym, stats in report["per_symbol"].items():
            acc = per_symbol.setdefault(sym, dict.fromkeys(_SYMBOL_FIELDS, 0))
            for f in _SYMBOL_FIELDS:
                acc[f] += stats[f]
        for reason, n in report["rejection_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
        rejections.extend(report["rejections"])
    total.update(per_symbol=per_symbol, rejection_reasons=reasons, rejections=rejections[:50])
    return total


def ingest_stage(
    symbols: list[str],
    timeframe: str,
    start: date,
    end: date,
    source: str,
    db_path: str,
    clock: datetime,
) -> dict[str, Any]:
    """Run the fetch tasks for ``[start, end]`` chunk by chunk and publish the artifacts.

    Shared by :func:`ingest_bars` and ``daily_pipeline`` (which calls it in its own run).
    """
    logger = get_run_logger()
    tf_key = artifact_key(timeframe)
    chunks = chunk_range(start, end, timeframe)
    progress = None
    if len(chunks) > 1:
        progress = Progress(artifact_key("ingest-bars", tf_key, "progress"), len(chunks),
                            f"{timeframe} backfill {start}..{end}")
        logger.info("backfill %s..%s of %s bars in %d chunks", start, end, timeframe, len(chunks))
    reports = []
    for lo, hi in chunks:
        reports.append(fetch_and_store_bars(db_path, list(symbols), lo.isoformat(), hi.isoformat(),
                                            timeframe, source, clock.isoformat()))
        if progress is not None:
            progress.step(f"{lo}..{hi}")
    summary = _combine(reports)
    summary.update(status="completed", timeframe=timeframe, start=start.isoformat(), end=end.isoformat(),
                   chunks=len(chunks), symbols=list(symbols), source=reports[0]["source"], db_path=db_path)
    _publish(summary)
    logger.info("%s bars %s..%s: %d request(s), %d rows written, %d rejected", timeframe, start, end,
                summary["requests_made"], summary["rows_written"], summary["rows_rejected"])
    return summary


def _per_symbol_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"symbol": sym, **stats} for sym, stats in sorted(s["per_symbol"].items())]


def _rejected_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"reason": reason, "rows": n} for reason, n in sorted(s["rejection_reasons"].items())]


def bars_summary_markdown(s: dict[str, Any]) -> str:
    """The ``ingest-bars-<timeframe>-summary`` artifact of a combined ingest report."""
    return (
        f"## {s['timeframe']} bars {s['start']} .. {s['end']}\n\n"
        f"- source: **{s['source']}**, {len(s['symbols'])} symbol(s), {s['chunks']} chunk(s)\n"
        f"- sessions fetched: {s['sessions_fetched']} of {s['sessions_requested']} requested "
        f"(the rest were cached already)\n"
        f"- requests made: **{s['requests_made']}**\n"
        f"- rows fetched {s['rows_fetched']}, written **{s['rows_written']}**, "
        f"rejected **{s['rows_rejected']}**\n"
        f"- database: {markdown_code(s['db_path'])}\n\n"
        f"### Per symbol\n\n{markdown_table(_per_symbol_rows(s))}\n\n"
        f"### Rows rejected, by reason\n\n{markdown_table(_rejected_rows(s))}\n"
    )


def bars_skipped_markdown(timeframe: str, reason: str) -> str:
    """The summary artifact of an ``ingest_bars`` run that skipped (weekend, holiday, closed)."""
    return f"## {timeframe} bars: skipped\n\n{reason}\n"


def _publish(s: dict[str, Any]) -> None:
    tf_key = artifact_key(s["timeframe"])
    per_symbol = _per_symbol_rows(s)
    rejected = _rejected_rows(s)
    publish_markdown(artifact_key("ingest-bars", tf_key, "summary"), bars_summary_markdown(s),
                     f"ingest_bars {s['timeframe']} summary")
    publish_table(artifact_key("ingest-bars", tf_key, "per-symbol"), per_symbol,
                  f"{s['timeframe']} rows fetched/written/rejected per symbol")
    publish_table(artifact_key("ingest-bars", tf_key, "rejections"),
                  rejected or [{"reason": "(none)", "rows": 0}],
                  f"{s['timeframe']} rows rejected by validation, by reason")


@flow(name="ingest_bars", task_runner=choose_task_runner())
def ingest_bars(
    symbols: list[str],
    timeframe: str = "1Day",
    start: date | None = None,
    end: date | None = None,
    source: str = "auto",
    db_path: str | None = None,
) -> dict[str, Any]:
    """Cache the bars of ``symbols`` for ``[start, end]`` (sessions only, missing ones only).

    ``start``/``end`` default to the latest finished session (daily) or today's open session
    (intraday); one of them alone means that single day. ``source`` is ``auto`` (Alpaca when
    keys are configured, else the demo source), ``alpaca`` or ``demo``. Returns the combined
    sync report (requests, rows written/rejected, per symbol).
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
            return {"status": "skipped", "reason": window.skip_reason, "timeframe": timeframe,
                    "requests_made": 0, "rows_written": 0, "db_path": db}
        start, end = window.start, window.end
    start, end = start or end, end or start
    logger.info("market data source: %s; database %s", describe_source(source), db)
    return ingest_stage(symbols, timeframe, start, end, source, db, clock)
