"""Prefect tasks for the cache's housekeeping and statistics (deterministic local work)."""

from __future__ import annotations

from prefect import get_run_logger, task

from cachelib.maintenance import CacheSnapshot, cache_snapshot
from cachelib.store import TradingCacheManager
from cachelib.store.postgres import redact_url
from tasks.market_data import LOCAL_TASK, STORE_TIMEOUT

__all__ = ["cleanup_expired", "vacuum_cache", "cache_stats"]


@task(name="cleanup_expired", **LOCAL_TASK)
def cleanup_expired(db_path: str) -> int:
    """Delete expired bars, coverage records and option snapshots; returns the rows removed."""
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        removed: int = cache.cleanup_expired()
    get_run_logger().info("removed %d expired row(s) from %s", removed, redact_url(db_path))
    return removed


@task(name="vacuum_cache", **LOCAL_TASK)
def vacuum_cache(db_path: str) -> int:
    """Checkpoint the WAL and rebuild the file; returns the bytes reclaimed."""
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        reclaimed: int = cache.vacuum()
    get_run_logger().info("vacuum reclaimed %d byte(s) in %s", reclaimed, redact_url(db_path))
    return reclaimed


@task(name="cache_stats", **LOCAL_TASK)
def cache_stats(db_path: str, strategy: str | None = None) -> CacheSnapshot:
    """Bars, option-chain and closed-trade statistics (trades of ``strategy``, or all)."""
    with TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        return cache_snapshot(cache, strategy)
