"""One trade record: the model, its columns, its rules and its P&L, used by the engine and the store.

A trade used to be defined four times (the engine's model, the store's column list, the table
DDL and the store's checks) and two of them computed P&L % with different signs for a short.
Now everything derives from :class:`Trade`:

* :data:`TRADE_COLUMNS` are its field names, in order; the ``trade_history`` table has exactly
  these columns plus the bookkeeping ``updated_at`` (``tests/test_trade_record.py`` checks the
  DDL against them).
* :func:`trade_pnl` is the only P&L formula, signed by direction: a long (``quantity > 0``) earns
  ``(exit - entry) * quantity`` and ``(exit / entry - 1) * 100`` %; a short (``quantity < 0``)
  earns ``(entry - exit) * |quantity|`` and ``(1 - exit / entry) * 100`` %.
* :func:`trade_record` (each field) and :func:`check_trade` (across fields) are the trade rules.
  The store applies them to every dict or model it archives, also to partial updates; the
  :class:`Trade` model applies them when it is built, and also refuses P&L that disagrees
  with its prices.

Data flows one way: the engine (:mod:`cachelib.tick_flow`) and the store (:mod:`cachelib.store`)
both import this module; it imports neither.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from .bars import check_number, clamp_key, normalize_symbol, range_start_key
from .clock import as_utc

log = logging.getLogger("cachelib.store")

MAX_TRADE_QUANTITY = 1e15  # shares or contracts in one trade: far beyond any real order
MAX_TRADE_ID_LENGTH = 200
#: A model's P&L must equal :func:`trade_pnl` of its prices up to this relative tolerance
#: (other code may compute the same formula in another order, e.g. ``(exit - entry) / entry``).
PNL_REL_TOLERANCE = 1e-9


def trade_pnl(entry_price: float, exit_price: float, quantity: float) -> tuple[float, float]:
    """``(realized_pnl, realized_pnl_pct)`` of a closed position, signed by its direction.

    ``quantity`` is signed: positive for a long, negative for a short. A short of 10 shares
    entered at 100 and covered at 90 earns ``(100.0, 10.0)``.
    """
    direction = 1.0 if quantity > 0 else -1.0
    return (exit_price - entry_price) * quantity, direction * (exit_price / entry_price - 1.0) * 100.0


class Trade(BaseModel):
    """A closed round trip: one row of the ``trade_history`` table.

    * ``quantity``: signed, positive for a long and negative for a short.
    * ``entry_date`` / ``exit_date``: aware UTC instants of the fills (a naive value means UTC).
      In the engine, a fill at a bar's open is stamped with the bar's start; a
      ``session_close`` exit at the last bar's close is stamped with that bar's end.
    * ``realized_pnl`` / ``realized_pnl_pct``: :func:`trade_pnl` of the prices and quantity
      (a value that disagrees with it is refused); ``holding_period_hours`` =
      ``exit_date - entry_date`` in hours.
    * ``max_profit_pct`` / ``max_drawdown_pct``: the best and worst excursion while open, in
      percent of the entry price (``>= 0`` and ``<= 0`` for the engine's longs).

    The rules of :func:`trade_record` and :func:`check_trade` apply (exit not before entry,
    non-zero quantity, positive prices, confidence in [0, 1], ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    trade_id: str
    symbol: str
    entry_date: datetime
    entry_price: float
    quantity: float
    exit_date: datetime
    exit_price: float
    exit_reason: str
    realized_pnl: float
    realized_pnl_pct: float
    holding_period_hours: float
    strategy_name: str
    signal_strength: str
    signal_confidence: float
    broker_account: str = "backtest"
    max_profit_pct: float
    max_drawdown_pct: float

    @field_validator("entry_date", "exit_date")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        return normalize_symbol(value)

    @model_validator(mode="after")
    def _follows_the_trade_rules(self) -> Trade:
        check_trade(trade_record(self.model_dump()), None)
        pnl, pct = trade_pnl(self.entry_price, self.exit_price, self.quantity)
        for name, expected in (("realized_pnl", pnl), ("realized_pnl_pct", pct)):
            given = getattr(self, name)
            if not math.isclose(given, expected, rel_tol=PNL_REL_TOLERANCE, abs_tol=PNL_REL_TOLERANCE):
                raise ValueError(
                    f"trade {self.trade_id!r}: {name} {given!r} disagrees with its prices and quantity "
                    f"({expected!r}; a short has a negative quantity and earns when the price falls)"
                )
        return self


#: The columns of a trade record, in order: the fields of :class:`Trade`.
TRADE_COLUMNS: tuple[str, ...] = tuple(Trade.model_fields)
TRADE_TIME_COLUMNS = ("entry_date", "exit_date")
#: What a trade needs when it is first archived (an update may give only some fields).
TRADE_REQUIRED = ("trade_id", "symbol", "entry_date", "entry_price", "quantity")
_TRADE_NUMBERS = ("realized_pnl", "realized_pnl_pct", "holding_period_hours", "max_profit_pct",
                  "max_drawdown_pct")


def trade_record(trade: Any) -> dict[str, Any]:
    """The given fields of a trade (a dict or a pydantic model), each checked and normalised
    to what the store keeps: times as epoch seconds UTC, an upper-case symbol, floats.

    This is the per-field half of the trade rules (one rule per column, :data:`_FIELD_RULES`);
    :func:`check_trade` holds the rules across fields. Unknown fields are ignored; ``None``
    means "not given".
    """
    if isinstance(trade, Trade):
        # Its fields by attribute: a third of model_dump()'s cost, same values. The rules still
        # run: the engine builds its trades without a validation pass (tick_flow._trusted).
        data = {name: getattr(trade, name) for name in TRADE_COLUMNS}
    elif hasattr(trade, "model_dump"):
        data = trade.model_dump()
    elif isinstance(trade, Mapping):
        data = dict(trade)
    else:
        raise ValueError(f"trade must be a dict or a pydantic model, got {type(trade).__name__}")
    trade_id = data.get("trade_id")
    if not isinstance(trade_id, str) or not trade_id.strip():
        raise ValueError("trade needs a non-empty string trade_id")
    if len(trade_id.strip()) > MAX_TRADE_ID_LENGTH:
        raise ValueError(f"trade_id is longer than {MAX_TRADE_ID_LENGTH} characters")
    if "\x00" in trade_id:
        raise ValueError(f"trade_id {trade_id!r} contains a NUL character; remove it")
    tid = trade_id.strip()
    record: dict[str, Any] = {"trade_id": tid}
    for key, rule in _FIELD_RULES.items():
        value = data.get(key)
        # Only None means "not given": a NaN price or a NaT time is refused by its rule.
        if value is not None:
            record[key] = rule(value, tid, key)
    if log.isEnabledFor(logging.DEBUG) and (unknown := data.keys() - _FIELD_RULES.keys() - {"trade_id"}):
        log.debug("archive_trade ignored fields %s", sorted(unknown))
    return record


# -- the per-field rules: each takes the given value, the trade's id and the field's name (for
# errors) and returns the value to store, or raises ValueError. The ``type(...) is`` tests are
# fast paths for what the engine and the model hold; any other value takes the general rule.
# The error's subject is formatted only when needed: formatting it for every field was a third
# of trade_record's time.


def _what(tid: str, key: str) -> str:
    return f"trade {tid!r}: {key}"


def _number(value: Any, tid: str, key: str) -> float:
    """A finite number as a float (:func:`cachelib.bars.check_number`)."""
    if type(value) is float and math.isfinite(value):
        return value
    return check_number(value, _what(tid, key))


def _time_key(value: Any, tid: str, key: str) -> int:
    """Epoch seconds UTC; a bare date is that New York day's midnight, as the date filters read it."""
    if type(value) is datetime and value.tzinfo is not None:
        seconds = int(value.timestamp())  # an aware instant: what range_start_key gives it
    else:
        seconds = range_start_key(value, intraday=True, what=_what(tid, key))
    if clamp_key(seconds) != seconds:
        raise ValueError(f"{_what(tid, key)} {value!r} is outside the years 1677-2262")
    return seconds


def _symbol(value: Any, tid: str, key: str) -> str:
    try:
        return normalize_symbol(value)
    except ValueError as exc:
        raise ValueError(f"trade {tid!r}: {exc}") from None


def _price(value: Any, tid: str, key: str) -> float:
    number = _number(value, tid, key)
    if number <= 0:
        raise ValueError(f"{_what(tid, key)} must be a positive number, got {value!r}")
    return number


def _quantity(value: Any, tid: str, key: str) -> float:
    number = _number(value, tid, key)
    if number == 0 or abs(number) > MAX_TRADE_QUANTITY:
        raise ValueError(
            f"{_what(tid, key)} must be a non-zero number of at most {MAX_TRADE_QUANTITY:g} in size, "
            f"got {value!r}"
        )
    return int(number) if number.is_integer() else number


def _confidence(value: Any, tid: str, key: str) -> float:
    number = _number(value, tid, key)
    if not 0 <= number <= 1:
        raise ValueError(f"{_what(tid, key)} must be between 0 and 1, got {value!r}")
    return number


def _text(value: Any, tid: str, key: str) -> str:
    text = value if type(value) is str else str(value.value if hasattr(value, "value") else value)  # an enum: its value
    if "\x00" in text:  # PostgreSQL text cannot hold NUL; SQLite would: refused on both engines alike
        raise ValueError(f"{_what(tid, key)} {text!r} contains a NUL character; remove it")
    return text


_FIELD_RULES: dict[str, Callable[[Any, str, str], Any]] = {
    "symbol": _symbol,
    "entry_date": _time_key,
    "exit_date": _time_key,
    "entry_price": _price,
    "exit_price": _price,
    "quantity": _quantity,
    "signal_confidence": _confidence,
    **{name: _number for name in _TRADE_NUMBERS},
}
_FIELD_RULES.update({name: _text for name in TRADE_COLUMNS if name not in _FIELD_RULES and name != "trade_id"})


def check_trade(trade: dict[str, Any], existing: dict[str, Any] | None) -> None:
    """The trade rules across fields, on a record from :func:`trade_record` (for an update:
    the stored record merged with this call's fields): an update keeps the symbol, the exit
    is not before the entry, and the derived P&L is a finite number."""
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
    """P&L, P&L % (:func:`trade_pnl`) and holding hours of a record from :func:`trade_record`,
    as far as its fields allow."""
    out: dict[str, float] = {}
    exit_price = trade.get("exit_price")
    if exit_price is not None:
        out["realized_pnl"], out["realized_pnl_pct"] = trade_pnl(
            trade["entry_price"], exit_price, trade["quantity"]
        )
    if trade.get("exit_date") is not None:
        out["holding_period_hours"] = (trade["exit_date"] - trade["entry_date"]) / 3600.0
    return out
