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

import numpy as np

from ..bars import date_to_key, parse_timeframe, to_date, to_utc_datetime
from ..clock import now_utc
from . import chunks
from .dialect import SQLITE
from .files import APPLICATION_ID, DatabaseFileError, foreign_error, newer_error
from .series import series_id
from .ttl import session_days_of_keys

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


def _migration_short_trade_pct(conn: sqlite3.Connection) -> None:
    """Short trades archived with the unsigned P&L % get the signed one (issue 10).

    Before :func:`cachelib.trade.trade_pnl`, a caller-given ``realized_pnl_pct`` (the
    engine's ``(exit / entry - 1) * 100``) was stored as given, so a short (``quantity < 0``)
    winner read as a loss. Only rows whose stored value is exactly that unsigned formula of
    their own stored prices are flipped; any other caller-given value (fees, adjustments) and
    every long is left untouched.
    """
    conn.execute(
        """
        UPDATE trade_history SET realized_pnl_pct = -realized_pnl_pct
        WHERE quantity < 0 AND exit_price IS NOT NULL AND realized_pnl_pct IS NOT NULL
          AND exit_price != entry_price
          AND abs(realized_pnl_pct - (exit_price / entry_price - 1.0) * 100.0)
              <= 1e-9 * abs(realized_pnl_pct)
        """
    )


def _migration_4(conn: sqlite3.Connection) -> None:
    """Intraday bars become one chunk per (series, New York session) (:mod:`.chunks`).

    Every intraday row of ``bars`` still valid now moves into its session's chunk, values bit
    for bit, and the chunk expires with the latest of those rows, so no live bar expires
    sooner than it would have. Expired rows are dropped, not moved: they were invisible
    already and cleanup would have removed them, and in a chunk they would take a live
    neighbour's expiry: a bar retracted with ``ttl_hours=0`` would come back. This step was
    rewritten before any release: nothing shipped with the earlier v4, which moved every row.
    """
    _run_script(conn,
        """
        -- A rowid table: chunks are a few kB, too large for a WITHOUT ROWID b-tree's cells.
        CREATE TABLE IF NOT EXISTS bar_chunks (
            series_id  INTEGER NOT NULL,
            session    INTEGER NOT NULL,   -- New York session date, days since 1970-01-01
            first_ts   INTEGER NOT NULL,   -- epoch seconds UTC of the chunk's first bar
            last_ts    INTEGER NOT NULL,   -- ... and of its last bar
            n_bars     INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,   -- epoch seconds UTC, for the whole chunk
            data       BLOB NOT NULL,      -- cachelib.store.chunks format
            PRIMARY KEY (series_id, session)
        );
        """
    )
    now_s = int(now_utc().timestamp())
    for sid, timeframe in conn.execute("SELECT series_id, timeframe FROM series").fetchall():
        if not parse_timeframe(timeframe).is_intraday:
            continue
        rows = conn.execute(
            "SELECT ts, open, high, low, close, volume, vwap, trade_count, expires_at FROM bars "
            "WHERE series_id = ? AND expires_at > ? ORDER BY ts",
            (sid, now_s),
        ).fetchall()
        conn.execute("DELETE FROM bars WHERE series_id = ?", (sid,))  # expired rows included
        if not rows:
            continue
        keys = np.array([r[0] for r in rows], dtype=np.int64)
        expiry = np.array([r[8] for r in rows], dtype=np.int64)
        values = np.array([r[1:8] for r in rows], dtype=np.float64).T  # NULL -> NaN
        days = session_days_of_keys(keys, True)
        cut = np.flatnonzero(np.diff(days)) + 1
        for a, b in zip(np.r_[0, cut].tolist(), np.r_[cut, len(keys)].tolist(), strict=True):
            conn.execute(
                SQLITE.replace_into("bar_chunks", 7),
                (sid, int(days[a]), int(keys[a]), int(keys[b - 1]), b - a, int(expiry[a:b].max()),
                 chunks.encode(keys[a:b], values[:, a:b])),
            )


def _migration_6(conn: sqlite3.Connection) -> None:
    """The feed joins a series' identity: ``series`` gets ``feed`` (default ``'unknown'``) and
    the unique key ``(asset_type, symbol, timeframe, source, feed)``.

    SQLite cannot change a UNIQUE constraint in place, so the table is rebuilt keeping every
    ``series_id`` (``bars``, ``bar_chunks`` and ``coverage`` refer to it). Existing series get
    the feed ``'unknown'``: nobody recorded which feed filled them, and they are never
    promoted to a named one. ``coverage`` declares a foreign key to ``series``, and
    ``PRAGMA foreign_keys`` cannot be switched off inside this transaction: with the check
    deferred, dropping the old table counts each coverage row as a violation and re-inserting
    its series (into the new table of the same name) uncounts it, so the commit sees none.
    """
    cols = {row[0] for row in conn.execute(SQLITE.table_columns, ("series",))}
    if "feed" in cols:
        return
    conn.execute("PRAGMA defer_foreign_keys = ON")  # reset by SQLite at the end of the transaction
    _run_script(conn,
        """
        CREATE TABLE series_before_v6 AS SELECT series_id, asset_type, symbol, timeframe, source FROM series;
        DROP TABLE series;
        CREATE TABLE series (
            series_id  INTEGER PRIMARY KEY,
            asset_type TEXT NOT NULL,
            symbol     TEXT NOT NULL,
            timeframe  TEXT NOT NULL,
            source     TEXT NOT NULL,
            feed       TEXT NOT NULL DEFAULT 'unknown',   -- iex, sip, delayed_sip, demo, ...
            UNIQUE (asset_type, symbol, timeframe, source, feed)
        );
        INSERT INTO series (series_id, asset_type, symbol, timeframe, source)
            SELECT series_id, asset_type, symbol, timeframe, source FROM series_before_v6;
        DROP TABLE series_before_v6;
        """
    )


def _migration_7(conn: sqlite3.Connection) -> None:
    """Corporate actions and their coverage; the open interest's date; option-chain history.

    ``raw_options_history`` has the columns of ``raw_options_chain`` in the same order (its
    new ``open_interest_date`` last) and keeps each snapshot a later one replaced, so a chain
    can be read as it stood at any time of its day (:mod:`cachelib.store.options`).
    """
    cols = {row[0] for row in conn.execute(SQLITE.table_columns, ("raw_options_chain",))}
    if "open_interest_date" not in cols:
        conn.execute("ALTER TABLE raw_options_chain ADD COLUMN open_interest_date TEXT")  # YYYY-MM-DD
    _run_script(conn,
        """
        CREATE TABLE IF NOT EXISTS raw_options_history (
            symbol             TEXT NOT NULL,
            trading_date       TEXT NOT NULL,
            contract_symbol    TEXT NOT NULL,
            source             TEXT NOT NULL,
            strike             REAL NOT NULL,
            option_type        TEXT NOT NULL,
            expiration         TEXT NOT NULL,
            bid REAL, ask REAL, last REAL,
            volume INTEGER, open_interest INTEGER,
            implied_volatility REAL, delta REAL, gamma REAL, theta REAL, vega REAL, rho REAL,
            underlying_price   REAL,
            data_quality_score REAL NOT NULL,
            snapshot_time      INTEGER NOT NULL,    -- epoch seconds UTC
            expires_at         INTEGER NOT NULL,
            open_interest_date TEXT,
            PRIMARY KEY (symbol, trading_date, source, contract_symbol, snapshot_time)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS corporate_actions (
            symbol      TEXT NOT NULL,
            action_type TEXT NOT NULL,
            ex_date     TEXT NOT NULL,      -- New York date, YYYY-MM-DD (name change: effective date)
            ratio       REAL,               -- splits: shares after / shares before
            amount      REAL,               -- cash dividend per share
            new_symbol  TEXT,               -- name changes
            source      TEXT NOT NULL,
            fetched_at  INTEGER NOT NULL,   -- epoch seconds UTC
            PRIMARY KEY (symbol, action_type, ex_date, source)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS idx_actions_new_symbol ON corporate_actions (new_symbol)
            WHERE new_symbol IS NOT NULL;
        -- Which days a source was asked about, as ranges of New York days (days since
        -- 1970-01-01, both ends inclusive), expiring by ttl.action_expiry.
        CREATE TABLE IF NOT EXISTS action_coverage (
            symbol     TEXT NOT NULL,
            source     TEXT NOT NULL,
            first_day  INTEGER NOT NULL,
            last_day   INTEGER NOT NULL,
            fetched_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (symbol, source, first_day, last_day)
        ) WITHOUT ROWID;
        """
    )


#: Forward-only migrations: (version reached, description, function).
MIGRATIONS: tuple[tuple[int, str, Callable[[sqlite3.Connection], None]], ...] = (
    (1, "initial schema (bars, series, raw_options_chain, trade_history)", _migration_1),
    (2, "coverage bookkeeping", _migration_2),
    (3, "trade excursions (max_profit_pct, max_drawdown_pct)", _migration_3),
    (4, "intraday bars as one compressed chunk per (series, session)", _migration_4),
    (5, "short trades stored with the unsigned P&L % get the signed one", _migration_short_trade_pct),
    (6, "the feed in every series' identity (existing series: feed 'unknown')", _migration_6),
    (7, "corporate actions and their coverage, open interest date, option-chain history", _migration_7),
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
