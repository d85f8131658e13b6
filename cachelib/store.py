"""The SQLite trading cache: bars of any timeframe, option-chain snapshots, trade history.

Design (see README "Library API" for usage)
-------------------------------------------
* **One file, one settings mapping.** Every connection gets :data:`SQLITE_SETTINGS` (WAL,
  ``synchronous=NORMAL``, ``busy_timeout``, foreign keys). Connections are per thread and per
  process (reopened after ``fork``), so a manager may be shared by threads.
* **Writers take ``BEGIN IMMEDIATE``**, so a write transaction holds the write lock from its
  first statement and can never fail half-way with "database is locked"; only that error is
  retried (bounded by ``timeout``), anything else propagates. One public call is one
  transaction: a rejected or interrupted batch leaves the store as it was.
* **Bars** live in ``bars``, a ``WITHOUT ROWID`` table clustered on its primary key
  ``(series_id, ts)``. A *series* is one ``(asset_type, symbol, timeframe, source)`` and is
  interned in the small ``series`` table, so the logical key of a bar is exactly
  ``(asset_type, symbol, timeframe, source, bar time)`` while each row stores one small
  integer instead of four strings (≈ 60 % fewer bytes per bar, no secondary index).
  ``ts`` is integer seconds since the epoch (UTC): the bar's start for intraday timeframes,
  UTC midnight of the session date for daily-or-longer ones (see :mod:`cachelib.bars`).
* **Age-based TTL** (:func:`ttl_expiry`): age = today's New York date − the bar's session date
  in calendar days; age ≥ 2 → the row expires in 10 years, otherwise in 24 hours.
  ``ttl_hours`` overrides it for every row of a call (``0`` = already expired). Expiry is an
  integer UTC epoch; "now" is read once per call from :func:`cachelib.clock.now_utc`.
* **Coverage** records which sessions a source was asked for, including sessions that had no
  bars, so :meth:`TradingCacheManager.missing_sessions` can tell the sync what to fetch.
* **Schema versions** are ``PRAGMA user_version`` with a forward-only registry
  (:data:`MIGRATIONS`). Version 1 also imports the rows of the seed's ``market_cache`` table
  when an old file has one.
* **Only our files are touched.** Ours carry ``PRAGMA application_id`` :data:`APPLICATION_ID`
  (older ones are recognised by their tables and marked). Anything else at ``db_path`` is
  inspected read-only (``immutable``) and refused with :class:`DatabaseFileError`, byte-identical.
  A file or folder we cannot write is opened read-only: reads work, writes say why they cannot.

Source priority: when ``get(source=None)`` finds the same bar from several sources it returns
one row per bar, from the first source in :data:`SOURCE_PRIORITY` (unknown sources rank after
the listed ones, alphabetically).
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import market_hours
from .bars import (
    KEY_MAX,
    KEY_MIN,
    NY,
    OPTION_COLUMNS,
    check_count,
    check_number,
    clamp_key,
    parse_occ_symbol,
    range_end_key,
    range_start_key,
    date_to_key,
    frame_from_columns,
    frame_from_rows,
    key_range,
    rows_of_symbol,
    key_to_date,
    normalize_bars,
    normalize_option_type,
    normalize_symbol,
    normalize_symbols,
    occ_symbol,
    parse_timeframe,
    to_date,
    to_utc_datetime,
)
from .clock import now_utc

__all__ = [
    "TradingCacheManager",
    "DatabaseFileError",
    "CacheNotFoundError",
    "APPLICATION_ID",
    "database_files",
    "SOURCE_PRIORITY",
    "SQLITE_SETTINGS",
    "SCHEMA_VERSION",
    "default_db_path",
    "ttl_expiry",
]

log = logging.getLogger("cachelib.store")

#: Sources in the order ``get(source=None)`` prefers them when several hold the same bar.
SOURCE_PRIORITY: tuple[str, ...] = ("alpaca", "polygon", "alpha_vantage", "legacy", "demo")

#: Applied to every connection. busy_timeout is set from the manager's ``timeout``.
SQLITE_SETTINGS: dict[str, Any] = {
    "journal_mode": "WAL",  # readers never block the writer, and the writer never blocks readers
    "synchronous": "NORMAL",  # durable at checkpoints; in WAL a crash loses no committed txn's integrity
    "foreign_keys": "ON",
    "temp_store": "MEMORY",
    "cache_size": -32_000,  # 32 MB page cache per connection
}

HISTORICAL_TTL = timedelta(days=3652)  # "10 years"
RECENT_TTL = timedelta(hours=24)
RECENT_AGE_DAYS = 2  # age >= 2 calendar days (New York) is historical
_DAY = 86_400
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_HEADER_BYTES = 100

#: ``PRAGMA application_id`` of our files ("CACH"): a file with another non-zero id, or with
#: tables that are not ours, belongs to another application and is never written to.
APPLICATION_ID = 0x43414348

#: The sidecar files SQLite keeps next to the database (WAL, its index, rollback journal).
_SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
#: Longest ``timeout`` SQLite's ``busy_timeout`` (a C int of milliseconds) can hold.
_MAX_TIMEOUT_S = (2**31 - 1) // 1000
#: How long ``vacuum`` may hold the write lock waiting for readers before it checkpoints
#: what it can instead (a concurrent writer waits at most about this long for it).
_CHECKPOINT_WAIT_S = 0.2

TRADE_COLUMNS: tuple[str, ...] = (
    "trade_id",
    "symbol",
    "entry_date",
    "entry_price",
    "quantity",
    "exit_date",
    "exit_price",
    "exit_reason",
    "realized_pnl",
    "realized_pnl_pct",
    "holding_period_hours",
    "strategy_name",
    "signal_strength",
    "signal_confidence",
    "broker_account",
    "max_profit_pct",
    "max_drawdown_pct",
)
_TRADE_TIME_COLUMNS = ("entry_date", "exit_date")
_TRADE_REQUIRED = ("trade_id", "symbol", "entry_date", "entry_price", "quantity")
MAX_TRADE_QUANTITY = 1e15  # shares or contracts in one trade: far beyond any real order
MAX_TRADE_ID_LENGTH = 200


class DatabaseFileError(ValueError):
    """The file at ``db_path`` is not a usable cache database (it is left untouched)."""


class CacheNotFoundError(DatabaseFileError):
    """``create=False`` and there is no cache at ``db_path`` (nothing was created)."""


def default_db_path() -> Path:
    """``$TRADING_CACHE_DB``, else ``.cache/trading_cache.db`` in the working directory."""
    return Path(os.environ.get("TRADING_CACHE_DB") or Path(".cache") / "trading_cache.db")


def _as_path(db_path: Any) -> Path:
    """``db_path`` as a :class:`Path`, or a ``ValueError`` saying what was wrong with it.

    ``str``, ``bytes`` and ``os.PathLike`` are paths; anything else (``123``, ``True``) is
    refused here rather than as a ``TypeError`` deep inside ``pathlib`` or ``sqlite3``.
    """
    if db_path is None:
        return default_db_path()
    try:
        raw = os.fspath(db_path)
    except TypeError:
        raise ValueError(
            f"db_path must be a file path (str, bytes or os.PathLike), got {type(db_path).__name__} "
            f"{db_path!r}"
        ) from None
    text = os.fsdecode(raw)
    if not text.strip():
        raise ValueError("db_path is empty; give a file path such as .cache/trading_cache.db")
    if "\x00" in text:
        raise ValueError(f"db_path {text!r} contains a NUL byte; give a plain file path")
    if text.strip() == ":memory:" or text.startswith("file::memory:"):
        raise ValueError(
            "an in-memory database cannot be shared by the manager's per-thread connections; "
            "give a file path (a temporary file works for throw-away caches)"
        )
    return Path(text)


def database_files(db_path: str | bytes | os.PathLike[str]) -> tuple[Path, ...]:
    """The real paths (symlinks resolved) of the database at ``db_path`` and of its sidecars
    ``-wal``, ``-shm`` and ``-journal``, whether they exist or not.

    SQLite names the sidecars after the *resolved* database path, so a command that must
    never write over the cache (``export --output``) compares resolved output paths with these.
    """
    try:
        path = _as_path(db_path).resolve()
        sidecars = [Path(f"{path}{suffix}").resolve() for suffix in _SIDECAR_SUFFIXES]
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise DatabaseFileError(f"cannot resolve {db_path!r}: {exc}; check the path") from None
    return (path, *sidecars)


def _file_error(path: Path, exc: sqlite3.Error, read_only_reason: str | None = None) -> Exception:
    """The :class:`DatabaseFileError` for a SQLite error that is about the *file* (damaged,
    read-only, cannot be opened), naming the path and what to do; other errors are returned
    as they are (a broken query must stay visible as itself)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return DatabaseFileError(
            f"{path} is damaged or not a SQLite database ({exc}); it was left as it is. Restore it "
            "from a backup, or move it away and sync again to rebuild the cache"
        )
    if name.startswith("SQLITE_READONLY"):
        why = read_only_reason or str(exc)
        return DatabaseFileError(
            f"{path} is read-only ({why}); reads work, but writing needs a writable file and folder: "
            "fix the permissions, or choose another --db-path or TRADING_CACHE_DB"
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return DatabaseFileError(
            f"cannot open {path} ({exc}); check that the file and its folder exist and are accessible"
        )
    return exc


def _raise_file_error(conn: Any, exc: sqlite3.Error) -> None:
    err = _file_error(conn.db_path, exc, conn.read_only_reason) if isinstance(conn, _Connection) else exc
    if err is exc:
        raise exc
    raise err from None


class _Cursor(sqlite3.Cursor):
    """A cursor whose file-level failures become :class:`DatabaseFileError` (see :func:`_file_error`).

    A damaged page is often only met while stepping through rows, so fetches are covered too.
    """

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            _raise_file_error(self.connection, exc)
            raise

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.DatabaseError as exc:
            _raise_file_error(self.connection, exc)
            raise

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as exc:
            _raise_file_error(self.connection, exc)
            raise

    def fetchmany(self, size: int = 1) -> list[Any]:
        try:
            return super().fetchmany(size)
        except sqlite3.DatabaseError as exc:
            _raise_file_error(self.connection, exc)
            raise

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as exc:
            _raise_file_error(self.connection, exc)
            raise

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as exc:
            _raise_file_error(self.connection, exc)
            raise


class _Connection(sqlite3.Connection):
    """The manager's connections: statements run on :class:`_Cursor`, so a damaged or read-only
    file raises :class:`DatabaseFileError` naming ``db_path`` wherever it is first met."""

    db_path: Path = Path()
    read_only_reason: str | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        return self.cursor(_Cursor).execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        return self.cursor(_Cursor).executemany(sql, parameters)


#: The longest ``ttl_hours`` accepted: 100 years (the default for history is 10 years).
MAX_TTL_HOURS = 100 * 8766


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
    today_n = (today - date(1970, 1, 1)).days
    age = today_n - np.asarray(session_days, dtype=np.int64)
    return np.where(
        age >= RECENT_AGE_DAYS,
        now_s + int(HISTORICAL_TTL.total_seconds()),
        now_s + int(RECENT_TTL.total_seconds()),
    ).astype(np.int64)


def _session_days_of_keys(keys: np.ndarray, intraday: bool) -> np.ndarray:
    """New York session day numbers of bar keys."""
    if not intraday:
        return keys // _DAY
    idx = pd.DatetimeIndex(pd.to_datetime(keys, unit="s", utc=True)).tz_convert(NY).tz_localize(None)
    return idx.as_unit("s").asi8 // _DAY


# ---------------------------------------------------------------------------
# Schema and migrations
# ---------------------------------------------------------------------------


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run DDL statements one by one: ``executescript`` would COMMIT the open migration
    transaction first, breaking all-or-nothing upgrades."""
    for statement in script.split(";"):
        body = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--"))
        if body.strip():
            conn.execute(body)


def _migration_1(conn: sqlite3.Connection) -> None:
    """Initial schema; imports the seed's ``market_cache`` rows if the file has that table."""
    _run_script(conn,
        """
        CREATE TABLE IF NOT EXISTS series (
            series_id  INTEGER PRIMARY KEY,
            asset_type TEXT NOT NULL,
            symbol     TEXT NOT NULL,
            timeframe  TEXT NOT NULL,
            source     TEXT NOT NULL,
            UNIQUE (asset_type, symbol, timeframe, source)
        );
        -- One row per bar, clustered on (series, time): a range query is one b-tree walk.
        -- series_id is deliberately not declared a foreign key: series rows are never deleted,
        -- and SQLite's per-row foreign-key check cost 15-20 % of a bulk write (bench_store).
        CREATE TABLE IF NOT EXISTS bars (
            series_id   INTEGER NOT NULL,
            ts          INTEGER NOT NULL,           -- epoch seconds UTC (daily: session date at 00:00Z)
            open        REAL NOT NULL,
            high        REAL NOT NULL,
            low         REAL NOT NULL,
            close       REAL NOT NULL,
            volume      NUMERIC NOT NULL,           -- integral volumes take 1-4 bytes, not 8
            vwap        REAL,
            trade_count INTEGER,
            expires_at  INTEGER NOT NULL,           -- epoch seconds UTC
            PRIMARY KEY (series_id, ts)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS raw_options_chain (
            symbol             TEXT NOT NULL,
            trading_date       TEXT NOT NULL,       -- New York date, YYYY-MM-DD
            contract_symbol    TEXT NOT NULL,
            source             TEXT NOT NULL,
            strike             REAL NOT NULL,
            option_type        TEXT NOT NULL CHECK (option_type IN ('call', 'put')),
            expiration         TEXT NOT NULL,       -- YYYY-MM-DD
            bid REAL, ask REAL, last REAL,
            volume INTEGER, open_interest INTEGER,
            implied_volatility REAL, delta REAL, gamma REAL, theta REAL, vega REAL, rho REAL,
            underlying_price   REAL,
            data_quality_score REAL NOT NULL DEFAULT 1.0,
            snapshot_time      INTEGER NOT NULL,    -- epoch seconds UTC
            expires_at         INTEGER NOT NULL,
            PRIMARY KEY (symbol, trading_date, contract_symbol, source)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS trade_history (
            trade_id             TEXT PRIMARY KEY,
            symbol               TEXT NOT NULL,
            entry_date           INTEGER NOT NULL,  -- epoch seconds UTC
            entry_price          REAL NOT NULL,
            quantity             NUMERIC NOT NULL,
            exit_date            INTEGER,
            exit_price           REAL,
            exit_reason          TEXT,
            realized_pnl         REAL,
            realized_pnl_pct     REAL,
            holding_period_hours REAL,
            strategy_name        TEXT,
            signal_strength      TEXT,
            signal_confidence    REAL,
            broker_account       TEXT DEFAULT 'alpaca_paper',
            updated_at           INTEGER
        );
        CREATE INDEX IF NOT EXISTS idx_trade_symbol_entry ON trade_history (symbol, entry_date);
        """
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # marks the file as ours
    has_seed = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'market_cache'"
    ).fetchone()
    if has_seed:
        _import_seed_market_cache(conn)


def _import_seed_market_cache(conn: sqlite3.Connection) -> None:
    """Copy the seed layout's rows (text dates, timeframe folded into ``source``) into ``bars``."""
    rows = conn.execute(
        "SELECT asset_type, symbol, trading_date, source, open, high, low, close, volume, vwap, "
        "transactions, expires_at FROM market_cache"
    ).fetchall()
    for asset_type, symbol, trading_date, source, o, h, lo, c, v, vw, n, expires_at in rows:
        timeframe = "1Day"
        if "_" in source:
            base, _, suffix = source.rpartition("_")
            with contextlib.suppress(ValueError):
                timeframe = parse_timeframe(suffix).name
                source = base
        tf = parse_timeframe(timeframe)
        when = to_utc_datetime(trading_date)
        ts = date_to_key(to_date(trading_date)) if not tf.is_intraday else int(when.timestamp())
        try:
            exp = int(to_utc_datetime(expires_at).timestamp())
        except ValueError:
            exp = 0
        sid = _series_id(conn, asset_type.lower(), symbol.upper(), tf.name, source.lower(), create=True)
        conn.execute(
            "INSERT OR REPLACE INTO bars VALUES (?,?,?,?,?,?,?,?,?,?)",
            (sid, ts, o, h, lo, c, v, vw, n, exp),
        )
    conn.execute("ALTER TABLE market_cache RENAME TO legacy_market_cache")


def _migration_2(conn: sqlite3.Connection) -> None:
    """Coverage bookkeeping: which sessions were fetched per series, bars or not."""
    _run_script(conn,
        """
        CREATE TABLE IF NOT EXISTS coverage (
            series_id  INTEGER NOT NULL REFERENCES series(series_id),
            session    INTEGER NOT NULL,   -- New York session date, days since 1970-01-01
            rows       INTEGER NOT NULL,
            fetched_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (series_id, session)
        ) WITHOUT ROWID;
        """
    )


def _migration_3(conn: sqlite3.Connection) -> None:
    """Trades record max favourable / adverse excursion while open."""
    cols = {row[1] for row in conn.execute("PRAGMA table_info(trade_history)")}
    for name in ("max_profit_pct", "max_drawdown_pct"):
        if name not in cols:
            conn.execute(f"ALTER TABLE trade_history ADD COLUMN {name} REAL")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_trade_strategy ON trade_history (strategy_name, entry_date)")


#: Forward-only migrations: (version reached, description, function).
MIGRATIONS: tuple[tuple[int, str, Any], ...] = (
    (1, "initial schema (bars, series, raw_options_chain, trade_history)", _migration_1),
    (2, "coverage bookkeeping", _migration_2),
    (3, "trade excursions (max_profit_pct, max_drawdown_pct)", _migration_3),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _series_id(
    conn: sqlite3.Connection, asset_type: str, symbol: str, timeframe: str, source: str, create: bool
) -> int | None:
    row = conn.execute(
        "SELECT series_id FROM series WHERE asset_type=? AND symbol=? AND timeframe=? AND source=?",
        (asset_type, symbol, timeframe, source),
    ).fetchone()
    if row:
        return row[0]
    if not create:
        return None
    cur = conn.execute(
        "INSERT INTO series (asset_type, symbol, timeframe, source) VALUES (?,?,?,?)",
        (asset_type, symbol, timeframe, source),
    )
    return cur.lastrowid


_COLUMNAR: Any = None
_COLUMNAR_CHECKED = False
_COLUMNAR_LOCK = threading.Lock()


def _columnar_reader() -> Any:
    """The ``cachelib._columnar`` extension, or ``None`` when it cannot be used safely.

    Two different copies of SQLite in one process break each other's POSIX file locks
    (https://www.sqlite.org/howtocorrupt.html, 2.2.1). The extension links the shared
    ``libsqlite3.so.0``; it is used only when Python's own ``_sqlite3`` had already mapped that
    same library (so both are one copy) and the versions agree.
    """
    global _COLUMNAR, _COLUMNAR_CHECKED
    if _COLUMNAR_CHECKED:
        return _COLUMNAR
    with _COLUMNAR_LOCK:
        if not _COLUMNAR_CHECKED:
            _COLUMNAR = _load_columnar()
            _COLUMNAR_CHECKED = True
    return _COLUMNAR


def _load_columnar() -> Any:
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            shared = "libsqlite3.so" in maps.read()  # mapped by _sqlite3 before our import
    except OSError:
        return None
    if not shared:
        log.debug("Python's sqlite3 does not use the shared libsqlite3: columnar reads off")
        return None
    try:
        from . import _columnar  # type: ignore[attr-defined]
    except ImportError:
        log.debug("cachelib._columnar is not built: large reads use fetchall")
        return None
    if _columnar.libversion() != sqlite3.sqlite_version:
        log.warning("cachelib._columnar links SQLite %s, Python uses %s: columnar reads off",
                    _columnar.libversion(), sqlite3.sqlite_version)
        return None
    return _columnar


def _where(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE body and its parameters from ``(sql fragment, value)`` pairs; pairs whose value is
    ``None`` (a filter not given) are left out. Values must already be normalised."""
    used = [(sql, value) for sql, value in conditions if value is not None]
    return " AND ".join(sql for sql, _ in used) or "1 = 1", [value for _, value in used]


def _maybe(normalise: Any, value: Any) -> Any:
    """``normalise(value)``, or ``None`` for a filter that was not given."""
    return None if value is None else normalise(value)


def _given(value: Any) -> bool:
    """False for the ways a frame says "no value": None, NaN, NaT, pd.NA."""
    if value is None or value is pd.NA or value is pd.NaT:
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _source_rank(source: str) -> tuple[int, str]:
    try:
        return (SOURCE_PRIORITY.index(source), source)
    except ValueError:
        return (len(SOURCE_PRIORITY), source)


def _norm_source(source: str) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ValueError("source must be a non-empty string such as 'alpaca'")
    return source.strip().lower()


def _norm_asset_type(asset_type: str) -> str:
    if not isinstance(asset_type, str) or not asset_type.strip():
        raise ValueError("asset_type must be a non-empty string such as 'stock'")
    return asset_type.strip().lower()


# ---------------------------------------------------------------------------
# The manager
# ---------------------------------------------------------------------------


class TradingCacheManager:
    """A SQLite cache of bars, option-chain snapshots and trade history.

    >>> cache = TradingCacheManager("/tmp/cache.db")     # doctest: +SKIP
    >>> cache.set("spy", bars_df, source="alpaca")        # doctest: +SKIP
    252
    >>> cache.get("SPY", "2025-01-01", "2025-01-31")      # doctest: +SKIP
    """

    def __init__(
        self,
        db_path: str | bytes | os.PathLike[str] | None = None,
        timeout: float = 5.0,
        *,
        create: bool = True,
        read_only: bool = False,
    ) -> None:
        """Open the cache at ``db_path`` (default :func:`default_db_path`).

        ``create=False`` (read-only commands): a missing file raises :class:`CacheNotFoundError`
        and nothing is created, so a mistyped path is an error instead of a new empty cache.
        ``read_only=True``, or a file or folder this process cannot write, opens the cache for
        reading: reads work, every write raises :class:`DatabaseFileError`.
        Anything at ``db_path`` that is not a usable cache of ours (another application's
        database, a damaged file, a directory, a device) raises :class:`DatabaseFileError`
        naming the path, and is left byte-identical.
        """
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 <= timeout <= _MAX_TIMEOUT_S
        ):
            raise ValueError(
                f"timeout must be a number of seconds from 0 to {_MAX_TIMEOUT_S}, got {timeout!r}"
            )
        self.timeout = float(timeout)
        path = _as_path(db_path)
        try:
            self.db_path = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise DatabaseFileError(f"cannot resolve {path}: {exc}; check the path") from None
        self._local = threading.local()
        self._series_cache: dict[tuple[str, str, str, str], int] = {}
        self._stats_lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._read_only_reason: str | None = "opened with read_only=True" if read_only else None
        self._creating = False
        if not self._check_file(self.db_path):
            if not create or read_only:
                raise CacheNotFoundError(
                    f"no cache at {self.db_path}; check --db-path / TRADING_CACHE_DB (nothing was "
                    "created), or run a command that writes, such as sync, to create it"
                )
            self._make_parent_folder()
            self._creating = True  # only the first connection may create the file
        elif not read_only:
            self._read_only_reason = self._why_not_writable()
            if self._read_only_reason:
                log.info("%s opened read-only: %s", self.db_path, self._read_only_reason)
        try:
            self._migrate()
        finally:
            self._creating = False

    @property
    def read_only(self) -> bool:
        """Whether this manager can only read (see ``__init__``)."""
        return self._read_only_reason is not None

    # -- the file: checks before anything is written ------------------------------------------

    def _check_file(self, path: Path) -> bool:
        """Whether a cache exists at ``path``; raises :class:`DatabaseFileError` when what is
        there is not a usable cache of ours.

        Only reads (the header, then the schema through a read-only ``immutable`` connection),
        so a file that is refused stays byte-identical and gets no ``-wal``/``-shm``.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            raise DatabaseFileError(
                f"{path} cannot exist: a parent of it is a file, not a folder; choose another "
                "--db-path or TRADING_CACHE_DB"
            ) from None
        except OSError as exc:
            raise DatabaseFileError(
                f"cannot access {path} ({exc.strerror}); check the path and the permissions of its folders"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise DatabaseFileError(
                f"{path} is a directory, not a SQLite database file; give a file path such as "
                f"{path / 'trading_cache.db'}"
            )
        if not stat.S_ISREG(st.st_mode):
            raise DatabaseFileError(
                f"{path} is not a regular file (a device, pipe or socket); give the path of a "
                "database file with --db-path or TRADING_CACHE_DB"
            )
        if st.st_size == 0:
            return True  # an empty file is a new cache
        try:
            with open(path, "rb") as fh:
                head = fh.read(_SQLITE_HEADER_BYTES)
        except OSError as exc:
            raise DatabaseFileError(
                f"cannot read {path} ({exc.strerror}); check its permissions"
            ) from None
        damaged = (
            f"it was left as it is. Restore {path.name} from a backup, or move it away and sync "
            "again to rebuild the cache"
        )
        if not head.startswith(_SQLITE_MAGIC):
            if _SQLITE_MAGIC.startswith(head):
                raise DatabaseFileError(f"{path} is truncated ({st.st_size} bytes); {damaged}")
            raise DatabaseFileError(
                f"{path} is not a SQLite database (left untouched); choose another --db-path "
                "or TRADING_CACHE_DB"
            )
        if len(head) < _SQLITE_HEADER_BYTES:
            raise DatabaseFileError(f"{path} is truncated ({st.st_size} bytes); {damaged}")
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65_536 if page_size == 1 else page_size
        if page_size < 512 or page_size & (page_size - 1):
            raise DatabaseFileError(f"{path} is damaged (page size {page_size} in its header); {damaged}")
        # Without a -wal or -journal nobody is writing it, so the file must hold whole pages, as
        # many as its header says (when that count is valid: change counter == version-valid-for).
        if not any(Path(f"{path}{s}").exists() for s in ("-wal", "-journal")):
            pages = int.from_bytes(head[28:32], "big") if head[24:28] == head[92:96] else 0
            if st.st_size % page_size or pages * page_size > st.st_size:
                raise DatabaseFileError(
                    f"{path} is truncated ({st.st_size} bytes, expected {max(pages, 1) * page_size} "
                    f"or a multiple of {page_size}); {damaged}"
                )
        app_id = int.from_bytes(head[68:72], "big")
        version = int.from_bytes(head[60:64], "big", signed=True)
        if app_id not in (0, APPLICATION_ID):
            raise self._foreign(path, f"its SQLite application_id is {app_id:#010x}")
        if app_id == 0:
            # Files of ours made before the id existed have it 0: recognise them by their tables.
            version, tables = self._inspect_schema(path)
            # An empty file is a new cache; a schema version without our tables is not ours.
            if (tables or 0 < version <= SCHEMA_VERSION) and not self._tables_are_ours(tables, version):
                what = ", ".join(sorted(tables)) or f"none, at user_version {version}"
                raise self._foreign(path, f"its tables ({what}) are not a cache's")
        if version > SCHEMA_VERSION:
            raise self._newer(version)
        return True

    @staticmethod
    def _foreign(path: Path, why: str) -> DatabaseFileError:
        return DatabaseFileError(
            f"{path} belongs to another application ({why}) and was left untouched; choose "
            "another --db-path or TRADING_CACHE_DB"
        )

    def _newer(self, version: int) -> DatabaseFileError:
        return DatabaseFileError(
            f"{self.db_path} has schema version {version}, newer than this cachelib "
            f"understands ({SCHEMA_VERSION}); upgrade cachelib"
        )

    def _inspect_schema(self, path: Path) -> tuple[int, dict[str, set[str]]]:
        """``(user_version, {table: column names})`` of the file, read without writing anything.

        ``immutable=1`` takes no lock and creates no ``-wal``/``-shm``; it is used only when no
        ``-wal``/``-journal`` exists (nobody is writing). Otherwise the file is in use, its
        sidecars exist, and a plain ``mode=ro`` connection reads it with its WAL.
        """
        in_use = any(Path(f"{path}{s}").exists() for s in ("-wal", "-journal"))
        uri = path.as_uri() + ("?mode=ro" if in_use else "?mode=ro&immutable=1")
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                names = [r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'"
                )]
                tables = {n: {r[0] for r in conn.execute("SELECT name FROM pragma_table_info(?)", (n,))}
                          for n in names}
            finally:
                conn.close()
        except sqlite3.Error as exc:
            err = _file_error(path, exc)
            if err is exc:
                raise DatabaseFileError(f"cannot read the schema of {path} ({exc}); check the file") from None
            raise err from None
        return version, tables

    #: Columns that identify our layout, and the seed's legacy ``market_cache`` layout.
    _OUR_TABLES: dict[str, set[str]] = {
        "series": {"series_id", "asset_type", "symbol", "timeframe", "source"},
        "bars": {"series_id", "ts", "open", "high", "low", "close", "volume", "expires_at"},
    }
    _SEED_TABLE = ("market_cache", {"asset_type", "symbol", "trading_date", "source", "open", "high",
                                    "low", "close", "volume", "vwap", "transactions", "expires_at"})

    @classmethod
    def _tables_are_ours(cls, tables: dict[str, set[str]], version: int) -> bool:
        """Ours: our ``series``/``bars`` at a schema version we wrote, or the seed's layout."""
        if version >= 1:
            return all(cols <= tables.get(name, set()) for name, cols in cls._OUR_TABLES.items())
        name, cols = cls._SEED_TABLE
        return version == 0 and cols <= tables.get(name, set())

    def _make_parent_folder(self) -> None:
        folder = self.db_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseFileError(
                f"cannot create the folder {folder} for {self.db_path} ({exc.strerror or exc}); choose "
                "another --db-path or TRADING_CACHE_DB"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise DatabaseFileError(
                f"cannot create {self.db_path}: its folder is not writable; choose another --db-path "
                "or TRADING_CACHE_DB"
            )

    def _why_not_writable(self) -> str | None:
        """Why this process cannot write the existing cache, or ``None`` when it can."""
        if not os.access(self.db_path, os.W_OK):
            return "the file is not writable"
        folder = self.db_path.parent
        sidecars = [Path(f"{self.db_path}{s}") for s in ("-wal", "-shm")]
        if not os.access(folder, os.W_OK | os.X_OK) and not all(p.exists() for p in sidecars):
            return f"its folder {folder} is not writable, so SQLite cannot create the -wal/-shm files"
        return None

    def _read_only_error(self) -> DatabaseFileError:
        return DatabaseFileError(
            f"{self.db_path} is read-only ({self._read_only_reason}); reads work, but writing needs a "
            "writable file and folder: fix the permissions, or choose another --db-path or TRADING_CACHE_DB"
        )

    # -- connections and transactions ------------------------------------------------------

    def _read_uri(self) -> str:
        """The URI of a read-only connection to the cache (``?mode=ro``, percent-quoted path).

        A WAL database can be read without creating its -wal/-shm only as "immutable", which
        is safe only while nobody can write it: no -wal exists and the folder is not writable
        for us, so we cannot create one (another user who may write the folder could; SQLite
        itself refuses to read then, we read the file as it is). Checked per connection.
        """
        uri = self.db_path.as_uri() + "?mode=ro"
        if not Path(f"{self.db_path}-wal").exists() and not os.access(self.db_path.parent, os.W_OK | os.X_OK):
            uri += "&immutable=1"
        return uri

    def _columnar_error(self, exc: RuntimeError) -> Exception:
        """The columnar reader's failures carry only SQLite's message: map the file-level ones."""
        text = str(exc)
        for marker, name in (("malformed", "SQLITE_CORRUPT"), ("not a database", "SQLITE_NOTADB"),
                             ("unable to open", "SQLITE_CANTOPEN"), ("readonly", "SQLITE_READONLY")):
            if marker in text:
                error = sqlite3.DatabaseError(text)
                error.sqlite_errorname = name
                return _file_error(self.db_path, error, self._read_only_reason)
        return exc

    def _connect(self) -> sqlite3.Connection:
        if self._read_only_reason:
            uri = self._read_uri()
        else:
            uri = self.db_path.as_uri()
            # Only the constructor creates the file; later a vanished file is an error, not a new cache.
            uri += "?mode=rwc" if self._creating else "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=self.timeout, isolation_level=None, check_same_thread=False,
                factory=_Connection,
            )
        except sqlite3.Error as exc:
            err = _file_error(self.db_path, exc, self._read_only_reason)
            raise (err if err is not exc else DatabaseFileError(f"cannot open {self.db_path} ({exc})")) from None
        conn.db_path = self.db_path
        conn.read_only_reason = self._read_only_reason
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            for name, value in SQLITE_SETTINGS.items():
                if name == "journal_mode":
                    if not self._read_only_reason:
                        self._enable_wal(conn)
                else:
                    conn.execute(f"PRAGMA {name} = {value}")
        except sqlite3.OperationalError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise DatabaseFileError(f"{self.db_path} is not a usable SQLite database: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is
        # locked" at once (the busy handler is not consulted) while another process holds any
        # lock on it - e.g. several processes opening the same new file.
        def switch() -> None:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")

        self._while_locked(switch)

    def _while_locked(self, action: Any) -> None:
        """Run ``action``, retrying only "database is locked/busy", for at most ``timeout``."""
        deadline = time.monotonic() + max(self.timeout, 0.05)
        delay = 0.005
        while True:
            try:
                action()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError(
                        f"database is locked: {self.db_path} stayed locked for {self.timeout:.1f}s; "
                        "raise TradingCacheManager(timeout=...)"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's (and this process's) connection."""
        local = self._local
        pid = os.getpid()
        if getattr(local, "conn", None) is None or local.pid != pid:
            local.conn = self._connect()
            local.pid = pid
            local.depth = 0
        return local.conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> TradingCacheManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); nested calls become savepoints.

        Everything inside commits together or not at all::

            with cache.atomic():
                cache.set("AAPL", df, source="alpaca")
                cache.record_coverage("AAPL", sessions, source="alpaca")
        """
        if self._read_only_reason:
            raise self._read_only_error()
        conn = self.conn
        local = self._local
        if local.depth:
            name = f"sp{local.depth}"
            conn.execute(f"SAVEPOINT {name}")
            local.depth += 1
            try:
                yield conn
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                raise
            else:
                conn.execute(f"RELEASE {name}")
            finally:
                local.depth -= 1
            return
        self._begin_immediate(conn)
        local.depth = 1
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself fails (disk full, I/O error): never leave the
            # transaction open, or this connection would keep the write lock.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            local.depth = 0

    def _begin_immediate(self, conn: sqlite3.Connection) -> None:
        # busy_timeout already waits inside SQLite; the retry only covers the rare case where
        # SQLite gives up early (e.g. a WAL checkpoint race) and is bounded by ``timeout``.
        self._while_locked(lambda: conn.execute("BEGIN IMMEDIATE"))

    def _migrate(self) -> None:
        """Bring the file to :data:`SCHEMA_VERSION` and mark it with :data:`APPLICATION_ID`
        (files of ours made before the id existed have 0), all in one transaction."""
        conn = self.conn
        try:
            version, app_id = self._version_and_id(conn)
        except sqlite3.DatabaseError as exc:
            raise DatabaseFileError(f"{self.db_path} is not a usable SQLite database: {exc}") from None
        if version > SCHEMA_VERSION:
            raise self._newer(version)
        if version == SCHEMA_VERSION and app_id == APPLICATION_ID:
            return
        if self._read_only_reason:
            if version == SCHEMA_VERSION:
                return  # readable as it is; the id is written by the first writer
            raise DatabaseFileError(
                f"{self.db_path} is read-only ({self._read_only_reason}) and at schema v{version}, "
                f"older than this cachelib's v{SCHEMA_VERSION}; open it once with write access to "
                "upgrade it"
            )
        with self.atomic():
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version, app_id = self._version_and_id(conn)
            if app_id not in (0, APPLICATION_ID):
                raise self._foreign(self.db_path, f"its SQLite application_id is {app_id:#010x}")
            for target, description, migrate in MIGRATIONS:
                if target > version:
                    log.info("migrating %s to schema v%d: %s", self.db_path, target, description)
                    migrate(conn)
                    conn.execute(f"PRAGMA user_version = {target}")
            if app_id != APPLICATION_ID:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    @staticmethod
    def _version_and_id(conn: sqlite3.Connection) -> tuple[int, int]:
        return (conn.execute("PRAGMA user_version").fetchone()[0],
                conn.execute("PRAGMA application_id").fetchone()[0])

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # -- series ---------------------------------------------------------------------------

    def _series(
        self, asset_type: str, symbol: str, timeframe: str, source: str, create: bool = False
    ) -> int | None:
        key = (asset_type, symbol, timeframe, source)
        sid = self._series_cache.get(key)
        if sid is None:
            conn = self.conn
            sid = _series_id(conn, *key, create=create)
            # Remember only committed ids: a series created inside a transaction that is later
            # rolled back would leave a stale id that SQLite hands to the next new series.
            if sid is not None and not conn.in_transaction:
                self._series_cache[key] = sid
        return sid

    def _series_for_read(
        self, asset_type: str, symbol: str, timeframe: str, source: str | None
    ) -> list[tuple[int, str]]:
        """``[(series_id, source)]`` in source-priority order."""
        if source is not None:
            sid = self._series(asset_type, symbol, timeframe, source)
            return [] if sid is None else [(sid, source)]
        rows = self.conn.execute(
            "SELECT series_id, source FROM series WHERE asset_type=? AND symbol=? AND timeframe=?",
            (asset_type, symbol, timeframe),
        ).fetchall()
        return sorted(rows, key=lambda r: _source_rank(r[1]))

    # -- ranges ---------------------------------------------------------------------------

    # -- bars: write ----------------------------------------------------------------------

    def set(
        self,
        symbol: str,
        data: pd.DataFrame,
        source: str,
        asset_type: str = "stock",
        ttl_hours: float | None = None,
        timeframe: str = "1Day",
    ) -> int:
        """Upsert ``symbol``'s bars from ``data``; returns the number of rows written.

        ``data`` may have a DatetimeIndex (any name; naive = UTC, or tz-aware), a
        ``date``/``timestamp`` column, or be alpaca-py's ``(symbol, timestamp)`` frame.
        The whole call is one transaction: every row is written, or (on any error) none.

        >>> cache.set("AAPL", df, source="alpaca", timeframe="1Min")  # doctest: +SKIP
        390
        """
        sym = normalize_symbol(symbol)
        src = _norm_source(source)
        asset = _norm_asset_type(asset_type)
        tf = parse_timeframe(timeframe)
        if isinstance(data, pd.DataFrame) and isinstance(data.index, pd.MultiIndex):
            data = rows_of_symbol(data, sym)
        bars = normalize_bars(data, tf)
        if bars.empty:
            return 0
        now = now_utc()
        keys = bars["key"].to_numpy()
        expiry = ttl_expiry(_session_days_of_keys(keys, tf.is_intraday), now, ttl_hours)
        with self.atomic() as conn:
            sid = self._series(asset, sym, tf.name, src, create=True)
            rows = zip(
                [sid] * len(bars),
                keys.tolist(),
                bars["open"].tolist(),
                bars["high"].tolist(),
                bars["low"].tolist(),
                bars["close"].tolist(),
                bars["volume"].tolist(),
                bars["vwap"].tolist(),  # NaN binds as NULL in SQLite
                bars["trade_count"].tolist(),
                expiry.tolist(),
                strict=True,
            )
            conn.executemany("INSERT OR REPLACE INTO bars VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        return len(bars)

    # -- bars: read -----------------------------------------------------------------------

    def get(
        self,
        symbol: str,
        start: Any,
        end: Any,
        source: str | None = None,
        asset_type: str = "stock",
        timeframe: str = "1Day",
    ) -> pd.DataFrame | None:
        """Valid (unexpired) bars of ``symbol`` in ``[start, end]``, or ``None`` if there are none.

        Daily bars come indexed by ``date`` (tz-naive session dates); intraday bars by
        ``timestamp`` (tz-aware UTC). With ``source=None`` and several sources holding a bar,
        the one from the highest-priority source is returned (:data:`SOURCE_PRIORITY`).
        """
        sym = normalize_symbol(symbol)
        asset = _norm_asset_type(asset_type)
        tf = parse_timeframe(timeframe)
        src = None if source is None else _norm_source(source)
        lo, hi = key_range(start, end, tf.is_intraday)
        now_s = int(now_utc().timestamp())
        if self._large_read(lo, hi, tf) and not self.conn.in_transaction:
            series = self._series_for_read(asset, sym, tf.name, src)
            reader = _columnar_reader()
            if len(series) == 1 and reader is not None:
                frame = self._columnar_read(reader, series[0][0], lo, hi, now_s, tf)
                self._count_hit(len(frame) > 0)
                return frame if len(frame) else None
        rows: list[tuple] = []
        if src is not None:
            sid = self._series(asset, sym, tf.name, src)
            if sid is not None:
                rows = self.conn.execute(
                    "SELECT ts, open, high, low, close, volume, vwap, trade_count FROM bars "
                    "WHERE series_id = ? AND ts BETWEEN ? AND ? AND expires_at > ?",
                    (sid, lo, hi, now_s),
                ).fetchall()
        else:
            tagged = self.conn.execute(
                "SELECT b.ts, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trade_count, s.source "
                "FROM series s JOIN bars b ON b.series_id = s.series_id "
                "WHERE s.asset_type = ? AND s.symbol = ? AND s.timeframe = ? "
                "AND b.ts BETWEEN ? AND ? AND b.expires_at > ? ORDER BY b.ts",
                (asset, sym, tf.name, lo, hi, now_s),
            ).fetchall()
            if tagged and len({r[8] for r in tagged}) > 1:
                # Several sources hold bars here: one row per bar, from the best-ranked source.
                best: dict[int, tuple] = {}
                for row in sorted(tagged, key=lambda r: _source_rank(r[8])):
                    best.setdefault(row[0], row)
                tagged = [best[k] for k in sorted(best)]
            rows = [r[:8] for r in tagged]
        self._count_hit(bool(rows))
        return frame_from_rows(rows, tf) if rows else None

    #: Above this many expected bars a read goes through :mod:`cachelib._columnar`.
    COLUMNAR_MIN_ROWS = 2_000

    def _large_read(self, lo: int, hi: int, tf: Any) -> bool:
        """Could ``[lo, hi]`` hold more than :data:`COLUMNAR_MIN_ROWS` bars? (An estimate from
        the span: 6.5 trading hours a day, 5 days a week.)"""
        span_days = (hi - lo) / _DAY
        per_day = 6.5 * 3600 / tf.seconds if tf.is_intraday else 1.0
        return span_days * (5 / 7) * per_day > self.COLUMNAR_MIN_ROWS

    _COLUMNAR_SQL = (
        "SELECT ts, open, high, low, close, volume, vwap, trade_count FROM bars "
        "WHERE series_id = ? AND ts BETWEEN ? AND ? AND expires_at > ? ORDER BY ts"
    )

    def _columnar_read(self, reader: Any, sid: int, lo: int, hi: int, now_s: int, tf: Any) -> pd.DataFrame:
        """A large read straight into column buffers (no Python object per value): a year of
        minute bars costs a few tens of milliseconds instead of ~150 ms through ``fetchall``.
        It opens its own read-only connection, so the caller must not be inside a write
        transaction (whose rows it could not see)."""
        try:
            n, buffers = reader.fetch(self._read_uri(), self._COLUMNAR_SQL, (sid, lo, hi, now_s),
                                      int(self.timeout * 1000))
        except RuntimeError as exc:
            err = self._columnar_error(exc)
            if err is exc:
                raise
            raise err from None
        keys = np.frombuffer(buffers[0], dtype=np.int64, count=n)
        columns = [np.frombuffer(b, dtype=np.float64, count=n) for b in buffers[1:]]
        return frame_from_columns(keys, columns, tf)

    def _count_hit(self, hit: bool) -> None:
        with self._stats_lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def exists(
        self,
        symbol: str,
        start: Any,
        end: Any = None,
        source: str | None = None,
        asset_type: str = "stock",
        timeframe: str = "1Day",
    ) -> bool:
        """True when at least one valid bar of ``symbol`` lies in ``[start, end]`` (``end``
        defaults to ``start``)."""
        sym = normalize_symbol(symbol)
        tf = parse_timeframe(timeframe)
        lo, hi = key_range(start, start if end is None else end, tf.is_intraday)
        now_s = int(now_utc().timestamp())
        src = None if source is None else _norm_source(source)
        for sid, _ in self._series_for_read(_norm_asset_type(asset_type), sym, tf.name, src):
            if self.conn.execute(
                "SELECT 1 FROM bars WHERE series_id=? AND ts BETWEEN ? AND ? AND expires_at > ? LIMIT 1",
                (sid, lo, hi, now_s),
            ).fetchone():
                return True
        return False

    def _matching_series(
        self, symbol: str | None, source: str | None, asset_type: str | None, timeframe: str | None
    ) -> list[tuple[int, str]]:
        """``[(series_id, timeframe)]`` selected by the filters (``None`` = any)."""
        where, params = _where(
            ("symbol = ?", _maybe(normalize_symbol, symbol)),
            ("source = ?", _maybe(_norm_source, source)),
            ("asset_type = ?", _maybe(_norm_asset_type, asset_type)),
            ("timeframe = ?", _maybe(lambda t: parse_timeframe(t).name, timeframe)),
        )
        return self.conn.execute(f"SELECT series_id, timeframe FROM series WHERE {where}", params).fetchall()

    @staticmethod
    def _open_key_range(start: Any, end: Any, intraday: bool) -> tuple[int, int]:
        """Like :func:`~cachelib.bars.key_range`, but either bound may be ``None`` (open)."""
        if start is not None and end is not None:
            return key_range(start, end, intraday)
        lo = KEY_MIN if start is None else clamp_key(range_start_key(start, intraday))
        hi = KEY_MAX if end is None else clamp_key(range_end_key(end, intraday))
        return lo, hi

    @staticmethod
    def _session_day_of_key(key: int, intraday: bool) -> int:
        """Day number of the New York session date a bar key belongs to."""
        if not intraday:
            return key // _DAY
        # Python's datetime, not pandas': valid for every key, KEY_MIN and KEY_MAX included.
        when = datetime.fromtimestamp(key, timezone.utc).astimezone(NY)
        return (when.date() - date(1970, 1, 1)).days

    def count_bars(
        self,
        symbol: str | None = None,
        start: Any = None,
        end: Any = None,
        source: str | None = None,
        asset_type: str | None = "stock",
        timeframe: str | None = None,
    ) -> int:
        """How many bars (valid or expired) :meth:`delete` with the same filters would remove
        (``None`` for a filter means any)."""
        total = 0
        for sid, tf_name in self._matching_series(symbol, source, asset_type, timeframe):
            lo, hi = self._open_key_range(start, end, parse_timeframe(tf_name).is_intraday)
            total += self.conn.execute(
                "SELECT COUNT(*) FROM bars WHERE series_id = ? AND ts BETWEEN ? AND ?", (sid, lo, hi)
            ).fetchone()[0]
        return total

    def delete(
        self,
        symbol: str | None,
        start: Any = None,
        end: Any = None,
        source: str | None = None,
        asset_type: str | None = "stock",
        timeframe: str | None = None,
    ) -> int:
        """Delete bars (and the matching coverage); returns bars removed.

        ``start``/``end`` bound the range (either may be omitted); ``None`` for ``symbol``,
        ``source``, ``asset_type`` or ``timeframe`` means all of them.

        >>> cache.delete("SPY", "2025-01-01", "2025-01-31", source="alpaca")  # doctest: +SKIP
        21
        """
        removed = 0
        with self.atomic() as conn:
            for sid, tf_name in self._matching_series(symbol, source, asset_type, timeframe):
                intraday = parse_timeframe(tf_name).is_intraday
                lo, hi = self._open_key_range(start, end, intraday)
                removed += conn.execute(
                    "DELETE FROM bars WHERE series_id = ? AND ts BETWEEN ? AND ?", (sid, lo, hi)
                ).rowcount
                # Every session the deleted range touches loses its coverage, so a sync refills it.
                day_lo = -(10**9) if start is None else self._session_day_of_key(lo, intraday)
                day_hi = 10**9 if end is None else self._session_day_of_key(hi, intraday)
                conn.execute(
                    "DELETE FROM coverage WHERE series_id = ? AND session BETWEEN ? AND ?",
                    (sid, day_lo, day_hi),
                )
        return removed

    # -- coverage -------------------------------------------------------------------------

    def record_coverage(
        self,
        symbol: str,
        sessions: list[date] | list[str],
        source: str,
        timeframe: str = "1Day",
        asset_type: str = "stock",
        rows_per_session: Mapping[date, int] | None = None,
        ttl_hours: float | None = None,
    ) -> int:
        """Record that ``source`` was asked for ``sessions`` of ``symbol`` (bars or not).

        Coverage expires by the same age rule as bars, so a recent session is asked again
        after 24 hours while an old one is settled for 10 years.
        """
        sym = normalize_symbol(symbol)
        src = _norm_source(source)
        tf = parse_timeframe(timeframe)
        asset = _norm_asset_type(asset_type)
        if isinstance(sessions, (str, date)) or not isinstance(sessions, Iterable):
            raise ValueError(f"sessions must be a list of dates, got {type(sessions).__name__} {sessions!r}")
        days = sorted({to_date(s, "session") for s in sessions})
        counts: dict[date, int] = {}
        if rows_per_session is not None:
            if not isinstance(rows_per_session, Mapping):
                raise ValueError("rows_per_session must map session dates to row counts")
            for day, n in rows_per_session.items():
                counts[to_date(day, "rows_per_session key")] = check_count(n, f"rows_per_session[{day!r}]") or 0
        if not days:
            return 0
        not_sessions = [d for d in days if not market_hours.is_session(d)]
        if not_sessions:
            raise ValueError(f"not XNYS sessions, cannot record coverage: {not_sessions[:5]}")
        now = now_utc()
        day_nums = np.array([(d - date(1970, 1, 1)).days for d in days], dtype=np.int64)
        expiry = ttl_expiry(day_nums, now, ttl_hours)
        now_s = int(now.timestamp())
        with self.atomic() as conn:
            sid = self._series(asset, sym, tf.name, src, create=True)
            conn.executemany(
                "INSERT OR REPLACE INTO coverage VALUES (?,?,?,?,?)",
                [
                    (sid, int(n), counts.get(d, 0), now_s, int(e))
                    for d, n, e in zip(days, day_nums, expiry, strict=True)
                ],
            )
        return len(days)

    def missing_sessions(
        self,
        symbol: str,
        start: Any,
        end: Any,
        timeframe: str = "1Day",
        source: str | None = None,
        asset_type: str = "stock",
    ) -> list[date]:
        """XNYS sessions in ``[start, end]`` that no valid coverage record (and, for daily
        bars, no valid bar) accounts for: what a sync must fetch.

        >>> cache.missing_sessions("SPY", "2024-01-01", "2024-01-05")  # doctest: +SKIP
        [datetime.date(2024, 1, 2), datetime.date(2024, 1, 3), ...]
        """
        return self.missing_sessions_many([symbol], start, end, timeframe, source, asset_type)[
            normalize_symbol(symbol)
        ]

    def missing_sessions_many(
        self,
        symbols: list[str],
        start: Any,
        end: Any,
        timeframe: str = "1Day",
        source: str | None = None,
        asset_type: str = "stock",
    ) -> dict[str, list[date]]:
        """:meth:`missing_sessions` for many symbols at once (a fully covered range costs one
        grouped COUNT query, which keeps a no-op re-sync of 100 symbols in milliseconds)."""
        syms = normalize_symbols(symbols)  # also a "SPY,AAPL" string, never its letters
        tf = parse_timeframe(timeframe)
        key_range(start, end, tf.is_intraday)  # the bounds' rules (and order) of every range
        sessions = market_hours.sessions_in_range(to_date(start, "start"), to_date(end, "end"))
        result: dict[str, list[date]] = {s: list(sessions) for s in syms}
        if not sessions or not syms:
            return result
        asset = _norm_asset_type(asset_type)
        src = None if source is None else _norm_source(source)
        epoch = date(1970, 1, 1)
        lo_n, hi_n = (sessions[0] - epoch).days, (sessions[-1] - epoch).days
        now_s = int(now_utc().timestamp())
        marks = ",".join("?" * len(syms))
        where = f"s.asset_type = ? AND s.timeframe = ? AND s.symbol IN ({marks})"
        params: list[Any] = [asset, tf.name, *syms]
        if src is not None:
            where += " AND s.source = ?"
            params.append(src)
        # Coverage only ever holds sessions (record_coverage refuses other days), so a symbol
        # whose distinct covered sessions number len(sessions) is fully covered.
        counts = dict(
            self.conn.execute(
                f"SELECT s.symbol, COUNT(DISTINCT c.session) FROM series s JOIN coverage c "
                f"ON c.series_id = s.series_id WHERE {where} AND c.session BETWEEN ? AND ? "
                f"AND c.expires_at > ? GROUP BY s.symbol",
                [*params, lo_n, hi_n, now_s],
            ).fetchall()
        )
        for sym in syms:
            if counts.get(sym, 0) >= len(sessions):
                result[sym] = []
                continue
            covered = {
                r[0]
                for r in self.conn.execute(
                    "SELECT c.session FROM series s JOIN coverage c ON c.series_id = s.series_id "
                    "WHERE s.asset_type = ? AND s.timeframe = ? AND s.symbol = ? "
                    + ("AND s.source = ? " if src is not None else "")
                    + "AND c.session BETWEEN ? AND ? AND c.expires_at > ?",
                    [asset, tf.name, sym, *([src] if src is not None else []), lo_n, hi_n, now_s],
                )
            }
            if tf.name == "1Day":  # a valid daily bar settles its session too
                covered.update(
                    r[0] // _DAY
                    for r in self.conn.execute(
                        "SELECT b.ts FROM series s JOIN bars b ON b.series_id = s.series_id "
                        "WHERE s.asset_type = ? AND s.timeframe = ? AND s.symbol = ? "
                        + ("AND s.source = ? " if src is not None else "")
                        + "AND b.ts BETWEEN ? AND ? AND b.expires_at > ?",
                        [asset, tf.name, sym, *([src] if src is not None else []),
                         lo_n * _DAY, hi_n * _DAY, now_s],
                    )
                )
            result[sym] = [d for d in sessions if (d - epoch).days not in covered]
        return result

    # -- maintenance ----------------------------------------------------------------------

    def cleanup_expired(self) -> int:
        """Remove expired rows from every table that expires (bars, coverage, option
        snapshots); returns the number of rows removed."""
        now_s = int(now_utc().timestamp())
        with self.atomic() as conn:
            removed = 0
            for table in ("bars", "coverage", "raw_options_chain"):
                removed += conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now_s,)).rowcount
        return removed

    def vacuum(self) -> int:
        """Rebuild the file without its free pages; returns the bytes by which the database
        and its WAL really shrank (measured on disk, never negative).

        VACUUM writes the new file into the WAL; it only reaches the database file at a
        checkpoint, which cannot pass a reader still holding an old snapshot. Waiting for such
        a reader would hold the write lock (making writers fail), so the checkpoint waits at
        most :data:`_CHECKPOINT_WAIT_S`; if a reader is still there, the file shrinks at a
        later checkpoint, this returns what was reclaimed now (often 0), and a warning says so.
        """
        if self._read_only_reason:
            raise self._read_only_error()
        conn = self.conn
        if conn.in_transaction:
            raise ValueError("vacuum() cannot run inside atomic(): VACUUM needs its own transaction")
        before = self._file_bytes()
        # VACUUM is one write transaction: writers wait for it as for any other (busy_timeout).
        self._while_locked(lambda: conn.execute("VACUUM"))
        busy = self._checkpoint_truncate(conn)
        reclaimed = before - self._file_bytes()
        if busy:
            log.warning(
                "vacuum of %s: a reader still holds an old snapshot, so the file cannot shrink yet "
                "(it will at a later checkpoint); reclaimed %d byte(s) now",
                self.db_path, max(reclaimed, 0),
            )
        else:
            log.info("vacuum of %s reclaimed %d byte(s)", self.db_path, max(reclaimed, 0))
        return max(reclaimed, 0)

    def _checkpoint_truncate(self, conn: sqlite3.Connection) -> bool:
        """Copy the WAL into the database file and empty it, waiting for readers only briefly
        (SQLite then checkpoints what it can, like PASSIVE). Returns whether a reader or writer
        kept it from finishing."""
        wait_ms = int(min(self.timeout, _CHECKPOINT_WAIT_S) * 1000)
        conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            busy, _log_frames, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return bool(busy)

    def _file_bytes(self) -> int:
        """Bytes on disk of the database file and its WAL."""
        total = 0
        for p in database_files(self.db_path)[:2]:
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    def get_symbols(self, asset_type: str = "stock") -> list[str]:
        """Symbols with at least one cached bar, sorted."""
        rows = self.conn.execute(
            "SELECT DISTINCT s.symbol FROM series s WHERE s.asset_type = ? "
            "AND EXISTS (SELECT 1 FROM bars b WHERE b.series_id = s.series_id) ORDER BY s.symbol",
            (_norm_asset_type(asset_type),),
        ).fetchall()
        return [r[0] for r in rows]

    def get_stats(self) -> dict[str, Any]:
        """Counts and sizes for people and monitoring (see README for the keys)."""
        conn = self.conn
        now_s = int(now_utc().timestamp())
        total = conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0]
        expired = conn.execute("SELECT COUNT(*) FROM bars WHERE expires_at <= ?", (now_s,)).fetchone()[0]
        series = conn.execute(
            "SELECT s.series_id, s.asset_type, s.symbol, s.timeframe, s.source, "
            "(SELECT COUNT(*) FROM bars b WHERE b.series_id = s.series_id) FROM series s"
        ).fetchall()
        live = [s for s in series if s[5] > 0]
        # First and last New York session dates over every series (intraday keys are instants).
        starts, ends = [], []
        for sid, _asset, _sym, tf_name, *_ in live:
            lo, hi = conn.execute("SELECT MIN(ts), MAX(ts) FROM bars WHERE series_id = ?", (sid,)).fetchone()
            intraday = parse_timeframe(tf_name).is_intraday
            starts.append(self._session_day_of_key(lo, intraday) * _DAY)
            ends.append(self._session_day_of_key(hi, intraday) * _DAY)
        tables = {
            name: conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
            for name in ("bars", "series", "coverage", "raw_options_chain", "trade_history")
        }
        size = self._file_bytes()
        hits, misses = self.hits, self.misses
        by = lambda idx: sorted({s[idx] for s in live})  # noqa: E731
        return {
            "total_entries": total,
            "unique_symbols": len(by(2)),
            "sources": by(4),
            "asset_types": by(1),
            "timeframes": by(3),
            "date_range": {
                "start": key_to_date(min(starts)).isoformat() if starts else None,
                "end": key_to_date(max(ends)).isoformat() if ends else None,
            },
            "expired_entries": expired,
            "db_size_mb": round(size / 1_048_576, 3),
            "db_size_bytes": size,
            "db_path": str(self.db_path),
            "schema_version": self.schema_version,
            "tables": tables,
            "options_entries": tables["raw_options_chain"],
            "trade_entries": tables["trade_history"],
            "hits": hits,
            "misses": misses,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        }

    # -- option chains --------------------------------------------------------------------

    def store_raw_options(
        self,
        symbol: str,
        trading_date: Any,
        options_df: pd.DataFrame,
        underlying_price: float | None = None,
        source: str = "alpaca",
        snapshot_time: Any = None,
        ttl_hours: float | None = None,
    ) -> int:
        """Store one option-chain snapshot of ``symbol`` for ``trading_date``; returns rows.

        One row per (symbol, trading_date, contract, source): a later snapshot of the same
        day replaces the earlier one. ``option_type`` accepts call/put/C/P in any case.
        Snapshots are history nobody can re-download (Alpaca has no historical chain), so
        they keep for 10 years unless ``ttl_hours`` says otherwise.
        """
        sym = normalize_symbol(symbol)
        src = _norm_source(source)
        day = to_date(trading_date, "trading_date")
        if not isinstance(options_df, pd.DataFrame):
            raise ValueError(f"options_df must be a pandas DataFrame, got {type(options_df).__name__}")
        lowered = [str(c).lower() for c in options_df.columns]
        twice = sorted({c for c in lowered if lowered.count(c) > 1})
        if twice:
            raise ValueError(f"options_df has duplicate columns {twice} (names are case-insensitive)")
        frame = options_df.rename(columns=lambda c: str(c).lower())
        if "type" in frame.columns and "option_type" not in frame.columns:
            frame = frame.rename(columns={"type": "option_type"})
        for col in ("strike", "option_type", "expiration"):
            if col not in frame.columns:
                raise ValueError(f"options_df has no {col!r} column")
        now = now_utc()
        snap = to_utc_datetime(snapshot_time, "snapshot_time") if snapshot_time is not None else now
        if ttl_hours is None:
            expires = int((now + HISTORICAL_TTL).timestamp())
        else:
            expires = int(ttl_expiry(np.zeros(1, dtype=np.int64), now, ttl_hours)[0])
        records = []
        seen: set[str] = set()
        for i, row in enumerate(frame.to_dict("records")):
            records.append(self._option_record(sym, day, src, row, underlying_price, snap, expires, i))
            if records[-1][2] in seen:
                raise ValueError(f"contract {records[-1][2]} appears twice in one snapshot")
            seen.add(records[-1][2])
        if not records:
            return 0
        placeholders = ",".join("?" * len(records[0]))
        with self.atomic() as conn:
            conn.executemany(f"INSERT OR REPLACE INTO raw_options_chain VALUES ({placeholders})", records)
        return len(records)

    @staticmethod
    def _option_record(
        sym: str, day: date, src: str, row: dict, underlying: float | None, snap: datetime,
        expires: int, i: int,
    ) -> tuple:
        """The one place with the rules of an option-chain row; a stored row as a tuple, or
        ``ValueError`` naming the row, its contract and the field.

        A given ``contract_symbol`` must be an OCC symbol that agrees with the row's
        underlying, expiration, type and strike (an adjusted contract's root may carry one
        digit, e.g. ``AAPL1``); the expiration may not precede the trading date; prices,
        volumes and open interest are non-negative (counts whole and within 64 bits);
        implied volatility is >= 0 and |delta| <= 1.
        """
        contract = row.get("contract_symbol")
        where = f"row {i}" + (f" ({contract})" if _given(contract) and isinstance(contract, str) else "")

        def num(name: str) -> float | None:
            value = row.get(name)
            return check_number(value, f"{where}: {name}") if _given(value) else None

        strike = num("strike")
        if strike is None or strike <= 0:
            raise ValueError(f"{where}: strike must be a positive number")
        kind = normalize_option_type(row.get("option_type"))
        expiration = to_date(row.get("expiration"), f"{where}: expiration")
        if expiration < day:
            raise ValueError(
                f"{where}: expiration {expiration} is before the trading date {day}; "
                "an expired contract has no quote"
            )
        if not _given(contract) or (isinstance(contract, str) and not contract.strip()):
            contract = occ_symbol(sym, expiration, kind, strike)
        else:
            try:
                root, occ_expiration, occ_kind, occ_strike = parse_occ_symbol(contract)
            except ValueError as exc:
                raise ValueError(f"{where}: contract_symbol: {exc}") from None
            compact, root = sym.replace(".", "").replace("/", ""), root.replace(".", "")
            contradictions = [
                f"{field} {mine} != {theirs}"
                for field, ok, mine, theirs in (
                    ("underlying", root == compact or (root[:-1] == compact and root[-1:].isdigit()), root, sym),
                    ("expiration", occ_expiration == expiration, occ_expiration, expiration),
                    ("option_type", occ_kind == kind, occ_kind, kind),
                    ("strike", abs(occ_strike - strike) < 0.0005, occ_strike, strike),
                )
                if not ok
            ]
            if contradictions:
                raise ValueError(
                    f"{where}: contract_symbol {contract!r} contradicts the row "
                    f"(symbol says {'; '.join(contradictions)} in the row)"
                )
        for name in ("bid", "ask", "last"):
            v = num(name)
            if v is not None and v < 0:
                raise ValueError(f"{where}: {name!r} is negative ({v})")
        vol = check_count(row.get("volume"), f"{where}: volume")
        oi = check_count(row.get("open_interest"), f"{where}: open_interest")
        iv, delta = num("implied_volatility"), num("delta")
        if iv is not None and iv < 0:
            raise ValueError(f"{where}: implied_volatility must be >= 0, got {iv}")
        if delta is not None and abs(delta) > 1:
            raise ValueError(f"{where}: delta must be between -1 and 1, got {delta}")
        under = num("underlying_price")
        if under is None:
            under = None if underlying is None else check_number(underlying, "underlying_price")
        if under is not None and under <= 0:
            raise ValueError(f"{where}: underlying_price must be a positive number, got {under}")
        bid, ask = num("bid"), num("ask")
        score = num("data_quality_score")
        if score is None:
            score = TradingCacheManager._quality(bid, ask, iv, delta)
        elif not 0 <= score <= 1:
            raise ValueError(f"{where}: data_quality_score must be between 0 and 1, got {score}")
        row_snap = row.get("snapshot_time")
        snap_s = int(to_utc_datetime(row_snap, f"{where}: snapshot_time").timestamp()) if _given(row_snap) \
            else int(snap.timestamp())
        return (
            sym, day.isoformat(), str(contract).strip().upper(), src, strike, kind, expiration.isoformat(),
            bid, ask, num("last"), vol, oi,
            iv, delta, num("gamma"), num("theta"), num("vega"), num("rho"),
            under, score, snap_s, expires,
        )

    @staticmethod
    def _quality(bid: float | None, ask: float | None, iv: float | None, delta: float | None) -> float:
        """1.0 for a complete, uncrossed quote with greeks; less for each thing missing."""
        score = 1.0
        if bid is None or ask is None:
            score -= 0.4
        elif ask < bid:
            score -= 0.5
        if iv is None:
            score -= 0.2
        if delta is None:
            score -= 0.2
        return round(max(score, 0.0), 2)

    _OPTION_SELECT = (
        "SELECT contract_symbol, strike, option_type, expiration, bid, ask, last, volume, open_interest, "
        "implied_volatility, delta, gamma, theta, vega, rho, underlying_price, snapshot_time, "
        "symbol, trading_date, source, data_quality_score FROM raw_options_chain"
    )

    def get_raw_options(
        self,
        symbol: str,
        trading_date: Any,
        source: str | None = None,
        expiration: Any = None,
        option_type: str | None = None,
    ) -> pd.DataFrame | None:
        """The stored snapshot of ``symbol``'s chain for ``trading_date`` (or ``None``).

        With ``source=None`` and several sources, each contract comes from the
        highest-priority source. Rows are sorted by expiration, strike, type.
        """
        where, params = _where(
            ("symbol = ?", normalize_symbol(symbol)),
            ("trading_date = ?", to_date(trading_date, "trading_date").isoformat()),
            ("expires_at > ?", int(now_utc().timestamp())),
            ("source = ?", _maybe(_norm_source, source)),
            ("expiration = ?", _maybe(lambda d: to_date(d, "expiration").isoformat(), expiration)),
            ("option_type = ?", _maybe(normalize_option_type, option_type)),
        )
        rows = self.conn.execute(f"{self._OPTION_SELECT} WHERE {where}", params).fetchall()
        if not rows:
            return None
        columns = [*OPTION_COLUMNS, "symbol", "trading_date", "source", "data_quality_score"]
        frame = pd.DataFrame(rows, columns=columns)
        frame["_rank"] = [_source_rank(s) for s in frame["source"]]
        frame = frame.sort_values("_rank").drop_duplicates("contract_symbol").drop(columns="_rank")
        frame["expiration"] = [date.fromisoformat(d) for d in frame["expiration"]]
        frame["trading_date"] = [date.fromisoformat(d) for d in frame["trading_date"]]
        frame["snapshot_time"] = pd.to_datetime(frame["snapshot_time"], unit="s", utc=True)
        for col in ("volume", "open_interest"):
            frame[col] = frame[col].astype("Int64")
        return frame.sort_values(["expiration", "strike", "option_type"]).reset_index(drop=True)

    def delete_raw_options(
        self,
        symbol: str | None = None,
        trading_date: Any = None,
        source: str | None = None,
        before: Any = None,
    ) -> int:
        """Delete option snapshots; every filter is optional. ``before`` deletes trading dates
        strictly earlier than it. Returns rows removed."""
        where, params = _where(
            ("symbol = ?", _maybe(normalize_symbol, symbol)),
            ("trading_date = ?", _maybe(lambda d: to_date(d, "trading_date").isoformat(), trading_date)),
            ("source = ?", _maybe(_norm_source, source)),
            ("trading_date < ?", _maybe(lambda d: to_date(d, "before").isoformat(), before)),
        )
        with self.atomic() as conn:
            return conn.execute(f"DELETE FROM raw_options_chain WHERE {where}", params).rowcount

    def get_options_stats(self) -> dict[str, Any]:
        """Rows, underlyings, snapshot days, contracts and date range of stored chains."""
        row = self.conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT symbol), COUNT(DISTINCT symbol || trading_date), "
            "COUNT(DISTINCT contract_symbol), MIN(trading_date), MAX(trading_date), "
            "AVG(data_quality_score) FROM raw_options_chain"
        ).fetchone()
        sources = [r[0] for r in self.conn.execute("SELECT DISTINCT source FROM raw_options_chain ORDER BY 1")]
        symbols = [r[0] for r in self.conn.execute("SELECT DISTINCT symbol FROM raw_options_chain ORDER BY 1")]
        return {
            "total_rows": row[0],
            "unique_symbols": row[1],
            "symbols": symbols,
            "snapshots": row[2],
            "unique_contracts": row[3],
            "date_range": {"start": row[4], "end": row[5]},
            "sources": sources,
            "avg_quality_score": None if row[6] is None else round(row[6], 4),
        }

    # -- trade history --------------------------------------------------------------------

    def archive_trade(self, trade: Mapping[str, Any] | Any) -> bool:
        """Insert or update a trade by ``trade_id``; returns True.

        Takes a dict or a pydantic model. A trade archived at entry (no exit yet) is updated
        at exit: only the fields given are changed. ``realized_pnl``, ``realized_pnl_pct``
        (signed by the position: a short that falls gains) and ``holding_period_hours`` are
        derived from the merged trade whenever this call does not give them, so correcting an
        entry price later also corrects the P&L. Date-only times mean New York midnight.
        """
        record = self._trade_record(trade)
        given = set(record)
        with self.atomic() as conn:
            row = conn.execute(
                f"SELECT {', '.join(TRADE_COLUMNS)} FROM trade_history WHERE trade_id = ?",
                (record["trade_id"],),
            ).fetchone()
            existing = None if row is None else dict(zip(TRADE_COLUMNS, row, strict=True))
            if existing is None:
                missing = [c for c in _TRADE_REQUIRED if record.get(c) is None]
                if missing:
                    raise ValueError(f"trade {record['trade_id']!r} is new and lacks {', '.join(missing)}")
            merged = {**(existing or {}), **record}
            self._check_trade(merged, existing)
            for name, value in self._derived_trade_fields(merged).items():
                if name not in given:
                    record[name] = value
            record["updated_at"] = int(now_utc().timestamp())
            cols = list(record)
            if existing is None:
                conn.execute(
                    f"INSERT INTO trade_history ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [record[c] for c in cols],
                )
            else:
                sets = ", ".join(f"{c} = ?" for c in cols if c != "trade_id")
                conn.execute(
                    f"UPDATE trade_history SET {sets} WHERE trade_id = ?",
                    [record[c] for c in cols if c != "trade_id"] + [record["trade_id"]],
                )
        return True

    @staticmethod
    def _trade_record(trade: Any) -> dict[str, Any]:
        """The given fields of a trade, each checked and normalised (the per-field half of
        the trade rules; :meth:`_check_trade` holds the rules across fields)."""
        if hasattr(trade, "model_dump"):
            data = trade.model_dump()
        elif isinstance(trade, Mapping):
            data = dict(trade)
        else:
            raise ValueError(f"trade must be a dict or a pydantic model, got {type(trade).__name__}")
        unknown = set(data) - set(TRADE_COLUMNS)
        data = {k: v for k, v in data.items() if k in TRADE_COLUMNS}
        trade_id = data.get("trade_id")
        if not isinstance(trade_id, str) or not trade_id.strip():
            raise ValueError("trade needs a non-empty string trade_id")
        if len(trade_id.strip()) > MAX_TRADE_ID_LENGTH:
            raise ValueError(f"trade_id is longer than {MAX_TRADE_ID_LENGTH} characters")
        record: dict[str, Any] = {"trade_id": trade_id.strip()}
        for key, value in data.items():
            # Only None means "not given": a NaN price or a NaT time is refused by its check.
            if key == "trade_id" or value is None:
                continue
            what = f"trade {record['trade_id']!r}: {key}"
            if key == "symbol":
                try:
                    value = normalize_symbol(value)
                except ValueError as exc:
                    raise ValueError(f"trade {record['trade_id']!r}: {exc}") from None
            elif key in _TRADE_TIME_COLUMNS:
                # A bare date is that New York day's midnight, as the date filters read it.
                value = range_start_key(value, intraday=True, what=what)
                if clamp_key(value) != value:
                    raise ValueError(f"{what} {data[key]!r} is outside the years 1677-2262")
            elif key in ("entry_price", "exit_price"):
                value = check_number(value, what)
                if value <= 0:
                    raise ValueError(f"{what} must be a positive number, got {data[key]!r}")
            elif key == "quantity":
                value = check_number(value, what)
                if value == 0 or abs(value) > MAX_TRADE_QUANTITY:
                    raise ValueError(
                        f"{what} must be a non-zero number of at most {MAX_TRADE_QUANTITY:g} in size, "
                        f"got {data[key]!r}"
                    )
                value = int(value) if value.is_integer() else value
            elif key == "signal_confidence":
                value = check_number(value, what)
                if not 0 <= value <= 1:
                    raise ValueError(f"{what} must be between 0 and 1, got {data[key]!r}")
            elif key in ("realized_pnl", "realized_pnl_pct", "holding_period_hours",
                         "max_profit_pct", "max_drawdown_pct"):
                value = check_number(value, what)
            else:
                value = str(value.value if hasattr(value, "value") else value)
            record[key] = value
        if unknown and log.isEnabledFor(logging.DEBUG):
            log.debug("archive_trade ignored fields %s", sorted(unknown))
        return record

    @staticmethod
    def _check_trade(trade: dict[str, Any], existing: dict[str, Any] | None) -> None:
        """The trade rules across fields, on the merged trade (``existing`` updated by this
        call): an update keeps the symbol, the exit is not before the entry, and the derived
        P&L is a finite number."""
        tid = trade["trade_id"]
        if existing is not None and trade["symbol"] != existing["symbol"]:
            raise ValueError(
                f"trade {tid!r}: symbol {trade['symbol']} differs from the stored {existing['symbol']}; "
                "a trade_id names one trade (archive the other symbol under a new trade_id)"
            )
        if trade.get("exit_date") is not None and trade["exit_date"] < trade["entry_date"]:
            def iso(key: str) -> str:
                return pd.Timestamp(trade[key], unit="s", tz="UTC").isoformat()

            raise ValueError(
                f"trade {tid!r}: exit_date {iso('exit_date')} is before entry_date {iso('entry_date')}"
            )
        for name, value in TradingCacheManager._derived_trade_fields(trade).items():
            if not math.isfinite(value):
                raise ValueError(f"trade {tid!r}: {name} is not a finite number (prices or quantity too large)")

    @staticmethod
    def _derived_trade_fields(trade: dict[str, Any]) -> dict[str, float]:
        """P&L, P&L % and holding hours of a (merged) trade, as far as its fields allow."""
        out: dict[str, float] = {}
        exit_price, entry, qty = trade.get("exit_price"), trade["entry_price"], trade["quantity"]
        if exit_price is not None:
            out["realized_pnl"] = (exit_price - entry) * qty
            out["realized_pnl_pct"] = (exit_price / entry - 1.0) * 100.0 * (1.0 if qty > 0 else -1.0)
        if trade.get("exit_date") is not None:
            out["holding_period_hours"] = (trade["exit_date"] - trade["entry_date"]) / 3600.0
        return out

    def get_trade_history(
        self,
        symbol: str | None = None,
        start: Any = None,
        end: Any = None,
        strategy: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Trades (newest entry first) filtered by symbol, entry date range and strategy.
        ``entry_date``/``exit_date`` come back as tz-aware UTC timestamps."""
        where, params = self._trade_filters(symbol, start, end, strategy)
        sql = f"SELECT {', '.join(TRADE_COLUMNS)} FROM trade_history WHERE {where} ORDER BY entry_date DESC, trade_id"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**63:
                raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
            sql += f" LIMIT {int(limit)}"
        frame = pd.DataFrame(self.conn.execute(sql, params).fetchall(), columns=list(TRADE_COLUMNS))
        for col in _TRADE_TIME_COLUMNS:
            frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
        return frame

    @staticmethod
    def _trade_filters(
        symbol: str | None, start: Any, end: Any, strategy: str | None
    ) -> tuple[str, list[Any]]:
        """Entry-time bounds follow the bars' rules: date-only bounds are whole New York days."""
        lo = hi = None
        if start is not None or end is not None:
            lo, hi = TradingCacheManager._open_key_range(start, end, intraday=True)
        return _where(
            ("symbol = ?", _maybe(normalize_symbol, symbol)),
            ("entry_date >= ?", lo if start is not None else None),
            ("entry_date <= ?", hi if end is not None else None),
            ("strategy_name = ?", _maybe(str, strategy)),
        )

    def delete_trades(
        self, symbol: str | None = None, start: Any = None, end: Any = None, strategy: str | None = None
    ) -> int:
        """Delete trades whose entry falls in ``[start, end]`` (New York dates); returns rows."""
        where, params = self._trade_filters(symbol, start, end, strategy)
        with self.atomic() as conn:
            return conn.execute(f"DELETE FROM trade_history WHERE {where}", params).rowcount

    def get_trade_stats(self, symbol: str | None = None, strategy: str | None = None) -> dict[str, Any]:
        """Closed-trade statistics: counts, win rate, P&L, profit factor, holding time."""
        where, params = self._trade_filters(symbol, None, None, strategy)
        rows = self.conn.execute(
            f"SELECT realized_pnl, holding_period_hours FROM trade_history WHERE {where} "
            "AND exit_price IS NOT NULL",
            params,
        ).fetchall()
        pnls = [r[0] or 0.0 for r in rows]
        hours = [r[1] for r in rows if r[1] is not None]
        wins = [p for p in pnls if p > 0]
        losses = [p for p in pnls if p < 0]
        gross_loss = -sum(losses)
        n = len(pnls)
        return {
            "total_trades": n,
            "winning_trades": len(wins),
            "losing_trades": len(losses),
            "win_rate_pct": round(100.0 * len(wins) / n, 4) if n else 0.0,
            "total_pnl": round(sum(pnls), 6),
            "avg_pnl": round(sum(pnls) / n, 6) if n else 0.0,
            "avg_win": round(sum(wins) / len(wins), 6) if wins else 0.0,
            "avg_loss": round(sum(losses) / len(losses), 6) if losses else 0.0,
            # None when there is no losing trade to divide by (JSON has no infinity).
            "profit_factor": round(sum(wins) / gross_loss, 6) if gross_loss else None,
            "avg_holding_hours": round(sum(hours) / len(hours), 6) if hours else 0.0,
        }


