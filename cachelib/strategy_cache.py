"""Point-in-time DTO storage for one tick flow: ``IStrategyCache`` and ``StrategyCache``.

A *run* is one pass of the tick flow over a single tick. ``TickCacheManager`` opens it with
:meth:`StrategyCache.start_run` (handing over a fresh, empty tick-cache dictionary and the
tick's timestamp), the workers store and read DTOs through ``set_dto`` / ``get_dtos`` /
``has_dto``, and :meth:`StrategyCache.clear` closes it. Nothing survives ``clear()``, so no
state from one tick leaks into the next except what a worker deliberately keeps itself.

State machine::

    Initial --start_run()--> Active --clear()--> Initial
                               |
                               +-- get_run_anchor(), set_dto(), get_dtos(), has_dto()

Every method but ``start_run`` and ``clear`` raises :class:`CacheNotConfiguredError` in the
*Initial* state.

The module singleton :data:`strategy_cache` is a convenient default for single-threaded use.
Replays create their own :class:`StrategyCache` per session and inject it into the workers
(constructor injection), so sessions can run in parallel threads without sharing state. A
``StrategyCache`` instance itself is not thread-safe: one instance serves one flow at a time.

Example::

    >>> from datetime import datetime, timezone
    >>> from pydantic import BaseModel
    >>> class Note(BaseModel):
    ...     text: str
    >>> cache = StrategyCache()
    >>> cache.start_run({}, datetime(2024, 3, 15, 13, 30))
    >>> cache.get_run_anchor().timestamp.isoformat()
    '2024-03-15T13:30:00+00:00'
    >>> cache.set_dto("notes", Note(text="hello"))
    >>> [n.text for n in cache.get_dtos("notes", Note)]
    ['hello']
    >>> cache.clear()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cachelib.clock import as_utc

__all__ = [
    "CacheAlreadyConfiguredError",
    "CacheNotConfiguredError",
    "IStrategyCache",
    "InvalidDTOTypeError",
    "RunAnchor",
    "StrategyCache",
    "StrategyCacheType",
    "strategy_cache",
]

T = TypeVar("T", bound=BaseModel)

#: The tick cache: DTO key -> the DTOs stored under that key during the current run, in order.
StrategyCacheType: TypeAlias = dict[str, list[BaseModel]]

_UTC = timezone.utc
DEFAULT_STRATEGY_ID = "default"
#: A run's facts besides its time: (run_id or None for a fresh one, strategy_id, backtest_mode).
RunFacts: TypeAlias = tuple[str | None, str, bool]


class CacheNotConfiguredError(RuntimeError):
    """A cache operation was attempted before ``start_run()`` (or after ``clear()``)."""


class InvalidDTOTypeError(TypeError):
    """A stored DTO is not an instance of the type the caller asked for."""


class CacheAlreadyConfiguredError(ValueError):
    """``start_run()`` was called while a run is active; call ``clear()`` first."""


def _new_run_id() -> str:
    return uuid4().hex


class RunAnchor(BaseModel):
    """The frozen facts of the current run: *when* it is, and which run/strategy it belongs to.

    ``timestamp`` is the run's point in time (aware, UTC): in a tick flow it is the timestamp of
    the tick being processed, and nothing a worker can see may be later than it.

    Phase-4 fields and their defaults:

    * ``run_id``: identifies the replay or live run the tick belongs to (one per session
      replay in :mod:`cachelib.tick_flow`). Default: a fresh ``uuid4().hex``.
    * ``strategy_id``: the strategy being run. Default ``"default"``.
    * ``backtest_mode``: ``True`` when replaying history, ``False`` (the default) when live.
    """

    model_config = ConfigDict(frozen=True)

    timestamp: datetime
    run_id: str = Field(default_factory=_new_run_id)
    strategy_id: str = DEFAULT_STRATEGY_ID
    backtest_mode: bool = False

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


_ANCHOR_FIELDS = frozenset(RunAnchor.model_fields)
_new = object.__new__
_setattr = object.__setattr__


def _slot_setter(name: str) -> Callable[[BaseModel, Any], None]:
    """The setter of one of BaseModel's slots (a touch faster than object.__setattr__)."""
    descriptor = BaseModel.__dict__.get(name)
    if descriptor is not None and hasattr(descriptor, "__set__"):
        return descriptor.__set__
    return lambda obj, value: _setattr(obj, name, value)  # pragma: no cover - other pydantic layouts


_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")


def check_run_facts(run_id: object, strategy_id: object, backtest_mode: object) -> None:
    """``TypeError`` unless ``run_id`` is a str or None, ``strategy_id`` a str and
    ``backtest_mode`` a bool: the checks of :meth:`StrategyCache.start_run`."""
    if run_id is not None and type(run_id) is not str:
        raise TypeError(f"run_id must be a str, got {type(run_id).__name__}")
    if type(strategy_id) is not str:
        raise TypeError(f"strategy_id must be a str, got {type(strategy_id).__name__}")
    if backtest_mode is not True and backtest_mode is not False:
        raise TypeError(f"backtest_mode must be a bool, got {type(backtest_mode).__name__}")


def trusted_model(cls: type[T], values: dict[str, Any], fields: Iterable[str]) -> T:
    """A ``cls`` instance holding ``values`` (every field of ``cls``, in field order, already
    checked), without a validation pass: the object ``model_construct()`` builds, at a third
    of its cost. ``fields`` is the model's field names. For hot paths only (ticks, anchors,
    the engine's own DTOs); anything else goes through the validating constructor."""
    obj = _new(cls)
    _setattr(obj, "__dict__", values)
    _set_fields_set(obj, set(fields))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


def _checked_anchor(timestamp: datetime, run_id: str | None, strategy_id: str, backtest_mode: bool) -> RunAnchor:
    """The run's anchor from values ``start_run`` already checked."""
    values = {
        "timestamp": timestamp,
        "run_id": uuid4().hex if run_id is None else run_id,
        "strategy_id": strategy_id,
        "backtest_mode": backtest_mode,
    }
    return trusted_model(RunAnchor, values, _ANCHOR_FIELDS)


@runtime_checkable
class IStrategyCache(Protocol):
    """What workers may do with the run's cache. Inject it; do not reach for a global."""

    def start_run(
        self,
        tick_cache: StrategyCacheType,
        timestamp: datetime,
        *,
        run_id: str | None = None,
        strategy_id: str = DEFAULT_STRATEGY_ID,
        backtest_mode: bool = False,
    ) -> None:
        """Open a run on ``tick_cache`` anchored at ``timestamp`` (UTC)."""
        ...

    def get_run_anchor(self) -> RunAnchor:
        """The current run's frozen anchor."""
        ...

    def set_dto(self, key: str, dto: BaseModel) -> None:
        """Append ``dto`` to the list stored under ``key``."""
        ...

    def get_dtos(self, key: str, dto_type: type[T]) -> list[T]:
        """The DTOs stored under ``key`` (empty if none), all checked to be ``dto_type``."""
        ...

    def has_dto(self, key: str) -> bool:
        """Whether ``key`` holds at least one DTO."""
        ...

    def clear(self) -> None:
        """Close the run and return to the initial state."""
        ...


class StrategyCache:
    """The in-process implementation of :class:`IStrategyCache`.

    Holds the active tick cache (owned by ``TickCacheManager``) and the facts of the current
    run; ``None`` between runs. The frozen :class:`RunAnchor` is built from those facts on the
    first :meth:`get_run_anchor` of a run and then kept: most ticks of a replay never ask for
    it, and building it was a fifth of the cost of a tick's flow.
    """

    __slots__ = ("_tick_cache", "_current_anchor", "_run")

    def __init__(self) -> None:
        self._tick_cache: StrategyCacheType | None = None
        self._current_anchor: RunAnchor | None = None
        # (timestamp, (run_id or None for a fresh one, strategy_id, backtest_mode)), checked
        self._run: tuple[datetime, RunFacts] | None = None

    def __repr__(self) -> str:
        state = "active" if self._tick_cache is not None else "idle"
        return f"<StrategyCache {state}>"

    @property
    def is_active(self) -> bool:
        """``True`` between ``start_run()`` and ``clear()``."""
        return self._tick_cache is not None

    def start_run(
        self,
        tick_cache: StrategyCacheType,
        timestamp: datetime,
        *,
        run_id: str | None = None,
        strategy_id: str = DEFAULT_STRATEGY_ID,
        backtest_mode: bool = False,
    ) -> None:
        """Configure the cache for a new run.

        ``timestamp`` may be naive (taken as UTC) or aware (converted to UTC). ``run_id``
        defaults to a fresh ``uuid4().hex``.

        Raises:
            CacheAlreadyConfiguredError: a run is active (a ``ValueError``); call ``clear()`` first.
            TypeError: ``tick_cache`` is not a dict or ``timestamp`` is not a datetime.

        >>> cache = StrategyCache()
        >>> cache.start_run({}, datetime(2024, 3, 15, 9, 30), strategy_id="sma_crossover")
        >>> cache.get_run_anchor().strategy_id
        'sma_crossover'
        """
        if self._tick_cache is not None:
            raise CacheAlreadyConfiguredError("Cache already configured. Call clear() first.")
        if type(tick_cache) is not dict and not isinstance(tick_cache, dict):
            raise TypeError(f"tick_cache must be a dict, got {type(tick_cache).__name__}")
        if timestamp.__class__ is not datetime or timestamp.tzinfo is not _UTC:
            timestamp = as_utc(timestamp)
        check_run_facts(run_id, strategy_id, backtest_mode)
        # start_run runs once per tick: keep the checked facts, build the anchor on demand.
        self._run = (timestamp, (run_id, strategy_id, backtest_mode))
        self._tick_cache = tick_cache

    def _open_tick(self, timestamp: datetime, facts: RunFacts) -> None:
        """``start_run({}, timestamp, ...)`` for the engine's per-tick loop, whose run facts
        ``(run_id, strategy_id, backtest_mode)`` were checked once with
        :func:`check_run_facts` (same result, same errors)."""
        if self._tick_cache is not None:
            raise CacheAlreadyConfiguredError("Cache already configured. Call clear() first.")
        if timestamp.tzinfo is not _UTC:
            timestamp = as_utc(timestamp)
        self._run = (timestamp, facts)
        self._tick_cache = {}

    def get_run_anchor(self) -> RunAnchor:
        """The current run's frozen anchor.

        Raises:
            CacheNotConfiguredError: no run is active.
        """
        anchor = self._current_anchor
        if anchor is None:
            run = self._run
            if self._tick_cache is None or run is None:
                raise CacheNotConfiguredError(
                    "Cannot get RunAnchor - cache not configured. Call start_run() first."
                )
            anchor = self._current_anchor = _checked_anchor(run[0], *run[1])
        return anchor

    def set_dto(self, key: str, dto: BaseModel) -> None:
        """Append ``dto`` to the list under ``key`` in the current run.

        Raises:
            CacheNotConfiguredError: no run is active.
            TypeError: ``dto`` is not a pydantic ``BaseModel``.
        """
        tick_cache = self._tick_cache
        if tick_cache is None:
            raise CacheNotConfiguredError("Cannot set DTO - cache not configured. Call start_run() first.")
        if not isinstance(dto, BaseModel):
            raise TypeError(f"dto must be Pydantic BaseModel, got {type(dto).__name__}")
        dtos = tick_cache.get(key)
        if dtos is None:
            tick_cache[key] = [dto]
        else:
            dtos.append(dto)

    def get_dtos(self, key: str, dto_type: type[T]) -> list[T]:
        """The DTOs stored under ``key`` in insertion order (a new list; empty for a missing key).

        Raises:
            CacheNotConfiguredError: no run is active.
            InvalidDTOTypeError: a stored DTO is not an instance of ``dto_type``.
        """
        tick_cache = self._tick_cache
        if tick_cache is None:
            raise CacheNotConfiguredError("Cannot get DTOs - cache not configured. Call start_run() first.")
        dtos = tick_cache.get(key)
        if not dtos:
            return []
        for dto in dtos:
            if not isinstance(dto, dto_type):
                raise InvalidDTOTypeError(
                    f"Expected {dto_type.__name__}, got {type(dto).__name__} for key '{key}'"
                )
        # A copy, so that a caller appending to the result cannot bypass set_dto's type check.
        return list(dtos)  # type: ignore[arg-type]

    def has_dto(self, key: str) -> bool:
        """``True`` if ``key`` holds a non-empty list in the current run.

        Raises:
            CacheNotConfiguredError: no run is active.
        """
        tick_cache = self._tick_cache
        if tick_cache is None:
            raise CacheNotConfiguredError("Cannot check DTO - cache not configured. Call start_run() first.")
        return bool(tick_cache.get(key))

    def clear(self) -> None:
        """Reset to the initial state. Safe to call any number of times."""
        self._tick_cache = None
        self._current_anchor = None
        self._run = None


#: Module-level default instance for simple, single-threaded use.
strategy_cache: IStrategyCache = StrategyCache()
