"""cachelib: a local, trustworthy cache of US stock bars and option chains.

``import cachelib`` loads pandas and the calendar module at once (about 0.3 s), so that a
test may freeze time with freezegun right after it (see below). The other public names are
imported on first use, so a script that only needs the calendar never loads the SDK::

    from cachelib import TradingCacheManager, is_market_hours
"""

from __future__ import annotations

import contextlib as _contextlib
import importlib
from typing import Any

# Loaded now, not on first use: freezegun replaces ``datetime.datetime`` while time is
# frozen, and pandas' Cython extensions imported for the first time under a freeze bind to
# that fake class ("datetime.datetime size changed") and crash the interpreter. Users
# ``import cachelib`` and then freeze time, so every C extension that reads the datetime
# type is imported here: pandas (and numpy with it), and through ``market_hours``
# exchange_calendars. The other lazy modules (store, sources, sync, ...) add no such
# extension (alpaca-py's pydantic-core takes datetime through the C capsule, which freezegun
# does not replace); tests/test_freezegun_fresh.py checks every public name in a fresh process.
import pandas as _pandas  # noqa: F401

from cachelib import market_hours as _market_hours  # noqa: F401,E402

# The PostgreSQL engine's driver (the optional ``postgres`` extra, about 80 ms) has such an
# extension too (psycopg_binary: "datetime.date size changed"), so it is loaded now when installed.
with _contextlib.suppress(ImportError):  # a SQLite-only install has no psycopg
    import psycopg as _psycopg  # noqa: F401

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the SQLite store
    "TradingCacheManager": "cachelib.store",
    "DatabaseFileError": "cachelib.store",
    "CacheNotFoundError": "cachelib.store",
    "database_files": "cachelib.store",
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
