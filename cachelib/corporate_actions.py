"""Corporate actions: the one model of a split, dividend or symbol change, and the read-time
adjustment of raw bars by them.

The cache stores raw (unadjusted) bars only; prices as a user saw them adjusted on a given
day are derived at read time from the actions known with ``ex_date <= as_of``. This module is
pure (numpy/pandas, plus the NYSE calendar for "the session before the ex-date"): the store
fetches the actions and the raw closes of :func:`needed_closes` (one small query), then calls
:func:`key_factors` and :func:`adjust_block` on the decoded block (in place, the fast path) or
:func:`bar_factors` and :func:`adjust_bars` on a frame.

The model: one row per action, columns :data:`ACTION_COLUMNS`, built and checked by
:func:`actions_frame`.

* ``ratio``: splits, shares after / shares before (forward 4:1 -> 4.0, reverse 1:10 -> 0.1,
  Alpaca's ``new_rate / old_rate``); a stock dividend is a split of ``1 + rate`` (5 % -> 1.05);
  NaN for other types.
* ``amount``: cash dividend per share (Alpaca's ``rate``) in the currency *and share basis of
  its ex-date*; NaN otherwise.
* ``name_change``: ``symbol`` is the old symbol, ``new_symbol`` the new one, ``ex_date`` the
  date the new symbol takes effect.

The method (also in the README):

* split-like actions (forward/reverse splits, stock dividends): a bar of session ``d`` has its
  prices divided by the product of the ratios of the actions with ``d < ex_date <= as_of`` and
  its volume multiplied by it (``trade_count`` unchanged; ``vwap`` is a price);
* cash dividends: prices of those bars are multiplied by ``1 - D / C``, with ``C`` the raw close
  of the session before the ex-date (the CRSP convention). ``D`` and ``C`` are in the same share
  basis, so the factor needs no split correction and ``"all"`` is the product of both kinds.

Spin-offs, mergers, rights and unit splits are not modelled (their value transfer needs a
price of another security); name changes are not price adjustments (:func:`symbol_history`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from . import market_hours
from .bars import BAR_COLUMNS, NY, check_number, normalize_symbol, to_date

__all__ = [
    "ACTION_TYPES",
    "ACTION_COLUMNS",
    "SPLIT_TYPES",
    "ADJUSTMENTS",
    "MissingClosesError",
    "actions_frame",
    "ActionRows",
    "check_adjustment",
    "needed_closes",
    "price_volume_factors",
    "bar_factors",
    "key_factors",
    "key_factor_runs",
    "adjust_block",
    "adjust_block_runs",
    "adjust_bars",
    "adjusted_bars",
    "symbol_history",
]

ACTION_TYPES: tuple[str, ...] = (
    "forward_split", "reverse_split", "cash_dividend", "stock_dividend", "name_change",
)
ACTION_COLUMNS: tuple[str, ...] = (
    "symbol", "action_type", "ex_date", "ratio", "amount", "new_symbol", "source",
)
#: Actions that change the number of shares: prices divide by ``ratio``, volume multiplies.
SPLIT_TYPES: tuple[str, ...] = ("forward_split", "reverse_split", "stock_dividend")
#: What a read can apply: nothing, split-like actions, cash dividends, or both.
ADJUSTMENTS: tuple[str, ...] = ("raw", "split", "dividend", "all")

#: Bounds on a split ratio: a 1:1,000,000 reverse split is already far past any real one, and
#: the bound keeps a product of many ratios finite.
MIN_RATIO, MAX_RATIO = 1e-6, 1e6
MAX_SOURCE_LENGTH = 100


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


def _is_missing(value: object) -> bool:
    """``None``, NaN, NaT, ``pd.NA`` or an empty string: no value given."""
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def _row_label(row: Mapping[str, Any]) -> str:
    """``"AAPL forward_split 2020-08-31"``-style label for error messages (best effort)."""
    parts = [str(row.get(k, "?"))[:40] for k in ("symbol", "action_type", "ex_date")]
    return " ".join(parts)


def _ratio(row: Mapping[str, Any], kind: str, label: str) -> float:
    value = row.get("ratio")
    if kind not in SPLIT_TYPES:
        if not _is_missing(value):
            raise ValueError(f"corporate action {label}: ratio is only for splits and stock "
                             f"dividends, got {value!r}; leave it empty")
        return math.nan
    if _is_missing(value):
        raise ValueError(f"corporate action {label}: ratio is missing; give shares after / "
                         "shares before (forward 4:1 -> 4.0, reverse 1:10 -> 0.1)")
    ratio = check_number(value, f"corporate action {label}: ratio")
    if not MIN_RATIO <= ratio <= MAX_RATIO:
        raise ValueError(f"corporate action {label}: ratio {ratio!r} is outside "
                         f"[{MIN_RATIO:g}, {MAX_RATIO:g}] (shares after / shares before)")
    # The type and the direction must agree: a "forward" split that shrinks the share count
    # is a vendor error or a swapped new_rate/old_rate, and would adjust the wrong way.
    if kind == "reverse_split" and ratio >= 1 or kind != "reverse_split" and ratio <= 1:
        want = "below 1 (1:10 -> 0.1)" if kind == "reverse_split" else "above 1 (4:1 -> 4.0)"
        raise ValueError(f"corporate action {label}: a {kind} needs a ratio {want}, got {ratio!r}")
    return ratio


def _amount(row: Mapping[str, Any], kind: str, label: str) -> float:
    value = row.get("amount")
    if kind != "cash_dividend":
        if not _is_missing(value):
            raise ValueError(f"corporate action {label}: amount is only for cash dividends, "
                             f"got {value!r}; leave it empty")
        return math.nan
    if _is_missing(value):
        raise ValueError(f"corporate action {label}: amount (cash per share) is missing")
    amount = check_number(value, f"corporate action {label}: amount")
    if amount <= 0:
        raise ValueError(f"corporate action {label}: amount must be a positive cash amount "
                         f"per share, got {amount!r}")
    return amount


def _new_symbol(row: Mapping[str, Any], kind: str, symbol: str, label: str) -> str | None:
    value = row.get("new_symbol")
    if kind != "name_change":
        if not _is_missing(value):
            raise ValueError(f"corporate action {label}: new_symbol is only for name changes, "
                             f"got {value!r}; leave it empty")
        return None
    if _is_missing(value):
        raise ValueError(f"corporate action {label}: new_symbol is missing for a name change")
    new = normalize_symbol(value)  # type: ignore[arg-type]  # checked there, with a clear error
    if new == symbol:
        raise ValueError(f"corporate action {label}: a name change to the same symbol {new!r}")
    return new


def _source(row: Mapping[str, Any], label: str) -> str:
    value = row.get("source")
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"corporate action {label}: source must name where the action came "
                         f"from (e.g. 'alpaca'), got {value!r}")
    if len(value) > MAX_SOURCE_LENGTH or not value.isprintable():
        raise ValueError(f"corporate action {label}: source {value[:40]!r}... must be printable "
                         f"and at most {MAX_SOURCE_LENGTH} characters")
    return value.strip()


def actions_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Validate corporate-action rows and build the one frame every layer uses.

    Columns :data:`ACTION_COLUMNS`; ``ex_date`` holds ``datetime.date`` values; sorted by
    symbol, ex_date, action_type. ``ValueError`` naming the row and field for anything wrong:
    unknown keys or type, a ratio for a dividend, a forward split below 1, a duplicate
    ``(symbol, action_type, ex_date)``.

    >>> frame = actions_frame([{"symbol": "nvda", "action_type": "forward_split",
    ...                         "ex_date": "2024-06-10", "ratio": 10, "source": "alpaca"}])
    >>> frame.symbol[0], frame.ex_date[0], float(frame.ratio[0])
    ('NVDA', datetime.date(2024, 6, 10), 10.0)
    """
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    elif isinstance(rows, str | bytes | Mapping):
        raise ValueError("actions_frame takes rows (an iterable of mappings), not one "
                         f"{type(rows).__name__}")
    allowed = set(ACTION_COLUMNS)
    records: list[tuple[Any, ...]] = []
    seen: set[tuple[str, str, date]] = set()
    for row in rows:
        if not isinstance(row, Mapping):
            raise ValueError(f"a corporate action must be a mapping of {list(ACTION_COLUMNS)}, "
                             f"got {type(row).__name__}")
        label = _row_label(row)
        extra = set(row) - allowed
        if extra:
            raise ValueError(f"corporate action {label}: unknown field(s) "
                             f"{sorted(map(str, extra))}; the fields are {list(ACTION_COLUMNS)}")
        kind = row.get("action_type")
        if kind not in ACTION_TYPES:
            raise ValueError(f"corporate action {label}: action_type must be one of "
                             f"{list(ACTION_TYPES)}, got {kind!r}")
        assert isinstance(kind, str)
        symbol = normalize_symbol(row.get("symbol"))  # type: ignore[arg-type]
        label = f"{symbol} {kind} {str(row.get('ex_date'))[:40]}"
        ex_date = to_date(row.get("ex_date"), f"corporate action {label}: ex_date")
        key = (symbol, kind, ex_date)
        if key in seen:
            raise ValueError(f"corporate action {label}: listed twice (one row per symbol, "
                             "action_type and ex_date)")
        seen.add(key)
        records.append((symbol, kind, ex_date, _ratio(row, kind, label), _amount(row, kind, label),
                        _new_symbol(row, kind, symbol, label), _source(row, label)))
    records.sort(key=lambda r: (r[0], r[2], r[1]))
    # Explicit dtypes: float64 numbers, object elsewhere (pandas 3 would infer its ``str``
    # dtype and turn a missing new_symbol into NaN instead of None).
    columns = list(zip(*records)) if records else [()] * len(ACTION_COLUMNS)
    return pd.DataFrame({
        name: pd.Series(values, dtype="float64" if name in ("ratio", "amount") else object)
        for name, values in zip(ACTION_COLUMNS, columns)
    })


# --------------------------------------------------------------------------------------
# Adjustment factors
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionRows:
    """One symbol's actions as plain ``(action_type, ex_date, ratio, amount)`` rows, the fields
    of :func:`actions_frame` (``ex_date`` a ``datetime.date``, NaN where a field does not
    apply), trusted as already checked there. What the store hands the factor functions on
    every adjusted read: building a frame per read would cost more than the adjustment."""

    rows: list[tuple[str, date, float, float]]


#: What the factor functions take: a frame from :func:`actions_frame` or one symbol's rows.
Actions: TypeAlias = pd.DataFrame | ActionRows


class MissingClosesError(ValueError):
    """Dividend factors need raw closes that were not given: ``sessions`` lists them (the
    sessions before the ex-dates, as from :func:`needed_closes`), so the caller can read or
    fetch them in one query and retry."""

    def __init__(self, sessions: list[date]) -> None:
        self.sessions = sessions
        shown = ", ".join(d.isoformat() for d in sessions[:10])
        more = f" and {len(sessions) - 10} more" if len(sessions) > 10 else ""
        super().__init__(
            f"dividend adjustment needs the raw close of session(s) {shown}{more} (the session "
            "before each ex-date); cache those daily bars or pass them in prev_close"
        )


def check_adjustment(adjustment: object) -> str:
    """``adjustment`` as one of :data:`ADJUSTMENTS`; ``ValueError`` otherwise (alpaca-py's
    ``Adjustment`` enum, a ``str`` subclass, is accepted by value)."""
    if isinstance(adjustment, str) and adjustment in ADJUSTMENTS:
        return ADJUSTMENTS[ADJUSTMENTS.index(adjustment)]
    raise ValueError(f"adjustment must be one of {list(ADJUSTMENTS)}, got {adjustment!r}")


def _as_of(as_of: object) -> date:
    """The date of ``as_of`` (a date, ISO string or datetime; aware means its New York date)."""
    return to_date(as_of, "as_of")


def _applicable(actions: Actions, adjustment: str, as_of: date,
                ) -> tuple[list[tuple[date, float]], list[tuple[date, float]]]:
    """``(splits, dividends)`` as ``(ex_date, ratio or amount)`` pairs: the split-like and
    cash-dividend rows that ``adjustment`` applies as of ``as_of``. Plain lists: a read calls
    this every time, and a few dozen rows are cheaper in Python than through pandas masks."""
    wanted = (SPLIT_TYPES if adjustment in ("split", "all") else ()) + (
        ("cash_dividend",) if adjustment in ("dividend", "all") else ())
    names: list[str] = []  # per row, its symbol (none for ActionRows: one symbol by construction)
    if isinstance(actions, ActionRows):
        rows: Iterable[tuple[str, date, float, float]] = actions.rows
    elif isinstance(actions, pd.DataFrame):
        missing = [c for c in ("symbol", "action_type", "ex_date", "ratio", "amount") if c not in actions]
        if missing:
            raise ValueError(f"actions lacks column(s) {missing}; build it with actions_frame()")
        names = actions["symbol"].tolist()
        rows = zip(actions["action_type"].tolist(), actions["ex_date"].tolist(), actions["ratio"].tolist(),
                   actions["amount"].tolist())
    else:
        raise ValueError(f"actions must be a DataFrame from actions_frame(), got {type(actions).__name__}")
    splits: list[tuple[date, float]] = []
    dividends: list[tuple[date, float]] = []
    symbols: set[str] = set()
    for i, (kind, ex_date, ratio, amount) in enumerate(rows):
        if kind in wanted and ex_date <= as_of:
            if names:
                symbols.add(names[i])
            if kind == "cash_dividend":
                dividends.append((ex_date, float(amount)))
            else:
                splits.append((ex_date, float(ratio)))
    if len(symbols) > 1:
        raise ValueError(f"actions of one symbol adjust its bars, got {sorted(symbols)}; "
                         "select the symbol's rows first")
    return splits, dividends


def needed_closes(actions: Actions, as_of: date, adjustment: str = "all",
                  since: date | None = None,
                  previous_session: Callable[[date], date] | None = None) -> list[date]:
    """The sessions whose raw close the dividend factors need: the session before each
    cash dividend's ex-date, for ``ex_date <= as_of`` (and ``ex_date > since``, the first
    session read: older dividends adjust no bar of the read). Sorted, no duplicates; empty for
    ``"raw"`` and ``"split"``.

    >>> rows = [{"symbol": "AAPL", "action_type": "cash_dividend", "ex_date": "2024-08-12",
    ...          "amount": 0.25, "source": "alpaca"}]
    >>> needed_closes(actions_frame(rows), date(2024, 8, 12))
    [datetime.date(2024, 8, 9)]
    """
    adjustment, as_of = check_adjustment(adjustment), _as_of(as_of)
    _, dividends = _applicable(actions, adjustment, as_of)
    before = previous_session or market_hours.previous_session
    first = None if since is None else _as_of(since)
    days = [d for d, _ in dividends if first is None or d > first]
    return sorted({before(d) for d in days})


def _event_factors(actions: Actions, adjustment: str, as_of: date,
                   prev_close: Mapping[date, float], first_day: date | None,
                   previous_session: Callable[[date], date] | None,
                   ) -> tuple[list[date], np.ndarray, np.ndarray]:
    """``(ex_dates, price, volume)``: the sorted distinct ex-dates that adjust some bar, and the
    price and volume multipliers each one applies to the bars before it."""
    splits, dividends = _applicable(actions, check_adjustment(adjustment), as_of)
    if first_day is None:  # no bars: nothing to adjust, no close needed
        return [], np.ones(0), np.ones(0)
    price: dict[date, float] = {}
    volume: dict[date, float] = {}
    for ex_date, ratio in splits:
        if ex_date > first_day:
            if not (math.isfinite(ratio) and MIN_RATIO <= ratio <= MAX_RATIO):
                raise ValueError(f"split ratio {ratio!r} on {ex_date} is not a positive number; "
                                 "build actions with actions_frame()")
            price[ex_date] = price.get(ex_date, 1.0) / ratio
            volume[ex_date] = volume.get(ex_date, 1.0) * ratio
    before = previous_session or market_hours.previous_session
    missing: list[date] = []
    for ex_date, amount in dividends:
        if ex_date <= first_day:
            continue
        session = before(ex_date)
        close = prev_close.get(session)
        if close is None or (isinstance(close, float) and math.isnan(close)):
            missing.append(session)
            continue
        if type(close) is not float or not math.isfinite(close):  # the common case is cheap
            label = f"cash dividend {amount!r} ex {ex_date.isoformat()}"
            close = check_number(close, f"raw close of {session.isoformat()} (for the {label})")
        if not (math.isfinite(amount) and amount > 0):
            raise ValueError(f"cash dividend {amount!r} ex {ex_date.isoformat()}: the amount must "
                             "be a positive number")
        if close <= 0 or amount >= close:
            label = f"cash dividend {amount!r} ex {ex_date.isoformat()}"
            raise ValueError(f"{label}: the dividend must be below the raw close of the session "
                             f"before ({session.isoformat()}: {close!r}); check the amount's share "
                             "basis and the close")
        price[ex_date] = price.get(ex_date, 1.0) * (1.0 - amount / close)
    if missing:
        raise MissingClosesError(sorted(set(missing)))
    ex_dates = sorted(price)
    return (ex_dates, np.array([price[d] for d in ex_dates], dtype="float64"),
            np.array([volume.get(d, 1.0) for d in ex_dates], dtype="float64"))


def _lookup(boundaries: np.ndarray, points: np.ndarray, price: np.ndarray,
            volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point, the products of the event factors whose boundary lies after it: a suffix
    cumulative product over the sorted events, indexed by ``searchsorted``."""
    n = len(boundaries)
    if n == 0:
        return np.ones(len(points)), np.ones(len(points))
    later_price, later_volume = np.ones(n + 1), np.ones(n + 1)
    later_price[:n] = np.cumprod(price[::-1])[::-1]
    later_volume[:n] = np.cumprod(volume[::-1])[::-1]
    if len(points) > 64 and _is_sorted(points):
        # Bars in time order (every read): cut the bars at the few boundaries and repeat each
        # run's factor, instead of searching every bar among the boundaries.
        runs = np.diff(np.searchsorted(points, boundaries, side="left"), prepend=0, append=len(points))
        return np.repeat(later_price, runs), np.repeat(later_volume, runs)
    first_later = np.searchsorted(boundaries, points, side="right")
    return later_price[first_later], later_volume[first_later]


def _is_sorted(values: np.ndarray) -> bool:
    return bool((values[1:] >= values[:-1]).all())


def price_volume_factors(session_days: np.ndarray, actions: Actions, adjustment: str,
                         as_of: date, prev_close: Mapping[date, float],
                         previous_session: Callable[[date], date] | None = None,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Price and volume multipliers for bars of the given New York session dates.

    ``session_days`` is a ``datetime64`` array (any order); ``actions`` one symbol's rows from
    :func:`actions_frame`; ``prev_close`` maps the sessions of :func:`needed_closes` to raw
    closes (:class:`MissingClosesError` lists any that are needed but absent);
    ``previous_session`` defaults to the NYSE calendar's.

    >>> rows = [{"symbol": "NVDA", "action_type": "forward_split", "ex_date": "2024-06-10",
    ...          "ratio": 10.0, "source": "alpaca"}]
    >>> days = np.array(["2024-06-07", "2024-06-10"], dtype="datetime64[D]")
    >>> p, v = price_volume_factors(days, actions_frame(rows), "split", date(2024, 6, 10), {})
    >>> p.tolist(), v.tolist()
    ([0.1, 1.0], [10.0, 1.0])
    """
    adjustment, as_of = check_adjustment(adjustment), _as_of(as_of)
    days = np.asarray(session_days)
    if days.dtype.kind != "M":
        raise ValueError(f"session_days must be a datetime64 array of session dates, got dtype {days.dtype}")
    days = days.astype("datetime64[D]").ravel()
    if np.isnat(days).any():
        raise ValueError("session_days holds NaT; every bar needs its session date")
    first_day = days.min().astype(date) if len(days) else None
    ex_dates, price, volume = _event_factors(actions, adjustment, as_of, prev_close, first_day,
                                             previous_session)
    return _lookup(np.array(ex_dates, dtype="datetime64[D]"), days, price, volume)


def bar_factors(index: pd.Index, actions: Actions, adjustment: str, as_of: date,
                prev_close: Mapping[date, float],
                previous_session: Callable[[date], date] | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`price_volume_factors` for a bar frame's index, in either canonical shape: naive
    session dates (daily) or aware instants (intraday, whose New York date is the session).

    No per-bar date conversion: an intraday bar precedes an ex-date exactly when its instant
    precedes New York midnight of that date, so the ex-dates are converted instead (a handful)
    and the bar instants are searched as they are.
    """
    if not isinstance(index, pd.DatetimeIndex):
        raise ValueError(f"bars must be indexed by time (a DatetimeIndex), got {type(index).__name__}")
    if index.hasnans:
        raise ValueError("the bars' index holds NaT; every bar needs its time")
    return _time_factors(index.asi8, _PER_SECOND[index.unit], index.tz is not None, actions,
                         adjustment, as_of, prev_close, previous_session)


def key_factors(keys: np.ndarray, intraday: bool, actions: Actions, adjustment: str,
                as_of: date, prev_close: Mapping[date, float],
                previous_session: Callable[[date], date] | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bar_factors` for the store's int64 bar keys (seconds since the epoch: the bar's
    start instant if ``intraday``, else UTC midnight of its session date), before any frame
    exists; pair with :func:`adjust_block`."""
    points = np.asarray(keys)
    if points.dtype.kind not in "iu":
        raise ValueError(f"keys must be integer seconds since the epoch, got dtype {points.dtype}")
    return _time_factors(points.astype("int64", copy=False), 1, bool(intraday), actions,
                         adjustment, as_of, prev_close, previous_session)


def _time_factors(points: np.ndarray, per_second: int, aware: bool, actions: Actions,
                  adjustment: str, as_of: date, prev_close: Mapping[date, float],
                  previous_session: Callable[[date], date] | None) -> tuple[np.ndarray, np.ndarray]:
    """Factors for bar times counted in ``1 / per_second`` s since the epoch: instants
    (``aware``: their New York date is the session) or naive session dates."""
    return _lookup(*_time_events(points, per_second, aware, actions, adjustment, as_of, prev_close,
                                 previous_session))


def key_factor_runs(keys: np.ndarray, intraday: bool, actions: Actions, adjustment: str,
                    as_of: date, prev_close: Mapping[date, float],
                    previous_session: Callable[[date], date] | None = None,
                    ) -> list[tuple[int, int, float, float]]:
    """:func:`key_factors` for keys in ascending order, as runs ``(start, stop, price,
    volume)``: bars ``keys[start:stop]`` share one factor pair; runs whose factors are both 1
    are left out. With :func:`adjust_block_runs`, a year of minute bars is adjusted with a few
    slice operations instead of two per-bar factor arrays (which cost more than the read)."""
    points = np.asarray(keys)
    if points.dtype.kind not in "iu":
        raise ValueError(f"keys must be integer seconds since the epoch, got dtype {points.dtype}")
    points = points.astype("int64", copy=False)
    if not _is_sorted(points):
        raise ValueError("keys must be in ascending order; use key_factors for unsorted keys")
    boundaries, _, price, volume = _time_events(points, 1, bool(intraday), actions, adjustment, as_of,
                                                prev_close, previous_session)
    later_price = np.cumprod(price[::-1])[::-1].tolist()
    later_volume = np.cumprod(volume[::-1])[::-1].tolist()
    cuts = np.searchsorted(points, boundaries, side="left").tolist()
    runs, start = [], 0
    for stop, p, v in zip(cuts, later_price, later_volume, strict=True):
        if stop > start and (p != 1.0 or v != 1.0):
            runs.append((start, stop, p, v))
        start = max(start, stop)
    return runs


def adjust_block_runs(values: np.ndarray, runs: Iterable[tuple[int, int, float, float]]) -> None:
    """:func:`adjust_block` by the runs of :func:`key_factor_runs`, in place."""
    if values.ndim != 2 or values.shape[0] != len(BAR_COLUMNS) or values.dtype != np.float64:
        raise ValueError(f"values must be a {len(BAR_COLUMNS)} x N float64 block, got "
                         f"{values.shape} {values.dtype}")
    for start, stop, price, volume in runs:
        for row in _PRICE_ROWS:
            values[row, start:stop] *= price
        if volume != 1.0:
            values[_VOLUME_ROW, start:stop] *= volume


def _time_events(points: np.ndarray, per_second: int, aware: bool, actions: Actions,
                 adjustment: str, as_of: date, prev_close: Mapping[date, float],
                 previous_session: Callable[[date], date] | None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(boundaries, points, price, volume)``: each event's boundary in the points' unit
    (bars before it take its factors), the points, and the event factors."""
    adjustment, as_of = check_adjustment(adjustment), _as_of(as_of)
    first_day: date | None = None
    if len(points):
        first = datetime.fromtimestamp(int(points.min()) // per_second, timezone.utc)
        first_day = first.astimezone(NY).date() if aware else first.date()
    ex_dates, price, volume = _event_factors(actions, adjustment, as_of, prev_close, first_day,
                                             previous_session)
    if aware:  # New York midnight of each ex-date, as an instant
        seconds = [int(datetime.combine(d, time(), NY).timestamp()) for d in ex_dates]
    else:  # the naive timestamp of the ex-date itself
        seconds = [(d - _EPOCH_DAY).days * 86_400 for d in ex_dates]
    return np.array(seconds, dtype="int64") * per_second, points, price, volume


_EPOCH_DAY = date(1970, 1, 1)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


#: Columns multiplied by the price factor (``vwap`` is a price too) and by the volume factor.
ADJUSTED_PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "vwap")
ADJUSTED_VOLUME_COLUMNS: tuple[str, ...] = ("volume",)


def adjust_bars(frame: pd.DataFrame, factors: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    """A new frame: price columns (open, high, low, close, vwap) times the price factor, volume
    times the volume factor; other columns (``trade_count``) and NaNs as they were."""
    price, volume = (np.asarray(f, dtype="float64") for f in factors)
    if price.shape != (len(frame),) or volume.shape != (len(frame),):
        raise ValueError(f"factors must have one value per bar ({len(frame)}), got "
                         f"{price.shape} and {volume.shape}")
    if (price == 1.0).all() and (volume == 1.0).all():
        return frame.copy()
    # A new frame built column by column: assigning columns into a copy costs ten times more.
    columns: dict[str, Any] = {}
    for name, col in frame.items():
        if name in ADJUSTED_PRICE_COLUMNS:
            columns[name] = col.to_numpy(dtype="float64") * price
        elif name in ADJUSTED_VOLUME_COLUMNS:
            columns[name] = col.to_numpy(dtype="float64") * volume
        else:
            columns[name] = col.array.copy()
    out = pd.DataFrame(columns, index=frame.index.copy(), copy=False)
    out.attrs = dict(frame.attrs)
    return out


_PRICE_ROWS = [BAR_COLUMNS.index(c) for c in ADJUSTED_PRICE_COLUMNS]
_VOLUME_ROW = BAR_COLUMNS.index("volume")


def adjust_block(values: np.ndarray, factors: tuple[np.ndarray, np.ndarray]) -> None:
    """Adjust, in place, a ``7 x N`` float64 block of the bar columns in
    :data:`~cachelib.bars.BAR_COLUMNS` order (what the store decodes before
    :func:`~cachelib.bars.frame_from_block`): no new arrays, so an adjusted read costs little
    more than a raw one."""
    price, volume = (np.asarray(f, dtype="float64") for f in factors)
    if values.ndim != 2 or values.shape[0] != len(BAR_COLUMNS) or values.dtype != np.float64:
        raise ValueError(f"values must be a {len(BAR_COLUMNS)} x N float64 block, got "
                         f"{values.shape} {values.dtype}")
    n = values.shape[1]
    if price.shape != (n,) or volume.shape != (n,):
        raise ValueError(f"factors must have one value per bar ({n}), got {price.shape} and {volume.shape}")
    for row in _PRICE_ROWS:
        np.multiply(values[row], price, out=values[row])
    np.multiply(values[_VOLUME_ROW], volume, out=values[_VOLUME_ROW])


def adjusted_bars(frame: pd.DataFrame, actions: Actions, adjustment: str, as_of: date,
                  prev_close: Mapping[date, float],
                  previous_session: Callable[[date], date] | None = None) -> pd.DataFrame:
    """Bars as a user saw them adjusted on ``as_of``: :func:`bar_factors` then
    :func:`adjust_bars` (a copy of ``frame`` for ``"raw"``)."""
    if check_adjustment(adjustment) == "raw":
        _as_of(as_of)
        return frame.copy()
    return adjust_bars(frame, bar_factors(frame.index, actions, adjustment, as_of, prev_close,
                                          previous_session))


# --------------------------------------------------------------------------------------
# Symbol changes
# --------------------------------------------------------------------------------------


def symbol_history(actions: pd.DataFrame, symbol: str) -> list[tuple[str, date | None, date | None]]:
    """The symbols a security traded under, oldest first, as ``(symbol, first_day, last_day)``
    (``None`` = open-ended), by following name changes back from ``symbol``.

    >>> rows = [{"symbol": "FB", "action_type": "name_change", "ex_date": "2022-06-09",
    ...          "new_symbol": "META", "source": "alpaca"}]
    >>> symbol_history(actions_frame(rows), "meta")
    [('FB', None, datetime.date(2022, 6, 8)), ('META', datetime.date(2022, 6, 9), None)]
    """
    current = normalize_symbol(symbol)
    if not isinstance(actions, pd.DataFrame) or "new_symbol" not in actions:
        raise ValueError("actions must be a DataFrame from actions_frame()")
    changes = actions[actions["action_type"] == "name_change"]
    history: list[tuple[str, date | None, date | None]] = []
    last_day: date | None = None
    # Each step goes strictly back in time, so a symbol reused later cannot loop.
    while True:
        earlier = changes[changes["new_symbol"] == current]
        if last_day is not None:
            earlier = earlier[earlier["ex_date"].to_numpy(dtype=object) <= last_day]
        if earlier.empty:
            history.append((current, None, last_day))
            break
        row = earlier.iloc[int(np.argmax(earlier["ex_date"].to_numpy(dtype=object)))]
        history.append((current, row["ex_date"], last_day))
        current, last_day = row["symbol"], row["ex_date"] - timedelta(days=1)
    return history[::-1]
