"""Schema versions: a forward-only registry of migrations, run in one transaction.

The version is ``PRAGMA user_version`` (:data:`SCHEMA_VERSION` is the newest). Version 1 also
imports the rows of the seed's ``market_cache`` table when an old file has one. To change the
schema, append a function to :data:`MIGRATIONS`; never edit one that has shipped.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..bars import date_to_key, parse_timeframe, to_date, to_utc_datetime
from .dialect import SQLITE
from .files import APPLICATION_ID, DatabaseFileError, foreign_error, newer_error
from .series import series_id

if TYPE_CHECKING:
    from .connection import Database

log = logging.getLogger("cachelib.store")


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
    conn.execute(SQLITE.set_application_id.format(APPLICATION_ID))  # marks the file as ours
    has_seed = conn.execute(SQLITE.table_exists, ("market_cache",)).fetchone()
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
        sid = series_id(conn, asset_type.lower(), symbol.upper(), tf.name, source.lower(), create=True)
        conn.execute(
            SQLITE.replace_into("bars", 10),
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
    cols = {row[0] for row in conn.execute(SQLITE.table_columns, ("trade_history",))}
    for name in ("max_profit_pct", "max_drawdown_pct"):
        if name not in cols:
            conn.execute(f"ALTER TABLE trade_history ADD COLUMN {name} REAL")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_trade_strategy ON trade_history (strategy_name, entry_date)")


#: Forward-only migrations: (version reached, description, function).
MIGRATIONS: tuple[tuple[int, str, Callable[[sqlite3.Connection], None]], ...] = (
    (1, "initial schema (bars, series, raw_options_chain, trade_history)", _migration_1),
    (2, "coverage bookkeeping", _migration_2),
    (3, "trade excursions (max_profit_pct, max_drawdown_pct)", _migration_3),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(db: Database) -> None:
    """Bring the file to :data:`SCHEMA_VERSION` and mark it with :data:`APPLICATION_ID`
    (files of ours made before the id existed have 0), all in one transaction."""
    conn = db.conn
    try:
        version, app_id = db.version_and_id(conn)
    except sqlite3.DatabaseError as exc:
        raise DatabaseFileError(f"{db.db_path} is not a usable SQLite database: {exc}") from None
    if version > SCHEMA_VERSION:
        raise newer_error(db.db_path, version, SCHEMA_VERSION)
    if version == SCHEMA_VERSION and app_id == APPLICATION_ID:
        return
    if db.read_only_reason:
        if version == SCHEMA_VERSION:
            return  # readable as it is; the id is written by the first writer
        raise DatabaseFileError(
            f"{db.db_path} is read-only ({db.read_only_reason}) and at schema v{version}, "
            f"older than this cachelib's v{SCHEMA_VERSION}; open it once with write access to "
            "upgrade it"
        )
    with db.atomic():
        # Re-read inside the write lock: another process may have migrated meanwhile.
        version, app_id = db.version_and_id(conn)
        if app_id not in (0, APPLICATION_ID):
            raise foreign_error(db.db_path, f"its SQLite application_id is {app_id:#010x}")
        for target, description, step in MIGRATIONS:
            if target > version:
                log.info("migrating %s to schema v%d: %s", db.db_path, target, description)
                step(conn)
                conn.execute(db.dialect.set_user_version.format(target))
        if app_id != APPLICATION_ID:
            conn.execute(db.dialect.set_application_id.format(APPLICATION_ID))
