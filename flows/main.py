"""``python -m flows.main`` (``make run``): run the daily pipeline once and say what it did.

It runs the Prefect flow ``daily_pipeline`` for the latest *finished* NYSE session (so there is
always data: on a weekend, a holiday or before today's close that is an earlier session), on
``source="auto"``: Alpaca when ``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY`` are set, otherwise the
offline demo source. No Prefect server needs to be running: Prefect starts a temporary local
one for the run (about 10-15 s), unless ``PREFECT_API_URL`` points at a server. The run sends no
heartbeat (whoever started it watches it; scheduled deployments keep theirs, see
``flows._common.without_heartbeat``).

The first run backfills a year of daily bars and the session's minute bars into
``.cache/trading_cache.db`` (or ``$TRADING_CACHE_DB``); later runs fetch only what is missing.

It lives with the flows, not in ``cachelib``: the library never imports Prefect, and data
flows one way (the orchestration layer calls the library, never the reverse). Prefect is
imported only inside :func:`main`, after the environment defaults below are set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Prefect is imported only inside main(), after the environment is set
    from flows.daily_pipeline import PipelineRun
    from flows.ingest_options import ChainsIngest

#: Set before Prefect is imported, unless the caller's environment says otherwise.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",  # a temporary local server when none is configured
    "DO_NOT_TRACK": "1",  # no client telemetry (there may be no network)
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",  # hides "Error flushing events" noise at shutdown
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",  # run logs still reach the API/UI
}


def _prepare_environment() -> None:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flows.main", description=__doc__.splitlines()[0])
    parser.add_argument("--day", type=date.fromisoformat, default=None,
                        help="session to run (YYYY-MM-DD); default: the latest finished session")
    parser.add_argument("--symbols", default=None,
                        help="comma-separated symbols; default: $CACHELIB_SYMBOLS or SPY,QQQ,AAPL,MSFT,NVDA")
    parser.add_argument("--db-path", default=None, help="database file, sqlite:///path or postgresql:// URL; "
                                                        "default: $TRADING_CACHE_URL, $TRADING_CACHE_DB or "
                                                        ".cache/trading_cache.db")
    return parser.parse_args(argv)


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _chains_note(chains: ChainsIngest, day: date) -> str:
    """Which date the snapshots are filed under and how many rows are new: a snapshot is always
    the current chain, whatever ``day`` the pipeline ran for."""
    dates = sorted({d for d in chains.report.trading_dates.values() if d}) if chains.report else []
    note = f" filed under {', '.join(dates)}" if dates else ""
    if chains.new_rows is not None:
        note += f", {chains.new_rows:,} new"
    if dates and dates != [day.isoformat()]:
        note += f"; the {day} chain cannot be fetched (vendors serve only the current one)"
    return note


def format_summary(run: PipelineRun, seconds: float) -> str:
    """The few lines a person reads after ``make run``."""
    from cachelib.market_hours import sessions_in_range
    from flows._common import display_db

    daily = run.daily_bars.report if run.daily_bars else None
    minute = run.minute_bars.report if run.minute_bars else None
    chains = run.option_chains
    if run.status != "completed" or daily is None or minute is None or chains is None or chains.report is None \
            or run.cache_after is None:
        return f"{run.day}: {run.skip_reason or run.status} - nothing to do."
    after, stats, replay = run.cache_after.cache, run.cache_after.trades, run.replay
    first, last = after["date_range"]["start"], after["date_range"]["end"]
    sessions = len(sessions_in_range(first, last)) if first and last else 0
    lines = [
        f"Daily pipeline for {run.day} on the {run.source} source "
        f"({len(run.symbols)} symbols: {', '.join(run.symbols)}) in {seconds:.1f} s",
        f"  sessions:      {sessions} cached, {first} .. {last}",
        f"  daily bars:    {daily.rows_written:>7,} written ({daily.sessions_fetched:,} symbol-sessions, "
        f"{daily.requests_made} request(s), {daily.rows_rejected} rejected)",
        f"  1-minute bars: {minute.rows_written:>7,} written ({minute.requests_made} request(s), "
        f"{minute.rows_rejected} rejected)",
        *([f"  corp. actions: {run.corporate_actions.actions_written:>7,} written "
           f"({run.corporate_actions.requests_made} request(s))"] if run.corporate_actions else []),
        f"  option chains: {chains.report.rows_written:>7,} contracts ({len(chains.report.rows_per_underlying)} "
        f"snapshots)" + _chains_note(chains, run.day),
    ]
    if replay is None:
        lines.append("  replay:        skipped - the session has not closed yet")
    else:
        lines.append(f"  replay:        {replay.trades} trade(s) in {replay.sessions_replayed} session(s), "
                     f"P&L {_money(replay.total_pnl)}")
    profit_factor = stats["profit_factor"]
    lines += [
        f"  all trades:    {stats['total_trades']} closed, win rate {stats['win_rate_pct']:.1f} %, "
        f"P&L {_money(stats['total_pnl'])}, avg {_money(stats['avg_pnl'])}, "
        f"profit factor {'n/a' if profit_factor is None else f'{profit_factor:.2f}'}",
        f"  cache now:     {after['total_entries']:,} bars of {after['unique_symbols']} symbols, "
        f"{run.cache_after.options['total_rows']:,} option rows, "
        f"{after['trade_entries']} trades, {after['db_size_bytes'] / 1_048_576:.1f} MB",
        f"  database:      {display_db(run.db_path)}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    _prepare_environment()
    t0 = time.perf_counter()

    from cachelib.market_hours import latest_finished_session
    from cachelib.sources import alpaca_keys_configured
    from flows import _common
    from flows.daily_pipeline import daily_pipeline

    day = args.day or latest_finished_session(_common.now())
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    source = "Alpaca" if alpaca_keys_configured() else "the offline demo source (no Alpaca keys set)"
    server = os.environ.get("PREFECT_API_URL") or "a temporary local Prefect server"
    print(f"Running daily_pipeline for {day} on {source}, reporting to {server} ...", flush=True)

    # Run from a shell, the run is watched: no heartbeat, which would cost ~1.1 s at the end of
    # the run (scheduled deployments keep it: flows._common.without_heartbeat).
    with _common.without_heartbeat():
        state = daily_pipeline(day=day, symbols=symbols, db_path=args.db_path, return_state=True)
    if not state.is_completed():
        print(f"daily_pipeline ended {state.name}: {state.message}", file=sys.stderr)
        return 1
    print(format_summary(state.result(), time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
