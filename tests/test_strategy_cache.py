"""StrategyCache: the document's 20 scenarios, then the phase-4 RunAnchor fields."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ValidationError

from cachelib.strategy_cache import (
    CacheAlreadyConfiguredError,
    CacheNotConfiguredError,
    InvalidDTOTypeError,
    IStrategyCache,
    RunAnchor,
    StrategyCache,
    StrategyCacheType,
    strategy_cache,
)

NY = ZoneInfo("America/New_York")
T0 = datetime(2024, 3, 15, 13, 30, tzinfo=timezone.utc)


class Signal(BaseModel):
    signal_type: str


class Risk(BaseModel):
    risk_type: str


@pytest.fixture
def cache() -> StrategyCache:
    return StrategyCache()


@pytest.fixture
def active(cache: StrategyCache) -> StrategyCache:
    cache.start_run({}, T0)
    return cache


# --- 1. initialization (2) ---------------------------------------------------------------------


def test_init_cache_starts_unconfigured(cache: StrategyCache) -> None:
    assert not cache.is_active
    with pytest.raises(CacheNotConfiguredError):
        cache.get_run_anchor()


def test_init_module_singleton_implements_protocol() -> None:
    assert isinstance(strategy_cache, StrategyCache)
    assert isinstance(strategy_cache, IStrategyCache)
    assert isinstance(StrategyCache(), IStrategyCache)


# --- 2. start_run (3) --------------------------------------------------------------------------


def test_start_run_naive_timestamp_is_taken_as_utc(cache: StrategyCache) -> None:
    cache.start_run({}, datetime(2024, 3, 15, 13, 30))
    assert cache.get_run_anchor().timestamp == T0
    assert cache.get_run_anchor().timestamp.tzinfo is timezone.utc


def test_start_run_aware_timestamp_is_converted_to_utc(cache: StrategyCache) -> None:
    cache.start_run({}, datetime(2024, 3, 15, 9, 30, tzinfo=NY))  # EDT: UTC-4
    anchor = cache.get_run_anchor()
    assert anchor.timestamp == T0
    assert anchor.timestamp.utcoffset() == timedelta(0)
    assert (anchor.timestamp.hour, anchor.timestamp.minute) == (13, 30)


def test_start_run_rejects_when_already_configured(active: StrategyCache) -> None:
    with pytest.raises(CacheAlreadyConfiguredError, match="clear"):
        active.start_run({}, T0 + timedelta(minutes=1))
    with pytest.raises(ValueError):  # the document's contract: a ValueError
        active.start_run({}, T0)
    assert active.get_run_anchor().timestamp == T0  # the active run is untouched


# --- 3. get_run_anchor (3) ---------------------------------------------------------------------


def test_get_run_anchor_raises_when_not_configured(cache: StrategyCache) -> None:
    with pytest.raises(CacheNotConfiguredError, match="start_run"):
        cache.get_run_anchor()


def test_get_run_anchor_returns_run_timestamp(active: StrategyCache) -> None:
    anchor = active.get_run_anchor()
    assert isinstance(anchor, RunAnchor)
    assert anchor.timestamp == T0
    assert active.get_run_anchor() is anchor  # the same frozen anchor for the whole run


def test_get_run_anchor_is_frozen(active: StrategyCache) -> None:
    anchor = active.get_run_anchor()
    with pytest.raises(ValidationError):
        anchor.timestamp = T0 + timedelta(days=1)  # type: ignore[misc]
    assert active.get_run_anchor().timestamp == T0


# --- 4. set_dto (3) ----------------------------------------------------------------------------


def test_set_dto_raises_when_not_configured(cache: StrategyCache) -> None:
    with pytest.raises(CacheNotConfiguredError):
        cache.set_dto("signals", Signal(signal_type="ENTRY_LONG"))


def test_set_dto_rejects_non_basemodel(active: StrategyCache) -> None:
    for bad in ("not_a_dto", {"signal_type": "ENTRY_LONG"}, 42, None):
        with pytest.raises(TypeError, match="BaseModel"):
            active.set_dto("signals", bad)  # type: ignore[arg-type]
    assert not active.has_dto("signals")


def test_set_dto_appends_to_the_tick_cache(cache: StrategyCache) -> None:
    tick_cache: StrategyCacheType = {}
    cache.start_run(tick_cache, T0)
    first, second = Signal(signal_type="A"), Signal(signal_type="B")
    cache.set_dto("signals", first)
    cache.set_dto("signals", second)
    assert tick_cache == {"signals": [first, second]}  # stored in the manager's dict, in order


# --- 5. get_dtos (3) ---------------------------------------------------------------------------


def test_get_dtos_raises_when_not_configured(cache: StrategyCache) -> None:
    with pytest.raises(CacheNotConfiguredError):
        cache.get_dtos("signals", Signal)


def test_get_dtos_returns_stored_dtos_and_empty_for_missing_key(active: StrategyCache) -> None:
    signal = Signal(signal_type="ENTRY_LONG")
    active.set_dto("signals", signal)
    assert active.get_dtos("signals", Signal) == [signal]
    assert active.get_dtos("signals", BaseModel) == [signal]  # a base class matches too
    assert active.get_dtos("threat_signals", Risk) == []


def test_get_dtos_raises_on_type_mismatch(active: StrategyCache) -> None:
    active.set_dto("signals", Signal(signal_type="ENTRY_LONG"))
    with pytest.raises(InvalidDTOTypeError, match="Expected Risk, got Signal for key 'signals'"):
        active.get_dtos("signals", Risk)
    with pytest.raises(TypeError):  # InvalidDTOTypeError is a TypeError
        active.get_dtos("signals", Risk)


# --- 6. has_dto (3) ----------------------------------------------------------------------------


def test_has_dto_raises_when_not_configured(cache: StrategyCache) -> None:
    with pytest.raises(CacheNotConfiguredError):
        cache.has_dto("signals")


def test_has_dto_false_for_missing_and_empty_keys(cache: StrategyCache) -> None:
    cache.start_run({"empty": []}, T0)
    assert cache.has_dto("missing") is False
    assert cache.has_dto("empty") is False


def test_has_dto_true_after_set_dto(active: StrategyCache) -> None:
    active.set_dto("signals", Signal(signal_type="ENTRY_LONG"))
    assert active.has_dto("signals") is True


# --- 7. clear (2) ------------------------------------------------------------------------------


def test_clear_resets_to_initial_state(active: StrategyCache) -> None:
    active.set_dto("signals", Signal(signal_type="ENTRY_LONG"))
    active.clear()
    assert not active.is_active
    for call in (
        active.get_run_anchor,
        lambda: active.set_dto("signals", Signal(signal_type="X")),
        lambda: active.get_dtos("signals", Signal),
        lambda: active.has_dto("signals"),
    ):
        with pytest.raises(CacheNotConfiguredError):
            call()
    active.start_run({}, T0 + timedelta(minutes=1))  # can start again
    assert not active.has_dto("signals")  # nothing from the previous run


def test_clear_is_idempotent(cache: StrategyCache) -> None:
    cache.clear()  # before any run
    cache.start_run({}, T0)
    cache.clear()
    cache.clear()
    assert not cache.is_active


# --- 8. integration (1) ------------------------------------------------------------------------


def test_full_lifecycle_start_store_retrieve_clear(cache: StrategyCache) -> None:
    for minute in range(3):
        tick_cache: StrategyCacheType = {}
        timestamp = T0 + timedelta(minutes=minute)
        cache.start_run(tick_cache, timestamp)
        assert cache.get_run_anchor().timestamp == timestamp
        assert not cache.has_dto("signals")
        cache.set_dto("signals", Signal(signal_type=f"S{minute}"))
        cache.set_dto("threat_signals", Risk(risk_type=f"R{minute}"))
        assert [s.signal_type for s in cache.get_dtos("signals", Signal)] == [f"S{minute}"]
        assert [r.risk_type for r in cache.get_dtos("threat_signals", Risk)] == [f"R{minute}"]
        cache.clear()
        assert set(tick_cache) == {"signals", "threat_signals"}  # the manager's dict kept its data
    assert not cache.is_active


# --- phase 4: RunAnchor fields -----------------------------------------------------------------


def test_run_anchor_defaults() -> None:
    anchor = RunAnchor(timestamp=T0)
    assert anchor.strategy_id == "default"
    assert anchor.backtest_mode is False
    assert len(anchor.run_id) == 32 and int(anchor.run_id, 16) >= 0  # a uuid4 hex
    assert RunAnchor(timestamp=T0).run_id != anchor.run_id  # fresh per anchor


def test_run_anchor_validates_and_normalises() -> None:
    assert RunAnchor(timestamp=datetime(2024, 3, 15, 9, 30, tzinfo=NY)).timestamp == T0
    assert RunAnchor(timestamp=datetime(2024, 3, 15, 13, 30)).timestamp.tzinfo is timezone.utc
    with pytest.raises(ValidationError):
        RunAnchor(timestamp="not a time", strategy_id=3)  # type: ignore[arg-type]


def test_run_anchor_all_fields_frozen() -> None:
    anchor = RunAnchor(timestamp=T0, run_id="r1", strategy_id="s", backtest_mode=True)
    for name, value in (("run_id", "r2"), ("strategy_id", "t"), ("backtest_mode", False)):
        with pytest.raises(ValidationError):
            setattr(anchor, name, value)
    assert hash(anchor) == hash(RunAnchor(timestamp=T0, run_id="r1", strategy_id="s", backtest_mode=True))


def test_start_run_passes_phase4_fields_through(cache: StrategyCache) -> None:
    cache.start_run({}, T0, run_id="replay-42", strategy_id="sma_crossover", backtest_mode=True)
    anchor = cache.get_run_anchor()
    assert (anchor.run_id, anchor.strategy_id, anchor.backtest_mode) == ("replay-42", "sma_crossover", True)
    expected = RunAnchor(timestamp=T0, run_id="replay-42", strategy_id="sma_crossover", backtest_mode=True)
    assert anchor == expected
    assert anchor.model_dump()["backtest_mode"] is True


def test_start_run_defaults_for_phase4_fields(cache: StrategyCache) -> None:
    cache.start_run({}, T0)
    first = cache.get_run_anchor()
    assert (first.strategy_id, first.backtest_mode) == ("default", False)
    cache.clear()
    cache.start_run({}, T0)
    assert len(first.run_id) == 32 and cache.get_run_anchor().run_id != first.run_id


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (({}, "2024-03-15T13:30:00Z"), {}),
        (({}, 1710509400), {}),
        (({}, T0), {"run_id": 7}),
        (({}, T0), {"strategy_id": None}),
        (({}, T0), {"backtest_mode": "yes"}),
        (([], T0), {}),
    ],
)
def test_start_run_type_errors_leave_cache_unconfigured(
    cache: StrategyCache, args: tuple, kwargs: dict
) -> None:
    with pytest.raises(TypeError):
        cache.start_run(*args, **kwargs)
    assert not cache.is_active
