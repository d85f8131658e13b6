"""Day replay from the store into trade history (issue 5, section 4).

Expected trades come from the independent reference loop in tests/sma_reference.py, which
shares no code with the engine.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from sma_reference import reference_trades

from cachelib.demo import DemoSource
from cachelib.market_hours import session_bounds
from cachelib.replay import MissingBarsError, replay_day, replay_days
from cachelib.sync import sync_bars


def reference_for(cache, symbol: str, day: str) -> list[dict]:
    """The reference's trades on the regular-session bars the cache holds for that day."""
    bars = cache.get(symbol, day, day, timeframe="1Min")
    open_utc, close_utc = session_bounds(day)
    bars = bars[(bars.index >= pd.Timestamp(open_utc)) & (bars.index < pd.Timestamp(close_utc))]
    rows = [(ts.to_pydatetime(), r.open, r.high, r.low, r.close, r.volume) for ts, r in zip(bars.index, bars.itertuples())]
    return reference_trades(rows)


@pytest.fixture
def filled(cache):
    sync_bars(cache, DemoSource(seed=5), ["AAPL", "MSFT"], "2024-03-11", "2024-03-15", timeframe="1Min")
    return cache


def test_replay_day_archives_the_reference_trades(filled):
    trades = replay_day(filled, "aapl", "2024-03-14")
    expected = reference_for(filled, "AAPL", "2024-03-14")
    assert len(trades) == len(expected) > 0
    for got, want in zip(trades, expected):
        assert got.entry_price == want["entry_price"]
        assert got.exit_price == want["exit_price"]
        assert got.entry_date == want["entry_date"]
        assert got.exit_date == want["exit_date"]
        assert got.exit_reason == want["exit_reason"]
    history = filled.get_trade_history(symbol="AAPL")
    assert sorted(history["trade_id"]) == sorted(t.trade_id for t in trades)
    assert history["quantity"].tolist() == [100] * len(trades)
    assert (history["strategy_name"] == "sma_crossover").all()
    assert history["trade_id"].iloc[0].startswith("sma_crossover:AAPL:2024-03-14T")


def test_replaying_twice_leaves_the_same_trades(filled):
    replay_day(filled, "AAPL", "2024-03-14")
    first = filled.get_trade_history().drop(columns=[]).sort_values("trade_id").reset_index(drop=True)
    replay_day(filled, "AAPL", "2024-03-14")
    second = filled.get_trade_history().sort_values("trade_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(first, second)


def test_missing_bars_name_the_session(cache):
    with pytest.raises(MissingBarsError, match="AAPL.*2024-03-14"):
        replay_day(cache, "AAPL", "2024-03-14")
    assert cache.get_trade_history().empty


def test_missing_bars_are_synced_when_a_source_is_given(cache):
    trades = replay_day(cache, "AAPL", "2024-03-14", source=DemoSource(seed=5))
    assert cache.get("AAPL", "2024-03-14", "2024-03-14", timeframe="1Min") is not None
    assert len(trades) == len(reference_for(cache, "AAPL", "2024-03-14"))


def test_replay_days_skips_holidays_and_summarises(cache):
    # 2024-03-28 (Thu), 03-29 Good Friday (holiday), 04-01 (Mon): two sessions.
    summary = replay_days(cache, ["AAPL", "MSFT"], "2024-03-28", "2024-04-01", source=DemoSource(seed=5))
    assert summary.sessions_replayed == 4  # 2 sessions x 2 symbols
    assert summary.bars == 4 * 390
    expected = sum(len(reference_for(cache, s, d)) for s in ("AAPL", "MSFT") for d in ("2024-03-28", "2024-04-01"))
    assert summary.trades == expected == cache.get_trade_stats()["total_trades"]
    assert summary.stats["total_trades"] == expected


def test_parallel_and_sequential_replays_agree(filled):
    replay_days(filled, ["AAPL", "MSFT"], "2024-03-11", "2024-03-15", max_workers=1)
    sequential = filled.get_trade_history().sort_values("trade_id").reset_index(drop=True)
    filled.delete_trades()
    replay_days(filled, ["AAPL", "MSFT"], "2024-03-11", "2024-03-15", max_workers=3)
    parallel = filled.get_trade_history().sort_values("trade_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(sequential.drop(columns=[]), parallel)
    assert len(parallel) > 0


def test_early_close_session_ends_at_13_00(cache):
    replay_day(cache, "AAPL", "2024-11-29", source=DemoSource(seed=5))
    history = cache.get_trade_history()
    last_exit = history["exit_date"].max()
    assert last_exit <= pd.Timestamp("2024-11-29 18:00", tz="UTC")
    closes = history[history["exit_reason"] == "session_close"]
    assert closes.empty or (closes["exit_date"] == pd.Timestamp("2024-11-29 18:00", tz="UTC")).all()
    assert date(2024, 11, 29) in {t.date() for t in history["entry_date"]}


def test_bad_arguments(cache):
    with pytest.raises(ValueError):
        replay_days(cache, [], "2024-03-11", "2024-03-15")
    with pytest.raises(ValueError):
        replay_days(cache, ["AAPL"], "2024-03-15", "2024-03-11")
    with pytest.raises(KeyError):
        replay_day(cache, "AAPL", "2024-03-14", strategy="no_such_strategy")


def test_an_unfinished_session_is_not_replayed(cache):
    from datetime import datetime, timezone

    from freezegun import freeze_time

    with freeze_time(datetime(2024, 3, 15, 15, 0, tzinfo=timezone.utc)):  # 11:00 ET on a session day
        with pytest.raises(ValueError, match="not closed"):
            replay_day(cache, "AAPL", "2024-03-15", source=DemoSource(seed=5))
        summary = replay_days(cache, ["AAPL"], "2024-03-14", "2024-03-15", source=DemoSource(seed=5))
    assert summary.sessions == 1 and summary.sessions_replayed == 1  # only the 14th
    history = cache.get_trade_history()
    assert not history.empty
    assert (history["entry_date"] < pd.Timestamp("2024-03-15", tz="UTC")).all()


# --- replay_days reads the store a block of sessions at a time (issue 10, section 4) ----------


def test_sessions_across_read_blocks_give_the_same_trades_as_one_day_replays(filled, monkeypatch):
    import cachelib.replay as replay_module

    days = ["2024-03-11", "2024-03-12", "2024-03-13", "2024-03-14", "2024-03-15"]
    one_by_one = {d: [t.model_dump() for t in replay_day(filled, "AAPL", d)] for d in days}
    filled.delete_trades()
    monkeypatch.setattr(replay_module, "BLOCK_SESSIONS", 2)  # blocks 11-12, 13-14, 15
    summary = replay_days(filled, ["AAPL"], "2024-03-11", "2024-03-15", max_workers=1)
    assert summary.sessions_replayed == 5 and summary.bars == 5 * 390
    history = filled.get_trade_history(symbol="AAPL").sort_values("trade_id")
    expected = sorted(t["trade_id"] for trades in one_by_one.values() for t in trades)
    assert history["trade_id"].tolist() == expected
    assert summary.trades == len(expected) > 0


def test_a_session_without_bars_is_skipped_and_keeps_its_archived_trades(filled):
    filled.delete("MSFT", "2024-03-13", "2024-03-13", timeframe="1Min")
    filled.delete("AAPL", "2024-03-12", "2024-03-12", timeframe="1Min")
    kept = {"trade_id": "sma_crossover:MSFT:2024-03-13T15:00:00+00:00", "symbol": "MSFT",
            "entry_date": "2024-03-13T15:00:00+00:00", "entry_price": 400.0, "quantity": 100,
            "strategy_name": "sma_crossover"}
    filled.archive_trade(kept)
    summary = replay_days(filled, ["AAPL", "MSFT"], "2024-03-11", "2024-03-15", on_missing="skip")
    # session by session, in the order the symbols were given
    assert summary.missing == (("AAPL", date(2024, 3, 12)), ("MSFT", date(2024, 3, 13)))
    assert summary.sessions_replayed == 8 and summary.bars == 8 * 390
    msft_13 = filled.get_trade_history(symbol="MSFT", start="2024-03-13", end="2024-03-13")
    assert msft_13["trade_id"].tolist() == [kept["trade_id"]]


def test_a_missing_session_raises_after_archiving_the_sessions_before_it(filled):
    filled.delete("AAPL", "2024-03-13", "2024-03-13", timeframe="1Min")
    with pytest.raises(MissingBarsError, match="AAPL.*2024-03-13.*sync them first"):
        replay_days(filled, ["AAPL"], "2024-03-11", "2024-03-15", max_workers=1)
    entry_days = {t.date() for t in filled.get_trade_history(symbol="AAPL")["entry_date"]}
    assert entry_days == {date(2024, 3, 11), date(2024, 3, 12)}
