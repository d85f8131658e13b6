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

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from pandas.arrays import DatetimeArray, IntegerArray

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
    "frame_from_rows",
    "frame_from_columns",
    "empty_bars",
    "date_to_key",
    "key_to_date",
]

NY = ZoneInfo("America/New_York")

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "vwap", "trade_count")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

_SYMBOL_RE = re.compile(r"^[A-Z0-9./_-]+$")
_TIMEFRAME_RE = re.compile(r"^(\d+)(Min|T|Hour|H|Day|D|Week|W|Month|M)$")
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
    if isinstance(timeframe, Timeframe):
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
    return Timeframe(amount, unit)


def normalize_symbol(symbol: str) -> str:
    """Upper-case and validate a symbol (``A-Z 0-9 . - / _``); ``ValueError`` otherwise.

    >>> normalize_symbol(" brk.b ")
    'BRK.B'
    """
    if not isinstance(symbol, str):
        raise ValueError(f"symbol must be a string, got {type(symbol).__name__}")
    cleaned = symbol.strip().upper()
    if not cleaned:
        raise ValueError("symbol is empty")
    if not _SYMBOL_RE.match(cleaned):
        raise ValueError(
            f"symbol {symbol!r} has characters outside A-Z 0-9 . - / _"
        )
    return cleaned


def normalize_symbols(symbols: str | Iterable[str]) -> list[str]:
    """Normalised symbols, duplicates dropped, first-seen order kept; a string may list
    several separated by commas.

    >>> normalize_symbols("spy, aapl,SPY")
    ['SPY', 'AAPL']
    """
    if isinstance(symbols, str):
        symbols = [s for s in symbols.split(",") if s.strip()]
    return list(dict.fromkeys(normalize_symbol(s) for s in symbols))


def to_date(value: str | date | datetime | pd.Timestamp) -> date:
    """A calendar date from a str (``YYYY-MM-DD`` or ISO datetime), date or datetime.

    A tz-aware datetime is converted to New York first, so an instant maps to the
    trading date it belongs to.
    """
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime(warn=False)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(NY).date()
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            return to_date(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            raise ValueError(f"cannot read {value!r} as a date (expected YYYY-MM-DD)") from None
    raise ValueError(f"cannot read {value!r} as a date")


def to_utc_datetime(value: str | date | datetime | pd.Timestamp) -> datetime:
    """An aware UTC datetime. Naive datetimes mean UTC; a bare date means its UTC midnight."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime(warn=False)
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            return to_utc_datetime(to_date(text))
        try:
            return to_utc_datetime(datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            raise ValueError(f"cannot read {value!r} as a date or time") from None
    raise ValueError(f"cannot read {value!r} as a date or time")


def is_date_only(value: object) -> bool:
    """True when ``value`` names a whole day (a ``date`` or a ``YYYY-MM-DD`` string)."""
    if isinstance(value, str):
        return len(value.strip()) == 10
    return isinstance(value, date) and not isinstance(value, datetime)


def key_range(start: object, end: object, intraday: bool) -> tuple[int, int]:
    """Inclusive ``[lo, hi]`` bar-key range for ``start``..``end``.

    Date-only bounds are New York days: for intraday timeframes a date-only ``start`` is New
    York midnight and a date-only ``end`` includes that whole New York day. Datetimes are
    instants (naive = UTC). For daily-or-longer timeframes both bounds are session dates.
    """
    if start is None or end is None:
        raise ValueError("start and end are required (str, date or datetime)")
    if not intraday:
        lo, hi = date_to_key(to_date(start)), date_to_key(to_date(end))
    else:
        if is_date_only(start):
            lo = int(datetime.combine(to_date(start), time(0), NY).timestamp())
        else:
            lo = int(to_utc_datetime(start).timestamp())
        if is_date_only(end):
            hi = int(datetime.combine(to_date(end) + timedelta(days=1), time(0), NY).timestamp()) - 1
        else:
            hi = int(to_utc_datetime(end).timestamp())
    if lo > hi:
        raise ValueError(f"start {start!r} is after end {end!r}")
    return lo, hi


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
    """The canonical frame from ``(key, open, high, low, close, volume, vwap, trade_count)`` rows.

    This is the cache's read hot path (a one-month query must cost well under a millisecond),
    so it builds the frame from one float64 array with pandas' array-level constructors
    instead of the generic (and ~3x slower) ``DataFrame(dict)`` path.
    """
    arr = np.array(rows, dtype=np.float64).reshape(len(rows), 8)  # NULL (None) -> NaN
    return frame_from_columns(arr[:, 0].astype(np.int64), [arr[:, i] for i in range(1, 8)], timeframe)


def frame_from_columns(keys: np.ndarray, columns: list[np.ndarray], timeframe: str | Timeframe) -> pd.DataFrame:
    """The canonical frame from int64 bar keys and the seven bar columns as float64 arrays
    (NaN = missing; ``trade_count`` becomes a nullable ``Int64`` column)."""
    tf = parse_timeframe(timeframe)
    nanos = np.asarray(keys, dtype=np.int64) * 1_000_000_000
    counts = np.asarray(columns[6], dtype=np.float64)
    missing = np.isnan(counts)
    arrays = [np.asarray(c, dtype=np.float64) for c in columns[:6]]
    arrays.append(IntegerArray(np.where(missing, 0, counts).astype(np.int64), missing))
    dtype = _UTC_NS if tf.is_intraday else _NAIVE_NS
    index = pd.DatetimeIndex._simple_new(
        DatetimeArray._simple_new(nanos.view("M8[ns]"), dtype=dtype),
        name="timestamp" if tf.is_intraday else "date",
    )
    return pd.DataFrame._from_arrays(arrays, columns=_COLUMN_INDEX, index=index, verify_integrity=False)


_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
_NAIVE_NS = np.dtype("M8[ns]")
_COLUMN_INDEX = pd.Index(BAR_COLUMNS)


# ---------------------------------------------------------------------------
# Validation of incoming frames
# ---------------------------------------------------------------------------

_TIME_COLUMNS = ("timestamp", "date", "time", "datetime", "t")


def _time_values(frame: pd.DataFrame, names: dict[str, object] | None = None) -> pd.Series:
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
        return pd.Series(index, index=range(len(frame)))
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


def _keys_from_times(times: pd.Series, tf: Timeframe) -> np.ndarray:
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

    def flag(mask: np.ndarray, reason: str) -> None:
        reasons[mask & (reasons == "")] = reason

    with np.errstate(invalid="ignore"):
        prices = np.vstack([open_, high, low, close])
        flag(~np.isfinite(prices).all(axis=0), "NaN or infinite price")
        flag((prices <= 0).any(axis=0), "non-positive price")
        flag(~np.isfinite(volume), "NaN or infinite volume")
        flag(volume < 0, "negative volume")
        flag(np.isinf(vwap), "infinite vwap")
        flag(np.isinf(trade_count) | (trade_count < 0), "negative or infinite trade_count")
        # A relative tolerance absorbs float noise from vendors' rounding (1e-9 of the price).
        tol = 1e-9 * np.maximum(np.abs(high), 1.0)
        flag(high + tol < np.maximum(open_, close), "high below max(open, close)")
        flag(low - tol > np.minimum(open_, close), "low above min(open, close)")
    return reasons


def normalize_bars(data: pd.DataFrame, timeframe: str | Timeframe = "1Day") -> pd.DataFrame:
    """Validate ``data`` and return a frame with an int64 ``key`` column plus the bar columns.

    Raises ``ValueError`` naming the problem for: not a DataFrame, no ``close`` column, no
    time index or column, NaN or infinite prices, negative or non-finite volume, ``high``
    below max(open, close) or ``low`` above min(open, close), duplicate bar times.
    Missing ``open``/``high``/``low`` default to ``close``; missing ``volume`` to 0;
    missing ``vwap``/``trade_count`` to NULL. alpaca-py's ``trade_count`` (and the seed's
    ``transactions``) are both accepted.
    """
    tf = parse_timeframe(timeframe)
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    # Column lookup by lower-cased name, without copying the frame.
    names = {str(c).lower(): c for c in data.columns}
    if "close" not in names:
        raise ValueError("data has no 'close' column")
    if "trade_count" not in names and "transactions" in names:
        names["trade_count"] = names["transactions"]
    frame = data
    n = len(frame)
    keys = _keys_from_times(_time_values(frame, names), tf)

    def numeric(name: str, default: float | None) -> np.ndarray:
        if name in names:
            col = frame[names[name]]
            if col.dtype.kind in "fiu":  # plain numpy numbers: no parsing needed
                return col.to_numpy(dtype="float64")
            try:
                return pd.to_numeric(col, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
            except (ValueError, TypeError):
                raise ValueError(f"column {name!r} holds non-numeric values") from None
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
    if n > 1 and not (np.diff(keys) > 0).all():
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        repeated = int((np.diff(keys) == 0).sum())
        if repeated:
            raise ValueError(f"duplicate bar times in one frame ({repeated} duplicate(s))")
    columns = {"key": keys, "open": open_, "high": high, "low": low, "close": close,
               "volume": volume, "vwap": vwap, "trade_count": trade_count}
    if order is not None:
        columns = {k: (v if k == "key" else v[order]) for k, v in columns.items()}
    return pd.DataFrame(columns)


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
)

_OCC_RE = re.compile(r"^([A-Z0-9.]{1,6})(\d{6})([CP])(\d{8})$")


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
    match = _OCC_RE.match(str(symbol).strip().upper())
    if not match:
        raise ValueError(f"not an OCC option symbol: {symbol!r} (expected e.g. AAPL240126P00050000)")
    root, ymd, kind, strike = match.groups()
    expiration = date(2000 + int(ymd[:2]), int(ymd[2:4]), int(ymd[4:6]))
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

    def column(name: str, default: float) -> np.ndarray:
        if name not in data:
            return np.full(n, default, dtype="float64")
        col = data[name]
        if col.dtype.kind in "fiu":  # plain numpy numbers: no parsing needed
            return col.to_numpy(dtype="float64")
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

    reasons = bar_problems(*(column(c, np.nan) for c in PRICE_COLUMNS), column("volume", 0.0),
                           column("vwap", np.nan), column("trade_count", np.nan))
    keys = _keys_from_times(pd.Series(times), tf)
    duplicated = pd.Series(keys).duplicated(keep=False).to_numpy()
    reasons[duplicated & (reasons == "")] = "duplicate bar time"
    bad = reasons != ""
    rejections = [(t.isoformat(), str(r)) for t, r in zip(times[bad], reasons[bad], strict=True)]
    return data[~bad], rejections
