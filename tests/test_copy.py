"""``cache-manager copy SRC DST`` (issue 12): a whole cache moves between engines (SQLite ->
PostgreSQL -> SQLite, and SQLite -> SQLite), all or nothing, with the same keys and values, and
verified row counts. Real SQLite files and the session's real PostgreSQL server (``pg_url``).

Every expected value is written by hand from the rows each test stores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_support import shown
from pg_fixtures import engine_of, schema_url, table_snapshot

from cachelib.cli import main
from cachelib.store import TradingCacheManager
from cachelib.store.postgres import redact_url

ROOT = Path(__file__).resolve().parent.parent

DAILY = pd.DataFrame(
    {"open": [100.0, 0.1 + 0.2, 1.0000000000000002], "high": [101.5, 2.0 / 3.0, 5.0],
     "low": [99.5, 1e-310, 5e-324], "close": [101.0, 0.5, 1.0], "volume": [1_000_000, 1_200_000, 900_000],
     "vwap": [100.7, np.nan, 102.1], "trade_count": [5000, 6000, 4500]},
    index=pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"]),
)
# Two New York sessions of 1-minute bars: two chunks.
MINUTES = pd.DataFrame(
    {"open": np.linspace(400.0, 401.0, 6), "high": 402.0, "low": 399.0, "close": 400.5, "volume": 10.0},
    index=pd.DatetimeIndex(["2024-01-02 14:30", "2024-01-02 14:31", "2024-01-02 20:59",
                            "2024-01-03 14:30", "2024-01-03 14:31", "2024-01-03 14:32"], tz="UTC"),
)
CHAIN = pd.DataFrame({
    "strike": [100.0, 105.0], "option_type": ["call", "put"], "expiration": ["2024-01-26", "2024-02-16"],
    "bid": [2.10, 0.80], "ask": [2.20, 0.90], "last": [2.15, np.nan], "volume": [120, 15],
    "open_interest": [1500, 300], "implied_volatility": [0.25, 0.24], "delta": [0.52, -0.21],
    "gamma": [0.05, 0.03], "theta": [-0.08, -0.02], "vega": [0.11, 0.09], "rho": [0.02, -0.01],
})
ACTIONS = [
    {"symbol": "NVDA", "action_type": "forward_split", "ex_date": "2024-06-10", "ratio": 10.0},
    {"symbol": "NVDA", "action_type": "cash_dividend", "ex_date": "2024-06-11", "amount": 0.01},
]
#: Rows per table of the cache :func:`fill` writes, counted by hand.
FILLED = {"series": 2, "bars": 3, "bar_chunks": 2, "coverage": 3, "raw_options_chain": 2,
          "raw_options_history": 2, "trade_history": 2, "corporate_actions": 2, "action_coverage": 1}
EMPTY = {t: [] for t in FILLED}


def fill(location) -> None:
    """A cache with a row in every table: daily bars (a NaN vwap, awkward float bits), two
    minute chunks, coverage, an option chain snapshotted twice (history), trades, actions."""
    with TradingCacheManager(location) as cache:
        cache.set("SPY", DAILY, source="alpaca", feed="sip")
        cache.set("QQQ", MINUTES, source="alpaca", timeframe="1Min")
        cache.record_coverage("SPY", ["2024-01-02", "2024-01-03", "2024-01-04"], source="alpaca", feed="sip")
        first = datetime(2024, 1, 19, 15, 0, tzinfo=timezone.utc)
        cache.store_raw_options("AAPL", "2024-01-19", CHAIN, underlying_price=100.5, snapshot_time=first)
        cache.store_raw_options("AAPL", "2024-01-19", CHAIN.assign(bid=[2.5, 0.7]), underlying_price=101.0,
                                snapshot_time=datetime(2024, 1, 19, 20, 0, tzinfo=timezone.utc))
        cache.archive_trades([
            {"trade_id": "T1", "symbol": "SPY", "entry_date": "2024-01-02T15:00Z", "entry_price": 100.0,
             "quantity": 10, "exit_date": "2024-01-04T20:00Z", "exit_price": 102.5, "exit_reason": "signal",
             "strategy_name": "sma"},
            {"trade_id": "T2", "symbol": "QQQ", "entry_date": "2024-01-03T15:00Z", "entry_price": 400.0,
             "quantity": -5},
        ])
        cache.store_corporate_actions(ACTIONS, source="alpaca", fetched_at="2024-06-12T14:00:00Z")
        cache.record_action_coverage("NVDA", "2024-01-01", "2024-06-30", source="alpaca")


def snapshot(location) -> dict[str, list[tuple]]:
    with TradingCacheManager(location, create=False, read_only=True) as cache:
        return table_snapshot(cache)


def frames(location) -> list:
    """What the public API reads back: daily and minute bars, the chain (now and as of its first
    snapshot), trades, corporate actions."""
    with TradingCacheManager(location, create=False, read_only=True) as cache:
        return [
            cache.get("SPY", "2024-01-01", "2024-01-31"),
            cache.get("QQQ", "2024-01-01", "2024-01-31", timeframe="1Min"),
            cache.get_raw_options("AAPL", "2024-01-19"),
            cache.get_raw_options("AAPL", "2024-01-19", as_of="2024-01-19T12:00"),
            cache.get_trade_history(),
            cache.get_corporate_actions("NVDA"),
        ]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def bits(x: float) -> str:
    return struct.pack(">d", x).hex()


def copy_json(capsys, src, dst) -> dict:
    code, out, err = run(capsys, "copy", src, dst, "--json")
    assert (code, err) == (0, ""), err
    return json.loads(out)


# -- round trip ---------------------------------------------------------------------------------


def test_sqlite_to_postgresql_and_back_is_identical(capsys, tmp_path, pg_url):
    source, back = tmp_path / "source.db", tmp_path / "back.db"
    fill(source)
    report = copy_json(capsys, source, pg_url)
    assert report["tables"] == FILLED and report["rows"] == 19
    assert copy_json(capsys, pg_url, back)["tables"] == FILLED

    original = snapshot(source)
    assert snapshot(pg_url) == original
    assert snapshot(back) == original
    assert [len(rows) for rows in original.values()] == list(FILLED.values())
    # Float bits as stored, NaN stored as NULL, series ids kept.
    daily = {row[1]: row for row in snapshot(back)["bars"]}
    assert [bits(row[2]) for row in daily.values()] == ["4059000000000000", "3fd3333333333334", "3ff0000000000001"]
    assert [bits(row[3]) for row in daily.values()] == ["4059600000000000", "3fe5555555555555",
                                                        "4014000000000000"]
    assert [bits(row[4]) for row in daily.values()] == ["4058e00000000000", "000012688b70e62b", "0000000000000001"]
    assert [row[7] for row in daily.values()] == [100.7, None, 102.1]
    assert sorted((r[0], r[2], r[3]) for r in snapshot(back)["series"]) == [(1, "SPY", "1Day"), (2, "QQQ", "1Min")]
    # The chunk bytes are the same bytes.
    assert [bytes(r[6]) for r in snapshot(back)["bar_chunks"]] == [bytes(r[6]) for r in original["bar_chunks"]]

    for got_pg, got_back, want in zip(frames(pg_url), frames(back), frames(source), strict=True):
        for got in (got_pg, got_back):
            if isinstance(want, pd.DataFrame):
                pd.testing.assert_frame_equal(got, want)
            else:
                assert got is want is None
    spy = frames(back)[0]
    assert spy["open"].tolist() == [100.0, 0.30000000000000004, 1.0000000000000002]
    assert spy["low"].tolist() == [99.5, 1e-310, 5e-324]
    assert len(frames(back)[1]) == 6


def test_postgresql_series_ids_continue_after_the_copied_ones(capsys, tmp_path, pg_url):
    source = tmp_path / "source.db"
    fill(source)
    copy_json(capsys, source, pg_url)
    with TradingCacheManager(pg_url) as cache:
        cache.set("IWM", DAILY, source="alpaca")  # a new series: its id follows the copied 1 and 2
        assert sorted(r[0] for r in table_snapshot(cache)["series"]) == [1, 2, 3]


def test_sqlite_to_sqlite_prints_a_table_and_a_verified_total(capsys, tmp_path):
    source, target = tmp_path / "source.db", tmp_path / "copy" / "target.db"
    fill(source)
    (tmp_path / "copy").mkdir()
    code, out, err = run(capsys, "copy", source, target)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "table                rows",
        "-------------------  ----",
        "series                  2",
        "bars                    3",
        "bar_chunks              2",
        "coverage                3",
        "raw_options_chain       2",
        "raw_options_history     2",
        "trade_history           2",
        "corporate_actions       2",
        "action_coverage         1",
        f"Copied 19 rows from {source} to {target} (row counts verified)",
    ]
    assert snapshot(target) == snapshot(source)


def test_small_batches_copy_every_row_once(capsys, tmp_path, cache_url):
    source = tmp_path / "source.db"
    days = pd.bdate_range("2020-01-01", periods=1001)
    with TradingCacheManager(source) as cache:
        cache.set_many({s: pd.DataFrame({"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0},
                                        index=days) for s in ("AAA", "BBB", "CCC")}, source="alpaca")
    code, out, _ = run(capsys, "copy", source, cache_url, "--batch-size", "7", "--json")
    assert code == 0
    assert json.loads(out)["tables"]["bars"] == 3003
    assert snapshot(cache_url) == snapshot(source)


# -- all or nothing -----------------------------------------------------------------------------


def refuse_inserts(location, table: str, *, silently: bool) -> None:
    """A trigger on the destination's ``table`` that fails every insert (``silently``: drops the
    row without an error, so only the final count check can notice)."""
    if engine_of(location) == "sqlite":
        action = "SELECT RAISE(IGNORE)" if silently else "SELECT RAISE(ABORT, 'refused by the test trigger')"
        with sqlite3.connect(location) as conn:
            conn.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} BEGIN {action}; END")
        return
    body = "RETURN NULL;" if silently else "RAISE EXCEPTION 'refused by the test trigger';"
    with TradingCacheManager(location) as cache, cache.atomic() as conn:
        conn.execute(f"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} END $$")
        conn.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()")


def test_a_failing_batch_leaves_the_destination_empty(capsys, tmp_path, cache_url):
    source = tmp_path / "source.db"
    fill(source)
    TradingCacheManager(cache_url).close()
    refuse_inserts(cache_url, "trade_history", silently=False)  # the 7th of 9 tables
    code, out, err = run(capsys, "copy", source, cache_url)
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and "refused by the test trigger" in err and err.count("\n") == 1, err
    assert snapshot(cache_url) == EMPTY


def test_a_count_mismatch_rolls_back_and_exits_1(capsys, tmp_path, cache_url):
    source = tmp_path / "source.db"
    fill(source)
    TradingCacheManager(cache_url).close()
    refuse_inserts(cache_url, "corporate_actions", silently=True)
    code, out, err = run(capsys, "copy", source, cache_url)
    assert (code, out) == (1, "")
    assert err == ("error: row counts differ after the copy (corporate_actions: 2 in SRC, 0 in DST): "
                   "rolled back, DST is as it was\n")
    assert snapshot(cache_url) == EMPTY


def big_source(path: Path) -> None:
    """~200,000 daily bars: a copy in batches of 500 takes seconds."""
    days = pd.bdate_range("2000-01-03", periods=2000)
    bars = pd.DataFrame({"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}, index=days)
    with TradingCacheManager(path) as cache:
        cache.set_many({f"S{i:03d}": bars for i in range(100)}, source="alpaca")


def test_a_copy_killed_midway_leaves_the_destination_empty(tmp_path, cache_url):
    source = tmp_path / "big.db"
    big_source(source)
    process = subprocess.Popen(
        [sys.executable, "-m", "cachelib", "copy", str(source), cache_url, "--batch-size", "500", "--progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
    )
    seen, deadline = b"", time.monotonic() + 60
    while not re.search(rb"bars: +\d+%.*?\| *[1-9]\d{3,}/", seen):  # bars are being written
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk and time.monotonic() < deadline, seen.decode(errors="replace")
        seen += chunk
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert snapshot(cache_url) == EMPTY
    # The destination is usable and empty: the same copy now goes through.
    assert main(["copy", str(source), cache_url, "--quiet"]) == 0
    assert len(snapshot(cache_url)["bars"]) == 200_000


# -- refusals -----------------------------------------------------------------------------------


def test_a_non_empty_destination_is_refused_and_left_as_it_was(capsys, tmp_path, cache_url):
    source = tmp_path / "source.db"
    fill(source)
    with TradingCacheManager(cache_url) as cache:
        cache.set("IWM", DAILY.iloc[:1], source="alpaca")
    before = snapshot(cache_url)
    code, out, err = run(capsys, "copy", source, cache_url)
    assert (code, out) == (1, "")
    assert err == (
        f"error: DST {shown(cache_url)} is not empty (rows: 1 in series, 1 in bars): copy "
        "writes only into a new or empty cache, so nothing was written; name a new file or schema, or empty this "
        "one first (SQLite: delete the file; PostgreSQL: DROP SCHEMA <its schema> CASCADE)\n"
    )
    assert snapshot(cache_url) == before


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_missing_source_is_reported_and_nothing_is_created(capsys, tmp_path, request, engine):
    missing = str(tmp_path / "nope.db") if engine == "sqlite" else request.getfixturevalue("pg_url")
    code, out, err = run(capsys, "copy", missing, tmp_path / "target.db")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: no cache at {shown(missing)}; check "), err
    assert list(tmp_path.iterdir()) == []
    if engine == "postgresql":  # nor on the server: the schema is still empty
        with pytest.raises(ValueError, match="no cache at"):
            TradingCacheManager(missing, create=False)


def test_the_source_itself_is_refused(capsys, tmp_path, pg_server):
    source = tmp_path / "source.db"
    fill(source)
    (tmp_path / "alias.db").symlink_to(source)
    before = snapshot(source)
    code, out, err = run(capsys, "copy", source, tmp_path / "alias.db")
    assert (code, out, err) == (1, "", f"error: SRC and DST are the same cache ({source}): name another "
                                       "destination\n")
    assert snapshot(source) == before
    url = schema_url(pg_server, f"same_{os.getpid()}")
    fill(url)
    other_password = url.replace("postgres:@", "postgres:xQ7pw@")
    code, out, err = run(capsys, "copy", url, other_password)
    assert (code, out) == (1, "")
    assert err == f"error: SRC and DST are the same cache ({redact_url(url)}): name another destination\n"
    assert redact_url(url).startswith("postgresql://postgres:***@/postgres?host=")


def test_copy_refuses_the_global_location_flags(capsys, tmp_path):
    code, _, err = run(capsys, "--db-path", tmp_path / "a.db", "copy", tmp_path / "b.db", tmp_path / "c.db")
    assert code == 2 and err.endswith("error: copy takes its caches as SRC and DST: drop --db-path/--db-url\n")
    code, _, err = run(capsys, "copy", tmp_path / "b.db", tmp_path / "c.db", "--batch-size", "0")
    assert (code, err) == (1, "error: --batch-size must be a whole number of rows >= 1, got 0\n")
    assert list(tmp_path.iterdir()) == []


# -- progress and passwords ---------------------------------------------------------------------


def test_progress_bar_only_on_a_terminal_or_when_asked(tmp_path):
    source = tmp_path / "source.db"
    fill(source)

    def copy(target: str, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cachelib", "copy", str(source), str(tmp_path / target),
                               *flags], capture_output=True, text=True, timeout=120, cwd=ROOT)

    quiet = copy("a.db")  # stderr is a pipe here: no bar
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert quiet.stdout.splitlines()[-1] == f"Copied 19 rows from {source} to {tmp_path / 'a.db'} (row counts verified)"
    shown = copy("b.db", "--progress")
    assert shown.returncode == 0
    assert re.search(r"action_coverage: 100%\|.*\| 19/19 \[", shown.stderr), shown.stderr
    silent = copy("c.db", "--progress", "--quiet")  # --progress wins over --quiet for the bar
    assert (silent.returncode, silent.stdout) == (0, "")
    assert "19/19" in silent.stderr
    none = copy("d.db", "--quiet")
    assert (none.returncode, none.stdout, none.stderr) == (0, "", "")


def test_the_password_is_never_printed(capsys, tmp_path, pg_url):
    secret_url = pg_url.replace("postgres:@", "postgres:Sup3rS3cret@")  # trust auth ignores it
    assert secret_url != pg_url
    source = tmp_path / "source.db"
    fill(source)
    outputs = [run(capsys, "copy", source, secret_url), run(capsys, "copy", source, secret_url),  # refused
               run(capsys, "copy", secret_url, tmp_path / "back.db", "--progress"),
               run(capsys, "--db-url", secret_url, "stats"), run(capsys, "--db-url", secret_url, "stats", "--json")]
    assert [code for code, _, _ in outputs] == [0, 1, 0, 0, 0]
    for _, out, err in outputs:
        assert "Sup3rS3cret" not in out + err
    assert "postgres:***@" in outputs[0][1] and "postgres:***@" in outputs[1][2]


def test_a_missing_server_is_one_clear_error(capsys, tmp_path):
    url = f"postgresql://trader:pw123@/cache?host={tmp_path}/no-server"
    started = time.monotonic()
    code, out, err = run(capsys, "copy", url, tmp_path / "x.db")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: cannot connect to the PostgreSQL cache at postgresql://trader:***@/cache?host="
                          f"{tmp_path}/no-server: connection is bad: connection to server on socket "), err
    assert err.endswith("check the URL (TRADING_CACHE_URL / --db-url) and that the server is up\n")
    assert err.count("\n") == 1 and "pw123" not in err
    assert time.monotonic() - started < 5  # no waiting out the pool's timeout
    assert list(tmp_path.iterdir()) == []
