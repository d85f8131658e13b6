"""Flow: replay cached sessions through a strategy and record the trades (fan-out per session).

Every (symbol, session) is one ``replay_session`` task; tasks run in parallel on the flow's
task runner (threads, or Dask workers with ``DASK_SCHEDULER_ADDRESS``), each with its own
``StrategyCache`` inside cachelib. Only *finished* sessions are replayed. Sessions without
cached minute bars are reported as missing, unless ``source`` is given: then the missing
minute bars are ingested first (gap-aware), which makes the flow a one-step backfill.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from prefect import flow, get_run_logger, unmapped

from cachelib.market_hours import sessions_in_range
from flows import _common
from flows._common import (
    choose_task_runner,
    describe_source,
    latest_finished_session,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
    session_finished,
)
from flows.ingest_bars import ingest_stage
from tasks.maintenance import cache_stats
from tasks.replay import replay_session

__all__ = ["replay_days", "replay_stage", "replay_summary_markdown"]

REPLAY_TIMEFRAME = "1Min"


def replay_stage(
    symbols: list[str], start: date, end: date, strategy: str, db_path: str, clock: datetime
) -> dict[str, Any]:
    """Replay every finished session in ``[start, end]`` for each symbol; publish the artifacts."""
    logger = get_run_logger()
    sessions = sessions_in_range(start, end)
    days = [d for d in sessions if session_finished(d, clock)]
    if len(days) < len(sessions):
        logger.info("session(s) %s not finished yet: not replayed",
                    ", ".join(d.isoformat() for d in sessions if d not in days))
    jobs = [(sym.upper(), d.isoformat()) for d in days for sym in symbols]
    futures = replay_session.map(unmapped(db_path), [s for s, _ in jobs], [d for _, d in jobs],
                                 unmapped(strategy), unmapped(REPLAY_TIMEFRAME))
    results = [f.result() for f in futures]

    per_symbol: dict[str, dict[str, Any]] = {
        sym.upper(): {"symbol": sym.upper(), "sessions": 0, "bars": 0, "trades": 0, "winning_trades": 0,
                      "total_pnl": 0.0}
        for sym in symbols
    }
    missing = []
    for r in results:
        if r["missing"]:
            missing.append({"symbol": r["symbol"], "day": r["day"]})
            continue
        acc = per_symbol[r["symbol"]]
        acc["sessions"] += 1
        for k in ("bars", "trades", "winning_trades", "total_pnl"):
            acc[k] += r[k]
    stats = cache_stats(db_path, strategy)["trades"]
    rows = list(per_symbol.values())
    summary = {
        "status": "completed",
        "strategy": strategy,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "sessions": len(days),
        "sessions_replayed": len(results) - len(missing),
        "bars": sum(r["bars"] for r in rows),
        "trades": sum(r["trades"] for r in rows),
        "winning_trades": sum(r["winning_trades"] for r in rows),
        "total_pnl": round(sum(r["total_pnl"] for r in rows), 6),
        "per_symbol": {r["symbol"]: r for r in rows},
        "missing": missing,
        "unfinished_sessions": [d.isoformat() for d in sessions if d not in days],
        "trade_stats": stats,
        "db_path": db_path,
    }
    if missing:
        logger.warning("%d (symbol, session) pair(s) had no cached %s bars and were not replayed",
                       len(missing), REPLAY_TIMEFRAME)
    _publish(summary, rows)
    logger.info("replayed %d session(s): %d trade(s), P&L %.2f", summary["sessions_replayed"],
                summary["trades"], summary["total_pnl"])
    return summary


#: At most this many missing (symbol, session) pairs are listed in the summary artifact.
MISSING_LISTED = 50


def replay_summary_markdown(s: dict[str, Any], rows: list[dict[str, Any]], stats: list[dict[str, Any]]) -> str:
    """The ``replay-summary`` artifact: counts in a list, then each table as its own block
    (a table inside a list item renders as raw ``| symbol | day |`` text)."""
    missing = s["missing"]
    lines = [
        f"## Replay {s['strategy']} {s['start']} .. {s['end']}",
        "",
        f"- sessions: {s['sessions']}, (symbol, session) pairs replayed: **{s['sessions_replayed']}**, "
        f"bars: {s['bars']}",
        f"- trades: **{s['trades']}** ({s['winning_trades']} winning), P&L of this replay: "
        f"**{s['total_pnl']:.2f}**",
        f"- not replayed for lack of {REPLAY_TIMEFRAME} bars: "
        + (f"**{len(missing)}** (symbol, session) pair(s), listed below" if missing else "none"),
    ]
    if s.get("unfinished_sessions"):
        lines.append(f"- not finished yet, not replayed: {', '.join(s['unfinished_sessions'])}")
    lines += ["", "### Per symbol", "", markdown_table(rows), ""]
    if missing:
        lines += [f"### Not replayed for lack of {REPLAY_TIMEFRAME} bars", "", markdown_table(missing[:MISSING_LISTED]), ""]
        if len(missing) > MISSING_LISTED:
            lines += [f"... and {len(missing) - MISSING_LISTED} more (the flow run's result lists them all).", ""]
    lines += [f"### All archived trades of {s['strategy']}", "", markdown_table(stats), ""]
    return "\n".join(lines)


def _publish(s: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    stats = [{"metric": k, "value": v} for k, v in s["trade_stats"].items()]
    publish_markdown("replay-summary", replay_summary_markdown(s, rows, stats), "replay_days summary")
    publish_table("replay-trades-per-symbol", rows, "sessions, bars, trades and P&L per symbol of this replay")
    publish_table("replay-trade-stats", stats, f"closed-trade statistics of every archived {s['strategy']} trade")


@flow(name="replay_days", task_runner=choose_task_runner())
def replay_days(
    symbols: list[str],
    start: date | None = None,
    end: date | None = None,
    strategy: str = "sma_crossover",
    db_path: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Replay each finished session of ``[start, end]`` for ``symbols`` and archive the trades.

    ``start``/``end`` default to the latest finished session (one of them alone means that
    day). With ``source`` (``auto``, ``alpaca`` or ``demo``) the minute bars the cache lacks are
    ingested first; without it only cached sessions are replayed and the rest are listed as
    missing.
    """
    logger = get_run_logger()
    clock = _common.now()
    db = resolve_db_path(db_path)
    if start is None and end is None:
        start = end = latest_finished_session(clock)
    start, end = start or end, end or start
    if source is not None:
        logger.info("market data source: %s", describe_source(source))
        ingest_stage(symbols, REPLAY_TIMEFRAME, start, end, source, db, clock)
    return replay_stage(symbols, start, end, strategy, db, clock)
