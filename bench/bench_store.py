"""Store throughput: ``TradingCacheManager`` against the seed's naive SQLite layout, in one run.

Run with ``python -m bench.bench_store`` (``--help`` for options); ``main()`` returns the figures.

The baseline is the seed's design, rebuilt here and measured in the same process on the same
synthetic bars (see :data:`BASELINE_SCHEMA`):

* table ``market_cache``: ``id INTEGER PRIMARY KEY AUTOINCREMENT``, text ``trading_date``
  (``YYYY-MM-DD`` for daily bars, ISO timestamps ``2024-01-02T14:30:00+00:00`` for minute bars,
  whose timeframe is folded into ``source`` as ``alpaca_1Min`` like the seed did), text
  ``cached_at``/``expires_at``, ``UNIQUE(asset_type, symbol, trading_date, source)`` and
  ``idx_symbol_date(asset_type, symbol, trading_date)``. The seed also had
  ``idx_expiration(expires_at)``; it is left out, as the issue's description of the baseline
  does (it would make the baseline's writes slower and its cleanup faster);
* a plain ``sqlite3.connect(path)``: default rollback journal and ``synchronous=FULL``;
* bulk write: ``DataFrame.to_sql(if_exists="append")``, one call per symbol;
* reads: ``pd.read_sql`` with ``parse_dates`` then ``set_index`` (minute bars: ``read_sql`` then
  ``pd.to_datetime(utc=True, format="ISO8601")``), filtered on unexpired rows like ``get()``;
* upsert (the seed's way): per symbol, ``to_sql`` of the one-row frame into a uniquely named
  scratch table, ``INSERT OR REPLACE INTO market_cache ... SELECT`` from it, ``DROP TABLE``;
* cleanup: ``DELETE FROM market_cache WHERE expires_at < ?`` on ISO text (a full scan);
* bytes: file size after ``VACUUM``.

Figures: bulk write (best of 2 rounds into fresh files) and full read (best of 2 passes), in
rows/s; ``get()`` of 1 symbol x 1 month (p50/p95 over the same 1000 random queries); upsert of
one day x 100 symbols (median of 3 days); ``cleanup_expired`` with 10 % of rows expired (the
oldest year of every symbol, rewritten with ``ttl_hours=0``; the baseline's rows get a past
``expires_at`` by ``UPDATE``); bytes per bar; a 1 symbol x 1 year read of 1-minute bars (median
of 5). Writes, reads and queries run item by item with the two stores taking turns, so load from
other processes falls on both alike; the ratios are the figures to trust on a busy machine.
Frame preparation is never timed.
"""

from __future__ import annotations

import argparse
import calendar
import gc
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cachelib.store import TradingCacheManager

BASELINE_SCHEMA = """
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
_BASELINE_COLUMNS = (
    "asset_type, symbol, trading_date, source, open, high, low, close, volume, vwap, "
    "transactions, cached_at, expires_at"
)
_BASELINE_SELECT = (
    "SELECT trading_date, open, high, low, close, volume, vwap, transactions FROM market_cache "
    "WHERE asset_type = ? AND symbol = ? AND source = ? AND trading_date >= ? AND trading_date <= ? "
    "AND expires_at > ? ORDER BY trading_date"
)
_BASELINE_SELECT_HALF_OPEN = _BASELINE_SELECT.replace("trading_date <= ?", "trading_date < ?")

# Targets from the issue.
TARGET_GET_P50_MS = 0.3
TARGET_GET_RATIO = 2.5
TARGET_WRITE_RATIO = 2.0
TARGET_MINUTE_MS = 60.0
TARGET_MINUTE_RATIO = 2.5
TARGET_BYTES_PER_BAR = 100.0

SOURCE = "alpaca"


# --- data ---------------------------------------------------------------------------------------


def daily_sessions(first_year: int, last_year: int) -> list[date]:
    """NYSE sessions from the project calendar; business days if it is unavailable."""
    try:
        from cachelib.market_hours import sessions_in_range

        return sessions_in_range(date(first_year, 1, 1), date(last_year, 12, 31))
    except ImportError:  # pragma: no cover - the calendar module is part of cachelib today
        return [d.date() for d in pd.bdate_range(f"{first_year}-01-01", f"{last_year}-12-31")]


def minute_stamps(year: int) -> pd.DatetimeIndex:
    """Start instants (UTC) of every regular-session minute of ``year`` (early closes included)."""
    try:
        from cachelib.market_hours import session_bounds, sessions_in_range

        days = sessions_in_range(date(year, 1, 1), date(year, 12, 31))
        starts = []
        for day in days:
            open_, close = session_bounds(day)
            n = int((close - open_).total_seconds() // 60)
            starts.append(int(open_.timestamp()) + 60 * np.arange(n, dtype=np.int64))
        secs = np.concatenate(starts)
    except ImportError:  # pragma: no cover
        days = pd.bdate_range(f"{year}-01-01", f"{year}-12-31")
        secs = np.concatenate([d.value // 10**9 + 14 * 3600 + 1800 + 60 * np.arange(390) for d in days])
    return pd.DatetimeIndex(pd.to_datetime(secs, unit="s", utc=True), name="timestamp")


def synthetic_bars(index: pd.DatetimeIndex, seed: int, start_price: float, vol: float) -> pd.DataFrame:
    """A seeded random walk with consistent OHLC, cent prices and integral volumes."""
    rng = np.random.default_rng(seed)
    n = len(index)
    close = start_price * np.exp(np.cumsum(rng.normal(0.0002, vol, n)))
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


def baseline_frame(bars: pd.DataFrame, symbol: str, dates: list[str], source: str,
                   cached_at: str, expires_at: str) -> pd.DataFrame:
    """The seed's row shape for ``bars`` (text dates and expiry)."""
    n = len(bars)
    return pd.DataFrame(
        {
            "asset_type": ["stock"] * n,
            "symbol": [symbol] * n,
            "trading_date": dates,
            "source": [source] * n,
            "open": bars["open"].to_numpy(),
            "high": bars["high"].to_numpy(),
            "low": bars["low"].to_numpy(),
            "close": bars["close"].to_numpy(),
            "volume": bars["volume"].to_numpy(),
            "vwap": bars["vwap"].to_numpy(),
            "transactions": bars["trade_count"].to_numpy(),
            "cached_at": [cached_at] * n,
            "expires_at": [expires_at] * n,
        }
    )


# --- the baseline -------------------------------------------------------------------------------


def baseline_connect(path: Path, create: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    if create:
        conn.executescript(BASELINE_SCHEMA)
        conn.commit()
    return conn


def baseline_read(conn: sqlite3.Connection, symbol: str, start: str, end: str, now_iso: str,
                  source: str = SOURCE) -> pd.DataFrame:
    frame = pd.read_sql(_BASELINE_SELECT, conn, params=("stock", symbol, source, start, end, now_iso),
                        parse_dates=["trading_date"])
    return frame.set_index("trading_date")


def baseline_read_minutes(conn: sqlite3.Connection, symbol: str, start: str, end_excl: str,
                          now_iso: str) -> pd.DataFrame:
    frame = pd.read_sql(_BASELINE_SELECT_HALF_OPEN, conn,
                        params=("stock", symbol, f"{SOURCE}_1Min", start, end_excl, now_iso))
    frame["trading_date"] = pd.to_datetime(frame["trading_date"], utc=True, format="ISO8601")
    return frame.set_index("trading_date")


def baseline_upsert(conn: sqlite3.Connection, frame: pd.DataFrame) -> None:
    """The seed's ``set``: a uniquely named scratch table, then INSERT OR REPLACE ... SELECT."""
    scratch = f"temp_{uuid.uuid4().hex}"
    frame.to_sql(scratch, conn, if_exists="replace", index=False)
    conn.execute(
        f"INSERT OR REPLACE INTO market_cache ({_BASELINE_COLUMNS}) SELECT {_BASELINE_COLUMNS} FROM {scratch}"
    )
    conn.execute(f"DROP TABLE {scratch}")
    conn.commit()


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    unit: str
    cachelib: float
    baseline: float
    higher_is_better: bool
    target: str = "-"
    met: bool | None = None

    @property
    def ratio(self) -> float:
        """How many times better cachelib is (>1 = better)."""
        if self.higher_is_better:
            return self.cachelib / self.baseline
        return self.baseline / self.cachelib


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(pairs: list[tuple[Callable[[], Any], Callable[[], Any]]]) -> tuple[float, float]:
    """Total seconds of the first and of the second callables, run pair by pair in alternating
    order, so that load from other processes on the machine falls on both alike."""
    totals = [0.0, 0.0]
    clock = time.perf_counter
    gc.collect()
    for i, pair in enumerate(pairs):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0 = clock()
            pair[which]()
            totals[which] += clock() - t0
    return totals[0], totals[1]


def bulk_write_round(cl_path: Path, bl_path: Path, frames: dict[str, pd.DataFrame],
                     base_frames: dict[str, pd.DataFrame]
                     ) -> tuple[TradingCacheManager, sqlite3.Connection, tuple[float, float]]:
    """Write every symbol into fresh files, one ``set`` / one ``to_sql`` per symbol, taking turns."""
    cache = TradingCacheManager(cl_path, timeout=30)
    base = baseline_connect(bl_path, create=True)
    times = interleaved(
        [(lambda s=s: cache.set(s, frames[s], source=SOURCE),
          lambda s=s: base_frames[s].to_sql("market_cache", base, if_exists="append", index=False))
         for s in frames]
    )
    return cache, base, times


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _fmt(value: float, unit: str) -> str:
    if unit == "rows/s":
        return f"{value:,.0f}"
    if unit in ("ms", "B/bar"):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return f"{value:g}"


def print_table(figures: list[Figure]) -> None:
    header = ("figure", "cachelib", "baseline", "ratio", "target", "met?")
    rows = [
        (f"{f.name} [{f.unit}]", _fmt(f.cachelib, f.unit), _fmt(f.baseline, f.unit), f"{f.ratio:.2f}x",
         f.target, "-" if f.met is None else ("yes" if f.met else "NO"))
        for f in figures
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def run(symbols: int = 100, first_year: int = 2015, last_year: int = 2024, queries: int = 1000,
        seed: int = 42, workdir: Path | None = None, write_rounds: int = 2) -> dict[str, Any]:
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=workdir))
    try:
        return _run(tmp, symbols, first_year, last_year, queries, seed, write_rounds, t_start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path, n_symbols: int, first_year: int, last_year: int, n_queries: int, seed: int,
         write_rounds: int, t_start: float) -> dict[str, Any]:
    # ---- data (not timed) ----
    sessions = daily_sessions(first_year, last_year)
    index = pd.DatetimeIndex(pd.to_datetime(sessions), name="date")
    date_text = [d.isoformat() for d in sessions]
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    frames = {s: synthetic_bars(index, seed + i, 20.0 + 5 * i, 0.02) for i, s in enumerate(symbols)}
    now = datetime.now(UTC)
    now_iso, far_iso = now.isoformat(), (now + timedelta(days=3652)).isoformat()
    base_frames = {s: baseline_frame(f, s, date_text, SOURCE, now_iso, far_iso) for s, f in frames.items()}
    n_rows = len(sessions) * n_symbols
    print(f"data: {n_symbols} symbols x {len(sessions)} sessions ({first_year}-{last_year}) = {n_rows:,} "
          f"daily bars; files in {tmp}")

    figures: list[Figure] = []

    # ---- 1. bulk write, symbol by symbol, the two stores taking turns; best of `write_rounds`
    # rounds into fresh files (the baseline's fsync per commit makes it sensitive to disk load) ----
    cl_path, bl_path = tmp / "cachelib0.db", tmp / "baseline0.db"
    cache, base, times = bulk_write_round(cl_path, bl_path, frames, base_frames)
    write_times = [times]
    for r in range(1, write_rounds):  # keep only the newest pair of files
        cache.close()
        base.close()
        for stale in tmp.glob("*.db*"):
            stale.unlink()
        cl_path, bl_path = tmp / f"cachelib{r}.db", tmp / f"baseline{r}.db"
        cache, base, times = bulk_write_round(cl_path, bl_path, frames, base_frames)
        write_times.append(times)
    assert cache.conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0] == n_rows
    assert base.execute("SELECT COUNT(*) FROM market_cache").fetchone()[0] == n_rows
    cl_s, bl_s = min(t[0] for t in write_times), min(t[1] for t in write_times)
    write = Figure("bulk write", "rows/s", n_rows / cl_s, n_rows / bl_s, True, f">= {TARGET_WRITE_RATIO:g}x")
    write.met = write.ratio >= TARGET_WRITE_RATIO
    figures.append(write)

    # ---- 2. full read, symbol by symbol, taking turns (best of 2 passes) ----
    first, last = date_text[0], date_text[-1]
    got_rows = [0, 0]

    def read_cl(s: str) -> None:
        got_rows[0] += len(cache.get(s, first, last, source=SOURCE))

    def read_bl(s: str) -> None:
        got_rows[1] += len(baseline_read(base, s, first, last, now_iso))

    passes = [interleaved([(lambda s=s: read_cl(s), lambda s=s: read_bl(s)) for s in symbols]) for _ in range(2)]
    assert got_rows == [2 * n_rows, 2 * n_rows], got_rows
    figures.append(Figure("full read", "rows/s", n_rows / min(p[0] for p in passes),
                          n_rows / min(p[1] for p in passes), True))

    # ---- 3. get(): 1 symbol x 1 month, same random queries, interleaved ----
    rng = np.random.default_rng(seed)
    months = [(y, m) for y in range(first_year, last_year + 1) for m in range(1, 13)]
    picks = [(symbols[rng.integers(n_symbols)], months[rng.integers(len(months))]) for _ in range(n_queries)]
    queries = [(s, f"{y}-{m:02d}-01", f"{y}-{m:02d}-{calendar.monthrange(y, m)[1]:02d}") for s, (y, m) in picks]
    for s, a, b in queries[:50]:  # warm both page caches and code paths
        cache.get(s, a, b, source=SOURCE)
        baseline_read(base, s, a, b, now_iso)
    cl_ns, bl_ns = [], []
    gc.collect()
    clock = time.perf_counter_ns
    for i, (s, a, b) in enumerate(queries):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0 = clock()
            if which == 0:
                got = cache.get(s, a, b, source=SOURCE)
                cl_ns.append(clock() - t0)
            else:
                ref = baseline_read(base, s, a, b, now_iso)
                bl_ns.append(clock() - t0)
        if i < 20:
            assert got is not None and len(got) == len(ref) and np.allclose(got["close"], ref["close"])
    def ms(xs: list[int], q: float) -> float:
        return float(np.percentile(xs, q)) / 1e6

    get50 = Figure("get() 1 sym x 1 month p50", "ms", ms(cl_ns, 50), ms(bl_ns, 50), False,
                   f"<= {TARGET_GET_P50_MS:g} ms, >= {TARGET_GET_RATIO:g}x")
    get50.met = get50.cachelib <= TARGET_GET_P50_MS and get50.ratio >= TARGET_GET_RATIO
    figures += [get50, Figure("get() 1 sym x 1 month p95", "ms", ms(cl_ns, 95), ms(bl_ns, 95), False)]

    # ---- 4. upsert one day x all symbols (median of 3 days) ----
    cl_up, bl_up = [], []
    for k, day in enumerate(sessions[-3:]):
        ones = {s: frames[s].loc[[pd.Timestamp(day)]].copy() for s in symbols}
        for f in ones.values():
            f[["open", "high", "low", "close", "vwap"]] += 0.01 * (k + 1)
        base_ones = {s: baseline_frame(f, s, [day.isoformat()], SOURCE, now_iso, far_iso) for s, f in ones.items()}
        cl_up.append(timed(lambda ones=ones: [cache.set(s, ones[s], source=SOURCE) for s in symbols])[0])
        bl_up.append(timed(lambda bo=base_ones: [baseline_upsert(base, bo[s]) for s in symbols])[0])
        s0 = symbols[0]
        want = ones[s0]["close"].iloc[0]
        assert cache.get(s0, day, day, source=SOURCE)["close"].iloc[0] == want
        assert baseline_read(base, s0, day.isoformat(), day.isoformat(), now_iso)["close"].iloc[0] == want
    assert base.execute("SELECT COUNT(*) FROM market_cache").fetchone()[0] == n_rows
    figures.append(Figure(f"upsert 1 day x {n_symbols} symbols", "ms", statistics.median(cl_up) * 1e3,
                          statistics.median(bl_up) * 1e3, False))

    # ---- 6. bytes on disk per bar (WAL checkpointed, both files vacuumed) ----
    cache.vacuum()
    base.execute("VACUUM")
    bpb = Figure("bytes on disk per bar", "B/bar", file_bytes(cl_path) / n_rows, file_bytes(bl_path) / n_rows,
                 False, f"<= {TARGET_BYTES_PER_BAR:g}")
    bpb.met = bpb.cachelib <= TARGET_BYTES_PER_BAR

    # ---- 5. cleanup_expired with 10 % of rows expired ----
    n_old = round(len(sessions) * 0.10)
    cut = pd.Timestamp(sessions[n_old])
    for s in symbols:  # rewrite the oldest 10 % of every symbol with ttl_hours=0 (not timed)
        cache.set(s, frames[s].loc[frames[s].index < cut], source=SOURCE, ttl_hours=0)
    past_iso = (now - timedelta(hours=1)).isoformat()
    base.execute("UPDATE market_cache SET expires_at = ? WHERE trading_date < ?", (past_iso, sessions[n_old].isoformat()))
    base.commit()
    cl_s, cl_removed = timed(cache.cleanup_expired)

    def baseline_cleanup() -> int:
        removed = base.execute("DELETE FROM market_cache WHERE expires_at < ?",
                               (datetime.now(UTC).isoformat(),)).rowcount
        base.commit()
        return removed

    bl_s, bl_removed = timed(baseline_cleanup)
    assert cl_removed == bl_removed == n_old * n_symbols, (cl_removed, bl_removed)
    figures.append(Figure(f"cleanup_expired ({cl_removed:,} of {n_rows:,} rows)", "ms", cl_s * 1e3,
                          bl_s * 1e3, False))
    figures.append(bpb)
    cache.close()
    base.close()

    # ---- 7. 1 symbol x 1 year of 1-minute bars into a DataFrame (median of 5, interleaved) ----
    stamps = minute_stamps(last_year)
    minutes = synthetic_bars(stamps, seed + 10_000, 450.0, 0.0008)
    base_minutes = baseline_frame(minutes, "SPY", [t.isoformat() for t in stamps.to_pydatetime()],
                                  f"{SOURCE}_1Min", now_iso, far_iso)
    mcache = TradingCacheManager(tmp / "minutes_cachelib.db", timeout=30)
    mbase = baseline_connect(tmp / "minutes_baseline.db", create=True)
    mcache.set("SPY", minutes, source=SOURCE, timeframe="1Min")
    base_minutes.to_sql("market_cache", mbase, if_exists="append", index=False)
    year_a, year_b, year_next = f"{last_year}-01-01", f"{last_year}-12-31", f"{last_year + 1}-01-01"
    cl_m, bl_m = [], []
    for i in range(6):  # the first round warms up and is dropped
        t_cl, got = timed(lambda: mcache.get("SPY", year_a, year_b, source=SOURCE, timeframe="1Min"))
        t_bl, ref = timed(lambda: baseline_read_minutes(mbase, "SPY", year_a, year_next, now_iso))
        assert len(got) == len(ref) == len(minutes) and (got.index == ref.index).all()
        if i:
            cl_m.append(t_cl)
            bl_m.append(t_bl)
    minute = Figure(f"read 1 sym x 1 yr 1Min ({len(minutes):,} bars)", "ms", statistics.median(cl_m) * 1e3,
                    statistics.median(bl_m) * 1e3, False,
                    f"<= {TARGET_MINUTE_MS:g} ms, >= {TARGET_MINUTE_RATIO:g}x")
    minute.met = minute.cachelib <= TARGET_MINUTE_MS and minute.ratio >= TARGET_MINUTE_RATIO
    figures.append(minute)
    mcache.close()
    mbase.close()

    print()
    print_table(figures)
    elapsed = time.perf_counter() - t_start
    print(f"\nratio = times better than the baseline (rates: cachelib/baseline; times and bytes: "
          f"baseline/cachelib). Total {elapsed:.1f} s.")
    return {
        "figures": {f.name: {"unit": f.unit, "cachelib": f.cachelib, "baseline": f.baseline,
                             "ratio": f.ratio, "target": f.target, "met": f.met} for f in figures},
        "rows": n_rows,
        "minute_bars": len(minutes),
        "all_targets_met": all(f.met for f in figures if f.met is not None),
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--first-year", type=int, default=2015)
    parser.add_argument("--last-year", type=int, default=2024)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--write-rounds", type=int, default=2, help="bulk write: best of N rounds")
    parser.add_argument("--workdir", type=Path, default=None, help="parent folder of the temporary files")
    args = parser.parse_args(argv)
    return run(args.symbols, args.first_year, args.last_year, args.queries, args.seed, args.workdir,
               max(1, args.write_rounds))


if __name__ == "__main__":
    main()
