"""One trade record (issue 10 §1): one model, its columns, one P&L signed for longs and shorts."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from cachelib.store import TradingCacheManager
from cachelib.store.migrations import MIGRATIONS
from cachelib.strategy_cache import StrategyCache
from cachelib.tick_flow import DirectiveAction, ExecutionWorker, RawTick, StrategyDirective, Trade
from cachelib.trade import TRADE_COLUMNS, trade_pnl

ENTRY = datetime(2024, 3, 15, 14, 0, tzinfo=timezone.utc)
EXIT = datetime(2024, 3, 15, 17, 30, tzinfo=timezone.utc)
COLUMNS = [
    "trade_id", "symbol", "entry_date", "entry_price", "quantity", "exit_date", "exit_price", "exit_reason",
    "realized_pnl", "realized_pnl_pct", "holding_period_hours", "strategy_name", "signal_strength",
    "signal_confidence", "broker_account", "max_profit_pct", "max_drawdown_pct",
]


def closed(**change: object) -> dict[str, object]:
    """A short of 10 SPY entered at 100 and covered at 75: +250, +25 %, held 3.5 hours."""
    return {
        "trade_id": "S1", "symbol": "SPY", "entry_date": ENTRY, "entry_price": 100.0, "quantity": -10.0,
        "exit_date": EXIT, "exit_price": 75.0, "exit_reason": "signal", "realized_pnl": 250.0,
        "realized_pnl_pct": 25.0, "holding_period_hours": 3.5, "strategy_name": "manual",
        "signal_strength": "strong", "signal_confidence": 0.8, "max_profit_pct": 12.0,
        "max_drawdown_pct": -1.5, **change,
    }


# -- one model, its columns ------------------------------------------------------------------------


def test_the_columns_are_the_model_fields_and_the_table_has_exactly_them(cache):
    assert list(TRADE_COLUMNS) == list(Trade.model_fields) == COLUMNS
    # The cursor's description names the columns on both engines (no PRAGMA on PostgreSQL).
    table = [d[0] for d in cache._db.conn.execute("SELECT * FROM trade_history LIMIT 0").description]
    assert sorted(table) == sorted([*COLUMNS, "updated_at"])


def test_engine_and_store_share_one_model():
    import cachelib.store.trades as store_trades
    import cachelib.tick_flow as tick_flow

    assert tick_flow.Trade is Trade and Trade.__module__ == "cachelib.trade"
    assert store_trades.TRADE_COLUMNS is TRADE_COLUMNS


# -- one P&L, signed by direction --------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, exit_price, quantity, expected",
    [
        (100.0, 125.0, 10, (250.0, 25.0)),     # long winner
        (100.0, 75.0, 10, (-250.0, -25.0)),    # long loser
        (100.0, 75.0, -10, (250.0, 25.0)),     # short winner: earns when the price falls
        (100.0, 125.0, -4, (-100.0, -25.0)),   # short loser
        (80.0, 90.0, 3, (30.0, pytest.approx(12.5))),  # 90 / 80 - 1 is not exact in binary
    ],
)
def test_trade_pnl_is_signed_by_direction(entry, exit_price, quantity, expected):
    assert trade_pnl(entry, exit_price, quantity) == expected


def test_a_short_trade_model_archives_a_positive_pct_for_a_winner(cache):
    assert cache.archive_trade(Trade(**closed()))
    row = cache.get_trade_history().iloc[0]
    assert (row["quantity"], row["realized_pnl"], row["realized_pnl_pct"]) == (-10, 250.0, 25.0)
    assert row["holding_period_hours"] == 3.5


def test_a_short_dict_without_pnl_gets_the_same_signed_values(cache):
    fields = {k: v for k, v in closed(trade_id="S2").items() if not k.startswith("realized_")}
    cache.archive_trade(fields)
    row = cache.get_trade_history().iloc[0]
    assert (row["realized_pnl"], row["realized_pnl_pct"]) == (250.0, 25.0)


def test_the_model_refuses_a_short_with_the_unsigned_pct():
    with pytest.raises(ValidationError, match=r"realized_pnl_pct -25.0 disagrees .*\(25.0;"):
        Trade(**closed(realized_pnl_pct=-25.0))
    with pytest.raises(ValidationError, match="realized_pnl 99.0 disagrees"):
        Trade(**closed(realized_pnl=99.0))


def test_the_engine_closes_a_long_with_literal_pnl_and_the_store_keeps_it(cache):
    strategy_cache = StrategyCache()
    strategy_cache.start_run({}, ENTRY)
    broker = ExecutionWorker(strategy_cache, strategy_name="manual", quantity=100)

    def bar(minute: int, price: float) -> RawTick:
        return RawTick(symbol="AAPL", timestamp=ENTRY.replace(minute=minute), open=price, high=price,
                       low=price, close=price)

    broker.on_directive(StrategyDirective(timestamp=ENTRY, symbol="AAPL", action=DirectiveAction.ENTER_LONG,
                                          quantity=100))
    broker.on_tick(bar(1, 50.0))
    broker.on_directive(StrategyDirective(timestamp=ENTRY, symbol="AAPL", action=DirectiveAction.EXIT_LONG,
                                          quantity=100))
    trade = broker.on_tick(bar(31, 62.5)).payload
    assert isinstance(trade, Trade)
    assert (trade.realized_pnl, trade.realized_pnl_pct, trade.holding_period_hours) == (1250.0, 25.0, 0.5)
    assert Trade(**trade.model_dump()) == trade  # the engine's trade passes the model's own rules
    cache.archive_trade(trade)
    row = cache.get_trade_history().iloc[0]
    assert (row["quantity"], row["realized_pnl"], row["realized_pnl_pct"]) == (100, 1250.0, 25.0)


# -- the rules live in one place: the model and the store refuse the same trades ---------------------


@pytest.mark.parametrize(
    "change, words",
    [
        ({"exit_date": datetime(2024, 3, 14, tzinfo=timezone.utc)}, "exit_date .* is before entry_date"),
        ({"quantity": 0.0}, "quantity must be a non-zero number"),
        ({"signal_confidence": 1.5}, "signal_confidence must be between 0 and 1"),
        ({"entry_price": -1.0}, "entry_price must be a positive number"),
        ({"symbol": "BAD SYMBOL!"}, "symbol"),
    ],
)
def test_model_and_store_refuse_the_same_trades(cache, change, words):
    with pytest.raises(ValidationError, match=words):
        Trade(**closed(**change))
    with pytest.raises(ValueError, match=words):
        cache.archive_trade(closed(**change))
    assert cache.get_trade_history().empty


def test_the_model_normalises_times_and_symbol():
    trade = Trade(**closed(symbol="spy", entry_date=datetime(2024, 3, 15, 14, 0)))
    assert trade.symbol == "SPY" and trade.entry_date == ENTRY


# -- migration: shorts stored with the unsigned pct are fixed, nothing else changes -------------------


def test_migration_flips_only_shorts_stored_with_the_unsigned_pct(tmp_path):
    # SQLite only: a version-3 cache exists only as a file (PostgreSQL caches start at the
    # current schema, where the pct is already signed; see the short-trade tests above).
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for target, _, step in MIGRATIONS:
        if target <= 3:
            step(conn)
            conn.execute(f"PRAGMA user_version = {target}")
    rows = [
        # trade_id, quantity, entry, exit, stored pct
        ("short_wrong", -10, 100.0, 90.0, -10.0),      # the engine's unsigned value: fixed to +10
        ("short_loser_wrong", -5, 80.0, 100.0, 25.0),  # unsigned value of a losing short: fixed to -25
        ("short_right", -10, 100.0, 90.0, 10.0),       # already signed: kept
        ("short_fees", -10, 100.0, 90.0, 9.5),         # a caller's own value: kept
        ("long", 10, 100.0, 90.0, -10.0),              # longs: kept
        ("short_open", -10, 100.0, None, None),        # open: nothing to fix
    ]
    for tid, qty, entry, exit_price, pct in rows:
        conn.execute(
            "INSERT INTO trade_history (trade_id, symbol, entry_date, entry_price, quantity, exit_price, "
            "realized_pnl_pct) VALUES (?, 'SPY', 1710511200, ?, ?, ?, ?)",
            (tid, entry, qty, exit_price, pct),
        )
    conn.close()

    history = TradingCacheManager(path).get_trade_history().set_index("trade_id")["realized_pnl_pct"]
    assert history.to_dict(into=dict) | {"short_open": None} == {
        "short_wrong": 10.0, "short_loser_wrong": -25.0, "short_right": 10.0, "short_fees": 9.5,
        "long": -10.0, "short_open": None,
    }
    assert history.isna().to_dict()["short_open"]
