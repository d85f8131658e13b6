"""Tests for cachelib.market_hours.

Expected answers live in ``tests/data/market_hours_*.csv`` and were written from the NYSE
published holiday / early-close calendars (not computed with the code under test):

* ``market_hours_cases.csv``: an instant (New York wall time, or ISO with an explicit
  offset when the wall time is ambiguous or to pin the UTC instant) with the expected
  ``is_open``, message, session, trading-day flag and next regular open (New York time).
* ``market_hours_bounds.csv``: ``session_bounds`` in UTC across DST and early closes.
* ``market_hours_neighbors.csv``: ``previous_session`` / ``next_session``.
* ``market_hours_ranges.csv``: ``sessions_in_range`` counts.
* ``market_hours_dates.csv``: ``session_date`` / ``today_et`` around UTC midnight.
* ``market_hours_days.csv``: ``is_session`` / ``is_early_close`` for notable days.

Every clock case is run with freezegun (``now`` omitted) and again with ``now=`` passed.
``test_market_hours_tz.py`` reruns this file under other machine time zones.
"""

from __future__ import annotations

import csv
import os
import threading
import time as time_mod
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from freezegun import freeze_time

import cachelib.market_hours as mh

NY = ZoneInfo("America/New_York")
UTC = timezone.utc
DATA = Path(__file__).parent / "data"


def _rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _bool(text: str) -> bool:
    assert text in ("true", "false"), text
    return text == "true"


def _et_instant(text: str) -> datetime:
    """Harness: a New York wall time (or ISO with offset) as an aware UTC datetime."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=NY)
    return dt.astimezone(UTC)


def _id(row: dict[str, str], key: str) -> str:
    return f"{row[key]} {row.get('note', '')}".strip()


CASES = _rows("market_hours_cases.csv")
BOUNDS = _rows("market_hours_bounds.csv")
NEIGHBORS = _rows("market_hours_neighbors.csv")
RANGES = _rows("market_hours_ranges.csv")
DATES = _rows("market_hours_dates.csv")
DAYS = _rows("market_hours_days.csv")
EARLY_CLOSE_DAYS = {
    _et_instant(r["instant_et"]).astimezone(NY).date() for r in CASES if "Early close" in r["message"]
}


def test_data_files_cover_the_brief() -> None:
    """Guard against a truncated CSV: every 2024-2026 holiday and early close is present."""
    holidays = {
        _et_instant(r["instant_et"]).astimezone(NY).date() for r in CASES if r["session"] == "holiday"
    }
    assert len({d for d in holidays if 2024 <= d.year <= 2026}) == 31  # 3 x 10 + 2025-01-09
    assert len(EARLY_CLOSE_DAYS) == 8
    assert len(CASES) > 300


# ----------------------------------------------------------------------------------------
# Clock-driven cases
# ----------------------------------------------------------------------------------------


def _check_status(row: dict[str, str], instant: datetime, call: dict) -> None:
    exp_open = _bool(row["is_open"])
    assert call["is_market_hours"] is exp_open
    assert call["status"] == (exp_open, row["message"])
    det = call["detailed"]
    assert det["is_open"] is exp_open
    assert det["message"] == row["message"]
    assert det["session"] == row["session"]
    assert det["is_trading_day"] is _bool(row["is_trading_day"])
    assert det["next_open"] == _et_instant(row["next_open_et"])
    assert det["next_open"] > instant
    assert det["next_open"].utcoffset() == timedelta(0)
    et = det["current_time_et"]
    assert type(et) is datetime  # never a freezegun FakeDatetime, which loses ``fold``
    assert str(et.tzinfo) == "America/New_York"
    # (== across zones is always False for an ambiguous wall time, PEP 495: compare in UTC.)
    assert et.astimezone(UTC) == instant and et.utcoffset() == instant.astimezone(NY).utcoffset()
    ny_day = instant.astimezone(NY).date()
    assert det["date"] == ny_day
    assert call["today_et"] == ny_day
    if det["is_trading_day"]:
        assert (det["open"], det["close"]) == mh.session_bounds(ny_day)
        assert det["open"].utcoffset() == timedelta(0) and det["close"].utcoffset() == timedelta(0)
        assert det["is_early_close"] is (ny_day in EARLY_CLOSE_DAYS)
    else:
        assert det["open"] is None and det["close"] is None
    if exp_open:
        assert det["next_close"] == det["close"]
    else:
        assert det["next_close"] == mh.session_bounds(det["next_open"])[1]


def _call_all(now: datetime | None) -> dict:
    return {
        "is_market_hours": mh.is_market_hours(now),
        "status": mh.get_market_status(now),
        "detailed": mh.get_market_status_detailed(now),
        "today_et": mh.today_et(now),
    }


def _group_by_ny_month(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        day = _et_instant(row["instant_et"]).astimezone(NY).date()
        groups.setdefault(f"{day:%Y-%m}", []).append(row)
    return dict(sorted(groups.items()))


CASE_GROUPS = _group_by_ny_month(CASES)


@pytest.fixture(scope="module", autouse=True)
def _calendar_loaded_once() -> None:
    """Load the calendar outside any freeze, as a long-running process would."""
    mh.covered_range()


@pytest.mark.parametrize("rows", list(CASE_GROUPS.values()), ids=list(CASE_GROUPS))
def test_clock_cases(rows: list[dict[str, str]], subtests: pytest.Subtests) -> None:
    """One freezegun freeze per month of cases (starting a freeze costs 10-30 ms), moved to
    each instant; each instant is reported as a subtest."""
    instants = [_et_instant(row["instant_et"]) for row in rows]
    frozen_results = []
    with freeze_time(instants[0]) as frozen:
        for instant in instants:
            frozen.move_to(instant)
            frozen_results.append(_call_all(None))  # now omitted: read through cachelib.clock
    for row, instant, frozen_result in zip(rows, instants, frozen_results):
        with subtests.test(msg=f"{row['instant_et']} ({row['note']})"):
            assert frozen_result["detailed"]["now_utc"] == instant
            _check_status(row, instant, frozen_result)
            # Explicit now, in three spellings: aware UTC, aware New York, naive (= UTC).
            for now in (instant, instant.astimezone(NY), instant.replace(tzinfo=None)):
                explicit = _call_all(now)
                assert explicit == frozen_result
                _check_status(row, instant, explicit)


def test_clock_accepts_pandas_timestamp() -> None:
    ts = pd.Timestamp("2025-11-28 12:59:59", tz="America/New_York")
    assert mh.get_market_status(ts) == (True, "Market open (Early close at 01:00 PM ET)")
    det = mh.get_market_status_detailed(ts)
    assert type(det["current_time_et"]) is datetime
    assert mh.is_market_hours(pd.Timestamp("2025-11-28 18:00:00")) is False  # naive = UTC = 13:00 ET


def test_calendar_first_loaded_under_freezegun_holds_no_fake_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mh, "_STATE", None)
    with freeze_time("2025-11-28T15:00:00Z"):
        assert mh.get_market_status() == (True, "Market open (Early close at 01:00 PM ET)")
        status = mh.get_market_status_detailed()
    first, last = mh.covered_range()
    assert type(first) is date and type(last) is date
    assert last >= date(2026, 11, 28)
    o, c = mh.session_bounds("2025-11-28")
    assert type(o) is datetime and type(c) is datetime
    assert all(type(status[k]) is datetime for k in ("open", "close", "next_open", "current_time_et"))
    assert type(status["date"]) is date and type(mh.sessions_in_range("2025-11-28", "2025-11-28")[0]) is date


def test_frozen_clock_is_the_only_clock() -> None:
    """With freezegun at a holiday, the default-now answers follow the frozen time."""
    with freeze_time("2025-01-09T15:00:00Z"):
        assert mh.get_market_status() == (False, "Market closed (Holiday)")
        assert mh.today_et() == date(2025, 1, 9)
    with freeze_time("2025-01-10T15:00:00Z"):
        assert mh.get_market_status() == (True, "Market open (Regular hours)")


# ----------------------------------------------------------------------------------------
# Session helpers
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", BOUNDS, ids=[_id(r, "day") for r in BOUNDS])
def test_session_bounds_golden(row: dict[str, str]) -> None:
    o, c = mh.session_bounds(row["day"])
    assert (o.isoformat(), c.isoformat()) == (row["open_utc"], row["close_utc"])
    assert type(o) is datetime and type(c) is datetime
    assert o.tzinfo is not None and o.utcoffset() == timedelta(0)
    assert mh.session_bounds(date.fromisoformat(row["day"])) == (o, c)


@pytest.mark.parametrize("day", ["2025-01-09", "2026-07-03", "2024-03-10", date(2024, 12, 25)])
def test_session_bounds_rejects_non_sessions(day) -> None:
    name = str(day)
    with pytest.raises(ValueError, match=name):
        mh.session_bounds(day)


@pytest.mark.parametrize("row", NEIGHBORS, ids=[_id(r, "day") for r in NEIGHBORS])
def test_previous_and_next_session(row: dict[str, str]) -> None:
    prev, nxt = mh.previous_session(row["day"]), mh.next_session(row["day"])
    assert prev == date.fromisoformat(row["previous_session"])
    assert nxt == date.fromisoformat(row["next_session"])
    assert type(prev) is date and type(nxt) is date


@pytest.mark.parametrize("row", RANGES, ids=[_id(r, "start") for r in RANGES])
def test_sessions_in_range_counts(row: dict[str, str]) -> None:
    got = mh.sessions_in_range(row["start"], row["end"])
    assert len(got) == int(row["count"])
    assert all(type(d) is date for d in got)
    assert got == sorted(got)


def test_sessions_in_range_inclusive_and_typed_inputs() -> None:
    assert mh.sessions_in_range(date(2024, 7, 3), date(2024, 7, 5)) == [date(2024, 7, 3), date(2024, 7, 5)]
    assert mh.sessions_in_range(pd.Timestamp("2024-07-03"), datetime(2024, 7, 5, 23, 0)) == [
        date(2024, 7, 3),
        date(2024, 7, 5),
    ]
    assert mh.sessions_in_range("2024-07-05", "2024-07-03") == []


@pytest.mark.parametrize("row", DAYS, ids=[_id(r, "day") for r in DAYS])
def test_is_session_and_early_close(row: dict[str, str]) -> None:
    assert mh.is_session(row["day"]) is _bool(row["is_session"])
    if row["is_early_close"]:
        assert mh.is_early_close(row["day"]) is _bool(row["is_early_close"])


def test_every_case_day_agrees_with_is_session() -> None:
    for row in CASES:
        day = _et_instant(row["instant_et"]).astimezone(NY).date()
        assert mh.is_session(day) is _bool(row["is_trading_day"]), row


def test_day_argument_types() -> None:
    d = date(2024, 7, 3)
    for value in (d, "2024-07-03", datetime(2024, 7, 3, 23, 59), pd.Timestamp("2024-07-03")):
        assert mh.is_session(value) is True
        assert mh.is_early_close(value) is True
    # An aware datetime means its New York date: 02:00Z on July 5 is July 4, 22:00 ET.
    assert mh.is_session(datetime(2024, 7, 5, 2, 0, tzinfo=UTC)) is False
    assert mh.is_session(pd.Timestamp("2024-07-05 02:00", tz="UTC")) is False
    with pytest.raises(ValueError):
        mh.is_session("July 4th")


def test_session_date_and_today_et(subtests: pytest.Subtests) -> None:
    results = []
    with freeze_time(DATES[0]["instant_utc"]) as frozen:
        for row in DATES:
            frozen.move_to(datetime.fromisoformat(row["instant_utc"]))
            results.append(mh.today_et())
    for row, frozen_today in zip(DATES, results):
        with subtests.test(msg=f"{row['instant_utc']} ({row['note']})"):
            instant = datetime.fromisoformat(row["instant_utc"])
            expected = date.fromisoformat(row["ny_date"])
            naive = instant.astimezone(UTC).replace(tzinfo=None)
            for value in (
                instant,
                naive,  # naive = UTC
                instant.astimezone(NY),
                pd.Timestamp(instant),
                pd.Timestamp(naive),
                row["instant_utc"],
            ):
                assert mh.session_date(value) == expected, value
            assert frozen_today == expected
            assert mh.today_et(instant) == expected
            assert mh.today_et(naive) == expected


def test_session_date_rejects_dates() -> None:
    with pytest.raises(TypeError):
        mh.session_date(date(2025, 1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        mh.session_date("2025-01-02")


def test_helpers_agree_with_each_other_over_ten_years() -> None:
    days = mh.sessions_in_range("2015-01-01", "2024-12-31")
    first, last = date(2015, 1, 1), date(2024, 12, 31)
    every_day = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    assert days == [d for d in every_day if mh.is_session(d)]
    for a, b in zip(days, days[1:]):
        assert mh.next_session(a) == b and mh.previous_session(b) == a
        assert mh.session_bounds(a)[1] < mh.session_bounds(b)[0]
    for d in days:
        o, c = mh.session_bounds(d)
        assert o.astimezone(NY).strftime("%H:%M") == "09:30"
        assert c.astimezone(NY).strftime("%H:%M") == ("13:00" if mh.is_early_close(d) else "16:00")


# ----------------------------------------------------------------------------------------
# Calendar range, laziness, thread-safety, speed
# ----------------------------------------------------------------------------------------


def test_dates_outside_exchange_calendars_default_window() -> None:
    assert mh.is_session("2000-01-03") and mh.is_session("1999-12-31")
    assert mh.previous_session("2000-01-03") == date(1999, 12, 31)
    first, last = mh.covered_range()
    assert first <= date(1990, 1, 1)
    assert last >= mh.today_et() + timedelta(days=365)
    # Before the supported range: a clear error naming the range, never a guess.
    with pytest.raises(ValueError, match="1990-01-01"):
        mh.is_session("1985-06-03")
    with pytest.raises(ValueError, match="1990-01-01"):
        mh.sessions_in_range("1989-01-01", "1990-12-31")
    with pytest.raises(ValueError, match="1990-01-01"):
        mh.previous_session("1990-01-02")


def test_far_future_widens_the_calendar_or_raises() -> None:
    # 2040 is beyond the initial load (today + ~2 years): the calendar is reloaded wider.
    assert mh.is_session("2040-07-04") is False  # a Wednesday, Independence Day
    assert mh.is_session("2040-07-05") is True
    assert mh.next_session("2040-07-03") == date(2040, 7, 5)
    assert mh.covered_range()[1] >= date(2040, 7, 5)
    # Beyond what we agree to project: a clear ValueError naming the range.
    with pytest.raises(ValueError, match="2100-12-31"):
        mh.is_session("2101-01-03")


def test_reload_wider_from_a_narrow_calendar(monkeypatch: pytest.MonkeyPatch) -> None:
    narrow = mh._build(date(2024, 1, 31))
    monkeypatch.setattr(mh, "_STATE", narrow)
    assert mh.covered_range()[1] == date(2024, 1, 31)
    assert mh.next_session("2024-01-31") == date(2024, 2, 1)  # needs a wider calendar
    assert mh.is_early_close("2026-12-24") is True
    assert mh.covered_range()[1] >= date(2026, 12, 24)


def test_loading_is_lazy_and_once_under_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[date] = []
    real_build = mh._build

    def counting_build(end: date):
        calls.append(end)
        time_mod.sleep(0.05)  # widen the race window
        return real_build(end)

    monkeypatch.setattr(mh, "_STATE", None)
    monkeypatch.setattr(mh, "_build", counting_build)
    results: list[object] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append((mh.is_session("2025-01-09"), mh._STATE))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert {r[0] for r in results} == {False}
    assert len({id(r[1]) for r in results}) == 1


def test_lookups_are_fast() -> None:
    days = mh.sessions_in_range("2015-01-01", "2024-12-31")
    mh.session_bounds(days[0])  # calendar loaded
    t0 = time_mod.perf_counter()
    for _ in range(20):
        for d in days:
            mh.session_bounds(d)
            mh.is_session(d)
    for _ in range(1000):
        mh.sessions_in_range("2015-01-01", "2024-12-31")
    elapsed = time_mod.perf_counter() - t0
    # ~100k lookups + 1000 ten-year ranges: well under a second without per-call pandas work.
    assert elapsed < 1.5, elapsed


if os.environ.get("TZ"):  # collected only in the TZ child runs of test_market_hours_tz.py

    def test_machine_time_zone_in_effect() -> None:
        """The child process really runs under the TZ it was given."""
        probe = datetime(2025, 1, 15, 12, tzinfo=UTC)
        assert probe.astimezone().utcoffset() == probe.astimezone(ZoneInfo(os.environ["TZ"])).utcoffset()
