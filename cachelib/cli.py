"""``cache-manager``: look after the cache from a shell (also ``python -m cachelib``).

Every subcommand accepts the global ``--db-path`` (a SQLite file), ``--db-url`` (a
``postgresql://`` or ``sqlite:///`` URL) and ``--json`` before or after its name::

    cache-manager stats
    cache-manager --db-path /data/cache.db symbols --json
    cache-manager --db-url postgresql://analyst@db.internal/cache stats
    cache-manager copy .cache/trading_cache.db postgresql://analyst@db.internal/cache
    cache-manager export SPY --start 2025-01-01 --end 2025-01-31 --format csv --output spy.csv
    cache-manager query NVDA --start 2024-06-03 --end 2024-06-14 --adjustment split --as-of 2024-06-10
    cache-manager actions NVDA --start 2024-01-01 --end 2024-12-31

Readable tables go to stdout for people, ``--json`` output for scripts.

Times: ``--start``/``--end`` take a day (``YYYY-MM-DD``, a whole New York session) or a time.
A time without an offset is New York time, as the tables show it; ``Z`` or ``+HH:MM`` is
honoured (``2026-11-27T10:00`` and ``2026-11-27T15:00Z`` are the same instant).

Prices: the cache holds raw bars, as traded. ``query``/``export --adjustment split|dividend|all``
adjust them at read time by the corporate actions cached with ex-date <= ``--as-of DATE``
(default: today in New York), ``--feed`` reads one vendor feed only (``sip``, ``iex``...);
``actions SYMBOL`` lists the cached corporate actions.

Exit codes (:data:`EXIT_CODES`): 0 done, also when nothing matched (a message on stderr, and
``--json`` output stays well-formed, e.g. ``[]``); 1 runtime error or declined confirmation
(one ``error: ...`` line on stderr, never a traceback); 2 usage error (argparse: unknown
flag, malformed date, time, timeframe or symbol); 130 interrupted (Ctrl-C); 141 the reader
of stdout went away (``cache-manager query ... | head``), quietly.

Where the cache is: ``--db-url`` or ``--db-path`` (not both), else ``$TRADING_CACHE_URL``, else
``$TRADING_CACHE_DB``, else ``.cache/trading_cache.db``. A PostgreSQL location is only ever
printed through :func:`~cachelib.store.postgres.redact_url` (never its password).

Read-only and maintenance commands never create a cache: on a path that does not exist they
say ``no cache at PATH`` and exit 1. Only ``migrate-legacy`` creates one, and ``copy`` its
destination. No command writes over the database or its ``-wal``/``-shm``/``-journal`` files;
``export --output`` replaces an existing file only with ``--force``, and atomically (a failure
never leaves half a file).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import stat
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from . import __version__
from .bars import _VALID_AMOUNTS, BAR_COLUMNS, NY, key_range, normalize_symbol, parse_timeframe
from .corporate_actions import ACTION_COLUMNS, ADJUSTMENTS
from .store import TradingCacheManager, database_files, default_db_path
from .store.files import sqlite_path
from .store.postgres import PG_TABLES, is_postgres_url, redact_url, url_secrets
from .store.series import norm_asset_type, norm_feed, norm_source

__all__ = ["main", "build_parser", "EXIT_CODES"]

#: What each exit code of ``cache-manager`` means (also printed by ``--help``).
EXIT_CODES: dict[int, str] = {
    0: "done, also when nothing matched (a message on stderr; --json output stays well-formed)",
    1: "runtime error, e.g. 'no cache at PATH' (one 'error: ...' line on stderr), a declined "
    "confirmation, or a legacy file that failed to import",
    2: "usage error: unknown command or flag, malformed date, time, timeframe, symbol or feed",
    130: "interrupted (Ctrl-C)",
    141: "stdout was closed by its reader (e.g. '| head'): stops quietly",
}
_EXIT_ERROR, _EXIT_INTERRUPTED, _EXIT_BROKEN_PIPE = 1, 130, 141

_TIME_RULE = (
    "--start/--end: a day YYYY-MM-DD is a whole New York session; a time without an offset "
    "(2026-11-27T10:00) is New York time, as the tables show it; Z or +HH:MM is honoured."
)


class _Abort(Exception):
    """Stop with exit code 1 and this message on stderr as it is (a declined confirmation)."""


class _Error(Exception):
    """Stop with exit code 1 and ``error: <message>`` on stderr."""


# ---------------------------------------------------------------------------
# Argument types: malformed values are usage errors (argparse, exit 2)
# ---------------------------------------------------------------------------


def _describe_timeframes() -> str:
    """The timeframes :func:`~cachelib.bars.parse_timeframe` (hence the cache) accepts."""
    parts = []
    for unit, amounts in _VALID_AMOUNTS.items():
        amounts = list(amounts)
        if len(amounts) == 1:
            parts.append(f"{amounts[0]}{unit}")
        elif amounts == list(range(amounts[0], amounts[-1] + 1)):
            parts.append(f"N{unit} (N {amounts[0]}-{amounts[-1]})")
        else:
            parts.append(f"N{unit} (N {', '.join(map(str, amounts))})")
    return ", ".join(parts)


ACCEPTED_TIMEFRAMES = _describe_timeframes()


def _timeframe(text: str) -> str:
    """``--timeframe``: the canonical name (``1H`` -> ``1Hour``)."""
    try:
        return parse_timeframe(text).name
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown timeframe {text!r}: the cache accepts {ACCEPTED_TIMEFRAMES}"
        ) from None


def _when(text: str) -> date | datetime:
    """``--start``/``--end``: a ``date`` for a day, else an aware ``datetime`` (naive = New York)."""
    value = text.strip()
    with contextlib.suppress(ValueError):
        return date.fromisoformat(value)  # a whole New York session
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as a day (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM[:SS], "
            "New York time unless it ends in Z or +HH:MM)"
        ) from None
    # Tables show New York time, so a time typed without an offset means New York time.
    return moment.replace(tzinfo=NY) if moment.tzinfo is None else moment


def _day(text: str) -> date:
    """``--as-of`` and the ``actions`` bounds: a calendar day ``YYYY-MM-DD`` (a New York date)."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as a day (YYYY-MM-DD)") from None


def _usage(rule: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse ``type=`` from one of the cache's own rules: a bad value is a usage error
    (exit 2), reported by argparse with the rule's message."""

    def parse(text: str) -> str:
        try:
            return rule(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = rule.__name__
    return parse


_symbol = _usage(normalize_symbol)  # a ticker, validated and upper-cased by the cache's own rule
_asset_type = _usage(norm_asset_type)
_source = _usage(norm_source)
_feed = _usage(norm_feed)


def _show(value: date | datetime | None) -> str:
    """A ``--start``/``--end`` value as people typed it (days as ``YYYY-MM-DD``)."""
    return "" if value is None else value.isoformat()


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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


def _location(args: argparse.Namespace) -> str | Path:
    """Where the cache is: ``--db-url`` or ``--db-path``, else ``$TRADING_CACHE_URL``, else
    ``$TRADING_CACHE_DB`` (:func:`~cachelib.store.default_db_path`)."""
    # An explicit empty --db-path is an error (the store says so), not the default path.
    if args.db_url is not None:
        return args.db_url
    return default_db_path() if args.db_path is None else args.db_path


def _open(args: argparse.Namespace, create: bool = False) -> TradingCacheManager:
    """The cache at :func:`_location`. Only ``create=True`` (``migrate-legacy``) may create one:
    every other command on a missing cache fails with "no cache at PATH" and creates nothing, so
    a mistyped ``--db-path``/``--db-url`` or environment variable is reported, not silently emptied."""
    return TradingCacheManager(_location(args), create=create)


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
    if not symbols:
        print(f"No {args.asset_type} symbols cached", file=sys.stderr)
    if args.json:
        _dump_json(symbols, sys.stdout)
    elif symbols:
        print("\n".join(symbols))
    return 0


def _bars(cache: TradingCacheManager, args: argparse.Namespace) -> pd.DataFrame | None:
    """The bars ``export``/``query`` select, or ``None`` after saying on stderr that none match."""
    frame = cache.get(args.symbol, args.start, args.end, source=args.source,
                      asset_type=args.asset_type, timeframe=args.timeframe, feed=args.feed,
                      adjustment=args.adjustment, as_of=args.as_of)
    if frame is None:
        where = (f" from {args.source}" if args.source else "") + (f" (feed {args.feed})" if args.feed else "")
        print(f"No cached {args.timeframe} bars for {args.symbol}{where} in "
              f"{_show(args.start)} .. {_show(args.end)}", file=sys.stderr)
    return frame


def _output_target(output: str, db_path: Path | None, force: bool) -> Path:
    """Where ``--output`` really writes (symlinks resolved), after refusing the database file
    ``db_path`` (``None``: the cache is no file) and its sidecars, a directory, a missing folder
    and (without ``--force``) an existing file."""
    if not output.strip():
        raise ValueError("--output is empty; give a file name")
    with contextlib.suppress(OSError):
        mode = os.stat(output).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            # A device or a pipe (/dev/null, a FIFO, /dev/stdout into a pipe): it cannot be the
            # database (a regular file), and its resolved name (pipe:[...]) cannot be opened.
            return Path(output)
    target = Path(os.path.realpath(output))
    for protected in database_files(db_path) if db_path is not None else ():
        same = target == protected
        with contextlib.suppress(OSError):  # also a hard link or a case-insensitive file system
            same = same or (target.exists() and protected.exists() and target.samefile(protected))
        if same:
            raise ValueError(
                f"--output {output} is the cache database file {protected}: refusing to write over "
                "it; choose another output file"
            )
    if target.is_dir():
        raise ValueError(f"--output {output} is a directory; give a file name")
    if not target.parent.is_dir():
        raise ValueError(f"cannot write --output {output}: folder {target.parent} does not exist")
    if target.is_file() and not force:
        raise ValueError(f"{output} exists; pass --force to overwrite")
    return target


def _write_atomically(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` through a temporary file in the same folder and
    ``os.replace``: readers see the old file or the whole new one, never half a file."""
    if target.exists() and not target.is_file():
        # A device or a pipe (/dev/null, a FIFO): there is no file to replace, stream into it.
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, as for open()
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():  # --force keeps the replaced file's permissions
            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as cache:
        target = None
        if args.output is not None:
            # Only a SQLite cache is a file that --output could overwrite (PostgreSQL: a URL).
            db_file = cache.db_path if isinstance(cache.db_path, Path) else None
            target = _output_target(args.output, db_file, args.force)
        frame = _bars(cache, args)
    records = [] if frame is None else _records(frame)
    buffer = io.StringIO()
    if args.format == "csv":
        # Nothing matched still gives a well-formed file: the header row alone.
        key = "timestamp" if parse_timeframe(args.timeframe).is_intraday else "date"
        fields = list(records[0]) if records else [key, *BAR_COLUMNS]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    else:
        _dump_json(records, buffer)
    if target is None:
        sys.stdout.write(buffer.getvalue())
        return 0
    try:
        _write_atomically(target, buffer.getvalue())
    except OSError as exc:  # a full disk, a read-only folder...: name the file, not the temporary one
        raise _Error(f"cannot write --output {args.output}: {exc.strerror or exc} (the file was not "
                     "changed)") from None
    if args.json:
        _dump_json({"output": str(args.output), "rows": len(records), "format": args.format}, sys.stdout)
    else:
        print(f"Wrote {len(records):,} bars to {args.output}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    with _open(args) as cache:
        frame = _bars(cache, args)
    if args.json:
        _dump_json([] if frame is None else _records(frame), sys.stdout)
        return 0
    if frame is None:
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


def _ratio(value: Any) -> str:
    """A split ratio or dividend amount as stored (``4``, ``0.1``, ``0.24``); blank when NaN."""
    value = _plain(value)
    return "" if value is None else f"{value:g}"


def _action_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Corporate actions as JSON records: :data:`~cachelib.corporate_actions.ACTION_COLUMNS`
    (``ex_date`` as ``YYYY-MM-DD``, NaN as ``null``) and ``fetched_at`` (ISO, UTC)."""
    out = []
    for row in frame.itertuples(index=False):
        record = {name: _plain(getattr(row, name)) for name in ACTION_COLUMNS}
        record["ex_date"] = row.ex_date.isoformat()
        record["fetched_at"] = row.fetched_at.to_pydatetime().astimezone(timezone.utc).isoformat()
        out.append(record)
    return out


def cmd_actions(args: argparse.Namespace) -> int:
    with _open(args) as cache:
        frame = cache.get_corporate_actions(args.symbol, args.start, args.end, source=args.source)
    frame = frame.sort_values(["ex_date", "action_type", "symbol"], kind="stable")
    if frame.empty:
        where = f" from {args.source}" if args.source else ""
        span = f" in {_show(args.start)} .. {_show(args.end)}" if args.start or args.end else ""
        print(f"No corporate actions cached for {args.symbol}{where}{span}", file=sys.stderr)
    if args.json:
        _dump_json(_action_records(frame), sys.stdout)
        return 0
    if frame.empty:
        return 0
    rows = [
        (row.ex_date.isoformat(), row.symbol, row.action_type, _ratio(row.ratio), _ratio(row.amount),
         row.new_symbol or "", row.source, row.fetched_at.strftime("%Y-%m-%d %H:%M"))
        for row in frame.itertuples(index=False)
    ]
    headers = ("ex_date", "symbol", "action", "ratio", "amount", "new_symbol", "source", "fetched (UTC)")
    print(_table(rows, headers))
    print(f"{len(rows):,} corporate action{'s' if len(rows) != 1 else ''}")
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
                             ("asset type", args.asset_type), ("from", _show(args.start)),
                             ("to", _show(args.end)))
        if value
    ]
    return ", ".join(parts) if parts else "all bars"


def _confirm(question: str) -> bool:
    stream = sys.stdin
    if stream is None or stream.closed:
        raise _Error("nothing to read an answer from: pass --yes to delete without asking")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = stream.readline()
    if not answer or not stream.isatty():
        sys.stderr.write("\n")  # nothing was echoed: end the prompt's line
    if not answer:  # EOF: no one is there to answer
        raise _Error("no answer on stdin: pass --yes to delete without asking")
    return answer.strip().lower() in ("y", "yes")


def cmd_clear(args: argparse.Namespace) -> int:
    with _open(args) as cache:
        matching = _count_matching(cache, args)
        if matching == 0:
            print(f"No bars match ({_describe_filters(args)})", file=sys.stderr)
            if args.json:
                _dump_json({"bars_deleted": 0}, sys.stdout)
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
        with _open(args, create=True) as cache:  # the one command that creates a cache
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
# copy: a whole cache from one engine to another
# ---------------------------------------------------------------------------

#: Rows per ``INSERT`` batch (and per read of the source): memory stays flat however big the cache.
COPY_BATCH_ROWS = 5000
#: The cache's tables, parents first: the order ``copy`` fills them in.
COPY_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = tuple((name, key) for name, _body, key in PG_TABLES)


class CopyMismatchError(ValueError):
    """The destination's row counts differ from the source's after a copy (it was rolled back)."""


def _same_cache(src: TradingCacheManager, destination: str | Path) -> bool:
    """Whether ``destination`` names the already opened cache ``src`` (PostgreSQL: the same URL
    up to its password; SQLite: the same file, also through a symlink or hard link)."""
    if is_postgres_url(destination) or not isinstance(src.db_path, Path):
        return is_postgres_url(destination) and redact_url(str(destination)) == src.db_path
    target = sqlite_path(destination)
    with contextlib.suppress(OSError):
        return target.resolve() == src.db_path or (target.exists() and target.samefile(src.db_path))
    return False


def _begin_snapshot(cache: TradingCacheManager) -> None:
    """Read the source in one snapshot: rows written meanwhile (a sync running) are neither half
    copied nor counted."""
    if isinstance(cache.db_path, Path):
        cache.conn.execute("BEGIN")  # SQLite (WAL): the snapshot starts at the first read
    else:
        cache.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def _batches(conn: Any, table: str, columns: Sequence[str], key: tuple[str, ...],
             batch_rows: int) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``table`` in primary-key order, ``batch_rows`` at a time: each batch is the
    next ``LIMIT`` after the last key seen (no engine-specific cursor, nothing held in memory)."""
    positions = [columns.index(k) for k in key]
    select = f"SELECT {', '.join(columns)} FROM {table}"
    order = f" ORDER BY {', '.join(key)} LIMIT ?"
    after = f" WHERE ({', '.join(key)}) > ({', '.join('?' * len(key))})"
    rows = [tuple(r) for r in conn.execute(select + order, (batch_rows,)).fetchall()]
    while rows:
        yield rows
        if len(rows) < batch_rows:
            return
        last = [rows[-1][i] for i in positions]
        rows = [tuple(r) for r in conn.execute(select + after + order, (*last, batch_rows)).fetchall()]


def copy_cache(source: str | Path, destination: str | Path, *, batch_rows: int = COPY_BATCH_ROWS,
               progress: bool = False) -> dict[str, int]:
    """Copy every table of the cache at ``source`` into the empty (or new) cache at
    ``destination``, on either engine, in one transaction on the destination; returns the rows
    copied per table.

    Keys and values are copied as stored (series ids, float bits, NULLs, chunk bytes). At the end
    the destination's row counts must equal the source's (read in one snapshot), else everything
    is rolled back (:class:`CopyMismatchError`). A destination holding any row is refused, and so
    is the source itself. ``progress`` shows a bar of rows on stderr.

    >>> copy_cache(".cache/trading_cache.db", "postgresql://analyst@db.internal/cache")  # doctest: +SKIP
    {'series': 12, 'bars': 30240, ...}
    """
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError(f"--batch-size must be a whole number of rows >= 1, got {batch_rows!r}")
    with TradingCacheManager(source, create=False, read_only=True) as src:
        if _same_cache(src, destination):
            raise ValueError(f"SRC and DST are the same cache ({src.db_path}): name another destination")
        with TradingCacheManager(destination) as dst:
            _begin_snapshot(src)
            try:
                return _copy_tables(src, dst, batch_rows, progress)
            finally:
                with contextlib.suppress(Exception):
                    src.conn.execute("ROLLBACK")  # the read snapshot: nothing to keep


def _copy_tables(src: TradingCacheManager, dst: TradingCacheManager, batch_rows: int,
                 progress: bool) -> dict[str, int]:
    read = src.conn
    counts = {t: int(read.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t, _key in COPY_TABLES}
    with dst.atomic() as write:
        occupied = {t: n for t, _key in COPY_TABLES
                    if (n := int(write.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]))}
        if occupied:
            held = ", ".join(f"{n:,} in {t}" for t, n in occupied.items())
            raise ValueError(
                f"DST {dst.db_path} is not empty (rows: {held}): copy writes only into a new or empty "
                "cache, so nothing was written; name a new file or schema, or empty this one first "
                "(SQLite: delete the file; PostgreSQL: DROP SCHEMA <its schema> CASCADE)"
            )
        bar = _progress_bar(sum(counts.values()), progress)
        try:
            for table, key in COPY_TABLES:
                bar.set_description(table)
                # The destination's column names, read from its own table: the column order of a
                # migrated SQLite file may differ from a new cache's.
                columns = [d[0] for d in write.execute(f"SELECT * FROM {table} LIMIT 0").description]
                insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                for rows in _batches(read, table, columns, key, batch_rows):
                    write.executemany(insert, rows)
                    bar.update(len(rows))
        finally:
            bar.close()
        if not isinstance(dst.db_path, Path):
            # Series ids were copied as they are: the next new series must get a higher one.
            write.execute("SELECT setval(pg_get_serial_sequence('series', 'series_id'), max(series_id)) "
                          "FROM series")
        copied = {t: int(write.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t, _key in COPY_TABLES}
        if copied != counts:
            differ = ", ".join(f"{t}: {counts[t]:,} in SRC, {copied[t]:,} in DST"
                               for t in counts if counts[t] != copied[t])
            raise CopyMismatchError(f"row counts differ after the copy ({differ}): rolled back, DST "
                                    "is as it was")
    return copied


class _NoBar:
    """Stands in for a progress bar when none is shown."""

    def set_description(self, text: str) -> None: ...
    def update(self, n: int) -> None: ...
    def set_postfix_str(self, text: str) -> None: ...
    def close(self) -> None: ...


def _progress_bar(total: int, show: bool, unit: str = "rows") -> Any:
    """A progress bar of ``unit`` on stderr (tqdm), or a silent stand-in."""
    if not show:
        return _NoBar()
    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs on the index

    return tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.2)


def cmd_copy(args: argparse.Namespace) -> int:
    show = args.progress
    if show is None:  # auto: a person is watching stderr
        show = not args.quiet and sys.stderr is not None and sys.stderr.isatty()
    counts = copy_cache(args.source, args.destination, batch_rows=args.batch_size, progress=show)
    # The opened caches' own names for the locations (resolved path / URL without its password).
    src_name = _shown(args.source)
    dst_name = _shown(args.destination)
    total = sum(counts.values())
    if args.json:
        _dump_json({"source": src_name, "destination": dst_name, "rows": total, "tables": counts}, sys.stdout)
    elif not args.quiet:
        print(_table([(t, f"{n:,}") for t, n in counts.items()], ("table", "rows")))
        print(f"Copied {total:,} rows from {src_name} to {dst_name} (row counts verified)")
    return 0


def _shown(location: str | Path) -> str:
    """A location as messages print it: a URL without its password, a file path as given."""
    text = str(location)
    return redact_url(text) if is_postgres_url(text) else text


def _cmd_doctor(args: argparse.Namespace) -> int:
    """``doctor``: check the cache's data (:mod:`cachelib.doctor`); exit 1 on an error, and
    on a warning too with ``--strict``."""
    from .doctor import diagnose, location_option, sessions_text

    command = "cache-manager"  # repair lines name the cache this run was given
    if args.db_url is not None or args.db_path is not None:
        command += " " + location_option(args.db_url if args.db_url is not None else args.db_path)
    with TradingCacheManager(_location(args), create=False, read_only=True) as cache:
        report = diagnose(cache, command=command)
    if args.json:
        _dump_json(report.to_dict(args.strict), sys.stdout)
        return report.exit_code(args.strict)
    counts = report.counts
    print(f"Checked {report.series_checked:,} series and {report.option_snapshots_checked:,} option "
          f"snapshots on {report.engine}; integrity: {report.integrity}")
    if report.findings:
        rows = [(f.severity, f.check, str(f.series or "-"), sessions_text(f.sessions), f.message)
                for f in report.findings]
        print(_table(rows, ("severity", "check", "series", "sessions", "problem")))
        repairs = [f.repair for f in report.findings if f.repair]
        if repairs:
            print("\nRepair:")
            print("\n".join(f"  {line}" for line in dict.fromkeys(repairs)))
    print(f"{counts['error']} error(s), {counts['warning']} warning(s)"
          + (" (warnings fail with --strict)" if args.strict and counts["warning"] else ""))
    return report.exit_code(args.strict)


# ---------------------------------------------------------------------------
# sync and replay: one-off work without Prefect
# ---------------------------------------------------------------------------

#: ``--source`` of ``sync``/``replay``: what :func:`cachelib.sources.get_source` builds.
MARKET_SOURCES = ("auto", "alpaca", "demo")


def _sync_timeframe(text: str) -> str:
    """``sync --timeframe``: a timeframe the sources serve (``1H`` -> ``1Hour``)."""
    from .sources import SUPPORTED_TIMEFRAMES

    try:
        name: str | None = parse_timeframe(text).name
    except ValueError:
        name = None
    if name not in SUPPORTED_TIMEFRAMES:
        raise argparse.ArgumentTypeError(
            f"unknown timeframe {text!r}: the sources serve {', '.join(SUPPORTED_TIMEFRAMES)} "
            "(aliases T, H, D)")
    return name


def _symbol_list(text: str) -> list[str]:
    """A SYMBOLS argument: one ticker or several separated by commas (``AAPL,MSFT``)."""
    names = [part for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no ticker in {text!r}: give e.g. SPY or AAPL,MSFT")
    return [_symbol(name) for name in names]


def _whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """A flag combination argparse cannot check: usage and one error line, exit 2."""
    with contextlib.suppress(OSError, ValueError):
        args.parser.print_usage(sys.stderr)
    _say(f"{args.parser.prog}: error: {message}")
    return 2


@contextlib.contextmanager
def _market_source(args: argparse.Namespace) -> Iterator[Any]:
    """The source ``--source``/``--feed`` name, with the ``CACHELIB_ALPACA_*`` settings (shared
    rate limiter, retries); closed afterwards. A source that would file its bars under another
    feed than ``--feed`` is refused before any request."""
    from .sources import get_source, source_options
    from .sync import _feed_name

    options = source_options(args.source)
    if args.feed is not None and args.source != "demo":
        options["feed"] = args.feed
    source = get_source(args.source, **options)
    try:
        if args.feed is not None and _feed_name(source) != args.feed:
            raise _Error(f"--feed {args.feed} was asked for, but --source {args.source} gives the "
                         f"{source.name} source, whose feed is {_feed_name(source)!r}: configure Alpaca "
                         "keys (APCA_API_KEY_ID/APCA_API_SECRET_KEY) or drop --feed")
        yield source
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()


def _show_progress(args: argparse.Namespace) -> bool:
    """``--progress``/``--no-progress``, else a bar only when a person watches stderr."""
    if args.progress is not None:
        return bool(args.progress)
    return not args.quiet and sys.stderr is not None and sys.stderr.isatty()


def _backfill(cache: TradingCacheManager, source: Any, args: argparse.Namespace, timeframe: str) -> Any:
    """Run the chunked, resumable sync of ``args.symbols`` (:mod:`cachelib.backfill`) with a
    progress bar of chunks; a failed chunk raises :class:`~cachelib.backfill.BackfillError`."""
    from .backfill import ChunkResult, plan_backfill, run_backfill

    plan = plan_backfill(args.symbols, args.start, args.end, timeframe,
                         pages_per_chunk=getattr(args, "pages_per_chunk", 10))
    bar = _progress_bar(len(plan.chunks), _show_progress(args), unit="chunk")
    seen = {"requests": 0, "rows": 0}

    def step(result: ChunkResult) -> None:
        seen["requests"] += result.requests
        seen["rows"] += result.rows_written
        bar.set_postfix_str(f"{seen['requests']:,} requests, {seen['rows']:,} rows")
        bar.update(1)

    try:
        return run_backfill(cache, source, plan, asset_type=args.asset_type, progress=step)
    finally:
        bar.close()


def _sync_summary(report: Any) -> str:
    """The end-of-run summary of a :class:`~cachelib.backfill.BackfillReport`."""
    rows = [
        ("Source", f"{report.source} (feed {report.feed})"),
        ("Bars", f"{report.timeframe} of {', '.join(report.symbols[:5])}"
                 + (f" and {len(report.symbols) - 5} more" if len(report.symbols) > 5 else "")
                 + f", {report.start.isoformat()} .. {report.end.isoformat()}"),
        ("Chunks", f"{report.chunks_done:,} of {report.chunks_total:,} done ({report.chunks_fetched:,} fetched, "
                   f"{report.chunks_skipped:,} already cached)"
                   + (f", {report.chunks_failed} failed" if report.chunks_failed else "")),
        ("Requests", f"{report.requests:,} (plan for an empty cache: {report.expected_requests:,} "
                     f"page{'' if report.expected_requests == 1 else 's'} of 10,000 rows)"),
        ("Rows written", f"{report.rows_written:,}"),
        ("Rows rejected", f"{report.rows_rejected:,}"),
    ]
    text = _table(rows)
    if report.rejection_counts:
        reasons = sorted(report.rejection_counts.items(), key=lambda item: (-item[1], item[0]))
        text += "\n\n" + _table([(reason, f"{n:,}") for reason, n in reasons], ("rejected because", "rows"))
    return text


def _cmd_sync(args: argparse.Namespace) -> int:
    """``sync``: fetch what the cache lacks, chunk by chunk (:mod:`cachelib.backfill`); a rerun of
    a failed run fetches only what is missing. Creates the cache if needed."""
    from .backfill import BackfillError

    args.symbols = list(dict.fromkeys(s for group in args.symbols for s in group))
    if args.source == "demo" and args.feed not in (None, "demo"):
        return _usage_error(args, f"--feed {args.feed} needs --source alpaca (the demo source's feed is 'demo')")
    with _market_source(args) as source, _open(args, create=True) as cache:
        try:
            report = _backfill(cache, source, args, args.timeframe)
        except BackfillError as exc:
            if args.json:
                _dump_json(exc.report.as_dict(), sys.stdout)
            elif not args.quiet:
                print(_sync_summary(exc.report))
            raise _Error(str(exc)) from None
    if args.json:
        _dump_json(report.as_dict(), sys.stdout)
    elif not args.quiet:
        print(_sync_summary(report))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    """``replay``: run cached minute bars through a strategy, archive its trades and print the
    trade statistics. With ``--source`` the missing bars are synced first (chunked, like
    ``sync``); without it, sessions with no cached bars are listed on stderr with the ``sync``
    command that fills them, and the rest is replayed."""
    from .replay import replay_days

    args.symbols = list(dict.fromkeys(s for group in args.symbols for s in group))
    synced = None
    with contextlib.ExitStack() as stack:
        if args.source is not None:
            args.feed, args.asset_type = None, "stock"
            source = stack.enter_context(_market_source(args))
            cache = stack.enter_context(_open(args, create=True))
            synced = _backfill(cache, source, args, args.timeframe)
        else:
            cache = stack.enter_context(_open(args))
        summary = replay_days(cache, args.symbols, args.start, args.end, strategy=args.strategy,
                              timeframe=args.timeframe, on_missing="skip", max_workers=1)
    if summary.missing:
        days = sorted({day for _sym, day in summary.missing})
        names = list(dict.fromkeys(sym for sym, _day in summary.missing))
        _say(f"{len(summary.missing):,} session(s) have no cached {args.timeframe} bars and were not replayed "
             f"({', '.join(names)}; {days[0].isoformat()} .. {days[-1].isoformat()}): fetch them with "
             f"cache-manager sync {','.join(names)} --start {days[0].isoformat()} --end {days[-1].isoformat()} "
             f"--timeframe {args.timeframe}, or pass --source")
    win_rate = 100.0 * summary.winning_trades / summary.trades if summary.trades else None
    if args.json:
        _dump_json({"strategy": summary.strategy, "symbols": list(summary.symbols),
                    "start": summary.start.isoformat(), "end": summary.end.isoformat(),
                    "timeframe": args.timeframe, "sessions": summary.sessions,
                    "sessions_replayed": summary.sessions_replayed, "bars": summary.bars,
                    "trades": summary.trades, "winning_trades": summary.winning_trades,
                    "win_rate_pct": win_rate, "total_pnl": summary.total_pnl,
                    "trades_by_symbol": summary.trades_by_symbol,
                    "missing": [{"symbol": s, "session": d.isoformat()} for s, d in summary.missing],
                    "archived_stats": summary.stats,
                    "sync": None if synced is None else synced.as_dict()}, sys.stdout)
        return 0
    rows = [
        ("Strategy", summary.strategy),
        ("Range", f"{summary.start.isoformat()} .. {summary.end.isoformat()} ({args.timeframe} bars)"),
        ("Sessions", f"{summary.sessions_replayed:,} replayed of {summary.sessions * len(summary.symbols):,} "
                     f"(symbol, session) pairs"),
        ("Bars", f"{summary.bars:,}"),
        ("Trades", f"{summary.trades:,}"
                   + (f", {summary.winning_trades:,} winning ({win_rate:.1f} %)" if win_rate is not None else "")),
        ("Total P&L", f"{summary.total_pnl:,.2f}"),
    ]
    if synced is not None:
        rows.append(("Synced first", f"{synced.requests:,} requests, {synced.rows_written:,} rows written, "
                                     f"{synced.rows_rejected:,} rejected"))
    print(_table(rows))
    if len(summary.symbols) > 1:
        print()
        print(_table([(sym, f"{n:,}") for sym, n in summary.trades_by_symbol.items()], ("symbol", "trades")))
    return 0


# ---------------------------------------------------------------------------
# report: the pictures as one self-contained HTML file
# ---------------------------------------------------------------------------

#: ``report`` without ``--start`` covers this many calendar days up to ``--end``.
REPORT_DAYS = 90


def _cmd_report(args: argparse.Namespace) -> int:
    """``report``: write the coverage map, the equity curve and the last traded day's chart
    (:mod:`cachelib.pictures`) as one self-contained HTML file; an existing file is replaced only
    with ``--force``, atomically."""
    from datetime import timedelta

    from .market_hours import latest_finished_session
    from .pictures import report_html

    end = args.end if args.end is not None else latest_finished_session()
    start = args.start if args.start is not None else end - timedelta(days=REPORT_DAYS)
    if start > end:
        return _usage_error(args, f"--start {start} is after --end {end}")
    symbols = list(dict.fromkeys(s for group in args.symbols for s in group)) if args.symbols else None
    with TradingCacheManager(_location(args), create=False, read_only=True) as cache:
        db_file = cache.db_path if isinstance(cache.db_path, Path) else None
        target = _output_target(args.output, db_file, args.force)
        page = report_html(cache, symbols, start, end, strategy=args.strategy, timeframe=args.timeframe)
    try:
        _write_atomically(target, page)
    except OSError as exc:
        raise _Error(f"cannot write --output {args.output}: {exc.strerror or exc} (the file was not "
                     "changed)") from None
    if args.json:
        _dump_json({"output": str(args.output), "start": start.isoformat(), "end": end.isoformat(),
                    "bytes": len(page.encode("utf-8"))}, sys.stdout)
    else:
        print(f"Wrote the report of {start} .. {end} to {args.output} ({len(page.encode('utf-8')):,} bytes)")
    return 0


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
        help="the cache's SQLite file (default: $TRADING_CACHE_URL, else $TRADING_CACHE_DB, else "
        ".cache/trading_cache.db)",
    )
    parser.add_argument(
        "--db-url",
        metavar="URL",
        default=default if suppress else None,
        help="the cache as a URL: postgresql://user@host/dbname (a team's shared cache; the "
        "password may come from PGPASSWORD) or sqlite:///path/to/file.db; overrides "
        "$TRADING_CACHE_URL; not together with --db-path",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default if suppress else False,
        help="machine-readable JSON output",
    )


_TIMEFRAME_HELP = f"bar timeframe: {ACCEPTED_TIMEFRAMES}; aliases T, H, D, W, M"


def _range_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbol", type=_symbol, help="ticker, e.g. SPY")
    parser.add_argument("--start", required=True, type=_when, metavar="WHEN",
                        help="first day (YYYY-MM-DD) or time (naive = New York time)")
    parser.add_argument("--end", required=True, type=_when, metavar="WHEN",
                        help="last day (YYYY-MM-DD, the whole session) or time (naive = New York time)")
    parser.add_argument("--timeframe", default="1Day", type=_timeframe, metavar="TF",
                        help=f"{_TIMEFRAME_HELP} (default 1Day)")
    parser.add_argument("--source", default=None, type=_source, help="only this source (default: best source per bar)")
    parser.add_argument("--asset-type", default="stock", type=_asset_type, help="asset type (default stock)")
    parser.add_argument("--feed", default=None, type=_feed,
                        help="only this vendor feed, e.g. sip or iex (default: each source's best feed: "
                             "sip, then delayed_sip, then iex)")
    parser.add_argument("--adjustment", default="raw", choices=ADJUSTMENTS,
                        help="raw: prices as traded (default); split: adjusted for splits and stock "
                             "dividends; dividend: for cash dividends; all: both")
    parser.add_argument("--as-of", default=None, type=_day, metavar="DATE",
                        help="adjust by the corporate actions with ex-date on or before DATE (YYYY-MM-DD; "
                             "default: today in New York): prices as a user saw them that day")


def _sync_options(parser: argparse.ArgumentParser, source_default: str | None = "auto") -> None:
    """SYMBOLS, the days and the source of ``sync`` and ``replay``."""
    parser.add_argument("symbols", nargs="+", type=_symbol_list, metavar="SYMBOLS",
                        help="tickers, space- or comma-separated: SPY AAPL,MSFT")
    parser.add_argument("--start", required=True, type=_day, metavar="DATE", help="first day (YYYY-MM-DD)")
    parser.add_argument("--end", required=True, type=_day, metavar="DATE", help="last day (YYYY-MM-DD)")
    if source_default is None:
        parser.add_argument("--source", default=None, choices=MARKET_SOURCES,
                            help="fetch missing bars from this source first (auto: Alpaca when keys are "
                                 "configured, else demo); default: replay only what is cached")
    else:
        parser.add_argument("--source", default=source_default, choices=MARKET_SOURCES,
                            help="market-data source (default auto: Alpaca when APCA_API_KEY_ID/"
                                 "APCA_API_SECRET_KEY are set, else the offline demo source)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar of chunks on stderr (default: only when stderr is a terminal)")


def _strategy(text: str) -> str:
    """``--strategy``: a registered strategy name (unknown names are usage errors)."""
    from .tick_flow import STRATEGIES

    if text not in STRATEGIES:
        raise argparse.ArgumentTypeError(f"unknown strategy {text!r}: registered: {', '.join(sorted(STRATEGIES))}")
    return text


def _epilog() -> str:
    codes = "\n".join(
        textwrap.fill(meaning, 78, initial_indent=f"  {code:>3}  ", subsequent_indent=" " * 7)
        for code, meaning in EXIT_CODES.items()
    )
    return f"{textwrap.fill(_TIME_RULE, 78)}\n\nExit codes:\n{codes}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cache-manager",
        description=textwrap.fill(
            "Inspect, maintain and copy the cachelib market-data cache (a SQLite file, or PostgreSQL "
            "with --db-url). Only migrate-legacy creates a cache (and copy its DST); every other "
            "command on a missing cache says 'no cache at PATH'.",
            78,
        ),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                           epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func, parser=p)
        return p

    add("stats", cmd_stats, "bar, option-chain and trade counts, sizes and date range")
    p = add("cleanup", cmd_cleanup, "remove expired rows (bars, coverage, option snapshots)")
    p.add_argument("--vacuum", action="store_true", help="then rebuild the file to reclaim space")
    add("vacuum", cmd_vacuum, "rebuild the database file and report bytes reclaimed")
    p = add("symbols", cmd_symbols, "list symbols with cached bars")
    p.add_argument("--asset-type", default="stock", type=_asset_type, help="asset type (default stock)")
    p = add("export", cmd_export, "write a symbol's bars as JSON records or CSV")
    _range_options(p)
    p.add_argument("--format", choices=("json", "csv"), default="json", help="output format (default json)")
    p.add_argument("--output", metavar="FILE", default=None,
                   help="write to FILE instead of stdout (atomically; never the cache database)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p = add("query", cmd_query, "show a symbol's cached bars as a table")
    _range_options(p)
    p = add("actions", cmd_actions, "list a symbol's cached corporate actions (splits, dividends, name changes)")
    p.add_argument("symbol", type=_symbol, help="ticker, e.g. NVDA")
    p.add_argument("--start", default=None, type=_day, metavar="DATE", help="from this ex-date (YYYY-MM-DD)")
    p.add_argument("--end", default=None, type=_day, metavar="DATE", help="up to this ex-date (YYYY-MM-DD)")
    p.add_argument("--source", default=None, type=_source,
                   help="only this source (default: each action from the best source)")
    p = add("clear", cmd_clear, "delete cached bars matching the filters (all bars without filters)")
    p.add_argument("--symbol", default=None, type=_symbol, help="only this symbol")
    p.add_argument("--source", default=None, type=_source, help="only this source")
    p.add_argument("--timeframe", default=None, type=_timeframe, metavar="TF",
                   help=f"only this timeframe ({_TIMEFRAME_HELP})")
    p.add_argument("--start", default=None, type=_when, metavar="WHEN",
                   help="from this day (YYYY-MM-DD) or time (naive = New York time)")
    p.add_argument("--end", default=None, type=_when, metavar="WHEN",
                   help="up to this day (YYYY-MM-DD, the whole session) or time (naive = New York time)")
    p.add_argument("--asset-type", default=None, type=_asset_type, help="only this asset type (default: all)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p = add("copy", cmd_copy,
            "copy a whole cache to an empty or new one, on either engine (SQLite <-> PostgreSQL), all or "
            "nothing, and verify the row counts")
    p.add_argument("source", metavar="SRC", help="the cache to copy: a SQLite file or a postgresql:// URL")
    p.add_argument("destination", metavar="DST",
                   help="an empty or new cache (created if missing): a file, sqlite:/// or postgresql:// URL")
    p.add_argument("--batch-size", type=int, default=COPY_BATCH_ROWS, metavar="ROWS",
                   help=f"rows per batch read and written (default {COPY_BATCH_ROWS})")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar on stderr (default: only when stderr is a terminal)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary table")
    p = add("doctor", _cmd_doctor,
            "check the cached data: missing sessions, expired rows, bad bars, outliers, option chains "
            "without greeks, database integrity; exit 1 on an error")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p = add("sync", _cmd_sync,
            "fetch the bars the cache lacks from a market-data source, in resumable chunks (a failed run "
            "is resumed by running it again); creates the cache if needed")
    _sync_options(p)
    p.add_argument("--timeframe", default="1Day", type=_sync_timeframe, metavar="TF",
                   help="bar timeframe: 1Min, 5Min, 15Min, 30Min, 1Hour or 1Day; aliases T, H, D (default 1Day)")
    p.add_argument("--feed", default=None, type=_feed,
                   help="Alpaca feed: sip, iex, delayed_sip... (default: the source's own; needs --source alpaca "
                        "or auto with keys)")
    p.add_argument("--asset-type", default="stock", type=_asset_type, help="asset type (default stock)")
    p.add_argument("--pages-per-chunk", type=_whole_number, default=10, metavar="N",
                   help="size of a chunk in vendor pages of 10,000 rows (default 10): a failure loses at most "
                        "one chunk's requests")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    p = add("replay", _cmd_replay,
            "replay cached minute bars through a strategy, archive its trades and print the trade stats "
            "(--source: sync missing bars first)")
    _sync_options(p, source_default=None)
    p.add_argument("--timeframe", default="1Min", type=_sync_timeframe, metavar="TF",
                   help="intraday bar timeframe to replay: 1Min, 5Min, 15Min, 30Min or 1Hour (default 1Min)")
    p.add_argument("--strategy", default=None, type=_strategy, metavar="NAME",
                   help="a registered strategy (default sma_crossover)")
    p.set_defaults(quiet=False)
    p = add("report", _cmd_report,
            "write an HTML page with pictures: the coverage map (symbols x sessions) and the equity "
            "curve of the archived trades, with the last traded day's minute chart")
    p.add_argument("--output", required=True, metavar="FILE",
                   help="the HTML file to write (atomically; never the cache database)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--symbols", nargs="+", type=_symbol_list, default=None, metavar="SYMBOLS",
                   help="tickers, space- or comma-separated (default: every cached symbol)")
    p.add_argument("--start", default=None, type=_day, metavar="DATE",
                   help=f"first day (YYYY-MM-DD; default {REPORT_DAYS} days before --end)")
    p.add_argument("--end", default=None, type=_day, metavar="DATE",
                   help="last day (YYYY-MM-DD; default the latest finished session)")
    p.add_argument("--strategy", default=None, metavar="NAME",
                   help="equity curve of this strategy's trades only (default: all archived trades)")
    p.add_argument("--timeframe", default="1Day", type=_timeframe, metavar="TF",
                   help=f"coverage of this timeframe ({_TIMEFRAME_HELP}; default 1Day)")
    p = add("migrate-legacy", cmd_migrate_legacy,
            "import the deprecated JSON file cache (.cache/market_data); creates the cache if needed")
    p.add_argument("directory", metavar="DIR", help="directory of SYMBOL_START_END_SOURCE.json files")
    p.add_argument("--dry-run", action="store_true", help="validate every file, write nothing")
    return parser


_URL_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _check_location(args: argparse.Namespace) -> None:
    """``--db-path`` and ``--db-url`` together, or a ``--db-url`` that is no URL, is a usage
    error (exit 2); ``copy`` names its caches itself."""
    if args.db_url is not None and args.db_path is not None:
        args.parser.error("--db-path and --db-url both given: pick one (--db-path for a SQLite file, "
                          "--db-url for a postgresql:// or sqlite:/// URL)")
    if args.db_url is not None and not _URL_PREFIX.match(args.db_url.strip()):
        # Not echoed: a mistyped URL may still hold a password.
        args.parser.error("--db-url is not a URL: write postgresql://user@host/dbname or "
                          "sqlite:///path/to/file.db, or give a file with --db-path")
    if args.command == "copy" and (args.db_url is not None or args.db_path is not None):
        args.parser.error("copy takes its caches as SRC and DST: drop --db-path/--db-url")


def _check_range(args: argparse.Namespace) -> None:
    """A reversed or unrepresentable ``--start``/``--end`` is a usage error (exit 2)."""
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if start is None or end is None:
        return
    timeframe = getattr(args, "timeframe", None)
    kinds = (True, False) if timeframe is None else (parse_timeframe(timeframe).is_intraday,)
    for intraday in kinds:
        try:
            key_range(start, end, intraday)
        except OverflowError:
            args.parser.error(f"--start {_show(start)} .. --end {_show(end)} is outside the dates the "
                              "cache can hold")
        except ValueError:
            args.parser.error(f"--start {_show(start)} is after --end {_show(end)}")


def _say(message: str, secrets: Sequence[str] = ()) -> None:
    """One line on stderr, with every URL redacted and ``secrets`` masked; a closed stderr is
    not worth a traceback."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), _one_line(message))
    for secret in secrets:
        text = text.replace(secret, "***")
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr)


_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def _secrets(args: argparse.Namespace | None) -> list[str]:
    """The passwords in the locations this run was given (flags, SRC/DST, $TRADING_CACHE_URL):
    masked in any message, whatever library wrote it."""
    locations = [os.environ.get("TRADING_CACHE_URL", "")]
    if args is not None:
        locations += [str(getattr(args, name, None) or "") for name in ("db_url", "db_path", "source", "destination")]
    found = []
    for location in locations:
        if is_postgres_url(location):
            found += url_secrets(location)  # as libpq reads them: "#", "?" or "/" in a password
    return sorted({s for s in found if s}, key=len, reverse=True)


def _is_database_error(exc: BaseException) -> bool:
    """A PostgreSQL driver error (psycopg is imported only when a PostgreSQL cache is opened,
    so one that is not imported cannot have raised)."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


def _quiet_stdout() -> None:
    """The reader of stdout went away: point stdout at /dev/null, so the interpreter's final
    flush of what is still buffered does not complain ("Exception ignored ... Broken pipe")."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def _complete_writes() -> Iterator[None]:
    """Give an unbuffered stdout (``python -u``, ``PYTHONUNBUFFERED=1``, common in containers)
    a buffer for the command's duration. Unbuffered, a write the kernel takes only in part (a
    pipe whose reader left, a full disk) silently drops the rest and the command "succeeds";
    buffered, every write completes or raises."""
    stream = sys.stdout
    if not isinstance(getattr(stream, "buffer", None), io.RawIOBase):
        yield
        return
    fd = os.dup(stream.fileno())  # our own descriptor: closing it leaves stdout open
    ours = io.TextIOWrapper(io.BufferedWriter(io.FileIO(fd, "w")), encoding=stream.encoding,
                            errors=stream.errors, line_buffering=bool(stream.line_buffering))
    sys.stdout = ours
    try:
        yield
        ours.flush()
    finally:
        sys.stdout = stream
        with contextlib.suppress(OSError, ValueError):  # after a closed pipe: drop what is left
            ours.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cache-manager`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code
    (:data:`EXIT_CODES`)."""
    args: argparse.Namespace | None = None
    # The pool's own retries would print warnings next to our one error line.
    pool_log = logging.getLogger("psycopg.pool")
    if not pool_log.handlers:
        pool_log.addHandler(logging.NullHandler())
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
            _check_location(args)
            _check_range(args)
        except SystemExit as exc:  # --help, --version (0) and usage errors (2)
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        with _complete_writes():
            code = args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, inside the handlers below, not at exit
        return code
    except BrokenPipeError:
        # Before OSError (its base class): ``cache-manager query ... | head`` ends quietly.
        _quiet_stdout()
        return _EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _say("interrupted")
        return _EXIT_INTERRUPTED
    except _Abort as exc:
        _say(str(exc), _secrets(args))
        return _EXIT_ERROR
    except (_Error, ValueError, sqlite3.Error, OSError) as exc:  # DatabaseFileError is a ValueError
        _say(f"error: {exc}", _secrets(args))
        return _EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the promise is: never a traceback
        if _is_database_error(exc):  # e.g. a constraint or a server-side error on PostgreSQL
            _say(f"error: PostgreSQL: {exc}", _secrets(args))
            return _EXIT_ERROR
        _say(f"error: unexpected {type(exc).__name__}: {exc} (this is a bug in cachelib: please "
             "report it with the command you ran)", _secrets(args))
        return _EXIT_ERROR
