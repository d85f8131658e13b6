"""Trade history: archive, history, deletion, statistics of the ``trade_history`` table.

The trade record itself (model, columns, rules, the signed P&L) lives in :mod:`cachelib.trade`,
shared with the engine. A trade is archived at entry and updated at exit by ``trade_id``; only
the fields given are changed. Every archive is a batch (``archive_trade`` is a batch of one):
one look-up of the stored rows and one ``executemany`` per statement shape. ``realized_pnl``,
``realized_pnl_pct`` and ``holding_period_hours`` are derived from the merged trade whenever a
call does not give them (:func:`cachelib.trade.derived_trade_fields`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..bars import normalize_symbol
from ..clock import now_utc
from ..trade import MAX_TRADE_ID_LENGTH as MAX_TRADE_ID_LENGTH
from ..trade import MAX_TRADE_QUANTITY as MAX_TRADE_QUANTITY
from ..trade import TRADE_COLUMNS as TRADE_COLUMNS
from ..trade import TRADE_REQUIRED, TRADE_TIME_COLUMNS, check_trade, derived_trade_fields, trade_record
from .bars import open_key_range
from .dialect import maybe, where_clause

if TYPE_CHECKING:
    import sqlite3

    from .connection import Engine


class TradeTable:
    """The ``trade_history`` table; the manager's trade methods delegate here."""

    def __init__(self, db: Engine) -> None:
        self._db = db

    def archive(self, trades: Iterable[Mapping[str, Any] | Any]) -> int:
        """Archive ``trades`` in order, in one transaction (all or nothing): how many.

        The same rules and results as archiving each in its own call: a trade is inserted or
        updated by ``trade_id`` (a later one of the same id updates the earlier), and the
        derived fields come from the merged trade. Costs two statements per 500 trades (one
        ``SELECT`` of the stored rows, one ``executemany`` per statement shape) instead of four
        per trade.
        """
        if isinstance(trades, (str, bytes, Mapping)) or hasattr(trades, "model_dump") \
                or not isinstance(trades, Iterable):
            raise ValueError(
                f"archive_trades takes an iterable of trades (dicts or Trade models), got "
                f"{type(trades).__name__}; archive one trade with archive_trade"
            )
        batch = list(trades)
        records = []
        for position, trade in enumerate(batch):
            try:
                records.append(trade_record(trade))
            except ValueError as exc:
                if len(batch) == 1:
                    raise
                raise ValueError(f"trade #{position} of the batch: {exc}") from None
        if not records:
            return 0
        updated_at = int(now_utc().timestamp())
        with self._db.atomic() as conn:
            ids = list(dict.fromkeys(r["trade_id"] for r in records))
            self._db.lock(conn, [("trade", tid) for tid in ids])  # read-modify-write of these rows
            stored = self._stored(conn, ids)
            rows: dict[str, dict[str, Any]] = {}  # trade_id -> its row after this batch
            for record in records:
                tid = record["trade_id"]
                before = rows.get(tid, stored.get(tid))
                rows[tid] = {**(before or {}), **merged_record(record, before), "updated_at": updated_at}
            self._write(conn, rows, stored)
        return len(records)

    @staticmethod
    def _stored(conn: sqlite3.Connection, trade_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stored rows of ``trade_ids``, by id (``IN`` lists of at most 500: SQLite's
        default limit of bound parameters was 999 before 3.32)."""
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(trade_ids), 500):
            chunk = trade_ids[i:i + 500]
            for row in conn.execute(
                f"SELECT {', '.join(TRADE_COLUMNS)} FROM trade_history "
                f"WHERE trade_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                found[row[0]] = dict(zip(TRADE_COLUMNS, row, strict=True))
        return found

    @staticmethod
    def _write(conn: sqlite3.Connection, rows: dict[str, dict[str, Any]], stored: dict[str, dict[str, Any]]) -> None:
        """Rewrite the stored rows and insert the new ones (only their given columns, so the
        table's defaults apply): one ``executemany`` per statement shape."""
        updates = [[row[c] for c in _UPDATED_COLUMNS] + [tid] for tid, row in rows.items() if tid in stored]
        if updates:
            sets = ", ".join(f"{c} = ?" for c in _UPDATED_COLUMNS)
            conn.executemany(f"UPDATE trade_history SET {sets} WHERE trade_id = ?", updates)
        inserts: dict[tuple[str, ...], list[list[Any]]] = {}
        for tid, row in rows.items():
            if tid not in stored:
                # A trade with every field (all the engine's) skips the column filter.
                cols = _WRITTEN_COLUMNS if len(row) == len(_WRITTEN_COLUMNS) else tuple(
                    c for c in _WRITTEN_COLUMNS if c in row
                )
                inserts.setdefault(cols, []).append([row[c] for c in cols])
        for cols, params in inserts.items():
            conn.executemany(
                f"INSERT INTO trade_history ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", params
            )

    def history(self, symbol: str | None, start: Any, end: Any, strategy: str | None,
                limit: int | None) -> pd.DataFrame:
        where, params = trade_filters(symbol, start, end, strategy)
        sql = f"SELECT {', '.join(TRADE_COLUMNS)} FROM trade_history WHERE {where} ORDER BY entry_date DESC, trade_id"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**63:
                raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
            sql += f" LIMIT {int(limit)}"
        frame = pd.DataFrame(self._db.conn.execute(sql, params).fetchall(), columns=list(TRADE_COLUMNS))
        # SQLite's NUMERIC column hands back whole quantities as int, PostgreSQL's double as
        # float: one dtype (the model's float) on both engines.
        frame["quantity"] = frame["quantity"].astype("float64")
        for col in TRADE_TIME_COLUMNS:
            frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
        return frame

    def delete(self, symbol: str | None, start: Any, end: Any, strategy: str | None) -> int:
        where, params = trade_filters(symbol, start, end, strategy)
        with self._db.atomic() as conn:
            return conn.execute(f"DELETE FROM trade_history WHERE {where}", params).rowcount

    def stats(self, symbol: str | None, strategy: str | None) -> dict[str, Any]:
        where, params = trade_filters(symbol, None, None, strategy)
        rows = self._db.conn.execute(
            f"SELECT realized_pnl, holding_period_hours FROM trade_history WHERE {where} "
            "AND exit_price IS NOT NULL",
            params,
        ).fetchall()
        pnls = [r[0] or 0.0 for r in rows]
        hours = [r[1] for r in rows if r[1] is not None]
        wins = [p for p in pnls if p > 0]
        losses = [p for p in pnls if p < 0]
        gross_loss = -sum(losses)
        n = len(pnls)
        return {
            "total_trades": n,
            "winning_trades": len(wins),
            "losing_trades": len(losses),
            "win_rate_pct": round(100.0 * len(wins) / n, 4) if n else 0.0,
            "total_pnl": round(sum(pnls), 6),
            "avg_pnl": round(sum(pnls) / n, 6) if n else 0.0,
            "avg_win": round(sum(wins) / len(wins), 6) if wins else 0.0,
            "avg_loss": round(sum(losses) / len(losses), 6) if losses else 0.0,
            # None when there is no losing trade to divide by (JSON has no infinity).
            "profit_factor": round(sum(wins) / gross_loss, 6) if gross_loss else None,
            "avg_holding_hours": round(sum(hours) / len(hours), 6) if hours else 0.0,
        }


#: Every column a write sets; an update rewrites all but the key.
_WRITTEN_COLUMNS = (*TRADE_COLUMNS, "updated_at")
_UPDATED_COLUMNS = tuple(c for c in _WRITTEN_COLUMNS if c != "trade_id")


def merged_record(record: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """``record`` (from :func:`cachelib.trade.trade_record`) checked against the row stored
    ``before`` it (``None`` for a new trade), with the derived fields it did not give.

    The rules across rows: a new trade has the :data:`TRADE_REQUIRED` fields, and
    :func:`cachelib.trade.check_trade` holds for the merged trade (an update keeps the symbol,
    the exit is not before the stored entry, ...).
    """
    if before is None:
        missing = [c for c in TRADE_REQUIRED if record.get(c) is None]
        if missing:
            raise ValueError(f"trade {record['trade_id']!r} is new and lacks {', '.join(missing)}")
    merged = {**(before or {}), **record}
    check_trade(merged, before)
    derived = derived_trade_fields(merged)
    return {**record, **{k: v for k, v in derived.items() if k not in record}}


def trade_filters(
    symbol: str | None, start: Any, end: Any, strategy: str | None
) -> tuple[str, list[Any]]:
    """Entry-time bounds follow the bars' rules: date-only bounds are whole New York days."""
    lo = hi = None
    if start is not None or end is not None:
        lo, hi = open_key_range(start, end, intraday=True)
    return where_clause(
        ("symbol = ?", maybe(normalize_symbol, symbol)),
        ("entry_date >= ?", lo if start is not None else None),
        ("entry_date <= ?", hi if end is not None else None),
        ("strategy_name = ?", maybe(_strategy_filter, strategy)),
    )


def _strategy_filter(strategy: Any) -> str:
    """A strategy name to filter by; one with a NUL (which no stored name holds, and which
    PostgreSQL cannot even compare) is refused on both engines alike."""
    name = str(strategy)
    if "\x00" in name:
        raise ValueError(f"strategy {name[:40]!r} contains a NUL character; remove it")
    return name
