"""Housekeeping of the store and its statistics, as typed results for jobs and reports.

The store's statistics methods return plain dicts (their keys are documented in the README
and are part of the public API); the :class:`~typing.TypedDict` types here name those keys,
so that a job that reads ``stats["total_entires"]`` fails the type check, not the 17:00 run.

>>> from cachelib.store import TradingCacheManager        # doctest: +SKIP
>>> with TradingCacheManager("cache.db") as cache:         # doctest: +SKIP
...     before = cache_snapshot(cache)
...     removed = cache.cleanup_expired()
...     rows = stats_rows(before, cache_snapshot(cache))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, cast

if TYPE_CHECKING:  # the store is only used through its methods
    from cachelib.store import TradingCacheManager

__all__ = [
    "DateRange",
    "StoreStats",
    "OptionsStats",
    "TradeStats",
    "CacheSnapshot",
    "StatRow",
    "MaintenanceResult",
    "cache_snapshot",
    "stats_rows",
]


class DateRange(TypedDict):
    """First and last New York session dates (ISO), or None when empty."""

    start: str | None
    end: str | None


class StoreStats(TypedDict):
    """The keys of ``TradingCacheManager.get_stats()`` that jobs read."""

    total_entries: int
    expired_entries: int
    unique_symbols: int
    date_range: DateRange
    db_size_bytes: int
    options_entries: int
    trade_entries: int


class OptionsStats(TypedDict):
    """The keys of ``TradingCacheManager.get_options_stats()`` that jobs read."""

    total_rows: int
    unique_symbols: int
    symbols: list[str]
    snapshots: int
    unique_contracts: int


class TradeStats(TypedDict):
    """``TradingCacheManager.get_trade_stats()``: closed-trade statistics."""

    total_trades: int
    winning_trades: int
    losing_trades: int
    win_rate_pct: float
    total_pnl: float
    avg_pnl: float
    avg_win: float
    avg_loss: float
    profit_factor: float | None  # None without a losing trade to divide by
    avg_holding_hours: float


@dataclass(frozen=True)
class CacheSnapshot:
    """The store's bars, option-chain and trade statistics at one moment."""

    cache: StoreStats
    options: OptionsStats
    trades: TradeStats


class StatRow(TypedDict):
    """One line of a before/after table."""

    metric: str
    before: int
    after: int
    change: int


@dataclass(frozen=True)
class MaintenanceResult:
    """What one housekeeping run did: rows expired, bytes a VACUUM gave back, stats around it."""

    db_path: str
    rows_removed: int
    vacuum: bool
    bytes_reclaimed: int
    before: CacheSnapshot
    after: CacheSnapshot

    @property
    def rows(self) -> list[StatRow]:
        return stats_rows(self.before, self.after)


def cache_snapshot(cache: TradingCacheManager, strategy: str | None = None) -> CacheSnapshot:
    """Statistics of ``cache`` now; the trade statistics of ``strategy`` only when given."""
    return CacheSnapshot(
        cache=cast(StoreStats, cache.get_stats()),
        options=cast(OptionsStats, cache.get_options_stats()),
        trades=cast(TradeStats, cache.get_trade_stats(strategy=strategy)),
    )


def stats_rows(before: CacheSnapshot, after: CacheSnapshot) -> list[StatRow]:
    """Two snapshots as table rows ``metric / before / after / change``.

    >>> def snap(bars: int) -> CacheSnapshot:
    ...     cache = {"total_entries": bars, "expired_entries": 0, "unique_symbols": 1, "db_size_bytes": 0,
    ...              "trade_entries": 0, "options_entries": 0, "date_range": {"start": None, "end": None}}
    ...     options = {"total_rows": 0, "unique_symbols": 0, "symbols": [], "snapshots": 0, "unique_contracts": 0}
    ...     return CacheSnapshot(cache, options, {})  # type: ignore[arg-type]
    >>> stats_rows(snap(145), snap(21))[0]
    {'metric': 'bars', 'before': 145, 'after': 21, 'change': -124}
    """
    pairs: list[tuple[str, int, int]] = [
        ("bars", before.cache["total_entries"], after.cache["total_entries"]),
        ("expired bars", before.cache["expired_entries"], after.cache["expired_entries"]),
        ("symbols", before.cache["unique_symbols"], after.cache["unique_symbols"]),
        ("option contracts", before.options["total_rows"], after.options["total_rows"]),
        ("option snapshots", before.options["snapshots"], after.options["snapshots"]),
        ("trades", before.cache["trade_entries"], after.cache["trade_entries"]),
        ("file bytes", before.cache["db_size_bytes"], after.cache["db_size_bytes"]),
    ]
    return [{"metric": label, "before": b, "after": a, "change": a - b} for label, b, a in pairs]
