"""Pictures (cachelib.pictures): SVG parsed with xml.etree, positions from hand-written input.

Layout used below: plot area x 60..600, y 20..200 (``PLOT_*``); coverage grid from x 70, 540
wide, rows 14 px from y 30 (``GRID_*``, ``ROW_HEIGHT``).
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from datetime import date, datetime, timezone

import pytest

from cachelib.pictures import (
    CoverageGrid,
    TradeMark,
    coverage_from_cache,
    coverage_from_report,
    coverage_map_svg,
    equity_curve_svg,
    html_page,
    ingest_coverage_markdown,
    markdown_image,
    price_chart_svg,
    replay_pictures_markdown,
    report_html,
    svg_data_uri,
)
from cachelib.sync import SyncReport

NS = {"s": "http://www.w3.org/2000/svg"}
D1, D2, D3 = date(2025, 1, 2), date(2025, 1, 3), date(2025, 1, 6)


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _points(root: ET.Element) -> list[tuple[float, float]]:
    line = root.find("s:polyline", NS)
    assert line is not None
    return [tuple(float(v) for v in p.split(",")) for p in line.get("points", "").split()]  # type: ignore[misc]


def _rects(root: ET.Element, state: str | None = None) -> list[dict[str, str]]:
    return [dict(r.attrib) for r in root.findall("s:rect", NS)
            if r.get("class", "") != "bg" and "legend" not in r.get("class", "") and (state is None or r.get("class") == state)]


# -- equity curve ----------------------------------------------------------------------------


def test_equity_curve_accumulates_pnl_per_session():
    # 3 trades, +10, -4, +6, one per session: the curve is 10, 6, 12; y spans 0..12.
    svg = equity_curve_svg([D1, D2, D3], {D1: 10.0, D2: -4.0, D3: 6.0}, "AAPL")
    root = _parse(svg)
    assert _points(root) == [(60, 50), (330, 110), (600, 20)]
    dots = [(float(c.get("cx", "")), float(c.get("cy", ""))) for c in root.findall("s:circle", NS)]
    assert dots == [(60, 50), (330, 110), (600, 20)]
    zero = [ln for ln in root.findall("s:line", NS) if ln.get("class") == "zero"][0]
    assert (zero.get("y1"), zero.get("y2")) == ("200", "200")
    texts = [t.text for t in root.findall("s:text", NS)]
    assert "2025-01-02" in texts and "2025-01-06" in texts and "3 session(s), P&L +12.00" in texts


def test_equity_curve_session_without_trades_stays_flat_and_losses_go_below_zero():
    # -5 on day 1, nothing on day 2, +15 on day 3: -5, -5, 10; y spans -5..10 (15 units / 180 px).
    root = _parse(equity_curve_svg([D3, D1, D2], {D1: -5.0, D3: 15.0}))
    assert _points(root) == [(60, 200), (330, 200), (600, 20)]
    zero = [ln for ln in root.findall("s:line", NS) if ln.get("class") == "zero"][0]
    assert zero.get("y1") == "140"


def test_equity_curve_single_session_is_centred():
    assert _points(_parse(equity_curve_svg([D1], {D1: 3.0}))) == [(330, 20)]


def test_equity_curve_refuses_bad_input():
    with pytest.raises(ValueError, match="no sessions"):
        equity_curve_svg([], {})
    with pytest.raises(ValueError, match="2025-01-06, which is not one of the sessions"):
        equity_curve_svg([D1, D2], {D3: 1.0})
    with pytest.raises(ValueError, match="P&L of 2025-01-02 must be a finite number"):
        equity_curve_svg([D1], {D1: float("nan")})


def test_equity_curve_of_five_years_has_no_dots_and_stays_small():
    from cachelib.market_hours import sessions_in_range

    days = sessions_in_range(date(2020, 1, 2), date(2024, 12, 31))
    svg = equity_curve_svg(days, {d: (1.0 if i % 3 else -1.5) for i, d in enumerate(days)})
    root = _parse(svg)
    assert len(_points(root)) == 1258
    assert root.findall("s:circle", NS) == []
    assert len(svg) < 20_000


# -- price chart -----------------------------------------------------------------------------


def _t(minute: int) -> datetime:
    return datetime(2025, 1, 2, 14, 30 + minute, tzinfo=timezone.utc)  # 09:30 ET onwards


def test_price_chart_marks_entries_and_exits_at_their_time_and_price():
    times = [_t(m) for m in range(5)]
    closes = [100.0, 101.0, 102.0, 101.0, 104.0]
    trades = [TradeMark(_t(1), 101.0, _t(4), 104.0, 3.0),  # a gain
              TradeMark(_t(2), 102.0, _t(3), 101.0, -1.0),  # a loss
              TradeMark(_t(3), 101.0)]  # still open: an entry only
    root = _parse(price_chart_svg(times, closes, trades, "AAPL 2025-01-02"))
    # x: 4 minutes over 540 px (135 per minute); y: 100..104 over 180 px (45 per dollar).
    assert _points(root) == [(60, 200), (195, 155), (330, 110), (465, 155), (600, 20)]
    entries = [(float(c.get("cx", "")), float(c.get("cy", ""))) for c in root.findall("s:circle", NS)]
    assert entries == [(195, 155), (330, 110), (465, 155)]
    exits = [(r.get("class"), float(r.get("x", "")) + 4, float(r.get("y", "")) + 4) for r in root.findall("s:rect", NS)
             if r.get("class") != "bg"]
    assert exits == [("exit win", 600, 20), ("exit loss", 465, 155)]
    assert len([ln for ln in root.findall("s:line", NS) if ln.get("class") == "hold"]) == 2
    texts = [t.text for t in root.findall("s:text", NS)]
    assert "09:30 ET" in texts and "09:34 ET" in texts and "104.00" in texts and "100.00" in texts


def test_price_chart_refuses_bad_input():
    with pytest.raises(ValueError, match="2 times but 1 closes"):
        price_chart_svg([_t(0), _t(1)], [1.0])
    with pytest.raises(ValueError, match="no bars"):
        price_chart_svg([], [])
    with pytest.raises(ValueError, match="timezone-aware"):
        price_chart_svg([datetime(2025, 1, 2, 14, 30)], [1.0])
    with pytest.raises(ValueError, match="trade 0 entry_price must be a finite number"):
        price_chart_svg([_t(0)], [1.0], [TradeMark(_t(0), float("inf"))])


# -- coverage map ----------------------------------------------------------------------------


def test_coverage_map_draws_runs_of_equal_cells_with_a_legend():
    grid = CoverageGrid(("AAPL", "MSFT"), (D1, D2, D3),
                        {"AAPL": ["cached", "cached", "fetched"], "MSFT": ["missing", "rejected", "cached"]})
    root = _parse(coverage_map_svg(grid, "1Day coverage"))
    # 3 columns of 180 px; AAPL's two cached sessions are one rectangle.
    cells = [(r["class"], float(r["x"]), float(r["y"]), float(r["width"]), r["data-first"], r["data-last"])
             for r in _rects(root)]
    assert cells == [
        ("c", 70, 30, 360, "2025-01-02", "2025-01-03"),
        ("f", 430, 30, 180, "2025-01-06", "2025-01-06"),
        ("m", 70, 44, 180, "2025-01-02", "2025-01-02"),
        ("r", 250, 44, 180, "2025-01-03", "2025-01-03"),
        ("c", 430, 44, 180, "2025-01-06", "2025-01-06"),
    ]
    texts = [t.text for t in root.findall("s:text", NS)]
    assert [t for t in texts if t in ("AAPL", "MSFT")] == ["AAPL", "MSFT"]
    assert {"cached (3)", "fetched now (1)", "missing (1)", "rejected (1)"} <= set(texts)
    assert len([r for r in root.findall("s:rect", NS) if "legend" in r.get("class", "")]) == 4


def test_coverage_map_bins_long_ranges_showing_the_worst_state():
    days = tuple(date(2000, 1, 1).fromordinal(date(2020, 1, 1).toordinal() + i) for i in range(240))
    row = ["cached"] * 240
    row[5] = "missing"
    grid = CoverageGrid(("SPY",), days, {"SPY": row})
    root = _parse(coverage_map_svg(grid))
    # 240 sessions -> 120 columns of 2 sessions, 4.5 px each; column 2 holds the missing one.
    assert [(r["class"], r["x"], r["width"]) for r in _rects(root)] == [
        ("c", "70", "9"), ("m", "79", "4.5"), ("c", "83.5", "526.5")]
    assert any("a column is 2 sessions" in (t.text or "") for t in root.findall("s:text", NS))


def test_coverage_map_draws_troubled_symbols_first_past_the_row_limit():
    symbols = tuple(f"S{i:03d}" for i in range(100))
    states = {s: ["cached"] for s in symbols}
    states["S099"] = ["rejected"]
    root = _parse(coverage_map_svg(CoverageGrid(symbols, (D1,), states)))
    rects = _rects(root)
    assert len(rects) == 60
    assert [r["class"] for r in rects].count("r") == 1
    assert any("40 more symbol(s) with no missing or rejected session not drawn" in (t.text or "")
               for t in root.findall("s:text", NS))


def test_coverage_map_size_limits():
    from cachelib.market_hours import sessions_in_range

    days = tuple(sessions_in_range(date(2020, 1, 2), date(2024, 12, 31)))
    symbols = tuple(f"S{i:03d}" for i in range(500))
    # A realistic backfill: everything cached, a few holes.
    states = {s: ["cached"] * len(days) for s in symbols}
    states["S007"][100] = "missing"
    realistic = coverage_map_svg(CoverageGrid(symbols, days, states))
    assert len(realistic) < 20_000
    # The worst case: every session alternates state; bounded by MAX_ROWS x MAX_COLUMNS cells.
    worst = {s: ["missing" if i % 2 else "cached" for i in range(len(days))] for s in symbols}
    worst["S001"] = ["rejected" if i % 11 == 0 else "cached" for i in range(len(days))]
    svg = coverage_map_svg(CoverageGrid(symbols, days, worst))
    assert len(_rects(_parse(svg))) <= 60 * 120
    assert len(svg) < 800_000


def test_coverage_grid_refuses_bad_input():
    with pytest.raises(ValueError, match="coverage of AAPL: need one state per session \\(2\\), got 1"):
        CoverageGrid(("AAPL",), (D1, D2), {"AAPL": ["cached"]})
    with pytest.raises(ValueError, match="unknown state 'ok'"):
        CoverageGrid(("AAPL",), (D1,), {"AAPL": ["ok"]})  # type: ignore[list-item]
    with pytest.raises(ValueError, match="nothing to draw"):
        coverage_map_svg(CoverageGrid((), (D1,), {}))


def test_coverage_from_report_states():
    # 2025-01-02 .. 2025-01-08: sessions 2, 3, 6, 7, 8 (no weekend).
    report = SyncReport("demo", "1Day", ["AAPL", "MSFT"], date(2025, 1, 2), date(2025, 1, 8),
                        fetched_runs={"AAPL": [(date(2025, 1, 6), date(2025, 1, 7))], "MSFT": [(D1, D1)]},
                        rejected_sessions={"AAPL": [date(2025, 1, 7)]},
                        unfinished_sessions=[date(2025, 1, 8)])
    grid = coverage_from_report(report)
    assert grid.sessions == (D1, D2, D3, date(2025, 1, 7), date(2025, 1, 8))
    assert grid.states == {"AAPL": ["cached", "cached", "fetched", "rejected", "missing"],
                           "MSFT": ["fetched", "cached", "cached", "cached", "missing"]}
    md = ingest_coverage_markdown(report)
    assert md.startswith("## 1Day coverage 2025-01-02 .. 2025-01-08 (demo)\n\n![1Day coverage")
    assert md.endswith("(symbol, session) pairs: cached 5, fetched now 2, missing 2, rejected 1\n")


def test_sync_report_records_fetched_runs_and_unfinished_sessions(sqlite_cache):
    from cachelib.demo import DemoSource
    from cachelib.sync import sync_bars

    now = datetime(2025, 1, 8, 18, 0, tzinfo=timezone.utc)  # 2025-01-08 still trading
    first = sync_bars(sqlite_cache, DemoSource(seed=1), ["AAPL"], "2025-01-02", "2025-01-03", now=now)
    second = sync_bars(sqlite_cache, DemoSource(seed=1), ["AAPL", "MSFT"], "2025-01-02", "2025-01-08", now=now)
    assert first.fetched_runs == {"AAPL": [(D1, D2)]}
    assert second.unfinished_sessions == [date(2025, 1, 8)]
    assert coverage_from_report(second).states == {
        "AAPL": ["cached", "cached", "fetched", "fetched", "missing"],
        "MSFT": ["fetched", "fetched", "fetched", "fetched", "missing"],
    }
    merged = SyncReport.merge([first, second])
    assert merged.fetched_runs["AAPL"] == [(D1, D2), (D3, date(2025, 1, 7))]
    assert merged.capped(0).fetched_runs == merged.fetched_runs


# -- wrappers --------------------------------------------------------------------------------


def test_markdown_image_is_a_data_uri_that_decodes_back():
    svg = equity_curve_svg([D1], {D1: 1.0}, "a <b> & c")
    md = markdown_image(svg, "equity [AAPL]\ncurve")
    match = re.fullmatch(r"!\[equity \(AAPL\) curve\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", md)
    assert match is not None
    assert base64.b64decode(match.group(1)).decode("utf-8") == svg
    assert svg_data_uri(svg) == md[md.index("(data:") + 1:-1]
    assert "<title>a &lt;b&gt; &amp; c</title>" in svg


def test_markdown_image_renders_as_an_image_in_commonmark():
    from markdown_it import MarkdownIt

    md = markdown_image(coverage_map_svg(CoverageGrid(("SPY",), (D1,), {"SPY": ["cached"]})), "coverage")
    parser = MarkdownIt()
    # markdown-it refuses data:image/svg+xml links by default; Prefect's UI renders them (NOTES.md,
    # checked in Chromium). What is tested here is the markdown: one image, the alt text, the URL whole.
    parser.validateLink = lambda url: True  # type: ignore[method-assign]
    rendered = parser.render(md)
    assert rendered.startswith('<p><img src="data:image/svg+xml;base64,') and 'alt="coverage"' in rendered


def test_html_page_is_self_contained():
    svg = equity_curve_svg([D1], {D1: 1.0})
    page = html_page("Report <1>", [("Equity & more", svg)], note="made today")
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>Report &lt;1&gt;</h1>" in page and "<h2>Equity &amp; more</h2>" in page
    assert svg in page
    assert not re.search(r"(src|href)=\"(https?:|//)", page)  # nothing fetched from elsewhere


# -- from a real cache -----------------------------------------------------------------------


def _trade(tid: str, symbol: str, day: int, pnl: float) -> dict[str, object]:
    entry = datetime(2025, 1, day, 15, 0, tzinfo=timezone.utc)
    exit_ = datetime(2025, 1, day, 16, 0, tzinfo=timezone.utc)
    return {"trade_id": tid, "symbol": symbol, "entry_date": entry, "entry_price": 100.0, "quantity": 1.0,
            "exit_date": exit_, "exit_price": 100.0 + pnl, "strategy_name": "sma_crossover"}


def test_replay_pictures_and_report_from_the_cache(cache):
    from cachelib.demo import DemoSource
    from cachelib.sync import sync_bars

    cache.archive_trades([_trade("t1", "AAPL", 2, 10.0), _trade("t2", "MSFT", 3, -4.0),
                          _trade("t3", "AAPL", 6, 6.0), _trade("x", "AAPL", 6, 50.0) | {"strategy_name": "other"}])
    now = datetime(2025, 1, 10, 23, 0, tzinfo=timezone.utc)
    sync_bars(cache, DemoSource(seed=2), ["AAPL"], "2025-01-06", "2025-01-06", timeframe="1Min", now=now)
    sync_bars(cache, DemoSource(seed=2), ["AAPL"], "2025-01-02", "2025-01-03", now=now)

    md = replay_pictures_markdown(cache, ["AAPL", "MSFT"], [D1, D2, D3], "sma_crossover")
    images = re.findall(r"!\[([^\]]*)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", md)
    assert [alt for alt, _ in images] == ["sma_crossover equity curve 2025-01-02 .. 2025-01-06",
                                          "AAPL 2025-01-06 1Min closes"]
    curve = _parse(base64.b64decode(images[0][1]).decode())
    assert _points(curve) == [(60, 50), (330, 110), (600, 20)]  # 10, 6, 12 (not the other strategy's 50)
    chart = _parse(base64.b64decode(images[1][1]).decode())
    assert len(chart.findall("s:circle", NS)) == 1 and len(_rects(chart)) == 1  # AAPL's entry and exit

    page = report_html(cache, None, D1, date(2025, 1, 7), strategy="sma_crossover", now=now)
    svgs = re.findall(r"<svg .*?</svg>", page)
    assert len(svgs) == 3  # coverage, equity curve, AAPL's day
    coverage = _parse(svgs[0])
    # Sessions 2, 3, 6, 7: AAPL's daily bars cached on the 2nd and 3rd only.
    assert [(r["class"], r["data-first"], r["data-last"]) for r in _rects(coverage)] == [
        ("c", "2025-01-02", "2025-01-03"), ("m", "2025-01-06", "2025-01-07")]
    assert _points(_parse(svgs[1])) == [(60, 50), (240, 110), (420, 20), (600, 20)]  # 10, 6, 12, 12


def test_coverage_from_cache_stops_at_the_latest_finished_session(cache):
    now = datetime(2025, 1, 3, 15, 0, tzinfo=timezone.utc)  # 2025-01-03 still trading
    grid = coverage_from_cache(cache, ["spy"], D1, D3, now=now)
    assert (grid.symbols, grid.sessions, dict(grid.states)) == (("SPY",), (D1,), {"SPY": ["missing"]})


def test_cli_report_writes_html_and_refuses_to_overwrite_without_force(cache_url, tmp_path, capsys):
    from cli_support import at

    from cachelib.cli import main
    from cachelib.store import TradingCacheManager

    with TradingCacheManager(cache_url) as cache:
        cache.archive_trades([_trade("t1", "AAPL", 2, 10.0), _trade("t2", "AAPL", 3, -4.0)])
    out = tmp_path / "report.html"
    args = [*at(cache_url), "report", "--output", str(out), "--symbols", "AAPL", "--start", "2025-01-02",
            "--end", "2025-01-03"]
    assert main(args) == 0
    page = out.read_text()
    svgs = re.findall(r"<svg .*?</svg>", page)
    assert len(svgs) == 2  # coverage (nothing cached: missing), equity curve (no minute bars: no day chart)
    assert [(r["class"], r["data-first"], r["data-last"]) for r in _rects(_parse(svgs[0]))] == [
        ("m", "2025-01-02", "2025-01-03")]
    assert _points(_parse(svgs[1])) == [(60, 20), (600, 92)]  # 10, then 6: y spans 0..10
    capsys.readouterr()
    out.write_text("keep me")
    assert main(args) == 1
    assert capsys.readouterr().err == f"error: {out} exists; pass --force to overwrite\n"
    assert out.read_text() == "keep me"
    assert main([*args, "--force"]) == 0 and out.read_text() == page
    assert main([*at(cache_url), "report", "--output", str(out), "--start", "2025-01-03", "--end", "2025-01-02"]) == 2
