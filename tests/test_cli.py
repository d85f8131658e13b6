"""cache-manager: every subcommand in-process, the real console script once, exit codes, docs.

Expected outputs are written by hand from the bars stored by the ``db`` fixture.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_support import at, shown
from pg_fixtures import engine_of

from cachelib.cli import build_parser, main
from cachelib.store import TradingCacheManager

ROOT = Path(__file__).resolve().parent.parent

SPY = pd.DataFrame(
    {
        "open": [100.0, 101.0, 102.5],
        "high": [101.5, 102.0, 103.0],
        "low": [99.5, 100.5, 101.0],
        "close": [101.0, 101.5, 102.0],
        "volume": [1_000_000, 1_200_000, 900_000],
        "vwap": [100.7, 101.3, 102.1],
        "trade_count": [5000, 6000, 4500],
    },
    index=pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04"]),
)
QQQ_HOURLY = pd.DataFrame(
    {"open": [402.0, 402.5], "high": [403.0, 404.0], "low": [401.0, 402.0], "close": [402.5, 403.5],
     "volume": [5000.0, 6000.0]},
    index=pd.DatetimeIndex(["2024-01-02 15:00", "2024-01-02 16:00"], tz="UTC"),
)


@pytest.fixture
def db(cache_url) -> str:
    """A cache holding 3 daily SPY bars and 2 hourly QQQ bars from alpaca, once per engine (a
    SQLite file, a PostgreSQL schema: pass it with ``*at(db)``)."""
    with TradingCacheManager(cache_url) as cache:
        cache.set("SPY", SPY, source="alpaca")
        cache.set("QQQ", QQQ_HOURLY, source="alpaca", timeframe="1Hour")
    return cache_url


JANUARY = ("--start", "2024-01-01", "--end", "2024-01-31")
JAN_2 = ("--start", "2024-01-02", "--end", "2024-01-02")


def run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def bar_count(path: Path) -> int:
    with TradingCacheManager(path) as cache:
        return cache.get_stats()["total_entries"]


# -- stats, symbols, cleanup, vacuum ---------------------------------------------------------


def test_stats_table(capsys, db):
    code, out, err = run(capsys, *at(db), "stats")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"Database     {shown(db)}"
    assert lines[2:] == [
        "Bars         5 (0 expired)",
        "Symbols      2",
        "Sources      alpaca",
        "Timeframes   1Day, 1Hour",
        "Asset types  stock",
        "Date range   2024-01-02 .. 2024-01-04",
        "Option rows  0 (0 underlyings, 0 snapshots)",
        "Trades       0 closed",
    ]


def test_stats_json_includes_options_and_trades(capsys, db):
    code, out, _ = run(capsys, "stats", *at(db), "--json")
    stats = json.loads(out)
    assert code == 0
    assert stats["total_entries"] == 5
    assert stats["unique_symbols"] == 2
    assert stats["timeframes"] == ["1Day", "1Hour"]
    assert stats["date_range"] == {"start": "2024-01-02", "end": "2024-01-04"}
    assert stats["options"]["total_rows"] == 0
    assert stats["trades"]["total_trades"] == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["{flag}", "{db}", "--json", "symbols"],
        ["symbols", "{flag}", "{db}", "--json"],
        ["--json", "symbols", "{flag}", "{db}"],
        ["{flag}", "{db}", "symbols", "--json"],
    ],
    ids=["before", "after", "json-before", "db-before"],
)
def test_global_flags_before_or_after_the_subcommand(capsys, db, argv):
    flag, location = at(db)
    code, out, _ = run(capsys, *[a.format(flag=flag, db=location) for a in argv])
    assert (code, json.loads(out)) == (0, ["QQQ", "SPY"])


def test_symbols_table_and_asset_type(capsys, db):
    assert run(capsys, *at(db), "symbols") == (0, "QQQ\nSPY\n", "")
    code, out, err = run(capsys, *at(db), "symbols", "--asset-type", "option")
    assert (code, out, err) == (0, "", "No option symbols cached\n")


def test_cleanup_removes_expired_rows_and_can_vacuum(capsys, cache_url):
    path = cache_url
    old = pd.DataFrame(  # 3,000 weekday bars, already expired: their pages become free space
        {"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 1000.0},
        index=pd.bdate_range("2000-01-03", periods=3000),
    )
    with TradingCacheManager(path) as cache:
        cache.set("SPY", SPY, source="alpaca", ttl_hours=0)  # already expired
        cache.set("OLD", old, source="alpaca", ttl_hours=0)
        cache.set("QQQ", QQQ_HOURLY, source="alpaca", timeframe="1Hour")
    assert run(capsys, *at(path), "cleanup") == (0, "Removed 3,003 expired rows\n", "")
    assert bar_count(path) == 2
    if engine_of(path) == "postgresql":  # VACUUM ANALYZE: rarely gives bytes back to the system
        code, out, _ = run(capsys, *at(path), "cleanup", "--vacuum", "--json")
        assert code == 0 and json.loads(out)["rows_removed"] == 0
        assert json.loads(out)["bytes_reclaimed"] >= 0 and bar_count(path) == 2
        return

    def file_bytes() -> int:  # the database and its WAL, as the file system sees them
        return sum(os.path.getsize(p) for p in (Path(path), Path(f"{path}-wal")) if p.exists())

    before = file_bytes()
    code, out, _ = run(capsys, *at(path), "cleanup", "--vacuum", "--json")
    result = json.loads(out)
    shrunk = before - file_bytes()
    assert code == 0
    assert result["rows_removed"] == 0
    assert shrunk > 0  # the 3,003 deleted rows' pages are given back
    assert result["bytes_reclaimed"] == shrunk
    assert bar_count(path) == 2


def test_vacuum(capsys, db):
    code, out, _ = run(capsys, *at(db), "vacuum")
    assert code == 0
    assert re.fullmatch(r"Reclaimed [\d,]+ bytes\n", out)
    code, out, _ = run(capsys, *at(db), "vacuum", "--json")
    assert code == 0 and set(json.loads(out)) == {"bytes_reclaimed"}
    assert bar_count(db) == 5


# -- export and query ------------------------------------------------------------------------

SPY_RECORDS = [
    {"date": "2024-01-02", "open": 100.0, "high": 101.5, "low": 99.5, "close": 101.0, "volume": 1000000,
     "vwap": 100.7, "trade_count": 5000},
    {"date": "2024-01-03", "open": 101.0, "high": 102.0, "low": 100.5, "close": 101.5, "volume": 1200000,
     "vwap": 101.3, "trade_count": 6000},
    {"date": "2024-01-04", "open": 102.5, "high": 103.0, "low": 101.0, "close": 102.0, "volume": 900000,
     "vwap": 102.1, "trade_count": 4500},
]


def test_export_json_to_stdout(capsys, db):
    code, out, err = run(capsys, *at(db), "export", "SPY", *JANUARY)
    assert (code, err) == (0, "")
    assert json.loads(out) == SPY_RECORDS


def test_export_csv_to_a_file(capsys, db, tmp_path):
    target = tmp_path / "spy.csv"
    code, out, _ = run(capsys, *at(db), "export", "spy", "--start", "2024-01-03",
                       "--end", "2024-01-04", "--format", "csv", "--output", target)
    assert (code, out) == (0, f"Wrote 2 bars to {target}\n")
    assert target.read_text() == (
        "date,open,high,low,close,volume,vwap,trade_count\n"
        "2024-01-03,101.0,102.0,100.5,101.5,1200000,101.3,6000\n"
        "2024-01-04,102.5,103.0,101.0,102.0,900000,102.1,4500\n"
    )


def test_export_intraday_uses_utc_timestamps(capsys, db):
    code, out, _ = run(capsys, *at(db), "export", "QQQ", *JAN_2,
                       "--timeframe", "1Hour", "--source", "alpaca", "--format", "csv")
    assert code == 0
    assert out == (
        "timestamp,open,high,low,close,volume,vwap,trade_count\n"
        "2024-01-02T15:00:00+00:00,402.0,403.0,401.0,402.5,5000,,\n"
        "2024-01-02T16:00:00+00:00,402.5,404.0,402.0,403.5,6000,,\n"
    )


def test_export_with_nothing_cached_exits_0_with_an_empty_export(capsys, db, tmp_path):
    target = tmp_path / "none.json"
    code, out, err = run(capsys, *at(db), "export", "ZZZ", *JANUARY, "--output", target)
    assert (code, out) == (0, f"Wrote 0 bars to {target}\n")
    assert err == "No cached 1Day bars for ZZZ in 2024-01-01 .. 2024-01-31\n"
    assert target.read_text() == "[]\n"


def test_query_table(capsys, db):
    code, out, _ = run(capsys, *at(db), "query", "SPY", *JANUARY)
    assert code == 0
    assert out == (
        "date          open    high     low   close     volume    vwap  trades\n"
        "----------  ------  ------  ------  ------  ---------  ------  ------\n"
        "2024-01-02  100.00  101.50   99.50  101.00  1,000,000  100.70   5,000\n"
        "2024-01-03  101.00  102.00  100.50  101.50  1,200,000  101.30   6,000\n"
        "2024-01-04  102.50  103.00  101.00  102.00    900,000  102.10   4,500\n"
        "3 bars\n"
    )


def test_query_intraday_table_is_in_new_york_time(capsys, db):
    code, out, _ = run(capsys, *at(db), "query", "QQQ", *JAN_2, "--timeframe", "1Hour")
    assert code == 0
    assert out.splitlines()[2:] == [
        "2024-01-02 10:00  402.00  403.00  401.00  402.50   5,000",
        "2024-01-02 11:00  402.50  404.00  402.00  403.50   6,000",
        "2 bars",
    ]


def test_query_json_and_empty(capsys, db):
    code, out, _ = run(capsys, "--json", *at(db), "query", "SPY", "--start", "2024-01-03", "--end",
                       "2024-01-03")
    assert (code, json.loads(out)) == (0, [SPY_RECORDS[1]])
    code, out, err = run(capsys, *at(db), "query", "SPY", *JANUARY, "--source", "polygon")
    assert (code, out) == (0, "")
    assert err == "No cached 1Day bars for SPY from polygon in 2024-01-01 .. 2024-01-31\n"


# -- clear ----------------------------------------------------------------------------------


def test_clear_asks_and_a_no_aborts(capsys, db, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, err = run(capsys, *at(db), "clear", "--symbol", "SPY")
    assert (code, out) == (1, "")
    assert f"Delete 3 bars (symbol SPY) from {shown(db)}? [y/N]" in err
    assert err.endswith("Aborted: nothing deleted\n")
    assert bar_count(db) == 5


def test_clear_without_an_answer_says_pass_yes(capsys, db, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run(capsys, *at(db), "clear")
    assert code == 1
    assert err.endswith("\nerror: no answer on stdin: pass --yes to delete without asking\n")
    assert bar_count(db) == 5


def test_clear_with_yes_deletes_only_what_the_filters_select(capsys, db, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # never read
    code, out, _ = run(capsys, *at(db), "clear", "--symbol", "spy", "--start", "2024-01-03", "--yes")
    assert (code, out) == (0, "Deleted 2 bars\n")
    with TradingCacheManager(db) as cache:
        assert cache.get("SPY", "2024-01-01", "2024-01-31")["close"].tolist() == [101.0]
        assert len(cache.get("QQQ", "2024-01-02", "2024-01-02", timeframe="1Hour")) == 2


def test_clear_by_timeframe_and_a_yes_answer(capsys, db, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, err = run(capsys, *at(db), "--json", "clear", "--timeframe", "1H")
    assert (code, json.loads(out)) == (0, {"bars_deleted": 2})
    assert "Delete 2 bars (timeframe 1Hour)" in err
    assert bar_count(db) == 3


def test_clear_everything(capsys, db):
    assert run(capsys, *at(db), "clear", "-y") == (0, "Deleted 5 bars\n", "")
    assert bar_count(db) == 0
    assert run(capsys, *at(db), "clear", "--yes") == (0, "", "No bars match (all bars)\n")


# -- migrate-legacy -----------------------------------------------------------------------


@pytest.fixture
def legacy_dir(tmp_path) -> Path:
    directory = tmp_path / "market_data"
    directory.mkdir()
    good = {
        "metadata": {"symbol": "SPY", "source": "alpaca"},
        "data": [
            {"date": "2024-01-02", "open": 472.2, "high": 473.7, "low": 470.5, "close": 472.7,
             "volume": 123000},
            {"date": "2024-01-03", "open": 470.4, "high": 471.2, "low": 468.2, "close": 468.8,
             "volume": 103000},
        ],
    }
    (directory / "SPY_2024-01-02_2024-01-03_alpaca.json").write_text(json.dumps(good))
    (directory / "IWM_2024-01-02_2024-01-03_alpaca.json").write_text('{"metadata": {}, "data": [')
    return directory


def test_migrate_legacy_reports_each_file_and_exits_1_on_failures(capsys, cache_url, legacy_dir):
    path = cache_url
    code, out, _ = run(capsys, *at(path), "migrate-legacy", legacy_dir)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["status", "file", "symbol", "timeframe", "source", "bars", "/", "reason"]
    assert lines[2].split() == ["FAILED", "IWM_2024-01-02_2024-01-03_alpaca.json", "bad", "JSON:",
                                "Expecting", "value:", "line", "1", "column", "27", "(char", "26)"]
    assert lines[3].split() == ["ok", "SPY_2024-01-02_2024-01-03_alpaca.json", "SPY", "1Day", "alpaca", "2"]
    assert lines[4] == "2 files seen, 1 imported (2 bars), 1 failed"
    assert bar_count(path) == 2


def test_migrate_legacy_dry_run_json_creates_no_database(capsys, cache_url, legacy_dir):
    path = cache_url
    code, out, _ = run(capsys, *at(path), "migrate-legacy", legacy_dir, "--dry-run", "--json")
    report = json.loads(out)
    assert code == 1
    assert (report["dry_run"], report["files_seen"], report["files_imported"], report["rows_imported"]) == (
        True, 2, 1, 2,
    )
    assert [f["ok"] for f in report["files"]] == [False, True]
    with pytest.raises(ValueError, match="no cache at"):
        TradingCacheManager(path, create=False)
    assert not Path(path).exists()


def test_migrate_legacy_all_good_exits_0(capsys, cache_url, legacy_dir):
    (legacy_dir / "IWM_2024-01-02_2024-01-03_alpaca.json").unlink()
    code, out, _ = run(capsys, *at(cache_url), "migrate-legacy", legacy_dir)
    assert code == 0
    assert out.splitlines()[-1] == "1 files seen, 1 imported (2 bars), 0 failed"


# -- exit codes and errors ------------------------------------------------------------------


def test_usage_errors_exit_2(capsys, db):
    code, _, err = run(capsys, *at(db), "bogus")
    assert code == 2 and "invalid choice: 'bogus'" in err
    code, _, err = run(capsys, *at(db), "export", "SPY", "--end", "2024-01-31")
    assert code == 2 and "--start" in err
    code, _, err = run(capsys)
    assert code == 2 and "required" in err
    code, _, _ = run(capsys, "export", "SPY", *JANUARY, "--format", "xml")
    assert code == 2


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "migrate-legacy" in out


def test_not_a_sqlite_file_is_an_error_and_left_untouched(capsys, tmp_path):
    path = tmp_path / "notes.db"
    content = b"these are my trading notes, not a database\n" * 20
    path.write_bytes(content)
    for argv in (["stats"], ["cleanup", "--vacuum"], ["clear", "--yes"]):
        code, out, err = run(capsys, "--db-path", path, *argv)
        assert (code, out) == (1, "")
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "not a SQLite database" in err
        assert "Traceback" not in err
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_bad_input_values_are_errors_not_tracebacks(capsys, db):
    code, _, err = run(capsys, *at(db), "query", "SPY", "--start", "2024-13-01",
                       "--end", "2024-01-31")
    assert code == 2  # a malformed argument is a usage error
    assert err.splitlines()[-1] == (
        "cache-manager query: error: argument --start: cannot read '2024-13-01' as a day "
        "(YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM[:SS], New York time unless it ends in Z or +HH:MM)"
    )
    code, _, err = run(capsys, *at(db), "query", "SPY", *JANUARY, "--timeframe", "2Day")
    assert code == 2 and "error: argument --timeframe: unknown timeframe '2Day'" in err
    code, _, err = run(capsys, *at(db), "migrate-legacy", "/nonexistent/market_data")
    assert code == 1 and err.startswith("error: ") and "not a directory" in err


def test_the_installed_console_script(db):
    script = Path(sys.executable).with_name("cache-manager")
    if not script.exists():
        script = shutil.which("cache-manager")
    command = [str(script)] if script else [sys.executable, "-m", "cachelib"]
    result = subprocess.run(
        [*command, *at(db), "stats", "--json"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_entries"] == 5


# -- documentation --------------------------------------------------------------------------


GLOBAL_FLAGS = ("--db-path", "--db-url", "--json")


def _interface() -> dict[str, list[str]]:
    """``{subcommand: its own long flags}``, read from the parser itself."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: sorted({o for a in p._actions for o in a.option_strings
                      if o.startswith("--") and o not in ("--help", *GLOBAL_FLAGS)})
        for name, p in sub.choices.items()
    }


def undocumented(text: str) -> list[str]:
    """What ``text`` fails to document: a ``cache-manager <sub>`` example for every subcommand,
    and each of its flags on a line that shows that subcommand."""
    lines = text.splitlines()
    missing = [flag for flag in GLOBAL_FLAGS if flag not in text]
    for name, flags in _interface().items():
        if f"cache-manager {name}" not in text:
            missing.append(f"cache-manager {name}")
        word = re.compile(rf"cache-manager\b.*(?<![\w-]){re.escape(name)}(?![\w-])")
        shown = "\n".join(line for line in lines if word.search(line))
        missing.extend(f"cache-manager {name} {flag}" for flag in flags if flag not in shown)
    return missing


def test_the_docs_check_notices_a_missing_flag():
    text = "\n".join(f"cache-manager {name} {' '.join(flags)}" for name, flags in _interface().items())
    text += "\n--db-path --db-url --json"
    assert undocumented(text) == []
    assert undocumented(text.replace(" --vacuum", "")) == ["cache-manager cleanup --vacuum"]


def test_readme_documents_every_subcommand_and_flag():
    readme = ROOT / "README.md"
    assert readme.exists(), "README.md is missing: paste docs_cli.md's section into it"
    missing = undocumented(readme.read_text(encoding="utf-8"))
    assert not missing, f"README.md does not document: {', '.join(missing)}"


# -- where the cache is: --db-url, --db-path, $TRADING_CACHE_URL, $TRADING_CACHE_DB ---------------


def test_db_url_and_db_path_together_is_a_usage_error(capsys, tmp_path, pg_url):
    code, out, err = run(capsys, "--db-path", tmp_path / "a.db", "stats", "--db-url", pg_url)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == ("cache-manager stats: error: --db-path and --db-url both given: pick one "
                                    "(--db-path for a SQLite file, --db-url for a postgresql:// or sqlite:/// URL)")
    code, _, err = run(capsys, "--db-url", "trader:pw@db.internal/cache", "stats")
    assert code == 2 and err.splitlines()[-1] == (
        "cache-manager stats: error: --db-url is not a URL: write postgresql://user@host/dbname or "
        "sqlite:///path/to/file.db, or give a file with --db-path")
    assert "pw" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_url_names_a_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with TradingCacheManager(tmp_path / "rel.db") as cache:
        cache.set("SPY", SPY, source="alpaca")
    assert run(capsys, "--db-url", "sqlite:///rel.db", "symbols") == (0, "SPY\n", "")
    assert run(capsys, "--db-url", f"sqlite:///{tmp_path}/rel.db", "symbols") == (0, "SPY\n", "")


def test_trading_cache_url_wins_over_trading_cache_db(capsys, tmp_path, monkeypatch, db):
    other = tmp_path / "other.db"
    with TradingCacheManager(other) as cache:
        cache.set("IWM", SPY, source="alpaca")
    monkeypatch.setenv("TRADING_CACHE_DB", str(other))
    assert run(capsys, "symbols") == (0, "IWM\n", "")
    url = db if engine_of(db) == "postgresql" else f"sqlite:///{db}"
    monkeypatch.setenv("TRADING_CACHE_URL", url)
    assert run(capsys, "symbols") == (0, "QQQ\nSPY\n", "")
    assert run(capsys, "--db-path", other, "symbols") == (0, "IWM\n", "")  # a flag wins over both


def test_a_foreign_postgresql_schema_is_an_error_and_left_untouched(capsys, pg_url):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:  # another application's schema
        schema = conn.execute("SHOW search_path").fetchone()[0]
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.orders (id int PRIMARY KEY, note text)")
        conn.execute(f"INSERT INTO {schema}.orders VALUES (1, 'mine')")
    for argv in (["stats"], ["cleanup", "--vacuum"], ["clear", "--yes"], ["symbols"]):
        code, out, err = run(capsys, "--db-url", pg_url, *argv)
        assert (code, out) == (1, "")
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "belongs to another application" in err and "Traceback" not in err
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                              (schema,)).fetchall()
        assert tables == [("orders",)]
        assert conn.execute(f"SELECT * FROM {schema}.orders").fetchall() == [(1, "mine")]


def test_a_missing_postgresql_server_is_one_error_line(capsys, tmp_path):
    url = f"postgresql://trader:pw123@/cache?host={tmp_path}"
    code, out, err = run(capsys, "--db-url", url, "stats")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: cannot connect to the PostgreSQL cache at postgresql://trader:***@/cache?host="
                          f"{tmp_path}: "), err
    assert err.count("\n") == 1 and "pw123" not in err
