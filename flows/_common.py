"""What every flow shares: the clock, paths, the task runner, artifacts.

Nothing here fetches or stores market data, and nothing decides which sessions a run covers
(that is cachelib's: ``cachelib.market_hours.default_bars_window`` and friends). This module
answers "which database?", "which task runner?" and "how do we show it?".

Environment knobs read here:

* ``CACHELIB_SYMBOLS`` - comma-separated default universe of ``daily_pipeline``.
* ``CACHELIB_TASK_WORKERS`` - threads of the default ``ThreadPoolTaskRunner`` (default 1).
* ``CACHELIB_TASK_CHUNK`` - at most this many items (underlyings, (symbol, session) pairs) per
  task run of a fan-out (default 25; see :func:`task_chunks`).
* ``DASK_SCHEDULER_ADDRESS`` - when set (e.g. ``tcp://10.0.0.5:8786``), flows use
  ``prefect_dask.DaskTaskRunner(address=...)`` instead of the thread pool.
* ``TRADING_CACHE_URL`` / ``TRADING_CACHE_DB`` - the default cache when a flow gets no ``db_path``
  (cachelib's own rule: the URL wins, e.g. ``postgresql://cache@db.internal/cache?sslmode=require``).

A ``db_path`` may be a file path, ``sqlite:///path`` or a ``postgresql://`` URL; whatever is shown
of it (logs, artifacts, results printed) goes through :func:`display_db`, which hides a password.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import re
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.task_runners import ThreadPoolTaskRunner

from cachelib.clock import now_utc
from cachelib.store import default_db_path
from cachelib.store.files import sqlite_path
from cachelib.store.postgres import is_postgres_url, redact_url

__all__ = [
    "DEFAULT_SYMBOLS",
    "SYMBOLS_ENV",
    "DASK_ENV",
    "WORKERS_ENV",
    "now",
    "default_symbols",
    "resolve_db_path",
    "display_db",
    "choose_task_runner",
    "task_workers",
    "task_chunks",
    "without_heartbeat",
    "artifact_key",
    "artifacts_in_background",
    "ArtifactPublishError",
    "publish_markdown",
    "publish_table",
    "markdown_table",
    "markdown_cell",
    "markdown_code",
    "Progress",
]

#: The default universe of daily_pipeline (override with CACHELIB_SYMBOLS=SPY,QQQ,...).
DEFAULT_SYMBOLS: list[str] = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA"]
SYMBOLS_ENV = "CACHELIB_SYMBOLS"
DASK_ENV = "DASK_SCHEDULER_ADDRESS"
WORKERS_ENV = "CACHELIB_TASK_WORKERS"
#: One thread by default. Measured with bench_pipeline (100 symbols, 2 cores): 4 threads 47 %
#: Prefect overhead, 2 threads 32 %, 1 thread 27 %. The work is CPU-bound Python (validation,
#: replay) that threads cannot run in parallel (one GIL), its writes to a SQLite cache take turns
#: anyway, and fetches share one per-process request budget. Raise it for I/O-bound fetches;
#: use Dask worker processes (DASK_SCHEDULER_ADDRESS) for real parallelism.
DEFAULT_MAX_WORKERS = 1
CHUNK_ENV = "CACHELIB_TASK_CHUNK"
#: At most this many items per task run of a fan-out (issue 13: each task run costs Prefect
#: ~16 ms of API round trips, so 500 underlyings as 500 task runs cost 8 s of pure overhead).
DEFAULT_TASK_CHUNK = 25


# -- clock, universe, paths, source ------------------------------------------------------------


def now() -> datetime:
    """The flows' one clock (aware UTC). Flows read it once per run; tests replace it."""
    return now_utc()


def default_symbols() -> list[str]:
    """``CACHELIB_SYMBOLS`` (comma-separated) if set, else :data:`DEFAULT_SYMBOLS`."""
    raw = os.environ.get(SYMBOLS_ENV, "")
    symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
    return symbols or list(DEFAULT_SYMBOLS)


def resolve_db_path(db_path: str | os.PathLike[str] | None) -> str:
    """Where the cache lives, in a form that every thread, process or machine running a task can open.

    * a file path or ``sqlite:///path`` (SQLAlchemy's spelling: ``sqlite:///rel.db``,
      ``sqlite:////abs/path.db``) -> the absolute file path, as tasks may run in another
      working directory;
    * ``postgresql://...`` -> unchanged (host, credentials and ``sslmode=`` are the URL's);
    * nothing -> ``$TRADING_CACHE_URL``, else ``$TRADING_CACHE_DB``, else ``.cache/trading_cache.db``.

    Any other ``scheme://`` is refused with a ``ValueError`` naming it (cachelib's rule), rather
    than becoming a file called ``mysql:/host/db``.
    """
    location = db_path if db_path else default_db_path()
    if is_postgres_url(location):
        return str(location)
    return str(sqlite_path(location).expanduser().resolve())


def display_db(db: str) -> str:
    """``db`` as it may be shown (logs, artifacts, printed results): a URL's password is ``***``."""
    return redact_url(db)


def choose_task_runner(max_workers: int | None = None) -> Any:
    """``DaskTaskRunner(address=$DASK_SCHEDULER_ADDRESS)`` if set, else a thread pool.

    Flow modules call this when they are imported (decorator time); to switch a flow object
    later, use ``flow.with_options(task_runner=choose_task_runner())``.
    """
    address = os.environ.get(DASK_ENV, "").strip()
    if address:
        from prefect_dask import DaskTaskRunner  # imported only when asked for: dask is heavy

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=max_workers if max_workers is not None else task_workers())


def _positive_int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {raw!r}; unset it for the default {default}")
    return value


def task_workers() -> int:
    """How many task runs a fan-out should keep busy: ``CACHELIB_TASK_WORKERS`` when set; on a
    Dask cluster (``DASK_SCHEDULER_ADDRESS``) the cluster's worker threads; else the thread
    pool's default (1)."""
    if os.environ.get(WORKERS_ENV, "").strip():
        return _positive_int_env(WORKERS_ENV, DEFAULT_MAX_WORKERS)
    address = os.environ.get(DASK_ENV, "").strip()
    return _dask_threads(address) if address else DEFAULT_MAX_WORKERS


#: Task slots assumed on a Dask cluster that cannot be asked (the fan-out still runs).
DASK_FALLBACK_WORKERS = 4


@functools.lru_cache(maxsize=8)
def _dask_threads(address: str) -> int:
    """Worker threads of the Dask cluster at ``address`` (asked once per process)."""
    try:
        from distributed import Client

        with Client(address, timeout=10, set_as_default=False) as client:
            return max(1, sum(client.nthreads().values()))
    except Exception:  # an unreachable scheduler fails the flow's task runner, not this guess
        return DASK_FALLBACK_WORKERS


def task_chunks(items: Sequence[Any], max_size: int | None = None) -> list[list[Any]]:
    """``items`` cut into consecutive chunks, one task run each, in their order.

    As few task runs as keep every worker busy: ``ceil(len / workers)`` items per chunk, but
    at most ``max_size`` (``CACHELIB_TASK_CHUNK``, default 25) so that one failed chunk, and
    one task run in the UI, stays small. 20 items on 4 workers -> 4 chunks of 5; 100 -> 4 of 25;
    500 -> 20 of 25.

    >>> [len(c) for c in task_chunks(list(range(10)), 3)]
    [3, 3, 3, 1]
    """
    limit = max_size if max_size is not None else _positive_int_env(CHUNK_ENV, DEFAULT_TASK_CHUNK)
    size = max(1, min(limit, -(-len(items) // task_workers())))
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


@contextmanager
def without_heartbeat() -> Iterator[None]:
    """Flow runs started inside this block send no heartbeat (``flows.heartbeat_frequency=None``).

    Prefect 3.8.8 joins a sync flow run's heartbeat thread when the run ends, and the thread
    sleeps in 1-second steps: about 1.07 s per run, most of a small run's wall time. The
    heartbeat is what lets the server mark a crashed run ("zombie") as crashed, which matters
    for runs nobody watches: scheduled deployments keep it (their worker or ``serve`` process
    uses the default, 180 s). Runs started from a shell (``make run``, the benchmarks, a flow
    called from Python) are watched by whoever started them and use this block. The setting
    cannot be ``None`` through an environment variable, only a profile or this override.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


# -- artifacts ---------------------------------------------------------------------------------


def artifact_key(*parts: object) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from ``parts``."""
    text = "-".join(str(p) for p in parts).lower()
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]+", "-", text)).strip("-")


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (int, str, bool)):
        return value
    return str(value)


def _sync(result: UUID | Coroutine[Any, Any, UUID]) -> UUID:
    """The id of an artifact created from synchronous code. Prefect's artifact functions are
    typed "value or coroutine" (``sync_compatible``); called outside an event loop, they
    return the value."""
    assert isinstance(result, UUID), "artifact functions are called from synchronous flows only"
    return result


class ArtifactPublishError(RuntimeError):
    """Artifacts published in the background (:func:`artifacts_in_background`) that the API
    refused or never got: the message names each key and its error."""


class _BackgroundArtifacts:
    """One thread that creates a flow run's artifacts in the order they were published.

    Each artifact is one API call (~20 ms, most of it the server's work): run from the flow's
    thread, 17 of them cost the daily pipeline ~0.35 s of wall time during which the flow's
    own work waits. Each call runs in a copy of the publisher's ``contextvars`` context, so
    Prefect attributes the artifact to the right flow run.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="artifacts")
        self._pending: list[tuple[str, Future[Any]]] = []
        self._closed = False

    def submit(self, key: str, call: Callable[[], Any]) -> Future[Any]:
        if self._closed:
            # A thread that copied the flow's context inside the block publishes after it ended:
            # nobody waits any more, so the call is made in place (its error raises here).
            done: Future[Any] = Future()
            done.set_result(call())
            return done
        future = self._pool.submit(contextvars.copy_context().run, call)
        self._pending.append((key, future))
        return future

    def wait(self) -> list[tuple[str, BaseException]]:
        """Wait for every artifact; returns the (key, error) of those that failed."""
        self._closed = True
        self._pool.shutdown(wait=True)
        return [(key, error) for key, future in self._pending if (error := future.exception()) is not None]


_background: contextvars.ContextVar[_BackgroundArtifacts | None] = contextvars.ContextVar(
    "cachelib_background_artifacts", default=None)


@contextmanager
def artifacts_in_background() -> Iterator[None]:
    """Inside this block (a flow's body), artifacts are created by one background thread, in
    order, while the flow goes on; leaving the block waits until every one of them exists.

    A failed artifact is not lost: each is logged with its key, and leaving the block raises
    :class:`ArtifactPublishError` naming them all, so the flow run fails as it would have had the
    call been made in place. If the block itself raised, that error wins (the artifact errors
    are still logged). Nested blocks share the outer one's thread.
    """
    if _background.get() is not None:
        yield
        return
    publisher = _BackgroundArtifacts()
    token = _background.set(publisher)
    failed: list[tuple[str, BaseException]] = []
    try:
        yield
    finally:
        _background.reset(token)
        failed = publisher.wait()
        for key, error in failed:
            _artifact_logger().error("artifact %r could not be published: %s: %s", key, type(error).__name__, error)
    if failed:
        names = ", ".join(f"{key!r} ({type(error).__name__}: {error})" for key, error in failed)
        raise ArtifactPublishError(f"{len(failed)} artifact(s) could not be published: {names}") from failed[0][1]


def _artifact_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run logger (the message shows in the flow run's logs), or this module's outside a run."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _publish(key: str, call: Callable[[], UUID | Coroutine[Any, Any, UUID]]) -> UUID | Future[Any]:
    """Run ``call`` (one artifact API call) now, or queue it inside :func:`artifacts_in_background`."""
    publisher = _background.get()
    if publisher is None:
        return _sync(call())
    return publisher.submit(key, lambda: _sync(call()))


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> UUID | Future[Any]:
    """A table artifact (rows of plain values) under a stable ``key``: its id, or inside
    :func:`artifacts_in_background` the future of its id."""
    clean = [{k: _cell(v) for k, v in row.items()} for row in rows]
    return _publish(key, lambda: create_table_artifact(table=clean, key=key, description=description))


def publish_markdown(key: str, markdown: str, description: str) -> UUID | Future[Any]:
    """A markdown artifact under a stable ``key``: its id, or inside
    :func:`artifacts_in_background` the future of its id."""
    return _publish(key, lambda: create_markdown_artifact(markdown=markdown, key=key, description=description))


def markdown_cell(value: Any) -> str:
    """``value`` as the text of one markdown table cell.

    A ``|`` in a cell would end it (an error message, a rejection reason), and a line break
    would end the table: pipes are escaped, line breaks become spaces, and a backslash is
    escaped so that it cannot swallow the pipe escape that follows it.
    """
    text = str(_cell(value))
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.splitlines())


def markdown_code(value: Any) -> str:
    """``value`` as an inline code span (a path, say), whatever backticks it holds."""
    text = " ".join(str(value).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-style markdown table of ``rows`` (columns from the first row), or ``_(none)_``.

    A table is a block of its own: put it after a blank line, never inside a list item (where
    it renders as raw ``| a | b |`` text).
    """
    if not rows:
        return "_(none)_"
    columns = list(rows[0])
    lines = ["| " + " | ".join(markdown_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(markdown_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


class Progress:
    """A progress artifact for a long, chunked job: ``Progress(key, total)``, then ``.step()``."""

    def __init__(self, key: str, total: int, description: str) -> None:
        self.key = key
        self.total = max(total, 1)
        self.done = 0
        self.description = description
        # Inside artifacts_in_background, a future: the updates queue behind the creation.
        self._id = _publish(key, lambda: create_progress_artifact(progress=0.0, key=key, description=description))

    @property
    def id(self) -> UUID:
        """The artifact's id (waits for its creation when it was queued)."""
        return self._id if isinstance(self._id, UUID) else _sync(self._id.result())

    def step(self, note: str | None = None) -> None:
        self.done += 1
        text = f"{self.description} ({self.done}/{self.total}{': ' + note if note else ''})"
        progress = 100.0 * self.done / self.total
        publisher = _background.get()
        if publisher is None:
            update_progress_artifact(self.id, progress=progress, description=text)
        else:  # one thread runs the queue in order: the creation has finished by then
            publisher.submit(self.key, lambda: update_progress_artifact(self.id, progress=progress, description=text))
