"""TradingCacheManager under concurrency and crashes: threads, processes, SIGKILL mid-write.

Every expected count is computed by hand from the key layout written next to it. Child
processes run ``python -c`` scripts (no pickling, no import of this module), are started with
``sys.executable`` and are always killed in ``finally``; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cachelib.store import TradingCacheManager

ROOT = Path(__file__).resolve().parent.parent
BASE_TS = 1_600_000_000  # 2020-09-13T12:26:40Z: old enough for the 10-year TTL


def minute_bars(start_ts: int, n: int, close: np.ndarray | float, volume: float,
                trade_count: int | None = None) -> pd.DataFrame:
    idx = pd.DatetimeIndex(pd.to_datetime(start_ts + 60 * np.arange(n, dtype=np.int64), unit="s", utc=True))
    close = np.broadcast_to(np.asarray(close, dtype=float), (n,))
    frame = pd.DataFrame(
        {"open": close, "high": close + 0.5, "low": close - 0.5, "close": close, "volume": volume},
        index=idx,
    )
    if trade_count is not None:
        frame["trade_count"] = trade_count
    return frame


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def kill_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):  # a kill that does not land
            proc.wait(timeout=10)


# -- threads ---------------------------------------------------------------------------------

THREADS = 6
ROUNDS = 25
CHUNK = 20  # bars per private write
SHARED_BARS = 10


@pytest.mark.parametrize("layout", ["one manager", "a manager per thread"])
def test_threads_read_and_write_one_file(tmp_path, layout):
    """Each thread: ROUNDS private writes of CHUNK new bars, ROUNDS overwrites of the same
    SHARED_BARS shared bars with its own values, and reads of the others' symbols between."""
    path = tmp_path / "cache.db"  # PostgreSQL: the 8-process test below, and test_postgres's threads
    shared = TradingCacheManager(path) if layout == "one manager" else None
    barrier = threading.Barrier(THREADS)
    seen_partial: list[str] = []

    def worker(t: int) -> int:
        barrier.wait(timeout=30)
        # A manager per thread is created after the barrier: they race on a fresh file.
        cache = shared or TradingCacheManager(path)
        rng = random.Random(t)
        last_seen = [0] * THREADS
        try:
            for r in range(ROUNDS):
                own = minute_bars(BASE_TS + r * CHUNK * 60, CHUNK, 100.0 + t, volume=1.0)
                assert cache.set(f"T{t}", own, source="alpaca", timeframe="1Min") == CHUNK
                mine = minute_bars(BASE_TS, SHARED_BARS, 50.0 + t + np.arange(SHARED_BARS), 10.0 + t, t)
                cache.set("SHARED", mine, source="alpaca", timeframe="1Min")
                other = rng.randrange(THREADS)
                got = cache.get(f"T{other}", "2020-09-01", "2020-09-30", source="alpaca", timeframe="1Min")
                n = 0 if got is None else len(got)
                # One set() is one transaction: a reader sees whole chunks, never fewer than before.
                if n % CHUNK or n < last_seen[other]:
                    seen_partial.append(f"thread {t} saw {n} bars of T{other} after {last_seen[other]}")
                last_seen[other] = n
            return ROUNDS * CHUNK
        finally:
            if shared is None:
                cache.close()

    with ThreadPoolExecutor(THREADS) as pool:
        written = sum(pool.map(worker, range(THREADS)))  # re-raises any thread's exception

    assert seen_partial == []
    assert written == THREADS * ROUNDS * CHUNK == 3000
    check = TradingCacheManager(path)
    conn = check.conn
    # Minute bars live in session chunks (issue 10): count them through the store.
    per_symbol = {s: check.count_bars(s, timeframe="1Min") for s in [f"T{t}" for t in range(THREADS)] + ["SHARED"]}
    assert per_symbol == {**{f"T{t}": ROUNDS * CHUNK for t in range(THREADS)}, "SHARED": SHARED_BARS}
    assert conn.execute("SELECT COUNT(*) FROM series").fetchone()[0] == THREADS + 1
    # Every overwrite covered the same 10 bars, so they all come from the last writer.
    shared_rows = check.get("SHARED", "2020-09-01", "2020-09-30", source="alpaca", timeframe="1Min")
    writers = set(shared_rows["trade_count"])
    assert len(writers) == 1
    w = writers.pop()
    assert shared_rows["close"].tolist() == [50.0 + w + i for i in range(SHARED_BARS)]
    assert (shared_rows["volume"] == 10.0 + w).all()
    assert integrity(path) == "ok"
    check.close()
    if shared is not None:
        shared.close()


def test_readers_see_a_large_write_all_or_nothing_and_are_not_blocked(tmp_path):
    """WAL: while one thread writes 150k bars in one transaction, readers keep answering
    (from the snapshot before the write) and never see part of it."""
    path = tmp_path / "cache.db"
    cache = TradingCacheManager(path)
    cache.set("BIG", minute_bars(BASE_TS - 60 * 100, 100, 10.0, 1.0), source="alpaca", timeframe="1Min")
    n_big = 150_000
    big = minute_bars(BASE_TS, n_big, 20.0, 2.0)
    started, done = threading.Event(), threading.Event()
    observed: list[tuple[int, float]] = []

    def writer() -> None:
        started.set()
        try:
            cache.set("BIG", big, source="alpaca", timeframe="1Min")
        finally:
            done.set()

    def reader() -> None:
        started.wait(10)
        while not done.is_set():
            t0 = time.perf_counter()
            got = cache.get("BIG", "2020-01-01", "2021-12-31", source="alpaca", timeframe="1Min")
            observed.append((len(got), time.perf_counter() - t0))

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(writer), pool.submit(reader)]
        for f in futures:
            f.result(timeout=120)
    assert observed, "the reader never ran during the write"
    assert {n for n, _ in observed} <= {100, 100 + n_big}
    assert observed[0][0] == 100  # the first read ran while the write was in flight
    # A reader that waited for the writer would take as long as the write (seconds).
    assert max(s for n, s in observed if n == 100) < 2.0
    assert len(cache.get("BIG", "2020-01-01", "2021-12-31", source="alpaca", timeframe="1Min")) == 100 + n_big
    cache.close()


def test_a_writer_gives_up_after_its_timeout_with_a_clear_error(tmp_path):
    path = tmp_path / "cache.db"
    cache = TradingCacheManager(path, timeout=0.3)
    cache.set("SPY", minute_bars(BASE_TS, 5, 10.0, 1.0), source="alpaca", timeframe="1Min")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        t0 = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            cache.set("SPY", minute_bars(BASE_TS, 50, 11.0, 1.0), source="alpaca", timeframe="1Min")
        waited = time.monotonic() - t0
        assert 0.25 <= waited < 3.0
        # Reads are not blocked by a writer in WAL mode.
        assert len(cache.get("SPY", "2020-09-13", "2020-09-13", source="alpaca", timeframe="1Min")) == 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert cache.set("SPY", minute_bars(BASE_TS, 50, 11.0, 1.0), source="alpaca", timeframe="1Min") == 50
    got = cache.get("SPY", "2020-09-13", "2020-09-13", source="alpaca", timeframe="1Min")
    assert len(got) == 50 and (got["close"] == 11.0).all()
    cache.close()


# -- processes ---------------------------------------------------------------------------------

PROCESSES = 4
CALLS = 200
SHARED_WINDOW = 5
SHARED_PERIOD = 60

# Call j of writer w (daily bars, day k = 2020-01-01 + k days):
#   even j (m = j // 2, 100 calls): symbol P<w>, days 2m and 2m+1          -> 200 keys per writer
#   odd j  (m = j // 2, 100 calls): symbol SHARED, days (2m mod 60) .. +4  -> days 0..62 = 63 keys
# A bar of writer w on day k: close = 10(w+1) + k/100, volume = 1000(w+1) + k, trade_count = w+1.
EXPECTED_PRIVATE = 200
EXPECTED_SHARED = 63

_UPSERT_WORKER = r"""
import json, os, sys, time
import numpy as np, pandas as pd
from cachelib.store import TradingCacheManager

db, w, go, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
DAY0 = pd.Timestamp("2020-01-01")

def bars(days):
    days = np.asarray(days)
    close = 10.0 * (w + 1) + days / 100.0
    return pd.DataFrame(
        {"open": close, "high": close + 1.0, "low": close - 1.0, "close": close,
         "volume": 1000.0 * (w + 1) + days, "vwap": close + 0.25, "trade_count": w + 1},
        index=pd.DatetimeIndex(DAY0 + pd.to_timedelta(days, unit="D"), name="date"),
    )

open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.001)
cache = TradingCacheManager(db)  # all four open (and migrate) the fresh file at the same moment
written = 0
for j in range(200):
    m = j // 2
    if j % 2 == 0:
        written += cache.set(f"P{w}", bars([2 * m, 2 * m + 1]), source="alpaca")
        mine = cache.get(f"P{w}", "2020-01-01", "2021-12-31", source="alpaca")
        assert len(mine) == 2 * m + 2, (len(mine), m)   # read-your-writes
    else:
        start = (2 * m) % 60
        written += cache.set("SHARED", bars(range(start, start + 5)), source="alpaca")
        if j % 20 == 1:
            shared = cache.get("SHARED", "2020-01-01", "2020-12-31", source="alpaca")
            assert 5 <= len(shared) <= 63, len(shared)
print(json.dumps({"writer": w, "written": written}))
"""


@pytest.mark.slow
def test_processes_upsert_one_file_concurrently(tmp_path):
    path = tmp_path / "cache.db"  # does not exist yet
    go = tmp_path / "go"
    procs: list[subprocess.Popen] = []
    try:
        for w in range(PROCESSES):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _UPSERT_WORKER, str(path), str(w), str(go), str(tmp_path / f"ready{w}")],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        wait_for(lambda: all((tmp_path / f"ready{w}").exists() or procs[w].poll() is not None
                             for w in range(PROCESSES)), 60, "the workers to start")
        go.touch()  # all four start writing at the same moment
        results = []
        for w, proc in enumerate(procs):
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, f"writer {w} failed:\n{err}"
            assert "database is locked" not in err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        kill_all(procs)

    # 100 private calls x 2 bars + 100 shared calls x 5 bars, per writer.
    assert [r["written"] for r in results] == [100 * 2 + 100 * SHARED_WINDOW] * PROCESSES
    assert integrity(path) == "ok"
    conn = sqlite3.connect(path)
    per_symbol = dict(conn.execute(
        "SELECT s.symbol, COUNT(*) FROM bars b JOIN series s USING (series_id) GROUP BY s.symbol"
    ).fetchall())
    assert per_symbol == {**{f"P{w}": EXPECTED_PRIVATE for w in range(PROCESSES)}, "SHARED": EXPECTED_SHARED}
    assert sum(per_symbol.values()) == 4 * 200 + 63
    assert conn.execute("SELECT COUNT(*) FROM series").fetchone()[0] == PROCESSES + 1
    day0 = pd.Timestamp("2020-01-01").value // 10**9

    def expected(w: int, k: int) -> tuple:
        close = 10.0 * (w + 1) + k / 100.0
        return (close, close + 1.0, close - 1.0, close, 1000 * (w + 1) + k, close + 0.25, w + 1)

    rows = conn.execute(
        "SELECT s.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count "
        "FROM bars b JOIN series s USING (series_id)"
    ).fetchall()
    conn.close()
    for symbol, ts, *values in rows:
        k = (ts - day0) // 86_400
        if symbol == "SHARED":
            assert 0 <= k < EXPECTED_SHARED
            # Whole rows from one writer: no column of one writer mixed into another's bar.
            assert any(tuple(values) == expected(w, k) for w in range(PROCESSES)), (symbol, k, values)
        else:
            assert 0 <= k < EXPECTED_PRIVATE
            assert tuple(values) == expected(int(symbol[1:]), k), (symbol, k, values)


# -- PostgreSQL: 8 processes with their own pools, readers and cleanup_expired alongside ----------

PG_WRITERS = 8
PG_DAILY_CALLS = 10
PG_MINUTE_CALLS = 10
# Writer w, daily call k: one set_many of P<w> days 2k, 2k+1 and SHARED days (2k mod 20)..+4.
#   P<w>: 20 days each; SHARED: starts 0..18 -> days 0..22 = 23 keys.
# Writer w, minute call m: one set_many of MSHARED minutes 10w + m .. 10w + m + 5 of session
#   m % 2 (2024-01-02 or 2024-01-03, from 09:30 New York) and M<w> 3 bars in each of both
#   sessions (minutes 3m..3m+2). MSHARED session 0: calls m = 0, 2, .., 8, so writer w covers
#   minutes 10w .. 10w + 13 and all 8 cover 0 .. 83; session 1 (m = 1, .., 9): 1 .. 84. 84 keys
#   per session, 168 in all (writers overlap; a lost chunk merge would lose some). M<w>: 60.
# Seeded before the start, already expired (cleanup_expired or the merge must drop them):
#   OLD 10 daily bars, SHARED days 40..44, MSHARED minutes 200..299 of session 2024-01-02.
PG_EXPECTED = {**{f"P{w}": 20 for w in range(PG_WRITERS)}, "SHARED": 23, "MSHARED": 168,
               **{f"M{w}": 60 for w in range(PG_WRITERS)}}

_PG_WORKER = r"""
import json, os, sys, time
import numpy as np, pandas as pd
from cachelib.store import TradingCacheManager

url, w, go, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
DAY0 = pd.Timestamp("2020-01-01")
OPEN = {0: pd.Timestamp("2024-01-02 14:30", tz="UTC"), 1: pd.Timestamp("2024-01-03 14:30", tz="UTC")}

def daily(days):
    days = np.asarray(days)
    close = 10.0 * (w + 1) + days / 100.0
    return pd.DataFrame({"open": close, "high": close + 1.0, "low": close - 1.0, "close": close,
                         "volume": 1000.0 * (w + 1) + days, "trade_count": w + 1},
                        index=pd.DatetimeIndex(DAY0 + pd.to_timedelta(days, unit="D"), name="date"))

def minutes(session, offsets):
    offsets = np.asarray(offsets)
    close = 100.0 * (w + 1) + offsets
    return pd.DataFrame({"open": close, "high": close + 0.5, "low": close - 0.5, "close": close,
                         "volume": float(w + 1)},
                        index=OPEN[session] + pd.to_timedelta(offsets, unit="min"))

cache = TradingCacheManager(url)
other = f"P{(w + 1) % 8}"
seen, bad = 0, []
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.001)
cache.cleanup_expired()
written = 0
for k in range(10):
    start = (2 * k) % 20
    written += cache.set_many({f"P{w}": daily([2 * k, 2 * k + 1]), "SHARED": daily(range(start, start + 5))},
                              source="alpaca")
    assert len(cache.get(f"P{w}", "2020-01-01", "2020-12-31", source="alpaca")) == 2 * k + 2  # read-your-writes
    got = cache.get(other, "2020-01-01", "2020-12-31", source="alpaca")
    n = 0 if got is None else len(got)
    if n % 2 or n < seen:  # one batch is two bars of it: never half of one, never fewer than before
        bad.append((other, seen, n))
    seen = n
    if k % 5 == 4:
        cache.cleanup_expired()
for m in range(10):
    own = pd.concat([minutes(0, range(3 * m, 3 * m + 3)), minutes(1, range(3 * m, 3 * m + 3))])
    written += cache.set_many({"MSHARED": minutes(m % 2, range(10 * w + m, 10 * w + m + 6)), f"M{w}": own},
                              source="alpaca", timeframe="1Min")
    got = cache.get(f"M{(w + 1) % 8}", "2024-01-02", "2024-01-03", source="alpaca", timeframe="1Min")
    n = 0 if got is None else len(got)
    if n % 6:  # one batch writes 6 of its bars, in two chunks
        bad.append(("M", n))
    shared = cache.get("MSHARED", "2024-01-02", "2024-01-03", source="alpaca", timeframe="1Min")
    if not 6 <= len(shared) <= 168:
        bad.append(("MSHARED", len(shared)))
cache.cleanup_expired()
print(json.dumps({"writer": w, "written": written, "bad": bad}))
"""


@pytest.mark.slow
def test_postgres_processes_upsert_read_and_clean_up_concurrently(pg_url, tmp_path):
    """8 processes, each with its own manager and pool, upsert overlapping daily and 1-minute
    series (chunk merges are read-modify-writes under advisory locks) while reading each other's
    series and running cleanup_expired: exact counts at the end, no error escapes, no reader
    ever sees part of a batch."""
    seed = TradingCacheManager(pg_url)
    day0 = pd.Timestamp("2020-01-01")
    seed.set("OLD", pd.DataFrame({"close": 1.0, "volume": 1.0},
                                 index=pd.DatetimeIndex(day0 + pd.to_timedelta(range(10), unit="D"), name="date")),
             source="alpaca")
    seed.set("SHARED", pd.DataFrame({"close": 1.0, "volume": 1.0},
                                    index=pd.DatetimeIndex(day0 + pd.to_timedelta(range(40, 45), unit="D"), name="date")),
             source="alpaca")
    seed.set("MSHARED", minute_bars(1704205800 + 200 * 60, 100, 1.0, 1.0), source="alpaca", timeframe="1Min")
    with seed.atomic() as conn:  # expire them (a TTL in the past)
        conn.execute("UPDATE bars SET expires_at = 1")
        conn.execute("UPDATE bar_chunks SET expires_at = 1")
    seed.close()
    go = tmp_path / "go"
    procs: list[subprocess.Popen] = []
    try:
        for w in range(PG_WRITERS):
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _PG_WORKER, pg_url, str(w), str(go), str(tmp_path / f"ready{w}")],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        wait_for(lambda: all((tmp_path / f"ready{w}").exists() or procs[w].poll() is not None
                             for w in range(PG_WRITERS)), 60, "the workers to start")
        go.touch()
        results = []
        for w, proc in enumerate(procs):
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, f"writer {w} failed:\n{err}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        kill_all(procs)

    # Per writer: 10 daily batches of 2 + 5 bars, 10 minute batches of 6 + 6 bars.
    assert [r["written"] for r in results] == [10 * 7 + 10 * 12] * PG_WRITERS
    assert [r["bad"] for r in results] == [[]] * PG_WRITERS
    with TradingCacheManager(pg_url) as check:
        conn = check.conn
        daily_rows = dict(conn.execute(
            "SELECT s.symbol, COUNT(*) FROM bars b JOIN series s USING (series_id) GROUP BY s.symbol").fetchall())
        chunk_rows = dict(conn.execute(
            "SELECT s.symbol, SUM(n_bars) FROM bar_chunks c JOIN series s USING (series_id) GROUP BY s.symbol"
        ).fetchall())
        assert {**daily_rows, **chunk_rows} == PG_EXPECTED  # OLD and every expired bar are gone
        assert sum(PG_EXPECTED.values()) == 8 * 20 + 23 + 168 + 8 * 60 == 831
        shared = check.get("SHARED", "2020-01-01", "2020-12-31", source="alpaca")
        # Whole rows from one writer: no column of one writer's bar mixed into another's.
        for when, row in zip(shared.index, shared.itertuples(index=False)):
            k = (when - day0).days
            assert any((row.close, row.volume, row.trade_count) == (10.0 * (w + 1) + k / 100.0, 1000.0 * (w + 1) + k, w + 1)
                       for w in range(PG_WRITERS)), (k, row)
        minutes = check.get("MSHARED", "2024-01-02", "2024-01-03", source="alpaca", timeframe="1Min")
        assert minutes["volume"].isin([float(w + 1) for w in range(PG_WRITERS)]).all()  # no seeded bar survived


# -- SIGKILL in the middle of a large write ----------------------------------------------------

N_KILL = 500_000
PRE_OVERLAP = 1_000  # pre-existing bars at the first keys the child rewrites

_KILL_WORKER = r"""
import sys
import numpy as np, pandas as pd
from cachelib.store import TradingCacheManager

db, ready, done, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
idx = pd.DatetimeIndex(pd.to_datetime(1_600_000_000 + 60 * np.arange(n, dtype=np.int64), unit="s", utc=True))
close = 100.0 + (np.arange(n) % 1000) * 0.01
frame = pd.DataFrame({"open": close, "high": close + 0.05, "low": close - 0.05, "close": close,
                      "volume": 2.0}, index=idx)
cache = TradingCacheManager(db)
open(ready, "w").close()
written = cache.set("KILL", frame, source="alpaca", timeframe="1Min")
open(done, "w").close()
print(written)
"""


def _write_lock_is_held(probe: sqlite3.Connection) -> bool:
    """True while another connection holds the write lock, i.e. is inside a write transaction."""
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return True
        raise
    probe.execute("ROLLBACK")
    return False


def _prepare_kill_db(path: Path) -> list[tuple]:
    cache = TradingCacheManager(path)
    cache.set("KILL", minute_bars(BASE_TS - 60 * 1000, 1000, 7.0, 1.0), source="alpaca", timeframe="1Min")
    cache.set("KILL", minute_bars(BASE_TS, PRE_OVERLAP, 8.0, 1.0), source="alpaca", timeframe="1Min")
    days = pd.DatetimeIndex(pd.bdate_range("2023-01-02", periods=300), name="date")
    cache.set("SPY", pd.DataFrame({"close": 400.0 + np.arange(300), "volume": 5.0}, index=days), source="alpaca")
    cache.close()  # the last connection checkpoints the WAL into the file
    return _all_bars(path)


def _all_bars(path: Path) -> list[tuple]:
    """Every bar of the file as ``(symbol, time, open, high, low, close, volume, vwap, trades)``,
    read through the public API, so the check holds whatever the layout (rows or chunks)."""
    cache = TradingCacheManager(path, read_only=True)
    try:
        out: list[tuple] = []
        for symbol, timeframe in (("KILL", "1Min"), ("SPY", "1Day")):
            frame = cache.get(symbol, "2000-01-01", "2030-12-31", source="alpaca", timeframe=timeframe)
            if frame is not None:
                out.extend((symbol, when, *(None if pd.isna(v) else v for v in row))
                           for when, row in zip(frame.index, frame.itertuples(index=False)))
        return out
    finally:
        cache.close()


def _kill_during_write(tmp: Path, mode: str) -> dict:
    """Start a child writing N_KILL bars; once it holds the write lock, SIGKILL it: at once
    (``early``) or once 1 MiB of its uncommitted pages has reached the WAL (``wal``)."""
    tmp.mkdir()
    path, ready, done = tmp / "cache.db", tmp / "ready", tmp / "done"
    before = _prepare_kill_db(path)
    wal = Path(f"{path}-wal")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_WORKER, str(path), str(ready), str(done), str(N_KILL)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    probe = sqlite3.connect(path, isolation_level=None, timeout=0)
    killed_in_txn, wal_at_kill = False, None
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 60, "the child to build its frame")
        wait_for(lambda: _write_lock_is_held(probe) or proc.poll() is not None, 30,
                 "the child's write transaction", poll=0.001)
        if proc.poll() is None:
            if mode == "wal":
                # 1 MiB of frames (~250 pages) that no commit record covers yet: the cache has
                # started spilling the transaction's pages into the WAL.
                size0 = wal.stat().st_size if wal.exists() else 0
                wait_for(lambda: (wal.exists() and wal.stat().st_size > size0 + 2**20) or proc.poll() is not None,
                         30, "the WAL to grow", poll=0.0005)
            else:
                time.sleep(0.02)
            if proc.poll() is None and not done.exists():
                killed_in_txn = _write_lock_is_held(probe)
                wal_at_kill = wal.stat().st_size if wal.exists() else 0
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stderr = proc.stderr.read()
    finally:
        probe.close()
        kill_all([proc])
    assert proc.returncode in (0, -signal.SIGKILL), stderr

    assert integrity(path) == "ok"
    after = _all_bars(path)
    assert len(before) == 1000 + PRE_OVERLAP + 300  # the check sees every bar it guards
    child_rows = [r for r in after if r[6] == 2.0]  # the child's bars have volume 2
    assert len(child_rows) in (0, N_KILL), f"{len(child_rows)} of {N_KILL} bars survived a kill"
    if not child_rows:
        assert after == before  # rolled back: every pre-existing bar exactly as it was
    else:
        overwritten = {(r[0], r[1]) for r in child_rows}
        assert [r for r in after if (r[0], r[1]) not in overwritten] == \
            [r for r in before if (r[0], r[1]) not in overwritten]
        assert len(after) == len(before) - PRE_OVERLAP + N_KILL
    # The file is still a working cache.
    cache = TradingCacheManager(path)
    cache.set("AFTER", minute_bars(BASE_TS, 3, 5.0, 1.0), source="alpaca", timeframe="1Min")
    assert len(cache.get("AFTER", "2020-09-13", "2020-09-13", source="alpaca", timeframe="1Min")) == 3
    cache.close()
    return {"mode": mode, "killed_in_txn": killed_in_txn, "wal_bytes_at_kill": wal_at_kill,
            "child_rows": len(child_rows), "returncode": proc.returncode}


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_during_a_large_set_leaves_all_or_nothing(tmp_path):
    deadline = time.monotonic() + 25  # keep the test bounded on a slow, busy machine
    outcomes = [_kill_during_write(tmp_path / "early", "early")]
    if time.monotonic() < deadline - 8:  # one more attempt fits: kill with uncommitted pages in the WAL
        outcomes.append(_kill_during_write(tmp_path / "wal", "wal"))
    # At least one kill landed inside the write transaction and was rolled back on recovery.
    assert any(o["killed_in_txn"] and o["child_rows"] == 0 and o["returncode"] == -signal.SIGKILL
               for o in outcomes), outcomes


# -- regressions: bugs found while writing these tests ---------------------------------------------


def test_opening_a_file_another_connection_is_writing_waits_for_it(tmp_path):
    """``PRAGMA journal_mode=WAL`` on a file not yet in WAL mode answers "database is locked" at
    once (no busy handler) while another connection holds a lock on it; opening used to raise
    DatabaseFileError("not a usable SQLite database"). Seen with 4 processes opening the same
    fresh files: 4 of 800 opens failed."""
    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # e.g. another worker creating the same cache right now
    release = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        cache = TradingCacheManager(path, timeout=5)  # must wait for the lock like any writer
        assert cache.schema_version >= 1
        cache.close()
    finally:
        release.join()
        holder.close()


def test_a_rolled_back_series_is_not_remembered(cache_url):
    """A series id read inside a transaction that was then rolled back used to stay in the
    manager's series cache; SQLite gave the id to the next new series (BBB), so get("AAA")
    returned BBB's bars and set("AAA") overwrote them."""
    cache = TradingCacheManager(cache_url)
    day = pd.DatetimeIndex(["2024-01-02"], name="date")
    with pytest.raises(RuntimeError), cache.atomic():
        cache.set("AAA", pd.DataFrame({"close": [10.0]}, index=day), source="alpaca")
        assert cache.get("AAA", "2024-01-02", "2024-01-02", source="alpaca") is not None
        raise RuntimeError("abandon the batch")
    cache.set("BBB", pd.DataFrame({"close": [999.0]}, index=day), source="alpaca")
    try:
        assert cache.get("AAA", "2024-01-02", "2024-01-02", source="alpaca") is None
        cache.set("AAA", pd.DataFrame({"close": [10.0]}, index=day), source="alpaca")
        assert cache.get("BBB", "2024-01-02", "2024-01-02", source="alpaca")["close"].tolist() == [999.0]
    finally:
        cache.close()
