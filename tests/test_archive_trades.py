"""archive_trades (issue 10 §4): many trades in one transaction, with archive_trade's rules and results."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pandas as pd
import pytest
from pg_fixtures import engine_of, schema_url
from test_trade_record import ENTRY, EXIT, closed

from cachelib.store import TradingCacheManager
from cachelib.store.files import DatabaseFileError
from cachelib.trade import Trade

LATER = datetime(2024, 3, 18, 14, 0, tzinfo=timezone.utc)
short = closed  # a short of 10 SPY entered at 100 and covered at 75: +250, +25 %, held 3.5 hours


def long_entry(trade_id: str = "L1", **change: object) -> dict[str, object]:
    """A long of 100 AAPL at 50, archived at entry (no exit yet)."""
    return {"trade_id": trade_id, "symbol": "aapl", "entry_date": ENTRY, "entry_price": 50.0,
            "quantity": 100, "strategy_name": "manual", **change}


def rows_by_id(cache: TradingCacheManager) -> dict[str, dict[str, object]]:
    history = cache.get_trade_history()
    return {row["trade_id"]: row for row in history.to_dict("records")}


@pytest.fixture
def second_cache_url(cache_url, tmp_path, request) -> Iterator[str]:
    """A second, separate cache on the same engine as ``cache_url``."""
    if engine_of(cache_url) == "sqlite":
        yield str(tmp_path / "second.db")
        return
    from cachelib.store.postgres import close_pools

    url = schema_url(request.getfixturevalue("pg_server"), f"second_{uuid.uuid4().hex}")
    yield url
    close_pools(url)


# -- the same results as archive_trade, one by one -------------------------------------------------


def test_a_batch_stores_exactly_what_archiving_one_by_one_stores(cache_url, second_cache_url):
    stored_first = [long_entry("S1", symbol="SPY", entry_price=100.0, quantity=-10)]  # S1 at entry
    sequence = [
        long_entry("L1"),
        Trade(**short()),  # closes the stored S1: an update of a stored row
        {"trade_id": "L1", "exit_date": EXIT, "exit_price": 62.5, "exit_reason": "signal"},
        # A caller-given P&L (after fees) is kept; the % is derived.
        {**long_entry("L2", entry_date=LATER, entry_price=20.0, quantity=10), "exit_date": LATER,
         "exit_price": 25.0, "realized_pnl": 49.0, "broker_account": "paper"},
        {"trade_id": "L1", "entry_price": 40.0},  # a corrected entry re-derives the P&L
    ]
    one_by_one = TradingCacheManager(cache_url)
    batched = TradingCacheManager(second_cache_url)
    for cache in (one_by_one, batched):
        cache.archive_trades(stored_first)
    for trade in sequence:
        one_by_one.archive_trade(trade)
    assert batched.archive_trades(sequence) == 5

    expected = one_by_one.get_trade_history()
    pd.testing.assert_frame_equal(batched.get_trade_history(), expected)
    assert list(expected["trade_id"]) == ["L2", "L1", "S1"]
    rows = rows_by_id(batched)
    assert {k: rows["L1"][k] for k in ("symbol", "entry_price", "quantity", "exit_price", "realized_pnl",
                                      "realized_pnl_pct", "holding_period_hours", "broker_account")} == {
        "symbol": "AAPL", "entry_price": 40.0, "quantity": 100, "exit_price": 62.5, "realized_pnl": 2250.0,
        "realized_pnl_pct": 56.25, "holding_period_hours": 3.5, "broker_account": "alpaca_paper",
    }
    assert rows["L1"]["exit_date"] == pd.Timestamp("2024-03-15 17:30", tz="UTC")
    assert {k: rows["L2"][k] for k in ("realized_pnl", "realized_pnl_pct", "holding_period_hours",
                                      "broker_account")} == {
        "realized_pnl": 49.0, "realized_pnl_pct": 25.0, "holding_period_hours": 0.0, "broker_account": "paper",
    }
    assert pd.isna(rows["L2"]["exit_reason"])  # never given
    assert {k: rows["S1"][k] for k in ("quantity", "realized_pnl", "realized_pnl_pct", "exit_reason",
                                      "signal_confidence", "max_drawdown_pct")} == {
        "quantity": -10, "realized_pnl": 250.0, "realized_pnl_pct": 25.0, "exit_reason": "signal",
        "signal_confidence": 0.8, "max_drawdown_pct": -1.5,
    }
    one_by_one.close()
    batched.close()


def test_a_later_trade_of_the_same_id_in_one_batch_updates_the_earlier(cache):
    assert cache.archive_trades([
        long_entry("L1"),
        {"trade_id": "L1", "exit_date": EXIT, "exit_price": 55.0},
        {"trade_id": "L1", "exit_reason": "stop"},
    ]) == 3
    history = cache.get_trade_history()
    assert len(history) == 1
    row = history.iloc[0]
    assert (row["exit_price"], row["realized_pnl"], row["realized_pnl_pct"], row["exit_reason"]) == (
        55.0, 500.0, 10.000000000000009, "stop"  # (55 / 50 - 1) * 100 in binary floating point
    )


def test_a_short_trade_in_a_batch_gets_the_signed_pct(cache):
    without_pnl = {k: v for k, v in short(trade_id="S2").items() if not k.startswith("realized_")}
    loser = {**without_pnl, "trade_id": "S3", "exit_price": 125.0}
    assert cache.archive_trades([Trade(**short()), without_pnl, loser]) == 3
    rows = rows_by_id(cache)
    assert [(rows[t]["realized_pnl"], rows[t]["realized_pnl_pct"]) for t in ("S1", "S2", "S3")] == [
        (250.0, 25.0), (250.0, 25.0), (-250.0, -25.0)
    ]


def test_more_than_500_trades_are_looked_up_in_chunks_and_updated(cache):
    assert cache.archive_trades([long_entry(f"T{i:04d}") for i in range(700)]) == 700
    exits = [{"trade_id": f"T{i:04d}", "exit_date": EXIT, "exit_price": 51.0} for i in range(0, 1200, 2)]
    news = [long_entry(f"T{i:04d}") for i in range(701, 1200, 2)]
    assert cache.archive_trades(exits[:350] + news) == 600  # 350 stored ids updated, 250 new
    history = cache.get_trade_history()
    assert len(history) == 950
    closed = history[history["exit_price"].notna()]
    assert len(closed) == 350
    assert set(closed["realized_pnl"]) == {100.0}
    assert closed["trade_id"].min() == "T0000" and closed["trade_id"].max() == "T0698"


# -- all or nothing ----------------------------------------------------------------------------------


def test_a_bad_trade_in_the_middle_stores_nothing_of_the_batch(cache):
    cache.archive_trade(long_entry("KEEP"))
    batch = [long_entry("A1"), long_entry("A2", entry_price=-5.0), long_entry("A3")]
    with pytest.raises(ValueError, match=r"trade #1 of the batch: trade 'A2': entry_price must be a positive"):
        cache.archive_trades(batch)
    assert list(cache.get_trade_history()["trade_id"]) == ["KEEP"]


def test_a_rule_across_rows_in_the_middle_stores_nothing_of_the_batch(cache):
    cache.archive_trade(long_entry("L1"))
    batch = [
        {"trade_id": "L1", "exit_date": EXIT, "exit_price": 55.0},
        {"trade_id": "L1", "exit_date": datetime(2024, 3, 15, 13, 0, tzinfo=timezone.utc)},
        long_entry("L9"),
    ]
    with pytest.raises(ValueError, match=r"trade 'L1': exit_date 2024-03-15T13:00:00\+00:00 is before entry_date"):
        cache.archive_trades(batch)
    history = cache.get_trade_history()
    assert list(history["trade_id"]) == ["L1"] and history["exit_price"].isna().all()


def test_an_update_across_batches_may_not_change_the_symbol(cache):
    cache.archive_trades([long_entry("L1")])
    with pytest.raises(ValueError, match="trade 'L1': symbol MSFT differs from the stored AAPL"):
        cache.archive_trades([long_entry("L2"), {"trade_id": "L1", "symbol": "msft"}])
    assert list(cache.get_trade_history()["trade_id"]) == ["L1"]


def test_a_new_trade_without_its_entry_is_refused(cache):
    with pytest.raises(ValueError, match="trade 'X1' is new and lacks symbol, entry_date, entry_price, quantity"):
        cache.archive_trades([long_entry("L1"), {"trade_id": "X1", "exit_price": 3.0}])
    assert cache.get_trade_history().empty


def test_a_model_built_without_validation_still_meets_the_rules(cache):
    """The engine builds its trades without a validation pass: the store checks them anyway."""
    unchecked = Trade.model_construct(**{**short(), "signal_confidence": 7.0})
    with pytest.raises(ValueError, match="trade 'S1': signal_confidence must be between 0 and 1, got 7.0"):
        cache.archive_trades([unchecked])
    assert cache.get_trade_history().empty


# -- what a batch is ---------------------------------------------------------------------------------


def test_no_trades_archive_nothing_and_open_no_transaction(cache_url):
    TradingCacheManager(cache_url).close()
    reader = TradingCacheManager(cache_url, read_only=True)
    assert reader.archive_trades([]) == 0  # a write transaction would fail on a read-only store
    assert reader.archive_trades(iter(())) == 0
    with pytest.raises(DatabaseFileError):
        reader.archive_trades([long_entry()])
    reader.close()


@pytest.mark.parametrize(
    "batch, words",
    [
        ("L1", "archive_trades takes an iterable of trades .* got str"),
        (None, "archive_trades takes an iterable of trades .* got NoneType"),
        (long_entry(), "got dict; archive one trade with archive_trade"),
        (Trade(**short()), "got Trade; archive one trade with archive_trade"),
        ([1, 2], "trade #0 of the batch: trade must be a dict or a pydantic model, got int"),
        ([long_entry(), "L2"], "trade #1 of the batch: trade must be a dict or a pydantic model, got str"),
    ],
)
def test_a_batch_of_the_wrong_type_is_refused(cache, batch, words):
    with pytest.raises(ValueError, match=words):
        cache.archive_trades(batch)
    assert cache.get_trade_history().empty
