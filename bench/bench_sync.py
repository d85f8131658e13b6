"""Sync cost: ``sync_bars`` against the naive one-request-per-symbol fetch, in one run.

Run with ``python -m bench.bench_sync`` (``--help`` for options); ``main()`` returns the figures.

Data path: ``tests/alpaca_stub.py`` (a loopback HTTP server speaking Alpaca's market-data JSON,
pages of at most 10,000 rows like Alpaca) -> the real alpaca-py client inside
``cachelib.sources.AlpacaSource`` (``url_override`` pointed at the stub) -> a fresh SQLite file.

The stub holds daily bars of ``--symbols`` symbols for every XNYS session of ``--year`` only
(``market_hours.sessions_in_range``; 252 sessions in 2024), each stamped at New York midnight
in UTC like Alpaca's daily bars. After an un-measured warm-up of both code paths, measured:

* **cachelib**: ``sync_bars(cache, source, symbols, Jan 1, Dec 31)`` into an empty DB file:
  HTTP requests (from the stub's request log, cross-checked with ``SyncReport.requests_made``)
  against the minimum Alpaca's pages allow, ``ceil(rows loaded into the stub / 10,000)``; wall
  time; rows written. Then the same call again, ``--noop-reps`` times (a no-op: everything is
  covered): first call's time, p50 and max, and requests made (target: 0). One more no-op on
  a freshly opened ``TradingCacheManager`` shows the cost including opening the file.
* **naive** (the seed's per-symbol fetch), into another empty DB file: for each symbol
  ``source.get_bars([sym], start, end)`` then ``cache.set(sym, frame)``: requests and wall time.

First syncs run ``--repeat`` times per approach (default 3), each into a fresh file, the two
approaches interleaved with alternating order; the median wall time is reported, split into the
time inside ``source.get_bars`` (HTTP + JSON + frame) and the rest (validation, SQLite).

The client-side rate limiter (default 200 requests/min, i.e. 0.3 s between requests) is off
by default (``max_requests_per_minute=None``) so the figures show the work, not the waiting; the
floor it would add at 200/min, ``(requests - 1) * 0.3 s``, is printed for both approaches.
``--rate-limit 200`` measures with it on (the naive run then takes ~30 s).

Finally the projection for a full backfill, **500 symbols x 5 years (2020-2024) of 1-minute
bars** (about 245 M bars): the request count of ``cachelib.backfill.plan_backfill``'s real plan
for it, and the time that takes at Alpaca's 200 requests/min, next to the minimum the page size
allows (``ceil(bars / 10,000)`` requests). ``--plan-only`` prints just that (no stub, no files).
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from alpaca_stub import TEST_KEY, TEST_SECRET, AlpacaStub, ny_midnight_utc  # noqa: E402 (after the sys.path line)

from cachelib.backfill import plan_backfill  # noqa: E402 (after the sys.path line)
from cachelib.market_hours import sessions_in_range  # noqa: E402 (after the sys.path line)
from cachelib.sources import AlpacaSource  # noqa: E402 (after the sys.path line)
from cachelib.store import TradingCacheManager  # noqa: E402 (after the sys.path line)
from cachelib.sync import sync_bars  # noqa: E402 (after the sys.path line)

ALPACA_PAGE_ROWS = 10_000  # Alpaca's largest page for /v2/stocks/bars
BARS_PATH = "/v2/stocks/bars"
DEFAULT_RPM = 200  # AlpacaSource's default max_requests_per_minute
TARGET_EXTRA_REQUESTS = 2  # requests may exceed the minimum by at most this
TARGET_NOOP_S = 0.050


# --- data ----------------------------------------------------------------------------------------


def symbol_names(n: int) -> list[str]:
    return [f"S{i:03d}" for i in range(n)]


def session_bars(sessions: list[date], seed: int) -> list[dict]:
    """One Alpaca-shaped daily bar per session, stamped at New York midnight in UTC."""
    out = []
    price = 50.0 + seed
    for i, day in enumerate(sessions):
        o = round(price, 2)
        c = round(price + (0.5 if (i + seed) % 3 else -0.4), 2)
        out.append({
            "t": ny_midnight_utc(day).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "o": o, "h": round(max(o, c) + 1.0, 2), "l": round(min(o, c) - 1.0, 2), "c": c,
            "v": 1_000_000 + 7 * i + seed, "n": 5_000 + i, "vw": round((o + c) / 2, 4),
        })
        price = c
    return out


# --- helpers -------------------------------------------------------------------------------------


def new_source(url: str, rpm: float | None) -> AlpacaSource:
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=url, max_requests_per_minute=rpm,
                        backoff_base=0.01, backoff_max=0.05)


def time_get_bars(source: AlpacaSource) -> list[float]:
    """Record the seconds of every ``source.get_bars`` call (HTTP + JSON + frame building)."""
    spent: list[float] = []
    inner = source.get_bars

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)

    source.get_bars = timed  # type: ignore[method-assign]
    return spent


def limiter_floor(requests: int, rpm: float) -> float:
    """Seconds the client-side limiter must wait for ``requests`` back-to-back requests."""
    return max(0, requests - 1) * 60.0 / rpm


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def describe_request(i: int, params: dict[str, str]) -> str:
    syms = [s for s in params.get("symbols", "").split(",") if s]
    shown = syms[0] if len(syms) == 1 else f"{len(syms)} symbols"
    token = params.get("page_token")
    if token:
        import base64
        import json

        try:
            token = f"offset {json.loads(base64.urlsafe_b64decode(token))['offset']}"
        except Exception:  # noqa: BLE001 - only for display
            token = "?"
    return (f"  #{i:<3} {shown:<11} {params.get('start', '')[:10]}..{params.get('end', '')[:10]} "
            f"limit={params.get('limit', '-')} page={token or 'first'}")


# --- measurements --------------------------------------------------------------------------------


def measure_cachelib(stub: AlpacaStub, db: Path, syms: list[str], start: date, end: date,
                     rpm: float | None) -> dict[str, Any]:
    """``sync_bars`` into the empty file ``db`` (left in place for :func:`measure_noop`)."""
    source = new_source(stub.url, rpm)
    fetch = time_get_bars(source)
    cache = TradingCacheManager(db)
    try:
        stub.reset_counts()
        t0 = time.perf_counter()
        report = sync_bars(cache, source, syms, start, end)
        seconds = time.perf_counter() - t0
        log = [r for r in stub.requests if r.path == BARS_PATH]
        stored = sum(len(cache.get(s, start, end, source="alpaca")) for s in syms)
        return {
            "requests": stub.count(BARS_PATH),
            "requests_all_paths": stub.count(),
            "report_requests": report.requests_made,
            "calls": report.calls,
            "retries": source.retries_made,
            "statuses": [r.status for r in log],
            "request_log": [r.params for r in log],
            "seconds": seconds,
            "fetch_s": sum(fetch),
            "rows_written": report.rows_written,
            "rows_rejected": report.rows_rejected,
            "rows_stored": stored,
            "sessions_fetched": report.sessions_fetched,
        }
    finally:
        cache.close()
        source.close()


def measure_noop(stub: AlpacaStub, db: Path, syms: list[str], start: date, end: date,
                 rpm: float | None, reps: int) -> dict[str, Any]:
    """The same ``sync_bars`` again on the synced file: ``reps`` times, then once reopened."""
    source = new_source(stub.url, rpm)
    cache = TradingCacheManager(db)
    times: list[float] = []
    fetched = 0
    try:
        stub.reset_counts()
        for _ in range(reps):
            t0 = time.perf_counter()
            again = sync_bars(cache, source, syms, start, end)
            times.append(time.perf_counter() - t0)
            fetched += again.sessions_fetched + again.requests_made
        http = stub.count()
    finally:
        cache.close()
    # A no-op in a "new process": open the file afresh (connect + schema check) and sync.
    stub.reset_counts()
    t0 = time.perf_counter()
    with TradingCacheManager(db) as reopened:
        sync_bars(reopened, source, syms, start, end)
    reopen_s = time.perf_counter() - t0
    reopen_http = stub.count()
    source.close()
    return {
        "first_s": times[0],
        "p50_s": statistics.median(times),
        "max_s": max(times),
        "requests": http + reopen_http,
        "sessions_fetched_or_reported_requests": fetched,
        "reopen_s": reopen_s,
    }


def measure_naive(stub: AlpacaStub, db: Path, syms: list[str], start: date, end: date,
                  rpm: float | None) -> dict[str, Any]:
    """The seed's way: one ``get_bars`` per symbol, then ``cache.set`` of its frame."""
    source = new_source(stub.url, rpm)
    fetch = time_get_bars(source)
    cache = TradingCacheManager(db)
    try:
        stub.reset_counts()
        before = source.requests_made
        written = 0
        t0 = time.perf_counter()
        for sym in syms:
            frame = source.get_bars([sym], start, end)
            written += cache.set(sym, frame, source="alpaca")
        seconds = time.perf_counter() - t0
        return {
            "requests": stub.count(BARS_PATH),
            "report_requests": source.requests_made - before,
            "seconds": seconds,
            "fetch_s": sum(fetch),
            "rows_written": written,
        }
    finally:
        cache.close()
        source.close()


def backfill_projection(n_symbols: int = 500, start: str = "2020-01-01", end: str = "2024-12-31",
                        rpm: float = DEFAULT_RPM) -> dict[str, Any]:
    """Print and return the projected time of a minute-bar backfill at ``rpm`` requests/min,
    from the request count of ``plan_backfill``'s plan, next to the page-size minimum."""
    t0 = time.perf_counter()
    plan = plan_backfill(symbol_names(n_symbols), start, end, "1Min", rows_per_page=ALPACA_PAGE_ROWS)
    plan_s = time.perf_counter() - t0
    planned, floor = plan.expected_requests, plan.minimum_requests
    print(f"backfill projection: {n_symbols} symbols x {plan.sessions:,} sessions ({start}..{end}) of 1Min bars "
          f"at {plan.bars_per_session} bars/session = {plan.expected_rows:,} bars; planned in {plan_s * 1e3:.0f} ms")
    print(f"  cachelib.backfill plan: {len(plan.chunks):,} chunks of <= {plan.pages_per_chunk} pages, "
          f"{planned:,} requests -> {plan.projected_minutes(rpm):.1f} min at {rpm:g} requests/min")
    print(f"  page-size minimum:      ceil({plan.expected_rows:,} / {ALPACA_PAGE_ROWS:,}) = {floor:,} requests -> "
          f"{plan.projected_minutes(rpm, floor):.1f} min ({planned / floor - 1:+.1%} for the plan)")
    return {"symbols": n_symbols, "sessions": plan.sessions, "bars": plan.expected_rows, "chunks": len(plan.chunks),
            "requests": planned, "minimum_requests": floor, "minutes": plan.projected_minutes(rpm),
            "minimum_minutes": plan.projected_minutes(rpm, floor), "requests_per_minute": rpm}


# --- report --------------------------------------------------------------------------------------


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (its fetch/rest split stays consistent)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


def print_table(rows: list[tuple[str, str, str, str, str]]) -> None:
    header = ("figure", "cachelib", "naive", "target", "met?")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) if i == 0 else c.rjust(w) if i < 3 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))))


def yes_no(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "NO")


def run(n_symbols: int, year: int, noop_reps: int, repeat: int, rpm: float | None,
        workdir: Path | None, show_log: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    start, end = date(year, 1, 1), date(year, 12, 31)
    sessions = sessions_in_range(start, end)
    syms = symbol_names(n_symbols)
    tmp = Path(tempfile.mkdtemp(prefix="bench_sync_", dir=workdir))
    try:
        with AlpacaStub(page_size=ALPACA_PAGE_ROWS) as stub:
            rows_loaded = 0
            for i, sym in enumerate(syms):
                bars = session_bars(sessions, i)
                stub.add_bars(sym, bars)
                rows_loaded += len(bars)
            # Cross-check against what the server actually holds (the stub has no public count).
            held = sum(len(book) for book in getattr(stub, "_bars", {}).get("1Day", {}).values())
            if held and held != rows_loaded:
                raise RuntimeError(f"the stub holds {held} daily bars, {rows_loaded} were loaded")
            min_requests = math.ceil(rows_loaded / ALPACA_PAGE_ROWS)

            # Warm-up (not measured): imports, first HTTP connection, calendar, SQLite, and
            # both code paths once on a few symbols x 2 weeks, into a throwaway file.
            warm = new_source(stub.url, None)
            with TradingCacheManager(tmp / "warmup.db") as wcache:
                sync_bars(wcache, warm, syms[:3], start, sessions[9])
                wcache.set(syms[3], warm.get_bars([syms[3]], start, sessions[9]), source="warmup")
            warm.close()

            # First syncs, each into a fresh file; the two approaches interleaved and
            # alternating which goes first, so background load hits both alike.
            c_runs: list[dict[str, Any]] = []
            n_runs: list[dict[str, Any]] = []
            for rep in range(repeat):
                c_db, n_db = tmp / f"cachelib_{rep}.db", tmp / f"naive_{rep}.db"
                if rep % 2 == 0:
                    c_runs.append(measure_cachelib(stub, c_db, syms, start, end, rpm))
                    n_runs.append(measure_naive(stub, n_db, syms, start, end, rpm))
                else:
                    n_runs.append(measure_naive(stub, n_db, syms, start, end, rpm))
                    c_runs.append(measure_cachelib(stub, c_db, syms, start, end, rpm))
            noop = measure_noop(stub, tmp / "cachelib_0.db", syms, start, end, rpm, noop_reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    c, n = median_run(c_runs), median_run(n_runs)
    c_requests = sorted({r["requests"] for r in c_runs})
    n_requests = sorted({r["requests"] for r in n_runs})

    limiter = f"{rpm:g}/min" if rpm else "off (max_requests_per_minute=None)"
    print(f"bench_sync: {n_symbols} symbols x {year} daily bars ({len(sessions)} XNYS sessions), "
          f"loopback Alpaca stub -> real alpaca-py client -> fresh SQLite files")
    print(f"rows loaded into the stub: {rows_loaded:,}; minimum requests at {ALPACA_PAGE_ROWS:,} rows/page: "
          f"ceil({rows_loaded:,} / {ALPACA_PAGE_ROWS:,}) = {min_requests}; client rate limiter: {limiter}")
    print()

    req_ok = max(c_requests) <= min_requests + TARGET_EXTRA_REQUESTS
    noop_zero = noop["requests"] == 0 and noop["sessions_fetched_or_reported_requests"] == 0
    noop_ok = noop["first_s"] <= TARGET_NOOP_S and noop_zero
    p50_ok = noop["p50_s"] <= TARGET_NOOP_S and noop_zero
    rows_ok = all(r["rows_written"] == rows_loaded and r["rows_stored"] == rows_loaded for r in c_runs) \
        and all(r["rows_written"] == rows_loaded for r in n_runs)
    wall = f"wall time, first sync (median of {repeat})" if repeat > 1 else "wall time, first sync"
    table = [
        ("HTTP requests, first sync", "/".join(map(str, c_requests)), "/".join(map(str, n_requests)),
         f"<= {min_requests} + {TARGET_EXTRA_REQUESTS} (min {min_requests})", yes_no(req_ok)),
        (wall, fmt_s(c["seconds"]), fmt_s(n["seconds"]), "—", "—"),
        ("  of which in source.get_bars", fmt_s(c["fetch_s"]), fmt_s(n["fetch_s"]), "—", "—"),
        ("  of which the rest (validate, SQLite)", fmt_s(c["seconds"] - c["fetch_s"]),
         fmt_s(n["seconds"] - n["fetch_s"]), "—", "—"),
        ("rows written", f"{c['rows_written']:,}", f"{n['rows_written']:,}", f"{rows_loaded:,}",
         yes_no(rows_ok)),
        ("no-op re-sync, first call", fmt_s(noop["first_s"]), "—", "<= 50 ms, 0 requests",
         yes_no(noop_ok)),
        (f"no-op re-sync, p50 of {noop_reps}", fmt_s(noop["p50_s"]), "—", "<= 50 ms, 0 requests",
         yes_no(p50_ok)),
        (f"no-op re-sync, max of {noop_reps}", fmt_s(noop["max_s"]), "—", "—", "—"),
        (f"no-op re-sync, requests (all {noop_reps + 1})", f"{noop['requests']}", "—", "0",
         yes_no(noop_zero)),
        ("no-op re-sync, DB file reopened", fmt_s(noop["reopen_s"]), "—", "—", "—"),
    ]
    print_table(table)
    print()
    req_ratio = n["requests"] / c["requests"] if c["requests"] else float("inf")
    time_ratio = n["seconds"] / c["seconds"] if c["seconds"] else float("inf")
    print(f"naive / cachelib: {req_ratio:.1f}x the requests, {time_ratio:.2f}x the wall time "
          f"(first syncs: cachelib {', '.join(fmt_s(r['seconds']) for r in c_runs)}; "
          f"naive {', '.join(fmt_s(r['seconds']) for r in n_runs)}).")
    floor_c, floor_n = limiter_floor(c["requests"], DEFAULT_RPM), limiter_floor(n["requests"], DEFAULT_RPM)
    if rpm:
        print(f"rate limiter on ({rpm:g}/min): the times above include its waits.")
    else:
        print(f"at AlpacaSource's default {DEFAULT_RPM}/min limiter (0.3 s spacing), add at least "
              f"{floor_c:.1f} s (cachelib) vs {floor_n:.1f} s (naive) of waiting to the times above.")
    print(f"cachelib: {c['calls']} get_bars call(s), {c['requests']} HTTP request(s) in the stub log "
          f"(SyncReport.requests_made = {c['report_requests']}, retries {c['retries']}, "
          f"statuses {sorted(set(c['statuses']))}); naive: source.requests_made = {n['report_requests']}.")
    if show_log or max(c_requests) > min_requests:
        worst = max(c_runs, key=lambda r: r["requests"])
        print("cachelib request log (stub, first sync):")
        for i, params in enumerate(worst["request_log"], start=1):
            print(describe_request(i, params))
    print()
    projection = backfill_projection()
    elapsed = time.perf_counter() - t_start
    print(f"total {elapsed:.1f} s")

    figures = {
        "requests": {"cachelib": c["requests"], "naive": n["requests"], "minimum": min_requests,
                     "target": min_requests + TARGET_EXTRA_REQUESTS, "met": req_ok},
        "first_sync_s": {"cachelib": c["seconds"], "naive": n["seconds"],
                         "cachelib_runs": [r["seconds"] for r in c_runs],
                         "naive_runs": [r["seconds"] for r in n_runs]},
        "first_sync_fetch_s": {"cachelib": c["fetch_s"], "naive": n["fetch_s"]},
        "rows_written": {"cachelib": c["rows_written"], "naive": n["rows_written"],
                         "loaded": rows_loaded, "met": rows_ok},
        "noop_first_s": {"cachelib": noop["first_s"], "target": TARGET_NOOP_S, "met": noop_ok},
        "noop_p50_s": {"cachelib": noop["p50_s"], "target": TARGET_NOOP_S, "met": p50_ok},
        "noop_max_s": {"cachelib": noop["max_s"]},
        "noop_requests": {"cachelib": noop["requests"], "target": 0, "met": noop_zero},
        "noop_reopen_s": {"cachelib": noop["reopen_s"]},
    }
    return {
        "figures": figures,
        "symbols": n_symbols,
        "sessions": len(sessions),
        "rows_loaded": rows_loaded,
        "min_requests": min_requests,
        "rate_limit_per_minute": rpm,
        "limiter_floor_s_at_default": {"cachelib": floor_c, "naive": floor_n},
        "request_ratio": req_ratio,
        "time_ratio": time_ratio,
        "cachelib_request_log": c["request_log"],
        "backfill_projection": projection,
        "all_targets_met": all(f["met"] for f in figures.values() if "met" in f),
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--year", type=int, default=2024)
    parser.add_argument("--noop-reps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3,
                        help="first syncs per approach, each into a fresh file (median reported)")
    parser.add_argument("--rate-limit", type=float, default=None, metavar="PER_MINUTE",
                        help="AlpacaSource max_requests_per_minute (default: off)")
    parser.add_argument("--show-log", action="store_true", help="print the stub's request log")
    parser.add_argument("--workdir", type=Path, default=None, help="parent folder of the temporary files")
    parser.add_argument("--plan-only", action="store_true",
                        help="print only the 500 symbols x 5 years backfill projection")
    args = parser.parse_args(argv)
    if args.plan_only:
        return {"backfill_projection": backfill_projection()}
    if args.noop_reps < 1 or args.repeat < 1:
        parser.error("--noop-reps and --repeat must be >= 1")
    return run(args.symbols, args.year, args.noop_reps, args.repeat, args.rate_limit or None,
               args.workdir, args.show_log)


if __name__ == "__main__":
    main()
