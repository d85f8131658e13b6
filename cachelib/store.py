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

Source priority: when ``get(source=None)`` finds the same bar from several sources it returns
one row per bar, from the first source in :data:`SOURCE_PRIORITY` (unknown sources rank after
the listed ones, alphabetically).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import market_hours
from .bars import (
    NY,
    OPTION_COLUMNS,
    date_to_key,
    frame_from_columns,
    frame_from_rows,
    key_range,
    rows_of_symbol,
    session_day_numbers,
    is_date_only,
    key_to_date,
    normalize_bars,
    normalize_option_type,
    normalize_symbol,
    occ_symbol,
    parse_timeframe,
    to_date,
    to_utc_datetime,
)
from .clock import now_utc

__all__ = [
    "TradingCacheManager",
    "DatabaseFileError",
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


class DatabaseFileError(ValueError):
    """The file at ``db_path`` is not a usable cache database (it is left untouched)."""


def default_db_path() -> Path:
    """``$TRADING_CACHE_DB``, else ``.cache/trading_cache.db`` in the working directory."""
    return Path(os.environ.get("TRADING_CACHE_DB") or Path(".cache") / "trading_cache.db")


def ttl_expiry(session_days: np.ndarray, now: datetime, ttl_hours: float | None = None) -> np.ndarray:
    """Expiry instants (epoch seconds, UTC) for bars of the given session dates.

    ``session_days`` are day numbers since 1970-01-01 (``date.toordinal() - 719163``).
    The age rule uses today's *New York* date, whatever the machine's ``TZ``.
    """
    now_s = int(now.timestamp())
    if ttl_hours is not None:
        ttl = float(ttl_hours)
        if not math.isfinite(ttl) or ttl < 0:
            raise ValueError(f"ttl_hours must be a finite number >= 0, got {ttl_hours!r}")
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

    def __init__(self, db_path: str | os.PathLike[str] | None = None, timeout: float = 5.0) -> None:
        if timeout is None or not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self.timeout = float(timeout)
        if str(db_path).strip() == ":memory:" or str(db_path).startswith("file::memory:"):
            raise ValueError(
                "an in-memory database cannot be shared by the manager's per-thread connections; "
                "give a file path (a temporary file works for throw-away caches)"
            )
        path = Path(db_path) if db_path is not None else default_db_path()
        self.db_path = path.resolve()
        self._check_file(self.db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._series_cache: dict[tuple[str, str, str, str], int] = {}
        self._stats_lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._migrate()

    # -- connections and transactions ------------------------------------------------------

    @staticmethod
    def _check_file(path: Path) -> None:
        if path.exists():
            if path.is_dir():
                raise DatabaseFileError(f"{path} is a directory, not a SQLite database file")
            with open(path, "rb") as fh:
                head = fh.read(16)
            if head and head != _SQLITE_MAGIC:
                raise DatabaseFileError(
                    f"{path} is not a SQLite database (left untouched); choose another --db-path "
                    "or TRADING_CACHE_DB"
                )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.db_path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            for name, value in SQLITE_SETTINGS.items():
                if name == "journal_mode":
                    self._enable_wal(conn)
                else:
                    conn.execute(f"PRAGMA {name} = {value}")
        except sqlite3.OperationalError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise DatabaseFileError(f"{self.db_path} is not a usable SQLite database: {exc}") from None
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
        conn = self.conn
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise DatabaseFileError(f"{self.db_path} is not a usable SQLite database: {exc}") from None
        if version > SCHEMA_VERSION:
            raise DatabaseFileError(
                f"{self.db_path} has schema version {version}, newer than this cachelib "
                f"understands ({SCHEMA_VERSION}); upgrade cachelib"
            )
        if version == SCHEMA_VERSION:
            return
        with self.atomic():
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for target, description, migrate in MIGRATIONS:
                if target > version:
                    log.info("migrating %s to schema v%d: %s", self.db_path, target, description)
                    migrate(conn)
                    conn.execute(f"PRAGMA user_version = {target}")

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
        uri = self.db_path.as_uri() + "?mode=ro"
        n, buffers = reader.fetch(uri, self._COLUMNAR_SQL, (sid, lo, hi, now_s), int(self.timeout * 1000))
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
        lo, hi = key_range(
            start if start is not None else "1900-01-01",
            end if end is not None else "2200-01-01",
            intraday,
        )
        return (lo if start is not None else -(2**62), hi if end is not None else 2**62)

    @staticmethod
    def _session_day_of_key(key: int, intraday: bool) -> int:
        """Day number of the New York session date a bar key belongs to."""
        if not intraday:
            return key // _DAY
        return int(session_day_numbers(pd.to_datetime([key], unit="s", utc=True))[0])

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
        days = sorted({to_date(s) for s in sessions})
        if not days:
            return 0
        not_sessions = [d for d in days if not market_hours.is_session(d)]
        if not_sessions:
            raise ValueError(f"not XNYS sessions, cannot record coverage: {not_sessions[:5]}")
        now = now_utc()
        day_nums = np.array([(d - date(1970, 1, 1)).days for d in days], dtype=np.int64)
        expiry = ttl_expiry(day_nums, now, ttl_hours)
        counts = rows_per_session or {}
        now_s = int(now.timestamp())
        with self.atomic() as conn:
            sid = self._series(_norm_asset_type(asset_type), sym, tf.name, src, create=True)
            conn.executemany(
                "INSERT OR REPLACE INTO coverage VALUES (?,?,?,?,?)",
                [
                    (sid, int(n), int(counts.get(d, 0)), now_s, int(e))
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
        syms = list(dict.fromkeys(normalize_symbol(s) for s in symbols))
        tf = parse_timeframe(timeframe)
        sessions = market_hours.sessions_in_range(to_date(start), to_date(end))
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
        """Checkpoint the WAL and rebuild the file; returns bytes reclaimed."""
        before = self._file_bytes()
        conn = self.conn
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return max(before - self._file_bytes(), 0)

    def _file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.db_path) + suffix)
            if p.exists():
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
        day = to_date(trading_date)
        if not isinstance(options_df, pd.DataFrame):
            raise ValueError(f"options_df must be a pandas DataFrame, got {type(options_df).__name__}")
        frame = options_df.rename(columns=lambda c: str(c).lower())
        if "type" in frame.columns and "option_type" not in frame.columns:
            frame = frame.rename(columns={"type": "option_type"})
        for col in ("strike", "option_type", "expiration"):
            if col not in frame.columns:
                raise ValueError(f"options_df has no {col!r} column")
        now = now_utc()
        snap = to_utc_datetime(snapshot_time) if snapshot_time is not None else now
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
        def num(name: str) -> float | None:
            value = row.get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
                return None
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"row {i}: {name!r} is not a number ({value!r})") from None
            if math.isinf(out):
                raise ValueError(f"row {i}: {name!r} is infinite")
            return out

        strike = num("strike")
        if strike is None or strike <= 0:
            raise ValueError(f"row {i}: strike must be a positive number")
        kind = normalize_option_type(row.get("option_type"))
        expiration = to_date(row.get("expiration"))
        contract = row.get("contract_symbol")
        if contract is None or (isinstance(contract, float) and math.isnan(contract)) or not str(contract).strip():
            contract = occ_symbol(sym, expiration, kind, strike)
        bid, ask = num("bid"), num("ask")
        for name in ("bid", "ask", "last", "volume", "open_interest"):
            v = num(name)
            if v is not None and v < 0:
                raise ValueError(f"row {i}: {name!r} is negative")
        under = num("underlying_price")
        if under is None:
            under = underlying
        if under is not None and (not math.isfinite(under) or under <= 0):
            raise ValueError("underlying_price must be a positive number")
        score = num("data_quality_score")
        if score is None:
            score = TradingCacheManager._quality(bid, ask, num("implied_volatility"), num("delta"))
        row_snap = row.get("snapshot_time")
        snap_s = int(to_utc_datetime(row_snap).timestamp()) if row_snap is not None and not (
            isinstance(row_snap, float) and math.isnan(row_snap)) else int(snap.timestamp())
        vol, oi = num("volume"), num("open_interest")
        return (
            sym, day.isoformat(), str(contract).strip().upper(), src, strike, kind, expiration.isoformat(),
            bid, ask, num("last"), None if vol is None else int(vol), None if oi is None else int(oi),
            num("implied_volatility"), num("delta"), num("gamma"), num("theta"), num("vega"), num("rho"),
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
            ("trading_date = ?", to_date(trading_date).isoformat()),
            ("expires_at > ?", int(now_utc().timestamp())),
            ("source = ?", _maybe(_norm_source, source)),
            ("expiration = ?", _maybe(lambda d: to_date(d).isoformat(), expiration)),
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
            ("trading_date = ?", _maybe(lambda d: to_date(d).isoformat(), trading_date)),
            ("source = ?", _maybe(_norm_source, source)),
            ("trading_date < ?", _maybe(lambda d: to_date(d).isoformat(), before)),
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
        record: dict[str, Any] = {"trade_id": trade_id.strip()}
        for key, value in data.items():
            if key == "trade_id" or value is None:
                continue
            if key == "symbol":
                value = normalize_symbol(value)
            elif key in _TRADE_TIME_COLUMNS:
                # A bare date is that New York day's midnight, as the date filters read it.
                value = key_range(value, value, intraday=True)[0] if is_date_only(value) \
                    else int(to_utc_datetime(value).timestamp())
            elif key in ("entry_price", "exit_price"):
                value = float(value)
                if not math.isfinite(value) or value <= 0:
                    raise ValueError(f"trade {trade_id!r}: {key} must be a positive number")
            elif key == "quantity":
                value = float(value)
                if not math.isfinite(value) or value == 0:
                    raise ValueError(f"trade {trade_id!r}: quantity must be a non-zero number")
                value = int(value) if value.is_integer() else value
            elif key in ("realized_pnl", "realized_pnl_pct", "holding_period_hours", "signal_confidence",
                         "max_profit_pct", "max_drawdown_pct"):
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"trade {trade_id!r}: {key} must be finite")
            else:
                value = str(value.value if hasattr(value, "value") else value)
            record[key] = value
        if unknown and log.isEnabledFor(logging.DEBUG):
            log.debug("archive_trade ignored fields %s", sorted(unknown))
        return record

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
            if not isinstance(limit, int) or limit < 0:
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


