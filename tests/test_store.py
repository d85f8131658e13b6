"""TradingCacheManager: bars, TTL, coverage, maintenance, stats, schema (issue 2).

Every expected value here is written by hand from the issue's rules. The ``cache`` fixture runs
each test on both engines (a SQLite file and a PostgreSQL schema, issue 12); what only a file
has (WAL, PRAGMAs, file migrations) stays on SQLite, next to its PostgreSQL counterpart.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest
from freezegun import freeze_time
from pg_fixtures import CACHE_TABLES, engine_of, table_snapshot

from cachelib.store import SCHEMA_VERSION, DatabaseFileError, TradingCacheManager

DAILY = pd.DataFrame(
    {
        "open": [100.0, 101.0, 102.5],
        "high": [101.5, 102.0, 103.0],
        "low": [99.5, 100.5, 101.0],
        "close": [101.0, 101.5, 102.0],
        "volume": [1_000_000, 1_200_000, 900_000],
        "vwap": [100.7, 101.3, 102.1],
        "trade_count": [5000, 6000, 4500],
    },
    index=pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"], name="Date"),
)


def minute_frame(start_utc: str, n: int, base: float = 50.0) -> pd.DataFrame:
    idx = pd.date_range(start_utc, periods=n, freq="1min", tz="UTC")
    close = base + np.arange(n) * 0.01
    return pd.DataFrame(
        {"open": close, "high": close + 0.05, "low": close - 0.05, "close": close, "volume": 100.0},
        index=idx,
    )


#: A cache with no row in any table (what ``table_snapshot`` gives for a new cache).
EMPTY = {table: [] for table in CACHE_TABLES}


def pg_sql(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on ``url`` outside cachelib (the test's own psql), in autocommit."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def error_types(cache: TradingCacheManager) -> tuple[type[Exception], type[Exception]]:
    """The engine's own (operational, integrity) error classes: a broken store or a violated
    constraint surfaces as the driver's exception, on either engine, never as a cache miss."""
    if engine_of(cache.db_path) == "postgresql":
        return psycopg.errors.UndefinedTable, psycopg.IntegrityError
    return sqlite3.OperationalError, sqlite3.IntegrityError


# -- round trips ---------------------------------------------------------------------------


def test_daily_round_trip_shape_and_values(cache):
    assert cache.set("spy", DAILY, source="alpaca") == 3
    df = cache.get("SPY", "2024-01-01", "2024-01-31")
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "vwap", "trade_count"]
    assert df.index.name == "date"
    assert df.index.tz is None
    assert list(df.index) == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-04")]
    assert df["close"].tolist() == [101.0, 101.5, 102.0]
    assert df["volume"].tolist() == [1_000_000.0, 1_200_000.0, 900_000.0]
    assert df["trade_count"].tolist() == [5000, 6000, 4500]
    assert str(df["trade_count"].dtype) == "Int64"
    assert all(str(df[c].dtype) == "float64" for c in ["open", "high", "low", "close", "volume", "vwap"])


def test_get_range_is_inclusive_and_none_when_empty(cache):
    cache.set("SPY", DAILY, source="alpaca")
    assert cache.get("SPY", "2024-01-03", "2024-01-03")["close"].tolist() == [101.5]
    assert cache.get("SPY", date(2024, 1, 3), datetime(2024, 1, 4))["close"].tolist() == [101.5, 102.0]
    assert cache.get("SPY", "2023-01-01", "2023-12-31") is None
    assert cache.get("QQQ", "2024-01-01", "2024-01-31") is None


def test_intraday_round_trip_is_utc(cache):
    cache.set("AAPL", minute_frame("2024-03-15 13:30", 3), source="alpaca", timeframe="1Min")
    df = cache.get("AAPL", "2024-03-15", "2024-03-15", timeframe="1Min")
    assert df.index.name == "timestamp"
    assert str(df.index.tz) == "UTC"
    assert df.index[0] == pd.Timestamp("2024-03-15 13:30", tz="UTC")
    assert df["close"].tolist() == [50.0, 50.01, 50.02]
    assert df["vwap"].isna().all()
    assert df["trade_count"].isna().all()


def test_date_only_end_includes_the_whole_new_york_day(cache):
    # 15:59 ET on 2024-03-15 is 19:59Z; 19:00 ET after-hours is 23:00Z - both belong to the 15th.
    frame = minute_frame("2024-03-15 19:59", 1)
    late = minute_frame("2024-03-15 23:00", 1, base=51.0)
    cache.set("AAPL", pd.concat([frame, late]), source="alpaca", timeframe="1Min")
    df = cache.get("AAPL", "2024-03-15", "2024-03-15", timeframe="1Min")
    assert len(df) == 2
    # ... and nothing from the next New York day (00:30 ET on the 16th is 04:30Z).
    cache.set("AAPL", minute_frame("2024-03-16 04:30", 1, base=52.0), source="alpaca", timeframe="1Min")
    assert len(cache.get("AAPL", "2024-03-15", "2024-03-15", timeframe="1Min")) == 2
    # Datetime bounds are exact instants.
    df = cache.get("AAPL", "2024-03-15T19:59:00Z", "2024-03-15T19:59:00Z", timeframe="1Min")
    assert df["close"].tolist() == [50.0]


def test_timeframe_is_part_of_the_key(cache):
    hourly = pd.DataFrame(
        {"open": [10.0], "high": [11.0], "low": [9.0], "close": [10.5], "volume": [5.0]},
        index=pd.DatetimeIndex(["2024-01-02 15:00"], tz="UTC"),
    )
    cache.set("SPY", DAILY, source="alpaca", timeframe="1Day")
    cache.set("SPY", hourly, source="alpaca", timeframe="1Hour")
    assert cache.get("SPY", "2024-01-02", "2024-01-02")["close"].tolist() == [101.0]
    assert cache.get("SPY", "2024-01-02", "2024-01-02", timeframe="1Hour")["close"].tolist() == [10.5]


def test_upsert_replaces_a_bar(cache):
    cache.set("SPY", DAILY, source="alpaca")
    changed = DAILY.iloc[[1]].copy()
    changed["close"] = 101.75
    assert cache.set("SPY", changed, source="alpaca") == 1
    df = cache.get("SPY", "2024-01-01", "2024-01-31")
    assert df["close"].tolist() == [101.0, 101.75, 102.0]
    assert cache.get_stats()["total_entries"] == 3


def test_symbols_are_upper_case_everywhere(cache):
    cache.set("brk.b", DAILY, source="alpaca")
    assert cache.get_symbols() == ["BRK.B"]
    assert cache.get("Brk.B", "2024-01-01", "2024-01-31") is not None


@pytest.mark.parametrize(
    "frame",
    [
        DAILY.reset_index().rename(columns={"Date": "date"}),
        DAILY.reset_index().rename(columns={"Date": "timestamp"}),
        DAILY.rename_axis("whatever"),
        DAILY.rename_axis(None),
    ],
    ids=["date-column", "timestamp-column", "named-index", "unnamed-index"],
)
def test_accepts_index_or_date_column(cache, frame):
    assert cache.set("SPY", frame, source="alpaca") == 3
    assert cache.get("SPY", "2024-01-02", "2024-01-04")["open"].tolist() == [100.0, 101.0, 102.5]


def test_accepts_alpaca_py_frame_with_ny_midnight_daily_stamps(cache):
    # alpaca-py: (symbol, timestamp) MultiIndex; daily bars stamped New York midnight in UTC.
    idx = pd.MultiIndex.from_tuples(
        [
            ("AAPL", pd.Timestamp("2024-03-08 05:00", tz="UTC")),  # winter: EST
            ("AAPL", pd.Timestamp("2024-03-11 04:00", tz="UTC")),  # summer: EDT
            ("MSFT", pd.Timestamp("2024-03-08 05:00", tz="UTC")),
        ],
        names=["symbol", "timestamp"],
    )
    frame = pd.DataFrame(
        {
            "open": [170.0, 172.0, 400.0],
            "high": [171.0, 173.0, 401.0],
            "low": [169.0, 171.0, 399.0],
            "close": [170.5, 172.5, 400.5],
            "volume": [10.0, 11.0, 12.0],
            "trade_count": [7.0, 8.0, 9.0],
            "vwap": [170.2, 172.2, 400.2],
        },
        index=idx,
    )
    assert cache.set("AAPL", frame, source="alpaca") == 2
    df = cache.get("AAPL", "2024-03-01", "2024-03-31")
    assert list(df.index) == [pd.Timestamp("2024-03-08"), pd.Timestamp("2024-03-11")]
    assert df["trade_count"].tolist() == [7, 8]


def test_naive_intraday_times_are_utc_and_aware_are_converted(cache):
    naive = minute_frame("2024-03-15 13:30", 1)
    naive.index = naive.index.tz_localize(None)
    cache.set("AAPL", naive, source="alpaca", timeframe="1Min")
    aware = minute_frame("2024-03-15 13:31", 1, base=60.0)
    aware.index = aware.index.tz_convert("America/New_York")
    cache.set("AAPL", aware, source="alpaca", timeframe="1Min")
    df = cache.get("AAPL", "2024-03-15", "2024-03-15", timeframe="1Min")
    assert list(df.index) == [pd.Timestamp("2024-03-15 13:30", tz="UTC"), pd.Timestamp("2024-03-15 13:31", tz="UTC")]


def test_source_none_returns_one_row_per_bar_by_priority(cache):
    demo = DAILY.copy()
    demo["close"] = [1.0, 1.0, 1.0]
    demo["low"] = 0.5
    cache.set("SPY", demo, source="demo")
    cache.set("SPY", DAILY.iloc[:2], source="alpaca")
    df = cache.get("SPY", "2024-01-01", "2024-01-31")
    # alpaca outranks demo where both hold a bar; demo fills the bar alpaca lacks.
    assert df["close"].tolist() == [101.0, 101.5, 1.0]
    assert cache.get("SPY", "2024-01-01", "2024-01-31", source="demo")["close"].tolist() == [1.0, 1.0, 1.0]


# -- TTL -----------------------------------------------------------------------------------


def expiry_of(cache, symbol, ts):
    """A daily bar's expiry, or (intraday) the expiry of the session chunk holding ``ts``."""
    return cache.conn.execute(
        "SELECT b.expires_at FROM bars b JOIN series s USING (series_id) WHERE s.symbol=? AND b.ts=? "
        "UNION ALL SELECT c.expires_at FROM bar_chunks c JOIN series s USING (series_id) "
        "WHERE s.symbol=? AND ? BETWEEN c.first_ts AND c.last_ts",
        (symbol, ts, symbol, ts),
    ).fetchone()[0]


def one_day(day: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"open": [10.0], "high": [10.0], "low": [10.0], "close": [10.0], "volume": [1.0]},
        index=pd.DatetimeIndex([day]),
    )


# 2025-01-03 02:00Z is still 2025-01-02 (21:00) in New York: today_et = 2025-01-02.
NOW = datetime(2025, 1, 3, 2, 0, tzinfo=timezone.utc)
NOW_S = int(NOW.timestamp())
TEN_YEARS = 3652 * 86400


@freeze_time(NOW)
def test_ttl_age_uses_new_york_date(cache):
    cache.set("OLD", one_day("2024-12-31"), source="alpaca")  # age 2 days -> historical
    cache.set("NEW", one_day("2025-01-01"), source="alpaca")  # age 1 day (a UTC clock would say 2)
    cache.set("TOD", one_day("2025-01-02"), source="alpaca")  # age 0
    assert expiry_of(cache, "OLD", 1735603200) == NOW_S + TEN_YEARS
    assert expiry_of(cache, "NEW", 1735689600) == NOW_S + 24 * 3600
    assert expiry_of(cache, "TOD", 1735776000) == NOW_S + 24 * 3600


@freeze_time(NOW)
def test_ttl_of_intraday_bars_uses_their_new_york_session_date(cache):
    # 2025-01-01 04:30Z is 2024-12-31 23:30 in New York: age 2 -> historical.
    cache.set("X", minute_frame("2025-01-01 04:30", 1), source="alpaca", timeframe="1Min")
    # 2025-01-01 05:30Z is 2025-01-01 00:30 in New York: age 1 -> 24 hours.
    cache.set("Y", minute_frame("2025-01-01 05:30", 1), source="alpaca", timeframe="1Min")
    assert expiry_of(cache, "X", 1735705800) == NOW_S + TEN_YEARS
    assert expiry_of(cache, "Y", 1735709400) == NOW_S + 24 * 3600


def test_ttl_hours_override_and_zero_means_expired(cache):
    with freeze_time(NOW) as frozen:
        cache.set("A", one_day("2020-01-02"), source="alpaca", ttl_hours=48)
        cache.set("Z", one_day("2020-01-02"), source="alpaca", ttl_hours=0)
        assert expiry_of(cache, "A", 1577923200) == NOW_S + 48 * 3600
        assert cache.get("Z", "2020-01-01", "2020-01-31") is None
        assert not cache.exists("Z", "2020-01-02")
        assert cache.get("A", "2020-01-01", "2020-01-31") is not None
        frozen.tick(48 * 3600)  # expiry is exclusive: at the expiry instant the row is gone
        assert cache.get("A", "2020-01-01", "2020-01-31") is None
        assert cache.get_stats()["expired_entries"] == 2


def test_recent_bars_expire_after_24_hours(cache):
    with freeze_time(NOW) as frozen:
        cache.set("NEW", one_day("2025-01-02"), source="alpaca")
        frozen.tick(24 * 3600 - 1)
        assert cache.get("NEW", "2025-01-02", "2025-01-02") is not None
        frozen.tick(1)
        assert cache.get("NEW", "2025-01-02", "2025-01-02") is None
        assert cache.cleanup_expired() == 1
        assert cache.get_stats()["total_entries"] == 0


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Tokyo"])
def test_ttl_is_the_same_whatever_the_machine_time_zone(tz, tmp_path):
    if os.environ.get("CACHELIB_TZ_CHILD"):
        pytest.skip("already inside the TZ run")
    env = dict(os.environ, TZ=tz, CACHELIB_TZ_CHILD="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "ttl and not machine"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed" in result.stdout  # 4 TTL tests x 2 engines


# -- exists / delete / cleanup / vacuum / symbols / stats ------------------------------------


def test_exists_delete_and_symbols(cache):
    cache.set("SPY", DAILY, source="alpaca")
    cache.set("SPY", DAILY, source="demo")
    cache.set("QQQ", DAILY, source="alpaca")
    assert cache.exists("SPY", "2024-01-03")
    assert not cache.exists("SPY", "2024-01-05", "2024-01-10")
    assert cache.delete("SPY", "2024-01-03", "2024-01-04", source="demo") == 2
    assert cache.get("SPY", "2024-01-01", "2024-01-31", source="demo")["close"].tolist() == [101.0]
    assert cache.delete("SPY") == 4
    assert cache.get_symbols() == ["QQQ"]
    assert cache.get_symbols(asset_type="option") == []


def test_cleanup_and_vacuum(cache):
    with freeze_time(NOW):
        cache.set("A", DAILY, source="alpaca", ttl_hours=0)
        cache.set("B", DAILY, source="alpaca")
        cache.record_coverage("A", ["2024-01-05"], source="alpaca", ttl_hours=0)
        assert cache.cleanup_expired() == 4  # 3 bars + 1 coverage row
        assert cache.get_stats()["total_entries"] == 3
        assert cache.cleanup_expired() == 0
        reclaimed = cache.vacuum()
        assert isinstance(reclaimed, int) and reclaimed >= 0
        assert cache.get("B", "2024-01-01", "2024-01-31")["close"].tolist() == [101.0, 101.5, 102.0]
        assert cache.get_stats()["total_entries"] == 3


def test_vacuum_rebuilds_the_sqlite_file(sqlite_cache):
    cache = sqlite_cache
    with freeze_time(NOW):
        cache.set("A", DAILY, source="alpaca", ttl_hours=0)
        cache.set("B", DAILY, source="alpaca")
        assert cache.cleanup_expired() == 3
        wal = cache.db_path.with_name(cache.db_path.name + "-wal")
        before = cache.db_path.stat().st_size + wal.stat().st_size
        assert wal.stat().st_size > 0  # the writes above are still in the WAL
        reclaimed = cache.vacuum()
        # Rebuilt: every b-tree (each table and index, and sqlite_master) holds its few rows in
        # its root page(s), so the file is exactly SQLite's own page count, the WAL is emptied,
        # and the report is exactly that decrease.
        pages = cache.conn.execute("PRAGMA page_count").fetchone()[0]
        btrees = cache.conn.execute("SELECT count(*) FROM sqlite_master WHERE rootpage > 0").fetchone()[0]
        assert btrees + 1 <= pages <= btrees + 4  # + sqlite_master's 1-3 pages of schema text
        assert cache.db_path.stat().st_size == pages * 4096
        assert wal.stat().st_size == 0
        assert reclaimed == before - pages * 4096
        assert reclaimed > 0
        assert cache.get("B", "2024-01-01", "2024-01-31") is not None


def pg_heap_pages(url: str, table: str) -> int:
    return pg_sql(url, "SELECT pg_relation_size(%s) / 8192", (table,))[0][0]


def pg_schema_bytes(url: str) -> int:
    """Bytes of every table of the URL's schema (with indexes, TOAST, free-space maps)."""
    return pg_sql(url, "SELECT SUM(pg_total_relation_size(c.oid))::bigint FROM pg_class c JOIN pg_namespace n "
                       "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'")[0][0]


def test_vacuum_analyzes_and_gives_back_the_emptied_tail_on_postgresql(pg_url):
    """PostgreSQL's counterpart: ``vacuum()`` is VACUUM ANALYZE of every cache table, and the
    pages that only expired rows filled (at the end of a table) go back to the system."""
    days = pd.bdate_range("2001-01-01", periods=2000)
    many = pd.DataFrame({"open": 10.0, "high": 10.0, "low": 10.0, "close": 10.0, "volume": 1.0}, index=days)
    with freeze_time(NOW), TradingCacheManager(pg_url) as cache:
        cache.set("B", DAILY, source="alpaca")
        cache.set("A", many, source="alpaca", ttl_hours=0)  # appended after B's rows
        assert pg_heap_pages(pg_url, "bars") >= 10
        assert cache.cleanup_expired() == 2000
        before = pg_schema_bytes(pg_url)
        reclaimed = cache.vacuum()
        assert pg_heap_pages(pg_url, "bars") == 1  # B's 3 rows; the emptied tail is truncated
        # The report is the schema's real decrease (the first VACUUM also adds free-space and
        # visibility maps to every table, so it is less than the bars' own shrinkage).
        assert reclaimed == before - pg_schema_bytes(pg_url)
        assert reclaimed > 0
        analyzed = pg_sql(pg_url, "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() "
                                  "AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL ORDER BY relname")
        assert [r[0] for r in analyzed] == sorted(["action_coverage", "bar_chunks", "bars", "corporate_actions",
                                                   "coverage", "raw_options_chain", "raw_options_history",
                                                   "series", "trade_history"])
        assert cache.get("B", "2024-01-01", "2024-01-31")["close"].tolist() == [101.0, 101.5, 102.0]


def test_stats_keys_and_hit_ratio(cache):
    cache.set("SPY", DAILY, source="alpaca")
    cache.get("SPY", "2024-01-01", "2024-01-31")
    cache.get("SPY", "2024-01-01", "2024-01-31")
    cache.get("NONE", "2024-01-01", "2024-01-31")
    stats = cache.get_stats()
    for key in ("total_entries", "unique_symbols", "sources", "asset_types", "date_range", "expired_entries",
                "db_size_mb", "db_path", "hits", "misses", "hit_ratio", "tables"):
        assert key in stats
    assert stats["total_entries"] == 3
    assert stats["unique_symbols"] == 1
    assert stats["sources"] == ["alpaca"]
    assert stats["asset_types"] == ["stock"]
    assert stats["date_range"] == {"start": "2024-01-02", "end": "2024-01-04"}
    assert (stats["hits"], stats["misses"]) == (2, 1)
    assert stats["hit_ratio"] == pytest.approx(2 / 3, abs=1e-4)
    assert stats["tables"]["bars"] == 3
    assert stats["db_path"] == str(cache.db_path)


# -- bad input: a clear ValueError and the store unchanged ------------------------------------


def bad(**changes) -> pd.DataFrame:
    frame = DAILY.copy()
    for col, values in changes.items():
        frame[col] = values
    return frame


BAD_INPUTS = {
    "no close": (DAILY.drop(columns="close"), "close"),
    "no time": (DAILY.reset_index(drop=True), "time"),
    "nan price": (bad(open=[100.0, np.nan, 102.5]), "NaN"),
    "inf price": (bad(close=[101.0, np.inf, 102.0], high=[101.5, np.inf, 103.0]), "infinite"),
    "negative volume": (bad(volume=[1, -5, 1]), "negative volume"),
    "high below": (bad(high=[100.5, 102.0, 103.0]), "high"),
    "low above": (bad(low=[99.5, 101.2, 101.0]), "low"),
    "duplicate times": (
        DAILY.set_axis(pd.DatetimeIndex(["2024-01-02", "2024-01-02", "2024-01-04"])), "duplicate"
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_frames_raise_and_store_nothing(cache, name):
    cache.set("SPY", DAILY.iloc[:1], source="alpaca")
    before = table_snapshot(cache)
    frame, words = BAD_INPUTS[name]
    with pytest.raises(ValueError, match=words):
        cache.set("SPY", frame, source="alpaca")
    assert table_snapshot(cache) == before


@pytest.mark.parametrize("symbol", ["", "   ", "SP Y", "AAPL;DROP", "ÄPL", None])
def test_bad_symbols_raise(cache, symbol):
    with pytest.raises(ValueError, match="symbol"):
        cache.set(symbol, DAILY, source="alpaca")
    assert table_snapshot(cache) == EMPTY


@pytest.mark.parametrize("timeframe", ["1Sec", "60Min", "2Day", "minute", "", "7Month"])
def test_unknown_timeframe_raises(cache, timeframe):
    with pytest.raises(ValueError, match="timeframe"):
        cache.set("SPY", DAILY, source="alpaca", timeframe=timeframe)
    with pytest.raises(ValueError, match="timeframe"):
        cache.get("SPY", "2024-01-01", "2024-01-02", timeframe=timeframe)


def test_bad_ranges_and_ttl_raise(cache):
    with pytest.raises(ValueError, match="after"):
        cache.get("SPY", "2024-02-01", "2024-01-01")
    with pytest.raises(ValueError, match="date"):
        cache.get("SPY", "not-a-date", "2024-01-01")
    with pytest.raises(ValueError, match="ttl_hours"):
        cache.set("SPY", DAILY, source="alpaca", ttl_hours=-1)
    with pytest.raises(ValueError, match="source"):
        cache.set("SPY", DAILY, source="")
    assert table_snapshot(cache) == EMPTY


def test_errors_are_raised_not_swallowed(cache):
    cache.set("SPY", DAILY, source="alpaca")
    cache.conn.execute("DROP TABLE bars")  # a broken store must not look like a cache miss
    with pytest.raises(error_types(cache)[0], match="bars"):
        cache.get("SPY", "2024-01-01", "2024-01-31")


def test_a_failed_transaction_rolls_back_everything(cache):
    with pytest.raises(RuntimeError), cache.atomic():
        cache.set("SPY", DAILY, source="alpaca")
        cache.record_coverage("SPY", ["2024-01-02"], source="alpaca")
        raise RuntimeError("boom")
    assert table_snapshot(cache) == EMPTY  # no bar, no coverage, not even the series row


def test_not_a_sqlite_file_is_left_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 10)
    before = path.read_bytes()
    with pytest.raises(DatabaseFileError, match=str(path.name)):
        TradingCacheManager(path)
    assert path.read_bytes() == before
    with pytest.raises(DatabaseFileError, match="directory"):
        TradingCacheManager(tmp_path)


def test_default_path_comes_from_env_and_parents_are_created(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "er" / "c.db"
    monkeypatch.setenv("TRADING_CACHE_DB", str(target))
    cache = TradingCacheManager()
    assert cache.db_path == target.resolve()
    assert target.exists()
    monkeypatch.delenv("TRADING_CACHE_DB")
    monkeypatch.chdir(tmp_path)
    assert TradingCacheManager().db_path == (tmp_path / ".cache" / "trading_cache.db").resolve()


def test_connection_settings(sqlite_cache):
    conn = sqlite_cache.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name='bars'").fetchone()[0]
    assert "WITHOUT ROWID" in ddl and "PRIMARY KEY (series_id, ts)" in ddl
    indexes = conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='bars'").fetchall()
    assert [i for i in indexes if not i[0].startswith("sqlite_autoindex")] == []
    cols = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(bars)")}
    assert cols["ts"] == "INTEGER" and cols["expires_at"] == "INTEGER"


def test_connection_settings_on_postgresql(pg_url):
    """PostgreSQL's counterpart: reads in autocommit (each its own snapshot), a writer waits at
    most ``timeout`` for a lock (SQLite's busy_timeout), integer keys and times as BIGINT, the
    bars keyed (series_id, ts) with no other index, text compared byte-wise as in SQLite."""
    with TradingCacheManager(pg_url) as cache:
        conn = cache.conn
        assert not conn.in_transaction
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "0"
        with cache.atomic() as inside:
            assert inside.execute("SHOW lock_timeout").fetchone()[0] == "5s"
        assert not conn.in_transaction
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "0"  # SET LOCAL: this transaction only
    cols = dict(pg_sql(pg_url, "SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_schema = current_schema() AND table_name = 'bars'"))
    assert cols["ts"] == cols["expires_at"] == cols["series_id"] == cols["trade_count"] == "bigint"
    assert cols["close"] == cols["volume"] == "double precision"
    assert pg_sql(pg_url, "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                          "AND tablename = 'bars'") == [
        (f"CREATE UNIQUE INDEX bars_pkey ON {pg_sql(pg_url, 'SELECT current_schema()')[0][0]}.bars "
         "USING btree (series_id, ts)",)]
    collations = pg_sql(pg_url, "SELECT DISTINCT collation_name FROM information_schema.columns "
                                "WHERE table_schema = current_schema() AND data_type = 'text' "
                                "AND table_name <> 'cachelib_meta'")
    assert collations == [("C",)]


def test_a_schema_of_another_application_is_refused_and_left_untouched(pg_url):
    """The counterpart of a foreign SQLite file: a schema holding tables that are not a cache's."""
    schema = pg_sql(pg_url, "SHOW search_path")[0][0]
    pg_sql(pg_url, f'CREATE SCHEMA "{schema}"')
    pg_sql(pg_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    pg_sql(pg_url, "INSERT INTO notes VALUES (1, 'my notes, not a cache')")
    with pytest.raises(DatabaseFileError, match=r"belongs to another application \(its schema holds tables that "
                                                r"are not a cache's: notes\)"):
        TradingCacheManager(pg_url)
    assert pg_sql(pg_url, "SELECT table_name FROM information_schema.tables "
                          "WHERE table_schema = current_schema()") == [("notes",)]
    assert pg_sql(pg_url, "SELECT * FROM notes") == [(1, "my notes, not a cache")]


@pytest.mark.parametrize("version, words", [(99, "has schema version 99, newer than this cachelib understands"),
                                            (6, "is at schema v6; this cachelib has no PostgreSQL migration")])
def test_a_postgresql_cache_of_another_schema_version_is_refused(pg_url, version, words):
    with TradingCacheManager(pg_url) as cache:
        cache.set("SPY", DAILY, source="alpaca")
        before = table_snapshot(cache)
    pg_sql(pg_url, "UPDATE cachelib_meta SET value = %s WHERE key = 'schema_version'", (version,))
    with pytest.raises(DatabaseFileError, match=words):
        TradingCacheManager(pg_url)
    pg_sql(pg_url, "UPDATE cachelib_meta SET value = 7 WHERE key = 'schema_version'")
    with TradingCacheManager(pg_url) as cache:
        assert table_snapshot(cache) == before


def test_the_cache_url_from_env_wins_over_the_file(pg_url, tmp_path, monkeypatch):
    """``TRADING_CACHE_URL`` takes precedence over ``TRADING_CACHE_DB``; no file is created."""
    target = tmp_path / "c.db"
    monkeypatch.setenv("TRADING_CACHE_DB", str(target))
    monkeypatch.setenv("TRADING_CACHE_URL", pg_url)
    with TradingCacheManager() as cache:
        assert cache.db_path == pg_url.replace("postgresql://postgres:@", "postgresql://postgres:***@")
        assert cache.set("SPY", DAILY, source="alpaca") == 3
    assert not target.exists()
    with TradingCacheManager(pg_url) as cache:
        assert cache.get("SPY", "2024-01-02", "2024-01-04")["close"].tolist() == [101.0, 101.5, 102.0]


# -- schema migrations -----------------------------------------------------------------------


def test_upgrades_a_version_1_file(tmp_path):
    path = tmp_path / "v1.db"
    from cachelib.store import MIGRATIONS

    conn = sqlite3.connect(path)
    MIGRATIONS[0][2](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO trade_history (trade_id, symbol, entry_date, entry_price, quantity) "
        "VALUES ('t1', 'SPY', 1704205800, 470.0, 10)"
    )
    conn.commit()
    conn.close()
    cache = TradingCacheManager(path)
    assert cache.schema_version == SCHEMA_VERSION == 7  # v7: corporate actions, option history (issue 11)
    cols = {r[1] for r in cache.conn.execute("PRAGMA table_info(trade_history)")}
    assert {"max_profit_pct", "max_drawdown_pct"} <= cols
    assert cache.missing_sessions("SPY", "2024-01-02", "2024-01-02") == [date(2024, 1, 2)]
    assert cache.get_trade_history()["trade_id"].tolist() == ["t1"]


def test_upgrades_the_seed_market_cache_layout(tmp_path):
    path = tmp_path / "seed.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE market_cache (
            id INTEGER PRIMARY KEY AUTOINCREMENT, asset_type TEXT NOT NULL, symbol TEXT NOT NULL,
            trading_date TEXT NOT NULL, source TEXT NOT NULL, open REAL NOT NULL, high REAL NOT NULL,
            low REAL NOT NULL, close REAL NOT NULL, volume INTEGER NOT NULL, vwap REAL, transactions INTEGER,
            cached_at TEXT NOT NULL, expires_at TEXT NOT NULL,
            UNIQUE(asset_type, symbol, trading_date, source));
        INSERT INTO market_cache VALUES
            (1, 'stock', 'SPY', '2024-01-02', 'alpaca', 470, 472, 469, 471, 1000, 470.5, 10,
             '2024-01-05T00:00:00', '2034-01-05T00:00:00'),
            (2, 'stock', 'SPY', '2024-01-02T15:00:00', 'alpaca_1Hour', 470, 471, 469.5, 470.2, 100, NULL, NULL,
             '2024-01-05T00:00:00', '2034-01-05T00:00:00');
        """
    )
    conn.commit()
    conn.close()
    cache = TradingCacheManager(path)
    assert cache.get("SPY", "2024-01-02", "2024-01-02")["close"].tolist() == [471.0]
    assert cache.get("SPY", "2024-01-02", "2024-01-02", timeframe="1Hour")["close"].tolist() == [470.2]


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DatabaseFileError, match="newer"):
        TradingCacheManager(path)


# -- coverage ------------------------------------------------------------------------------


def test_missing_sessions_skip_weekends_and_holidays(cache):
    # Jan 2024: Jan 1 holiday, weekends 6-7, 13-14, Jan 15 MLK day.
    expected = [date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9, 10, 11, 12, 16)]
    assert cache.missing_sessions("SPY", "2024-01-01", "2024-01-16") == expected
    cache.set("SPY", DAILY, source="alpaca")  # daily bars 2, 3, 4 count as covered
    cache.record_coverage("SPY", [date(2024, 1, 5), date(2024, 1, 8)], source="alpaca")
    assert cache.missing_sessions("SPY", "2024-01-01", "2024-01-16") == expected[5:]
    assert cache.missing_sessions("SPY", "2024-01-01", "2024-01-16", source="demo") == expected
    # Intraday coverage is only what was recorded, never inferred from bars.
    assert cache.missing_sessions("SPY", "2024-01-02", "2024-01-03", timeframe="1Min") == expected[:2]


def test_recent_coverage_expires_like_bars(cache):
    with freeze_time(NOW) as frozen:
        cache.record_coverage("SPY", ["2024-12-31", "2025-01-02"], source="alpaca")
        assert cache.missing_sessions("SPY", "2024-12-31", "2025-01-02") == []
        frozen.tick(24 * 3600)
        assert cache.missing_sessions("SPY", "2024-12-31", "2025-01-02") == [date(2025, 1, 2)]


# -- concurrency and durability --------------------------------------------------------------


def test_threads_share_a_manager(cache):
    from concurrent.futures import ThreadPoolExecutor

    def write(i: int) -> int:
        frame = minute_frame("2024-03-15 13:30", 50, base=10.0 + i)
        return cache.set(f"S{i}", frame, source="alpaca", timeframe="1Min")

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(write, range(16))) == 800
    assert cache.get_stats()["total_entries"] == 800


def test_reads_inside_a_transaction_see_its_own_writes(cache):
    with cache.atomic():
        cache.set("AAPL", minute_frame("2024-03-11 13:30", 3000), source="alpaca", timeframe="1Min")
        assert len(cache.get("AAPL", "2024-03-01", "2024-03-31", timeframe="1Min")) == 3000


def test_in_memory_databases_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="in-memory"):
        TradingCacheManager(":memory:")
    assert not (tmp_path / ":memory:").exists()


def test_a_failing_commit_releases_the_transaction(cache):
    conn = cache.conn
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE child (pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(error_types(cache)[1]), cache.atomic():
        conn.execute("INSERT INTO child VALUES (42)")  # fails only at COMMIT
    assert not conn.in_transaction
    assert cache.set("SPY", DAILY, source="alpaca") == 3  # the connection still writes


def test_delete_from_an_instant_drops_the_coverage_of_its_new_york_session(cache):
    cache.set("AAPL", minute_frame("2024-01-02 23:00", 120), source="alpaca", timeframe="1Min")
    cache.record_coverage("AAPL", ["2024-01-02"], source="alpaca", timeframe="1Min")
    # 2024-01-03 00:00 UTC is still 2024-01-02 (19:00) in New York: its after-hours bars go.
    assert cache.delete("AAPL", start=datetime(2024, 1, 3, 0, 0), timeframe="1Min") == 60
    assert cache.missing_sessions("AAPL", "2024-01-02", "2024-01-02", timeframe="1Min") == [date(2024, 1, 2)]


def test_count_and_delete_select_the_same_bars(cache):
    cache.set("SPY", DAILY, source="alpaca")
    cache.set("SPY", DAILY, source="alpaca", asset_type="option")
    assert cache.count_bars("SPY") == 3
    assert cache.count_bars("SPY", asset_type=None) == 6
    assert cache.delete("SPY") == 3


def test_stats_date_range_uses_new_york_dates_for_intraday_bars(cache):
    cache.set("AAPL", minute_frame("2024-01-03 00:30", 1), source="alpaca", timeframe="1Min")  # 19:30 ET Jan 2
    assert cache.get_stats()["date_range"] == {"start": "2024-01-02", "end": "2024-01-02"}


def test_timestamp_strings_with_offsets_across_a_dst_change(cache):
    frame = pd.DataFrame({
        "timestamp": ["2024-03-08T15:59:00-05:00", "2024-03-11T09:30:00-04:00"],
        "open": [10.0, 11.0], "high": [10.0, 11.0], "low": [10.0, 11.0], "close": [10.0, 11.0], "volume": [1, 1],
    })
    assert cache.set("AAPL", frame, source="alpaca", timeframe="1Min") == 2
    df = cache.get("AAPL", "2024-03-08", "2024-03-11", timeframe="1Min")
    assert list(df.index) == [pd.Timestamp("2024-03-08 20:59", tz="UTC"), pd.Timestamp("2024-03-11 13:30", tz="UTC")]

