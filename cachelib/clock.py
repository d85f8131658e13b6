"""The one clock of the project.

Every piece of cachelib that needs "now" calls :func:`now_utc`. It reads
``datetime.now(timezone.utc)`` so that freezegun controls it in tests
(``pandas.Timestamp.now()`` is *not* frozen by freezegun), and it accepts an
explicit ``now`` so callers can inject a time instead.
"""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["now_utc", "as_utc"]


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime. A naive datetime means UTC."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    tz = value.tzinfo
    if tz is timezone.utc:  # the common case on hot paths: nothing to do
        return value
    if tz is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def now_utc(now: datetime | None = None) -> datetime:
    """The current instant as an aware UTC datetime, or ``now`` normalised to UTC.

    >>> now_utc(datetime(2025, 1, 2, 15, 0)).isoformat()
    '2025-01-02T15:00:00+00:00'
    """
    if now is None:
        return datetime.now(timezone.utc)
    return as_utc(now)
