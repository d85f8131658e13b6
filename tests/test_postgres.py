"""The PostgreSQL engine against a real server: crashes, retries, hostile locations, the pool.

The session's server (``pg_server``, from ``pg_fixtures``) is real PostgreSQL; every test works
in its own schema. Child processes run ``python -c`` scripts, are always killed in ``finally``
and every wait has a deadline. Expected values are written by hand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from pg_fixtures import schema_url, table_snapshot

from cachelib.store import CacheNotFoundError, DatabaseFileError, TradingCacheManager
from cachelib.store.postgres import POOL_MAX_SIZE, close_pools, redact_url

ROOT = Path(__file__).resolve().parent.parent

DAILY = pd.DataFrame(
    {"open": [100.0, 101.0], "high": [101.5, 102.0], "low": [99.5, 100.5], "close": [101.0, 101.5],
     "volume": [1_000_000.0, 1_200_000.0]},
    index=pd.DatetimeIndex(["2024-01-02", "2024-01-03"], name="date"),
)
DAY1, DAY2 = 1704153600, 1704240000  # 2024-01-02 and 2024-01-03, 00:00 UTC: the bar keys of DAILY


def with_query(url: str, **params: str) -> str:
    """``url`` with extra query parameters (libpq options such as ``application_name``)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query) + list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote)))


def with_password(url: str, password: str) -> str:
    """``url`` (``postgresql://postgres:@/...``) with a password in its user part (the test
    server trusts local connections, so any password is accepted)."""
    return url.replace("postgresql://postgres:@", f"postgresql://postgres:{password}@", 1)


@pytest.fixture
def admin(pg_server: str) -> Iterator[psycopg.Connection]:
    """A plain psycopg connection to the server, outside the cache's pool (autocommit)."""
    conn = psycopg.connect(pg_server, autocommit=True)
    yield conn
    conn.close()


def schema_of(url: str) -> str:
    options = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["options"]
    return options.split("search_path=", 1)[1].split()[0]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def kill_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


# -- SIGKILL in the middle of a batch: all or nothing ------------------------------------------

KILL_SYMBOLS, KILL_DAYS = 20, 1000  # one set_many of 20,000 daily bars
PRE_SYMBOLS, PRE_DAYS = 5, 50  # bars already stored at keys the batch rewrites

_KILL_WORKER = r"""
import sys, time
import numpy as np, pandas as pd
from cachelib.store import TradingCacheManager

url, ready, done, n_symbols, n_days = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
days = pd.DatetimeIndex(pd.bdate_range("2010-01-04", periods=n_days), name="date")
frames = {f"S{i:03d}": pd.DataFrame({"close": 100.0 + np.arange(n_days), "volume": 2.0}, index=days)
          for i in range(n_symbols)}
cache = TradingCacheManager(url)
open(ready, "w").close()
# The batch, then a pause before the commit: a kill at any of the test's moments lands inside
# this transaction however fast the batch itself is (its 20,000 upserts take ~25 ms alone).
with cache.atomic():
    written = cache.set_many(frames, source="alpaca")
    time.sleep(60)
open(done, "w").close()
print(written)
"""


def _backend(admin: psycopg.Connection, app: str) -> tuple | None:
    """``(pid, backend_xid)`` of the child's server process that is inside a transaction."""
    return admin.execute(
        "SELECT pid, backend_xid FROM pg_stat_activity WHERE application_name = %s "
        "AND xact_start IS NOT NULL AND backend_xid IS NOT NULL", (app,)
    ).fetchone()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_during_a_large_batch_leaves_it_all_or_nothing(pg_server, admin, tmp_path):
    """Three children, each on its own schema, killed at a different moment of one big
    transaction (its ``set_many``, or the pause before its commit); a fresh manager then finds
    the batch entirely absent, every row as before. (The pause: the batch alone is over in
    ~25 ms, and a CI run once saw the 0.25 s kill land after the commit.)"""
    delays = (0.0, 0.1, 0.25)
    runs = []
    procs: list[subprocess.Popen] = []
    try:
        for i, delay in enumerate(delays):
            app = f"cachelib_kill_{os.getpid()}_{i}"
            url = with_query(schema_url(pg_server, f"kill_{os.getpid()}_{i}"), application_name=app)
            with TradingCacheManager(url) as cache:  # bars already at keys the child rewrites
                days = pd.DatetimeIndex(pd.bdate_range("2010-01-04", periods=PRE_DAYS), name="date")
                cache.set_many({f"S{s:03d}": pd.DataFrame({"close": 7.0, "volume": 1.0}, index=days)
                                for s in range(PRE_SYMBOLS)}, source="alpaca")
                before = table_snapshot(cache)
            close_pools(url)
            folder = tmp_path / str(i)
            folder.mkdir()
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _KILL_WORKER, url, str(folder / "ready"), str(folder / "done"),
                 str(KILL_SYMBOLS), str(KILL_DAYS)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
            runs.append({"url": url, "app": app, "delay": delay, "folder": folder, "before": before})

        def kill(run: dict, proc: subprocess.Popen) -> None:
            """Wait for the child's transaction, let it run ``delay`` s more, SIGKILL it."""
            with psycopg.connect(pg_server, autocommit=True) as watch:
                wait_for(lambda: _backend(watch, run["app"]) is not None or proc.poll() is not None, 60,
                         "the child's write transaction", poll=0.002)
                time.sleep(run["delay"])
                backend = _backend(watch, run["app"])
                run["killed_in_txn"] = backend is not None and not (run["folder"] / "done").exists()
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                run["returncode"] = proc.returncode
                if backend is not None:  # the server notices the closed socket and aborts
                    wait_for(lambda: watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                                   (backend[0],)).fetchone() is None, 30, "the backend to end")

        # The children start together (on two cores); each is watched by its own thread.
        killers = [threading.Thread(target=kill, args=pair) for pair in zip(runs, procs, strict=True)]
        for thread in killers:
            thread.start()
        for thread in killers:
            thread.join(90)
        assert [r.get("returncode") for r in runs] == [-signal.SIGKILL] * 3
    finally:
        kill_all(procs)

    outcomes = []
    for run in runs:
        with TradingCacheManager(run["url"]) as cache:  # a fresh manager, a fresh pool
            after = table_snapshot(cache)
            child_rows = [r for r in after["bars"] if r[6] == 2.0]  # the child's bars have volume 2
            assert len(child_rows) in (0, KILL_SYMBOLS * KILL_DAYS), (run["delay"], len(child_rows))
            if not child_rows:
                assert after == run["before"]  # nothing of the batch, every earlier row as it was
            else:
                assert len(after["bars"]) == KILL_SYMBOLS * KILL_DAYS
            # Still a working cache.
            assert cache.set("AFTER", DAILY, source="alpaca") == 2
        close_pools(run["url"])
        outcomes.append((run["delay"], run["killed_in_txn"], len(child_rows), run["returncode"]))
    # The kills landed inside the transaction, and the server rolled it back.
    assert [(o[1], o[2], o[3]) for o in outcomes] == [(True, 0, -signal.SIGKILL)] * 3, outcomes


# -- retries: only class 40, only outside a caller's transaction, bounded -----------------------


def _deadlock_url(pg_url: str) -> str:
    """``pg_url`` whose sessions detect a deadlock after 50 ms (instead of 1 s)."""
    parts = urllib.parse.urlsplit(pg_url)
    query = [(k, f"{v} -cdeadlock_timeout=50ms" if k == "options" else v)
             for k, v in urllib.parse.parse_qsl(parts.query)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote)))


def _deadlock_against(cache: TradingCacheManager, admin: psycopg.Connection, schema: str,
                      write: Callable[[], object]) -> dict:
    """Run ``write`` (which upserts DAILY's two bars, day 1 then day 2) in a thread while
    ``admin`` holds day 2's row: once ``write`` waits for it, ``admin`` asks for day 1, which
    ``write`` holds. The cache's session detects the deadlock first (50 ms against 5 s)."""
    result: dict = {}
    admin.execute("SET deadlock_timeout = '5s'")
    admin.execute("BEGIN")
    admin.execute(f'UPDATE "{schema}".bars SET volume = 7 WHERE ts = %s', (DAY2,))

    def run() -> None:
        try:
            result["value"] = write()
        except Exception as exc:  # noqa: BLE001 - checked by the caller
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        # (pg_stat_activity is a snapshot per transaction: clear it before each look.)
        wait_for(lambda: admin.execute("SELECT pg_stat_clear_snapshot()") and admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()[0] > 0, 10, "the cache to wait for the row lock")
        admin.execute(f'UPDATE "{schema}".bars SET volume = 8 WHERE ts = %s', (DAY1,))  # the cycle
        admin.execute("COMMIT")
    finally:
        if admin.info.transaction_status != 0:
            admin.execute("ROLLBACK")
        thread.join(30)
    assert not thread.is_alive()
    return result


def test_a_deadlock_is_retried_and_the_call_succeeds(pg_url, admin, caplog):
    url = _deadlock_url(pg_url)
    with TradingCacheManager(url) as cache:
        cache.set("SPY", DAILY, source="alpaca")
        with caplog.at_level(logging.INFO, logger="cachelib.store"):
            result = _deadlock_against(cache, admin, schema_of(pg_url),
                                       lambda: cache.set("SPY", DAILY * 2, source="alpaca"))
        assert result == {"value": 2}
        assert [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()] == \
            ["retrying after 40P01 (attempt 1)"]  # 40P01: deadlock_detected
        # The retried call ran after the other transaction: its values are the last ones.
        got = cache.get("SPY", "2024-01-01", "2024-01-31", source="alpaca")
        assert got["close"].tolist() == [202.0, 203.0]
        assert got["volume"].tolist() == [2_000_000.0, 2_400_000.0]
    close_pools(url)


def test_a_deadlock_inside_a_callers_atomic_is_not_retried(pg_url, admin, caplog):
    url = _deadlock_url(pg_url)
    with TradingCacheManager(url) as cache:
        cache.set("SPY", DAILY, source="alpaca")
        before = table_snapshot(cache)

        def batch() -> None:
            with cache.atomic():
                cache.set("QQQ", DAILY, source="alpaca")
                cache.set("SPY", DAILY * 2, source="alpaca")

        with caplog.at_level(logging.INFO, logger="cachelib.store"):
            result = _deadlock_against(cache, admin, schema_of(pg_url), batch)
        # The caller's transaction is the unit to retry: the error reaches the caller.
        assert isinstance(result["error"], psycopg.errors.DeadlockDetected)
        assert result["error"].sqlstate == "40P01"
        assert [r for r in caplog.records if "retrying" in r.getMessage()] == []
        after = table_snapshot(cache)
        # Nothing of the batch (no QQQ series); only the other transaction's two volumes.
        assert after["series"] == before["series"]
        assert [r[6] for r in after["bars"]] == [8.0, 7.0]
        assert [r[2:6] for r in after["bars"]] == [r[2:6] for r in before["bars"]]
    close_pools(url)


def _failing_trigger(admin: psycopg.Connection, schema: str, sqlstate: str, times: int | None) -> None:
    """A trigger on ``bars`` that raises ``sqlstate`` on the first ``times`` inserts (every
    insert when ``None``): a sequence counts attempts, and is not rolled back with them."""
    limit = "true" if times is None else f"nextval('{schema}.attempts') <= {times}"
    admin.execute(f"CREATE SEQUENCE {schema}.attempts")
    admin.execute(f"""CREATE FUNCTION {schema}.fail() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF {limit} THEN RAISE EXCEPTION 'forced by the test' USING ERRCODE = '{sqlstate}'; END IF;
        RETURN NEW; END $$""")
    admin.execute(f"CREATE TRIGGER fail BEFORE INSERT ON {schema}.bars FOR EACH ROW EXECUTE FUNCTION {schema}.fail()")


def test_a_serialization_failure_is_retried_a_bounded_number_of_times(pg_url, admin, caplog):
    with TradingCacheManager(pg_url, timeout=1.0) as cache:
        _failing_trigger(admin, schema_of(pg_url), "40001", times=2)
        with caplog.at_level(logging.INFO, logger="cachelib.store"):
            assert cache.set("SPY", DAILY, source="alpaca") == 2  # third attempt
        assert [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()] == \
            ["retrying after 40001 (attempt 1)", "retrying after 40001 (attempt 2)"]
        admin.execute(f"DROP TRIGGER fail ON {schema_of(pg_url)}.bars")
        admin.execute(f"DROP SEQUENCE {schema_of(pg_url)}.attempts")
        admin.execute(f"DROP FUNCTION {schema_of(pg_url)}.fail()")
        _failing_trigger(admin, schema_of(pg_url), "40001", times=None)
        before = table_snapshot(cache)
        started = time.monotonic()
        with pytest.raises(DatabaseFileError) as err:
            cache.set("QQQ", DAILY, source="alpaca")
        elapsed = time.monotonic() - started
        message = str(err.value)
        assert message.startswith(f"the PostgreSQL cache at {cache.db_path} kept failing with forced by the test after ")
        assert message.endswith("attempt(s); retry later")
        assert isinstance(err.value.__cause__, psycopg.errors.SerializationFailure)
        assert elapsed < 3.0  # bounded by timeout=1 (plus the last back-off)
        assert table_snapshot(cache) == before


def test_errors_outside_class_40_are_never_retried(pg_url, admin, caplog):
    schema = schema_of(pg_url)
    with TradingCacheManager(pg_url, timeout=0.3) as cache:
        _failing_trigger(admin, schema, "23514", times=None)  # check_violation: not retryable
        with caplog.at_level(logging.INFO, logger="cachelib.store"), \
                pytest.raises(psycopg.errors.CheckViolation, match="forced by the test"):
            cache.set("SPY", DAILY, source="alpaca")
        assert admin.execute(f"SELECT last_value FROM {schema}.attempts").fetchone()[0] == 1  # one attempt
        admin.execute(f"DROP TRIGGER fail ON {schema}.bars")
        cache.set("SPY", DAILY, source="alpaca")
        # A lock wait beyond the manager's timeout (lock_not_available, 55P03): one attempt,
        # then a clear error naming the cache.
        admin.execute("BEGIN")
        admin.execute(f"SELECT * FROM {schema}.bars FOR UPDATE")
        try:
            started = time.monotonic()
            with pytest.raises(DatabaseFileError, match="canceling statement due to lock timeout") as err:
                cache.set("SPY", DAILY * 2, source="alpaca")
            assert 0.25 <= time.monotonic() - started < 2.0
            assert str(err.value).startswith(f"the PostgreSQL cache at {cache.db_path} failed: ")
            # Readers are not blocked by a writer.
            assert cache.get("SPY", "2024-01-01", "2024-01-31", source="alpaca")["close"].tolist() == [101.0, 101.5]
        finally:
            admin.execute("ROLLBACK")
        assert [r for r in caplog.records if "retrying" in r.getMessage()] == []
        assert cache.set("SPY", DAILY * 2, source="alpaca") == 2


# -- hostile locations ----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["socket folder that does not exist", "closed port"])
def test_an_unreachable_server_is_a_clear_error_within_the_timeout(tmp_path, where):
    if where == "closed port":
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"postgresql://trader:secret@127.0.0.1:{port}/cache"
        reason = "Connection refused"
    else:
        url = f"postgresql://trader:secret@/cache?host={tmp_path / 'nowhere'}"
        reason = "No such file or directory"
    started = time.monotonic()
    with pytest.raises(DatabaseFileError) as err:
        TradingCacheManager(url, timeout=2)
    assert time.monotonic() - started < 2.5
    message = str(err.value)
    assert message.startswith(f"cannot connect to the PostgreSQL cache at {redact_url(url)}: ")
    assert "trader:***@" in message and reason in message and "secret" not in message
    assert "check the URL (TRADING_CACHE_URL / --db-url) and that the server is up" in message


def test_a_wrong_database_name_is_a_clear_error(pg_server):
    url = with_password(pg_server, "secret").replace("/postgres?", "/no_such_db?", 1)
    with pytest.raises(DatabaseFileError, match='database "no_such_db" does not exist') as err:
        TradingCacheManager(url, timeout=2)
    assert "postgres:***@/no_such_db" in str(err.value) and "secret" not in str(err.value)


def test_a_password_never_appears_in_errors_logs_stats_or_reprs(pg_server, pg_url, caplog):
    secret = "s3cr3t-Pa55"
    url = with_password(pg_url, secret)
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        cache = TradingCacheManager(url)
        cache.set("SPY", DAILY, source="alpaca")
        stats = cache.get_stats()
        texts += [stats["db_path"], str(cache.db_path), repr(cache), repr(cache.conn), repr(cache._db),
                  repr(stats)]
        assert stats["db_path"] == redact_url(url)
        assert stats["db_path"].startswith("postgresql://postgres:***@/postgres?host=")
        with pytest.raises(DatabaseFileError) as ro:
            TradingCacheManager(url, read_only=True).set("QQQ", DAILY, source="alpaca")
        cache.close()
        close_pools(url)
        # Failures that quote the URL: one libpq cannot parse, an unknown parameter, a wrong
        # database, the password as a query parameter.
        bad = [f"postgresql://trader:{secret}@[::1/cache",
               f"postgresql://trader:{secret}@/cache?host=/nowhere&bogus=1",
               with_password(pg_server, secret).replace("/postgres?", "/missing?", 1),
               f"postgresql:///cache?host=/nowhere&password={secret}"]
        errors = [ro.value]
        for location in bad:
            with pytest.raises(DatabaseFileError) as err:
                TradingCacheManager(location, timeout=1)
            errors.append(err.value)
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    assert caplog.records  # the pool and the cache did log (creation, connection errors)
    leaks = [t for t in texts if secret in t]
    assert leaks == []
    # An unparsable URL loses its whole user part.
    assert str(errors[1]).startswith("cannot connect to the PostgreSQL cache at postgresql://***@[::1/cache: ")
    assert str(errors[4]).startswith("cannot connect to the PostgreSQL cache at "
                                     "postgresql:///cache?host=/nowhere&password=***: ")


def _fake_server(seen: list[bytes]) -> tuple[socket.socket, threading.Thread]:
    """A TCP server that is not TLS-capable: answers libpq's SSLRequest (and GSSENCRequest)
    with "N", records the first message of each connection, then hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(5)
                    while True:
                        head = conn.recv(8)
                        if len(head) < 8:
                            break
                        code = struct.unpack("!II", head)[1]
                        seen.append({80877103: b"SSLRequest", 80877104: b"GSSENCRequest"}.get(code, b"startup"))
                        if code in (80877103, 80877104):
                            conn.sendall(b"N")
                        else:
                            break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize(("sslmode", "first"), [("require", b"SSLRequest"), ("disable", b"startup")])
def test_sslmode_is_passed_to_libpq(pg_url, sslmode, first):
    seen: list[bytes] = []
    server, _thread = _fake_server(seen)
    port = server.getsockname()[1]
    try:
        url = f"postgresql://trader:secret@127.0.0.1:{port}/cache?sslmode={sslmode}"
        with pytest.raises(DatabaseFileError) as err:
            TradingCacheManager(url, timeout=2)
    finally:
        server.close()
    assert [m for m in seen if m != b"GSSENCRequest"][0] == first
    if sslmode == "require":
        assert "server does not support SSL, but SSL was required" in str(err.value)
    assert str(err.value).startswith(f"cannot connect to the PostgreSQL cache at postgresql://trader:***@127.0.0.1:{port}/cache?sslmode={sslmode}: ")
    # Over the real server's Unix socket (where libpq uses no TLS) sslmode=disable opens the cache.
    with TradingCacheManager(with_query(pg_url, sslmode="disable")) as cache:
        assert cache.set("SPY", DAILY, source="alpaca") == 2
    close_pools(with_query(pg_url, sslmode="disable"))


def _schema_tables(admin: psycopg.Connection, schema: str) -> dict[str, list[tuple]]:
    names = [r[0] for r in admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,))]
    return {n: admin.execute(f'SELECT * FROM "{schema}"."{n}" ORDER BY 1').fetchall() for n in names}


@pytest.mark.parametrize("create", [True, False])
@pytest.mark.parametrize("layout", ["their bars table", "their notes", "a cachelib_meta that is not ours"])
def test_a_schema_holding_another_applications_tables_is_refused_and_untouched(pg_url, admin, layout, create):
    schema = schema_of(pg_url)
    admin.execute(f"CREATE SCHEMA {schema}")
    if layout == "their bars table":
        admin.execute(f"CREATE TABLE {schema}.bars (name TEXT, qty INTEGER)")
        admin.execute(f"INSERT INTO {schema}.bars VALUES ('widget', 3)")
    elif layout == "their notes":
        admin.execute(f"CREATE TABLE {schema}.notes (id INTEGER PRIMARY KEY, body TEXT)")
        admin.execute(f"INSERT INTO {schema}.notes VALUES (1, 'keep me')")
    else:
        admin.execute(f"CREATE TABLE {schema}.cachelib_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)")
        admin.execute(f"INSERT INTO {schema}.cachelib_meta VALUES ('application_id', 1234)")
    before = _schema_tables(admin, schema)
    with pytest.raises(DatabaseFileError, match="belongs to another application") as err:
        TradingCacheManager(with_password(pg_url, "secret"), create=create)
    assert str(err.value).startswith("postgresql://postgres:***@/postgres?host=")
    assert "left untouched" in str(err.value)
    assert _schema_tables(admin, schema) == before
    assert len(before) == 1


def test_create_false_or_read_only_on_an_empty_schema_creates_nothing(pg_url, admin):
    schema = schema_of(pg_url)
    for kwargs in ({"create": False}, {"read_only": True}):
        with pytest.raises(CacheNotFoundError) as err:
            TradingCacheManager(pg_url, **kwargs)
        assert str(err.value).startswith(f"no cache at {redact_url(pg_url)}; check --db-url / TRADING_CACHE_URL")
    assert admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()[0] == 0
    admin.execute(f"CREATE SCHEMA {schema}")  # an existing but empty schema: the same
    with pytest.raises(CacheNotFoundError):
        TradingCacheManager(pg_url, create=False)
    assert _schema_tables(admin, schema) == {}


def test_read_only_reads_and_refuses_every_write(pg_url):
    with TradingCacheManager(pg_url) as cache:
        cache.set("SPY", DAILY, source="alpaca")
        before = table_snapshot(cache)
    with TradingCacheManager(pg_url, read_only=True) as cache:
        assert cache.read_only
        assert cache.get("SPY", "2024-01-01", "2024-01-31")["close"].tolist() == [101.0, 101.5]
        for write in (lambda: cache.set("QQQ", DAILY, source="alpaca"), cache.cleanup_expired, cache.vacuum,
                      lambda: cache.delete("SPY"), cache.atomic().__enter__):
            with pytest.raises(DatabaseFileError, match=r"is open read-only \(opened with read_only=True\); "
                                                         "open it without read_only=True to write"):
                write()
        assert table_snapshot(cache) == before


@pytest.mark.parametrize("schema", ['a-b";drop', "1abc", "x" * 64])
def test_a_schema_name_that_is_not_a_plain_identifier_is_refused(pg_server, admin, schema):
    url = schema_url(pg_server, schema)
    with pytest.raises(DatabaseFileError, match="is not a plain identifier; use letters, digits and underscores"):
        TradingCacheManager(url)
    close_pools(url)
    assert admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()[0] == 0


@pytest.mark.parametrize("url", ["mysql://trader:secret@db/cache", "postgresq://trader:secret@db/cache",
                                 "postgressql://trader:secret@db/cache"])
def test_a_mistyped_scheme_names_the_supported_ones(url):
    with pytest.raises(ValueError, match="sqlite:///path/to/file.db or postgresql://user@host/dbname") as err:
        TradingCacheManager(url)
    assert f"unsupported database URL scheme '{url.split(':')[0]}'" in str(err.value)
    assert "secret" not in str(err.value)


def test_a_newer_schema_version_says_upgrade_cachelib(pg_url, admin):
    TradingCacheManager(pg_url).close()
    close_pools(pg_url)
    admin.execute(f"UPDATE {schema_of(pg_url)}.cachelib_meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(DatabaseFileError, match=r"has schema version 99, newer than this cachelib "
                                                r"understands \(7\); upgrade cachelib"):
        TradingCacheManager(pg_url)


# -- the pool -------------------------------------------------------------------------------------


def _backends(admin: psycopg.Connection, app: str) -> int:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchone()[0]


def test_managers_opened_and_closed_in_a_loop_reuse_the_pools_connections(pg_url, admin):
    app = f"cachelib_loop_{os.getpid()}"
    url = with_query(pg_url, application_name=app)
    TradingCacheManager(url).close()
    pids, peak = set(), 0
    for i in range(50):
        with TradingCacheManager(url) as cache:
            pids.add(cache.conn.execute("SELECT pg_backend_pid()").fetchone()[0])
            cache.set(f"S{i % 5}", DAILY, source="alpaca")
        peak = max(peak, _backends(admin, app))
    assert peak <= POOL_MAX_SIZE
    assert len(pids) == 1  # one manager at a time: the same pooled connection every time
    close_pools(url)
    wait_for(lambda: _backends(admin, app) == 0, 10, "the pool's connections to close")


def test_threads_sharing_a_manager_each_get_their_own_connection(pg_url):
    threads = 4
    barrier = threading.Barrier(threads)
    with TradingCacheManager(pg_url) as cache:

        def worker(i: int) -> int:
            pid = cache.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            cache.set(f"T{i}", DAILY, source="alpaca")
            barrier.wait(timeout=10)  # all four hold their connection at once
            assert cache.conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
            cache.close()
            return pid

        results: list[int] = []
        pool = [threading.Thread(target=lambda i=i: results.append(worker(i))) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(30)
        assert len(results) == threads and len(set(results)) == threads
        assert cache.get_symbols() == ["T0", "T1", "T2", "T3"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_connections(pg_url):
    """The child inherits the parent's open manager; using it must not touch the parent's
    socket (it used to run the child's statements on the parent's connection)."""
    with TradingCacheManager(pg_url) as cache:
        parent_pid = cache.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                inherited = cache.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                cache.set("CHILD", DAILY, source="alpaca")
                with TradingCacheManager(pg_url) as fresh:
                    fresh_pid = fresh.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                cache.close()
                os.write(write, f"{inherited} {fresh_pid}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(child, 0)
        with os.fdopen(read) as pipe:
            child_pids = [int(p) for p in pipe.read().split()]
        assert os.waitstatus_to_exitcode(status) == 0
        assert len(child_pids) == 2 and parent_pid not in child_pids
        # The parent's connection is intact and sees the child's write.
        assert cache.conn.execute("SELECT pg_backend_pid()").fetchone()[0] == parent_pid
        assert cache.get("CHILD", "2024-01-01", "2024-01-31")["close"].tolist() == [101.0, 101.5]
