"""The benchmarks run end to end at tiny sizes and print every figure of their tables (issues 10 and 12).

Timings are not checked (they depend on the machine); the names and the table's shape are.
"""

from __future__ import annotations

import os

import pytest

from bench import bench_store

TINY = ["--quick", "--symbols", "3", "--first-year", "2024", "--last-year", "2024", "--queries", "20",
        "--minute-sessions", "5", "--replay-sessions", "2", "--scale-symbols", "2", "--write-rounds", "1"]

FIGURES = [
    "read 1 symbol x 1 year of 1-minute bars into a DataFrame (1,770 bars)",
    "read one session of 1-minute bars, p50",
    "bytes on disk per 1-minute bar",
    "get() 1 symbol x 1 month of daily bars, p50",
    "upsert 1 day x 3 symbols (daily) via set_many",
    "15-minute intraday ingest: 15 new bars x 3 symbols into existing chunks",
    "replay_days from the store (read + flow + archive)",
    "scale: 2 symbols x 1 year of 1-minute bars: write",
    "scale: 2 symbols x 1 year of 1-minute bars: file size",
    "scale: 2 symbols x 1 year of 1-minute bars: full read",
    "scale: 2 symbols x 1 year of 1-minute bars: peak memory (RSS)",
    # the extras, after the figures
    "bulk write of daily bars, one call per symbol",
    "get() 1 symbol x 1 month of daily bars, p95",
    "get() 1 symbol x 1 month of daily bars, p50, one query per turn",
    "cleanup_expired, 10 % of daily bars expired",
    "bytes on disk per daily bar",
]


@pytest.mark.timeout(60)
def test_store_bench_prints_every_figure(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    result = bench_store.main([*TINY, "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| figure | cachelib | baseline | anchors | target | met? |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    assert [row.split(" | ")[0][2:] for row in rows] == FIGURES
    assert list(result["figures"]) == FIGURES
    # The last five sessions of 2024: 2024-12-24 closes at 13:00 (210 minutes), then four full
    # sessions of 390 minutes: 1,770 bars.
    assert "SPY 2024, 1,770 one-minute bars" in out
    # Everything the bench wrote lives under --workdir and is removed at the end.
    assert list(tmp_path.iterdir()) == []


# -- bench_engines: SQLite and PostgreSQL side by side (issue 12) ----------------------------------

ENGINE_FIGURES = [
    "get() 1 symbol x 1 month of daily bars, p50",
    "bulk write 3 symbols x 1 year of daily bars (one set_many)",
    "set_many 1 day x 3 symbols into existing series",
    "bulk write 1 symbol x 1 year of 1-minute bars (1,770 bars, one set)",
    "read 1 symbol x 1 year of 1-minute bars into a DataFrame (1,770 bars)",
    "no-op re-sync (sync_bars, demo source, all cached), p50",
    "aggregate write throughput, 1 writer process",
    "aggregate write throughput, 2 writer processes",
    "errors seen by any writer (all writer runs)",
]


@pytest.mark.timeout(120)
def test_engines_bench_prints_both_engines(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    from bench import bench_engines

    result = bench_engines.main(["--quick", "--symbols", "3", "--queries", "20", "--writers", "1,2",
                                 "--writer-transactions", "6", "--writer-bars", "4", "--sync-symbols", "2",
                                 "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| figure | SQLite | PostgreSQL | PG / SQLite | target | met? |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    assert [row.split(" | ")[0][2:] for row in rows] == ENGINE_FIGURES
    assert list(result["figures"]) == ENGINE_FIGURES
    assert "Unix socket" in out and f"this machine has {os.cpu_count()} cores" in out
    # The writers' plan, worked by hand (2024: 252 sessions, 63 windows of 4 bars): 6 transactions
    # of 4 bars of one private series (X0-X4, X0 in windows 0,0,0,0,0,1) and of one shared
    # series (Q((t+w) % 4), same windows).
    # Per writer 6 private (series, window) pairs; shared pairs: writer 0 writes Q00..Q03 in
    # window 0 and Q01 in window 1; writer 1 adds Q02 in window 1: 5 with one writer, 6 with two.
    writers = result["writers"]  # {engine: {writer count: [one outcome per round]}}
    for engine in ("sqlite", "postgresql"):
        [one], [two] = writers[engine][1], writers[engine][2]
        assert (one["expected"], one["stored"], one["rows"], one["errors"]) == ((6 + 5) * 4, 44, 6 * 8, 0)
        assert (two["expected"], two["stored"], two["rows"], two["errors"]) == ((12 + 6) * 4, 72, 12 * 8, 0)
    errors = result["figures"]["errors seen by any writer (all writer runs)"]
    assert (errors["sqlite"], errors["postgresql"], errors["met"]) == (0, 0, True)
    # Everything the bench wrote lives under --workdir (or the server's own folder) and is removed.
    assert list(tmp_path.iterdir()) == []


# -- bench_replay: backtrader measured in the same run (issue 13) -----------------------------------


@pytest.mark.timeout(120)
def test_replay_bench_measures_backtrader_on_the_same_trades(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import bench_replay

    assert bench_replay.main(["--sessions", "3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    labels = ["tick flow, trusted ticks (replay path)", "tick flow, validated ticks", "plain-Python reference loop",
              "replay_days from SQLite (read+flow+archive)", "backtrader 1.9, same bars and rules (measured)"]
    rows = [line for line in out.splitlines() if line.startswith(tuple(labels))]
    assert [row[:46].rstrip() for row in rows] == labels
    # AAPL's first three sessions of 2024 on DemoSource(seed=7): 3 x 390 bars.
    assert "3 sessions, 1,170 one-minute bars" in out
    assert "trades identical to backtrader's (entry/exit times and prices): YES" in out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pipeline_bench_prints_sizes_side_by_side(tmp_path) -> None:
    # In its own process: the bench starts (and stops) Prefect's SubprocessASGIServer, a
    # per-process singleton that the session's test harness uses too.
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_pipeline", "--sizes", "2,3", "--repeat", "1", "--settle", "0",
         "--noop-tasks", "4"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env, capture_output=True,
        text=True, timeout=280,
    )
    out = proc.stdout
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: the overhead target missed at these sizes
    assert f"{'2 symbols':>16}{'3 symbols':>16}" in out
    for label in ("plain cachelib, wall (median)", "daily_pipeline, wall (median)", "Prefect overhead",
                  "overhead, % of the flow's wall", "task runs", "peak heap of one run, flow",
                  "peak RSS, flow process", "fixed per flow run, heartbeat off", "fixed per flow run, heartbeat on",
                  "per task run (4 no-op tasks, thread pool)"):
        assert label in out
    # 1 daily-bar chunk (a year), corporate actions, minute bars, then one snapshot task run and one
    # replay task run for all symbols (one task-runner thread by default: one chunk each).
    task_runs = next(line for line in out.splitlines() if line.startswith("task runs")).split()[2:]
    assert task_runs == ["5", "5"]
