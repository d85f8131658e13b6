"""Issue 9, section 1 (store side): never lose or touch a file that is not ours.

Real SQLite files in temporary folders; expected values are written by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cachelib
from cachelib.store import (
    APPLICATION_ID,
    CacheNotFoundError,
    DatabaseFileError,
    TradingCacheManager,
    database_files,
)

ROOT = Path(__file__).resolve().parent.parent

DAILY = pd.DataFrame(
    {"open": [100.0, 101.0], "high": [101.5, 102.0], "low": [99.5, 100.5], "close": [101.0, 101.5],
     "volume": [1_000_000, 1_200_000]},
    index=pd.DatetimeIndex(["2024-01-02", "2024-01-03"]),
)


def minute_frame(n: int) -> pd.DataFrame:
    idx = pd.date_range("2024-01-02 14:30", periods=n, freq="1min", tz="UTC")
    close = 50.0 + np.arange(n) * 0.01
    return pd.DataFrame({"open": close, "high": close + 0.05, "low": close - 0.05, "close": close,
                         "volume": 100.0}, index=idx)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sidecars(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name and p.name.startswith(path.name))


def disk_bytes(path: Path) -> int:
    """Database file + WAL, measured here, independently of the store."""
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def application_id(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA application_id").fetchone()[0]
    finally:
        conn.close()


# -- another application's database is refused and left byte-identical --------------------


def _foreign_bars_table(conn: sqlite3.Connection) -> None:
    # The example: a table named like ours with another layout.
    conn.execute("CREATE TABLE bars (name TEXT, qty INTEGER)")
    conn.execute("INSERT INTO bars VALUES ('widget', 3)")


def _foreign_notes(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('keep me')")


def _foreign_wal_mode(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    _foreign_notes(conn)


def _foreign_id_without_tables(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA application_id = 1234")


def _foreign_id_with_our_tables(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE series (series_id, asset_type, symbol, timeframe, source)")
    conn.execute("CREATE TABLE bars (series_id, ts, open, high, low, close, volume, expires_at)")
    conn.execute("PRAGMA user_version = 3")


def _foreign_version_without_tables(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA user_version = 2")


def _foreign_negative_version(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA user_version = -5")


def _foreign_view_only(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE VIEW answer AS SELECT 42")


def _foreign_claims_our_version(conn: sqlite3.Connection) -> None:
    _foreign_bars_table(conn)
    conn.execute("PRAGMA user_version = 3")


@pytest.mark.parametrize("build", [_foreign_bars_table, _foreign_notes, _foreign_wal_mode,
                                   _foreign_id_without_tables, _foreign_id_with_our_tables,
                                   _foreign_claims_our_version, _foreign_version_without_tables,
                                   _foreign_negative_version, _foreign_view_only])
@pytest.mark.parametrize("create", [True, False])
def test_another_applications_database_is_refused_and_stays_byte_identical(tmp_path, build, create):
    path = tmp_path / "theirs.db"
    conn = sqlite3.connect(path, isolation_level=None)
    build(conn)
    conn.close()
    assert sidecars(path) == []
    before = sha256(path)
    with pytest.raises(DatabaseFileError, match="belongs to another application") as err:
        TradingCacheManager(path, create=create)
    assert str(path) in str(err.value)
    assert "--db-path or TRADING_CACHE_DB" in str(err.value)
    assert sha256(path) == before
    assert sidecars(path) == []  # no -wal/-shm/-journal left behind


def test_new_file_is_marked_with_our_application_id(tmp_path):
    path = tmp_path / "new.db"
    TradingCacheManager(path).close()
    assert APPLICATION_ID == 0x43414348  # "CACH"
    assert application_id(path) == 0x43414348


def test_our_files_from_before_the_id_are_recognised_and_stamped(tmp_path):
    path = tmp_path / "old.db"
    with TradingCacheManager(path) as cache:
        cache.set("SPY", DAILY, source="alpaca")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA application_id = 0")  # as every file of ours made before this issue
    conn.close()
    with TradingCacheManager(path) as cache:
        assert cache.get("SPY", "2024-01-01", "2024-01-31")["close"].tolist() == [101.0, 101.5]
    assert application_id(path) == 0x43414348


def test_a_zero_length_file_is_a_new_cache(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with TradingCacheManager(path, create=False) as cache:
        assert cache.schema_version == 7
    assert application_id(path) == 0x43414348


def test_the_seed_layout_is_still_imported_and_stamped(tmp_path):
    path = tmp_path / "seed.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE market_cache (
            id INTEGER PRIMARY KEY AUTOINCREMENT, asset_type TEXT NOT NULL, symbol TEXT NOT NULL,
            trading_date TEXT NOT NULL, source TEXT NOT NULL, open REAL NOT NULL, high REAL NOT NULL,
            low REAL NOT NULL, close REAL NOT NULL, volume INTEGER NOT NULL, vwap REAL, transactions INTEGER,
            cached_at TEXT NOT NULL, expires_at TEXT NOT NULL);
        INSERT INTO market_cache VALUES (1, 'stock', 'SPY', '2024-01-02', 'alpaca', 470, 472, 469, 471,
            1000, 470.5, 10, '2024-01-05T00:00:00', '2034-01-05T00:00:00');
        """
    )
    conn.close()
    with TradingCacheManager(path) as cache:
        assert cache.get("SPY", "2024-01-02", "2024-01-02")["close"].tolist() == [471.0]
    assert application_id(path) == 0x43414348


# -- create=False: a missing cache is an error, and nothing is created ----------------------


def test_create_false_on_a_missing_path_creates_nothing(tmp_path):
    path = tmp_path / "typo" / "deeper" / "cache.db"
    with pytest.raises(CacheNotFoundError) as err:
        TradingCacheManager(path, create=False)
    assert str(err.value).startswith(f"no cache at {path}")
    assert isinstance(err.value, DatabaseFileError) and isinstance(err.value, ValueError)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CacheNotFoundError, match="^no cache at "):
        TradingCacheManager(path, read_only=True)
    assert list(tmp_path.iterdir()) == []
    assert cachelib.CacheNotFoundError is CacheNotFoundError
    assert "CacheNotFoundError" in cachelib.__all__ and "database_files" in cachelib.__all__


def test_create_false_opens_an_existing_cache(tmp_path):
    path = tmp_path / "cache.db"
    with TradingCacheManager(path) as cache:
        cache.set("SPY", DAILY, source="alpaca")
    with TradingCacheManager(path, create=False) as cache:
        assert cache.get_symbols() == ["SPY"]


# -- database_files: real paths of the database and its sidecars ---------------------------


def test_database_files_resolve_symlinks(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    (tmp_path / "link").symlink_to(real_dir)
    (tmp_path / "alias.db").symlink_to(real_dir / "cache.db")
    expected = (real_dir / "cache.db", real_dir / "cache.db-wal", real_dir / "cache.db-shm",
                real_dir / "cache.db-journal")
    assert database_files(tmp_path / "link" / "cache.db") == expected
    assert database_files(str(tmp_path / "alias.db")) == expected
    assert database_files(os.fsencode(tmp_path / "link" / "cache.db")) == expected
    # The manager writes exactly these files.
    with TradingCacheManager(tmp_path / "alias.db") as cache:
        cache.set("SPY", DAILY, source="alpaca")
        assert cache.db_path == real_dir / "cache.db"
        assert {p.name for p in real_dir.iterdir()} <= {p.name for p in expected}
    with pytest.raises(ValueError, match="db_path must be a file path"):
        database_files(123)


# -- clear errors for every unusable db_path -------------------------------------------------


def _cache_file(tmp_path: Path, rows: int = 3000) -> Path:
    path = tmp_path / "cache.db"
    with TradingCacheManager(path) as cache:
        cache.set("SPY", minute_frame(rows), source="alpaca", timeframe="1Min")
        cache.vacuum()  # everything in the main file, no -wal
    assert sidecars(path) == []
    return path


def _truncate_mid_page(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


def _truncate_at_page(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:8192])


def _truncate_in_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:10])


def _random_after_header(path: Path) -> None:
    data = path.read_bytes()
    rng = np.random.default_rng(7)
    path.write_bytes(data[:100] + rng.bytes(len(data) - 100))


def _zero_last_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-4096 * 3:] = bytes(4096 * 3)  # bar pages met only by the (columnar) range read
    path.write_bytes(bytes(data))


def _zero_data_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4096 * 2:] = bytes(len(data) - 4096 * 2)  # every page after the first two
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate_mid_page, _truncate_at_page, _truncate_in_header,
                                    _random_after_header, _zero_data_pages, _zero_last_pages])
def test_a_damaged_file_gives_a_clear_error_naming_it(tmp_path, damage):
    path = _cache_file(tmp_path)
    damage(path)
    before = sha256(path)
    # The error may come from opening or from the first read; never a raw sqlite3 error.
    with pytest.raises(DatabaseFileError) as err, TradingCacheManager(path) as cache:
        cache.get("SPY", "2024-01-01", "2024-01-31", timeframe="1Min")
        cache.get_stats()
    message = str(err.value)
    assert str(path) in message
    assert "backup" in message or "move it away" in message
    assert sha256(path) == before


def test_not_a_regular_file_or_a_directory(tmp_path):
    with pytest.raises(DatabaseFileError, match="/dev/null is not a regular file"):
        TradingCacheManager("/dev/null")
    with pytest.raises(DatabaseFileError, match=f"{tmp_path} is a directory"):
        TradingCacheManager(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(DatabaseFileError, match="a parent of it is a file"):
        TradingCacheManager(blocker / "cache.db")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    ("db_path", "message"),
    [
        (123, "db_path must be a file path .*got int 123"),
        (12.5, "db_path must be a file path .*got float"),
        (True, "db_path must be a file path .*got bool True"),
        (object(), "db_path must be a file path .*got object"),
        ("", "db_path is empty"),
        ("   ", "db_path is empty"),
        ("cache\x00.db", "contains a NUL byte"),
        (b"cache\x00.db", "contains a NUL byte"),
        (":memory:", "in-memory"),
    ],
)
def test_a_db_path_that_is_not_a_path_is_a_value_error(tmp_path, monkeypatch, db_path, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        TradingCacheManager(db_path)
    assert list(tmp_path.iterdir()) == []


def test_a_bytes_path_works(tmp_path):
    path = tmp_path / "bytes.db"
    with TradingCacheManager(os.fsencode(path)) as cache:
        assert cache.db_path == path
        assert cache.set("SPY", DAILY, source="alpaca") == 2


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), -1, True, "5", None, 1e300])
def test_an_unusable_timeout_is_a_value_error(tmp_path, timeout):
    with pytest.raises(ValueError, match="timeout must be a number of seconds"):
        TradingCacheManager(tmp_path / "c.db", timeout=timeout)
    assert list(tmp_path.iterdir()) == []


# -- read-only caches: reads work, writes say why they cannot ---------------------------------


def _filled_cache(folder: Path) -> Path:
    path = folder / "cache.db"
    with TradingCacheManager(path) as cache:
        cache.set("SPY", DAILY, source="alpaca")
        cache.set("SPY", minute_frame(3000), source="alpaca", timeframe="1Min")
    return path


def test_read_only_flag_reads_and_refuses_writes(tmp_path):
    path = _filled_cache(tmp_path)
    before = sha256(path)
    with TradingCacheManager(path, read_only=True) as cache:
        assert cache.read_only
        assert cache.get("SPY", "2024-01-01", "2024-01-31")["close"].tolist() == [101.0, 101.5]
        assert cache.get_stats()["total_entries"] == 3002
        assert len(cache.get("SPY", "2024-01-01", "2024-01-31", timeframe="1Min")) == 3000
        assert cache.get_symbols() == ["SPY"]
        for write in (lambda: cache.set("QQQ", DAILY, source="alpaca"), cache.cleanup_expired, cache.vacuum,
                      lambda: cache.delete("SPY")):
            with pytest.raises(DatabaseFileError, match=f"{path} is read-only .*opened with read_only=True"):
                write()
    assert sha256(path) == before


def test_read_only_old_schema_says_it_needs_an_upgrade(tmp_path):
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE series (series_id, asset_type, symbol, timeframe, source)")
    conn.execute("CREATE TABLE bars (series_id, ts, open, high, low, close, volume, expires_at)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseFileError, match="read-only .* schema v1.*write access"):
        TradingCacheManager(path, read_only=True)


_AS_OTHER_USER = textwrap.dedent(
    """
    import json, sys
    from cachelib.store import DatabaseFileError, TradingCacheManager
    import pandas as pd
    out = {}
    cache = TradingCacheManager(sys.argv[1])
    out["read_only"] = cache.read_only
    out["closes"] = cache.get("SPY", "2024-01-01", "2024-01-31")["close"].tolist()
    out["minutes"] = len(cache.get("SPY", "2024-01-01", "2024-01-31", timeframe="1Min"))  # a large read
    out["total"] = cache.get_stats()["total_entries"]
    out["symbols"] = cache.get_symbols()
    try:
        frame = pd.DataFrame({"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1]},
                             index=pd.DatetimeIndex(["2024-01-05"]))
        cache.set("QQQ", frame, source="alpaca")
        out["write"] = "succeeded"
    except DatabaseFileError as exc:
        out["write"] = str(exc)
    print(json.dumps(out))
    """
)


def _run_as_unprivileged(path: Path) -> dict:
    """Run the script above as a user the file permissions apply to (root ignores them):
    as ``nobody`` through ``setpriv`` when the tests run as root, else as ourselves."""
    import json

    command = [sys.executable, "-c", _AS_OTHER_USER, str(path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop to a user that permissions apply to")
        command = [setpriv, "--reuid=nobody", "--regid=nogroup" if _has_group("nogroup") else "--regid=nobody",
                   "--clear-groups", *command]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(path.parent), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=str(path.parent), env=env, timeout=120)
    if os.geteuid() == 0 and proc.returncode != 0 and "Permission denied" in proc.stderr and "Traceback" not in proc.stderr:
        pytest.skip(f"nobody cannot run this interpreter here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def shared_dir():
    """A folder other users can enter (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="cachelib-ro-"))
    folder.chmod(0o755)
    yield folder
    folder.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_file_or_folder_is_read_and_writes_say_why(shared_dir, what):
    path = _filled_cache(shared_dir)
    assert sidecars(path) == []
    before = sha256(path)
    path.chmod(0o444)
    if what == "folder":
        shared_dir.chmod(0o555)
    result = _run_as_unprivileged(path)
    assert result["read_only"] is True
    assert result["closes"] == [101.0, 101.5]
    assert result["minutes"] == 3000
    assert result["total"] == 3002
    assert result["symbols"] == ["SPY"]
    assert result["write"].startswith(f"{path} is read-only (")
    assert ("the file is not writable" if what == "file" else "folder") in result["write"]
    shared_dir.chmod(0o755)
    assert sha256(path) == before


def test_a_read_only_folder_with_a_writable_file(shared_dir):
    """SQLite cannot create -wal/-shm: detected, the cache is read without them."""
    path = _filled_cache(shared_dir)
    if os.geteuid() == 0:
        shutil.chown(path, user="nobody")
    shared_dir.chmod(0o555)
    result = _run_as_unprivileged(path)
    assert result["closes"] == [101.0, 101.5]
    assert "cannot create the -wal/-shm files" in result["write"]
    shared_dir.chmod(0o755)
    assert sidecars(path) == []


# -- vacuum: never makes a writer fail, reports what it really reclaimed ------------------


def test_vacuum_reports_the_observed_size_decrease(tmp_path):
    path = tmp_path / "cache.db"
    with TradingCacheManager(path) as cache:
        cache.set("SPY", minute_frame(20_000), source="alpaca", timeframe="1Min")
        cache.set("QQQ", DAILY, source="alpaca")
        assert cache.delete("SPY") == 20_000
        before = disk_bytes(path)
        reclaimed = cache.vacuum()
        after = disk_bytes(path)
        assert reclaimed > 300_000  # 20,000 minute bars of about 20 bytes each (compressed chunks)
        assert reclaimed == before - after
        assert Path(f"{path}-wal").stat().st_size == 0
        assert cache.get("QQQ", "2024-01-01", "2024-01-31")["close"].tolist() == [101.0, 101.5]


def test_vacuum_with_a_reader_holding_a_snapshot_does_not_block_writers(tmp_path):
    path = tmp_path / "cache.db"
    with TradingCacheManager(path) as cache:
        cache.set("SPY", minute_frame(5_000), source="alpaca", timeframe="1Min")
        cache.delete("SPY")

    reader_ready, release_reader = threading.Event(), threading.Event()

    def reader() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN")
        conn.execute("SELECT COUNT(*) FROM bars").fetchone()  # holds this snapshot open
        reader_ready.set()
        release_reader.wait(30)
        conn.execute("COMMIT")
        conn.close()

    writer_result: dict[str, object] = {}

    def writer(symbol: str, **timeout: float) -> None:
        try:
            with TradingCacheManager(path, **timeout) as other:
                writer_result[symbol] = other.set(symbol, DAILY, source="alpaca")
        except Exception as exc:  # noqa: BLE001 - reported below
            writer_result[symbol] = exc

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    assert reader_ready.wait(10)
    try:
        with TradingCacheManager(path) as cache:
            before = disk_bytes(path)
            # Both start while vacuum runs: one with the default timeout (5 s), one with 1 s.
            writers = [threading.Timer(0.05, writer, ("QQQ",)),
                       threading.Timer(0.1, writer, ("IWM",), {"timeout": 1.0})]
            for thread in writers:
                thread.start()
            started = time.monotonic()
            reclaimed = cache.vacuum()
            elapsed = time.monotonic() - started
            after = disk_bytes(path)
            for thread in writers:
                thread.join(30)
    finally:
        release_reader.set()
        reader_thread.join(30)
    assert writer_result == {"QQQ": 2, "IWM": 2}
    assert elapsed < 2.0  # not the 2 x 5 s the TRUNCATE checkpoints used to wait
    # Honest report: the reader keeps the old pages, so the file cannot have shrunk yet.
    assert reclaimed == max(before - after, 0)
    assert reclaimed == 0
    with TradingCacheManager(path) as cache:
        assert cache.get_symbols() == ["IWM", "QQQ"]
