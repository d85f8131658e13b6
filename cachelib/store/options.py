"""Option-chain snapshots: the rules of a chain row, its quality score, store/read/delete, stats.

One row per ``(symbol, trading_date, contract, source)`` in ``raw_options_chain``: the latest
snapshot of the day. The snapshot a later one replaces moves, in the same transaction, to the
append-only ``raw_options_history`` (same columns), so ``get(as_of=t)`` can return the chain as
it stood at ``t``: per contract the latest snapshot taken at or before ``t``. Snapshots are
history nobody can re-download (Alpaca has no historical chain), so they keep for 10 years by
default.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..bars import (
    NY,
    OPTION_COLUMNS,
    check_count,
    check_number,
    normalize_option_type,
    normalize_symbol,
    occ_symbol,
    parse_occ_symbol,
    to_date,
    to_utc_datetime,
)
from ..clock import now_utc
from .dialect import maybe, where_clause
from .series import norm_source, source_rank
from .ttl import HISTORICAL_TTL, ttl_expiry

if TYPE_CHECKING:
    from .connection import Engine

#: Columns of ``raw_options_chain`` and ``raw_options_history``, in table order (what
#: :func:`option_record` returns).
_TABLE_COLUMNS = (
    "symbol", "trading_date", "contract_symbol", "source", "strike", "option_type", "expiration",
    "bid", "ask", "last", "volume", "open_interest", "implied_volatility", "delta", "gamma", "theta",
    "vega", "rho", "underlying_price", "data_quality_score", "snapshot_time", "expires_at",
    "open_interest_date",
)
_READ_COLUMNS = (*OPTION_COLUMNS, "symbol", "trading_date", "source", "data_quality_score")
_INSERT = {
    table: f"INSERT OR REPLACE INTO {table} ({', '.join(_TABLE_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_TABLE_COLUMNS))})"
    for table in ("raw_options_chain", "raw_options_history")
}
# The replaced snapshot of one contract, moved to the history before the new one is written.
_TO_HISTORY = (
    f"INSERT OR REPLACE INTO raw_options_history ({', '.join(_TABLE_COLUMNS)}) "
    f"SELECT {', '.join(_TABLE_COLUMNS)} FROM raw_options_chain "
    "WHERE symbol = ? AND trading_date = ? AND source = ? AND contract_symbol = ?"
)


def _as_of_seconds(as_of: Any, day: date) -> int:
    """``as_of`` as epoch seconds; naive means New York time, and it must fall on ``day``
    (New York), the trading date whose chain is read."""
    if isinstance(as_of, date) and not isinstance(as_of, datetime):
        raise ValueError(f"as_of must be a time on {day} (e.g. '{day}T12:00', New York time), "
                         f"got the date {as_of}")
    if isinstance(as_of, str) and len(as_of.strip()) == 10:
        raise ValueError(f"as_of must be a time on {day} (e.g. '{day}T12:00'), got {as_of!r}")
    if isinstance(as_of, str):
        try:
            if not as_of.isascii():  # fromisoformat reads non-ASCII digits; a time is ASCII
                raise ValueError
            as_of = datetime.fromisoformat(as_of.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"cannot read as_of {as_of[:40]!r} as a time (e.g. '{day}T12:00')") from None
    if isinstance(as_of, pd.Timestamp):
        if as_of is pd.NaT:
            raise ValueError("as_of is NaT; give a time or None")
        as_of = as_of.to_pydatetime()
    if not isinstance(as_of, datetime):
        raise ValueError(f"as_of must be a datetime or ISO time string, got {type(as_of).__name__}")
    when = as_of.replace(tzinfo=NY) if as_of.tzinfo is None else as_of.astimezone(NY)
    if when.date() != day:
        raise ValueError(f"as_of {when.isoformat()} (New York) is not on the trading date {day}; "
                         "a chain is read as of a time of its own day")
    return int(when.timestamp())


def _given(value: Any) -> bool:
    """False for the ways a frame says "no value": None, NaN, NaT, pd.NA."""
    if value is None or value is pd.NA or value is pd.NaT:
        return False
    return not (isinstance(value, float) and math.isnan(value))


class OptionChainTable:
    """The ``raw_options_chain`` table; the manager's option methods delegate here."""

    def __init__(self, db: Engine) -> None:
        self._db = db

    def store(self, symbol: str, trading_date: Any, options_df: pd.DataFrame, underlying_price: float | None,
              source: str, snapshot_time: Any, ttl_hours: float | None) -> int:
        sym = normalize_symbol(symbol)
        src = norm_source(source)
        day = to_date(trading_date, "trading_date")
        if not isinstance(options_df, pd.DataFrame):
            raise ValueError(f"options_df must be a pandas DataFrame, got {type(options_df).__name__}")
        lowered = [str(c).lower() for c in options_df.columns]
        twice = sorted({c for c in lowered if lowered.count(c) > 1})
        if twice:
            raise ValueError(f"options_df has duplicate columns {twice} (names are case-insensitive)")
        frame = options_df.rename(columns=lambda c: str(c).lower())
        if "type" in frame.columns and "option_type" not in frame.columns:
            frame = frame.rename(columns={"type": "option_type"})
        for col in ("strike", "option_type", "expiration"):
            if col not in frame.columns:
                raise ValueError(f"options_df has no {col!r} column")
        now = now_utc()
        snap = to_utc_datetime(snapshot_time, "snapshot_time") if snapshot_time is not None else now
        if ttl_hours is None:
            expires = int((now + HISTORICAL_TTL).timestamp())
        else:
            expires = int(ttl_expiry(np.zeros(1, dtype=np.int64), now, ttl_hours)[0])
        records = []
        seen: set[str] = set()
        for i, row in enumerate(frame.to_dict("records")):
            records.append(option_record(sym, day, src, row, underlying_price, snap, expires, i))
            if records[-1][2] in seen:
                raise ValueError(f"contract {records[-1][2]} appears twice in one snapshot")
            seen.add(records[-1][2])
        if not records:
            return 0
        with self._db.atomic() as conn:
            # Concurrent PostgreSQL writers of one snapshot day take turns (a no-op on SQLite).
            self._db.lock(conn, [("options", sym, day.isoformat(), src)])
            stored = dict(conn.execute(
                "SELECT contract_symbol, snapshot_time FROM raw_options_chain "
                "WHERE symbol = ? AND trading_date = ? AND source = ?",
                (sym, day.isoformat(), src),
            ).fetchall())
            latest, older, replaced = [], [], []
            for record in records:
                previous = stored.get(record[2])
                if previous is not None and record[20] < previous:
                    older.append(record)  # an earlier snapshot arriving late: history only
                else:
                    latest.append(record)
                    if previous is not None and previous < record[20]:
                        replaced.append((sym, day.isoformat(), src, record[2]))
            conn.executemany(_TO_HISTORY, replaced)
            conn.executemany(_INSERT["raw_options_chain"], latest)
            conn.executemany(_INSERT["raw_options_history"], older)
        return len(records)

    def get(self, symbol: str, trading_date: Any, source: str | None, expiration: Any,
            option_type: str | None, as_of: Any = None) -> pd.DataFrame | None:
        day = to_date(trading_date, "trading_date")
        cutoff = None if as_of is None else _as_of_seconds(as_of, day)
        body, params = where_clause(
            ("symbol = ?", normalize_symbol(symbol)),
            ("trading_date = ?", day.isoformat()),
            ("expires_at > ?", int(now_utc().timestamp())),
            ("source = ?", maybe(norm_source, source)),
            ("expiration = ?", maybe(lambda d: to_date(d, "expiration").isoformat(), expiration)),
            ("option_type = ?", maybe(normalize_option_type, option_type)),
            ("snapshot_time <= ?", cutoff),
        )
        select = f"SELECT {', '.join(_READ_COLUMNS)} FROM raw_options_chain WHERE {body}"
        if cutoff is not None:  # the replaced snapshots count too
            select += f" UNION ALL SELECT {', '.join(_READ_COLUMNS)} FROM raw_options_history WHERE {body}"
            params = params * 2
        rows = self._db.conn.execute(select, params).fetchall()
        if not rows:
            return None
        frame = pd.DataFrame(rows, columns=list(_READ_COLUMNS))
        if cutoff is not None:  # per contract and source, the latest snapshot at or before as_of
            frame = frame.sort_values("snapshot_time", ascending=False, kind="stable")
            frame = frame.drop_duplicates(["contract_symbol", "source"])
        frame["_rank"] = [source_rank(s) for s in frame["source"]]
        frame = frame.sort_values("_rank", kind="stable").drop_duplicates("contract_symbol").drop(columns="_rank")
        frame["expiration"] = [date.fromisoformat(d) for d in frame["expiration"]]
        frame["trading_date"] = [date.fromisoformat(d) for d in frame["trading_date"]]
        frame["open_interest_date"] = pd.Series(
            [date.fromisoformat(d) if isinstance(d, str) else None for d in frame["open_interest_date"]],
            index=frame.index, dtype=object,
        )
        frame["snapshot_time"] = pd.to_datetime(frame["snapshot_time"], unit="s", utc=True)
        for col in ("volume", "open_interest"):
            frame[col] = frame[col].astype("Int64")
        return frame.sort_values(["expiration", "strike", "option_type"]).reset_index(drop=True)

    def delete(self, symbol: str | None, trading_date: Any, source: str | None, before: Any) -> int:
        body, params = where_clause(
            ("symbol = ?", maybe(normalize_symbol, symbol)),
            ("trading_date = ?", maybe(lambda d: to_date(d, "trading_date").isoformat(), trading_date)),
            ("source = ?", maybe(norm_source, source)),
            ("trading_date < ?", maybe(lambda d: to_date(d, "before").isoformat(), before)),
        )
        with self._db.atomic() as conn:
            # The history goes with its chain (its rows are not counted: they are past states).
            conn.execute(f"DELETE FROM raw_options_history WHERE {body}", params)
            return conn.execute(f"DELETE FROM raw_options_chain WHERE {body}", params).rowcount

    def stats(self) -> dict[str, Any]:
        row = self._db.conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT symbol), COUNT(DISTINCT symbol || trading_date), "
            "COUNT(DISTINCT contract_symbol), MIN(trading_date), MAX(trading_date), "
            "AVG(data_quality_score) FROM raw_options_chain"
        ).fetchone()
        sources = [r[0] for r in self._db.conn.execute("SELECT DISTINCT source FROM raw_options_chain ORDER BY 1")]
        symbols = [r[0] for r in self._db.conn.execute("SELECT DISTINCT symbol FROM raw_options_chain ORDER BY 1")]
        return {
            "total_rows": row[0],
            "unique_symbols": row[1],
            "symbols": symbols,
            "snapshots": row[2],
            "unique_contracts": row[3],
            "date_range": {"start": row[4], "end": row[5]},
            "sources": sources,
            "avg_quality_score": None if row[6] is None else round(row[6], 4),
        }


def option_record(
    sym: str, day: date, src: str, row: dict, underlying: float | None, snap: datetime,
    expires: int, i: int,
) -> tuple:
    """The one place with the rules of an option-chain row; a stored row as a tuple, or
    ``ValueError`` naming the row, its contract and the field.

    A given ``contract_symbol`` must be an OCC symbol that agrees with the row's
    underlying, expiration, type and strike (an adjusted contract's root may carry one
    digit, e.g. ``AAPL1``); the expiration may not precede the trading date; prices,
    volumes and open interest are non-negative (counts whole and within 64 bits);
    implied volatility is >= 0 and |delta| <= 1.
    """
    contract: Any = row.get("contract_symbol")  # any cell value: checked below
    where = f"row {i}" + (f" ({contract})" if _given(contract) and isinstance(contract, str) else "")

    def num(name: str) -> float | None:
        value = row.get(name)
        return check_number(value, f"{where}: {name}") if _given(value) else None

    strike = num("strike")
    if strike is None or strike <= 0:
        raise ValueError(f"{where}: strike must be a positive number")
    kind = normalize_option_type(row["option_type"])  # store() checked the column is there
    expiration = to_date(row.get("expiration"), f"{where}: expiration")
    if expiration < day:
        raise ValueError(
            f"{where}: expiration {expiration} is before the trading date {day}; "
            "an expired contract has no quote"
        )
    if not _given(contract) or (isinstance(contract, str) and not contract.strip()):
        contract = occ_symbol(sym, expiration, kind, strike)
    else:
        try:
            root, occ_expiration, occ_kind, occ_strike = parse_occ_symbol(contract)
        except ValueError as exc:
            raise ValueError(f"{where}: contract_symbol: {exc}") from None
        compact, root = sym.replace(".", "").replace("/", ""), root.replace(".", "")
        contradictions = [
            f"{field} {mine} != {theirs}"
            for field, ok, mine, theirs in (
                ("underlying", root == compact or (root[:-1] == compact and root[-1:].isdigit()), root, sym),
                ("expiration", occ_expiration == expiration, occ_expiration, expiration),
                ("option_type", occ_kind == kind, occ_kind, kind),
                ("strike", abs(occ_strike - strike) < 0.0005, occ_strike, strike),
            )
            if not ok
        ]
        if contradictions:
            raise ValueError(
                f"{where}: contract_symbol {contract!r} contradicts the row "
                f"(symbol says {'; '.join(contradictions)} in the row)"
            )
    for name in ("bid", "ask", "last"):
        v = num(name)
        if v is not None and v < 0:
            raise ValueError(f"{where}: {name!r} is negative ({v})")
    vol = check_count(row.get("volume"), f"{where}: volume")
    oi = check_count(row.get("open_interest"), f"{where}: open_interest")
    iv, delta = num("implied_volatility"), num("delta")
    if iv is not None and iv < 0:
        raise ValueError(f"{where}: implied_volatility must be >= 0, got {iv}")
    if delta is not None and abs(delta) > 1:
        raise ValueError(f"{where}: delta must be between -1 and 1, got {delta}")
    under = num("underlying_price")
    if under is None:
        under = None if underlying is None else check_number(underlying, "underlying_price")
    if under is not None and under <= 0:
        raise ValueError(f"{where}: underlying_price must be a positive number, got {under}")
    bid, ask = num("bid"), num("ask")
    score = num("data_quality_score")
    if score is None:
        score = quality_score(bid, ask, iv, delta)
    elif not 0 <= score <= 1:
        raise ValueError(f"{where}: data_quality_score must be between 0 and 1, got {score}")
    counted = row.get("open_interest_date")
    oi_date = to_date(counted, f"{where}: open_interest_date").isoformat() if _given(counted) else None
    row_snap = row.get("snapshot_time")
    snap_s = int(to_utc_datetime(row_snap, f"{where}: snapshot_time").timestamp()) if _given(row_snap) \
        else int(snap.timestamp())
    return (
        sym, day.isoformat(), str(contract).strip().upper(), src, strike, kind, expiration.isoformat(),
        bid, ask, num("last"), vol, oi,
        iv, delta, num("gamma"), num("theta"), num("vega"), num("rho"),
        under, score, snap_s, expires, oi_date,
    )


def quality_score(bid: float | None, ask: float | None, iv: float | None, delta: float | None) -> float:
    """1.0 for a complete, uncrossed quote with greeks; less for each thing missing."""
    score = 1.0
    if bid is None or ask is None:
        score -= 0.4
    elif ask < bid:
        score -= 0.5
    if iv is None:
        score -= 0.2
    if delta is None:
        score -= 0.2
    return round(max(score, 0.0), 2)

