"""The open database: per-thread connections, transactions, the locked-retry, vacuum.

* Every connection gets the dialect's settings (WAL, ``synchronous=NORMAL``, ``busy_timeout``,
  foreign keys). Connections are per thread and per process (reopened after ``fork``), so a
  manager may be shared by threads.
* Writers take ``BEGIN IMMEDIATE`` (:meth:`Database.atomic`), so a write transaction holds the
  write lock from its first statement and can never fail half-way with "database is locked";
  only that error is retried (:meth:`Database.while_locked`, bounded by ``timeout``), anything
  else propagates. Nested ``atomic()`` calls become savepoints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from . import files
from .dialect import SQLITE
from .files import CacheNotFoundError, DatabaseFileError, database_files, default_db_path
from .migrations import SCHEMA_VERSION, migrate
from .postgres import PostgresDatabase, is_postgres_url

T = TypeVar("T")

log = logging.getLogger("cachelib.store")

#: Longest ``timeout`` SQLite's ``busy_timeout`` (a C int of milliseconds) can hold.
_MAX_TIMEOUT_S = (2**31 - 1) // 1000
#: How long ``vacuum`` may hold the write lock waiting for readers before it checkpoints
#: what it can instead (a concurrent writer waits at most about this long for it).
_CHECKPOINT_WAIT_S = 0.2


def check_timeout(timeout: Any) -> float:
    """``timeout`` as float seconds, or a ``ValueError`` naming the allowed range."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 <= timeout <= _MAX_TIMEOUT_S
    ):
        raise ValueError(
            f"timeout must be a number of seconds from 0 to {_MAX_TIMEOUT_S}, got {timeout!r}"
        )
    return float(timeout)


@contextlib.contextmanager
def transaction(conn: Any, dialect: Any, state: Any, begin: Callable[[], object],
                end: Callable[[], object] | None = None) -> Iterator[Any]:
    """Both engines' ``atomic()``: the outermost call runs ``begin()`` (which also refuses a
    read-only cache), commits or rolls back, then runs ``end()``; a nested one is a savepoint.
    ``state.depth`` counts the nesting (per thread)."""
    if state.depth:
        name = f"sp{state.depth}"
        conn.execute(dialect.savepoint.format(name))
        state.depth += 1
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute(dialect.rollback_to.format(name))
                conn.execute(dialect.release.format(name))
            raise
        else:
            conn.execute(dialect.release.format(name))
        finally:
            state.depth -= 1
        return
    begin()
    state.depth = 1
    try:
        yield conn
        conn.execute(dialect.commit)
    except BaseException:
        # Also when COMMIT itself fails (disk full, I/O error, a lost server): never leave the
        # transaction open, or this connection would keep its locks. A failing ROLLBACK must
        # not hide the error that caused it.
        if conn.in_transaction:
            with contextlib.suppress(Exception):
                conn.execute(dialect.rollback)
        raise
    finally:
        state.depth = 0
        if end is not None:
            end()


_WRITER_LOCKS: dict[tuple[int, Path], threading.Lock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


def writer_lock(path: Path) -> threading.Lock:
    """This process's lock of the SQLite file at ``path``: threads of one process that write
    the same file queue on it and wake the moment it is free, instead of polling SQLite's
    write lock through its busy handler (which sleeps in growing steps of up to 100 ms - with
    four writer threads that cost a flow run seconds). Other processes still meet SQLite's lock."""
    key = (os.getpid(), path)
    lock = _WRITER_LOCKS.get(key)
    if lock is None:
        with _WRITER_LOCKS_GUARD:
            lock = _WRITER_LOCKS.setdefault(key, threading.Lock())
    return lock


class Engine(Protocol):
    """What the rooms use of an open cache; :class:`Database` (SQLite) and
    :class:`~cachelib.store.postgres.PostgresDatabase` provide it. ``conn`` is typed as SQLite's
    connection: PostgreSQL's :class:`~cachelib.store.postgres.PGConnection` speaks the same
    subset (``execute``/``executemany`` with ``?`` parameters, ``fetchone``/``fetchall``,
    ``rowcount``, ``in_transaction``)."""

    dialect: Any
    db_path: Any  # Path (SQLite) or the redacted URL (PostgreSQL)
    timeout: float
    read_only_reason: str | None

    @property
    def conn(self) -> sqlite3.Connection: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def schema_version(self) -> int: ...
    def atomic(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def lock(self, conn: sqlite3.Connection, keys: Iterable[object]) -> None: ...
    def retrying(self, action: Callable[[], T]) -> T: ...
    def read_only_error(self) -> DatabaseFileError: ...
    def vacuum(self) -> int: ...
    def file_bytes(self) -> int: ...
    def close(self) -> None: ...


def open_database(location: Any, timeout: float, create: bool, read_only: bool) -> Engine:
    """The engine for ``location``: a ``postgresql://`` URL opens PostgreSQL; a path, a
    ``sqlite:///`` URL or ``None`` (:func:`~cachelib.store.files.default_db_path`) opens SQLite."""
    if location is None:
        location = default_db_path()
    if is_postgres_url(location):
        return cast(Engine, PostgresDatabase(location, timeout, create, read_only))
    return Database(location, timeout, create, read_only)


_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def process_id() -> int:
    """``os.getpid()`` without the system call (the hot read path asks on every query): kept
    current in a forked child by an at-fork hook."""
    return _PID[0]


class Database:
    """One cache file, opened: checked, migrated, and connected per thread.

    The rooms (bars, coverage, option chains, trades) hold a reference to it and use
    :attr:`conn` for reads and :meth:`atomic` for writes.
    """

    dialect = SQLITE

    def __init__(self, db_path: Any, timeout: float, create: bool, read_only: bool) -> None:
        """See :class:`~cachelib.store.TradingCacheManager` for the meaning of the arguments."""
        self.timeout = check_timeout(timeout)
        path = files.sqlite_path(db_path)
        try:
            self.db_path = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise DatabaseFileError(f"cannot resolve {path}: {exc}; check the path") from None
        self._local = threading.local()
        self.read_only_reason: str | None = "opened with read_only=True" if read_only else None
        self._creating = False
        if not files.check_file(self.db_path, self.timeout, SCHEMA_VERSION):
            if not create or read_only:
                raise CacheNotFoundError(
                    f"no cache at {self.db_path}; check --db-path / TRADING_CACHE_DB (nothing was "
                    "created), or run a command that writes, such as sync, to create it"
                )
            files.make_parent_folder(self.db_path)
            self._creating = True  # only the first connection may create the file
        elif not read_only:
            self.read_only_reason = files.why_not_writable(self.db_path)
            if self.read_only_reason:
                log.info("%s opened read-only: %s", self.db_path, self.read_only_reason)
        try:
            migrate(self)
        finally:
            self._creating = False

    @property
    def read_only(self) -> bool:
        return self.read_only_reason is not None

    def read_only_error(self) -> DatabaseFileError:
        return files.read_only_error(self.db_path, self.read_only_reason)

    # -- connections ----------------------------------------------------------------------

    def read_uri(self) -> str:
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

    def _connect(self) -> sqlite3.Connection:
        if self.read_only_reason:
            uri = self.read_uri()
        else:
            uri = self.db_path.as_uri()
            # Only the constructor creates the file; later a vanished file is an error, not a new cache.
            uri += "?mode=rwc" if self._creating else "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=self.timeout, isolation_level=None, check_same_thread=False,
                factory=files._Connection,
            )
        except sqlite3.Error as exc:
            err = files.file_error(self.db_path, exc, self.read_only_reason)
            raise (err if err is not exc else DatabaseFileError(f"cannot open {self.db_path} ({exc})")) from None
        conn.db_path = self.db_path
        conn.read_only_reason = self.read_only_reason
        try:
            conn.execute(self.dialect.busy_timeout.format(int(self.timeout * 1000)))
            for name, value in self.dialect.settings.items():
                if name == "journal_mode":
                    if not self.read_only_reason:
                        self._enable_wal(conn)
                else:
                    conn.execute(self.dialect.setting.format(name, value))
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
            if conn.execute(self.dialect.journal_mode).fetchone()[0].lower() != "wal":
                conn.execute(self.dialect.enable_wal)

        self.while_locked(switch)

    def while_locked(self, action: Callable[[], Any]) -> None:
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
                    raise self._locked_error() from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def _locked_error(self) -> sqlite3.OperationalError:
        return sqlite3.OperationalError(
            f"database is locked: {self.db_path} stayed locked for {self.timeout:.1f}s; "
            "raise TradingCacheManager(timeout=...)"
        )

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's (and this process's) connection."""
        local = self._local
        pid = process_id()
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

    # -- transactions ---------------------------------------------------------------------

    def lock(self, conn: sqlite3.Connection, keys: Iterable[object]) -> None:
        """Nothing to do: a SQLite write transaction already holds the file's one write lock
        (PostgreSQL takes advisory locks on ``keys`` here)."""

    def retrying(self, action: Callable[[], T]) -> T:
        """Run one public call (SQLite's lock waits happen inside, see :meth:`while_locked`)."""
        return action()

    def atomic(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); nested calls become savepoints."""
        conn = self.conn
        lock = writer_lock(self.db_path)

        def begin() -> None:
            if self.read_only_reason:
                raise self.read_only_error()
            if not lock.acquire(timeout=max(self.timeout, 0.05)):
                raise self._locked_error()
            try:
                # busy_timeout already waits inside SQLite for other processes; the retry only
                # covers the rare case where SQLite gives up early (e.g. a WAL checkpoint race)
                # and is bounded by ``timeout``.
                self.while_locked(lambda: conn.execute(self.dialect.begin_write))
            except BaseException:
                lock.release()
                raise

        return transaction(conn, self.dialect, self._local, begin, lock.release)

    # -- schema bookkeeping ---------------------------------------------------------------

    def version_and_id(self, conn: sqlite3.Connection) -> tuple[int, int]:
        """``(schema version, application id)`` as the file records them."""
        return (conn.execute(self.dialect.user_version).fetchone()[0],
                conn.execute(self.dialect.application_id).fetchone()[0])

    @property
    def schema_version(self) -> int:
        return self.conn.execute(self.dialect.user_version).fetchone()[0]

    # -- maintenance ----------------------------------------------------------------------

    def vacuum(self) -> int:
        """Rebuild the file without its free pages; returns the bytes reclaimed on disk
        (see :meth:`~cachelib.store.TradingCacheManager.vacuum`)."""
        if self.read_only_reason:
            raise self.read_only_error()
        conn = self.conn
        if conn.in_transaction:
            raise ValueError("vacuum() cannot run inside atomic(): VACUUM needs its own transaction")
        before = self.file_bytes()
        # VACUUM is one write transaction: writers wait for it as for any other (busy_timeout).
        self.while_locked(lambda: conn.execute(self.dialect.vacuum))
        busy = self._checkpoint_truncate(conn)
        reclaimed = before - self.file_bytes()
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
        conn.execute(self.dialect.busy_timeout.format(wait_ms))
        try:
            busy, _log_frames, _done = conn.execute(self.dialect.checkpoint_truncate).fetchone()
        finally:
            conn.execute(self.dialect.busy_timeout.format(int(self.timeout * 1000)))
        return bool(busy)

    def file_bytes(self) -> int:
        """Bytes on disk of the database file and its WAL."""
        total = 0
        for p in database_files(self.db_path)[:2]:
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total
