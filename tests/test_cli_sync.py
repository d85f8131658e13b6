"""``cache-manager sync`` and ``replay`` (issue 13, section 4): one-off work without Prefect, on
both engines; a failed sync resumed on the loopback Alpaca stand-in; usage errors exit 2."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from alpaca_stub import TEST_KEY, TEST_SECRET, AlpacaStub, make_minute_bars
from cli_support import at
from pg_fixtures import engine_of

from cachelib.cli import main
from cachelib.store import TradingCacheManager

JANUARY = ("--start", "2024-01-01", "--end", "2024-01-31")
# The first 28 XNYS sessions of 2024, by hand (Jan 1 New Year, Jan 15 MLK Day).
SESSIONS = [date(2024, 1, d) for d in (2, 3, 4, 5, 8, 9, 10, 11, 12, 16, 17, 18, 19, 22, 23, 24, 25, 26, 29,
                                      30, 31)] + [date(2024, 2, d) for d in (1, 2, 5, 6, 7, 8, 9)]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def new_cache(cache_url: str, tmp_path: Path) -> str:
    """Where a cache that does not exist yet goes: a new file, or the test's fresh schema."""
    return str(tmp_path / "new" / "cache.db") if engine_of(cache_url) == "sqlite" else cache_url


def test_sync_from_the_demo_source_creates_fills_and_then_skips(capsys, cache_url, tmp_path):
    where = new_cache(cache_url, tmp_path)
    if engine_of(cache_url) == "sqlite":
        (tmp_path / "new").mkdir()
    code, out, err = run(capsys, *at(where), "sync", "AAPL,msft", *JANUARY, "--timeframe", "1Min",
                         "--source", "demo")
    assert (code, err) == (0, "")
    # 2 symbols x 21 sessions x 390 minute bars; the demo answers one call with one "request".
    assert out == (
        "Source         demo (feed demo)\n"
        "Bars           1Min of AAPL, MSFT, 2024-01-01 .. 2024-01-31\n"
        "Chunks         1 of 1 done (1 fetched, 0 already cached)\n"
        "Requests       1 (plan for an empty cache: 2 pages of 10,000 rows)\n"
        "Rows written   16,380\n"
        "Rows rejected  0\n"
    )
    code, out, err = run(capsys, *at(where), "sync", "AAPL", "MSFT", *JANUARY, "--timeframe", "1Min",
                         "--source", "demo", "--json")
    again = json.loads(out)
    assert (code, err) == (0, "")
    assert (again["chunks_skipped"], again["chunks_fetched"], again["requests"], again["rows_written"]) == (1, 0, 0, 0)
    with TradingCacheManager(where, create=False) as cache:
        assert len(cache.get("MSFT", "2024-01-02", "2024-01-02", timeframe="1Min", source="demo")) == 390

    code, out, err = run(capsys, *at(where), "replay", "AAPL", "--start", "2024-01-02", "--end", "2024-01-05",
                         "--json")
    replay = json.loads(out)
    assert (code, err) == (0, "")
    assert (replay["strategy"], replay["sessions"], replay["sessions_replayed"], replay["bars"]) == (
        "sma_crossover", 4, 4, 1560)
    assert replay["missing"] == [] and replay["sync"] is None
    with TradingCacheManager(where, create=False) as cache:
        assert cache.get_trade_stats(symbol="AAPL", strategy="sma_crossover")["total_trades"] == replay["trades"]
    code, out, _ = run(capsys, *at(where), "replay", "AAPL", "--start", "2024-01-02", "--end", "2024-01-05")
    assert code == 0
    assert out.splitlines()[:4] == [
        "Strategy   sma_crossover",
        "Range      2024-01-02 .. 2024-01-05 (1Min bars)",
        "Sessions   4 replayed of 4 (symbol, session) pairs",
        "Bars       1,560",
    ]


def test_replay_without_source_names_the_missing_sessions_and_the_sync_that_fills_them(capsys, cache_url):
    TradingCacheManager(cache_url).close()  # an empty cache
    location = cache_url
    code, out, err = run(capsys, *at(location), "replay", "SPY", "--start", "2024-01-02", "--end", "2024-01-03")
    assert code == 0
    assert err == ("2 session(s) have no cached 1Min bars and were not replayed (SPY; 2024-01-02 .. 2024-01-03): "
                   "fetch them with cache-manager sync SPY --start 2024-01-02 --end 2024-01-03 --timeframe 1Min, "
                   "or pass --source\n")
    assert "Sessions   0 replayed of 2 (symbol, session) pairs" in out
    code, out, err = run(capsys, *at(location), "replay", "SPY", "--start", "2024-01-02", "--end", "2024-01-03",
                         "--source", "demo", "--json")
    result = json.loads(out)
    assert (code, err) == (0, "")
    assert (result["sessions_replayed"], result["bars"], result["sync"]["rows_written"]) == (2, 780, 780)


@pytest.fixture
def minute_stub(monkeypatch):
    """The Alpaca stand-in with 28 sessions of minute bars for AAPL and MSFT, and the
    environment that makes ``--source alpaca`` talk to it without retries or rate limit."""
    with AlpacaStub() as stub:
        for i, sym in enumerate(["AAPL", "MSFT"]):
            for day in SESSIONS:
                stub.add_bars(sym, make_minute_bars(day, price=50.0 + 10 * i), timeframe="1Min")
        monkeypatch.setenv("APCA_API_KEY_ID", TEST_KEY)
        monkeypatch.setenv("APCA_API_SECRET_KEY", TEST_SECRET)
        monkeypatch.setenv("APCA_API_DATA_URL", stub.url)
        monkeypatch.setenv("CACHELIB_ALPACA_MAX_RETRIES", "0")
        monkeypatch.setenv("CACHELIB_ALPACA_RATE_LIMIT", "0")
        yield stub


def test_a_failed_sync_is_resumed_by_running_it_again(capsys, cache_url, tmp_path, minute_stub):
    from alpaca_stub import Fault

    where = new_cache(cache_url, tmp_path)
    if engine_of(cache_url) == "sqlite":
        (tmp_path / "new").mkdir()
    argv = (*at(where), "sync", "AAPL,MSFT", "--start", "2024-01-02", "--end", "2024-02-09",
            "--timeframe", "1Min", "--source", "alpaca", "--pages-per-chunk", "1")
    # 28 sessions x 390 bars = 10,920 rows a symbol > one page: two ranges of 14 sessions (5,460
    # rows, one request) per symbol = 4 chunks. The third request fails.
    minute_stub.add_faults("/v2/stocks/bars", None, None, Fault(500))
    code, out, err = run(capsys, *argv, "--json")
    first = json.loads(out)
    assert code == 1
    assert err.startswith("error: chunk 3 of 4 (AAPL 2024-01-23..2024-02-09) failed: ") and err.count("\n") == 1
    assert err.rstrip().endswith("run the same backfill again to fetch only what is missing")
    assert (first["chunks_fetched"], first["chunks_failed"], first["requests"], first["rows_written"]) == (
        2, 1, 3, 10_920)
    assert minute_stub.count("/v2/stocks/bars") == 3

    minute_stub.reset_counts()
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert "Chunks         4 of 4 done (2 fetched, 2 already cached)\n" in out
    assert "Requests       2 (plan for an empty cache: 4 pages of 10,000 rows)\n" in out
    assert "Rows written   10,920\n" in out
    assert [(r.params["symbols"], r.params["start"][:10]) for r in minute_stub.requests] == [
        ("AAPL", "2024-01-23"), ("MSFT", "2024-01-23")]

    minute_stub.reset_counts()
    code, out, _ = run(capsys, *argv, "--json")
    assert (code, json.loads(out)["requests"], minute_stub.count()) == (0, 0, 0)


@pytest.mark.parametrize(("argv", "last_line"), [
    (["sync", "SPY", "--start", "2024-02-01", "--end", "2024-01-01"],
     "cache-manager sync: error: --start 2024-02-01 is after --end 2024-01-01"),
    (["sync", "SPY", *JANUARY, "--timeframe", "2Day"],
     "cache-manager sync: error: argument --timeframe: unknown timeframe '2Day': the sources serve 1Min, 5Min, "
     "15Min, 30Min, 1Hour, 1Day (aliases T, H, D)"),
    (["sync", "AA$PL", *JANUARY],
     "cache-manager sync: error: argument SYMBOLS: symbol 'AA$PL' has characters outside ASCII A-Z 0-9 . - / _"),
    (["sync", "SPY", *JANUARY, "--source", "demo", "--feed", "sip"],
     "cache-manager sync: error: --feed sip needs --source alpaca (the demo source's feed is 'demo')"),
    (["replay", "SPY", "--start", "2024-01-05", "--end", "2024-01-02"],
     "cache-manager replay: error: --start 2024-01-05 is after --end 2024-01-02"),
    (["replay", "SPY", *JANUARY, "--strategy", "nope"],
     "cache-manager replay: error: argument --strategy: unknown strategy 'nope': registered: sma_crossover"),
], ids=["reversed", "timeframe", "symbol", "feed", "replay-reversed", "strategy"])
def test_usage_errors_exit_2_and_create_nothing(capsys, tmp_path, argv, last_line):
    target = tmp_path / "cache.db"
    code, out, err = run(capsys, "--db-path", target, *argv)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == last_line and err.startswith("usage: ")
    assert list(tmp_path.iterdir()) == []
