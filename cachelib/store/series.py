"""Series: one ``(asset_type, symbol, timeframe, source)``, interned as a small integer.

Bars and coverage rows store the ``series_id`` instead of four strings. Also here: the order
in which sources answer for the same bar (:data:`SOURCE_PRIORITY`), and the spelling rules
of a source and an asset type.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from ..bars import normalize_symbol, parse_timeframe
from .dialect import maybe, where_clause

if TYPE_CHECKING:
    from .connection import Database

#: Sources in the order ``get(source=None)`` prefers them when several hold the same bar.
SOURCE_PRIORITY: tuple[str, ...] = ("alpaca", "polygon", "alpha_vantage", "legacy", "demo")


def source_rank(source: str) -> tuple[int, str]:
    """Sort key of a source: listed ones first, in order; unknown ones after, alphabetically."""
    try:
        return (SOURCE_PRIORITY.index(source), source)
    except ValueError:
        return (len(SOURCE_PRIORITY), source)


def norm_source(source: str) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ValueError("source must be a non-empty string such as 'alpaca'")
    return source.strip().lower()


def norm_asset_type(asset_type: str) -> str:
    if not isinstance(asset_type, str) or not asset_type.strip():
        raise ValueError("asset_type must be a non-empty string such as 'stock'")
    return asset_type.strip().lower()


def series_id(
    conn: sqlite3.Connection, asset_type: str, symbol: str, timeframe: str, source: str, create: bool
) -> int | None:
    """The id of a series (normalised names), created when ``create``; ``None`` if unknown."""
    row = conn.execute(
        "SELECT series_id FROM series WHERE asset_type=? AND symbol=? AND timeframe=? AND source=?",
        (asset_type, symbol, timeframe, source),
    ).fetchone()
    if row:
        return row[0]
    if not create:
        return None
    cur = conn.execute(
        "INSERT INTO series (asset_type, symbol, timeframe, source) VALUES (?,?,?,?)",
        (asset_type, symbol, timeframe, source),
    )
    return cur.lastrowid


class SeriesCatalog:
    """Looks series up (remembering committed ids) for the bars and coverage rooms."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._ids: dict[tuple[str, str, str, str], int] = {}

    def id(self, asset_type: str, symbol: str, timeframe: str, source: str, create: bool = False) -> int | None:
        key = (asset_type, symbol, timeframe, source)
        sid = self._ids.get(key)
        if sid is None:
            conn = self._db.conn
            sid = series_id(conn, *key, create=create)
            # Remember only committed ids: a series created inside a transaction that is later
            # rolled back would leave a stale id that SQLite hands to the next new series.
            if sid is not None and not conn.in_transaction:
                self._ids[key] = sid
        return sid

    def for_read(self, asset_type: str, symbol: str, timeframe: str, source: str | None) -> list[tuple[int, str]]:
        """``[(series_id, source)]`` in source-priority order."""
        if source is not None:
            sid = self.id(asset_type, symbol, timeframe, source)
            return [] if sid is None else [(sid, source)]
        rows = self._db.conn.execute(
            "SELECT series_id, source FROM series WHERE asset_type=? AND symbol=? AND timeframe=?",
            (asset_type, symbol, timeframe),
        ).fetchall()
        return sorted(rows, key=lambda r: source_rank(r[1]))

    def matching(
        self, symbol: str | None, source: str | None, asset_type: str | None, timeframe: str | None
    ) -> list[tuple[int, str]]:
        """``[(series_id, timeframe)]`` selected by the filters (``None`` = any)."""
        body, params = where_clause(
            ("symbol = ?", maybe(normalize_symbol, symbol)),
            ("source = ?", maybe(norm_source, source)),
            ("asset_type = ?", maybe(norm_asset_type, asset_type)),
            ("timeframe = ?", maybe(lambda t: parse_timeframe(t).name, timeframe)),
        )
        return self._db.conn.execute(f"SELECT series_id, timeframe FROM series WHERE {body}", params).fetchall()
