"""The point-in-time tick flow: DTOs, an in-process event bus, workers, strategies and sessions.

Walk-through of one tick (the default ``sma_crossover`` wiring)::

    run_session(bars, strategy, symbol)            one session, one fresh StrategyCache
      for each bar, in time order (pulled lazily from the iterator):
        TickCacheManager.on_raw_tick(tick)
          tick_cache = {}; cache.start_run(tick_cache, tick.timestamp)   RunAnchor = this tick
          bus.publish(TICK_FLOW_START, tick)          depth-first, registration order
            ExecutionWorker.on_tick                   fill the previous bar's order at this open
              -> PUBLISH TRADE_CLOSED (after an exit fill) -> session's trade collector
            SmaThreatWorker      fast crosses below slow -> Risk   -> PUBLISH THREAT_DETECTED
              PlanningWorker                          decision matrix -> StrategyDirective
                -> PUBLISH STRATEGY_DIRECTIVE_READY -> ExecutionWorker.on_directive (order pending)
            SmaOpportunityWorker fast crosses above slow -> Signal -> PUBLISH OPPORTUNITY_DETECTED
              PlanningWorker -> ... -> ExecutionWorker.on_directive
          finally: cache.clear()                      also when a worker raises
      after the last bar: the strategy's session-end hook closes any open position
      at the last bar's close (exit_reason="session_close").

Point in time: a worker only ever receives the current tick; what it knows about earlier
ticks it has derived and kept itself (e.g. a 30-close window). The engine holds no handle to
the bar list: ``run_session`` pulls one bar from the iterator, runs its whole flow, and only
then pulls the next. Worker state lives in objects built per session by ``Strategy.build``,
so no indicator state carries from one session into the next.

Workers return :class:`DispositionEnvelope`: ``CONTINUE`` (nothing to say), ``PUBLISH`` an
event onward with a payload, or ``STOP`` (halt the rest of this tick's flow).

Speed (the benchmark is ``python -m bench.bench_replay``): every tick builds a ``RawTick``
without a second validation pass (bars are validated once, when they enter the store, or by
``run_session(validate=True)``); the ``RunAnchor`` is only built when a worker asks for it;
with a :class:`StrategyCache` the run's facts are checked once per session, not per tick, and
``run_session`` runs ``on_raw_tick``'s steps inline; the DTOs the engine derives itself (signals,
directives, fills, trades, envelopes) are built the same way, while user code gets the
validating constructors; workers return the shared :data:`CONTINUE` envelope when nothing
happens; and the SMA windows are fixed-size deques, so the cost per bar does not grow with
the session.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cachelib.clock import as_utc
from cachelib.strategy_cache import (
    IStrategyCache,
    StrategyCache,
    check_run_facts,
    strategy_cache,
    trusted_model,
)
from cachelib.trade import Trade, trade_pnl

__all__ = [
    # DTOs
    "RawTick",
    "Signal",
    "Risk",
    "DirectiveAction",
    "StrategyDirective",
    "Side",
    "Fill",
    "Trade",
    "SessionEnd",
    # envelopes and events
    "Disposition",
    "DispositionEnvelope",
    "CONTINUE",
    "STOP",
    "TICK_FLOW_START",
    "OPPORTUNITY_DETECTED",
    "THREAT_DETECTED",
    "STRATEGY_DIRECTIVE_READY",
    "ORDER_FILLED",
    "TRADE_CLOSED",
    "SIGNALS_KEY",
    "THREATS_KEY",
    "DIRECTIVES_KEY",
    "FILLS_KEY",
    "EventBus",
    "Worker",
    "Handler",
    "Wiring",
    "SessionEndHook",
    # engine
    "TickCacheManager",
    "TickFlowError",
    "WiringError",
    "UnknownStrategyError",
    # workers
    "SmaCrossIndicator",
    "SmaOpportunityWorker",
    "SmaThreatWorker",
    "PlanningWorker",
    "ExecutionWorker",
    "signal_quality",
    # strategies and sessions
    "Strategy",
    "StrategyWiring",
    "standard_wiring",
    "sma_crossover",
    "STRATEGIES",
    "DEFAULT_STRATEGY",
    "register_strategy",
    "get_strategy",
    "run_session",
    "make_trade_id",
]

_UTC = timezone.utc

# ----------------------------------------------------------------------------------------------
# Event names and tick-cache keys
# ----------------------------------------------------------------------------------------------

TICK_FLOW_START = "TICK_FLOW_START"
OPPORTUNITY_DETECTED = "OPPORTUNITY_DETECTED"
THREAT_DETECTED = "THREAT_DETECTED"
STRATEGY_DIRECTIVE_READY = "STRATEGY_DIRECTIVE_READY"
ORDER_FILLED = "ORDER_FILLED"
TRADE_CLOSED = "TRADE_CLOSED"

SIGNALS_KEY = "signals"
THREATS_KEY = "threat_signals"
DIRECTIVES_KEY = "directives"
FILLS_KEY = "fills"

_EVENT_NAME_RE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")  # always used with fullmatch
_STRATEGY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def _check_event_name(name: object) -> str:
    if not isinstance(name, str) or not _EVENT_NAME_RE.fullmatch(name):
        raise ValueError(f"event name must be UPPER_SNAKE_CASE (e.g. 'TICK_FLOW_START'), got {name!r}")
    return name


def _utc_fields(*names: str) -> Any:
    """A field validator: the named datetime fields become aware UTC (a naive value means UTC)."""
    return field_validator(*names)(classmethod(lambda cls, value: as_utc(value)))


# ----------------------------------------------------------------------------------------------
# DTOs
# ----------------------------------------------------------------------------------------------


class _DTO(BaseModel):
    """Immutable data contract: frozen, no unknown fields, timestamps normalised to UTC."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RawTick(_DTO):
    """One bar as it arrives: the only market data a worker ever receives.

    ``timestamp`` is the bar's start instant (aware UTC; a naive value is taken as UTC).
    Validation checks that prices are finite and positive and that ``low <= open, close <= high``.
    Internal, already-validated data use :meth:`trusted`, which skips validation.
    """

    symbol: str = Field(min_length=1)
    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0

    _utc = _utc_fields("timestamp")

    @model_validator(mode="after")
    def _consistent(self) -> RawTick:
        o, h, lo, c = self.open, self.high, self.low, self.close
        if not all(math.isfinite(x) and x > 0 for x in (o, h, lo, c)):
            raise ValueError(f"prices must be finite and positive: open={o} high={h} low={lo} close={c}")
        if not (lo <= o <= h and lo <= c <= h):
            raise ValueError(f"inconsistent bar: open={o} high={h} low={lo} close={c}")
        if not (math.isfinite(self.volume) and self.volume >= 0):
            raise ValueError(f"volume must be finite and >= 0, got {self.volume}")
        return self

    @classmethod
    def trusted(
        cls,
        symbol: str,
        timestamp: datetime,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
    ) -> RawTick:
        """Build a tick from trusted values without validation (``timestamp`` must be aware UTC).

        About twice as fast as validation; this is what the replay hot path uses for bars
        that were validated when they entered the store.
        """
        return _trusted_tick(symbol, timestamp, open, high, low, close, volume)


_TICK_FIELDS = frozenset(RawTick.model_fields)


def _trusted_tick(
    symbol: str, timestamp: datetime, open: float, high: float, low: float, close: float, volume: float
) -> RawTick:
    # Same object model_construct() builds, at a third of its cost (measured: ~1.0 µs vs ~3.4 µs).
    values = {
        "symbol": symbol,
        "timestamp": timestamp,
        "open": open,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
    }
    return trusted_model(RawTick, values, _TICK_FIELDS)


M = TypeVar("M", bound=BaseModel)
#: DTO class -> its field names in order (``model_fields`` is a costly class property to read).
_FIELD_NAMES: dict[type[BaseModel], tuple[str, ...]] = {}


def _trusted(cls: type[M], **values: Any) -> M:
    """A DTO from values the engine computed itself, without a validation pass.

    Every field must be given (a missing one raises ``KeyError``). Used on the flow's event
    path (signals, directives, fills, trades, envelopes), where validation would cost ~10 us
    per object; objects built by user code go through the normal, validating constructors.
    """
    fields = _FIELD_NAMES.get(cls)
    if fields is None:
        fields = _FIELD_NAMES[cls] = tuple(cls.model_fields)
    if tuple(values) != fields:  # the engine passes them in field order: keep that dict
        if len(values) != len(fields):
            raise TypeError(f"{cls.__name__}: expected the fields {list(fields)}, got {list(values)}")
        values = {name: values[name] for name in fields}
    return trusted_model(cls, values, fields)


class Signal(_DTO):
    """An opportunity found by an opportunity worker (stored under ``"signals"``)."""

    timestamp: datetime
    symbol: str
    signal_type: str = "ENTRY_LONG"
    strength: str = "weak"
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    detail: dict[str, float] = Field(default_factory=dict)

    _utc = _utc_fields("timestamp")


class Risk(_DTO):
    """A threat found by a threat worker (stored under ``"threat_signals"``)."""

    timestamp: datetime
    symbol: str
    risk_type: str = "EXIT_LONG"
    severity: float = Field(default=0.0, ge=0.0, le=1.0)
    detail: dict[str, float] = Field(default_factory=dict)

    _utc = _utc_fields("timestamp")


class DirectiveAction(StrEnum):
    ENTER_LONG = "ENTER_LONG"
    EXIT_LONG = "EXIT_LONG"


class StrategyDirective(_DTO):
    """What the planner decided on bar ``timestamp``; executed at the next bar's open."""

    timestamp: datetime
    symbol: str
    action: DirectiveAction
    quantity: float = Field(gt=0)
    reason: str = ""
    signal_strength: str = "weak"
    signal_confidence: float = Field(default=0.0, ge=0.0, le=1.0)

    _utc = _utc_fields("timestamp")


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Fill(_DTO):
    """A simulated fill (stored under ``"fills"``)."""

    timestamp: datetime
    symbol: str
    side: Side
    quantity: float = Field(gt=0)
    price: float = Field(gt=0)
    reason: str = ""

    _utc = _utc_fields("timestamp")


class SessionEnd(_DTO):
    """Handed to a strategy's session-end hook after the last bar of a session."""

    symbol: str
    last_tick: RawTick
    timestamp: datetime  # the end of the last bar: its start + the bar interval

    _utc = _utc_fields("timestamp")


def make_trade_id(strategy_name: str, symbol: str, entry_date: datetime) -> str:
    """The deterministic trade id: ``"{strategy}:{symbol}:{entry ISO-8601 UTC}"``.

    One position at a time per (strategy, symbol), so the entry instant identifies the trade,
    and replaying a day yields the same ids (archiving is an upsert).

    >>> make_trade_id("sma_crossover", "AAPL", datetime(2024, 3, 15, 14, 5, tzinfo=timezone.utc))
    'sma_crossover:AAPL:2024-03-15T14:05:00+00:00'
    """
    return f"{strategy_name}:{symbol}:{as_utc(entry_date).isoformat()}"


# ----------------------------------------------------------------------------------------------
# Disposition envelopes
# ----------------------------------------------------------------------------------------------


class Disposition(StrEnum):
    CONTINUE = "CONTINUE"  # nothing to pass on; the flow goes on with the next subscriber
    PUBLISH = "PUBLISH"  # publish event_name(payload) to its subscribers, depth-first
    STOP = "STOP"  # halt the rest of this tick's flow


class DispositionEnvelope(BaseModel):
    """What a worker returns. ``PUBLISH`` needs an UPPER_SNAKE_CASE ``event_name``.

    >>> DispositionEnvelope.publish("OPPORTUNITY_DETECTED").event_name
    'OPPORTUNITY_DETECTED'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    disposition: Disposition = Disposition.CONTINUE
    event_name: str | None = None
    payload: BaseModel | None = None

    @field_validator("event_name")
    @classmethod
    def _upper_snake(cls, value: str | None) -> str | None:
        return None if value is None else _check_event_name(value)

    @model_validator(mode="after")
    def _publish_needs_event(self) -> DispositionEnvelope:
        if self.disposition is Disposition.PUBLISH and self.event_name is None:
            raise ValueError("a PUBLISH envelope needs an event_name")
        return self

    @classmethod
    def publish(cls, event_name: str, payload: BaseModel | None = None) -> DispositionEnvelope:
        """A ``PUBLISH`` envelope for ``event_name`` carrying ``payload``."""
        return cls(disposition=Disposition.PUBLISH, event_name=event_name, payload=payload)


#: The shared "nothing to report" envelope (envelopes are frozen, so sharing is safe).
CONTINUE = DispositionEnvelope(disposition=Disposition.CONTINUE)
#: The shared "halt this tick's flow" envelope.
STOP = DispositionEnvelope(disposition=Disposition.STOP)


def _publish(event_name: str, payload: BaseModel | None) -> DispositionEnvelope:
    """A PUBLISH envelope for one of the engine's own (constant, valid) event names."""
    return _trusted(
        DispositionEnvelope, disposition=Disposition.PUBLISH, event_name=event_name, payload=payload
    )


# ----------------------------------------------------------------------------------------------
# Event bus
# ----------------------------------------------------------------------------------------------

@runtime_checkable
class Worker(Protocol):
    """Anything with ``process(payload) -> DispositionEnvelope | None`` (``None`` = CONTINUE)."""

    def process(self, payload: Any) -> DispositionEnvelope | None: ...


Handler = Callable[[Any], "DispositionEnvelope | None"]
#: Event name -> the workers (or plain callables) subscribed to it, in call order.
Wiring = Mapping[str, Sequence["Worker | Handler"]]
#: Called once after a session's last bar; returns the trades it closes (if any).
SessionEndHook = Callable[[SessionEnd], "Iterable[Trade] | None"]


class WiringError(ValueError):
    """A wiring map or subscription is malformed (bad event name, handler not callable, cycle)."""


class EventBus:
    """A synchronous in-process event bus with a deterministic order.

    Subscribers of an event are called in registration order. When one returns a ``PUBLISH``
    envelope, that event is dispatched completely (depth-first) before the next subscriber of
    the current event runs. A ``STOP`` envelope halts the whole flow of the current publish.

    >>> bus = EventBus()
    >>> seen = []
    >>> bus.subscribe("PING", lambda p: DispositionEnvelope.publish("PONG"))
    >>> bus.subscribe("PONG", lambda p: seen.append("pong"))
    >>> bus.publish("PING")
    True
    >>> seen
    ['pong']
    """

    max_depth = 32  # a longer chain of nested publishes is taken to be a cycle in the wiring

    def __init__(self, wiring: Wiring | None = None) -> None:
        self._subscribers: dict[str, list[Handler]] = {}
        if wiring:
            for event_name, workers in wiring.items():
                for worker in workers:
                    self.subscribe(event_name, worker)

    def subscribe(self, event_name: str, worker: Worker | Handler) -> None:
        """Call ``worker`` (its ``process`` method, or the callable itself) on ``event_name``."""
        try:
            _check_event_name(event_name)
        except ValueError as exc:
            raise WiringError(str(exc)) from None
        handler = getattr(worker, "process", worker)
        if not callable(handler):
            raise WiringError(f"subscriber for {event_name} is neither callable nor a worker: {worker!r}")
        self._subscribers.setdefault(event_name, []).append(handler)

    def subscribers(self, event_name: str) -> tuple[Handler, ...]:
        """The handlers subscribed to ``event_name``, in call order."""
        return tuple(self._subscribers.get(event_name, ()))

    def publish(self, event_name: str, payload: Any = None) -> bool:
        """Dispatch ``event_name(payload)``. Returns ``False`` if a worker said ``STOP``."""
        return self._dispatch(event_name, payload, 0)

    def _dispatch(self, event_name: str, payload: Any, depth: int) -> bool:
        handlers = self._subscribers.get(event_name)
        if not handlers:
            return True
        for handler in handlers:
            envelope = handler(payload)
            if envelope is CONTINUE or envelope is None:
                continue
            if type(envelope) is not DispositionEnvelope:
                raise TypeError(
                    f"{_handler_name(handler)} returned {type(envelope).__name__} on {event_name}; "
                    "workers must return a DispositionEnvelope or None"
                )
            disposition = envelope.disposition
            if disposition is Disposition.PUBLISH:
                if depth >= self.max_depth:
                    raise WiringError(
                        f"event chain deeper than {self.max_depth} at {envelope.event_name}: "
                        "is there a cycle in the wiring?"
                    )
                event_name: str = envelope.event_name  # type: ignore[assignment]
                if not self._dispatch(event_name, envelope.payload, depth + 1):
                    return False
            elif disposition is Disposition.STOP:
                return False
        return True


def _handler_name(handler: Callable[..., Any]) -> str:
    owner = getattr(handler, "__self__", None)
    name = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{type(owner).__name__}.{handler.__name__}" if owner is not None else name


# ----------------------------------------------------------------------------------------------
# TickCacheManager
# ----------------------------------------------------------------------------------------------


class TickFlowError(RuntimeError):
    """A worker raised while processing a tick; the original error is the ``__cause__``."""

    def __init__(self, message: str, *, symbol: str, timestamp: datetime) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.timestamp = timestamp


class TickCacheManager:
    """Owns the lifecycle of each tick's cache: open a run, publish the tick, always clear.

    ``cache`` is injected (default: the module singleton); the workers wired to ``bus``
    must have been given the same cache.
    """

    def __init__(
        self,
        bus: EventBus,
        cache: IStrategyCache | None = None,
        *,
        run_id: str | None = None,
        strategy_id: str = "default",
        backtest_mode: bool = False,
    ) -> None:
        self._bus = bus
        self._strategy_cache: IStrategyCache = strategy_cache if cache is None else cache
        self._run_facts: tuple[str, str, bool] = (
            uuid4().hex if run_id is None else run_id, strategy_id, backtest_mode
        )
        check_run_facts(*self._run_facts)
        # bound once: on_raw_tick runs for every bar
        self._start_run = self._strategy_cache.start_run
        # Our own cache opens a tick's run without start_run's per-call checks (the run facts
        # were checked above): a third of start_run's cost, which was ~10% of a replay.
        self._open_tick = (
            self._strategy_cache._open_tick if type(self._strategy_cache) is StrategyCache else None
        )
        self._clear = self._strategy_cache.clear
        self._dispatch = bus._dispatch

    # run_id, strategy_id and backtest_mode stay assignable; an assignment is checked at once.
    def _set_fact(self, index: int, value: Any) -> None:
        facts = list(self._run_facts)
        facts[index] = value
        check_run_facts(*facts)
        self._run_facts = (facts[0], facts[1], facts[2])

    @property
    def run_id(self) -> str:
        return self._run_facts[0]

    @run_id.setter
    def run_id(self, value: str) -> None:
        self._set_fact(0, value)

    @property
    def strategy_id(self) -> str:
        return self._run_facts[1]

    @strategy_id.setter
    def strategy_id(self, value: str) -> None:
        self._set_fact(1, value)

    @property
    def backtest_mode(self) -> bool:
        return self._run_facts[2]

    @backtest_mode.setter
    def backtest_mode(self, value: bool) -> None:
        self._set_fact(2, value)

    @property
    def bus(self) -> EventBus:
        return self._bus

    @property
    def cache(self) -> IStrategyCache:
        return self._strategy_cache

    def on_raw_tick(self, tick: RawTick) -> bool:
        """Run the whole flow for ``tick``. Returns ``False`` if a worker said ``STOP``.

        The cache is cleared afterwards in every case. A worker's exception is re-raised as
        :class:`TickFlowError` naming the tick's symbol and timestamp, chained with ``from``.
        If the cache is already in use (another flow's run is active) ``start_run`` raises
        ``CacheAlreadyConfiguredError`` and that other run is left alone.
        """
        if self._open_tick is not None:
            self._open_tick(tick.timestamp, self._run_facts)
        else:
            run_id, strategy_id, backtest_mode = self._run_facts
            self._start_run(
                {}, tick.timestamp, run_id=run_id, strategy_id=strategy_id, backtest_mode=backtest_mode
            )
        try:
            return self._dispatch(TICK_FLOW_START, tick, 0)
        except Exception as exc:
            raise _flow_error(exc, "tick flow", tick.symbol, tick.timestamp) from exc
        finally:
            self._clear()

    def on_session_end(self, hook: SessionEndHook, end: SessionEnd) -> list[Trade]:
        """Call a strategy's session-end hook inside a run anchored at the session's end."""
        cache = self.cache
        cache.start_run(
            {},
            end.timestamp,
            run_id=self.run_id,
            strategy_id=self.strategy_id,
            backtest_mode=self.backtest_mode,
        )
        try:
            trades = list(hook(end) or ())
        except Exception as exc:
            raise _flow_error(exc, "session-end hook", end.symbol, end.timestamp) from exc
        finally:
            cache.clear()
        for trade in trades:
            if not isinstance(trade, Trade):
                raise TypeError(f"session-end hook returned {type(trade).__name__}, expected Trade")
        return trades


def _flow_error(exc: Exception, what: str, symbol: str, timestamp: datetime) -> TickFlowError:
    return TickFlowError(
        f"{what} failed for {symbol} at {timestamp.isoformat()}: {type(exc).__name__}: {exc}",
        symbol=symbol,
        timestamp=timestamp,
    )


# ----------------------------------------------------------------------------------------------
# The SMA crossover workers
# ----------------------------------------------------------------------------------------------

#: A cross whose |fast - slow| / slow reaches this spread gets confidence 1.0 (2 basis points).
#: Chosen from synthetic minute data, where the median spread on the signal bar is ~1.3 bp.
CONFIDENCE_FULL_SPREAD = 0.0002


def signal_quality(fast: float, slow: float) -> tuple[str, float]:
    """Strength and confidence of a cross from its normalised spread.

    ``confidence = min(1.0, abs(fast - slow) / slow / 0.0002)``: the spread between the SMAs on
    the signal bar, in units of 2 basis points, capped at 1. ``strength`` is ``"strong"``
    when ``confidence >= 0.5`` (a spread of at least 1 bp), else ``"weak"``.

    >>> signal_quality(100.05, 100.0)
    ('strong', 1.0)
    >>> signal_quality(100.005, 100.0)[0]
    'weak'
    """
    confidence = min(1.0, abs(fast - slow) / slow / CONFIDENCE_FULL_SPREAD)
    return ("strong" if confidence >= 0.5 else "weak"), confidence


class SmaCrossIndicator:
    """Fast/slow simple moving averages of closes and their crosses, O(1) memory per session.

    The SMA on bar ``i`` is ``sum(last n closes) / n`` with Python floats, summed oldest to
    newest (the same value ``sum(closes[-n:]) / n`` gives). Both SMAs are defined from bar
    ``slow - 1`` on (0-based). A cross on bar ``i`` needs both SMAs on bars ``i - 1`` and ``i``,
    so the first possible cross is on bar ``slow`` (the ``slow + 1``-th close):

    * cross above: ``fast[i-1] <= slow[i-1] and fast[i] > slow[i]``
    * cross below: ``fast[i-1] >= slow[i-1] and fast[i] < slow[i]``

    Shared by the opportunity and threat workers; :meth:`update` is idempotent per tick, so
    whichever worker sees the tick first computes, and the other reads the result.
    """

    ABOVE = 1
    BELOW = -1
    NONE = 0

    __slots__ = ("fast", "slow", "_fast_win", "_slow_win", "_tick", "cross", "fast_sma", "slow_sma")

    def __init__(self, fast: int = 10, slow: int = 30) -> None:
        if not (isinstance(fast, int) and isinstance(slow, int) and 1 <= fast < slow):
            raise ValueError(f"need integers 1 <= fast < slow, got fast={fast!r} slow={slow!r}")
        self.fast = fast
        self.slow = slow
        self._fast_win: deque[float] = deque(maxlen=fast)
        self._slow_win: deque[float] = deque(maxlen=slow)
        self._tick: RawTick | None = None
        self.cross = self.NONE
        self.fast_sma: float | None = None
        self.slow_sma: float | None = None

    def update(self, tick: RawTick) -> int:
        """Take ``tick``'s close (once) and return ``ABOVE``, ``BELOW`` or ``NONE``."""
        if tick is self._tick:
            return self.cross
        self._tick = tick
        close = tick.close
        self._fast_win.append(close)
        slow_win = self._slow_win
        slow_win.append(close)
        if len(slow_win) < self.slow:
            return self.NONE
        # Exact window sums each bar (not a running sum: float subtraction would drift).
        fast_sma = sum(self._fast_win) / self.fast
        slow_sma = sum(slow_win) / self.slow
        prev_fast = self.fast_sma  # the previous bar's SMAs (None before the first)
        prev_slow = self.slow_sma
        cross = 0
        if prev_fast is not None:
            if fast_sma > slow_sma:
                if prev_fast <= prev_slow:
                    cross = 1  # ABOVE
            elif fast_sma < slow_sma and prev_fast >= prev_slow:
                cross = -1  # BELOW
        self.fast_sma = fast_sma
        self.slow_sma = slow_sma
        self.cross = cross
        return cross


_CROSS_ABOVE = SmaCrossIndicator.ABOVE
_CROSS_BELOW = SmaCrossIndicator.BELOW


class SmaOpportunityWorker:
    """Fast SMA crosses above slow: store a ``Signal`` and publish ``OPPORTUNITY_DETECTED``."""

    def __init__(self, cache: IStrategyCache, indicator: SmaCrossIndicator) -> None:
        self._strategy_cache = cache
        self._indicator = indicator
        self._update = indicator.update

    def process(self, tick: RawTick) -> DispositionEnvelope:
        if self._update(tick) != _CROSS_ABOVE:
            return CONTINUE
        indicator = self._indicator
        fast, slow = indicator.fast_sma, indicator.slow_sma
        strength, confidence = signal_quality(fast, slow)  # type: ignore[arg-type]
        signal = _trusted(
            Signal,
            timestamp=tick.timestamp,
            symbol=tick.symbol,
            signal_type="ENTRY_LONG",
            strength=strength,
            confidence=confidence,
            detail={"fast_sma": fast, "slow_sma": slow},
        )
        self._strategy_cache.set_dto(SIGNALS_KEY, signal)
        return _publish(OPPORTUNITY_DETECTED, signal)


class SmaThreatWorker:
    """Fast SMA crosses below slow: store a ``Risk`` and publish ``THREAT_DETECTED``."""

    def __init__(self, cache: IStrategyCache, indicator: SmaCrossIndicator) -> None:
        self._strategy_cache = cache
        self._indicator = indicator
        self._update = indicator.update

    def process(self, tick: RawTick) -> DispositionEnvelope:
        if self._update(tick) != _CROSS_BELOW:
            return CONTINUE
        indicator = self._indicator
        fast, slow = indicator.fast_sma, indicator.slow_sma
        _, severity = signal_quality(fast, slow)  # type: ignore[arg-type]
        risk = _trusted(
            Risk,
            timestamp=tick.timestamp,
            symbol=tick.symbol,
            risk_type="EXIT_LONG",
            severity=severity,
            detail={"fast_sma": fast, "slow_sma": slow},
        )
        self._strategy_cache.set_dto(THREATS_KEY, risk)
        return _publish(THREAT_DETECTED, risk)


# ----------------------------------------------------------------------------------------------
# Planning and (simulated) execution: reusable by any long-only strategy
# ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _OpenPosition:
    entry_date: datetime
    entry_price: float
    quantity: float
    high: float  # highest price seen while open (entry fill included)
    low: float  # lowest price seen while open (entry fill included)
    signal_strength: str
    signal_confidence: float


class ExecutionWorker:
    """A simulated broker for one symbol: long only, one position at a time, fixed quantity.

    * A directive received on bar ``i`` is filled at the **open of bar i+1**, when
      :meth:`on_tick` sees that bar (wire ``on_tick`` first on ``TICK_FLOW_START``). A directive
      still pending when the session ends is dropped (there is no next bar).
    * Excursion while open: from the entry fill on bar ``e`` up to the exit. For a signal exit
      filled at the open of bar ``j`` that is the entry price, the highs and lows of bars
      ``e .. j-1`` and the open of bar ``j``; for a session close it is the entry price and the
      highs and lows of bars ``e .. last``. ``max_profit_pct = (max / entry - 1) * 100``,
      ``max_drawdown_pct = (min / entry - 1) * 100``.
    * An exit fill publishes ``TRADE_CLOSED`` with the :class:`Trade`; an entry fill publishes
      ``ORDER_FILLED`` with the :class:`Fill`. Fills are also stored under ``"fills"``.
    """

    def __init__(
        self,
        cache: IStrategyCache,
        *,
        strategy_name: str,
        quantity: float = 100,
        broker_account: str = "backtest",
    ) -> None:
        if not quantity > 0:
            raise ValueError(f"quantity must be > 0, got {quantity!r}")
        self._strategy_cache = cache
        self.strategy_name = strategy_name
        self.quantity = float(quantity)
        self.broker_account = broker_account
        self._pending: StrategyDirective | None = None
        self._position: _OpenPosition | None = None

    @property
    def position(self) -> float:
        """Shares held now."""
        return 0.0 if self._position is None else self._position.quantity

    @property
    def planned_position(self) -> float:
        """Shares held once the pending order (if any) fills: what the planner plans against."""
        pending = self._pending
        if pending is None:
            return self.position
        return pending.quantity if pending.action is DirectiveAction.ENTER_LONG else 0.0

    def on_directive(self, directive: StrategyDirective) -> DispositionEnvelope:
        """Queue ``directive`` for the next bar's open."""
        if not isinstance(directive, StrategyDirective):
            raise TypeError(f"expected a StrategyDirective, got {type(directive).__name__}")
        self._pending = directive
        return CONTINUE

    def on_tick(self, tick: RawTick) -> DispositionEnvelope:
        """Fill the pending order at this bar's open, and track the open position's excursion."""
        pending = self._pending
        position = self._position
        if pending is None:
            if position is not None:
                if tick.high > position.high:
                    position.high = tick.high
                if tick.low < position.low:
                    position.low = tick.low
            return CONTINUE
        self._pending = None
        price = tick.open
        if pending.action is DirectiveAction.ENTER_LONG:
            if position is not None:
                return CONTINUE  # already long: nothing to do
            self._position = _OpenPosition(
                entry_date=tick.timestamp,
                entry_price=price,
                quantity=pending.quantity,
                high=max(price, tick.high),
                low=min(price, tick.low),
                signal_strength=pending.signal_strength,
                signal_confidence=pending.signal_confidence,
            )
            fill = _trusted(
                Fill,
                timestamp=tick.timestamp,
                symbol=tick.symbol,
                side=Side.BUY,
                quantity=pending.quantity,
                price=price,
                reason=pending.reason,
            )
            self._strategy_cache.set_dto(FILLS_KEY, fill)
            return _publish(ORDER_FILLED, fill)
        if position is None:
            return CONTINUE  # flat: nothing to exit
        position.high = max(position.high, price)
        position.low = min(position.low, price)
        self._strategy_cache.set_dto(
            FILLS_KEY,
            _trusted(
                Fill,
                timestamp=tick.timestamp,
                symbol=tick.symbol,
                side=Side.SELL,
                quantity=position.quantity,
                price=price,
                reason=pending.reason,
            ),
        )
        trade = self._close(tick.symbol, tick.timestamp, price, "signal")
        return _publish(TRADE_CLOSED, trade)

    def on_session_end(self, end: SessionEnd) -> list[Trade]:
        """Drop any pending order; close an open position at the last bar's close."""
        self._pending = None
        if self._position is None:
            return []
        return [self._close(end.symbol, end.timestamp, end.last_tick.close, "session_close")]

    def _close(self, symbol: str, exit_date: datetime, exit_price: float, reason: str) -> Trade:
        position = self._position
        assert position is not None
        self._position = None
        entry = position.entry_price
        pnl, pnl_pct = trade_pnl(entry, exit_price, position.quantity)
        return _trusted(
            Trade,
            trade_id=make_trade_id(self.strategy_name, symbol, position.entry_date),
            symbol=symbol,
            entry_date=position.entry_date,
            entry_price=entry,
            quantity=position.quantity,
            exit_date=exit_date,
            exit_price=exit_price,
            exit_reason=reason,
            realized_pnl=pnl,
            realized_pnl_pct=pnl_pct,
            holding_period_hours=(exit_date - position.entry_date).total_seconds() / 3600,
            strategy_name=self.strategy_name,
            signal_strength=position.signal_strength,
            signal_confidence=position.signal_confidence,
            broker_account=self.broker_account,
            max_profit_pct=(position.high / entry - 1) * 100,
            max_drawdown_pct=(position.low / entry - 1) * 100,
        )


class PlanningWorker:
    """Turns this tick's opportunities and threats into at most one :class:`StrategyDirective`.

    Decision matrix (against the broker's *planned* position, pending order included):

    ============  ==========================  ==================================
    position      threats this tick            opportunities this tick
    ============  ==========================  ==================================
    long          any -> ``EXIT_LONG``         ignored (already long)
    flat          ignored (nothing to exit)    any, and no threat -> ``ENTER_LONG``
    ============  ==========================  ==================================

    It is wired to both ``OPPORTUNITY_DETECTED`` and ``THREAT_DETECTED`` and reads the cache
    each time; once a directive exists for the tick it does nothing more. Wire threat workers
    before opportunity workers so that a bar carrying both never opens a position.
    """

    def __init__(self, cache: IStrategyCache, broker: ExecutionWorker) -> None:
        self._strategy_cache = cache
        self._broker = broker

    def process(self, _payload: BaseModel | None = None) -> DispositionEnvelope:
        cache = self._strategy_cache
        if cache.has_dto(DIRECTIVES_KEY):
            return CONTINUE
        broker = self._broker
        threats = cache.get_dtos(THREATS_KEY, Risk)
        if broker.planned_position > 0:
            if not threats:
                return CONTINUE
            threat = threats[0]
            directive = _trusted(
                StrategyDirective,
                timestamp=threat.timestamp,
                symbol=threat.symbol,
                action=DirectiveAction.EXIT_LONG,
                quantity=broker.planned_position,
                reason=threat.risk_type,
                signal_strength="weak",
                signal_confidence=threat.severity,
            )
        else:
            opportunities = cache.get_dtos(SIGNALS_KEY, Signal)
            if not opportunities or threats:
                return CONTINUE
            best = max(opportunities, key=lambda s: s.confidence)  # first of the most confident
            directive = _trusted(
                StrategyDirective,
                timestamp=best.timestamp,
                symbol=best.symbol,
                action=DirectiveAction.ENTER_LONG,
                quantity=broker.quantity,
                reason=best.signal_type,
                signal_strength=best.strength,
                signal_confidence=best.confidence,
            )
        cache.set_dto(DIRECTIVES_KEY, directive)
        return _publish(STRATEGY_DIRECTIVE_READY, directive)


# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------

class StrategyWiring(NamedTuple):
    """What ``Strategy.build`` returns: the wiring map and an optional session-end hook."""

    wiring: Wiring
    on_session_end: SessionEndHook | None = None


@dataclass(frozen=True)
class Strategy:
    """A named, pluggable strategy.

    ``build(cache)`` is called once per session with that session's cache and returns the
    wiring map (event name -> workers) and a session-end hook, as a :class:`StrategyWiring` or
    a plain ``(wiring, hook)`` tuple. Everything stateful must be created inside ``build``,
    so sessions never share state. Trades reach the session through the ``TRADE_CLOSED``
    event and through the hook's return value.

    ``name`` is used as ``Trade.strategy_name`` and in trade ids: letters, digits, ``_.-``.
    """

    name: str
    build: Callable[[IStrategyCache], StrategyWiring | tuple[Wiring, SessionEndHook | None]]
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _STRATEGY_NAME_RE.fullmatch(self.name):
            raise ValueError(f"strategy name must match {_STRATEGY_NAME_RE.pattern}, got {self.name!r}")
        if not callable(self.build):
            raise TypeError("Strategy.build must be callable")

    def wire(self, cache: IStrategyCache) -> StrategyWiring:
        """Call ``build`` and check its result."""
        built = self.build(cache)
        if not isinstance(built, tuple) or len(built) != 2:
            raise WiringError(f"{self.name}: build() must return (wiring, on_session_end)")
        wiring, hook = built
        if not isinstance(wiring, Mapping):
            raise WiringError(f"{self.name}: the wiring must be a mapping of event name -> workers")
        if hook is not None and not callable(hook):
            raise WiringError(f"{self.name}: on_session_end must be callable or None")
        return StrategyWiring(wiring, hook)


def standard_wiring(
    cache: IStrategyCache,
    strategy_name: str,
    *,
    opportunity: Sequence[Worker | Handler],
    threat: Sequence[Worker | Handler] = (),
    quantity: float = 100,
    broker_account: str = "backtest",
) -> StrategyWiring:
    """Wire your detection workers to the stock planner and simulated broker.

    ``TICK_FLOW_START`` -> broker fill, then ``threat`` workers, then ``opportunity`` workers;
    ``OPPORTUNITY_DETECTED`` / ``THREAT_DETECTED`` -> :class:`PlanningWorker`;
    ``STRATEGY_DIRECTIVE_READY`` -> :class:`ExecutionWorker`. Detection workers store
    :class:`Signal` under ``"signals"`` / :class:`Risk` under ``"threat_signals"`` and publish
    the matching event.
    """
    broker = ExecutionWorker(
        cache, strategy_name=strategy_name, quantity=quantity, broker_account=broker_account
    )
    planner = PlanningWorker(cache, broker)
    wiring: dict[str, list[Worker | Handler]] = {
        TICK_FLOW_START: [broker.on_tick, *threat, *opportunity],
        THREAT_DETECTED: [planner],
        OPPORTUNITY_DETECTED: [planner],
        STRATEGY_DIRECTIVE_READY: [broker.on_directive],
    }
    return StrategyWiring(wiring, broker.on_session_end)


def sma_crossover(
    fast: int = 10, slow: int = 30, quantity: float = 100, *, name: str = "sma_crossover"
) -> Strategy:
    """The default strategy: long-only SMA crossover on bar closes.

    Enter when the fast SMA crosses above the slow one, exit when it crosses below (see
    :class:`SmaCrossIndicator`); orders fill at the next bar's open, a position still open at
    the end of the session is closed at the last close. Give a different ``name`` to keep the
    trades of other parameters apart in trade_history.
    """
    SmaCrossIndicator(fast, slow)  # validate the parameters now, not at the first session

    def build(cache: IStrategyCache) -> StrategyWiring:
        indicator = SmaCrossIndicator(fast, slow)
        return standard_wiring(
            cache,
            name,
            opportunity=[SmaOpportunityWorker(cache, indicator)],
            threat=[SmaThreatWorker(cache, indicator)],
            quantity=quantity,
        )

    return Strategy(
        name=name,
        build=build,
        description=f"SMA {fast}/{slow} crossover, long only, {quantity:g} shares",
        params={"fast": fast, "slow": slow, "quantity": quantity},
    )


DEFAULT_STRATEGY = "sma_crossover"
#: The strategy registry: name -> Strategy. Add yours with :func:`register_strategy`.
STRATEGIES: dict[str, Strategy] = {DEFAULT_STRATEGY: sma_crossover()}


class UnknownStrategyError(KeyError):
    """No strategy is registered under that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown strategy"


def register_strategy(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Add ``strategy`` to :data:`STRATEGIES` under its name (``replace=True`` to overwrite)."""
    if not isinstance(strategy, Strategy):
        raise TypeError(f"expected a Strategy, got {type(strategy).__name__}")
    if strategy.name in STRATEGIES and not replace and STRATEGIES[strategy.name] is not strategy:
        raise ValueError(f"a strategy named {strategy.name!r} is already registered (pass replace=True)")
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name_or_obj: str | Strategy | None = None) -> Strategy:
    """A :class:`Strategy` from its registered name, the object itself, or ``None`` (default)."""
    if name_or_obj is None:
        name_or_obj = DEFAULT_STRATEGY
    if isinstance(name_or_obj, Strategy):
        return name_or_obj
    if isinstance(name_or_obj, str):
        try:
            return STRATEGIES[name_or_obj]
        except KeyError:
            known = ", ".join(sorted(STRATEGIES))
            raise UnknownStrategyError(
                f"unknown strategy {name_or_obj!r}; registered: {known}. Use register_strategy() to add one."
            ) from None
    raise TypeError(f"expected a strategy name or Strategy, got {type(name_or_obj).__name__}")


# ----------------------------------------------------------------------------------------------
# Sessions
# ----------------------------------------------------------------------------------------------

BarInput = RawTick | tuple  # (timestamp, open, high, low, close, volume)


def run_session(
    bars: Iterable[BarInput],
    strategy: str | Strategy | None,
    symbol: str,
    *,
    cache: IStrategyCache | None = None,
    bar_interval: timedelta = timedelta(minutes=1),
    validate: bool = True,
    run_id: str | None = None,
    backtest_mode: bool = True,
) -> list[Trade]:
    """Replay one session of ``symbol`` through ``strategy``'s tick flow; return its trades.

    ``bars`` is any iterable of :class:`RawTick` or ``(timestamp, open, high, low, close,
    volume)`` tuples in strictly increasing time order. It is consumed lazily, one bar per
    tick flow, so an iterator keeps memory flat and no worker can see a later bar.

    ``validate=True`` validates every tuple into a ``RawTick``; pass ``False`` for trusted
    data (bars read back from the store, which validated them on the way in): tuples must
    then hold Python floats and aware datetimes. ``cache`` defaults to a fresh
    :class:`StrategyCache` per call, which is what makes parallel sessions safe.

    After the last bar the strategy's session-end hook runs (the default closes any open
    position at the last close, stamped with the last bar's start + ``bar_interval``).

    >>> from datetime import datetime, timezone
    >>> t0 = datetime(2024, 3, 15, 13, 30, tzinfo=timezone.utc)
    >>> bars = [(t0 + timedelta(minutes=i), 10.0, 10.0, 10.0, 10.0, 0.0) for i in range(5)]
    >>> run_session(bars, "sma_crossover", "AAPL")
    []
    """
    strategy = get_strategy(strategy)
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"symbol must be a non-empty string, got {symbol!r}")
    cache = StrategyCache() if cache is None else cache
    wiring, on_session_end = strategy.wire(cache)
    bus = EventBus(wiring)
    trades: list[Trade] = []

    def collect(trade: Trade) -> DispositionEnvelope:
        if not isinstance(trade, Trade):
            raise TypeError(f"{TRADE_CLOSED} payload must be a Trade, got {type(trade).__name__}")
        trades.append(trade)
        return CONTINUE

    bus.subscribe(TRADE_CLOSED, collect)
    manager = TickCacheManager(
        bus, cache, run_id=run_id, strategy_id=strategy.name, backtest_mode=backtest_mode
    )
    on_raw_tick = manager.on_raw_tick
    # For our own cache, on_raw_tick's steps are inlined below (a call per bar was 8% of a replay).
    open_tick, run_facts = manager._open_tick, manager._run_facts
    dispatch, clear = manager._dispatch, manager._clear
    last: RawTick | None = None
    last_ts = _BEFORE_ALL
    for bar in bars:
        if not validate and type(bar) is tuple:
            # the trusted hot path, inlined: one tick object, no validation pass
            ts, o, h, lo, c, v = bar
            if ts.tzinfo is not _UTC:
                ts = as_utc(ts)
            tick = _trusted_tick(symbol, ts, o, h, lo, c, v)
        else:
            tick = _to_tick(bar, symbol, validate)
            ts = tick.timestamp
        if ts <= last_ts:
            raise ValueError(
                f"{symbol}: bars must be in strictly increasing time order, got {ts.isoformat()} "
                f"after {last_ts.isoformat()}"
            )
        if open_tick is None:
            on_raw_tick(tick)
        else:  # TickCacheManager.on_raw_tick: the same steps and errors
            open_tick(ts, run_facts)
            try:
                dispatch(TICK_FLOW_START, tick, 0)
            except Exception as exc:
                raise _flow_error(exc, "tick flow", symbol, ts) from exc
            finally:
                clear()
        last, last_ts = tick, ts
    if last is not None and on_session_end is not None:
        end = SessionEnd(symbol=symbol, last_tick=last, timestamp=last.timestamp + bar_interval)
        trades.extend(manager.on_session_end(on_session_end, end))
    return trades


_BEFORE_ALL = datetime.min.replace(tzinfo=_UTC)


def _to_tick(bar: BarInput, symbol: str, validate: bool) -> RawTick:
    """One bar as a RawTick: validated from a tuple, trusted, or a RawTick checked for its symbol."""
    if isinstance(bar, RawTick):
        if bar.symbol != symbol:
            raise ValueError(f"tick for {bar.symbol} in a session of {symbol}")
        return bar
    if isinstance(bar, Sequence) and not isinstance(bar, str):
        if len(bar) != 6:
            raise ValueError(
                f"a bar tuple is (timestamp, open, high, low, close, volume), got {len(bar)} items"
            )
        ts, o, h, lo, c, v = bar
        if validate:
            return RawTick(symbol=symbol, timestamp=ts, open=o, high=h, low=lo, close=c, volume=v)
        return _trusted_tick(symbol, as_utc(ts), o, h, lo, c, v)
    raise TypeError(
        f"a bar must be a RawTick or a (timestamp, o, h, l, c, v) tuple, got {type(bar).__name__}"
    )
