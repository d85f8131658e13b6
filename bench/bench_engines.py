"""SQLite and PostgreSQL side by side: the same store calls on the same data, in one run.

Run with ``python -m bench.bench_engines`` (``--help`` for options; ``--quick`` for a smoke run);
``main()`` returns the figures. It ends with a markdown table
``figure | SQLite | PostgreSQL | PG / SQLite | target | met?``.

The bench starts its own PostgreSQL (``pgserver``: PostgreSQL from a wheel, Unix socket, default
settings, so ``fsync`` and ``synchronous_commit`` are on) and its own temporary SQLite files
(WAL, ``synchronous=NORMAL``, as the store opens them). Each figure writes into a fresh SQLite
file and a fresh PostgreSQL schema, with the same synthetic bars (:mod:`bench.bench_store`'s
random walk) or the same demo source. Figures (issue 12, "Performance"):

* ``get()`` p50 of 1 symbol x 1 month of daily bars: the same random queries, the engines taking
  turns query by query, so load from other processes falls on both alike;
* reading 1 year of 1-minute bars into a DataFrame (median, taking turns);
* bulk writes: N symbols x 10 years of daily bars in one ``set_many``, and 1 year of 1-minute bars
  in one ``set`` (rows/s);
* ``set_many`` of 1 day x N symbols into existing series (median of 3 sessions);
* a no-op re-sync: ``sync_bars`` with :class:`~cachelib.demo.DemoSource` over a range the cache
  already holds (p50);
* aggregate write throughput of 1, 4 and 8 writer processes (rows/s). Each writer is a fresh
  interpreter with its own manager (on PostgreSQL: its own pool); it runs many small
  transactions like an ingest: ``set_many`` of one private series and one series that other
  writers write too (the same bars, other prices), 2 x ``--writer-bars`` rows each. The writers
  start together on a signal once their data is ready; throughput is the rows written over the
  wall time from the first start to the last finish, best of ``--writer-rounds`` rounds (each
  into a fresh cache, the engines alternating which goes first). Every error any writer sees is
  counted, retried transactions too, and the final row count is checked against the count the
  plan implies. The CPU the writers and the server used is printed next to it: on a 2-core
  machine shared with other jobs, it shows whether a figure was bound by CPU or by waiting
  (locks, the per-commit WAL flush).

Targets: PostgreSQL's ``get()`` p50 within 5x SQLite's; PostgreSQL's 8-writer throughput at least
its 1-writer throughput (no lock collapse); zero writer errors on both engines.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from bench.bench_store import (
    daily_sessions,
    median_ms,
    minute_stamps,
    pct_ms,
    synthetic_bars,
    take_turns,
)
from cachelib.store import TradingCacheManager

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "alpaca"
ENGINES = ("sqlite", "postgresql")
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

# Targets from issue 12, "Performance".
TARGET_GET_RATIO = 5.0  # PostgreSQL get() p50 <= 5x SQLite's

# --- figure names (the smoke test checks that each is printed) ----------------------------------
F_GET = "get() 1 symbol x 1 month of daily bars, p50"
F_MINUTE_READ = "read 1 symbol x 1 year of 1-minute bars into a DataFrame"
F_NOOP = "no-op re-sync (sync_bars, demo source, all cached), p50"


def f_bulk_daily(n: int, years: int) -> str:
    return f"bulk write {n} symbols x {years} year{'s' if years > 1 else ''} of daily bars (one set_many)"


def f_bulk_minutes(n: int) -> str:
    return f"bulk write 1 symbol x 1 year of 1-minute bars ({n:,} bars, one set)"


def f_upsert(n: int) -> str:
    return f"set_many 1 day x {n} symbols into existing series"


def f_writers(n: int) -> str:
    return f"aggregate write throughput, {n} writer process{'es' if n > 1 else ''}"


def f_errors() -> str:
    return "errors seen by any writer (all writer runs)"


# --- the engines ---------------------------------------------------------------------------------


class Engines:
    """Where each engine's caches live: SQLite files under a temporary folder, and schemas of a
    PostgreSQL server this bench starts (and stops) itself."""

    def __init__(self, tmp: Path) -> None:
        import pgserver

        self.tmp = tmp
        # The socket path (folder + "/.s.PGSQL.5432") must fit in 107 bytes: a short folder.
        self.pg_dir = tempfile.mkdtemp(prefix="bench-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
        t0 = time.perf_counter()
        self.server = pgserver.get_server(self.pg_dir, cleanup_mode="delete")
        self.start_s = time.perf_counter() - t0
        self.uri = self.server.get_uri()
        self._urls: list[str] = []

    def location(self, engine: str, name: str) -> str:
        """A fresh cache location for ``name``: a file path, or a URL of a new schema."""
        if engine == "sqlite":
            return str(self.tmp / f"{name}.db")
        url = schema_url(self.uri, f"bench_{name}")
        self._urls.append(url)
        return url

    def settings(self) -> dict[str, str]:
        """The server settings that bear on the figures."""
        import psycopg

        names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_connections")
        with psycopg.connect(self.uri) as conn:
            return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}  # type: ignore[index]

    def server_cpu_s(self) -> float:
        """CPU seconds used so far by the server's processes that are alive now (the postmaster
        and its children: one backend per client connection), from ``postmaster.pid``."""
        import psutil  # type: ignore[import-untyped]  # installed with pgserver

        pid = int((Path(self.pg_dir) / "postmaster.pid").read_text().split()[0])
        total = 0.0
        postmaster = psutil.Process(pid)
        for proc in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def close(self) -> None:
        from cachelib.store.postgres import close_pools

        close_pools()
        self.server.cleanup()
        shutil.rmtree(self.pg_dir, ignore_errors=True)


def schema_url(base_uri: str, schema: str) -> str:
    """``base_uri`` with ``search_path`` set to ``schema`` (the test fixtures' helper)."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from pg_fixtures import schema_url as fixture_schema_url  # type: ignore[import-not-found]

    return fixture_schema_url(base_uri, schema)


@contextlib.contextmanager
def both(engines: Engines, name: str, timeout: float = 60) -> Iterator[dict[str, TradingCacheManager]]:
    """A fresh manager per engine for ``name``, closed (and its pool closed) afterwards."""
    from cachelib.store.postgres import close_pools

    managers = {e: TradingCacheManager(engines.location(e, name), timeout=timeout) for e in ENGINES}
    try:
        yield managers
    finally:
        for m in managers.values():
            m.close()
        close_pools()


# --- the figures ---------------------------------------------------------------------------------


@dataclass
class Pair:
    """One line of the table: the same figure on both engines."""

    name: str
    unit: str
    sqlite: float
    postgresql: float
    target: str = "-"
    met: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "sqlite": self.sqlite, "postgresql": self.postgresql,
                "target": self.target, "met": self.met, "note": self.note}


def fmt(value: float, unit: str) -> str:
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms" if value < 10 else f"{value:,.1f} ms"
    return f"{value:g} {unit}"


def print_table(pairs: list[Pair]) -> None:
    """The markdown table: figure | SQLite | PostgreSQL | PG / SQLite | target | met?"""
    print("| figure | SQLite | PostgreSQL | PG / SQLite | target | met? |")
    print("|---|---|---|---|---|---|")
    for p in pairs:
        ratio = f"{p.postgresql / p.sqlite:.2f}x" if p.sqlite else "-"
        met = "-" if p.met is None else ("PASS" if p.met else "FAIL")
        pg = fmt(p.postgresql, p.unit) + (f" ({p.note})" if p.note else "")
        print(f"| {p.name} | {fmt(p.sqlite, p.unit)} | {pg} | {ratio} | {p.target} | {met} |")


def turns(pair_of_calls: Mapping[str, Callable[..., Any]], items: list[Any]) -> dict[str, list[int]]:
    """Nanoseconds per item per engine, the engines taking turns item by item."""
    ns = take_turns([pair_of_calls[e] for e in ENGINES], items)
    return dict(zip(ENGINES, ns, strict=True))


# --- daily bars: bulk write, get(), set_many of one day -----------------------------------------


def bench_daily(engines: Engines, n_symbols: int, first_year: int, last_year: int, n_queries: int,
                seed: int) -> list[Pair]:
    sessions = daily_sessions(first_year, last_year)
    index = pd.DatetimeIndex(pd.to_datetime(sessions), name="date")
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    frames = {s: synthetic_bars(index, seed + i, 20.0 + 5 * i, 0.02) for i, s in enumerate(symbols)}
    n_rows = len(sessions) * n_symbols
    years = last_year - first_year + 1
    print(f"daily: {n_symbols} symbols x {len(sessions)} sessions ({first_year}-{last_year}) = {n_rows:,} bars")
    pairs = []
    with both(engines, "daily") as caches:
        # ---- bulk write, one set_many per engine (SQLite first, then PostgreSQL) ----
        write_s = {}
        for e in ENGINES:
            t0 = time.perf_counter()
            written = caches[e].set_many(frames, SOURCE)
            write_s[e] = time.perf_counter() - t0
            assert written == n_rows, (e, written, n_rows)
        pairs.append(Pair(f_bulk_daily(n_symbols, years), "rows/s",
                          n_rows / write_s["sqlite"], n_rows / write_s["postgresql"]))

        # ---- get(): 1 symbol x 1 month, the same random queries, taking turns ----
        rng = np.random.default_rng(seed)
        months = [(y, m) for y in range(first_year, last_year + 1) for m in range(1, 13)]
        picks = [(symbols[rng.integers(n_symbols)], months[rng.integers(len(months))]) for _ in range(n_queries)]
        queries = [(s, date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1])) for s, (y, m) in picks]
        calls = {e: (lambda q, c=caches[e]: c.get(q[0], q[1], q[2], source=SOURCE)) for e in ENGINES}
        for q in queries[:20]:  # warm up; both engines answer alike
            a, b = calls["sqlite"](q), calls["postgresql"](q)
            pd.testing.assert_frame_equal(a, b)
        ns = turns(calls, queries)
        get50 = Pair(F_GET, "ms", pct_ms(ns["sqlite"]), pct_ms(ns["postgresql"]),
                     target=f"PG <= {TARGET_GET_RATIO:g}x SQLite",
                     note=f"p95 {pct_ms(ns['postgresql'], 95):.3f} ms; SQLite p95 {pct_ms(ns['sqlite'], 95):.3f} ms")
        get50.met = get50.postgresql <= TARGET_GET_RATIO * get50.sqlite
        pairs.insert(0, get50)

        # ---- set_many of 1 day x all symbols into the existing series: 3 sessions, taking turns ----
        ups: dict[str, list[float]] = {e: [] for e in ENGINES}
        for k, day in enumerate(sessions[-3:]):
            ones = {s: frames[s].loc[[pd.Timestamp(day)]].copy() for s in symbols}
            for f in ones.values():
                f[["open", "high", "low", "close", "vwap"]] += 0.01 * (k + 1)
            for j in range(2):
                e = ENGINES[(k + j) % 2]
                t0 = time.perf_counter()
                caches[e].set_many(ones, SOURCE)
                ups[e].append(time.perf_counter() - t0)
            want = ones[symbols[-1]]["close"].iloc[0]
            for e in ENGINES:
                back = caches[e].get(symbols[-1], day, day, source=SOURCE)
                assert back is not None and back["close"].iloc[0] == want, (e, day)
        pairs.append(Pair(f_upsert(n_symbols), "ms", statistics.median(ups["sqlite"]) * 1e3,
                          statistics.median(ups["postgresql"]) * 1e3))
    return pairs


# --- one year of 1-minute bars: bulk write and read ----------------------------------------------


def bench_minutes(engines: Engines, year: int, seed: int, sessions: int | None, repeat: int) -> list[Pair]:
    stamps = minute_stamps(year, sessions)
    minutes = synthetic_bars(stamps, seed + 10_000, 450.0, 0.0008)
    n = len(minutes)
    days = sorted({t.date() for t in stamps.tz_convert("America/New_York")})
    with both(engines, "minutes") as caches:
        write_s = {}
        for e in ENGINES:
            t0 = time.perf_counter()
            caches[e].set("SPY", minutes, source=SOURCE, timeframe="1Min")
            write_s[e] = time.perf_counter() - t0
        calls = {e: (lambda _, c=caches[e]: c.get("SPY", days[0], days[-1], source=SOURCE, timeframe="1Min"))
                 for e in ENGINES}
        a, b = calls["sqlite"](0), calls["postgresql"](0)
        assert len(a) == n
        pd.testing.assert_frame_equal(a, b)
        ns = turns(calls, list(range(repeat)))
    print(f"minutes: SPY {year}, {n:,} one-minute bars")
    return [
        Pair(f_bulk_minutes(n), "rows/s", n / write_s["sqlite"], n / write_s["postgresql"]),
        Pair(f"{F_MINUTE_READ} ({n:,} bars)", "ms", median_ms(ns["sqlite"]), median_ms(ns["postgresql"])),
    ]


# --- the no-op re-sync ---------------------------------------------------------------------------


def bench_noop_sync(engines: Engines, n_symbols: int, year: int, reps: int) -> list[Pair]:
    """``sync_bars`` with the demo source over a year the cache already holds."""
    from cachelib.demo import DemoSource
    from cachelib.sync import sync_bars

    symbols = [f"D{i:03d}" for i in range(n_symbols)]
    start, end = date(year, 1, 1), date(year, 12, 31)
    source = DemoSource(seed=7)
    with both(engines, "sync") as caches:
        for e in ENGINES:
            first = sync_bars(caches[e], source, symbols, start, end)
            assert first.rows_written > 0, (e, first)
        before = source.requests_made

        def noop(e: str) -> Callable[[Any], Any]:
            def call(_: Any) -> None:
                report = sync_bars(caches[e], source, symbols, start, end)
                assert report.rows_written == 0 and report.requests_made == 0, (e, report)
            return call

        ns = turns({e: noop(e) for e in ENGINES}, list(range(reps)))
        assert source.requests_made == before, "a no-op re-sync asked the source"
    print(f"no-op re-sync: {n_symbols} symbols x {year} daily bars from the demo source, {reps} re-syncs each")
    return [Pair(F_NOOP, "ms", median_ms(ns["sqlite"]), median_ms(ns["postgresql"]),
                 note="0 source requests on both")]


# --- concurrent writer processes -----------------------------------------------------------------


@dataclass(frozen=True)
class WriterPlan:
    """What every writer writes: ``transactions`` calls of ``set_many`` with ``bars`` daily bars
    of one private series and ``bars`` of one shared series (``private`` and ``shared`` series
    in rotation, over ``windows`` date windows)."""

    transactions: int
    bars: int
    private: int = 5
    shared: int = 4
    first_year: int = 2015
    last_year: int = 2024

    @property
    def windows(self) -> int:
        return len(self.sessions()) // self.bars

    def sessions(self) -> list[date]:
        return daily_sessions(self.first_year, self.last_year)

    def keys(self, writer: int) -> list[tuple[str, str, int]]:
        """(private symbol, shared symbol, window) of each transaction of ``writer``. Writer
        ``w`` starts its shared rotation at ``w``: at any moment the writers write different
        shared series, and over the run each shared (series, window) is written by several."""
        return [(f"P{writer:02d}X{t % self.private}", f"Q{(t + writer) % self.shared:02d}",
                 (t // self.private) % self.windows) for t in range(self.transactions)]

    def expected_rows(self, writers: int) -> int:
        """The bars a cache holds after ``writers`` writers ran this plan."""
        private = sum(len({(p, win) for p, _, win in self.keys(w)}) for w in range(writers))
        shared = len({(q, win) for w in range(writers) for _, q, win in self.keys(w)})
        return (private + shared) * self.bars


def writer_main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
    """A writer process: ``argv = [plan JSON, writer index]``. Reads one command per line on
    stdin: ``{"location": ...}`` opens that cache and prepares the frames (then prints
    ``ready``), ``go`` runs the plan (then prints a JSON result), ``exit`` ends."""
    argv = sys.argv[1:] if argv is None else argv
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    plan, w = WriterPlan(**json.loads(argv[0])), int(argv[1])
    index = pd.DatetimeIndex(pd.to_datetime(plan.sessions()), name="date")
    keys = plan.keys(w)
    series: dict[str, pd.DataFrame] = {}
    for t, (p, q, _) in enumerate(keys):  # a shared series gets other prices in each writer
        series.setdefault(p, synthetic_bars(index, 1000 + 10 * w + t % plan.private, 30.0, 0.02))
        series.setdefault(q, synthetic_bars(index, 2000 + w, 40.0 + w, 0.02))
    batches = [{p: series[p].iloc[win * plan.bars:(win + 1) * plan.bars],
                q: series[q].iloc[win * plan.bars:(win + 1) * plan.bars]} for p, q, win in keys]
    cache: TradingCacheManager | None = None
    # The PostgreSQL engine logs each retry of a deadlock or serialization failure: count them.
    retries: list[logging.LogRecord] = []
    counter = logging.Handler(logging.INFO)
    counter.emit = lambda record: retries.append(record) if record.msg.startswith("retrying") else None  # type: ignore[method-assign]
    store_log = logging.getLogger("cachelib.store")
    store_log.addHandler(counter)
    store_log.setLevel(logging.INFO)

    def say(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    for line in stdin:
        command = line.strip()
        if command == "exit":
            break
        if command.startswith("{"):
            if cache is not None:
                cache.close()
            cache = TradingCacheManager(json.loads(command)["location"], timeout=60)
            cache.count_bars()  # connected and warm
            say("ready")
        elif command == "go" and cache is not None:
            rows, errors, messages = 0, 0, list[str]()
            retries.clear()
            t0, cpu0 = time.time(), time.process_time()
            for batch in batches:
                try:
                    rows += cache.set_many(batch, SOURCE)
                except Exception as exc:  # noqa: BLE001 - every error is counted and reported
                    errors += 1
                    if len(messages) < 3:
                        messages.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            say(json.dumps({"rows": rows, "errors": errors, "messages": messages, "retries": len(retries),
                            "start": t0, "end": time.time(), "cpu_s": time.process_time() - cpu0}))
    if cache is not None:
        cache.close()


_WRITER_CODE = "import sys; from bench.bench_engines import writer_main; writer_main()"


def run_writers(engines: Engines, plan: WriterPlan, counts: list[int], rounds: int = 2
                ) -> tuple[list[Pair], dict[str, Any]]:
    """For each writer count: that many processes, each writing ``rounds`` times per engine (the
    engines alternating which goes first), each time into a fresh cache; the best round counts."""
    from cachelib.store.postgres import close_pools

    runs: dict[str, dict[int, list[dict[str, Any]]]] = {e: {n: [] for n in counts} for e in ENGINES}
    turn = 0
    for n in counts:
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER_CODE, json.dumps(dataclasses.asdict(plan)), str(w)],
                                  cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
                 for w in range(n)]
        try:
            for r in range(rounds):
                for e in ENGINES if turn % 2 == 0 else ENGINES[::-1]:
                    runs[e][n].append(_writer_round(engines, e, f"writers{n}_{r}", procs, plan))
                turn += 1
            for p in procs:
                _send(p, "exit")
            for p in procs:
                p.wait(timeout=60)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
        close_pools()
    best = {e: {n: max(runs[e][n], key=lambda x: x["rows_per_s"]) for n in counts} for e in ENGINES}
    pairs = []
    for n in counts:
        s, g = best["sqlite"][n], best["postgresql"][n]
        pair = Pair(f_writers(n), "rows/s", s["rows_per_s"], g["rows_per_s"],
                    note=f"CPU {g['cpu_cores']:.1f} cores; SQLite's {s['cpu_cores']:.1f}")
        if n == max(counts) and n > min(counts):
            pair.target = f"PG >= PG with {min(counts)} writer{'s' if min(counts) > 1 else ''}"
            pair.met = g["rows_per_s"] >= best["postgresql"][min(counts)]["rows_per_s"]
        pairs.append(pair)
    every = [x for e in ENGINES for n in counts for x in runs[e][n]]
    errors = {e: sum(x["errors"] for n in counts for x in runs[e][n]) for e in ENGINES}
    counts_ok = all(x["stored"] == x["expected"] for x in every)
    pairs.append(Pair(f_errors(), "count", errors["sqlite"], errors["postgresql"], target="0 on both",
                      met=errors["sqlite"] == 0 and errors["postgresql"] == 0 and counts_ok,
                      note="final row counts as planned" if counts_ok else "FINAL ROW COUNTS DIFFER FROM THE PLAN"))
    for e in ENGINES:
        for n in counts:
            for x in runs[e][n]:
                print(f"writers: {LABELS[e]:<10} {n} process(es): {x['rows']:,} rows in {x['wall_s']:.2f} s "
                      f"= {x['rows_per_s']:,.0f} rows/s; CPU: writers {x['client_cpu_s']:.2f} s + server "
                      f"{x['server_cpu_s']:.2f} s = {x['cpu_cores']:.2f} cores busy; {x['errors']} error(s), "
                      f"{x['retries']} retried transaction(s); stored {x['stored']:,} bars (plan: {x['expected']:,})"
                      + (f"; first errors: {x['messages']}" if x["messages"] else ""))
    return pairs, {e: {n: runs[e][n] for n in counts} for e in ENGINES}


def _writer_round(engines: Engines, engine: str, name: str, procs: list[subprocess.Popen], plan: WriterPlan
                  ) -> dict[str, Any]:
    """One round: every writer opens a fresh cache, then all write at once; the outcome."""
    location = engines.location(engine, name)
    with TradingCacheManager(location, timeout=60):  # create it before the writers open it
        pass
    for p in procs:
        _send(p, json.dumps({"location": location}))
    for p in procs:
        _expect(p, "ready")
    server0 = engines.server_cpu_s() if engine == "postgresql" else 0.0
    for p in procs:
        _send(p, "go")
    outs = [json.loads(_read(p)) for p in procs]
    server_cpu = engines.server_cpu_s() - server0 if engine == "postgresql" else 0.0
    with TradingCacheManager(location, timeout=60) as check:
        stored = check.count_bars()
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    client_cpu = sum(o["cpu_s"] for o in outs)
    rows = sum(o["rows"] for o in outs)
    return {
        "rows": rows, "wall_s": wall, "rows_per_s": rows / wall,
        "errors": sum(o["errors"] for o in outs), "retries": sum(o["retries"] for o in outs),
        "messages": [m for o in outs for m in o["messages"]],
        "client_cpu_s": client_cpu, "server_cpu_s": server_cpu, "cpu_cores": (client_cpu + server_cpu) / wall,
        "stored": stored, "expected": plan.expected_rows(len(procs)),
    }


def _send(proc: subprocess.Popen, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _read(proc: subprocess.Popen) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise RuntimeError(f"a writer process ended early with status {proc.returncode} (its stderr is above)")
    return line.strip()


def _expect(proc: subprocess.Popen, want: str) -> None:
    got = _read(proc)
    if got != want:
        raise RuntimeError(f"a writer process said {got!r}, expected {want!r}")


# --- run -----------------------------------------------------------------------------------------


def run(symbols: int = 100, first_year: int = 2015, last_year: int = 2024, queries: int = 1000,
        seed: int = 42, workdir: Path | None = None, minute_sessions: int | None = None, repeat: int = 7,
        noop_reps: int = 20, sync_symbols: int = 100, writers: tuple[int, ...] = (1, 4, 8),
        writer_transactions: int = 400, writer_bars: int = 10, writer_rounds: int = 2) -> dict[str, Any]:
    """Measure every figure on both engines and print the table; returns ``{"figures": ...}``."""
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-engines-", dir=workdir))
    engines: Engines | None = None
    try:
        engines = Engines(tmp)
        settings = engines.settings()
        print(f"PostgreSQL {settings['server_version']} from pgserver, started in {engines.start_s:.1f} s, "
              f"Unix socket, fsync={settings['fsync']}, synchronous_commit={settings['synchronous_commit']}, "
              f"shared_buffers={settings['shared_buffers']}; SQLite {__import__('sqlite3').sqlite_version} "
              f"(WAL, synchronous=NORMAL)")
        print(f"this machine has {os.cpu_count()} cores, shared by server, clients and other jobs: "
              "writer processes beyond that count take turns on the CPU")
        pairs = bench_daily(engines, symbols, first_year, last_year, queries, seed)
        pairs += bench_minutes(engines, last_year, seed, minute_sessions, repeat)
        pairs += bench_noop_sync(engines, sync_symbols, last_year, noop_reps)
        plan = WriterPlan(transactions=writer_transactions, bars=writer_bars, first_year=first_year,
                          last_year=last_year)
        writer_pairs, writer_results = run_writers(engines, plan, list(writers), writer_rounds)
        pairs += writer_pairs
    finally:
        if engines is not None:
            engines.close()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    print()
    print_table(pairs)
    print(f"\n{os.cpu_count()} cores; total {elapsed:.1f} s.")
    return {
        "figures": {p.name: p.as_dict() for p in pairs},
        "writers": writer_results,
        "postgres_settings": settings,
        "all_targets_met": all(p.met for p in pairs if p.met is not None),
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes for a smoke run; explicit options still win")
    parser.add_argument("--symbols", type=int, default=None, help="daily symbols (100)")
    parser.add_argument("--first-year", type=int, default=None, help="first year of daily bars (2015)")
    parser.add_argument("--last-year", type=int, default=2024)
    parser.add_argument("--queries", type=int, default=None, help="random get() queries (1000)")
    parser.add_argument("--minute-sessions", type=int, default=None,
                        help="limit the minute-bar year to its last N sessions (all)")
    parser.add_argument("--sync-symbols", type=int, default=None, help="symbols of the no-op re-sync (100)")
    parser.add_argument("--noop-reps", type=int, default=None, help="no-op re-syncs per engine (20)")
    parser.add_argument("--writers", default=None, help="writer process counts, comma-separated (1,4,8)")
    parser.add_argument("--writer-transactions", type=int, default=None, help="set_many calls per writer (400)")
    parser.add_argument("--writer-rounds", type=int, default=None, help="runs per writer count and engine, best kept (2)")
    parser.add_argument("--writer-bars", type=int, default=None, help="bars per series per call (10)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", type=Path, default=None, help="parent folder of the temporary files")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    try:
        writers = tuple(int(n) for n in pick(args.writers, "1,4,8", "1,4,8").split(","))
    except ValueError:
        parser.error(f"--writers takes counts separated by commas, such as 1,4,8; got {args.writers!r}")
    if not writers or min(writers) < 1:
        parser.error("--writers: every count must be >= 1")
    return run(
        symbols=pick(args.symbols, 100, 10),
        first_year=pick(args.first_year, 2015, args.last_year),
        last_year=args.last_year,
        queries=pick(args.queries, 1000, 50),
        seed=args.seed,
        workdir=args.workdir,
        minute_sessions=pick(args.minute_sessions, None, 5),
        repeat=3 if quick else 7,
        noop_reps=pick(args.noop_reps, 20, 3),
        sync_symbols=pick(args.sync_symbols, 100, 5),
        writers=writers,
        writer_transactions=pick(args.writer_transactions, 400, 5),
        writer_rounds=pick(args.writer_rounds, 2, 1),
        writer_bars=pick(args.writer_bars, 10, 5),
    )


if __name__ == "__main__":
    main()
