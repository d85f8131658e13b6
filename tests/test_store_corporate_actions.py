"""Corporate actions in the store, their coverage and TTL, and ``sync_corporate_actions``.

Expected values are hand-written (public-record splits, hand-picked dividends, hand-computed
day ranges), never computed with the code under test. The real alpaca-py talks to the
loopback stub; the demo source's clock is frozen with freezegun.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
import pytest
from alpaca_stub import TEST_KEY, TEST_SECRET, AlpacaStub, alpaca_stub_fixture
from freezegun import freeze_time

from cachelib.corporate_actions import ACTION_COLUMNS
from cachelib.demo import DemoSource
from cachelib.sources import AlpacaSource
from cachelib.store import TradingCacheManager
from cachelib.store.ttl import action_expiry
from cachelib.sync import CorporateActionSyncReport, sync_corporate_actions

alpaca_stub = alpaca_stub_fixture()
ACTIONS = "/v1/corporate-actions"
UTC = timezone.utc

NVDA_SPLIT = {"symbol": "NVDA", "action_type": "forward_split", "ex_date": "2024-06-10", "ratio": 10.0}
AAPL_DIVIDEND = {"symbol": "AAPL", "action_type": "cash_dividend", "ex_date": "2024-08-12", "amount": 0.25}
GE_REVERSE = {"symbol": "GE", "action_type": "reverse_split", "ex_date": "2021-08-02", "ratio": 0.125}
FB_TO_META = {"symbol": "FB", "action_type": "name_change", "ex_date": "2022-06-09", "new_symbol": "META"}


def rows(frame: pd.DataFrame) -> list[tuple]:
    return [
        (r.symbol, r.action_type, r.ex_date, None if pd.isna(r.ratio) else r.ratio,
         None if pd.isna(r.amount) else r.amount, r.new_symbol, r.source)
        for r in frame.itertuples(index=False)
    ]


def make_source(stub: AlpacaStub) -> AlpacaSource:
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, max_requests_per_minute=None,
                        backoff_base=0.0, timeout=5.0)


# ---------------------------------------------------------------------------
# Store and read
# ---------------------------------------------------------------------------


def test_store_and_read_back(cache):
    written = cache.store_corporate_actions([NVDA_SPLIT, AAPL_DIVIDEND, GE_REVERSE, FB_TO_META],
                                            source="alpaca", fetched_at="2024-07-01T12:00:00Z")
    assert written == 4
    nvda = cache.get_corporate_actions("nvda")
    assert list(nvda.columns) == [*ACTION_COLUMNS, "fetched_at"]
    assert rows(nvda) == [("NVDA", "forward_split", date(2024, 6, 10), 10.0, None, None, "alpaca")]
    assert nvda.fetched_at[0] == pd.Timestamp("2024-07-01T12:00:00Z")
    assert rows(cache.get_corporate_actions("GE")) == [
        ("GE", "reverse_split", date(2021, 8, 2), 0.125, None, None, "alpaca")]
    assert rows(cache.get_corporate_actions("AAPL", "2024-08-12", "2024-08-12")) == [
        ("AAPL", "cash_dividend", date(2024, 8, 12), None, 0.25, None, "alpaca")]
    # A name change is filed under the old symbol, and shown with the new one's history too.
    expected = [("FB", "name_change", date(2022, 6, 9), None, None, "META", "alpaca")]
    assert rows(cache.get_corporate_actions("FB")) == expected
    assert rows(cache.get_corporate_actions("META")) == expected
    assert cache.get_stats()["corporate_actions"] == 4


def test_range_filters_and_the_empty_answer(cache):
    cache.store_corporate_actions([AAPL_DIVIDEND, {**AAPL_DIVIDEND, "ex_date": "2024-05-10"}], source="alpaca")
    assert [r[2] for r in rows(cache.get_corporate_actions("AAPL", start="2024-06-01"))] == [date(2024, 8, 12)]
    assert [r[2] for r in rows(cache.get_corporate_actions("AAPL", end="2024-06-01"))] == [date(2024, 5, 10)]
    empty = cache.get_corporate_actions("AAPL", "2023-01-01", "2023-12-31")
    assert empty.empty and list(empty.columns) == [*ACTION_COLUMNS, "fetched_at"]
    assert cache.get_corporate_actions("MSFT").empty
    assert cache.get_corporate_actions("AAPL", source="demo").empty


def test_a_resync_upserts_one_row_per_action_and_source(cache):
    cache.store_corporate_actions([AAPL_DIVIDEND], source="alpaca", fetched_at="2024-07-01T00:00:00Z")
    cache.store_corporate_actions([{**AAPL_DIVIDEND, "amount": 0.26}], source="alpaca",
                                  fetched_at="2024-07-02T00:00:00Z")
    got = cache.get_corporate_actions("AAPL")
    assert rows(got) == [("AAPL", "cash_dividend", date(2024, 8, 12), None, 0.26, None, "alpaca")]
    assert got.fetched_at[0] == pd.Timestamp("2024-07-02T00:00:00Z")
    # Another source's copy is a second row; a read without source prefers alpaca over demo.
    cache.store_corporate_actions([{**AAPL_DIVIDEND, "amount": 0.3, "source": "demo"}])
    assert rows(cache.get_corporate_actions("AAPL")) == [
        ("AAPL", "cash_dividend", date(2024, 8, 12), None, 0.26, None, "alpaca")]
    assert rows(cache.get_corporate_actions("AAPL", source="demo")) == [
        ("AAPL", "cash_dividend", date(2024, 8, 12), None, 0.3, None, "demo")]
    assert cache.get_stats()["corporate_actions"] == 2


def test_a_frame_from_a_source_is_stored_as_is(cache):
    frame = pd.DataFrame([{**NVDA_SPLIT, "amount": float("nan"), "new_symbol": None, "source": "alpaca"}])
    assert cache.store_corporate_actions(frame) == 1
    assert cache.store_corporate_actions(pd.DataFrame(columns=list(ACTION_COLUMNS))) == 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda c: c.store_corporate_actions("NVDA 10:1", source="alpaca"), "DataFrame or rows"),
    (lambda c: c.store_corporate_actions({"symbol": "NVDA"}, source="alpaca"), "DataFrame or rows"),
    (lambda c: c.store_corporate_actions(42, source="alpaca"), "DataFrame or rows"),
    (lambda c: c.store_corporate_actions([NVDA_SPLIT]), "source"),
    (lambda c: c.store_corporate_actions([{**NVDA_SPLIT, "source": "demo"}], source="alpaca"), "drop one"),
    (lambda c: c.store_corporate_actions([{**NVDA_SPLIT, "ratio": 0.1}], source="alpaca"), "above 1"),
    (lambda c: c.store_corporate_actions([{**NVDA_SPLIT, "symbol": "ＮＶＤＡ"}], source="alpaca"), "symbol"),
    (lambda c: c.store_corporate_actions([{**NVDA_SPLIT, "ex_date": "2024-13-40"}], source="alpaca"), "ex_date"),
    (lambda c: c.store_corporate_actions([NVDA_SPLIT, NVDA_SPLIT], source="alpaca"), "listed twice"),
    (lambda c: c.store_corporate_actions(pd.DataFrame([{**NVDA_SPLIT, "price": 1.0}]), source="alpaca"),
     "unknown column"),
    (lambda c: c.store_corporate_actions([NVDA_SPLIT], source="alpaca", fetched_at="yesterday"), "fetched_at"),
    (lambda c: c.get_corporate_actions("NVDA", "2024-12-31", "2024-01-01"), "after end"),
    (lambda c: c.get_corporate_actions(["NVDA"]), "symbol"),
    (lambda c: c.record_action_coverage(["NVDA"], "2024-12-31", "2024-01-01", "alpaca"), "after end"),
    (lambda c: c.missing_action_ranges(["NVDA"], "2024-12-31", "2024-01-01", "alpaca"), "after end"),
    (lambda c: c.missing_action_ranges(["NVDA"], "2024-01-01", "2024-12-31", ""), "source"),
])
def test_hostile_input_is_refused_and_nothing_is_written(cache, call, message):
    with pytest.raises(ValueError, match=message):
        call(cache)
    assert cache.get_stats()["corporate_actions"] == 0


# ---------------------------------------------------------------------------
# Coverage and its TTL
# ---------------------------------------------------------------------------


def test_the_action_ttl_rule():
    now = datetime(2024, 6, 20, 16, 0, tzinfo=UTC)  # noon in New York; 30 days before: 2024-05-21
    pieces = action_expiry(date(2024, 1, 1), date(2024, 12, 31), now)
    ten_years, day = 3652 * 86400, 86400
    start = int(now.timestamp())
    assert pieces == [(date(2024, 1, 1), date(2024, 5, 21), start + ten_years),
                      (date(2024, 5, 22), date(2024, 12, 31), start + day)]
    assert action_expiry(date(2020, 1, 1), date(2020, 12, 31), now) == [
        (date(2020, 1, 1), date(2020, 12, 31), start + ten_years)]
    assert action_expiry(date(2025, 1, 1), date(2025, 1, 2), now) == [
        (date(2025, 1, 1), date(2025, 1, 2), start + day)]


def test_missing_ranges_are_the_gaps_of_valid_coverage(cache):
    with freeze_time("2024-06-20 16:00:00"):
        assert cache.missing_action_ranges("AAPL", "2024-01-01", "2024-12-31", "alpaca") == {
            "AAPL": [(date(2024, 1, 1), date(2024, 12, 31))]}
        cache.record_action_coverage(["AAPL", "MSFT"], "2024-03-01", "2024-03-31", "alpaca")
        cache.record_action_coverage("AAPL", "2024-05-01", "2024-07-31", "alpaca")
        assert cache.missing_action_ranges(["aapl", "MSFT", "KO"], "2024-01-01", "2024-12-31", "alpaca") == {
            "AAPL": [(date(2024, 1, 1), date(2024, 2, 29)), (date(2024, 4, 1), date(2024, 4, 30)),
                     (date(2024, 8, 1), date(2024, 12, 31))],
            "MSFT": [(date(2024, 1, 1), date(2024, 2, 29)), (date(2024, 4, 1), date(2024, 12, 31))],
            "KO": [(date(2024, 1, 1), date(2024, 12, 31))],
        }
        assert cache.missing_action_ranges("AAPL", "2024-03-10", "2024-03-20", "alpaca") == {"AAPL": []}
        assert cache.missing_action_ranges("AAPL", "2024-03-10", "2024-03-20", "demo") == {
            "AAPL": [(date(2024, 3, 10), date(2024, 3, 20))]}
    # 25 hours later the recent part (2024-05-22 onwards) has expired; the settled part has not.
    with freeze_time("2024-06-21 17:00:00"):
        assert cache.missing_action_ranges("AAPL", "2024-05-01", "2024-07-31", "alpaca") == {
            "AAPL": [(date(2024, 5, 22), date(2024, 7, 31))]}
        actions_before = cache.store_corporate_actions([AAPL_DIVIDEND], source="alpaca")
        removed = cache.cleanup_expired()
        assert removed == 1  # the one recent coverage range; never the actions
        assert rows(cache.get_corporate_actions("AAPL"))[0][4] == 0.25 and actions_before == 1


# ---------------------------------------------------------------------------
# sync_corporate_actions against the Alpaca stand-in
# ---------------------------------------------------------------------------


def test_sync_asks_once_for_the_union_and_then_not_at_all(cache, alpaca_stub):
    alpaca_stub.add_split("AAPL", "2020-08-31", 4, 1)  # public record
    alpaca_stub.add_split("TSLA", "2022-08-25", 3, 1)
    alpaca_stub.add_cash_dividend("AAPL", "2020-08-07", 0.82)
    alpaca_stub.add_split("MSFT", "2021-01-04", 2, 1)  # not asked for
    src = make_source(alpaca_stub)
    with freeze_time("2024-06-20 16:00:00"):
        report = sync_corporate_actions(cache, src, ["aapl", "TSLA"], "2020-01-01", "2022-12-31")
        assert isinstance(report, CorporateActionSyncReport)
        assert (report.requests_made, report.actions_written, report.symbols_fetched) == (1, 3, ["AAPL", "TSLA"])
        assert (report.fetched_start, report.fetched_end) == (date(2020, 1, 1), date(2022, 12, 31))
        sent = alpaca_stub.requests
        assert [r.path for r in sent] == [ACTIONS]
        assert sent[0].params["symbols"] == "AAPL,TSLA"
        assert rows(cache.get_corporate_actions("AAPL")) == [
            ("AAPL", "cash_dividend", date(2020, 8, 7), None, 0.82, None, "alpaca"),
            ("AAPL", "forward_split", date(2020, 8, 31), 4.0, None, None, "alpaca"),
        ]
        again = sync_corporate_actions(cache, src, ["AAPL", "TSLA"], "2020-06-01", "2022-06-30")
        assert (again.requests_made, again.actions_written, again.symbols_fetched) == (0, 0, [])
        assert len(alpaca_stub.requests) == 1
        # A new symbol and a longer range: one request, for the missing part only.
        third = sync_corporate_actions(cache, src, ["AAPL", "TSLA", "MSFT"], "2020-01-01", "2023-06-30")
        assert third.requests_made == 1 and third.symbols_fetched == ["AAPL", "TSLA", "MSFT"]
        assert (third.fetched_start, third.fetched_end) == (date(2020, 1, 1), date(2023, 6, 30))
        last = alpaca_stub.requests[-1]
        assert last.params["symbols"] == "AAPL,TSLA,MSFT"
        fourth = sync_corporate_actions(cache, src, ["AAPL", "TSLA"], "2020-01-01", "2023-12-31")
        assert fourth.requests_made == 1
        assert (alpaca_stub.requests[-1].params["start"], alpaca_stub.requests[-1].params["end"]) == (
            "2023-07-01", "2023-12-31")
    assert third.as_dict()["fetched_end"] == "2023-06-30"


def test_sync_refuses_bad_arguments(cache, alpaca_stub):
    src = make_source(alpaca_stub)
    with pytest.raises(ValueError, match="after end"):
        sync_corporate_actions(cache, src, ["AAPL"], "2024-12-31", "2024-01-01")
    with pytest.raises(ValueError, match="no symbols"):
        sync_corporate_actions(cache, src, [], "2024-01-01", "2024-12-31")
    with pytest.raises(ValueError, match="TradingCacheManager"):
        sync_corporate_actions("cache.db", src, ["AAPL"], "2024-01-01", "2024-12-31")
    assert alpaca_stub.requests == []


def test_a_lying_source_leaves_no_coverage(cache):
    class Liar(DemoSource):
        def get_corporate_actions(self, symbols, start, end):  # type: ignore[override]
            self.requests_made += 1
            return pd.DataFrame([{**NVDA_SPLIT, "ratio": 0.5, "source": "demo"}])  # a "forward" 1:2

    with pytest.raises(ValueError, match="above 1"):
        sync_corporate_actions(cache, Liar(), ["NVDA"], "2024-01-01", "2024-12-31")
    assert cache.missing_action_ranges("NVDA", "2024-01-01", "2024-12-31", "demo") == {
        "NVDA": [(date(2024, 1, 1), date(2024, 12, 31))]}


# ---------------------------------------------------------------------------
# The staleness scenario with the demo source (its split is announced 30 days ahead)
# ---------------------------------------------------------------------------


def test_a_split_announced_later_arrives_after_the_short_ttl(cache_url):
    cache = TradingCacheManager(cache_url)
    source = DemoSource()
    with freeze_time("2024-05-01 16:00:00"):  # NVDA's 4:1 (ex 2024-06-10) is not announced yet
        first = sync_corporate_actions(cache, source, ["NVDA"], "2024-01-01", "2024-12-31")
        assert first.requests_made == 1
        assert cache.get_corporate_actions("NVDA").empty
    with freeze_time("2024-05-02 10:00:00"):  # 18 h later: still within the 24 h TTL
        assert sync_corporate_actions(cache, source, ["NVDA"], "2024-01-01", "2024-12-31").requests_made == 0
    with freeze_time("2024-05-15 16:00:00"):  # announced on 2024-05-11; the recent days expired
        later = sync_corporate_actions(cache, source, ["NVDA"], "2024-01-01", "2024-12-31")
        # Only the days that were recent at the first sync are asked again.
        assert (later.requests_made, later.fetched_start, later.fetched_end) == (
            1, date(2024, 4, 2), date(2024, 12, 31))
        assert rows(cache.get_corporate_actions("NVDA")) == [
            ("NVDA", "forward_split", date(2024, 6, 10), 4.0, None, None, "demo")]
    cache.close()
