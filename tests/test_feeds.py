"""The feed in every bar's identity (issue 11): series, coverage, migration v6 and the sync.

A series is ``(asset_type, symbol, timeframe, source, feed)``. Bars of different feeds never
mix; a read without ``feed`` takes, per source, the one best-ranked feed (sip, delayed_sip,
iex, other named feeds alphabetically, "unknown" last) that has valid bars in the range.
Expected values are literals of the hand-written data below. Every test that touches the cache
runs on both engines (the ``cache`` / ``cache_url`` fixtures); migration v6 is a SQLite file's
history and stays on SQLite, with the PostgreSQL counterpart of its key constraints.
"""

from __future__ import annotations

import sqlite3
from datetime import date

import pandas as pd
import psycopg
import pytest
from alpaca_stub import TEST_KEY, TEST_SECRET, AlpacaStub, make_minute_bars, ny_midnight_utc

from cachelib import cache_adapter
from cachelib.demo import DemoSource
from cachelib.sources import AlpacaSource
from cachelib.store import MIGRATIONS, TradingCacheManager
from cachelib.store.series import FEED_PRIORITY, UNKNOWN_FEED, feed_rank
from cachelib.sync import SyncReport, get_market_data, sync_bars

# XNYS sessions, by hand: January 2024 starts on Tue 2nd (New Year's Day closed).
JAN_FIRST_WEEK = [date(2024, 1, d) for d in (2, 3, 4, 5)]
FAR_FUTURE = 4_102_444_800  # 2100-01-01T00:00Z, an expiry that never passes in these tests


def daily_frame(days: list[date], closes: list[float], volume: float = 1000.0) -> pd.DataFrame:
    """Daily bars with the given closes (open = close, high = close + 1, low = close / 2)."""
    return pd.DataFrame(
        {"open": closes, "high": [c + 1 for c in closes], "low": [c / 2 for c in closes],
         "close": closes, "volume": [volume] * len(closes), "vwap": closes, "trade_count": [10] * len(closes)},
        index=pd.DatetimeIndex(pd.to_datetime(days), name="date"),
    )


def minute_frame(stamps: list[str], closes: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"open": closes, "high": [c + 0.5 for c in closes], "low": [c - 0.5 for c in closes], "close": closes,
         "volume": [100.0] * len(closes), "vwap": closes, "trade_count": [1] * len(closes)},
        index=pd.DatetimeIndex(pd.to_datetime(stamps, utc=True), name="timestamp"),
    )


def closes(frame: pd.DataFrame | None) -> list[float]:
    assert frame is not None
    return frame["close"].tolist()


# -- the priority rule -------------------------------------------------------------------------


def test_feed_priority_is_sip_delayed_sip_iex_then_named_then_unknown():
    assert FEED_PRIORITY == ("sip", "delayed_sip", "iex")
    feeds = ["unknown", "overnight", "iex", "boats", "sip", "otc", "delayed_sip", "demo"]
    assert sorted(feeds, key=feed_rank) == [
        "sip", "delayed_sip", "iex", "boats", "demo", "otc", "overnight", "unknown"]


def test_each_feed_is_its_own_series_and_get_picks_one_by_priority(cache):
    days = JAN_FIRST_WEEK
    cache.set("AAPL", daily_frame(days, [10.0, 11.0, 12.0, 13.0], volume=1.65e6), source="alpaca", feed="iex")
    cache.set("AAPL", daily_frame(days, [20.0, 21.0, 22.0, 23.0], volume=46.6e6), source="alpaca", feed="sip")
    cache.set("AAPL", daily_frame(days, [30.0, 31.0, 32.0, 33.0]), source="alpaca")  # no feed: "unknown"
    assert closes(cache.get("AAPL", "2024-01-02", "2024-01-05", source="alpaca", feed="iex")) == [10, 11, 12, 13]
    assert closes(cache.get("AAPL", "2024-01-02", "2024-01-05", source="alpaca", feed="SIP ")) == [20, 21, 22, 23]
    assert closes(cache.get("AAPL", "2024-01-02", "2024-01-05", source="alpaca", feed="unknown")) == [30, 31, 32, 33]
    # Without a feed: sip, whole (its volume too: never IEX volume under a SIP price).
    best = cache.get("AAPL", "2024-01-02", "2024-01-05", source="alpaca")
    assert closes(best) == [20, 21, 22, 23] and best["volume"].tolist() == [46.6e6] * 4
    assert closes(cache.get("AAPL", "2024-01-02", "2024-01-05")) == [20, 21, 22, 23]
    assert closes(cache.get("AAPL", "2024-01-02", "2024-01-05", feed="iex")) == [10, 11, 12, 13]
    assert cache.get("AAPL", "2024-01-02", "2024-01-05", source="alpaca", feed="delayed_sip") is None
    rows = cache.conn.execute("SELECT source, feed FROM series WHERE symbol = 'AAPL' ORDER BY feed").fetchall()
    assert rows == [("alpaca", "iex"), ("alpaca", "sip"), ("alpaca", "unknown")]


def test_named_feeds_rank_alphabetically_before_unknown(cache):
    day = [date(2024, 1, 2)]
    cache.set("SPY", daily_frame(day, [1.0]), source="alpaca")
    assert closes(cache.get("SPY", "2024-01-02", "2024-01-02", source="alpaca")) == [1.0]
    cache.set("SPY", daily_frame(day, [2.0]), source="alpaca", feed="overnight")
    cache.set("SPY", daily_frame(day, [3.0]), source="alpaca", feed="otc")
    assert closes(cache.get("SPY", "2024-01-02", "2024-01-02", source="alpaca")) == [3.0]  # otc < overnight
    cache.set("SPY", daily_frame(day, [4.0]), source="alpaca", feed="boats")
    assert closes(cache.get("SPY", "2024-01-02", "2024-01-02", source="alpaca")) == [4.0]
    cache.set("SPY", daily_frame(day, [5.0]), source="alpaca", feed="iex")
    assert closes(cache.get("SPY", "2024-01-02", "2024-01-02", source="alpaca")) == [5.0]
    cache.set("SPY", daily_frame(day, [6.0]), source="alpaca", feed="delayed_sip")
    assert closes(cache.get("SPY", "2024-01-02", "2024-01-02", source="alpaca")) == [6.0]


def test_the_chosen_feed_is_the_best_one_with_bars_in_range_and_never_a_blend(cache):
    # iex holds Jan 2-5, sip only Jan 4-5.
    cache.set("MSFT", daily_frame(JAN_FIRST_WEEK, [10.0, 11.0, 12.0, 13.0]), source="alpaca", feed="iex")
    cache.set("MSFT", daily_frame(JAN_FIRST_WEEK[2:], [22.0, 23.0]), source="alpaca", feed="sip")
    assert closes(cache.get("MSFT", "2024-01-02", "2024-01-03", source="alpaca")) == [10.0, 11.0]  # sip has none
    assert closes(cache.get("MSFT", "2024-01-02", "2024-01-05", source="alpaca")) == [22.0, 23.0]  # sip only
    assert closes(cache.get("MSFT", "2024-01-02", "2024-01-05")) == [22.0, 23.0]


def test_an_expired_feed_does_not_answer(cache):
    cache.set("MSFT", daily_frame(JAN_FIRST_WEEK[:1], [10.0]), source="alpaca", feed="iex")
    cache.set("MSFT", daily_frame(JAN_FIRST_WEEK[:1], [20.0]), source="alpaca", feed="sip", ttl_hours=0)
    assert closes(cache.get("MSFT", "2024-01-02", "2024-01-02", source="alpaca")) == [10.0]


def test_source_priority_still_applies_per_bar_with_one_feed_per_source(cache):
    days = JAN_FIRST_WEEK[:2]
    cache.set("IBM", daily_frame(days[:1], [1.0]), source="alpaca", feed="iex")
    cache.set("IBM", daily_frame(days, [2.0, 3.0]), source="demo", feed="demo")
    cache.set("IBM", daily_frame(days, [4.0, 5.0]), source="polygon")
    # alpaca (iex) wins Jan 2; Jan 3 comes from polygon (ranked before demo).
    assert closes(cache.get("IBM", "2024-01-02", "2024-01-03")) == [1.0, 5.0]


def test_intraday_bars_follow_the_same_rule(cache):
    stamps = ["2024-01-02T14:30:00Z", "2024-01-02T14:31:00Z", "2024-01-02T14:32:00Z"]
    cache.set("AAPL", minute_frame(stamps, [1.0, 2.0, 3.0]), source="alpaca", timeframe="1Min", feed="iex")
    cache.set("AAPL", minute_frame(stamps[1:], [12.0, 13.0]), source="alpaca", timeframe="1Min", feed="sip")
    get = cache.get
    assert closes(get("AAPL", stamps[0], stamps[2], source="alpaca", timeframe="1Min", feed="iex")) == [1, 2, 3]
    assert closes(get("AAPL", stamps[0], stamps[2], source="alpaca", timeframe="1Min")) == [12.0, 13.0]
    assert closes(get("AAPL", stamps[0], stamps[0], source="alpaca", timeframe="1Min")) == [1.0]  # sip has none
    assert closes(get("AAPL", stamps[0], stamps[2], timeframe="1Min")) == [12.0, 13.0]
    assert get("AAPL", stamps[0], stamps[2], timeframe="1Min", feed="delayed_sip") is None


def test_exists_count_and_delete_by_feed(cache):
    cache.set("AAPL", daily_frame(JAN_FIRST_WEEK, [1.0, 2.0, 3.0, 4.0]), source="alpaca", feed="iex")
    cache.set("AAPL", daily_frame(JAN_FIRST_WEEK[:2], [5.0, 6.0]), source="alpaca", feed="sip")
    cache.record_coverage("AAPL", JAN_FIRST_WEEK, source="alpaca", feed="iex")
    cache.record_coverage("AAPL", JAN_FIRST_WEEK, source="alpaca", feed="sip")
    assert cache.exists("AAPL", "2024-01-05", feed="iex") is True
    assert cache.exists("AAPL", "2024-01-05", feed="sip") is False
    assert cache.exists("AAPL", "2024-01-05") is True  # any feed
    assert cache.count_bars("AAPL") == 6  # every feed
    assert cache.count_bars("AAPL", feed="sip") == 2
    assert cache.delete("AAPL", source="alpaca", feed="sip") == 2
    assert cache.count_bars("AAPL") == 4
    # Only the sip coverage went with its bars.
    assert cache.missing_sessions("AAPL", "2024-01-02", "2024-01-05", source="alpaca", feed="sip") == JAN_FIRST_WEEK
    assert cache.missing_sessions("AAPL", "2024-01-02", "2024-01-05", source="alpaca", feed="iex") == []
    assert cache.delete("AAPL") == 4
    assert cache.count_bars("AAPL") == 0


def test_coverage_is_per_feed_and_feed_none_means_any_feed(cache):
    cache.record_coverage("SPY", JAN_FIRST_WEEK[:2], source="alpaca", timeframe="1Min", feed="iex")
    cache.record_coverage("SPY", JAN_FIRST_WEEK[2:3], source="alpaca", timeframe="1Min")  # -> "unknown"
    missing = cache.missing_sessions
    assert missing("SPY", "2024-01-02", "2024-01-05", "1Min", "alpaca", feed="iex") == JAN_FIRST_WEEK[2:]
    assert missing("SPY", "2024-01-02", "2024-01-05", "1Min", "alpaca", feed="sip") == JAN_FIRST_WEEK
    assert missing("SPY", "2024-01-02", "2024-01-05", "1Min", "alpaca", feed=UNKNOWN_FEED) == [
        date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 5)]
    assert missing("SPY", "2024-01-02", "2024-01-05", "1Min", "alpaca") == [date(2024, 1, 5)]
    many = cache.missing_sessions_many(["SPY", "QQQ"], "2024-01-02", "2024-01-05", "1Min", "alpaca", feed="iex")
    assert many == {"SPY": JAN_FIRST_WEEK[2:], "QQQ": JAN_FIRST_WEEK}


def test_daily_bars_settle_their_sessions_only_for_their_own_feed(cache):
    cache.set("SPY", daily_frame(JAN_FIRST_WEEK[:1], [1.0]), source="alpaca", feed="iex")
    assert cache.missing_sessions("SPY", "2024-01-02", "2024-01-02", source="alpaca", feed="iex") == []
    assert cache.missing_sessions("SPY", "2024-01-02", "2024-01-02", source="alpaca", feed="sip") == [
        date(2024, 1, 2)]


def test_the_seeds_positional_calls_keep_working(cache):
    frame = daily_frame(JAN_FIRST_WEEK[:2], [7.0, 8.0])
    assert cache.set("QQQ", frame, "alpaca", "stock", None, "1Day") == 2
    assert closes(cache.get("QQQ", "2024-01-02", "2024-01-03", "alpaca", "stock", "1Day")) == [7.0, 8.0]
    assert cache.exists("QQQ", "2024-01-02", "2024-01-03", "alpaca", "stock", "1Day") is True
    assert cache.conn.execute("SELECT feed FROM series WHERE symbol = 'QQQ'").fetchall() == [("unknown",)]


def test_stats_list_the_feeds(cache):
    cache.set("AAPL", daily_frame(JAN_FIRST_WEEK[:1], [1.0]), source="alpaca", feed="iex")
    cache.set("AAPL", daily_frame(JAN_FIRST_WEEK[:1], [1.0]), source="alpaca")
    cache.set("AAPL", daily_frame(JAN_FIRST_WEEK[:1], [1.0]), source="alpaca", feed="sip")
    assert cache.get_stats()["feeds"] == ["sip", "iex", "unknown"]


@pytest.mark.parametrize("feed", ["", "   ", "sïp", "sip;DROP TABLE series", "x" * 33, 5, b"sip", ["sip"]])
def test_a_bad_feed_is_a_clear_error_everywhere(cache, feed):
    frame = daily_frame(JAN_FIRST_WEEK[:1], [1.0])
    calls = [
        lambda: cache.set("AAPL", frame, source="alpaca", feed=feed),
        lambda: cache.set_many({"AAPL": frame}, source="alpaca", feed=feed),
        lambda: cache.get("AAPL", "2024-01-02", "2024-01-02", source="alpaca", feed=feed),
        lambda: cache.get("AAPL", "2024-01-02", "2024-01-02", timeframe="1Min", feed=feed),
        lambda: cache.exists("AAPL", "2024-01-02", feed=feed),
        lambda: cache.count_bars("AAPL", feed=feed),
        lambda: cache.delete("AAPL", feed=feed),
        lambda: cache.record_coverage("AAPL", JAN_FIRST_WEEK, source="alpaca", feed=feed),
        lambda: cache.missing_sessions("AAPL", "2024-01-02", "2024-01-05", feed=feed),
        lambda: cache.missing_sessions("AAPL", "2024-01-06", "2024-01-07", feed=feed),  # a weekend
    ]
    for call in calls:
        with pytest.raises(ValueError, match="feed"):
            call()
    assert cache.count_bars() == 0
    assert cache.conn.execute("SELECT COUNT(*) FROM series").fetchone()[0] == 0


# -- migration v6 ------------------------------------------------------------------------------


def _v5_file(path) -> None:
    """A schema-v5 cache made by the shipped migrations 1-5: daily and minute bars of SPY from
    source alpaca (minute rows written before v4, which chunks them), and coverage."""
    steps = {version: step for version, _, step in MIGRATIONS}
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for version in (1, 2, 3):
        steps[version](conn)
    conn.execute("INSERT INTO series VALUES (7, 'stock', 'SPY', '1Day', 'alpaca')")
    conn.execute("INSERT INTO series VALUES (9, 'stock', 'SPY', '1Min', 'alpaca')")
    jan2, jan3 = 19724 * 86_400, 19725 * 86_400  # 2024-01-02 and 2024-01-03 at 00:00Z
    conn.executemany(
        "INSERT INTO bars VALUES (7, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(jan2, 470.0, 472.0, 469.0, 471.0, 1000, 470.5, 10, FAR_FUTURE),
         (jan3, 471.0, 473.0, 470.0, 472.5, 1100, 471.5, 11, FAR_FUTURE)],
    )
    open_jan2 = 1704205800  # 2024-01-02T14:30:00Z, the 09:30 New York open
    conn.executemany(
        "INSERT INTO bars VALUES (9, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(open_jan2, 470.0, 470.5, 469.5, 470.25, 100, 470.1, 3, FAR_FUTURE),
         (open_jan2 + 60, 470.25, 470.75, 470.0, 470.5, 200, 470.4, 4, FAR_FUTURE)],
    )
    conn.executemany(
        "INSERT INTO coverage VALUES (?, ?, ?, 1704300000, ?)",
        [(7, 19724, 1, FAR_FUTURE), (7, 19725, 1, FAR_FUTURE), (9, 19724, 2, FAR_FUTURE)],
    )
    for version in (4, 5):
        steps[version](conn)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("COMMIT")
    conn.close()


def test_migration_v6_keeps_series_ids_and_files_old_data_under_feed_unknown(tmp_path):
    path = tmp_path / "v5.db"
    _v5_file(path)
    cache = TradingCacheManager(path)
    assert cache.schema_version >= 6
    conn = cache.conn
    assert conn.execute("SELECT series_id, timeframe, source, feed FROM series ORDER BY series_id").fetchall() == [
        (7, "1Day", "alpaca", "unknown"), (9, "1Min", "alpaca", "unknown")]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'series_before_v6'").fetchone()[0] == 0

    # Same bars as before, read without a feed (or as "unknown")...
    daily = cache.get("SPY", "2024-01-02", "2024-01-03", source="alpaca")
    assert closes(daily) == [471.0, 472.5] and daily["volume"].tolist() == [1000, 1100]
    assert closes(cache.get("SPY", "2024-01-02", "2024-01-03")) == [471.0, 472.5]
    assert closes(cache.get("SPY", "2024-01-02", "2024-01-03", source="alpaca", feed="unknown")) == [471.0, 472.5]
    minutes = cache.get("SPY", "2024-01-02", "2024-01-02", source="alpaca", timeframe="1Min")
    assert closes(minutes) == [470.25, 470.5]
    assert minutes.index[0] == pd.Timestamp("2024-01-02T14:30:00Z")
    # ...never promoted to a named feed...
    assert cache.get("SPY", "2024-01-02", "2024-01-03", source="alpaca", feed="sip") is None
    assert cache.get("SPY", "2024-01-02", "2024-01-02", source="alpaca", timeframe="1Min", feed="iex") is None
    # ...and their coverage says nothing about iex.
    assert cache.missing_sessions("SPY", "2024-01-02", "2024-01-03", source="alpaca", feed="iex") == [
        date(2024, 1, 2), date(2024, 1, 3)]
    assert cache.missing_sessions("SPY", "2024-01-02", "2024-01-02", "1Min", "alpaca", feed="iex") == [
        date(2024, 1, 2)]
    assert cache.missing_sessions("SPY", "2024-01-02", "2024-01-03", source="alpaca") == []
    assert cache.missing_sessions("SPY", "2024-01-02", "2024-01-02", "1Min", "alpaca") == []

    # The new unique key: a sip series of the same symbol is a new row; coverage keeps its foreign key.
    cache.set("SPY", daily_frame([date(2024, 1, 2)], [480.0]), source="alpaca", feed="sip")
    assert conn.execute("SELECT series_id FROM series WHERE feed = 'sip'").fetchone()[0] == 10
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO coverage VALUES (999, 19724, 0, 0, 0)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO series (asset_type, symbol, timeframe, source) VALUES ('stock', 'SPY', '1Day', "
                     "'alpaca')")
    cache.close()
    reopened = TradingCacheManager(path)  # the migration runs once
    assert closes(reopened.get("SPY", "2024-01-02", "2024-01-03", source="alpaca", feed="unknown")) == [471, 472.5]


def test_the_series_key_and_the_coverage_foreign_key_hold_on_postgresql(pg_url):
    """PostgreSQL's counterpart of the constraints migration v6 gives a file: one series row per
    (asset_type, symbol, timeframe, source, feed), and coverage only of an existing series."""
    with TradingCacheManager(pg_url) as cache:
        cache.set("SPY", daily_frame([date(2024, 1, 2)], [471.0]), source="alpaca")
        cache.set("SPY", daily_frame([date(2024, 1, 2)], [480.0]), source="alpaca", feed="sip")
        conn = cache.conn
        assert conn.execute("SELECT series_id, feed FROM series ORDER BY series_id").fetchall() == [
            (1, "unknown"), (2, "sip")]
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO coverage VALUES (999, 19724, 0, 0, 0)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO series (asset_type, symbol, timeframe, source) VALUES ('stock', 'SPY', "
                         "'1Day', 'alpaca')")
        assert conn.execute("SELECT COUNT(*) FROM series").fetchone()[0] == 2
        assert conn.execute("SELECT COUNT(*) FROM coverage").fetchone()[0] == 0
        assert closes(cache.get("SPY", "2024-01-02", "2024-01-02", source="alpaca", feed="unknown")) == [471.0]


# -- the sync: the "Mixing" test ---------------------------------------------------------------


def _daily_bar(day: date, close: float, volume: int) -> dict:
    return {"t": ny_midnight_utc(day), "o": close - 1, "h": close + 1, "l": close - 2, "c": close,
            "v": volume, "n": 10, "vw": close}


@pytest.fixture
def feed_stub():
    """AAPL's first January week: the iex feed and the sip feed serve different bars."""
    with AlpacaStub() as server:
        server.add_bars("AAPL", [_daily_bar(d, 100.0 + i, 1_650_000) for i, d in enumerate(JAN_FIRST_WEEK)],
                        feed="iex")
        server.add_bars("AAPL", [_daily_bar(d, 200.0 + i, 46_600_000) for i, d in enumerate(JAN_FIRST_WEEK)],
                        feed="sip")
        yield server


def _alpaca(stub: AlpacaStub, feed: str) -> AlpacaSource:
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, feed=feed, backoff_base=0.01,
                        backoff_max=0.05)


def test_mixing_iex_then_sip_each_feed_keeps_its_own_bars(cache, feed_stub):
    iex = sync_bars(cache, _alpaca(feed_stub, "iex"), ["AAPL"], "2024-01-02", "2024-01-05")
    assert (iex.feed, iex.requests_made, iex.rows_written) == ("iex", 1, 4)
    assert feed_stub.requests[-1].params["feed"] == "iex"

    # The iex coverage must not make the sip sync a no-op.
    sip = sync_bars(cache, _alpaca(feed_stub, "sip"), ["AAPL"], "2024-01-02", "2024-01-05")
    assert (sip.feed, sip.requests_made, sip.sessions_fetched, sip.rows_written) == ("sip", 1, 4, 4)
    assert feed_stub.requests[-1].params["feed"] == "sip"

    got_iex = cache.get("AAPL", "2024-01-02", "2024-01-05", source="alpaca", feed="iex")
    got_sip = cache.get("AAPL", "2024-01-02", "2024-01-05", source="alpaca", feed="sip")
    assert closes(got_iex) == [100.0, 101.0, 102.0, 103.0] and got_iex["volume"].tolist() == [1_650_000] * 4
    assert closes(got_sip) == [200.0, 201.0, 202.0, 203.0] and got_sip["volume"].tolist() == [46_600_000] * 4
    best = cache.get("AAPL", "2024-01-02", "2024-01-05", source="alpaca")  # sip by priority, never a mix
    assert closes(best) == [200.0, 201.0, 202.0, 203.0] and best["volume"].tolist() == [46_600_000] * 4

    # Each feed is now covered: re-syncing either makes no request.
    feed_stub.reset_counts()
    for feed in ("iex", "sip"):
        again = sync_bars(cache, _alpaca(feed_stub, feed), ["AAPL"], "2024-01-02", "2024-01-05")
        assert (again.requests_made, again.rows_written) == (0, 0)
    assert feed_stub.count("/v2/stocks/bars") == 0
    assert cache.missing_sessions("AAPL", "2024-01-02", "2024-01-05", source="alpaca", feed="delayed_sip") == (
        JAN_FIRST_WEEK)


def test_mixing_minute_bars_per_feed(cache):
    with AlpacaStub() as stub:
        stub.add_bars("SPY", make_minute_bars("2024-01-02", "09:30", "09:33", price=50.0), "1Min", feed="iex")
        stub.add_bars("SPY", make_minute_bars("2024-01-02", "09:30", "09:33", price=60.0), "1Min", feed="sip")
        for feed in ("iex", "sip"):
            report = sync_bars(cache, _alpaca(stub, feed), ["SPY"], "2024-01-02", "2024-01-02", timeframe="1Min")
            assert (report.requests_made, report.rows_written) == (1, 3)
        stub.reset_counts()
        assert sync_bars(cache, _alpaca(stub, "sip"), ["SPY"], "2024-01-02", "2024-01-02",
                         timeframe="1Min").requests_made == 0
    get = cache.get
    # make_minute_bars: close = price + 0.01 * i + 0.01
    iex = get("SPY", "2024-01-02", "2024-01-02", "alpaca", timeframe="1Min", feed="iex")
    assert closes(iex) == pytest.approx([50.01, 50.02, 50.03], rel=1e-12)
    best = get("SPY", "2024-01-02", "2024-01-02", "alpaca", timeframe="1Min")
    assert closes(best) == pytest.approx([60.01, 60.02, 60.03], rel=1e-12)


def test_get_market_data_reads_its_own_feed(cache, feed_stub):
    sync_bars(cache, _alpaca(feed_stub, "sip"), ["AAPL"], "2024-01-02", "2024-01-05")
    frame = get_market_data("AAPL", "2024-01-02", "2024-01-05", source=_alpaca(feed_stub, "iex"), cache=cache,
                            include_live=False)
    assert closes(frame) == [100.0, 101.0, 102.0, 103.0]  # iex asked for, iex served (sip is in the cache)
    frame = get_market_data("AAPL", "2024-01-02", "2024-01-05", source=_alpaca(feed_stub, "sip"), cache=cache,
                            include_live=False, feed="sip")
    assert closes(frame) == [200.0, 201.0, 202.0, 203.0]
    with pytest.raises(ValueError, match="feed 'sip' was asked for.*'iex'"):
        get_market_data("AAPL", "2024-01-02", "2024-01-05", source=_alpaca(feed_stub, "iex"), cache=cache,
                        include_live=False, feed="sip")
    with pytest.raises(ValueError, match="feed 'sip' was asked for.*'demo'"):
        get_market_data("AAPL", "2024-01-02", "2024-01-05", source="demo", cache=cache, feed="sip")


def test_demo_bars_are_filed_under_feed_demo(cache):
    report = sync_bars(cache, DemoSource(), ["AAPL"], "2024-01-02", "2024-01-05")
    assert report.feed == "demo" and report.rows_written == 4
    assert cache.conn.execute("SELECT source, feed FROM series").fetchall() == [("demo", "demo")]
    assert cache.missing_sessions("AAPL", "2024-01-02", "2024-01-05", source="demo", feed="demo") == []


def test_a_source_without_feed_name_syncs_under_unknown(cache):
    class Plain:
        """A third-party source that knows nothing of feeds."""

        name = "plain"
        requests_made = 0

        def get_bars(self, symbols, start, end, timeframe="1Day"):
            self.requests_made += 1
            frame = daily_frame(JAN_FIRST_WEEK, [1.0, 2.0, 3.0, 4.0])
            return pd.concat({"AAPL": frame}, names=["symbol", "timestamp"])

    source = Plain()
    report = sync_bars(cache, source, ["AAPL"], "2024-01-02", "2024-01-05")
    assert (report.feed, report.rows_written) == ("unknown", 4)
    assert sync_bars(cache, source, ["AAPL"], "2024-01-02", "2024-01-05").requests_made == 0
    assert cache.conn.execute("SELECT source, feed FROM series").fetchall() == [("plain", "unknown")]


def test_sync_report_merge_keeps_the_feed():
    a = SyncReport("alpaca", "1Day", ["AAPL"], date(2024, 1, 2), date(2024, 1, 31), feed="sip")
    b = SyncReport("alpaca", "1Day", ["AAPL"], date(2024, 2, 1), date(2024, 2, 29), feed="sip")
    assert SyncReport.merge([a, b]).feed == "sip"
    assert a.as_dict()["feed"] == "sip"


# -- the adapter -------------------------------------------------------------------------------


def test_adapter_passes_the_feed_through(cache_url):
    db = cache_url
    frame = daily_frame(JAN_FIRST_WEEK[:2], [5.0, 6.0])
    assert cache_adapter.set_market_data("AAPL", "2024-01-02", "2024-01-03", "alpaca", frame, db_path=db,
                                         feed="iex") == 2
    assert cache_adapter.set_market_data("AAPL", "2024-01-02", "2024-01-03", "alpaca",
                                         daily_frame(JAN_FIRST_WEEK[:2], [7.0, 8.0]), db_path=db) == 2
    assert closes(cache_adapter.get_market_data("AAPL", "2024-01-02", "2024-01-03", "alpaca", db_path=db,
                                                feed="iex")) == [5.0, 6.0]
    # Without a feed: iex (a named feed) ranks before "unknown".
    assert closes(cache_adapter.get_market_data("AAPL", "2024-01-02", "2024-01-03", db_path=db)) == [5.0, 6.0]
    assert cache_adapter.get_market_data("AAPL", "2024-01-02", "2024-01-03", db_path=db, feed="sip") is None


def test_adapter_refuses_a_bad_feed_even_with_nothing_to_write(cache_url):
    empty = daily_frame(JAN_FIRST_WEEK[:1], [5.0])
    with pytest.raises(ValueError, match="feed"):
        cache_adapter.set_market_data("AAPL", "2024-02-01", "2024-02-02", "alpaca", empty,
                                      db_path=cache_url, feed="s i p")
