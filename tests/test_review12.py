"""Adversarial review of issue 12 (PostgreSQL engine): each test is a defect found by attacking
the real thing (real SQLite files, the session's real PostgreSQL), kept so it stays fixed.

Expected values are written by hand.
"""

from __future__ import annotations

import logging

import pandas as pd
import psycopg
import pytest
from pg_fixtures import table_snapshot

from cachelib.cli import main
from cachelib.doctor import location_option
from cachelib.store import TradingCacheManager
from cachelib.store.postgres import redact_url

TRADE = {"trade_id": "sma:SPY:1", "symbol": "SPY", "entry_date": "2024-01-02T15:00:00Z",
         "entry_price": 470.0, "quantity": 10}
DAILY = pd.DataFrame({"close": [470.5]}, index=pd.DatetimeIndex(["2024-01-02"]))


# -- 1. A password typed without percent-encoding was printed in full ---------------------------
# libpq reads "trader:s3cr#t@host" as user trader, password "s3cr#t" (its user part ends at the
# first "@" before any "/"); urllib reads "#..." as a fragment and saw no password at all, so
# redact_url, every error naming the location, the CLI and doctor's repair lines showed it.

@pytest.mark.parametrize("password", ["s3cr#t", "s3c?rt", "s3/crt", "p@ss#w"])
def test_unencoded_password_is_redacted(password):
    url = f"postgresql://trader:{password}@db.internal:5432/cache?sslmode=require"
    assert redact_url(url) == "postgresql://trader:***@db.internal:5432/cache?sslmode=require"
    assert location_option(url) == "--db-url 'postgresql://trader@db.internal:5432/cache?sslmode=require'"


def test_password_parameter_with_hash_or_encoded_key_is_redacted():
    assert redact_url("postgresql:///cache?host=/run/pg&password=ab#cd&sslmode=disable") == \
        "postgresql:///cache?host=/run/pg&password=***&sslmode=disable"
    # libpq percent-decodes parameter names too: "pass%77ord" is "password".
    assert redact_url("postgresql:///cache?pass%77ord=zz") == "postgresql:///cache?pass%77ord=***"


@pytest.mark.parametrize("password", ["s3cr#t", "s3c?rt"])
def test_cli_error_never_shows_an_unencoded_password(password, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://trader:{password}@127.0.0.1:1/cache"  # nothing listens on port 1
    assert main(["--db-url", url, "stats"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("error: cannot connect to the PostgreSQL cache at "
                          "postgresql://trader:***@127.0.0.1:1/cache: ")
    texts = [out, err, *(r.getMessage() for r in caplog.records)]
    assert [t for t in texts if password in t or password[:4] in t] == []


# -- 2. NUL in text: stored by SQLite, a raw psycopg.DataError on PostgreSQL ----------------------
# The same call must give the same answer on both engines; PostgreSQL text cannot hold NUL, so
# both refuse it up front with a ValueError naming the field, and nothing is written.

def test_nul_in_trade_text_refused_on_both_engines(cache):
    before = table_snapshot(cache)
    with pytest.raises(ValueError, match=r"^trade 'sma:SPY:1': strategy_name 's\\x00t' contains a NUL "
                                         r"character; remove it$"):
        cache.archive_trade({**TRADE, "strategy_name": "s\x00t"})
    with pytest.raises(ValueError, match=r"^trade_id 'a\\x00b' contains a NUL character; remove it$"):
        cache.archive_trade({**TRADE, "trade_id": "a\x00b"})
    with pytest.raises(ValueError, match=r"^trade #1 of the batch: trade 'x': exit_reason"):
        cache.archive_trades([TRADE, {**TRADE, "trade_id": "x", "exit_reason": "stop\x00"}])
    assert table_snapshot(cache) == before  # all or nothing: the valid first trade is not there


def test_nul_in_source_or_strategy_filter_refused_on_both_engines(cache):
    cache.set("SPY", DAILY, source="alpaca")
    cache.archive_trade({**TRADE, "strategy_name": "sma"})
    before = table_snapshot(cache)
    nul_source = r"^source 'al\\x00p' contains a NUL character; give a name such as 'alpaca'$"
    with pytest.raises(ValueError, match=nul_source):
        cache.set("QQQ", DAILY, source="al\x00p")
    with pytest.raises(ValueError, match=nul_source):
        cache.get("SPY", "2024-01-02", "2024-01-02", source="al\x00p")
    with pytest.raises(ValueError, match=nul_source):
        cache.get_raw_options("AAPL", "2024-01-19", source="al\x00p")
    with pytest.raises(ValueError, match=r"^strategy 'sma\\x00' contains a NUL character; remove it$"):
        cache.get_trade_history(strategy="sma\x00")
    with pytest.raises(ValueError, match=r"^strategy 'sma\\x00' contains a NUL character; remove it$"):
        cache.delete_trades(strategy="sma\x00")
    assert table_snapshot(cache) == before
    assert cache.get_trade_history(strategy="sma")["trade_id"].tolist() == ["sma:SPY:1"]


# -- 3. Retry only what PostgreSQL documents as retryable -----------------------------------------
# All of SQLSTATE class 40 was retried, 40003 (statement_completion_unknown: the COMMIT may have
# happened) included, so one call could be applied twice.

def test_statement_completion_unknown_is_not_retried(pg_url):
    calls = []

    def action() -> int:
        calls.append(1)
        raise psycopg.errors.StatementCompletionUnknown("outcome unknown")

    with TradingCacheManager(pg_url) as cache, pytest.raises(psycopg.errors.StatementCompletionUnknown):
        cache._db.retrying(action)
    assert len(calls) == 1


@pytest.mark.parametrize("error", [psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected])
def test_serialization_failure_and_deadlock_are_retried(pg_url, error):
    calls = []

    def action() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise error("try again")
        return 7

    with TradingCacheManager(pg_url) as cache:
        assert cache._db.retrying(action) == 7
    assert len(calls) == 2
