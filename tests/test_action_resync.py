"""Corporate actions that change after they were stored, adjusted reads that lack actions, and
the flows' actions window (issue 11, review defects).

* A vendor's answer replaces what it said before about the same symbols and days: a moved
  ex-date or a cancelled action leaves no stale row for an adjusted read to apply twice.
* An adjusted read whose days no source was asked about logs a WARNING naming the
  ``sync_corporate_actions`` call; ``get_market_data(adjustment=...)`` syncs the actions first.
* The flows ask for actions up to 90 days past their bars (announced future actions).

Expected values are hand-written: prices of 100 halved by a 2:1 split, the demo's NVDA raw
closes (golden values of the deterministic demo) divided by its 4:1 split, dates counted by hand.
The real alpaca-py talks to loopback stubs; a vendor's correction is a second stub.
"""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import pytest
from alpaca_stub import TEST_KEY, TEST_SECRET, AlpacaStub, alpaca_env
from freezegun import freeze_time

from cachelib.demo import DemoSource
from cachelib.sources import AlpacaSource
from cachelib.store import TradingCacheManager
from cachelib.sync import ACTION_LOOKAHEAD, get_market_data, sync_corporate_actions

ACTIONS = "/v1/corporate-actions"
FLAT = pd.DataFrame(
    {"open": [100.0] * 4, "high": [100.0] * 4, "low": [100.0] * 4, "close": [100.0] * 4, "volume": [10.0] * 4},
    index=pd.to_datetime(["2024-06-03", "2024-06-04", "2024-06-05", "2024-06-06"]),
)


def source_of(stub: AlpacaStub) -> AlpacaSource:
    """Built outside freeze_time: alpaca-py's pydantic models must not see freezegun's datetime."""
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, max_requests_per_minute=None,
                        backoff_base=0.0, timeout=5.0)


def stored(cache: TradingCacheManager, symbol: str) -> list[tuple]:
    frame = cache.get_corporate_actions(symbol)
    return [(r.action_type, r.ex_date, None if pd.isna(r.ratio) else r.ratio,
             None if pd.isna(r.amount) else r.amount, r.source) for r in frame.itertuples(index=False)]


def store_flat_bars(cache: TradingCacheManager) -> None:
    cache.set("XYZ", FLAT, "alpaca", feed="sip", ttl_hours=100_000)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "cachelib.store"]


# ---------------------------------------------------------------------------
# 1. A re-sync replaces the source's answer
# ---------------------------------------------------------------------------


def test_a_moved_ex_date_replaces_the_old_row_and_the_read_adjusts_once(cache):
    """The review's repro: a 2:1 split announced for 06-05, corrected to 06-06 two days later."""
    with AlpacaStub() as first, AlpacaStub() as corrected:
        first.add_split("XYZ", "2024-06-05", 2, 1)
        corrected.add_split("XYZ", "2024-06-06", 2, 1)
        old, new = source_of(first), source_of(corrected)
        with freeze_time("2024-05-20 16:00:00"):
            store_flat_bars(cache)
            report = sync_corporate_actions(cache, old, ["XYZ"], "2024-05-01", "2024-06-30")
            assert (report.actions_written, report.actions_removed) == (1, 0)
        with freeze_time("2024-05-22 16:00:00"):  # the 24 h coverage of future days has expired
            report = sync_corporate_actions(cache, new, ["XYZ"], "2024-05-01", "2024-06-30")
            assert (report.requests_made, report.actions_written, report.actions_removed) == (1, 1, 1)
            assert corrected.count(ACTIONS) == 1
    with freeze_time("2024-06-10 16:00:00"):
        assert stored(cache, "XYZ") == [("forward_split", date(2024, 6, 6), 2.0, None, "alpaca")]
        adjusted = cache.get("XYZ", "2024-06-03", "2024-06-06", adjustment="split")
        assert adjusted["close"].tolist() == [50.0, 50.0, 50.0, 100.0]  # not [25, 25, 50, 100]
        assert adjusted["volume"].tolist() == [20.0, 20.0, 20.0, 10.0]


def test_a_cancelled_action_disappears_and_others_stay(cache):
    with AlpacaStub() as first, AlpacaStub() as corrected:
        first.add_split("XYZ", "2024-06-05", 2, 1)
        first.add_cash_dividend("XYZ", "2024-06-04", 1.0)
        first.add_name_change("XYZ", "XYZW", "2024-06-20")
        corrected.add_cash_dividend("XYZ", "2024-06-04", 1.0)  # the split and the rename are off
        old, new = source_of(first), source_of(corrected)
        with freeze_time("2024-05-20 16:00:00"):
            store_flat_bars(cache)
            # Not this source's answer, or not in the question: never touched by a re-sync.
            cache.store_corporate_actions([{"symbol": "XYZ", "action_type": "cash_dividend",
                                            "ex_date": "2024-06-05", "amount": 0.5}], source="manual")
            cache.store_corporate_actions([{"symbol": "XYZ", "action_type": "forward_split",
                                            "ex_date": "2023-01-03", "ratio": 3.0},
                                           {"symbol": "ABC", "action_type": "forward_split",
                                            "ex_date": "2024-06-05", "ratio": 2.0}], source="alpaca")
            sync_corporate_actions(cache, old, ["XYZ"], "2024-05-01", "2024-06-30")
            assert [a[:2] for a in stored(cache, "XYZ") if a[4] == "alpaca"] == [
                ("forward_split", date(2023, 1, 3)), ("cash_dividend", date(2024, 6, 4)),
                ("forward_split", date(2024, 6, 5)), ("name_change", date(2024, 6, 20))]
        with freeze_time("2024-05-22 16:00:00"):
            report = sync_corporate_actions(cache, new, ["XYZ"], "2024-05-01", "2024-06-30")
    assert (report.actions_written, report.actions_removed) == (1, 2)
    assert stored(cache, "XYZ") == [
        ("forward_split", date(2023, 1, 3), 3.0, None, "alpaca"),  # outside the span asked
        ("cash_dividend", date(2024, 6, 4), None, 1.0, "alpaca"),
        ("cash_dividend", date(2024, 6, 5), None, 0.5, "manual"),  # another source
    ]
    assert stored(cache, "ABC") == [("forward_split", date(2024, 6, 5), 2.0, None, "alpaca")]
    assert cache.get_corporate_actions("XYZW").empty  # the withdrawn rename is gone from both sides


def test_an_empty_answer_withdraws_everything_the_source_said_in_the_span(cache):
    with AlpacaStub() as first, AlpacaStub() as empty:
        first.add_split("XYZ", "2024-06-05", 2, 1)
        old, new = source_of(first), source_of(empty)
        with freeze_time("2024-05-20 16:00:00"):
            sync_corporate_actions(cache, old, ["XYZ"], "2024-05-01", "2024-06-30")
        with freeze_time("2024-05-22 16:00:00"):
            report = sync_corporate_actions(cache, new, ["XYZ"], "2024-05-01", "2024-06-30")
    assert (report.requests_made, report.actions_written, report.actions_removed) == (1, 0, 1)
    assert stored(cache, "XYZ") == []


def test_hand_stored_actions_keep_upsert_semantics(cache):
    split = {"symbol": "XYZ", "action_type": "forward_split", "ratio": 2.0}
    assert cache.store_corporate_actions([{**split, "ex_date": "2024-06-05"}], source="alpaca") == 1
    assert cache.store_corporate_actions([{**split, "ex_date": "2024-06-06"}], source="alpaca") == 1
    assert cache.store_corporate_actions([{**split, "ex_date": "2024-06-06", "ratio": 3.0}], source="alpaca") == 1
    assert stored(cache, "XYZ") == [("forward_split", date(2024, 6, 5), 2.0, None, "alpaca"),
                                    ("forward_split", date(2024, 6, 6), 3.0, None, "alpaca")]


def test_replace_corporate_actions_directly(cache):
    cache.store_corporate_actions([{"symbol": "XYZ", "action_type": "forward_split", "ex_date": "2024-06-05",
                                    "ratio": 2.0}], source="alpaca")
    result = cache.replace_corporate_actions(
        ["xyz"], "2024-05-01", "2024-06-30",
        [{"symbol": "XYZ", "action_type": "forward_split", "ex_date": "2024-06-06", "ratio": 2.0}], "alpaca")
    assert (result.removed, result.written) == (1, 1)
    assert stored(cache, "XYZ") == [("forward_split", date(2024, 6, 6), 2.0, None, "alpaca")]
    # The same answer again: nothing withdrawn, the row rewritten.
    assert tuple(cache.replace_corporate_actions("XYZ", "2024-05-01", "2024-06-30",
                                                 cache.get_corporate_actions("XYZ"), "alpaca")) == (0, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["XYZ"], "2024-06-30", "2024-05-01", [], "alpaca"), "after end"),
        ((["XYZ"], "2024-05-01", "2024-06-30", [], None), "source"),
        ((["XYZ"], "2024-05-01", "2024-06-30", [], "  "), "source"),
        ((["XYZ"], "2024-05-01", "2024-06-30", "not rows", "alpaca"), "DataFrame or rows"),
        ((["XYZ"], "2024-05-01", "2024-06-30", [{"symbol": "XYZ", "action_type": "forward_split",
                                                  "ex_date": "2024-06-05", "ratio": 2.0, "source": "demo"}],
          "alpaca"), "drop one"),
        ((["XYZ"], "not a date", "2024-06-30", [], "alpaca"), "start"),
        ((["ÄBC\u202e"], "2024-05-01", "2024-06-30", [], "alpaca"), "symbol"),
    ],
)
def test_replace_refuses_bad_input_and_deletes_nothing(cache, args, message):
    cache.store_corporate_actions([{"symbol": "XYZ", "action_type": "forward_split", "ex_date": "2024-06-05",
                                    "ratio": 2.0}], source="alpaca")
    with pytest.raises(ValueError, match=message):
        cache.replace_corporate_actions(*args)
    assert stored(cache, "XYZ") == [("forward_split", date(2024, 6, 5), 2.0, None, "alpaca")]


def test_a_bad_row_in_the_answer_rolls_back_the_whole_replacement(cache):
    """Validation happens before the delete, and everything is one transaction."""
    with AlpacaStub() as first:
        first.add_split("XYZ", "2024-06-05", 2, 1)
        src = source_of(first)
        with freeze_time("2024-05-20 16:00:00"):
            sync_corporate_actions(cache, src, ["XYZ"], "2024-05-01", "2024-06-30")
    bad = [{"symbol": "XYZ", "action_type": "forward_split", "ex_date": "2024-06-06", "ratio": -2.0}]
    with pytest.raises(ValueError):
        cache.replace_corporate_actions(["XYZ"], "2024-05-01", "2024-06-30", bad, "alpaca")
    assert stored(cache, "XYZ") == [("forward_split", date(2024, 6, 5), 2.0, None, "alpaca")]


# ---------------------------------------------------------------------------
# 2. Adjusted reads without coverage warn; get_market_data syncs the actions
# ---------------------------------------------------------------------------


def test_an_adjusted_read_without_any_synced_actions_warns(cache, caplog):
    caplog.set_level(logging.WARNING, logger="cachelib.store")
    with freeze_time("2024-06-10 16:00:00"):
        store_flat_bars(cache)
        frame = cache.get("XYZ", "2024-06-03", "2024-06-06", adjustment="split")
        assert frame["close"].tolist() == [100.0] * 4
        (message,) = warnings_of(caplog)
        assert "XYZ" in message and "any source" in message
        # The bars start 06-03 and as_of is today, 06-10: the call to run covers that span.
        assert "sync_corporate_actions(cache, source, ['XYZ'], '2024-06-03', '2024-06-10')" in message
        caplog.clear()
        cache.get("XYZ", "2024-06-03", "2024-06-06")  # raw: nothing to pretend about
        cache.get("XYZ", "2024-06-03", "2024-06-06", adjustment="all", as_of="2024-06-01")  # before the bars
        assert warnings_of(caplog) == []


def test_hand_stored_actions_without_coverage_still_adjust_but_warn(cache, caplog):
    caplog.set_level(logging.WARNING, logger="cachelib.store")
    with freeze_time("2024-06-10 16:00:00"):
        store_flat_bars(cache)
        cache.store_corporate_actions([{"symbol": "XYZ", "action_type": "forward_split", "ex_date": "2024-06-06",
                                        "ratio": 2.0}], source="alpaca")
        frame = cache.get("XYZ", "2024-06-03", "2024-06-06", source="alpaca", adjustment="split")
        assert frame["close"].tolist() == [50.0, 50.0, 50.0, 100.0]
        (message,) = warnings_of(caplog)
        assert "source 'alpaca'" in message and "'2024-06-03', '2024-06-10'" in message


def test_partial_coverage_names_the_uncovered_days_and_full_coverage_is_silent(cache, caplog):
    caplog.set_level(logging.WARNING, logger="cachelib.store")
    with AlpacaStub() as stub:
        src = source_of(stub)
        with freeze_time("2024-06-10 16:00:00"):
            store_flat_bars(cache)
            sync_corporate_actions(cache, src, ["XYZ"], "2024-06-01", "2024-06-05")
            cache.get("XYZ", "2024-06-03", "2024-06-06", adjustment="split")
            (message,) = warnings_of(caplog)
            assert "'2024-06-06', '2024-06-10'" in message
            caplog.clear()
            sync_corporate_actions(cache, src, ["XYZ"], "2024-06-01", "2024-06-10")
            cache.get("XYZ", "2024-06-03", "2024-06-06", adjustment="split")
            cache.get("XYZ", "2024-06-03", "2024-06-06", source="alpaca", adjustment="dividend")
            assert warnings_of(caplog) == []
    with freeze_time("2024-06-20 16:00:00"):  # coverage of recent days expired: still asked once
        cache.get("XYZ", "2024-06-03", "2024-06-06", adjustment="split", as_of="2024-06-10")
        assert warnings_of(caplog) == []


def test_get_market_data_split_adjusted_syncs_the_actions_first(cache_url, caplog):
    """The demo's NVDA 4:1 split, ex 2024-06-10: the raw closes of 06-06 and 06-07 (647.79 and
    652.90, golden values of the deterministic demo) divided by 4; volume multiplied by 4."""
    caplog.set_level(logging.WARNING, logger="cachelib.store")
    with freeze_time("2024-06-20 16:00:00"), TradingCacheManager(cache_url) as cache:
        src = DemoSource()
        raw = get_market_data("NVDA", "2024-06-06", "2024-06-11", source=src, cache=cache)
        assert raw["close"].tolist() == [647.79, 652.90, 159.15, 156.08]
        assert cache.get_corporate_actions("NVDA").empty  # a raw read syncs no action
        before = src.requests_made
        adjusted = get_market_data("NVDA", "2024-06-06", "2024-06-11", source=src, cache=cache,
                                   adjustment="split")
        assert src.requests_made - before == 1  # the actions; the bars were cached
        assert adjusted["close"].tolist() == pytest.approx([161.9475, 163.225, 159.15, 156.08], rel=1e-12)
        assert adjusted["volume"].tolist() == [66706674.0 * 4, 33769357.0 * 4, 124927525.0, 165708102.0]
        assert stored(cache, "NVDA") == [("forward_split", date(2024, 6, 10), 4.0, None, "demo")]
        assert warnings_of(caplog) == []
        # Again: gap-aware, no request at all. As of 06-07 the split had not happened: raw prices.
        before = src.requests_made
        again = get_market_data("NVDA", "2024-06-06", "2024-06-11", source=src, cache=cache, adjustment="split")
        as_seen = get_market_data("NVDA", "2024-06-06", "2024-06-11", source=src, cache=cache,
                                  adjustment="all", as_of="2024-06-07")
        assert src.requests_made == before
        assert again["close"].tolist() == adjusted["close"].tolist()
        assert as_seen["close"].tolist() == [647.79, 652.90, 159.15, 156.08]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adjustment": "splits"}, "adjustment must be one of"),
        ({"adjustment": None}, "adjustment must be one of"),
        ({"adjustment": "split", "as_of": "2024-06-21"}, "after today"),
        ({"adjustment": "split", "as_of": "yesterday"}, "as_of"),
    ],
)
def test_get_market_data_refuses_bad_adjustment_arguments(cache_url, kwargs, message):
    with freeze_time("2024-06-20 16:00:00"), TradingCacheManager(cache_url) as cache:
        src = DemoSource()
        with pytest.raises(ValueError, match=message):
            get_market_data("NVDA", "2024-06-06", "2024-06-11", source=src, cache=cache, **kwargs)
        assert src.requests_made == 0


# ---------------------------------------------------------------------------
# 3. The flows' actions window reaches into the future
# ---------------------------------------------------------------------------


def test_action_lookahead_is_ninety_days():
    assert ACTION_LOOKAHEAD.days == 90


def test_ingest_bars_asks_for_actions_announced_after_its_window(prefect_harness, cache_url, monkeypatch):
    """Bars 2024-02-01 .. 02-14; the actions request ends 90 days later, 2024-05-14 (15 days of
    February, 31 of March, 30 of April, 14 of May), so a split announced for April is stored."""
    from flows.ingest_bars import ingest_bars

    with AlpacaStub() as stub:
        alpaca_env(monkeypatch, stub)
        monkeypatch.setenv("CACHELIB_ALPACA_RATE_LIMIT", "0")
        monkeypatch.setenv("CACHELIB_ALPACA_BACKOFF_BASE", "0.001")
        stub.add_split("AAPL", "2024-04-15", 2, 1)
        stub.add_split("AAPL", "2024-05-15", 3, 1)  # one day past the lookahead
        state = ingest_bars(symbols=["AAPL"], start=date(2024, 2, 1), end=date(2024, 2, 14), db_path=cache_url,
                            return_state=True)
        assert state.is_completed()
        summary = state.result()
        (request,) = [r for r in stub.requests if r.path == ACTIONS]
        assert (request.params["start"], request.params["end"]) == ("2024-02-01", "2024-05-14")
    assert (summary.actions.fetched_start, summary.actions.fetched_end) == (date(2024, 2, 1), date(2024, 5, 14))
    with TradingCacheManager(cache_url) as cache:
        assert stored(cache, "AAPL") == [("forward_split", date(2024, 4, 15), 2.0, None, "alpaca")]
