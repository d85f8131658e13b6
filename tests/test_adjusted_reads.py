"""Adjusted reads: ``cache.get(..., adjustment=, as_of=)`` over raw bars and stored actions.

Expected values are hand-written (raw prices chosen round, factors worked out by hand), or
come from the loopback Alpaca stub's own adjusted bars (``tests/alpaca_stub.py``, written
independently of cachelib) fetched through the real alpaca-py, uncached.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from alpaca_stub import (
    TEST_KEY,
    TEST_SECRET,
    AlpacaStub,
    alpaca_stub_fixture,
    make_minute_bars,
    ny_midnight_utc,
)
from freezegun import freeze_time

from cachelib.corporate_actions import MissingClosesError
from cachelib.sources import AlpacaSource
from cachelib.sync import sync_bars, sync_corporate_actions

alpaca_stub = alpaca_stub_fixture()
BARS = "/v2/stocks/bars"
PRICES = ["open", "high", "low", "close", "vwap"]


def daily(closes: dict[str, float], volume: float = 1000.0) -> pd.DataFrame:
    """Daily bars with open = close, high = close + 1, low = close - 1, vwap = close."""
    index = pd.DatetimeIndex([pd.Timestamp(d) for d in closes], name="date")
    c = np.array(list(closes.values()), dtype="float64")
    return pd.DataFrame({"open": c, "high": c + 1, "low": c - 1, "close": c, "volume": volume,
                         "vwap": c, "trade_count": 10}, index=index)


def closes(frame: pd.DataFrame) -> list[float]:
    return [round(float(x), 9) for x in frame["close"]]


def split(symbol: str, ex_date: str, ratio: float) -> dict:
    kind = "forward_split" if ratio > 1 else "reverse_split"
    return {"symbol": symbol, "action_type": kind, "ex_date": ex_date, "ratio": ratio}


def dividend(symbol: str, ex_date: str, amount: float) -> dict:
    return {"symbol": symbol, "action_type": "cash_dividend", "ex_date": ex_date, "amount": amount}


NVDA = {"2024-06-06": 1200.0, "2024-06-07": 1210.0, "2024-06-10": 121.0, "2024-06-11": 122.0}


# ---------------------------------------------------------------------------
# Splits and as_of
# ---------------------------------------------------------------------------


def test_split_as_of_after_and_before_the_ex_date(cache):
    cache.set("NVDA", daily(NVDA), source="alpaca", feed="sip")
    cache.store_corporate_actions([split("NVDA", "2024-06-10", 10.0)], source="alpaca")
    after = cache.get("NVDA", "2024-06-06", "2024-06-11", adjustment="split", as_of="2024-06-10")
    assert closes(after) == [120.0, 121.0, 121.0, 122.0]
    assert after["volume"].tolist() == [10_000.0, 10_000.0, 1000.0, 1000.0]
    assert after["high"].tolist()[:2] == pytest.approx([120.1, 121.1], rel=1e-12)
    assert after["trade_count"].tolist() == [10, 10, 10, 10]  # trades are not shares
    # The day before the ex-date nobody knew the split's effect on prices: raw prices.
    before = cache.get("NVDA", "2024-06-06", "2024-06-11", adjustment="split", as_of="2024-06-07")
    assert closes(before) == [1200.0, 1210.0, 121.0, 122.0]
    assert before["volume"].tolist() == [1000.0] * 4
    # Default as_of is today in New York: the split applies.
    assert closes(cache.get("NVDA", "2024-06-06", "2024-06-11", adjustment="all")) == [120.0, 121.0, 121.0, 122.0]


def test_as_of_accepts_dates_datetimes_and_aware_instants(cache):
    cache.set("NVDA", daily(NVDA), source="alpaca")
    cache.store_corporate_actions([split("NVDA", "2024-06-10", 10.0)], source="alpaca")
    # 2024-06-10T03:00Z is still June 9 in New York: before the ex-date.
    for as_of, first in ((date(2024, 6, 10), 120.0), (pd.Timestamp("2024-06-10T03:00Z"), 1200.0),
                         ("2024-06-10T14:00:00-04:00", 120.0)):
        got = cache.get("NVDA", "2024-06-06", "2024-06-07", adjustment="split", as_of=as_of)
        assert closes(got)[0] == first, as_of


def test_reverse_split_multiplies_prices_and_divides_volume(cache):
    bars = daily({"2023-08-24": 2.5, "2023-08-25": 2.4, "2023-08-28": 24.1})
    cache.set("XYZ", bars, source="alpaca")
    cache.store_corporate_actions([split("XYZ", "2023-08-28", 0.1)], source="alpaca")  # 1:10
    got = cache.get("XYZ", "2023-08-24", "2023-08-28", adjustment="split")
    assert closes(got) == [25.0, 24.0, 24.1]
    assert got["volume"].tolist() == [100.0, 100.0, 1000.0]


def test_raw_is_the_plain_read_and_actions_never_change_it(cache):
    cache.set("NVDA", daily(NVDA), source="alpaca")
    plain = cache.get("NVDA", "2024-06-06", "2024-06-11")
    cache.store_corporate_actions([split("NVDA", "2024-06-10", 10.0)], source="alpaca")
    pd.testing.assert_frame_equal(cache.get("NVDA", "2024-06-06", "2024-06-11", adjustment="raw"), plain)
    pd.testing.assert_frame_equal(cache.get("NVDA", "2024-06-06", "2024-06-11", as_of="2024-06-10"), plain)
    assert closes(plain) == [1200.0, 1210.0, 121.0, 122.0]


def test_symbol_without_actions_reads_raw_and_empty_range_is_none(cache):
    cache.set("SPY", daily({"2024-06-06": 500.0}), source="alpaca")
    assert closes(cache.get("SPY", "2024-06-06", "2024-06-06", adjustment="all")) == [500.0]
    assert cache.get("SPY", "2025-01-02", "2025-01-03", adjustment="all") is None


def test_nan_vwap_stays_nan(cache):
    bars = daily({"2024-06-07": 1210.0, "2024-06-10": 121.0})
    bars.loc[pd.Timestamp("2024-06-07"), "vwap"] = np.nan
    cache.set("NVDA", bars, source="alpaca")
    cache.store_corporate_actions([split("NVDA", "2024-06-10", 10.0)], source="alpaca")
    got = cache.get("NVDA", "2024-06-07", "2024-06-10", adjustment="all")
    assert math.isnan(got["vwap"].iloc[0]) and got["vwap"].iloc[1] == 121.0
    assert closes(got) == [121.0, 121.0]


# ---------------------------------------------------------------------------
# Dividends
# ---------------------------------------------------------------------------


def test_dividend_after_a_holiday_uses_the_close_before_the_holiday(cache):
    # Ex-date Friday 2024-07-05; Thursday July 4 is a holiday: the close is Wednesday's.
    bars = daily({"2024-07-02": 190.0, "2024-07-03": 200.0, "2024-07-05": 199.0, "2024-07-08": 201.0})
    cache.set("AAPL", bars, source="alpaca")
    cache.store_corporate_actions([dividend("AAPL", "2024-07-05", 2.0)], source="alpaca")
    got = cache.get("AAPL", "2024-07-02", "2024-07-08", adjustment="dividend")
    assert closes(got) == [188.1, 198.0, 199.0, 201.0]  # x (1 - 2 / 200) = x 0.99
    assert got["volume"].tolist() == [1000.0] * 4  # dividends leave volume alone
    assert closes(cache.get("AAPL", "2024-07-02", "2024-07-08", adjustment="split")) == [190.0, 200.0, 199.0, 201.0]


def test_split_and_dividend_compose_in_all(cache):
    # A dividend of 1.00 (pre-split shares) on a close of 100, then a 2:1 split.
    bars = daily({"2024-03-01": 100.0, "2024-03-04": 99.0, "2024-03-05": 49.0})
    cache.set("ABC", bars, source="alpaca")
    cache.store_corporate_actions([dividend("ABC", "2024-03-04", 1.0), split("ABC", "2024-03-05", 2.0)],
                                  source="alpaca")
    assert closes(cache.get("ABC", "2024-03-01", "2024-03-05", adjustment="all")) == [49.5, 49.5, 49.0]
    assert closes(cache.get("ABC", "2024-03-01", "2024-03-05", adjustment="dividend")) == [99.0, 99.0, 49.0]
    assert closes(cache.get("ABC", "2024-03-01", "2024-03-05", adjustment="split")) == [50.0, 49.5, 49.0]


def test_dividend_needs_the_close_outside_the_read(cache):
    # The read ends before the ex-date; the close comes from the store (one small query).
    bars = daily({"2024-08-08": 100.0, "2024-08-09": 200.0, "2024-08-12": 199.0})
    cache.set("AAPL", bars, source="alpaca")
    cache.store_corporate_actions([dividend("AAPL", "2024-08-12", 0.5)], source="alpaca")
    got = cache.get("AAPL", "2024-08-08", "2024-08-08", adjustment="dividend")
    assert closes(got) == [99.75]  # x (1 - 0.5 / 200)


def test_missing_close_is_a_clear_error_then_an_intraday_bar_answers(cache):
    # 2024-08-09 (the session before the ex-date) is not cached.
    cache.set("AAPL", daily({"2024-08-08": 100.0, "2024-08-12": 199.0}), source="alpaca", feed="sip")
    cache.store_corporate_actions([dividend("AAPL", "2024-08-12", 0.5)], source="alpaca")
    with pytest.raises(ValueError, match=r"2024-08-09.*sync") as err:
        cache.get("AAPL", "2024-08-08", "2024-08-12", adjustment="all")
    assert isinstance(err.value, MissingClosesError) and err.value.sessions == [date(2024, 8, 9)]
    assert "AAPL" in str(err.value) and "'sip'" in str(err.value)
    # Splits need no close.
    assert closes(cache.get("AAPL", "2024-08-08", "2024-08-12", adjustment="split")) == [100.0, 199.0]
    # Another feed's bar of that session does not count ...
    other = pd.DataFrame({"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]},
                         index=pd.DatetimeIndex([pd.Timestamp("2024-08-09T19:59Z")], name="timestamp"))
    cache.set("AAPL", other, source="alpaca", feed="iex", timeframe="1Min")
    with pytest.raises(ValueError, match="2024-08-09"):
        cache.get("AAPL", "2024-08-08", "2024-08-12", adjustment="dividend")
    # ... the same feed's last regular-hours minute bar of that session does (15:59 ET); the
    # 16:30 ET after-hours bar is not the official close.
    minutes = pd.DataFrame({"open": [201.0, 250.0], "high": [201.0, 250.0], "low": [199.0, 250.0],
                            "close": [200.0, 250.0], "volume": [5.0, 5.0]},
                           index=pd.DatetimeIndex([pd.Timestamp("2024-08-09T19:59Z"),
                                                   pd.Timestamp("2024-08-09T20:30Z")], name="timestamp"))
    cache.set("AAPL", minutes, source="alpaca", feed="sip", timeframe="1Min")
    assert closes(cache.get("AAPL", "2024-08-08", "2024-08-12", adjustment="dividend")) == [99.75, 199.0]


def test_actions_come_from_the_reads_source_else_any_source(cache):
    cache.set("NVDA", daily(NVDA), source="alpaca")
    cache.store_corporate_actions([split("NVDA", "2024-06-10", 10.0)], source="polygon")
    # alpaca has no action of NVDA: polygon's apply.
    assert closes(cache.get("NVDA", "2024-06-07", "2024-06-07", source="alpaca", adjustment="split")) == [121.0]
    # Once alpaca has its own (here a different ratio, to tell them apart), only those apply.
    cache.store_corporate_actions([split("NVDA", "2024-06-10", 4.0)], source="alpaca")
    assert closes(cache.get("NVDA", "2024-06-07", "2024-06-07", source="alpaca", adjustment="split")) == [302.5]
    # Without a source: one row per action from the best-ranked source (alpaca first).
    assert closes(cache.get("NVDA", "2024-06-07", "2024-06-07", adjustment="split")) == [302.5]


# ---------------------------------------------------------------------------
# Intraday
# ---------------------------------------------------------------------------


def test_intraday_bars_are_adjusted_by_their_new_york_session(cache):
    # Winter (EST): 19:30 ET on Jan 9 is 00:30Z on Jan 10, still Jan 9's session.
    times = ["2024-01-09T20:59Z", "2024-01-10T00:30Z", "2024-01-10T09:00Z", "2024-01-10T14:30Z"]
    c = np.array([400.0, 404.0, 101.0, 102.0])
    minutes = pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "volume": 40.0, "vwap": c},
                           index=pd.DatetimeIndex([pd.Timestamp(t) for t in times], name="timestamp"))
    cache.set("ABC", minutes, source="alpaca", timeframe="1Min")
    cache.store_corporate_actions([split("ABC", "2024-01-10", 4.0)], source="alpaca")
    got = cache.get("ABC", "2024-01-09", "2024-01-10", timeframe="1Min", adjustment="split")
    assert closes(got) == [100.0, 101.0, 101.0, 102.0]
    assert got["volume"].tolist() == [160.0, 160.0, 40.0, 40.0]
    assert got.index.tz is not None and len(got) == 4
    raw = cache.get("ABC", "2024-01-09", "2024-01-10", timeframe="1Min", adjustment="split", as_of="2024-01-09")
    assert closes(raw) == [400.0, 404.0, 101.0, 102.0]


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("adjustment", ["bogus", "Split", "ｓｐｌｉｔ", None, 1, "", "split\x00"])
def test_bad_adjustment_is_named(cache, adjustment):
    cache.set("SPY", daily({"2024-06-06": 500.0}), source="alpaca")
    with pytest.raises(ValueError, match="adjustment"):
        cache.get("SPY", "2024-06-06", "2024-06-06", adjustment=adjustment)


@pytest.mark.parametrize("as_of", ["yesterday", "2024-13-45", 5, 3.5, [2024], "２０２４-06-10"])
@pytest.mark.parametrize("adjustment", ["raw", "split"])
def test_bad_as_of_is_named(cache, as_of, adjustment):
    cache.set("SPY", daily({"2024-06-06": 500.0}), source="alpaca")
    with pytest.raises(ValueError, match="as_of"):
        cache.get("SPY", "2024-06-06", "2024-06-06", adjustment=adjustment, as_of=as_of)


def test_bad_as_of_is_named_even_when_nothing_is_cached(cache):
    with pytest.raises(ValueError, match="as_of"):
        cache.get("SPY", "2024-06-06", "2024-06-06", adjustment="split", as_of="soon")


def test_as_of_far_in_the_past_or_future(cache):
    cache.set("NVDA", daily(NVDA), source="alpaca")
    cache.store_corporate_actions([split("NVDA", "2024-06-10", 10.0)], source="alpaca")
    assert closes(cache.get("NVDA", "2024-06-06", "2024-06-06", adjustment="split", as_of="1900-01-01")) == [1200.0]
    assert closes(cache.get("NVDA", "2024-06-06", "2024-06-06", adjustment="split", as_of="9999-12-31")) == [120.0]


# ---------------------------------------------------------------------------
# Through the real AlpacaSource and the loopback stub
# ---------------------------------------------------------------------------


def make_source(stub: AlpacaStub) -> AlpacaSource:
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, max_requests_per_minute=None,
                        backoff_base=0.0, timeout=5.0)


def stub_daily(days: dict[str, float]) -> list[dict]:
    return [{"t": ny_midnight_utc(d), "o": p, "h": p + 2, "l": p - 1, "c": p + 1, "v": 1_000_000 + i,
             "n": 100 + i, "vw": p + 0.5} for i, (d, p) in enumerate(days.items())]


def test_staleness_a_new_split_changes_adjusted_reads_without_refetching_bars(cache, alpaca_stub):
    alpaca_stub.add_bars("NVDA", stub_daily({"2024-06-05": 1190.0, "2024-06-06": 1200.0, "2024-06-07": 1210.0,
                                             "2024-06-10": 121.0}))
    src = make_source(alpaca_stub)
    sync_bars(cache, src, ["NVDA"], "2024-06-05", "2024-06-10")
    sync_corporate_actions(cache, src, ["NVDA"], "2024-06-01", "2024-06-07")  # nothing yet
    before = cache.get("NVDA", "2024-06-05", "2024-06-10", adjustment="split")
    assert closes(before) == [1191.0, 1201.0, 1211.0, 122.0]
    bar_requests = alpaca_stub.count(BARS)

    alpaca_stub.add_split("NVDA", "2024-06-10", 10, 1)  # announced
    sync_corporate_actions(cache, src, ["NVDA"], "2024-06-01", "2024-06-14")  # only the new days are asked
    after = cache.get("NVDA", "2024-06-05", "2024-06-10", adjustment="split")
    assert closes(after) == [119.1, 120.1, 121.1, 122.0]
    assert closes(cache.get("NVDA", "2024-06-05", "2024-06-10")) == [1191.0, 1201.0, 1211.0, 122.0]
    assert alpaca_stub.count(BARS) == bar_requests  # no bar was fetched again


def _stub_book(stub: AlpacaStub) -> None:
    """Two splits (one reverse), three dividends (one the day after July 4th) on daily bars
    and on minute bars of the sessions around them."""
    days = {"2024-06-28": 100.0, "2024-07-01": 101.0, "2024-07-02": 102.0, "2024-07-03": 103.0,
            "2024-07-05": 104.0, "2024-07-08": 52.0, "2024-07-09": 53.0, "2024-07-10": 530.0,
            "2024-07-11": 531.0, "2024-07-12": 532.0}
    stub.add_bars("ABC", stub_daily(days))
    minutes: list[dict] = []
    for day, price in (("2024-07-03", 103.0), ("2024-07-05", 104.0), ("2024-07-08", 52.0), ("2024-07-09", 53.0),
                       ("2024-07-10", 530.0)):
        minutes += make_minute_bars(day, "09:30", "16:00", every_minutes=30, price=price)
    minutes[3]["vw"] = None  # a NaN vwap must stay NaN
    stub.add_bars("ABC", minutes, timeframe="1Min")
    stub.add_cash_dividend("ABC", "2024-07-01", 0.5)
    stub.add_cash_dividend("ABC", "2024-07-05", 1.03)  # after the July 4th holiday: close of July 3
    stub.add_split("ABC", "2024-07-08", 2, 1)
    stub.add_split("ABC", "2024-07-10", 1, 10)
    stub.add_cash_dividend("ABC", "2024-07-11", 5.31)


@pytest.mark.parametrize("timeframe", ["1Day", "1Min"])
@pytest.mark.parametrize("adjustment", ["split", "dividend", "all"])
def test_adjusted_reads_equal_the_stubs_adjusted_bars(cache, alpaca_stub, adjustment, timeframe):
    _stub_book(alpaca_stub)
    src = make_source(alpaca_stub)
    sync_bars(cache, src, ["ABC"], "2024-06-28", "2024-07-12")
    sync_bars(cache, src, ["ABC"], "2024-07-03", "2024-07-10", timeframe="1Min")
    sync_corporate_actions(cache, src, ["ABC"], "2024-06-01", "2024-07-31")
    start, end = ("2024-06-28", "2024-07-12") if timeframe == "1Day" else ("2024-07-03", "2024-07-10")
    got = cache.get("ABC", start, end, timeframe=timeframe, adjustment=adjustment)
    want = src.get_bars_adjusted(["ABC"], start, end, timeframe=timeframe, adjustment=adjustment)
    assert len(got) == len(want) > 0
    for column in [*PRICES, "volume"]:
        np.testing.assert_allclose(got[column].to_numpy(), want[column].to_numpy(), rtol=1e-9, err_msg=column)
    assert np.isnan(got["vwap"].to_numpy()).sum() == (1 if timeframe == "1Min" else 0)
    # The adjustment did something: the first bar's close differs from the raw one.
    raw = cache.get("ABC", start, end, timeframe=timeframe)
    assert got["close"].iloc[0] != raw["close"].iloc[0]


@pytest.mark.parametrize("as_of", ["2024-07-05", "2024-07-09"])
def test_as_of_equals_the_stub_adjusting_as_of_that_day(cache, alpaca_stub, as_of):
    _stub_book(alpaca_stub)
    alpaca_stub.adjust_as_of = date.fromisoformat(as_of)
    src = make_source(alpaca_stub)
    sync_bars(cache, src, ["ABC"], "2024-06-28", "2024-07-12")
    sync_corporate_actions(cache, src, ["ABC"], "2024-06-01", "2024-07-31")
    got = cache.get("ABC", "2024-06-28", "2024-07-12", adjustment="all", as_of=as_of)
    want = src.get_bars_adjusted(["ABC"], "2024-06-28", "2024-07-12", adjustment="all")
    np.testing.assert_allclose(got[[*PRICES, "volume"]].to_numpy(), want[[*PRICES, "volume"]].to_numpy(),
                               rtol=1e-9)


def test_default_as_of_is_today_in_new_york(cache):
    cache.set("NVDA", daily(NVDA), source="alpaca")
    cache.store_corporate_actions([split("NVDA", "2024-06-10", 10.0)], source="alpaca")
    # 2024-06-10T03:30Z is 23:30 on June 9 in New York: the split is not yet effective.
    with freeze_time("2024-06-10T03:30:00Z"):
        assert closes(cache.get("NVDA", "2024-06-07", "2024-06-07", adjustment="split")) == [1210.0]
    with freeze_time("2024-06-10T04:30:00Z"):
        assert closes(cache.get("NVDA", "2024-06-07", "2024-06-07", adjustment="split")) == [121.0]


def test_a_series_id_freed_by_a_rollback_is_not_remembered_for_its_old_series(cache):
    """An adjusted read names the series that answered (its source and feed pick the raw
    closes of dividends), and the store remembers the names of ids it has seen. A series
    created inside a transaction that rolls back frees its id for the next new series: the
    name seen inside that transaction must not be remembered for the id."""
    series = cache._bars._series
    with pytest.raises(RuntimeError, match="undo"), cache.atomic():
        cache.set("NVDA", daily(NVDA), source="alpaca", feed="sip")
        (sid,) = [r[0] for r in cache.conn.execute("SELECT series_id FROM series").fetchall()]
        assert series.names([sid]) == {sid: ("alpaca", "sip")}
        raise RuntimeError("undo")
    cache.set("NVDA", daily(NVDA), source="demo", feed="demo")
    (new_sid,) = [r[0] for r in cache.conn.execute("SELECT series_id FROM series").fetchall()]
    assert series.names([new_sid]) == {new_sid: ("demo", "demo")}
    assert series.names([new_sid]) == {new_sid: ("demo", "demo")}  # now remembered, still right
