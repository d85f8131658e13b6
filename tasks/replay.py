"""The Prefect task that replays one (symbol, session) from the cache and archives its trades.

One task per session so a flow can fan sessions out (threads or Dask). Each call builds its own
``StrategyCache`` inside cachelib's replay, so parallel sessions share no state; trade writes
go through the store's ``BEGIN IMMEDIATE`` transactions with a generous lock timeout. Replays
are idempotent (a session's trades are replaced), so no result caching.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from cachelib.replay import ReplaySummary, replay_days
from cachelib.store import TradingCacheManager
from tasks.market_data import LOCAL_TASK, STORE_TIMEOUT

__all__ = ["replay_session"]


@task(name="replay_session", task_run_name="replay {symbol} {day}", **LOCAL_TASK)
def replay_session(db_path: str, symbol: str, day: str, strategy: str = "sma_crossover",
                   timeframe: str = "1Min") -> ReplaySummary:
    """Replay ``symbol``'s cached ``timeframe`` bars of session ``day`` through ``strategy``.

    A session without cached bars is not an error here: it comes back in ``summary.missing``
    (the flow reports it) and nothing is archived.
    """
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        summary = replay_days(cache, [symbol], day, day, strategy=strategy, max_workers=1,
                              timeframe=timeframe, on_missing="skip")
    logger = get_run_logger()
    if summary.missing:
        logger.warning("no %s bars cached for %s on %s: not replayed", timeframe, symbol, day)
    else:
        logger.info("%s %s: %d bars, %d trade(s), P&L %.2f", symbol, day, summary.bars, summary.trades,
                    summary.total_pnl)
    return summary
