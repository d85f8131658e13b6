"""Gap-aware sync and the live bar (issue 4), against the loopback Alpaca server and the demo source.

Request counts are read from the stub (HTTP requests it actually served).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from alpaca_stub import (
    TEST_KEY,
    TEST_SECRET,
    AlpacaStub,
    make_minute_bars,
    make_option_snapshot,
)
from alpaca_stub import (
    daily_bar as daily,
)
from freezegun import freeze_time

from cachelib.demo import DemoSource
from cachelib.sources import AlpacaSource, AuthenticationError, MalformedResponseError
from cachelib.sync import get_market_data, sync_bars, sync_option_chains

NY = ZoneInfo("America/New_York")

# The XNYS sessions of January 2024, written out by hand (Jan 1 New Year, Jan 15 MLK Day).
JAN_2024 = [2, 3, 4, 5, 8, 9, 10, 11, 12, 16, 17, 18, 19, 22, 23, 24, 25, 26, 29, 30, 31]
FEB_FIRST_WEEK = [1, 2, 5, 6, 7]


@pytest.fixture
def stub():
    with AlpacaStub(page_size=20) as server:
        for i, sym in enumerate(["AAPL", "MSFT", "SPY"]):
            bars = [daily(date(2024, 1, d), 100 + 10 * i + d) for d in JAN_2024]
            bars += [daily(date(2024, 2, d), 200 + 10 * i + d) for d in FEB_FIRST_WEEK]
            server.add_bars(sym, bars)
        yield server


@pytest.fixture
def alpaca(stub):
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, backoff_base=0.01, backoff_max=0.05)


def test_first_sync_pages_and_second_sync_makes_no_request(cache, stub, alpaca):
    report = sync_bars(cache, alpaca, ["aapl", "MSFT", "SPY"], "2024-01-01", "2024-01-31")
    # 3 symbols x 21 sessions = 63 rows in pages of 20 -> 4 HTTP requests, one logical call.
    assert stub.count("/v2/stocks/bars") == 4
    assert (report.requests_made, report.calls) == (4, 1)
    assert (report.sessions_requested, report.sessions_fetched) == (63, 63)
    assert (report.rows_written, report.rows_rejected) == (63, 0)
    df = cache.get("AAPL", "2024-01-01", "2024-01-31", source="alpaca")
    assert [d.day for d in df.index] == JAN_2024
    assert df.loc["2024-01-02", "close"] == 103.0  # 100 + 2 + 1

    again = sync_bars(cache, alpaca, ["AAPL", "MSFT", "SPY"], "2024-01-01", "2024-01-31")
    assert stub.count("/v2/stocks/bars") == 4
    assert (again.requests_made, again.sessions_fetched, again.rows_written) == (0, 0, 0)
    assert again.sessions_requested == 63


def test_extending_the_range_fetches_only_the_new_sessions(cache, stub, alpaca):
    sync_bars(cache, alpaca, ["AAPL", "MSFT", "SPY"], "2024-01-01", "2024-01-31")
    stub.reset_counts()
    report = sync_bars(cache, alpaca, ["AAPL", "MSFT", "SPY"], "2024-01-01", "2024-02-07")
    assert report.sessions_fetched == 15  # 3 symbols x 5 February sessions
    assert report.rows_written == 15
    assert stub.count("/v2/stocks/bars") == 1
    asked = stub.requests[-1].params
    assert asked["start"].startswith("2024-02-01T05:00:00")  # New York midnight of Feb 1
    assert cache.missing_sessions("AAPL", "2024-01-01", "2024-02-07", source="alpaca") == []


def test_a_new_symbol_only_requests_that_symbol(cache, stub, alpaca):
    sync_bars(cache, alpaca, ["AAPL", "MSFT"], "2024-01-01", "2024-01-31")
    stub.reset_counts()
    report = sync_bars(cache, alpaca, ["AAPL", "MSFT", "SPY"], "2024-01-01", "2024-01-31")
    assert report.sessions_fetched == 21
    assert stub.count("/v2/stocks/bars") == 2  # 21 rows in pages of 20
    assert stub.requests[-1].params["symbols"] == "SPY"


def test_holidays_and_weekends_are_never_requested(cache, stub, alpaca):
    for start, end in (("2024-07-04", "2024-07-04"), ("2024-01-13", "2024-01-15"), ("2024-03-29", "2024-03-31")):
        report = sync_bars(cache, alpaca, ["AAPL"], start, end)
        assert (report.sessions_requested, report.requests_made) == (0, 0)
    assert stub.count() == 0


def test_sessions_without_bars_are_covered_too(cache, stub, alpaca):
    report = sync_bars(cache, alpaca, ["HALTED"], "2024-01-02", "2024-01-05")
    assert (report.sessions_fetched, report.rows_written, report.requests_made) == (4, 0, 1)
    assert cache.missing_sessions("HALTED", "2024-01-02", "2024-01-05", source="alpaca") == []
    again = sync_bars(cache, alpaca, ["HALTED"], "2024-01-02", "2024-01-05")
    assert again.requests_made == 0
    assert stub.count() == 1


def test_invalid_rows_are_rejected_reported_and_never_stored(cache, stub, alpaca):
    bad = daily(date(2024, 3, 5), 50)
    bad["h"] = 49  # high below open and close
    nan_volume = daily(date(2024, 3, 6), 50)
    nan_volume["v"] = -5
    stub.add_bars("BAD", [daily(date(2024, 3, 4), 50), bad, nan_volume, daily(date(2024, 3, 7), 52)])
    report = sync_bars(cache, alpaca, ["BAD"], "2024-03-04", "2024-03-07")
    assert report.rows_written == 2
    assert report.rows_rejected == 2
    assert report.rejection_reasons() == {"high below max(open, close)": 1, "negative volume": 1}
    assert [r["symbol"] for r in report.rejections] == ["BAD", "BAD"]
    df = cache.get("BAD", "2024-03-01", "2024-03-31")
    assert [d.day for d in df.index] == [4, 7]
    # The sessions with a rejected row are not marked covered: the next sync asks for them again.
    assert cache.missing_sessions("BAD", "2024-03-04", "2024-03-07", source="alpaca") == [
        date(2024, 3, 5), date(2024, 3, 6)]
    stub.reset_counts()
    again = sync_bars(cache, alpaca, ["BAD"], "2024-03-04", "2024-03-07")
    assert (again.requests_made, again.sessions_fetched) == (1, 2)


def test_a_row_bad_only_in_vwap_or_trade_count_is_rejected_not_fatal(cache, stub, alpaca):
    odd = daily(date(2024, 3, 5), 50)
    odd["n"] = -1  # a negative trade count: reject the row, keep the sync going
    stub.add_bars("ODD", [daily(date(2024, 3, 4), 50), odd])
    stub.add_bars("OK", [daily(date(2024, 3, 4), 60), daily(date(2024, 3, 5), 61)])
    report = sync_bars(cache, alpaca, ["ODD", "OK"], "2024-03-04", "2024-03-05")
    assert report.rejection_reasons() == {"negative or infinite trade_count": 1}
    assert report.rows_written == 3
    assert len(cache.get("OK", "2024-03-04", "2024-03-05")) == 2


def test_authentication_failure_stores_nothing(cache, stub, alpaca):
    stub.add_faults("/v2/stocks/bars", 401)
    with pytest.raises(AuthenticationError):
        sync_bars(cache, alpaca, ["AAPL"], "2024-01-01", "2024-01-31")
    assert stub.count("/v2/stocks/bars") == 1
    assert cache.get_stats()["total_entries"] == 0
    assert cache.missing_sessions("AAPL", "2024-01-02", "2024-01-03", source="alpaca") == [
        date(2024, 1, 2), date(2024, 1, 3)]


def test_truncated_json_stores_nothing(cache, stub, alpaca):
    from alpaca_stub import Fault

    stub.set_persistent_fault("/v2/stocks/bars", Fault.truncated())
    with pytest.raises(MalformedResponseError):
        sync_bars(cache, alpaca, ["AAPL"], "2024-01-01", "2024-01-31")
    assert cache.get_stats()["total_entries"] == 0
    assert cache.get_stats()["tables"]["coverage"] == 0


def test_recent_sessions_are_asked_again_after_24_hours(cache, stub, alpaca):
    # Friday 2024-02-02 17:00 ET: Feb 1 and 2 are recent (age < 2 days), January is history.
    with freeze_time(datetime(2024, 2, 2, 22, 0, tzinfo=timezone.utc)) as frozen:
        sync_bars(cache, alpaca, ["AAPL"], "2024-01-29", "2024-02-02")
        stub.reset_counts()
        assert sync_bars(cache, alpaca, ["AAPL"], "2024-01-29", "2024-02-02").requests_made == 0
        frozen.tick(24 * 3600)
        report = sync_bars(cache, alpaca, ["AAPL"], "2024-01-29", "2024-02-02")
        # Feb 1 was recent when fetched; on Saturday Feb 2 is still only 1 day old.
        assert report.sessions_fetched == 2
        assert stub.requests[-1].params["start"].startswith("2024-02-01")


def test_daily_sync_never_stores_an_unfinished_session(cache):
    demo = DemoSource(seed=7)
    with freeze_time(datetime(2024, 3, 15, 15, 0, tzinfo=timezone.utc)):  # 11:00 ET Friday
        report = sync_bars(cache, demo, ["AAPL"], "2024-03-11", "2024-03-15")
        assert report.sessions_requested == 4  # Mon-Thu; Friday is still trading
        assert cache.get("AAPL", "2024-03-15", "2024-03-15") is None
        minutes = sync_bars(cache, demo, ["AAPL"], "2024-03-15", "2024-03-15", timeframe="1Min")
        assert minutes.rows_written == 90  # 09:30 .. 10:59 ET
        # Today's minutes are stored but today is not marked covered.
        assert cache.missing_sessions("AAPL", "2024-03-15", "2024-03-15", timeframe="1Min") == [date(2024, 3, 15)]


def test_long_backfills_are_chunked(cache, monkeypatch):
    import cachelib.sync as sync_module

    monkeypatch.setattr(sync_module, "MAX_ROWS_PER_CALL", 960 * 2 * 5)  # 5 sessions x 2 symbols per call
    demo = DemoSource(seed=1)
    seen = []
    report = sync_bars(cache, demo, ["AAPL", "MSFT"], "2024-01-02", "2024-01-31", timeframe="1Min",
                       progress=lambda done, total: seen.append((done, total)))
    assert report.calls == 5  # 21 sessions in chunks of 5
    assert seen[-1] == (5, 5)
    assert report.rows_written == 2 * 21 * 390


def test_option_chain_snapshots_from_alpaca(cache, stub, alpaca):
    stub.add_option_snapshots("AAPL", {
        "AAPL240126C00100000": make_option_snapshot(bid=2.0, ask=2.2),
        "AAPL240126P00100000": make_option_snapshot(bid=1.5, ask=1.7),
    })
    stub.set_latest_trade("AAPL", 101.25)
    report = sync_option_chains(cache, alpaca, ["aapl"])
    assert report.rows_per_underlying == {"AAPL": 2}
    assert report.trading_dates == {"AAPL": "2024-01-19"}  # the quotes' New York date
    df = cache.get_raw_options("AAPL", "2024-01-19", source="alpaca")
    assert df["option_type"].tolist() == ["call", "put"]
    assert df["bid"].tolist() == [2.0, 1.5]


def test_option_chain_snapshot_from_demo_replaces_same_day(cache):
    demo = DemoSource(seed=3)
    with freeze_time(datetime(2024, 3, 15, 18, 0, tzinfo=timezone.utc)):
        first = sync_option_chains(cache, demo, ["SPY"])
    with freeze_time(datetime(2024, 3, 15, 19, 0, tzinfo=timezone.utc)):
        second = sync_option_chains(cache, demo, ["SPY"])
    assert first.trading_dates == second.trading_dates == {"SPY": "2024-03-15"}
    stats = cache.get_options_stats()
    assert stats["snapshots"] == 1
    df = cache.get_raw_options("SPY", "2024-03-15")
    # Contract by contract, the 19:00 quotes replaced the 18:00 ones.
    latest = df[df["snapshot_time"] == pd.Timestamp("2024-03-15 19:00", tz="UTC")]
    assert len(latest) == second.rows_per_underlying["SPY"]
    assert len(df) == len(set(df["contract_symbol"]))


# -- the live bar ------------------------------------------------------------------------


def expected_live_bar(demo: DemoSource, day: str, until_utc: str) -> dict:
    """Aggregate the demo's minute bars by hand (pandas), independently of build_live_bar."""
    minutes = demo.get_bars(["AAPL"], day, day, timeframe="1Min").xs("AAPL", level="symbol")
    minutes = minutes[minutes.index < pd.Timestamp(until_utc, tz="UTC")]
    return {"open": minutes["open"].iloc[0], "high": minutes["high"].max(), "low": minutes["low"].min(),
            "close": minutes["close"].iloc[-1], "volume": minutes["volume"].sum()}


def test_live_bar_during_market_hours_is_real_and_never_cached(cache):
    demo = DemoSource(seed=11)
    with freeze_time(datetime(2024, 3, 15, 15, 0, tzinfo=timezone.utc)):  # 11:00 ET
        df = get_market_data("AAPL", "2024-03-11", "2024-03-15", source=demo, cache=cache)
        expected = expected_live_bar(demo, "2024-03-15", "2024-03-15 15:00")
    assert df.attrs["live_bar"] is True
    assert [d.day for d in df.index] == [11, 12, 13, 14, 15]
    live = df.iloc[-1]
    for key, value in expected.items():
        assert live[key] == pytest.approx(value)
    assert live["volume"] > 0
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "vwap", "trade_count"]
    assert df.index.name == "date" and str(df["trade_count"].dtype) == "Int64"
    # Never written: the cache has no daily bar for the 15th.
    assert cache.get("AAPL", "2024-03-15", "2024-03-15", source="demo") is None


def test_after_the_close_todays_bar_comes_from_the_normal_path(cache):
    demo = DemoSource(seed=11)
    with freeze_time(datetime(2024, 3, 15, 20, 30, tzinfo=timezone.utc)):  # 16:30 ET
        df = get_market_data("AAPL", "2024-03-11", "2024-03-15", source=demo, cache=cache)
        expected = expected_live_bar(demo, "2024-03-15", "2024-03-15 20:00")
        assert cache.get("AAPL", "2024-03-15", "2024-03-15", source="demo") is not None
    assert df.attrs["live_bar"] is False
    assert df.iloc[-1]["close"] == pytest.approx(expected["close"])


def test_no_live_bar_on_a_holiday(cache):
    demo = DemoSource(seed=11)
    with freeze_time(datetime(2024, 7, 4, 15, 0, tzinfo=timezone.utc)):  # Independence Day, 11:00 ET
        df = get_market_data("AAPL", "2024-07-01", "2024-07-05", source=demo, cache=cache)
    assert df.attrs["live_bar"] is False
    assert [d.day for d in df.index] == [1, 2, 3]


def test_live_bar_on_an_early_close_day(cache):
    demo = DemoSource(seed=11)
    with freeze_time(datetime(2024, 11, 29, 17, 30, tzinfo=timezone.utc)):  # 12:30 ET, closes 13:00
        df = get_market_data("AAPL", "2024-11-25", "2024-11-29", source=demo, cache=cache)
        assert df.attrs["live_bar"] is True
        assert df.index[-1] == pd.Timestamp("2024-11-29")
    with freeze_time(datetime(2024, 11, 29, 18, 30, tzinfo=timezone.utc)):  # 13:30 ET: closed and settled
        df = get_market_data("AAPL", "2024-11-25", "2024-11-29", source=demo, cache=cache)
        expected = expected_live_bar(demo, "2024-11-29", "2024-11-29 18:00")
    assert df.attrs["live_bar"] is False
    assert df.iloc[-1]["close"] == pytest.approx(expected["close"])
    assert df.iloc[-1]["volume"] == pytest.approx(expected["volume"])


def test_empty_result_keeps_the_shape(cache):
    demo = DemoSource(seed=11)
    df = get_market_data("AAPL", "2024-07-04", "2024-07-04", source=demo, cache=cache)
    assert df.empty and df.index.name == "date"
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "vwap", "trade_count"]


def test_minute_bars_from_alpaca_keep_their_session(cache, stub, alpaca):
    stub.add_bars("AAPL", make_minute_bars("2024-03-08", "09:30", "09:35"), timeframe="1Min")
    report = sync_bars(cache, alpaca, ["AAPL"], "2024-03-08", "2024-03-08", timeframe="1Min")
    assert report.rows_written == 5
    df = cache.get("AAPL", "2024-03-08", "2024-03-08", timeframe="1Min")
    assert df.index[0] == pd.Timestamp("2024-03-08 14:30", tz="UTC")  # EST: 09:30 ET = 14:30Z
