"""Gap-aware sync from a market-data source into the cache, and the live daily bar.

``sync_bars`` asks the source only for what the cache lacks:

1. The XNYS calendar lists the sessions in ``[start, end]`` (weekends and holidays never
   exist, so they are never requested). Sessions still in the future are dropped; for daily
   bars so is today's session until it has closed (an in-progress daily bar is not a bar).
2. ``cache.missing_sessions_many`` removes sessions already covered (fetched before, whether
   they had bars or not, and not yet expired by the TTL rule) *by this source's feed*
   (``source.feed_name``; ``"unknown"`` for a source without one): bars and coverage are
   written under that feed, so IEX coverage never answers for SIP.
3. Each symbol's missing sessions form contiguous runs (contiguous in the *session* calendar).
   Symbols with the same run share one request: the source pages through all of them, so 100
   symbols × 1 year of daily bars is ⌈25,200 / 10,000⌉ = 3 HTTP requests on Alpaca. Very long
   runs are cut into chunks of at most :data:`MAX_ROWS_PER_CALL` expected rows, so a decade of
   minute bars never sits in memory at once.
4. Every row is validated (:func:`cachelib.bars.split_valid_rows`); bad rows are reported in the
   :class:`SyncReport` and never stored. Each symbol's rows and its coverage records are written
   in one transaction.
5. Coverage is recorded for every *finished* session that was fetched, including sessions
   that returned no bars (a halted stock, a late listing), so the next identical call makes no
   request at all. An unfinished session (today, intraday) is stored but not marked covered,
   and so is a session with a rejected row (the next sync asks for it again).

``get_market_data`` is the cache-first read most callers want, with today's in-progress daily
bar built from today's minute bars during regular hours (and never written to the cache).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from . import market_hours
from .bars import (
    BAR_COLUMNS,
    empty_bars,
    normalize_symbols,
    parse_timeframe,
    session_day_numbers,
    split_valid_rows,
    to_date,
)
from .clock import now_utc
from .store import TradingCacheManager
from .store.series import UNKNOWN_FEED, norm_feed

__all__ = [
    "SyncReport",
    "SymbolSync",
    "Rejection",
    "OptionSyncReport",
    "CorporateActionSyncReport",
    "sync_corporate_actions",
    "sync_bars",
    "sync_option_chains",
    "get_market_data",
    "build_live_bar",
    "MAX_ROWS_PER_CALL",
    "ACTION_LOOKAHEAD",
]

log = logging.getLogger("cachelib.sync")

#: How far past its bars a scheduled run asks for corporate actions. Announcements come
#: before the ex-date (that is why recent and future days' action coverage lives 24 h): splits
#: are announced weeks ahead, and a quarterly dividend is declared within the quarter before
#: its ex-date, so 90 days catch every announced action of the next quarter. The flows sync
#: ``[start, end + ACTION_LOOKAHEAD]``.
ACTION_LOOKAHEAD = timedelta(days=90)

#: Upper bound on the rows one ``get_bars`` call is expected to return (memory bound).
MAX_ROWS_PER_CALL = 500_000
#: Minute bars a full session can have, pre- and after-hours included (04:00-20:00 ET).
_EXTENDED_MINUTES = 960
SETTLE_DELAY = market_hours.SETTLE_DELAY
_EPOCH = date(1970, 1, 1)


class SymbolSync(TypedDict):
    """One symbol's counts in a :class:`SyncReport`."""

    sessions_fetched: int
    rows_fetched: int
    rows_written: int
    rows_rejected: int


class Rejection(TypedDict):
    """One row refused by validation: its symbol, bar time (ISO) and the reason."""

    symbol: str
    time: str
    reason: str


def _no_symbol_counts() -> SymbolSync:
    return {"sessions_fetched": 0, "rows_fetched": 0, "rows_written": 0, "rows_rejected": 0}


#: The integer totals of a :class:`SyncReport` (summed by :meth:`SyncReport.merge`).
_TOTALS = ("sessions_requested", "sessions_fetched", "requests_made", "rows_fetched", "rows_written",
           "rows_rejected", "calls")


@dataclass
class SyncReport:
    """What one ``sync_bars`` call did. "Sessions" count (symbol, session) pairs.

    ``rejections`` lists rejected rows (possibly capped, see :meth:`capped`);
    ``rejection_counts`` counts every rejected row by reason, capped or not.
    """

    source: str
    timeframe: str
    symbols: list[str]
    start: date
    end: date
    sessions_requested: int = 0
    sessions_fetched: int = 0
    requests_made: int = 0
    rows_fetched: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    rejection_counts: dict[str, int] = field(default_factory=dict)
    per_symbol: dict[str, SymbolSync] = field(default_factory=dict)
    calls: int = 0
    seconds: float = 0.0
    #: The source's feed the bars and coverage were filed under.
    feed: str = UNKNOWN_FEED
    #: Per symbol, the sessions fetched by this call, as runs ``(first, last)`` of the session
    #: calendar (a few runs, whatever the length of a backfill); with :attr:`rejected_sessions`
    #: and :attr:`unfinished_sessions` it is what a coverage map draws (:mod:`cachelib.pictures`).
    fetched_runs: dict[str, list[tuple[date, date]]] = field(default_factory=dict)
    #: Per symbol, the sessions with a rejected row: stored in part, not marked covered.
    rejected_sessions: dict[str, list[date]] = field(default_factory=dict)
    #: Sessions of ``[start, end]`` not finished yet, hence not covered (daily bars: not asked for;
    #: intraday: today's bars so far are fetched, the session is not settled).
    unfinished_sessions: list[date] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-friendly values (dates as ISO strings)."""
        out = dict(self.__dict__)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return out

    def rejection_reasons(self) -> dict[str, int]:
        """How many rows were rejected for each reason."""
        return dict(self.rejection_counts)

    def reject(self, symbol: str, when: str, reason: str) -> None:
        """Record one rejected row of ``symbol`` (the per-symbol and total counts too)."""
        self.rejections.append({"symbol": symbol, "time": when, "reason": reason})
        self.rejection_counts[reason] = self.rejection_counts.get(reason, 0) + 1
        self.per_symbol.setdefault(symbol, _no_symbol_counts())["rows_rejected"] += 1
        self.rows_rejected += 1

    def capped(self, max_rejections: int) -> SyncReport:
        """A copy listing at most ``max_rejections`` rejected rows (the counts stay whole):
        what a job hands on, so that a vendor's bad day does not flood a result."""
        return replace(self, rejections=self.rejections[:max_rejections],
                       rejection_counts=dict(self.rejection_counts),
                       per_symbol={k: SymbolSync(**v) for k, v in self.per_symbol.items()},
                       fetched_runs={k: list(v) for k, v in self.fetched_runs.items()},
                       rejected_sessions={k: list(v) for k, v in self.rejected_sessions.items()},
                       unfinished_sessions=list(self.unfinished_sessions))

    @classmethod
    def merge(cls, reports: Sequence[SyncReport], max_rejections: int | None = None) -> SyncReport:
        """One report for several calls of the same source and timeframe (a chunked backfill):
        counts summed, per-symbol counts summed, the range spanning all of them.

        >>> a = SyncReport("demo", "1Day", ["AAPL"], date(2024, 1, 2), date(2024, 1, 31), rows_written=21)
        >>> b = SyncReport("demo", "1Day", ["AAPL"], date(2024, 2, 1), date(2024, 2, 29), rows_written=20)
        >>> m = SyncReport.merge([a, b]); (m.start, m.end, m.rows_written)
        (datetime.date(2024, 1, 2), datetime.date(2024, 2, 29), 41)
        """
        if not reports:
            raise ValueError("no reports to merge")
        first = reports[0]
        symbols = list(dict.fromkeys(sym for r in reports for sym in r.symbols))
        out = cls(source=first.source, timeframe=first.timeframe, symbols=symbols,
                  start=min(r.start for r in reports), end=max(r.end for r in reports), feed=first.feed)
        for r in reports:
            for name in _TOTALS:
                setattr(out, name, getattr(out, name) + getattr(r, name))
            out.seconds += r.seconds
            for sym, counts in r.per_symbol.items():
                acc = out.per_symbol.setdefault(sym, _no_symbol_counts())
                acc["sessions_fetched"] += counts["sessions_fetched"]
                acc["rows_fetched"] += counts["rows_fetched"]
                acc["rows_written"] += counts["rows_written"]
                acc["rows_rejected"] += counts["rows_rejected"]
            for reason, n in r.rejection_counts.items():
                out.rejection_counts[reason] = out.rejection_counts.get(reason, 0) + n
            out.rejections.extend(r.rejections)
            for sym, runs in r.fetched_runs.items():
                out.fetched_runs.setdefault(sym, []).extend(runs)
            for sym, days in r.rejected_sessions.items():
                out.rejected_sessions.setdefault(sym, []).extend(days)
            out.unfinished_sessions = sorted({*out.unfinished_sessions, *r.unfinished_sessions})
        if max_rejections is not None:
            del out.rejections[max_rejections:]
        return out


@dataclass
class OptionSyncReport:
    """What one ``sync_option_chains`` call stored."""

    source: str
    rows_per_underlying: dict[str, int] = field(default_factory=dict)
    trading_dates: dict[str, str] = field(default_factory=dict)
    requests_made: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def rows_written(self) -> int:
        return sum(self.rows_per_underlying.values())

    @property
    def underlyings(self) -> list[str]:
        return list(self.rows_per_underlying)

    @classmethod
    def merge(cls, reports: Sequence[OptionSyncReport]) -> OptionSyncReport:
        """One report for several snapshot calls (one per underlying, run in parallel).

        >>> a = OptionSyncReport("demo", {"AAPL": 3}, {"AAPL": "2025-11-26"}, requests_made=1)
        >>> b = OptionSyncReport("demo", {"SPY": 2}, {"SPY": "2025-11-26"}, requests_made=1)
        >>> m = OptionSyncReport.merge([a, b]); (m.rows_written, m.requests_made, m.underlyings)
        (5, 2, ['AAPL', 'SPY'])
        """
        out = cls(source=reports[0].source if reports else "")
        for r in reports:
            out.rows_per_underlying.update(r.rows_per_underlying)
            out.trading_dates.update(r.trading_dates)
            out.failures.update(r.failures)
            out.requests_made += r.requests_made
        return out


def _requests(source: Any) -> int:
    return int(getattr(source, "requests_made", 0) or 0)


def _source_name(source: Any) -> str:
    name = getattr(source, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError("source must be a MarketDataSource with a non-empty .name")
    return name


def _feed_name(source: Any) -> str:
    """The feed a source's bars are filed under: its ``feed_name`` (``"iex"``, ``"sip"``,
    ``"demo"``...), or ``"unknown"`` for a source that does not say."""
    feed = getattr(source, "feed_name", None)
    return UNKNOWN_FEED if feed is None else norm_feed(feed)


def _eligible_sessions(first: date, last: date, intraday: bool, now: datetime) -> tuple[list[date], set[date]]:
    """Sessions worth asking for, and the subset that is finished (coverable)."""
    sessions = market_hours.sessions_in_range(first, last)
    eligible: list[date] = []
    finished: set[date] = set()
    for day in sessions:
        open_utc, close_utc = market_hours.session_bounds(day)
        if now >= close_utc + SETTLE_DELAY:
            eligible.append(day)
            finished.add(day)
        elif intraday and now >= open_utc:
            eligible.append(day)  # today's completed minute bars are final; the day is not
    return eligible, finished


def _runs(days: list[date], position: dict[date, int]) -> list[tuple[date, date, int]]:
    """Contiguous runs ``(first, last, n_sessions)`` of ``days`` in the session calendar."""
    runs: list[tuple[date, date, int]] = []
    for day in days:
        if runs and position[day] == position[runs[-1][1]] + 1:
            first, _, n = runs[-1]
            runs[-1] = (first, day, n + 1)
        else:
            runs.append((day, day, 1))
    return runs


def _bars_per_session(timeframe: str) -> int:
    tf = parse_timeframe(timeframe)
    if not tf.is_intraday or not tf.seconds:
        return 1
    return max(1, _EXTENDED_MINUTES * 60 // tf.seconds)


def sync_bars(
    cache: TradingCacheManager,
    source: Any,
    symbols: str | Iterable[str],
    start: Any,
    end: Any,
    timeframe: str = "1Day",
    asset_type: str = "stock",
    now: datetime | None = None,
    progress: Any = None,
) -> SyncReport:
    """Fetch the sessions of ``symbols`` in ``[start, end]`` that the cache lacks; return a report.

    ``progress`` (optional) is called as ``progress(done_calls, total_calls)`` after each
    source call, for long backfills.

    >>> report = sync_bars(cache, DemoSource(), ["AAPL", "MSFT"], "2024-01-01", "2024-12-31")  # doctest: +SKIP
    >>> report.requests_made, report.rows_written                                             # doctest: +SKIP
    (1, 504)
    """
    t0 = time.perf_counter()
    if not isinstance(cache, TradingCacheManager):
        raise ValueError(f"cache must be a TradingCacheManager, got {type(cache).__name__}")
    src_name = _source_name(source)
    feed = _feed_name(source)
    syms = normalize_symbols(symbols)
    if not syms:
        raise ValueError("no symbols to sync")
    tf = parse_timeframe(timeframe)
    from .sources import check_timeframe

    tf_name = check_timeframe(tf.name)
    first, last = to_date(start), to_date(end)
    if first > last:
        raise ValueError(f"start {start!r} is after end {end!r}")
    clock = now_utc(now)
    report = SyncReport(source=src_name, timeframe=tf_name, symbols=syms, start=first, end=last, feed=feed)
    for sym in syms:
        report.per_symbol[sym] = _no_symbol_counts()

    eligible, finished = _eligible_sessions(first, last, tf.is_intraday, clock)
    report.sessions_requested = len(eligible) * len(syms)
    report.unfinished_sessions = [d for d in market_hours.sessions_in_range(first, last) if d not in finished]
    if not eligible:
        report.seconds = time.perf_counter() - t0
        return report
    missing = cache.missing_sessions_many(syms, eligible[0], eligible[-1], tf_name, src_name, asset_type,
                                          feed=feed)
    eligible_set = set(eligible)
    position = {day: i for i, day in enumerate(eligible)}

    # Group symbols by identical runs of missing sessions; cut runs into bounded chunks.
    groups: dict[tuple[date, date, int], list[str]] = defaultdict(list)
    for sym in syms:
        days = [d for d in missing[sym] if d in eligible_set]
        for run in _runs(days, position):
            groups[run].append(sym)
    calls: list[tuple[list[date], list[str]]] = []
    per_session = _bars_per_session(tf_name)
    for (run_first, _run_last, n), group_syms in sorted(groups.items()):
        run_days = eligible[position[run_first] : position[run_first] + n]
        sessions_per_call = max(1, MAX_ROWS_PER_CALL // (per_session * len(group_syms)))
        for i in range(0, n, sessions_per_call):
            calls.append((run_days[i : i + sessions_per_call], group_syms))

    before = _requests(source)
    for done, (days, group_syms) in enumerate(calls, start=1):
        frame = source.get_bars(group_syms, days[0], days[-1], timeframe=tf_name)
        report.calls += 1
        report.requests_made = _requests(source) - before
        _store_call(cache, report, frame, group_syms, days, finished, tf_name, src_name, asset_type, feed)
        if progress is not None:
            progress(done, len(calls))
    report.requests_made = _requests(source) - before
    report.seconds = time.perf_counter() - t0
    log.info(
        "sync %s %s from %s: %d/%d sessions fetched in %d request(s), %d rows written, %d rejected",
        tf_name, ",".join(syms[:5]) + ("..." if len(syms) > 5 else ""), src_name,
        report.sessions_fetched, report.sessions_requested, report.requests_made,
        report.rows_written, report.rows_rejected,
    )
    return report


def _store_call(
    cache: TradingCacheManager,
    report: SyncReport,
    frame: pd.DataFrame,
    symbols: list[str],
    days: list[date],
    finished: set[date],
    timeframe: str,
    source: str,
    asset_type: str,
    feed: str,
) -> None:
    """Validate one call's rows and write every symbol's bars and coverage (under ``feed``) in
    one transaction."""
    if frame is None or not isinstance(frame, pd.DataFrame):
        raise ValueError(f"source {source!r} returned {type(frame).__name__}, not a DataFrame")
    missing_cols = [c for c in ("open", "high", "low", "close") if c not in frame.columns]
    if missing_cols:
        raise ValueError(f"source {source!r} returned bars without {missing_cols}")
    wanted_nums = np.array([(d - _EPOCH).days for d in days], dtype=np.int64)
    by_symbol: dict[str, pd.DataFrame] = {}
    if len(frame):
        # One pass over the symbol level, not one string comparison per symbol.
        positions = frame.groupby(level="symbol", sort=False).indices
        for name, pos in positions.items():
            sym = str(name).upper()
            if sym in symbols:
                by_symbol[sym] = frame.iloc[pos].droplevel("symbol")
    tf = parse_timeframe(timeframe)
    goods: dict[str, pd.DataFrame] = {}
    coverage: list[tuple[str, list[date], dict[date, int]]] = []
    for sym in symbols:
        bars = by_symbol.get(sym)
        stats = report.per_symbol[sym]
        stats["sessions_fetched"] += len(days)
        report.sessions_fetched += len(days)
        report.fetched_runs.setdefault(sym, []).append((days[0], days[-1]))
        rows_per_day: dict[date, int] = defaultdict(int)
        tainted: set[date] = set()
        good = None
        if bars is not None and len(bars):
            stats["rows_fetched"] += len(bars)
            report.rows_fetched += len(bars)
            good, rejected = split_valid_rows(bars, tf)
            if rejected:
                # A session with a rejected row is incomplete: store its good rows but do not
                # mark it covered, so the next sync asks again (the vendor may fix the data).
                bad_times = pd.to_datetime([when for when, _ in rejected], utc=True, format="ISO8601")
                tainted = {_EPOCH + timedelta(days=int(n)) for n in session_day_numbers(bad_times)}
            # Bars of a session nobody asked for (a vendor's stray row) are not stored either.
            day_nums = session_day_numbers(good.index)
            inside = np.isin(day_nums, wanted_nums)
            for t in good.index[~inside]:
                rejected.append((pd.Timestamp(t).isoformat(), "outside the requested sessions"))
            good = good[inside]
            nums, counts = np.unique(day_nums[inside], return_counts=True)
            for n, k in zip(nums.tolist(), counts.tolist(), strict=True):
                rows_per_day[_EPOCH + timedelta(days=n)] = k
            for when, reason in rejected:
                report.reject(sym, when, reason)
        if good is not None and len(good):
            goods[sym] = good
        if tainted:
            report.rejected_sessions.setdefault(sym, []).extend(sorted(tainted))
        done_days = [d for d in days if d in finished and d not in tainted]
        if done_days:
            coverage.append((sym, done_days, rows_per_day))
    with cache.atomic():
        cache.set_many(goods, source=source, asset_type=asset_type, timeframe=timeframe, feed=feed)
        for sym, done_days, rows_per_day in coverage:
            cache.record_coverage(sym, done_days, source=source, timeframe=timeframe,
                                  asset_type=asset_type, rows_per_session=rows_per_day, feed=feed)
    for sym, good in goods.items():  # set_many wrote every validated row
        report.per_symbol[sym]["rows_written"] += len(good)
        report.rows_written += len(good)


def sync_option_chains(
    cache: TradingCacheManager,
    source: Any,
    underlyings: str | Iterable[str],
    expiration_gte: Any = None,
    expiration_lte: Any = None,
) -> OptionSyncReport:
    """Store one snapshot of each underlying's option chain (the source's latest quotes).

    The snapshot is filed under the New York trading date of its quote time; a later
    snapshot of the same day replaces the earlier one contract by contract.
    """
    src_name = _source_name(source)
    names = normalize_symbols(underlyings)
    if not names:
        raise ValueError("no underlyings to snapshot")
    report = OptionSyncReport(source=src_name)
    before = _requests(source)
    for underlying in names:
        chain = source.get_option_chain(underlying, expiration_gte=expiration_gte, expiration_lte=expiration_lte)
        if chain is None or len(chain) == 0:
            report.rows_per_underlying[underlying] = 0
            continue
        snap = pd.Timestamp(chain["snapshot_time"].max())
        snap = snap.tz_localize("UTC") if snap.tzinfo is None else snap.tz_convert("UTC")
        trading_date = market_hours.session_date(snap)
        prices = pd.to_numeric(chain.get("underlying_price"), errors="coerce") if "underlying_price" in chain else None
        spot = None
        if prices is not None and prices.notna().any():
            spot = float(prices.dropna().iloc[0])
        rows = cache.store_raw_options(
            underlying, trading_date, chain, underlying_price=spot, source=src_name,
            snapshot_time=snap.to_pydatetime(warn=False),
        )
        report.rows_per_underlying[underlying] = rows
        report.trading_dates[underlying] = trading_date.isoformat()
    report.requests_made = _requests(source) - before
    return report


# ---------------------------------------------------------------------------
# Corporate actions
# ---------------------------------------------------------------------------


@dataclass
class CorporateActionSyncReport:
    """What one ``sync_corporate_actions`` call did: the request span (``fetched_start`` to
    ``fetched_end``, None when nothing was missing), the symbols asked about, the requests
    the source made and the action rows written."""

    source: str
    symbols: list[str]
    start: date
    end: date
    symbols_fetched: list[str] = field(default_factory=list)
    fetched_start: date | None = None
    fetched_end: date | None = None
    requests_made: int = 0
    actions_written: int = 0
    seconds: float = 0.0
    #: Stored actions of the source the answer no longer holds (cancelled, or moved to another
    #: date or type), removed so an adjusted read never applies a withdrawn action.
    actions_removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-friendly values (dates as ISO strings)."""
        out = dict(self.__dict__)
        for name in ("start", "end", "fetched_start", "fetched_end"):
            value = out[name]
            out[name] = None if value is None else value.isoformat()
        out["symbols_fetched"] = list(self.symbols_fetched)
        return out


def sync_corporate_actions(
    cache: TradingCacheManager,
    source: Any,
    symbols: str | Iterable[str],
    start: Any,
    end: Any,
) -> CorporateActionSyncReport:
    """Fetch the corporate actions of ``symbols`` with ex-dates in ``[start, end]`` that the
    cache's action coverage lacks; store them and their coverage in one transaction.

    Gap-aware like :func:`sync_bars`, with its own coverage and TTL
    (:func:`cachelib.store.ttl.action_expiry`: days older than 30 days settle for 10 years,
    recent and future days are asked again after 24 hours, since announcements arrive before
    the ex-date). The symbols with a missing range are asked in ONE
    ``source.get_corporate_actions`` call spanning the union of their gaps (the source batches
    the symbols and pages), so the request count stays at the minimum the page size allows.

    The answer is authoritative for what was asked: the source's stored actions of the fetched
    symbols over the fetched span are replaced by it
    (:meth:`~cachelib.store.TradingCacheManager.replace_corporate_actions`), so a corrected
    ex-date or a cancelled action leaves no stale row (``actions_removed`` counts those).

    >>> sync_corporate_actions(cache, DemoSource(), ["NVDA", "AAPL"], "2020-01-01", "2024-12-31")  # doctest: +SKIP
    CorporateActionSyncReport(source='demo', ..., requests_made=1, actions_written=21, ...)
    """
    t0 = time.perf_counter()
    if not isinstance(cache, TradingCacheManager):
        raise ValueError(f"cache must be a TradingCacheManager, got {type(cache).__name__}")
    src_name = _source_name(source)
    syms = normalize_symbols(symbols)
    if not syms:
        raise ValueError("no symbols to sync corporate actions for")
    first, last = to_date(start, "start"), to_date(end, "end")
    if first > last:
        raise ValueError(f"start {start!r} is after end {end!r}")
    report = CorporateActionSyncReport(source=src_name, symbols=syms, start=first, end=last)
    missing = cache.missing_action_ranges(syms, first, last, src_name)
    wanted = [sym for sym in syms if missing[sym]]
    if wanted:
        lo = min(missing[sym][0][0] for sym in wanted)
        hi = max(missing[sym][-1][1] for sym in wanted)
        before = _requests(source)
        frame = source.get_corporate_actions(wanted, lo, hi)
        report.requests_made = _requests(source) - before
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"source {src_name!r} returned {type(frame).__name__} for corporate "
                             "actions, not a DataFrame")
        with cache.atomic():
            # Rows and coverage under one source name, so the coverage vouches for these rows:
            # every wanted symbol was asked about all of [lo, hi], so the answer replaces all of it.
            report.actions_removed, report.actions_written = cache.replace_corporate_actions(
                wanted, lo, hi, frame, source=src_name)
            cache.record_action_coverage(wanted, lo, hi, src_name)
        report.symbols_fetched, report.fetched_start, report.fetched_end = wanted, lo, hi
    report.seconds = time.perf_counter() - t0
    log.info("corporate actions of %s from %s: %d symbol(s) fetched in %d request(s), %d action(s) written, "
             "%d withdrawn", ",".join(syms[:5]) + ("..." if len(syms) > 5 else ""), src_name,
             len(report.symbols_fetched), report.requests_made, report.actions_written, report.actions_removed)
    return report


# ---------------------------------------------------------------------------
# Cache-first read with the live bar
# ---------------------------------------------------------------------------


def build_live_bar(minute_bars: pd.DataFrame | None, day: date) -> pd.DataFrame:
    """Today's in-progress daily bar from its regular-session minute bars so far.

    Real open/high/low/close/volume: first open, max high, min low, last close, summed
    volume and trade count, volume-weighted vwap. Returns a one-row frame in the daily
    shape (index ``date``), or an empty one if no regular-session bar has completed.
    """
    open_utc, close_utc = market_hours.session_bounds(day)
    if minute_bars is None or minute_bars.empty:
        return empty_bars("1Day")
    # Compare epoch nanoseconds: robust to whatever datetime subclass the clock hands out.
    nanos = pd.DatetimeIndex(minute_bars.index).as_unit("ns").asi8
    lo, hi = int(open_utc.timestamp()) * 10**9, int(close_utc.timestamp()) * 10**9
    session = minute_bars[(nanos >= lo) & (nanos < hi)]
    if session.empty:
        return empty_bars("1Day")
    volume = session["volume"].to_numpy(dtype="float64")
    vwaps = session["vwap"].to_numpy(dtype="float64")
    usable = np.isfinite(vwaps) & (volume > 0)
    vwap = float((vwaps[usable] * volume[usable]).sum() / volume[usable].sum()) if usable.any() else np.nan
    counts = session["trade_count"]
    row = {
        "open": float(session["open"].iloc[0]),
        "high": float(session["high"].max()),
        "low": float(session["low"].min()),
        "close": float(session["close"].iloc[-1]),
        "volume": float(volume.sum()),
        "vwap": vwap,
        "trade_count": pd.array([int(counts.sum()) if counts.notna().any() else pd.NA], dtype="Int64"),
    }
    frame = pd.DataFrame(row, index=pd.DatetimeIndex([pd.Timestamp(day)], name="date"))
    return frame[list(BAR_COLUMNS)]


def _daily_bar_in_progress(today: date, now: datetime) -> bool:
    """Regular hours, or the settling minutes after the close before the daily bar is final
    (the sync does not fetch an unsettled daily bar, so the live bar bridges that gap)."""
    if market_hours.is_market_hours(now):
        return True
    if not market_hours.is_session(today):
        return False
    open_utc, close_utc = market_hours.session_bounds(today)
    return close_utc <= now < close_utc + SETTLE_DELAY


def get_market_data(
    symbol: str,
    start: Any,
    end: Any,
    timeframe: str = "1Day",
    source: Any = None,
    include_live: bool = True,
    cache: TradingCacheManager | None = None,
    now: datetime | None = None,
    feed: str | None = None,
    adjustment: str = "raw",
    as_of: Any = None,
) -> pd.DataFrame:
    """Bars of ``symbol`` in ``[start, end]``: cache first, gaps synced from ``source``.

    ``source`` is a :class:`~cachelib.sources.MarketDataSource` or a name for
    :func:`~cachelib.sources.get_source` (``None`` = ``"auto"``: Alpaca when keys are set, else
    the demo source). During regular market hours (and the 15 settling minutes after the
    close), for daily bars whose range includes today, today's in-progress bar is appended, built from today's minute bars so far, and marked with
    ``df.attrs["live_bar"] = True``. That bar is never written to the cache. The frame has the
    cache's index and columns either way (empty when nothing exists). The bars are those of
    the source's own feed (``AlpacaSource(feed="sip")`` reads the sip series only).
    ``feed`` (optional) names that feed: with a source name it goes to
    :func:`~cachelib.sources.get_source`; a source whose feed differs is a ValueError (never
    another feed's prices under the name asked for).

    ``adjustment`` (``"raw"``, ``"split"``, ``"dividend"``, ``"all"``) and ``as_of`` (a date,
    default today in New York) are those of :meth:`TradingCacheManager.get`. An adjusted read
    first syncs ``symbol``'s corporate actions from ``source`` over ``[start, as_of]``
    (gap-aware like the bars, so usually no request): the actions that can apply to these bars.
    An ``as_of`` after today is refused (a future dividend's factor needs a close that does not
    exist yet). The live bar is today's, on or after every ex-date applied, so it is never
    adjusted.

    >>> get_market_data("NVDA", "2024-06-03", "2024-06-14", source="demo", adjustment="split")  # doctest: +SKIP
    """
    from .corporate_actions import check_adjustment
    from .sources import get_source

    adjust = check_adjustment(adjustment)

    wanted = None if feed is None else norm_feed(feed)
    if source is None or isinstance(source, str):
        # Only Alpaca takes a feed (the demo has its one feed, "demo").
        by_name = {} if wanted is None or (source or "").strip().lower() == "demo" else {"feed": wanted}
        src = get_source(source or "auto", **by_name)
    else:
        src = source
    if wanted is not None and _feed_name(src) != wanted:
        raise ValueError(
            f"feed {wanted!r} was asked for, but source {_source_name(src)!r} serves feed "
            f"{_feed_name(src)!r}; pass a source of that feed (e.g. AlpacaSource(feed={wanted!r}))"
        )
    clock = now_utc(now)
    today = market_hours.today_et(clock)
    as_of_day = today if as_of is None else to_date(as_of, "as_of")
    if adjust != "raw" and as_of_day > today:
        raise ValueError(f"as_of {as_of_day} is after today ({today}): adjusted prices as of a future "
                         "date are not known yet; give as_of <= today, or leave it out")
    cache = cache if cache is not None else TradingCacheManager()
    tf = parse_timeframe(timeframe)
    sync_bars(cache, src, [symbol], start, end, timeframe=tf.name, now=clock)
    first = to_date(start, "start")
    if adjust != "raw" and first <= as_of_day:
        # Actions with ex-date in (first bar, as_of] are the ones that can adjust these bars.
        sync_corporate_actions(cache, src, [symbol], first, as_of_day)
    feed = _feed_name(src)  # read back what this source's feed holds, never another feed's bars
    frame = cache.get(symbol, start, end, source=src.name, timeframe=tf.name, feed=feed,
                      adjustment=adjust, as_of=as_of_day)
    frame = empty_bars(tf) if frame is None else frame
    frame.attrs["live_bar"] = False
    if include_live and not tf.is_intraday and tf.unit == "Day" and to_date(start) <= today <= to_date(end) \
            and _daily_bar_in_progress(today, clock):
        sync_bars(cache, src, [symbol], today, today, timeframe="1Min", now=clock)
        minutes = cache.get(symbol, today, today, source=src.name, timeframe="1Min", feed=feed)
        live = build_live_bar(minutes, today)
        if not live.empty:
            frame = frame[frame.index != pd.Timestamp(today)]
            frame = pd.concat([frame, live]) if len(frame) else live
            frame["trade_count"] = frame["trade_count"].astype("Int64")
            frame.index.name = "date"
            frame.attrs["live_bar"] = True
    return frame
