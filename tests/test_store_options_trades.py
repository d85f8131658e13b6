"""Option-chain snapshots and trade history in the store (issue 2, sections 3 and 4)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
import pytest
from pydantic import BaseModel

CHAIN = pd.DataFrame(
    {
        "strike": [100.0, 100.0, 105.0],
        "option_type": ["C", "put", "Call"],
        "expiration": ["2024-01-26", "2024-01-26", "2024-02-16"],
        "bid": [2.10, 1.95, 0.80],
        "ask": [2.20, 2.05, 0.90],
        "last": [2.15, 2.00, 0.85],
        "volume": [120, 80, 15],
        "open_interest": [1500, 900, 300],
        "implied_volatility": [0.25, 0.26, 0.24],
        "delta": [0.52, -0.48, 0.21],
        "gamma": [0.05, 0.05, 0.03],
        "theta": [-0.08, -0.07, -0.02],
        "vega": [0.11, 0.11, 0.09],
        "rho": [0.02, -0.02, 0.01],
    }
)


def test_store_and_read_a_snapshot(cache):
    snap = datetime(2024, 1, 19, 20, 0, tzinfo=timezone.utc)
    assert cache.store_raw_options("aapl", "2024-01-19", CHAIN, underlying_price=100.5, snapshot_time=snap) == 3
    df = cache.get_raw_options("AAPL", date(2024, 1, 19))
    assert df["contract_symbol"].tolist() == ["AAPL240126C00100000", "AAPL240126P00100000", "AAPL240216C00105000"]
    assert df["option_type"].tolist() == ["call", "put", "call"]
    assert df["expiration"].tolist() == [date(2024, 1, 26), date(2024, 1, 26), date(2024, 2, 16)]
    assert df["underlying_price"].tolist() == [100.5, 100.5, 100.5]
    assert df["snapshot_time"].tolist() == [pd.Timestamp(snap)] * 3
    assert df["open_interest"].tolist() == [1500, 900, 300]
    assert set(df["data_quality_score"]) == {1.0}
    assert df["symbol"].tolist() == ["AAPL"] * 3


def test_filters_and_missing_snapshot(cache):
    cache.store_raw_options("AAPL", "2024-01-19", CHAIN, underlying_price=100.5)
    assert len(cache.get_raw_options("AAPL", "2024-01-19", option_type="c")) == 2
    assert len(cache.get_raw_options("AAPL", "2024-01-19", option_type="PUT")) == 1
    assert cache.get_raw_options("AAPL", "2024-01-19", expiration="2024-02-16")["strike"].tolist() == [105.0]
    assert cache.get_raw_options("AAPL", "2024-01-22") is None
    assert cache.get_raw_options("AAPL", "2024-01-19", source="polygon") is None


def test_a_later_snapshot_of_the_same_day_replaces_the_earlier(cache):
    cache.store_raw_options("AAPL", "2024-01-19", CHAIN, underlying_price=100.5)
    later = CHAIN.iloc[:1].copy()
    later["bid"] = 2.50
    later["ask"] = 2.60
    cache.store_raw_options("AAPL", "2024-01-19", later, underlying_price=101.0)
    df = cache.get_raw_options("AAPL", "2024-01-19")
    assert len(df) == 3
    row = df[df["contract_symbol"] == "AAPL240126C00100000"].iloc[0]
    assert (row["bid"], row["ask"], row["underlying_price"]) == (2.50, 2.60, 101.0)
    # Another day is another snapshot.
    cache.store_raw_options("AAPL", "2024-01-22", later, underlying_price=99.0)
    assert cache.get_options_stats()["snapshots"] == 2
    assert cache.get_options_stats()["total_rows"] == 4


def test_delete_and_stats(cache):
    cache.store_raw_options("AAPL", "2024-01-19", CHAIN, underlying_price=100.5)
    cache.store_raw_options("MSFT", "2024-01-19", CHAIN, underlying_price=100.5, source="demo")
    stats = cache.get_options_stats()
    assert stats["symbols"] == ["AAPL", "MSFT"]
    assert stats["sources"] == ["alpaca", "demo"]
    assert stats["unique_contracts"] == 6
    assert cache.delete_raw_options("msft") == 3
    assert cache.delete_raw_options(before="2024-01-19") == 0
    assert cache.delete_raw_options(before="2024-01-20") == 3
    assert cache.get_options_stats()["total_rows"] == 0


@pytest.mark.parametrize(
    "change, words",
    [
        ({"option_type": ["X", "put", "call"]}, "option_type"),
        ({"strike": [100.0, -1.0, 105.0]}, "strike"),
        ({"bid": [2.10, -0.5, 0.80]}, "negative"),
        ({"expiration": ["2024-01-26", "soon", "2024-02-16"]}, "date"),
        ({"strike": [100.0, 100.0, 100.0], "expiration": ["2024-01-26"] * 3, "option_type": ["C", "C", "P"]},
         "twice"),
    ],
)
def test_bad_chains_store_nothing(cache, change, words):
    cache.store_raw_options("AAPL", "2024-01-18", CHAIN, underlying_price=100.5)
    bad = CHAIN.copy()
    for col, values in change.items():
        bad[col] = values
    with pytest.raises(ValueError, match=words):
        cache.store_raw_options("AAPL", "2024-01-19", bad, underlying_price=100.5)
    assert cache.get_raw_options("AAPL", "2024-01-19") is None
    assert cache.get_options_stats()["total_rows"] == 3


def test_quality_score_marks_incomplete_quotes(cache):
    chain = CHAIN.copy()
    chain["bid"] = [None, 2.10, 0.80]
    chain["ask"] = [2.20, 2.00, 0.90]  # crossed on the put
    cache.store_raw_options("AAPL", "2024-01-19", chain, underlying_price=100.5)
    df = cache.get_raw_options("AAPL", "2024-01-19")
    assert df["data_quality_score"].tolist() == [0.6, 0.5, 1.0]


# -- trade history ---------------------------------------------------------------------------


class TradeModel(BaseModel):
    trade_id: str
    symbol: str
    entry_date: datetime
    entry_price: float
    quantity: int
    strategy_name: str = "sma_crossover"


ENTRY = datetime(2024, 3, 15, 14, 0, tzinfo=timezone.utc)
EXIT = datetime(2024, 3, 15, 17, 30, tzinfo=timezone.utc)


def test_archive_at_entry_then_update_at_exit(cache):
    assert cache.archive_trade(TradeModel(trade_id="T1", symbol="aapl", entry_date=ENTRY, entry_price=100.0,
                                          quantity=100))
    open_trade = cache.get_trade_history()
    assert len(open_trade) == 1 and pd.isna(open_trade["exit_price"].iloc[0])
    assert cache.archive_trade({"trade_id": "T1", "exit_date": EXIT, "exit_price": 102.5, "exit_reason": "signal",
                                "max_profit_pct": 3.0, "max_drawdown_pct": -0.5})
    df = cache.get_trade_history()
    assert len(df) == 1
    row = df.iloc[0]
    assert row["symbol"] == "AAPL"
    assert row["entry_date"] == pd.Timestamp(ENTRY)
    assert row["exit_date"] == pd.Timestamp(EXIT)
    assert row["realized_pnl"] == pytest.approx(250.0)
    assert row["realized_pnl_pct"] == pytest.approx(2.5)
    assert row["holding_period_hours"] == pytest.approx(3.5)
    assert (row["max_profit_pct"], row["max_drawdown_pct"]) == (3.0, -0.5)
    assert row["strategy_name"] == "sma_crossover"


def test_new_trade_needs_its_entry(cache):
    with pytest.raises(ValueError, match="entry_price"):
        cache.archive_trade({"trade_id": "T9", "symbol": "AAPL", "entry_date": ENTRY, "quantity": 1})
    with pytest.raises(ValueError, match="trade_id"):
        cache.archive_trade({"symbol": "AAPL"})
    with pytest.raises(ValueError, match="dict or a pydantic"):
        cache.archive_trade(["T1"])
    with pytest.raises(ValueError, match="positive"):
        cache.archive_trade({"trade_id": "T9", "symbol": "AAPL", "entry_date": ENTRY, "entry_price": -1,
                             "quantity": 1})
    assert cache.get_trade_history().empty


def trades_fixture(cache):
    rows = [
        # id, symbol, entry, exit price, hours, strategy  (entry price 100, qty 10)
        ("A", "AAPL", "2024-03-14T14:00:00Z", 103.0, 2.0, "sma"),   # +30
        ("B", "AAPL", "2024-03-15T14:00:00Z", 98.0, 1.0, "sma"),    # -20
        ("C", "MSFT", "2024-03-15T15:00:00Z", 105.0, 3.0, "sma"),   # +50
        ("D", "MSFT", "2024-03-18T14:00:00Z", 99.0, 6.0, "other"),  # -10
    ]
    for tid, sym, entry, exit_price, hours, strat in rows:
        entry_ts = pd.Timestamp(entry)
        cache.archive_trade({
            "trade_id": tid, "symbol": sym, "entry_date": entry_ts, "entry_price": 100.0, "quantity": 10,
            "exit_date": entry_ts + pd.Timedelta(hours=hours), "exit_price": exit_price, "strategy_name": strat,
        })


def test_trade_history_filters(cache):
    trades_fixture(cache)
    assert cache.get_trade_history()["trade_id"].tolist() == ["D", "C", "B", "A"]
    assert cache.get_trade_history(symbol="aapl")["trade_id"].tolist() == ["B", "A"]
    assert cache.get_trade_history(start="2024-03-15", end="2024-03-15")["trade_id"].tolist() == ["C", "B"]
    assert cache.get_trade_history(strategy="other")["trade_id"].tolist() == ["D"]
    assert cache.get_trade_history(limit=1)["trade_id"].tolist() == ["D"]
    assert cache.delete_trades(symbol="MSFT", start="2024-03-18") == 1


def test_trade_stats(cache):
    trades_fixture(cache)
    stats = cache.get_trade_stats()
    assert stats == {
        "total_trades": 4,
        "winning_trades": 2,
        "losing_trades": 2,
        "win_rate_pct": 50.0,
        "total_pnl": 50.0,
        "avg_pnl": 12.5,
        "avg_win": 40.0,
        "avg_loss": -15.0,
        "profit_factor": pytest.approx(80.0 / 30.0, abs=1e-6),
        "avg_holding_hours": 3.0,
    }
    assert cache.get_trade_stats(symbol="AAPL")["total_pnl"] == 10.0
    assert cache.get_trade_stats(strategy="sma")["total_trades"] == 3
    assert cache.get_trade_stats(symbol="NONE")["total_trades"] == 0
    assert cache.get_trade_stats(symbol="NONE")["profit_factor"] is None


def test_underlying_price_argument_fills_a_column_of_nans(cache):
    chain = CHAIN.copy()
    chain["underlying_price"] = float("nan")
    cache.store_raw_options("AAPL", "2024-01-19", chain, underlying_price=512.3)
    assert cache.get_raw_options("AAPL", "2024-01-19")["underlying_price"].tolist() == [512.3] * 3


def test_date_only_trade_times_are_new_york_days(cache):
    cache.archive_trade({"trade_id": "D", "symbol": "SPY", "entry_date": "2025-01-02", "entry_price": 100.0,
                         "quantity": 1})
    assert cache.get_trade_history()["entry_date"].tolist() == [pd.Timestamp("2025-01-02 05:00", tz="UTC")]
    assert cache.get_trade_history(start="2025-01-02", end="2025-01-02")["trade_id"].tolist() == ["D"]
    assert cache.get_trade_history(start="2025-01-01", end="2025-01-01").empty


def test_derived_fields_follow_later_updates_and_short_positions(cache):
    cache.archive_trade({"trade_id": "A", "symbol": "SPY", "entry_date": ENTRY, "entry_price": 100.0,
                         "quantity": 10})
    cache.archive_trade({"trade_id": "A", "exit_price": 110.0})           # exit price first ...
    cache.archive_trade({"trade_id": "A", "exit_date": EXIT})             # ... exit time later
    cache.archive_trade({"trade_id": "A", "entry_price": 105.0})          # then an entry correction
    row = cache.get_trade_history().iloc[0]
    assert row["realized_pnl"] == pytest.approx(50.0)
    assert row["realized_pnl_pct"] == pytest.approx(100 * (110 / 105 - 1))
    assert row["holding_period_hours"] == pytest.approx(3.5)
    # A short of 10 from 100 covered at 90 gains 100 and +10 %.
    cache.archive_trade({"trade_id": "S", "symbol": "SPY", "entry_date": ENTRY, "entry_price": 100.0,
                         "quantity": -10, "exit_date": EXIT, "exit_price": 90.0})
    short = cache.get_trade_history(limit=None).set_index("trade_id").loc["S"]
    assert (short["realized_pnl"], short["realized_pnl_pct"]) == (pytest.approx(100.0), pytest.approx(10.0))
    # Values the caller gives are kept as given.
    cache.archive_trade({"trade_id": "S", "realized_pnl": 99.5})
    assert cache.get_trade_history().set_index("trade_id").loc["S", "realized_pnl"] == 99.5
