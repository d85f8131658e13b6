"""The trading cache: bars of any timeframe, option-chain snapshots, trade history, in a SQLite
file or on a PostgreSQL server (the same rooms and SQL on both engines).

:class:`TradingCacheManager` is the public face (see README "Library API" for usage); it only
delegates to one module per concern.

Where to change what
--------------------
=====================  ========================================================================
``manager.py``         :class:`TradingCacheManager`: public signatures, defaults, docstrings.
``dialect.py``         SQL that is SQLite's own: connection settings (:data:`SQLITE_SETTINGS`),
                       ``user_version``/``application_id``, ``BEGIN IMMEDIATE``, savepoints,
                       VACUUM/checkpoint, the upsert spelling. A second engine is a second dialect.
``postgres.py``        The PostgreSQL engine: dialect, schema (:data:`PG_TABLES`), the connection
                       wrapper (``?`` -> ``%s``), per-process pools, advisory locks, the retry of
                       deadlocks/serialization failures, :func:`redact_url`.
``files.py``           The file at ``db_path``: path rules, checks before anything is written
                       (foreign, damaged, truncated, read-only files), :class:`DatabaseFileError`.
``connection.py``      :func:`open_database` (path/``sqlite:///`` -> SQLite, ``postgresql://`` ->
                       PostgreSQL), the ``Engine`` protocol; SQLite's per-thread/per-process
                       connections, ``atomic()``, the locked-retry, vacuum.
``migrations.py``      Schema versions (:data:`MIGRATIONS`), the DDL, the seed ``market_cache`` import.
``series.py``          Series interning (a series is asset type, symbol, timeframe, source and feed),
                       :data:`SOURCE_PRIORITY`, :data:`FEED_PRIORITY`, source/asset-type/feed spelling.
``ttl.py``             The TTL rules (:func:`ttl_expiry` for bars, ``action_expiry`` for corporate-action
                       coverage), ``ttl_hours`` checks, ``cleanup_expired``.
``bars.py``            Bars: set/set_many/get/exists/count/delete over ``bars`` (daily) and
                       ``bar_chunks`` (intraday), stats.
``chunks.py``          The intraday chunk codec (lz4 block, column-major float64, time deltas).
``coverage.py``        ``record_coverage`` and ``missing_sessions(_many)``.
``options.py``         Option-chain row rules, quality score, store/get/delete, stats.
``corporate_actions.py``  Stored corporate actions and their coverage (the adjustment maths is
                       :mod:`cachelib.corporate_actions`).
``trades.py``          Trade history: archive, history, deletion, statistics. The trade record
                       itself (model, columns, rules, signed P&L) is :mod:`cachelib.trade`.
=====================  ========================================================================

Design
------
* **One file, one settings mapping.** Every connection gets :data:`SQLITE_SETTINGS` (WAL,
  ``synchronous=NORMAL``, ``busy_timeout``, foreign keys). Connections are per thread and per
  process (reopened after ``fork``), so a manager may be shared by threads.
* **Writers take ``BEGIN IMMEDIATE``**, so a write transaction holds the write lock from its
  first statement and can never fail half-way with "database is locked"; only that error is
  retried (bounded by ``timeout``), anything else propagates. One public call is one
  transaction: a rejected or interrupted batch leaves the store as it was.
* **Intraday bars** (below 1Day) live in ``bar_chunks``: one lz4-compressed chunk per
  ``(series, New York session)`` holding the session's times and columns
  (:mod:`cachelib.store.chunks`); a write merges into the chunk, a read decodes the chunks in
  range. Expiry is per chunk.
* **Daily-or-longer bars** live in ``bars``, a ``WITHOUT ROWID`` table clustered on its primary key
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

from .dialect import SQLITE_SETTINGS
from .files import APPLICATION_ID, CacheNotFoundError, DatabaseFileError, database_files, default_db_path
from .manager import TradingCacheManager
from .migrations import MIGRATIONS as MIGRATIONS
from .migrations import SCHEMA_VERSION
from .postgres import is_postgres_url, redact_url
from .series import FEED_PRIORITY as FEED_PRIORITY
from .series import SOURCE_PRIORITY
from .series import UNKNOWN_FEED as UNKNOWN_FEED
from .trades import MAX_TRADE_ID_LENGTH as MAX_TRADE_ID_LENGTH
from .trades import MAX_TRADE_QUANTITY as MAX_TRADE_QUANTITY
from .trades import TRADE_COLUMNS as TRADE_COLUMNS
from .ttl import HISTORICAL_TTL as HISTORICAL_TTL
from .ttl import MAX_TTL_HOURS as MAX_TTL_HOURS
from .ttl import RECENT_AGE_DAYS as RECENT_AGE_DAYS
from .ttl import RECENT_TTL as RECENT_TTL
from .ttl import check_ttl_hours as check_ttl_hours
from .ttl import ttl_expiry

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
    "is_postgres_url",
    "redact_url",
    "ttl_expiry",
]
