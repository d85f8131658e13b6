"""Adjusted reads and corporate-action syncs, measured side by side with their baselines.

Run with ``python -m bench.bench_adjustments`` (also from ``python -m bench.run_all``);
``main()`` prints a table and returns the figures.

* **Adjusted vs raw read**: one symbol x 10 years of daily bars, and one symbol x 1 year of
  1-minute bars (390 a session), with three splits (one reverse) and quarterly dividends stored
  as corporate actions. The raw and the ``adjustment="all"`` read take turns in one process
  (medians over rounds), so machine load falls on both alike. Target: adjusted <= 1.20 x raw.
* **Corporate-action sync**: 100 symbols x 10 years from the loopback Alpaca stub
  (``tests/alpaca_stub.py``) through the real ``AlpacaSource``, each symbol with quarterly
  dividends (4,000 actions) plus a few splits: HTTP requests made against the minimum the
  page size allows, ``ceil(actions / CORPORATE_ACTIONS_PAGE_SIZE)`` (times the symbol batches
  of ``CORPORATE_ACTIONS_SYMBOLS_PER_REQUEST``).
"""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from alpaca_stub import TEST_KEY, TEST_SECRET, AlpacaStub  # noqa: E402 (after the sys.path line)

from cachelib.market_hours import session_bounds, sessions_in_range, today_et  # noqa: E402
from cachelib.sources import (  # noqa: E402
    CORPORATE_ACTIONS_PAGE_SIZE,
    CORPORATE_ACTIONS_SYMBOLS_PER_REQUEST,
    AlpacaSource,
)
from cachelib.store import TradingCacheManager  # noqa: E402
from cachelib.sync import sync_corporate_actions  # noqa: E402

TARGET_RATIO = 1.20
SPLITS = (("2017-06-05", 2.0), ("2020-08-31", 4.0), ("2023-03-06", 0.5))


def _quarterly(first: date, last: date) -> list[date]:
    """A session about every 91 days from ``first``: the ex-dates of quarterly dividends."""
    sessions = sessions_in_range(first, last)
    out, i = [], 0
    while i < len(sessions):
        out.append(sessions[i])
        target = sessions[i] + timedelta(days=91)
        while i < len(sessions) and sessions[i] < target:
            i += 1
    return out


def _actions(symbol: str, first: date, last: date) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"symbol": symbol, "action_type": "cash_dividend", "ex_date": d, "amount": 0.01}
        for d in _quarterly(first + timedelta(days=30), last)
    ]
    for ex, ratio in SPLITS:
        if first < date.fromisoformat(ex) <= last:
            kind = "forward_split" if ratio > 1 else "reverse_split"
            rows.append({"symbol": symbol, "action_type": kind, "ex_date": ex, "ratio": ratio})
    return rows


def _daily_frame(first: date, last: date) -> pd.DataFrame:
    days = sessions_in_range(first, last)
    n = len(days)
    close = np.linspace(20.0, 120.0, n)
    return pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close,
                         "volume": 1e6, "vwap": close, "trade_count": 100},
                        index=pd.DatetimeIndex(days, name="date"))


def _minute_frame(first: date, last: date) -> pd.DataFrame:
    stamps = []
    for day in sessions_in_range(first, last):
        open_utc, close_utc = session_bounds(day)
        stamps.append(pd.date_range(open_utc, close_utc, freq="1min", inclusive="left"))
    index = stamps[0].append(stamps[1:]).rename("timestamp")
    close = np.linspace(50.0, 60.0, len(index))
    return pd.DataFrame({"open": close, "high": close + 0.05, "low": close - 0.05, "close": close,
                         "volume": 100.0, "vwap": close, "trade_count": 3}, index=index)


def _side_by_side(reads: Mapping[str, Callable[[], Any]], rounds: int, per_round: int) -> dict[str, float]:
    """Median ms per call of each read, the reads taking turns within every round."""
    times: dict[str, list[float]] = {name: [] for name in reads}
    for fn in reads.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in reads.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            times[name].append((time.perf_counter() - t0) / per_round * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def _reader(cache: TradingCacheManager, sym: str, first: date, last: date, tf: str,
            adjustment: str) -> Callable[[], Any]:
    """One read of the series, as of a fixed day (so every action applies, run after run)."""
    return lambda: cache.get(sym, first, last, source="alpaca", timeframe=tf, feed="sip",
                             adjustment=adjustment, as_of="2025-06-30")


def measure_reads(folder: Path) -> list[dict[str, Any]]:
    cache = TradingCacheManager(folder / "reads.db")
    out = []
    try:
        cases = (
            ("daily, 1 symbol x 10 years", "1Day", date(2015, 1, 2), date(2024, 12, 31), _daily_frame, 30, 20),
            ("1Min, 1 symbol x 1 year", "1Min", date(2024, 1, 2), date(2024, 12, 31), _minute_frame, 15, 3),
        )
        for label, tf, first, last, make, rounds, per_round in cases:
            sym = "D10Y" if tf == "1Day" else "M1Y"
            frame = make(first, last)
            cache.set(sym, frame, source="alpaca", feed="sip", timeframe=tf)
            if tf != "1Day":  # dividends need the closes of daily bars: store them too
                cache.set(sym, _daily_frame(first, last), source="alpaca", feed="sip")
            actions = _actions(sym, first, last)
            cache.store_corporate_actions(actions, source="alpaca")
            # As a sync would: the source was asked about the whole span up to as_of (today), so
            # the read's coverage check finds it covered and logs nothing.
            cache.record_action_coverage([sym], first, today_et(), source="alpaca")
            ms = _side_by_side({adj: _reader(cache, sym, first, last, tf, adj) for adj in ("raw", "all")},
                               rounds, per_round)
            ratio = ms["all"] / ms["raw"]
            out.append({"case": label, "bars": len(frame), "actions": len(actions), "raw_ms": ms["raw"],
                        "adjusted_ms": ms["all"], "ratio": ratio, "met": ratio <= TARGET_RATIO})
    finally:
        cache.close()
    return out


def measure_action_sync(folder: Path, n_symbols: int = 100, years: int = 10) -> dict[str, Any]:
    first, last = date(2015, 1, 1), date(2015 + years - 1, 12, 31)
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    with AlpacaStub() as stub:
        total = 0
        for k, sym in enumerate(symbols):
            for row in _actions(sym, first, last):  # quarterly dividends; splits for every 10th
                if row["action_type"] == "cash_dividend":
                    stub.add_cash_dividend(sym, row["ex_date"], row["amount"])
                elif k % 10 == 0:
                    new, old = (row["ratio"], 1) if row["ratio"] > 1 else (1, round(1 / row["ratio"]))
                    stub.add_split(sym, row["ex_date"], new, old)
                else:
                    continue
                total += 1
        source = AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, max_requests_per_minute=None,
                              backoff_base=0.0, timeout=30.0)
        cache = TradingCacheManager(folder / "actions.db")
        try:
            stub.reset_counts()
            t0 = time.perf_counter()
            report = sync_corporate_actions(cache, source, symbols, first, last)
            seconds = time.perf_counter() - t0
            requests = stub.count("/v1/corporate-actions")
            stub.reset_counts()
            again = sync_corporate_actions(cache, source, symbols, first, last)
            stored = cache.get_stats()["corporate_actions"]
        finally:
            cache.close()
            source.close()
    batches = math.ceil(n_symbols / CORPORATE_ACTIONS_SYMBOLS_PER_REQUEST)
    minimum = max(batches, math.ceil(total / CORPORATE_ACTIONS_PAGE_SIZE))
    return {"symbols": n_symbols, "years": years, "actions": total, "stored": stored,
            "requests": requests, "report_requests": report.requests_made, "minimum": minimum,
            "seconds": seconds, "resync_requests": again.requests_made, "met": requests <= minimum}


def main() -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-adjust-"))
    try:
        reads = measure_reads(folder)
        sync = measure_action_sync(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("\n| read | bars | actions | raw ms | adjusted (all) ms | ratio | target | met? |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in reads:
        print(f"| {r['case']} | {r['bars']:,} | {r['actions']} | {r['raw_ms']:.2f} | {r['adjusted_ms']:.2f} "
              f"| {r['ratio']:.2f} | <= {TARGET_RATIO:.2f} | {'yes' if r['met'] else 'NO'} |")
    print("\n| corporate-action sync | actions | requests | minimum (page size "
          f"{CORPORATE_ACTIONS_PAGE_SIZE:,}) | seconds | re-sync requests | met? |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print(f"| {sync['symbols']} symbols x {sync['years']} years | {sync['actions']:,} (stored {sync['stored']:,}) "
          f"| {sync['requests']} | {sync['minimum']} | {sync['seconds']:.2f} | {sync['resync_requests']} "
          f"| {'yes' if sync['met'] else 'NO'} |")
    return {"reads": reads, "action_sync": sync}


if __name__ == "__main__":
    main()
