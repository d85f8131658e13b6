"""Flow: the end-of-day runbook - bars, option chains, replay, report - for one session.

Reads top to bottom like the runbook it replaces:

1. Weekend or holiday? Log ``Market closed (Weekend)`` / ``Market closed (Holiday)`` and stop.
2. Daily bars for the year up to ``day`` (gap-aware: after the first run, one session).
3. One option-chain snapshot per symbol (vendors only serve the latest chain); it depends on
   nothing else, so its tasks run on the task runner alongside steps 4-5.
4. One-minute bars of ``day`` (all of them once it has closed; what exists so far otherwise).
5. Replay ``day`` through ``sma_crossover`` - only once the session has closed and settled;
   a manual run at noon ingests what exists and says that the replay waits.
6. Report: artifacts with what was fetched, rejected, replayed, and the cache before/after.

The stages call their tasks directly inside this one flow run (the stage helpers are shared
with the ``ingest_bars``, ``ingest_option_chains`` and ``replay_days`` flows, and publish the
same artifacts), rather than running those flows as subflows: in Prefect 3.8.8 every flow run
costs about a second of fixed overhead (API round trips and the heartbeat thread's join), which
would be most of this pipeline's wall time. The UI shows every task run of every stage.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from prefect import flow, get_run_logger

from cachelib.market_hours import session_bounds, today_et
from flows import _common
from flows._common import (
    DEFAULT_SYMBOLS,
    choose_task_runner,
    closed_reason,
    default_symbols,
    describe_source,
    markdown_code,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
    session_finished,
)
from flows.ingest_bars import ingest_stage
from flows.ingest_options import options_capture_text, options_stage, submit_options
from flows.maintenance import stats_rows
from flows.replay import replay_stage
from tasks.maintenance import cache_stats

__all__ = ["daily_pipeline", "DEFAULT_SYMBOLS", "DAILY_LOOKBACK", "STRATEGY", "pipeline_summary_markdown",
           "pipeline_skipped_markdown"]

#: How much daily history the pipeline keeps cached behind ``day``.
DAILY_LOOKBACK = timedelta(days=365)
STRATEGY = "sma_crossover"
SUMMARY_KEY = "daily-pipeline-summary"


@flow(name="daily_pipeline", task_runner=choose_task_runner())
def daily_pipeline(
    day: date | None = None,
    symbols: list[str] | None = None,
    source: str = "auto",
    db_path: str | None = None,
) -> dict[str, Any]:
    """Ingest, snapshot and replay one session; ``day`` defaults to today in New York.

    ``symbols`` defaults to ``CACHELIB_SYMBOLS`` (comma-separated) or :data:`DEFAULT_SYMBOLS`.
    Returns a summary: ``status`` (``completed``/``skipped``), per-stage reports, cache stats.
    """
    logger = get_run_logger()
    clock = _common.now()
    day = day or today_et(clock)
    reason = closed_reason(day)
    if reason is not None:
        logger.info(reason)
        logger.info("%s is not an NYSE session: nothing to ingest or replay", day)
        publish_markdown(SUMMARY_KEY, pipeline_skipped_markdown(day, reason), "daily_pipeline summary")
        return {"status": "skipped", "day": day.isoformat(), "reason": reason}

    symbols = [s.upper() for s in (symbols or default_symbols())]
    db = resolve_db_path(db_path)
    logger.info("daily pipeline for %s: %d symbol(s); market data source: %s; database %s",
                day, len(symbols), describe_source(source), db)

    before = cache_stats(db, STRATEGY)
    daily = ingest_stage(symbols, "1Day", day - DAILY_LOOKBACK, day, source, db, clock)
    # Independent of the bars, so the snapshots run alongside the next stages; started after the
    # daily bars so that rejected keys fail the pipeline on that stage's one request, not on 20.
    snapshots = submit_options(symbols, source, db)
    minute = ingest_stage(symbols, "1Min", day, day, source, db, clock)
    finished = session_finished(day, clock)
    if finished:
        replay = replay_stage(symbols, day, day, STRATEGY, db, clock)
    else:
        closes = session_bounds(day)[1]
        logger.info("session %s has not closed yet (closes %s): ingested what exists; replay skipped "
                    "until it has closed", day, closes.isoformat())
        replay = None
    chains = options_stage(symbols, source, db, futures=snapshots,
                           rows_before=before["options"]["total_rows"], day=day)
    after = cache_stats(db, STRATEGY)

    summary = {
        "status": "completed",
        "day": day.isoformat(),
        "symbols": symbols,
        "source": daily["source"],
        "session_finished": finished,
        "daily_bars": _brief(daily),
        "minute_bars": _brief(minute),
        "option_chains": {k: chains[k] for k in ("rows_written", "new_rows", "replaced_rows", "requests_made",
                                                 "rows_per_underlying", "trading_dates", "day")},
        "replay": None if replay is None else {k: replay[k] for k in (
            "sessions_replayed", "bars", "trades", "winning_trades", "total_pnl", "missing")},
        "trade_stats": after["trades"],
        "cache_before": _brief_stats(before),
        "cache_after": _brief_stats(after),
        "db_path": db,
    }
    _publish(summary, stats_rows(before, after))
    return summary


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests_made", "sessions_fetched", "rows_fetched", "rows_written", "rows_rejected",
            "rejection_reasons", "chunks")
    return {k: report[k] for k in keys}


def _brief_stats(stats: dict[str, Any]) -> dict[str, Any]:
    cache = stats["cache"]
    return {"bars": cache["total_entries"], "symbols": cache["unique_symbols"],
            "first_day": cache["date_range"]["start"], "last_day": cache["date_range"]["end"],
            "option_rows": stats["options"]["total_rows"], "trades": cache["trade_entries"],
            "db_size_bytes": cache["db_size_bytes"]}


def _stage_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    stages = [
        {"stage": f"{name} bars", "requests": r["requests_made"], "rows_written": r["rows_written"],
         "rows_rejected": r["rows_rejected"]}
        for name, r in (("daily", s["daily_bars"]), ("1-minute", s["minute_bars"]))
    ]
    stages.append({"stage": "option chains", "requests": s["option_chains"]["requests_made"],
                   "rows_written": s["option_chains"]["rows_written"], "rows_rejected": 0})
    return stages


def pipeline_summary_markdown(s: dict[str, Any], stages: list[dict[str, Any]], stats: list[dict[str, Any]]) -> str:
    """The ``daily-pipeline-summary`` artifact. Option chains are always today's snapshot
    (vendors serve no past chain): the text says which day they are filed under, and how many
    rows are new, so that it agrees with the cache before/after table."""
    replay = s["replay"]
    replay_text = (
        f"{replay['sessions_replayed']} (symbol, session) pair(s), {replay['bars']} bars, "
        f"**{replay['trades']}** trade(s), P&L **{replay['total_pnl']:.2f}**"
        if replay is not None else "skipped: the session has not closed yet"
    )
    if replay is not None and replay["missing"]:
        replay_text += f"; {len(replay['missing'])} (symbol, session) pair(s) had no 1-minute bars"
    t = s["trade_stats"]
    return (
        f"## Daily pipeline {s['day']}\n\n"
        f"- source: **{s['source']}**, symbols: {', '.join(s['symbols'])}\n"
        f"- database: {markdown_code(s['db_path'])}\n"
        f"- option chains: {options_capture_text(s['option_chains'])}\n"
        f"- replay: {replay_text}\n"
        f"- all archived trades: {t['total_trades']} trade(s), win rate {t['win_rate_pct']:.1f} %, "
        f"P&L {t['total_pnl']:.2f}, profit factor {t['profit_factor']}\n\n"
        f"### Stages\n\n{markdown_table(stages)}\n\n"
        f"### Cache before / after\n\n{markdown_table(stats)}\n"
    )


def pipeline_skipped_markdown(day: date, reason: str) -> str:
    """The summary artifact of a run on a weekend or holiday."""
    return f"## Daily pipeline {day}: skipped\n\n{reason}\n"


def _publish(s: dict[str, Any], stats: list[dict[str, Any]]) -> None:
    stages = _stage_rows(s)
    publish_markdown(SUMMARY_KEY, pipeline_summary_markdown(s, stages, stats), "daily_pipeline summary")
    publish_table("daily-pipeline-stages", stages, "requests and rows per stage of the pipeline")
    publish_table("daily-pipeline-cache-stats", stats, "cache statistics before and after the pipeline")
