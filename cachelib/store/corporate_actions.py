"""Corporate actions in the store: the ``corporate_actions`` table and its own coverage.

One row per ``(symbol, action_type, ex_date, source)`` (the model and its rules are
:mod:`cachelib.corporate_actions`). Hand-stored actions upsert; a source's answer *replaces*
what that source said before about the same symbols and days (:meth:`CorporateActionTable.replace`),
so an ex-date the vendor moved or an action it cancelled leaves no stale row that a read would
apply twice. Actions never expire: what expires is
``action_coverage``, the record of which days a source was asked about, as ranges of New York
days with the TTL of :func:`cachelib.store.ttl.action_expiry` (recent and future days 24 h,
days older than 30 days 10 years), so a sync re-asks only about days whose news may change.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from ..bars import normalize_symbol, normalize_symbols, to_date, to_utc_datetime
from ..clock import now_utc
from ..corporate_actions import ACTION_COLUMNS, actions_frame
from .dialect import maybe, where_clause
from .series import norm_source, source_rank
from .ttl import action_expiry

if TYPE_CHECKING:
    import sqlite3

    from .connection import Engine

__all__ = ["ACTION_STORE_COLUMNS", "ActionReplacement", "CorporateActionTable", "warn_if_uncovered"]

log = logging.getLogger("cachelib.store")

#: Columns of :meth:`CorporateActionTable.get`: the model's, plus when the row was fetched.
ACTION_STORE_COLUMNS: tuple[str, ...] = (*ACTION_COLUMNS, "fetched_at")
_EPOCH = date(1970, 1, 1)


def _day_number(day: date) -> int:
    return (day - _EPOCH).days


def _from_day_number(n: int) -> date:
    return _EPOCH + timedelta(days=n)


def _range(start: Any, end: Any) -> tuple[date, date]:
    """``(start, end)`` as New York dates; ``ValueError`` when reversed."""
    first, last = to_date(start, "start"), to_date(end, "end")
    if first > last:
        raise ValueError(f"start {first} is after end {last}; give start <= end")
    return first, last


def _optional(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def _gaps(covered: Iterable[tuple[int, int]], lo: int, hi: int) -> list[tuple[date, date]]:
    """The day ranges of ``[lo, hi]`` (day numbers) that no ``covered`` range (sorted by first
    day, inclusive) accounts for, as sorted, disjoint, inclusive date pairs."""
    gaps: list[tuple[date, date]] = []
    cursor = lo  # first day not yet known to be covered
    for a, b in covered:
        if a > cursor:
            gaps.append((_from_day_number(cursor), _from_day_number(a - 1)))
        cursor = max(cursor, b + 1)
        if cursor > hi:
            break
    if cursor <= hi:
        gaps.append((_from_day_number(cursor), _from_day_number(hi)))
    return gaps


def warn_if_uncovered(conn: sqlite3.Connection, symbol: str, source: str | None, first: date,
                      as_of: date) -> None:
    """Log a WARNING when an adjusted read of ``symbol`` whose bars start on ``first`` relies on
    days ``[first, as_of]`` that no source (``source``'s, when given) was ever asked about for
    corporate actions: the read cannot know whether a split or dividend is missing, so its
    prices may be raw ones. Expired coverage counts (the days were asked about; only a re-ask
    is due). A warning, not an error: hand-stored actions without coverage are legitimate.
    """
    if first > as_of:
        return  # every bar is on or after as_of: no action can apply to it
    lo, hi = _day_number(first), _day_number(as_of)
    body, params = where_clause(("source = ?", source))
    covered = conn.execute(
        f"SELECT first_day, last_day FROM action_coverage WHERE symbol = ? AND {body} "
        "AND first_day <= ? AND last_day >= ? ORDER BY first_day",
        [symbol, *params, hi, lo],
    ).fetchall()
    gaps = _gaps(covered, lo, hi)
    if gaps:
        a, b = gaps[0][0].isoformat(), gaps[-1][1].isoformat()
        by = "any source" if source is None else f"source {source!r}"
        log.warning(
            "adjusted read of %s: no corporate actions were synced from %s for %s .. %s, so a split "
            "or dividend there is unknown and these prices may be unadjusted; run "
            "sync_corporate_actions(cache, source, [%r], %r, %r) first",
            symbol, by, a, b, symbol, a, b,
        )


def empty_actions() -> pd.DataFrame:
    """The answer of :meth:`CorporateActionTable.get` when nothing matches."""
    frame = actions_frame([])
    frame["fetched_at"] = pd.Series([], dtype="datetime64[s, UTC]")
    return frame


class ActionReplacement(NamedTuple):
    """What :meth:`CorporateActionTable.replace` did: stored rows the new answer no longer
    holds (``removed``: cancelled, or moved to another date or type) and rows ``written``."""

    removed: int
    written: int


class CorporateActionTable:
    """The ``corporate_actions`` and ``action_coverage`` tables; the manager delegates here."""

    def __init__(self, db: Engine) -> None:
        self._db = db

    # -- actions ------------------------------------------------------------------------

    def store(self, frame: pd.DataFrame | Iterable[Mapping[str, Any]], source: str | None,
              fetched_at: Any) -> int:
        """Upsert ``frame``'s actions; returns the rows written."""
        records = self._records(frame, source, fetched_at)
        if records:
            with self._db.atomic() as conn:
                conn.executemany(self._db.dialect.replace_into("corporate_actions", 8), records)
        return len(records)

    def replace(self, symbols: str | Iterable[str], start: Any, end: Any,
                frame: pd.DataFrame | Iterable[Mapping[str, Any]], source: str,
                fetched_at: Any = None) -> ActionReplacement:
        """Store ``frame`` as ``source``'s whole answer about ``symbols`` over ``[start, end]``.

        The source's answer is authoritative for what it was asked: in one transaction, delete
        ``source``'s stored actions filed under ``symbols`` (the old symbol, for a name change)
        with ex-date (effective date) in ``[start, end]``, then upsert ``frame``. Other
        sources' rows, other days and other symbols are left alone; rows of ``frame`` outside
        the question are upserted as :meth:`store` would.
        """
        syms = normalize_symbols(symbols)
        first, last = _range(start, end)
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"replace needs the source whose answer this is, got {source!r}")
        src = norm_source(source)
        records = self._records(frame, src, fetched_at)  # validated before anything is deleted
        # ex_date is stored as ISO text, so BETWEEN on the strings is BETWEEN on the dates.
        scope = (f"FROM corporate_actions WHERE source = ? AND symbol IN ({','.join('?' * len(syms))}) "
                 "AND ex_date BETWEEN ? AND ?")
        params = [src, *syms, first.isoformat(), last.isoformat()]
        new_keys = {r[:3] for r in records}
        with self._db.atomic() as conn:
            self._db.lock(conn, [("actions", src, s) for s in syms])
            old_keys = {tuple(r) for r in conn.execute(f"SELECT symbol, action_type, ex_date {scope}", params)}
            conn.execute(f"DELETE {scope}", params)
            if records:
                conn.executemany(self._db.dialect.replace_into("corporate_actions", 8), records)
        return ActionReplacement(len(old_keys - new_keys), len(records))

    def _records(self, frame: pd.DataFrame | Iterable[Mapping[str, Any]], source: str | None,
                 fetched_at: Any) -> list[tuple[Any, ...]]:
        """``frame``'s actions as ``corporate_actions`` rows, every rule of the model checked."""
        if isinstance(frame, pd.DataFrame):
            extra = [c for c in frame.columns if c not in (*ACTION_COLUMNS, "fetched_at")]
            if extra:
                raise ValueError(f"corporate actions frame has unknown column(s) {extra}; "
                                 f"the columns are {list(ACTION_COLUMNS)}")
            rows = frame.drop(columns=["fetched_at"], errors="ignore").to_dict("records")
        elif isinstance(frame, str | bytes | Mapping) or not isinstance(frame, Iterable):
            raise ValueError("corporate actions must be a DataFrame or rows (mappings), got "
                             f"{type(frame).__name__}")
        else:
            rows = list(frame)
        if source is not None:
            src = norm_source(source)
            filled = []
            for row in rows:
                if not isinstance(row, Mapping):
                    raise ValueError(f"a corporate action must be a mapping, got {type(row).__name__}")
                given = row.get("source")
                if isinstance(given, str) and given.strip() and norm_source(given) != src:
                    raise ValueError(f"corporate action of {row.get('symbol')!r} says source "
                                     f"{given!r}, but source={source!r} was given; drop one")
                filled.append({**row, "source": src})
            rows = filled
        model = actions_frame(rows)  # every rule of an action, in one place
        fetched = now_utc() if fetched_at is None else to_utc_datetime(fetched_at, "fetched_at")
        fetched_s = int(fetched.timestamp())
        return [
            (sym, kind, ex.isoformat(), _optional(ratio), _optional(amount), new, norm_source(src), fetched_s)
            for sym, kind, ex, ratio, amount, new, src in zip(
                model["symbol"], model["action_type"], model["ex_date"], model["ratio"].tolist(),
                model["amount"].tolist(), model["new_symbol"], model["source"], strict=True)
        ]

    def get(self, symbol: str, start: Any, end: Any, source: str | None) -> pd.DataFrame:
        sym = normalize_symbol(symbol)
        first = None if start is None else to_date(start, "start")
        last = None if end is None else to_date(end, "end")
        if first is not None and last is not None and first > last:
            raise ValueError(f"start {first} is after end {last}; give start <= end")
        body, params = where_clause(
            ("ex_date >= ?", maybe(date.isoformat, first)),
            ("ex_date <= ?", maybe(date.isoformat, last)),
            ("source = ?", maybe(norm_source, source)),
        )
        # A name change is filed under the old symbol; the new symbol's history shows it too.
        rows = self._db.conn.execute(
            "SELECT symbol, action_type, ex_date, ratio, amount, new_symbol, source, fetched_at "
            f"FROM corporate_actions WHERE (symbol = ? OR new_symbol = ?) AND {body}",
            [sym, sym, *params],
        ).fetchall()
        if not rows:
            return empty_actions()
        if source is None:
            # One row per action: the highest-priority source's (as for bars).
            rows.sort(key=lambda r: source_rank(r[6]))
            seen: set[tuple[str, str, str]] = set()
            kept = []
            for r in rows:
                if (r[0], r[1], r[2]) not in seen:
                    seen.add((r[0], r[1], r[2]))
                    kept.append(r)
            rows = kept
        model = actions_frame([dict(zip(ACTION_COLUMNS, r[:7], strict=True)) for r in rows])
        fetched = {(r[0], r[1], r[2]): r[7] for r in rows}
        model["fetched_at"] = pd.to_datetime(
            [fetched[(s, k, e.isoformat())] for s, k, e in zip(model["symbol"], model["action_type"],
                                                               model["ex_date"], strict=True)],
            unit="s", utc=True,
        ).as_unit("s")
        return model

    def count(self) -> int:
        return int(self._db.conn.execute("SELECT COUNT(*) FROM corporate_actions").fetchone()[0])

    # -- coverage -----------------------------------------------------------------------

    def record_coverage(self, symbols: str | Iterable[str], start: Any, end: Any, source: str,
                        now: datetime | None = None) -> int:
        """Record that ``source`` was asked about ``symbols`` over ``[start, end]``; returns
        the ranges written (one or two per symbol: settled and recent days expire apart)."""
        syms = normalize_symbols(symbols)
        first, last = _range(start, end)
        src = norm_source(source)
        clock = now_utc(now)
        now_s = int(clock.timestamp())
        pieces = action_expiry(first, last, clock)
        records = [
            (sym, src, _day_number(a), _day_number(b), now_s, expires)
            for sym in syms for a, b, expires in pieces
        ]
        if records:
            with self._db.atomic() as conn:
                conn.executemany(self._db.dialect.replace_into("action_coverage", 6), records)
        return len(records)

    def missing(self, symbols: str | Iterable[str], start: Any, end: Any,
                source: str) -> dict[str, list[tuple[date, date]]]:
        """Per symbol, the day ranges in ``[start, end]`` no valid coverage accounts for
        (sorted, disjoint, both ends inclusive); ``[]`` when fully covered."""
        syms = normalize_symbols(symbols)
        first, last = _range(start, end)
        src = norm_source(source)
        lo, hi = _day_number(first), _day_number(last)
        covered: dict[str, list[tuple[int, int]]] = {s: [] for s in syms}
        if syms:
            marks = ",".join("?" * len(syms))
            for sym, a, b in self._db.conn.execute(
                f"SELECT symbol, first_day, last_day FROM action_coverage WHERE symbol IN ({marks}) "
                "AND source = ? AND expires_at > ? AND first_day <= ? AND last_day >= ? "
                "ORDER BY symbol, first_day",
                [*syms, src, int(now_utc().timestamp()), hi, lo],
            ):
                covered[sym].append((a, b))
        return {sym: _gaps(covered[sym], lo, hi) for sym in syms}  # sorted by first_day
