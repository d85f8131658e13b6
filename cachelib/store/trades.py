"""Trade history: the rules of a trade record, its derived P&L, history, deletion, statistics.

A trade is archived at entry and updated at exit by ``trade_id``; only the fields given are
changed. ``realized_pnl``, ``realized_pnl_pct`` and ``holding_period_hours`` are derived from
the merged trade whenever a call does not give them (:func:`derived_trade_fields`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..bars import check_number, clamp_key, normalize_symbol, range_start_key
from ..clock import now_utc
from .bars import open_key_range
from .dialect import maybe, where_clause

if TYPE_CHECKING:
    from .connection import Database

log = logging.getLogger("cachelib.store")

TRADE_COLUMNS: tuple[str, ...] = (
    "trade_id",
    "symbol",
    "entry_date",
    "entry_price",
    "quantity",
    "exit_date",
    "exit_price",
    "exit_reason",
    "realized_pnl",
    "realized_pnl_pct",
    "holding_period_hours",
    "strategy_name",
    "signal_strength",
    "signal_confidence",
    "broker_account",
    "max_profit_pct",
    "max_drawdown_pct",
)
_TRADE_TIME_COLUMNS = ("entry_date", "exit_date")
_TRADE_REQUIRED = ("trade_id", "symbol", "entry_date", "entry_price", "quantity")
MAX_TRADE_QUANTITY = 1e15  # shares or contracts in one trade: far beyond any real order
MAX_TRADE_ID_LENGTH = 200


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
                missing = [c for c in _TRADE_REQUIRED if record.get(c) is None]
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
        for col in _TRADE_TIME_COLUMNS:
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


def trade_record(trade: Any) -> dict[str, Any]:
    """The given fields of a trade, each checked and normalised (the per-field half of
    the trade rules; :func:`check_trade` holds the rules across fields)."""
    if hasattr(trade, "model_dump"):
        data = trade.model_dump()
    elif isinstance(trade, Mapping):
        data = dict(trade)
    else:
        raise ValueError(f"trade must be a dict or a pydantic model, got {type(trade).__name__}")
    unknown = set(data) - set(TRADE_COLUMNS)
    data = {k: v for k, v in data.items() if k in TRADE_COLUMNS}
    trade_id = data.get("trade_id")
    if not isinstance(trade_id, str) or not trade_id.strip():
        raise ValueError("trade needs a non-empty string trade_id")
    if len(trade_id.strip()) > MAX_TRADE_ID_LENGTH:
        raise ValueError(f"trade_id is longer than {MAX_TRADE_ID_LENGTH} characters")
    record: dict[str, Any] = {"trade_id": trade_id.strip()}
    for key, value in data.items():
        # Only None means "not given": a NaN price or a NaT time is refused by its check.
        if key == "trade_id" or value is None:
            continue
        what = f"trade {record['trade_id']!r}: {key}"
        if key == "symbol":
            try:
                value = normalize_symbol(value)
            except ValueError as exc:
                raise ValueError(f"trade {record['trade_id']!r}: {exc}") from None
        elif key in _TRADE_TIME_COLUMNS:
            # A bare date is that New York day's midnight, as the date filters read it.
            value = range_start_key(value, intraday=True, what=what)
            if clamp_key(value) != value:
                raise ValueError(f"{what} {data[key]!r} is outside the years 1677-2262")
        elif key in ("entry_price", "exit_price"):
            value = check_number(value, what)
            if value <= 0:
                raise ValueError(f"{what} must be a positive number, got {data[key]!r}")
        elif key == "quantity":
            value = check_number(value, what)
            if value == 0 or abs(value) > MAX_TRADE_QUANTITY:
                raise ValueError(
                    f"{what} must be a non-zero number of at most {MAX_TRADE_QUANTITY:g} in size, "
                    f"got {data[key]!r}"
                )
            value = int(value) if value.is_integer() else value
        elif key == "signal_confidence":
            value = check_number(value, what)
            if not 0 <= value <= 1:
                raise ValueError(f"{what} must be between 0 and 1, got {data[key]!r}")
        elif key in ("realized_pnl", "realized_pnl_pct", "holding_period_hours",
                     "max_profit_pct", "max_drawdown_pct"):
            value = check_number(value, what)
        else:
            value = str(value.value if hasattr(value, "value") else value)
        record[key] = value
    if unknown and log.isEnabledFor(logging.DEBUG):
        log.debug("archive_trade ignored fields %s", sorted(unknown))
    return record


def check_trade(trade: dict[str, Any], existing: dict[str, Any] | None) -> None:
    """The trade rules across fields, on the merged trade (``existing`` updated by this
    call): an update keeps the symbol, the exit is not before the entry, and the derived
    P&L is a finite number."""
    tid = trade["trade_id"]
    if existing is not None and trade["symbol"] != existing["symbol"]:
        raise ValueError(
            f"trade {tid!r}: symbol {trade['symbol']} differs from the stored {existing['symbol']}; "
            "a trade_id names one trade (archive the other symbol under a new trade_id)"
        )
    if trade.get("exit_date") is not None and trade["exit_date"] < trade["entry_date"]:
        def iso(key: str) -> str:
            return pd.Timestamp(trade[key], unit="s", tz="UTC").isoformat()

        raise ValueError(
            f"trade {tid!r}: exit_date {iso('exit_date')} is before entry_date {iso('entry_date')}"
        )
    for name, value in derived_trade_fields(trade).items():
        if not math.isfinite(value):
            raise ValueError(f"trade {tid!r}: {name} is not a finite number (prices or quantity too large)")


def derived_trade_fields(trade: dict[str, Any]) -> dict[str, float]:
    """P&L, P&L % and holding hours of a (merged) trade, as far as its fields allow."""
    out: dict[str, float] = {}
    exit_price, entry, qty = trade.get("exit_price"), trade["entry_price"], trade["quantity"]
    if exit_price is not None:
        out["realized_pnl"] = (exit_price - entry) * qty
        out["realized_pnl_pct"] = (exit_price / entry - 1.0) * 100.0 * (1.0 if qty > 0 else -1.0)
    if trade.get("exit_date") is not None:
        out["holding_period_hours"] = (trade["exit_date"] - trade["entry_date"]) / 3600.0
    return out


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
