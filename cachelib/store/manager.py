"""``TradingCacheManager``: the public face of the store. It only delegates.

Each method hands its (defaulted) arguments to the room that owns the concern; the public
signatures, defaults and docstrings live here, the logic in the rooms (see the module map in
:mod:`cachelib.store`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from ..bars import normalize_symbol
from . import ttl
from .bars import BarTable
from .connection import Database
from .coverage import CoverageTable
from .options import OptionChainTable
from .series import SeriesCatalog
from .trades import TradeTable

__all__ = ["TradingCacheManager"]


class TradingCacheManager:
    """A SQLite cache of bars, option-chain snapshots and trade history.

    >>> cache = TradingCacheManager("/tmp/cache.db")     # doctest: +SKIP
    >>> cache.set("spy", bars_df, source="alpaca")        # doctest: +SKIP
    252
    >>> cache.get("SPY", "2025-01-01", "2025-01-31")      # doctest: +SKIP
    """

    def __init__(
        self,
        db_path: str | bytes | os.PathLike[str] | None = None,
        timeout: float = 5.0,
        *,
        create: bool = True,
        read_only: bool = False,
    ) -> None:
        """Open the cache at ``db_path`` (default :func:`default_db_path`).

        ``create=False`` (read-only commands): a missing file raises :class:`CacheNotFoundError`
        and nothing is created, so a mistyped path is an error instead of a new empty cache.
        ``read_only=True``, or a file or folder this process cannot write, opens the cache for
        reading: reads work, every write raises :class:`DatabaseFileError`.
        Anything at ``db_path`` that is not a usable cache of ours (another application's
        database, a damaged file, a directory, a device) raises :class:`DatabaseFileError`
        naming the path, and is left byte-identical.
        """
        self._db = Database(db_path, timeout, create, read_only)
        #: The resolved path of the database file, and the seconds a call waits for a lock.
        self.db_path: Path = self._db.db_path
        self.timeout: float = self._db.timeout
        series = SeriesCatalog(self._db)
        self._bars = BarTable(self._db, series)
        self._coverage = CoverageTable(self._db, series)
        self._options = OptionChainTable(self._db)
        self._trades = TradeTable(self._db)

    # -- the file, connections and transactions ---------------------------------------------

    @property
    def read_only(self) -> bool:
        """Whether this manager can only read (see ``__init__``)."""
        return self._db.read_only

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's (and this process's) connection."""
        return self._db.conn

    @property
    def schema_version(self) -> int:
        return self._db.schema_version

    @property
    def hits(self) -> int:
        """Bar reads (``get``) that found bars."""
        return self._bars.hits

    @property
    def misses(self) -> int:
        """Bar reads (``get``) that found none."""
        return self._bars.misses

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._db.close()

    def __enter__(self) -> TradingCacheManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def atomic(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); nested calls become savepoints.

        Everything inside commits together or not at all::

            with cache.atomic():
                cache.set("AAPL", df, source="alpaca")
                cache.record_coverage("AAPL", sessions, source="alpaca")
        """
        return self._db.atomic()

    # -- bars -------------------------------------------------------------------------------

    def set(
        self,
        symbol: str,
        data: pd.DataFrame,
        source: str,
        asset_type: str = "stock",
        ttl_hours: float | None = None,
        timeframe: str = "1Day",
    ) -> int:
        """Upsert ``symbol``'s bars from ``data``; returns the number of rows written.

        ``data`` may have a DatetimeIndex (any name; naive = UTC, or tz-aware), a
        ``date``/``timestamp`` column, or be alpaca-py's ``(symbol, timestamp)`` frame.
        The whole call is one transaction: every row is written, or (on any error) none.

        >>> cache.set("AAPL", df, source="alpaca", timeframe="1Min")  # doctest: +SKIP
        390
        """
        return self._bars.set(symbol, data, source, asset_type, ttl_hours, timeframe)

    def set_many(
        self,
        frames: Mapping[str, pd.DataFrame] | pd.DataFrame,
        source: str,
        asset_type: str = "stock",
        ttl_hours: float | None = None,
        timeframe: str = "1Day",
    ) -> int:
        """Upsert several symbols' bars in one transaction; returns the number of rows written.

        ``frames`` is a ``{symbol: DataFrame}`` mapping, or one frame indexed ``(symbol,
        timestamp)`` as alpaca-py returns it. Every frame passes the same validation as
        :meth:`set`, all rows together in one pass; one bad frame and nothing is written.

        >>> cache.set_many({"SPY": spy_df, "AAPL": aapl_df}, source="alpaca")  # doctest: +SKIP
        504
        """
        return self._bars.set_many(frames, source, asset_type, ttl_hours, timeframe)

    def get(
        self,
        symbol: str,
        start: Any,
        end: Any,
        source: str | None = None,
        asset_type: str = "stock",
        timeframe: str = "1Day",
    ) -> pd.DataFrame | None:
        """Valid (unexpired) bars of ``symbol`` in ``[start, end]``, or ``None`` if there are none.

        Daily bars come indexed by ``date`` (tz-naive session dates); intraday bars by
        ``timestamp`` (tz-aware UTC). With ``source=None`` and several sources holding a bar,
        the one from the highest-priority source is returned (:data:`SOURCE_PRIORITY`).
        """
        return self._bars.get(symbol, start, end, source, asset_type, timeframe)

    def exists(
        self,
        symbol: str,
        start: Any,
        end: Any = None,
        source: str | None = None,
        asset_type: str = "stock",
        timeframe: str = "1Day",
    ) -> bool:
        """True when at least one valid bar of ``symbol`` lies in ``[start, end]`` (``end``
        defaults to ``start``)."""
        return self._bars.exists(symbol, start, end, source, asset_type, timeframe)

    def count_bars(
        self, symbol: str | None = None, start: Any = None, end: Any = None, source: str | None = None,
        asset_type: str | None = "stock", timeframe: str | None = None,
    ) -> int:
        """How many bars (valid or expired) :meth:`delete` with the same filters would remove
        (``None`` for a filter means any)."""
        return self._bars.count(symbol, start, end, source, asset_type, timeframe)

    def delete(
        self,
        symbol: str | None,
        start: Any = None,
        end: Any = None,
        source: str | None = None,
        asset_type: str | None = "stock",
        timeframe: str | None = None,
    ) -> int:
        """Delete bars (and the matching coverage); returns bars removed.

        ``start``/``end`` bound the range (either may be omitted); ``None`` for ``symbol``,
        ``source``, ``asset_type`` or ``timeframe`` means all of them.

        >>> cache.delete("SPY", "2025-01-01", "2025-01-31", source="alpaca")  # doctest: +SKIP
        21
        """
        return self._bars.delete(symbol, start, end, source, asset_type, timeframe)

    def get_symbols(self, asset_type: str = "stock") -> list[str]:
        """Symbols with at least one cached bar, sorted."""
        return self._bars.symbols(asset_type)

    # -- coverage ---------------------------------------------------------------------------

    def record_coverage(
        self,
        symbol: str,
        sessions: list[date] | list[str],
        source: str,
        timeframe: str = "1Day",
        asset_type: str = "stock",
        rows_per_session: Mapping[date, int] | None = None,
        ttl_hours: float | None = None,
    ) -> int:
        """Record that ``source`` was asked for ``sessions`` of ``symbol`` (bars or not).

        Coverage expires by the same age rule as bars, so a recent session is asked again
        after 24 hours while an old one is settled for 10 years.
        """
        return self._coverage.record(symbol, sessions, source, timeframe, asset_type, rows_per_session, ttl_hours)

    def missing_sessions(
        self,
        symbol: str,
        start: Any,
        end: Any,
        timeframe: str = "1Day",
        source: str | None = None,
        asset_type: str = "stock",
    ) -> list[date]:
        """XNYS sessions in ``[start, end]`` that no valid coverage record (and, for daily
        bars, no valid bar) accounts for: what a sync must fetch.

        >>> cache.missing_sessions("SPY", "2024-01-01", "2024-01-05")  # doctest: +SKIP
        [datetime.date(2024, 1, 2), datetime.date(2024, 1, 3), ...]
        """
        return self.missing_sessions_many([symbol], start, end, timeframe, source, asset_type)[
            normalize_symbol(symbol)
        ]

    def missing_sessions_many(
        self,
        symbols: list[str],
        start: Any,
        end: Any,
        timeframe: str = "1Day",
        source: str | None = None,
        asset_type: str = "stock",
    ) -> dict[str, list[date]]:
        """:meth:`missing_sessions` for many symbols at once (a fully covered range costs one
        grouped COUNT query, which keeps a no-op re-sync of 100 symbols in milliseconds)."""
        return self._coverage.missing_many(symbols, start, end, timeframe, source, asset_type)

    # -- maintenance ------------------------------------------------------------------------

    def cleanup_expired(self) -> int:
        """Remove expired rows from every table that expires (bars, coverage, option
        snapshots); returns the number of rows removed."""
        return ttl.cleanup_expired(self._db)

    def vacuum(self) -> int:
        """Rebuild the file without its free pages; returns the bytes by which the database
        and its WAL really shrank (measured on disk, never negative).

        VACUUM writes the new file into the WAL; it only reaches the database file at a
        checkpoint, which cannot pass a reader still holding an old snapshot. Waiting for such
        a reader would hold the write lock (making writers fail), so the checkpoint waits at
        most 0.2 s; if a reader is still there, the file shrinks at a later checkpoint, this
        returns what was reclaimed now (often 0), and a warning says so.
        """
        return self._db.vacuum()

    def get_stats(self) -> dict[str, Any]:
        """Counts and sizes for people and monitoring (see README for the keys)."""
        return self._bars.stats()

    # -- option chains ----------------------------------------------------------------------

    def store_raw_options(
        self,
        symbol: str,
        trading_date: Any,
        options_df: pd.DataFrame,
        underlying_price: float | None = None,
        source: str = "alpaca",
        snapshot_time: Any = None,
        ttl_hours: float | None = None,
    ) -> int:
        """Store one option-chain snapshot of ``symbol`` for ``trading_date``; returns rows.

        One row per (symbol, trading_date, contract, source): a later snapshot of the same
        day replaces the earlier one. ``option_type`` accepts call/put/C/P in any case.
        Snapshots are history nobody can re-download (Alpaca has no historical chain), so
        they keep for 10 years unless ``ttl_hours`` says otherwise.
        """
        return self._options.store(
            symbol, trading_date, options_df, underlying_price, source, snapshot_time, ttl_hours
        )

    def get_raw_options(
        self,
        symbol: str,
        trading_date: Any,
        source: str | None = None,
        expiration: Any = None,
        option_type: str | None = None,
    ) -> pd.DataFrame | None:
        """The stored snapshot of ``symbol``'s chain for ``trading_date`` (or ``None``).

        With ``source=None`` and several sources, each contract comes from the
        highest-priority source. Rows are sorted by expiration, strike, type.
        """
        return self._options.get(symbol, trading_date, source, expiration, option_type)

    def delete_raw_options(
        self,
        symbol: str | None = None,
        trading_date: Any = None,
        source: str | None = None,
        before: Any = None,
    ) -> int:
        """Delete option snapshots; every filter is optional. ``before`` deletes trading dates
        strictly earlier than it. Returns rows removed."""
        return self._options.delete(symbol, trading_date, source, before)

    def get_options_stats(self) -> dict[str, Any]:
        """Rows, underlyings, snapshot days, contracts and date range of stored chains."""
        return self._options.stats()

    # -- trade history ----------------------------------------------------------------------

    def archive_trade(self, trade: Mapping[str, Any] | Any) -> bool:
        """Insert or update a trade by ``trade_id``; returns True.

        Takes a dict or a pydantic model. A trade archived at entry (no exit yet) is updated
        at exit: only the fields given are changed. ``realized_pnl``, ``realized_pnl_pct``
        (signed by the position: a short that falls gains) and ``holding_period_hours`` are
        derived from the merged trade whenever this call does not give them, so correcting an
        entry price later also corrects the P&L. Date-only times mean New York midnight.
        """
        return self._trades.archive(trade)

    def get_trade_history(
        self, symbol: str | None = None, start: Any = None, end: Any = None, strategy: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Trades (newest entry first) filtered by symbol, entry date range and strategy.
        ``entry_date``/``exit_date`` come back as tz-aware UTC timestamps."""
        return self._trades.history(symbol, start, end, strategy, limit)

    def delete_trades(
        self, symbol: str | None = None, start: Any = None, end: Any = None, strategy: str | None = None
    ) -> int:
        """Delete trades whose entry falls in ``[start, end]`` (New York dates); returns rows."""
        return self._trades.delete(symbol, start, end, strategy)

    def get_trade_stats(self, symbol: str | None = None, strategy: str | None = None) -> dict[str, Any]:
        """Closed-trade statistics: counts, win rate, P&L, profit factor, holding time."""
        return self._trades.stats(symbol, strategy)
