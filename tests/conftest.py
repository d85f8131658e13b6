"""Shared test set-up.

Environment first (before anything imports prefect): a throw-away PREFECT_HOME, telemetry
off, no accidental temporary Prefect server, no Alpaca keys from the developer's shell.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_HOME = tempfile.mkdtemp(prefix="cachelib-tests-")
os.environ["PREFECT_HOME"] = os.path.join(_HOME, "prefect")
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "CRITICAL"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")
os.environ["TRADING_CACHE_DB"] = os.path.join(_HOME, "default-cache.db")
os.environ.pop("TRADING_CACHE_URL", None)  # the developer's team cache is never a test's
os.environ.setdefault("XDG_RUNTIME_DIR", _HOME)  # pgserver asks platformdirs for it
for _var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY",
             "APCA_API_DATA_URL", "APCA_API_BASE_URL", "DASK_SCHEDULER_ADDRESS"):
    os.environ.pop(_var, None)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import pytest  # noqa: E402


@pytest.fixture
def cache(cache_url):  # noqa: F811 - the fixture, imported below
    """A fresh cache, once per engine: a real SQLite file, and a fresh schema on the session's
    real PostgreSQL server (see ``pg_fixtures``)."""
    from cachelib.store import TradingCacheManager

    manager = TradingCacheManager(cache_url)
    yield manager
    manager.close()

@pytest.fixture
def sqlite_cache(tmp_path):
    """A fresh cache in a real SQLite file, for the tests of what only a file has (WAL, PRAGMAs,
    damaged or foreign files); their PostgreSQL counterparts live next to them."""
    from cachelib.store import TradingCacheManager

    manager = TradingCacheManager(tmp_path / "cache.db")
    yield manager
    manager.close()


# The session-scoped Prefect test harness and PostgreSQL server (started only by the tests that
# ask for them).
from pg_fixtures import cache_url, pg_server, pg_url  # noqa: E402,F401
from prefect_fixtures import prefect_harness  # noqa: E402,F401
