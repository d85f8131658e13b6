"""Prefect tasks that talk to a market-data source: fetch bars, snapshot option chains.

**One retry layer.** HTTP faults (429, 5xx, timeouts, dropped connections, stalled answers)
are retried in exactly one place: inside the source (``AlpacaSource``), which knows
``Retry-After`` and which faults are transient, and bounds its retries per request
(``max_retries``) and per call (``max_retry_seconds``). These tasks therefore run with
``retries=0``: an error that reaches a task already outlived the source's retries, and
retrying the task would multiply the requests (5 x 3 retries once cost ~24 requests for one
persistent failure). The next scheduled run catches up, because the sync is gap-aware.

Tasks take database paths and plain values and build the source inside the task, so they run
unchanged in a thread, a Dask worker or another process. Results depend on the database's
state (the sync is gap-aware), so Prefect's result caching is off (``NO_CACHE``).

Source options come from the environment, because deployments cannot pass Python objects:

* ``CACHELIB_ALPACA_MAX_RETRIES``: HTTP retries per request inside ``AlpacaSource`` (default 5).
* ``CACHELIB_ALPACA_BACKOFF_BASE``: seconds of its first backoff (default 1.0).
* ``CACHELIB_ALPACA_MAX_RETRY_SECONDS``: seconds one source call may spend retrying (default 300).
* ``CACHELIB_ALPACA_REQUEST_DEADLINE``: seconds one HTTP request may take in total (default 120).
* ``CACHELIB_ALPACA_RATE_LIMIT``: requests per minute for the whole process (default 200,
  Alpaca's free plan; 0 = no limit). One limiter is shared by every task of the process.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from cachelib.sources import RateLimiter, get_source
from cachelib.store import TradingCacheManager
from cachelib.sync import sync_bars, sync_option_chains

__all__ = [
    "fetch_and_store_bars",
    "snapshot_option_chains",
    "source_options",
    "open_source",
    "STORE_TIMEOUT",
    "ENV_MAX_RETRIES",
    "ENV_BACKOFF_BASE",
    "ENV_RATE_LIMIT",
    "ENV_MAX_RETRY_SECONDS",
    "ENV_REQUEST_DEADLINE",
]

#: Seconds a task waits for SQLite's write lock: parallel replay/ingest tasks share one file.
STORE_TIMEOUT = 60.0
#: Task-level retries of the network tasks: none, the source is the one retry layer.
RETRIES = 0
#: A sync report's rejections are capped in the task result (the counts per reason are not).
MAX_REJECTIONS_RETURNED = 50

ENV_MAX_RETRIES = "CACHELIB_ALPACA_MAX_RETRIES"
ENV_BACKOFF_BASE = "CACHELIB_ALPACA_BACKOFF_BASE"
ENV_RATE_LIMIT = "CACHELIB_ALPACA_RATE_LIMIT"
ENV_MAX_RETRY_SECONDS = "CACHELIB_ALPACA_MAX_RETRY_SECONDS"
ENV_REQUEST_DEADLINE = "CACHELIB_ALPACA_REQUEST_DEADLINE"
DEFAULT_RATE_LIMIT = 200.0  # Alpaca free plan: 200 data requests per minute

_LIMITERS: dict[float, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


# -- source construction -------------------------------------------------------------------


def _env_number(name: str, kind: type) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def shared_rate_limiter(per_minute: float) -> RateLimiter:
    """The process-wide limiter for ``per_minute`` requests/min (parallel tasks share a budget)."""
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(per_minute)
        if limiter is None:
            limiter = _LIMITERS[per_minute] = RateLimiter(per_minute or None)
        return limiter


def source_options(name: str) -> dict[str, Any]:
    """Constructor options for ``get_source(name)`` from the ``CACHELIB_ALPACA_*`` variables.

    ``"demo"`` takes none; for ``"auto"`` falling back to the demo source, ``get_source``
    drops the Alpaca-only ones itself.
    """
    if (name or "auto").strip().lower() == "demo":
        return {}
    options: dict[str, Any] = {}
    retries = _env_number(ENV_MAX_RETRIES, int)
    if retries is not None:
        options["max_retries"] = retries
    backoff = _env_number(ENV_BACKOFF_BASE, float)
    if backoff is not None:
        options["backoff_base"] = backoff
    for env, option in ((ENV_MAX_RETRY_SECONDS, "max_retry_seconds"), (ENV_REQUEST_DEADLINE, "request_deadline")):
        value = _env_number(env, float)
        if value is not None:
            options[option] = value
    rate = _env_number(ENV_RATE_LIMIT, float)
    options["rate_limiter"] = shared_rate_limiter(DEFAULT_RATE_LIMIT if rate is None else rate)
    return options


@contextmanager
def open_source(name: str) -> Iterator[Any]:
    """``get_source(name)`` with the env options, closed afterwards (Alpaca holds HTTP sessions)."""
    source = get_source(name, **source_options(name))
    try:
        yield source
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()


def _now(now: str | None) -> datetime | None:
    return datetime.fromisoformat(now) if now else None


_NETWORK_TASK = dict(
    retries=RETRIES,  # 0: HTTP faults are retried inside the source only (module docstring)
    cache_policy=NO_CACHE,
    persist_result=False,
)


# -- tasks ---------------------------------------------------------------------------------


@task(name="fetch_and_store_bars", task_run_name="fetch {timeframe} bars {start}..{end}", **_NETWORK_TASK)
def fetch_and_store_bars(
    db_path: str,
    symbols: list[str],
    start: str,
    end: str,
    timeframe: str = "1Day",
    source: str = "auto",
    now: str | None = None,
) -> dict[str, Any]:
    """Sync the sessions of ``symbols`` in ``[start, end]`` that the cache lacks (``sync_bars``).

    ``now`` (ISO instant) is the flow's clock: which sessions count as finished. Returns the
    sync report as a dict, rejections capped at ``MAX_REJECTIONS_RETURNED`` with
    ``rejection_reasons`` counting all of them.
    """
    logger = get_run_logger()
    with open_source(source) as src, TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        logger.info("market data source: %s", src.name)
        report = sync_bars(cache, src, symbols, start, end, timeframe=timeframe, now=_now(now))
    out = report.as_dict()
    out["rejection_reasons"] = report.rejection_reasons()
    out["rejections"] = report.rejections[:MAX_REJECTIONS_RETURNED]
    logger.info(
        "%s %s..%s: %d request(s), %d rows written, %d rejected",
        timeframe, start, end, report.requests_made, report.rows_written, report.rows_rejected,
    )
    return out


@task(name="snapshot_option_chains", task_run_name="snapshot {underlying} chain", **_NETWORK_TASK)
def snapshot_option_chains(db_path: str, underlying: str, source: str = "auto") -> dict[str, Any]:
    """Store one snapshot of ``underlying``'s option chain (the source's latest quotes)."""
    logger = get_run_logger()
    with open_source(source) as src, TradingCacheManager(db_path, timeout=STORE_TIMEOUT) as cache:
        logger.info("market data source: %s", src.name)
        report = sync_option_chains(cache, src, [underlying])
    symbol = next(iter(report.rows_per_underlying), underlying.upper())
    out = {
        "underlying": symbol,
        "source": report.source,
        "rows_written": report.rows_written,
        "trading_date": report.trading_dates.get(symbol),
        "requests_made": report.requests_made,
    }
    logger.info("%s chain: %d contracts filed under %s", symbol, out["rows_written"], out["trading_date"])
    return out
