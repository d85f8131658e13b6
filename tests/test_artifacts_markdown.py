"""Every markdown artifact the flows publish, parsed with a CommonMark parser (issue 9, section 6).

A GFM table placed inside a list item renders as raw ``| symbol | day |`` text (that is what
``replay-summary`` showed whenever sessions lacked bars). The artifacts' text is built by pure
functions, tested here for every branch (sessions lacking bars, skipped day, rejections,
empty), with markdown-it (installed with Prefect) and its GFM table rule: each table must be a
``table_open`` with the expected header cells, and no text outside a table may hold a pipe.
One end-to-end test runs the daily pipeline twice for past days on a real Prefect API and
checks the option-chain wording against the cache, on both engines.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pytest
from markdown_it import MarkdownIt

from cachelib.maintenance import StatRow
from cachelib.replay import ReplaySummary
from cachelib.sync import CorporateActionSyncReport, OptionSyncReport, SyncReport
from flows._common import markdown_cell, markdown_code, markdown_table
from flows.daily_pipeline import PipelineRun, pipeline_skipped_markdown, pipeline_summary_markdown
from flows.ingest_bars import bars_skipped_markdown, bars_summary_markdown
from flows.ingest_options import (
    ChainsIngest,
    options_capture_text,
    options_skipped_markdown,
    options_summary_markdown,
)
from flows.maintenance import maintenance_summary_markdown
from flows.replay import replay_summary_markdown

MD = MarkdownIt("commonmark").enable("table")


def parse(text: str) -> dict[str, Any]:
    """``{"tables": [{"header": [...], "rows": [[...], ...]}], "stray": [...], "text": str}``:
    each table's cells (as rendered text), and every inline text outside tables that holds a
    ``|`` (a table that failed to render)."""
    tables: list[dict[str, Any]] = []
    stray: list[str] = []
    in_table = in_head = False
    row: list[str] = []
    for token in MD.parse(text):
        if token.type == "table_open":
            in_table = True
            tables.append({"header": [], "rows": []})
        elif token.type == "table_close":
            in_table = False
        elif token.type == "thead_open":
            in_head = True
        elif token.type == "thead_close":
            in_head = False
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and in_table:
            if in_head:
                tables[-1]["header"] = row
            else:
                tables[-1]["rows"].append(row)
        elif token.type == "inline":
            rendered = "".join(c.content for c in token.children or [] if c.type in ("text", "code_inline"))
            if in_table:
                row.append(rendered)
            elif "|" in rendered:
                stray.append(rendered)
    return {"tables": tables, "stray": stray, "text": text}


def headers(text: str) -> list[list[str]]:
    parsed = parse(text)
    assert parsed["stray"] == [], f"raw table text outside a table: {parsed['stray']}\n{text}"
    return [t["header"] for t in parsed["tables"]]


# -- the shared helpers --------------------------------------------------------------------------


def test_markdown_table_escapes_pipes_and_line_breaks_in_cells():
    rows = [{"reason": "high | low\nswapped", "path": "C:\\data\\|x"}, {"reason": "ok", "path": "-"}]
    parsed = parse(markdown_table(rows))
    assert parsed["stray"] == []
    assert parsed["tables"] == [{
        "header": ["reason", "path"],
        "rows": [["high | low swapped", "C:\\data\\|x"], ["ok", "-"]],
    }]
    assert markdown_cell("a|b") == "a\\|b"
    assert markdown_table([]) == "_(none)_"


def test_markdown_code_survives_backticks():
    tokens = [t for t in MD.parseInline(f"db {markdown_code('/tmp/we`ird.db')}")[0].children]
    assert [(t.type, t.content) for t in tokens] == [("text", "db "), ("code_inline", "/tmp/we`ird.db")]


# -- replay-summary ------------------------------------------------------------------------------

PER_SYMBOL = ["symbol", "sessions", "bars", "trades", "winning_trades", "total_pnl"]
STATS = ["metric", "value"]


def replay_summary(missing: list[tuple[str, str]]) -> ReplaySummary:
    return ReplaySummary(
        strategy="sma_crossover", symbols=("AAPL", "MSFT"), start=date(2024, 3, 11), end=date(2024, 3, 15),
        sessions=5, sessions_replayed=10 - len(missing), bars=3510, trades=7, winning_trades=3, total_pnl=-12.5,
        trades_by_symbol={"AAPL": 4, "MSFT": 3}, missing=tuple((s, date.fromisoformat(d)) for s, d in missing),
        stats={}, elapsed_seconds=1.0,
    )


ROWS = [
    {"symbol": "AAPL", "sessions": 5, "bars": 1950, "trades": 4, "winning_trades": 2, "total_pnl": 3.25},
    {"symbol": "MSFT", "sessions": 4, "bars": 1560, "trades": 3, "winning_trades": 1, "total_pnl": -15.75},
]
TRADE_STATS = [{"metric": "total_trades", "value": 7}, {"metric": "profit_factor", "value": None}]


def test_replay_summary_with_sessions_lacking_bars_has_the_missing_table_as_a_table():
    missing = [("MSFT", "2024-03-14")]
    text = replay_summary_markdown(replay_summary(missing), ROWS, TRADE_STATS)
    assert headers(text) == [PER_SYMBOL, ["symbol", "day"], STATS]
    assert parse(text)["tables"][1]["rows"] == [["MSFT", "2024-03-14"]]
    assert "<li>not replayed for lack of 1Min bars: <strong>1</strong> (symbol, session) pair(s), listed below</li>" \
        in MD.render(text)


def test_replay_summary_without_missing_sessions():
    text = replay_summary_markdown(replay_summary([]), ROWS, TRADE_STATS, unfinished=[date(2024, 3, 15)])
    assert headers(text) == [PER_SYMBOL, STATS]
    assert "not replayed for lack of 1Min bars: none" in text
    assert "not finished yet, not replayed: 2024-03-15" in text


def test_replay_summary_lists_at_most_50_missing_pairs():
    missing = [(f"S{i:02d}", "2024-03-14") for i in range(60)]
    text = replay_summary_markdown(replay_summary(missing), ROWS, TRADE_STATS)
    assert headers(text) == [PER_SYMBOL, ["symbol", "day"], STATS]
    assert len(parse(text)["tables"][1]["rows"]) == 50
    assert "... and 10 more" in text


def test_replay_summary_with_nothing_to_show():
    text = replay_summary_markdown(replay_summary([]), [], [])
    assert headers(text) == []
    assert text.count("_(none)_") == 2


# -- ingest-bars-<tf>-summary --------------------------------------------------------------------


def bars_summary(per_symbol: dict[str, Any], reasons: dict[str, int],
                 actions: CorporateActionSyncReport | None = None) -> str:
    report = SyncReport(
        "alpaca", "1Day", list(per_symbol), date(2024, 1, 2), date(2024, 12, 31), sessions_fetched=250,
        sessions_requested=252, requests_made=1, rows_fetched=500, rows_written=498,
        rows_rejected=sum(reasons.values()), per_symbol=per_symbol, rejection_counts=reasons,
    )
    return bars_summary_markdown(report, chunks=1, db_path="/tmp/cache.db", actions=actions)


def actions_report(fetched: bool) -> CorporateActionSyncReport:
    if not fetched:
        return CorporateActionSyncReport("alpaca", ["NVDA", "SPY"], date(2024, 1, 2), date(2024, 12, 31))
    return CorporateActionSyncReport("alpaca", ["NVDA", "SPY"], date(2024, 1, 2), date(2024, 12, 31),
                                     symbols_fetched=["NVDA", "SPY"], fetched_start=date(2024, 1, 2),
                                     fetched_end=date(2024, 12, 31), requests_made=1, actions_written=9)


def test_ingest_bars_summary_has_a_corporate_actions_line():
    per_symbol = {"SPY": {"sessions_fetched": 250, "rows_fetched": 250, "rows_written": 250, "rows_rejected": 0}}
    text = bars_summary(per_symbol, {}, actions_report(fetched=True))
    assert headers(text) == [["symbol", "sessions_fetched", "rows_fetched", "rows_written", "rows_rejected"]]
    assert "<li>corporate actions: 9 written for 2024-01-02 .. 2024-12-31, 2 of 2 symbol(s) asked, 1 request(s)</li>" \
        in MD.render(text)
    text = bars_summary(per_symbol, {}, actions_report(fetched=False))
    assert "<li>corporate actions: 2024-01-02 .. 2024-12-31 cached already for 2 symbol(s): no request</li>" \
        in MD.render(text)
    assert "corporate actions" not in bars_summary(per_symbol, {})  # a run that synced none


def test_ingest_bars_summary_with_rejections_holding_pipes():
    per_symbol = {"SPY": {"sessions_fetched": 250, "rows_fetched": 250, "rows_written": 248, "rows_rejected": 2}}
    reasons = {"bar field 'o' holds non-numbers, e.g. 'a|b'": 1, "high below max(open, close)": 1}
    text = bars_summary(per_symbol, reasons)
    assert headers(text) == [["symbol", "sessions_fetched", "rows_fetched", "rows_written", "rows_rejected"],
                             ["reason", "rows"]]
    assert parse(text)["tables"][1]["rows"] == [["bar field 'o' holds non-numbers, e.g. 'a|b'", "1"],
                                                ["high below max(open, close)", "1"]]


def test_ingest_bars_summary_empty_and_skipped():
    text = bars_summary({}, {})
    assert headers(text) == []
    assert text.count("_(none)_") == 2
    skipped = bars_skipped_markdown("1Min", "Market closed (Holiday)")
    assert headers(skipped) == []
    assert MD.render(skipped) == "<h2>1Min bars: skipped</h2>\n<p>Market closed (Holiday)</p>\n"


# -- option-chains-summary -----------------------------------------------------------------------

OPTION_TABLE = ["underlying", "rows_written", "trading_date", "requests_made"]


def options_summary(day: str | None, new: int | None, underlyings: tuple[str, ...] = ("AAPL", "SPY")) -> ChainsIngest:
    report = OptionSyncReport("demo", dict.fromkeys(underlyings, 768), dict.fromkeys(underlyings, "2026-11-27"),
                              requests_made=len(underlyings))
    return ChainsIngest("completed", "/tmp/c.db", report, new_rows=new,
                        day=None if day is None else date.fromisoformat(day))


TABLE_ROWS = [{"underlying": "AAPL", "rows_written": 768, "trading_date": "2026-11-27", "requests_made": 1},
              {"underlying": "SPY", "rows_written": 768, "trading_date": "2026-11-27", "requests_made": 1}]


def test_option_summary_of_a_backfill_says_what_was_captured_and_for_which_day():
    s = options_summary("2026-11-20", 0)
    assert options_capture_text(s) == (
        "captured the latest snapshot (vendors serve only the current chain), 1,536 contract(s) filed "
        "under 2026-11-27: 0 new, 1,536 replaced an earlier snapshot of the same day; historical chains "
        "for 2026-11-20 cannot be fetched"
    )
    text = options_summary_markdown(s, TABLE_ROWS)
    assert headers(text) == [OPTION_TABLE]
    assert options_capture_text(s) in text


def test_option_summary_of_todays_run_and_of_a_skip():
    assert options_capture_text(options_summary("2026-11-27", 1536)) == (
        "captured the latest snapshot (vendors serve only the current chain), 1,536 contract(s) filed "
        "under 2026-11-27: 1,536 new, 0 replaced an earlier snapshot of the same day"
    )
    assert headers(options_summary_markdown(options_summary(None, None), TABLE_ROWS)) == [OPTION_TABLE]
    assert headers(options_summary_markdown(options_summary(None, None, underlyings=()), [])) == []
    assert headers(options_skipped_markdown("Market closed (Weekend)")) == []


# -- daily-pipeline-summary and cache-maintenance-summary ----------------------------------------

STAGES = [{"stage": "daily bars", "requests": 1, "rows_written": 250, "rows_rejected": 0},
          {"stage": "corporate actions", "requests": 1, "rows_written": 9, "rows_rejected": 0},
          {"stage": "1-minute bars", "requests": 1, "rows_written": 390, "rows_rejected": 0},
          {"stage": "option chains", "requests": 2, "rows_written": 1536, "rows_rejected": 0}]
CACHE_STATS: list[StatRow] = [{"metric": "option contracts", "before": 1536, "after": 1536, "change": 0}]


def pipeline_summary(replay: ReplaySummary | None) -> PipelineRun:
    return PipelineRun("completed", date(2026, 11, 20), symbols=["AAPL", "SPY"], db_path="/tmp/c.db",
                       option_chains=options_summary("2026-11-20", 0), replay=replay,
                       corporate_actions=actions_report(fetched=True))


def _replay(replayed: int, missing: tuple[tuple[str, date], ...]) -> ReplaySummary:
    return ReplaySummary("sma_crossover", ("AAPL", "SPY"), date(2026, 11, 20), date(2026, 11, 20), sessions=1,
                         sessions_replayed=replayed, bars=390 * replayed, trades=2, winning_trades=1, total_pnl=1.5,
                         trades_by_symbol={"AAPL": 2, "SPY": 0}, missing=missing, stats={}, elapsed_seconds=0.1)


@pytest.mark.parametrize("replay", [
    None,
    _replay(1, (("SPY", date(2026, 11, 20)),)),
    _replay(2, ()),
], ids=["not-closed", "missing-bars", "complete"])
def test_daily_pipeline_summary(replay):
    text = pipeline_summary_markdown(pipeline_summary(replay), STAGES, CACHE_STATS)
    assert headers(text) == [["stage", "requests", "rows_written", "rows_rejected"],
                             ["metric", "before", "after", "change"]]
    assert "historical chains for 2026-11-20 cannot be fetched" in text
    assert "0 new, 1,536 replaced an earlier snapshot of the same day" in text
    assert "<li>corporate actions: 9 written for 2024-01-02 .. 2024-12-31, 2 of 2 symbol(s) asked, 1 request(s)</li>" \
        in MD.render(text)
    assert parse(text)["tables"][0]["rows"][1] == ["corporate actions", "1", "9", "0"]


def test_daily_pipeline_skipped_and_maintenance():
    assert headers(pipeline_skipped_markdown(date(2026, 11, 26), "Market closed (Holiday)")) == []
    rows = [{"metric": "bars", "before": 145, "after": 21, "change": -124}]
    text = maintenance_summary_markdown("/tmp/c.db", 124, True, 4096, rows)
    assert headers(text) == [["metric", "before", "after", "change"]]
    assert parse(text)["tables"][0]["rows"] == [["bars", "145", "21", "-124"]]


def test_make_run_summary_line_says_where_the_chains_are_filed():
    from flows.main import _chains_note

    assert _chains_note(options_summary(None, 0), date(2026, 11, 20)) == (
        " filed under 2026-11-27, 0 new; the 2026-11-20 chain cannot be fetched (vendors serve only the current one)")
    assert _chains_note(options_summary(None, 1536), date(2026, 11, 27)) == " filed under 2026-11-27, 1,536 new"


# -- end to end: a backfill of past days on a real Prefect API -----------------------------------

WED_AFTER_CLOSE = datetime(2025, 11, 26, 22, 0, tzinfo=timezone.utc)  # "today": Wednesday 2025-11-26


def option_rows(db: str, sql: str) -> list[tuple]:
    """The rows of ``sql`` on the cache at ``db`` (either engine)."""
    from cachelib.store import TradingCacheManager

    with TradingCacheManager(db, create=False) as cache:
        return [tuple(row) for row in cache.conn.execute(sql).fetchall()]


def test_backfills_of_past_days_say_which_day_the_chains_are_filed_under(prefect_harness, cache_url, monkeypatch):
    """Two backfills of past days, run the same day: both capture *today's* chain. The second
    replaces the first contract by contract, so the cache's option rows do not grow although
    the stage writes rows; the summary says so instead of contradicting the before/after table."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    import cachelib.sources as sources
    from cachelib.demo import DemoSource
    from flows import _common
    from flows.daily_pipeline import daily_pipeline

    monkeypatch.setattr(_common, "now", lambda: WED_AFTER_CLOSE)
    # The demo source's quotes as of the same "today" (its clock is a constructor argument).
    monkeypatch.setattr(sources, "get_source", lambda name, **kw: DemoSource(now=WED_AFTER_CLOSE))
    db = cache_url

    first = daily_pipeline(day=date(2025, 11, 20), symbols=["AAPL"], source="demo", db_path=db)
    [(contracts,)] = option_rows(db, "SELECT COUNT(*) FROM raw_options_chain")
    filed = option_rows(db, "SELECT DISTINCT trading_date FROM raw_options_chain")
    assert contracts > 0 and [str(d) for (d,) in filed] == ["2025-11-26"]
    assert (first.option_chains.new_rows, first.option_chains.replaced_rows) == (contracts, 0)

    state = daily_pipeline(day=date(2025, 11, 21), symbols=["AAPL"], source="demo", db_path=db,
                           return_state=True)
    second = state.result()
    assert option_rows(db, "SELECT COUNT(*) FROM raw_options_chain") == [(contracts,)]
    chains = second.option_chains
    assert (chains.report.rows_written, chains.new_rows, chains.replaced_rows) == (contracts, 0, contracts)
    assert second.cache_before.options["total_rows"] == second.cache_after.options["total_rows"] == contracts

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    markdown = {a.key: a.data for a in artifacts if a.type == "markdown"}
    pictures = {"ingest-bars-1day-coverage", "ingest-bars-1min-coverage", "replay-pictures"}
    assert set(markdown) == {"daily-pipeline-summary", "ingest-bars-1day-summary", "ingest-bars-1min-summary",
                             "option-chains-summary", "replay-summary", *pictures}
    for key in pictures:  # pictures as data-URI images (Prefect's UI strips inline <svg>)
        assert "](data:image/svg+xml;base64," in markdown.pop(key), key
    for key, text in markdown.items():  # every table renders as a table, no raw pipes
        assert all(h for h in headers(text)), key
    expected = (f"captured the latest snapshot (vendors serve only the current chain), {contracts:,} contract(s) "
                f"filed under 2025-11-26: 0 new, {contracts:,} replaced an earlier snapshot of the same day; "
                f"historical chains for 2025-11-21 cannot be fetched")
    assert expected in markdown["daily-pipeline-summary"]
    assert expected in markdown["option-chains-summary"]
