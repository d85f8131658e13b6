"""The SQL that is SQLite's own: settings, bookkeeping PRAGMAs, write locks, upserts, vacuum.

Every statement a PostgreSQL engine would spell differently is here, so a second engine is a
second dialect class (and its own schema DDL) behind the same rooms. The rooms' plain SQL
(``SELECT``/``DELETE``/``UPDATE`` with ``?`` parameters) is portable as it is, apart from the
parameter style, which a PostgreSQL engine translates (psycopg uses ``%s``).

The schema DDL stays with :mod:`cachelib.store.migrations`: it is SQLite's schema *history*
(``WITHOUT ROWID`` tables, ``NUMERIC`` affinity); a new engine starts at the current schema.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SQLITE", "SQLITE_SETTINGS", "SQLiteDialect", "maybe", "where_clause"]

#: Applied to every connection. busy_timeout is set from the manager's ``timeout``.
SQLITE_SETTINGS: dict[str, Any] = {
    "journal_mode": "WAL",  # readers never block the writer, and the writer never blocks readers
    "synchronous": "NORMAL",  # durable at checkpoints; in WAL a crash loses no committed txn's integrity
    "foreign_keys": "ON",
    "temp_store": "MEMORY",
    "cache_size": -32_000,  # 32 MB page cache per connection
}


class SQLiteDialect:
    """SQLite's spelling of the statements that differ between engines."""

    name = "sqlite"
    #: Connection settings (``PRAGMA name = value`` each; ``journal_mode`` is switched apart).
    settings: dict[str, Any] = SQLITE_SETTINGS
    #: A writer takes the write lock at its first statement, so it never fails half-way locked.
    begin_write = "BEGIN IMMEDIATE"
    commit = "COMMIT"
    rollback = "ROLLBACK"
    journal_mode = "PRAGMA journal_mode"
    enable_wal = "PRAGMA journal_mode = WAL"
    #: The schema version and the file's owner mark live in the SQLite header.
    user_version = "PRAGMA user_version"
    application_id = "PRAGMA application_id"
    vacuum = "VACUUM"
    #: Copy the WAL into the database file and empty it.
    checkpoint_truncate = "PRAGMA wal_checkpoint(TRUNCATE)"
    table_exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    table_names = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'"
    #: Every schema object (tables, views, triggers, indexes): a file with any is not empty.
    schema_object_count = "SELECT count(*) FROM sqlite_master"
    table_columns = "SELECT name FROM pragma_table_info(?)"

    # Templates, filled with ``str.format``.
    busy_timeout = "PRAGMA busy_timeout = {}"  # milliseconds
    setting = "PRAGMA {} = {}"  # name, value
    set_user_version = "PRAGMA user_version = {:d}"
    set_application_id = "PRAGMA application_id = {:d}"
    savepoint = "SAVEPOINT {}"
    rollback_to = "ROLLBACK TO {}"
    release = "RELEASE {}"

    @staticmethod
    def replace_into(table: str, n_columns: int) -> str:
        """Insert a whole row, replacing the row with the same primary key (PostgreSQL:
        ``INSERT ... ON CONFLICT (key) DO UPDATE``)."""
        return f"INSERT OR REPLACE INTO {table} VALUES ({','.join('?' * n_columns)})"


#: The dialect of every store today.
SQLITE = SQLiteDialect()


def where_clause(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE body and its parameters from ``(sql fragment, value)`` pairs; pairs whose value is
    ``None`` (a filter not given) are left out. Values must already be normalised."""
    used = [(sql, value) for sql, value in conditions if value is not None]
    return " AND ".join(sql for sql, _ in used) or "1 = 1", [value for _, value in used]


def maybe(normalise: Any, value: Any) -> Any:
    """``normalise(value)``, or ``None`` for a filter that was not given."""
    return None if value is None else normalise(value)
