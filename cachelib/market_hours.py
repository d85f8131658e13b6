"""NYSE trading calendar, right to the minute: sessions, open/close instants and market status.

Design
------
* **One source of truth.** Holidays, ad-hoc closures (e.g. 2025-01-09, the national day of
  mourning for President Carter), Juneteenth and early closes (13:00 ET) all come from
  ``exchange_calendars``' ``XNYS`` calendar. Nothing here hard-codes a holiday.
* **Loaded once, lazily, thread-safe.** The calendar is built on first use (about 0.2-0.3 s),
  under a lock. ``exchange_calendars`` and pandas themselves are imported with this module
  (never inside a function): a C extension first imported while freezegun has replaced
  ``datetime`` crashes the interpreter, and users call these functions under freezegun.
* **Explicit bounds, never a silent wrong answer.** ``exchange_calendars``' default window is
  only ~20 years back and 1 year ahead. We load from :data:`EARLIEST_SUPPORTED` (1990-01-01)
  up to today + 2 years. A later date makes the module reload a wider calendar (up to
  :data:`LATEST_SUPPORTED`); a date outside the supported span raises :class:`ValueError`
  naming the range. Before 1990 XNYS' session times are not trustworthy (NYSE opened at
  10:00 ET until 1985), so earlier dates are refused rather than guessed. Dates more than
  a year or two ahead are projections of NYSE's published rules; NYSE can still add
  closures (as it did for 2025-01-09).
* **Fast lookups.** The calendar is flattened once into plain Python structures: a sorted
  list of session dates (and their ordinals, for :mod:`bisect`), a dict
  ``date -> (open_utc, close_utc)`` and a set of early-close dates. :func:`is_session`,
  :func:`session_bounds` and :func:`is_market_hours` are dict/set lookups (around a
  microsecond); :func:`sessions_in_range`, :func:`previous_session` and
  :func:`next_session` are a bisect and a list slice. No pandas call happens per query.
  A snapshot is immutable and swapped atomically when a wider calendar is loaded.
* **One clock.** Every clock-dependent function takes an optional ``now``; when omitted it
  reads :func:`cachelib.clock.now_utc` (so freezegun controls it; ``pandas.Timestamp.now`` is
  never used). A naive ``now`` means UTC. Results do not depend on the machine's ``TZ``:
  all local-time logic uses ``ZoneInfo("America/New_York")``.

Status windows on a session day (New York time)::

    00:00 -- 04:00      closed        "Market closed"
    04:00 -- open       pre-market    "Market closed (Pre-market, opens at 09:30 AM ET)"
    open  -- close      regular       "Market open (Regular hours)"
                                      "Market open (Early close at 01:00 PM ET)" on early-close days
    close -- 20:00      after-hours   "Market closed (After-hours)"
    20:00 -- 24:00      closed        "Market closed"

Weekends are ``"Market closed (Weekend)"``; a weekday that is not a session is
``"Market closed (Holiday)"``. Intervals include their start and exclude their end, so the
market is open at 09:30:00 and closed at 16:00:00 (13:00:00 on early-close days).

>>> from datetime import date, datetime, timezone
>>> is_session("2025-01-09")              # Carter day of mourning
False
>>> [d.isoformat() for d in session_bounds(date(2025, 11, 28))]   # day after Thanksgiving
['2025-11-28T14:30:00+00:00', '2025-11-28T18:00:00+00:00']
>>> get_market_status(datetime(2025, 7, 3, 16, 59, tzinfo=timezone.utc))
(True, 'Market open (Early close at 01:00 PM ET)')
"""

from __future__ import annotations

import threading
import warnings
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeAlias

import exchange_calendars as xc
import pandas as pd

from cachelib.bars import NY, parse_timeframe, to_date
from cachelib.clock import now_utc

if TYPE_CHECKING:  # pragma: no cover
    from exchange_calendars import ExchangeCalendar

__all__ = [
    "CALENDAR_NAME",
    "EARLIEST_SUPPORTED",
    "LATEST_SUPPORTED",
    "PRE_MARKET_START",
    "AFTER_HOURS_END",
    "DayLike",
    "get_calendar",
    "covered_range",
    "is_market_hours",
    "get_market_status",
    "get_market_status_detailed",
    "is_session",
    "is_early_close",
    "sessions_in_range",
    "session_bounds",
    "previous_session",
    "next_session",
    "session_date",
    "today_et",
    "SETTLE_DELAY",
    "is_session_finished",
    "MSG_WEEKEND",
    "MSG_HOLIDAY",
    "INTRADAY_GRACE",
    "BarsWindow",
    "closed_reason",
    "latest_finished_session",
    "default_bars_window",
    "chunk_range",
]

CALENDAR_NAME = "XNYS"
#: First date this module answers for (XNYS session times before 1985 are not NYSE's).
EARLIEST_SUPPORTED = date(1990, 1, 1)
#: Last date the calendar may be widened to on demand (rule-based projection that far out).
LATEST_SUPPORTED = date(2100, 12, 31)
#: How far past today the calendar is loaded initially, and past an out-of-range request.
_AHEAD = timedelta(days=2 * 366)

PRE_MARKET_START = time(4, 0)
AFTER_HOURS_END = time(20, 0)

DayLike: TypeAlias = date | datetime | pd.Timestamp | str

MSG_OPEN = "Market open (Regular hours)"
MSG_WEEKEND = "Market closed (Weekend)"
MSG_HOLIDAY = "Market closed (Holiday)"
MSG_AFTER_HOURS = "Market closed (After-hours)"
MSG_CLOSED = "Market closed"


# --------------------------------------------------------------------------------------
# The loaded calendar: an immutable snapshot, replaced atomically when widened
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    first: date  # covered range: every date in [first, last] is classified correctly
    last: date
    sessions: list[date]  # sorted
    ordinals: list[int]  # date.toordinal() of each session, for bisect
    bounds: dict[date, tuple[datetime, datetime]]  # session -> (open_utc, close_utc)
    early_closes: frozenset[date]
    calendar: Any  # the exchange_calendars.ExchangeCalendar it was built from

    def covers(self, day: date) -> bool:
        return self.first <= day <= self.last


_STATE: _Snapshot | None = None
_LOCK = threading.Lock()


def _real_class(cls: type) -> type:
    """The stdlib class under freezegun's ``FakeDatetime`` (a subclass), if patched."""
    while cls.__module__ != "datetime" and cls.__base__ is not None and cls.__base__ is not object:
        cls = cls.__base__
    return cls


# A real (never freezegun-patched) datetime *instance*: ``_EPOCH + timedelta`` is always a
# stdlib datetime, so values cached here or returned to callers are never ``FakeDatetime``
# (which would outlive a freeze and drops ``fold`` in ``astimezone``).
_EPOCH: datetime = _real_class(datetime)(1970, 1, 1, tzinfo=timezone.utc)


def _utc_list(series: pd.Series) -> list[datetime]:
    """Aware-UTC Python datetimes from a tz-aware datetime Series, without per-item pandas."""
    seconds = series.to_numpy(dtype="datetime64[s]").astype("int64").tolist()
    return [_EPOCH + timedelta(seconds=s) for s in seconds]


def _build(end: date) -> _Snapshot:
    with warnings.catch_warnings():
        # exchange_calendars 4.13 reads ``Series.values`` on tz-aware data, which pandas 3.1
        # deprecates; the values it gets are still right (UTC nanoseconds).
        warnings.filterwarnings("ignore", message=r"Series\.values returning an ndarray")
        cal = xc.get_calendar(CALENDAR_NAME, start=EARLIEST_SUPPORTED.isoformat(), end=end.isoformat())
    sessions: list[date] = cal.sessions.date.tolist()
    opens = _utc_list(cal.opens)
    closes = _utc_list(cal.closes)
    if not (len(sessions) == len(opens) == len(closes)):  # pragma: no cover - sanity
        raise RuntimeError("exchange_calendars returned inconsistent session data")
    return _Snapshot(
        first=EARLIEST_SUPPORTED,
        last=end,
        sessions=sessions,
        ordinals=[d.toordinal() for d in sessions],
        bounds=dict(zip(sessions, zip(opens, closes))),
        early_closes=frozenset(cal.early_closes.date.tolist()),
        calendar=cal,
    )


def _range_error(day: date, snap: _Snapshot | None = None) -> ValueError:
    covered = f"; currently loaded {snap.first} .. {snap.last}" if snap is not None else ""
    return ValueError(
        f"{day.isoformat()} is outside the supported NYSE calendar range "
        f"{EARLIEST_SUPPORTED.isoformat()} .. {LATEST_SUPPORTED.isoformat()}{covered}"
    )


def _snapshot(day: date | None = None) -> _Snapshot:
    """The loaded calendar, loading it (or a wider one) so that it covers ``day``."""
    snap = _STATE
    if snap is not None and (day is None or snap.covers(day)):
        return snap  # fast path, no lock
    if day is not None and not (EARLIEST_SUPPORTED <= day <= LATEST_SUPPORTED):
        raise _range_error(day, snap)
    return _load(day)


def _load(day: date | None) -> _Snapshot:
    global _STATE
    with _LOCK:
        snap = _STATE
        if snap is not None and (day is None or snap.covers(day)):
            return snap  # another thread loaded it meanwhile
        end = _now(None).astimezone(NY).date() + _AHEAD  # a stdlib date even under freezegun
        if snap is not None:
            end = max(end, snap.last)
        if day is not None:
            end = max(end, day + _AHEAD)
        end = max(min(end, LATEST_SUPPORTED), EARLIEST_SUPPORTED + _AHEAD)
        end = _EPOCH.date() + timedelta(days=end.toordinal() - _EPOCH.date().toordinal())  # stdlib date
        _STATE = snap = _build(end)
        return snap


def get_calendar() -> ExchangeCalendar:
    """The process-wide ``exchange_calendars`` XNYS calendar (loaded on first use).

    Use it for what this module does not wrap (minute indexes, ...). Its range is
    :func:`covered_range`; it may be replaced by a wider one when later dates are asked for.
    """
    return _snapshot().calendar


def covered_range() -> tuple[date, date]:
    """``(first, last)`` dates of the calendar currently loaded (loading it if needed).

    >>> covered_range()[0]
    datetime.date(1990, 1, 1)
    """
    snap = _snapshot()
    return snap.first, snap.last


# --------------------------------------------------------------------------------------
# Input normalisation
# --------------------------------------------------------------------------------------


def _day(day: DayLike) -> date:
    """A calendar date from a date, datetime (aware: its New York date), Timestamp or str."""
    if type(day) is date:  # fast path for the common case
        return day
    return to_date(day)


def _now(now: datetime | None) -> datetime:
    """``now`` (or the clock) as a stdlib aware-UTC datetime."""
    if isinstance(now, pd.Timestamp):
        if now is pd.NaT:
            raise ValueError("now must not be NaT")
        now = now.to_pydatetime(warn=False)
    return _EPOCH + (now_utc(now) - _EPOCH)


def _instant(ts: datetime | pd.Timestamp | str) -> datetime:
    """An aware UTC datetime from a datetime/Timestamp/ISO string; naive means UTC."""
    if isinstance(ts, str):
        text = ts.strip()
        if len(text) <= 10:
            raise ValueError(f"{ts!r} is a date, not an instant; session_date needs a time")
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"cannot read {ts!r} as an ISO datetime") from None
    if isinstance(ts, pd.Timestamp):
        if ts is pd.NaT:
            raise ValueError("cannot take the session date of NaT")
        ts = ts.to_pydatetime(warn=False)
    if not isinstance(ts, datetime):
        raise TypeError(f"expected a datetime, pandas.Timestamp or ISO string, got {type(ts).__name__}")
    return _EPOCH + (now_utc(ts) - _EPOCH)


def _fmt_et(instant: datetime) -> str:
    """``'09:30 AM'`` style New York time, independent of the process locale."""
    local = instant.astimezone(NY)
    hour = local.hour % 12 or 12
    return f"{hour:02d}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"


# --------------------------------------------------------------------------------------
# Session helpers
# --------------------------------------------------------------------------------------


def is_session(day: DayLike) -> bool:
    """Whether NYSE holds a regular session on ``day``.

    >>> is_session("2024-07-04"), is_session("2024-07-05"), is_session("2026-07-03")
    (False, True, False)
    """
    d = _day(day)
    return d in _snapshot(d).bounds


def is_early_close(day: DayLike) -> bool:
    """Whether ``day`` is a session that closes early (13:00 ET since 1993).

    >>> is_early_close("2024-12-24"), is_early_close("2024-12-23"), is_early_close("2024-12-25")
    (True, False, False)
    """
    d = _day(day)
    return d in _snapshot(d).early_closes


def session_bounds(day: DayLike) -> tuple[datetime, datetime]:
    """``(open_utc, close_utc)`` of the session on ``day``, as aware UTC datetimes.

    Raises :class:`ValueError` naming the date when ``day`` is not a session.

    >>> o, c = session_bounds("2024-03-08")   # EST: 14:30Z-21:00Z
    >>> o.isoformat(), c.isoformat()
    ('2024-03-08T14:30:00+00:00', '2024-03-08T21:00:00+00:00')
    >>> session_bounds("2024-03-11")[0].isoformat()   # EDT: 13:30Z
    '2024-03-11T13:30:00+00:00'
    """
    d = _day(day)
    try:
        return _snapshot(d).bounds[d]
    except KeyError:
        raise ValueError(f"{d.isoformat()} is not an NYSE session") from None


def sessions_in_range(start: DayLike, end: DayLike) -> list[date]:
    """Session dates from ``start`` to ``end``, both inclusive; ``[]`` when start > end.

    >>> len(sessions_in_range("2024-01-01", "2024-12-31"))
    252
    >>> [d.day for d in sessions_in_range("2025-01-06", "2025-01-10")]   # 9th closed
    [6, 7, 8, 10]
    """
    lo, hi = _day(start), _day(end)
    if lo > hi:
        return []
    if lo < EARLIEST_SUPPORTED:
        raise _range_error(lo, _STATE)
    snap = _snapshot(hi)
    i = bisect_left(snap.ordinals, lo.toordinal())
    j = bisect_right(snap.ordinals, hi.toordinal())
    return snap.sessions[i:j]


def previous_session(day: DayLike) -> date:
    """The last session strictly before ``day`` (``day`` need not be a session).

    >>> previous_session("2025-01-10"), previous_session("2024-07-05")
    (datetime.date(2025, 1, 8), datetime.date(2024, 7, 3))
    """
    d = _day(day)
    snap = _snapshot(d)
    i = bisect_left(snap.ordinals, d.toordinal())
    if i == 0:
        raise ValueError(
            f"no NYSE session before {d.isoformat()} within the supported range "
            f"(starts {EARLIEST_SUPPORTED.isoformat()})"
        )
    return snap.sessions[i - 1]


def next_session(day: DayLike) -> date:
    """The first session strictly after ``day`` (``day`` need not be a session).

    >>> next_session("2024-12-24"), next_session("2026-07-02")
    (datetime.date(2024, 12, 26), datetime.date(2026, 7, 6))
    """
    d = _day(day)
    snap = _snapshot(d)
    j = bisect_right(snap.ordinals, d.toordinal())
    if j == len(snap.sessions) and snap.last < LATEST_SUPPORTED:
        # After the last loaded session: load a calendar reaching well past ``d``.
        snap = _snapshot(min(max(d, snap.last) + timedelta(days=14), LATEST_SUPPORTED))
        j = bisect_right(snap.ordinals, d.toordinal())
    if j == len(snap.sessions):
        raise ValueError(
            f"no NYSE session after {d.isoformat()} within the supported range "
            f"(ends {LATEST_SUPPORTED.isoformat()})"
        )
    return snap.sessions[j]


def session_date(ts: datetime | pd.Timestamp | str) -> date:
    """The New York calendar date that the instant ``ts`` falls on (naive means UTC).

    >>> session_date(datetime(2025, 1, 3, 3, 0))          # 22:00 ET on Jan 2
    datetime.date(2025, 1, 2)
    >>> session_date(pd.Timestamp("2025-07-03T04:00Z"))    # 00:00 EDT
    datetime.date(2025, 7, 3)
    """
    return _instant(ts).astimezone(NY).date()


#: A session's bars count as final this long after its close (vendors' late prints; Alpaca's
#: free plan also withholds the most recent 15 minutes of SIP data).
SETTLE_DELAY = timedelta(minutes=15)


def is_session_finished(day: DayLike, now: datetime | None = None) -> bool:
    """Whether session ``day`` has closed and settled (:data:`SETTLE_DELAY`) by ``now``.

    >>> is_session_finished("2025-11-28", datetime(2025, 11, 28, 18, 14, tzinfo=timezone.utc))
    False
    """
    return _now(now) >= session_bounds(day)[1] + SETTLE_DELAY


def today_et(now: datetime | None = None) -> date:
    """Today's date in New York (from :func:`cachelib.clock.now_utc` unless ``now`` is given).

    >>> today_et(datetime(2025, 1, 3, 4, 59, tzinfo=timezone.utc))
    datetime.date(2025, 1, 2)
    """
    return _now(now).astimezone(NY).date()


# --------------------------------------------------------------------------------------
# Market status
# --------------------------------------------------------------------------------------


def is_market_hours(now: datetime | None = None) -> bool:
    """Whether the regular session is open at ``now``: ``open <= now < close``.

    >>> is_market_hours(datetime(2025, 1, 2, 14, 30)), is_market_hours(datetime(2025, 1, 2, 21, 0))
    (True, False)
    """
    instant = _now(now)
    d = instant.astimezone(NY).date()
    bounds = _snapshot(d).bounds.get(d)
    return bounds is not None and bounds[0] <= instant < bounds[1]


def get_market_status_detailed(now: datetime | None = None) -> dict[str, Any]:
    """Everything about the market at ``now``.

    Keys:

    * ``is_open`` (bool): regular session open.
    * ``session``: ``"pre-market"``, ``"regular"``, ``"after-hours"``, ``"closed"``,
      ``"weekend"`` or ``"holiday"``.
    * ``message``: the same text as :func:`get_market_status`.
    * ``date`` (date): today's New York date; ``is_trading_day`` (bool): it is a session;
      ``is_early_close`` (bool).
    * ``open`` / ``close``: today's session bounds (aware UTC) or ``None``.
    * ``next_open``: the first regular open strictly after ``now`` (today's open when
      ``now`` is before it); ``next_close``: the close of the session that is open now, or
      else of the session of ``next_open``.
    * ``current_time_et``: ``now`` as an aware America/New_York datetime; ``now_utc``.

    >>> s = get_market_status_detailed(datetime(2024, 11, 29, 18, 30, tzinfo=timezone.utc))
    >>> s["session"], s["message"], s["next_open"].isoformat()
    ('after-hours', 'Market closed (After-hours)', '2024-12-02T14:30:00+00:00')
    """
    instant = _now(now)
    local = instant.astimezone(NY)
    d = local.date()
    snap = _snapshot(d)
    bounds = snap.bounds.get(d)
    early = d in snap.early_closes
    open_utc = close_utc = None
    is_open = False

    if bounds is not None:
        open_utc, close_utc = bounds
        pre_start = datetime.combine(d, PRE_MARKET_START, tzinfo=NY)
        post_end = datetime.combine(d, AFTER_HOURS_END, tzinfo=NY)
        if open_utc <= instant < close_utc:
            is_open = True
            session = "regular"
            message = f"Market open (Early close at {_fmt_et(close_utc)} ET)" if early else MSG_OPEN
        elif pre_start <= instant < open_utc:
            session = "pre-market"
            message = f"Market closed (Pre-market, opens at {_fmt_et(open_utc)} ET)"
        elif close_utc <= instant < post_end:
            session = "after-hours"
            message = MSG_AFTER_HOURS
        else:
            session = "closed"
            message = MSG_CLOSED
    elif d.weekday() >= 5:
        session, message = "weekend", MSG_WEEKEND
    else:
        session, message = "holiday", MSG_HOLIDAY

    next_close: datetime | None
    if bounds is not None and instant < bounds[0]:
        next_open, next_close = bounds
    else:
        nxt = session_bounds(next_session(d))
        next_open = nxt[0]
        next_close = close_utc if is_open else nxt[1]

    return {
        "is_open": is_open,
        "session": session,
        "message": message,
        "date": d,
        "is_trading_day": bounds is not None,
        "is_early_close": early,
        "open": open_utc,
        "close": close_utc,
        "next_open": next_open,
        "next_close": next_close,
        "current_time_et": local,
        "now_utc": instant,
    }


def get_market_status(now: datetime | None = None) -> tuple[bool, str]:
    """``(is_open, message)`` for ``now``; see the module docstring for the messages.

    >>> get_market_status(datetime(2025, 1, 9, 15, 0))
    (False, 'Market closed (Holiday)')
    >>> get_market_status(datetime(2025, 1, 10, 13, 0))
    (False, 'Market closed (Pre-market, opens at 09:30 AM ET)')
    """
    status = get_market_status_detailed(now)
    return status["is_open"], status["message"]


# --------------------------------------------------------------------------------------
# Run decisions: which sessions a scheduled job covers
# --------------------------------------------------------------------------------------

#: Intraday ingest still runs this long after the close, so the 16:00/16:15 schedule fires
#: pick up the session's last minutes.
INTRADAY_GRACE = timedelta(minutes=30)


def closed_reason(day: DayLike) -> str | None:
    """:data:`MSG_WEEKEND` / :data:`MSG_HOLIDAY` when ``day`` is not a session, else None.

    Cron knows nothing of market holidays: a scheduled job asks this first.

    >>> closed_reason("2025-12-25"), closed_reason("2025-12-27"), closed_reason("2025-12-26")
    ('Market closed (Holiday)', 'Market closed (Weekend)', None)
    """
    d = _day(day)
    if is_session(d):
        return None
    return MSG_WEEKEND if d.weekday() >= 5 else MSG_HOLIDAY


def latest_finished_session(now: datetime | None = None) -> date:
    """Today's session once it has closed and settled, else the session before today.

    >>> latest_finished_session(datetime(2025, 11, 26, 17, 0, tzinfo=timezone.utc))
    datetime.date(2025, 11, 25)
    """
    clock = _now(now)
    today = today_et(clock)
    if is_session(today) and is_session_finished(today, clock):
        return today
    return previous_session(today)


@dataclass(frozen=True)
class BarsWindow:
    """The sessions a default bars ingest covers (``start``..``end``), or why it skips."""

    start: date | None
    end: date | None
    skip_reason: str | None = None


def default_bars_window(timeframe: str, now: datetime | None = None) -> BarsWindow:
    """The range a bars ingest covers when no ``start``/``end`` is given.

    * Intraday timeframes: today's session while it is open (and :data:`INTRADAY_GRACE` after
      the close); outside those hours it skips with the market status as the reason.
    * Daily and longer: the latest finished session; on a weekend or holiday it skips.
    """
    clock = _now(now)
    today = today_et(clock)
    reason = closed_reason(today)
    if reason is not None:
        return BarsWindow(None, None, reason)
    if parse_timeframe(timeframe).is_intraday:
        open_utc, close_utc = session_bounds(today)
        if open_utc <= clock < close_utc + INTRADAY_GRACE:
            return BarsWindow(today, today)
        return BarsWindow(None, None, get_market_status(clock)[1])
    session = latest_finished_session(clock)
    return BarsWindow(session, session)


def chunk_range(start: date, end: date, timeframe: str) -> list[tuple[date, date]]:
    """``[start, end]`` cut at calendar-quarter (intraday) or calendar-year (daily) boundaries,
    unless it is no longer than one such chunk (92 or 366 days): then it is one chunk.

    One chunk is one unit of work, so a long backfill shows progress and retries a chunk, not
    the whole range; daily bars are small enough that a year is one request for 100 symbols.
    A short range is never cut in two just because it crosses a boundary: the daily job's
    rolling year of daily bars is one chunk (one task run), not two.

    >>> chunk_range(date(2023, 12, 30), date(2024, 1, 2), "1Day")
    [(datetime.date(2023, 12, 30), datetime.date(2024, 1, 2))]
    >>> chunk_range(date(2022, 12, 30), date(2024, 1, 2), "1Day")
    [(datetime.date(2022, 12, 30), datetime.date(2022, 12, 31)), (datetime.date(2023, 1, 1), datetime.date(2023, 12, 31)), (datetime.date(2024, 1, 1), datetime.date(2024, 1, 2))]
    """
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    intraday = parse_timeframe(timeframe).is_intraday
    if (end - start).days < (92 if intraday else 366):
        return [(start, end)]
    chunks: list[tuple[date, date]] = []
    lo = start
    while lo <= end:
        if intraday:
            first_month_next = (lo.month - 1) // 3 * 3 + 4
            boundary = date(lo.year + (first_month_next > 12), (first_month_next - 1) % 12 + 1, 1)
        else:
            boundary = date(lo.year + 1, 1, 1)
        hi = min(end, boundary - timedelta(days=1))
        chunks.append((lo, hi))
        lo = hi + timedelta(days=1)
    return chunks
