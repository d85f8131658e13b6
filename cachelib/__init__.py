"""cachelib: a local, trustworthy cache of US stock bars and option chains.

The public names below are imported lazily, so ``import cachelib`` stays cheap and a
script that only needs the calendar never loads the SDK::

    from cachelib import TradingCacheManager, is_market_hours
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the SQLite store
    "TradingCacheManager": "cachelib.store",
    "DatabaseFileError": "cachelib.store",
    "SOURCE_PRIORITY": "cachelib.store",
    # bars
    "BAR_COLUMNS": "cachelib.bars",
    "OPTION_COLUMNS": "cachelib.bars",
    "parse_timeframe": "cachelib.bars",
    # calendar and market hours
    "is_market_hours": "cachelib.market_hours",
    "get_market_status": "cachelib.market_hours",
    "get_market_status_detailed": "cachelib.market_hours",
    "is_session": "cachelib.market_hours",
    "sessions_in_range": "cachelib.market_hours",
    "session_bounds": "cachelib.market_hours",
    "previous_session": "cachelib.market_hours",
    "next_session": "cachelib.market_hours",
    "session_date": "cachelib.market_hours",
    "today_et": "cachelib.market_hours",
    # sources and sync
    "MarketDataSource": "cachelib.sources",
    "AlpacaSource": "cachelib.sources",
    "get_source": "cachelib.sources",
    "DemoSource": "cachelib.demo",
    "sync_bars": "cachelib.sync",
    "sync_option_chains": "cachelib.sync",
    "SyncReport": "cachelib.sync",
    "get_market_data": "cachelib.sync",
    # point-in-time engine and replay
    "IStrategyCache": "cachelib.strategy_cache",
    "StrategyCache": "cachelib.strategy_cache",
    "strategy_cache": "cachelib.strategy_cache",
    "StrategyCacheType": "cachelib.strategy_cache",
    "RunAnchor": "cachelib.strategy_cache",
    "CacheNotConfiguredError": "cachelib.strategy_cache",
    "InvalidDTOTypeError": "cachelib.strategy_cache",
    "CacheAlreadyConfiguredError": "cachelib.strategy_cache",
    "replay_day": "cachelib.replay",
    "replay_days": "cachelib.replay",
}

__all__ = sorted([*_EXPORTS, "cache_adapter"])


def __getattr__(name: str) -> Any:
    if name == "cache_adapter":
        return importlib.import_module("cachelib.cache_adapter")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cachelib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # Only what is already loaded: freezegun (and other introspecting tools) call getattr on
    # every name dir() lists, which would otherwise import the whole package mid-test.
    return sorted(name for name in globals() if not name.startswith("_"))
