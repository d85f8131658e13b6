"""Static checks that run in ``make test``: mypy over cachelib/, tasks/ and flows/, and ruff.

Results cross the layers as dataclasses and TypedDicts (``SyncReport``, ``ReplaySummary``,
``CacheSnapshot``...), so a renamed or misspelt key fails here rather than in the 17:00 run.
The configuration lives in pyproject.toml (``[tool.mypy]``, ``[tool.ruff]``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_mypy_passes_on_cachelib_tasks_and_flows():
    proc = run_tool("mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found")


def test_mypy_catches_a_mistyped_key_and_a_misspelt_result_field(tmp_path):
    """The point of typed results: both mistakes below fail the check, not a scheduled run."""
    module = tmp_path / "uses_results.py"
    module.write_text(
        "from cachelib.maintenance import CacheSnapshot\n"
        "from cachelib.sync import SyncReport\n"
        "\n"
        "\n"
        "def written(report: SyncReport) -> int:\n"
        "    return report.per_symbol['AAPL']['rows_writen']\n"
        "\n"
        "\n"
        "def bars(snapshot: CacheSnapshot) -> int:\n"
        "    return snapshot.cache['total_entires'] + snapshot.trades.total_trades\n"
    )
    proc = run_tool("mypy", "--config-file", "pyproject.toml", str(module))
    assert proc.returncode == 1
    lines = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if ": error: " in line]
    assert lines == [
        'error: TypedDict "SymbolSync" has no key "rows_writen"  [typeddict-item]',
        'error: TypedDict "StoreStats" has no key "total_entires"  [typeddict-item]',
        'error: "TradeStats" has no attribute "total_trades"  [attr-defined]',
    ]


def test_ruff_is_clean_over_the_whole_tree():
    proc = run_tool("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr
