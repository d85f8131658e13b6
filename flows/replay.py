"""Flow: replay cached sessions through a strategy and record the trades (fan-out per session).

The (symbol, session) pairs are cut into chunks (``flows._common.task_chunks``), one
``replay_sessions`` task run each (a task run costs Prefect ~16 ms, as much as replaying a few
sessions); chunks run in parallel on the flow's task runner (threads, or Dask workers with
``DASK_SCHEDULER_ADDRESS``), and every pair gets its own ``StrategyCache`` inside cachelib. Only *finished* sessions are replayed. Sessions without
cached minute bars are reported as missing, unless ``source`` is given: then the missing
minute bars are ingested first (gap-aware), which makes the flow a one-step backfill.

The replay reads RAW prices, what was traded that day (``adjustment="raw"``): a strategy must
see the prices it could have traded at, not ones adjusted for splits or dividends announced
later. Adjusted prices are for people reading history (``cache.get(..., adjustment="all")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from prefect import flow, get_run_logger, unmapped

from cachelib.market_hours import is_session_finished, latest_finished_session, sessions_in_range
from cachelib.pictures import replay_pictures_markdown
from cachelib.replay import ReplaySummary
from cachelib.sources import describe_source
from cachelib.store import TradingCacheManager
from flows import _common
from flows._common import (
    choose_task_runner,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
    task_chunks,
)
from flows.ingest_bars import ingest_stage
from tasks.market_data import STORE_TIMEOUT
from tasks.replay import replay_sessions

__all__ = ["replay_days", "replay_stage", "replay_summary_markdown", "per_symbol_rows"]

REPLAY_TIMEFRAME = "1Min"
#: At most this many missing (symbol, session) pairs are listed in the summary artifact.
MISSING_LISTED = 50
#: At most this many (symbol, session) pairs per replay task run: a session replays in ~1-2 ms,
#: so a chunk of 100 keeps Prefect's ~16 ms per task run small next to the work (500 symbols x
#: 60 sessions = 300 task runs, not 30,000), and one failed chunk is still a small rerun.
REPLAY_CHUNK = 100


def replay_stage(
    symbols: list[str], start: date, end: date, strategy: str, db_path: str, clock: datetime
) -> ReplaySummary:
    """Replay every finished session in ``[start, end]`` for each symbol; publish the artifacts."""
    logger = get_run_logger()
    sessions = sessions_in_range(start, end)
    days = [d for d in sessions if is_session_finished(d, clock)]
    unfinished = [d for d in sessions if d not in days]
    if unfinished:
        logger.info("session(s) %s not finished yet: not replayed", ", ".join(d.isoformat() for d in unfinished))
    names = [s.upper() for s in symbols]
    jobs = [(sym, d.isoformat()) for d in days for sym in names]
    futures = replay_sessions.map(unmapped(db_path), task_chunks(jobs, REPLAY_CHUNK), unmapped(strategy),
                                  unmapped(REPLAY_TIMEFRAME))
    parts = [part for f in futures for part in f.result()]
    stats = _trade_stats(db_path, strategy)
    summary = (ReplaySummary.merge(parts, stats=stats) if parts
               else ReplaySummary.empty(strategy, names, start, end, stats))
    if summary.missing:
        logger.warning("%d (symbol, session) pair(s) had no cached %s bars and were not replayed",
                       len(summary.missing), REPLAY_TIMEFRAME)
    rows = per_symbol_rows(parts)
    _publish(summary, rows, unfinished)
    if days:
        _publish_pictures(db_path, names, days, strategy)
    logger.info("replayed %d session(s): %d trade(s), P&L %.2f", summary.sessions_replayed,
                summary.trades, summary.total_pnl)
    return summary


def _trade_stats(db_path: str, strategy: str) -> dict[str, Any]:
    """Closed-trade statistics of every archived ``strategy`` trade: one query, read in the flow
    (a ``cache_stats`` task run would cost Prefect ~20 ms and snapshot the whole cache for it)."""
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        return dict(cache.get_trade_stats(strategy=strategy))


def per_symbol_rows(parts: Sequence[ReplaySummary]) -> list[dict[str, Any]]:
    """One table row per symbol: sessions replayed, bars, trades, winners and P&L."""
    rows = []
    for symbol in dict.fromkeys(s for p in parts for s in p.symbols):
        s = ReplaySummary.merge([p for p in parts if symbol in p.symbols])
        rows.append({"symbol": symbol, "sessions": s.sessions_replayed, "bars": s.bars, "trades": s.trades,
                     "winning_trades": s.winning_trades, "total_pnl": round(s.total_pnl, 6)})
    return rows


def replay_summary_markdown(s: ReplaySummary, rows: list[dict[str, Any]], stats: list[dict[str, Any]],
                            unfinished: Sequence[date] = ()) -> str:
    """The ``replay-summary`` artifact: counts in a list, then each table as its own block
    (a table inside a list item renders as raw ``| symbol | day |`` text)."""
    missing = [{"symbol": sym, "day": day.isoformat()} for sym, day in s.missing]
    lines = [
        f"## Replay {s.strategy} {s.start} .. {s.end}",
        "",
        f"- sessions: {s.sessions}, (symbol, session) pairs replayed: **{s.sessions_replayed}**, "
        f"bars: {s.bars}",
        f"- trades: **{s.trades}** ({s.winning_trades} winning), P&L of this replay: "
        f"**{s.total_pnl:.2f}**",
        f"- not replayed for lack of {REPLAY_TIMEFRAME} bars: "
        + (f"**{len(missing)}** (symbol, session) pair(s), listed below" if missing else "none"),
    ]
    if unfinished:
        lines.append(f"- not finished yet, not replayed: {', '.join(d.isoformat() for d in unfinished)}")
    lines += ["", "### Per symbol", "", markdown_table(rows), ""]
    if missing:
        lines += [f"### Not replayed for lack of {REPLAY_TIMEFRAME} bars", "", markdown_table(missing[:MISSING_LISTED]), ""]
        if len(missing) > MISSING_LISTED:
            lines += [f"... and {len(missing) - MISSING_LISTED} more (the flow run's result lists them all).", ""]
    lines += [f"### All archived trades of {s.strategy}", "", markdown_table(stats), ""]
    return "\n".join(lines)


def _publish(s: ReplaySummary, rows: list[dict[str, Any]], unfinished: Sequence[date]) -> None:
    stats = [{"metric": k, "value": v} for k, v in s.stats.items()]
    publish_markdown("replay-summary", replay_summary_markdown(s, rows, stats, unfinished), "replay_days summary")
    publish_table("replay-trades-per-symbol", rows, "sessions, bars, trades and P&L per symbol of this replay")
    publish_table("replay-trade-stats", stats, f"closed-trade statistics of every archived {s.strategy} trade")


def _publish_pictures(db_path: str, symbols: list[str], days: list[date], strategy: str) -> None:
    """The ``replay-pictures`` artifact: the equity curve over ``days`` and the trades of the last
    traded day on its minute chart (``cachelib.pictures``, read from the trade history and bars)."""
    with TradingCacheManager(db_path, create=False, read_only=True) as cache:
        text = replay_pictures_markdown(cache, symbols, days, strategy, REPLAY_TIMEFRAME)
    publish_markdown("replay-pictures", text, f"{strategy} equity curve and the trades of a day on its chart")


@flow(name="replay_days", task_runner=choose_task_runner())
def replay_days(
    symbols: list[str],
    start: date | None = None,
    end: date | None = None,
    strategy: str = "sma_crossover",
    db_path: str | None = None,
    source: str | None = None,
) -> ReplaySummary:
    """Replay each finished session of ``[start, end]`` for ``symbols`` and archive the trades.

    ``start``/``end`` default to the latest finished session (one of them alone means that
    day). With ``source`` (``auto``, ``alpaca`` or ``demo``) the minute bars the cache lacks are
    ingested first; without it only cached sessions are replayed and the rest are listed in
    ``missing``. The strategy sees raw prices, as traded that day (never split- or
    dividend-adjusted).
    """
    logger = get_run_logger()
    clock = _common.now()
    db = resolve_db_path(db_path)
    if start is None and end is None:
        start = end = latest_finished_session(clock)
    first, last = start or end, end or start
    assert first is not None and last is not None
    if source is not None:
        logger.info("market data source: %s", describe_source(source))
        ingest_stage(symbols, REPLAY_TIMEFRAME, first, last, source, db, clock)
    return replay_stage(symbols, first, last, strategy, db, clock)
