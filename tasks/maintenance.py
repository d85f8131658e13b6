"""Prefect tasks for the cache's housekeeping and statistics.

Deterministic local work: no retries (a failure here is a bug or a full disk, not a blip),
and no result caching, since every answer depends on the database's current state.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cachelib.store import TradingCacheManager
from tasks.market_data import STORE_TIMEOUT

__all__ = ["cleanup_expired", "vacuum_cache", "cache_stats"]

_LOCAL_TASK = dict(retries=0, cache_policy=NO_CACHE, persist_result=False)


@task(name="cleanup_expired", **_LOCAL_TASK)
def cleanup_expired(db_path: str) -> dict[str, int]:
    """Delete expired bars, coverage records and option snapshots; ``{"rows_removed": n}``."""
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        removed = cache.cleanup_expired()
    get_run_logger().info("removed %d expired row(s) from %s", removed, db_path)
    return {"rows_removed": removed}


@task(name="vacuum_cache", **_LOCAL_TASK)
def vacuum_cache(db_path: str) -> dict[str, int]:
    """Checkpoint the WAL and rebuild the file; ``{"bytes_reclaimed": n}``."""
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        reclaimed = cache.vacuum()
    get_run_logger().info("vacuum reclaimed %d byte(s) in %s", reclaimed, db_path)
    return {"bytes_reclaimed": reclaimed}


@task(name="cache_stats", **_LOCAL_TASK)
def cache_stats(db_path: str, strategy: str | None = None) -> dict[str, Any]:
    """Bars, option-chain and closed-trade statistics (trades of ``strategy``, or all)."""
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        return {
            "cache": cache.get_stats(),
            "options": cache.get_options_stats(),
            "trades": cache.get_trade_stats(strategy=strategy),
        }
