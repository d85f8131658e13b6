"""Pictures of the cache and of replays, as small SVG written directly (no plotting library).

Three pictures, each a function returning SVG text:

* :func:`equity_curve_svg` - the cumulative P&L of a replay, one point per session replayed;
* :func:`price_chart_svg` - a day's minute closes with the trades' entries and exits marked;
* :func:`coverage_map_svg` - symbols x sessions, each cell cached / fetched now / missing /
  rejected, with a legend (what Dagster's partition view shows its users).

And two wrappers: :func:`markdown_image` (a ``![alt](data:image/svg+xml;base64,...)`` image:
Prefect 3.8.8's UI renders data-URI images in markdown artifacts but strips inline ``<svg>``)
and :func:`html_page` (a self-contained page, what ``cache-manager report`` writes).

The builders below the drawing functions read what the pictures need from the domain objects:
a :class:`~cachelib.sync.SyncReport` (:func:`coverage_from_report`), the cache's coverage
(:func:`coverage_from_cache`), and the trade history (:func:`session_pnl`, :func:`trade_marks`).

Size: an artifact is kept small. A coverage row is drawn as runs of equal cells (a symbol
fully cached is one rectangle), at most :data:`MAX_COLUMNS` columns (longer ranges put several
sessions in a column, which shows the worst state among them) and :data:`MAX_ROWS` symbols
(symbols with a problem first; the others are counted in the caption).
"""

from __future__ import annotations

import base64
import bisect
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

from . import market_hours
from .bars import NY, normalize_symbols, to_date
from .clock import now_utc

if TYPE_CHECKING:
    import pandas as pd

    from .store import TradingCacheManager
    from .sync import SyncReport

__all__ = [
    "CoverageState",
    "COVERAGE_STATES",
    "CoverageGrid",
    "TradeMark",
    "WIDTH",
    "HEIGHT",
    "PLOT_LEFT",
    "PLOT_RIGHT",
    "PLOT_TOP",
    "PLOT_BOTTOM",
    "MAX_COLUMNS",
    "MAX_ROWS",
    "equity_curve_svg",
    "price_chart_svg",
    "coverage_map_svg",
    "svg_data_uri",
    "markdown_image",
    "html_page",
    "coverage_from_report",
    "coverage_from_cache",
    "session_pnl",
    "trade_marks",
    "ingest_coverage_markdown",
    "replay_pictures_markdown",
    "report_html",
]

# -- layout (public so that tests can state positions as literals) ---------------------------

#: Size of the equity curve and the price chart, and their plot area (x and y in pixels).
WIDTH, HEIGHT = 640, 240
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 60, 600, 20, 200
#: The coverage map: label column, grid width, row height (shrinks past 40 symbols).
GRID_LEFT, GRID_TOP, GRID_WIDTH, ROW_HEIGHT = 70, 30, 540, 14
#: At most this many columns (sessions, or bins of sessions) and rows (symbols) are drawn.
MAX_COLUMNS, MAX_ROWS = 120, 60
#: At most this many day charts in a replay's pictures artifact.
MAX_DAY_CHARTS = 2

CoverageState = Literal["cached", "fetched", "missing", "rejected"]
#: Coverage states, from good to bad: a column holding several sessions shows the worst one.
COVERAGE_STATES: tuple[CoverageState, ...] = ("cached", "fetched", "missing", "rejected")
_STATE_LABEL = {"cached": "cached", "fetched": "fetched now", "missing": "missing", "rejected": "rejected"}
_STATE_CLASS = {"cached": "c", "fetched": "f", "missing": "m", "rejected": "r"}
_STYLE = (
    "text{font-family:sans-serif;font-size:11px;fill:#333}"
    ".t{font-size:13px;font-weight:bold}.ax{stroke:#888;stroke-width:1}.zero{stroke:#bbb;stroke-dasharray:4 3}"
    ".line{fill:none;stroke:#1f77b4;stroke-width:1.5}.pt{fill:#1f77b4}"
    ".entry{fill:#1f77b4}.win{fill:#2ca02c}.loss{fill:#d62728}.flat{fill:#7f7f7f}"
    ".hold{stroke:#999;stroke-dasharray:3 2}"
    ".c{fill:#9ecae1}.f{fill:#31a354}.m{fill:#fdae6b}.r{fill:#de2d26}"
)


# -- small helpers ---------------------------------------------------------------------------


def _n(value: float) -> str:
    """A coordinate or value with at most 2 decimals and no trailing zeros (small output)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str | None = None) -> str:
    extra = f' class="{cls}"' if cls else ""
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{html.escape(text)}</text>'


def _svg(width: int, height: int, body: Sequence[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style>"
        # An opaque background: Prefect's UI shows images on a dark theme, where dark text vanishes.
        f'<rect class="bg" width="{width}" height="{height}" fill="#fff"/>' + "".join(body) + "</svg>"
    )


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def _y_scale(lo: float, hi: float) -> Any:
    """Value -> y pixel, ``hi`` at :data:`PLOT_TOP`, ``lo`` at :data:`PLOT_BOTTOM`."""
    if hi <= lo:  # a flat series: centre it in a band of +-1
        lo, hi = lo - 1.0, hi + 1.0
    return lambda v: PLOT_BOTTOM - (v - lo) / (hi - lo) * (PLOT_BOTTOM - PLOT_TOP)


def _money(value: float) -> str:
    return f"{value:+,.2f}" if value else "0"


# -- the equity curve ------------------------------------------------------------------------


def _title_and_axes(title: str) -> list[str]:
    """A chart's title and its x and y axes (the plot area's bottom and left edges)."""
    return [
        _text(PLOT_LEFT, 14, title, cls="t"),
        f'<line class="ax" x1="{PLOT_LEFT}" y1="{PLOT_BOTTOM}" x2="{PLOT_RIGHT}" y2="{PLOT_BOTTOM}"/>',
        f'<line class="ax" x1="{PLOT_LEFT}" y1="{PLOT_TOP}" x2="{PLOT_LEFT}" y2="{PLOT_BOTTOM}"/>',
    ]


def equity_curve_svg(sessions: Sequence[date], pnl_by_session: Mapping[date, float],
                     title: str = "Equity curve") -> str:
    """Cumulative P&L after each of ``sessions`` (sorted), from the P&L made in each session.

    One point per session, evenly spaced from :data:`PLOT_LEFT` to :data:`PLOT_RIGHT` (a lone
    session sits in the middle); the y axis spans the curve and zero (the dashed line). P&L of
    a day that is not in ``sessions`` is refused rather than silently left out.

    >>> svg = equity_curve_svg([date(2025, 1, 2), date(2025, 1, 3)], {date(2025, 1, 3): 10.0})
    """
    days = sorted({to_date(d, "session") for d in sessions})
    if not days:
        raise ValueError("no sessions to draw an equity curve over")
    outside = sorted(set(pnl_by_session) - set(days))
    if outside:
        raise ValueError(f"P&L given for {outside[0]}, which is not one of the sessions drawn")
    total, curve = 0.0, []
    for day in days:
        total += _finite(pnl_by_session.get(day, 0.0), f"P&L of {day}")
        curve.append(total)
    y = _y_scale(min(0.0, *curve), max(0.0, *curve))
    step = (PLOT_RIGHT - PLOT_LEFT) / (len(days) - 1) if len(days) > 1 else 0.0
    xs = [PLOT_LEFT + i * step for i in range(len(days))] if len(days) > 1 else [(PLOT_LEFT + PLOT_RIGHT) / 2]
    points = " ".join(f"{_n(x)},{_n(y(v))}" for x, v in zip(xs, curve, strict=True))
    body = [
        *_title_and_axes(title),
        f'<line class="zero" x1="{PLOT_LEFT}" y1="{_n(y(0.0))}" x2="{PLOT_RIGHT}" y2="{_n(y(0.0))}"/>',
        f'<polyline class="line" points="{points}"/>',
    ]
    if len(days) <= 60:  # a dot per session while they stay apart
        body += [f'<circle class="pt" cx="{_n(x)}" cy="{_n(y(v))}" r="2.5"/>' for x, v in zip(xs, curve, strict=True)]
    hi, lo = max(0.0, *curve), min(0.0, *curve)
    body += [
        _text(PLOT_LEFT - 4, PLOT_TOP + 4, _money(hi), "end"),
        _text(PLOT_LEFT - 4, y(0.0) + 4, "0", "end"),
        _text(PLOT_LEFT - 4, PLOT_BOTTOM + 4, _money(lo), "end") if lo < 0 else "",
        _text(xs[0], PLOT_BOTTOM + 16, days[0].isoformat(), "start" if len(days) > 1 else "middle"),
        _text(xs[-1], PLOT_BOTTOM + 16, days[-1].isoformat(), "end") if len(days) > 1 else "",
        _text(PLOT_RIGHT, 14, f"{len(days)} session(s), P&L {_money(curve[-1])}", "end"),
    ]
    return _svg(WIDTH, HEIGHT, body, title)


# -- a day's price chart ---------------------------------------------------------------------


@dataclass(frozen=True)
class TradeMark:
    """One trade as a price chart marks it: entry, and exit when closed (times aware)."""

    entry_time: datetime
    entry_price: float
    exit_time: datetime | None = None
    exit_price: float | None = None
    pnl: float | None = None


def _aware(when: datetime, what: str) -> datetime:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {when!r}")
    return when


def price_chart_svg(times: Sequence[datetime], closes: Sequence[float], trades: Sequence[TradeMark] = (),
                    title: str = "Price") -> str:
    """The closes at ``times`` (aware) as a line, each trade's entry (blue dot) and exit (green
    for a gain, red for a loss) marked at its time and price, joined by a dashed line.

    x is linear in time over the bars and the trades; y spans every close and trade price.
    """
    if len(times) != len(closes):
        raise ValueError(f"{len(times)} times but {len(closes)} closes: give one close per bar time")
    if not times:
        raise ValueError("no bars to draw a price chart of")
    ts = [_aware(t, "a bar time").timestamp() for t in times]
    prices = [_finite(c, f"the close at {t.isoformat()}") for t, c in zip(times, closes, strict=True)]
    marks = []
    for i, tr in enumerate(trades):
        entry = (_aware(tr.entry_time, f"trade {i} entry_time").timestamp(), _finite(tr.entry_price, f"trade {i} entry_price"))
        exit_ = None
        if tr.exit_time is not None and tr.exit_price is not None:
            exit_ = (_aware(tr.exit_time, f"trade {i} exit_time").timestamp(), _finite(tr.exit_price, f"trade {i} exit_price"))
        marks.append((entry, exit_, tr.pnl))
    all_t = ts + [p[0] for m in marks for p in (m[0], m[1]) if p is not None]
    all_p = prices + [p[1] for m in marks for p in (m[0], m[1]) if p is not None]
    t0, t1 = min(all_t), max(all_t)
    y = _y_scale(min(all_p), max(all_p))

    def x(t: float) -> float:
        return (PLOT_LEFT + PLOT_RIGHT) / 2 if t1 == t0 else PLOT_LEFT + (t - t0) / (t1 - t0) * (PLOT_RIGHT - PLOT_LEFT)

    points = " ".join(f"{_n(x(t))},{_n(y(p))}" for t, p in zip(ts, prices, strict=True))
    body = [
        *_title_and_axes(title),
        f'<polyline class="line" points="{points}"/>',
    ]
    for (et, ep), exit_, pnl in marks:
        if exit_ is not None:
            body.append(f'<line class="hold" x1="{_n(x(et))}" y1="{_n(y(ep))}" x2="{_n(x(exit_[0]))}" '
                        f'y2="{_n(y(exit_[1]))}"/>')
        body.append(f'<circle class="entry" cx="{_n(x(et))}" cy="{_n(y(ep))}" r="4"/>')
        if exit_ is not None:
            kind = "flat" if not pnl else ("win" if pnl > 0 else "loss")
            body.append(f'<rect class="exit {kind}" x="{_n(x(exit_[0]) - 4)}" y="{_n(y(exit_[1]) - 4)}" '
                        'width="8" height="8"/>')
    lo, hi = min(all_p), max(all_p)
    first, last = (datetime.fromtimestamp(t, NY).strftime("%H:%M") for t in (t0, t1))
    body += [
        _text(PLOT_LEFT - 4, PLOT_TOP + 4, f"{hi:,.2f}", "end"),
        _text(PLOT_LEFT - 4, PLOT_BOTTOM + 4, f"{lo:,.2f}", "end"),
        _text(PLOT_LEFT, PLOT_BOTTOM + 16, f"{first} ET"),
        _text(PLOT_RIGHT, PLOT_BOTTOM + 16, f"{last} ET", "end"),
        _text(PLOT_RIGHT, 14, f"{len(trades)} trade(s): dot = entry, square = exit (green gain, red loss)", "end"),
    ]
    return _svg(WIDTH, HEIGHT, body, title)


# -- the coverage map ------------------------------------------------------------------------


@dataclass(frozen=True)
class CoverageGrid:
    """The state of each (symbol, session): ``states[symbol][i]`` is that of ``sessions[i]``."""

    symbols: tuple[str, ...]
    sessions: tuple[date, ...]
    states: Mapping[str, Sequence[CoverageState]]

    def __post_init__(self) -> None:
        for sym in self.symbols:
            row = self.states.get(sym)
            if row is None or len(row) != len(self.sessions):
                raise ValueError(f"coverage of {sym}: need one state per session ({len(self.sessions)}), "
                                 f"got {0 if row is None else len(row)}")
            bad = [s for s in row if s not in COVERAGE_STATES]
            if bad:
                raise ValueError(f"coverage of {sym}: unknown state {bad[0]!r}; states are "
                                 f"{', '.join(COVERAGE_STATES)}")

    def counts(self) -> dict[str, int]:
        """(symbol, session) pairs per state."""
        out: dict[str, int] = dict.fromkeys(COVERAGE_STATES, 0)
        for sym in self.symbols:
            for state in self.states[sym]:
                out[state] += 1
        return out


def _worst(states: Sequence[CoverageState]) -> CoverageState:
    return max(states, key=COVERAGE_STATES.index)


def coverage_map_svg(grid: CoverageGrid, title: str = "Coverage") -> str:
    """Symbols (rows) x sessions (columns), each cell coloured by its state, with a legend.

    Equal neighbouring cells of a row are one ``<rect>`` (``data-first``/``data-last`` name its
    sessions). Past :data:`MAX_COLUMNS` sessions a column holds ``ceil(n / MAX_COLUMNS)`` of
    them and shows the worst state; past :data:`MAX_ROWS` symbols, those with a missing or
    rejected session are drawn first and the caption counts the others.
    """
    if not grid.sessions or not grid.symbols:
        raise ValueError("no sessions or no symbols: nothing to draw a coverage map of")
    per_column = math.ceil(len(grid.sessions) / MAX_COLUMNS)
    bins = [grid.sessions[i:i + per_column] for i in range(0, len(grid.sessions), per_column)]
    troubled = [s for s in grid.symbols if any(st in ("missing", "rejected") for st in grid.states[s])]
    drawn_set = set((troubled + [s for s in grid.symbols if s not in troubled])[:MAX_ROWS])
    drawn = [s for s in grid.symbols if s in drawn_set]
    hidden = len(grid.symbols) - len(drawn)
    row_h = ROW_HEIGHT if len(drawn) <= 40 else max(4, 560 // len(drawn))
    col_w = GRID_WIDTH / len(bins)
    label_every = math.ceil(10 / row_h)
    body = [_text(GRID_LEFT, 16, title, cls="t")]
    for r, sym in enumerate(drawn):
        row = grid.states[sym]
        cells = [_worst(row[i:i + per_column]) for i in range(0, len(row), per_column)]
        top = GRID_TOP + r * row_h
        if r % label_every == 0:
            body.append(_text(GRID_LEFT - 4, top + min(row_h, 14) - 3, sym, "end"))
        start = 0
        for c in range(1, len(cells) + 1):
            if c == len(cells) or cells[c] != cells[start]:
                first, last = bins[start][0], bins[c - 1][-1]
                body.append(
                    f'<rect class="{_STATE_CLASS[cells[start]]}" x="{_n(GRID_LEFT + start * col_w)}" y="{top}" '
                    f'width="{_n((c - start) * col_w)}" height="{row_h - 1 if row_h > 3 else row_h}" '
                    f'data-first="{first}" data-last="{last}"/>'
                )
                start = c
    bottom = GRID_TOP + len(drawn) * row_h
    body += [
        _text(GRID_LEFT, bottom + 13, grid.sessions[0].isoformat()),
        _text(GRID_LEFT + GRID_WIDTH, bottom + 13, grid.sessions[-1].isoformat(), "end"),
    ]
    notes = [f"{len(grid.symbols)} symbol(s) x {len(grid.sessions)} session(s)"]
    if per_column > 1:
        notes.append(f"a column is {per_column} sessions (worst state shown)")
    if hidden:
        notes.append(f"{hidden} more symbol(s) with no missing or rejected session not drawn")
    body.append(_text(GRID_LEFT, bottom + 28, "; ".join(notes)))
    counts = grid.counts()
    x = GRID_LEFT
    for state in COVERAGE_STATES:
        label = f"{_STATE_LABEL[state]} ({counts[state]:,})"
        body.append(f'<rect class="{_STATE_CLASS[state]} legend" x="{x}" y="{bottom + 36}" width="10" height="10"/>')
        body.append(_text(x + 14, bottom + 45, label))
        x += 24 + 7 * len(label)
    return _svg(GRID_LEFT + GRID_WIDTH + 20, bottom + 56, body, title)


# -- wrappers: markdown image, HTML page -----------------------------------------------------


def svg_data_uri(svg: str) -> str:
    """``data:image/svg+xml;base64,...`` of ``svg``."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def markdown_image(svg: str, alt: str) -> str:
    """``svg`` as a markdown image Prefect's UI renders (inline ``<svg>`` it strips)."""
    clean = " ".join(alt.replace("[", "(").replace("]", ")").split())
    return f"![{clean}]({svg_data_uri(svg)})"


def html_page(title: str, sections: Sequence[tuple[str, str]], note: str = "") -> str:
    """A self-contained HTML page: ``title``, then each ``(heading, svg)`` section (no
    external file, script or font: it opens from a mail attachment or a shared drive)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:24px;color:#222}h2{margin-top:28px}"
        "p.note{color:#555}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    for heading, svg in sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<div>{svg}</div>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)


# -- builders from the domain objects --------------------------------------------------------


def _expand(runs: Sequence[tuple[date, date]], sessions: Sequence[date]) -> set[date]:
    """The sessions (sorted) inside any of ``runs``: a slice per run, not a scan per run."""
    out: set[date] = set()
    for first, last in runs:
        out.update(sessions[bisect.bisect_left(sessions, first):bisect.bisect_right(sessions, last)])
    return out


def coverage_from_report(report: SyncReport) -> CoverageGrid:
    """The coverage map of one (merged) sync: per symbol and session of the report's range,
    ``rejected`` (a row refused: not marked covered), ``fetched`` (asked of the source now),
    ``missing`` (not finished yet, so not cached) or ``cached`` (covered before this run)."""
    sessions = tuple(market_hours.sessions_in_range(report.start, report.end))
    unfinished = set(report.unfinished_sessions)
    states: dict[str, list[CoverageState]] = {}
    for sym in report.symbols:
        fetched = _expand(report.fetched_runs.get(sym, []), sessions)
        rejected = set(report.rejected_sessions.get(sym, []))
        row: list[CoverageState] = []
        for d in sessions:
            row.append("rejected" if d in rejected else "fetched" if d in fetched
                       else "missing" if d in unfinished else "cached")
        states[sym] = row
    return CoverageGrid(tuple(report.symbols), sessions, states)


def coverage_from_cache(cache: TradingCacheManager, symbols: Sequence[str], start: date, end: date,
                        timeframe: str = "1Day", now: datetime | None = None) -> CoverageGrid:
    """The cache's coverage of ``symbols`` over the finished sessions of ``[start, end]``:
    ``cached`` where a valid coverage record (or daily bar) accounts for the session, else
    ``missing``, on either engine."""
    last = min(end, market_hours.latest_finished_session(now))
    sessions = tuple(market_hours.sessions_in_range(start, last)) if start <= last else ()
    syms = normalize_symbols(list(symbols))
    if not sessions:
        return CoverageGrid(tuple(syms), (), {s: [] for s in syms})
    missing = cache.missing_sessions_many(syms, sessions[0], sessions[-1], timeframe)
    states = {s: ["missing" if d in set(missing[s]) else "cached" for d in sessions] for s in syms}
    return CoverageGrid(tuple(syms), sessions, states)  # type: ignore[arg-type]


def session_pnl(trades: pd.DataFrame) -> dict[date, float]:
    """The realized P&L of closed ``trades`` (a trade-history frame) summed by the New York
    session of their exit."""
    out: dict[date, float] = {}
    closed = trades[trades["exit_date"].notna()]
    for when, pnl in zip(closed["exit_date"], closed["realized_pnl"], strict=True):
        day = when.tz_convert(NY).date()
        out[day] = out.get(day, 0.0) + (0.0 if pnl is None or pnl != pnl else float(pnl))
    return out


def trade_marks(trades: pd.DataFrame) -> list[TradeMark]:
    """A trade-history frame's trades as price-chart marks (oldest entry first)."""
    marks = []
    for row in trades.sort_values("entry_date", kind="stable").itertuples(index=False):
        closed = row.exit_date is not None and row.exit_date == row.exit_date and row.exit_price == row.exit_price
        marks.append(TradeMark(row.entry_date.to_pydatetime(), float(row.entry_price),
                               row.exit_date.to_pydatetime() if closed else None,
                               float(row.exit_price) if closed else None,
                               float(row.realized_pnl) if closed and row.realized_pnl == row.realized_pnl else None))
    return marks


def ingest_coverage_markdown(report: SyncReport) -> str:
    """The ``ingest-bars-<timeframe>-coverage`` artifact: the coverage map of a sync, as an image."""
    grid = coverage_from_report(report)
    if not grid.sessions:
        return f"## {report.timeframe} coverage {report.start} .. {report.end}\n\nNo session in this range.\n"
    title = f"{report.timeframe} coverage {report.start} .. {report.end} ({report.source})"
    counts = grid.counts()
    text = ", ".join(f"{_STATE_LABEL[s]} {counts[s]:,}" for s in COVERAGE_STATES)
    return f"## {title}\n\n{markdown_image(coverage_map_svg(grid, title), title)}\n\n(symbol, session) pairs: {text}\n"


def _trades(cache: TradingCacheManager, symbols: Sequence[str], start: date, end: date,
            strategy: str | None) -> pd.DataFrame:
    frame = cache.get_trade_history(start=start, end=end, strategy=strategy)
    if symbols:
        frame = frame[frame["symbol"].isin(normalize_symbols(list(symbols)))]
    return frame


def _day_charts(cache: TradingCacheManager, trades: pd.DataFrame, symbols: Sequence[str],
                sessions: Sequence[date], timeframe: str) -> list[tuple[str, str]]:
    """``(heading, svg)`` of the last session with trades (else the last session): one chart per
    symbol that traded that day (at most :data:`MAX_DAY_CHARTS`)."""
    entry_days = [t.tz_convert(NY).date() for t in trades["entry_date"]] if len(trades) else []
    traded = sorted({d for d in entry_days if d in set(sessions)})
    day = traded[-1] if traded else sessions[-1]
    on_day = trades[[d == day for d in entry_days]] if len(trades) else trades
    names = sorted(set(on_day["symbol"])) if len(on_day) else list(symbols)[:1]
    charts = []
    for sym in names[:MAX_DAY_CHARTS]:
        bars = cache.get(sym, day, day, timeframe=timeframe)  # raw prices: what the strategy saw
        if bars is None or not len(bars):
            continue
        bars = bars[bars["close"].notna()]
        title = f"{sym} {day} {timeframe} closes"
        svg = price_chart_svg([t.to_pydatetime() for t in bars.index], bars["close"].tolist(),
                              trade_marks(on_day[on_day["symbol"] == sym]) if len(on_day) else [], title)
        charts.append((title, svg))
    return charts


def replay_pictures_markdown(cache: TradingCacheManager, symbols: Sequence[str], sessions: Sequence[date],
                             strategy: str, timeframe: str = "1Min") -> str:
    """The ``replay-pictures`` artifact: the equity curve of ``strategy``'s trades of ``symbols``
    over ``sessions`` (read from the trade history), and the trades of the last traded day on
    its price chart."""
    days = sorted(sessions)
    if not days:
        return "## Replay pictures\n\nNo session replayed.\n"
    trades = _trades(cache, symbols, days[0], days[-1], strategy)
    pnl = {d: v for d, v in session_pnl(trades).items() if d in set(days)}
    title = f"{strategy} equity curve {days[0]} .. {days[-1]}"
    lines = [f"## {title}", "", markdown_image(equity_curve_svg(days, pnl, title), title), ""]
    for heading, svg in _day_charts(cache, trades, symbols, days, timeframe):
        lines += [f"### {heading}", "", markdown_image(svg, heading), ""]
    return "\n".join(lines)


def report_html(cache: TradingCacheManager, symbols: Sequence[str] | None, start: date, end: date,
                strategy: str | None = None, timeframe: str = "1Day", now: datetime | None = None) -> str:
    """What ``cache-manager report`` writes: the coverage map of ``symbols`` (default: every
    cached symbol) over ``[start, end]``, the equity curve of the trade history (of ``strategy``,
    or all), and the trades of the last traded day on its minute chart when minute bars are cached."""
    names = list(symbols) if symbols else cache.get_symbols()
    sections: list[tuple[str, str]] = []
    notes: list[str] = []
    grid = coverage_from_cache(cache, names, start, end, timeframe, now) if names else None
    if grid is not None and grid.sessions:
        heading = f"{timeframe} coverage {grid.sessions[0]} .. {grid.sessions[-1]}"
        sections.append((heading, coverage_map_svg(grid, heading)))
    else:
        notes.append("No symbol or no finished session in the range: no coverage map.")
    last = min(end, market_hours.latest_finished_session(now))
    days = market_hours.sessions_in_range(start, last) if start <= last else []
    trades = _trades(cache, names if symbols else [], start, end, strategy)
    if days and len(trades):
        who = strategy or "all strategies"
        heading = f"Equity curve ({who}) {days[0]} .. {days[-1]}"
        pnl = {d: v for d, v in session_pnl(trades).items() if d in set(days)}
        sections.append((heading, equity_curve_svg(days, pnl, heading)))
        sections += _day_charts(cache, trades, names, days, "1Min")
    else:
        notes.append("No archived trade in the range: no equity curve.")
    made = now_utc(now).astimezone(NY).strftime("%Y-%m-%d %H:%M ET")
    note = f"{len(names)} symbol(s), {start} .. {end}; made {made}. " + " ".join(notes)
    return html_page(f"Trading cache report {start} .. {end}", sections, note.strip())
