"""The package's public names (issue 3: the seed's names; every lazy export resolves)."""

from __future__ import annotations

import subprocess
import sys

import cachelib


def test_the_seed_names_work():
    from cachelib import get_market_status, is_market_hours
    from cachelib.market_hours import get_market_status as mh_status
    from cachelib.market_hours import is_market_hours as mh_open

    assert is_market_hours is mh_open and get_market_status is mh_status


def test_every_export_resolves():
    for name in cachelib.__all__:
        assert getattr(cachelib, name) is not None, name


def test_import_is_cheap_and_loads_no_prefect():
    code = "import sys, cachelib; from cachelib import TradingCacheManager; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
