"""Series: one ``(asset_type, symbol, timeframe, source, feed)``, interned as a small integer.

Bars and coverage rows store the ``series_id`` instead of five strings. Also here: the order
in which sources answer for the same bar (:data:`SOURCE_PRIORITY`), the order in which one
source's feeds answer (:data:`FEED_PRIORITY`), and the spelling rules of a source, a feed and
an asset type.

The *feed* is the vendor's data feed (Alpaca's ``iex``, ``sip``, ``delayed_sip``...; ``demo``
for the demo source). It is part of a series' identity because the same bar differs by feed:
IEX volume is a few per cent of the consolidated (SIP) volume. A write that does not name its
feed stores :data:`UNKNOWN_FEED`; bars cached before schema v6 carry it too, and it is never
promoted to a named feed.
"""

from __future__ import annotations

import re
import sqlite3
from typing import TYPE_CHECKING

from ..bars import normalize_symbol, parse_timeframe
from .dialect import maybe, where_clause
from .files import fetch_all

if TYPE_CHECKING:
    from .connection import Engine

#: Sources in the order ``get(source=None)`` prefers them when several hold the same bar.
SOURCE_PRIORITY: tuple[str, ...] = ("alpaca", "polygon", "alpha_vantage", "legacy", "demo")

#: Feeds in the order a read without ``feed`` prefers them: then any other named feed
#: alphabetically ("boats", "demo", "otc", "overnight", ...), then :data:`UNKNOWN_FEED` last.
FEED_PRIORITY: tuple[str, ...] = ("sip", "delayed_sip", "iex")

#: The feed of bars written without one (and of every bar cached before schema v6).
UNKNOWN_FEED = "unknown"

_FEED_NAME = re.compile(r"[a-z0-9_]{1,32}")


def source_rank(source: str) -> tuple[int, str]:
    """Sort key of a source: listed ones first, in order; unknown ones after, alphabetically."""
    try:
        return (SOURCE_PRIORITY.index(source), source)
    except ValueError:
        return (len(SOURCE_PRIORITY), source)


def feed_rank(feed: str) -> tuple[int, str]:
    """Sort key of a feed: :data:`FEED_PRIORITY` in order, other named feeds alphabetically,
    :data:`UNKNOWN_FEED` last.

    >>> sorted(["unknown", "iex", "otc", "sip", "boats"], key=feed_rank)
    ['sip', 'iex', 'boats', 'otc', 'unknown']
    """
    if feed == UNKNOWN_FEED:
        return (len(FEED_PRIORITY) + 1, feed)
    try:
        return (FEED_PRIORITY.index(feed), feed)
    except ValueError:
        return (len(FEED_PRIORITY), feed)


def norm_source(source: str) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ValueError("source must be a non-empty string such as 'alpaca'")
    if "\x00" in source:  # PostgreSQL text cannot hold it: refused on both engines alike
        raise ValueError(f"source {source[:40]!r} contains a NUL character; give a name such as 'alpaca'")
    return source.strip().lower()


def norm_feed(feed: str) -> str:
    """A feed's one spelling: lower-case ASCII letters, digits and ``_``, up to 32 characters."""
    if not isinstance(feed, str):
        raise ValueError(f"feed must be a string such as 'sip' or 'iex', got {type(feed).__name__}")
    name = feed.strip().lower()
    if not _FEED_NAME.fullmatch(name):
        raise ValueError(
            f"feed {feed[:40]!r} is not a feed name such as 'sip', 'iex' or 'delayed_sip' "
            "(ASCII letters, digits and _, up to 32 characters)"
        )
    return name


def write_feed(feed: str | None) -> str:
    """The feed a write stores: the given one, or :data:`UNKNOWN_FEED` when ``None``."""
    return UNKNOWN_FEED if feed is None else norm_feed(feed)


def read_feed(feed: str | None) -> str | None:
    """The feed a read is limited to, or ``None`` (choose by :data:`FEED_PRIORITY`)."""
    return None if feed is None else norm_feed(feed)


def norm_asset_type(asset_type: str) -> str:
    if not isinstance(asset_type, str) or not asset_type.strip():
        raise ValueError("asset_type must be a non-empty string such as 'stock'")
    return asset_type.strip().lower()


_SERIES_SQL: dict[tuple[str, ...], tuple[str, str]] = {}


def _series_row(conn: sqlite3.Connection, key: dict[str, str], create: bool) -> int | None:
    """The ``series_id`` of the row with exactly ``key`` (column -> value), inserted when
    ``create``; ``None`` if there is none. The one lookup-or-create of a series row."""
    names = tuple(key)
    sql = _SERIES_SQL.get(names)
    if sql is None:  # built once per column set; the names are ours, never caller input
        sql = _SERIES_SQL[names] = (
            "SELECT series_id FROM series WHERE " + " AND ".join(f"{n}=?" for n in names),
            # DO NOTHING: a concurrent PostgreSQL writer may insert the same series first; the
            # look-up below then finds its row once it commits.
            f"INSERT INTO series ({', '.join(names)}) VALUES ({','.join('?' * len(names))}) "
            "ON CONFLICT DO NOTHING RETURNING series_id",
        )
    values = tuple(key.values())
    row = conn.execute(sql[0], values).fetchone()
    if row:
        return int(row[0])
    if not create:
        return None
    row = conn.execute(sql[1], values).fetchone() or conn.execute(sql[0], values).fetchone()
    return int(row[0])


def series_id(
    conn: sqlite3.Connection, asset_type: str, symbol: str, timeframe: str, source: str, create: bool
) -> int | None:
    """The id of a series in the schema before v6 (no feed column). Only migration 1 (the
    seed import, which runs on that schema) uses it; everything else uses :func:`feed_series_id`."""
    key = {"asset_type": asset_type, "symbol": symbol, "timeframe": timeframe, "source": source}
    return _series_row(conn, key, create)


def feed_series_id(
    conn: sqlite3.Connection, asset_type: str, symbol: str, timeframe: str, source: str, feed: str,
    create: bool,
) -> int | None:
    """The id of a series (normalised names), created when ``create``; ``None`` if unknown."""
    key = {"asset_type": asset_type, "symbol": symbol, "timeframe": timeframe, "source": source, "feed": feed}
    return _series_row(conn, key, create)


def read_filter(asset_type: str, symbol: str, timeframe: str, source: str | None,
                feed: str | None) -> tuple[str, list[str]]:
    """The ``WHERE`` body and parameters selecting the series a read may answer from
    (``source``/``feed`` ``None`` = any)."""
    params = [asset_type, symbol, timeframe]
    if source is not None:
        params.append(source)
    if feed is not None:
        params.append(feed)
    return READ_FILTERS[source is not None, feed is not None], params


#: The WHERE bodies of :func:`read_filter`, by (source given, feed given).
READ_FILTERS = {
    (by_source, by_feed): "asset_type=? AND symbol=? AND timeframe=?" + " AND source=?" * by_source
    + " AND feed=?" * by_feed
    for by_source in (False, True) for by_feed in (False, True)
}


class SeriesCatalog:
    """Looks series up (remembering committed ids) for the bars and coverage rooms."""

    def __init__(self, db: Engine) -> None:
        self._db = db
        self._ids: dict[tuple[str, str, str, str, str], int] = {}
        self._names: dict[int, tuple[str, str]] = {}

    def id(self, asset_type: str, symbol: str, timeframe: str, source: str, feed: str,
           create: bool = False) -> int | None:
        key = (asset_type, symbol, timeframe, source, feed)
        sid = self._ids.get(key)
        if sid is None:
            conn = self._db.conn
            sid = feed_series_id(conn, *key, create=create)
            # Remember only committed ids: a series created inside a transaction that is later
            # rolled back would leave a stale id that SQLite hands to the next new series.
            if sid is not None and not conn.in_transaction:
                self._ids[key] = sid
        return sid

    def for_read(self, asset_type: str, symbol: str, timeframe: str, source: str | None,
                 feed: str | None) -> list[tuple[int, str, str]]:
        """``[(series_id, source, feed)]`` in source-, then feed-priority order (``None`` = any)."""
        if source is not None and feed is not None:
            sid = self.id(asset_type, symbol, timeframe, source, feed)
            return [] if sid is None else [(sid, source, feed)]
        where, params = read_filter(asset_type, symbol, timeframe, source, feed)
        rows = fetch_all(self._db.conn, f"SELECT series_id, source, feed FROM series WHERE {where}", params)
        return sorted(rows, key=lambda r: (source_rank(r[1]), feed_rank(r[2])))

    def names(self, sids: list[int]) -> dict[int, tuple[str, str]]:
        """``{series_id: (source, feed)}`` of existing series. Remembered once committed: a
        series row is never changed or deleted (an id seen inside a transaction is not, as a
        rollback would free it for the next new series)."""
        missing = [sid for sid in sids if sid not in self._names]
        if not missing:
            return {sid: self._names[sid] for sid in sids}
        conn = self._db.conn
        found = {int(r[0]): (r[1], r[2]) for r in fetch_all(
            conn, f"SELECT series_id, source, feed FROM series WHERE series_id IN ({','.join('?' * len(missing))})",
            missing)}
        if not conn.in_transaction:
            self._names.update(found)
        return {sid: self._names.get(sid) or found[sid] for sid in sids}

    def matching(
        self, symbol: str | None, source: str | None, asset_type: str | None, timeframe: str | None,
        feed: str | None = None,
    ) -> list[tuple[int, str]]:
        """``[(series_id, timeframe)]`` selected by the filters (``None`` = any)."""
        body, params = where_clause(
            ("symbol = ?", maybe(normalize_symbol, symbol)),
            ("source = ?", maybe(norm_source, source)),
            ("asset_type = ?", maybe(norm_asset_type, asset_type)),
            ("timeframe = ?", maybe(lambda t: parse_timeframe(t).name, timeframe)),
            ("feed = ?", maybe(norm_feed, feed)),
        )
        return self._db.conn.execute(f"SELECT series_id, timeframe FROM series WHERE {body}", params).fetchall()
