"""Store throughput: ``TradingCacheManager`` against today's row layout, in one run, with outside anchors.

Run with ``python -m bench.bench_store`` (``--help`` for options; ``--quick`` for a smoke run);
``main()`` returns the figures. It ends with a markdown table
``figure | cachelib | baseline | anchors | target | met?``.

Every figure is measured next to its baselines in the same process on the same synthetic bars:

* **row table** (:data:`ROW_SCHEMA`): today's (schema v3) layout, one row per bar in a
  ``WITHOUT ROWID`` table clustered on ``(series_id, ts)``, WAL and ``synchronous=NORMAL``,
  written with plain ``sqlite3`` ``executemany`` (an ``ON CONFLICT`` upsert, one transaction per
  call) and read with ``fetchall`` into a DataFrame;
* **seed** (:data:`SEED_SCHEMA`): the seed's naive layout (text dates, ``to_sql``, ``read_sql``,
  the scratch-table upsert), for the daily figures where it is still a meaningful reference;
* **100 set calls**: cachelib itself, one transaction per symbol, against ``set_many``.

Outside anchors (benchmark-only dependencies from ``requirements-bench.txt``, never imported by
cachelib; skipped with a printed note when missing): **DuckDB** (one table, read with ``.df()``
and ``.fetchnumpy()``) and **Parquet** via pyarrow (one file per symbol, read with ``to_pandas``).

Timing: reads are medians (or p50 over random queries) with the contenders taking turns, so load
from other processes falls on all of them alike (the month queries in turns of ten, as a loop
makes them, and again one per turn, each right after another library's read: both are printed;
see :func:`take_turns`); writes are medians of a few rounds. Preparing
frames and rows is never timed. The scale figure runs in a fresh interpreter, so its peak
memory (``VmHWM``, see :func:`_memory_mib`) is its own; its row-table baseline runs after that peak
is taken. ``set_many`` is used where the store has it; without it the table says so and the
figures that need it show ``n/a``.
"""

from __future__ import annotations

import argparse
import calendar
import gc
import json
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cachelib.store import TradingCacheManager

try:  # benchmark-only anchors: `make bench` installs them, cachelib never imports them
    import duckdb
except ImportError:  # pragma: no cover - depends on the environment
    duckdb = None
try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover
    pa = pq = None

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "alpaca"
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "trade_count")

# --- figure names (the smoke test checks that each is printed) ----------------------------------
F_MINUTE_YEAR = "read 1 symbol x 1 year of 1-minute bars into a DataFrame"
F_SESSION = "read one session of 1-minute bars, p50"
F_MINUTE_BYTES = "bytes on disk per 1-minute bar"
F_DAILY_GET = "get() 1 symbol x 1 month of daily bars, p50"
F_DAILY_GET_ONE = "get() 1 symbol x 1 month of daily bars, p50, one query per turn"
#: Queries each contender runs in a row before the next one's turn (see :func:`take_turns`).
GET_BLOCK = 10
F_DAILY_GET_P95 = "get() 1 symbol x 1 month of daily bars, p95"
F_REPLAY = "replay_days from the store (read + flow + archive)"
F_DAILY_WRITE = "bulk write of daily bars, one call per symbol"
F_DAILY_BYTES = "bytes on disk per daily bar"
F_CLEANUP = "cleanup_expired, 10 % of daily bars expired"


def f_upsert(n: int) -> str:
    return f"upsert 1 day x {n} symbols (daily) via set_many"


def f_ingest(n: int) -> str:
    return f"15-minute intraday ingest: 15 new bars x {n} symbols into existing chunks"


def f_scale(n: int, what: str) -> str:
    return f"scale: {n} symbols x 1 year of 1-minute bars: {what}"


# Targets from issue 10 section 4.
TARGET_MINUTE_YEAR_MS = 5.0
TARGET_MINUTE_YEAR_RATIO = 20.0
TARGET_SESSION_MS = 0.3
TARGET_MINUTE_BYTES = 25.0
TARGET_DAILY_GET_MS = 0.1
TARGET_UPSERT_MS = 5.0
TARGET_INGEST_MS = 30.0
TARGET_REPLAY_BARS_PER_S = 250_000

# --- the baselines' schemas ---------------------------------------------------------------------

#: Today's (v3) layout, as in ``git show 1e9ba09:cachelib/store.py``.
ROW_SCHEMA = """
CREATE TABLE series (
    series_id  INTEGER PRIMARY KEY,
    asset_type TEXT NOT NULL,
    symbol     TEXT NOT NULL,
    timeframe  TEXT NOT NULL,
    source     TEXT NOT NULL,
    UNIQUE (asset_type, symbol, timeframe, source)
);
CREATE TABLE bars (
    series_id   INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    open        REAL NOT NULL,
    high        REAL NOT NULL,
    low         REAL NOT NULL,
    close       REAL NOT NULL,
    volume      NUMERIC NOT NULL,
    vwap        REAL,
    trade_count INTEGER,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
"""
_ROW_UPSERT = (
    "INSERT INTO bars (series_id, ts, open, high, low, close, volume, vwap, trade_count, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (series_id, ts) DO UPDATE SET "
    "open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close, "
    "volume = excluded.volume, vwap = excluded.vwap, trade_count = excluded.trade_count, "
    "expires_at = excluded.expires_at"
)
_ROW_SELECT = (
    "SELECT ts, open, high, low, close, volume, vwap, trade_count FROM bars "
    "WHERE series_id = ? AND ts BETWEEN ? AND ? AND expires_at > ?"
)

#: The seed's naive layout (``idx_expiration`` left out, as the baseline of issue 3 did).
SEED_SCHEMA = """
CREATE TABLE market_cache (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_type TEXT NOT NULL,
    symbol TEXT NOT NULL,
    trading_date TEXT NOT NULL,
    source TEXT NOT NULL,
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,
    volume INTEGER NOT NULL,
    vwap REAL,
    transactions INTEGER,
    cached_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    UNIQUE(asset_type, symbol, trading_date, source)
);
CREATE INDEX idx_symbol_date ON market_cache(asset_type, symbol, trading_date);
"""
_SEED_COLUMNS = (
    "asset_type, symbol, trading_date, source, open, high, low, close, volume, vwap, "
    "transactions, cached_at, expires_at"
)
_SEED_SELECT = (
    "SELECT trading_date, open, high, low, close, volume, vwap, transactions FROM market_cache "
    "WHERE asset_type = ? AND symbol = ? AND source = ? AND trading_date >= ? AND trading_date <= ? "
    "AND expires_at > ? ORDER BY trading_date"
)


# --- data ---------------------------------------------------------------------------------------


def daily_sessions(first_year: int, last_year: int) -> list[date]:
    """NYSE sessions from the project calendar."""
    from cachelib.market_hours import sessions_in_range

    return sessions_in_range(date(first_year, 1, 1), date(last_year, 12, 31))


def minute_stamps(year: int, sessions: int | None = None) -> pd.DatetimeIndex:
    """Start instants (UTC) of every regular-session minute of ``year`` (early closes included),
    optionally of its last ``sessions`` sessions only."""
    from cachelib.market_hours import session_bounds, sessions_in_range

    days = sessions_in_range(date(year, 1, 1), date(year, 12, 31))
    if sessions is not None:
        days = days[-sessions:]
    starts = []
    for day in days:
        open_, close = session_bounds(day)
        n = int((close - open_).total_seconds() // 60)
        starts.append(int(open_.timestamp()) + 60 * np.arange(n, dtype=np.int64))
    secs = np.concatenate(starts)
    return pd.DatetimeIndex(pd.to_datetime(secs, unit="s", utc=True), name="timestamp")


#: Drift of the random walk per trading day (about 5 % a year).
DAILY_DRIFT = 0.0002


def synthetic_bars(index: pd.DatetimeIndex, seed: int, start_price: float, vol: float) -> pd.DataFrame:
    """A seeded random walk with consistent OHLC, cent prices and integral volumes.

    The drift is :data:`DAILY_DRIFT` per *trading day*, spread over the bars of a day: an
    earlier version applied it per bar, so a year of minute bars grew a $450 stock to about
    $1e11, and the codec was measured on prices no market has (NOTES, issue 10).
    """
    rng = np.random.default_rng(seed)
    n = len(index)
    step_s = (index[1] - index[0]).total_seconds() if n > 1 else 86_400.0
    bars_per_day = max(1, round(390 * 60 / step_s)) if step_s < 86_400 else 1  # a 390-minute session
    close = start_price * np.exp(np.cumsum(rng.normal(DAILY_DRIFT / bars_per_day, vol, n)))
    open_ = np.empty(n)
    open_[0] = start_price
    open_[1:] = close[:-1] * np.exp(rng.normal(0.0, vol / 4, n - 1))
    open_, close = np.round(open_, 2), np.round(close, 2)
    high = np.maximum(np.round(np.maximum(open_, close) * (1 + np.abs(rng.normal(0, vol / 2, n))), 2),
                      np.maximum(open_, close))
    low = np.minimum(np.round(np.minimum(open_, close) * (1 - np.abs(rng.normal(0, vol / 2, n))), 2),
                     np.minimum(open_, close))
    low = np.maximum(low, 0.01)
    volume = rng.lognormal(13 if vol > 0.005 else 8, 0.5, n).astype(np.int64) + 1
    vwap = np.round(np.clip((high + low + close) / 3, low, high), 4)
    trade_count = (volume // rng.integers(50, 200, n)).astype(np.int64) + 1
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume,
         "vwap": vwap, "trade_count": trade_count},
        index=index,
    )


def epoch_seconds(index: pd.DatetimeIndex) -> np.ndarray:
    """Integer epoch seconds of ``index`` (naive = UTC), whatever its unit."""
    naive = index.tz_convert("UTC").tz_localize(None) if index.tz is not None else index
    return naive.values.astype("datetime64[s]").astype(np.int64)


def file_bytes(path: Path) -> int:
    """Size of a database file plus its WAL, if any."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def bar_count(frame: pd.DataFrame | None) -> int:
    return 0 if frame is None else len(frame)


# --- the row-table baseline (today's layout) ----------------------------------------------------


class RowTable:
    """Today's row layout with plain ``sqlite3``: one tuned ``executemany`` upsert per call."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(ROW_SCHEMA)
        self._ids: dict[tuple[str, str], int] = {}

    def series_id(self, symbol: str, timeframe: str) -> int:
        key = (symbol, timeframe)
        if key not in self._ids:
            self.conn.execute(
                "INSERT OR IGNORE INTO series (asset_type, symbol, timeframe, source) VALUES ('stock', ?, ?, ?)",
                (symbol, timeframe, SOURCE),
            )
            self._ids[key] = self.conn.execute(
                "SELECT series_id FROM series WHERE symbol = ? AND timeframe = ?", key
            ).fetchone()[0]
        return self._ids[key]

    def rows(self, symbol: str, frame: pd.DataFrame, timeframe: str, expires_at: int) -> list[tuple]:
        """The upsert's parameter tuples (prepared outside the timed part)."""
        sid, n = self.series_id(symbol, timeframe), len(frame)
        cols = [frame[c].to_numpy().tolist() for c in BAR_COLUMNS]
        return list(zip([sid] * n, epoch_seconds(frame.index).tolist(), *cols, [expires_at] * n, strict=True))

    def upsert(self, rows: list[tuple]) -> None:
        """One transaction, one ``executemany``."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(_ROW_UPSERT, rows)
        self.conn.execute("COMMIT")

    def read(self, symbol: str, timeframe: str, lo: int, hi: int, now_s: int) -> pd.DataFrame:
        """``fetchall`` into a DataFrame indexed like ``get()`` (date or UTC timestamp)."""
        rows = self.conn.execute(_ROW_SELECT, (self._ids[(symbol, timeframe)], lo, hi, now_s)).fetchall()
        frame = pd.DataFrame(rows, columns=["ts", *BAR_COLUMNS])
        ts = frame.pop("ts")
        if timeframe == "1Day":
            frame.index = pd.DatetimeIndex(pd.to_datetime(ts, unit="s"), name="date")
        else:
            frame.index = pd.DatetimeIndex(pd.to_datetime(ts, unit="s", utc=True), name="timestamp")
        return frame

    def vacuumed_bytes(self, path: Path) -> int:
        """File size after VACUUM; in WAL mode the vacuumed copy sits in the WAL until the
        checkpoint that follows it."""
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return file_bytes(path)

    def close(self) -> None:
        self.conn.close()


# --- the seed's layout --------------------------------------------------------------------------


def seed_frame(bars: pd.DataFrame, symbol: str, dates: list[str], cached_at: str, expires_at: str) -> pd.DataFrame:
    """The seed's row shape for ``bars`` (text dates and expiry)."""
    n = len(bars)
    frame = pd.DataFrame({"asset_type": ["stock"] * n, "symbol": [symbol] * n, "trading_date": dates,
                          "source": [SOURCE] * n})
    for col in ("open", "high", "low", "close", "volume", "vwap"):
        frame[col] = bars[col].to_numpy()
    frame["transactions"] = bars["trade_count"].to_numpy()
    frame["cached_at"], frame["expires_at"] = cached_at, expires_at
    return frame


def seed_connect(path: Path) -> sqlite3.Connection:
    """The seed's plain connection: rollback journal, ``synchronous=FULL``."""
    conn = sqlite3.connect(path)
    conn.executescript(SEED_SCHEMA)
    conn.commit()
    return conn


def seed_read(conn: sqlite3.Connection, symbol: str, start: str, end: str, now_iso: str) -> pd.DataFrame:
    frame = pd.read_sql(_SEED_SELECT, conn, params=("stock", symbol, SOURCE, start, end, now_iso),
                        parse_dates=["trading_date"])
    return frame.set_index("trading_date")


def seed_upsert(conn: sqlite3.Connection, frame: pd.DataFrame) -> None:
    """The seed's ``set``: a uniquely named scratch table, then INSERT OR REPLACE ... SELECT."""
    scratch = f"temp_{uuid.uuid4().hex}"
    frame.to_sql(scratch, conn, if_exists="replace", index=False)
    conn.execute(f"INSERT OR REPLACE INTO market_cache ({_SEED_COLUMNS}) SELECT {_SEED_COLUMNS} FROM {scratch}")
    conn.execute(f"DROP TABLE {scratch}")
    conn.commit()


# --- the outside anchors ------------------------------------------------------------------------


def anchors_note() -> str | None:
    """What is missing of the anchors, or ``None`` when both are installed."""
    missing = [name for name, mod in (("duckdb", duckdb), ("pyarrow", pa)) if mod is None]
    if not missing:
        return None
    return (f"note: {' and '.join(missing)} not installed: those anchors are skipped "
            "(`make bench` installs requirements-bench.txt)")


def duck_table(con: Any, name: str, frames: Mapping[str, pd.DataFrame], time_col: str) -> None:
    """One DuckDB table of every symbol's bars, sorted by (symbol, time) like a clustered key."""
    parts = []
    for symbol, frame in frames.items():
        part = frame.reset_index(names=time_col)
        if isinstance(part[time_col].dtype, pd.DatetimeTZDtype):
            part[time_col] = part[time_col].dt.tz_localize(None)  # naive UTC: no tz conversion on read
        part.insert(0, "symbol", symbol)
        parts.append(part)
    data = pd.concat(parts, ignore_index=True)  # noqa: F841 - read by DuckDB's replacement scan
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM data ORDER BY symbol, {time_col}")
    con.execute("CHECKPOINT")


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One line of the table: cachelib's value with its same-run baselines and anchors."""

    name: str
    unit: str
    cachelib: float | None
    baselines: list[tuple[str, float]] = field(default_factory=list)
    anchors: list[tuple[str, float]] = field(default_factory=list)
    target: str = "-"
    met: bool | None = None
    note: str = ""
    extra: bool = False  # not one of the figures: listed after them

    def as_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "cachelib": self.cachelib, "baselines": dict(self.baselines),
                "anchors": dict(self.anchors), "target": self.target, "met": self.met, "note": self.note}


def take_turns(contenders: Sequence[Callable[[Any], Any]], items: Sequence[Any], block: int = 1
               ) -> list[list[int]]:
    """Nanoseconds per item for each contender, the contenders rotating their order every
    ``block`` items (each runs the block's items in a row), so that load from other processes
    falls on all of them alike.

    ``block=1`` times every call right after another contender's call: a fast call then pays
    for the CPU caches its neighbour filled with its own code and data (a 0.06 ms read costs
    ~0.15 ms after a 1 ms pandas read). A block of a few items times calls as a loop makes
    them, and still rotates every few milliseconds."""
    out: list[list[int]] = [[] for _ in contenders]
    clock = time.perf_counter_ns
    gc.collect()
    k = len(contenders)
    for i, start in enumerate(range(0, len(items), block)):
        chunk = items[start:start + block]
        for j in range(k):
            which = (i + j) % k
            call = contenders[which]
            times = out[which]
            for item in chunk:
                t0 = clock()
                call(item)
                times.append(clock() - t0)
    return out


def pct_ms(ns: list[int], q: float = 50) -> float:
    return float(np.percentile(ns, q)) / 1e6


def median_ms(ns: list[int]) -> float:
    return statistics.median(ns) / 1e6


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("bars/s", "rows/s"):
        return f"{value:,.0f} {unit}"
    if unit == "s" and value < 1:
        return f"{value * 1e3:.1f} ms"
    if unit == "ms" and value < 1:
        return f"{value:.3f} ms"
    if unit in ("ms", "s", "B/bar", "MiB", "MB"):
        return f"{value:.2f} {unit}" if value < 10 else f"{value:,.1f} {unit}"
    return f"{value:g} {unit}"


def print_table(figures: list[Figure]) -> None:
    """The markdown table: figure | cachelib | baseline | anchors | target | met?"""
    print("| figure | cachelib | baseline | anchors | target | met? |")
    print("|---|---|---|---|---|---|")
    for f in figures:
        base = "; ".join(f"{label} {_fmt(v, f.unit)}" for label, v in f.baselines) or "-"
        anch = "; ".join(f"{label} {_fmt(v, f.unit)}" for label, v in f.anchors) or "-"
        met = "-" if f.met is None else ("yes" if f.met else "**NO**")
        cl = _fmt(f.cachelib, f.unit) + (f" ({f.note})" if f.note else "")
        print(f"| {f.name} | {cl} | {base} | {anch} | {f.target} | {met} |")


# --- 1. daily bars ------------------------------------------------------------------------------


def bench_daily(tmp: Path, n_symbols: int, first_year: int, last_year: int, n_queries: int, seed: int,
                rounds: int) -> list[Figure]:
    """Bulk write, get() p50/p95, upsert of one day via set_many, cleanup, bytes per bar."""
    sessions = daily_sessions(first_year, last_year)
    index = pd.DatetimeIndex(pd.to_datetime(sessions), name="date")
    date_text = [d.isoformat() for d in sessions]
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    frames = {s: synthetic_bars(index, seed + i, 20.0 + 5 * i, 0.02) for i, s in enumerate(symbols)}
    now = datetime.now(UTC)
    now_s, far_s = int(now.timestamp()), int((now + timedelta(days=3652)).timestamp())
    now_iso, far_iso = now.isoformat(), (now + timedelta(days=3652)).isoformat()
    seed_frames = {s: seed_frame(f, s, date_text, now_iso, far_iso) for s, f in frames.items()}
    n_rows = len(sessions) * n_symbols
    print(f"daily: {n_symbols} symbols x {len(sessions)} sessions ({first_year}-{last_year}) = {n_rows:,} bars")

    # ---- bulk write, one call per symbol, best of `rounds` rounds into fresh files ----
    best = [float("inf")] * 3
    for r in range(rounds):
        for stale in tmp.glob("daily*"):
            stale.unlink()
        cl_path, row_path, seed_path = tmp / f"daily{r}_cachelib.db", tmp / f"daily{r}_row.db", tmp / f"daily{r}_seed.db"
        cache = TradingCacheManager(cl_path, timeout=30)
        row = RowTable(row_path)
        rows = {s: row.rows(s, frames[s], "1Day", far_s) for s in symbols}
        seed_conn = seed_connect(seed_path)
        times = take_turns(
            [lambda s, c=cache: c.set(s, frames[s], source=SOURCE),
             lambda s, t=row, r=rows: t.upsert(r[s]),
             lambda s, sc=seed_conn: seed_frames[s].to_sql("market_cache", sc, if_exists="append", index=False)],
            symbols,
        )
        best = [min(b, sum(t) / 1e9) for b, t in zip(best, times, strict=True)]
        if r < rounds - 1:
            cache.close()
            row.close()
            seed_conn.close()
    figures = [Figure(F_DAILY_WRITE, "rows/s", n_rows / best[0],
                      [("row table", n_rows / best[1]), ("seed", n_rows / best[2])], extra=True)]

    # ---- get(): 1 symbol x 1 month, the same random queries for everyone ----
    rng = np.random.default_rng(seed)
    months = [(y, m) for y in range(first_year, last_year + 1) for m in range(1, 13)]
    picks = [(symbols[rng.integers(n_symbols)], months[rng.integers(len(months))]) for _ in range(n_queries)]
    queries = [(s, date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1])) for s, (y, m) in picks]

    def key(d: date) -> int:
        return calendar.timegm(d.timetuple())

    def q_cache(q: tuple) -> Any:
        return cache.get(q[0], q[1], q[2], source=SOURCE)

    def q_row(q: tuple) -> Any:
        return row.read(q[0], "1Day", key(q[1]), key(q[2]), now_s)

    def q_seed(q: tuple) -> Any:
        return seed_read(seed_conn, q[0], q[1].isoformat(), q[2].isoformat(), now_iso)

    for q in queries[:20]:  # warm the page caches; check that all agree
        got, ref, old = q_cache(q), q_row(q), q_seed(q)
        assert bar_count(got) == len(ref) == len(old), (q, bar_count(got), len(ref), len(old))
        if len(ref):
            assert np.array_equal(got["close"].to_numpy(), ref["close"].to_numpy())
    # Turns of GET_BLOCK queries: calls timed as a loop over symbols makes them. The same queries
    # one per turn (each right after another library's read) are printed too.
    ns_cache, ns_row, ns_seed = take_turns([q_cache, q_row, q_seed], queries, block=GET_BLOCK)
    anchors50, anchors95 = daily_anchors(tmp, frames, queries[: max(20, n_queries // 5)])
    get50 = Figure(F_DAILY_GET, "ms", pct_ms(ns_cache), [("row table", pct_ms(ns_row)), ("seed", pct_ms(ns_seed))],
                   anchors50, f"<= {TARGET_DAILY_GET_MS:g} ms")
    get50.met = get50.cachelib is not None and get50.cachelib <= TARGET_DAILY_GET_MS
    one_cache, one_row, one_seed = take_turns([q_cache, q_row, q_seed], queries)
    figures += [get50, Figure(F_DAILY_GET_P95, "ms", pct_ms(ns_cache, 95),
                              [("row table", pct_ms(ns_row, 95)), ("seed", pct_ms(ns_seed, 95))], anchors95,
                              extra=True),
                Figure(F_DAILY_GET_ONE, "ms", pct_ms(one_cache),
                       [("row table", pct_ms(one_row)), ("seed", pct_ms(one_seed))], extra=True)]

    # ---- upsert one day x all symbols: set_many vs 100 set calls vs tuned executemany vs seed ----
    # A second cachelib file, identical, takes the 100 set calls (each day can be upserted once
    # per file); median over the last 5 sessions, each with changed prices (each contender in turn first).
    cl2_path = tmp / "daily_cachelib_set.db"
    cache2 = TradingCacheManager(cl2_path, timeout=30)
    for s in symbols:
        cache2.set(s, frames[s], source=SOURCE)
    has_set_many = hasattr(cache, "set_many")
    ups: list[list[float]] = [[], [], [], []]
    for k, day in enumerate(sessions[-5:]):  # the seed's way takes ~0.5 s a day at 100 symbols
        ones = {s: frames[s].loc[[pd.Timestamp(day)]].copy() for s in symbols}
        for f in ones.values():
            f[["open", "high", "low", "close", "vwap"]] += 0.01 * (k + 1)
        one_rows = [r for s in symbols for r in row.rows(s, ones[s], "1Day", far_s)]
        seed_ones = {s: seed_frame(f, s, [day.isoformat()], now_iso, far_iso) for s, f in ones.items()}
        gc.collect()
        contenders = [
            lambda o=ones: cache.set_many(o, SOURCE) if has_set_many else None,
            lambda o=ones: [cache2.set(s, o[s], source=SOURCE) for s in symbols],
            lambda r=one_rows: row.upsert(r),
            lambda so=seed_ones: [seed_upsert(seed_conn, so[s]) for s in symbols],
        ]
        for j in range(len(contenders)):
            which = (k + j) % len(contenders)
            t0 = time.perf_counter()
            contenders[which]()
            ups[which].append(time.perf_counter() - t0)
        want = ones[symbols[-1]]["close"].iloc[0]
        assert cache2.get(symbols[-1], day, day, source=SOURCE)["close"].iloc[0] == want
        if has_set_many:
            assert cache.get(symbols[-1], day, day, source=SOURCE)["close"].iloc[0] == want
        else:  # keep the two files alike
            for s in symbols:
                cache.set(s, ones[s], source=SOURCE)
    med = [statistics.median(u) * 1e3 for u in ups]
    upsert = Figure(f_upsert(n_symbols), "ms", med[0] if has_set_many else None,
                    [(f"{n_symbols} set calls", med[1]), ("tuned executemany", med[2]), ("seed", med[3])],
                    target=f"<= {TARGET_UPSERT_MS:g} ms",
                    note="" if has_set_many else "set_many not in the store yet")
    upsert.met = None if not has_set_many else med[0] <= TARGET_UPSERT_MS
    figures.append(upsert)
    cache2.close()

    # ---- bytes on disk per daily bar (checkpointed and vacuumed) ----
    cache.vacuum()
    seed_conn.execute("VACUUM")
    bytes_fig = Figure(F_DAILY_BYTES, "B/bar", file_bytes(cl_path) / n_rows,
                       [("row table", row.vacuumed_bytes(row_path) / n_rows),
                        ("seed", file_bytes(seed_path) / n_rows)], extra=True)

    # ---- cleanup_expired with 10 % of bars expired (the oldest sessions, rewritten with ttl 0) ----
    n_old = round(len(sessions) * 0.10)
    cut = pd.Timestamp(sessions[n_old])
    for s in symbols:
        cache.set(s, frames[s].loc[frames[s].index < cut], source=SOURCE, ttl_hours=0)
    seed_conn.execute("UPDATE market_cache SET expires_at = ? WHERE trading_date < ?",
                      ((now - timedelta(hours=1)).isoformat(), sessions[n_old].isoformat()))
    seed_conn.commit()
    t0 = time.perf_counter()
    removed = cache.cleanup_expired()
    cl_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    seed_removed = seed_conn.execute("DELETE FROM market_cache WHERE expires_at < ?",
                                     (datetime.now(UTC).isoformat(),)).rowcount
    seed_conn.commit()
    seed_s = time.perf_counter() - t0
    assert removed == seed_removed == n_old * n_symbols, (removed, seed_removed)
    figures += [Figure(F_CLEANUP, "ms", cl_s * 1e3, [("seed", seed_s * 1e3)], extra=True), bytes_fig]
    cache.close()
    row.close()
    seed_conn.close()
    return figures


def daily_anchors(tmp: Path, frames: Mapping[str, pd.DataFrame], queries: list[tuple]
                  ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """p50 and p95 of the month queries against DuckDB and per-symbol Parquet files."""
    p50: list[tuple[str, float]] = []
    p95: list[tuple[str, float]] = []
    if duckdb is not None:
        con = duckdb.connect(str(tmp / "daily.duckdb"))
        duck_table(con, "daily", frames, "date")
        sql = "SELECT * FROM daily WHERE symbol = ? AND date BETWEEN ? AND ? ORDER BY date"
        for q in queries[:10]:
            con.execute(sql, list(q)).df()
        ns = take_turns([lambda q: con.execute(sql, list(q)).df()], queries)[0]
        p50.append(("DuckDB .df()", pct_ms(ns)))
        p95.append(("DuckDB .df()", pct_ms(ns, 95)))
        con.close()
    if pq is not None:
        folder = tmp / "daily_parquet"
        folder.mkdir()
        for s, f in frames.items():
            pq.write_table(pa.Table.from_pandas(f), folder / f"{s}.parquet")

        def read(q: tuple) -> pd.DataFrame:
            return pq.read_table(folder / f"{q[0]}.parquet",
                                 filters=[("date", ">=", pd.Timestamp(q[1])),
                                          ("date", "<=", pd.Timestamp(q[2]))]).to_pandas()

        for q in queries[:10]:
            read(q)
        ns = take_turns([read], queries)[0]
        p50.append(("Parquet/symbol", pct_ms(ns)))
        p95.append(("Parquet/symbol", pct_ms(ns, 95)))
    return p50, p95


# --- 2. one symbol x one year of 1-minute bars --------------------------------------------------


def bench_minutes(tmp: Path, year: int, seed: int, sessions: int | None, repeat: int,
                  n_session_queries: int) -> list[Figure]:
    """The year read, one-session reads and bytes per bar, against the row table and anchors."""
    stamps = minute_stamps(year, sessions)
    minutes = synthetic_bars(stamps, seed + 10_000, 450.0, 0.0008)
    n = len(minutes)
    now_s = int(datetime.now(UTC).timestamp())
    far_s = now_s + 3652 * 86400
    cl_path, row_path = tmp / "minutes_cachelib.db", tmp / "minutes_row.db"
    cache = TradingCacheManager(cl_path, timeout=30)
    row = RowTable(row_path)
    rows = row.rows("SPY", minutes, "1Min", far_s)
    t0 = time.perf_counter()
    cache.set("SPY", minutes, source=SOURCE, timeframe="1Min")
    t_cl = time.perf_counter() - t0
    t0 = time.perf_counter()
    row.upsert(rows)
    t_row = time.perf_counter() - t0
    print(f"minutes: SPY {year}, {n:,} one-minute bars; written in {t_cl * 1e3:.0f} ms (cachelib) "
          f"and {t_row * 1e3:.0f} ms (row table executemany)")
    days = sorted({t.date() for t in stamps.tz_convert("America/New_York")})
    first, last = days[0], days[-1]
    lo, hi = int(epoch_seconds(stamps)[0]), int(epoch_seconds(stamps)[-1])

    # ---- the year into a DataFrame ----
    def y_cache(_: int) -> Any:
        return cache.get("SPY", first, last, source=SOURCE, timeframe="1Min")

    def y_row(_: int) -> Any:
        return row.read("SPY", "1Min", lo, hi, now_s)

    got, ref = y_cache(0), y_row(0)
    assert len(got) == len(ref) == n and (got.index == ref.index).all()
    for col in BAR_COLUMNS:  # bit-identical floats
        assert np.array_equal(got[col].to_numpy(np.float64), minutes[col].to_numpy(np.float64)), col
    ns_cache, ns_row = take_turns([y_cache, y_row], range(repeat))
    year_anchors, session_anchors, bytes_anchors = minute_anchors(tmp, minutes, days, repeat, n_session_queries)
    year_fig = Figure(f"{F_MINUTE_YEAR} ({n:,} bars)", "ms", median_ms(ns_cache),
                      [("row table fetchall", median_ms(ns_row))], year_anchors,
                      f"<= {TARGET_MINUTE_YEAR_MS:g} ms, >= {TARGET_MINUTE_YEAR_RATIO:g}x row table")
    ratio = median_ms(ns_row) / median_ms(ns_cache)
    year_fig.note = f"{ratio:.1f}x row table"
    year_fig.met = median_ms(ns_cache) <= TARGET_MINUTE_YEAR_MS and ratio >= TARGET_MINUTE_YEAR_RATIO

    # ---- one session, random sessions ----
    rng = np.random.default_rng(seed)
    picks = [days[i] for i in rng.integers(len(days), size=n_session_queries)]

    def s_cache(d: date) -> Any:
        return cache.get("SPY", d, d, source=SOURCE, timeframe="1Min")

    def s_row(d: date) -> Any:
        from cachelib.market_hours import session_bounds

        a, b = session_bounds(d)
        return row.read("SPY", "1Min", int(a.timestamp()), int(b.timestamp()) - 1, now_s)

    for d in picks[:10]:
        assert bar_count(s_cache(d)) == len(s_row(d)) > 0
    ns_cache, ns_row = take_turns([s_cache, s_row], picks)
    session_fig = Figure(F_SESSION, "ms", pct_ms(ns_cache), [("row table fetchall", pct_ms(ns_row))],
                         session_anchors, f"<= {TARGET_SESSION_MS:g} ms")
    session_fig.met = pct_ms(ns_cache) <= TARGET_SESSION_MS

    # ---- bytes per bar ----
    cache.vacuum()
    per_bar = file_bytes(cl_path) / n
    bytes_fig = Figure(F_MINUTE_BYTES, "B/bar", per_bar, [("row table", row.vacuumed_bytes(row_path) / n)],
                       bytes_anchors, f"<= {TARGET_MINUTE_BYTES:g}")
    bytes_fig.met = per_bar <= TARGET_MINUTE_BYTES
    cache.close()
    row.close()
    return [year_fig, session_fig, bytes_fig]


def minute_anchors(tmp: Path, minutes: pd.DataFrame, days: list[date], repeat: int, n_queries: int
                   ) -> tuple[list[tuple[str, float]], list[tuple[str, float]], list[tuple[str, float]]]:
    """(year read, session read p50, bytes per bar) for DuckDB and one Parquet file."""
    from cachelib.market_hours import session_bounds

    n = len(minutes)
    year: list[tuple[str, float]] = []
    session: list[tuple[str, float]] = []
    size: list[tuple[str, float]] = []
    rng = np.random.default_rng(1)
    picks = [days[i] for i in rng.integers(len(days), size=max(10, n_queries // 4))]
    # DuckDB holds naive UTC times (see duck_table)
    bounds = [tuple(pd.Timestamp(t).tz_convert("UTC").tz_localize(None) for t in session_bounds(d)) for d in picks]
    if duckdb is not None:
        path = tmp / "minutes.duckdb"
        con = duckdb.connect(str(path))
        duck_table(con, "minutes", {"SPY": minutes}, "timestamp")
        sql = "SELECT * FROM minutes WHERE symbol = 'SPY' ORDER BY timestamp"
        con.execute(sql).df()
        year.append(("DuckDB .df()", median_ms(take_turns([lambda _: con.execute(sql).df()], range(repeat))[0])))
        year.append(("DuckDB .fetchnumpy()",
                     median_ms(take_turns([lambda _: con.execute(sql).fetchnumpy()], range(repeat))[0])))
        one = ("SELECT * FROM minutes WHERE symbol = 'SPY' AND timestamp >= ? AND timestamp < ? "
               "ORDER BY timestamp")
        session.append(("DuckDB .df()", pct_ms(take_turns([lambda b: con.execute(one, list(b)).df()], bounds)[0])))
        con.close()
        size.append(("DuckDB", path.stat().st_size / n))
    if pq is not None:
        path = tmp / "minutes.parquet"
        pq.write_table(pa.Table.from_pandas(minutes), path)
        pq.read_table(path).to_pandas()
        year.append(("Parquet/symbol-year",
                     median_ms(take_turns([lambda _: pq.read_table(path).to_pandas()], range(repeat))[0])))
        utc = [(pd.Timestamp(a, tz="UTC"), pd.Timestamp(b, tz="UTC")) for a, b in bounds]

        def read(b: tuple) -> pd.DataFrame:
            return pq.read_table(path, filters=[("timestamp", ">=", b[0]), ("timestamp", "<", b[1])]).to_pandas()

        session.append(("Parquet/symbol-year", pct_ms(take_turns([read], utc)[0])))
        size.append(("Parquet (snappy)", path.stat().st_size / n))
    return year, session, size


# --- 3. the 15-minute intraday ingest -----------------------------------------------------------


def bench_ingest(tmp: Path, n_symbols: int, year: int, seed: int, blocks: int = 5) -> list[Figure]:
    """15 new bars x N symbols appended to sessions that already hold 300 bars each."""
    day, stamps = [(d, g) for d, g in _by_session(minute_stamps(year, 5)) if len(g) == 390][-1]
    symbols = [f"M{i:03d}" for i in range(n_symbols)]
    frames = {s: synthetic_bars(stamps, seed + 20_000 + i, 30.0 + i, 0.0008) for i, s in enumerate(symbols)}
    far_s = int(datetime.now(UTC).timestamp()) + 3652 * 86400
    head = 300
    cache = TradingCacheManager(tmp / "ingest_cachelib.db", timeout=30)
    cache2 = TradingCacheManager(tmp / "ingest_cachelib_set.db", timeout=30)
    row = RowTable(tmp / "ingest_row.db")
    for s in symbols:
        cache.set(s, frames[s].iloc[:head], source=SOURCE, timeframe="1Min")
        cache2.set(s, frames[s].iloc[:head], source=SOURCE, timeframe="1Min")
    row.upsert([r for s in symbols for r in row.rows(s, frames[s].iloc[:head], "1Min", far_s)])
    has_set_many = hasattr(cache, "set_many")
    times: list[list[float]] = [[], [], []]
    for k in range(blocks):
        a, b = head + 15 * k, head + 15 * (k + 1)
        block = {s: frames[s].iloc[a:b] for s in symbols}
        block_rows = [r for s in symbols for r in row.rows(s, block[s], "1Min", far_s)]
        gc.collect()
        contenders = [
            lambda bl=block: cache.set_many(bl, SOURCE, timeframe="1Min") if has_set_many
            else [cache.set(s, bl[s], source=SOURCE, timeframe="1Min") for s in symbols],
            lambda bl=block: [cache2.set(s, bl[s], source=SOURCE, timeframe="1Min") for s in symbols],
            lambda r=block_rows: row.upsert(r),
        ]
        for j in range(3):
            which = (k + j) % 3
            t0 = time.perf_counter()
            contenders[which]()
            times[which].append(time.perf_counter() - t0)
    want = head + 15 * blocks
    assert bar_count(cache.get(symbols[-1], day, day, source=SOURCE, timeframe="1Min")) == want
    assert bar_count(cache2.get(symbols[0], day, day, source=SOURCE, timeframe="1Min")) == want
    med = [statistics.median(t) * 1e3 for t in times]
    fig = Figure(f_ingest(n_symbols), "ms", med[0] if has_set_many else None,
                 [(f"{n_symbols} set calls", med[1]), ("row table executemany", med[2])],
                 target=f"<= {TARGET_INGEST_MS:g} ms", note="" if has_set_many else "set_many not in the store yet")
    fig.met = med[0] <= TARGET_INGEST_MS if has_set_many else None
    for c in (cache, cache2, row):
        c.close()
    return [fig]


def _by_session(stamps: pd.DatetimeIndex) -> list[tuple[date, pd.DatetimeIndex]]:
    ny = stamps.tz_convert("America/New_York").date
    return [(d, stamps[ny == d]) for d in sorted(set(ny))]


# --- 4. replay from the store -------------------------------------------------------------------


def bench_replay_store(year: int, seed: int, sessions: int | None) -> list[Figure]:
    """replay_days end to end from a store, against the in-memory tick flow on the same bars."""
    from bench.bench_replay import best_of, engine_year, load_year, store_replay

    days, origin = load_year("AAPL", year, seed, sessions)
    n = sum(map(len, days))
    flow_cpu, _, _ = best_of(2, lambda: engine_year(days, "AAPL", validate=False))
    got = store_replay(days, "AAPL", workers=1)
    assert got is not None and got[2] == n, (got, n)
    cpu_s, wall_s, _, trades = got
    print(f"replay: AAPL {year}, {len(days)} sessions, {n:,} bars from {origin}, {trades:,} trades; "
          f"rates from process CPU time (wall {wall_s:.2f} s)")
    fig = Figure(F_REPLAY, "bars/s", n / cpu_s, [("in-memory tick flow, no store", n / flow_cpu)],
                 target=f">= {TARGET_REPLAY_BARS_PER_S:,} bars/s")
    fig.met = n / cpu_s >= TARGET_REPLAY_BARS_PER_S
    return [fig]


# --- 5. scale -----------------------------------------------------------------------------------


def _memory_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB.

    Linux: ``VmRSS``/``VmHWM`` of ``/proc/self/status``; the peak belongs to this process's own
    memory map (``ru_maxrss`` would carry the parent's peak across fork and exec). Elsewhere:
    ``ru_maxrss`` for both (KiB on Linux, bytes on macOS).
    """
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
                      if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mib = peak / 2**20 if sys.platform == "darwin" else peak / 1024
        return peak_mib, peak_mib


def scale_run(n_symbols: int, year: int, seed: int, sessions: int | None, workdir: str, batch: int = 10
              ) -> dict[str, float]:
    """N symbols x 1 year of 1-minute bars written and read back; run in a child process so
    that ``ru_maxrss`` is this figure's own peak. Frame generation is not timed."""
    stamps = minute_stamps(year, sessions)
    symbols = [f"X{i:03d}" for i in range(n_symbols)]
    path = Path(workdir) / "scale_cachelib.db"
    cache = TradingCacheManager(path, timeout=60)
    rss_start, _ = _memory_mib()
    write_s = 0.0
    for i in range(0, n_symbols, batch):
        frames = {s: synthetic_bars(stamps, seed + 30_000 + i + j, 20.0 + i + j, 0.0008)
                  for j, s in enumerate(symbols[i:i + batch])}
        t0 = time.perf_counter()
        if hasattr(cache, "set_many"):
            cache.set_many(frames, SOURCE, timeframe="1Min")
        else:
            for s, f in frames.items():
                cache.set(s, f, source=SOURCE, timeframe="1Min")
        write_s += time.perf_counter() - t0
        del frames
    size = file_bytes(path)
    ny = stamps.tz_convert("America/New_York")
    first, last = ny[0].date(), ny[-1].date()
    gc.collect()
    t0 = time.perf_counter()
    bars = sum(bar_count(cache.get(s, first, last, source=SOURCE, timeframe="1Min")) for s in symbols)
    read_s = time.perf_counter() - t0
    cache.close()
    _, peak = _memory_mib()
    assert bars == n_symbols * len(stamps), (bars, n_symbols * len(stamps))

    # The row-table baseline on the same bars, after cachelib's peak was taken.
    row_path = Path(workdir) / "scale_row.db"
    row = RowTable(row_path)
    far_s = int(datetime.now(UTC).timestamp()) + 3652 * 86400
    row_write_s = 0.0
    for i, s in enumerate(symbols):
        rows = row.rows(s, synthetic_bars(stamps, seed + 30_000 + i, 20.0 + i, 0.0008), "1Min", far_s)
        t0 = time.perf_counter()
        row.upsert(rows)
        row_write_s += time.perf_counter() - t0
        del rows
    row_bytes = file_bytes(row_path)
    lo, hi = int(epoch_seconds(stamps)[0]), int(epoch_seconds(stamps)[-1])
    now_s = int(datetime.now(UTC).timestamp())
    gc.collect()
    t0 = time.perf_counter()
    row_bars = sum(len(row.read(s, "1Min", lo, hi, now_s)) for s in symbols)
    row_read_s = time.perf_counter() - t0
    row.close()
    assert row_bars == bars, (row_bars, bars)
    return {"bars": bars, "write_s": write_s, "bytes": size, "read_s": read_s,
            "peak_mib": peak, "start_mib": rss_start,
            "row_write_s": row_write_s, "row_bytes": row_bytes, "row_read_s": row_read_s}


def bench_scale(tmp: Path, n_symbols: int, year: int, seed: int, sessions: int | None) -> list[Figure]:
    # A fresh interpreter (not multiprocessing, which re-imports the caller's __main__).
    code = ("import json, sys; from bench.bench_store import scale_run; "
            "print(json.dumps(scale_run(*json.loads(sys.argv[1]))))")
    args = json.dumps([n_symbols, year, seed, sessions, str(tmp)])
    proc = subprocess.run([sys.executable, "-c", code, args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the scale run failed:\n{proc.stderr}")
    r = json.loads(proc.stdout.splitlines()[-1])
    print(f"scale: {n_symbols} symbols, {int(r['bars']):,} one-minute bars: write {r['write_s']:.1f} s, "
          f"file {r['bytes'] / 1e6:,.1f} MB, full read {r['read_s']:.2f} s, peak RSS {r['peak_mib']:,.0f} MiB "
          f"({r['start_mib']:,.0f} MiB before the first write)")
    bars = r["bars"]
    return [
        Figure(f_scale(n_symbols, "write"), "s", r["write_s"], [("row table executemany", r["row_write_s"])],
               note=f"{bars / r['write_s']:,.0f} bars/s"),
        Figure(f_scale(n_symbols, "file size"), "MB", r["bytes"] / 1e6, [("row table", r["row_bytes"] / 1e6)],
               note=f"{r['bytes'] / bars:.1f} B/bar"),
        Figure(f_scale(n_symbols, "full read"), "s", r["read_s"], [("row table fetchall", r["row_read_s"])],
               note=f"{bars / r['read_s']:,.0f} bars/s"),
        Figure(f_scale(n_symbols, "peak memory (RSS)"), "MiB", r["peak_mib"],
               note=f"{r['start_mib']:,.0f} MiB before the first write"),
    ]


# --- run ----------------------------------------------------------------------------------------


def run(symbols: int = 100, first_year: int = 2015, last_year: int = 2024, queries: int = 1000,
        seed: int = 42, workdir: Path | None = None, write_rounds: int = 2, scale_symbols: int = 100,
        minute_sessions: int | None = None, replay_sessions: int | None = None, repeat: int = 7
        ) -> dict[str, Any]:
    """Measure every figure and print the table; returns ``{"figures": {name: ...}, ...}``."""
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=workdir))
    note = anchors_note()
    if note:
        print(note)
    try:
        figures = bench_minutes(tmp, last_year, seed, minute_sessions, repeat, max(20, queries // 2))
        figures += bench_daily(tmp, symbols, first_year, last_year, queries, seed, write_rounds)
        figures += bench_ingest(tmp, symbols, last_year, seed)
        figures += bench_replay_store(last_year, seed, replay_sessions)
        figures += bench_scale(tmp, scale_symbols, last_year, seed, minute_sessions)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    figures.sort(key=lambda f: f.extra)  # the figures first, in its order
    print()
    print_table(figures)
    print(f"\nTotal {elapsed:.1f} s.")
    return {
        "figures": {f.name: f.as_dict() for f in figures},
        "all_targets_met": all(f.met for f in figures if f.met is not None),
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes for a smoke run (< 60 s); explicit options still win")
    parser.add_argument("--symbols", type=int, default=None, help="daily symbols and ingest symbols (100)")
    parser.add_argument("--first-year", type=int, default=None, help="first year of daily bars (2015)")
    parser.add_argument("--last-year", type=int, default=2024)
    parser.add_argument("--queries", type=int, default=None, help="random get() queries (1000)")
    parser.add_argument("--scale-symbols", type=int, default=None, help="symbols in the scale figure (100)")
    parser.add_argument("--minute-sessions", type=int, default=None,
                        help="limit the minute-bar year to its last N sessions (all)")
    parser.add_argument("--replay-sessions", type=int, default=None, help="limit the replay to N sessions (all)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--write-rounds", type=int, default=None, help="bulk write: best of N rounds (2)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent folder of the temporary files")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    return run(
        symbols=pick(args.symbols, 100, 100),
        first_year=pick(args.first_year, 2015, args.last_year - 1),
        last_year=args.last_year,
        queries=pick(args.queries, 1000, 200),
        seed=args.seed,
        workdir=args.workdir,
        write_rounds=max(1, pick(args.write_rounds, 2, 1)),
        scale_symbols=pick(args.scale_symbols, 100, 5),
        minute_sessions=args.minute_sessions,
        replay_sessions=pick(args.replay_sessions, None, 63),
        repeat=5 if quick else 7,
    )


if __name__ == "__main__":
    main()
