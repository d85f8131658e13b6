"""The tick flow: DTOs, envelopes, the event bus, TickCacheManager, strategies and sessions."""

from __future__ import annotations

import re
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ValidationError

from cachelib.strategy_cache import (
    CacheAlreadyConfiguredError,
    CacheNotConfiguredError,
    StrategyCache,
    strategy_cache,
)
from cachelib.tick_flow import (
    CONTINUE,
    DIRECTIVES_KEY,
    FILLS_KEY,
    OPPORTUNITY_DETECTED,
    SIGNALS_KEY,
    STOP,
    STRATEGIES,
    STRATEGY_DIRECTIVE_READY,
    THREAT_DETECTED,
    TICK_FLOW_START,
    TRADE_CLOSED,
    Disposition,
    DispositionEnvelope,
    EventBus,
    Fill,
    RawTick,
    Signal,
    SmaCrossIndicator,
    Strategy,
    StrategyDirective,
    StrategyWiring,
    TickCacheManager,
    TickFlowError,
    Trade,
    UnknownStrategyError,
    WiringError,
    get_strategy,
    register_strategy,
    run_session,
    signal_quality,
    sma_crossover,
)

try:
    from sma_reference import load_bars_csv, random_walk_day
except ImportError:  # tests/ became a package
    from tests.sma_reference import load_bars_csv, random_walk_day

UTC = timezone.utc
T0 = datetime(2024, 3, 15, 13, 30, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "data" / "sma_golden_bars.csv"
TRADE_HISTORY_COLUMNS = [
    "trade_id", "symbol", "entry_date", "entry_price", "quantity", "exit_date", "exit_price", "exit_reason",
    "realized_pnl", "realized_pnl_pct", "holding_period_hours", "strategy_name", "signal_strength",
    "signal_confidence", "broker_account", "max_profit_pct", "max_drawdown_pct",
]


def minute(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def tick(i: int, close: float = 10.0, symbol: str = "AAPL") -> RawTick:
    return RawTick(symbol=symbol, timestamp=minute(i), open=close, high=close, low=close, close=close)


# --- DTOs ---------------------------------------------------------------------------------------


def test_raw_tick_normalises_timestamps_to_utc() -> None:
    ny = RawTick(symbol="A", timestamp=datetime(2024, 3, 15, 9, 30, tzinfo=ZoneInfo("America/New_York")),
                 open=1, high=1, low=1, close=1)
    naive = RawTick(symbol="A", timestamp=datetime(2024, 3, 15, 13, 30), open=1, high=1, low=1, close=1)
    assert ny.timestamp == naive.timestamp == T0
    assert ny.timestamp.tzinfo is UTC and naive.timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    "prices",
    [
        {"open": 10, "high": 9, "low": 8, "close": 8.5},  # open above high
        {"open": 10, "high": 11, "low": 9, "close": 8},  # close below low
        {"open": 0, "high": 1, "low": 0, "close": 1},  # not positive
        {"open": float("nan"), "high": 1, "low": 1, "close": 1},
    ],
)
def test_raw_tick_rejects_inconsistent_bars(prices: dict) -> None:
    with pytest.raises(ValidationError):
        RawTick(symbol="A", timestamp=T0, **prices)


def test_trusted_tick_equals_validated_tick_and_is_frozen() -> None:
    trusted = RawTick.trusted("A", T0, 10.0, 11.0, 9.0, 10.5, 100.0)
    validated = RawTick(symbol="A", timestamp=T0, open=10, high=11, low=9, close=10.5, volume=100)
    assert trusted == validated and trusted.model_dump() == validated.model_dump()
    assert trusted.model_copy(update={"close": 10.0}).close == 10.0
    with pytest.raises(ValidationError):
        trusted.close = 1.0  # type: ignore[misc]


def test_trade_carries_the_trade_history_columns() -> None:
    assert list(Trade.model_fields) == TRADE_HISTORY_COLUMNS
    assert Trade.model_fields["broker_account"].default == "backtest"


def test_dtos_are_frozen_and_strict() -> None:
    signal = Signal(timestamp=T0, symbol="A")
    with pytest.raises(ValidationError):
        signal.strength = "strong"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Signal(timestamp=T0, symbol="A", confidence=1.5)
    with pytest.raises(ValidationError):
        Signal(timestamp=T0, symbol="A", unknown_field=1)  # type: ignore[call-arg]


# --- envelopes ----------------------------------------------------------------------------------


def test_publish_envelope_requires_an_event_name() -> None:
    with pytest.raises(ValidationError, match="event_name"):
        DispositionEnvelope(disposition=Disposition.PUBLISH)
    envelope = DispositionEnvelope.publish("OPPORTUNITY_DETECTED", Signal(timestamp=T0, symbol="A"))
    assert envelope.disposition is Disposition.PUBLISH and isinstance(envelope.payload, Signal)


@pytest.mark.parametrize(
    "name",
    ["opportunity_detected", "Tick_Flow", "TICK-FLOW", "_TICK", "TICK__FLOW", "", "1TICK", "TICK\n"],
)
def test_event_names_must_be_upper_snake_case(name: str) -> None:
    with pytest.raises(ValidationError, match="UPPER_SNAKE_CASE"):
        DispositionEnvelope.publish(name)
    with pytest.raises(WiringError):
        EventBus().subscribe(name, lambda p: None)


def test_envelopes_are_frozen_and_payload_optional() -> None:
    assert CONTINUE.disposition is Disposition.CONTINUE and CONTINUE.payload is None
    assert STOP.disposition is Disposition.STOP
    with pytest.raises(ValidationError):
        CONTINUE.disposition = Disposition.STOP  # type: ignore[misc]
    assert DispositionEnvelope.publish("TRADE_CLOSED").payload is None


# --- event bus ----------------------------------------------------------------------------------


def test_bus_calls_subscribers_in_registration_order_depth_first() -> None:
    calls: list[str] = []

    def worker(name: str, then: str | None = None):
        def handle(payload):
            calls.append(name)
            return DispositionEnvelope.publish(then) if then else None
        return handle

    bus = EventBus({
        "START": [worker("a", "CHILD"), worker("b"), worker("c", "OTHER")],
        "CHILD": [worker("a.1", "GRANDCHILD"), worker("a.2")],
        "GRANDCHILD": [worker("a.1.1")],
        "OTHER": [worker("c.1")],
    })
    assert bus.publish("START") is True
    assert calls == ["a", "a.1", "a.1.1", "a.2", "b", "c", "c.1"]


def test_bus_stop_halts_the_whole_flow_of_the_tick() -> None:
    calls: list[str] = []
    bus = EventBus()
    bus.subscribe("START", lambda p: calls.append("a") or DispositionEnvelope.publish("CHILD"))
    bus.subscribe("START", lambda p: calls.append("b"))
    bus.subscribe("CHILD", lambda p: calls.append("a.1") or STOP)
    bus.subscribe("CHILD", lambda p: calls.append("a.2"))
    assert bus.publish("START") is False
    assert calls == ["a", "a.1"]  # neither the sibling nor the parent's next subscriber ran
    assert bus.publish("NOBODY_LISTENS") is True


def test_bus_accepts_workers_and_callables_and_passes_payloads() -> None:
    class Echo:
        def __init__(self) -> None:
            self.seen: list = []

        def process(self, payload):
            self.seen.append(payload)
            return CONTINUE

    echo = Echo()
    bus = EventBus({"PING": [echo]})
    bus.subscribe("PING", echo.process)
    bus.publish("PING", 7)
    assert echo.seen == [7, 7]
    assert len(bus.subscribers("PING")) == 2 and bus.subscribers("NONE") == ()


def test_bus_rejects_bad_handlers_and_return_values_and_cycles() -> None:
    with pytest.raises(WiringError, match="callable"):
        EventBus({"PING": [42]})  # type: ignore[list-item]
    bus = EventBus({"PING": [lambda p: "done"]})
    with pytest.raises(TypeError, match="DispositionEnvelope"):
        bus.publish("PING")
    loop = EventBus({"PING": [lambda p: DispositionEnvelope.publish("PONG")],
                     "PONG": [lambda p: DispositionEnvelope.publish("PING")]})
    with pytest.raises(WiringError, match="cycle"):
        loop.publish("PING")


# --- TickCacheManager ---------------------------------------------------------------------------


class Recorder:
    """A worker that records what the cache shows it during the tick."""

    def __init__(self, cache: StrategyCache) -> None:
        self.cache = cache
        self.anchors: list = []

    def process(self, tick: RawTick) -> DispositionEnvelope:
        anchor = self.cache.get_run_anchor()
        assert not self.cache.has_dto("notes")  # every tick starts with an empty tick cache
        self.cache.set_dto("notes", tick)
        self.anchors.append(anchor)
        return CONTINUE


def test_manager_opens_and_clears_a_run_per_tick() -> None:
    cache = StrategyCache()
    recorder = Recorder(cache)
    manager = TickCacheManager(EventBus({TICK_FLOW_START: [recorder]}), cache, run_id="r1",
                               strategy_id="s1", backtest_mode=True)
    for i in range(3):
        assert manager.on_raw_tick(tick(i)) is True
        assert not cache.is_active
    assert [a.timestamp for a in recorder.anchors] == [minute(0), minute(1), minute(2)]
    assert {(a.run_id, a.strategy_id, a.backtest_mode) for a in recorder.anchors} == {("r1", "s1", True)}


def test_manager_clears_and_reraises_when_a_worker_raises() -> None:
    cache = StrategyCache()
    recorder = Recorder(cache)

    def boom(t: RawTick):
        if t.timestamp == minute(1):
            raise ZeroDivisionError("division by zero in my indicator")
        return CONTINUE

    manager = TickCacheManager(EventBus({TICK_FLOW_START: [recorder, boom]}), cache)
    manager.on_raw_tick(tick(0))
    with pytest.raises(TickFlowError) as info:
        manager.on_raw_tick(tick(1, symbol="AAPL"))
    message = str(info.value)
    assert "AAPL" in message and "2024-03-15T13:31:00+00:00" in message and "division by zero" in message
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert (info.value.symbol, info.value.timestamp) == ("AAPL", minute(1))
    assert not cache.is_active  # cleared despite the error
    manager.on_raw_tick(tick(2))  # the next tick starts clean (Recorder asserts no leaked DTOs)
    assert [a.timestamp for a in recorder.anchors] == [minute(0), minute(1), minute(2)]


def test_manager_defaults_to_the_module_singleton() -> None:
    recorder = Recorder(strategy_cache)  # type: ignore[arg-type]
    manager = TickCacheManager(EventBus({TICK_FLOW_START: [recorder]}))
    assert manager.cache is strategy_cache
    manager.on_raw_tick(tick(0))
    assert recorder.anchors[0].timestamp == minute(0)
    with pytest.raises(CacheNotConfiguredError):
        strategy_cache.get_run_anchor()


def test_manager_refuses_a_cache_already_in_use_and_leaves_it_alone() -> None:
    cache = StrategyCache()
    cache.start_run({}, minute(5))
    with pytest.raises(CacheAlreadyConfiguredError):
        TickCacheManager(EventBus(), cache).on_raw_tick(tick(0))
    assert cache.get_run_anchor().timestamp == minute(5)


class PlainCache(StrategyCache):
    """Not exactly a StrategyCache: the manager must go through the public start_run."""

    calls = 0

    def start_run(self, *args, **kwargs) -> None:
        type(self).calls += 1
        super().start_run(*args, **kwargs)


def test_manager_run_facts_are_the_same_on_both_paths_and_checked_when_set() -> None:
    anchors = {}
    for cache in (StrategyCache(), PlainCache()):
        recorder = Recorder(cache)
        manager = TickCacheManager(EventBus({TICK_FLOW_START: [recorder]}), cache, run_id="r1",
                                   strategy_id="s1", backtest_mode=True)
        manager.on_raw_tick(tick(0))
        manager.strategy_id = "s2"
        manager.on_raw_tick(tick(1))
        anchors[type(cache)] = [(a.timestamp, a.run_id, a.strategy_id, a.backtest_mode) for a in recorder.anchors]
    assert anchors[StrategyCache] == anchors[PlainCache] == [
        (minute(0), "r1", "s1", True), (minute(1), "r1", "s2", True)]
    assert PlainCache.calls == 2
    with pytest.raises(TypeError, match="strategy_id must be a str"):
        manager.strategy_id = 7  # type: ignore[assignment]
    with pytest.raises(TypeError, match="backtest_mode must be a bool"):
        TickCacheManager(EventBus(), StrategyCache(), backtest_mode=1)  # type: ignore[arg-type]


def test_run_session_fast_path_still_refuses_a_cache_in_use_and_names_the_failing_tick() -> None:
    cache = StrategyCache()
    cache.start_run({}, minute(5))
    bars = [(minute(i), 10.0, 10.0, 10.0, 10.0, 0.0) for i in range(3)]
    with pytest.raises(CacheAlreadyConfiguredError):
        run_session(bars, "sma_crossover", "AAPL", cache=cache, validate=False)
    assert cache.get_run_anchor().timestamp == minute(5)

    def boom(t: RawTick):
        if t.timestamp == minute(1):
            raise ZeroDivisionError("division by zero in my indicator")
        return CONTINUE

    strategy = Strategy("boom", lambda c: ({TICK_FLOW_START: [boom]}, None))
    fresh = StrategyCache()
    with pytest.raises(TickFlowError, match="AAPL at 2024-03-15T13:31:00") as info:
        run_session(bars, strategy, "AAPL", cache=fresh, validate=False)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert not fresh.is_active


# --- SMA rules on hand-made bars ----------------------------------------------------------------
# fast=2, slow=3. Closes 10 10 10 11 9 9 9 12 12:
#   bar 3: fast 10 <= slow 10 on bar 2 (a tie), 10.5 > 10.33 on bar 3 -> cross above -> buy bar 4's open
#   bar 4: fast 10 == slow 10 -> no cross
#   bar 5: tie on bar 4, then 9 < 9.67 -> cross below -> sell bar 6's open
#   bar 7: tie on bar 6 (9 == 9), then 10.5 > 10 -> cross above -> buy bar 8's open
#   bar 8 is the last bar: close the position at its close, stamped bar 8 + 1 minute.
HAND = [
    # open, high, low, close
    (10.0, 10.0, 10.0, 10.0),
    (10.0, 10.0, 10.0, 10.0),
    (10.0, 10.0, 10.0, 10.0),
    (11.0, 11.0, 11.0, 11.0),
    (10.8, 11.5, 8.8, 9.0),  # entry at 10.8
    (9.2, 9.6, 8.5, 9.0),
    (9.1, 13.0, 7.0, 9.0),  # exit at 9.1; this bar's high/low come after the exit
    (9.0, 12.0, 9.0, 12.0),
    (11.9, 12.5, 11.8, 12.0),  # entry at 11.9, closed at 12.0
]


def hand_bars(n: int = len(HAND)) -> list[tuple]:
    return [(minute(i), o, h, lo, c, 1000.0) for i, (o, h, lo, c) in enumerate(HAND[:n])]


def test_sma_rules_on_hand_made_bars() -> None:
    trades = run_session(hand_bars(), sma_crossover(2, 3), "AAPL")
    assert [(t.entry_date, t.entry_price, t.exit_date, t.exit_price, t.exit_reason) for t in trades] == [
        (minute(4), 10.8, minute(6), 9.1, "signal"),
        (minute(8), 11.9, minute(9), 12.0, "session_close"),
    ]
    first, second = trades
    assert first.max_profit_pct == (11.5 / 10.8 - 1) * 100  # bar 4's high
    assert first.max_drawdown_pct == (8.5 / 10.8 - 1) * 100  # bar 5's low; not bar 6's 7.0
    assert first.realized_pnl == (9.1 - 10.8) * 100 and first.quantity == 100
    assert first.realized_pnl_pct == (9.1 / 10.8 - 1) * 100
    assert first.holding_period_hours == 2 / 60
    assert first.trade_id == "sma_crossover:AAPL:2024-03-15T13:34:00+00:00"
    assert second.max_profit_pct == (12.5 / 11.9 - 1) * 100
    assert second.max_drawdown_pct == (11.8 / 11.9 - 1) * 100
    assert second.holding_period_hours == 1 / 60
    assert (first.signal_strength, first.signal_confidence) == signal_quality(10.5, 31 / 3)
    assert all(t.strategy_name == "sma_crossover" and t.broker_account == "backtest" for t in trades)


def test_signal_on_the_last_bar_is_ignored() -> None:
    trades = run_session(hand_bars(8), sma_crossover(2, 3), "AAPL")  # bar 7's cross above is last
    assert [t.exit_reason for t in trades] == ["signal"]


def test_exit_signal_on_the_last_bar_leaves_a_session_close() -> None:
    trades = run_session(hand_bars(6), sma_crossover(2, 3), "AAPL")  # bar 5's cross below is last
    assert [(t.exit_date, t.exit_price, t.exit_reason) for t in trades] == [(minute(6), 9.0, "session_close")]
    assert trades[0].max_drawdown_pct == (8.5 / 10.8 - 1) * 100


def test_entry_signal_while_long_is_ignored() -> None:
    # closes 10 10 10 11 11 11 12 12: cross above on bar 3, tie on bar 5, cross above again on bar 6
    closes = [10, 10, 10, 11, 11, 11, 12, 12]
    bars = [(minute(i), float(c), float(c), float(c), float(c), 1.0) for i, c in enumerate(closes)]
    indicator = SmaCrossIndicator(2, 3)
    crosses = [indicator.update(RawTick.trusted("A", t, o, h, lo, c, v)) for t, o, h, lo, c, v in bars]
    assert crosses == [0, 0, 0, 1, 0, 0, 1, 0]
    trades = run_session(bars, sma_crossover(2, 3), "A")
    assert [(t.entry_date, t.exit_reason) for t in trades] == [(minute(4), "session_close")]


def test_no_cross_before_slow_plus_one_closes() -> None:
    indicator = SmaCrossIndicator(2, 3)
    # bar 2 is the first with both SMAs; a "cross" there has no previous bar to compare with
    results = [indicator.update(tick(i, c)) for i, c in enumerate([9.0, 9.0, 12.0, 12.0])]
    assert results == [0, 0, 0, 0]
    assert indicator.update(indicator._tick) == 0  # idempotent for the same tick  # type: ignore[arg-type]


def test_sma_parameters_are_validated() -> None:
    for fast, slow in ((30, 10), (10, 10), (0, 5)):
        with pytest.raises(ValueError):
            sma_crossover(fast, slow)


# --- sessions -----------------------------------------------------------------------------------


def test_run_session_rejects_out_of_order_bars_and_other_symbols() -> None:
    bars = hand_bars()
    with pytest.raises(ValueError, match="increasing"):
        run_session([bars[1], bars[0]], None, "AAPL")
    with pytest.raises(ValueError, match="MSFT"):
        run_session([tick(0, symbol="MSFT")], None, "AAPL")
    with pytest.raises(ValidationError):
        run_session([(minute(0), 10.0, 9.0, 11.0, 10.0, 0.0)], None, "AAPL")  # high < low
    assert run_session([], None, "AAPL") == []


def test_run_session_uses_its_own_cache_not_the_singleton() -> None:
    seen: list = []

    def build(cache):
        wiring = dict(sma_crossover().build(cache).wiring)
        wiring[TICK_FLOW_START] = [*wiring[TICK_FLOW_START], lambda t: seen.append(cache) or CONTINUE]
        return wiring, None

    run_session(hand_bars(3), Strategy("probe", build), "AAPL")
    assert seen and all(c is seen[0] for c in seen) and seen[0] is not strategy_cache
    assert not strategy_cache.is_active  # type: ignore[attr-defined]


def test_no_indicator_state_carries_into_the_next_session() -> None:
    strategy = sma_crossover()
    day1 = random_walk_day(1, T0)
    day2 = random_walk_day(2, T0 + timedelta(days=1))
    alone = run_session(day2, strategy, "X")
    run_session(day1, strategy, "X")
    assert run_session(day2, strategy, "X") == alone
    # and the first bars of a session never signal, whatever came before
    assert all(t.entry_date >= day2[31][0] for t in alone)


def test_parallel_sessions_in_threads_equal_sequential() -> None:
    days = [random_walk_day(seed, T0 + timedelta(days=seed)) for seed in range(12)]
    sequential = [run_session(d, None, "X", validate=False) for d in days]
    barrier = threading.Barrier(4)

    def replay(d):
        barrier.wait(timeout=5)  # four sessions really run at the same time
        return run_session(d, None, "X", validate=False)

    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(replay, days[:4]))
        parallel += pool.map(lambda d: run_session(d, None, "X"), days[4:])  # validated ticks
    assert parallel == sequential
    assert sum(map(len, sequential)) > 12


def test_stop_envelope_halts_a_tick_flow() -> None:
    """A user guard wired first on TICK_FLOW_START can veto whole ticks (here: all after 14:00)."""

    def build(cache):
        wiring, hook = sma_crossover().build(cache)
        guard = lambda t: STOP if t.timestamp.hour >= 14 else CONTINUE  # noqa: E731
        return {**wiring, TICK_FLOW_START: [guard, *wiring[TICK_FLOW_START]]}, hook

    bars = load_bars_csv(GOLDEN)
    trades = run_session(bars, Strategy("guarded", build), "SPY")
    assert trades == []  # the day's first cross above fills at 14:05, after the guard closed the flow
    assert run_session(bars, None, "SPY")[0].entry_date == datetime(2024, 3, 15, 14, 5, tzinfo=UTC)


def test_flow_dtos_land_in_the_tick_cache() -> None:
    """On the bars where something happens, the cache holds the flow's DTOs under their keys."""
    snapshots: list[tuple] = []

    def build(cache):
        wiring, hook = sma_crossover(2, 3).build(cache)

        def look(_):
            snapshots.append((
                cache.get_run_anchor().timestamp,
                [s.signal_type for s in cache.get_dtos(SIGNALS_KEY, Signal)],
                [d.action.value for d in cache.get_dtos(DIRECTIVES_KEY, StrategyDirective)],
                [f.side.value for f in cache.get_dtos(FILLS_KEY, Fill)],
            ))
            return CONTINUE

        return {**wiring, STRATEGY_DIRECTIVE_READY: [*wiring[STRATEGY_DIRECTIVE_READY], look],
                "ORDER_FILLED": [look]}, hook

    run_session(hand_bars(), Strategy("look", build), "AAPL")
    assert snapshots == [
        (minute(3), ["ENTRY_LONG"], ["ENTER_LONG"], []),
        (minute(4), [], [], ["BUY"]),
        (minute(5), [], ["EXIT_LONG"], []),
        (minute(7), ["ENTRY_LONG"], ["ENTER_LONG"], []),
        (minute(8), [], [], ["BUY"]),
    ]


# --- point in time ------------------------------------------------------------------------------


def reachable(*roots) -> list:
    """Everything reachable from ``roots`` through containers, models and plain objects."""
    seen: set[int] = set()
    out: list = []
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, type(re), str, bytes, int, float, bool)) or obj is None:
            continue
        seen.add(id(obj))
        out.append(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            stack.extend(obj)
        elif callable(obj) and hasattr(obj, "__self__"):
            stack.append(obj.__self__)
        elif callable(obj) and hasattr(obj, "__closure__"):
            stack.extend(c.cell_contents for c in (obj.__closure__ or ()))
        if isinstance(obj, BaseModel):
            stack.append(obj.__dict__)
        elif hasattr(obj, "__dict__") and not callable(obj):
            stack.append(vars(obj))
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                stack.append(getattr(obj, slot))
    return out


def test_a_worker_cannot_obtain_a_future_bar() -> None:
    """A spy wired into the default strategy sees the whole world a worker can reach; at every
    call nothing in it is later than the run anchor, and the engine has not even pulled the
    next bar from the iterator yet."""
    bars = load_bars_csv(GOLDEN)
    pulled = 0

    def source():
        nonlocal pulled
        for bar in bars:
            pulled += 1
            yield bar

    class Spy:
        def __init__(self, cache, world):
            self.cache, self.world, self.runs, self.checked = cache, world, [], 0

        def process(self, payload):
            anchor = self.cache.get_run_anchor()
            if not self.runs or self.runs[-1] != anchor.timestamp:
                self.runs.append(anchor.timestamp)
            if isinstance(payload, RawTick):
                assert payload.timestamp == anchor.timestamp
            assert pulled == len(self.runs)  # bar k+1 is still unread while bar k flows
            for obj in reachable(payload, self.cache, *self.world):
                if isinstance(obj, datetime):
                    assert obj <= anchor.timestamp, (obj, anchor.timestamp)
                assert not isinstance(obj, list) or len(obj) <= 30  # no day-sized history anywhere
            self.checked += 1
            return CONTINUE

    spies: list[Spy] = []

    def build(cache):
        wiring, hook = sma_crossover().build(cache)
        world = [h for handlers in wiring.values() for h in handlers]  # every worker of the flow
        spy = Spy(cache, world)
        spies.append(spy)
        return {
            TICK_FLOW_START: [*wiring[TICK_FLOW_START], spy],  # last: after the workers wrote the cache
            OPPORTUNITY_DETECTED: [*wiring[OPPORTUNITY_DETECTED], spy],
            THREAT_DETECTED: [*wiring[THREAT_DETECTED], spy],
            STRATEGY_DIRECTIVE_READY: [*wiring[STRATEGY_DIRECTIVE_READY], spy],
            TRADE_CLOSED: [spy],
        }, hook

    trades = run_session(source(), Strategy("spy", build), "SPY")
    (spy,) = spies
    assert spy.runs == [b[0] for b in bars] and spy.checked > 390 and len(trades) == 9


def test_engine_objects_hold_no_handle_to_the_bars() -> None:
    """Neither the manager nor the bus keeps a reference to the session's bar list."""
    bars = hand_bars()
    cache = StrategyCache()
    wiring, _ = sma_crossover(2, 3).build(cache)
    manager = TickCacheManager(EventBus(wiring), cache)
    for t, o, h, lo, c, v in bars:
        manager.on_raw_tick(RawTick.trusted("AAPL", t, o, h, lo, c, v))
    world = reachable(manager, manager.bus, *[h for hs in manager.bus._subscribers.values() for h in hs])
    assert not any(obj is bars for obj in world)
    # the walk does reach worker state: exactly one tick (the indicator's last) and the open position
    assert sum(isinstance(obj, RawTick) for obj in world) == 1
    assert any(type(obj).__name__ == "_OpenPosition" for obj in world)


# --- strategies ---------------------------------------------------------------------------------


def test_strategy_registry() -> None:
    assert get_strategy() is STRATEGIES["sma_crossover"] is get_strategy("sma_crossover")
    custom = sma_crossover(5, 20, name="sma_5_20")
    assert get_strategy(custom) is custom
    with pytest.raises(UnknownStrategyError, match="sma_crossover") as info:
        get_strategy("nope")
    assert isinstance(info.value, KeyError) and "register_strategy" in str(info.value)
    with pytest.raises(ValueError, match="already registered"):
        register_strategy(sma_crossover())
    with pytest.raises(TypeError):
        get_strategy(42)  # type: ignore[arg-type]
    for bad_name in ("has:colon", "", "trailing\n"):
        with pytest.raises(ValueError):
            Strategy(bad_name, lambda cache: ({}, None))


def test_strategy_build_result_is_checked() -> None:
    with pytest.raises(WiringError):
        not_a_pair = Strategy("bad", lambda cache: {"TICK_FLOW_START": []})  # type: ignore
        run_session(hand_bars(), not_a_pair, "AAPL")
    with pytest.raises(WiringError):
        run_session(hand_bars(), Strategy("bad", lambda cache: ({}, 42)), "AAPL")  # type: ignore
    wiring = sma_crossover().build(StrategyCache())
    assert isinstance(wiring, StrategyWiring) and callable(wiring.on_session_end)


# The README's custom-strategy example, verbatim (README.md "Writing your own strategy").
README_EXAMPLE = '''
from cachelib.tick_flow import (CONTINUE, OPPORTUNITY_DETECTED, THREAT_DETECTED, DispositionEnvelope,
                                Risk, Signal, Strategy, register_strategy, run_session, standard_wiring)


class ThreeHigherCloses:
    """Opportunity: three higher closes in a row."""

    def __init__(self, cache):
        self.cache, self.closes = cache, []

    def process(self, tick):
        self.closes = (self.closes + [tick.close])[-4:]  # keep only the past it needs
        if len(self.closes) < 4 or not all(a < b for a, b in zip(self.closes, self.closes[1:])):
            return CONTINUE
        signal = Signal(timestamp=tick.timestamp, symbol=tick.symbol, strength="strong", confidence=1.0)
        self.cache.set_dto("signals", signal)
        return DispositionEnvelope.publish(OPPORTUNITY_DETECTED, signal)


class DownBar:
    """Threat: a bar that closes below its open."""

    def __init__(self, cache):
        self.cache = cache

    def process(self, tick):
        if tick.close >= tick.open:
            return CONTINUE
        risk = Risk(timestamp=tick.timestamp, symbol=tick.symbol)
        self.cache.set_dto("threat_signals", risk)
        return DispositionEnvelope.publish(THREAT_DETECTED, risk)


register_strategy(Strategy("three_up", lambda cache: standard_wiring(
    cache, "three_up", opportunity=[ThreeHigherCloses(cache)], threat=[DownBar(cache)], quantity=50)))
'''


def _readme_block() -> str | None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    if not readme.exists():
        return None
    # The strategy part of the block (the README then runs it on a demo session, which
    # tests/test_readme.py executes); here it runs on hand-written bars with known trades.
    pattern = r"```python\n(from cachelib\.tick_flow import \(CONTINUE.*?quantity=50\)\)\)\n)"
    match = re.search(pattern, readme.read_text(), re.S)
    return match.group(1) if match else None


def test_readme_custom_strategy_example() -> None:
    block = _readme_block()
    assert block is not None, "README.md lost its custom-strategy example"
    assert block.strip() == README_EXAMPLE.strip(), "README example and test copy differ"
    # closes 10 11 12 13 -> signal on bar 3 -> buy bar 4's open;
    # bar 6 closes below its open -> sell at bar 7's open
    rows = [(10, 10), (10, 11), (11, 12), (12, 13), (13.1, 13.5), (13.5, 14), (14, 13.2), (13.3, 13.6),
            (13.6, 13.9)]
    bars = [(minute(i), o, max(o, c), min(o, c), c, 500.0) for i, (o, c) in enumerate(rows)]
    namespace: dict = {"bars": bars}
    try:
        exec(compile(README_EXAMPLE, "README example", "exec"), namespace)
        trades = namespace["run_session"](bars, "three_up", "AAPL")
        got = [(t.entry_date, t.entry_price, t.exit_date, t.exit_price, t.exit_reason, t.quantity)
               for t in trades]
        assert got == [(minute(4), 13.1, minute(7), 13.3, "signal", 50.0)]
        assert trades[0].trade_id == "three_up:AAPL:2024-03-15T13:34:00+00:00"
        assert get_strategy("three_up").name == "three_up"
    finally:
        STRATEGIES.pop("three_up", None)


def test_engine_built_dtos_equal_their_validated_copies() -> None:
    """The flow builds its DTOs without a validation pass: each must be exactly what the
    validating constructor would have produced from the same values."""
    built: list[BaseModel] = []

    def build(cache):
        wiring, hook = sma_crossover().build(cache)

        def keep(payload):
            built.append(payload)
            return CONTINUE

        wired = {name: [*handlers, keep] for name, handlers in wiring.items()}
        wired[TICK_FLOW_START] = list(wiring[TICK_FLOW_START])  # not the ticks themselves
        return {**wired, "ORDER_FILLED": [keep], TRADE_CLOSED: [keep]}, hook

    trades = run_session(load_bars_csv(GOLDEN), Strategy("keep", build), "SPY", validate=False)
    built.extend(trades)
    kinds = {type(dto).__name__ for dto in built}
    assert kinds == {"Signal", "Risk", "StrategyDirective", "Fill", "Trade"}
    for dto in built:
        copy = type(dto).model_validate(dto.model_dump())
        assert copy == dto and copy.model_dump() == dto.model_dump()
        assert copy.model_fields_set == dto.model_fields_set
