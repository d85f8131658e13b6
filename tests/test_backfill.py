"""Backfills that resume (issue 13, section 5): the chunk plan, and a failed run resumed on the
loopback Alpaca stand-in (real alpaca-py over HTTP), on both engines.

Request counts are read from the stub (the HTTP requests it actually served).
"""

from __future__ import annotations

from datetime import date

import pytest
from alpaca_stub import TEST_KEY, TEST_SECRET, AlpacaStub, Fault
from alpaca_stub import daily_bar as daily

from cachelib.backfill import BackfillError, ChunkResult, bars_per_session, plan_backfill, run_backfill
from cachelib.sources import AlpacaSource

BARS = "/v2/stocks/bars"
# The XNYS sessions of January and February 2024, written out by hand (Jan 1 New Year, Jan 15
# MLK Day, Feb 19 Presidents Day): 21 + 20 = 41 sessions.
JAN_2024 = [2, 3, 4, 5, 8, 9, 10, 11, 12, 16, 17, 18, 19, 22, 23, 24, 25, 26, 29, 30, 31]
FEB_2024 = [1, 2, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 20, 21, 22, 23, 26, 27, 28, 29]
SESSIONS = [date(2024, 1, d) for d in JAN_2024] + [date(2024, 2, d) for d in FEB_2024]


@pytest.fixture
def stub():
    with AlpacaStub(page_size=20) as server:
        for i, sym in enumerate(["AAPL", "MSFT"]):
            server.add_bars(sym, [daily(day, 100 + 10 * i + n) for n, day in enumerate(SESSIONS)])
        yield server


@pytest.fixture
def alpaca(stub):
    source = AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, max_retries=0,
                          max_requests_per_minute=None)
    yield source
    source.close()


# -- the plan ----------------------------------------------------------------------------------


def test_a_range_longer_than_a_chunk_is_cut_into_near_equal_session_ranges_per_symbol():
    plan = plan_backfill(["aapl", "MSFT"], "2024-01-01", "2024-02-29", "1Day", rows_per_page=20, pages_per_chunk=1)
    # 41 sessions of 1 bar, chunks of <= 20 rows: 3 ranges of 14, 14 and 13 sessions, each symbol.
    assert [(c.index, c.symbols, c.first, c.last, c.sessions, c.expected_rows, c.expected_requests)
            for c in plan.chunks] == [
        (1, ("AAPL",), date(2024, 1, 2), date(2024, 1, 22), 14, 14, 1),
        (2, ("MSFT",), date(2024, 1, 2), date(2024, 1, 22), 14, 14, 1),
        (3, ("AAPL",), date(2024, 1, 23), date(2024, 2, 9), 14, 14, 1),
        (4, ("MSFT",), date(2024, 1, 23), date(2024, 2, 9), 14, 14, 1),
        (5, ("AAPL",), date(2024, 2, 12), date(2024, 2, 29), 13, 13, 1),
        (6, ("MSFT",), date(2024, 2, 12), date(2024, 2, 29), 13, 13, 1),
    ]
    assert (plan.sessions, plan.expected_rows, plan.expected_requests, plan.minimum_requests) == (41, 82, 6, 5)
    assert plan.chunks[2].describe() == "AAPL 2024-01-23..2024-02-09"


def test_short_ranges_share_a_chunk_across_symbols():
    plan = plan_backfill("SPY,QQQ,IWM", "2024-01-01", "2024-12-31", "1Day")
    assert [(c.symbols, c.sessions, c.expected_rows, c.expected_requests) for c in plan.chunks] == [
        (("SPY", "QQQ", "IWM"), 252, 756, 1)]


def test_the_500_symbols_by_5_years_of_minute_bars_plan():
    plan = plan_backfill([f"S{i:03d}" for i in range(500)], "2020-01-01", "2024-12-31", "1Min")
    # 1,258 sessions (253 + 252 + 251 + 250 + 252) x 390 bars x 500 symbols; each symbol's range
    # in 5 chunks of 251-252 sessions (<= 100,000 rows, 10 pages each).
    assert (plan.sessions, len(plan.chunks), plan.expected_rows) == (1258, 2500, 245_310_000)
    assert (plan.expected_requests, plan.minimum_requests) == (25_000, 24_531)
    assert plan.projected_minutes(200) == 125.0
    assert {c.sessions for c in plan.chunks} == {251, 252}


def test_bars_per_session_follows_the_timeframe():
    assert [bars_per_session(tf) for tf in ("1Min", "5Min", "15Min", "30Min", "1Hour", "1Day")] == [
        390, 78, 26, 13, 7, 1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"start": "2024-02-01", "end": "2024-01-01"}, "start 2024-02-01 is after end 2024-01-01"),
    ({"symbols": []}, "no symbols to backfill"),
    ({"pages_per_chunk": 0}, "pages_per_chunk must be a whole number >= 1, got 0"),
    ({"rows_per_page": 2.5}, "rows_per_page must be a whole number >= 1, got 2.5"),
    ({"timeframe": "2Day"}, "2Day"),
])
def test_bad_plan_parameters_are_refused(kwargs, message):
    args = {"symbols": ["SPY"], "start": "2024-01-01", "end": "2024-01-31", "timeframe": "1Day", **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_backfill(args.pop("symbols"), args.pop("start"), args.pop("end"), args.pop("timeframe"), **args)


# -- resuming ------------------------------------------------------------------------------------


def test_a_failed_backfill_resumes_where_it_stopped(cache, stub, alpaca):
    plan = plan_backfill(["AAPL", "MSFT"], "2024-01-01", "2024-02-29", "1Day", rows_per_page=20, pages_per_chunk=1)
    seen: list[ChunkResult] = []

    def fail_after_two(result: ChunkResult) -> None:
        seen.append(result)
        if result.chunk.index == 2:  # the vendor goes down after the second chunk
            stub.set_persistent_fault(BARS, Fault(500))

    with pytest.raises(BackfillError, match=r"^chunk 3 of 6 \(AAPL 2024-01-23\.\.2024-02-09\) failed: ") as err:
        run_backfill(cache, alpaca, plan, progress=fail_after_two)
    first = err.value.report
    assert stub.count(BARS) == 3  # two chunks, then the failed request (max_retries=0)
    assert (first.chunks_fetched, first.chunks_skipped, first.chunks_failed, first.requests) == (2, 0, 1, 3)
    assert (first.rows_written, first.complete) == (28, False)
    assert "run the same backfill again" in str(err.value)
    assert [(r.chunk.index, r.status, r.requests, r.rows_written) for r in seen] == [
        (1, "fetched", 1, 14), (2, "fetched", 1, 14)]

    # Rerun with the same parameters: only the four missing chunks are asked for.
    stub.clear_faults()
    stub.reset_counts()
    seen.clear()
    second = run_backfill(cache, alpaca, plan, progress=seen.append)
    assert stub.count(BARS) == 4
    assert [(r.params["symbols"], r.params["start"][:10]) for r in stub.requests] == [
        ("AAPL", "2024-01-23"), ("MSFT", "2024-01-23"), ("AAPL", "2024-02-12"), ("MSFT", "2024-02-12")]
    assert [(r.chunk.index, r.status, r.requests) for r in seen] == [
        (1, "skipped", 0), (2, "skipped", 0), (3, "fetched", 1), (4, "fetched", 1), (5, "fetched", 1),
        (6, "fetched", 1)]
    assert (second.chunks_fetched, second.chunks_skipped, second.requests, second.rows_written) == (4, 2, 4, 54)
    assert second.complete and second.error is None

    # A third run: everything is cached, no request at all.
    stub.reset_counts()
    third = run_backfill(cache, alpaca, plan)
    assert stub.count() == 0
    assert (third.chunks_fetched, third.chunks_skipped, third.requests, third.rows_written) == (0, 6, 0, 0)
    for sym, base in (("AAPL", 100), ("MSFT", 110)):
        bars = cache.get(sym, "2024-01-01", "2024-02-29", source="alpaca")
        assert len(bars) == 41
        assert (bars["open"].iloc[0], bars["open"].iloc[-1]) == (base, base + 40)


def test_rejected_rows_are_counted_by_reason(cache, stub, alpaca):
    stub.add_bars("SPY", [daily(date(2024, 1, 2), 50),
                          {**daily(date(2024, 1, 3), 50), "h": 40}])  # high below open: refused
    plan = plan_backfill(["SPY"], "2024-01-02", "2024-01-03", "1Day")
    report = run_backfill(cache, alpaca, plan)
    assert (report.rows_written, report.rows_rejected, report.requests) == (1, 1, 1)
    assert report.rejection_counts == {"high below max(open, close)": 1}
    assert report.rejections == [{"symbol": "SPY", "time": "2024-01-03T05:00:00+00:00",
                                  "reason": "high below max(open, close)"}]
    assert report.as_dict()["rejection_counts"] == report.rejection_counts
