"""What Prefect costs: ``daily_pipeline`` vs the same work as plain cachelib calls, at 20, 100
and 500 symbols side by side.

Run with ``python -m bench.bench_pipeline`` (``--help`` for options). On the offline demo source,
for the latest finished session, each run on a fresh database:

* one Prefect server is started for the whole bench (Prefect's own ``SubprocessASGIServer``,
  what a flow run starts when no server is configured), under a temporary ``PREFECT_HOME``;
* for each universe size, one subprocess times ``--repeat`` runs of the plain cachelib calls
  (cache stats, a year of daily bars and the corporate actions, the session's minute bars, the
  option chains, the replay, the same pictures and stats the flow publishes) and another times
  ``--repeat`` ``daily_pipeline`` runs (the medians are compared; a first, untimed run warms
  each process up). Each reports the peak of the Python heap during one more, untimed run
  (tracemalloc) and the process's peak RSS (``ru_maxrss``, imports included), which is why
  they are subprocesses: a process's peak only grows;
* a third subprocess splits Prefect's cost: an empty flow run with and without the heartbeat
  (fixed cost per flow run) and a flow of ``--noop-tasks`` no-op task runs (cost per task run).

Flow runs are timed as ``make run`` starts them: without the heartbeat (``flows._common.
without_heartbeat``; scheduled deployments keep it, see the README). Prefect's overhead is the
flow's wall time minus the plain wall time; the target is at most 25 % of the flow's wall time
at 100 symbols. Before each timed flow run the bench waits ``--settle`` seconds: the server
persists the previous run's events in the background, and a flow run created meanwhile can get
an HTTP 503 from its busy SQLite database, which the client retries after ~2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import date
from pathlib import Path
from typing import Any

TARGET_OVERHEAD = 0.25
TARGET_SYMBOLS = 100
SIZES = (20, 100, 500)
ROOT = Path(__file__).resolve().parents[1]


def _prepare_environment(home: str) -> None:
    os.environ.setdefault("PREFECT_HOME", home)
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
        names.append(f"ZZ{i:03d}")
        i += 1
    return names[:n]


# -- the two ways of doing the same work ---------------------------------------------------------


def plain_pipeline(db: Path, symbols: list[str], day: date) -> dict[str, Any]:
    """The pipeline's work without Prefect: the same cachelib calls, pictures included."""
    from cachelib.demo import DemoSource
    from cachelib.maintenance import cache_snapshot
    from cachelib.pictures import ingest_coverage_markdown, replay_pictures_markdown
    from cachelib.replay import replay_days
    from cachelib.store import TradingCacheManager
    from cachelib.sync import ACTION_LOOKAHEAD, sync_bars, sync_corporate_actions, sync_option_chains
    from flows.daily_pipeline import DAILY_LOOKBACK, STRATEGY

    source = DemoSource()
    with TradingCacheManager(db, timeout=60.0) as cache:
        cache_snapshot(cache, STRATEGY)
        daily = sync_bars(cache, source, symbols, day - DAILY_LOOKBACK, day, timeframe="1Day")
        sync_corporate_actions(cache, source, symbols, day - DAILY_LOOKBACK, day + ACTION_LOOKAHEAD)
        ingest_coverage_markdown(daily)
        minute = sync_bars(cache, source, symbols, day, day, timeframe="1Min")
        ingest_coverage_markdown(minute)
        chains = sync_option_chains(cache, source, symbols)
        replay = replay_days(cache, symbols, day, day, strategy=STRATEGY, on_missing="skip")
        replay_pictures_markdown(cache, symbols, [day], STRATEGY)
        cache_snapshot(cache, STRATEGY)
    return {"daily": daily.rows_written, "minute": minute.rows_written, "chains": chains.rows_written,
            "trades": replay.trades}


def flow_pipeline(db: Path, symbols: list[str], day: date) -> dict[str, Any]:
    from flows._common import without_heartbeat
    from flows.daily_pipeline import daily_pipeline

    with without_heartbeat():
        state = daily_pipeline(day=day, symbols=symbols, source="demo", db_path=str(db), return_state=True)
    run = state.result()
    assert run.daily_bars and run.daily_bars.report and run.minute_bars and run.minute_bars.report
    assert run.option_chains and run.option_chains.report and run.replay
    return {"daily": run.daily_bars.report.rows_written, "minute": run.minute_bars.report.rows_written,
            "chains": run.option_chains.report.rows_written, "trades": run.replay.trades,
            "flow_run_id": str(state.state_details.flow_run_id)}


def count_task_runs(flow_run_id: str) -> int:
    """Task runs the server recorded for one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return len(runs)


def overhead_parts(noop_tasks: int, repeat: int, settle: float) -> dict[str, Any]:
    """Prefect's fixed cost per flow run (with and without the heartbeat) and its cost per task
    run (a flow of ``noop_tasks`` no-op tasks on the flows' thread pool, minus an empty flow)."""
    from prefect import flow, task

    from flows._common import choose_task_runner, without_heartbeat
    from tasks.market_data import LOCAL_TASK

    @task(name="bench_noop", **LOCAL_TASK)
    def noop(i: int) -> int:
        return i

    @flow(name="bench_empty_flow")
    def empty() -> None:
        return None

    @flow(name="bench_noop_tasks", task_runner=choose_task_runner())
    def noops(n: int) -> int:
        return len([f.result() for f in noop.map(range(n))])

    def timed(fn: Any, *args: Any) -> float:
        time.sleep(settle)
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0

    with without_heartbeat():
        empty()  # warm-up
        off = [timed(empty) for _ in range(repeat)]
        tasks = [timed(noops, noop_tasks) for _ in range(repeat)]
    on = [timed(empty) for _ in range(repeat)]
    return {"empty_off": off, "empty_on": on, "noops": tasks, "noop_tasks": noop_tasks}


# -- subprocesses --------------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def child(kind: str, symbols: int, repeat: int, settle: float, day: date, workdir: Path,
          noop_tasks: int) -> dict[str, Any]:
    """One subprocess's measurements: ``plain`` or ``flow`` runs of one size, or ``overhead``."""
    if kind == "overhead":
        return {**overhead_parts(noop_tasks, repeat, settle), "peak_rss_mib": _peak_rss_mib()}
    names = universe(symbols)
    fn = plain_pipeline if kind == "plain" else flow_pipeline
    dbs = (workdir / f"{kind}-{symbols}-{i}.db" for i in range(repeat + 2))
    out = fn(next(dbs), names, day)  # warm-up: imports, calendars, the engine's first run
    seconds = []
    for _ in range(repeat):
        if kind == "flow":
            time.sleep(settle)
        t0 = time.perf_counter()
        out = fn(next(dbs), names, day)
        seconds.append(time.perf_counter() - t0)
    if kind == "flow":
        out["task_runs"] = count_task_runs(out.pop("flow_run_id"))
        time.sleep(settle)
    # One more, untimed run under tracemalloc (it slows Python down): the peak of the Python
    # heap during one run, every thread included, which the process's RSS peak hides behind
    # what the imports (pandas, Prefect) hold.
    tracemalloc.start()
    fn(next(dbs), names, day)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {**out, "seconds": seconds, "peak_rss_mib": _peak_rss_mib(), "peak_traced_mib": traced}


def _run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.bench_pipeline", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench child {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="universe sizes, comma-separated (default 20,100,500)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per size and kind (default 3)")
    parser.add_argument("--day", type=date.fromisoformat, default=None,
                        help="session (default: the latest finished one)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait before each timed flow run (default 2)")
    parser.add_argument("--noop-tasks", type=int, default=100, help="task runs of the per-task probe (default 100)")
    parser.add_argument("--child", choices=("plain", "flow", "overhead"), help=argparse.SUPPRESS)
    parser.add_argument("--symbols", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = child(args.child, args.symbols, args.repeat, args.settle, args.day, args.workdir, args.noop_tasks)
        print(json.dumps(result))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        _prepare_environment(str(Path(tmp) / "prefect-home"))
        from prefect.server.api.server import SubprocessASGIServer

        from cachelib.market_hours import latest_finished_session
        from flows import _common

        day = args.day or latest_finished_session(_common.now())
        t0 = time.perf_counter()
        server = SubprocessASGIServer()
        server.start(timeout=120)
        started = time.perf_counter() - t0
        env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_SERVER_EPHEMERAL_ENABLED": "false"}
        common = ["--repeat", str(args.repeat), "--settle", str(args.settle), "--day", day.isoformat(),
                  "--workdir", tmp, "--noop-tasks", str(args.noop_tasks)]
        print(f"daily_pipeline vs plain cachelib: demo source, session {day}, fresh database per run, "
              f"median of {args.repeat}; Prefect server started in {started:.1f} s (not counted)", flush=True)
        try:
            results = {}
            for n in sizes:
                plain = _run_child(["--child", "plain", "--symbols", str(n), *common], env)
                flow = _run_child(["--child", "flow", "--symbols", str(n), *common], env)
                mismatch = {k: (flow[k], plain[k]) for k in ("daily", "minute", "chains", "trades")
                            if flow[k] != plain[k]}
                if mismatch:
                    print(f"MISMATCH at {n} symbols (flow, plain): {mismatch}", file=sys.stderr)
                    return 1
                results[n] = (plain, flow)
                print(f"  {n} symbols measured", flush=True)
            parts = _run_child(["--child", "overhead", *common], env)
        finally:
            server.stop()
    return report(results, parts)


def report(results: dict[int, tuple[dict[str, Any], dict[str, Any]]], parts: dict[str, Any]) -> int:
    """Print the side-by-side table; exit 1 when the target at 100 symbols is missed."""
    med = statistics.median
    sizes = list(results)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Any) -> None:
        rows.append((label, [fn(*results[n]) for n in sizes]))

    row("work: daily / minute bars", lambda p, f: f"{p['daily']:,} / {p['minute']:,}")
    row("work: option rows / trades", lambda p, f: f"{p['chains']:,} / {p['trades']:,}")
    row("plain cachelib, wall (median)", lambda p, f: f"{med(p['seconds']):.2f} s")
    row("daily_pipeline, wall (median)", lambda p, f: f"{med(f['seconds']):.2f} s")
    row("Prefect overhead", lambda p, f: f"{med(f['seconds']) - med(p['seconds']):.2f} s")
    row("overhead, % of the flow's wall", lambda p, f: f"{100 * _ratio(p, f):.0f} %")
    row("task runs", lambda p, f: f"{f['task_runs']}")
    row("peak heap of one run, plain", lambda p, f: f"{p['peak_traced_mib']:.1f} MiB")
    row("peak heap of one run, flow", lambda p, f: f"{f['peak_traced_mib']:.1f} MiB")
    row("peak RSS, plain process", lambda p, f: f"{p['peak_rss_mib']:.0f} MiB")
    row("peak RSS, flow process", lambda p, f: f"{f['peak_rss_mib']:.0f} MiB")
    width = max(len(r[0]) for r in rows)
    # Each column as wide as its widest cell plus two spaces: cells never run together.
    col = max(16, *(len(c) + 2 for _, cells in rows for c in cells))
    head = f"{'':<{width}}" + "".join(f"{f'{n} symbols':>{col}}" for n in sizes)
    print("-" * len(head))
    print(head)
    print("-" * len(head))
    for label, cells in rows:
        print(f"{label:<{width}}" + "".join(f"{c:>{col}}" for c in cells))
    print("-" * len(head))

    off, on, noops, n = med(parts["empty_off"]), med(parts["empty_on"]), med(parts["noops"]), parts["noop_tasks"]
    print("Where Prefect's time goes (medians):")
    print(f"  fixed per flow run, heartbeat off (make run, bench):  {1000 * off:7.0f} ms")
    print(f"  fixed per flow run, heartbeat on (scheduled runs):    {1000 * on:7.0f} ms")
    print(f"  per task run ({n} no-op tasks, thread pool):          {1000 * (noops - off) / n:7.1f} ms")
    print("  the rest of the overhead: flow-run state and artifact API calls (artifacts are created by a "
          "background thread), run logs, and the server's work competing for the 2nd core")
    met = None
    if TARGET_SYMBOLS in results:
        ratio = _ratio(*results[TARGET_SYMBOLS])
        met = ratio <= TARGET_OVERHEAD
        print(f"target: overhead <= {100 * TARGET_OVERHEAD:.0f} % at {TARGET_SYMBOLS} symbols: "
              f"{'met' if met else 'NOT met'} ({100 * ratio:.0f} %)")
    return 0 if met in (None, True) else 1


def _ratio(plain: dict[str, Any], flow: dict[str, Any]) -> float:
    flow_s = statistics.median(flow["seconds"])
    return (flow_s - statistics.median(plain["seconds"])) / flow_s


if __name__ == "__main__":
    sys.exit(main())
