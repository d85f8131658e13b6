"""Corporate actions from the sources, raw-only bars, the feed identity, and the stub's adjusted bars.

Expected values are hand-written (the stub's JSON, hand-computed ratios and factors), never
computed with the code under test. The real alpaca-py talks to the loopback stub.
"""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import pytest
from alpaca_stub import TEST_KEY, TEST_SECRET, AlpacaStub, Fault, alpaca_stub_fixture, make_daily_bars

from cachelib.corporate_actions import ACTION_COLUMNS
from cachelib.demo import DemoSource
from cachelib.sources import AlpacaSource, MalformedResponseError
from cachelib.sync import sync_bars

alpaca_stub = alpaca_stub_fixture()
ACTIONS = "/v1/corporate-actions"
BARS = "/v2/stocks/bars"


def make_source(stub: AlpacaStub, **kwargs) -> AlpacaSource:
    kwargs.setdefault("max_requests_per_minute", None)
    kwargs.setdefault("backoff_base", 0.0)
    kwargs.setdefault("timeout", 5.0)
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, **kwargs)


def rows(frame: pd.DataFrame) -> list[tuple]:
    out = []
    for r in frame.itertuples(index=False):
        out.append((r.symbol, r.action_type, r.ex_date,
                    None if pd.isna(r.ratio) else r.ratio, None if pd.isna(r.amount) else r.amount,
                    r.new_symbol if isinstance(r.new_symbol, str) else None, r.source))
    return out


# ---------------------------------------------------------------------------
# Alpaca: parsing, pagination, few requests
# ---------------------------------------------------------------------------


def test_every_handled_type_in_one_paginated_request(alpaca_stub):
    alpaca_stub.corporate_actions_page_size = 2
    alpaca_stub.add_split("AAPL", "2020-08-31", 4, 1)  # public record: AAPL 4:1
    alpaca_stub.add_split("TSLA", "2022-08-25", 3, 1)  # TSLA 3:1
    alpaca_stub.add_split("GE", "2021-08-02", 1, 8)  # GE 1:8 reverse split
    alpaca_stub.add_cash_dividend("AAPL", "2020-08-07", 0.82)
    alpaca_stub.add_stock_dividend("TSLA", "2022-01-03", 0.05)
    alpaca_stub.add_name_change("FB", "META", "2022-06-09")
    alpaca_stub.add_corporate_action("spin_offs", {"source_symbol": "GE", "new_symbol": "GEHC"})
    alpaca_stub.add_split("MSFT", "2021-01-04", 2, 1)  # not asked for
    src = make_source(alpaca_stub)

    frame = src.get_corporate_actions(["aapl", "TSLA", "GE", "META"], "2020-01-01", date(2022, 12, 31))

    assert list(frame.columns) == list(ACTION_COLUMNS)
    assert rows(frame) == [
        ("AAPL", "cash_dividend", date(2020, 8, 7), None, 0.82, None, "alpaca"),
        ("AAPL", "forward_split", date(2020, 8, 31), 4.0, None, None, "alpaca"),
        ("FB", "name_change", date(2022, 6, 9), None, None, "META", "alpaca"),
        ("GE", "reverse_split", date(2021, 8, 2), 0.125, None, None, "alpaca"),
        ("TSLA", "stock_dividend", date(2022, 1, 3), 1.05, None, None, "alpaca"),
        ("TSLA", "forward_split", date(2022, 8, 25), 3.0, None, None, "alpaca"),
    ]
    sent = alpaca_stub.requests
    assert [r.path for r in sent] == [ACTIONS] * 3  # 6 matching actions, 2 per page
    assert sent[0].params["symbols"] == "AAPL,TSLA,GE,META"
    assert sent[0].params["types"] == "forward_split,reverse_split,cash_dividend,stock_dividend,name_change"
    assert (sent[0].params["start"], sent[0].params["end"]) == ("2020-01-01", "2022-12-31")
    assert src.requests_made == 3


def test_the_page_size_is_alpacas_maximum_and_no_total_cap(alpaca_stub):
    # 1,500 actions: the SDK's default limit=1000 would silently stop after the first 1,000.
    days = pd.bdate_range("2000-01-03", periods=300).date
    symbols = ["A", "B", "C", "D", "E"]
    for sym in symbols:
        for day in days:
            alpaca_stub.add_cash_dividend(sym, day, 0.01)
    src = make_source(alpaca_stub)
    frame = src.get_corporate_actions(symbols, "2000-01-01", "2001-12-31")
    assert len(frame) == 1500
    assert alpaca_stub.count(ACTIONS) == 2  # ceil(1500 / 1000)
    assert {r.params["limit"] for r in alpaca_stub.requests} == {"1000"}


def test_other_types_are_ignored_with_a_debug_line(alpaca_stub, caplog):
    caplog.set_level(logging.DEBUG, logger="cachelib.sources")
    # Alpaca sends only the types asked for; a server that sends more is ignored, not trusted
    body = {key: [{"symbol": "XYZ", "ex_date": "2021-03-01"}]
            for key in ("spin_offs", "cash_mergers", "stock_mergers", "redemptions", "unit_splits")}
    alpaca_stub.add_faults(ACTIONS, _json({"corporate_actions": body, "next_page_token": None}))
    src = make_source(alpaca_stub)
    frame = src.get_corporate_actions("XYZ", "2021-01-01", "2021-12-31")
    assert frame.empty and list(frame.columns) == list(ACTION_COLUMNS)
    assert "ignoring spin_offs (1)" in caplog.text and "ignoring cash_mergers (1)" in caplog.text


def test_a_regular_and_a_special_dividend_on_one_ex_date_are_summed(alpaca_stub):
    alpaca_stub.add_cash_dividend("COST", "2023-12-27", 1.02)
    alpaca_stub.add_cash_dividend("COST", "2023-12-27", 15.0, special=True)
    alpaca_stub.add_split("COST", "2023-12-28", 2, 1)
    alpaca_stub.add_split("COST", "2023-12-28", 2, 1)  # the same action twice: one row
    frame = make_source(alpaca_stub).get_corporate_actions("COST", "2023-12-01", "2023-12-31")
    assert rows(frame) == [("COST", "cash_dividend", date(2023, 12, 27), None, 16.02, None, "alpaca"),
                           ("COST", "forward_split", date(2023, 12, 28), 2.0, None, None, "alpaca")]


def test_no_symbols_no_request_and_reversed_range(alpaca_stub):
    src = make_source(alpaca_stub)
    assert src.get_corporate_actions([], "2020-01-01", "2020-12-31").empty
    assert alpaca_stub.count() == 0
    with pytest.raises(ValueError, match="before start"):
        src.get_corporate_actions("AAPL", "2021-01-01", "2020-01-01")
    with pytest.raises(ValueError):
        src.get_corporate_actions("AA PL", "2020-01-01", "2020-12-31")


@pytest.mark.parametrize("key, item, field", [
    ("forward_splits", {"symbol": "AAPL", "new_rate": 4, "old_rate": 1, "ex_date": "2020-13-01"}, "ex_date"),
    ("forward_splits", {"symbol": "AAPL", "new_rate": 4, "old_rate": 1, "ex_date": 20200831}, "ex_date"),
    ("forward_splits", {"symbol": "AAPL", "new_rate": 4, "old_rate": 1}, "ex_date"),
    ("forward_splits", {"symbol": "AAPL", "new_rate": 0, "old_rate": 1, "ex_date": "2020-08-31"}, "new_rate"),
    ("forward_splits", {"symbol": "AAPL", "new_rate": "4", "old_rate": 1, "ex_date": "2020-08-31"}, "new_rate"),
    ("forward_splits", {"symbol": "AAPL", "new_rate": 4, "old_rate": True, "ex_date": "2020-08-31"}, "old_rate"),
    ("forward_splits", {"symbol": "AAPL", "new_rate": 1e400, "old_rate": 1, "ex_date": "2020-08-31"}, "new_rate"),
    ("cash_dividends", {"symbol": "AAPL", "rate": -0.2, "ex_date": "2020-08-07"}, "rate"),
    ("cash_dividends", {"symbol": "ÄAPL", "rate": 0.2, "ex_date": "2020-08-07"}, "symbol"),
    ("cash_dividends", {"symbol": None, "rate": 0.2, "ex_date": "2020-08-07"}, "symbol"),
    ("stock_dividends", {"symbol": "AAPL", "rate": None, "ex_date": "2020-08-07"}, "rate"),
    ("name_changes", {"old_symbol": "AAPL", "new_symbol": "x" * 500, "process_date": "2020-08-07"}, "new_symbol"),
    ("cash_dividends", "not an object", "cash_dividends[0]"),
])
def test_a_bad_row_names_its_field(alpaca_stub, key, item, field):
    alpaca_stub.add_faults(ACTIONS, _json({"corporate_actions": {key: [item]}, "next_page_token": None}))
    with pytest.raises(MalformedResponseError, match=field.replace("[", r"\[").replace("]", r"\]")):
        make_source(alpaca_stub).get_corporate_actions("AAPL", "2020-01-01", "2020-12-31")


def _json(payload):
    return Fault.json_body(payload)


@pytest.mark.parametrize("payload", [
    {"corporate_actions": None, "next_page_token": None},
    {"corporate_actions": [1, 2], "next_page_token": None},
    {"corporate_actions": {"forward_splits": {"symbol": "AAPL"}}, "next_page_token": None},
    {"something_else": {}, "next_page_token": None},
])
def test_a_body_of_the_wrong_shape(alpaca_stub, payload):
    alpaca_stub.add_faults(ACTIONS, _json(payload))
    with pytest.raises(MalformedResponseError):
        make_source(alpaca_stub).get_corporate_actions("AAPL", "2020-01-01", "2020-12-31")


def test_a_repeated_page_token_stops_the_call(alpaca_stub):
    alpaca_stub.add_split("AAPL", "2020-08-31", 4, 1)
    alpaca_stub.repeat_page_token = "again"
    src = make_source(alpaca_stub)
    with pytest.raises(MalformedResponseError, match="same next_page_token"):
        src.get_corporate_actions("AAPL", "2020-01-01", "2020-12-31")
    assert alpaca_stub.count(ACTIONS) == 2


def test_faults_are_retried_and_keys_stay_out(alpaca_stub):
    alpaca_stub.add_split("AAPL", "2020-08-31", 4, 1)
    alpaca_stub.add_faults(ACTIONS, 503, 429)
    src = make_source(alpaca_stub)
    frame = src.get_corporate_actions("AAPL", "2020-01-01", "2020-12-31")
    assert len(frame) == 1 and src.retries_made == 2
    assert alpaca_stub.requests[-1].headers["apca-api-key-id"] == TEST_KEY


def test_stub_json_parses_with_the_sdk_models(alpaca_stub):
    """Fidelity: the stub's corporate actions satisfy alpaca-py's own pydantic models."""
    from alpaca.data.historical.corporate_actions import CorporateActionsClient
    from alpaca.data.requests import CorporateActionsRequest

    alpaca_stub.add_split("AAPL", "2020-08-31", 4, 1)
    alpaca_stub.add_split("GE", "2021-08-02", 1, 8)
    alpaca_stub.add_cash_dividend("AAPL", "2020-08-07", 0.82)
    alpaca_stub.add_stock_dividend("TSLA", "2022-01-03", 0.05)
    alpaca_stub.add_name_change("FB", "META", "2022-06-09")
    client = CorporateActionsClient(TEST_KEY, TEST_SECRET, url_override=alpaca_stub.url)
    found = client.get_corporate_actions(CorporateActionsRequest(
        symbols=["AAPL", "GE", "TSLA", "FB"], start=date(2020, 1, 1), end=date(2022, 12, 31)))
    assert found["forward_splits"][0].new_rate == 4 and found["reverse_splits"][0].old_rate == 8
    assert found["cash_dividends"][0].rate == 0.82 and found["stock_dividends"][0].rate == 0.05
    assert found["name_changes"][0].new_symbol == "META"


# ---------------------------------------------------------------------------
# Raw bars only; the feed in the identity
# ---------------------------------------------------------------------------


def test_get_bars_is_always_raw_and_adjusted_requests_are_explicit(alpaca_stub, caplog):
    caplog.set_level(logging.WARNING, logger="cachelib.sources")
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3))
    src = make_source(alpaca_stub, adjustment="split")
    warnings = [r.getMessage() for r in caplog.records if "get_bars_adjusted" in r.getMessage()]
    assert len(warnings) == 1 and "raw" in warnings[0]
    src.get_bars("AAPL", "2024-01-02", "2024-01-04")
    assert alpaca_stub.requests[-1].params["adjustment"] == "raw"
    src.get_bars_adjusted("AAPL", "2024-01-02", "2024-01-04")
    assert alpaca_stub.requests[-1].params["adjustment"] == "split"
    src.get_bars_adjusted("AAPL", "2024-01-02", "2024-01-04", adjustment="ALL")
    assert alpaca_stub.requests[-1].params["adjustment"] == "all"
    with pytest.raises(ValueError, match="dividend"):
        src.get_bars_adjusted("AAPL", "2024-01-02", "2024-01-04", adjustment="splits")
    caplog.clear()
    make_source(alpaca_stub)  # raw: no warning
    assert not [r for r in caplog.records if "get_bars_adjusted" in r.getMessage()]


def test_the_sync_asks_for_raw_bars_whatever_the_configured_adjustment(alpaca_stub, cache):
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 5))
    src = make_source(alpaca_stub, adjustment="split", feed="sip")
    sync_bars(cache, src, ["AAPL"], "2024-01-02", "2024-01-08")
    sent = [r for r in alpaca_stub.requests if r.path == BARS]
    assert sent and all(r.params["adjustment"] == "raw" for r in sent)
    assert all(r.params["feed"] == "sip" for r in sent)


def test_feed_name_is_part_of_the_identity(alpaca_stub):
    assert make_source(alpaca_stub).feed_name == "iex"
    assert make_source(alpaca_stub, feed=" SIP ").feed_name == "sip"
    assert make_source(alpaca_stub, feed="delayed_sip").feed_name == "delayed_sip"
    assert make_source(alpaca_stub, feed="sip").name == "alpaca"
    assert (DemoSource().name, DemoSource().feed_name) == ("demo", "demo")


# ---------------------------------------------------------------------------
# The stub's adjusted bars: the independent reference for the cache's adjusted reads
# ---------------------------------------------------------------------------


def test_stub_serves_adjusted_bars_from_its_actions(alpaca_stub):
    # raw closes 101, 102, 103, 104, 105 on Jan 2, 3, 4, 5, 8 (2024); volumes 1,000,000 + i
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 5))
    alpaca_stub.add_cash_dividend("AAPL", "2024-01-04", 0.5)  # close before: 102 (Jan 3)
    alpaca_stub.add_split("AAPL", "2024-01-05", 2, 1)
    src = make_source(alpaca_stub)

    def closes(adjustment):
        frame = src.get_bars_adjusted("AAPL", "2024-01-02", "2024-01-08", adjustment=adjustment).xs("AAPL")
        return frame["close"].to_numpy(), frame["volume"].to_numpy()

    d = 1 - 0.5 / 102
    c, v = closes("raw")
    np.testing.assert_array_equal(c, [101, 102, 103, 104, 105])
    c, v = closes("split")
    np.testing.assert_allclose(c, [50.5, 51, 51.5, 104, 105], rtol=1e-12)
    np.testing.assert_allclose(v, [2_000_000, 2_000_002, 2_000_004, 1_000_003, 1_000_004], rtol=1e-12)
    c, v = closes("dividend")
    np.testing.assert_allclose(c, [101 * d, 102 * d, 103, 104, 105], rtol=1e-12)
    np.testing.assert_allclose(v, [1_000_000, 1_000_001, 1_000_002, 1_000_003, 1_000_004], rtol=1e-12)
    c, v = closes("all")
    np.testing.assert_allclose(c, [50.5 * d, 51 * d, 51.5, 104, 105], rtol=1e-12)

    alpaca_stub.adjust_as_of = date(2024, 1, 4)  # before the split was effective
    c, _ = closes("all")
    np.testing.assert_allclose(c, [101 * d, 102 * d, 103, 104, 105], rtol=1e-12)


def test_stub_reverse_split_and_stock_dividend(alpaca_stub):
    alpaca_stub.add_bars("XYZ", make_daily_bars("2024-01-02", 3, price=1.0, step=0.0))  # close 2.0
    alpaca_stub.add_split("XYZ", "2024-01-03", 1, 10)
    alpaca_stub.add_stock_dividend("XYZ", "2024-01-04", 0.25)
    frame = make_source(alpaca_stub).get_bars_adjusted("XYZ", "2024-01-02", "2024-01-04", adjustment="split")
    np.testing.assert_allclose(frame["close"].to_numpy(), [2.0 / 0.1 / 1.25, 2.0 / 1.25, 2.0], rtol=1e-12)
    np.testing.assert_allclose(frame["volume"].to_numpy(),
                               [1_000_000 * 0.1 * 1.25, 1_000_001 * 1.25, 1_000_002], rtol=1e-12)


# ---------------------------------------------------------------------------
# The demo's corporate actions, consistent with its raw prices
# ---------------------------------------------------------------------------


def test_demo_nvda_split_drops_raw_prices_by_four():
    src = DemoSource(seed=42)
    actions = src.get_corporate_actions(["NVDA", "SPY"], "2024-01-01", "2024-12-31")
    split = actions[actions["action_type"] == "forward_split"]
    assert rows(split) == [("NVDA", "forward_split", date(2024, 6, 10), 4.0, None, None, "demo")]

    bars = src.get_bars("NVDA", "2024-06-03", "2024-06-14").xs("NVDA")
    days = [t.tz_convert("America/New_York").date() for t in bars.index]
    i = days.index(date(2024, 6, 10))
    assert days[i - 1] == date(2024, 6, 7)
    ratio = bars["close"].iloc[i - 1] / bars["close"].iloc[i]
    assert 4 / 1.15 < ratio < 4 * 1.15  # 4x, within a normal daily move
    # away from the ex-date, no such jump
    moves = (bars["close"] / bars["close"].shift(1)).dropna().drop(bars.index[i])
    assert (moves.between(0.85, 1.15)).all()
    # volume: raw shares before the split are about a quarter of those after
    before = bars["volume"].iloc[:i].mean()
    after = bars["volume"].iloc[i:].mean()
    assert 4 / 2.5 < after / before < 4 * 2.5
    # trade counts are counts of trades: the split does not change their scale
    assert 1 / 2.5 < bars["trade_count"].iloc[i:].mean() / bars["trade_count"].iloc[:i].mean() < 2.5
    # NVDA's raw price in January 2024 is its familiar ~490 $
    jan = src.get_bars("NVDA", "2024-01-02", "2024-01-31").xs("NVDA")["close"]
    assert 300 < jan.mean() < 700


def test_demo_minute_bars_and_chain_follow_the_raw_prices():
    src = DemoSource(seed=42)
    before = src.get_bars("NVDA", "2024-06-07", "2024-06-07", "1Min").xs("NVDA")
    after = src.get_bars("NVDA", "2024-06-10", "2024-06-10", "1Min").xs("NVDA")
    assert 3.4 < before["close"].iloc[-1] / after["open"].iloc[0] < 4.6
    daily = src.get_bars("NVDA", "2024-06-07", "2024-06-07").xs("NVDA")
    assert daily["close"].iloc[0] == before["close"].iloc[-1]
    assert daily["volume"].iloc[0] == before["volume"].sum()


def test_demo_dividends_are_quarterly_on_sessions():
    from cachelib.market_hours import is_session

    src = DemoSource(seed=42)
    frame = src.get_corporate_actions(["AAPL", "KO", "MSFT"], "2024-01-01", "2024-12-31")
    dividends = frame[frame["action_type"] == "cash_dividend"]
    assert rows(dividends[dividends["symbol"] == "AAPL"]) == [
        ("AAPL", "cash_dividend", date(2024, 2, 12), None, 0.24, None, "demo"),  # Feb 10 is a Saturday
        ("AAPL", "cash_dividend", date(2024, 5, 10), None, 0.24, None, "demo"),
        ("AAPL", "cash_dividend", date(2024, 8, 12), None, 0.24, None, "demo"),
        ("AAPL", "cash_dividend", date(2024, 11, 11), None, 0.24, None, "demo"),
    ]
    assert [r[2] for r in rows(dividends[dividends["symbol"] == "KO"])] == [
        date(2024, 3, 14), date(2024, 6, 14), date(2024, 9, 16), date(2024, 12, 16)]
    assert all(is_session(d) for d in dividends["ex_date"])
    assert set(frame["symbol"]) == {"AAPL", "KO"}
    # the dividend is small next to the price it is paid on
    closes = src.get_bars("AAPL", "2024-02-09", "2024-02-09").xs("AAPL")["close"]
    assert 0.24 / closes.iloc[0] < 0.01


def test_demo_actions_are_known_a_month_ahead_and_validated():
    src = DemoSource(seed=42, now=pd.Timestamp("2024-05-01T16:00Z").to_pydatetime())
    frame = src.get_corporate_actions("NVDA", "2024-01-01", "2024-12-31")
    assert frame.empty  # the split (June 10) is not announced yet on May 1
    later = DemoSource(seed=42, now=pd.Timestamp("2024-05-15T16:00Z").to_pydatetime())
    assert len(later.get_corporate_actions("NVDA", "2024-01-01", "2024-12-31")) == 1
    restricted = DemoSource(seed=42, symbols_universe=["SPY"])
    assert restricted.get_corporate_actions("NVDA", "2024-01-01", "2024-12-31").empty
    with pytest.raises(ValueError, match="before start"):
        src.get_corporate_actions("NVDA", "2024-12-31", "2024-01-01")
    with pytest.raises(ValueError):
        src.get_corporate_actions(["NVDA", 5], "2024-01-01", "2024-12-31")
