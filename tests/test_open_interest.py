"""Open interest from the option contracts listing (snapshots carry none), with its date.

The real alpaca-py talks to the loopback stub, which serves both the market-data snapshots and
the trading API's ``/v2/options/contracts``. Expected values are hand-written.
"""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import pytest
from alpaca_stub import TEST_KEY, TEST_SECRET, AlpacaStub, Fault, alpaca_stub_fixture, make_option_snapshot
from freezegun import freeze_time

from cachelib.bars import OPTION_COLUMNS
from cachelib.demo import DemoSource
from cachelib.sources import (
    OPTION_CHAIN_COLUMNS,
    TRADING_URL_ENV,
    AlpacaSource,
    MalformedResponseError,
    empty_option_chain,
)

alpaca_stub = alpaca_stub_fixture()
CONTRACTS = "/v2/options/contracts"
PUT, CALL, LATER = "AAPL240126P00050000", "AAPL240126C00050000", "AAPL240315C00200000"


def make_source(stub: AlpacaStub, **kwargs) -> AlpacaSource:
    kwargs.setdefault("max_requests_per_minute", None)
    kwargs.setdefault("backoff_base", 0.0)
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("max_retries", 1)
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, **kwargs)


@pytest.fixture
def chain_stub(alpaca_stub):
    alpaca_stub.add_option_snapshots("AAPL", {c: make_option_snapshot() for c in (PUT, CALL, LATER)})
    alpaca_stub.set_latest_trade("AAPL", 191.5)
    return alpaca_stub


def test_open_interest_and_its_date_come_from_the_contracts_listing(chain_stub):
    chain_stub.option_contracts_page_size = 1
    chain_stub.set_open_interest(PUT, "1234", "2024-01-18")
    chain_stub.set_open_interest(CALL, "0", "2024-01-18")
    # LATER: listed, but no open interest yet
    src = make_source(chain_stub)
    chain = src.get_option_chain("aapl").set_index("contract_symbol")

    assert chain.loc[PUT, "open_interest"] == 1234.0 and chain.loc[PUT, "open_interest_date"] == date(2024, 1, 18)
    assert chain.loc[CALL, "open_interest"] == 0.0
    assert pd.isna(chain.loc[LATER, "open_interest"]) and chain.loc[LATER, "open_interest_date"] is None
    assert type(chain.loc[PUT, "open_interest_date"]) is date
    listing = [r for r in chain_stub.requests if r.path == CONTRACTS]
    assert len(listing) == 3  # one listing for the chain, one contract per page here
    assert listing[0].params["underlying_symbols"] == "AAPL" and listing[0].params["limit"] == "10000"
    assert listing[0].headers["apca-api-key-id"] == TEST_KEY


def test_the_listing_follows_the_chain_filters(chain_stub):
    chain_stub.set_open_interest(LATER, "77", "2024-03-14")
    src = make_source(chain_stub)
    chain = src.get_option_chain("AAPL", expiration_gte="2024-02-01", expiration_lte=date(2024, 6, 30))
    assert list(chain["contract_symbol"]) == [LATER] and chain["open_interest"].tolist() == [77.0]
    params = [r for r in chain_stub.requests if r.path == CONTRACTS][0].params
    assert (params["expiration_date_gte"], params["expiration_date_lte"]) == ("2024-02-01", "2024-06-30")


def test_chain_columns():
    assert OPTION_CHAIN_COLUMNS[: len(OPTION_COLUMNS)] == OPTION_COLUMNS
    assert "open_interest_date" in OPTION_CHAIN_COLUMNS
    assert list(empty_option_chain().columns) == list(OPTION_CHAIN_COLUMNS)


@pytest.mark.parametrize("value, when, field", [
    ("12a", "2024-01-18", "open_interest"),
    ("-5", "2024-01-18", "open_interest"),
    ("\u0661\u0662", "2024-01-18", "open_interest"),  # Arabic-Indic digits: isdigit() but not ASCII
    ("9" * 40, "2024-01-18", "open_interest"),
    (1.5, "2024-01-18", "open_interest"),
    (-3, "2024-01-18", "open_interest"),
    (True, "2024-01-18", "open_interest"),
    ({"n": 1}, "2024-01-18", "open_interest"),
    ("12", "2024-13-01", "open_interest_date"),
    ("12", 20240118, "open_interest_date"),
])
def test_a_lying_listing_is_refused_naming_the_field(chain_stub, value, when, field):
    chain_stub.set_open_interest(PUT, value, when)
    with pytest.raises(MalformedResponseError, match=field):
        make_source(chain_stub).get_option_chain("AAPL")


def test_open_interest_as_a_json_number_is_accepted(chain_stub):
    chain_stub.set_open_interest(PUT, 42, "2024-01-18")
    chain = make_source(chain_stub).get_option_chain("AAPL").set_index("contract_symbol")
    assert chain.loc[PUT, "open_interest"] == 42.0


@pytest.mark.parametrize("payload", [
    {"option_contracts": {"a": 1}, "next_page_token": None},
    {"option_contracts": ["not an object"], "next_page_token": None},
    {"option_contracts": [{"open_interest": "3"}], "next_page_token": None},
])
def test_a_listing_of_the_wrong_shape(chain_stub, payload):
    chain_stub.add_faults(CONTRACTS, Fault.json_body(payload))
    with pytest.raises(MalformedResponseError):
        make_source(chain_stub).get_option_chain("AAPL")


def test_a_repeated_page_token_on_the_listing_stops(chain_stub):
    chain_stub.set_open_interest(PUT, "1", "2024-01-18")
    chain_stub.add_faults(CONTRACTS, Fault.json_body({"option_contracts": [], "next_page_token": "same"}),
                          Fault.json_body({"option_contracts": [], "next_page_token": "same"}))
    with pytest.raises(MalformedResponseError, match="same next_page_token"):
        make_source(chain_stub).get_option_chain("AAPL")


@pytest.mark.parametrize("status, hint", [(401, TRADING_URL_ENV), (403, TRADING_URL_ENV), (404, "404"),
                                          (503, "503")])
def test_an_unusable_trading_api_leaves_open_interest_empty(chain_stub, caplog, status, hint):
    chain_stub.set_persistent_fault(CONTRACTS, status)
    caplog.set_level(logging.WARNING, logger="cachelib.sources")
    chain = make_source(chain_stub).get_option_chain("AAPL")
    assert len(chain) == 3 and chain["open_interest"].isna().all()
    assert chain["open_interest_date"].isna().all()
    assert chain["bid"].tolist() == [1.0, 1.0, 1.0]
    lines = [r.getMessage() for r in caplog.records if "no open interest" in r.getMessage()]
    assert len(lines) == 1 and hint in lines[0] and TEST_KEY not in caplog.text


def test_trading_url_precedence_and_validation(alpaca_stub, monkeypatch):
    assert make_source(alpaca_stub).trading_url == alpaca_stub.url  # a stand-in fronting every API
    monkeypatch.setenv(TRADING_URL_ENV, "https://example.invalid/")
    assert make_source(alpaca_stub).trading_url == "https://example.invalid"
    assert make_source(alpaca_stub, trading_url="http://127.0.0.1:9").trading_url == "http://127.0.0.1:9"
    monkeypatch.delenv(TRADING_URL_ENV)
    live = AlpacaSource(TEST_KEY, TEST_SECRET, paper=False, max_requests_per_minute=None)
    assert live.trading_url == "https://api.alpaca.markets"
    assert AlpacaSource(TEST_KEY, TEST_SECRET).trading_url == "https://paper-api.alpaca.markets"
    for bad in ("ftp://x", "paper-api.alpaca.markets", 5):
        with pytest.raises(ValueError, match="trading_url"):
            make_source(alpaca_stub, trading_url=bad)


def test_stub_contracts_parse_with_the_sdk_models(chain_stub):
    """Fidelity: the stub's listing satisfies alpaca-py's own OptionContractsResponse model."""
    from alpaca.trading.client import TradingClient
    from alpaca.trading.requests import GetOptionContractsRequest

    chain_stub.set_open_interest(PUT, "1234", "2024-01-18")
    client = TradingClient(TEST_KEY, TEST_SECRET, url_override=chain_stub.url)
    found = client.get_option_contracts(GetOptionContractsRequest(underlying_symbols=["AAPL"], limit=100))
    by_symbol = {c.symbol: c for c in found.option_contracts}
    assert by_symbol[PUT].open_interest == "1234" and by_symbol[PUT].open_interest_date == date(2024, 1, 18)
    assert by_symbol[PUT].strike_price == 50.0 and set(by_symbol) == {PUT, CALL, LATER}


def test_demo_chain_dates_its_open_interest_the_previous_session():
    with freeze_time("2024-03-18 18:00:00"):  # Monday 14:00 ET
        chain = DemoSource(seed=42).get_option_chain("SPY")
    assert list(chain.columns) == list(OPTION_CHAIN_COLUMNS)
    assert set(chain["open_interest_date"]) == {date(2024, 3, 15)}  # the Friday before
    assert (chain["open_interest"] >= 0).all()
    with freeze_time("2024-03-16 15:00:00"):  # Saturday: snapshot of Friday's close
        weekend = DemoSource(seed=42).get_option_chain("SPY")
    assert set(weekend["open_interest_date"]) == {date(2024, 3, 14)}
