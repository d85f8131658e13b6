"""Coverage: which sessions a source was asked for, bars or not, so a sync knows what to fetch.

A coverage record is one ``(series, New York session)``; it expires by the same age rule as
bars (:mod:`cachelib.store.ttl`). For daily bars a valid bar settles its session too.
Coverage is per feed (the feed is part of the series): what the IEX feed answered says nothing
about what SIP would. Asked without a feed, a session covered by any feed counts as covered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import market_hours
from ..bars import check_count, key_range, normalize_symbol, normalize_symbols, parse_timeframe, to_date
from ..clock import now_utc
from .series import SeriesCatalog, norm_asset_type, norm_source, read_feed, write_feed
from .ttl import DAY, ttl_expiry

if TYPE_CHECKING:
    from .connection import Engine

_EPOCH = date(1970, 1, 1)
_COVERAGE_COLUMNS = 5


class CoverageTable:
    """The ``coverage`` table; the manager's coverage methods delegate here."""

    def __init__(self, db: Engine, series: SeriesCatalog) -> None:
        self._db = db
        self._series = series

    def record(self, symbol: str, sessions: list[date] | list[str], source: str, timeframe: str,
               asset_type: str, rows_per_session: Mapping[date, int] | None, ttl_hours: float | None,
               feed: str | None = None) -> int:
        sym = normalize_symbol(symbol)
        src = norm_source(source)
        fd = write_feed(feed)
        tf = parse_timeframe(timeframe)
        asset = norm_asset_type(asset_type)
        if isinstance(sessions, (str, date)) or not isinstance(sessions, Iterable):
            raise ValueError(f"sessions must be a list of dates, got {type(sessions).__name__} {sessions!r}")
        days = sorted({to_date(s, "session") for s in sessions})
        counts: dict[date, int] = {}
        if rows_per_session is not None:
            if not isinstance(rows_per_session, Mapping):
                raise ValueError("rows_per_session must map session dates to row counts")
            for day, n in rows_per_session.items():
                counts[to_date(day, "rows_per_session key")] = check_count(n, f"rows_per_session[{day!r}]") or 0
        if not days:
            return 0
        not_sessions = [d for d in days if not market_hours.is_session(d)]
        if not_sessions:
            raise ValueError(f"not XNYS sessions, cannot record coverage: {not_sessions[:5]}")
        now = now_utc()
        day_nums = np.array([(d - _EPOCH).days for d in days], dtype=np.int64)
        expiry = ttl_expiry(day_nums, now, ttl_hours)
        now_s = int(now.timestamp())
        with self._db.atomic() as conn:
            sid = self._series.id(asset, sym, tf.name, src, fd, create=True)
            conn.executemany(
                self._db.dialect.replace_into("coverage", _COVERAGE_COLUMNS),
                [
                    (sid, int(n), counts.get(d, 0), now_s, int(e))
                    for d, n, e in zip(days, day_nums, expiry, strict=True)
                ],
            )
        return len(days)

    def missing_many(self, symbols: list[str], start: Any, end: Any, timeframe: str, source: str | None,
                     asset_type: str, feed: str | None = None) -> dict[str, list[date]]:
        syms = normalize_symbols(symbols)  # also a "SPY,AAPL" string, never its letters
        tf = parse_timeframe(timeframe)
        fd = read_feed(feed)
        key_range(start, end, tf.is_intraday)  # the bounds' rules (and order) of every range
        sessions = market_hours.sessions_in_range(to_date(start, "start"), to_date(end, "end"))
        result: dict[str, list[date]] = {s: list(sessions) for s in syms}
        if not sessions or not syms:
            return result
        asset = norm_asset_type(asset_type)
        src = None if source is None else norm_source(source)
        lo_n, hi_n = (sessions[0] - _EPOCH).days, (sessions[-1] - _EPOCH).days
        now_s = int(now_utc().timestamp())
        conn = self._db.conn
        marks = ",".join("?" * len(syms))
        where = f"s.asset_type = ? AND s.timeframe = ? AND s.symbol IN ({marks})"
        params: list[Any] = [asset, tf.name, *syms]
        # The optional filters, shared by the three queries below.
        extra = "".join(f"AND s.{col} = ? " for col, v in (("source", src), ("feed", fd)) if v is not None)
        extra_params = [v for v in (src, fd) if v is not None]
        where += " " + extra
        params.extend(extra_params)
        # Coverage only ever holds sessions (record_coverage refuses other days), so a symbol
        # whose distinct covered sessions number len(sessions) is fully covered.
        counts = dict(
            conn.execute(
                f"SELECT s.symbol, COUNT(DISTINCT c.session) FROM series s JOIN coverage c "
                f"ON c.series_id = s.series_id WHERE {where} AND c.session BETWEEN ? AND ? "
                f"AND c.expires_at > ? GROUP BY s.symbol",
                [*params, lo_n, hi_n, now_s],
            ).fetchall()
        )
        for sym in syms:
            if counts.get(sym, 0) >= len(sessions):
                result[sym] = []
                continue
            covered = {
                r[0]
                for r in conn.execute(
                    "SELECT c.session FROM series s JOIN coverage c ON c.series_id = s.series_id "
                    "WHERE s.asset_type = ? AND s.timeframe = ? AND s.symbol = ? "
                    + extra
                    + "AND c.session BETWEEN ? AND ? AND c.expires_at > ?",
                    [asset, tf.name, sym, *extra_params, lo_n, hi_n, now_s],
                )
            }
            if tf.name == "1Day":  # a valid daily bar settles its session too
                covered.update(
                    r[0] // DAY
                    for r in conn.execute(
                        "SELECT b.ts FROM series s JOIN bars b ON b.series_id = s.series_id "
                        "WHERE s.asset_type = ? AND s.timeframe = ? AND s.symbol = ? "
                        + extra
                        + "AND b.ts BETWEEN ? AND ? AND b.expires_at > ?",
                        [asset, tf.name, sym, *extra_params, lo_n * DAY, hi_n * DAY, now_s],
                    )
                )
            result[sym] = [d for d in sessions if (d - _EPOCH).days not in covered]
        return result
