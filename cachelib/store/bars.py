"""Bars: write, read, count and delete bars of any timeframe.

Two layouts, chosen by timeframe:

* **Daily-or-longer** bars are rows of ``bars``, a ``WITHOUT ROWID`` table clustered on its
  primary key ``(series_id, ts)``; ``ts`` is UTC midnight of the session date.
* **Intraday** bars (every timeframe below 1Day) are *chunks*: one row of ``bar_chunks`` per
  ``(series_id, New York session)`` whose BLOB holds the session's bar times and columns
  (:mod:`cachelib.store.chunks`). A write merges into the session's chunk (new bars win), a
  read decodes only the chunks in range and slices with numpy. Expiry is per chunk, and a
  write never shortens the expiry of live bars it leaves in place (:mod:`cachelib.store.ttl`).

A *series* is :mod:`cachelib.store.series` (its feed included: a read without ``feed`` takes,
per source, the one best-ranked feed that has valid bars in the range, never a blend); the
shape of a bar (columns, keys, validation) is :mod:`cachelib.bars`; the expiry rule is
:mod:`cachelib.store.ttl`.

**Adjusted reads** (``adjustment`` split, dividend or all): the raw bars are read as usual
into a ``7 x N`` block, adjusted in place by the symbol's stored corporate actions with
ex-date <= ``as_of`` (:func:`~cachelib.corporate_actions.key_factors` and
:func:`~cachelib.corporate_actions.adjust_block`), then framed. Dividend factors need the raw
close of the session before each ex-date: from the daily bars of the same source and feed
(one small query), else from that session's last intraday bar, else
:class:`StoredClosesMissingError`. ``"raw"`` is the plain read, with no extra query.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..bars import (
    KEY_MAX,
    KEY_MIN,
    Timeframe,
    clamp_key,
    column_values,
    date_to_key,
    frame_from_block,
    frame_from_rows,
    frame_of_blocks,
    key_range,
    key_to_date,
    normalize_bars,
    normalize_symbol,
    parse_timeframe,
    range_end_key,
    range_start_key,
    rows_of_symbol,
    rows_table,
    to_date,
)
from ..clock import now_utc
from ..corporate_actions import (
    SPLIT_TYPES,
    ActionRows,
    MissingClosesError,
    adjust_block,
    adjust_block_runs,
    check_adjustment,
    key_factor_runs,
    key_factors,
    needed_closes,
)
from ..market_hours import previous_session, session_bounds, today_et
from . import chunks
from .corporate_actions import warn_if_uncovered
from .files import fetch_all
from .series import (
    READ_FILTERS,
    SeriesCatalog,
    feed_rank,
    norm_asset_type,
    norm_source,
    read_feed,
    read_filter,
    source_rank,
    write_feed,
)
from .ttl import DAY, session_day_of_key, session_days_of_keys, ttl_expiry

if TYPE_CHECKING:
    import sqlite3

    from .connection import Engine

_BARS_UPSERT_COLUMNS = 10
_CHUNK_UPSERT_COLUMNS = 7
_BAR_SELECT = "SELECT ts, open, high, low, close, volume, vwap, trade_count FROM bars"
# Valid bars in range of every series a read may answer from, each tagged with its series,
# by the WHERE body of cachelib.store.series.read_filter.
_TAGGED_READS = {
    where: "SELECT ts, open, high, low, close, volume, vwap, trade_count, series_id FROM bars "
           f"WHERE series_id IN (SELECT series_id FROM series WHERE {where}) "
           "AND ts BETWEEN ? AND ? AND expires_at > ? ORDER BY series_id, ts"
    for where in READ_FILTERS.values()
}
_VALUE_COLUMNS = ["open", "high", "low", "close", "volume", "vwap", "trade_count"]
# The chunks of one series that may hold bars in [lo, hi] (the session bounds use the key).
_CHUNKS_IN_RANGE = (
    "SELECT session, first_ts, last_ts, n_bars, expires_at, data FROM bar_chunks "
    "WHERE series_id = ? AND session BETWEEN ? AND ? AND last_ts >= ? AND first_ts <= ?"
)


def open_key_range(start: Any, end: Any, intraday: bool) -> tuple[int, int]:
    """Like :func:`~cachelib.bars.key_range`, but either bound may be ``None`` (open)."""
    if start is not None and end is not None:
        return key_range(start, end, intraday)
    lo = KEY_MIN if start is None else clamp_key(range_start_key(start, intraday))
    hi = KEY_MAX if end is None else clamp_key(range_end_key(end, intraday))
    return lo, hi


def _session_bounds(lo: int, hi: int) -> tuple[int, int]:
    """The New York session days whose chunks can hold keys in ``[lo, hi]``."""
    return session_day_of_key(lo, True), session_day_of_key(hi, True)


def _symbol_frames(frames: Any, tf: Timeframe) -> tuple[pd.DataFrame | None, list[str], np.ndarray]:
    """``set_many``'s input as one frame, its symbols and each row's symbol number.

    Takes a ``{symbol: DataFrame}`` mapping or one frame indexed ``(symbol, timestamp)``.
    """
    if isinstance(frames, pd.DataFrame):
        if not isinstance(frames.index, pd.MultiIndex):
            raise ValueError("set_many takes {symbol: DataFrame} or a frame indexed (symbol, timestamp)")
        names = [str(n).lower() if n is not None else "" for n in frames.index.names]
        if "symbol" not in names:
            raise ValueError("the frame's MultiIndex has no 'symbol' level (expected (symbol, timestamp))")
        codes, uniques = pd.factorize(frames.index.get_level_values(names.index("symbol")), sort=False)
        if (codes < 0).any():
            raise ValueError("some rows have no symbol")
        return frames, [normalize_symbol(str(u)) for u in uniques], np.asarray(codes, dtype=np.int64)
    if not isinstance(frames, Mapping):
        raise ValueError(
            f"set_many takes {{symbol: DataFrame}} or a frame indexed (symbol, timestamp), "
            f"got {type(frames).__name__}"
        )
    numbers: dict[str, int] = {}  # symbol -> its number ("spy" and "SPY" are one series)
    parts: list[pd.DataFrame] = []
    part_codes: list[int] = []
    for symbol, frame in frames.items():
        sym = normalize_symbol(symbol)
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"data for {sym} must be a pandas DataFrame, got {type(frame).__name__}")
        if isinstance(frame.index, pd.MultiIndex):
            frame = rows_of_symbol(frame, sym)
        if len(frame):
            part_codes.append(numbers.setdefault(sym, len(numbers)))
            parts.append(frame)
    symbols = list(numbers)
    if not parts:
        return None, [], np.empty(0, dtype=np.int64)
    codes = np.repeat(np.array(part_codes, dtype=np.int64), [len(p) for p in parts])
    if len(parts) == 1:
        return parts[0], symbols, codes
    stacked = _stack_numeric(parts)
    if stacked is None:  # the careful path: each frame read alone, as set() reads it
        stacked = pd.concat([_plain_part(p, symbols[c], tf) for p, c in zip(parts, part_codes, strict=True)])
    return stacked, symbols, codes


def _plain_part(frame: pd.DataFrame, sym: str, tf: Timeframe) -> pd.DataFrame:
    """One of ``set_many``'s frames validated alone, exactly as ``set`` validates it (errors
    name the symbol), as float64 bar columns indexed by naive times that give the same keys
    (UTC instants, or session dates at midnight). Frames that differ in column case or layout
    (``close``/``Close``, ``transactions``/``trade_count``, a time column or a time index, a
    missing ``open``), time zone or dtypes then stack without changing meaning: a plain
    ``pd.concat`` keeps ``close`` and ``Close`` apart, drops one frame's ``transactions`` and
    turns one frame's bools next to another's ints into 0/1."""
    try:
        bars = normalize_bars(frame, tf)
    except ValueError as exc:
        raise ValueError(f"bars of {sym}: {exc}") from None
    times = pd.DatetimeIndex(np.asarray(column_values(bars, "key")).astype("M8[s]"))
    return bars.drop(columns="key").set_axis(times)


def _stack_numeric(parts: list[pd.DataFrame]) -> pd.DataFrame | None:
    """``pd.concat(parts)`` for the common case, block by block: every frame has the same
    columns held in the same pandas blocks of plain real numbers (each column keeps its dtype),
    and a DatetimeIndex of one dtype. ``pd.concat`` of 100 one-row frames costs ~5 ms (it
    aligns 100 column indexes and block layouts), ``DataFrame.to_numpy`` of each ~10 us (it
    interleaves mixed dtypes); this about 1 ms. ``None`` (use ``pd.concat``) for anything else,
    so odd input meets the same validation."""
    first = parts[0]
    columns, index_dtype = first.columns, first.index.dtype
    if not isinstance(first.index, pd.DatetimeIndex) or columns.has_duplicates:
        return None
    first_blocks = first._mgr.blocks
    layout = [(block.dtype, block.mgr_locs, block.mgr_locs.indexer) for block in first_blocks]
    if not all(isinstance(dtype, np.dtype) and dtype.kind in "if" for dtype, _, _ in layout):
        return None  # bool, complex, object, strings, extension arrays: the careful path
    values: list[list[np.ndarray]] = [[] for _ in layout]
    times = []
    for frame in parts:
        manager = frame._mgr
        names, index = manager.axes
        if (not _same_labels(names, columns) or not isinstance(index, pd.DatetimeIndex)
                or index.dtype != index_dtype):
            return None
        blocks = manager.blocks
        if len(blocks) != len(layout):
            return None
        for block, (dtype, _, where), out in zip(blocks, layout, values, strict=True):
            array = block.values
            if (array.dtype is not dtype and array.dtype != dtype) or not _same_placement(block.mgr_locs.indexer, where):
                return None
            out.append(array)
        times.append(index.asi8)
    stamps = np.concatenate(times).view(f"M8[{first.index.unit}]")
    index = pd.DatetimeIndex(stamps, name=first.index.name)
    if first.index.tz is not None:
        index = index.tz_localize("UTC").tz_convert(first.index.tz)
    return frame_of_blocks([(np.concatenate(out, axis=1), placement) for out, (_, placement, _) in
                            zip(values, layout, strict=True)], columns, index)


def _same_labels(names: pd.Index, reference: pd.Index) -> bool:
    """``names.equals(reference)``, with a shortcut for labels held in Arrow arrays (pandas'
    default for strings): comparing those arrays directly costs a tenth."""
    if names is reference:
        return True
    arrow, arrow_ref = getattr(names.array, "_pa_array", None), getattr(reference.array, "_pa_array", None)
    if arrow is not None and arrow_ref is not None and names.dtype == reference.dtype:
        return bool(arrow.equals(arrow_ref))
    return bool(names.equals(reference))


def _same_placement(indexer: slice | np.ndarray, reference: slice | np.ndarray) -> bool:
    """Whether two pandas blocks hold the same columns (their placements' indexers)."""
    if type(indexer) is slice and type(reference) is slice:
        return indexer == reference
    return isinstance(indexer, np.ndarray) and isinstance(reference, np.ndarray) and np.array_equal(indexer, reference)


class BarTable:
    """Bars of every series; the manager's bar methods delegate here (arguments already
    defaulted by the manager, normalised here)."""

    def __init__(self, db: Engine, series: SeriesCatalog) -> None:
        self._db = db
        self._series = series
        self._stats_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # -- write ----------------------------------------------------------------------------

    def set(self, symbol: str, data: pd.DataFrame, source: str, asset_type: str, ttl_hours: float | None,
            timeframe: str, feed: str | None = None) -> int:
        sym = normalize_symbol(symbol)
        src = norm_source(source)
        fd = write_feed(feed)
        asset = norm_asset_type(asset_type)
        tf = parse_timeframe(timeframe)
        if isinstance(data, pd.DataFrame) and isinstance(data.index, pd.MultiIndex):
            data = rows_of_symbol(data, sym)
        bars = normalize_bars(data, tf)
        if bars.empty:
            return 0
        with self._db.atomic() as conn:
            sid = self._series.id(asset, sym, tf.name, src, fd, create=True)
            self._write(conn, np.full(len(bars), sid, dtype=np.int64), bars, tf, ttl_hours)
        return len(bars)

    def set_many(self, frames: Any, source: str, asset_type: str, ttl_hours: float | None,
                 timeframe: str, feed: str | None = None) -> int:
        """Several symbols' bars in one transaction, validated together in one pass."""
        src = norm_source(source)
        fd = write_feed(feed)
        asset = norm_asset_type(asset_type)
        tf = parse_timeframe(timeframe)
        data, symbols, codes = _symbol_frames(frames, tf)
        if data is None or not len(data):
            return 0
        bars = normalize_bars(data, tf, groups=codes)
        # Known series first, outside the transaction: the catalogue remembers only ids looked
        # up outside one, so a daily upsert of 100 symbols costs no query per symbol.
        known = [self._series.id(asset, sym, tf.name, src, fd) for sym in symbols]
        with self._db.atomic() as conn:
            sids = np.array([
                sid if sid is not None else self._series.id(asset, sym, tf.name, src, fd, create=True)
                for sym, sid in zip(symbols, known, strict=True)
            ], dtype=np.int64)
            self._write(conn, sids[np.asarray(column_values(bars, "group"))], bars, tf, ttl_hours)
        return len(bars)

    def _write(self, conn: sqlite3.Connection, sids: np.ndarray, bars: pd.DataFrame, tf: Timeframe,
               ttl_hours: float | None) -> None:
        """Upsert normalised ``bars`` (sorted by series, then time) of the series ``sids``."""
        now = now_utc()
        keys = np.asarray(column_values(bars, "key"))
        days = session_days_of_keys(keys, tf.is_intraday)
        expiry = ttl_expiry(days, now, ttl_hours)
        if not tf.is_intraday:
            bar_rows = zip(
                sids.tolist(),
                keys.tolist(),
                *(column_values(bars, c).tolist() for c in _VALUE_COLUMNS),  # NaN binds as NULL in SQLite
                expiry.tolist(),
                strict=True,
            )
            conn.executemany(self._db.dialect.replace_into("bars", _BARS_UPSERT_COLUMNS), bar_rows)
            return
        # Merging reads the stored chunk first: concurrent PostgreSQL writers of one series take
        # turns (a no-op on SQLite, where a write transaction already excludes the others).
        self._db.lock(conn, [("series", sid) for sid in np.unique(sids).tolist()])
        values = bars[_VALUE_COLUMNS].to_numpy(dtype=np.float64).T
        # One chunk per (series, session): the rows where either changes start a new one.
        cut = np.flatnonzero((np.diff(sids) != 0) | (np.diff(days) != 0)) + 1
        starts, ends = np.r_[0, cut], np.r_[cut, len(keys)]
        now_s = int(now.timestamp())
        rows: list[tuple[int, int, int, int, int, int, bytes]] = []
        runs = _runs_by_series(sids, starts, ends)
        stored = _stored_chunks(conn, [(sid, int(days[run[0][0]]), int(days[run[-1][0]])) for sid, run in runs])
        for sid, run in runs:
            for a, b in run:
                day = int(days[a])
                times, vals = keys[a:b], values[:, a:b]
                expires_at = int(expiry[a])
                prior = stored.get((sid, day))  # (n_bars, first_ts, expires_at, data)
                if prior is not None and prior[2] > now_s:  # an expired chunk's bars are gone
                    old_times, old_vals = chunks.decode(prior[3], prior[0], prior[1])
                    times, vals = chunks.merge(old_times, old_vals, times, vals)
                    if len(times) > b - a:
                        # Live bars of the chunk stay: this write never shortens their
                        # expiry (the rule in cachelib.store.ttl, "Intraday chunks").
                        expires_at = max(expires_at, int(prior[2]))
                rows.append((sid, day, int(times[0]), int(times[-1]), len(times), expires_at,
                             chunks.encode(times, vals)))
        conn.executemany(self._db.dialect.replace_into("bar_chunks", _CHUNK_UPSERT_COLUMNS), rows)

    # -- read -----------------------------------------------------------------------------

    def get(self, symbol: str, start: Any, end: Any, source: str | None, asset_type: str,
            timeframe: str, feed: str | None = None, adjustment: str = "raw",
            as_of: Any = None) -> pd.DataFrame | None:
        adjust = check_adjustment(adjustment)
        as_of_day = None if as_of is None else to_date(as_of, "as_of")
        sym = normalize_symbol(symbol)
        asset = norm_asset_type(asset_type)
        tf = parse_timeframe(timeframe)
        src = None if source is None else norm_source(source)
        fd = read_feed(feed)
        lo, hi = key_range(start, end, tf.is_intraday)
        now_s = int(now_utc().timestamp())
        if tf.is_intraday:
            block = self._read_chunks(asset, sym, tf, src, fd, lo, hi, now_s)
            self._count_hit(block is not None)
            if block is None:
                return None
            times, values, pairs = block
        else:
            rows, pairs = self._read_rows(asset, sym, tf, src, fd, lo, hi, now_s, adjust != "raw")
            self._count_hit(bool(rows))
            if not rows:
                return None
            if adjust == "raw":
                return frame_from_rows(rows, tf)
            # frame_from_rows' own steps, with the block adjusted in place in between.
            table = rows_table(rows)
            keys = table[0].astype(np.int64)
            values = np.ascontiguousarray(table[1:8])
            self._adjust(values, keys, tf, asset, sym, src, pairs, adjust, as_of_day, now_s)
            return frame_from_block(keys, values, tf)
        if adjust != "raw":
            self._adjust(values, times, tf, asset, sym, src, pairs, adjust, as_of_day, now_s)
        return frame_from_block(times, values, tf)

    def _read_rows(self, asset: str, sym: str, tf: Timeframe, src: str | None, fd: str | None, lo: int,
                   hi: int, now_s: int, want_pairs: bool) -> tuple[list[tuple], list[tuple[str, str]]]:
        """Daily-or-longer bars in ``[lo, hi]`` as rows whose first eight values are ``(key,
        open, ..., trade_count)`` (a ninth, if any, is to be ignored), and the ``(source,
        feed)`` pairs that answered, best first (when one series answers, only if
        ``want_pairs``: a raw read does not need them).

        One statement, one read snapshot: the valid bars in range of every candidate series,
        sorted by series, each row tagged with its series id. The common case (one series
        answers: a named feed, or the only series with bars here) is then returned as it is;
        otherwise each source keeps its best-ranked feed, and each bar its best source."""
        conn = self._db.conn
        if src is not None and fd is not None:  # one named series: its id is remembered
            sid = self._series.id(asset, sym, tf.name, src, fd)
            if sid is None:
                return [], []
            rows = fetch_all(conn, f"{_BAR_SELECT} WHERE series_id = ? AND ts BETWEEN ? AND ? AND expires_at > ?",
                             (sid, lo, hi, now_s))
            return rows, [(src, fd)]
        where, params = read_filter(asset, sym, tf.name, src, fd)
        rows = fetch_all(conn, _TAGGED_READS[where], (*params, lo, hi, now_s))
        if not rows:
            return [], []
        if rows[0][8] == rows[-1][8]:  # sorted by series: one answered
            return rows, ([self._series.names([rows[0][8]])[rows[0][8]]] if want_pairs else [])
        names = self._series.names(sorted({r[8] for r in rows}))
        tagged = sorted(((*r[:8], *names[r[8]]) for r in rows), key=lambda r: r[0])
        if len({(r[8], r[9]) for r in tagged}) > 1:
            tagged = _one_feed_per_source(tagged)
        if len({r[8] for r in tagged}) > 1:
            # Several sources hold bars here: one row per bar, from the best-ranked source.
            best: dict[int, tuple] = {}
            for row in sorted(tagged, key=lambda r: source_rank(r[8])):
                best.setdefault(row[0], row)
            tagged = [best[k] for k in sorted(best)]
        pairs = sorted({(r[8], r[9]) for r in tagged}, key=lambda p: (source_rank(p[0]), feed_rank(p[1])))
        return [r[:8] for r in tagged], pairs

    def _read_chunks(self, asset: str, sym: str, tf: Timeframe, src: str | None, fd: str | None, lo: int,
                     hi: int, now_s: int) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]] | None:
        """Intraday bars in ``[lo, hi]`` as ``(times, 7 x N values, (source, feed) pairs that
        answered, best first)``: decode the valid chunks in range, slice with numpy; per source
        the first feed (by priority) with bars in range; with several sources, one bar per time
        from the best-ranked one. The values are a fresh array, safe to adjust in place."""
        day_lo, day_hi = _session_bounds(lo, hi)
        conn = self._db.conn
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        pairs: list[tuple[str, str]] = []
        answered: set[str] = set()  # sources whose feed is chosen
        for sid, source, feed in self._series.for_read(asset, sym, tf.name, src, fd):  # best first
            if source in answered:
                continue
            rows = conn.execute(
                "SELECT data, n_bars, first_ts FROM bar_chunks WHERE series_id = ? AND session BETWEEN ? AND ? "
                "AND last_ts >= ? AND first_ts <= ? AND expires_at > ? ORDER BY session",
                (sid, day_lo, day_hi, lo, hi, now_s),
            ).fetchall()
            if rows:
                times, values = chunks.decode_many(rows)
                a, b = np.searchsorted(times, [lo, hi + 1])
                if b > a:
                    parts.append((times[a:b], values[:, a:b]))
                    pairs.append((source, feed))
                    answered.add(source)
        if not parts:
            return None
        times, values = parts[0]
        if len(parts) > 1:
            times = np.concatenate([p[0] for p in parts])
            values = np.concatenate([p[1] for p in parts], axis=1)
            rank = np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts])
            order = np.lexsort((rank, times))  # by time, the best source first within a time
            first = np.r_[True, np.diff(times[order]) != 0]
            pick = order[first]
            times, values = times[pick], values[:, pick]
        return times, values, pairs

    # -- adjusted reads -------------------------------------------------------------------

    def _adjust(self, values: np.ndarray, times: np.ndarray, tf: Timeframe, asset: str, sym: str,
                src: str | None, pairs: list[tuple[str, str]], adjustment: str, as_of: date | None,
                now_s: int) -> None:
        """Adjust the raw ``7 x N`` block of ``sym``'s bars in place, before any frame exists
        (the cheap path), by its stored corporate actions with ex-date <= ``as_of`` (default:
        today in New York); see :meth:`TradingCacheManager.get`."""
        as_of = today_et() if as_of is None else as_of
        intraday = tf.is_intraday
        first = _EPOCH_DAY + timedelta(days=session_day_of_key(int(times[0]), intraday))
        actions = _stored_actions(self._db.conn, sym, src, as_of, first)
        if actions is None:
            return  # no action of this symbol is known: the raw bars are the adjusted ones
        # The raw closes the dividends need, all up front: a daily read of one series holds
        # most of them (one vectorised lookup), one small query fetches the rest.
        needed = needed_closes(actions, as_of, adjustment, first, _previous_session)
        closes: dict[date, float] = {}
        if needed:
            if not intraday and len(pairs) == 1:
                closes = _closes_in_block(needed, times, values[_CLOSE_ROW])
            rest = [d for d in needed if d not in closes]
            if rest:
                closes.update(self._raw_closes(asset, sym, rest, pairs, tf, now_s))
                missing = [d for d in rest if d not in closes]
                if missing:
                    raise StoredClosesMissingError(sym, missing, pairs, adjustment)
        # Intraday reads are long runs of bars between few ex-dates: adjust slice by slice. A
        # daily read is short: per-bar factor arrays and one multiply per column are cheaper.
        if intraday:
            adjust_block_runs(values, key_factor_runs(times, True, actions, adjustment, as_of, closes,
                                                      _previous_session))
        else:
            adjust_block(values, key_factors(times, False, actions, adjustment, as_of, closes,
                                             _previous_session))

    def _raw_closes(self, asset: str, sym: str, sessions: list[date], pairs: list[tuple[str, str]],
                    tf: Timeframe, now_s: int) -> dict[date, float]:
        """Raw closes of ``sessions`` from the series of the same ``(source, feed)`` pairs as
        the bars read (best pair first): the daily bar's close (one small query); failing that,
        the close of the session's last regular-hours intraday bar (a bar that starts before the
        session's close; the read's own timeframe first, then the finest), as the official close
        is that bar's close."""
        conn = self._db.conn
        rank = {pair: i for i, pair in enumerate(pairs)}
        daily = parse_timeframe("1Day").name
        keys = {date_to_key(d): d for d in sessions}
        marks = ",".join("?" * len(keys))
        found: dict[date, tuple[int, float]] = {}
        for source, feed, ts, close in conn.execute(
            "SELECT s.source, s.feed, b.ts, b.close FROM series s JOIN bars b ON b.series_id = s.series_id "
            f"WHERE s.asset_type = ? AND s.symbol = ? AND s.timeframe = ? AND b.ts IN ({marks}) "
            "AND b.expires_at > ? AND b.close IS NOT NULL",
            (asset, sym, daily, *keys, now_s),
        ):
            r = rank.get((source, feed))
            day = keys[ts]
            if r is not None and (day not in found or r < found[day][0]):
                found[day] = (r, close)
        closes = {d: c for d, (_, c) in found.items()}
        rest = [d for d in sessions if d not in closes]
        if rest:
            closes.update(self._intraday_closes(asset, sym, rest, rank, tf, now_s))
        return closes

    def _intraday_closes(self, asset: str, sym: str, sessions: list[date], rank: dict[tuple[str, str], int],
                         tf: Timeframe, now_s: int) -> dict[date, float]:
        """The close of each session's last intraday bar, from the valid chunks of ``sym``'s
        intraday series of the ranked ``(source, feed)`` pairs."""
        days = {(d - _EPOCH_DAY).days: d for d in sessions}
        marks = ",".join("?" * len(days))
        best: dict[date, tuple[tuple[int, int, int], float]] = {}
        for source, feed, tf_name, session, n, first_ts, data in self._db.conn.execute(
            "SELECT s.source, s.feed, s.timeframe, c.session, c.n_bars, c.first_ts, c.data FROM series s "
            "JOIN bar_chunks c ON c.series_id = s.series_id WHERE s.asset_type = ? AND s.symbol = ? "
            f"AND c.session IN ({marks}) AND c.expires_at > ? AND c.n_bars > 0",
            (asset, sym, *days, now_s),
        ):
            r = rank.get((source, feed))
            if r is None:
                continue
            other = parse_timeframe(tf_name)
            order = (r, 0 if other.name == tf.name else 1, other.seconds or 0)
            day = days[session]
            if day in best and best[day][0] <= order:
                continue
            times, values = chunks.decode(data, n, first_ts)
            # The official close is the regular session's: after-hours bars do not count.
            session_close = int(session_bounds(day)[1].timestamp())
            close = values[_CLOSE_ROW][times < session_close]
            close = close[~np.isnan(close)]
            if len(close):
                best[day] = (order, float(close[-1]))
        return {d: c for d, (_, c) in best.items()}

    def _count_hit(self, hit: bool) -> None:
        with self._stats_lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def exists(self, symbol: str, start: Any, end: Any, source: str | None, asset_type: str,
               timeframe: str, feed: str | None = None) -> bool:
        sym = normalize_symbol(symbol)
        tf = parse_timeframe(timeframe)
        lo, hi = key_range(start, start if end is None else end, tf.is_intraday)
        now_s = int(now_utc().timestamp())
        src = None if source is None else norm_source(source)
        conn = self._db.conn
        for sid, _, _ in self._series.for_read(norm_asset_type(asset_type), sym, tf.name, src, read_feed(feed)):
            if tf.is_intraday:
                if any(n for n, _ in _bars_in_range(conn, sid, lo, hi, now_s)):
                    return True
            elif conn.execute(
                "SELECT 1 FROM bars WHERE series_id=? AND ts BETWEEN ? AND ? AND expires_at > ? LIMIT 1",
                (sid, lo, hi, now_s),
            ).fetchone():
                return True
        return False

    # -- count and delete -----------------------------------------------------------------

    def count(self, symbol: str | None, start: Any, end: Any, source: str | None, asset_type: str | None,
              timeframe: str | None, feed: str | None = None) -> int:
        total = 0
        conn = self._db.conn
        for sid, tf_name in self._series.matching(symbol, source, asset_type, timeframe, feed):
            intraday = parse_timeframe(tf_name).is_intraday
            lo, hi = open_key_range(start, end, intraday)
            if intraday:
                total += sum(n for n, _ in _bars_in_range(conn, sid, lo, hi))
            else:
                total += conn.execute(
                    "SELECT COUNT(*) FROM bars WHERE series_id = ? AND ts BETWEEN ? AND ?", (sid, lo, hi)
                ).fetchone()[0]
        return total

    def delete(self, symbol: str | None, start: Any, end: Any, source: str | None, asset_type: str | None,
               timeframe: str | None, feed: str | None = None) -> int:
        removed = 0
        with self._db.atomic() as conn:
            series = self._series.matching(symbol, source, asset_type, timeframe, feed)
            # Every series this delete may rewrite, locked at once in one order (as set_many does).
            self._db.lock(conn, [("series", sid) for sid, _ in series])
            for sid, tf_name in series:
                intraday = parse_timeframe(tf_name).is_intraday
                lo, hi = open_key_range(start, end, intraday)
                if intraday:
                    removed += self._delete_chunks(conn, sid, lo, hi)
                else:
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

    def _delete_chunks(self, conn: sqlite3.Connection, sid: int, lo: int, hi: int) -> int:
        """Remove one series' intraday bars in ``[lo, hi]``: chunks inside the range go whole,
        a chunk the range cuts is re-encoded with the bars outside it (same expiry)."""
        removed = 0
        self._db.lock(conn, [("series", sid)])  # the same turn-taking as a chunk merge
        day_lo, day_hi = _session_bounds(lo, hi)
        for session, first_ts, last_ts, n, expires_at, data in conn.execute(
            _CHUNKS_IN_RANGE, (sid, day_lo, day_hi, lo, hi)
        ).fetchall():
            if first_ts >= lo and last_ts <= hi:
                conn.execute("DELETE FROM bar_chunks WHERE series_id = ? AND session = ?", (sid, session))
                removed += n
                continue
            times, values = chunks.decode(data, n, first_ts)
            keep = (times < lo) | (times > hi)
            removed += n - int(keep.sum())
            times, values = times[keep], values[:, keep]
            conn.execute(
                self._db.dialect.replace_into("bar_chunks", _CHUNK_UPSERT_COLUMNS),
                (sid, session, int(times[0]), int(times[-1]), len(times), expires_at, chunks.encode(times, values)),
            )
        return removed

    # -- overview -------------------------------------------------------------------------

    def symbols(self, asset_type: str) -> list[str]:
        rows = self._db.conn.execute(
            "SELECT DISTINCT s.symbol FROM series s WHERE s.asset_type = ? "
            "AND (EXISTS (SELECT 1 FROM bars b WHERE b.series_id = s.series_id) "
            "OR EXISTS (SELECT 1 FROM bar_chunks c WHERE c.series_id = s.series_id)) ORDER BY s.symbol",
            (norm_asset_type(asset_type),),
        ).fetchall()
        return [r[0] for r in rows]

    def stats(self) -> dict[str, Any]:
        """The store's counts and sizes (bars first; see the manager's ``get_stats``)."""
        db = self._db
        conn = db.conn
        now_s = int(now_utc().timestamp())
        # Bars, not chunks: a chunk row counts its n_bars.
        total, expired = conn.execute(
            "SELECT (SELECT COUNT(*) FROM bars) + (SELECT COALESCE(SUM(n_bars), 0) FROM bar_chunks), "
            "(SELECT COUNT(*) FROM bars WHERE expires_at <= ?) "
            "+ (SELECT COALESCE(SUM(n_bars), 0) FROM bar_chunks WHERE expires_at <= ?)",
            (now_s, now_s),
        ).fetchone()
        # Per series: bars, first and last key (a series lives in one of the two tables).
        series = conn.execute(
            "SELECT s.series_id, s.asset_type, s.symbol, s.timeframe, s.source, "
            "COALESCE(b.n, c.n, 0), COALESCE(b.lo, c.lo), COALESCE(b.hi, c.hi), s.feed FROM series s "
            "LEFT JOIN (SELECT series_id, COUNT(*) AS n, MIN(ts) AS lo, MAX(ts) AS hi FROM bars "
            "GROUP BY series_id) b ON b.series_id = s.series_id "
            "LEFT JOIN (SELECT series_id, SUM(n_bars) AS n, MIN(first_ts) AS lo, MAX(last_ts) AS hi "
            "FROM bar_chunks GROUP BY series_id) c ON c.series_id = s.series_id"
        ).fetchall()
        live = [s for s in series if s[5] > 0]
        # First and last New York session dates over every series (intraday keys are instants).
        starts, ends = [], []
        for _sid, _asset, _sym, tf_name, _src, _n, lo, hi, _feed in live:
            intraday = parse_timeframe(tf_name).is_intraday
            starts.append(session_day_of_key(lo, intraday) * DAY)
            ends.append(session_day_of_key(hi, intraday) * DAY)
        tables = {
            name: conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
            for name in ("bars", "bar_chunks", "series", "coverage", "raw_options_chain", "trade_history")
        }
        size = db.file_bytes()
        hits, misses = self.hits, self.misses
        by = lambda idx: sorted({s[idx] for s in live})  # noqa: E731
        return {
            "total_entries": total,
            "unique_symbols": len(by(2)),
            "sources": by(4),
            "feeds": sorted({s[8] for s in live}, key=feed_rank),
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


def _one_feed_per_source(tagged: list[tuple]) -> list[tuple]:
    """Rows tagged ``(..., source, feed)`` of one source's best-ranked feed each (by
    :data:`~cachelib.store.series.FEED_PRIORITY`) among the feeds that have rows here."""
    best: dict[str, str] = {}
    for source, feed in {(r[8], r[9]) for r in tagged}:
        if source not in best or feed_rank(feed) < feed_rank(best[source]):
            best[source] = feed
    return [r for r in tagged if best[r[8]] == r[9]]


#: (series, first session, last session) ranges looked up per query by :func:`_stored_chunks`
#: (3 parameters each: well under SQLite's 32,766).
_RANGES_PER_QUERY = 500


def _stored_chunks(conn: sqlite3.Connection, wanted: list[tuple[int, int, int]]
                   ) -> dict[tuple[int, int], tuple[int, int, int, bytes]]:
    """``{(series_id, session): (n_bars, first_ts, expires_at, data)}``: the stored chunks of
    each ``(series_id, first session, last session)`` in ``wanted``, in one query per
    :data:`_RANGES_PER_QUERY` ranges (one per series was ~20 us each: 2 ms of a 100-symbol
    ingest)."""
    found: dict[tuple[int, int], tuple[int, int, int, bytes]] = {}
    for start in range(0, len(wanted), _RANGES_PER_QUERY):
        part = wanted[start:start + _RANGES_PER_QUERY]
        sql = (
            f"WITH wanted(sid, lo, hi) AS (VALUES {', '.join(['(?, ?, ?)'] * len(part))}) "
            "SELECT c.series_id, c.session, c.n_bars, c.first_ts, c.expires_at, c.data "
            "FROM wanted JOIN bar_chunks c ON c.series_id = wanted.sid AND c.session BETWEEN wanted.lo AND wanted.hi"
        )
        for r in conn.execute(sql, [v for w in part for v in w]):
            found[(int(r[0]), int(r[1]))] = (int(r[2]), int(r[3]), int(r[4]), r[5])
    return found


def _runs_by_series(sids: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[tuple[int, list[tuple[int, int]]]]:
    """``[(series_id, [(start, end) of each session's rows])]`` from rows sorted by series."""
    runs: list[tuple[int, list[tuple[int, int]]]] = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        sid = int(sids[a])
        if not runs or runs[-1][0] != sid:
            runs.append((sid, []))
        runs[-1][1].append((a, b))
    return runs


def _bars_in_range(conn: sqlite3.Connection, sid: int, lo: int, hi: int,
                   valid_after: int | None = None) -> list[tuple[int, int]]:
    """``[(bars in [lo, hi], chunk session)]`` for one series' chunks that overlap the range
    (only chunks still valid at ``valid_after`` when given). Chunks wholly inside the range
    are counted from their row; only the one or two cut by a bound are decoded."""
    sql, params = _CHUNKS_IN_RANGE, [sid, *_session_bounds(lo, hi), lo, hi]
    if valid_after is not None:
        sql += " AND expires_at > ?"
        params.append(valid_after)
    counts = []
    for session, first_ts, last_ts, n, _expires_at, data in conn.execute(sql, params).fetchall():
        if first_ts < lo or last_ts > hi:
            times, _ = chunks.decode(data, n, first_ts)
            n = int(((times >= lo) & (times <= hi)).sum())
        counts.append((n, session))
    return counts


# -- adjusted reads: the stored actions, the calendar, the error ----------------------------

_EPOCH_DAY = date(1970, 1, 1)
_CLOSE_ROW = _VALUE_COLUMNS.index("close")
_ADJUSTING_TYPES = (*SPLIT_TYPES, "cash_dividend")


@functools.lru_cache(maxsize=4096)
def _previous_session(day: date) -> date:
    """:func:`cachelib.market_hours.previous_session`, remembered: a ten-year read asks for
    the same few dozen ex-dates twice per call, and the calendar never changes."""
    return previous_session(day)


def _stored_actions(conn: sqlite3.Connection, sym: str, src: str | None, as_of: date,
                    first: date) -> ActionRows | None:
    """``sym``'s stored split-like and cash-dividend actions with ex-date <= ``as_of``, as the
    plain rows :func:`~cachelib.corporate_actions.key_factors` reads, or ``None`` when the
    symbol has no stored action at all.

    Which source: the read's ``src`` when it has any action of ``sym`` (any type, any date);
    otherwise (or for ``src=None``) every source, one row per action from the best-ranked
    source (:data:`~cachelib.store.series.SOURCE_PRIORITY`), as ``get_corporate_actions``
    does. One indexed query on ``corporate_actions``, no re-validation: every row was checked
    by :func:`~cachelib.corporate_actions.actions_frame` when stored, and a read must stay
    cheap (building a frame would cost more than the adjustment itself).

    A read never pretends: when those sources were never asked about ``sym``'s actions over
    ``[first, as_of]`` (``first`` the first bar's session), a WARNING says which
    ``sync_corporate_actions`` call to run (:func:`~cachelib.store.corporate_actions.warn_if_uncovered`;
    one more small indexed query).
    """
    rows = conn.execute(
        "SELECT source, action_type, ex_date, ratio, amount FROM corporate_actions WHERE symbol = ?",
        (sym,),
    ).fetchall()
    own = src is not None and any(r[0] == src for r in rows)
    warn_if_uncovered(conn, sym, src if own else None, first, as_of)
    if not rows:
        return None
    if own:
        rows = [r for r in rows if r[0] == src]
    else:
        rows.sort(key=lambda r: source_rank(r[0]))
    kept: dict[tuple[str, str], tuple] = {}
    cutoff = as_of.isoformat()
    for r in rows:
        if r[1] in _ADJUSTING_TYPES and r[2] <= cutoff:
            kept.setdefault((r[1], r[2]), r)
    return ActionRows([(r[1], date.fromisoformat(r[2]), np.nan if r[3] is None else r[3],
                        np.nan if r[4] is None else r[4]) for r in kept.values()])


def _closes_in_block(sessions: list[date], keys: np.ndarray, closes: np.ndarray) -> dict[date, float]:
    """The raw closes of ``sessions`` among the daily bars being read (sorted ``keys``, their
    ``closes`` not yet adjusted), by one vectorised search; sessions without a bar, or with a
    NaN close, are left out."""
    wanted = np.array([date_to_key(d) for d in sessions], dtype=np.int64)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    hit = (keys[at] == wanted) & ~np.isnan(closes[at])
    return {d: c for d, c, h in zip(sessions, closes[at].tolist(), hit.tolist(), strict=True) if h}


class StoredClosesMissingError(MissingClosesError):
    """A dividend-adjusted read needs raw closes the store does not hold: ``sessions`` (the
    sessions before the dividends' ex-dates) have no daily bar, nor intraday bar, of the
    series read. A :class:`ValueError`."""

    def __init__(self, symbol: str, sessions: list[date], pairs: list[tuple[str, str]], adjustment: str) -> None:
        self.symbol = symbol
        self.sessions = sessions
        shown = ", ".join(d.isoformat() for d in sessions[:10])
        more = f" and {len(sessions) - 10} more" if len(sessions) > 10 else ""
        series = ", ".join(f"source={s!r} feed={f!r}" for s, f in pairs)
        ValueError.__init__(
            self,
            f"adjustment={adjustment!r} of {symbol} needs the raw close of session(s) {shown}{more} "
            f"(the session before each dividend's ex-date), and no daily or intraday bar of "
            f"{series} holds it: sync {symbol}'s daily bars for those sessions first (e.g. "
            f"sync_bars(cache, source, [{symbol!r}], {sessions[0].isoformat()!r}, "
            f"{sessions[-1].isoformat()!r})), or read with adjustment='split'",
        )
