"""Backfills that resume: a long sync cut into idempotent chunks.

A backfill of 500 symbols x 5 years of 1-minute bars (about 245 M bars, at least 24,500 requests
of 10,000 rows, two hours at Alpaca's 200 requests/min) will meet a failure somewhere. So:

1. :func:`plan_backfill` cuts ``symbols x [start, end]`` into :class:`BackfillChunk` s sized by
   the vendor's page: each chunk is expected to hold at most ``rows_per_page * pages_per_chunk``
   rows (:data:`VENDOR_PAGE_ROWS` = 10,000 on Alpaca; :data:`REGULAR_SESSION_MINUTES` = 390
   one-minute bars a session). The plan depends on the parameters only, never on what the cache
   holds, so a rerun with the same parameters plans the same chunks.
2. :func:`run_backfill` runs the chunks one after another through the gap-aware
   :func:`cachelib.sync.sync_bars`, which writes each source call's bars and coverage in one
   transaction. A chunk whose sessions are all covered makes no request ("skipped"); a chunk cut
   short by a failure keeps what it wrote. A rerun therefore fetches exactly what is missing, and
   a run after a complete one makes no request at all.
3. A failure stops the run with :class:`BackfillError`, which carries the
   :class:`BackfillReport` of the work done so far (and says to rerun).

Chunks run in order, not in parallel: they share the vendor's per-key request budget.

>>> plan = plan_backfill(["AAPL", "MSFT"], "2024-01-01", "2024-03-31", "1Min")
>>> len(plan.chunks), plan.expected_requests, plan.minimum_requests
(1, 5, 5)
>>> report = run_backfill(cache, DemoSource(), plan)          # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from .bars import normalize_symbols, parse_timeframe, to_date
from .market_hours import sessions_in_range
from .store import TradingCacheManager
from .sync import Rejection, SyncReport, sync_bars

__all__ = [
    "VENDOR_PAGE_ROWS",
    "REGULAR_SESSION_MINUTES",
    "DEFAULT_PAGES_PER_CHUNK",
    "BackfillChunk",
    "BackfillPlan",
    "ChunkResult",
    "BackfillReport",
    "BackfillError",
    "bars_per_session",
    "plan_backfill",
    "run_backfill",
]

#: Rows per page of Alpaca's ``/v2/stocks/bars`` (its largest ``limit``).
VENDOR_PAGE_ROWS = 10_000
#: One-minute bars in a regular session (09:30-16:00 ET). Extended hours, where a vendor serves
#: them, add pages the plan does not count; early closes remove some.
REGULAR_SESSION_MINUTES = 390
#: Pages one chunk is sized for: 100,000 minute bars (about a year of one symbol), so a failure
#: costs at most ten requests' worth of work, and the rows of a chunk stay well inside
#: :data:`cachelib.sync.MAX_ROWS_PER_CALL` (one source call per chunk).
DEFAULT_PAGES_PER_CHUNK = 10
#: Rejected rows a :class:`BackfillReport` lists (the counts by reason stay whole).
MAX_REJECTIONS_LISTED = 100


def bars_per_session(timeframe: str) -> int:
    """Bars one regular session is expected to hold in ``timeframe`` (1 for daily and longer).

    >>> bars_per_session("1Min"), bars_per_session("5Min"), bars_per_session("1Hour"), bars_per_session("1Day")
    (390, 78, 7, 1)
    """
    tf = parse_timeframe(timeframe)
    if not tf.is_intraday or not tf.seconds:
        return 1
    return math.ceil(REGULAR_SESSION_MINUTES * 60 / tf.seconds)


@dataclass(frozen=True)
class BackfillChunk:
    """One unit of a backfill: ``symbols`` over the sessions ``first`` .. ``last``."""

    index: int  # 1-based position in the plan
    symbols: tuple[str, ...]
    first: date
    last: date
    sessions: int
    expected_rows: int
    #: Requests for an empty cache: the rows in pages (a request answers even when empty).
    expected_requests: int

    def describe(self) -> str:
        """``AAPL,MSFT 2024-01-02..2024-12-31`` (at most three symbols named)."""
        names = ",".join(self.symbols[:3]) + (f" +{len(self.symbols) - 3}" if len(self.symbols) > 3 else "")
        return f"{names} {self.first.isoformat()}..{self.last.isoformat()}"


@dataclass(frozen=True)
class BackfillPlan:
    """The chunks of one backfill, in the order they run (session ranges, then symbols)."""

    symbols: tuple[str, ...]
    start: date
    end: date
    timeframe: str
    sessions: int
    bars_per_session: int
    rows_per_page: int
    pages_per_chunk: int
    chunks: tuple[BackfillChunk, ...]

    @property
    def expected_rows(self) -> int:
        return sum(c.expected_rows for c in self.chunks)

    @property
    def expected_requests(self) -> int:
        """Requests the chunks make on an empty cache (each chunk pages on its own)."""
        return sum(c.expected_requests for c in self.chunks)

    @property
    def minimum_requests(self) -> int:
        """The fewest requests the page size allows for these rows, however they are cut."""
        return max(1, math.ceil(self.expected_rows / self.rows_per_page)) if self.chunks else 0

    def projected_minutes(self, requests_per_minute: float, requests: int | None = None) -> float:
        """Minutes ``requests`` (default: :attr:`expected_requests`) take at a request budget of
        ``requests_per_minute`` (Alpaca's free plan: 200): the floor the rate limit sets."""
        if requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be > 0, got {requests_per_minute!r}")
        return (self.expected_requests if requests is None else requests) / requests_per_minute


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def _even_cuts(n: int, most: int) -> list[tuple[int, int]]:
    """``range(n)`` cut into the fewest pieces of at most ``most`` items, of near-equal size
    (so the last piece is not a sliver that costs a request of its own)."""
    pieces = math.ceil(n / most)
    size, extra = divmod(n, pieces)
    cuts, lo = [], 0
    for i in range(pieces):
        hi = lo + size + (1 if i < extra else 0)
        cuts.append((lo, hi))
        lo = hi
    return cuts


def plan_backfill(
    symbols: str | Iterable[str],
    start: Any,
    end: Any,
    timeframe: str = "1Day",
    *,
    rows_per_page: int = VENDOR_PAGE_ROWS,
    pages_per_chunk: int = DEFAULT_PAGES_PER_CHUNK,
) -> BackfillPlan:
    """Cut ``symbols x`` the XNYS sessions of ``[start, end]`` into chunks of at most
    ``rows_per_page * pages_per_chunk`` expected rows.

    When one symbol's whole range fits in a chunk, a chunk holds as many symbols as fit (the
    vendor pages through several symbols in one request); otherwise each symbol's range is cut
    into near-equal session ranges. Depends only on its arguments (and the calendar).

    >>> plan = plan_backfill(["AAPL", "MSFT", "SPY"], "2024-01-01", "2024-12-31", "1Day")
    >>> [(c.symbols, c.sessions, c.expected_requests) for c in plan.chunks]
    [(('AAPL', 'MSFT', 'SPY'), 252, 1)]
    """
    syms = tuple(normalize_symbols(symbols))
    if not syms:
        raise ValueError("no symbols to backfill: give at least one ticker, e.g. SPY")
    tf = parse_timeframe(timeframe)
    first, last = to_date(start, "start"), to_date(end, "end")
    if first > last:
        raise ValueError(f"start {first.isoformat()} is after end {last.isoformat()}")
    page = _positive(rows_per_page, "rows_per_page")
    budget = page * _positive(pages_per_chunk, "pages_per_chunk")
    per_session = bars_per_session(tf.name)
    days = sessions_in_range(first, last)
    chunks: list[BackfillChunk] = []

    def add(group: tuple[str, ...], lo: int, hi: int) -> None:
        rows = len(group) * (hi - lo) * per_session
        chunks.append(BackfillChunk(len(chunks) + 1, group, days[lo], days[hi - 1], hi - lo, rows,
                                    max(1, math.ceil(rows / page))))

    if days:
        symbol_rows = len(days) * per_session
        if symbol_rows <= budget:  # whole ranges, several symbols a chunk
            for lo, hi in _even_cuts(len(syms), max(1, budget // symbol_rows)):
                add(syms[lo:hi], 0, len(days))
        else:  # one symbol a chunk, its range cut into session ranges
            for lo, hi in _even_cuts(len(days), max(1, budget // per_session)):
                for sym in syms:
                    add((sym,), lo, hi)
    return BackfillPlan(syms, first, last, tf.name, len(days), per_session, page,
                        budget // page, tuple(chunks))


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk did, handed to the progress callback after it ran."""

    chunk: BackfillChunk
    total: int  # chunks in the plan
    #: "fetched": the chunk asked the source for something; "skipped": all of it was cached.
    status: Literal["fetched", "skipped"]
    requests: int
    rows_written: int
    rows_rejected: int


@dataclass
class BackfillReport:
    """What :func:`run_backfill` did (so far, when it stopped on a failure).

    ``requests`` counts every HTTP request the source made, retries and failed ones included;
    ``rejection_counts`` counts rejected rows by reason, ``rejections`` lists the first
    :data:`MAX_REJECTIONS_LISTED` of them.
    """

    source: str
    feed: str
    timeframe: str
    symbols: tuple[str, ...]
    start: date
    end: date
    chunks_total: int
    chunks_fetched: int = 0
    chunks_skipped: int = 0
    chunks_failed: int = 0
    requests: int = 0
    sessions_fetched: int = 0
    rows_fetched: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rejection_counts: dict[str, int] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    expected_requests: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def chunks_done(self) -> int:
        """Chunks finished, fetched or skipped."""
        return self.chunks_fetched + self.chunks_skipped

    @property
    def complete(self) -> bool:
        return self.error is None and self.chunks_done == self.chunks_total

    def add(self, part: SyncReport) -> None:
        """Count one chunk's sync report in."""
        self.sessions_fetched += part.sessions_fetched
        self.rows_fetched += part.rows_fetched
        self.rows_written += part.rows_written
        self.rows_rejected += part.rows_rejected
        for reason, n in part.rejection_counts.items():
            self.rejection_counts[reason] = self.rejection_counts.get(reason, 0) + n
        room = MAX_REJECTIONS_LISTED - len(self.rejections)
        if room > 0:
            self.rejections.extend(part.rejections[:room])

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-friendly values (dates as ISO strings)."""
        out = dict(self.__dict__)
        out["symbols"] = list(self.symbols)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        out["chunks_done"], out["complete"] = self.chunks_done, self.complete
        return out


class BackfillError(RuntimeError):
    """A chunk failed; ``report`` holds the work done before it (which stays in the cache)."""

    def __init__(self, message: str, report: BackfillReport) -> None:
        super().__init__(message)
        self.report = report


def _requests(source: Any) -> int:
    return int(getattr(source, "requests_made", 0) or 0)


def run_backfill(
    cache: TradingCacheManager,
    source: Any,
    plan: BackfillPlan,
    *,
    asset_type: str = "stock",
    now: datetime | None = None,
    progress: Callable[[ChunkResult], None] | None = None,
) -> BackfillReport:
    """Run ``plan`` chunk by chunk through :func:`~cachelib.sync.sync_bars`; return the report.

    ``progress(result)`` is called after each chunk. A chunk that raises stops the run with
    :class:`BackfillError` (the cause chained), whose ``report`` counts the chunks done before
    it: their bars and coverage are in the cache, so running the same plan again fetches only
    what is missing.
    """
    t0 = time.perf_counter()
    feed = getattr(source, "feed_name", None)
    report = BackfillReport(source=str(getattr(source, "name", "?")), feed=str(feed or "unknown"),
                            timeframe=plan.timeframe, symbols=plan.symbols, start=plan.start, end=plan.end,
                            chunks_total=len(plan.chunks), expected_requests=plan.expected_requests)
    before = _requests(source)
    for chunk in plan.chunks:
        at_start = _requests(source)
        try:
            part = sync_bars(cache, source, list(chunk.symbols), chunk.first, chunk.last,
                             timeframe=plan.timeframe, asset_type=asset_type, now=now)
        except Exception as exc:
            report.chunks_failed = 1
            report.requests = _requests(source) - before
            report.seconds = time.perf_counter() - t0
            report.error = (
                f"chunk {chunk.index} of {len(plan.chunks)} ({chunk.describe()}) failed: {exc}; "
                f"{report.chunks_done} chunk(s) before it are in the cache: run the same backfill "
                "again to fetch only what is missing"
            )
            raise BackfillError(report.error, report) from exc
        report.feed = part.feed
        report.add(part)
        status: Literal["fetched", "skipped"] = "fetched" if part.calls else "skipped"
        if part.calls:
            report.chunks_fetched += 1
        else:
            report.chunks_skipped += 1
        report.requests = _requests(source) - before
        if progress is not None:
            progress(ChunkResult(chunk, len(plan.chunks), status, _requests(source) - at_start,
                                 part.rows_written, part.rows_rejected))
    report.seconds = time.perf_counter() - t0
    return report
