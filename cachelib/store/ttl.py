"""The TTL rules: when bars, coverage records, option snapshots and corporate-action coverage
expire, and their cleanup.

Bars: age = today's New York date − the bar's session date, in calendar days; age ≥
:data:`RECENT_AGE_DAYS` (2) → the row expires in 10 years (:data:`HISTORICAL_TTL`), otherwise
in 24 hours (:data:`RECENT_TTL`). ``ttl_hours`` overrides it for every row of a call (``0`` =
already expired). Expiry is an integer UTC epoch; "now" is read once per call from
:func:`cachelib.clock.now_utc`.

Intraday chunks: expiry is per (series, session) chunk, not per bar. A write that replaces
every bar of a live chunk, or writes into an expired or absent one, gives the chunk the
write's expiry (so ``ttl_hours=0`` over a whole session expires it). A write that leaves
earlier live bars in place never shortens their expiry: the chunk keeps the later of its old
expiry and the write's. So ``ttl_hours=0`` on part of a live session does not expire the
rest, and the bars written live as long as their session's chunk. A write into an expired
chunk drops its old bars (they were already invisible).

Corporate-action coverage (:func:`action_expiry`): announcements arrive *before* the ex-date
and vendors correct recent ones, so what a source said about a day can still change until
well after it. Days with age ≥ :data:`ACTION_SETTLED_AGE_DAYS` (30) keep 10 years; recent days
and every future day expire after 24 hours, so a re-sync asks again for them only.
The actions themselves never expire (a re-sync upserts them).
"""

from __future__ import annotations

import math
import numbers
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import market_hours
from ..bars import NY
from ..clock import now_utc

if TYPE_CHECKING:
    from .connection import Engine

__all__ = ["ACTION_SETTLED_AGE_DAYS", "HISTORICAL_TTL", "MAX_TTL_HOURS", "RECENT_AGE_DAYS", "RECENT_TTL",
           "action_expiry", "check_ttl_hours", "ttl_expiry"]

HISTORICAL_TTL = timedelta(days=3652)  # "10 years"
RECENT_TTL = timedelta(hours=24)
RECENT_AGE_DAYS = 2  # age >= 2 calendar days (New York) is historical
#: Corporate-action coverage of a day settles when the day is this many calendar days old.
ACTION_SETTLED_AGE_DAYS = 30
#: The longest ``ttl_hours`` accepted: 100 years (the default for history is 10 years).
MAX_TTL_HOURS = 100 * 8766
DAY = 86_400
_EPOCH = date(1970, 1, 1)
#: The tables whose rows expire (each has an integer ``expires_at``); ``bar_chunks`` expire
#: too, counted in bars (see :func:`cleanup_expired`).
EXPIRING_TABLES = ("bars", "coverage", "raw_options_chain", "raw_options_history", "action_coverage")


def check_ttl_hours(ttl_hours: Any) -> float:
    """``ttl_hours`` as a float in ``0..MAX_TTL_HOURS``; ``ValueError`` naming it otherwise
    (bools, strings, NaN, infinity, negative or absurdly large values such as 1e300, which
    would overflow the integer expiry)."""
    if isinstance(ttl_hours, (bool, np.bool_)) or not isinstance(ttl_hours, numbers.Real):
        raise ValueError(
            f"ttl_hours must be a number of hours (0 to {MAX_TTL_HOURS}), got {type(ttl_hours).__name__} "
            f"{ttl_hours!r}"
        )
    ttl = float(ttl_hours)
    if not (math.isfinite(ttl) and 0 <= ttl <= MAX_TTL_HOURS):
        raise ValueError(f"ttl_hours must be a number of hours from 0 to {MAX_TTL_HOURS} (100 years), got {ttl_hours!r}")
    return ttl


def ttl_expiry(session_days: np.ndarray, now: datetime, ttl_hours: float | None = None) -> np.ndarray:
    """Expiry instants (epoch seconds, UTC) for bars of the given session dates.

    ``session_days`` are day numbers since 1970-01-01 (``date.toordinal() - 719163``).
    The age rule uses today's *New York* date, whatever the machine's ``TZ``.
    """
    now_s = int(now.timestamp())
    if ttl_hours is not None:
        ttl = check_ttl_hours(ttl_hours)
        return np.full(len(session_days), now_s + int(ttl * 3600), dtype=np.int64)
    today = market_hours.today_et(now)
    today_n = (today - _EPOCH).days
    age = today_n - np.asarray(session_days, dtype=np.int64)
    return np.where(
        age >= RECENT_AGE_DAYS,
        now_s + int(HISTORICAL_TTL.total_seconds()),
        now_s + int(RECENT_TTL.total_seconds()),
    ).astype(np.int64)


def action_expiry(first_day: date, last_day: date, now: datetime) -> list[tuple[date, date, int]]:
    """Corporate-action coverage of ``[first_day, last_day]`` cut by the action TTL rule:
    ``(first, last, expires_at)`` pieces, settled days (age ≥ :data:`ACTION_SETTLED_AGE_DAYS`)
    expiring in 10 years, recent and future days in 24 hours. Empty for a reversed range.

    >>> now = datetime(2024, 6, 20, 16, tzinfo=UTC)
    >>> [(a.isoformat(), b.isoformat()) for a, b, _ in action_expiry(date(2024, 5, 1), date(2024, 7, 1), now)]
    [('2024-05-01', '2024-05-21'), ('2024-05-22', '2024-07-01')]
    """
    now_s = int(now.timestamp())
    last_settled = market_hours.today_et(now) - timedelta(days=ACTION_SETTLED_AGE_DAYS)
    pieces: list[tuple[date, date, int]] = []
    if first_day <= min(last_day, last_settled):
        pieces.append((first_day, min(last_day, last_settled), now_s + int(HISTORICAL_TTL.total_seconds())))
    recent_first = max(first_day, last_settled + timedelta(days=1))
    if recent_first <= last_day:
        pieces.append((recent_first, last_day, now_s + int(RECENT_TTL.total_seconds())))
    return pieces


def session_days_of_keys(keys: np.ndarray, intraday: bool) -> np.ndarray:
    """New York session day numbers of bar keys."""
    if not intraday:
        return keys // DAY
    idx = pd.DatetimeIndex(pd.to_datetime(keys, unit="s", utc=True)).tz_convert(NY).tz_localize(None)
    return idx.as_unit("s").asi8 // DAY


def session_day_of_key(key: int, intraday: bool) -> int:
    """Day number of the New York session date one bar key belongs to."""
    if not intraday:
        return key // DAY
    # Python's datetime, not pandas': valid for every key, KEY_MIN and KEY_MAX included.
    when = datetime.fromtimestamp(key, UTC).astimezone(NY)
    return (when.date() - _EPOCH).days


def cleanup_expired(db: Engine) -> int:
    """Remove expired rows from every table that expires, in one transaction; returns rows."""
    now_s = int(now_utc().timestamp())
    with db.atomic() as conn:
        # An expired intraday chunk removes its bars (the count is of bars, as for rows).
        removed = conn.execute(
            "SELECT COALESCE(SUM(n_bars), 0) FROM bar_chunks WHERE expires_at <= ?", (now_s,)
        ).fetchone()[0]
        conn.execute("DELETE FROM bar_chunks WHERE expires_at <= ?", (now_s,))
        for table in EXPIRING_TABLES:
            removed += conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now_s,)).rowcount
    return removed
