"""``TradingCacheManager``: the public face of the store. It only delegates.

Each method hands its (defaulted) arguments to the room that owns the concern; the public
signatures, defaults and docstrings live here, the logic in the rooms (see the module map in
:mod:`cachelib.store`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from ..bars import normalize_symbol
from . import ttl
from .bars import BarTable
from .connection import Engine, open_database
from .corporate_actions import ActionReplacement, CorporateActionTable
from .coverage import CoverageTable
from .options import OptionChainTable
from .series import SeriesCatalog
from .trades import TradeTable

__all__ = ["TradingCacheManager"]

T = TypeVar("T")


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
        """Open the cache at ``db_path`` (default :func:`default_db_path`): a SQLite file path
        or ``sqlite:///`` URL, or a ``postgresql://user[:password]@host[:port]/dbname`` URL (the
        same API on PostgreSQL; see :mod:`cachelib.store.postgres`).

        ``create=False`` (read-only commands): a missing file raises :class:`CacheNotFoundError`
        and nothing is created, so a mistyped path is an error instead of a new empty cache.
        ``read_only=True``, or a file or folder this process cannot write, opens the cache for
        reading: reads work, every write raises :class:`DatabaseFileError`.
        Anything at ``db_path`` that is not a usable cache of ours (another application's
        database, a damaged file, a directory, a device) raises :class:`DatabaseFileError`
        naming the path, and is left byte-identical.
        """
        self._db: Engine = open_database(db_path, timeout, create, read_only)
        #: The resolved path of the database file (PostgreSQL: the URL without its password),
        #: and the seconds a call waits for a lock.
        self.db_path: Path | str = self._db.db_path
        self.timeout: float = self._db.timeout
        series = SeriesCatalog(self._db)
        self._bars = BarTable(self._db, series)
        self._coverage = CoverageTable(self._db, series)
        self._options = OptionChainTable(self._db)
        self._trades = TradeTable(self._db)
        self._actions = CorporateActionTable(self._db)

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
        *,
        feed: str | None = None,
    ) -> int:
        """Upsert ``symbol``'s bars from ``data``; returns the number of rows written.

        ``feed`` is the vendor feed the bars came from (``"sip"``, ``"iex"``...), part of the
        series' identity; ``None`` stores them under the feed ``"unknown"``.

        ``data`` may have a DatetimeIndex (any name; naive = UTC, or tz-aware), a
        ``date``/``timestamp`` column, or be alpaca-py's ``(symbol, timestamp)`` frame.
        The whole call is one transaction: every row is written, or (on any error) none.

        >>> cache.set("AAPL", df, source="alpaca", timeframe="1Min")  # doctest: +SKIP
        390
        """
        return self._db.retrying(lambda: self._bars.set(symbol, data, source, asset_type, ttl_hours, timeframe, feed))

    def set_many(
        self,
        frames: Mapping[str, pd.DataFrame] | pd.DataFrame,
        source: str,
        asset_type: str = "stock",
        ttl_hours: float | None = None,
        timeframe: str = "1Day",
        *,
        feed: str | None = None,
    ) -> int:
        """Upsert several symbols' bars in one transaction; returns the number of rows written.

        ``frames`` is a ``{symbol: DataFrame}`` mapping, or one frame indexed ``(symbol,
        timestamp)`` as alpaca-py returns it. Every frame passes the same validation as
        :meth:`set`, all rows together in one pass; one bad frame and nothing is written.
        ``feed`` as in :meth:`set`.

        >>> cache.set_many({"SPY": spy_df, "AAPL": aapl_df}, source="alpaca")  # doctest: +SKIP
        504
        """
        return self._db.retrying(lambda: self._bars.set_many(frames, source, asset_type, ttl_hours, timeframe, feed))

    def get(
        self,
        symbol: str,
        start: Any,
        end: Any,
        source: str | None = None,
        asset_type: str = "stock",
        timeframe: str = "1Day",
        *,
        feed: str | None = None,
        adjustment: str = "raw",
        as_of: Any = None,
    ) -> pd.DataFrame | None:
        """Valid (unexpired) bars of ``symbol`` in ``[start, end]``, or ``None`` if there are none.

        Daily bars come indexed by ``date`` (tz-naive session dates); intraday bars by
        ``timestamp`` (tz-aware UTC). With ``source=None`` and several sources holding a bar,
        the one from the highest-priority source is returned (:data:`SOURCE_PRIORITY`).

        ``feed="sip"`` reads only that feed's series. Without ``feed``, each source answers
        from ONE of its feeds: the first in :data:`FEED_PRIORITY` (sip, delayed_sip, iex),
        then other named feeds alphabetically, then ``"unknown"``, that has valid bars in
        the range. Feeds are never blended.

        The cache holds raw bars. ``adjustment`` (``"raw"``, ``"split"``, ``"dividend"`` or
        ``"all"``) adjusts them at read time by ``symbol``'s stored corporate actions with
        ex-date <= ``as_of`` (a date; default today in New York), so ``as_of`` returns prices
        as a user saw them adjusted that day (method: :mod:`cachelib.corporate_actions`):

        * splits (and stock dividends): prices of bars before the ex-date divided by the
          ratio, volume multiplied by it;
        * cash dividends: prices of bars before the ex-date multiplied by ``1 - D / C``,
          ``C`` the raw close of the session before the ex-date, read from the daily bars of
          the same source and feed, else from that session's last intraday bar (extended
          hours included); when neither is stored, a ``ValueError`` names the sessions to sync;
        * the actions used are those stored from the bars' ``source`` when it has any for
          ``symbol``, else those of every source (one per action, by :data:`SOURCE_PRIORITY`).

        Intraday bars belong to their New York session. ``"raw"`` costs nothing extra; the
        others add one small query or two (about 10 % on a year of minute bars).

        >>> cache.get("AAPL", "2024-01-02", "2024-01-31", source="alpaca", feed="iex")  # doctest: +SKIP
        >>> cache.get("NVDA", "2024-06-03", "2024-06-14", adjustment="split", as_of="2024-06-07")  # doctest: +SKIP
        """
        return self._bars.get(symbol, start, end, source, asset_type, timeframe, feed, adjustment, as_of)

    def exists(
        self,
        symbol: str,
        start: Any,
        end: Any = None,
        source: str | None = None,
        asset_type: str = "stock",
        timeframe: str = "1Day",
        *,
        feed: str | None = None,
    ) -> bool:
        """True when at least one valid bar of ``symbol`` lies in ``[start, end]`` (``end``
        defaults to ``start``), in ``feed``'s series or, with ``feed=None``, in any feed's."""
        return self._bars.exists(symbol, start, end, source, asset_type, timeframe, feed)

    def count_bars(
        self, symbol: str | None = None, start: Any = None, end: Any = None, source: str | None = None,
        asset_type: str | None = "stock", timeframe: str | None = None, *, feed: str | None = None,
    ) -> int:
        """How many bars (valid or expired) :meth:`delete` with the same filters would remove
        (``None`` for a filter means any: ``feed=None`` counts every feed)."""
        return self._bars.count(symbol, start, end, source, asset_type, timeframe, feed)

    def delete(
        self,
        symbol: str | None,
        start: Any = None,
        end: Any = None,
        source: str | None = None,
        asset_type: str | None = "stock",
        timeframe: str | None = None,
        *,
        feed: str | None = None,
    ) -> int:
        """Delete bars (and the matching coverage); returns bars removed.

        ``start``/``end`` bound the range (either may be omitted); ``None`` for ``symbol``,
        ``source``, ``asset_type``, ``timeframe`` or ``feed`` means all of them.

        >>> cache.delete("SPY", "2025-01-01", "2025-01-31", source="alpaca")  # doctest: +SKIP
        21
        """
        return self._db.retrying(lambda: self._bars.delete(symbol, start, end, source, asset_type, timeframe, feed))

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
        *,
        feed: str | None = None,
    ) -> int:
        """Record that ``source`` (its ``feed``; ``None`` = ``"unknown"``) was asked for
        ``sessions`` of ``symbol`` (bars or not).

        Coverage expires by the same age rule as bars, so a recent session is asked again
        after 24 hours while an old one is settled for 10 years.
        """
        sessions = _replayable(sessions)
        return self._db.retrying(lambda: self._coverage.record(symbol, sessions, source, timeframe, asset_type, rows_per_session, ttl_hours,
                                     feed))

    def missing_sessions(
        self,
        symbol: str,
        start: Any,
        end: Any,
        timeframe: str = "1Day",
        source: str | None = None,
        asset_type: str = "stock",
        *,
        feed: str | None = None,
    ) -> list[date]:
        """XNYS sessions in ``[start, end]`` that no valid coverage record (and, for daily
        bars, no valid bar) accounts for: what a sync must fetch.

        Coverage is per feed: with ``feed="sip"`` only the sip series count. With
        ``feed=None`` a session covered by any feed (of ``source``, or of any source when
        ``source`` is ``None``) counts as covered, so only sessions missing in every feed are
        listed. The sync always names its source's feed.

        >>> cache.missing_sessions("SPY", "2024-01-01", "2024-01-05")  # doctest: +SKIP
        [datetime.date(2024, 1, 2), datetime.date(2024, 1, 3), ...]
        """
        return self.missing_sessions_many([symbol], start, end, timeframe, source, asset_type, feed=feed)[
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
        *,
        feed: str | None = None,
    ) -> dict[str, list[date]]:
        """:meth:`missing_sessions` for many symbols at once (a fully covered range costs one
        grouped COUNT query, which keeps a no-op re-sync of 100 symbols in milliseconds)."""
        return self._coverage.missing_many(symbols, start, end, timeframe, source, asset_type, feed)

    # -- maintenance ------------------------------------------------------------------------

    def cleanup_expired(self) -> int:
        """Remove expired rows from every table that expires (bars, coverage, option
        snapshots and their history, corporate-action coverage; never the actions
        themselves, which a re-sync upserts); returns the number of rows removed."""
        return self._db.retrying(lambda: ttl.cleanup_expired(self._db))

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
        """Counts and sizes for people and monitoring (see README for the keys); also
        ``corporate_actions``, the number of stored actions."""
        stats = self._bars.stats()
        stats["corporate_actions"] = self._actions.count()
        return stats

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
        return self._db.retrying(lambda: self._options.store(
            symbol, trading_date, options_df, underlying_price, source, snapshot_time, ttl_hours
        ))

    def get_raw_options(
        self,
        symbol: str,
        trading_date: Any,
        source: str | None = None,
        expiration: Any = None,
        option_type: str | None = None,
        as_of: Any = None,
    ) -> pd.DataFrame | None:
        """The stored snapshot of ``symbol``'s chain for ``trading_date`` (or ``None``).

        With ``source=None`` and several sources, each contract comes from the
        highest-priority source. Rows are sorted by expiration, strike, type.
        ``as_of`` (a time on ``trading_date``; naive = New York time) returns the chain as
        it stood then: per contract the latest snapshot taken at or before ``as_of``, from the
        table or the history of replaced snapshots; contracts first seen later are absent.

        >>> cache.get_raw_options("AAPL", "2024-01-19", as_of="2024-01-19T12:00")  # doctest: +SKIP
        """
        return self._options.get(symbol, trading_date, source, expiration, option_type, as_of)

    def delete_raw_options(
        self,
        symbol: str | None = None,
        trading_date: Any = None,
        source: str | None = None,
        before: Any = None,
    ) -> int:
        """Delete option snapshots; every filter is optional. ``before`` deletes trading dates
        strictly earlier than it. Returns rows removed."""
        return self._db.retrying(lambda: self._options.delete(symbol, trading_date, source, before))

    def get_options_stats(self) -> dict[str, Any]:
        """Rows, underlyings, snapshot days, contracts and date range of stored chains."""
        return self._options.stats()

    # -- corporate actions ------------------------------------------------------------------

    def store_corporate_actions(
        self,
        frame: pd.DataFrame | Iterable[Mapping[str, Any]],
        source: str | None = None,
        fetched_at: Any = None,
    ) -> int:
        """Upsert corporate actions (a frame or rows of :data:`~cachelib.corporate_actions.ACTION_COLUMNS`,
        checked by :func:`~cachelib.corporate_actions.actions_frame`); returns rows written.

        One row per (symbol, action_type, ex_date, source). ``source`` fills rows without
        one (a row naming another source is an error); ``fetched_at`` defaults to now.
        Nothing stored is removed: a source's fresh answer, which may drop or move actions,
        goes through :meth:`replace_corporate_actions`.

        >>> cache.store_corporate_actions([{"symbol": "NVDA", "action_type": "forward_split",
        ...     "ex_date": "2024-06-10", "ratio": 10.0}], source="alpaca")  # doctest: +SKIP
        1
        """
        return self._db.retrying(lambda: self._actions.store(frame, source, fetched_at))

    def replace_corporate_actions(
        self,
        symbols: str | Iterable[str],
        start: Any,
        end: Any,
        frame: pd.DataFrame | Iterable[Mapping[str, Any]],
        source: str,
        fetched_at: Any = None,
    ) -> ActionReplacement:
        """Store ``frame`` as ``source``'s complete answer for ``symbols`` over ``[start, end]``.

        What a sync uses: the vendor's answer is authoritative for what it was asked, so in one
        transaction ``source``'s stored actions of ``symbols`` (a name change is filed under
        its old symbol) with ex-date (effective date) in ``[start, end]`` are deleted, then
        ``frame`` is upserted. An ex-date the vendor moved, or an action it cancelled, thus
        leaves no stale row for an adjusted read to apply twice. Other sources' rows are
        untouched. Returns ``(removed, written)``: stored actions the answer no longer holds,
        and rows written.

        >>> cache.replace_corporate_actions(["XYZ"], "2024-05-01", "2024-06-30", [{"symbol": "XYZ",
        ...     "action_type": "forward_split", "ex_date": "2024-06-06", "ratio": 2.0}], "alpaca")  # doctest: +SKIP
        ActionReplacement(removed=1, written=1)
        """
        symbols = _replayable(symbols)
        return self._db.retrying(lambda: self._actions.replace(symbols, start, end, frame, source, fetched_at))

    def get_corporate_actions(
        self, symbol: str, start: Any = None, end: Any = None, source: str | None = None,
    ) -> pd.DataFrame:
        """``symbol``'s stored corporate actions with ex-date in ``[start, end]`` (either
        bound optional), columns ``ACTION_COLUMNS`` + ``fetched_at`` (UTC), sorted by ex-date;
        an empty frame with those columns when there are none. A name change *to*
        ``symbol`` is included (it is filed under the old symbol). With ``source=None`` and
        several sources, each action comes from the highest-priority source.

        >>> cache.get_corporate_actions("NVDA", "2024-01-01", "2024-12-31")  # doctest: +SKIP
        """
        return self._actions.get(symbol, start, end, source)

    def record_action_coverage(self, symbols: str | Iterable[str], start: Any, end: Any, source: str) -> int:
        """Record that ``source`` was asked for the corporate actions of ``symbols`` with
        ex-dates in ``[start, end]``, actions or not; returns the coverage ranges written.
        Days older than 30 days stay covered for 10 years, recent and future days for 24 h
        (announcements arrive before the ex-date): see :func:`~cachelib.store.ttl.action_expiry`.
        """
        symbols = _replayable(symbols)
        return self._db.retrying(lambda: self._actions.record_coverage(symbols, start, end, source))

    def missing_action_ranges(
        self, symbols: str | Iterable[str], start: Any, end: Any, source: str,
    ) -> dict[str, list[tuple[date, date]]]:
        """Per symbol, the day ranges of ``[start, end]`` whose corporate actions ``source``
        was not asked for (or whose coverage expired): what a sync must fetch. Sorted,
        disjoint, inclusive ``(first, last)`` pairs; ``[]`` when fully covered.

        >>> cache.missing_action_ranges(["AAPL"], "2024-01-01", "2024-12-31", "alpaca")  # doctest: +SKIP
        {'AAPL': [(datetime.date(2024, 1, 1), datetime.date(2024, 12, 31))]}
        """
        return self._actions.missing(symbols, start, end, source)

    # -- trade history ----------------------------------------------------------------------

    def archive_trade(self, trade: Mapping[str, Any] | Any) -> bool:
        """Insert or update a trade by ``trade_id``; returns True.

        Takes a dict or a pydantic model. A trade archived at entry (no exit yet) is updated
        at exit: only the fields given are changed. ``realized_pnl``, ``realized_pnl_pct``
        (signed by the position: a short that falls gains) and ``holding_period_hours`` are
        derived from the merged trade whenever this call does not give them, so correcting an
        entry price later also corrects the P&L. Date-only times mean New York midnight.
        """
        self._db.retrying(lambda: self._trades.archive([trade]))
        return True

    def archive_trades(self, trades: Iterable[Mapping[str, Any] | Any]) -> int:
        """Archive many trades in one transaction, all or nothing; returns how many.

        The same rules and results as :meth:`archive_trade` on each in order (a later trade
        with the same ``trade_id`` updates the earlier one), at a fraction of the cost: the
        replay archives a year of trades in one call. A trade that breaks a rule raises
        ``ValueError`` naming it, and nothing of the batch is stored.

        >>> cache.archive_trades(trades)  # doctest: +SKIP
        1730
        """
        trades = _replayable(trades)
        return self._db.retrying(lambda: self._trades.archive(trades))

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
        return self._db.retrying(lambda: self._trades.delete(symbol, start, end, strategy))

    def get_trade_stats(self, symbol: str | None = None, strategy: str | None = None) -> dict[str, Any]:
        """Closed-trade statistics: counts, win rate, P&L, profit factor, holding time."""
        return self._trades.stats(symbol, strategy)


def _replayable(values: T) -> T:
    """``values`` as a list when it is a one-shot iterator (a generator), so that a call
    retried after a PostgreSQL deadlock sees the same input again."""
    return list(values) if isinstance(values, Iterator) else values  # type: ignore[return-value]
