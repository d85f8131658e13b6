"""The decisions a scheduled job makes before it fetches anything, tested without Prefect.

Which sessions does a default run cover, when does it skip and why, how is a backfill cut into
chunks, and how are the reports of several chunks or tasks merged into one. Expected values
are literal tables (instants and the answers NYSE's calendar gives), never computed here.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from cachelib.market_hours import chunk_range, closed_reason, default_bars_window, latest_finished_session
from cachelib.replay import ReplaySummary
from cachelib.sync import OptionSyncReport, SyncReport

UTC = timezone.utc
# 2025-11-26 (Wednesday before Thanksgiving), a full session: 14:30Z-21:00Z.
WED_NOON = datetime(2025, 11, 26, 17, 0, tzinfo=UTC)
WED_AFTER_CLOSE = datetime(2025, 11, 26, 22, 0, tzinfo=UTC)
SATURDAY = datetime(2025, 12, 27, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("instant", "timeframe", "expected"),
    [
        (WED_NOON, "1Day", (date(2025, 11, 25), date(2025, 11, 25))),  # today not closed yet
        (WED_AFTER_CLOSE, "1Day", (date(2025, 11, 26), date(2025, 11, 26))),
        (datetime(2025, 11, 26, 21, 14, tzinfo=UTC), "1Day", (date(2025, 11, 25), date(2025, 11, 25))),  # settling
        (datetime(2025, 11, 26, 21, 15, tzinfo=UTC), "1Day", (date(2025, 11, 26), date(2025, 11, 26))),
        (WED_NOON, "1Min", (date(2025, 11, 26), date(2025, 11, 26))),
        (datetime(2025, 11, 26, 21, 29, tzinfo=UTC), "1Min", (date(2025, 11, 26), date(2025, 11, 26))),  # grace
        (datetime(2025, 11, 26, 21, 30, tzinfo=UTC), "1Min", "Market closed (After-hours)"),
        (datetime(2025, 11, 26, 14, 0, tzinfo=UTC), "1Min", "Market closed (Pre-market, opens at 09:30 AM ET)"),
        (datetime(2025, 11, 27, 15, 0, tzinfo=UTC), "1Day", "Market closed (Holiday)"),
        (SATURDAY, "1Min", "Market closed (Weekend)"),
        (SATURDAY, "1Day", "Market closed (Weekend)"),
        # Early close (13:00 ET = 18:00Z): the grace runs until 18:30Z.
        (datetime(2025, 11, 28, 18, 29, tzinfo=UTC), "5Min", (date(2025, 11, 28), date(2025, 11, 28))),
        (datetime(2025, 11, 28, 18, 30, tzinfo=UTC), "5Min", "Market closed (After-hours)"),
    ],
)
def test_default_bars_window(instant, timeframe, expected):
    window = default_bars_window(timeframe, instant)
    got = window.skip_reason if isinstance(expected, str) else (window.start, window.end)
    assert got == expected


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (WED_NOON, date(2025, 11, 25)),
        (WED_AFTER_CLOSE, date(2025, 11, 26)),
        (datetime(2025, 11, 27, 23, 0, tzinfo=UTC), date(2025, 11, 26)),  # Thanksgiving
        (SATURDAY, date(2025, 12, 26)),
        (datetime(2025, 12, 29, 4, 0, tzinfo=UTC), date(2025, 12, 26)),  # Sunday 23:00 ET
    ],
)
def test_latest_finished_session(instant, expected):
    assert latest_finished_session(instant) == expected


def test_closed_reason():
    assert closed_reason(date(2025, 12, 25)) == "Market closed (Holiday)"
    assert closed_reason(date(2025, 1, 9)) == "Market closed (Holiday)"  # national day of mourning
    assert closed_reason(date(2025, 12, 27)) == "Market closed (Weekend)"
    assert closed_reason(date(2025, 11, 28)) is None  # an early close is a session


def test_chunk_range_boundaries():
    assert chunk_range(date(2024, 2, 10), date(2024, 11, 5), "1Min") == [
        (date(2024, 2, 10), date(2024, 3, 31)),
        (date(2024, 4, 1), date(2024, 6, 30)),
        (date(2024, 7, 1), date(2024, 9, 30)),
        (date(2024, 10, 1), date(2024, 11, 5)),
    ]
    # No longer than one chunk: one chunk, whatever boundary it crosses (92 days intraday,
    # 366 days daily: the daily job's 365-day window across a leap day is still one).
    assert chunk_range(date(2023, 12, 30), date(2024, 1, 2), "5Min") == [(date(2023, 12, 30), date(2024, 1, 2))]
    assert chunk_range(date(2023, 12, 1), date(2024, 3, 1), "1Min") == [(date(2023, 12, 1), date(2024, 3, 1))]
    assert chunk_range(date(2023, 12, 1), date(2024, 3, 2), "1Min") == [
        (date(2023, 12, 1), date(2023, 12, 31)), (date(2024, 1, 1), date(2024, 3, 2))]
    assert chunk_range(date(2023, 6, 4), date(2024, 6, 3), "1Day") == [(date(2023, 6, 4), date(2024, 6, 3))]
    assert chunk_range(date(2023, 6, 3), date(2024, 6, 3), "1Day") == [
        (date(2023, 6, 3), date(2023, 12, 31)), (date(2024, 1, 1), date(2024, 6, 3))]
    assert chunk_range(date(2022, 5, 1), date(2024, 2, 1), "1Day") == [
        (date(2022, 5, 1), date(2022, 12, 31)), (date(2023, 1, 1), date(2023, 12, 31)),
        (date(2024, 1, 1), date(2024, 2, 1))]
    assert chunk_range(date(2024, 3, 5), date(2024, 3, 5), "1Day") == [(date(2024, 3, 5), date(2024, 3, 5))]
    with pytest.raises(ValueError, match="start 2024-03-06 is after end 2024-03-05"):
        chunk_range(date(2024, 3, 6), date(2024, 3, 5), "1Day")


# -- merging the reports of several chunks or tasks ---------------------------------------------


def _chunk(start: date, end: date, written: dict[str, int], rejected: list[tuple[str, str]]) -> SyncReport:
    report = SyncReport("demo", "1Day", list(written), start, end, sessions_requested=10, sessions_fetched=8,
                        requests_made=1, rows_fetched=sum(written.values()) + len(rejected), calls=1, seconds=0.5)
    for sym, n in written.items():
        report.per_symbol[sym] = {"sessions_fetched": 4, "rows_fetched": n, "rows_written": n, "rows_rejected": 0}
        report.rows_written += n
    for sym, reason in rejected:
        report.reject(sym, "2024-01-03T05:00:00+00:00", reason)
    return report


def test_sync_report_merge_sums_counts_per_symbol_and_keeps_every_rejection_count():
    a = _chunk(date(2023, 12, 1), date(2023, 12, 31), {"AAPL": 20, "MSFT": 19}, [("MSFT", "negative volume")])
    b = _chunk(date(2024, 1, 1), date(2024, 1, 31), {"AAPL": 21},
               [("AAPL", "negative volume"), ("AAPL", "high below max(open, close)")])
    merged = SyncReport.merge([a, b], max_rejections=2)

    assert (merged.source, merged.timeframe, merged.symbols) == ("demo", "1Day", ["AAPL", "MSFT"])
    assert (merged.start, merged.end) == (date(2023, 12, 1), date(2024, 1, 31))
    assert (merged.sessions_requested, merged.sessions_fetched, merged.requests_made, merged.calls) == (20, 16, 2, 2)
    assert (merged.rows_fetched, merged.rows_written, merged.rows_rejected) == (63, 60, 3)
    assert merged.seconds == 1.0
    assert merged.per_symbol == {
        "AAPL": {"sessions_fetched": 8, "rows_fetched": 41, "rows_written": 41, "rows_rejected": 2},
        "MSFT": {"sessions_fetched": 4, "rows_fetched": 19, "rows_written": 19, "rows_rejected": 1},
    }
    assert [r["symbol"] for r in merged.rejections] == ["MSFT", "AAPL"]  # capped at 2
    assert merged.rejection_reasons() == {"negative volume": 2, "high below max(open, close)": 1}
    assert a.per_symbol["AAPL"]["rows_written"] == 20  # the parts are left as they were


def test_capped_report_lists_fewer_rejections_but_counts_them_all():
    report = _chunk(date(2024, 1, 1), date(2024, 1, 31), {"SPY": 5}, [("SPY", "negative volume")] * 3)
    capped = report.capped(1)
    assert len(capped.rejections) == 1 and len(report.rejections) == 3
    assert capped.rejection_reasons() == {"negative volume": 3}
    assert capped.rows_rejected == 3


def test_option_sync_report_merge():
    a = OptionSyncReport("demo", {"AAPL": 768}, {"AAPL": "2025-11-26"}, requests_made=1)
    b = OptionSyncReport("demo", {"SPY": 0}, {}, requests_made=1)
    merged = OptionSyncReport.merge([a, b])
    assert (merged.source, merged.rows_written, merged.requests_made) == ("demo", 768, 2)
    assert merged.rows_per_underlying == {"AAPL": 768, "SPY": 0}
    assert merged.trading_dates == {"AAPL": "2025-11-26"}


def _part(symbol: str, day: date, bars: int, pnls: list[float]) -> ReplaySummary:
    missing = ((symbol, day),) if bars == 0 else ()
    return ReplaySummary("sma_crossover", (symbol,), day, day, sessions=1, sessions_replayed=0 if missing else 1,
                         bars=bars, trades=len(pnls), winning_trades=sum(p > 0 for p in pnls), total_pnl=sum(pnls),
                         trades_by_symbol={symbol: len(pnls)}, missing=missing, stats={}, elapsed_seconds=0.25)


def test_replay_summary_merge_counts_a_session_once_across_symbols():
    d1, d2 = date(2024, 3, 14), date(2024, 3, 15)
    parts = [_part("AAPL", d1, 390, [1.5, -0.5]), _part("MSFT", d1, 390, [2.0]),
             _part("AAPL", d2, 390, []), _part("NVDA", d2, 0, [])]
    merged = ReplaySummary.merge(parts, stats={"total_trades": 3})
    assert merged.symbols == ("AAPL", "MSFT", "NVDA")
    assert (merged.start, merged.end, merged.sessions, merged.sessions_replayed) == (d1, d2, 2, 3)
    assert (merged.bars, merged.trades, merged.winning_trades, merged.total_pnl) == (1170, 3, 2, 3.0)
    assert merged.trades_by_symbol == {"AAPL": 2, "MSFT": 1, "NVDA": 0}
    assert merged.missing == (("NVDA", d2),)
    assert merged.stats == {"total_trades": 3}
    assert merged.elapsed_seconds == 1.0
    with pytest.raises(ValueError, match="no replay summaries to merge"):
        ReplaySummary.merge([])
