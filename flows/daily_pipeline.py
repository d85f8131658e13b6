"""Flow: the end-of-day runbook - bars, option chains, replay, report - for one session.

Reads top to bottom like the runbook it replaces:

1. Weekend or holiday? Log ``Market closed (Weekend)`` / ``Market closed (Holiday)`` and stop.
2. Daily bars for the year up to ``day`` (gap-aware: after the first run, one session), then
   the corporate actions of the symbols over that year and the 90 days after ``day``
   (``ACTION_LOOKAHEAD``: announced splits and dividends arrive before their ex-date), in one
   request; later runs ask only about the last 30 days and the days ahead, where announcements
   still change. Reads adjust raw bars by them.
3. One option-chain snapshot per symbol (vendors only serve the latest chain); it depends on
   nothing else, so its tasks run on the task runner alongside steps 4-5.
4. One-minute bars of ``day`` (all of them once it has closed; what exists so far otherwise).
5. Replay ``day`` through ``sma_crossover`` - only once the session has closed and settled;
   a manual run at noon ingests what exists and says that the replay waits.
6. Report: artifacts with what was fetched, rejected, replayed, and the cache before/after.

Each stage's artifacts are created by a background thread while the next stage runs
(``flows._common.artifacts_in_background``: one API call each, ~20 ms of mostly the server's
work); the run waits for all of them before it returns, and fails, naming the keys, if one
could not be created.

The replay reads RAW prices, what was traded that day, never adjusted ones.

The stages call their tasks directly inside this one flow run (the stage helpers are shared
with the ``ingest_bars``, ``ingest_option_chains`` and ``replay_days`` flows, and publish the
same artifacts), rather than running those flows as subflows: in Prefect 3.8.8 every flow run
costs about a second of fixed overhead (API round trips and the heartbeat thread's join), which
would be most of this pipeline's wall time. The UI shows every task run of every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from prefect import flow, get_run_logger

from cachelib.maintenance import CacheSnapshot, StatRow, stats_rows
from cachelib.market_hours import closed_reason, is_session_finished, session_bounds, today_et
from cachelib.replay import ReplaySummary
from cachelib.sources import describe_source
from cachelib.sync import CorporateActionSyncReport
from flows import _common
from flows._common import (
    DEFAULT_SYMBOLS,
    artifacts_in_background,
    choose_task_runner,
    default_symbols,
    display_db,
    markdown_code,
    markdown_table,
    publish_markdown,
    publish_table,
    resolve_db_path,
)
from flows.ingest_bars import BarsIngest, actions_text, ingest_stage
from flows.ingest_options import ChainsIngest, options_capture_text, options_stage, submit_options
from flows.replay import replay_stage
from tasks.maintenance import cache_stats

__all__ = ["daily_pipeline", "PipelineRun", "DEFAULT_SYMBOLS", "DAILY_LOOKBACK", "STRATEGY",
           "pipeline_summary_markdown", "pipeline_skipped_markdown"]

#: How much daily history the pipeline keeps cached behind ``day``.
DAILY_LOOKBACK = timedelta(days=365)
STRATEGY = "sma_crossover"
SUMMARY_KEY = "daily-pipeline-summary"


@dataclass(frozen=True)
class PipelineRun:
    """The result of ``daily_pipeline``: every stage's result, or why the day was skipped.

    ``replay`` is None until the session has closed and settled; the stage results are None
    when the day was skipped.
    """

    status: Literal["completed", "skipped"]
    day: date
    skip_reason: str | None = None
    symbols: list[str] = field(default_factory=list)
    db_path: str = ""
    session_finished: bool = False
    daily_bars: BarsIngest | None = None
    corporate_actions: CorporateActionSyncReport | None = None
    minute_bars: BarsIngest | None = None
    option_chains: ChainsIngest | None = None
    replay: ReplaySummary | None = None
    cache_before: CacheSnapshot | None = None
    cache_after: CacheSnapshot | None = None

    @property
    def source(self) -> str:
        report = self.daily_bars.report if self.daily_bars is not None else None
        return report.source if report is not None else ""


@flow(name="daily_pipeline", task_runner=choose_task_runner())
def daily_pipeline(
    day: date | None = None,
    symbols: list[str] | None = None,
    source: str = "auto",
    db_path: str | None = None,
) -> PipelineRun:
    """Ingest, snapshot and replay one session; ``day`` defaults to today in New York.

    ``symbols`` defaults to ``CACHELIB_SYMBOLS`` (comma-separated) or :data:`DEFAULT_SYMBOLS`.
    """
    with artifacts_in_background():
        logger = get_run_logger()
        clock = _common.now()
        day = day or today_et(clock)
        reason = closed_reason(day)
        if reason is not None:
            logger.info(reason)
            logger.info("%s is not an NYSE session: nothing to ingest or replay", day)
            publish_markdown(SUMMARY_KEY, pipeline_skipped_markdown(day, reason), "daily_pipeline summary")
            return PipelineRun("skipped", day, skip_reason=reason)

        symbols = [s.upper() for s in (symbols or default_symbols())]
        db = resolve_db_path(db_path)
        logger.info("daily pipeline for %s: %d symbol(s); market data source: %s; database %s",
                    day, len(symbols), describe_source(source), display_db(db))

        # The statistics before and after are plain calls (``.fn``), not task runs: a ~25 ms read
        # is not worth a task run's ~17 ms here plus ~34 ms of the server's work (bench_pipeline).
        before = cache_stats.fn(db, STRATEGY)
        daily = ingest_stage(symbols, "1Day", day - DAILY_LOOKBACK, day, source, db, clock, corporate_actions=True)
        minute = ingest_stage(symbols, "1Min", day, day, source, db, clock)
        finished = is_session_finished(day, clock)
        replay = None
        if finished:
            replay = replay_stage(symbols, day, day, STRATEGY, db, clock)
        else:
            closes = session_bounds(day)[1]
            logger.info("session %s has not closed yet (closes %s): ingested what exists; replay skipped "
                        "until it has closed", day, closes.isoformat())
        # The snapshots' chunks fan out among themselves, but run after the other stages, not
        # alongside them: every stage shares one process's request budget, one GIL and (on SQLite)
        # one write lock, so overlapping them measured slower, not faster (bench_pipeline).
        snapshots = submit_options(symbols, source, db)
        chains = options_stage(symbols, source, db, futures=snapshots, rows_before=before.options["total_rows"], day=day)
        after = cache_stats.fn(db, STRATEGY)
        run = PipelineRun("completed", day, symbols=symbols, db_path=db, session_finished=finished, daily_bars=daily,
                          corporate_actions=daily.actions, minute_bars=minute, option_chains=chains, replay=replay,
                          cache_before=before, cache_after=after)
        _publish(run, stats_rows(before, after))
        return run


def _stage_rows(run: PipelineRun) -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = []
    for name, ingest in (("daily", run.daily_bars), ("1-minute", run.minute_bars)):
        if ingest is not None and ingest.report is not None:
            r = ingest.report
            stages.append({"stage": f"{name} bars", "requests": r.requests_made, "rows_written": r.rows_written,
                           "rows_rejected": r.rows_rejected})
        if name == "daily" and run.corporate_actions is not None:
            a = run.corporate_actions
            stages.append({"stage": "corporate actions", "requests": a.requests_made,
                           "rows_written": a.actions_written, "rows_rejected": 0})
    if run.option_chains is not None and run.option_chains.report is not None:
        chains = run.option_chains.report
        stages.append({"stage": "option chains", "requests": chains.requests_made,
                       "rows_written": chains.rows_written, "rows_rejected": 0})
    return stages


def pipeline_summary_markdown(run: PipelineRun, stages: list[dict[str, Any]], stats: list[StatRow]) -> str:
    """The ``daily-pipeline-summary`` artifact. Option chains are always today's snapshot
    (vendors serve no past chain): the text says which day they are filed under, and how many
    rows are new, so that it agrees with the cache before/after table."""
    replay = run.replay
    replay_text = (
        f"{replay.sessions_replayed} (symbol, session) pair(s), {replay.bars} bars, "
        f"**{replay.trades}** trade(s), P&L **{replay.total_pnl:.2f}**"
        if replay is not None else "skipped: the session has not closed yet"
    )
    if replay is not None and replay.missing:
        replay_text += f"; {len(replay.missing)} (symbol, session) pair(s) had no 1-minute bars"
    chains = options_capture_text(run.option_chains) if run.option_chains is not None else "none"
    lines = [
        f"## Daily pipeline {run.day}\n",
        f"- source: **{run.source}**, symbols: {', '.join(run.symbols)}",
        f"- database: {markdown_code(display_db(run.db_path))}",
        f"- corporate actions: {actions_text(run.corporate_actions) if run.corporate_actions else 'none'}",
        f"- option chains: {chains}",
        f"- replay: {replay_text}",
    ]
    if run.cache_after is not None:
        t = run.cache_after.trades
        lines.append(f"- all archived trades: {t['total_trades']} trade(s), win rate {t['win_rate_pct']:.1f} %, "
                     f"P&L {t['total_pnl']:.2f}, profit factor {t['profit_factor']}")
    return "\n".join(lines) + (
        f"\n\n### Stages\n\n{markdown_table(stages)}\n\n"
        f"### Cache before / after\n\n{markdown_table(stats)}\n"
    )


def pipeline_skipped_markdown(day: date, reason: str) -> str:
    """The summary artifact of a run on a weekend or holiday."""
    return f"## Daily pipeline {day}: skipped\n\n{reason}\n"


def _publish(run: PipelineRun, stats: list[StatRow]) -> None:
    stages = _stage_rows(run)
    publish_markdown(SUMMARY_KEY, pipeline_summary_markdown(run, stages, stats), "daily_pipeline summary")
    publish_table("daily-pipeline-stages", stages, "requests and rows per stage of the pipeline")
    publish_table("daily-pipeline-cache-stats", stats, "cache statistics before and after the pipeline")
