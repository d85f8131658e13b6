"""Trade history: archive, history, deletion, statistics of the ``trade_history`` table.

The trade record itself (model, columns, rules, the signed P&L) lives in :mod:`cachelib.trade`,
shared with the engine. A trade is archived at entry and updated at exit by ``trade_id``; only
the fields given are changed. ``realized_pnl``, ``realized_pnl_pct`` and
``holding_period_hours`` are derived from the merged trade whenever a call does not give them
(:func:`cachelib.trade.derived_trade_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    from .connection import Database


class TradeTable:
    """The ``trade_history`` table; the manager's trade methods delegate here."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def archive(self, trade: Mapping[str, Any] | Any) -> bool:
        record = trade_record(trade)
        given = set(record)
        with self._db.atomic() as conn:
            row = conn.execute(
                f"SELECT {', '.join(TRADE_COLUMNS)} FROM trade_history WHERE trade_id = ?",
                (record["trade_id"],),
            ).fetchone()
            existing = None if row is None else dict(zip(TRADE_COLUMNS, row, strict=True))
            if existing is None:
                missing = [c for c in TRADE_REQUIRED if record.get(c) is None]
                if missing:
                    raise ValueError(f"trade {record['trade_id']!r} is new and lacks {', '.join(missing)}")
            merged = {**(existing or {}), **record}
            check_trade(merged, existing)
            for name, value in derived_trade_fields(merged).items():
                if name not in given:
                    record[name] = value
            record["updated_at"] = int(now_utc().timestamp())
            cols = list(record)
            if existing is None:
                conn.execute(
                    f"INSERT INTO trade_history ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [record[c] for c in cols],
                )
            else:
                sets = ", ".join(f"{c} = ?" for c in cols if c != "trade_id")
                conn.execute(
                    f"UPDATE trade_history SET {sets} WHERE trade_id = ?",
                    [record[c] for c in cols if c != "trade_id"] + [record["trade_id"]],
                )
        return True

    def history(self, symbol: str | None, start: Any, end: Any, strategy: str | None,
                limit: int | None) -> pd.DataFrame:
        where, params = trade_filters(symbol, start, end, strategy)
        sql = f"SELECT {', '.join(TRADE_COLUMNS)} FROM trade_history WHERE {where} ORDER BY entry_date DESC, trade_id"
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit < 2**63:
                raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
            sql += f" LIMIT {int(limit)}"
        frame = pd.DataFrame(self._db.conn.execute(sql, params).fetchall(), columns=list(TRADE_COLUMNS))
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
        ("strategy_name = ?", maybe(str, strategy)),
    )
