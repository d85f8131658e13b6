"""Helpers of the ``cache-manager`` tests: the same command on either engine."""

from __future__ import annotations

from pathlib import Path

from pg_fixtures import engine_of

from cachelib.store.postgres import redact_url


def at(location) -> tuple[str, str]:
    """The global flag naming ``location``: ``--db-path FILE`` or ``--db-url URL``."""
    if engine_of(location) == "sqlite":
        return ("--db-path", str(location))
    return ("--db-url", str(location))


def shown(location) -> str:
    """How messages name a cache: a SQLite file by its resolved path, a URL without its password."""
    if engine_of(location) == "sqlite":
        return str(Path(location).resolve())
    return redact_url(str(location))


def files_of(location) -> list[str]:
    """The names a cache adds to its folder: its file for SQLite, nothing for PostgreSQL."""
    return [Path(location).name] if engine_of(location) == "sqlite" else []
