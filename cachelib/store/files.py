"""The file at ``db_path``: path rules, checks before anything is written, file-level errors.

Only our files are touched. Ours carry ``PRAGMA application_id`` :data:`APPLICATION_ID` (older
ones are recognised by their tables). Anything else is inspected read-only (``immutable``) and
refused with :class:`DatabaseFileError`, byte-identical. A damaged, read-only or unopenable file
met by any statement becomes a :class:`DatabaseFileError` naming the path (:class:`_Connection`).
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import stat
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .dialect import SQLITE

__all__ = [
    "APPLICATION_ID",
    "CacheNotFoundError",
    "DatabaseFileError",
    "database_files",
    "default_db_path",
]

#: ``PRAGMA application_id`` of our files ("CACH"): a file with another non-zero id, or with
#: tables that are not ours, belongs to another application and is never written to.
APPLICATION_ID = 0x43414348

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_HEADER_BYTES = 100
#: The sidecar files SQLite keeps next to the database (WAL, its index, rollback journal).
_SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")


class DatabaseFileError(ValueError):
    """The file at ``db_path`` is not a usable cache database (it is left untouched)."""


class CacheNotFoundError(DatabaseFileError):
    """``create=False`` and there is no cache at ``db_path`` (nothing was created)."""


def default_db_path() -> Path | str:
    """Where the cache is unless told otherwise: ``$TRADING_CACHE_URL`` (a ``postgresql://`` or
    ``sqlite:///`` URL) if set, else the file ``$TRADING_CACHE_DB``, else
    ``.cache/trading_cache.db`` in the working directory."""
    url = os.environ.get("TRADING_CACHE_URL", "").strip()
    if url:
        return url
    return Path(os.environ.get("TRADING_CACHE_DB") or Path(".cache") / "trading_cache.db")


_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def sqlite_path(db_path: Any) -> Path:
    """The SQLite file of ``db_path``: a path, or a ``sqlite:///relative/file.db`` /
    ``sqlite:////absolute/file.db`` URL (SQLAlchemy's spelling). Any other URL scheme is an
    error naming the two the cache speaks."""
    if isinstance(db_path, str):
        m = _URL_SCHEME.match(db_path)
        if m:
            scheme = m.group(1).lower()
            if scheme != "sqlite":
                raise ValueError(
                    f"unsupported database URL scheme {scheme!r} in {db_path.split('@')[-1]!r}; use a "
                    "file path, sqlite:///path/to/file.db or postgresql://user@host/dbname"
                )
            rest = db_path[m.end():]
            if not rest.startswith("/") or rest == "/":
                raise ValueError(
                    f"{db_path!r} names no file; write sqlite:///relative/file.db or "
                    "sqlite:////absolute/file.db"
                )
            return as_path(urllib.parse.unquote(rest[1:]))
    return as_path(db_path)


def as_path(db_path: Any) -> Path:
    """``db_path`` as a :class:`Path`, or a ``ValueError`` saying what was wrong with it.

    ``str``, ``bytes`` and ``os.PathLike`` are paths; anything else (``123``, ``True``) is
    refused here rather than as a ``TypeError`` deep inside ``pathlib`` or ``sqlite3``.
    """
    if db_path is None:
        return sqlite_path(default_db_path())
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
        path = as_path(db_path).resolve()
        sidecars = [Path(f"{path}{suffix}").resolve() for suffix in _SIDECAR_SUFFIXES]
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise DatabaseFileError(f"cannot resolve {db_path!r}: {exc}; check the path") from None
    return (path, *sidecars)


def file_error(path: Path, exc: sqlite3.Error, read_only_reason: str | None = None) -> Exception:
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
        return read_only_error(path, read_only_reason or str(exc))
    if name.startswith("SQLITE_CANTOPEN"):
        return DatabaseFileError(
            f"cannot open {path} ({exc}); check that the file and its folder exist and are accessible"
        )
    return exc


def read_only_error(path: Path, why: str | None) -> DatabaseFileError:
    """The error of a write to a cache that can only be read."""
    return DatabaseFileError(
        f"{path} is read-only ({why}); reads work, but writing needs a writable file and folder: "
        "fix the permissions, or choose another --db-path or TRADING_CACHE_DB"
    )


def _raise_file_error(conn: Any, exc: sqlite3.Error) -> None:
    err = file_error(conn.db_path, exc, conn.read_only_reason) if isinstance(conn, _Connection) else exc
    if err is exc:
        raise exc
    raise err from None


def _file_errors_named(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of :class:`sqlite3.Cursor`, with its file-level failures mapped by
    :func:`file_error`."""

    @functools.wraps(method)
    def mapped(self: sqlite3.Cursor, *args: Any) -> Any:
        try:
            return method(self, *args)
        except sqlite3.DatabaseError as exc:
            _raise_file_error(self.connection, exc)
            raise

    return mapped


def fetch_all(conn: sqlite3.Connection, sql: str, params: Any = ()) -> list[Any]:
    """``conn.execute(sql, params).fetchall()`` on a plain cursor, with file-level failures (of
    the statement or of any row) mapped by :func:`file_error` once around the whole call: the
    read hot path's cheaper equivalent of :class:`_Cursor`'s per-method wrapping."""
    if not isinstance(conn, sqlite3.Connection):  # PostgreSQL maps its own errors
        return conn.execute(sql, params).fetchall()
    try:
        return sqlite3.Connection.execute(conn, sql, params).fetchall()
    except sqlite3.DatabaseError as exc:
        _raise_file_error(conn, exc)
        raise


class _Cursor(sqlite3.Cursor):
    """A cursor whose file-level failures become :class:`DatabaseFileError` (see :func:`file_error`).

    A damaged page is often only met while stepping through rows, so fetches are covered too.
    """

    execute = _file_errors_named(sqlite3.Cursor.execute)
    executemany = _file_errors_named(sqlite3.Cursor.executemany)
    fetchone = _file_errors_named(sqlite3.Cursor.fetchone)
    fetchmany = _file_errors_named(sqlite3.Cursor.fetchmany)
    fetchall = _file_errors_named(sqlite3.Cursor.fetchall)
    __next__ = _file_errors_named(sqlite3.Cursor.__next__)


class _Connection(sqlite3.Connection):
    """The manager's connections: statements run on :class:`_Cursor`, so a damaged or read-only
    file raises :class:`DatabaseFileError` naming ``db_path`` wherever it is first met."""

    db_path: Path = Path()
    read_only_reason: str | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        return self.cursor(_Cursor).execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:
        return self.cursor(_Cursor).executemany(sql, parameters)


# -- checks before anything is written ------------------------------------------------------


def foreign_error(path: Path | str, why: str) -> DatabaseFileError:
    """``path`` is a file (:class:`Path`) or a redacted PostgreSQL URL (``str``)."""
    where = "--db-path or TRADING_CACHE_DB" if isinstance(path, Path) else (
        "--db-url or TRADING_CACHE_URL (or another schema: ?options=-csearch_path=NAME)")
    return DatabaseFileError(
        f"{path} belongs to another application ({why}) and was left untouched; choose another {where}"
    )


def newer_error(path: Path | str, version: int, supported: int) -> DatabaseFileError:
    return DatabaseFileError(
        f"{path} has schema version {version}, newer than this cachelib "
        f"understands ({supported}); upgrade cachelib"
    )


def check_file(path: Path, timeout: float, schema_version: int) -> bool:
    """Whether a cache exists at ``path``; raises :class:`DatabaseFileError` when what is
    there is not a usable cache of ours (``schema_version``: the newest this cachelib knows).

    Only reads (the header, then the schema through a read-only ``immutable`` connection),
    so a file that is refused stays byte-identical and gets no ``-wal``/``-shm``.
    """
    # Look for a -wal/-journal first and take the size after the header: a writer closing
    # meanwhile checkpoints (grows the file, rewrites the header) and then deletes its WAL, and
    # the other order saw a whole file as "truncated" (a flake of test_flows.py::test_replay_days_matches_cachelib...).
    in_use = _in_use(path)
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
            size = os.fstat(fh.fileno()).st_size
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
            raise DatabaseFileError(f"{path} is truncated ({size} bytes); {damaged}")
        raise DatabaseFileError(
            f"{path} is not a SQLite database (left untouched); choose another --db-path "
            "or TRADING_CACHE_DB"
        )
    if len(head) < _SQLITE_HEADER_BYTES:
        raise DatabaseFileError(f"{path} is truncated ({size} bytes); {damaged}")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65_536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise DatabaseFileError(f"{path} is damaged (page size {page_size} in its header); {damaged}")
    # Without a -wal or -journal nobody is writing it, so the file must hold whole pages, as
    # many as its header says (when that count is valid: change counter == version-valid-for).
    if not in_use:
        pages = int.from_bytes(head[28:32], "big") if head[24:28] == head[92:96] else 0
        if size % page_size or pages * page_size > size:
            raise DatabaseFileError(
                f"{path} is truncated ({size} bytes, expected {max(pages, 1) * page_size} "
                f"or a multiple of {page_size}); {damaged}"
            )
    app_id = int.from_bytes(head[68:72], "big")
    version = int.from_bytes(head[60:64], "big", signed=True)
    if app_id not in (0, APPLICATION_ID):
        raise foreign_error(path, f"its SQLite application_id is {app_id:#010x}")
    if app_id == 0:
        # Files of ours made before the id existed have it 0: recognise them by their tables.
        version, tables, objects = _inspect_schema(path, timeout)
        # Only a file with no schema object at all and user_version 0 is a new cache; anything
        # else (a view, a trigger, a negative or other user_version) must be our layout.
        if (objects or version != 0) and not _tables_are_ours(tables, version):
            what = ", ".join(sorted(tables)) or f"none, {objects} other schema object(s), at user_version {version}"
            raise foreign_error(path, f"its tables ({what}) are not a cache's")
    if version > schema_version:
        raise newer_error(path, version, schema_version)
    return True


def _in_use(path: Path) -> bool:
    """Whether a ``-wal`` or ``-journal`` exists next to ``path`` (someone may be writing it)."""
    return any(Path(f"{path}{s}").exists() for s in ("-wal", "-journal"))


def _inspect_schema(path: Path, timeout: float) -> tuple[int, dict[str, set[str]], int]:
    """``(user_version, {table: column names}, schema objects)`` of the file, read without
    writing anything.

    ``immutable=1`` takes no lock and creates no ``-wal``/``-shm``; it is used only when no
    ``-wal``/``-journal`` exists (nobody is writing). Otherwise the file is in use, its
    sidecars exist, and a plain ``mode=ro`` connection reads it with its WAL.
    """
    uri = path.as_uri() + ("?mode=ro" if _in_use(path) else "?mode=ro&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        try:
            version = conn.execute(SQLITE.user_version).fetchone()[0]
            names = [r[0] for r in conn.execute(SQLITE.table_names)]
            tables = {n: {r[0] for r in conn.execute(SQLITE.table_columns, (n,))} for n in names}
            objects = conn.execute(SQLITE.schema_object_count).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        err = file_error(path, exc)
        if err is exc:
            raise DatabaseFileError(f"cannot read the schema of {path} ({exc}); check the file") from None
        raise err from None
    return version, tables, objects


#: Columns that identify our layout, and the seed's legacy ``market_cache`` layout.
_OUR_TABLES: dict[str, set[str]] = {
    "series": {"series_id", "asset_type", "symbol", "timeframe", "source"},
    "bars": {"series_id", "ts", "open", "high", "low", "close", "volume", "expires_at"},
}
_SEED_TABLE = ("market_cache", {"asset_type", "symbol", "trading_date", "source", "open", "high",
                                "low", "close", "volume", "vwap", "transactions", "expires_at"})


def _tables_are_ours(tables: dict[str, set[str]], version: int) -> bool:
    """Ours: our ``series``/``bars`` at a schema version we wrote, or the seed's layout."""
    if version >= 1:
        return all(cols <= tables.get(name, set()) for name, cols in _OUR_TABLES.items())
    name, cols = _SEED_TABLE
    return version == 0 and cols <= tables.get(name, set())


def make_parent_folder(db_path: Path) -> None:
    """Create the folder of a new cache, or say why it cannot be."""
    folder = db_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseFileError(
            f"cannot create the folder {folder} for {db_path} ({exc.strerror or exc}); choose "
            "another --db-path or TRADING_CACHE_DB"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseFileError(
            f"cannot create {db_path}: its folder is not writable; choose another --db-path "
            "or TRADING_CACHE_DB"
        )


def why_not_writable(db_path: Path) -> str | None:
    """Why this process cannot write the existing cache, or ``None`` when it can."""
    if not os.access(db_path, os.W_OK):
        return "the file is not writable"
    folder = db_path.parent
    sidecars = [Path(f"{db_path}{s}") for s in ("-wal", "-shm")]
    if not os.access(folder, os.W_OK | os.X_OK) and not all(p.exists() for p in sidecars):
        return f"its folder {folder} is not writable, so SQLite cannot create the -wal/-shm files"
    return None
