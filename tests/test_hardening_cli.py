"""cache-manager under hostile use (issue 9, sections 1 and 4): it never writes over the cache,
never creates one by mistake, keeps its exit-code conventions, ends quietly on a closed pipe,
reads naive times as New York time, and never prints a traceback.

Expected values are written by hand from the bars each test stores.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_support import at, files_of, shown
from pg_fixtures import engine_of

from cachelib.bars import parse_timeframe
from cachelib.cli import build_parser, main
from cachelib.store import TradingCacheManager

ROOT = Path(__file__).resolve().parent.parent

SPY = pd.DataFrame(
    {"open": [100.0, 101.0], "high": [101.5, 102.0], "low": [99.5, 100.5], "close": [101.0, 101.5],
     "volume": [1_000_000, 1_200_000]},
    index=pd.DatetimeIndex(["2024-01-02", "2024-01-03"]),
)
SPY_JSON = (
    '[\n  {\n    "date": "2024-01-02",\n    "open": 100.0,\n    "high": 101.5,\n    "low": 99.5,\n'
    '    "close": 101.0,\n    "volume": 1000000,\n    "vwap": null,\n    "trade_count": null\n  },\n'
    '  {\n    "date": "2024-01-03",\n    "open": 101.0,\n    "high": 102.0,\n    "low": 100.5,\n'
    '    "close": 101.5,\n    "volume": 1200000,\n    "vwap": null,\n    "trade_count": null\n  }\n]\n'
)
JANUARY = ("--start", "2024-01-01", "--end", "2024-01-31")


@pytest.fixture
def db(tmp_path) -> Path:
    """A SQLite cache holding 2 daily SPY bars (for what only a file has: its bytes, sidecars)."""
    path = tmp_path / "cache.db"
    with TradingCacheManager(path) as cache:
        cache.set("SPY", SPY, source="alpaca")
    return path


@pytest.fixture
def any_db(cache_url) -> str:
    """A cache holding 2 daily SPY bars, once per engine (pass it with ``*at(any_db)``)."""
    with TradingCacheManager(cache_url) as cache:
        cache.set("SPY", SPY, source="alpaca")
    return cache_url


def run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def closes(path) -> list[float]:
    with TradingCacheManager(path) as cache:
        frame = cache.get("SPY", "2024-01-01", "2024-01-31")
    return [] if frame is None else frame["close"].tolist()


def command() -> list[str]:
    """The installed console script, else ``python -m cachelib``."""
    script = Path(sys.executable).with_name("cache-manager")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cachelib"]


# -- 1. export never writes over the database; an existing file needs --force -------------------


@pytest.mark.parametrize("how", ["same path", "relative with ..", "symlink", "symlinked folder",
                                 "hard link", "-wal", "-shm", "-journal"])
@pytest.mark.parametrize("force", [False, True], ids=["", "force"])
def test_export_onto_the_database_or_its_sidecars_is_refused(capsys, db, tmp_path, monkeypatch, how, force):
    before = sha256(db)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    protected = db
    if how == "same path":
        output = str(db)
    elif how == "relative with ..":
        output = "sub/../cache.db"
    elif how == "symlink":
        (tmp_path / "export.json").symlink_to(db)
        output = "export.json"
    elif how == "symlinked folder":
        (tmp_path / "elsewhere").symlink_to(tmp_path)
        output = str(tmp_path / "elsewhere" / "sub" / ".." / "cache.db")
    elif how == "hard link":
        os.link(db, tmp_path / "linked.db")
        output = "linked.db"
    else:
        protected = Path(f"{db}{how}")
        output = f"cache.db{how}"
    argv = ["--db-path", db, "export", "SPY", *JANUARY, "--output", output] + (["--force"] if force else [])
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    assert err == (f"error: --output {output} is the cache database file {protected}: refusing to write "
                   "over it; choose another output file\n")
    assert sha256(db) == before
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-journal").exists()
    assert closes(db) == [101.0, 101.5]


def test_export_onto_the_live_wal_of_an_open_cache_is_refused(capsys, db, tmp_path):
    with TradingCacheManager(db) as writer:  # an open writer: its -wal file holds live pages
        writer.set("SPY", SPY.assign(open=[7.0, 8.0], high=[7.0, 8.0], low=[7.0, 8.0], close=[7.0, 8.0]),
                   source="alpaca")
        wal = Path(f"{db}-wal")
        wal_before = sha256(wal)
        code, _, err = run(capsys, "--db-path", db, "export", "SPY", *JANUARY, "--output", wal, "--force")
        assert code == 1 and "refusing to write over it" in err
        assert sha256(wal) == wal_before
    assert closes(db) == [7.0, 8.0]


def test_an_existing_output_file_is_replaced_only_with_force(capsys, any_db, tmp_path):
    db = any_db
    target = tmp_path / "spy.json"
    target.write_text("my notes\n")
    os.chmod(target, 0o640)
    code, out, err = run(capsys, *at(db), "export", "SPY", *JANUARY, "--output", target)
    assert (code, out, err) == (1, "", f"error: {target} exists; pass --force to overwrite\n")
    assert target.read_text() == "my notes\n"

    code, out, err = run(capsys, *at(db), "export", "SPY", *JANUARY, "--output", target, "--force")
    assert (code, out, err) == (0, f"Wrote 2 bars to {target}\n", "")
    assert target.read_text() == SPY_JSON
    assert oct(target.stat().st_mode & 0o777) == "0o640"  # the replaced file's permissions are kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [*files_of(db), "spy.json"]  # no temporary file


def test_export_writes_through_a_symlink_to_another_file(capsys, any_db, tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old\n")
    (tmp_path / "link.json").symlink_to(real)
    code, _, _ = run(capsys, *at(any_db), "export", "SPY", *JANUARY, "--output", tmp_path / "link.json",
                     "--force")
    assert code == 0
    assert (tmp_path / "link.json").is_symlink()
    assert real.read_text() == SPY_JSON


def test_export_output_in_a_missing_folder_or_onto_a_folder_is_an_error(capsys, any_db, tmp_path):
    db = any_db
    code, _, err = run(capsys, *at(db), "export", "SPY", *JANUARY, "--output", tmp_path / "no" / "x.json")
    assert (code, err) == (1, f"error: cannot write --output {tmp_path / 'no' / 'x.json'}: folder "
                              f"{tmp_path / 'no'} does not exist\n")
    code, _, err = run(capsys, *at(db), "export", "SPY", *JANUARY, "--output", tmp_path, "--force")
    assert (code, err) == (1, f"error: --output {tmp_path} is a directory; give a file name\n")
    code, _, err = run(capsys, *at(db), "export", "SPY", *JANUARY, "--output", " ")
    assert (code, err) == (1, "error: --output is empty; give a file name\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == files_of(db)


def test_a_failed_export_leaves_the_old_file_whole_and_no_temporary_file(any_db, tmp_path):
    db = any_db
    with TradingCacheManager(db) as cache:  # ~1,000 bars: about 200 kB of JSON
        cache.set("IWM", pd.DataFrame(
            {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0},
            index=pd.bdate_range("2020-01-01", periods=1000),
        ), source="alpaca")
    target = tmp_path / "iwm.json"
    target.write_text("the previous export\n")

    def small_files() -> None:  # the kernel refuses to grow any file past 100 kB: a full disk
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = subprocess.run(
        [*command(), *at(db), "export", "IWM", "--start", "2020-01-01", "--end", "2024-12-31",
         "--output", str(target), "--force"],
        capture_output=True, text=True, timeout=120, preexec_fn=small_files,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"error: cannot write --output {target}: File too large (the file was not changed)\n"
    assert target.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [*files_of(db), "iwm.json"]


# -- 2. read-only and maintenance commands never create a cache -----------------------------------


COMMANDS = [
    ["stats"], ["symbols"], ["query", "SPY", *JANUARY], ["export", "SPY", *JANUARY],
    ["clear", "--yes"], ["cleanup"], ["cleanup", "--vacuum"], ["vacuum"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_mistyped_db_path_is_reported_and_nothing_is_created(capsys, tmp_path, argv):
    typo = tmp_path / "not-yet" / "cahce.db"
    code, out, err = run(capsys, "--db-path", typo, *argv)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: no cache at {typo}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_mistyped_trading_cache_db_is_reported_and_nothing_is_created(capsys, tmp_path, monkeypatch, argv):
    typo = tmp_path / "data" / "trading_cahce.db"
    monkeypatch.setenv("TRADING_CACHE_DB", str(typo))
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    assert err.startswith(f"error: no cache at {typo}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize("how", ["--db-url", "TRADING_CACHE_URL"])
def test_a_postgresql_url_without_a_cache_is_reported_and_nothing_is_created(capsys, pg_url, monkeypatch,
                                                                            tmp_path, argv, how):
    monkeypatch.setenv("TRADING_CACHE_DB", str(tmp_path / "file.db"))  # the URL wins over it
    if how == "TRADING_CACHE_URL":
        monkeypatch.setenv("TRADING_CACHE_URL", pg_url)
    code, out, err = run(capsys, *(["--db-url", pg_url] if how == "--db-url" else []), *argv)
    assert (code, out) == (1, "")
    assert err == (f"error: no cache at {shown(pg_url)}; check --db-url / TRADING_CACHE_URL (nothing was "
                   "created), or run a command that writes, such as sync, to create it\n")
    with pytest.raises(ValueError, match="no cache at"):  # the schema is still empty
        TradingCacheManager(pg_url, create=False)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_db_path_is_an_error_not_the_default_cache(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "--db-path", "", "stats")
    assert (code, out) == (1, "")
    assert err.startswith("error: db_path is empty") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_migrate_legacy_still_creates_the_cache(capsys, tmp_path, cache_url):
    legacy = tmp_path / "market_data"
    legacy.mkdir()
    (legacy / "SPY_2024-01-02_2024-01-02_alpaca.json").write_text(json.dumps({
        "metadata": {"symbol": "SPY", "source": "alpaca"},
        "data": [{"date": "2024-01-02", "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10}],
    }))
    path = str(tmp_path / "new" / "cache.db") if engine_of(cache_url) == "sqlite" else cache_url
    code, out, _ = run(capsys, *at(path), "migrate-legacy", legacy)
    assert code == 0 and out.splitlines()[-1] == "1 files seen, 1 imported (1 bars), 0 failed"
    with TradingCacheManager(path, create=False) as cache:
        assert cache.count_bars("SPY") == 1


# -- 3. exit codes ------------------------------------------------------------------------------


def test_nothing_matched_exits_0_with_a_message_on_stderr(capsys, any_db):
    db = any_db
    assert run(capsys, *at(db), "query", "ZZZ", *JANUARY) == (
        0, "", "No cached 1Day bars for ZZZ in 2024-01-01 .. 2024-01-31\n")
    assert run(capsys, *at(db), "query", "ZZZ", *JANUARY, "--json") == (
        0, "[]\n", "No cached 1Day bars for ZZZ in 2024-01-01 .. 2024-01-31\n")
    assert run(capsys, *at(db), "export", "ZZZ", *JANUARY) == (
        0, "[]\n", "No cached 1Day bars for ZZZ in 2024-01-01 .. 2024-01-31\n")
    assert run(capsys, *at(db), "export", "ZZZ", *JANUARY, "--format", "csv") == (
        0, "date,open,high,low,close,volume,vwap,trade_count\n",
        "No cached 1Day bars for ZZZ in 2024-01-01 .. 2024-01-31\n")
    assert run(capsys, *at(db), "export", "ZZZ", *JANUARY, "--format", "csv", "--timeframe", "5Min") == (
        0, "timestamp,open,high,low,close,volume,vwap,trade_count\n",
        "No cached 5Min bars for ZZZ in 2024-01-01 .. 2024-01-31\n")
    assert run(capsys, *at(db), "clear", "--symbol", "ZZZ", "--json") == (
        0, '{\n  "bars_deleted": 0\n}\n', "No bars match (symbol ZZZ)\n")
    assert run(capsys, *at(db), "symbols", "--asset-type", "crypto", "--json") == (
        0, "[]\n", "No crypto symbols cached\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["query", "SPY", "--start", "2024-02-30", "--end", "2024-03-01"],
         "argument --start: cannot read '2024-02-30' as a day (YYYY-MM-DD) or a time"),
        (["export", "SPY", "--start", "2024-01-01", "--end", "yesterday"],
         "argument --end: cannot read 'yesterday' as a day (YYYY-MM-DD) or a time"),
        (["clear", "--start", "01/02/2024"], "argument --start: cannot read '01/02/2024' as a day"),
        (["query", "SPY", *JANUARY, "--timeframe", "60Min"], "argument --timeframe: unknown timeframe '60Min'"),
        (["clear", "--timeframe", "1Sec"], "argument --timeframe: unknown timeframe '1Sec'"),
        (["query", "SP Y", *JANUARY], "argument symbol: symbol 'SP Y' has characters outside"),
        (["query", "SPY", *JANUARY, "--asset-type", ""],
         "argument --asset-type: asset_type must be a non-empty string such as 'stock'"),
        (["export", "SPY", *JANUARY, "--source", " "],
         "argument --source: source must be a non-empty string such as 'alpaca'"),
        (["clear", "--asset-type", " "], "argument --asset-type: asset_type must be a non-empty string"),
        (["query", "SPY", "--start", "2024-01-31", "--end", "2024-01-01"],
         "error: --start 2024-01-31 is after --end 2024-01-01"),
        (["clear", "--start", "2024-01-02T12:00", "--end", "2024-01-02T11:00"],
         "error: --start 2024-01-02T12:00:00-05:00 is after --end 2024-01-02T11:00:00-05:00"),
    ],
)
def test_malformed_dates_times_timeframes_and_symbols_are_usage_errors(capsys, db, argv, message):
    before = sha256(db)
    code, out, err = run(capsys, "--db-path", db, *argv)
    assert (code, out) == (2, "")
    assert message in err.splitlines()[-1], err
    assert "Traceback" not in err
    assert sha256(db) == before


def test_an_unexpected_exception_is_one_line_with_a_hint(capsys, any_db, monkeypatch):
    def broken(self):  # stands in for a library bug: no real input reaches this path any more
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(TradingCacheManager, "get_stats", broken)
    code, out, err = run(capsys, *at(any_db), "stats")
    assert (code, out) == (1, "")
    assert err == ("error: unexpected RuntimeError: boom second line (this is a bug in cachelib: please "
                   "report it with the command you ran)\n")


def test_ctrl_c_exits_130(capsys, any_db, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(TradingCacheManager, "get_stats", interrupted)
    assert run(capsys, *at(any_db), "stats") == (130, "", "interrupted\n")


# -- 4. a closed pipe ends quietly --------------------------------------------------------------


@pytest.fixture
def minutes_db(cache_url) -> str:
    """5,000 one-minute bars: about 1 MB of JSON, far more than a pipe buffer holds (per engine)."""
    path = cache_url
    index = pd.date_range("2024-01-02 14:30", periods=5000, freq="1min", tz="UTC")
    with TradingCacheManager(path) as cache:
        cache.set("SPY", pd.DataFrame({"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0},
                                      index=index), source="alpaca", timeframe="1Min")
    return path


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "PYTHONUNBUFFERED"])
@pytest.mark.parametrize("argv", [["--json", "query"], ["query"], ["export"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(minutes_db, argv, unbuffered):
    # Unbuffered (python -u, PYTHONUNBUFFERED=1 as in many containers) a short write used to
    # drop the rest of the output silently and exit 0.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    process = subprocess.Popen(
        [*command(), *at(minutes_db), *argv, "SPY", "--start", "2024-01-02",
         "--end", "2024-01-08", "--timeframe", "1Min"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert process.stdout.readline()  # the command is writing...
    process.stdout.close()  # ...and its reader goes away, like `| head -1`
    _, err = process.communicate(timeout=120)
    assert err.decode() == ""
    assert process.returncode == 141


def test_json_stats_into_head_in_a_shell_pipeline(minutes_db):
    cli = shlex.join([*command(), *at(minutes_db), "--json"])
    result = subprocess.run(
        ["bash", "-c", f"{cli} query SPY --start 2024-01-02 --end 2024-01-08 --timeframe 1Min | head -2; "
                       f"{cli} stats | head -1"],
        capture_output=True, text=True, timeout=120,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == ["[", "  {", "{"]


# -- 5. naive times are New York times ----------------------------------------------------------


@pytest.fixture
def hours_db(cache_url) -> str:
    """Hourly SPY bars at known UTC instants around Black Friday 2026 (New York = UTC-5) and
    1 July 2026 (New York = UTC-4)."""
    path = cache_url
    index = pd.DatetimeIndex([
        "2026-11-27 04:00",  # 23:00 New York on Nov 26
        "2026-11-27 15:00",  # 10:00 New York
        "2026-11-27 16:00",  # 11:00 New York
        "2026-11-28 00:00",  # 19:00 New York on Nov 27
        "2026-07-01 14:00",  # 10:00 New York (summer time)
    ], tz="UTC")
    bars = pd.DataFrame({"open": 1.0, "high": 9.0, "low": 0.5, "close": [1.0, 2.0, 3.0, 4.0, 5.0],
                         "volume": 10.0}, index=index)
    with TradingCacheManager(path) as cache:
        cache.set("SPY", bars, source="alpaca", timeframe="1Hour")
    return path


def query_times(capsys, db: str, start: str, end: str) -> list[str]:
    code, out, _ = run(capsys, *at(db), "--json", "query", "SPY", "--timeframe", "1Hour",
                       "--start", start, "--end", end)
    assert code == 0
    return [r["timestamp"] for r in json.loads(out)]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2026-11-27T10:00:00", "2026-11-27T10:59", ["2026-11-27T15:00:00+00:00"]),  # naive = New York
        ("2026-11-27 10:00", "2026-11-27 11:00", ["2026-11-27T15:00:00+00:00", "2026-11-27T16:00:00+00:00"]),
        ("2026-11-27T15:00Z", "2026-11-27T15:00Z", ["2026-11-27T15:00:00+00:00"]),  # Z is honoured
        ("2026-11-27T16:00+00:00", "2026-11-27T11:00-05:00", ["2026-11-27T16:00:00+00:00"]),
        ("2026-07-01T10:00", "2026-07-01T10:00", ["2026-07-01T14:00:00+00:00"]),  # summer: UTC-4
        ("2026-11-27", "2026-11-27", ["2026-11-27T15:00:00+00:00", "2026-11-27T16:00:00+00:00",
                                      "2026-11-28T00:00:00+00:00"]),  # a day is the New York day
    ],
)
def test_times_without_an_offset_are_new_york_times(capsys, hours_db, start, end, expected):
    assert query_times(capsys, hours_db, start, end) == expected


def test_clear_reads_naive_times_as_new_york_time_too(capsys, hours_db):
    code, out, _ = run(capsys, *at(hours_db), "clear", "--timeframe", "1Hour",
                       "--start", "2026-11-27T10:00", "--end", "2026-11-27T10:00", "--yes")
    assert (code, out) == (0, "Deleted 1 bars\n")
    assert query_times(capsys, hours_db, "2026-11-27", "2026-11-27") == [
        "2026-11-27T16:00:00+00:00", "2026-11-28T00:00:00+00:00"]


# -- 6. the timeframe error lists only what the cache accepts -----------------------------------

ACCEPTED = ("NMin (N 1-59), NHour (N 1-23), 1Day, 1Week, NMonth (N 1, 2, 3, 6, 12)")


def listed_timeframes(message: str) -> list[str]:
    """Every concrete timeframe a message like :data:`ACCEPTED` lists."""
    names = re.findall(r"\b1(Day|Week)\b", message)
    out = [f"1{unit}" for unit in names]
    for unit, spec in re.findall(r"N(\w+) \(N ([^)]*)\)", message):
        if "-" in spec:
            lo, hi = map(int, spec.split("-"))
            out += [f"{n}{unit}" for n in range(lo, hi + 1)]
        else:
            out += [f"{n.strip()}{unit}" for n in spec.split(",")]
    return out


def test_the_timeframe_error_lists_exactly_what_the_cache_accepts(capsys, tmp_path):
    code, _, err = run(capsys, "query", "SPY", *JANUARY, "--timeframe", "2Day")
    assert code == 2
    assert err.splitlines()[-1] == (
        f"cache-manager query: error: argument --timeframe: unknown timeframe '2Day': the cache accepts "
        f"{ACCEPTED}"
    )
    listed = listed_timeframes(ACCEPTED)
    assert len(listed) == 59 + 23 + 1 + 1 + 5
    day = pd.DataFrame({"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]},
                       index=pd.DatetimeIndex(["2024-01-02 15:00"], tz="UTC"))
    with TradingCacheManager(tmp_path / "all.db") as cache:  # each one really round-trips
        for name in listed:
            bars = day if parse_timeframe(name).is_intraday else day.tz_localize(None).set_axis(
                pd.DatetimeIndex(["2024-01-02"]))
            assert cache.set("SPY", bars, source="alpaca", timeframe=name) == 1, name
            assert cache.get("SPY", "2024-01-02", "2024-01-02", timeframe=name) is not None, name
    for rejected in ("60Min", "24Hour", "2Day", "2Week", "4Month", "1Sec"):
        with pytest.raises(ValueError):
            parse_timeframe(rejected)


# -- help -------------------------------------------------------------------------------------


def test_help_documents_exit_codes_and_the_naive_time_rule(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ["", *sub.choices]:
        code, out, _ = run(capsys, *([name] if name else []), "--help")
        assert code == 0
        text = " ".join(out.split())
        assert "Exit codes: 0 done, also when nothing matched" in text, name
        assert "2 usage error" in text and "141 stdout was closed" in text, name
        assert "a time without an offset (2026-11-27T10:00) is New York time" in text, name
    code, out, _ = run(capsys, "export", "--help")
    assert "--force" in out and "never the cache database" in " ".join(out.split())


def test_export_to_dev_stdout_into_a_pipe(minutes_db):
    """``--output /dev/stdout`` resolves to ``pipe:[...]`` when stdout is a pipe: it is streamed
    into, not refused as a missing file."""
    result = subprocess.run(
        [*command(), *at(minutes_db), "export", "SPY", "--start", "2024-01-02",
         "--end", "2024-01-02", "--timeframe", "1Min", "--format", "csv", "--output", "/dev/stdout"],
        capture_output=True, text=True, timeout=120,
    )
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("timestamp,open,high,low,close")
    assert lines[-1].startswith("Wrote ") and lines[-1].endswith(" bars to /dev/stdout")
