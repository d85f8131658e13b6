"""Intraday bars as one compressed chunk per (series, New York session) (issue 10 §2).

The store tests run on both engines (the ``cache`` fixture: a SQLite file and a PostgreSQL
schema); the v4 migration is a SQLite file's history and stays on SQLite.
"""

from __future__ import annotations

import sqlite3
import struct

import numpy as np
import pandas as pd
import pytest
from freezegun import freeze_time
from pg_fixtures import table_snapshot

from cachelib.store import TradingCacheManager
from cachelib.store.chunks import decode, encode

NOW = "2024-06-03 15:00:00"  # Monday; every session below is historical


def bits(values) -> list[int]:
    return [struct.unpack("<q", struct.pack("<d", v))[0] for v in values]


def minute_frame(start_utc: str, closes: list[float], **extra) -> pd.DataFrame:
    idx = pd.date_range(start_utc, periods=len(closes), freq="1min", tz="UTC")
    return pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes,
                         "volume": 1.0, **extra}, index=idx)


def chunk_rows(cache) -> list[tuple]:
    return cache.conn.execute(
        "SELECT s.symbol, s.source, c.session, c.first_ts, c.last_ts, c.n_bars FROM bar_chunks c "
        "JOIN series s USING (series_id) ORDER BY s.symbol, s.source, c.session"
    ).fetchall()


def test_codec_round_trip_is_bit_identical():
    times = np.array([1_717_421_400, 1_717_421_460, 1_717_425_000], dtype=np.int64)
    values = np.array([
        [1.5, 5e-324, 2.2250738585072014e-308],  # open: the smallest subnormal, the largest subnormal
        [1.5, 5e-324, 2.2250738585072014e-308],
        [1.5, 5e-324, 2.2250738585072014e-308],
        [1.5, 5e-324, 2.2250738585072014e-308],
        [-0.0, 0.0, 123456789.125],  # volume
        [float("nan"), 0.1, 1e300],  # vwap
        [float("nan"), 7.0, 9007199254740992.0],  # trade_count
    ])
    blob = encode(times, values)
    assert blob[0] == 1  # the lz4 format tag
    got_times, got_values = decode(blob, 3, 1_717_421_400)
    assert got_times.tolist() == [1_717_421_400, 1_717_421_460, 1_717_425_000]
    assert [bits(row) for row in got_values] == [bits(row) for row in values]


@freeze_time(NOW)
def test_read_back_is_bit_identical_with_nan_vwap_negative_zero_and_subnormals(cache):
    frame = minute_frame("2024-05-31 13:30", [5e-324, 1.0000000000000002, 187.25],
                         vwap=[float("nan"), 1.0, 187.2], trade_count=[None, 3, 0])
    frame["volume"] = [-0.0, 0.0, 1234.5]
    assert cache.set("AAPL", frame, source="alpaca", timeframe="1Min") == 3
    got = cache.get("AAPL", "2024-05-31", "2024-05-31", timeframe="1Min")
    assert list(got.index) == [pd.Timestamp("2024-05-31 13:30", tz="UTC"), pd.Timestamp("2024-05-31 13:31", tz="UTC"),
                               pd.Timestamp("2024-05-31 13:32", tz="UTC")]
    assert bits(got["close"]) == bits([5e-324, 1.0000000000000002, 187.25])
    assert bits(got["volume"]) == bits([-0.0, 0.0, 1234.5])
    assert np.isnan(got["vwap"].iloc[0]) and got["vwap"].tolist()[1:] == [1.0, 187.2]
    assert got["trade_count"].isna().tolist() == [True, False, False]
    assert got["trade_count"].tolist()[1:] == [3, 0]


@freeze_time(NOW)
def test_one_chunk_per_session_and_upserts_merge_new_bars_winning(cache):
    # Two New York sessions (Thu 2024-05-30, Fri 2024-05-31), 2 + 3 bars.
    cache.set("SPY", pd.concat([minute_frame("2024-05-30 19:58", [1.0, 2.0]),
                                minute_frame("2024-05-31 13:30", [3.0, 4.0, 5.0])]),
              source="alpaca", timeframe="1Min")
    assert [r[2] for r in chunk_rows(cache)] == [19873, 19874]  # day numbers of the two sessions
    # Overwrite 13:31, add 13:33 and 13:35: only Friday's chunk is rewritten.
    cache.set("SPY", minute_frame("2024-05-31 13:31", [40.0]), source="alpaca", timeframe="1Min")
    cache.set("SPY", pd.concat([minute_frame("2024-05-31 13:33", [6.0]), minute_frame("2024-05-31 13:35", [7.0])]),
              source="alpaca", timeframe="1Min")
    got = cache.get("SPY", "2024-05-31", "2024-05-31", timeframe="1Min")
    assert got["close"].tolist() == [3.0, 40.0, 5.0, 6.0, 7.0]
    assert [t.strftime("%H:%M") for t in got.index] == ["13:30", "13:31", "13:32", "13:33", "13:35"]
    assert chunk_rows(cache) == [
        ("SPY", "alpaca", 19873, 1717099080, 1717099140, 2),
        ("SPY", "alpaca", 19874, 1717162200, 1717162500, 5),
    ]
    # A read inside a session slices it.
    part = cache.get("SPY", "2024-05-31 13:31", "2024-05-31 13:33", timeframe="1Min")
    assert part["close"].tolist() == [40.0, 5.0, 6.0]
    assert cache.get("SPY", "2024-05-31 13:36", "2024-05-31 20:00", timeframe="1Min") is None


@freeze_time(NOW)
def test_source_priority_picks_one_bar_per_time(cache):
    cache.set("SPY", minute_frame("2024-05-31 13:30", [1.0, 1.0, 1.0]), source="demo", timeframe="1Min")
    cache.set("SPY", minute_frame("2024-05-31 13:31", [2.0]), source="alpaca", timeframe="1Min")
    cache.set("SPY", minute_frame("2024-05-31 13:31", [3.0, 3.0]), source="polygon", timeframe="1Min")
    got = cache.get("SPY", "2024-05-31", "2024-05-31", timeframe="1Min")
    assert got["close"].tolist() == [1.0, 2.0, 3.0]  # demo, alpaca over polygon and demo, polygon over demo
    assert cache.get("SPY", "2024-05-31", "2024-05-31", source="demo", timeframe="1Min")["close"].tolist() == [1.0] * 3


@freeze_time(NOW)
def test_count_exists_delete_and_stats_count_bars_not_chunks(cache):
    cache.set("SPY", pd.concat([minute_frame("2024-05-30 19:55", [1.0] * 5),
                                minute_frame("2024-05-31 13:30", [2.0] * 4)]), source="alpaca", timeframe="1Min")
    assert cache.count_bars("SPY", timeframe="1Min") == 9
    assert cache.count_bars("SPY", "2024-05-31 13:31", "2024-05-31 13:32", timeframe="1Min") == 2
    assert cache.exists("SPY", "2024-05-31 13:33", timeframe="1Min")
    assert not cache.exists("SPY", "2024-05-31 13:34", timeframe="1Min")
    stats = cache.get_stats()
    assert (stats["total_entries"], stats["tables"]["bar_chunks"], stats["tables"]["bars"]) == (9, 2, 0)
    assert stats["date_range"] == {"start": "2024-05-30", "end": "2024-05-31"}
    assert cache.get_symbols() == ["SPY"]
    # A range cutting Friday's chunk re-encodes the rest; Thursday's goes whole.
    assert cache.delete("SPY", "2024-05-30", "2024-05-31 13:31", timeframe="1Min") == 7
    assert cache.get("SPY", "2024-05-01", "2024-05-31", timeframe="1Min")["close"].tolist() == [2.0, 2.0]
    assert [r[2:] for r in chunk_rows(cache)] == [(19874, 1717162320, 1717162380, 2)]
    assert cache.delete("SPY", "2024-05-31 13:32", "2024-05-31 13:33", timeframe="1Min") == 2
    assert chunk_rows(cache) == []


def test_expiry_is_per_chunk_and_cleanup_counts_bars(cache):
    with freeze_time(NOW):
        cache.set("SPY", minute_frame("2024-05-31 13:30", [1.0] * 3), source="alpaca", timeframe="1Min", ttl_hours=0)
        cache.set("QQQ", minute_frame("2024-05-31 13:30", [1.0] * 2), source="alpaca", timeframe="1Min")
        assert cache.get("SPY", "2024-05-31", "2024-05-31", timeframe="1Min") is None
        assert cache.get_stats()["expired_entries"] == 3
        # New bars into an expired chunk do not bring its old bars back.
        cache.set("SPY", minute_frame("2024-05-31 13:40", [9.0]), source="alpaca", timeframe="1Min")
        assert cache.get("SPY", "2024-05-31", "2024-05-31", timeframe="1Min")["close"].tolist() == [9.0]
        # Every bar of QQQ's chunk rewritten with ttl_hours=0 (a partial write would not shorten it).
        cache.set("QQQ", minute_frame("2024-05-31 13:30", [1.0] * 2), source="alpaca", timeframe="1Min", ttl_hours=0)
        assert cache.cleanup_expired() == 2  # QQQ's chunk, 2 bars
        assert cache.count_bars(timeframe="1Min") == 1
        assert (cache.hits, cache.misses) == (1, 1)


def test_a_rejected_set_leaves_the_chunks_as_they_were(cache):
    with freeze_time(NOW):
        cache.set("SPY", minute_frame("2024-05-31 13:30", [1.0, 2.0]), source="alpaca", timeframe="1Min")
        before = table_snapshot(cache)
        bad = minute_frame("2024-05-31 13:31", [5.0, -1.0])
        with pytest.raises(ValueError, match="non-positive price"):
            cache.set("SPY", bad, source="alpaca", timeframe="1Min")
        assert table_snapshot(cache) == before


# -- migration v4: a v3 file holding minute bars --------------------------------------------------

_V3_DDL = """
CREATE TABLE series (series_id INTEGER PRIMARY KEY, asset_type TEXT NOT NULL, symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL, source TEXT NOT NULL, UNIQUE (asset_type, symbol, timeframe, source));
CREATE TABLE bars (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, open REAL NOT NULL, high REAL NOT NULL,
    low REAL NOT NULL, close REAL NOT NULL, volume NUMERIC NOT NULL, vwap REAL, trade_count INTEGER,
    expires_at INTEGER NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID;
CREATE TABLE raw_options_chain (symbol TEXT NOT NULL, trading_date TEXT NOT NULL, contract_symbol TEXT NOT NULL,
    source TEXT NOT NULL, strike REAL NOT NULL, option_type TEXT NOT NULL, expiration TEXT NOT NULL,
    bid REAL, ask REAL, last REAL, volume INTEGER, open_interest INTEGER, implied_volatility REAL, delta REAL,
    gamma REAL, theta REAL, vega REAL, rho REAL, underlying_price REAL, data_quality_score REAL NOT NULL DEFAULT 1.0,
    snapshot_time INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (symbol, trading_date, contract_symbol, source)) WITHOUT ROWID;
CREATE TABLE trade_history (trade_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, entry_date INTEGER NOT NULL,
    entry_price REAL NOT NULL, quantity NUMERIC NOT NULL, exit_date INTEGER, exit_price REAL, exit_reason TEXT,
    realized_pnl REAL, realized_pnl_pct REAL, holding_period_hours REAL, strategy_name TEXT, signal_strength TEXT,
    signal_confidence REAL, broker_account TEXT DEFAULT 'alpaca_paper', updated_at INTEGER,
    max_profit_pct REAL, max_drawdown_pct REAL);
CREATE INDEX idx_trade_symbol_entry ON trade_history (symbol, entry_date);
CREATE INDEX idx_trade_strategy ON trade_history (strategy_name, entry_date);
CREATE TABLE coverage (series_id INTEGER NOT NULL REFERENCES series(series_id), session INTEGER NOT NULL,
    rows INTEGER NOT NULL, fetched_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (series_id, session)) WITHOUT ROWID;
PRAGMA application_id = 1128350536;
PRAGMA user_version = 3;
"""

FAR = 2_000_000_000  # expires in 2033


def test_a_v3_file_with_minute_bars_migrates_with_every_bar_identical(tmp_path):
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    conn.executescript(_V3_DDL)
    conn.executemany("INSERT INTO series VALUES (?,?,?,?,?)",
                     [(1, "stock", "AAPL", "1Min", "alpaca"), (2, "stock", "AAPL", "1Day", "alpaca"),
                      (3, "stock", "AAPL", "1Min", "demo")])
    rows = [
        # Thu 2024-05-30 (two bars, expiries differ: the chunk keeps the later one)
        (1, 1717099080, 190.5, 190.75, 190.25, 190.5, 1200, 190.51, 42, FAR - 10),
        (1, 1717099140, 190.5, 190.5, 190.5, 190.5, 0.5, None, None, FAR),
        # Fri 2024-05-31 13:30 and 23:59 New York (still Friday), and Sat 00:00 New York
        (1, 1717162200, 5e-324, 5e-324, 5e-324, 5e-324, 0.25, 1e-310, 7, FAR),
        (1, 1717214340, 2.0, 2.0, 2.0, 2.0, 3, 2.0, 9007199254740992, FAR),
        (1, 1717214400, 3.0, 3.0, 3.0, 3.0, 4, 3.0, 1, FAR),
        (2, 1717113600, 100.0, 101.0, 99.0, 100.5, 1000000, None, 5000, FAR),  # daily: stays a row
        (3, 1717162200, 7.0, 7.0, 7.0, 7.0, 1, 7.0, 1, FAR),
    ]
    conn.executemany("INSERT INTO bars VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()

    with freeze_time(NOW):
        cache = TradingCacheManager(path)
        assert cache.schema_version >= 4  # later migrations may follow
        assert cache.conn.execute("SELECT series_id, ts FROM bars").fetchall() == [(2, 1717113600)]
        assert cache.conn.execute(
            "SELECT series_id, session, first_ts, last_ts, n_bars, expires_at FROM bar_chunks ORDER BY 1, 2"
        ).fetchall() == [(1, 19873, 1717099080, 1717099140, 2, FAR), (1, 19874, 1717162200, 1717214340, 2, FAR),
                         (1, 19875, 1717214400, 1717214400, 1, FAR), (3, 19874, 1717162200, 1717162200, 1, FAR)]
        got = cache.get("AAPL", "2024-05-01", "2024-06-30", source="alpaca", timeframe="1Min")
        assert got.index.asi8.tolist() == [r[1] * 10**9 for r in rows[:5]]
        for column, i in (("open", 2), ("high", 3), ("low", 4), ("close", 5), ("volume", 6)):
            assert bits(got[column]) == bits([float(r[i]) for r in rows[:5]]), column
        assert bits(got["vwap"].iloc[[0, 2, 3, 4]]) == bits([190.51, 1e-310, 2.0, 3.0])
        assert np.isnan(got["vwap"].iloc[1])
        assert got["trade_count"].tolist()[2:] == [7, 9007199254740992, 1]
        assert got["trade_count"].isna().tolist() == [False, True, False, False, False]
        assert cache.get("AAPL", "2024-05-31", "2024-05-31")["close"].tolist() == [100.5]
        assert cache.get("AAPL", "2024-05-31", "2024-05-31", source="demo", timeframe="1Min")["close"].tolist() == [7.0]
        assert cache.count_bars(timeframe=None) == 7
        cache.close()


# -- the C extension is gone: pure Python + numpy --------------------------------------------------


def test_cachelib_ships_no_c_sources_or_binaries():
    import cachelib

    root = __import__("pathlib").Path(cachelib.__file__).parent
    native = sorted(p.name for p in root.rglob("*") if p.suffix in (".c", ".so", ".pyd", ".dylib"))
    assert native == []
