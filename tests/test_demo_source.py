"""Tests of the demo source (cachelib/demo.py).

Expected values are hand-written facts (the NYSE calendar, DST, textbook Black-Scholes values)
or invariants; none is computed with the code under test.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from freezegun import freeze_time

from cachelib import demo
from cachelib.bars import BAR_COLUMNS, parse_occ_symbol
from cachelib.demo import DemoSource, black_scholes
from cachelib.market_hours import is_session
from cachelib.sources import OPTION_CHAIN_COLUMNS

NY = ZoneInfo("America/New_York")


def utc(*args) -> pd.Timestamp:
    return pd.Timestamp(datetime(*args, tzinfo=UTC))


@pytest.fixture(scope="module")
def src() -> DemoSource:
    return DemoSource(seed=42)


def minute_bars(source: DemoSource, symbol: str, start, end) -> pd.DataFrame:
    frame = source.get_bars(symbol, start, end, "1Min")
    return frame.xs(symbol, level="symbol") if len(frame) else frame.droplevel("symbol")


def check_bar_invariants(frame: pd.DataFrame) -> None:
    assert len(frame) > 0
    o, h, l, c = (frame[k].to_numpy() for k in ("open", "high", "low", "close"))
    assert (h >= np.maximum(o, c)).all()
    assert (l <= np.minimum(o, c)).all()
    assert (l > 0).all()
    for col in (o, h, l, c):  # cents
        assert np.abs(col * 100 - np.round(col * 100)).max() < 1e-6
    assert ((frame["vwap"] >= frame["low"]) & (frame["vwap"] <= frame["high"])).all()
    vol = frame["volume"].to_numpy()
    assert (vol > 0).all() and (vol == np.round(vol)).all()
    assert frame["volume"].dtype == np.float64
    assert frame["trade_count"].dtype == np.int64
    assert (frame["trade_count"] > 0).all()
    assert not frame.isna().any().any()


# ---------------------------------------------------------------------------
# Shape of the answer
# ---------------------------------------------------------------------------


def test_frame_shape_and_dtypes(src):
    frame = src.get_bars(["msft", "aapl"], "2024-03-11", "2024-03-15")
    assert list(frame.columns) == list(BAR_COLUMNS)
    assert list(frame.index.names) == ["symbol", "timestamp"]
    assert list(frame.index.get_level_values("symbol").unique()) == ["AAPL", "MSFT"]
    times = frame.index.get_level_values("timestamp")
    assert str(times.tz) == "UTC"
    assert len(frame) == 10
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        assert frame[name].dtype == np.float64
    assert frame["trade_count"].dtype == np.int64
    assert frame.index.is_monotonic_increasing
    assert src.name == "demo"


def test_comma_separated_symbols_and_empty_answer(src):
    frame = src.get_bars("AAPL,SPY", "2024-03-15", "2024-03-15")
    assert sorted(frame.index.get_level_values("symbol").unique()) == ["AAPL", "SPY"]
    empty = src.get_bars("AAPL", "2024-03-16", "2024-03-17")  # a weekend
    assert len(empty) == 0
    assert list(empty.columns) == list(BAR_COLUMNS)
    assert list(empty.index.names) == ["symbol", "timestamp"]


@pytest.mark.parametrize("bad", ["2Min", "1Week", "1Month", "4Hour", "banana", ""])
def test_unknown_timeframe_raises(src, bad):
    with pytest.raises(ValueError):
        src.get_bars("AAPL", "2024-03-15", "2024-03-15", bad)


def test_end_before_start_raises(src):
    with pytest.raises(ValueError):
        src.get_bars("AAPL", "2024-03-15", "2024-03-14")


# ---------------------------------------------------------------------------
# Calendar facts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "day, expected",
    [
        ("2024-03-15", 390),  # a full session
        ("2024-11-29", 210),  # day after Thanksgiving: 13:00 close
        ("2024-12-24", 210),  # Christmas Eve: 13:00 close
        ("2024-07-03", 210),  # Independence Day eve: 13:00 close
        ("2024-03-29", 0),  # Good Friday
        ("2024-07-04", 0),  # Independence Day
        ("2024-03-16", 0),  # a Saturday
        ("2024-03-17", 0),  # a Sunday
    ],
)
def test_minute_bar_counts(src, day, expected):
    assert len(src.get_bars("AAPL", day, day, "1Min")) == expected


def test_first_and_last_minute_across_dst(src):
    friday = minute_bars(src, "AAPL", "2024-03-08", "2024-03-08").index  # EST
    monday = minute_bars(src, "AAPL", "2024-03-11", "2024-03-11").index  # EDT
    assert friday[0] == utc(2024, 3, 8, 14, 30) and friday[-1] == utc(2024, 3, 8, 20, 59)
    assert monday[0] == utc(2024, 3, 11, 13, 30) and monday[-1] == utc(2024, 3, 11, 19, 59)
    early = minute_bars(src, "AAPL", "2024-11-29", "2024-11-29").index
    assert early[0] == utc(2024, 11, 29, 14, 30) and early[-1] == utc(2024, 11, 29, 17, 59)
    # one bar per minute, no gaps
    assert (np.diff(friday.asi8) == 60 * 10**9).all()


def test_daily_bars_are_stamped_at_new_york_midnight(src):
    days = src.get_bars("AAPL", "2024-01-01", "2024-12-31").xs("AAPL").index
    assert len(days) == 252  # NYSE sessions in 2024
    assert utc(2024, 3, 8, 5, 0) in days  # EST
    assert utc(2024, 3, 11, 4, 0) in days  # EDT
    assert utc(2024, 3, 28, 4, 0) in days
    assert utc(2024, 3, 29, 4, 0) not in days  # Good Friday
    assert utc(2024, 12, 25, 5, 0) not in days
    assert days[0] == utc(2024, 1, 2, 5, 0)
    assert days[-1] == utc(2024, 12, 31, 5, 0)


def test_datetime_bounds_are_instants(src):
    frame = src.get_bars("AAPL", datetime(2024, 3, 15, 14, 0, tzinfo=UTC),
                         datetime(2024, 3, 15, 14, 9, tzinfo=UTC), "1Min")
    times = frame.index.get_level_values("timestamp")
    assert len(frame) == 10
    assert times[0] == utc(2024, 3, 15, 14, 0) and times[-1] == utc(2024, 3, 15, 14, 9)


# ---------------------------------------------------------------------------
# Invariants and realism
# ---------------------------------------------------------------------------


def test_ohlc_consistency_over_a_year(src):
    minutes = minute_bars(src, "TSLA", "2024-01-01", "2024-12-31")
    assert len(minutes) == 249 * 390 + 3 * 210  # 252 sessions, 3 of them early closes
    check_bar_invariants(minutes)
    daily = src.get_bars(["AAPL", "SPY", "TSLA", "ZZZT", "BRK.B"], "2024-01-01", "2024-12-31")
    assert len(daily) == 5 * 252
    check_bar_invariants(daily)


def test_daily_bars_equal_aggregated_minutes(src):
    symbols = ["AAPL", "KO"]
    start, end = "2024-11-20", "2024-12-31"  # includes two early closes and Thanksgiving
    minutes = src.get_bars(symbols, start, end, "1Min").reset_index()
    minutes["day"] = minutes["timestamp"].dt.tz_convert(NY).dt.date
    minutes["pv"] = minutes["vwap"] * minutes["volume"]
    agg = minutes.groupby(["symbol", "day"]).agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
        volume=("volume", "sum"), trade_count=("trade_count", "sum"), pv=("pv", "sum"),
    )
    agg["vwap"] = agg["pv"] / agg["volume"]
    daily = src.get_bars(symbols, start, end, "1Day").reset_index()
    daily["day"] = daily["timestamp"].dt.tz_convert(NY).dt.date
    daily = daily.set_index(["symbol", "day"])
    assert list(daily.index) == list(agg.index)
    for name in ("open", "high", "low", "close", "volume", "trade_count"):
        assert (daily[name].to_numpy() == agg[name].to_numpy()).all(), name
    np.testing.assert_allclose(daily["vwap"].to_numpy(), agg["vwap"].to_numpy(), rtol=1e-12)


def test_day_to_day_continuity(src):
    daily = src.get_bars(["AAPL", "TSLA", "NVDA", "QWERT"], "2024-01-01", "2024-12-31")
    for symbol, bars in daily.groupby(level="symbol"):
        gap = (bars["open"] / bars["close"].shift(1) - 1).dropna().abs()
        if symbol == "NVDA":  # raw prices: its 4:1 split (ex 2024-06-10) opens at ~1/4
            split_day = pd.Timestamp("2024-06-10 04:00", tz="UTC")
            assert 0.70 < gap.xs(split_day, level="timestamp").iloc[0] < 0.80
            gap = gap.drop(split_day, level="timestamp")
        assert gap.max() < 0.03
        # and the days do move: not a flat line
        assert bars["close"].pct_change().std() > 0.003


def test_intraday_volume_is_u_shaped(src):
    minutes = minute_bars(src, "AAPL", "2024-04-01", "2024-04-30")
    local = minutes.index.tz_convert(NY)
    clock = local.hour * 60 + local.minute
    edges = minutes["volume"][(clock < 10 * 60) | (clock >= 15 * 60 + 30)]
    midday = minutes["volume"][(clock >= 11 * 60) & (clock < 14 * 60)]
    assert edges.mean() > 1.5 * midday.mean()


def test_future_sessions_have_no_bars(src):
    with freeze_time("2024-03-15 12:00:00"):
        assert len(src.get_bars("AAPL", "2024-03-18", "2024-03-22")) == 0
        assert len(src.get_bars("AAPL", "2024-03-18", "2024-03-22", "1Min")) == 0


# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------


def test_same_seed_same_data_different_seed_different_data(monkeypatch):
    monkeypatch.setattr(demo, "_DAILY", OrderedDict())
    a = DemoSource(seed=7).get_bars(["AAPL", "XYZ"], "2024-02-01", "2024-02-29")
    monkeypatch.setattr(demo, "_DAILY", OrderedDict())
    b = DemoSource(seed=7).get_bars(["AAPL", "XYZ"], "2024-02-01", "2024-02-29")
    c = DemoSource(seed=8).get_bars(["AAPL", "XYZ"], "2024-02-01", "2024-02-29")
    pd.testing.assert_frame_equal(a, b)
    assert a.index.equals(c.index)
    assert not np.allclose(a["close"].to_numpy(), c["close"].to_numpy())
    m1 = DemoSource(seed=7).get_bars("AAPL", "2024-02-05", "2024-02-05", "1Min")
    m2 = DemoSource(seed=7).get_bars("AAPL", "2024-02-05", "2024-02-05", "1Min")
    pd.testing.assert_frame_equal(m1, m2)


def test_sub_range_equals_slice_of_larger_range(monkeypatch):
    source = DemoSource(seed=11)
    year = minute_bars(source, "AAPL", "2023-12-15", "2024-03-20")
    day = minute_bars(source, "AAPL", "2024-02-14", "2024-02-14")
    window = year[(year.index >= utc(2024, 2, 14)) & (year.index < utc(2024, 2, 15))]
    pd.testing.assert_frame_equal(day, window)
    week = source.get_bars("AAPL", "2024-01-29", "2024-02-02", "1Hour")
    quarter = source.get_bars("AAPL", "2024-01-01", "2024-03-31", "1Hour")
    pd.testing.assert_frame_equal(week, quarter.loc[week.index])

    monkeypatch.setattr(demo, "_DAILY", OrderedDict())  # recompute, no cache
    small = DemoSource(seed=11).get_bars("AAPL", "2024-02-12", "2024-02-16")
    monkeypatch.setattr(demo, "_DAILY", OrderedDict())
    large = DemoSource(seed=11).get_bars("AAPL", "2023-06-01", "2024-06-30")
    pd.testing.assert_frame_equal(small, large.loc[small.index])


# ---------------------------------------------------------------------------
# Aggregated timeframes
# ---------------------------------------------------------------------------


def _bucket(minutes: pd.DataFrame, size: int) -> pd.DataFrame:
    """Aggregate 1-minute bars into ``size``-minute buckets counted from each session's open."""
    frame = minutes.reset_index()
    local = frame["timestamp"].dt.tz_convert(NY)
    since_open = local.dt.hour * 60 + local.dt.minute - (9 * 60 + 30)
    frame["day"] = local.dt.date
    frame["bucket"] = since_open // size
    frame["pv"] = frame["vwap"] * frame["volume"]
    out = frame.groupby(["day", "bucket"]).agg(
        timestamp=("timestamp", "first"), open=("open", "first"), high=("high", "max"),
        low=("low", "min"), close=("close", "last"), volume=("volume", "sum"),
        trade_count=("trade_count", "sum"), pv=("pv", "sum"),
    )
    out["vwap"] = out["pv"] / out["volume"]
    return out.set_index("timestamp")


@pytest.mark.parametrize("timeframe, size", [("5Min", 5), ("15Min", 15), ("30Min", 30), ("1Hour", 60)])
def test_intraday_aggregations_match_minutes(src, timeframe, size):
    start, end = "2024-11-27", "2024-12-02"  # Thanksgiving (closed), then an early close
    expected = _bucket(minute_bars(src, "MSFT", start, end), size)
    got = src.get_bars("MSFT", start, end, timeframe).xs("MSFT")
    assert list(got.index) == list(expected.index)
    for name in ("open", "high", "low", "close", "volume", "trade_count"):
        assert (got[name].to_numpy() == expected[name].to_numpy()).all(), name
    np.testing.assert_allclose(got["vwap"].to_numpy(), expected["vwap"].to_numpy(), rtol=1e-12)


def test_hour_buckets_start_at_the_open(src):
    full = src.get_bars("MSFT", "2024-03-15", "2024-03-15", "1Hour").xs("MSFT").index
    assert [t.tz_convert(NY).strftime("%H:%M") for t in full] == [
        "09:30", "10:30", "11:30", "12:30", "13:30", "14:30", "15:30"]
    early = src.get_bars("MSFT", "2024-12-24", "2024-12-24", "1Hour").xs("MSFT").index
    assert [t.tz_convert(NY).strftime("%H:%M") for t in early] == ["09:30", "10:30", "11:30", "12:30"]
    assert len(src.get_bars("MSFT", "2024-03-15", "2024-03-15", "5Min")) == 78
    assert len(src.get_bars("MSFT", "2024-03-15", "2024-03-15", "15Min")) == 26
    assert len(src.get_bars("MSFT", "2024-03-15", "2024-03-15", "30Min")) == 13


# ---------------------------------------------------------------------------
# The clock: in-progress day, latest bar and trade
# ---------------------------------------------------------------------------


def test_in_progress_day_returns_only_completed_bars(src):
    with freeze_time("2024-03-15 15:00:00"):  # 11:00 ET, a Friday session
        today = minute_bars(src, "AAPL", "2024-03-15", "2024-03-15")
        assert len(today) == 90
        assert today.index[-1] == utc(2024, 3, 15, 14, 59)  # 10:59 ET
        daily = src.get_bars("AAPL", "2024-03-11", "2024-03-15").xs("AAPL")
        assert list(daily.index) == [utc(2024, 3, d, 4) for d in (11, 12, 13, 14)]
        hours = src.get_bars("AAPL", "2024-03-15", "2024-03-15", "1Hour").xs("AAPL")
        assert list(hours.index) == [utc(2024, 3, 15, 13, 30)]  # 10:30-11:29 not finished
        assert len(src.get_bars("AAPL", "2024-03-15", "2024-03-15", "5Min")) == 18
    with freeze_time("2024-03-15 14:00:00"):  # 10:00 ET
        assert len(src.get_bars("AAPL", "2024-03-15", "2024-03-15", "1Hour")) == 0
    with freeze_time("2024-03-15 20:30:00"):  # 16:30 ET: the day is complete
        daily = src.get_bars("AAPL", "2024-03-15", "2024-03-15").xs("AAPL")
        assert list(daily.index) == [utc(2024, 3, 15, 4)]
    with freeze_time("2024-03-15 12:00:00"):  # 08:00 ET, before the open
        assert len(src.get_bars("AAPL", "2024-03-15", "2024-03-15", "1Min")) == 0
    # the completed part of the day is the same data as in hindsight
    with freeze_time("2024-03-15 15:00:00"):
        partial = minute_bars(src, "AAPL", "2024-03-15", "2024-03-15")
    full = minute_bars(src, "AAPL", "2024-03-15", "2024-03-15")
    pd.testing.assert_frame_equal(partial, full.iloc[:90])


def test_latest_bar_and_trade_in_session(src):
    with freeze_time("2024-03-15 18:00:30"):  # 14:00:30 ET
        bar = src.get_latest_bar("aapl")
        trade = src.get_latest_trade("AAPL")
        minutes = minute_bars(src, "AAPL", "2024-03-15", "2024-03-15")
    assert bar["timestamp"] == datetime(2024, 3, 15, 17, 59, tzinfo=UTC)  # 13:59 ET
    assert bar["timestamp"].tzinfo is not None
    assert set(bar) == {"timestamp", *BAR_COLUMNS}
    row = minutes.loc[utc(2024, 3, 15, 17, 59)]
    for name in BAR_COLUMNS:
        assert bar[name] == row[name]
    assert isinstance(bar["trade_count"], int)
    assert set(trade) == {"timestamp", "price", "size"}
    assert trade["price"] == bar["close"]
    assert datetime(2024, 3, 15, 17, 59, tzinfo=UTC) <= trade["timestamp"] <= datetime(
        2024, 3, 15, 18, 0, 30, tzinfo=UTC)
    assert isinstance(trade["size"], int) and trade["size"] > 0


@pytest.mark.parametrize(
    "frozen, expected",
    [
        ("2024-03-16 16:00:00", datetime(2024, 3, 15, 19, 59, tzinfo=UTC)),  # Saturday
        ("2024-03-18 12:00:00", datetime(2024, 3, 15, 19, 59, tzinfo=UTC)),  # Monday 08:00 ET
        ("2024-03-18 13:30:30", datetime(2024, 3, 15, 19, 59, tzinfo=UTC)),  # 09:30:30, no bar done
        ("2024-03-18 13:31:00", datetime(2024, 3, 18, 13, 30, tzinfo=UTC)),  # first bar done
        ("2024-11-29 19:00:00", datetime(2024, 11, 29, 17, 59, tzinfo=UTC)),  # after early close
        ("2024-03-29 15:00:00", datetime(2024, 3, 28, 19, 59, tzinfo=UTC)),  # Good Friday
    ],
)
def test_latest_bar_outside_session(src, frozen, expected):
    with freeze_time(frozen):
        assert src.get_latest_bar("SPY")["timestamp"] == expected


def test_requests_counter_and_universe():
    source = DemoSource(seed=3, symbols_universe=["aapl", "SPY"])
    assert source.requests_made == 0
    assert len(source.get_bars("MSFT", "2024-03-15", "2024-03-15")) == 0
    frame = source.get_bars(["MSFT", "AAPL"], "2024-03-15", "2024-03-15")
    assert list(frame.index.get_level_values("symbol")) == ["AAPL"]
    with freeze_time("2024-03-15 18:00:00"):
        assert source.get_latest_bar("MSFT") is None
        assert source.get_latest_trade("MSFT") is None
        assert len(source.get_option_chain("MSFT")) == 0
        assert list(source.get_option_chain("MSFT").columns) == list(OPTION_CHAIN_COLUMNS)
        assert source.get_latest_bar("SPY") is not None
    assert source.requests_made == 7


def test_fixed_now_argument():
    pinned = DemoSource(seed=42, now=datetime(2024, 3, 15, 15, 0, tzinfo=UTC))
    assert len(pinned.get_bars("AAPL", "2024-03-15", "2024-03-15", "1Min")) == 90
    assert pinned.get_latest_bar("AAPL")["timestamp"] == datetime(2024, 3, 15, 14, 59, tzinfo=UTC)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


def test_black_scholes_textbook_values():
    call = black_scholes(100, 100, 1, 0.05, 0.2, "call")
    put = black_scholes(100, 100, 1, 0.05, 0.2, "put")
    assert call["price"] == pytest.approx(10.4506, abs=1e-4)
    assert put["price"] == pytest.approx(5.5735, abs=1e-4)
    assert call["delta"] == pytest.approx(0.6368, abs=1e-4)
    assert put["delta"] == pytest.approx(0.6368 - 1, abs=1e-4)
    assert call["gamma"] == pytest.approx(0.018762, abs=1e-6) == put["gamma"]
    assert call["vega"] == pytest.approx(0.37524, abs=1e-5) == put["vega"]  # per vol point
    assert call["theta"] == pytest.approx(-6.4140 / 365, abs=1e-5)  # per calendar day
    assert put["theta"] == pytest.approx(-1.6579 / 365, abs=1e-5)
    assert call["rho"] == pytest.approx(0.53232, abs=1e-5)  # per 1 % rate
    assert put["rho"] == pytest.approx(-0.41890, abs=1e-5)
    arrays = black_scholes(np.array([100.0, 100.0]), 100, 1, 0.05, 0.2, np.array(["call", "put"]))
    np.testing.assert_allclose(arrays["price"], [10.4506, 5.5735], atol=1e-4)
    with pytest.raises(ValueError):
        black_scholes(100, 100, 1, 0.05, 0.2, "straddle")


@pytest.fixture(scope="module")
def chain() -> pd.DataFrame:
    with freeze_time("2024-03-15 18:00:00"):  # Friday 14:00 ET
        return DemoSource(seed=42).get_option_chain("AAPL")


def test_chain_shape_and_snapshot(chain):
    assert list(chain.columns) == list(OPTION_CHAIN_COLUMNS)
    assert len(chain) > 100
    assert set(chain["option_type"]) == {"call", "put"}
    assert (chain["snapshot_time"] == pd.Timestamp("2024-03-15 18:00:00", tz="UTC")).all()
    with freeze_time("2024-03-15 18:00:00"):
        bar = DemoSource(seed=42).get_latest_bar("AAPL")
    assert (chain["underlying_price"] == bar["close"]).all()
    assert chain["volume"].dtype == np.int64 and chain["open_interest"].dtype == np.int64
    assert (chain["volume"] >= 0).all() and (chain["open_interest"] >= 0).all()
    for row in chain.itertuples():
        underlying, expiration, kind, strike = parse_occ_symbol(row.contract_symbol)
        assert (underlying, expiration, kind, strike) == ("AAPL", row.expiration, row.option_type, row.strike)
        assert isinstance(row.expiration, date)
    spot = chain["underlying_price"].iloc[0]
    strikes = np.sort(chain["strike"].unique())
    assert strikes.min() >= 0.8 * spot - 1e-9 and strikes.max() <= 1.2 * spot + 1e-9
    assert strikes.min() < 0.85 * spot and strikes.max() > 1.15 * spot


def test_chain_expirations(chain):
    expirations = set(chain["expiration"])
    assert all(is_session(e) for e in expirations)
    # weeklies: Good Friday 2024-03-29 is a holiday, so that week expires on Thursday 03-28
    weeklies = {date(2024, 3, 22), date(2024, 3, 28), date(2024, 4, 5), date(2024, 4, 12)}
    monthlies = {date(2024, 4, 19), date(2024, 5, 17), date(2024, 6, 21)}  # third Fridays
    assert weeklies <= expirations
    assert monthlies <= expirations
    assert date(2024, 3, 15) not in expirations  # expiring today is not listed
    with freeze_time("2024-03-15 18:00:00"):
        source = DemoSource(seed=42)
        some = source.get_option_chain("AAPL", expiration_gte="2024-04-01", expiration_lte=date(2024, 5, 31))
    assert set(some["expiration"]) == {date(2024, 4, 5), date(2024, 4, 12), date(2024, 4, 19), date(2024, 5, 17)}


def test_chain_quotes_and_greeks(chain):
    calls = chain[chain["option_type"] == "call"]
    puts = chain[chain["option_type"] == "put"]
    assert ((calls["delta"] > 0) & (calls["delta"] < 1)).all()
    assert ((puts["delta"] > -1) & (puts["delta"] < 0)).all()
    assert (chain["gamma"] >= 0).all() and (chain["vega"] >= 0).all()
    assert (calls["theta"] < 0).all()
    assert ((chain["implied_volatility"] >= 0.05) & (chain["implied_volatility"] <= 3)).all()
    assert (chain["bid"] >= 0).all()
    assert (chain["ask"] - chain["bid"] >= 0.01 - 1e-9).all()
    assert ((chain["last"] >= chain["bid"]) & (chain["last"] <= chain["ask"])).all()
    for col in ("bid", "ask", "last"):
        assert np.abs(chain[col] * 100 - np.round(chain[col] * 100)).max() < 1e-6
    # ATM-ish call delta near 0.5
    spot = chain["underlying_price"].iloc[0]
    near = calls[calls["expiration"] == date(2024, 4, 19)]
    atm = near.iloc[(near["strike"] - spot).abs().argmin()]
    assert 0.35 < atm["delta"] < 0.65


def test_put_call_parity_and_pairs(chain):
    spot = chain["underlying_price"].iloc[0]
    snapshot = datetime(2024, 3, 15, 18, 0, tzinfo=UTC)
    pairs = chain.pivot_table(index=["expiration", "strike"], columns="option_type",
                              values=["bid", "ask", "gamma", "vega", "implied_volatility"],
                              aggfunc="first")
    assert len(pairs) == len(chain) // 2
    np.testing.assert_allclose(pairs["gamma"]["call"], pairs["gamma"]["put"], rtol=1e-12)
    np.testing.assert_allclose(pairs["vega"]["call"], pairs["vega"]["put"], rtol=1e-12)
    np.testing.assert_allclose(pairs["implied_volatility"]["call"], pairs["implied_volatility"]["put"])
    for (expiration, strike), row in pairs.iterrows():
        close = datetime(expiration.year, expiration.month, expiration.day, 16, 0, tzinfo=NY)
        years = (close - snapshot).total_seconds() / (365 * 86400)
        mid_call = (row["bid"]["call"] + row["ask"]["call"]) / 2
        mid_put = (row["bid"]["put"] + row["ask"]["put"]) / 2
        half_spreads = (row["ask"]["call"] - row["bid"]["call"] + row["ask"]["put"] - row["bid"]["put"]) / 2
        parity = spot - strike * math.exp(-0.04 * years)
        assert abs(mid_call - mid_put - parity) <= half_spreads + 1e-9, (expiration, strike)


def test_volatility_smile(chain):
    spot = chain["underlying_price"].iloc[0]
    def iv_near(rows: pd.DataFrame, target: float) -> float:
        return rows.iloc[(rows["strike"] - target).abs().argmin()]["implied_volatility"]

    for expiration, rows in chain[chain["option_type"] == "call"].groupby("expiration"):
        atm = iv_near(rows, spot)
        assert iv_near(rows, 0.85 * spot) > atm, expiration
        assert iv_near(rows, 1.15 * spot) > atm, expiration
        assert iv_near(rows, 0.85 * spot) > iv_near(rows, 1.15 * spot)  # equity skew


def test_chain_is_deterministic_and_consistent_with_black_scholes(chain):
    with freeze_time("2024-03-15 18:00:00"):
        again = DemoSource(seed=42).get_option_chain("AAPL")
    pd.testing.assert_frame_equal(chain, again)
    row = chain[(chain["expiration"] == date(2024, 5, 17)) & (chain["option_type"] == "put")].iloc[5]
    close = datetime(2024, 5, 17, 16, 0, tzinfo=NY)
    years = (close - datetime(2024, 3, 15, 18, 0, tzinfo=UTC)).total_seconds() / (365 * 86400)
    theo = black_scholes(row["underlying_price"], row["strike"], years, 0.04, row["implied_volatility"], "put")
    assert row["bid"] <= theo["price"] <= row["ask"]
    for greek in ("delta", "gamma", "theta", "vega", "rho"):
        assert row[greek] == pytest.approx(theo[greek], rel=1e-9, abs=1e-12)


def test_chain_outside_market_hours_uses_last_close():
    with freeze_time("2024-03-16 15:00:00"):  # Saturday
        weekend = DemoSource(seed=42).get_option_chain("SPY")
        bar = DemoSource(seed=42).get_latest_bar("SPY")
    assert (weekend["snapshot_time"] == pd.Timestamp("2024-03-15 20:00:00", tz="UTC")).all()
    assert (weekend["underlying_price"] == bar["close"]).all()
    assert min(weekend["expiration"]) == date(2024, 3, 22)
