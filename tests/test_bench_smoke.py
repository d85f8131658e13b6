"""The store benchmark runs end to end at tiny sizes and prints every figure of issue 10's table.

Timings are not checked (they depend on the machine); the names and the table's shape are.
"""

from __future__ import annotations

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
