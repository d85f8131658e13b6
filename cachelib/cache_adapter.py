"""The seed's backward-compatible interface, and the import of its deprecated JSON file cache.

Old code keeps working unchanged on top of :class:`~cachelib.store.TradingCacheManager`::

    from cachelib import cache_adapter

    df = cache_adapter.get_market_data("SPY", "2025-01-01", "2025-01-31", source="alpaca")
    cache_adapter.set_market_data("SPY", "2025-01-01", "2025-01-31", "alpaca", df)
    hourly = cache_adapter.get_market_data("SPY", "2025-01-01", "2025-01-31", timeframe="1Hour")

The seed folded the timeframe into the source name (``"alpaca_1Hour"``); such a source is
still accepted and split into source ``alpaca`` and timeframe ``1Hour``.

The legacy file cache (``.cache/market_data/{SYM}_{start}_{end}_{source}.json``) is brought
into the store by :func:`migrate_legacy` (CLI: ``cache-manager migrate-legacy DIR``). Each
file is imported whole or not at all, and a bad file is reported with its reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from .bars import (
    BAR_COLUMNS,
    key_range,
    normalize_bars,
    normalize_symbol,
    parse_timeframe,
    rows_of_symbol,
    to_date,
    to_utc_datetime,
)
from .store import TradingCacheManager, default_db_path, is_postgres_url
from .store.files import sqlite_path
from .store.series import write_feed

__all__ = [
    "get_market_data",
    "set_market_data",
    "default_cache",
    "close_default_cache",
    "split_source",
    "LEGACY_FIELDS",
    "LegacyImportResult",
    "LegacyMigrationReport",
    "import_legacy_file",
    "migrate_legacy",
]

log = logging.getLogger("cachelib.cache_adapter")

#: The source name that means "whichever source holds the bar, by the store's priority".
ANY_SOURCE = "any"

_default_lock = threading.Lock()
_default_cache: TradingCacheManager | None = None
_default_path: Path | str | None = None


# ---------------------------------------------------------------------------
# The default cache
# ---------------------------------------------------------------------------


def _default_location() -> Path | str:
    """Where the default cache is now: the ``$TRADING_CACHE_URL`` of a PostgreSQL cache as
    given, or the SQLite file (``$TRADING_CACHE_URL`` as ``sqlite:///``, else
    ``$TRADING_CACHE_DB``) as an absolute path, so a later ``chdir`` cannot move it."""
    location = default_db_path()
    if is_postgres_url(location):
        return location
    return sqlite_path(location).resolve()


def default_cache() -> TradingCacheManager:
    """The module's shared manager on ``$TRADING_CACHE_URL`` (a ``postgresql://`` or
    ``sqlite:///`` URL), else ``$TRADING_CACHE_DB``, else ``.cache/trading_cache.db``.

    Created on first use and re-created when the variables (hence the location) change, so a
    test or a script that points them elsewhere is obeyed at once.
    """
    global _default_cache, _default_path
    path = _default_location()
    with _default_lock:
        if _default_cache is None or _default_path != path:
            if _default_cache is not None:
                _default_cache.close()
            _default_cache = TradingCacheManager(path)
            _default_path = path
        return _default_cache


def close_default_cache() -> None:
    """Close and forget the shared manager (the next call opens it again)."""
    global _default_cache, _default_path
    with _default_lock:
        if _default_cache is not None:
            _default_cache.close()
        _default_cache = None
        _default_path = None


@contextlib.contextmanager
def _cache_for(db_path: str | os.PathLike[str] | None) -> Iterator[TradingCacheManager]:
    """The shared manager, or a manager on ``db_path`` that is closed after the call."""
    if db_path is None:
        yield default_cache()
        return
    with TradingCacheManager(db_path) as cache:
        yield cache


# ---------------------------------------------------------------------------
# Sources with a folded timeframe
# ---------------------------------------------------------------------------


def split_source(source: str, timeframe: str = "1Day") -> tuple[str, str]:
    """``(source, timeframe)`` from a source that may carry the seed's timeframe suffix.

    The default ``1Day`` yields to a folded suffix; any other timeframe must agree with it.

    >>> split_source("alpaca_1Hour")
    ('alpaca', '1Hour')
    >>> split_source("alpha_vantage", "5Min")
    ('alpha_vantage', '5Min')
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError("source must be a non-empty string such as 'alpaca' or 'alpaca_1Hour'")
    text = source.strip()
    tf = parse_timeframe(timeframe).name
    base, sep, suffix = text.rpartition("_")
    if sep and base:
        try:
            folded = parse_timeframe(suffix).name
        except ValueError:
            return text, tf  # an underscore that is part of the name, e.g. "alpha_vantage"
        if tf not in ("1Day", folded):
            raise ValueError(
                f"source {source!r} names timeframe {folded} but timeframe={timeframe!r} was given; "
                "pass one of them"
            )
        return base, folded
    return text, tf


def _read_source(source: str | None, timeframe: str) -> tuple[str | None, str]:
    if source is None or (isinstance(source, str) and source.strip().lower() == ANY_SOURCE):
        return None, parse_timeframe(timeframe).name
    base, tf = split_source(source, timeframe)
    return (None if base.lower() == ANY_SOURCE else base), tf


# ---------------------------------------------------------------------------
# The seed's functions
# ---------------------------------------------------------------------------


def get_market_data(
    symbol: str,
    start_date: Any,
    end_date: Any,
    source: str = ANY_SOURCE,
    timeframe: str = "1Day",
    db_path: str | os.PathLike[str] | None = None,
    feed: str | None = None,
    adjustment: str = "raw",
    as_of: Any = None,
) -> pd.DataFrame | None:
    """Cached bars of ``symbol`` in ``[start_date, end_date]``, or ``None`` when there are none.

    ``source="any"`` takes each bar from the best source that holds it (the store's
    :data:`~cachelib.store.SOURCE_PRIORITY`). The frame is the store's canonical shape.
    ``feed`` (``"sip"``, ``"iex"``...) reads only that feed's bars; ``None`` lets each source
    answer from its best feed (:meth:`~cachelib.store.TradingCacheManager.get`).
    ``adjustment`` (``raw``, ``split``, ``dividend`` or ``all``) and ``as_of`` (a date; default
    today in New York) adjust the raw bars at read time by the cached corporate actions with
    ex-date <= ``as_of``, as :meth:`~cachelib.store.TradingCacheManager.get` does.

    >>> get_market_data("SPY", "2025-01-01", "2025-01-31", source="alpaca_1Hour")  # doctest: +SKIP
    >>> get_market_data("NVDA", "2024-06-03", "2024-06-14", adjustment="split")  # doctest: +SKIP
    """
    src, tf = _read_source(source, timeframe)
    with _cache_for(db_path) as cache:
        return cache.get(symbol, start_date, end_date, source=src, timeframe=tf, feed=feed,
                         adjustment=adjustment, as_of=as_of)


def set_market_data(
    symbol: str,
    start_date: Any,
    end_date: Any,
    source: str,
    data: pd.DataFrame,
    timeframe: str = "1Day",
    db_path: str | os.PathLike[str] | None = None,
    feed: str | None = None,
) -> int:
    """Store the bars of ``data`` that fall in ``[start_date, end_date]``; returns rows written.

    ``feed`` is the vendor feed the bars came from; ``None`` files them under ``"unknown"``.

    The bounds are dates (New York days): for an intraday timeframe they include the whole
    of both days. Bars outside them are dropped, but the whole frame must be valid. The
    write is one transaction.

    >>> set_market_data("SPY", "2025-01-02", "2025-01-31", "alpaca", df)  # doctest: +SKIP
    20
    """
    src, tf_name = split_source(source, timeframe)
    feed = write_feed(feed)  # checked before any early return
    if src.lower() == ANY_SOURCE:
        raise ValueError("source 'any' is for reading; name the source the bars came from")
    tf = parse_timeframe(tf_name)
    sym = normalize_symbol(symbol)
    first, last = to_date(start_date), to_date(end_date)
    if first > last:
        raise ValueError(f"start_date {start_date!r} is after end_date {end_date!r}")
    if isinstance(data, pd.DataFrame) and isinstance(data.index, pd.MultiIndex):
        data = rows_of_symbol(data, sym)
    bars = normalize_bars(data, tf)
    lo, hi = key_range(first, last, tf.is_intraday)
    keys = bars["key"].to_numpy()
    bars = bars[(keys >= lo) & (keys <= hi)]
    if bars.empty:
        return 0
    if tf.is_intraday:
        index = pd.DatetimeIndex(pd.to_datetime(bars["key"].to_numpy(), unit="s", utc=True), name="timestamp")
    else:
        index = pd.DatetimeIndex(pd.to_datetime(bars["key"].to_numpy(), unit="s"), name="date")
    frame = pd.DataFrame({c: bars[c].to_numpy() for c in BAR_COLUMNS}, index=index)
    with _cache_for(db_path) as cache:
        return cache.set(sym, frame, source=src, timeframe=tf.name, feed=feed)


# ---------------------------------------------------------------------------
# The legacy JSON file cache
# ---------------------------------------------------------------------------

#: Fields every bar of a legacy file must have.
LEGACY_FIELDS: tuple[str, ...] = ("date", "open", "high", "low", "close", "volume")

# {SYM}_{start}_{end}_{source}.json; the symbol has no underscore, the source may have some
# (and may end in a folded timeframe such as "_1Hour").
_LEGACY_NAME = re.compile(
    r"^(?P<symbol>[^_]+)_(?P<start>\d{4}-\d{2}-\d{2})_(?P<end>\d{4}-\d{2}-\d{2})_(?P<source>.+)\.json$",
    re.ASCII,
)


#: A legacy file larger than this is refused before it is parsed (the old cache wrote one
#: symbol's range per file: a few MiB at most).
LEGACY_MAX_BYTES = 256 * 1_048_576
# Columns of a legacy bar that are read (the rest of a record is ignored).
_LEGACY_READ = frozenset((*LEGACY_FIELDS, "vwap", "trade_count", "transactions"))
_LEGACY_SOURCE = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)


class _LegacyFileError(ValueError):
    """A legacy file that cannot be imported; the message is the reason shown to people."""


@dataclass
class LegacyImportResult:
    """What happened to one legacy file. ``rows`` counts bars written (or, in a dry run,
    bars that would be written); ``error`` is the reason a file was refused."""

    path: Path
    ok: bool
    rows: int = 0
    symbol: str | None = None
    source: str | None = None
    timeframe: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "path": str(self.path),
            "ok": self.ok,
            "rows": self.rows,
            "symbol": self.symbol,
            "source": self.source,
            "timeframe": self.timeframe,
            "error": self.error,
        }


@dataclass
class LegacyMigrationReport:
    """The outcome of :func:`migrate_legacy`: one result per ``*.json`` file, in name order."""

    directory: Path
    dry_run: bool
    results: list[LegacyImportResult] = field(default_factory=list)

    @property
    def files_seen(self) -> int:
        return len(self.results)

    @property
    def imported(self) -> list[LegacyImportResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[LegacyImportResult]:
        return [r for r in self.results if not r.ok]

    @property
    def rows_imported(self) -> int:
        return sum(r.rows for r in self.imported)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "dry_run": self.dry_run,
            "files_seen": self.files_seen,
            "files_imported": len(self.imported),
            "files_failed": len(self.failed),
            "rows_imported": self.rows_imported,
            "files": [r.to_dict() for r in self.results],
        }


def _read_legacy_file(path: Path) -> tuple[str, str, str, pd.DataFrame]:
    """``(symbol, source, timeframe, bars)`` of a legacy file; ``_LegacyFileError`` if unusable.

    Nothing in the file is trusted: it is read only below :data:`LEGACY_MAX_BYTES`, JSON
    nested past what Python can parse is refused, every bar's ``date`` must be a date string
    and its fields plain values. (:func:`import_legacy_file` turns any other exception that
    odd content provokes into the file's reason as well.)
    """
    match = _LEGACY_NAME.match(path.name)
    if not match:
        raise _LegacyFileError("file name does not match SYMBOL_YYYY-MM-DD_YYYY-MM-DD_source.json")
    try:
        name_symbol = normalize_symbol(match["symbol"])
        first, last = date.fromisoformat(match["start"]), date.fromisoformat(match["end"])
    except ValueError as exc:
        raise _LegacyFileError(f"bad file name: {exc}") from None
    if first > last:
        raise _LegacyFileError(f"bad file name: start {first} is after end {last}")
    too_big = _LegacyFileError(
        f"file is larger than {LEGACY_MAX_BYTES // 1_048_576} MiB (LEGACY_MAX_BYTES); "
        "a legacy cache file is far smaller, so it is not one"
    )
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block open(), a device never ends
            raise _LegacyFileError("not a regular file (a folder, FIFO, device or socket); nothing was read")
        if info.st_size > LEGACY_MAX_BYTES:  # refused before a byte is read
            raise too_big
        with open(path, "rb") as fh:
            # Bounded again on what is read: a file may grow meanwhile.
            raw = fh.read(LEGACY_MAX_BYTES + 1)
        if len(raw) > LEGACY_MAX_BYTES:
            raise too_big
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _LegacyFileError(f"cannot read the file: {exc}") from None
    try:
        payload = json.loads(text)
    except RecursionError:
        raise _LegacyFileError("bad JSON: nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python converts
        raise _LegacyFileError(f"bad JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise _LegacyFileError("bad JSON layout: expected an object with 'metadata' and 'data'")
    metadata = payload.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _LegacyFileError("'metadata' is not an object")
    if "data" not in payload:
        raise _LegacyFileError("missing field 'data'")
    records = payload["data"]
    if not isinstance(records, list):
        raise _LegacyFileError("'data' is not a list of bars")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise _LegacyFileError(f"bar {i} is not an object")
        missing = [name for name in LEGACY_FIELDS if name not in record]
        if missing:
            raise _LegacyFileError(f"bar {i} is missing field(s) {', '.join(missing)}")
        when = record["date"]
        if not isinstance(when, str):
            # json gives numbers, bools and null as such: 12345 is not a date (pandas would
            # read it as nanoseconds after 1970).
            raise _LegacyFileError(f"bar {i}: 'date' must be a date string such as '2024-01-02', got {when!r}")
        try:
            to_utc_datetime(when, f"bar {i} date")
        except ValueError as exc:
            raise _LegacyFileError(str(exc)) from None
        for name, value in record.items():
            if isinstance(value, (dict, list, bool)) and str(name).lower() in _LEGACY_READ:
                raise _LegacyFileError(f"bar {i}: field {name!r} holds {type(value).__name__}, not a number")

    symbol = name_symbol
    if metadata.get("symbol") is not None:
        if not isinstance(metadata["symbol"], str):
            raise _LegacyFileError(f"bad metadata symbol: not a string ({type(metadata['symbol']).__name__})")
        try:
            symbol = normalize_symbol(metadata["symbol"])
        except ValueError as exc:
            raise _LegacyFileError(f"bad metadata symbol: {exc}") from None
        if symbol != name_symbol:
            raise _LegacyFileError(
                f"symbol mismatch: the file name says {name_symbol}, the metadata says {symbol}"
            )
    # Metadata wins over the file name for source and timeframe, field by field.
    try:
        source, folded = _unfold(match["source"])
        if metadata.get("source"):
            source, meta_folded = _unfold(_metadata_text(metadata, "source"))
            folded = meta_folded or folded
        if metadata.get("timeframe"):
            timeframe = parse_timeframe(_metadata_text(metadata, "timeframe")).name
        else:
            timeframe = folded or "1Day"
        if not _LEGACY_SOURCE.fullmatch(source):
            raise ValueError(f"source {source[:80]!r} is not a name such as 'alpaca' (ASCII, up to 64)")
    except ValueError as exc:
        raise _LegacyFileError(f"bad source or timeframe: {exc}") from None
    # Only the bar fields go into the frame: an extra "timestamp" key must not replace "date".
    columns = [c for c in dict.fromkeys(k for r in records for k in r) if str(c).lower() in _LEGACY_READ]
    frame = pd.DataFrame.from_records(records, columns=columns) if records else pd.DataFrame()
    return symbol, source.lower(), timeframe, frame


def _metadata_text(metadata: dict, key: str) -> str:
    value = metadata[key]
    if not isinstance(value, str):
        raise ValueError(f"metadata {key} is not a string ({type(value).__name__})")
    return value


def _outside_range(bars: pd.DataFrame, first: date, last: date, timeframe: str) -> str | None:
    """The reason when a normalised bar lies outside the file name's ``first``..``last``."""
    tf = parse_timeframe(timeframe)
    lo, hi = key_range(first, last, tf.is_intraday)
    keys = bars["key"].to_numpy()
    outside = (keys < lo) | (keys > hi)
    if not outside.any():
        return None
    when = pd.Timestamp(int(keys[outside][0]), unit="s", tz="UTC")
    shown = when.isoformat() if tf.is_intraday else when.date().isoformat()
    return (f"{int(outside.sum())} bar(s) outside the file name's range {first}..{last}, "
            f"the first at {shown}")


def _unfold(source: str) -> tuple[str, str | None]:
    """``(source, folded timeframe or None)``: ``"alpaca_1Hour"`` -> ``("alpaca", "1Hour")``."""
    base, tf = split_source(source)
    return (base, tf) if base != source.strip() else (base, None)


def import_legacy_file(
    cache: TradingCacheManager | None, path: str | os.PathLike[str], dry_run: bool = False
) -> LegacyImportResult:
    """Import one legacy JSON file in one transaction: all its bars, or none.

    A bad file (name, JSON, missing fields, invalid bars, symbol mismatch) gives a result
    with ``ok=False`` and the reason; it never raises for the file's content. With
    ``dry_run`` the file is validated as the store would and nothing is written (``cache``
    may then be ``None``). Bars get the store's normal TTL rule; re-importing upserts.

    >>> path = "market_data/SPY_2025-01-02_2025-01-31_alpaca.json"
    >>> result = import_legacy_file(cache, path)  # doctest: +SKIP
    >>> result.ok, result.rows, result.timeframe  # doctest: +SKIP
    (True, 20, '1Day')
    """
    path = Path(path)
    if cache is None and not dry_run:
        raise ValueError("a cache is needed unless dry_run=True")
    try:
        symbol, source, timeframe, frame = _read_legacy_file(path)
    except _LegacyFileError as exc:
        return LegacyImportResult(path, ok=False, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - any content (MemoryError, RecursionError...) is the file's fault
        return LegacyImportResult(path, ok=False, error=_reason(exc))
    result = LegacyImportResult(path, ok=True, symbol=symbol, source=source, timeframe=timeframe)
    if frame.empty:
        return result
    try:
        bars = normalize_bars(frame, timeframe)  # the store's own validation, before any write
        match = _LEGACY_NAME.match(path.name)
        assert match is not None  # _read_legacy_file checked it
        outside = _outside_range(bars, date.fromisoformat(match["start"]), date.fromisoformat(match["end"]),
                                 timeframe)
        if outside:
            raise ValueError(outside)
    except Exception as exc:  # noqa: BLE001 - odd values surface as TypeError, OverflowError... in pandas
        result.ok, result.rows, result.error = False, 0, f"invalid bars: {_reason(exc, plain=True)}"
        return result
    # Only the write is left: a failure now is the database's (locked, disk full), not the
    # file's, and propagates.
    if dry_run:
        result.rows = len(bars)
    else:
        assert cache is not None  # checked on entry
        result.rows = cache.set(symbol, frame, source=source, timeframe=timeframe)
    return result


def _reason(exc: BaseException, plain: bool = False) -> str:
    """A refused file's reason from any exception, cut to a readable length."""
    text = str(exc) if plain and isinstance(exc, ValueError) else f"unreadable content ({type(exc).__name__}: {exc})"
    return text if len(text) <= 300 else text[:300] + "..."


def migrate_legacy(
    cache: TradingCacheManager | None, directory: str | os.PathLike[str], dry_run: bool = False
) -> LegacyMigrationReport:
    """Import every ``*.json`` file of the legacy cache directory (not recursive).

    Each file is all or nothing; failures are collected, not raised. Running it again is
    harmless (bars are upserted). ``dry_run`` validates everything and writes nothing.

    >>> report = migrate_legacy(cache, ".cache/market_data", dry_run=True)  # doctest: +SKIP
    >>> report.files_seen, len(report.failed), report.rows_imported  # doctest: +SKIP
    (54, 0, 10873)
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory (expected the legacy .cache/market_data)")
    if cache is None and not dry_run:
        raise ValueError("a cache is needed unless dry_run=True")
    report = LegacyMigrationReport(directory, dry_run)
    # Every *.json entry is listed, also one that is not a regular file (it is refused unread).
    for path in sorted(p for p in directory.iterdir() if p.suffix == ".json"):
        result = import_legacy_file(cache, path, dry_run=dry_run)
        if result.ok:
            log.info("legacy %s: %d bars%s", path.name, result.rows, " (dry run)" if dry_run else "")
        else:
            log.info("legacy %s refused: %s", path.name, result.error)  # the report carries it
        report.results.append(result)
    return report
