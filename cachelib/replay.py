"""Replay cached sessions through a strategy's tick flow and archive the trades.

Data flow: store (cached minute bars) -> tick flow (one fresh ``StrategyCache`` per session)
-> ``trade_history``. Each session is replayed on its own: indicators start empty every day
and any position still open at the close is closed at the last bar's close.

:func:`replay_days` reads the store :data:`BLOCK_SESSIONS` sessions at a time (one query and
one conversion to Python lists per block, never pandas per bar) and archives each block's
trades in one transaction.

Only the bars of the *regular* session ``[open, close)`` from :func:`session_bounds` are
replayed; extended-hours bars that may sit in the cache are left out, and an early close
simply has fewer bars.

Replaying is idempotent: before a session's trades are archived, the trades of that
(strategy, symbol) whose entry falls on that session date are deleted, and trade ids are
deterministic (``"{strategy}:{symbol}:{entry ISO UTC}"``), so a replay leaves exactly the
same rows whether it runs once or ten times.

>>> from cachelib.store import TradingCacheManager          # doctest: +SKIP
>>> from cachelib.demo import DemoSource                    # doctest: +SKIP
>>> cache = TradingCacheManager("cache.db")                 # doctest: +SKIP
>>> replay_days(cache, ["AAPL"], "2024-03-01", "2024-03-31", source=DemoSource())  # doctest: +SKIP
ReplaySummary(strategy='sma_crossover', sessions=21, trades=..., ...)
"""

from __future__ import annotations

import contextlib
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cachelib.bars import Timeframe, normalize_symbol, normalize_symbols, parse_timeframe, to_date
from cachelib.market_hours import is_session, is_session_finished, session_bounds, sessions_in_range
from cachelib.tick_flow import Strategy, Trade, get_strategy, run_session

if TYPE_CHECKING:  # the store is only used through its methods
    import pandas as pd

    from cachelib.store import TradingCacheManager

__all__ = ["MissingBarsError", "ReplaySummary", "replay_day", "replay_days", "session_bars"]

_UTC = timezone.utc


class MissingBarsError(ValueError):
    """The cache holds no bars for a session (and no source was given to fetch them)."""

    def __init__(self, symbol: str, day: date, timeframe: str, hint: str = "") -> None:
        self.symbol, self.day, self.timeframe = symbol, day, timeframe
        super().__init__(
            f"no {timeframe} bars cached for {symbol} in the session of {day.isoformat()}"
            + (f"; {hint}" if hint else "")
        )


@dataclass(frozen=True)
class ReplaySummary:
    """What :func:`replay_days` did.

    ``stats`` is ``cache.get_trade_stats(...)`` for the strategy (and the symbol, when a single
    symbol was replayed) after the replay: it covers all archived trades of that strategy, not
    only this date range. ``total_pnl``/``winning_trades`` are over this replay's trades only.
    """

    strategy: str
    symbols: tuple[str, ...]
    start: date
    end: date
    sessions: int  # finished calendar sessions in [start, end]
    sessions_replayed: int  # (symbol, session) pairs replayed
    bars: int
    trades: int
    winning_trades: int
    total_pnl: float
    trades_by_symbol: dict[str, int]
    missing: tuple[tuple[str, date], ...]  # (symbol, session) pairs skipped for lack of bars
    stats: dict[str, Any]
    elapsed_seconds: float
    sync_report: Any = field(default=None, repr=False)

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @classmethod
    def empty(cls, strategy: str, symbols: Iterable[str], start: date, end: date,
              stats: dict[str, Any] | None = None) -> ReplaySummary:
        """The summary of a replay that had no session to replay (none has finished yet)."""
        names = tuple(symbols)
        return cls(strategy=strategy, symbols=names, start=start, end=end, sessions=0, sessions_replayed=0,
                   bars=0, trades=0, winning_trades=0, total_pnl=0.0, trades_by_symbol=dict.fromkeys(names, 0),
                   missing=(), stats=stats or {}, elapsed_seconds=0.0)

    @classmethod
    def merge(cls, parts: Sequence[ReplaySummary], stats: dict[str, Any] | None = None) -> ReplaySummary:
        """One summary of several replays of one strategy (a fan-out per (symbol, session)).

        ``parts`` cover the same or disjoint date ranges: a session counted by two parts of
        the same range (two symbols, one day) counts once. ``stats`` replaces the parts' trade
        statistics (read them again after the last part archived its trades); by default the
        last part's are kept.
        """
        if not parts:
            raise ValueError("no replay summaries to merge")
        by_symbol: dict[str, int] = {}
        for p in parts:
            for symbol, n in p.trades_by_symbol.items():
                by_symbol[symbol] = by_symbol.get(symbol, 0) + n
        sessions_per_range = {(p.start, p.end): p.sessions for p in parts}
        return cls(
            strategy=parts[0].strategy,
            symbols=tuple(dict.fromkeys(s for p in parts for s in p.symbols)),
            start=min(p.start for p in parts),
            end=max(p.end for p in parts),
            sessions=sum(sessions_per_range.values()),
            sessions_replayed=sum(p.sessions_replayed for p in parts),
            bars=sum(p.bars for p in parts),
            trades=sum(p.trades for p in parts),
            winning_trades=sum(p.winning_trades for p in parts),
            total_pnl=sum(p.total_pnl for p in parts),
            trades_by_symbol=by_symbol,
            missing=tuple(m for p in parts for m in p.missing),
            stats=parts[-1].stats if stats is None else stats,
            elapsed_seconds=sum(p.elapsed_seconds for p in parts),
        )


def session_bars(
    frame: pd.DataFrame, start: datetime | None = None, end: datetime | None = None
) -> Iterator[tuple[datetime, float, float, float, float, float]]:
    """``(timestamp, open, high, low, close, volume)`` tuples of a bar frame, in index order.

    ``frame`` is indexed by a tz-aware UTC ``DatetimeIndex`` (the store's intraday shape).
    With ``start``/``end`` only bars with ``start <= timestamp < end`` are kept. Values are
    plain Python floats and ``datetime``s in UTC, ready for the tick flow's trusted path.
    """
    if start is not None or end is not None:
        frame = _between(frame, start, end)
    return zip(*_bar_columns(frame), strict=True)


_Columns = tuple[list[datetime], list[float], list[float], list[float], list[float], list[float]]


def _bar_columns(frame: pd.DataFrame) -> _Columns:
    """The frame's times (UTC ``datetime``) and open/high/low/close/volume as Python lists.

    Converted once per frame, column by column, so the replay never touches pandas per bar.
    """
    stamps: list[datetime] = frame.index.to_pydatetime().tolist()
    if stamps and stamps[0].tzinfo is not _UTC:  # one index, one time zone: check the first
        stamps = [ts.astimezone(_UTC) for ts in stamps]

    def column(name: str) -> list[float]:
        return frame[name].to_numpy(dtype=float).tolist()

    volume = frame["volume"].to_numpy(dtype=float)
    volume = np.where(np.isnan(volume), 0.0, volume)  # a missing volume counts as 0
    return stamps, column("open"), column("high"), column("low"), column("close"), volume.tolist()


def _between(frame: pd.DataFrame, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    """Rows with ``start <= timestamp < end`` of a frame sorted by its DatetimeIndex."""
    index = frame.index
    lo = 0 if start is None else index.searchsorted(start, side="left")
    hi = len(index) if end is None else index.searchsorted(end, side="left")
    return frame.iloc[lo:hi]


def _session_frame(
    cache: TradingCacheManager, symbol: str, day: date, timeframe: str, source: Any, synced: bool = False
) -> tuple[pd.DataFrame, datetime, datetime]:
    """The regular-session bars of ``symbol`` on ``day``; ``synced``: the range was synced already."""
    open_utc, close_utc = session_bounds(day)

    def read() -> pd.DataFrame | None:
        frame = cache.get(symbol, day, day, timeframe=timeframe)
        if frame is None or frame.empty:
            return None
        if not frame.index.is_monotonic_increasing:
            frame = frame.sort_index()
        inside = _between(frame, open_utc, close_utc)
        return None if inside.empty else inside

    frame = read()
    if frame is None and source is not None:
        _sync(cache, source, [symbol], day, day, timeframe)
        frame = read()
        synced = True
    if frame is None:
        raise _missing(symbol, day, timeframe, synced)
    return frame, open_utc, close_utc


def _intraday(timeframe: str) -> Timeframe:
    tf = parse_timeframe(timeframe)
    if not tf.is_intraday:
        raise ValueError(f"a session replay needs an intraday timeframe (e.g. 1Min), got {timeframe!r}")
    return tf


def _missing(symbol: str, day: date, timeframe: str, synced: bool) -> MissingBarsError:
    hint = "the source returned none either" if synced else "sync them first or pass source="
    return MissingBarsError(symbol, day, timeframe, hint)


#: Sessions read per store query in replay_days: about a month, ~8k minute bars (< 1 MB as
#: lists). One query per session cost more than the tick flow of the session's first bars.
BLOCK_SESSIONS = 21


def _block_sessions(
    cache: TradingCacheManager, symbol: str, days: Sequence[date], timeframe: str
) -> Iterator[tuple[date, int, Iterator[tuple[datetime, float, float, float, float, float]]]]:
    """``(day, bars, bar tuples)`` of the regular session of each of ``days`` (ascending
    sessions), read from the store in one query; ``bars`` is 0 for a session without bars."""
    frame = cache.get(symbol, days[0], days[-1], timeframe=timeframe)
    if frame is None or frame.empty:
        columns: _Columns = ([], [], [], [], [], [])
    else:
        if not frame.index.is_monotonic_increasing:
            frame = frame.sort_index()
        columns = _bar_columns(frame)
    stamps = columns[0]
    for day in days:
        open_utc, close_utc = session_bounds(day)
        lo = bisect_left(stamps, open_utc)
        hi = bisect_left(stamps, close_utc, lo)
        yield day, hi - lo, zip(*(col[lo:hi] for col in columns), strict=True)


def _sync(cache: Any, source: Any, symbols: list[str], start: date, end: date, timeframe: str) -> Any:
    try:
        from cachelib.sync import sync_bars  # imported late: sync is optional for replay
    except ImportError as exc:  # pragma: no cover - depends on the checkout
        raise RuntimeError(f"cannot fetch missing bars: cachelib.sync is unavailable ({exc})") from exc
    return sync_bars(cache, source, symbols, start, end, timeframe=timeframe)


def _replay(
    cache: TradingCacheManager,
    symbol: str,
    day: date,
    strategy: Strategy,
    timeframe: str,
    source: Any,
    synced: bool = False,
) -> tuple[list[Trade], int]:
    tf = _intraday(timeframe)
    if not is_session(day):
        raise ValueError(f"{day.isoformat()} is not an NYSE session")
    if not is_session_finished(day):
        # Its last bars are not in yet: a replay now would close positions at a mid-session
        # price and call it "session_close".
        raise ValueError(
            f"the session of {day.isoformat()} has not closed and settled yet; replay it after the close"
        )
    frame, _, _ = _session_frame(cache, symbol, day, tf.name, source, synced)
    trades = _run_session(symbol, day, strategy, tf.seconds, session_bars(frame))
    _archive_sessions(cache, symbol, strategy.name, [(day, trades)])
    return trades, len(frame)


def _run_session(
    symbol: str,
    day: date,
    strategy: Strategy,
    bar_seconds: int | None,
    bars: Iterable[tuple[datetime, float, float, float, float, float]],
) -> list[Trade]:
    """One session's bars (from the store) through the strategy: its closed trades."""
    return run_session(
        bars,
        strategy,
        symbol,
        bar_interval=timedelta(seconds=bar_seconds or 60),
        validate=False,  # bars were validated when they entered the store
        run_id=f"{strategy.name}:{symbol}:{day.isoformat()}",
        backtest_mode=True,
    )


def _archive_sessions(
    cache: TradingCacheManager, symbol: str, strategy_name: str, sessions: Sequence[tuple[date, list[Trade]]]
) -> None:
    """Replace the archived trades of each replayed ``(session, trades)`` with ``trades``.

    Idempotent: whatever an earlier replay of a session archived is dropped, then the trades
    are upserted; all in one transaction where the store offers one, so a reader never sees a
    half-replayed session (one commit per block of sessions, not per session: commits were
    ~4% of a replay). The block's trades are archived in one batch (``archive_trades``:
    ~1/5 of the per-trade cost); dropping every session first is the same as session by
    session, since a session's trades all enter in that session.
    """
    if not sessions:
        return
    atomic = getattr(cache, "atomic", None)
    with atomic() if atomic is not None else contextlib.nullcontext():
        for day, _ in sessions:
            cache.delete_trades(symbol=symbol, start=day, end=day, strategy=strategy_name)
        cache.archive_trades([trade for _, trades in sessions for trade in trades])


def replay_day(
    cache: TradingCacheManager,
    symbol: str,
    day: date | str,
    strategy: str | Strategy | None = None,
    timeframe: str = "1Min",
    source: Any = None,
) -> list[Trade]:
    """Replay one session of ``symbol`` from the cache through ``strategy``; archive its trades.

    Missing bars are synced from ``source`` first when one is given; otherwise
    :class:`MissingBarsError` (a ``ValueError``) names the session and symbol.
    ``strategy`` is a registered name, a :class:`~cachelib.tick_flow.Strategy`, or ``None``
    for ``sma_crossover``. Returns the session's closed trades (also in ``trade_history``).

    >>> trades = replay_day(cache, "AAPL", "2024-03-15")    # doctest: +SKIP
    >>> trades[0].trade_id                                   # doctest: +SKIP
    'sma_crossover:AAPL:2024-03-15T14:05:00+00:00'
    """
    strat = get_strategy(strategy)
    trades, _ = _replay(cache, normalize_symbol(symbol), to_date(day), strat, timeframe, source)
    return trades


def replay_days(
    cache: TradingCacheManager,
    symbols: str | Iterable[str],
    start: date | str,
    end: date | str,
    strategy: str | Strategy | None = None,
    source: Any = None,
    max_workers: int | None = None,
    *,
    timeframe: str = "1Min",
    on_missing: Literal["raise", "skip"] = "raise",
) -> ReplaySummary:
    """Replay every NYSE session in ``[start, end]`` for each symbol (holidays are skipped).

    With a ``source``, the whole range is synced once up front (``sync_bars`` fetches only
    what the cache lacks). Sessions run in up to ``max_workers`` threads (default
    ``min(4, cpu count)``), each with its own ``StrategyCache``; ``max_workers=1`` runs them in
    order. A session without bars raises :class:`MissingBarsError`, or is listed in
    ``summary.missing`` with ``on_missing="skip"``.
    """
    strat = get_strategy(strategy)
    names = tuple(normalize_symbols(symbols))
    if not names:
        raise ValueError("no symbols to replay")
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")
    first, last = to_date(start), to_date(end)
    if last < first:
        raise ValueError(f"end ({last}) is before start ({first})")
    # Sessions that have not closed and settled yet are left for a later replay.
    days = [d for d in sessions_in_range(first, last) if is_session_finished(d)]
    workers = max_workers if max_workers is not None else min(4, os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers!r}")

    t0 = time.perf_counter()
    report = None
    if source is not None and days:
        report = _sync(cache, source, list(names), first, last, timeframe)
    tf = _intraday(timeframe) if days else parse_timeframe(timeframe)
    # One job per (symbol, block of sessions): one store query per block, not per session.
    blocks = [days[i:i + BLOCK_SESSIONS] for i in range(0, len(days), BLOCK_SESSIONS)]
    jobs = [(symbol, block) for block in blocks for symbol in names]

    def run(job: tuple[str, list[date]]) -> list[tuple[str, date, int, int, int, float] | None]:
        """Per session: (symbol, day, bars, trades, winners, pnl), or None when it had no bars.
        The trades themselves are kept for one block only, so memory does not grow with the
        number of sessions (they are in trade_history)."""
        symbol, block = job
        out: list[tuple[str, date, int, int, int, float] | None] = []
        done: list[tuple[date, list[Trade]]] = []
        try:
            for day, n_bars, bars in _block_sessions(cache, symbol, block, tf.name):
                if not n_bars:
                    if on_missing == "raise":
                        raise _missing(symbol, day, tf.name, synced=report is not None)
                    out.append(None)
                    continue
                trades = _run_session(symbol, day, strat, tf.seconds, bars)
                done.append((day, trades))
                wins = sum(t.realized_pnl > 0 for t in trades)
                out.append((symbol, day, n_bars, len(trades), wins, sum(t.realized_pnl for t in trades)))
        finally:  # also when a later session raised: the sessions replayed so far are kept
            _archive_sessions(cache, symbol, strat.name, done)
        return out

    if workers == 1 or len(jobs) <= 1:
        results = [run(job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="replay") as pool:
            results = list(pool.map(run, jobs))

    by_symbol = dict.fromkeys(names, 0)
    missing: list[tuple[str, date]] = []
    n_trades = wins = n_bars = replayed = 0
    total_pnl = 0.0
    for (symbol, block), block_results in zip(jobs, results, strict=True):
        for day, result in zip(block, block_results, strict=True):
            if result is None:
                missing.append((symbol, day))
                continue
            _, _, bars, count, won, pnl = result
            replayed += 1
            n_bars += bars
            n_trades += count
            wins += won
            total_pnl += pnl
            by_symbol[symbol] += count
    rank = {name: k for k, name in enumerate(names)}
    missing.sort(key=lambda m: (m[1], rank[m[0]]))  # session by session, as the symbols were given
    stats = cache.get_trade_stats(symbol=names[0] if len(names) == 1 else None, strategy=strat.name)
    return ReplaySummary(
        strategy=strat.name,
        symbols=names,
        start=first,
        end=last,
        sessions=len(days),
        sessions_replayed=replayed,
        bars=n_bars,
        trades=n_trades,
        winning_trades=wins,
        total_pnl=total_pnl,
        trades_by_symbol=by_symbol,
        missing=tuple(missing),
        stats=stats,
        elapsed_seconds=time.perf_counter() - t0,
        sync_report=report,
    )
