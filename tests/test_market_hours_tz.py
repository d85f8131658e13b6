"""Run tests/test_market_hours.py again under other machine time zones (``TZ``).

Answers must not depend on the machine's time zone. Each zone gets its own pytest
process (``TZ`` is read at interpreter start); the processes run in parallel. The
child sets ``CACHELIB_MARKET_HOURS_TZ_CHILD`` so this file never recurses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GUARD = "CACHELIB_MARKET_HOURS_TZ_CHILD"
ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(__file__).resolve().with_name("test_market_hours.py")
ZONES = ("UTC", "America/Los_Angeles")


@pytest.mark.skipif(bool(os.environ.get(GUARD)), reason="already inside a TZ child run")
def test_market_hours_under_machine_time_zones() -> None:
    procs = {}
    for tz in ZONES:
        env = dict(os.environ)
        env.update({"TZ": tz, GUARD: "1"})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        procs[tz] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(TARGET)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    failures = []
    for tz, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            failures.append(f"TZ={tz}: timed out\n{out[-4000:]}")
            continue
        if proc.returncode != 0:
            failures.append(f"TZ={tz}: pytest exited {proc.returncode}\n{out[-4000:]}")
        elif "passed" not in out:
            failures.append(f"TZ={tz}: no tests ran\n{out[-4000:]}")
    assert not failures, "\n\n".join(failures)
