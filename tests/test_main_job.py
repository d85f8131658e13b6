"""The main job (`make run` = `python -m flows.main`): one daily_pipeline run and its summary.

``make run`` passes no ``--db-path``: it stays on SQLite (``$TRADING_CACHE_DB``, else
``.cache/trading_cache.db``), with no server to start. ``--db-path`` takes a file or a
``postgresql://`` URL, and the summary then names the cache as it may be shown (no password).
"""

from __future__ import annotations

import re
from pathlib import Path

from flows.main import main


def test_main_job_runs_the_pipeline_and_says_what_it_did(prefect_harness, cache_url, capsys):
    from cachelib.store import TradingCacheManager

    # 2025-11-28 is the day after Thanksgiving: an early close, 210 one-minute bars a symbol.
    assert main(["--day", "2025-11-28", "--symbols", "spy,aapl", "--db-path", cache_url]) == 0
    out = capsys.readouterr().out
    assert "Daily pipeline for 2025-11-28 on the demo source (2 symbols: SPY, AAPL)" in out
    assert re.search(r"1-minute bars:\s+420 written", out)
    assert re.search(r"option chains:\s+[\d,]+ contracts \(2 snapshots\)", out)
    assert re.search(r"replay:\s+\d+ trade\(s\) in 2 session\(s\)", out)
    # A URL's password (the test server's is empty) is shown as ***, whatever it is.
    assert f"database:      {cache_url.replace('postgres:@', 'postgres:***@')}" in out
    with TradingCacheManager(cache_url, create=False) as cache:  # CacheNotFoundError if it was not created
        assert len(cache.get("SPY", "2025-11-28", "2025-11-28", timeframe="1Min")) == 210


def test_make_run_stays_on_sqlite_without_a_db_path(prefect_harness, tmp_path, monkeypatch, capsys):
    """What ``make run`` does: no ``--db-path``, no ``TRADING_CACHE_URL`` -> the SQLite file of
    ``TRADING_CACHE_DB``."""
    db = tmp_path / "make-run.db"
    monkeypatch.delenv("TRADING_CACHE_URL", raising=False)
    monkeypatch.setenv("TRADING_CACHE_DB", str(db))
    assert main(["--day", "2025-11-28", "--symbols", "spy"]) == 0
    assert f"database:      {db}" in capsys.readouterr().out
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"


def test_main_job_on_a_holiday_does_nothing(prefect_harness, tmp_path, capsys):
    assert main(["--day", "2025-12-25", "--db-path", str(tmp_path / "h.db")]) == 0
    out = capsys.readouterr().out
    assert "Market closed (Holiday)" in out and "nothing to do" in out
    assert not Path(tmp_path / "h.db").exists()
