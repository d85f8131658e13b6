"""AlpacaSource against a real loopback HTTP server speaking Alpaca's JSON, through the real SDK."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
import traceback
from datetime import date, datetime, timezone

import pandas as pd
import pytest
from alpaca_stub import (  # tests/ is on sys.path (tests/conftest.py)
    TEST_KEY,
    TEST_SECRET,
    AlpacaStub,
    Fault,
    Sleeps,
    alpaca_env,
    alpaca_stub_fixture,
    make_daily_bars,
    make_minute_bars,
    make_option_snapshot,
    no_ambient_keys_fixture,
)

from cachelib.bars import BAR_COLUMNS, NY
from cachelib.sources import (
    OPTION_CHAIN_COLUMNS,
    SUPPORTED_TIMEFRAMES,
    AlpacaSource,
    AuthenticationError,
    MalformedResponseError,
    MarketDataSource,
    RateLimiter,
    RateLimitError,
    SourceError,
    SourceUnavailableError,
    UnsupportedTimeframe,
    check_timeframe,
    empty_bars_frame,
    empty_option_chain,
    get_source,
    request_window,
)

alpaca_stub = alpaca_stub_fixture()

BARS = "/v2/stocks/bars"
CHAIN = "/v1beta1/options/snapshots/*"
LATEST_TRADE = "/v2/stocks/trades/latest"


_no_ambient_keys = no_ambient_keys_fixture()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_source(stub: AlpacaStub, **kwargs) -> AlpacaSource:
    kwargs.setdefault("max_requests_per_minute", None)
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 0.05)
    kwargs.setdefault("sleep", Sleeps())
    kwargs.setdefault("timeout", 5.0)
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, **kwargs)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC") if pd.Timestamp(text).tzinfo else pd.Timestamp(text, tz="UTC")


# ---------------------------------------------------------------------------
# Bars
# ---------------------------------------------------------------------------


def test_multi_symbol_multi_page_bars(alpaca_stub):
    alpaca_stub.page_size = 5
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 7, integral=True))  # JSON integers
    alpaca_stub.add_bars("MSFT", make_daily_bars("2024-01-02", 7, price=370.25))
    alpaca_stub.add_bars("SPY", make_daily_bars("2024-01-02", 7, price=470.5))
    src = make_source(alpaca_stub)

    df = src.get_bars(["spy", "AAPL", "msft", "AAPL"], "2024-01-02", date(2024, 1, 10))

    assert src.requests_made == 5 == alpaca_stub.count(BARS)  # 21 rows / 5 per page
    assert src.retries_made == 0
    assert list(df.columns) == list(BAR_COLUMNS)
    assert df.index.names == ["symbol", "timestamp"]
    assert str(df.index.get_level_values("timestamp").dtype) == "datetime64[ns, UTC]"
    assert len(df) == 21 and df.index.is_monotonic_increasing and df.index.is_unique
    assert sorted(set(df.index.get_level_values("symbol"))) == ["AAPL", "MSFT", "SPY"]
    for col in ("open", "high", "low", "close", "volume", "vwap"):
        assert df[col].dtype == "float64"
    assert str(df["trade_count"].dtype) == "Int64"
    first = df.loc[("AAPL", utc("2024-01-02T05:00:00Z"))]
    assert (first["open"], first["high"], first["low"], first["close"]) == (100.0, 102.0, 99.0, 101.0)
    assert first["volume"] == 1_000_000 and first["trade_count"] == 5000

    sent = alpaca_stub.requests
    params = sent[0].params
    assert params["symbols"] == "SPY,AAPL,MSFT"  # one request for all symbols, deduplicated
    assert params["timeframe"] == "1Day" and params["feed"] == "iex" and params["adjustment"] == "raw"
    assert pd.Timestamp(params["start"]) == utc("2024-01-02T05:00:00Z")  # NY midnight
    assert pd.Timestamp(params["end"]) == utc("2024-01-11T04:59:59.999999Z")  # end of NY day
    assert "page_token" not in params and all("page_token" in r.params for r in sent[1:])
    assert all(r.headers["apca-api-key-id"] == TEST_KEY for r in sent)
    assert all(r.headers["apca-api-secret-key"] == TEST_SECRET for r in sent)


def test_daily_bars_across_dst_keep_alpaca_instants(alpaca_stub):
    bars = make_daily_bars("2024-03-07", 4) + make_daily_bars("2024-10-31", 3)
    alpaca_stub.add_bars("AAPL", bars)
    src = make_source(alpaca_stub)

    df = src.get_bars("AAPL", "2024-03-08", "2024-03-11")
    stamps = list(df.index.get_level_values("timestamp"))
    assert stamps == [utc("2024-03-08T05:00:00Z"), utc("2024-03-11T04:00:00Z")]  # EST then EDT
    assert [s.tz_convert(NY).strftime("%Y-%m-%d %H:%M") for s in stamps] == [
        "2024-03-08 00:00", "2024-03-11 00:00"]

    df = src.get_bars("AAPL", date(2024, 11, 1), date(2024, 11, 4))
    assert list(df.index.get_level_values("timestamp")) == [
        utc("2024-11-01T04:00:00Z"), utc("2024-11-04T05:00:00Z")]


def test_intraday_window_covers_the_whole_new_york_day(alpaca_stub):
    day = make_minute_bars("2024-07-01", "04:00", "20:00", every_minutes=30)
    before = make_minute_bars("2024-06-28", "19:30", "20:00", every_minutes=30)
    after = make_minute_bars("2024-07-02", "04:00", "04:30", every_minutes=30)
    alpaca_stub.add_bars("SPY", before + day + after, timeframe="30Min")
    src = make_source(alpaca_stub)

    df = src.get_bars("SPY", "2024-07-01", "2024-07-01", timeframe="30Min")
    stamps = df.index.get_level_values("timestamp")
    assert len(df) == 32
    assert stamps[0] == utc("2024-07-01T08:00:00Z")  # 04:00 ET pre-market
    assert stamps[-1] == utc("2024-07-01T23:30:00Z")  # 19:30 ET after-hours
    assert alpaca_stub.requests[-1].params["timeframe"] == "30Min"

    # Instants are instants: a naive datetime means UTC.
    df = src.get_bars("SPY", datetime(2024, 7, 1, 13, 30), datetime(2024, 7, 1, 14, 0, tzinfo=timezone.utc),
                      timeframe="30Min")
    assert list(df.index.get_level_values("timestamp")) == [utc("2024-07-01T13:30:00Z"),
                                                           utc("2024-07-01T14:00:00Z")]


def test_no_data_gives_the_canonical_empty_frame(alpaca_stub):
    src = make_source(alpaca_stub)
    df = src.get_bars(["AAPL", "MSFT"], "2024-01-02", "2024-01-05", "1Hour")
    assert df.empty and list(df.columns) == list(BAR_COLUMNS)
    assert df.index.names == ["symbol", "timestamp"]
    assert str(df.index.get_level_values("timestamp").dtype) == "datetime64[ns, UTC]"
    assert src.requests_made == 1
    assert alpaca_stub.requests[0].params["timeframe"] == "1Hour"
    empty = empty_bars_frame()
    assert list(empty.columns) == list(BAR_COLUMNS) and empty.index.names == ["symbol", "timestamp"]


@pytest.mark.parametrize("timeframe", ["1Week", "2Min", "1Month", "daily", "", None])
def test_unsupported_timeframe(alpaca_stub, timeframe):
    src = make_source(alpaca_stub)
    with pytest.raises(ValueError) as info:
        src.get_bars("AAPL", "2024-01-02", "2024-01-05", timeframe)
    assert isinstance(info.value, UnsupportedTimeframe)
    for name in SUPPORTED_TIMEFRAMES:
        assert name in str(info.value)
    assert alpaca_stub.count() == 0


def test_timeframe_names_and_request_window():
    assert [check_timeframe(t) for t in SUPPORTED_TIMEFRAMES] == list(SUPPORTED_TIMEFRAMES)
    assert check_timeframe("1H") == "1Hour" and check_timeframe("1D") == "1Day"
    start, end = request_window("2024-01-02", "2024-07-01")
    assert start == datetime(2024, 1, 2, 5, tzinfo=timezone.utc)
    assert end == datetime(2024, 7, 2, 3, 59, 59, 999999, tzinfo=timezone.utc)
    start, end = request_window("2024-01-02T14:30:00Z", pd.Timestamp("2024-01-02 10:00", tz=NY))
    assert (start, end) == (datetime(2024, 1, 2, 14, 30, tzinfo=timezone.utc),
                            datetime(2024, 1, 2, 15, 0, tzinfo=timezone.utc))
    with pytest.raises(ValueError):
        request_window("2024-01-05", "2024-01-02")


# ---------------------------------------------------------------------------
# Option chain and latest data
# ---------------------------------------------------------------------------


def test_option_chain_parsing_and_pagination(alpaca_stub, monkeypatch):
    alpaca_stub.option_page_size = 2
    alpaca_stub.add_option_snapshots("AAPL", {
        "AAPL240126P00050000": make_option_snapshot(bid=1, ask=1.25, last=1.1, iv=0.31, daily_volume=42,
                                                    greeks={"delta": -0.2, "gamma": 0.01, "rho": -0.02,
                                                            "theta": -0.05, "vega": 0.07}),
        "AAPL240126C00050000": make_option_snapshot(bid=140.5, ask=141.0, last=None),
        "AAPL240202C00187500": make_option_snapshot(bid=None, ask=None, last=2.5, iv=None, greeks={}),
        "AAPL240315C00200000": make_option_snapshot(),
        "AAPL240621P00150000": make_option_snapshot(),
    })
    alpaca_stub.set_latest_trade("AAPL", 191.56)
    src = make_source(alpaca_stub)

    # "now" is read once through cachelib.clock.now_utc (freezegun would do too; see the report)
    import cachelib.sources as sources_module

    monkeypatch.setattr(sources_module, "now_utc", lambda: datetime(2024, 1, 20, 15, tzinfo=timezone.utc))
    chain = src.get_option_chain("aapl", expiration_lte="2024-03-15")

    assert list(chain.columns) == list(OPTION_CHAIN_COLUMNS)
    assert alpaca_stub.count(CHAIN) == 2  # 4 contracts <= 2024-03-15, 2 per page
    assert alpaca_stub.count(LATEST_TRADE) == 1
    assert src.requests_made == 4  # + one option-contracts listing for the open interest
    assert alpaca_stub.requests[0].params["expiration_date_lte"] == "2024-03-15"
    assert list(chain["contract_symbol"]) == [
        "AAPL240126C00050000", "AAPL240126P00050000", "AAPL240202C00187500", "AAPL240315C00200000"]

    put = chain.set_index("contract_symbol").loc["AAPL240126P00050000"]
    assert put["strike"] == 50.0 and put["option_type"] == "put"
    assert put["expiration"] == date(2024, 1, 26) and type(put["expiration"]) is date
    assert (put["bid"], put["ask"], put["last"], put["volume"]) == (1.0, 1.25, 1.1, 42.0)
    assert (put["implied_volatility"], put["delta"], put["gamma"], put["theta"], put["vega"], put["rho"]) == (
        0.31, -0.2, 0.01, -0.05, 0.07, -0.02)
    assert put["underlying_price"] == 191.56
    assert pd.isna(put["open_interest"])
    assert put["snapshot_time"] == pd.Timestamp("2024-01-19T20:59:59.123456789Z")

    call = chain.set_index("contract_symbol").loc["AAPL240202C00187500"]
    assert call["strike"] == 187.5 and call["option_type"] == "call"
    assert pd.isna(call["bid"]) and pd.isna(call["ask"]) and pd.isna(call["delta"])
    assert pd.isna(call["volume"]) and pd.isna(call["implied_volatility"])
    assert call["snapshot_time"] == pd.Timestamp("2024-01-20T15:00:00Z")  # no quote: now
    assert str(chain["snapshot_time"].dtype) == "datetime64[ns, UTC]"
    assert pd.isna(chain.set_index("contract_symbol").loc["AAPL240126C00050000", "last"])


def test_option_chain_without_underlying_trade_or_contracts(alpaca_stub):
    alpaca_stub.add_option_snapshots("XYZ", {"XYZ250117C00010000": make_option_snapshot()})
    src = make_source(alpaca_stub)
    chain = src.get_option_chain("XYZ", expiration_gte=date(2025, 1, 1))
    assert len(chain) == 1 and pd.isna(chain["underlying_price"].iloc[0])
    assert alpaca_stub.requests[0].params["expiration_date_gte"] == "2025-01-01"

    empty = src.get_option_chain("NONE")
    assert empty.empty and list(empty.columns) == list(OPTION_CHAIN_COLUMNS)
    assert list(empty_option_chain().columns) == list(OPTION_CHAIN_COLUMNS)


def test_latest_bar_and_trade(alpaca_stub):
    alpaca_stub.set_latest_bar("AAPL", {"t": "2024-01-19T20:59:00Z", "o": 191, "h": 191.6, "l": 190.9,
                                        "c": 191.56, "v": 12345, "n": 120, "vw": 191.3})
    alpaca_stub.set_latest_trade("AAPL", 191.56, size=5, t="2024-01-19T20:59:59.987654321Z")
    src = make_source(alpaca_stub, feed="sip")

    bar = src.get_latest_bar("aapl")
    assert bar == {"timestamp": pd.Timestamp("2024-01-19T20:59:00Z"), "open": 191.0, "high": 191.6,
                   "low": 190.9, "close": 191.56, "volume": 12345.0, "vwap": 191.3, "trade_count": 120}
    assert bar["timestamp"].tzinfo is not None
    trade = src.get_latest_trade("AAPL")
    assert trade == {"timestamp": pd.Timestamp("2024-01-19T20:59:59.987654321Z"), "price": 191.56, "size": 5.0}
    assert src.get_latest_trade("MSFT") is None and src.get_latest_bar("MSFT") is None
    assert [r.path for r in alpaca_stub.requests[:2]] == ["/v2/stocks/bars/latest", LATEST_TRADE]
    assert all(r.params["feed"] == "sip" for r in alpaca_stub.requests)


def test_stub_json_parses_with_the_sdk_models(alpaca_stub):
    """Fidelity check: the stub's payloads satisfy alpaca-py's own pydantic models."""
    from alpaca.data.historical.option import OptionHistoricalDataClient
    from alpaca.data.historical.stock import StockHistoricalDataClient
    from alpaca.data.requests import OptionChainRequest, StockBarsRequest, StockLatestTradeRequest
    from alpaca.data.timeframe import TimeFrame

    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3, integral=True))
    alpaca_stub.add_option_snapshots("AAPL", {"AAPL240126P00050000": make_option_snapshot(daily_volume=3)})
    alpaca_stub.set_latest_trade("AAPL", 190)
    stock = StockHistoricalDataClient(TEST_KEY, TEST_SECRET, url_override=alpaca_stub.url)
    option = OptionHistoricalDataClient(TEST_KEY, TEST_SECRET, url_override=alpaca_stub.url)
    barset = stock.get_stock_bars(StockBarsRequest(symbol_or_symbols=["AAPL"], timeframe=TimeFrame.Day,
                                                   start=datetime(2024, 1, 1)))
    assert len(barset["AAPL"]) == 3 and barset["AAPL"][0].open == 100.0
    snaps = option.get_option_chain(OptionChainRequest(underlying_symbol="AAPL"))
    snap = snaps["AAPL240126P00050000"]
    assert snap.latest_quote.bid_price == 1.0 and snap.greeks.delta == 0.5 and snap.implied_volatility == 0.25
    trade = stock.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols="AAPL"))
    assert trade["AAPL"].price == 190.0


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------


def _assert_no_secrets(exc: BaseException, caplog) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc) + caplog.text
    assert TEST_KEY not in text and TEST_SECRET not in text


def test_401_fails_fast_naming_the_env_vars(alpaca_stub, caplog):
    caplog.set_level(logging.DEBUG)
    alpaca_stub.api_key, alpaca_stub.secret_key = "OTHER", "KEYS"  # the stub rejects ours
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3))
    src = make_source(alpaca_stub)
    with pytest.raises(AuthenticationError) as info:
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert src.requests_made == 1 == alpaca_stub.count()
    assert info.value.status_code == 401
    assert "APCA_API_KEY_ID" in str(info.value) and "APCA_API_SECRET_KEY" in str(info.value)
    assert src._sleep == []  # type: ignore[attr-defined]  (no backoff)
    _assert_no_secrets(info.value, caplog)


def test_403_and_a_body_echoing_the_key_is_redacted(alpaca_stub, caplog):
    caplog.set_level(logging.DEBUG)
    alpaca_stub.add_faults(BARS, Fault.http(403, body={"message": f"key {TEST_KEY} / {TEST_SECRET} forbidden"}))
    src = make_source(alpaca_stub)
    with pytest.raises(AuthenticationError) as info:
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert info.value.status_code == 403 and "APCA_API_KEY_ID" in str(info.value)
    assert "***" in str(info.value)
    assert src.requests_made == 1
    _assert_no_secrets(info.value, caplog)


@pytest.mark.parametrize("retry_after, expected", [(2, [2.0]), (None, None)])
def test_429_then_200_recovers(alpaca_stub, retry_after, expected):
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3))
    alpaca_stub.add_faults(BARS, Fault.http(429, retry_after=retry_after))
    src = make_source(alpaca_stub, backoff_base=0.02)
    df = src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert len(df) == 3
    assert src.requests_made == 2 and src.retries_made == 1
    if expected is not None:
        assert src._sleep == expected  # Retry-After honoured
    else:
        assert len(src._sleep) == 1 and 0.01 <= src._sleep[0] <= 0.02  # exponential with jitter


def test_429_forever_raises_rate_limit_error(alpaca_stub):
    alpaca_stub.set_persistent_fault(BARS, 429)
    src = make_source(alpaca_stub, max_retries=2)
    with pytest.raises(RateLimitError):
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert src.requests_made == 3


def test_500s_then_200_recover_with_bounded_exponential_backoff(alpaca_stub):
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3))
    alpaca_stub.add_faults(BARS, 500, 502, 503)
    src = make_source(alpaca_stub, backoff_base=0.01, backoff_max=0.03, max_retries=5)
    df = src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert len(df) == 3 and src.requests_made == 4 == alpaca_stub.count(BARS)
    caps = [0.01, 0.02, 0.03]  # min(backoff_max, base * 2**n)
    assert len(src._sleep) == 3
    assert all(cap / 2 <= s <= cap for s, cap in zip(src._sleep, caps))


def test_500_forever_raises_source_unavailable_after_bounded_attempts(alpaca_stub, caplog):
    caplog.set_level(logging.DEBUG)
    alpaca_stub.set_persistent_fault("*", 500)
    src = make_source(alpaca_stub, max_retries=3)
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError) as info:
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert time.monotonic() - started < 2
    assert info.value.status_code == 500
    assert src.requests_made == 4 == alpaca_stub.count() and len(src._sleep) == 3
    _assert_no_secrets(info.value, caplog)


def test_sdk_builtin_retry_is_off(alpaca_stub):
    """alpaca-py would retry 504 three times with a 3 s sleep; with max_retries=0 we send one."""
    alpaca_stub.set_persistent_fault(BARS, 504)
    src = make_source(alpaca_stub, max_retries=0)
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError):
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert src.requests_made == 1 and time.monotonic() - started < 1


def test_failure_on_page_three_retries_that_page(alpaca_stub):
    alpaca_stub.page_size = 2
    for sym in ("AAPL", "MSFT", "SPY"):
        alpaca_stub.add_bars(sym, make_daily_bars("2024-01-02", 2))
    alpaca_stub.add_faults(BARS, None, None, 500)
    src = make_source(alpaca_stub)
    df = src.get_bars(["AAPL", "MSFT", "SPY"], "2024-01-02", "2024-01-05")
    assert len(df) == 6 and df.index.is_unique
    assert src.requests_made == 4 == alpaca_stub.count(BARS) and src.retries_made == 1
    sent = alpaca_stub.requests
    assert sent[2].status == 500 and sent[3].params["page_token"] == sent[2].params["page_token"]


def test_truncated_json_is_malformed_and_returns_nothing(alpaca_stub, caplog):
    caplog.set_level(logging.DEBUG)
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3))
    alpaca_stub.add_faults(BARS, Fault.truncated())
    src = make_source(alpaca_stub)
    result = None
    with pytest.raises(MalformedResponseError) as info:
        result = src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert result is None and src.requests_made == 1
    _assert_no_secrets(info.value, caplog)


@pytest.mark.parametrize("payload", [
    {"unexpected": {}},
    {"bars": {"AAPL": [{"t": "2024-01-02T05:00:00Z", "o": "abc", "h": 1, "l": 1, "c": 1, "v": 1}]}},
    {"bars": {"AAPL": [{"t": "2024-01-02T05:00:00Z", "o": 1, "h": 1, "l": 1, "v": 1}]}},
    {"bars": {"AAPL": [{"t": "yesterday", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1}]}},
    {"bars": ["not", "a", "dict"]},
])
def test_wrong_shapes_are_malformed(alpaca_stub, payload):
    alpaca_stub.add_faults(BARS, Fault.json_body(payload))
    src = make_source(alpaca_stub)
    with pytest.raises(MalformedResponseError):
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")


def test_empty_200_body_is_malformed(alpaca_stub):
    alpaca_stub.add_faults(LATEST_TRADE, Fault(status=200, body=""))
    src = make_source(alpaca_stub)
    with pytest.raises(MalformedResponseError):
        src.get_latest_trade("AAPL")


def test_timeouts_and_dropped_connections_are_retried(alpaca_stub, caplog):
    caplog.set_level(logging.DEBUG)
    alpaca_stub.set_latest_trade("AAPL", 100)
    src = make_source(alpaca_stub, timeout=0.2, max_retries=2)

    alpaca_stub.add_faults(LATEST_TRADE, Fault.slow(1.0), Fault.dropped())
    assert src.get_latest_trade("AAPL")["price"] == 100.0
    assert src.requests_made == 3 and src.retries_made == 2

    alpaca_stub.set_persistent_fault(LATEST_TRADE, Fault.slow(1.0))
    with pytest.raises(SourceUnavailableError) as info:
        src.get_latest_trade("AAPL")
    assert src.requests_made == 6
    assert "Timeout" in str(info.value)
    _assert_no_secrets(info.value, caplog)


def test_other_4xx_is_not_retried(alpaca_stub):
    alpaca_stub.add_faults(BARS, Fault.http(422, body={"message": "invalid start"}))
    src = make_source(alpaca_stub)
    with pytest.raises(SourceError) as info:
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert type(info.value) is SourceError and info.value.status_code == 422
    assert "invalid start" in str(info.value) and src.requests_made == 1


def test_unreachable_server(caplog):
    caplog.set_level(logging.DEBUG)
    with AlpacaStub() as stub:
        url = stub.url
    src = AlpacaSource(TEST_KEY, TEST_SECRET, url_override=url, max_requests_per_minute=None,
                       max_retries=1, sleep=Sleeps(), timeout=1.0)
    with pytest.raises(SourceUnavailableError) as info:
        src.get_latest_trade("AAPL")
    assert src.requests_made == 2
    _assert_no_secrets(info.value, caplog)


# ---------------------------------------------------------------------------
# Rate limiting
# ---------------------------------------------------------------------------


def test_rate_limiter_spaces_requests_through_the_source(alpaca_stub):
    clock = FakeClock()
    limiter = RateLimiter(120, clock=clock.monotonic, sleep=clock.sleep)
    alpaca_stub.set_latest_trade("AAPL", 100)
    src = make_source(alpaca_stub, rate_limiter=limiter)
    for _ in range(5):
        src.get_latest_trade("AAPL")
    assert alpaca_stub.count(LATEST_TRADE) == 5 == src.requests_made
    assert clock.sleeps == pytest.approx([0.5] * 4)  # 120/min: one request every 0.5 s
    assert clock.now - 1000.0 == pytest.approx(2.0)


def test_rate_limiter_burst_and_quiet_spell():
    clock = FakeClock()
    limiter = RateLimiter(60, burst=3, clock=clock.monotonic, sleep=clock.sleep)
    waits = [limiter.acquire() for _ in range(5)]
    assert waits == pytest.approx([0, 0, 0, 1.0, 1.0])
    clock.now += 100  # quiet: the burst is available again
    assert [limiter.acquire() for _ in range(3)] == pytest.approx([0, 0, 0])
    assert RateLimiter(None).acquire() == 0.0


def test_rate_limiter_is_thread_safe():
    limiter = RateLimiter(6000)  # 10 ms apart, real clock
    granted: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            limiter.acquire()
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 20
    assert max(granted) - started >= 19 * 0.01 - 1e-3


def test_default_limit_is_200_per_minute(alpaca_stub):
    src = make_source(alpaca_stub, max_requests_per_minute=200)
    assert src.rate_limiter.interval == pytest.approx(0.3)


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def test_credentials_and_url_from_apca_env(alpaca_stub, monkeypatch):
    alpaca_env(monkeypatch, alpaca_stub)
    alpaca_stub.set_latest_trade("AAPL", 1)
    src = AlpacaSource(max_requests_per_minute=None)
    assert src.get_latest_trade("AAPL") is not None
    assert src.credentials_source == "APCA_API_KEY_ID/APCA_API_SECRET_KEY"
    assert alpaca_stub.requests[-1].headers["apca-api-key-id"] == TEST_KEY
    assert TEST_KEY not in repr(src) and TEST_SECRET not in repr(src)


def test_credentials_from_alpaca_env(alpaca_stub, monkeypatch):
    monkeypatch.setenv("APCA_API_DATA_URL", alpaca_stub.url)
    monkeypatch.setenv("ALPACA_API_KEY", "ALPKEY")
    monkeypatch.setenv("ALPACA_SECRET_KEY", "ALPSECRET")
    alpaca_stub.set_latest_trade("AAPL", 1)
    src = AlpacaSource(max_requests_per_minute=None)
    src.get_latest_trade("AAPL")
    headers = alpaca_stub.requests[-1].headers
    assert (headers["apca-api-key-id"], headers["apca-api-secret-key"]) == ("ALPKEY", "ALPSECRET")
    assert src.credentials_source == "ALPACA_API_KEY/ALPACA_SECRET_KEY"

    monkeypatch.setenv("APCA_API_KEY_ID", "APCAKEY")  # incomplete APCA pair: ALPACA_* still used
    assert AlpacaSource().credentials_source == "ALPACA_API_KEY/ALPACA_SECRET_KEY"
    monkeypatch.setenv("APCA_API_SECRET_KEY", "APCASECRET")  # complete APCA pair wins
    assert AlpacaSource().credentials_source == "APCA_API_KEY_ID/APCA_API_SECRET_KEY"
    assert AlpacaSource("a", "b").credentials_source == "arguments"


def test_missing_keys(monkeypatch):
    with pytest.raises(AuthenticationError) as info:
        AlpacaSource()
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY"):
        assert var in str(info.value)
    with pytest.raises(AuthenticationError):
        AlpacaSource(api_key="only-a-key")


def test_feed_and_adjustment_are_validated(alpaca_stub):
    src = make_source(alpaca_stub, feed="SIP", adjustment="all")
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 1))
    src.get_bars("AAPL", "2024-01-02", "2024-01-02")  # the cache's path: always raw bars
    params = alpaca_stub.requests[-1].params
    assert (params["feed"], params["adjustment"]) == ("sip", "raw")
    src.get_bars_adjusted("AAPL", "2024-01-02", "2024-01-02")  # direct, uncached: as configured
    params = alpaca_stub.requests[-1].params
    assert (params["feed"], params["adjustment"]) == ("sip", "all")
    for feed in ("iex", "sip", "delayed_sip", "otc", "boats"):
        make_source(alpaca_stub, feed=feed)
    with pytest.raises(ValueError, match="delayed_sip"):
        make_source(alpaca_stub, feed="nasdaq")
    with pytest.raises(ValueError, match="dividend"):
        make_source(alpaca_stub, adjustment="splits")
    with pytest.raises(ValueError, match="indicative"):
        make_source(alpaca_stub, options_feed="cboe")


def test_alpaca_source_satisfies_the_protocol(alpaca_stub):
    src = make_source(alpaca_stub)
    assert isinstance(src, MarketDataSource) and src.name == "alpaca"


def _source_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cachelib.sources" and r.levelno == logging.INFO]


def test_get_source_auto_picks_alpaca_when_keys_are_set(alpaca_stub, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="cachelib.sources")
    alpaca_env(monkeypatch, alpaca_stub)
    src = get_source()
    assert isinstance(src, AlpacaSource)
    lines = _source_lines(caplog)
    assert len(lines) == 1 and "alpaca" in lines[0] and "APCA_API_KEY_ID" in lines[0]
    assert TEST_KEY not in caplog.text and TEST_SECRET not in caplog.text

    caplog.clear()
    src = get_source("alpaca", feed="sip", max_requests_per_minute=None)
    assert isinstance(src, AlpacaSource) and src.feed.value == "sip"
    assert len(_source_lines(caplog)) == 1

    with pytest.raises(ValueError, match="unknown market data source"):
        get_source("bloomberg")


def test_get_source_auto_with_alpaca_prefixed_env(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="cachelib.sources")
    monkeypatch.setenv("ALPACA_API_KEY", "ALPKEY")
    monkeypatch.setenv("ALPACA_SECRET_KEY", "ALPSECRET")
    assert isinstance(get_source("auto"), AlpacaSource)
    lines = _source_lines(caplog)
    assert len(lines) == 1 and "ALPACA_API_KEY" in lines[0] and "ALPKEY" not in caplog.text


def test_get_source_explicit_alpaca_without_keys_fails():
    with pytest.raises(AuthenticationError, match="APCA_API_KEY_ID"):
        get_source("alpaca")


def test_get_source_auto_without_keys_picks_demo(caplog):
    if importlib.util.find_spec("cachelib.demo") is None:
        pytest.skip("cachelib.demo (DemoSource) is not written yet")
    from cachelib.demo import DemoSource

    caplog.set_level(logging.INFO, logger="cachelib.sources")
    src = get_source("auto", feed="sip")  # Alpaca-only options are dropped for the demo
    assert isinstance(src, DemoSource) and isinstance(src, MarketDataSource)
    lines = _source_lines(caplog)
    assert len(lines) == 1 and "demo" in lines[0] and "APCA_API_KEY_ID" in lines[0]
    assert isinstance(get_source("demo"), DemoSource)
