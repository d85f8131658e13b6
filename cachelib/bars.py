"""The one place that knows what a bar is: its columns, timeframes, symbols and validation.

Canonical shapes
----------------
* **Daily-or-longer timeframes** (``1Day``, ``1Week``, ``NMonth``): a frame indexed by a
  tz-naive ``DatetimeIndex`` named ``date`` holding New York *session dates*.
* **Intraday timeframes** (``NMin``, ``NHour``): a frame indexed by a tz-aware UTC
  ``DatetimeIndex`` named ``timestamp`` holding the bar's start instant.
* Columns, in this order: ``open, high, low, close, volume, vwap, trade_count``; all float64
  except ``trade_count`` (nullable ``Int64``).

Storage keys
------------
Bars are keyed by an integer number of seconds since the Unix epoch (UTC). For intraday
bars that is the bar's start instant. For daily-or-longer bars it is UTC midnight of the
session date (so the key *is* the date, and no time zone is needed to read it back).
Alpaca stamps daily bars at New York midnight expressed in UTC (05:00Z in winter, 04:00Z in
summer): tz-aware inputs are converted to New York before the date is taken, while naive
inputs to a daily timeframe are taken as dates as they are.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from pandas._libs.internals import BlockPlacement
from pandas.arrays import DatetimeArray, IntegerArray
from pandas.core.internals import BlockManager
from pandas.core.internals.blocks import new_block

__all__ = [
    "BAR_COLUMNS",
    "PRICE_COLUMNS",
    "NY",
    "Timeframe",
    "parse_timeframe",
    "normalize_symbol",
    "normalize_symbols",
    "to_date",
    "to_utc_datetime",
    "normalize_bars",
    "column_values",
    "frame_from_rows",
    "frame_of_blocks",
    "rows_table",
    "frame_from_block",
    "empty_bars",
    "date_to_key",
    "key_to_date",
]

NY = ZoneInfo("America/New_York")

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "vwap", "trade_count")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

# re.ASCII: ``\d`` must not match other scripts' digits (int() would read them).
_SYMBOL_RE = re.compile(r"[A-Za-z0-9./_-]+", re.ASCII)
#: Longest symbol accepted (OCC contract symbols are 21 characters).
MAX_SYMBOL_LENGTH = 32
_TIMEFRAME_RE = re.compile(r"^(\d+)(Min|T|Hour|H|Day|D|Week|W|Month|M)$", re.ASCII)
_UNIT_ALIASES = {"T": "Min", "H": "Hour", "D": "Day", "W": "Week", "M": "Month"}
_DAY_SECONDS = 86_400


@dataclass(frozen=True)
class Timeframe:
    """A bar timeframe in Alpaca's grammar (``5Min``, ``1Hour``, ``1Day``, ``1Week``, ``3Month``)."""

    amount: int
    unit: str  # Min | Hour | Day | Week | Month

    @property
    def name(self) -> str:
        return f"{self.amount}{self.unit}"

    @property
    def is_intraday(self) -> bool:
        return self.unit in ("Min", "Hour")

    @property
    def seconds(self) -> int | None:
        """Length in seconds for intraday timeframes, ``None`` for daily-or-longer."""
        if self.unit == "Min":
            return self.amount * 60
        if self.unit == "Hour":
            return self.amount * 3600
        return None

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.name


_VALID_AMOUNTS = {
    "Min": range(1, 60),
    "Hour": range(1, 24),
    "Day": (1,),
    "Week": (1,),
    "Month": (1, 2, 3, 6, 12),
}


def parse_timeframe(timeframe: str | Timeframe) -> Timeframe:
    """Parse and validate a timeframe name; raise ``ValueError`` for anything unknown.

    >>> parse_timeframe("15Min").seconds
    900
    >>> parse_timeframe("1Day").is_intraday
    False
    """
    if type(timeframe) is str:
        known = _PARSED_TIMEFRAMES.get(timeframe)
        if known is not None:  # every read parses its timeframe: remember the few spellings seen
            return known
    elif isinstance(timeframe, Timeframe):
        return timeframe
    if not isinstance(timeframe, str):
        raise ValueError(f"timeframe must be a string such as '1Day' or '5Min', got {timeframe!r}")
    match = _TIMEFRAME_RE.match(timeframe.strip())
    if not match:
        raise ValueError(
            f"unknown timeframe {timeframe!r}: use NMin (1-59), NHour (1-23), 1Day, 1Week or "
            "NMonth (1, 2, 3, 6, 12)"
        )
    amount = int(match.group(1))
    unit = _UNIT_ALIASES.get(match.group(2), match.group(2))
    if amount not in _VALID_AMOUNTS[unit]:
        raise ValueError(
            f"unknown timeframe {timeframe!r}: {unit} accepts {list(_VALID_AMOUNTS[unit])}"
        )
    parsed = Timeframe(amount, unit)
    if type(timeframe) is str and len(_PARSED_TIMEFRAMES) < 1024:
        _PARSED_TIMEFRAMES[timeframe] = parsed
    return parsed


#: Timeframe spellings already parsed (valid ones only; a Timeframe is immutable).
_PARSED_TIMEFRAMES: dict[str, Timeframe] = {}


def _short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: messages stay readable for huge inputs,
    and repr shows invisible characters (NUL, zero-width space, ...)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def normalize_symbol(symbol: str) -> str:
    """Validate a symbol (ASCII ``A-Z a-z 0-9 . - / _``, at most :data:`MAX_SYMBOL_LENGTH`)
    and upper-case it; ``ValueError`` otherwise.

    The raw text is checked *before* upper-casing: Unicode case mapping would turn ``ıbm``
    (dotless i), ``ﬁ`` (a ligature) or ``spyß`` into the real tickers IBM, FI and SPYSS.
    Only surrounding spaces are stripped.

    >>> normalize_symbol(" brk.b ")
    'BRK.B'
    """
    if not isinstance(symbol, str):
        raise ValueError(f"symbol must be a string, got {type(symbol).__name__}")
    cleaned = symbol.strip(" ")
    if not cleaned:
        raise ValueError(f"symbol is empty ({_short_repr(symbol)}); give a ticker such as 'SPY'")
    if len(cleaned) > MAX_SYMBOL_LENGTH:
        raise ValueError(
            f"symbol {_short_repr(symbol)} is longer than {MAX_SYMBOL_LENGTH} characters"
        )
    if not _SYMBOL_RE.fullmatch(cleaned):
        raise ValueError(
            f"symbol {_short_repr(symbol)} has characters outside ASCII A-Z 0-9 . - / _"
        )
    return cleaned.upper()


def normalize_symbols(symbols: str | Iterable[str]) -> list[str]:
    """Normalised symbols, duplicates dropped, first-seen order kept; a string may list
    several separated by commas.

    >>> normalize_symbols("spy, aapl,SPY")
    ['SPY', 'AAPL']
    """
    if isinstance(symbols, str):
        symbols = [s for s in symbols.split(",") if s.strip()]
    return list(dict.fromkeys(normalize_symbol(s) for s in symbols))


def _date_like(value: object, what: str | None) -> str | date | datetime:
    """``value`` as a str, date or datetime, or a ``ValueError`` naming ``what``.

    Missing values (``None``, ``NaT``, NaN) and things that are not dates at all (numbers,
    bools, lists) are refused here, so every public entry point taking a date reports them
    the same way instead of a ``TypeError`` from deep inside pandas.
    """
    what = what or "date"
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value) if not np.isnat(value) else pd.NaT
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{what} is missing ({value!r}); give a date such as '2024-01-02'")
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime(warn=False)
    if not isinstance(value, (str, date)):
        raise ValueError(
            f"{what} must be a date string (YYYY-MM-DD), a date or a datetime, "
            f"got {type(value).__name__} {_short_repr(value)}"
        )
    return value


def _named(what: str | None, value: object) -> str:
    """``"start '2024-13-01'"`` (or just the value's repr when no argument name is known)."""
    return f"{what} {_short_repr(value)}" if what else _short_repr(value)


def to_date(value: str | date | datetime | pd.Timestamp, what: str | None = None) -> date:
    """A calendar date from a str (``YYYY-MM-DD`` or ISO datetime), date or datetime.

    A tz-aware datetime is converted to New York first, so an instant maps to the
    trading date it belongs to. ``what`` names the argument in error messages.
    """
    # The two common cases first, answered exactly as the general path below would.
    if type(value) is date:
        return value
    if type(value) is str and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass  # the general path says why
    value = _date_like(value, what)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            try:
                return value.astimezone(NY).date()
            except OverflowError:  # within a day of year 1 or 9999: the UTC date is as good
                return value.replace(tzinfo=None).date()
        return value.date()
    if isinstance(value, date):
        return value
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return to_date(datetime.fromisoformat(text.replace("Z", "+00:00")), what)
    except ValueError:
        raise ValueError(f"cannot read {_named(what, value)} as a date (expected YYYY-MM-DD)") from None


def to_utc_datetime(value: str | date | datetime | pd.Timestamp, what: str | None = None) -> datetime:
    """An aware UTC datetime. Naive datetimes mean UTC; a bare date means its UTC midnight.
    ``what`` names the argument in error messages."""
    value = _date_like(value, what)
    try:
        if isinstance(value, datetime):
            return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        if isinstance(value, date):
            return datetime.combine(value, time(0), tzinfo=timezone.utc)
    except OverflowError:
        raise ValueError(f"{_named(what, value)} is outside the years 1-9999") from None
    text = value.strip()
    if len(text) == 10:
        return to_utc_datetime(to_date(text, what), what)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read {_named(what, value)} as a date or time") from None
    return to_utc_datetime(parsed, what)


def is_date_only(value: object) -> bool:
    """True when ``value`` names a whole day (a ``date`` or a ``YYYY-MM-DD`` string)."""
    if isinstance(value, str):
        return len(value.strip()) == 10
    return isinstance(value, date) and not isinstance(value, datetime)


#: Bar keys that can exist: pandas' nanosecond timestamps end in 1677 and 2262, so no bar
#: outside these epoch seconds can be stored or read. Query bounds are clamped to them.
KEY_MIN = -(2**63 - 1) // 1_000_000_000 + 1
KEY_MAX = (2**63 - 1) // 1_000_000_000


def range_start_key(start: object, intraday: bool, what: str = "start") -> int:
    """The first bar key a range starting at ``start`` includes (see :func:`key_range`)."""
    if not intraday:
        return date_to_key(to_date(start, what))
    if is_date_only(start):
        return _ny_midnight_key(to_date(start, what))
    return _instant_key(start, what)


def range_end_key(end: object, intraday: bool, what: str = "end") -> int:
    """The last bar key a range ending at ``end`` includes (see :func:`key_range`)."""
    if not intraday:
        return date_to_key(to_date(end, what))
    if is_date_only(end):
        return _ny_midnight_key(to_date(end, what), days_after=1) - 1
    return _instant_key(end, what)


@functools.lru_cache(maxsize=8192)
def _ny_midnight_key(day: date, days_after: int = 0) -> int:
    """Epoch seconds of New York midnight ``days_after`` days after ``day``, for any date
    (no datetime is built past year 9999; far dates are clamped by :func:`key_range`)."""
    # The offset is that of the midnight asked for: on a DST change day, the next midnight has
    # another offset than this one (2024-03-10 00:00 is EST, 2024-03-11 00:00 is EDT).
    probe = min(max(day, date(1900, 1, 1)), date(2200, 1, 1)) + timedelta(days=days_after)
    offset = datetime.combine(probe, time(0), NY).utcoffset() or timedelta(0)
    return date_to_key(day) + days_after * _DAY_SECONDS - int(offset.total_seconds())


def _instant_key(value: object, what: str) -> int:
    value = _date_like(value, what)
    if isinstance(value, str):
        return int(to_utc_datetime(value, what).timestamp())
    if isinstance(value, datetime):
        # timestamp() of an aware datetime is a subtraction: no overflow near year 9999.
        aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return int(aware.timestamp())
    return date_to_key(value)


def check_order(lo: object, hi: object, start: object, end: object) -> None:
    """The one rule for every range: ``ValueError`` when ``start`` is after ``end``."""
    if lo > hi:  # type: ignore[operator]
        raise ValueError(f"start {_short_repr(start)} is after end {_short_repr(end)}")


def key_range(start: object, end: object, intraday: bool) -> tuple[int, int]:
    """Inclusive ``[lo, hi]`` bar-key range for ``start``..``end``.

    Date-only bounds are New York days: for intraday timeframes a date-only ``start`` is New
    York midnight and a date-only ``end`` includes that whole New York day. Datetimes are
    instants (naive = UTC). For daily-or-longer timeframes both bounds are session dates.

    Any year from 1 to 9999 is accepted; the range is then clamped to the keys a bar can
    have (:data:`KEY_MIN`..:data:`KEY_MAX`), so asking for "everything" returns everything.
    """
    if start is None or end is None:
        missing = "start" if start is None else "end"
        raise ValueError(f"{missing} is required (str, date or datetime)")
    lo, hi = range_start_key(start, intraday), range_end_key(end, intraday)
    check_order(lo, hi, start, end)
    return clamp_key(lo), clamp_key(hi)


def clamp_key(key: int) -> int:
    """``key`` limited to :data:`KEY_MIN`..:data:`KEY_MAX`."""
    return min(max(key, KEY_MIN), KEY_MAX)


def rows_of_symbol(data: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """alpaca-py frames are indexed ``(symbol, timestamp)``: keep ``symbol``'s rows (a frame
    without a ``symbol`` level is returned as it is)."""
    names = [str(n).lower() if n is not None else "" for n in data.index.names]
    if "symbol" not in names:
        return data
    symbols = data.index.get_level_values(names.index("symbol")).astype(str).str.upper()
    if len(data) and not (symbols == symbol).any():
        raise ValueError(f"the frame holds no bars for {symbol} (it has {sorted(set(symbols))[:5]})")
    return data[np.asarray(symbols == symbol)]


def date_to_key(day: date) -> int:
    """Storage key of a daily bar: UTC midnight of the session date, in epoch seconds."""
    return (day - date(1970, 1, 1)).days * _DAY_SECONDS


def key_to_date(key: int) -> date:
    return date(1970, 1, 1) + timedelta(days=int(key) // _DAY_SECONDS)


def empty_bars(timeframe: str | Timeframe) -> pd.DataFrame:
    """An empty frame in the canonical shape for ``timeframe``."""
    return frame_from_rows([], parse_timeframe(timeframe))


def frame_from_rows(rows: list[tuple], timeframe: str | Timeframe) -> pd.DataFrame:
    """The canonical frame from ``(key, open, high, low, close, volume, vwap, trade_count)`` rows
    (values after the eighth, such as a series tag, are ignored).

    This is the cache's read hot path (a one-month query must cost well under a millisecond):
    one float64 array, whose transposed rows are the frame's columns (no copy), framed by
    :func:`frame_from_block`.
    """
    table = rows_table(rows)
    return frame_from_block(table[0].astype(np.int64), table[1:8], timeframe)


def rows_table(rows: list[tuple]) -> np.ndarray:
    """Bar rows (at least eight values each) as one float64 array, one row per *column*
    (NULL -> NaN)."""
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(rows[0]) if rows else 8).T


def frame_from_block(keys: np.ndarray, values: np.ndarray, timeframe: str | Timeframe) -> pd.DataFrame:
    """The canonical frame from int64 bar keys and a ``7 x N`` float64 array of the bar columns
    (NaN = missing). The six float columns become one pandas block that *is* ``values[:6]``
    (no copy), and ``trade_count`` a nullable ``Int64`` block: the frame is assembled from
    its two blocks directly, as pandas' generic constructors (type inference, consolidation)
    would cost more than a one-month read itself."""
    tf = parse_timeframe(timeframe)
    counts = values[6]
    missing = np.isnan(counts)
    nanos = np.asarray(keys, dtype=np.int64) * 1_000_000_000
    index = pd.DatetimeIndex._simple_new(
        DatetimeArray._simple_new(nanos.view("M8[ns]"), dtype=_UTC_NS if tf.is_intraday else _NAIVE_NS),
        name="timestamp" if tf.is_intraday else "date",
    )
    return frame_of_blocks(
        [(values[:6], _FLOATS_PLACEMENT),
         # _simple_new: the arrays are int64 and bool by construction, nothing to check.
         (IntegerArray._simple_new(np.where(missing, 0, counts).astype(np.int64), missing), _COUNT_PLACEMENT)],
        _COLUMN_INDEX, index,
    )


def frame_of_blocks(blocks: list[tuple[Any, BlockPlacement]], columns: pd.Index, index: pd.Index) -> pd.DataFrame:
    """A frame assembled from its pandas blocks, ``(values, which columns)`` each, as they are:
    no type inference, no consolidation, no copy. The caller vouches that the values fit (2-D
    ``columns x rows`` numpy arrays, or 1-D extension arrays of one column)."""
    manager = BlockManager([new_block(v, p, ndim=2) for v, p in blocks], [columns, index], verify_integrity=False)
    return pd.DataFrame._from_mgr(manager, manager.axes)


_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
_NAIVE_NS = np.dtype("M8[ns]")
_COLUMN_INDEX = pd.Index(BAR_COLUMNS)
# Where a read frame's two blocks sit among its columns: the six floats, then trade_count.
_FLOATS_PLACEMENT = BlockPlacement(slice(0, 6))
_COUNT_PLACEMENT = BlockPlacement(slice(6, 7))


# ---------------------------------------------------------------------------
# Validation of incoming frames
# ---------------------------------------------------------------------------

_TIME_COLUMNS = ("timestamp", "date", "time", "datetime", "t")


def _time_values(frame: pd.DataFrame, names: dict[str, object] | None = None) -> pd.Series | pd.DatetimeIndex:
    """Pull the bar times out of a frame: a DatetimeIndex (any name), a ``(symbol, timestamp)``
    MultiIndex as alpaca-py returns, or a ``date``/``timestamp`` column."""
    index = frame.index
    if isinstance(index, pd.MultiIndex):
        for level in range(index.nlevels):
            lvl = index.get_level_values(level)
            if isinstance(lvl, pd.DatetimeIndex):
                return pd.Series(lvl, index=range(len(frame)))
        raise ValueError("the frame's MultiIndex has no datetime level (expected (symbol, timestamp))")
    if isinstance(index, pd.DatetimeIndex):
        return index
    names = names if names is not None else {str(c).lower(): c for c in frame.columns}
    for name in _TIME_COLUMNS:
        if name in names:
            col = frame[names[name]]
            try:
                if pd.api.types.is_datetime64_any_dtype(col):
                    parsed = col
                else:
                    try:
                        parsed = pd.to_datetime(col, utc=False, format="mixed")
                    except ValueError:
                        # Offsets that differ (e.g. -05:00 and -04:00 across a DST change) cannot
                        # share one zone: read them as instants in UTC.
                        parsed = pd.to_datetime(col, utc=True, format="mixed")
            except (ValueError, TypeError) as exc:
                raise ValueError(f"column {name!r} holds values that are not dates or times: {exc}") from None
            return pd.Series(parsed.array, index=range(len(frame)), dtype=parsed.dtype)
    raise ValueError(
        "no bar times: give the frame a DatetimeIndex or a 'date'/'timestamp' column"
    )


def _keys_from_times(times: pd.Series | pd.DatetimeIndex, tf: Timeframe) -> np.ndarray:
    if times.isna().any():
        raise ValueError("some bar times are missing (NaT)")
    dt = pd.DatetimeIndex(times)
    if tf.is_intraday:
        if dt.tz is None:
            dt = dt.tz_localize("UTC")
        else:
            dt = dt.tz_convert("UTC")
        return (dt.as_unit("ns").asi8 // 1_000_000_000).astype(np.int64)
    # Daily-or-longer: the key is the session date. Aware instants are New York dates.
    if dt.tz is not None:
        dt = dt.tz_convert(NY).tz_localize(None)
    # Floor division of wall-clock nanoseconds by a day (no DatetimeIndex.normalize(), which
    # spends most of its time inferring a frequency).
    days = dt.as_unit("ns").asi8 // (1_000_000_000 * _DAY_SECONDS)
    return (days * _DAY_SECONDS).astype(np.int64)


#: The largest count (trade_count, option volume, open interest) a SQLite INTEGER holds.
MAX_COUNT = 2**63 - 1


def count_ok(values: np.ndarray) -> np.ndarray:
    """Per value: NaN ("not given") or a whole number in ``0..MAX_COUNT``. A float64 cannot
    hold MAX_COUNT itself, so the bound is ``< 2**63``: larger values would be stored as REAL
    and read back as -9223372036854775808, fractions would silently lose their part."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        whole = (values >= 0) & (values < 2.0**63) & (np.floor(values) == values)
    return np.isnan(values) | whole


def check_count(value: Any, what: str) -> int | None:
    """One count as an int (``None`` when not given): the scalar form of :func:`count_ok`,
    for option volumes, open interest and session row counts."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    number = check_number(value, what)
    if not count_ok(np.array([number]))[0]:
        raise ValueError(f"{what} must be a whole number from 0 to {MAX_COUNT}, got {value!r}")
    return int(number)


def check_number(value: Any, what: str) -> float:
    """A real, finite number as a float; ``ValueError`` naming ``what`` for anything else,
    including bools and complex numbers (which ``float()`` would coerce or half-read)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, Decimal, str)):
        raise ValueError(f"{what} must be a number, got {type(value).__name__} {_short_repr(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} must be a number, got {_short_repr(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def _is_bool_or_complex(value: object) -> bool:
    return isinstance(value, (bool, np.bool_, complex, np.complexfloating))


def column_numbers(col: pd.Series | np.ndarray, name: str, strict: bool = True) -> np.ndarray:
    """A column as float64 (NaN = missing).

    Bools and complex numbers are not numbers here (``float(True)`` is 1.0, a complex price
    would silently lose its imaginary part). ``strict`` (a frame handed to the store) refuses
    the column with a ``ValueError`` naming it, as it does for text that is not a number;
    otherwise (a vendor's rows, checked row by row) such values become NaN, so the row is
    rejected by :func:`bar_problems`.
    """
    kind = col.dtype.kind
    if kind in "fiu":  # plain numbers (also nullable Int64/Float64): no parsing needed
        if isinstance(col, np.ndarray):  # the hot path: no NA mask to apply
            return col.astype(np.float64)
        if isinstance(col.dtype, np.dtype):
            return col.to_numpy(dtype="float64")
        return col.to_numpy(dtype="float64", na_value=np.nan)
    if isinstance(col, np.ndarray):
        col = pd.Series(col)
    if kind in "bc":
        if strict:
            what = "true/false values" if kind == "b" else "complex numbers"
            raise ValueError(f"column {name!r} holds {what}, not numbers")
        return np.full(len(col), np.nan)
    odd = np.fromiter((_is_bool_or_complex(v) for v in col.to_numpy(dtype=object)), bool, len(col))
    if odd.any():
        if strict:
            example = col.to_numpy(dtype=object)[np.argmax(odd)]
            raise ValueError(f"column {name!r} holds {example!r}, which is not a number")
        col = col.where(~odd)
    try:
        return pd.to_numeric(col, errors="raise" if strict else "coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"column {name!r} holds non-numeric values") from None


def column_values(frame: pd.DataFrame, label: object) -> pd.Series | np.ndarray:
    """Column ``label`` of ``frame``: its numpy array when pandas holds it as one (the hot
    path: ``frame[label]`` builds a Series, ~10x the cost), else the Series."""
    position = frame.columns.get_loc(label)
    if isinstance(position, int):
        values = frame._mgr.iget_values(position)
        if isinstance(values, np.ndarray):
            return values
    return frame[label]


def column_names(frame: pd.DataFrame, wanted: Iterable[str]) -> dict[str, object]:
    """``{lower-case name: column label}`` for the columns of ``frame`` whose lower-cased
    name is in ``wanted``; ``ValueError`` when two of them differ only by case (``close`` and
    ``Close``): which one holds the bar is unknown."""
    wanted = set(wanted)
    names: dict[str, object] = {}
    for label in frame.columns:
        key = str(label).lower()
        if key not in wanted:
            continue
        if key in names:
            clash = [repr(c) for c in frame.columns if str(c).lower() == key]
            raise ValueError(f"duplicate columns {', '.join(clash)}: keep one column per field")
        names[key] = label
    return names


#: Every column name the bar readers look at (case-insensitive).
_READ_COLUMNS = (*BAR_COLUMNS, "transactions")


def bar_problems(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    vwap: np.ndarray,
    trade_count: np.ndarray,
) -> np.ndarray:
    """The validation rules of a bar, row by row: the first problem of each row ("" if none).

    Both :func:`normalize_bars` (refuse the frame) and :func:`split_valid_rows` (reject the
    row) apply exactly these rules. NaN ``vwap``/``trade_count`` mean "not given" and are fine.
    """
    reasons = np.full(len(close), "", dtype=object)

    def flag(mask: np.ndarray | np.bool_, reason: str) -> None:
        reasons[mask & (reasons == "")] = reason

    with np.errstate(invalid="ignore"):
        prices = np.vstack([open_, high, low, close])
        flag(~np.isfinite(prices).all(axis=0), "NaN or infinite price")
        flag((prices <= 0).any(axis=0), "non-positive price")
        flag(~np.isfinite(volume), "NaN or infinite volume")
        flag(volume < 0, "negative volume")
        flag(np.isinf(vwap), "infinite vwap")
        flag(np.isinf(trade_count) | (trade_count < 0), "negative or infinite trade_count")
        # 1.5 would be stored as 1, 1e25 read back as -9223372036854775808.
        flag(~count_ok(trade_count), "trade_count not a whole number below 2**63")
        # A relative tolerance absorbs float noise from vendors' rounding (1e-9 of the price).
        tol = 1e-9 * np.maximum(np.abs(high), 1.0)
        flag(high + tol < np.maximum(open_, close), "high below max(open, close)")
        flag(low - tol > np.minimum(open_, close), "low above min(open, close)")
    return reasons


def normalize_bars(data: pd.DataFrame, timeframe: str | Timeframe = "1Day",
                   groups: np.ndarray | None = None) -> pd.DataFrame:
    """Validate ``data`` and return a frame with an int64 ``key`` column plus the bar columns.

    Raises ``ValueError`` naming the problem for: not a DataFrame, no ``close`` column, no
    time index or column, NaN or infinite prices, negative or non-finite volume, ``high``
    below max(open, close) or ``low`` above min(open, close), duplicate bar times, a
    ``trade_count`` that is not a whole number below 2**63, bool or complex values in a
    number column, and two columns whose names differ only by case (``close``/``Close``).
    Missing ``open``/``high``/``low`` default to ``close``; missing ``volume`` to 0;
    missing ``vwap``/``trade_count`` to NULL. alpaca-py's ``trade_count`` (and the seed's
    ``transactions``) are both accepted.

    ``groups`` (one int per row, e.g. a symbol's number) validates several series in one
    pass: rows are sorted by (group, time), bar times must be unique within a group, and the
    result has a ``group`` column.
    """
    tf = parse_timeframe(timeframe)
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    # Column lookup by lower-cased name, without copying the frame.
    names = column_names(data, (*_READ_COLUMNS, *_TIME_COLUMNS))
    if "close" not in names:
        raise ValueError("data has no 'close' column")
    if "trade_count" not in names and "transactions" in names:
        names["trade_count"] = names["transactions"]
    frame = data
    n = len(frame)
    keys = _keys_from_times(_time_values(frame, names), tf)

    def numeric(name: str, default: float | None) -> np.ndarray:
        if name in names:
            return column_numbers(column_values(frame, names[name]), name)
        return np.full(n, np.nan if default is None else default, dtype="float64")

    close = numeric("close", None)
    open_ = numeric("open", None) if "open" in names else close.copy()
    high = numeric("high", None) if "high" in names else np.maximum(open_, close)
    low = numeric("low", None) if "low" in names else np.minimum(open_, close)
    volume = numeric("volume", 0.0)
    vwap = numeric("vwap", None)
    trade_count = numeric("trade_count", None)

    problems = bar_problems(open_, high, low, close, volume, vwap, trade_count)
    bad = problems != ""
    if bad.any():
        reasons, counts = np.unique(problems[bad], return_counts=True)
        summary = ", ".join(f"{r} ({c})" for r, c in zip(reasons, counts, strict=True))
        when = pd.Timestamp(keys[np.argmax(bad)], unit="s", tz="UTC")
        first = when.isoformat() if tf.is_intraday else when.date().isoformat()
        raise ValueError(f"{int(bad.sum())} invalid bar(s): {summary}; the first at {first}")
    order = None
    columns = {"key": keys, "open": open_, "high": high, "low": low, "close": close,
               "volume": volume, "vwap": vwap, "trade_count": trade_count}
    if groups is not None:
        group = np.asarray(groups, dtype=np.int64)
        if len(group) != n:
            raise ValueError(f"{len(group)} group numbers for {n} rows")
        step = np.diff(group)
        if n > 1 and not ((step > 0) | ((step == 0) & (np.diff(keys) > 0))).all():
            order = np.lexsort((keys, group))
        columns["group"] = group
    elif n > 1 and not (np.diff(keys) > 0).all():
        order = np.argsort(keys, kind="stable")
    if order is not None:
        columns = {k: v[order] for k, v in columns.items()}
        same = np.diff(columns["key"]) == 0
        if groups is not None:
            same &= np.diff(columns["group"]) == 0
        repeated = int(same.sum())
        if repeated:
            raise ValueError(f"duplicate bar times in one frame ({repeated} duplicate(s))")
    # Two blocks, assembled directly (pd.DataFrame(dict) would cost ~0.2 ms of inference).
    ints = np.array([columns["key"], *([columns["group"]] if groups is not None else [])], dtype=np.int64)
    floats = np.array([columns[c] for c in BAR_COLUMNS], dtype=np.float64).reshape(len(BAR_COLUMNS), n)
    layout = _NORMALIZED_GROUPS if groups is not None else _NORMALIZED
    return frame_of_blocks([(ints, layout[1]), (floats, layout[2])], layout[0], pd.RangeIndex(n))


# (columns, where the int64 block goes, where the float64 block goes) of normalize_bars' result.
_NORMALIZED = (pd.Index(["key", *BAR_COLUMNS]), BlockPlacement(slice(0, 1)), BlockPlacement(slice(1, 8)))
_NORMALIZED_GROUPS = (pd.Index(["key", *BAR_COLUMNS, "group"]), BlockPlacement(np.array([0, 8])),
                      BlockPlacement(slice(1, 8)))


def finite_or_none(value: float) -> float | None:
    """``None`` for NaN (stored as SQL NULL), the float otherwise."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


# ---------------------------------------------------------------------------
# Option chains: the columns of a snapshot row and OCC contract symbols
# ---------------------------------------------------------------------------

#: Columns of an option-chain snapshot (table ``raw_options_chain`` and every source's output).
OPTION_COLUMNS: tuple[str, ...] = (
    "contract_symbol",
    "strike",
    "option_type",  # 'call' | 'put'
    "expiration",  # datetime.date
    "bid",
    "ask",
    "last",
    "volume",
    "open_interest",
    "implied_volatility",
    "delta",
    "gamma",
    "theta",
    "vega",
    "rho",
    "underlying_price",
    "snapshot_time",  # aware UTC datetime of the quote
    "open_interest_date",  # datetime.date the open interest was counted on, or None
)

_OCC_RE = re.compile(r"([A-Z0-9.]{1,6})(\d{6})([CP])(\d{8})", re.ASCII)


def normalize_option_type(value: str) -> str:
    """``call``/``put`` from call/put/C/P in any case; ``ValueError`` otherwise."""
    text = str(value).strip().lower()
    if text in ("c", "call"):
        return "call"
    if text in ("p", "put"):
        return "put"
    raise ValueError(f"option_type must be call/put/C/P, got {value!r}")


def occ_symbol(underlying: str, expiration: date, option_type: str, strike: float) -> str:
    """OCC contract symbol, e.g. ``occ_symbol('AAPL', date(2024,1,26), 'put', 50)`` ->
    ``'AAPL240126P00050000'``."""
    kind = "C" if normalize_option_type(option_type) == "call" else "P"
    return f"{normalize_symbol(underlying)}{expiration:%y%m%d}{kind}{int(round(strike * 1000)):08d}"


def parse_occ_symbol(symbol: str) -> tuple[str, date, str, float]:
    """``(underlying, expiration, 'call'|'put', strike)`` from an OCC contract symbol."""
    # Matched before upper-casing, for the same reason as normalize_symbol.
    text = symbol.strip(" ") if isinstance(symbol, str) else ""
    match = _OCC_RE.fullmatch(text.upper()) if text.isascii() else None
    if not match:
        raise ValueError(
            f"not an OCC option symbol: {_short_repr(symbol)} (expected e.g. AAPL240126P00050000)"
        )
    root, ymd, kind, strike = match.groups()
    try:
        expiration = date(2000 + int(ymd[:2]), int(ymd[2:4]), int(ymd[4:6]))
    except ValueError:
        raise ValueError(f"OCC option symbol {symbol!r} has no real expiration date ({ymd})") from None
    return root, expiration, ("call" if kind == "C" else "put"), int(strike) / 1000.0


def session_day_numbers(times: pd.Index) -> np.ndarray:
    """New York session dates of bar times as day numbers since 1970-01-01 (aware instants
    are converted to New York; naive values are taken as dates/UTC wall times as they are)."""
    return _keys_from_times(pd.Series(pd.DatetimeIndex(times)), Timeframe(1, "Day")) // _DAY_SECONDS


def split_valid_rows(data: pd.DataFrame, timeframe: str | Timeframe = "1Day") -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Row-level validation for data coming from a vendor: ``(valid_rows, rejections)``.

    Unlike :func:`normalize_bars` (which refuses a whole frame), this keeps the good rows and
    reports each bad one as ``(bar time ISO, reason)`` using the same rules
    (:func:`bar_problems`), plus duplicate bar times (every copy is rejected: which one is
    right is unknown).
    ``data`` is indexed by bar time (a DatetimeIndex).
    """
    tf = parse_timeframe(timeframe)
    if data.empty:
        return data, []
    times = pd.DatetimeIndex(data.index)
    n = len(data)
    names = {k: v for k, v in column_names(data, BAR_COLUMNS).items() if k == v}

    def column(name: str, default: float) -> np.ndarray:
        if name not in names:
            return np.full(n, default, dtype="float64")
        return column_numbers(data[names[name]], name, strict=False)

    open_, high, low, close = (column(c, np.nan) for c in PRICE_COLUMNS)
    reasons = bar_problems(open_, high, low, close, column("volume", 0.0), column("vwap", np.nan),
                           column("trade_count", np.nan))
    keys = _keys_from_times(pd.Series(times), tf)
    duplicated = pd.Series(keys).duplicated(keep=False).to_numpy()
    reasons[duplicated & (reasons == "")] = "duplicate bar time"
    bad = reasons != ""
    rejections = [(t.isoformat(), str(r)) for t, r in zip(times[bad], reasons[bad], strict=True)]
    return data[~bad], rejections
