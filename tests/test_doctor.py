"""The data-quality doctor (issue 13, section 3): ``cachelib.doctor``, ``cache-manager doctor``
and the ``data_quality`` flow.

Each hand-built cache holds exactly one planted defect and must give exactly that finding (the
expected check, series, sessions and repair command are written out by hand); a clean cache
synced from the demo source gives none. Every test that touches a cache runs on SQLite and
PostgreSQL (``cache`` / ``cache_url``), except the one that damages a SQLite file's b-tree.
"""

from __future__ import annotations

import json
import shlex
import sqlite3
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from cachelib.cli import main
from cachelib.demo import DemoSource
from cachelib.doctor import diagnose
from cachelib.store import TradingCacheManager
from cachelib.sync import sync_bars, sync_corporate_actions, sync_option_chains

# The demo's chain snapshot is taken at this (fixed) time: trading date 2024-03-05.
SNAPSHOT_NOW = datetime(2024, 3, 5, 21, 30, tzinfo=UTC)
D = date.fromisoformat


def findings(report) -> list[tuple]:
    return [(f.severity, f.check, str(f.series), f.sessions, f.repair) for f in report.findings]


def sync_daily(cache, symbols, start="2024-01-02", end="2024-03-28") -> None:
    sync_bars(cache, DemoSource(), symbols, start, end)


def series_id(cache, symbol: str, timeframe: str = "1Day") -> int:
    return cache.conn.execute("SELECT series_id FROM series WHERE symbol = ? AND timeframe = ?",
                              (symbol, timeframe)).fetchone()[0]


def update_bar(cache, symbol: str, day: str, assignment: str) -> None:
    """Damage one stored daily bar behind the store's back (as a foreign writer could)."""
    key = (D(day) - date(1970, 1, 1)).days * 86_400
    with cache.atomic() as conn:
        conn.execute(f"UPDATE bars SET {assignment} WHERE series_id = ? AND ts = ?", (series_id(cache, symbol), key))


def demo_frame(symbol: str, start: str, end: str, timeframe: str = "1Day"):
    return DemoSource().get_bars([symbol], start, end, timeframe).loc[symbol]


def cli_location(cache_url: str) -> list[str]:
    return ["--db-url", cache_url] if cache_url.startswith("postgresql") else ["--db-path", cache_url]


# -- a clean cache ----------------------------------------------------------------------------


def build_clean(cache, with_actions: bool = True) -> None:
    """A year of daily bars (NVDA's 4:1 split included), two weeks of minute bars around the
    split, the corporate actions and one option-chain snapshot, all from the demo source."""
    source = DemoSource(now=SNAPSHOT_NOW)
    sync_daily(cache, ["NVDA", "AAPL", "SPY"], "2024-01-02", "2024-12-31")
    sync_bars(cache, DemoSource(), ["NVDA", "AAPL"], "2024-06-03", "2024-06-14", timeframe="1Min")
    if with_actions:
        sync_corporate_actions(cache, DemoSource(), ["NVDA", "AAPL", "SPY"], "2024-01-01", "2024-12-31")
    sync_option_chains(cache, source, ["AAPL"])


def test_a_clean_demo_synced_cache_has_no_findings(cache):
    build_clean(cache)
    report = diagnose(cache)
    assert report.findings == []
    assert (report.series_checked, report.option_snapshots_checked) == (5, 1)
    assert (report.exit_code(), report.exit_code(strict=True)) == (0, 0)
    assert report.integrity == ("ok" if report.engine == "sqlite" else
                                "not applicable on PostgreSQL (the server owns its pages); checked: "
                                "connection, series references")


def test_a_split_without_its_stored_action_is_a_jump(cache):
    """The same cache without the corporate actions: NVDA's raw 4:1 split (ex 2024-06-10) is
    an unexplained jump; the action is what excuses it in the clean cache."""
    build_clean(cache, with_actions=False)
    report = diagnose(cache)
    assert findings(report) == [(
        "warning", "jump", "stock NVDA 1Day demo/demo", (D("2024-06-10"),),
        "cache-manager clear --symbol NVDA --source demo --timeframe 1Day --asset-type stock --start 2024-06-10 "
        "--end 2024-06-10 --yes && cache-manager sync NVDA --start 2024-06-10 --end 2024-06-10 --timeframe 1Day "
        "--source demo --feed demo",
    )]
    assert report.findings[0].message.startswith("1 close-to-close move(s) beyond 6 standard deviations")
    assert (report.exit_code(), report.exit_code(strict=True)) == (0, 1)


# -- one planted defect, one finding ----------------------------------------------------------


def test_a_session_missing_inside_the_cached_range(cache):
    sync_daily(cache, ["SPY"])
    assert cache.delete("SPY", "2024-02-14", "2024-02-14", source="demo") == 1
    report = diagnose(cache)
    assert findings(report) == [(
        "error", "missing_sessions", "stock SPY 1Day demo/demo", (D("2024-02-14"),),
        "cache-manager sync SPY --start 2024-02-14 --end 2024-02-14 --timeframe 1Day --source demo --feed demo",
    )]
    assert report.exit_code() == 1


def test_missing_minute_sessions_count_bars_or_coverage(cache):
    """Minute bars written without coverage still account for their session; a session with
    neither, between two that have bars, is missing."""
    for day in ("2024-03-04", "2024-03-06"):
        cache.set("AAPL", demo_frame("AAPL", day, day, "1Min"), source="demo", timeframe="1Min", feed="iex")
    report = diagnose(cache)
    assert findings(report) == [(
        "error", "missing_sessions", "stock AAPL 1Min demo/iex", (D("2024-03-05"),),
        "cache-manager sync AAPL --start 2024-03-05 --end 2024-03-05 --timeframe 1Min --source demo --feed iex",
    )]


def test_rows_past_their_ttl(cache):
    sync_daily(cache, ["SPY"])
    cache.set("SPY", demo_frame("SPY", "2024-02-14", "2024-02-14"), source="demo", feed="demo", ttl_hours=0)
    report = diagnose(cache)
    assert findings(report) == [(
        "error", "expired", "stock SPY 1Day demo/demo", (D("2024-02-14"),),
        "cache-manager sync SPY --start 2024-02-14 --end 2024-02-14 --timeframe 1Day --source demo --feed demo",
    )]


def test_a_bar_breaking_the_ohlc_rules(cache):
    sync_daily(cache, ["SPY"])
    update_bar(cache, "SPY", "2024-02-14", "low = high * 1.01")
    report = diagnose(cache)
    assert findings(report) == [(
        "error", "ohlc", "stock SPY 1Day demo/demo", (D("2024-02-14"),),
        "cache-manager clear --symbol SPY --source demo --timeframe 1Day --asset-type stock --start 2024-02-14 "
        "--end 2024-02-14 --yes && cache-manager sync SPY --start 2024-02-14 --end 2024-02-14 --timeframe 1Day "
        "--source demo --feed demo",
    )]
    assert report.findings[0].message == "1 bar(s) break the bar rules: low above min(open, close)"


def test_an_unexplained_jump_and_the_corporate_action_that_explains_it(cache):
    frame = demo_frame("SPY", "2024-01-02", "2024-06-28")
    later = frame.index >= "2024-04-01"
    frame.loc[later, ["open", "high", "low", "close", "vwap"]] *= 2  # a 1:2 reverse split, unrecorded
    cache.set("SPY", frame, source="demo", feed="demo")
    assert [(f.check, f.sessions) for f in diagnose(cache).findings] == [("jump", (D("2024-04-01"),))]
    # An action dated on a weekend before the jump's session explains it too.
    cache.store_corporate_actions([{"symbol": "SPY", "action_type": "reverse_split", "ex_date": "2024-03-30",
                                    "ratio": 0.5}], source="demo")
    assert diagnose(cache).findings == []


def test_a_zero_volume_session(cache):
    frame = demo_frame("SPY", "2024-01-02", "2024-03-28")
    frame.loc["2024-02-14", "volume"] = 0
    frame.loc["2024-02-14", "trade_count"] = 0
    cache.set("SPY", frame, source="demo")  # no feed: the repair names none
    report = diagnose(cache)
    assert findings(report) == [(
        "warning", "zero_volume", "stock SPY 1Day demo/unknown", (D("2024-02-14"),),
        "cache-manager clear --symbol SPY --source demo --timeframe 1Day --asset-type stock --start 2024-02-14 "
        "--end 2024-02-14 --yes && cache-manager sync SPY --start 2024-02-14 --end 2024-02-14 --timeframe 1Day "
        "--source demo",
    )]
    assert (report.exit_code(), report.exit_code(strict=True)) == (0, 1)


def test_a_vwap_outside_low_high(cache):
    sync_daily(cache, ["SPY"])
    update_bar(cache, "SPY", "2024-03-01", "vwap = high * 1.1")
    assert [(f.severity, f.check, f.sessions) for f in diagnose(cache).findings] == [
        ("warning", "vwap_outside_range", (D("2024-03-01"),))]


def test_a_minute_bar_off_its_grid(cache):
    sync_bars(cache, DemoSource(), ["AAPL"], "2024-03-04", "2024-03-06", timeframe="1Min")
    bar = demo_frame("AAPL", "2024-03-05", "2024-03-05", "1Min").iloc[[10]]
    bar.index = bar.index + pd.Timedelta(seconds=30)  # 09:40:30 New York
    cache.set("AAPL", bar, source="demo", timeframe="1Min", feed="demo")
    report = diagnose(cache)
    assert [(f.severity, f.check, str(f.series), f.sessions) for f in report.findings] == [
        ("warning", "off_grid", "stock AAPL 1Min demo/demo", (D("2024-03-05"),))]
    assert report.findings[0].message == "1 bar(s) are not on the 1Min grid (first at 2024-03-05T09:40:30-05:00)"


def test_hourly_bars_on_the_session_grid_are_on_grid(cache):
    """The demo buckets hours from 09:30 (Alpaca on the clock hour): both grids are accepted."""
    sync_bars(cache, DemoSource(), ["AAPL"], "2024-03-04", "2024-03-06", timeframe="1Hour")
    assert diagnose(cache).findings == []


def test_minute_bars_disagreeing_with_the_daily_bar(cache):
    sync_daily(cache, ["AAPL"], "2024-03-04", "2024-03-08")
    sync_bars(cache, DemoSource(), ["AAPL"], "2024-03-04", "2024-03-08", timeframe="1Min")
    update_bar(cache, "AAPL", "2024-03-06", "high = high * 1.02")
    report = diagnose(cache)
    assert [(f.severity, f.check, str(f.series), f.sessions) for f in report.findings] == [
        ("warning", "minute_daily_mismatch", "stock AAPL 1Day demo/demo", (D("2024-03-06"),))]
    assert report.findings[0].message == ("1 session(s) where the daily high/low and the 1Min bars' high/low "
                                          "differ by more than 0.5%")


def test_an_option_chain_without_greeks(cache):
    sync_option_chains(cache, DemoSource(now=SNAPSHOT_NOW), ["AAPL"])
    with cache.atomic() as conn:
        conn.execute("UPDATE raw_options_chain SET delta = NULL WHERE contract_symbol = "
                     "(SELECT MIN(contract_symbol) FROM raw_options_chain)")
    total = cache.conn.execute("SELECT COUNT(*) FROM raw_options_chain").fetchone()[0]
    report = diagnose(cache)
    assert findings(report) == [("warning", "options_without_greeks", "option AAPL chain demo", (D("2024-03-05"),),
                                 None)]
    assert report.findings[0].message.startswith(f"1 of {total} contracts have no greeks")


def test_rows_that_reference_no_series_fail_the_integrity_check(cache):
    sync_daily(cache, ["SPY"], "2024-03-04", "2024-03-08")
    with cache.atomic() as conn:
        conn.execute("INSERT INTO bars (series_id, ts, open, high, low, close, volume, expires_at) "
                     "VALUES (999, 0, 1, 1, 1, 1, 0, 4102444800)")
    report = diagnose(cache)
    assert findings(report) == [("error", "integrity", "None", (), None)]
    assert report.findings[0].message == "1 row(s) of bars reference no series"
    assert report.exit_code() == 1


def test_a_damaged_sqlite_index_fails_integrity_check(tmp_path):
    """SQLite only: an index that no longer matches its table (its definition rewritten
    through writable_schema), which ``PRAGMA integrity_check`` reports."""
    db = tmp_path / "cache.db"
    with TradingCacheManager(db) as cache:
        cache.archive_trade({"trade_id": "t1", "symbol": "SPY", "entry_date": "2024-03-04T15:00:00Z",
                             "entry_price": 500.0, "quantity": 10})
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA writable_schema = ON")
    raw.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX idx_trade_symbol_entry ON trade_history "
                "(symbol, entry_price)' WHERE name = 'idx_trade_symbol_entry'")
    raw.commit()
    raw.close()
    with TradingCacheManager(db) as cache:
        report = diagnose(cache)
    assert [(f.check, f.series, f.sessions) for f in report.findings] == [("integrity", None, ())]
    assert report.findings[0].message.startswith("integrity_check: ")
    assert report.integrity == report.findings[0].message


def test_bad_thresholds_are_refused(cache):
    with pytest.raises(ValueError, match="jump_sigmas must be a positive number"):
        diagnose(cache, jump_sigmas=0)
    with pytest.raises(ValueError, match="minute_tolerance must be a fraction >= 0"):
        diagnose(cache, minute_tolerance=float("nan"))


# -- the command ------------------------------------------------------------------------------


def test_doctor_command_exit_codes_and_strict(cache, cache_url, capsys):
    where = cli_location(cache_url)
    sync_daily(cache, ["SPY"])
    assert main([*where, "doctor"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 error(s), 0 warning(s)"
    update_bar(cache, "SPY", "2024-03-01", "vwap = high * 1.1")  # a warning
    assert main([*where, "doctor"]) == 0
    assert main([*where, "doctor", "--strict"]) == 1
    update_bar(cache, "SPY", "2024-03-04", "low = high * 1.01")  # an error
    capsys.readouterr()
    assert main([*where, "doctor"]) == 1
    out = capsys.readouterr().out
    assert "error     ohlc                stock SPY 1Day demo/demo  2024-03-04" in out
    assert out.splitlines()[-1] == "1 error(s), 1 warning(s)"


def test_doctor_json_shape_and_the_repair_command_runs(cache, cache_url, capsys):
    where = cli_location(cache_url)
    sync_daily(cache, ["SPY"])
    update_bar(cache, "SPY", "2024-02-14", "low = high * 1.01")
    assert main(["doctor", *where, "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    # A URL is printed without its password (here the empty one of the test server's trust login).
    location = " ".join(shlex.quote(w.replace("postgres:@", "postgres@")) for w in where)
    assert payload == {
        "exit_code": 1,
        "counts": {"error": 1, "warning": 0},
        "engine": "postgresql" if cache_url.startswith("postgresql") else "sqlite",
        "integrity": payload["integrity"],
        "series_checked": 1,
        "option_snapshots_checked": 0,
        "findings": [{
            "severity": "error",
            "check": "ohlc",
            "series": {"asset_type": "stock", "symbol": "SPY", "timeframe": "1Day", "source": "demo", "feed": "demo"},
            "sessions": ["2024-02-14"],
            "message": "1 bar(s) break the bar rules: low above min(open, close)",
            "repair": f"cache-manager {location} clear --symbol SPY --source demo --timeframe 1Day --asset-type stock "
                      f"--start 2024-02-14 --end 2024-02-14 --yes && cache-manager {location} sync SPY --start "
                      "2024-02-14 --end 2024-02-14 --timeframe 1Day --source demo --feed demo",
        }],
    }
    # The repair's first half runs as printed; `cache-manager sync` is issue 13's section 4,
    # so its half is checked as text above and replayed here through the library.
    clear, _ = payload["findings"][0]["repair"].split(" && ")
    assert main(shlex.split(clear)[1:]) == 0
    sync_daily(cache, ["SPY"], "2024-02-14", "2024-02-14")
    capsys.readouterr()
    assert main(["doctor", *where, "--json", "--strict"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []


def test_doctor_on_a_missing_cache_creates_nothing(tmp_path, capsys):
    assert main(["--db-path", str(tmp_path / "nope.db"), "doctor"]) == 1
    assert "no cache at" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()


# -- the flow ---------------------------------------------------------------------------------


def test_data_quality_flow_publishes_the_findings(prefect_harness, cache_url):
    from test_flows import artifacts_of

    from flows.data_quality import data_quality

    with TradingCacheManager(cache_url) as cache:
        sync_daily(cache, ["SPY"])
        assert cache.delete("SPY", "2024-02-14", "2024-02-14", source="demo") == 1
    state = data_quality(db_path=cache_url, return_state=True)
    report = state.result()
    assert [(f.check, f.sessions) for f in report.findings] == [("missing_sessions", (D("2024-02-14"),))]
    (artifact,) = artifacts_of(state, "data-quality-report")["data-quality-report"]
    assert "- errors: **1**, warnings: **0**" in artifact.data
    assert ("| error | missing_sessions | stock SPY 1Day demo/demo | 2024-02-14 | 1 XNYS session(s) between "
            "2024-01-02 and 2024-03-28 are neither cached nor recorded as fetched | `cache-manager") in artifact.data
    assert "sync SPY --start 2024-02-14 --end 2024-02-14 --timeframe 1Day --source demo --feed demo`" in artifact.data


def test_repair_commands_name_the_cache_without_a_password():
    from cachelib.doctor import location_option

    assert location_option("postgresql://analyst:s3cret@db.internal:5433/cache?sslmode=require") == (
        "--db-url 'postgresql://analyst@db.internal:5433/cache?sslmode=require'")
    assert location_option("/data/my cache.db") == "--db-path '/data/my cache.db'"
