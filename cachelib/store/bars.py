"""The ``bars`` table: write, read, count and delete bars of any timeframe.

``bars`` is a ``WITHOUT ROWID`` table clustered on its primary key ``(series_id, ts)`` (see
:mod:`cachelib.store.series`); ``ts`` is integer seconds since the epoch (UTC): the bar's start
for intraday timeframes, UTC midnight of the session date for daily-or-longer ones. The shape
of a bar (columns, keys, validation) is :mod:`cachelib.bars`; the expiry rule is
:mod:`cachelib.store.ttl`.

Three read paths: one source (one range scan); ``source=None`` (a join, then one row per bar
from the best-ranked source); and large reads through the optional C reader
:mod:`cachelib._columnar`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..bars import (
    KEY_MAX,
    KEY_MIN,
    clamp_key,
    frame_from_columns,
    frame_from_rows,
    key_range,
    key_to_date,
    normalize_bars,
    normalize_symbol,
    parse_timeframe,
    range_end_key,
    range_start_key,
    rows_of_symbol,
)
from ..clock import now_utc
from . import files
from .series import SeriesCatalog, norm_asset_type, norm_source, source_rank
from .ttl import DAY, session_day_of_key, session_days_of_keys, ttl_expiry

if TYPE_CHECKING:
    from .connection import Database

log = logging.getLogger("cachelib.store")

_BARS_UPSERT_COLUMNS = 10
_BAR_SELECT = "SELECT ts, open, high, low, close, volume, vwap, trade_count FROM bars"


def open_key_range(start: Any, end: Any, intraday: bool) -> tuple[int, int]:
    """Like :func:`~cachelib.bars.key_range`, but either bound may be ``None`` (open)."""
    if start is not None and end is not None:
        return key_range(start, end, intraday)
    lo = KEY_MIN if start is None else clamp_key(range_start_key(start, intraday))
    hi = KEY_MAX if end is None else clamp_key(range_end_key(end, intraday))
    return lo, hi


class BarTable:
    """Bars of every series; the manager's bar methods delegate here (arguments already
    defaulted by the manager, normalised here)."""

    #: Above this many expected bars a read goes through :mod:`cachelib._columnar`.
    COLUMNAR_MIN_ROWS = 2_000

    _COLUMNAR_SQL = f"{_BAR_SELECT} WHERE series_id = ? AND ts BETWEEN ? AND ? AND expires_at > ? ORDER BY ts"

    def __init__(self, db: Database, series: SeriesCatalog) -> None:
        self._db = db
        self._series = series
        self._stats_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # -- write ----------------------------------------------------------------------------

    def set(self, symbol: str, data: pd.DataFrame, source: str, asset_type: str, ttl_hours: float | None,
            timeframe: str) -> int:
        sym = normalize_symbol(symbol)
        src = norm_source(source)
        asset = norm_asset_type(asset_type)
        tf = parse_timeframe(timeframe)
        if isinstance(data, pd.DataFrame) and isinstance(data.index, pd.MultiIndex):
            data = rows_of_symbol(data, sym)
        bars = normalize_bars(data, tf)
        if bars.empty:
            return 0
        now = now_utc()
        keys = bars["key"].to_numpy()
        expiry = ttl_expiry(session_days_of_keys(keys, tf.is_intraday), now, ttl_hours)
        with self._db.atomic() as conn:
            sid = self._series.id(asset, sym, tf.name, src, create=True)
            rows = zip(
                [sid] * len(bars),
                keys.tolist(),
                bars["open"].tolist(),
                bars["high"].tolist(),
                bars["low"].tolist(),
                bars["close"].tolist(),
                bars["volume"].tolist(),
                bars["vwap"].tolist(),  # NaN binds as NULL in SQLite
                bars["trade_count"].tolist(),
                expiry.tolist(),
                strict=True,
            )
            conn.executemany(self._db.dialect.replace_into("bars", _BARS_UPSERT_COLUMNS), rows)
        return len(bars)

    # -- read -----------------------------------------------------------------------------

    def get(self, symbol: str, start: Any, end: Any, source: str | None, asset_type: str,
            timeframe: str) -> pd.DataFrame | None:
        sym = normalize_symbol(symbol)
        asset = norm_asset_type(asset_type)
        tf = parse_timeframe(timeframe)
        src = None if source is None else norm_source(source)
        lo, hi = key_range(start, end, tf.is_intraday)
        now_s = int(now_utc().timestamp())
        conn = self._db.conn
        if self._large_read(lo, hi, tf) and not conn.in_transaction:
            series = self._series.for_read(asset, sym, tf.name, src)
            reader = _columnar_reader()
            if len(series) == 1 and reader is not None:
                frame = self._columnar_read(reader, series[0][0], lo, hi, now_s, tf)
                self._count_hit(len(frame) > 0)
                return frame if len(frame) else None
        rows: list[tuple] = []
        if src is not None:
            sid = self._series.id(asset, sym, tf.name, src)
            if sid is not None:
                rows = conn.execute(
                    f"{_BAR_SELECT} WHERE series_id = ? AND ts BETWEEN ? AND ? AND expires_at > ?",
                    (sid, lo, hi, now_s),
                ).fetchall()
        else:
            tagged = conn.execute(
                "SELECT b.ts, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count, s.source "
                "FROM series s JOIN bars b ON b.series_id = s.series_id "
                "WHERE s.asset_type = ? AND s.symbol = ? AND s.timeframe = ? "
                "AND b.ts BETWEEN ? AND ? AND b.expires_at > ? ORDER BY b.ts",
                (asset, sym, tf.name, lo, hi, now_s),
            ).fetchall()
            if tagged and len({r[8] for r in tagged}) > 1:
                # Several sources hold bars here: one row per bar, from the best-ranked source.
                best: dict[int, tuple] = {}
                for row in sorted(tagged, key=lambda r: source_rank(r[8])):
                    best.setdefault(row[0], row)
                tagged = [best[k] for k in sorted(best)]
            rows = [r[:8] for r in tagged]
        self._count_hit(bool(rows))
        return frame_from_rows(rows, tf) if rows else None

    def _large_read(self, lo: int, hi: int, tf: Any) -> bool:
        """Could ``[lo, hi]`` hold more than :data:`COLUMNAR_MIN_ROWS` bars? (An estimate from
        the span: 6.5 trading hours a day, 5 days a week.)"""
        span_days = (hi - lo) / DAY
        per_day = 6.5 * 3600 / tf.seconds if tf.is_intraday else 1.0
        return span_days * (5 / 7) * per_day > self.COLUMNAR_MIN_ROWS

    def _columnar_read(self, reader: Any, sid: int, lo: int, hi: int, now_s: int, tf: Any) -> pd.DataFrame:
        """A large read straight into column buffers (no Python object per value): a year of
        minute bars costs a few tens of milliseconds instead of ~150 ms through ``fetchall``.
        It opens its own read-only connection, so the caller must not be inside a write
        transaction (whose rows it could not see)."""
        db = self._db
        try:
            n, buffers = reader.fetch(db.read_uri(), self._COLUMNAR_SQL, (sid, lo, hi, now_s),
                                      int(db.timeout * 1000))
        except RuntimeError as exc:
            err = _columnar_error(db, exc)
            if err is exc:
                raise
            raise err from None
        keys = np.frombuffer(buffers[0], dtype=np.int64, count=n)
        columns = [np.frombuffer(b, dtype=np.float64, count=n) for b in buffers[1:]]
        return frame_from_columns(keys, columns, tf)

    def _count_hit(self, hit: bool) -> None:
        with self._stats_lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def exists(self, symbol: str, start: Any, end: Any, source: str | None, asset_type: str,
               timeframe: str) -> bool:
        sym = normalize_symbol(symbol)
        tf = parse_timeframe(timeframe)
        lo, hi = key_range(start, start if end is None else end, tf.is_intraday)
        now_s = int(now_utc().timestamp())
        src = None if source is None else norm_source(source)
        for sid, _ in self._series.for_read(norm_asset_type(asset_type), sym, tf.name, src):
            if self._db.conn.execute(
                "SELECT 1 FROM bars WHERE series_id=? AND ts BETWEEN ? AND ? AND expires_at > ? LIMIT 1",
                (sid, lo, hi, now_s),
            ).fetchone():
                return True
        return False

    # -- count and delete -----------------------------------------------------------------

    def count(self, symbol: str | None, start: Any, end: Any, source: str | None, asset_type: str | None,
              timeframe: str | None) -> int:
        total = 0
        for sid, tf_name in self._series.matching(symbol, source, asset_type, timeframe):
            lo, hi = open_key_range(start, end, parse_timeframe(tf_name).is_intraday)
            total += self._db.conn.execute(
                "SELECT COUNT(*) FROM bars WHERE series_id = ? AND ts BETWEEN ? AND ?", (sid, lo, hi)
            ).fetchone()[0]
        return total

    def delete(self, symbol: str | None, start: Any, end: Any, source: str | None, asset_type: str | None,
               timeframe: str | None) -> int:
        removed = 0
        with self._db.atomic() as conn:
            for sid, tf_name in self._series.matching(symbol, source, asset_type, timeframe):
                intraday = parse_timeframe(tf_name).is_intraday
                lo, hi = open_key_range(start, end, intraday)
                removed += conn.execute(
                    "DELETE FROM bars WHERE series_id = ? AND ts BETWEEN ? AND ?", (sid, lo, hi)
                ).rowcount
                # Every session the deleted range touches loses its coverage, so a sync refills it.
                day_lo = -(10**9) if start is None else session_day_of_key(lo, intraday)
                day_hi = 10**9 if end is None else session_day_of_key(hi, intraday)
                conn.execute(
                    "DELETE FROM coverage WHERE series_id = ? AND session BETWEEN ? AND ?",
                    (sid, day_lo, day_hi),
                )
        return removed

    # -- overview -------------------------------------------------------------------------

    def symbols(self, asset_type: str) -> list[str]:
        rows = self._db.conn.execute(
            "SELECT DISTINCT s.symbol FROM series s WHERE s.asset_type = ? "
            "AND EXISTS (SELECT 1 FROM bars b WHERE b.series_id = s.series_id) ORDER BY s.symbol",
            (norm_asset_type(asset_type),),
        ).fetchall()
        return [r[0] for r in rows]

    def stats(self) -> dict[str, Any]:
        """The store's counts and sizes (bars first; see the manager's ``get_stats``)."""
        db = self._db
        conn = db.conn
        now_s = int(now_utc().timestamp())
        total = conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0]
        expired = conn.execute("SELECT COUNT(*) FROM bars WHERE expires_at <= ?", (now_s,)).fetchone()[0]
        series = conn.execute(
            "SELECT s.series_id, s.asset_type, s.symbol, s.timeframe, s.source, "
            "(SELECT COUNT(*) FROM bars b WHERE b.series_id = s.series_id) FROM series s"
        ).fetchall()
        live = [s for s in series if s[5] > 0]
        # First and last New York session dates over every series (intraday keys are instants).
        starts, ends = [], []
        for sid, _asset, _sym, tf_name, *_ in live:
            lo, hi = conn.execute("SELECT MIN(ts), MAX(ts) FROM bars WHERE series_id = ?", (sid,)).fetchone()
            intraday = parse_timeframe(tf_name).is_intraday
            starts.append(session_day_of_key(lo, intraday) * DAY)
            ends.append(session_day_of_key(hi, intraday) * DAY)
        tables = {
            name: conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
            for name in ("bars", "series", "coverage", "raw_options_chain", "trade_history")
        }
        size = db.file_bytes()
        hits, misses = self.hits, self.misses
        by = lambda idx: sorted({s[idx] for s in live})  # noqa: E731
        return {
            "total_entries": total,
            "unique_symbols": len(by(2)),
            "sources": by(4),
            "asset_types": by(1),
            "timeframes": by(3),
            "date_range": {
                "start": key_to_date(min(starts)).isoformat() if starts else None,
                "end": key_to_date(max(ends)).isoformat() if ends else None,
            },
            "expired_entries": expired,
            "db_size_mb": round(size / 1_048_576, 3),
            "db_size_bytes": size,
            "db_path": str(db.db_path),
            "schema_version": db.schema_version,
            "tables": tables,
            "options_entries": tables["raw_options_chain"],
            "trade_entries": tables["trade_history"],
            "hits": hits,
            "misses": misses,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        }


# -- the optional C reader (cachelib._columnar) ---------------------------------------------

_COLUMNAR: Any = None
_COLUMNAR_CHECKED = False
_COLUMNAR_LOCK = threading.Lock()


def _columnar_reader() -> Any:
    """The ``cachelib._columnar`` extension, or ``None`` when it cannot be used safely.

    Two different copies of SQLite in one process break each other's POSIX file locks
    (https://www.sqlite.org/howtocorrupt.html, 2.2.1). The extension links the shared
    ``libsqlite3.so.0``; it is used only when Python's own ``_sqlite3`` had already mapped that
    same library (so both are one copy) and the versions agree.
    """
    global _COLUMNAR, _COLUMNAR_CHECKED
    if _COLUMNAR_CHECKED:
        return _COLUMNAR
    with _COLUMNAR_LOCK:
        if not _COLUMNAR_CHECKED:
            _COLUMNAR = _load_columnar()
            _COLUMNAR_CHECKED = True
    return _COLUMNAR


def _load_columnar() -> Any:
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            shared = "libsqlite3.so" in maps.read()  # mapped by _sqlite3 before our import
    except OSError:
        return None
    if not shared:
        log.debug("Python's sqlite3 does not use the shared libsqlite3: columnar reads off")
        return None
    try:
        from .. import _columnar
    except ImportError:
        log.debug("cachelib._columnar is not built: large reads use fetchall")
        return None
    if _columnar.libversion() != sqlite3.sqlite_version:
        log.warning("cachelib._columnar links SQLite %s, Python uses %s: columnar reads off",
                    _columnar.libversion(), sqlite3.sqlite_version)
        return None
    return _columnar


def _columnar_error(db: Database, exc: RuntimeError) -> Exception:
    """The columnar reader's failures carry only SQLite's message: map the file-level ones."""
    text = str(exc)
    for marker, name in (("malformed", "SQLITE_CORRUPT"), ("not a database", "SQLITE_NOTADB"),
                         ("unable to open", "SQLITE_CANTOPEN"), ("readonly", "SQLITE_READONLY")):
        if marker in text:
            error = sqlite3.DatabaseError(text)
            error.sqlite_errorname = name
            return files.file_error(db.db_path, error, db.read_only_reason)
    return exc
