"""freezegun in a fresh process (issue 9, section 5).

``import cachelib`` and then, as the process's first calendar call, ``with freeze_time(...):
cachelib.get_market_status()`` used to segfault: pandas' Cython extensions were first imported
while freezegun had replaced ``datetime.datetime`` ("datetime.datetime size changed, may
indicate binary incompatibility"). The rest of the suite imports pandas early, which hides the
crash, so every case here runs in its own fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each public calendar function, called with the clock frozen at Friday 2026-11-27 10:00 ET
# (15:00Z), the session after Thanksgiving: an early close at 13:00 ET. Values are JSON-able.
_SCRIPT = r"""
import json, sys
import cachelib
from freezegun import freeze_time

calls = {
    "get_market_status": lambda: list(cachelib.get_market_status()),
    "is_market_hours": lambda: cachelib.is_market_hours(),
    "get_market_status_detailed": lambda: {
        k: str(v) for k, v in cachelib.get_market_status_detailed().items()
        if k in ("session", "message", "date", "close", "next_open")
    },
    "is_session": lambda: cachelib.is_session("2026-11-26"),
    "sessions_in_range": lambda: [d.isoformat() for d in cachelib.sessions_in_range("2026-11-23", "2026-11-29")],
    "session_bounds": lambda: [t.isoformat() for t in cachelib.session_bounds("2025-11-28")],
    "previous_session": lambda: cachelib.previous_session("2026-11-27").isoformat(),
    "next_session": lambda: cachelib.next_session("2026-11-25").isoformat(),
    "session_date": lambda: cachelib.session_date("2026-11-28T03:00:00Z").isoformat(),
    "today_et": lambda: cachelib.today_et().isoformat(),
}
first = sys.argv[1]
out = {}
with freeze_time("2026-11-27 15:00:00") as frozen:
    out[first] = calls[first]()          # the process's first calendar call, under the freeze
    for name, call in calls.items():
        out.setdefault(name, call())
    statuses = {}
    for instant in ("2026-11-20 20:00:00", "2026-11-28 15:00:00", "2025-11-28 17:59:00",
                    "2025-11-28 18:00:00"):
        frozen.move_to(instant)
        statuses[instant] = list(cachelib.get_market_status())
    out["statuses"] = statuses
print(json.dumps(out))
"""

EXPECTED = {
    "get_market_status": [True, "Market open (Early close at 01:00 PM ET)"],
    "is_market_hours": True,
    "get_market_status_detailed": {
        "session": "regular",
        "message": "Market open (Early close at 01:00 PM ET)",
        "date": "2026-11-27",
        "close": "2026-11-27 18:00:00+00:00",
        "next_open": "2026-11-30 14:30:00+00:00",
    },
    "is_session": False,  # Thanksgiving 2026
    "sessions_in_range": ["2026-11-23", "2026-11-24", "2026-11-25", "2026-11-27"],
    "session_bounds": ["2025-11-28T14:30:00+00:00", "2025-11-28T18:00:00+00:00"],
    "previous_session": "2026-11-25",
    "next_session": "2026-11-27",
    "session_date": "2026-11-27",
    "today_et": "2026-11-27",
    "statuses": {
        "2026-11-20 20:00:00": [True, "Market open (Regular hours)"],  # Friday 15:00 ET
        "2026-11-28 15:00:00": [False, "Market closed (Weekend)"],  # Saturday
        "2025-11-28 17:59:00": [True, "Market open (Early close at 01:00 PM ET)"],  # 12:59 ET
        "2025-11-28 18:00:00": [False, "Market closed (After-hours)"],  # 13:00 ET early close
    },
}


def _run_fresh(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


@pytest.mark.parametrize("first", [name for name in EXPECTED if name != "statuses"])
def test_first_calendar_call_under_freezegun_in_a_fresh_process(first: str) -> None:
    proc = _run_fresh(_SCRIPT, first)
    # Before the fix: returncode -11 (SIGSEGV) after "datetime.datetime size changed" warnings.
    assert proc.returncode == 0, f"returncode {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "size changed" not in proc.stderr
    assert json.loads(proc.stdout) == EXPECTED


def test_every_public_name_first_used_under_freezegun(cache_url: str) -> None:
    """Every lazy export of ``cachelib``, resolved for the first time inside a freeze, and the
    store used under it, on either engine (the PostgreSQL driver and its pool are first
    imported under the freeze too): no binary-incompatibility warning, no crash."""
    code = r"""
import sys, warnings
warnings.simplefilter("error", RuntimeWarning)   # "size changed" is a RuntimeWarning
import cachelib
from freezegun import freeze_time
with freeze_time("2026-11-27 15:00:00"):
    for name in cachelib.__all__:
        getattr(cachelib, name)
    cache = cachelib.TradingCacheManager(sys.argv[1])
    report = cachelib.sync_bars(cache, cachelib.DemoSource(), ["SPY"], "2026-11-23", "2026-11-26")
    print(report.rows_written, len(cache.get("SPY", "2026-11-23", "2026-11-26")))
    cache.close()
"""
    proc = _run_fresh(code, cache_url)
    assert proc.returncode == 0, f"returncode {proc.returncode}\n{proc.stderr[-2000:]}"
    assert proc.stdout.split() == ["3", "3"]  # 2026-11-23, -24, -25 (Thanksgiving closed)
