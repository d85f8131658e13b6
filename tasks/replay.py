"""The Prefect task that replays a chunk of (symbol, session) pairs from the cache and archives
their trades.

One task run per chunk (``flows._common.task_chunks``), not per pair: each task run costs
Prefect ~16 ms of API round trips, as much as replaying a few sessions. Chunks fan out on the
flow's task runner (threads or Dask). Each pair builds its own ``StrategyCache`` inside
cachelib's replay, so parallel chunks share no state; trade writes go through the store's
``BEGIN IMMEDIATE`` transactions with a generous lock timeout. Replays are idempotent (a
session's trades are replaced), so no result caching, and a failed chunk is simply run again.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from cachelib.replay import ReplaySummary, replay_days
from cachelib.store import TradingCacheManager
from tasks.market_data import LOCAL_TASK, STORE_TIMEOUT

__all__ = ["replay_sessions"]


def _replay_run_name() -> str:
    """``replay AAPL 2025-11-26`` for one pair, ``replay 25 sessions AAPL 2025-11-26..XOM 2025-11-26``."""
    from prefect.runtime import task_run

    pairs = task_run.parameters.get("pairs", [])
    if len(pairs) == 1:
        return f"replay {pairs[0][0]} {pairs[0][1]}"
    first, last = (pairs[0], pairs[-1]) if pairs else (("", ""), ("", ""))
    return f"replay {len(pairs)} sessions {first[0]} {first[1]}..{last[0]} {last[1]}"


@task(name="replay_sessions", task_run_name=_replay_run_name, **LOCAL_TASK)
def replay_sessions(db_path: str, pairs: list[tuple[str, str]], strategy: str = "sma_crossover",
                    timeframe: str = "1Min") -> list[ReplaySummary]:
    """Replay the cached ``timeframe`` bars of each (symbol, ISO session) in ``pairs`` through
    ``strategy``; one summary per pair, in order.

    A session without cached bars is not an error here: it comes back in ``summary.missing``
    (the flow reports it) and nothing is archived.
    """
    logger = get_run_logger()
    parts = []
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        for symbol, day in pairs:
            summary = replay_days(cache, [symbol], day, day, strategy=strategy, max_workers=1,
                                  timeframe=timeframe, on_missing="skip")
            if summary.missing:
                logger.warning("no %s bars cached for %s on %s: not replayed", timeframe, symbol, day)
            parts.append(summary)
    merged = ReplaySummary.merge(parts) if parts else None
    if merged is not None:
        logger.info("%d session(s): %d bars, %d trade(s), P&L %.2f", len(parts), merged.bars, merged.trades,
                    merged.total_pnl)
    return parts
