"""The data-quality doctor: "can I trust this cache?" as a list of typed findings.

:func:`diagnose` reads every series once (one ``get`` of its whole cached range, checked with
numpy) and a few grouped SQL queries, on SQLite or PostgreSQL alike, and returns a
:class:`Report`. Each :class:`Finding` names its series and sessions and carries the
``cache-manager`` command line that repairs it. ``cache-manager doctor`` prints it; the
``data_quality`` flow publishes it weekly.

The checks (``check`` name, severity):

* ``missing_sessions`` (error): XNYS sessions inside a series' cached range (its first to
  last session with bars or coverage) that no valid coverage and no valid bar account for;
  daily and intraday series (weekly/monthly bars are not per session).
* ``expired`` (error): rows past their TTL still present (bars, intraday chunks, coverage):
  reads skip them, so those sessions look cached but are not. ``cleanup`` removes them; the
  repair re-syncs them.
* ``ohlc`` (error): bars breaking the rules every write enforces
  (:func:`cachelib.bars.bar_problems`: high below max(open, close), low above min(open,
  close), a non-positive or non-finite price, a negative volume...). Only a writer that went
  around the store can leave one.
* ``jump`` (warning): on daily-or-longer series, a log close-to-close return beyond
  ``jump_sigmas`` (6) standard deviations of the series' *other* returns (leave-one-out, so a
  jump does not widen its own yardstick), with no stored corporate action dated after the
  previous bar and on or before this one. At least 20 returns are needed to judge.
* ``zero_volume`` (warning): sessions whose volume (daily bar, or sum of intraday bars) is 0.
* ``vwap_outside_range`` (warning): a bar whose vwap is outside [low, high].
* ``off_grid`` (warning): intraday bars whose New York time is not a multiple of the
  timeframe from midnight nor from the session's open (Alpaca buckets on the clock; the demo
  buckets hours from 09:30).
* ``minute_daily_mismatch`` (warning): sessions where the daily bar's high or low differs by
  more than ``minute_tolerance`` (0.5 %) from the max high / min low of the same source and
  feed's 1Min bars of the regular session (extended-hours bars are not in a daily bar).
* ``options_without_greeks`` (warning): stored chain snapshots with contracts lacking delta,
  gamma, theta, vega or rho. A past snapshot cannot be fetched again (Alpaca serves only the
  latest chain), so these findings have no repair command.
* ``integrity`` (error): SQLite's ``PRAGMA integrity_check`` (not applicable on PostgreSQL,
  whose server owns its pages), and on both engines bars, chunks and coverage rows that
  reference no series.

Errors make ``Report.exit_code()`` 1; warnings only with ``strict=True``.
"""

from __future__ import annotations

import math
import os
import shlex
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from . import market_hours
from .bars import NY, bar_problems, parse_timeframe, session_day_numbers
from .clock import now_utc
from .store.postgres import is_postgres_url, redact_url

if TYPE_CHECKING:
    from .store import TradingCacheManager

__all__ = ["CHECKS", "Finding", "Report", "SeriesKey", "diagnose", "location_option", "sessions_text"]

Severity = Literal["error", "warning"]

#: Every check, with its severity (see the module docstring).
CHECKS: dict[str, Severity] = {
    "missing_sessions": "error",
    "expired": "error",
    "ohlc": "error",
    "integrity": "error",
    "jump": "warning",
    "zero_volume": "warning",
    "vwap_outside_range": "warning",
    "off_grid": "warning",
    "minute_daily_mismatch": "warning",
    "options_without_greeks": "warning",
}
DEFAULT_JUMP_SIGMAS = 6.0
DEFAULT_MINUTE_TOLERANCE = 0.005
#: Fewer returns than this and a series' spread of returns means little: no jump check.
MIN_RETURNS_FOR_JUMPS = 20
_EPOCH = date(1970, 1, 1)
_DAY = 86_400
_GREEKS = ("delta", "gamma", "theta", "vega", "rho")


@dataclass(frozen=True)
class SeriesKey:
    """One series: what a finding is about (options: timeframe ``"chain"``, no feed)."""

    asset_type: str
    symbol: str
    timeframe: str
    source: str
    feed: str | None

    def __str__(self) -> str:
        feed = "" if self.feed is None else f"/{self.feed}"
        return f"{self.asset_type} {self.symbol} {self.timeframe} {self.source}{feed}"


@dataclass(frozen=True)
class Finding:
    """One problem: which check, how bad, where (series and sessions), and the fix."""

    severity: Severity
    check: str
    series: SeriesKey | None  # None: the whole cache (integrity)
    sessions: tuple[date, ...]
    message: str
    #: The ``cache-manager`` command line that repairs it, or None when nothing can.
    repair: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: dates as YYYY-MM-DD."""
        return {
            "severity": self.severity,
            "check": self.check,
            "series": None if self.series is None else asdict(self.series),
            "sessions": [d.isoformat() for d in self.sessions],
            "message": self.message,
            "repair": self.repair,
        }


@dataclass
class Report:
    """What :func:`diagnose` found, plus what it looked at."""

    engine: str
    #: ``"ok"``, the failure text, or why the check does not apply.
    integrity: str
    series_checked: int
    option_snapshots_checked: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """``{"error": n, "warning": m}``."""
        return {sev: sum(f.severity == sev for f in self.findings) for sev in ("error", "warning")}

    def exit_code(self, strict: bool = False) -> int:
        """1 when there is an error (or, with ``strict``, a warning), else 0."""
        counts = self.counts
        return 1 if counts["error"] or (strict and counts["warning"]) else 0

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code(strict),
            "counts": self.counts,
            "engine": self.engine,
            "integrity": self.integrity,
            "series_checked": self.series_checked,
            "option_snapshots_checked": self.option_snapshots_checked,
            "findings": [f.to_dict() for f in self.findings],
        }


def sessions_text(sessions: tuple[date, ...]) -> str:
    """Sessions for a table cell: ``2024-01-03``, or ``2024-01-02..2024-03-28 (61)``."""
    if not sessions:
        return "-"
    if len(sessions) == 1:
        return sessions[0].isoformat()
    return f"{sessions[0].isoformat()}..{sessions[-1].isoformat()} ({len(sessions)})"


# -- repair commands ---------------------------------------------------------------------------


def location_option(location: str | os.PathLike[str]) -> str:
    """The ``cache-manager`` option naming ``location`` in a printed repair command:
    ``--db-url URL`` without its password (it comes from ``PGPASSWORD`` or ``~/.pgpass``; a
    password-like query parameter shows as ``***``), else ``--db-path PATH``."""
    text = os.fspath(location)
    if is_postgres_url(text):
        return f"--db-url {shlex.quote(redact_url(text).replace(':***@', '@', 1))}"
    return f"--db-path {shlex.quote(text)}"


def _sync_command(prefix: str, series: SeriesKey, first: date, last: date) -> str:
    parts = [prefix, "sync", series.symbol, "--start", first.isoformat(), "--end", last.isoformat(),
             "--timeframe", series.timeframe, "--source", series.source]
    if series.feed not in (None, "unknown"):  # "unknown": bars written without a feed
        parts += ["--feed", series.feed]
    return " ".join(shlex.quote(p) if p != prefix else p for p in parts)


def _refetch_command(prefix: str, series: SeriesKey, first: date, last: date) -> str:
    """Bars that are present but wrong: a sync skips covered sessions, so clear them first
    (``clear`` has no ``--feed``: every feed of the source loses those sessions)."""
    clear = [prefix, "clear", "--symbol", series.symbol, "--source", series.source, "--timeframe",
             series.timeframe, "--asset-type", series.asset_type, "--start", first.isoformat(),
             "--end", last.isoformat(), "--yes"]
    text = " ".join(shlex.quote(p) if p != prefix else p for p in clear)
    return f"{text} && {_sync_command(prefix, series, first, last)}"


# -- the checks --------------------------------------------------------------------------------


def _days(numbers: Iterable[int]) -> tuple[date, ...]:
    return tuple(_EPOCH + timedelta(days=int(n)) for n in sorted(set(numbers)))


@dataclass
class _Checker:
    cache: TradingCacheManager
    prefix: str
    jump_sigmas: float
    minute_tolerance: float
    now_s: int
    findings: list[Finding] = field(default_factory=list)
    # (asset, symbol, source, feed) -> {session day: (daily high, daily low)} / minute extremes
    daily_extremes: dict[tuple[str, str, str, str], dict[int, tuple[float, float]]] = field(default_factory=dict)
    minute_bars: dict[tuple[str, str, str, str], pd.DataFrame] = field(default_factory=dict)

    def add(self, check: str, series: SeriesKey, days: Iterable[int], message: str,
            repair: Literal["sync", "refetch"] | None) -> None:
        """Record a finding on ``days`` (day numbers); ``repair``: a plain gap-aware sync, or
        clear-then-sync for bars that are present but wrong, or None (nothing can fix it)."""
        sessions = _days(days)
        command = None
        if repair is not None:
            make = _sync_command if repair == "sync" else _refetch_command
            command = make(self.prefix, series, sessions[0], sessions[-1])
        self.findings.append(Finding(CHECKS[check], check, series, sessions, message, command))

    def series_rows(self) -> list[tuple[int, SeriesKey]]:
        rows = self.cache.conn.execute(
            "SELECT series_id, asset_type, symbol, timeframe, source, feed FROM series "
            "ORDER BY asset_type, symbol, timeframe, source, feed"
        ).fetchall()
        return [(int(r[0]), SeriesKey(r[1], r[2], r[3], r[4], r[5])) for r in rows]

    def grouped(self, sql: str) -> dict[int, list[int]]:
        """``{series_id: [values]}`` of a two-column query."""
        out: dict[int, list[int]] = defaultdict(list)
        for sid, value in self.cache.conn.execute(sql, (self.now_s,)).fetchall():
            out[int(sid)].append(int(value))
        return out

    def check_series(self, sid: int, key: SeriesKey, spans: dict[int, list[int]],
                     expired: dict[int, list[int]]) -> None:
        tf = parse_timeframe(key.timeframe)
        days = spans.get(sid)
        gone = set(expired.get(sid, ()))
        if gone:
            self.add("expired", key, gone,
                     f"{len(gone)} session(s) hold rows past their TTL: reads skip them (re-sync, "
                     "or 'cache-manager cleanup' to drop them)", "sync")
        if not days:
            return
        first, last = _EPOCH + timedelta(days=min(days)), _EPOCH + timedelta(days=max(days))
        frame = self.cache.get(key.symbol, first, last, source=key.source, asset_type=key.asset_type,
                               timeframe=key.timeframe, feed=key.feed)
        if frame is None:
            frame = pd.DataFrame(columns=["open", "high", "low", "close", "volume", "vwap", "trade_count"])
        bar_days = (session_day_numbers(frame.index) if len(frame) else np.empty(0, dtype=np.int64))
        if tf.is_intraday or tf.name == "1Day":
            self.check_missing(key, first, last, set(bar_days.tolist()) | gone)
        if not len(frame):
            return
        values = {c: frame[c].to_numpy(dtype="float64", na_value=np.nan) for c in frame.columns}
        self.check_bars(key, values, bar_days)
        if tf.seconds is not None:  # intraday
            self.check_grid(key, frame.index, bar_days, tf.seconds)
            if tf.name == "1Min":
                self.minute_bars[(key.asset_type, key.symbol, key.source, key.feed or "")] = frame
        else:
            self.check_jumps(key, values["close"], bar_days)
            if tf.name == "1Day":
                self.daily_extremes[(key.asset_type, key.symbol, key.source, key.feed or "")] = {
                    int(d): (h, lo) for d, h, lo in zip(bar_days, values["high"], values["low"], strict=True)
                }

    def check_missing(self, key: SeriesKey, first: date, last: date, accounted: set[int]) -> None:
        first = max(first, market_hours.EARLIEST_SUPPORTED)  # the calendar starts in 1990
        if first > last:
            return
        missing = self.cache.missing_sessions(key.symbol, first, last, key.timeframe, key.source, key.asset_type,
                                              feed=key.feed)
        days = [(d - _EPOCH).days for d in missing if (d - _EPOCH).days not in accounted]
        if days:
            self.add("missing_sessions", key, days,
                     f"{len(days)} XNYS session(s) between {first} and {last} are neither cached nor "
                     "recorded as fetched", "sync")

    def check_bars(self, key: SeriesKey, v: dict[str, np.ndarray], days: np.ndarray) -> None:
        problems = bar_problems(v["open"], v["high"], v["low"], v["close"], v["volume"], v["vwap"], v["trade_count"])
        bad = problems != ""
        if bad.any():
            reasons = ", ".join(sorted(set(problems[bad].tolist())))
            self.add("ohlc", key, days[bad], f"{int(bad.sum())} bar(s) break the bar rules: {reasons}", "refetch")
        # Zero volume per session: one bar (daily) or the sum of the session's bars.
        starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
        volume = np.add.reduceat(np.nan_to_num(v["volume"]), starts)
        zero = days[starts][volume == 0]
        if len(zero):
            self.add("zero_volume", key, zero, f"{len(zero)} session(s) traded no volume", "refetch")
        with np.errstate(invalid="ignore"):
            tol = 1e-9 * np.maximum(np.abs(v["high"]), 1.0)
            outside = ~np.isnan(v["vwap"]) & ((v["vwap"] < v["low"] - tol) | (v["vwap"] > v["high"] + tol))
        outside &= ~bad  # a bar that breaks the rules is reported (and refetched) once, as an error
        if outside.any():
            self.add("vwap_outside_range", key, days[outside],
                     f"{int(outside.sum())} bar(s) have a vwap outside [low, high]", "refetch")

    def check_grid(self, key: SeriesKey, index: pd.Index, days: np.ndarray, step: int) -> None:
        local = pd.DatetimeIndex(index).tz_convert(NY)
        since_midnight = (local.hour * 3600 + local.minute * 60 + local.second).to_numpy(dtype=np.int64)
        off = (since_midnight % step != 0) & ((since_midnight - (9 * 3600 + 30 * 60)) % step != 0)
        if off.any():
            self.add("off_grid", key, days[off],
                     f"{int(off.sum())} bar(s) are not on the {key.timeframe} grid (first at "
                     f"{local[np.argmax(off)].isoformat()})", "refetch")

    def check_jumps(self, key: SeriesKey, close: np.ndarray, days: np.ndarray) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.diff(np.log(close))
        ok = np.isfinite(r)
        n = int(ok.sum())
        if n < MIN_RETURNS_FOR_JUMPS:
            return
        x = np.where(ok, r, 0.0)
        total, squares = x.sum(), (x * x).sum()
        # Leave-one-out mean and standard deviation: each return against all the others.
        mean = (total - x) / (n - 1)
        var = (squares - x * x - (n - 1) * mean * mean) / (n - 2)
        sd = np.sqrt(np.maximum(var, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.abs(x - mean) / sd
        jumps = np.flatnonzero(ok & (z > self.jump_sigmas))
        if not len(jumps):
            return
        actions = self.cache.get_corporate_actions(key.symbol)
        ex_days = np.array(sorted((d - _EPOCH).days for d in pd.to_datetime(actions["ex_date"]).dt.date), dtype=np.int64) \
            if len(actions) else np.empty(0, dtype=np.int64)
        prev, this = days[jumps], days[jumps + 1]
        # An action dated after the previous bar and on or before this one explains the move.
        explained = np.searchsorted(ex_days, this, side="right") > np.searchsorted(ex_days, prev, side="right")
        left = jumps[~explained]
        if len(left):
            worst = float(z[left].max())
            self.add("jump", key, days[left + 1],
                     f"{len(left)} close-to-close move(s) beyond {self.jump_sigmas:g} standard deviations "
                     f"(largest {worst:.1f}) and no corporate action stored on that date", "refetch")

    def check_minute_vs_daily(self, keys: dict[tuple[str, str, str, str], SeriesKey]) -> None:
        for ident, frame in self.minute_bars.items():
            daily = self.daily_extremes.get(ident)
            if not daily:
                continue
            days = session_day_numbers(frame.index)
            starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
            highs = np.maximum.reduceat(frame["high"].to_numpy(dtype="float64"), starts)
            lows = np.minimum.reduceat(frame["low"].to_numpy(dtype="float64"), starts)
            bad: list[int] = []
            for i, day in enumerate(days[starts].tolist()):
                if day not in daily:
                    continue
                high, low = highs[i], lows[i]
                if self._differs(daily[day], high, low):
                    session = _EPOCH + timedelta(days=day)
                    if not market_hours.is_session(session):  # bars on a day without a session
                        bad.append(day)
                        continue
                    # Extended-hours bars are not part of the daily bar: retry with the regular session.
                    opens, closes = market_hours.session_bounds(session)
                    end = starts[i + 1] if i + 1 < len(starts) else len(days)
                    part = frame.iloc[starts[i]:end]
                    part = part[(part.index >= opens) & (part.index < closes)]
                    if not len(part) or self._differs(daily[day], float(part["high"].max()), float(part["low"].min())):
                        bad.append(day)
            if bad:
                key = keys[ident]
                self.add("minute_daily_mismatch", key, bad,
                         f"{len(bad)} session(s) where the daily high/low and the 1Min bars' high/low differ by "
                         f"more than {self.minute_tolerance:.1%}", "refetch")

    def _differs(self, daily: tuple[float, float], high: float, low: float) -> bool:
        d_high, d_low = daily
        return bool(abs(high - d_high) > self.minute_tolerance * abs(d_high)
                    or abs(low - d_low) > self.minute_tolerance * abs(d_low))

    def check_options(self) -> int:
        greekless = " OR ".join(f"{g} IS NULL" for g in _GREEKS)
        rows = self.cache.conn.execute(
            f"SELECT symbol, source, trading_date, COUNT(*), SUM(CASE WHEN {greekless} THEN 1 ELSE 0 END) "
            "FROM raw_options_chain GROUP BY symbol, source, trading_date ORDER BY symbol, source, trading_date"
        ).fetchall()
        by_chain: dict[tuple[str, str], list[tuple[date, int, int]]] = defaultdict(list)
        for symbol, source, day, total, missing in rows:
            if missing:
                by_chain[(symbol, source)].append((date.fromisoformat(day), int(total), int(missing)))
        for (symbol, source), snaps in by_chain.items():
            key = SeriesKey("option", symbol, "chain", source, None)
            lacking = sum(m for _, _, m in snaps)
            total = sum(t for _, t, _ in snaps)
            self.add("options_without_greeks", key, ((d - _EPOCH).days for d, _, _ in snaps),
                     f"{lacking} of {total} contracts have no greeks (one of {', '.join(_GREEKS)}); a past "
                     "snapshot cannot be fetched again", None)
        return len(rows)

    def check_integrity(self, engine: str) -> str:
        conn = self.cache.conn
        problems: list[str] = []
        if engine == "sqlite":
            result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                problems.append("integrity_check: " + "; ".join(result[:5]) + (" ..." if len(result) > 5 else ""))
            status = "ok"
        else:
            conn.execute("SELECT 1").fetchone()
            status = "not applicable on PostgreSQL (the server owns its pages); checked: connection, series references"
        for table in ("bars", "bar_chunks", "coverage"):
            orphans = conn.execute(
                f"SELECT COUNT(*) FROM {table} t WHERE NOT EXISTS "
                "(SELECT 1 FROM series s WHERE s.series_id = t.series_id)"
            ).fetchone()[0]
            if orphans:
                problems.append(f"{int(orphans)} row(s) of {table} reference no series")
        if problems:
            text = "; ".join(problems)
            self.findings.append(Finding("error", "integrity", None, (), text, None))
            return text
        return status


def diagnose(
    cache: TradingCacheManager,
    *,
    jump_sigmas: float = DEFAULT_JUMP_SIGMAS,
    minute_tolerance: float = DEFAULT_MINUTE_TOLERANCE,
    now: datetime | None = None,
    command: str = "cache-manager",
) -> Report:
    """Check every series, option snapshot and the database itself; return a :class:`Report`.

    ``command`` starts every repair line: ``"cache-manager --db-path /data/cache.db"`` makes
    them run against that cache. ``now`` (aware; default the clock) decides what is expired.

    >>> report = diagnose(TradingCacheManager("cache.db"))  # doctest: +SKIP
    >>> report.exit_code(strict=True), report.counts         # doctest: +SKIP
    (0, {'error': 0, 'warning': 0})
    """
    if not (isinstance(jump_sigmas, (int, float)) and math.isfinite(jump_sigmas) and jump_sigmas > 0):
        raise ValueError(f"jump_sigmas must be a positive number of standard deviations, got {jump_sigmas!r}")
    if not (isinstance(minute_tolerance, (int, float)) and math.isfinite(minute_tolerance) and minute_tolerance >= 0):
        raise ValueError(f"minute_tolerance must be a fraction >= 0 (0.005 = 0.5 %), got {minute_tolerance!r}")
    engine = "postgresql" if is_postgres_url(str(cache.db_path)) else "sqlite"
    checker = _Checker(cache, command, float(jump_sigmas), float(minute_tolerance), int(now_utc(now).timestamp()))
    integrity = checker.check_integrity(engine)
    # Each series' span: session day numbers of its first and last bar, chunk or coverage row.
    spans: dict[int, list[int]] = defaultdict(list)
    for sql in (f"SELECT series_id, MIN(ts) / {_DAY}, MAX(ts) / {_DAY} FROM bars GROUP BY series_id",
                "SELECT series_id, MIN(session), MAX(session) FROM bar_chunks GROUP BY series_id",
                "SELECT series_id, MIN(session), MAX(session) FROM coverage GROUP BY series_id"):
        for sid, lo, hi in cache.conn.execute(sql).fetchall():
            spans[int(sid)] += [int(lo), int(hi)]
    expired: dict[int, list[int]] = defaultdict(list)
    for sql in (f"SELECT series_id, ts / {_DAY} FROM bars WHERE expires_at <= ?",
                "SELECT series_id, session FROM bar_chunks WHERE expires_at <= ?",
                "SELECT series_id, session FROM coverage WHERE expires_at <= ?"):
        for sid, days in checker.grouped(sql).items():
            expired[sid] += days
    series = checker.series_rows()
    for sid, key in series:
        checker.check_series(sid, key, spans, expired)
    checker.check_minute_vs_daily({(k.asset_type, k.symbol, k.source, k.feed or ""): k
                                   for _, k in series if k.timeframe == "1Day"})
    snapshots = checker.check_options()
    order = {name: i for i, name in enumerate(CHECKS)}
    findings = sorted(checker.findings, key=lambda f: (f.severity != "error", order[f.check], str(f.series)))
    return Report(engine, integrity, len(series), snapshots, findings)
