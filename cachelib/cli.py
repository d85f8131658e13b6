"""``cache-manager``: look after the cache from a shell (also ``python -m cachelib``).

Every subcommand accepts the global ``--db-path`` and ``--json`` before or after its name::

    cache-manager stats
    cache-manager --db-path /data/cache.db symbols --json
    cache-manager export SPY --start 2025-01-01 --end 2025-01-31 --format csv --output spy.csv

Readable tables go to stdout for people, ``--json`` output for scripts. Exit codes: 0 done,
1 error or nothing found or declined (one ``error: ...`` line on stderr, no traceback),
2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import timezone
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from . import __version__
from .bars import NY, parse_timeframe
from .store import TradingCacheManager, default_db_path

__all__ = ["main", "build_parser"]


class _Abort(Exception):
    """Stop with exit code 1 and this message on stderr (not an ``error:``)."""


# ---------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None) -> str:
    """Plain aligned text: numbers right-aligned, text left-aligned, two spaces between."""
    cells = [[str(c) for c in row] for row in rows]
    if headers is not None:
        cells.insert(0, [str(h) for h in headers])
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    numeric = [
        all(_looks_numeric(row[i]) for row in (cells[1:] if headers is not None else cells) if row[i])
        for i in range(len(widths))
    ]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if headers is not None and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _price(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.4f}"


def _count(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    return f"{int(value):,}" if value.is_integer() else f"{value:,.2f}"


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly scalar: NaN/NA -> None, integral volumes -> int."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Bars as records: ``date`` (YYYY-MM-DD) for daily bars, ``timestamp`` (ISO, UTC) for
    intraday ones, then the bar columns."""
    intraday = frame.index.tz is not None
    key = "timestamp" if intraday else "date"
    out = []
    for when, row in zip(frame.index, frame.itertuples(index=False), strict=True):
        if intraday:
            stamp = when.to_pydatetime().astimezone(timezone.utc).isoformat()
        else:
            stamp = when.date().isoformat()
        record: dict[str, Any] = {key: stamp}
        for name, value in zip(frame.columns, row, strict=True):
            value = _plain(value)
            if name in ("volume", "trade_count") and isinstance(value, float) and value.is_integer():
                value = int(value)
            record[name] = value
        out.append(record)
    return out


def _dump_json(payload: Any, out: TextIO) -> None:
    json.dump(payload, out, indent=2, default=str)
    out.write("\n")


# ---------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------


def _open(args: argparse.Namespace) -> TradingCacheManager:
    return TradingCacheManager(args.db_path or default_db_path())


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as cache:
        stats = cache.get_stats()
        stats["options"] = cache.get_options_stats()
        stats["trades"] = cache.get_trade_stats()
    if args.json:
        _dump_json(stats, sys.stdout)
        return 0
    span = stats["date_range"]
    opts, trades = stats["options"], stats["trades"]
    trade_line = f"{trades['total_trades']:,} closed"
    if trades["total_trades"]:
        factor = trades["profit_factor"]
        trade_line += (
            f", win rate {trades['win_rate_pct']:.1f} %, total P&L {trades['total_pnl']:,.2f}"
            f", profit factor {'n/a' if factor is None else f'{factor:.2f}'}"
        )
    rows = [
        ("Database", stats["db_path"]),
        ("Size", f"{stats['db_size_mb']} MB ({stats['db_size_bytes']:,} bytes), "
                 f"schema v{stats['schema_version']}"),
        ("Bars", f"{stats['total_entries']:,} ({stats['expired_entries']:,} expired)"),
        ("Symbols", f"{stats['unique_symbols']:,}"),
        ("Sources", ", ".join(stats["sources"]) or "-"),
        ("Timeframes", ", ".join(stats["timeframes"]) or "-"),
        ("Asset types", ", ".join(stats["asset_types"]) or "-"),
        ("Date range", f"{span['start']} .. {span['end']}" if span["start"] else "-"),
        ("Option rows", f"{opts['total_rows']:,} ({opts['unique_symbols']} underlyings, "
                        f"{opts['snapshots']} snapshots)"),
        ("Trades", trade_line),
    ]
    print(_table(rows))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    with _open(args) as cache:
        result: dict[str, Any] = {"rows_removed": cache.cleanup_expired()}
        if args.vacuum:
            result["bytes_reclaimed"] = cache.vacuum()
    if args.json:
        _dump_json(result, sys.stdout)
    else:
        print(f"Removed {result['rows_removed']:,} expired rows")
        if args.vacuum:
            print(f"Reclaimed {result['bytes_reclaimed']:,} bytes")
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    with _open(args) as cache:
        reclaimed = cache.vacuum()
    if args.json:
        _dump_json({"bytes_reclaimed": reclaimed}, sys.stdout)
    else:
        print(f"Reclaimed {reclaimed:,} bytes")
    return 0


def cmd_symbols(args: argparse.Namespace) -> int:
    with _open(args) as cache:
        symbols = cache.get_symbols(asset_type=args.asset_type)
    if args.json:
        _dump_json(symbols, sys.stdout)
    elif symbols:
        print("\n".join(symbols))
    else:
        print(f"No {args.asset_type} symbols cached", file=sys.stderr)
    return 0


def _bars(args: argparse.Namespace) -> pd.DataFrame:
    tf = parse_timeframe(args.timeframe).name
    with _open(args) as cache:
        frame = cache.get(args.symbol, args.start, args.end, source=args.source,
                          asset_type=args.asset_type, timeframe=tf)
    if frame is None:
        where = f" from {args.source}" if args.source else ""
        raise _Abort(f"No cached {tf} bars for {args.symbol.upper()}{where} in {args.start} .. {args.end}")
    return frame


def cmd_export(args: argparse.Namespace) -> int:
    frame = _bars(args)
    records = _records(frame)
    buffer = io.StringIO()
    if args.format == "csv":
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    else:
        _dump_json(records, buffer)
    if args.output is None:
        sys.stdout.write(buffer.getvalue())
        return 0
    Path(args.output).write_text(buffer.getvalue(), encoding="utf-8")
    if args.json:
        _dump_json({"output": str(args.output), "rows": len(records), "format": args.format}, sys.stdout)
    else:
        print(f"Wrote {len(records):,} bars to {args.output}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    frame = _bars(args)
    if args.json:
        _dump_json(_records(frame), sys.stdout)
        return 0
    intraday = frame.index.tz is not None
    rows = []
    for when, bar in zip(frame.index, frame.itertuples(index=False), strict=True):
        # People read intraday bars in exchange time; --json and export give UTC.
        stamp = when.tz_convert(NY).strftime("%Y-%m-%d %H:%M") if intraday else when.strftime("%Y-%m-%d")
        rows.append((stamp, _price(bar.open), _price(bar.high), _price(bar.low), _price(bar.close),
                     _count(bar.volume), _price(bar.vwap), _count(bar.trade_count)))
    first = "time (ET)" if intraday else "date"
    headers = (first, "open", "high", "low", "close", "volume", "vwap", "trades")
    print(_table(rows, headers))
    print(f"{len(rows):,} bars")
    return 0


def _delete_matching(cache: TradingCacheManager, args: argparse.Namespace) -> int:
    """Delete the bars the filters select (all bars without filters); returns bars removed."""
    return cache.delete(args.symbol, start=args.start, end=args.end, source=args.source,
                        asset_type=args.asset_type, timeframe=args.timeframe)


def _count_matching(cache: TradingCacheManager, args: argparse.Namespace) -> int:
    return cache.count_bars(args.symbol, start=args.start, end=args.end, source=args.source,
                            asset_type=args.asset_type, timeframe=args.timeframe)


def _describe_filters(args: argparse.Namespace) -> str:
    parts = [
        f"{label} {value}"
        for label, value in (("symbol", args.symbol), ("source", args.source), ("timeframe", args.timeframe),
                             ("asset type", args.asset_type), ("from", args.start), ("to", args.end))
        if value
    ]
    return ", ".join(parts) if parts else "all bars"


def _confirm(question: str) -> bool:
    stream = sys.stdin
    if stream is None or stream.closed:
        raise _Abort("Nothing to read an answer from: pass --yes to delete without asking")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = stream.readline()
    if not answer or not stream.isatty():
        sys.stderr.write("\n")  # nothing was echoed: end the prompt's line
    if not answer:  # EOF: no one is there to answer
        raise _Abort("No answer on stdin: pass --yes to delete without asking")
    return answer.strip().lower() in ("y", "yes")


def cmd_clear(args: argparse.Namespace) -> int:
    if args.timeframe is not None:
        args.timeframe = parse_timeframe(args.timeframe).name
    with _open(args) as cache:
        matching = _count_matching(cache, args)
        if matching == 0:
            if args.json:
                _dump_json({"bars_deleted": 0}, sys.stdout)
            else:
                print(f"No bars match ({_describe_filters(args)})")
            return 0
        if not args.yes and not _confirm(
            f"Delete {matching:,} bars ({_describe_filters(args)}) from {cache.db_path}?"
        ):
            raise _Abort("Aborted: nothing deleted")
        removed = _delete_matching(cache, args)
    if args.json:
        _dump_json({"bars_deleted": removed}, sys.stdout)
    else:
        print(f"Deleted {removed:,} bars")
    return 0


def cmd_migrate_legacy(args: argparse.Namespace) -> int:
    from .cache_adapter import migrate_legacy

    if args.dry_run:
        # A dry run validates files only: it does not even create the database.
        report = migrate_legacy(None, args.directory, dry_run=True)
    else:
        with _open(args) as cache:
            report = migrate_legacy(cache, args.directory)
    if args.json:
        _dump_json(report.to_dict(), sys.stdout)
    else:
        rows = [
            ("ok" if r.ok else "FAILED", r.path.name, r.symbol or "", r.timeframe or "", r.source or "",
             _count(r.rows) if r.ok else r.error)
            for r in report.results
        ]
        if rows:
            print(_table(rows, ("status", "file", "symbol", "timeframe", "source", "bars / reason")))
        verb = "would import" if args.dry_run else "imported"
        print(
            f"{report.files_seen} files seen, {len(report.imported)} {verb} "
            f"({report.rows_imported:,} bars), {len(report.failed)} failed"
            + (" (dry run: nothing written)" if args.dry_run else "")
        )
    return 1 if report.failed else 0


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # The same flags on the main parser (real defaults) and on every subcommand (SUPPRESS, so
    # a flag given before the subcommand is not reset by the subcommand's default).
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "--db-path",
        metavar="PATH",
        default=default if suppress else None,
        help="the cache database (default: $TRADING_CACHE_DB, else .cache/trading_cache.db)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default if suppress else False,
        help="machine-readable JSON output",
    )


def _range_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbol", help="ticker, e.g. SPY")
    parser.add_argument("--start", required=True, help="first day (YYYY-MM-DD) or instant (ISO)")
    parser.add_argument("--end", required=True, help="last day (YYYY-MM-DD, whole day) or instant (ISO)")
    parser.add_argument(
        "--timeframe", default="1Day", help="bar timeframe: 1Day, 1Hour, 5Min... (default 1Day)"
    )
    parser.add_argument("--source", default=None, help="only this source (default: best source per bar)")
    parser.add_argument("--asset-type", default="stock", help="asset type (default stock)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cache-manager",
        description="Inspect and maintain the cachelib SQLite market-data cache.",
        epilog="Exit codes: 0 ok, 1 error / nothing found / declined, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    add("stats", cmd_stats, "bar, option-chain and trade counts, sizes and date range")
    p = add("cleanup", cmd_cleanup, "remove expired rows (bars, coverage, option snapshots)")
    p.add_argument("--vacuum", action="store_true", help="then rebuild the file to reclaim space")
    add("vacuum", cmd_vacuum, "rebuild the database file and report bytes reclaimed")
    p = add("symbols", cmd_symbols, "list symbols with cached bars")
    p.add_argument("--asset-type", default="stock", help="asset type (default stock)")
    p = add("export", cmd_export, "write a symbol's bars as JSON records or CSV")
    _range_options(p)
    p.add_argument("--format", choices=("json", "csv"), default="json", help="output format (default json)")
    p.add_argument("--output", metavar="FILE", default=None, help="write to FILE instead of stdout")
    p = add("query", cmd_query, "show a symbol's cached bars as a table")
    _range_options(p)
    p = add("clear", cmd_clear, "delete cached bars matching the filters (all bars without filters)")
    p.add_argument("--symbol", default=None, help="only this symbol")
    p.add_argument("--source", default=None, help="only this source")
    p.add_argument("--timeframe", default=None, help="only this timeframe")
    p.add_argument("--start", default=None, help="from this day (YYYY-MM-DD)")
    p.add_argument("--end", default=None, help="up to this day (YYYY-MM-DD, whole day)")
    p.add_argument("--asset-type", default=None, help="only this asset type (default: all)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p = add("migrate-legacy", cmd_migrate_legacy,
            "import the deprecated JSON file cache (.cache/market_data)")
    p.add_argument("directory", metavar="DIR", help="directory of SYMBOL_START_END_SOURCE.json files")
    p.add_argument("--dry-run", action="store_true", help="validate every file, write nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cache-manager`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.func(args)
    except _Abort as exc:
        print(exc, file=sys.stderr)
        return 1
    except (ValueError, sqlite3.Error, OSError) as exc:  # DatabaseFileError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (``cache-manager query ... | head``): stop quietly, and point
        # stdout at /dev/null so the interpreter's final flush does not complain again.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
