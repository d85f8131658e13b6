"""The Prefect task that replays one (symbol, session) from the cache and archives its trades.

One task per session so a flow can fan sessions out (threads or Dask). Each call builds its own
``StrategyCache`` inside cachelib's replay, so parallel sessions share no state; trade writes
go through the store's ``BEGIN IMMEDIATE`` transactions with a generous lock timeout. Replays
are idempotent (a session's trades are replaced), so no result caching.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cachelib.replay import replay_days as replay_range
from cachelib.store import TradingCacheManager
from tasks.market_data import STORE_TIMEOUT

__all__ = ["replay_session"]


@task(name="replay_session", task_run_name="replay {symbol} {day}", retries=0,
      cache_policy=NO_CACHE, persist_result=False)
def replay_session(db_path: str, symbol: str, day: str, strategy: str = "sma_crossover",
                   timeframe: str = "1Min") -> dict[str, Any]:
    """Replay ``symbol``'s cached ``timeframe`` bars of session ``day`` through ``strategy``.

    A session without cached bars is not an error here: it comes back with ``missing=True``
    (the flow reports it) and nothing is archived.
    """
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        summary = replay_range(cache, [symbol], day, day, strategy=strategy, max_workers=1,
                               timeframe=timeframe, on_missing="skip")
    out = {
        "symbol": summary.symbols[0],
        "day": summary.start.isoformat(),
        "strategy": summary.strategy,
        "missing": bool(summary.missing),
        "bars": summary.bars,
        "trades": summary.trades,
        "winning_trades": summary.winning_trades,
        "total_pnl": round(summary.total_pnl, 6),
    }
    logger = get_run_logger()
    if out["missing"]:
        logger.warning("no %s bars cached for %s on %s: not replayed", timeframe, out["symbol"], out["day"])
    else:
        logger.info("%s %s: %d bars, %d trade(s), P&L %.2f", out["symbol"], out["day"], out["bars"],
                    out["trades"], out["total_pnl"])
    return out
