"""The main job (`make run` = `python -m flows.main`): one daily_pipeline run and its summary."""

from __future__ import annotations

import re

from flows.main import main


def test_main_job_runs_the_pipeline_and_says_what_it_did(prefect_harness, tmp_path, capsys):
    db = tmp_path / "run.db"
    # 2025-11-28 is the day after Thanksgiving: an early close, 210 one-minute bars a symbol.
    assert main(["--day", "2025-11-28", "--symbols", "spy,aapl", "--db-path", str(db)]) == 0
    out = capsys.readouterr().out
    assert "Daily pipeline for 2025-11-28 on the demo source (2 symbols: SPY, AAPL)" in out
    assert re.search(r"1-minute bars:\s+420 written", out)
    assert re.search(r"option chains:\s+[\d,]+ contracts \(2 snapshots\)", out)
    assert re.search(r"replay:\s+\d+ trade\(s\) in 2 session\(s\)", out)
    assert f"database:      {db}" in out
    assert db.exists()


def test_main_job_on_a_holiday_does_nothing(prefect_harness, tmp_path, capsys):
    assert main(["--day", "2025-12-25", "--db-path", str(tmp_path / "h.db")]) == 0
    out = capsys.readouterr().out
    assert "Market closed (Holiday)" in out and "nothing to do" in out
