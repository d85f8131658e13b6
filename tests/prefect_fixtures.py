"""The session-scoped Prefect test harness (a real local API server in a subprocess, 7-10 s).

Imported by ``tests/conftest.py``; tests that run flows request ``prefect_harness``. The
import of ``prefect.testing.utilities`` (about 3.5 s: it imports the server) happens inside the
fixture, so test sessions that run no flow never pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API (SQLite in a temp dir) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
