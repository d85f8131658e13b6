"""Prefect tasks: one small task per pipeline stage, each wrapping one cachelib call (fan-outs
take a chunk of underlyings or (symbol, session) pairs per task run: see ``flows._common.task_chunks``).

* :mod:`tasks.market_data` - ``fetch_and_store_bars``, ``fetch_and_store_corporate_actions``,
  ``snapshot_option_chains`` (network; no task retries: HTTP faults are retried once, inside
  the source).
* :mod:`tasks.maintenance` - ``cleanup_expired``, ``vacuum_cache``, ``cache_stats``.
* :mod:`tasks.replay` - ``replay_sessions``.

Tasks take database paths and plain values (str symbols, ISO dates) and return typed results
(``SyncReport``, ``CorporateActionSyncReport``, ``OptionSyncReport``, ``ReplaySummary``,
``CacheSnapshot``).
"""

from tasks.maintenance import cache_stats, cleanup_expired, vacuum_cache
from tasks.market_data import fetch_and_store_bars, fetch_and_store_corporate_actions, snapshot_option_chains
from tasks.replay import replay_sessions

__all__ = [
    "fetch_and_store_bars",
    "fetch_and_store_corporate_actions",
    "snapshot_option_chains",
    "cleanup_expired",
    "vacuum_cache",
    "cache_stats",
    "replay_sessions",
]
