"""What Prefect costs: ``daily_pipeline`` vs the same work as plain cachelib calls.

Run with ``python -m bench.bench_pipeline`` (``--help`` for options). In one process, on the
offline demo source, for 20 symbols and the latest finished session, each on a fresh database:

* the first ``daily_pipeline`` run, which includes starting Prefect's temporary local server;
* ``--repeat`` more flow runs with the server up (median);
* ``--repeat`` runs of the same work as plain cachelib functions (median): cache stats, a year
  of daily bars, the session's minute bars, the option chains, the replay of the session, stats.

Prefect's overhead is the warm flow's wall time minus the plain wall time; the target is at most
25 % of the flow's wall time. To tell fixed from per-task costs, an empty flow run is timed too.
Before each timed flow run the bench waits ``--settle`` seconds: the temporary server persists
the previous run's events in the background, and a flow run created meanwhile can get an HTTP 503
from its busy SQLite database, which the client retries after ~2 s (seen on these machines).
``PREFECT_HOME`` is a temporary directory unless already set, so the run leaves no state behind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

TARGET_OVERHEAD = 0.25


def _prepare_environment(home: str) -> None:
    os.environ.setdefault("PREFECT_HOME", home)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY"):
        os.environ.pop(var, None)  # always the demo source: a benchmark must not hit the network


def universe(n: int) -> list[str]:
    from cachelib.demo import DEFAULT_SYMBOLS as DEMO_SYMBOLS
    from flows._common import DEFAULT_SYMBOLS

    names = list(dict.fromkeys([*DEFAULT_SYMBOLS, *DEMO_SYMBOLS]))
    i = 0
    while len(names) < n:  # any valid ticker works on the demo source
        names.append(f"ZZ{i:02d}")
        i += 1
    return names[:n]


def plain_pipeline(db: Path, symbols: list[str], day: date) -> dict[str, Any]:
    """The pipeline's work without Prefect: the same cachelib calls, one per stage."""
    from cachelib.demo import DemoSource
    from cachelib.replay import replay_days
    from cachelib.store import TradingCacheManager
    from cachelib.sync import sync_bars, sync_option_chains
    from flows.daily_pipeline import DAILY_LOOKBACK, STRATEGY

    source = DemoSource()
    with TradingCacheManager(db, timeout=60.0) as cache:
        cache.get_stats(), cache.get_options_stats(), cache.get_trade_stats(strategy=STRATEGY)
        daily = sync_bars(cache, source, symbols, day - DAILY_LOOKBACK, day, timeframe="1Day")
        minute = sync_bars(cache, source, symbols, day, day, timeframe="1Min")
        chains = sync_option_chains(cache, source, symbols)
        replay = replay_days(cache, symbols, day, day, strategy=STRATEGY)
        cache.get_stats(), cache.get_options_stats(), cache.get_trade_stats(strategy=STRATEGY)
    return {"daily": daily.rows_written, "minute": minute.rows_written, "chains": chains.rows_written,
            "trades": replay.trades}


def flow_pipeline(db: Path, symbols: list[str], day: date) -> dict[str, Any]:
    from flows.daily_pipeline import daily_pipeline

    run = daily_pipeline(day=day, symbols=symbols, source="demo", db_path=str(db))
    assert run.daily_bars and run.daily_bars.report and run.minute_bars and run.minute_bars.report
    assert run.option_chains and run.option_chains.report and run.replay
    return {"daily": run.daily_bars.report.rows_written, "minute": run.minute_bars.report.rows_written,
            "chains": run.option_chains.report.rows_written, "trades": run.replay.trades,
            # cache_stats x3, bar chunks, one snapshot and one replay per symbol
            "task_runs": 3 + run.daily_bars.chunks + run.minute_bars.chunks + 2 * len(symbols)}


def empty_flow_run() -> dict[str, Any]:
    """One flow run that does nothing: Prefect's fixed cost per flow run."""
    from prefect import flow

    @flow(name="bench_empty_flow")
    def empty() -> None:
        return None

    empty()
    return {}


def _timed(fn, *args) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20, help="universe size (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="warm flow runs and plain runs (default 3)")
    parser.add_argument("--day", type=date.fromisoformat, default=None,
                        help="session (default: the latest finished one)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait before each timed flow run (default 3)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        _prepare_environment(str(Path(tmp) / "prefect-home"))
        from flows import _common

        day = args.day or _common.latest_finished_session(_common.now())
        symbols = universe(args.symbols)
        dbs = (Path(tmp) / f"cache-{i}.db" for i in range(1000))
        print(f"daily_pipeline: {len(symbols)} symbols, demo source, session {day}; fresh database per run",
              flush=True)

        cold, cold_out = _timed(flow_pipeline, next(dbs), symbols, day)
        warm: list[float] = []
        plain: list[float] = []
        empty: list[float] = []
        for _ in range(args.repeat):
            seconds, plain_out = _timed(plain_pipeline, next(dbs), symbols, day)
            plain.append(seconds)
            time.sleep(args.settle)
            seconds, flow_out = _timed(flow_pipeline, next(dbs), symbols, day)
            warm.append(seconds)
            if {k: flow_out[k] for k in plain_out} != plain_out:
                print(f"MISMATCH: flow {flow_out} vs plain {plain_out}", file=sys.stderr)
                return 1
            time.sleep(args.settle)
            empty.append(_timed(empty_flow_run)[0])

    flow_s, plain_s, empty_s = statistics.median(warm), statistics.median(plain), statistics.median(empty)
    overhead = flow_s - plain_s
    ratio = overhead / flow_s
    n_tasks = cold_out["task_runs"]

    def runs(values: list[float]) -> str:
        return "   runs: " + ", ".join(f"{v:.2f}" for v in values)

    rows = [
        ("work per run", f"{cold_out['daily']:,} daily bars, {cold_out['minute']:,} minute bars, "
                         f"{cold_out['chains']:,} option rows, {cold_out['trades']} trades"),
        ("plain cachelib, same work (median)", f"{plain_s:6.2f} s" + runs(plain)),
        ("daily_pipeline, server up (median)", f"{flow_s:6.2f} s" + runs(warm)),
        ("Prefect overhead", f"{overhead:6.2f} s = {100 * ratio:.0f} % of the flow's wall time "
                             f"(target <= {100 * TARGET_OVERHEAD:.0f} %: {'met' if ratio <= TARGET_OVERHEAD else 'NOT met'})"),
        ("  fixed: an empty flow run (median)", f"{empty_s:6.2f} s" + runs(empty)),
        (f"  the rest: {n_tasks} task runs, artifacts, logs", f"{overhead - empty_s:6.2f} s "
                                                             f"(~{1000 * (overhead - empty_s) / n_tasks:.0f} ms per task run)"),
        ("first run incl. temporary server", f"{cold:6.2f} s   (server start ~ {cold - flow_s:.1f} s)"),
    ]
    width = max(len(r[0]) for r in rows)
    print("-" * (width + 60))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print("-" * (width + 60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
