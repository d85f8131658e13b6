"""Market-data sources: the protocol every source speaks, the Alpaca source, and ``get_source``.

A source answers five questions:

* :meth:`MarketDataSource.get_bars` – historical bars for many symbols at once, as a frame with a
  ``(symbol, timestamp)`` MultiIndex (timestamps tz-aware UTC, exactly as the vendor stamped them:
  the bar start for intraday bars, New York midnight in UTC for daily bars) and the columns
  :data:`cachelib.bars.BAR_COLUMNS`.
* :meth:`MarketDataSource.get_option_chain` – the *latest* snapshot of an option chain, with the
  columns :data:`cachelib.bars.OPTION_COLUMNS`.
* :meth:`MarketDataSource.get_latest_bar` / :meth:`MarketDataSource.get_latest_trade`.
* :meth:`MarketDataSource.get_corporate_actions` – splits, dividends and symbol changes, as
  :func:`cachelib.corporate_actions.actions_frame` rows.

Bars from ``get_bars`` are always **raw**: the cache stores them once and adjusts at read time.
A source's identity is ``name`` plus ``feed_name`` (Alpaca's feed; ``"demo"`` for the demo).

:class:`AlpacaSource` talks to Alpaca through the real alpaca-py SDK (``StockHistoricalDataClient``,
``OptionHistoricalDataClient``, ``CorporateActionsClient``, and ``TradingClient`` for the option
contracts that carry open interest): the SDK builds the requests and follows ``next_page_token``.
Every HTTP request goes through :meth:`AlpacaSource._send`, which owns the network policy:

* one client-side rate limit, counting every request (pages and retries);
* a total deadline per request (``request_deadline``), not only a per-read ``timeout``;
* **the one retry layer for HTTP faults**: 429, 5xx, timeouts, dropped connections and blown
  deadlines are retried here (``max_retries`` per request, ``Retry-After`` honoured but capped at
  ``max_retry_after``, at most ``max_retry_seconds`` of retrying per call). Nothing above the
  source (Prefect tasks included) retries a :class:`SourceError` again;
* a guard on the pager: a repeated ``next_page_token`` or more than ``max_pages`` pages in one
  call raise :class:`MalformedResponseError` instead of looping forever.

The reliance on alpaca-py's internals is confined to one adapter section ("alpaca-py adapter"),
pinned to :data:`ALPACA_SDK_VERSION`. API keys never appear in messages or logs: every
:class:`SourceError` and every log line of this module goes through :func:`redact`.
"""

from __future__ import annotations

import contextlib
import email.utils
import inspect
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from cachelib.bars import (
    BAR_COLUMNS,
    NY,
    OPTION_COLUMNS,
    is_date_only,
    normalize_symbol,
    normalize_symbols,
    parse_occ_symbol,
    parse_timeframe,
    to_date,
    to_utc_datetime,
)
from cachelib.clock import now_utc

__all__ = [
    "MarketDataSource",
    "AlpacaSource",
    "RateLimiter",
    "get_source",
    "SourceError",
    "AuthenticationError",
    "RateLimitError",
    "SourceUnavailableError",
    "MalformedResponseError",
    "UnsupportedTimeframe",
    "SUPPORTED_TIMEFRAMES",
    "KEY_ENV_VARS",
    "DATA_URL_ENV",
    "TRADING_URL_ENV",
    "OPTION_CHAIN_COLUMNS",
    "check_timeframe",
    "request_window",
    "empty_bars_frame",
    "empty_option_chain",
    "alpaca_keys_configured",
    "describe_source",
    "redact",
    "ALPACA_SDK_VERSION",
    "RETRYABLE_STATUS",
    "ENV_MAX_RETRIES",
    "ENV_BACKOFF_BASE",
    "ENV_RATE_LIMIT",
    "ENV_MAX_RETRY_SECONDS",
    "ENV_REQUEST_DEADLINE",
    "DEFAULT_RATE_LIMIT",
    "shared_rate_limiter",
    "source_options",
    "open_source",
]

logger = logging.getLogger("cachelib.sources")

#: Timeframes every source accepts (Alpaca's names).
SUPPORTED_TIMEFRAMES: tuple[str, ...] = ("1Min", "5Min", "15Min", "30Min", "1Hour", "1Day")

#: Environment variable pairs holding Alpaca keys, in order of preference.
KEY_ENV_VARS: tuple[tuple[str, str], ...] = (
    ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"),
    ("ALPACA_API_KEY", "ALPACA_SECRET_KEY"),
)
#: Environment variable overriding Alpaca's market-data base URL (tests point it at a loopback server).
DATA_URL_ENV = "APCA_API_DATA_URL"
#: Alpaca's conventional environment variable for the trading API base URL (option contracts).
TRADING_URL_ENV = "APCA_API_BASE_URL"

_KEY_HINT = (
    "set APCA_API_KEY_ID and APCA_API_SECRET_KEY (or ALPACA_API_KEY and ALPACA_SECRET_KEY), "
    "or pass api_key= and secret_key="
)
#: HTTP statuses the source retries (with timeouts, dropped connections and blown deadlines).
#: This is the project's one classification of transient HTTP faults.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})

# Defaults of the network knobs (see AlpacaSource).
DEFAULT_REQUEST_DEADLINE = 120.0  # seconds for one whole HTTP request, body included
DEFAULT_MAX_RETRY_AFTER = 60.0  # never wait longer than this on one Retry-After
DEFAULT_MAX_RETRY_SECONDS = 300.0  # retrying (waits + failed attempts) per call, at most
DEFAULT_MAX_PAGES = 10_000  # pages of one paginated call (10,000 x 10,000 bars is plenty)
#: Pages in a row that carry a new next_page_token but no data. Alpaca never sends one; a server
#: that does could otherwise hold a call for max_pages pages (about 50 minutes at 200/min).
MAX_EMPTY_PAGES = 3


# ---------------------------------------------------------------------------
# Redaction: the one place that keeps API keys out of messages and logs
# ---------------------------------------------------------------------------

#: Secrets shorter than this are not redacted (real Alpaca keys are 20-40 characters; redacting
#: "a" would mangle every message).
_MIN_SECRET_LENGTH = 8
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def _register_secrets(*values: str | None) -> None:
    """Remember API keys so :func:`redact` can hide them wherever server content shows up."""
    with _SECRETS_LOCK:
        _SECRETS.update(v for v in values if v and len(v) >= _MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """``text`` with every API key this process has used replaced by ``***``, in any letter
    case (a server may echo a key upper-cased, e.g. as a symbol)."""
    text = str(text)
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)  # longest first: no partial leftovers
    folded = text.casefold()
    if not any(secret.casefold() in folded for secret in secrets):
        return text
    pattern = "|".join(re.escape(secret) for secret in secrets)
    return re.sub(pattern, "***", text, flags=re.IGNORECASE)


def _snippet(value: Any, limit: int = 80, *, raw: bool = False) -> str:
    """A short, redacted excerpt of server content for a message (redacted *before* clipping,
    so a clipped key cannot survive as a prefix)."""
    try:
        text = value if raw and isinstance(value, str) else repr(value)
    except ValueError:  # an int too long to print (Python's 4300-digit limit)
        text = f"<{type(value).__name__} too long to show>"
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class _RedactingFilter(logging.Filter):
    """Rewrites every record of this module's logger through :func:`redact` (args included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


logger.addFilter(_RedactingFilter())


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class SourceError(RuntimeError):
    """A market-data source failed. ``status_code`` holds the HTTP status when there was one.

    The message is passed through :func:`redact`: it may quote the server, never the keys.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(redact(message))
        self.status_code = status_code


class AuthenticationError(SourceError):
    """Keys missing, or rejected by the vendor (HTTP 401/403). Never retried."""


class RateLimitError(SourceError):
    """HTTP 429 persisted after every retry."""


class SourceUnavailableError(SourceError):
    """5xx answers, timeouts or connection errors persisted after every retry."""


class MalformedResponseError(SourceError):
    """The vendor answered 200 with a body that is not the JSON we expect (truncated, wrong shape)."""


class UnsupportedTimeframe(ValueError):
    """A timeframe outside :data:`SUPPORTED_TIMEFRAMES`."""


# ---------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------


@runtime_checkable
class MarketDataSource(Protocol):
    """What every market-data source offers (Alpaca, demo, replay...).

    ``name`` and ``feed_name`` together identify the series a source fills (``"alpaca"`` with
    ``"iex"``/``"sip"``/..., ``"demo"`` with ``"demo"``). ``get_bars`` returns raw (unadjusted)
    bars; ``get_corporate_actions`` the actions to adjust them with (columns
    :data:`cachelib.corporate_actions.ACTION_COLUMNS`, ``source`` = ``name``).
    """

    name: str

    @property
    def feed_name(self) -> str: ...

    def get_bars(
        self,
        symbols: str | Iterable[str],
        start: str | date | datetime,
        end: str | date | datetime,
        timeframe: str = "1Day",
    ) -> pd.DataFrame: ...

    def get_option_chain(
        self,
        underlying: str,
        expiration_gte: str | date | None = None,
        expiration_lte: str | date | None = None,
    ) -> pd.DataFrame: ...

    def get_latest_bar(self, symbol: str) -> dict | None: ...

    def get_latest_trade(self, symbol: str) -> dict | None: ...

    def get_corporate_actions(
        self,
        symbols: str | Iterable[str],
        start: str | date | datetime,
        end: str | date | datetime,
    ) -> pd.DataFrame: ...


# ---------------------------------------------------------------------------
# Shared helpers (usable by any source)
# ---------------------------------------------------------------------------


def check_timeframe(timeframe: Any) -> str:
    """The canonical name of a supported timeframe (``"1H"`` -> ``"1Hour"``); ``UnsupportedTimeframe``
    (a ``ValueError``) listing the supported ones otherwise."""
    try:
        name = parse_timeframe(timeframe).name
    except ValueError:
        name = None
    if name not in SUPPORTED_TIMEFRAMES:
        raise UnsupportedTimeframe(
            f"unsupported timeframe {timeframe!r}: supported timeframes are "
            + ", ".join(SUPPORTED_TIMEFRAMES)
        )
    return name


def _ny_midnight(day: date) -> datetime:
    return datetime.combine(day, dtime(0), tzinfo=NY).astimezone(timezone.utc)


def request_window(start: Any, end: Any) -> tuple[datetime, datetime]:
    """The aware-UTC ``(start, end)`` to ask a vendor for, both inclusive.

    Date-only values (``date`` or ``"YYYY-MM-DD"``) are New York dates: ``start`` becomes New York
    midnight of that day, ``end`` the last microsecond of that New York day (so daily bars stamped
    04:00Z/05:00Z and after-hours minute bars up to 20:00 ET are all covered). Datetimes are
    instants; naive ones mean UTC.
    """
    start_dt = _ny_midnight(to_date(start)) if is_date_only(start) else to_utc_datetime(start)
    if is_date_only(end):
        end_dt = _ny_midnight(to_date(end) + timedelta(days=1)) - timedelta(microseconds=1)
    else:
        end_dt = to_utc_datetime(end)
    if end_dt < start_dt:
        raise ValueError(f"end ({end!r}) is before start ({start!r})")
    return start_dt, end_dt


def _bars_frame(symbols: list[str], timestamps: pd.DatetimeIndex, columns: dict[str, Any]) -> pd.DataFrame:
    index = pd.MultiIndex.from_arrays(
        [pd.Index(symbols, dtype="str", name="symbol"), timestamps.rename("timestamp")]
    )
    data = {}
    for name in BAR_COLUMNS:
        values = columns.get(name, [])
        if name == "trade_count":
            data[name] = pd.array(values, dtype="Int64")
        else:
            data[name] = np.asarray(values, dtype="float64")
    return pd.DataFrame(data, index=index, columns=list(BAR_COLUMNS))


def empty_bars_frame() -> pd.DataFrame:
    """The canonical empty answer of ``get_bars``: ``(symbol, timestamp)`` index, BAR_COLUMNS."""
    return _bars_frame([], pd.DatetimeIndex([], tz="UTC").as_unit("ns"), {})


#: Columns of a source's option chain: exactly the store's OPTION_COLUMNS (``open_interest_date``
#: included, a ``datetime.date`` or None).
OPTION_CHAIN_COLUMNS: tuple[str, ...] = OPTION_COLUMNS

_OPTION_FLOAT_COLUMNS = (
    "strike", "bid", "ask", "last", "volume", "open_interest", "implied_volatility",
    "delta", "gamma", "theta", "vega", "rho", "underlying_price",
)


def _option_frame(rows: list[dict]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name in OPTION_CHAIN_COLUMNS:
        values = [row.get(name) for row in rows]
        if name in _OPTION_FLOAT_COLUMNS:
            data[name] = np.array([np.nan if v is None else v for v in values], dtype="float64")
        elif name == "snapshot_time":
            stamps = pd.to_datetime(values, utc=True) if values else pd.DatetimeIndex([], tz="UTC")
            data[name] = pd.DatetimeIndex(stamps).as_unit("ns")
        elif name in ("expiration", "open_interest_date"):
            column = np.empty(len(values), dtype=object)
            column[:] = values
            data[name] = column
        else:
            data[name] = pd.array(values, dtype="str")
    return pd.DataFrame(data, columns=list(OPTION_CHAIN_COLUMNS))


def empty_option_chain() -> pd.DataFrame:
    """The canonical empty answer of ``get_option_chain`` (columns OPTION_CHAIN_COLUMNS)."""
    return _option_frame([])


def _env_pair() -> tuple[str, str, str] | None:
    """``(key, secret, "VAR_ID/VAR_SECRET")`` from the first complete env pair, else None."""
    for key_var, secret_var in KEY_ENV_VARS:
        key, secret = os.environ.get(key_var, "").strip(), os.environ.get(secret_var, "").strip()
        if key and secret:
            return key, secret, f"{key_var}/{secret_var}"
    return None


def alpaca_keys_configured() -> bool:
    """True when either Alpaca key pair is fully set in the environment."""
    return _env_pair() is not None


def _check_knob(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    integer: bool = False,
    low_open: bool = False,
    unit: str = "",
) -> Any:
    """``value`` if it is a real number (an int if ``integer``) in ``[low, high]`` (``(low, high]``
    with ``low_open``); else a ``ValueError`` naming the parameter and the accepted range.

    Booleans, NaN, infinities and huge values are refused here rather than failing later with
    an ``OverflowError`` deep inside the socket or the sleep call.
    """
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}]{unit}, got {value!r}")
    return int(value) if integer else float(value)


# ---------------------------------------------------------------------------
# Rate limiting
# ---------------------------------------------------------------------------


class RateLimiter:
    """A thread-safe limiter spacing requests at ``60 / max_per_minute`` seconds (GCRA).

    ``burst`` requests may go back to back after a quiet spell; with the default ``burst=1`` no
    sliding 60 s window ever holds more than ``max_per_minute`` requests. ``clock`` (monotonic
    seconds) and ``sleep`` are injectable for tests. ``max_per_minute`` of None or 0 disables it.
    """

    def __init__(
        self,
        max_per_minute: float | None = 200,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_per_minute is not None:
            max_per_minute = _check_knob("max_per_minute (None or 0: no limit)", max_per_minute, 0, 1e6)
        self.max_per_minute = max_per_minute
        self.burst = _check_knob("burst", burst, 1, 1e6, integer=True)
        self.interval = 60.0 / max_per_minute if max_per_minute else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat: float | None = None  # theoretical arrival time of the next request
        self.total_wait = 0.0

    def acquire(self) -> float:
        """Block until a request may be sent; return the seconds waited."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            tat = now if self._tat is None else max(self._tat, now)
            wait = tat - (self.burst - 1) * self.interval - now
            self._tat = tat + self.interval
            wait = max(wait, 0.0)
            self.total_wait += wait
        if wait > 0:
            self._sleep(wait)
        return wait


# ---------------------------------------------------------------------------
# HTTP with a total deadline per request
# ---------------------------------------------------------------------------

_WATCH = threading.local()  # .deadline: the _Deadline of the request this thread has in flight


class _DeadlineExceeded(Exception):
    """Internal: a request outlived its total deadline (its socket was shut down)."""


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Deadline:
    """A timer over one whole HTTP request: when it fires, the request's socket is shut down.

    ``timeout`` bounds each socket read only, so a server dripping one byte every half second
    keeps a request alive for minutes. Shutting the socket down wakes a blocked read at once,
    whether it waits for the status line, the headers or the body. Sockets register themselves
    (see :func:`_deadline_session`) when a request is sent on them; a connection still being
    opened is bounded by the connect ``timeout`` and is shut down as soon as it registers.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._done = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._previous: _Deadline | None = None

    def __enter__(self) -> _Deadline:
        self._previous = getattr(_WATCH, "deadline", None)
        _WATCH.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
        _WATCH.deadline = self._previous

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            expired = self.expired and not self._done
        if expired:
            _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)


_SESSION_ADAPTER: type | None = None


def _deadline_session() -> Any:
    """A ``requests.Session`` whose connections register their socket with the thread's
    :class:`_Deadline` before waiting for the answer.

    Built on requests' and urllib3's public extension points (an ``HTTPAdapter`` subclass,
    ``PoolManager.pool_classes_by_scheme``, ``HTTPConnectionPool.ConnectionCls``). Requests
    through a SOCKS proxy are bounded by ``timeout`` only.
    """
    global _SESSION_ADAPTER
    import requests

    if _SESSION_ADAPTER is None:
        from requests.adapters import HTTPAdapter
        from urllib3.connection import HTTPConnection, HTTPSConnection
        from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
        from urllib3.poolmanager import ProxyManager

        class _Watched:
            def getresponse(self, *args: Any, **kwargs: Any) -> Any:
                deadline = getattr(_WATCH, "deadline", None)
                sock = getattr(self, "sock", None)
                if deadline is not None and sock is not None:
                    deadline.register(sock)
                return super().getresponse(*args, **kwargs)  # type: ignore[misc]

        class _HTTPPool(HTTPConnectionPool):
            ConnectionCls = type("_WatchedHTTPConnection", (_Watched, HTTPConnection), {})

        class _HTTPSPool(HTTPSConnectionPool):
            ConnectionCls = type("_WatchedHTTPSConnection", (_Watched, HTTPSConnection), {})

        pools = {"http": _HTTPPool, "https": _HTTPSPool}

        class _DeadlineAdapter(HTTPAdapter):
            def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                super().init_poolmanager(*args, **kwargs)
                self.poolmanager.pool_classes_by_scheme = dict(pools)

            def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
                manager = super().proxy_manager_for(proxy, **proxy_kwargs)
                if isinstance(manager, ProxyManager):
                    manager.pool_classes_by_scheme = dict(pools)
                return manager

        _SESSION_ADAPTER = _DeadlineAdapter

    session = requests.Session()
    session.mount("http://", _SESSION_ADAPTER())
    session.mount("https://", _SESSION_ADAPTER())
    return session


# ---------------------------------------------------------------------------
# alpaca-py adapter: the only code relying on alpaca-py beyond its documented API
# ---------------------------------------------------------------------------

#: The alpaca-py version this adapter was written and tested against (constraints.txt pins it).
ALPACA_SDK_VERSION = "0.44.0"

_CLIENT_CLASSES: tuple[type, type, type, type] | None = None


def _sdk_contract_problems(rest_client: type | None = None) -> list[str]:
    """What no longer holds of the one thing the adapter relies on (empty list: all holds).

    The reliance: the data clients' pager ``RESTClient._get_marketdata`` fetches every page
    through the public ``RESTClient.get(path, data)`` and follows ``next_page_token``. Our
    clients override ``get``, so every request (pages included) goes through
    :meth:`AlpacaSource._send`; no private method is overridden and no private attribute set.
    """
    if rest_client is None:
        from alpaca.common.rest import RESTClient as rest_client
    problems = []
    try:
        params = list(inspect.signature(rest_client.get).parameters)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        params = []
    if params[:3] != ["self", "path", "data"]:
        problems.append(f"RESTClient.get(self, path, data, **kwargs) changed (parameters now {params})")
    pager = getattr(rest_client, "_get_marketdata", None)
    if pager is None:
        problems.append("RESTClient._get_marketdata (the pager) is gone")
    else:
        text = _source_text(pager)
        if text is not None and ("self.get(" not in text or "next_page_token" not in text):
            problems.append("RESTClient._get_marketdata no longer fetches its pages through "
                            "self.get() following next_page_token")
    if rest_client.__module__ == "alpaca.common.rest":  # the real SDK: check its two other clients
        from alpaca.data.historical.corporate_actions import CorporateActionsClient
        from alpaca.trading.client import TradingClient

        for method, needle in ((CorporateActionsClient.get_corporate_actions, "self._get_marketdata("),
                               (TradingClient.get_option_contracts, "self.get(")):
            text = _source_text(method)
            if text is not None and needle not in text:
                problems.append(f"{method.__qualname__} no longer sends its request through {needle})")
    return problems


def _source_text(function: Any) -> str | None:
    """The source of an SDK function, or None when none is shipped (the version pin stands)."""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return None


def _client_classes() -> tuple[type, type, type, type]:
    """SDK client subclasses whose ``get`` goes through :meth:`AlpacaSource._get`: stock and
    option market data, corporate actions (market-data host, ``v1``) and the trading API's
    option contracts (trading host, ``v2``).

    Built lazily so importing this module (e.g. for the demo source) does not import alpaca-py.
    Another alpaca-py version is accepted with a warning while :func:`_sdk_contract_problems`
    finds nothing, and refused with a clear error otherwise.
    """
    global _CLIENT_CLASSES
    if _CLIENT_CLASSES is None:
        import alpaca
        from alpaca.data.historical.corporate_actions import CorporateActionsClient
        from alpaca.data.historical.option import OptionHistoricalDataClient
        from alpaca.data.historical.stock import StockHistoricalDataClient
        from alpaca.trading.client import TradingClient

        version = getattr(alpaca, "__version__", "unknown")
        if version != ALPACA_SDK_VERSION:
            problems = _sdk_contract_problems()
            if problems:
                raise RuntimeError(
                    f"alpaca-py {version} is installed, but cachelib's Alpaca adapter was written for "
                    f"alpaca-py {ALPACA_SDK_VERSION} and what it relies on changed: "
                    f"{'; '.join(problems)}. Install alpaca-py=={ALPACA_SDK_VERSION} (see constraints.txt)."
                )
            logger.warning(
                "alpaca-py %s is installed; cachelib's Alpaca adapter was tested with %s "
                "(its checks pass, but pin alpaca-py==%s to be safe)",
                version, ALPACA_SDK_VERSION, ALPACA_SDK_VERSION,
            )

        class _Routed:
            """Routes the SDK's GETs (each page of its pager) through our source."""

            _cachelib_source: AlpacaSource
            _cachelib_api_version: str
            _cachelib_base_url: str | None = None  # None: the market-data base URL

            def get(self, path: str, data: Any = None, **kwargs: Any) -> dict:
                if self._cachelib_base_url is not None:
                    kwargs.setdefault("base_url", self._cachelib_base_url)
                return self._cachelib_source._get(self._cachelib_api_version, path, data, **kwargs)

        class _StockClient(_Routed, StockHistoricalDataClient):
            _cachelib_api_version = "v2"

        class _OptionClient(_Routed, OptionHistoricalDataClient):
            _cachelib_api_version = "v1beta1"

        class _CorporateClient(_Routed, CorporateActionsClient):
            _cachelib_api_version = "v1"

        class _TradingClient(_Routed, TradingClient):
            _cachelib_api_version = "v2"

        _CLIENT_CLASSES = (_StockClient, _OptionClient, _CorporateClient, _TradingClient)
    return _CLIENT_CLASSES


class _CallContext:
    """What one public call (one SDK method, all its pages) has used so far."""

    __slots__ = ("what", "pages", "empty_pages", "tokens", "retry_spent")

    def __init__(self, what: str) -> None:
        self.what = what
        self.pages = 0
        self.empty_pages = 0  # pages in a row with a token but no data
        self.tokens: set[str] = set()
        self.retry_spent = 0.0  # seconds of waits and failed attempts


def _check_url(what: str, url: Any) -> str:
    """``url`` without a trailing slash if it is an http(s) URL; a ``ValueError`` naming
    ``what`` otherwise."""
    if not isinstance(url, str) or urlsplit(url.strip()).scheme not in ("http", "https"):
        raise ValueError(f"{what} must be a URL starting with http:// or https://, got {url!r}")
    return url.strip().rstrip("/")


def _retry_after_seconds(value: str) -> float | None:
    """Seconds asked by a ``Retry-After`` value, or None when it is unusable: not a number or a
    date, NaN, infinite, negative, or a date that is already past."""
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - now_utc()).total_seconds()
        return seconds if seconds > 0 else None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class AlpacaSource:
    """Alpaca market data through alpaca-py, with counting, rate limiting, retries and deadlines.

    This source is the project's **one retry layer for HTTP faults** (see the module docstring):
    callers, Prefect tasks included, do not retry its errors again.

    Parameters
    ----------
    api_key, secret_key:
        Keys; default to ``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY``, then
        ``ALPACA_API_KEY``/``ALPACA_SECRET_KEY``. Missing keys raise :class:`AuthenticationError`.
    url_override:
        Market-data base URL (default: env ``APCA_API_DATA_URL``, else Alpaca's).
    feed:
        Stock feed, one of alpaca's ``DataFeed`` values (iex, sip, delayed_sip, otc, boats, overnight).
        Part of a series' identity (:attr:`feed_name`): bars of different feeds never mix.
    adjustment:
        raw, split, dividend or all, used **only** by :meth:`get_bars_adjusted` (direct,
        uncached requests). :meth:`get_bars`, which fills the cache, always asks for raw bars:
        the cache adjusts at read time from the corporate actions. A non-raw value logs one
        warning when the source is built.
    trading_url:
        Base URL of Alpaca's trading API, which lists option contracts (open interest). Default:
        env ``APCA_API_BASE_URL``; else ``url_override`` when one is given (a stand-in that
        fronts every Alpaca API, like the tests' stub); else the paper or live host (``paper``).
    paper:
        With no trading URL given: True for paper-trading keys (Alpaca's default), False for live.
    max_requests_per_minute:
        Client-side limit over every HTTP request (pages and retries included). None/0: no limit.
    max_retries:
        Retries per HTTP request (0-100) for 429, 5xx, timeouts, connection errors and blown
        deadlines.
    backoff_base, backoff_max:
        Exponential backoff ``min(backoff_max, backoff_base * 2**n)`` with "equal jitter"
        (between half and all of it). A usable ``Retry-After`` is honoured instead.
    timeout:
        Seconds for connecting and for each socket read (0-3600).
    options_feed:
        ``opra`` or ``indicative`` for option chains (default: Alpaca chooses by subscription).
    sleep:
        Function used for backoff waits (tests pass a recorder).
    rate_limiter:
        A :class:`RateLimiter` to use instead of one built from ``max_requests_per_minute``.
    request_deadline:
        Seconds one HTTP request may take in total, body included (default 120).
    max_retry_after:
        Longest wait honoured from one ``Retry-After``/``X-RateLimit-Reset`` (default 60 s).
        NaN, negative, infinite, garbage values and dates already past are ignored (backoff).
    max_retry_seconds:
        Most seconds one call (all its pages) may spend retrying: waits plus failed attempts
        (default 300). The call raises rather than start a wait that would cross it.
    max_pages:
        Most pages one call may fetch (default 10,000).
    """

    name = "alpaca"

    def __init__(
        self,
        api_key: str | None = None,
        secret_key: str | None = None,
        url_override: str | None = None,
        feed: str = "iex",
        adjustment: str = "raw",
        max_requests_per_minute: float | None = 200,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        timeout: float = 30.0,
        *,
        options_feed: str | None = None,
        sleep: Callable[[float], None] | None = None,
        rate_limiter: RateLimiter | None = None,
        jitter: bool = True,
        request_deadline: float = DEFAULT_REQUEST_DEADLINE,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        max_retry_seconds: float = DEFAULT_MAX_RETRY_SECONDS,
        max_pages: int = DEFAULT_MAX_PAGES,
        trading_url: str | None = None,
        paper: bool = True,
    ) -> None:
        from alpaca.common.enums import BaseURL
        from alpaca.common.utils import get_default_user_agent
        from alpaca.data.enums import Adjustment, DataFeed, OptionsFeed

        api_key, secret_key, self.credentials_source = self._resolve_keys(api_key, secret_key)
        _register_secrets(api_key, secret_key)
        try:
            self.feed = DataFeed(str(feed).strip().lower())
        except ValueError:
            raise ValueError(
                f"unknown feed {feed!r}: use one of {', '.join(f.value for f in DataFeed)}"
            ) from None
        try:
            self.adjustment = Adjustment(str(adjustment).strip().lower())
        except ValueError:
            raise ValueError(
                f"unknown adjustment {adjustment!r}: use one of {', '.join(a.value for a in Adjustment)}"
            ) from None
        self.options_feed: OptionsFeed | None = None
        if options_feed is not None:
            try:
                self.options_feed = OptionsFeed(str(options_feed).strip().lower())
            except ValueError:
                raise ValueError(
                    f"unknown options_feed {options_feed!r}: use one of "
                    f"{', '.join(f.value for f in OptionsFeed)}"
                ) from None
        self.max_retries = _check_knob("max_retries", max_retries, 0, 100, integer=True)
        self.backoff_base = _check_knob("backoff_base", backoff_base, 0, 3600, unit=" s")
        self.backoff_max = _check_knob("backoff_max", backoff_max, 0, 3600, unit=" s")
        self.timeout = _check_knob("timeout", timeout, 0, 3600, low_open=True, unit=" s")
        self.request_deadline = _check_knob(
            "request_deadline", request_deadline, 0, 86_400, low_open=True, unit=" s")
        self.max_retry_after = _check_knob("max_retry_after", max_retry_after, 0, 3600, unit=" s")
        self.max_retry_seconds = _check_knob("max_retry_seconds", max_retry_seconds, 0, 86_400, unit=" s")
        self.max_pages = _check_knob("max_pages", max_pages, 1, 10_000_000, integer=True)
        self.jitter = bool(jitter)
        self._sleep = sleep if sleep is not None else time.sleep
        self._rng = random.Random()
        if max_requests_per_minute is not None:
            max_requests_per_minute = _check_knob(
                "max_requests_per_minute (None or 0: no limit)", max_requests_per_minute, 0, 1e6)
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter(max_requests_per_minute)
        if url_override is not None and not isinstance(url_override, str):
            raise ValueError(f"url_override must be a URL string, got {url_override!r}")
        self.url_override = (url_override or os.environ.get(DATA_URL_ENV, "").strip() or None)
        if self.url_override:
            self.url_override = _check_url(f"url_override (or {DATA_URL_ENV})", self.url_override)
        self._base_url = self.url_override or BaseURL.DATA.value
        self.trading_url = _check_url(
            "trading_url (or " + TRADING_URL_ENV + ")",
            trading_url or os.environ.get(TRADING_URL_ENV, "").strip() or self.url_override
            or (BaseURL.TRADING_PAPER.value if paper else BaseURL.TRADING_LIVE.value))
        if self.adjustment is not Adjustment.RAW:
            logger.warning(
                "AlpacaSource(adjustment=%r): only get_bars_adjusted() (direct, uncached requests) "
                "uses it; get_bars(), which fills the cache, always asks Alpaca for raw bars and "
                "the cache adjusts them at read time", self.adjustment.value)
        self._headers = {
            "APCA-API-KEY-ID": api_key,
            "APCA-API-SECRET-KEY": secret_key,
            "User-Agent": get_default_user_agent(),
        }

        self._count_lock = threading.Lock()
        self._requests_made = 0
        self._retries_made = 0
        self._local = threading.local()  # .call: the _CallContext of this thread's current call
        self._http = _deadline_session()

        stock_cls, option_cls, corporate_cls, trading_cls = _client_classes()
        self._stock = stock_cls(api_key=api_key, secret_key=secret_key, raw_data=True,
                                url_override=self.url_override)
        self._option = option_cls(api_key=api_key, secret_key=secret_key, raw_data=True,
                                  url_override=self.url_override)
        self._corporate = corporate_cls(api_key=api_key, secret_key=secret_key, raw_data=True,
                                        url_override=self.url_override)
        self._trading = trading_cls(api_key=api_key, secret_key=secret_key, raw_data=True,
                                    url_override=self.trading_url)
        self._trading._cachelib_base_url = self.trading_url
        for client in (self._stock, self._option, self._corporate, self._trading):
            client._cachelib_source = self

    # -- bookkeeping ---------------------------------------------------------------------

    @property
    def feed_name(self) -> str:
        """The feed of this source's bars (``"iex"``, ``"sip"``, ``"delayed_sip"``...): with
        :attr:`name`, the identity of the series it fills."""
        return str(self.feed.value)

    @property
    def requests_made(self) -> int:
        """HTTP requests actually sent (every page and every retry)."""
        return self._requests_made

    @property
    def retries_made(self) -> int:
        """How many of :attr:`requests_made` were retries."""
        return self._retries_made

    def __repr__(self) -> str:
        return (
            f"AlpacaSource(feed={self.feed.value!r}, adjustment={self.adjustment.value!r}, "
            f"url={self.url_override or 'default'!r}, keys from {self.credentials_source})"
        )

    def close(self) -> None:
        """Close the HTTP connections (the source stays usable: they reopen on demand)."""
        self._http.close()

    def __enter__(self) -> AlpacaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _resolve_keys(api_key: str | None, secret_key: str | None) -> tuple[str, str, str]:
        if api_key or secret_key:
            if not (api_key and secret_key):
                raise AuthenticationError(
                    "Alpaca needs both an API key and a secret key: " + _KEY_HINT
                )
            if not (isinstance(api_key, str) and isinstance(secret_key, str)):
                raise AuthenticationError("Alpaca API keys must be strings: " + _KEY_HINT)
            return api_key, secret_key, "arguments"
        pair = _env_pair()
        if pair is None:
            raise AuthenticationError("no Alpaca API keys configured: " + _KEY_HINT)
        return pair

    # -- every request goes through here -------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        if self.jitter:
            delay = delay / 2 + self._rng.uniform(0, delay / 2)
        return delay

    def _retry_after(self, headers: Any, path: str) -> float | None:
        """The wait a 429/5xx asks for, capped at ``max_retry_after``; None: use the backoff."""
        value = headers.get("Retry-After")
        if value is not None:
            seconds = _retry_after_seconds(value)
            if seconds is None:
                logger.info("ignoring an unusable Retry-After %s on %s: using the backoff", _snippet(value), path)
                return None
            return min(seconds, self.max_retry_after)
        reset = headers.get("X-RateLimit-Reset")
        if reset is not None:
            try:
                seconds = float(str(reset).strip()) - now_utc().timestamp()
            except ValueError:
                return None
            if math.isfinite(seconds) and seconds >= 0:
                return min(seconds, self.max_retry_after)
        return None

    def _context(self, path: str) -> _CallContext:
        ctx = getattr(self._local, "call", None)
        if ctx is None:  # an SDK method called directly, outside _call: one request, one call
            ctx = _CallContext(path)
        return ctx

    def _get(self, api_version: str, path: str, data: Any = None, **kwargs: Any) -> dict:
        """The SDK's ``get(path, data)``: one page, sent by :meth:`_send`, its token checked."""
        base = str(kwargs.get("base_url") or self._base_url).rstrip("/")
        url = f"{base}/{kwargs.get('api_version') or api_version}{path}"
        ctx = self._context(path)
        result = self._send(url, data, ctx)
        self._check_page(result, urlsplit(url).path, ctx)
        return result

    def _check_page(self, result: dict, path: str, ctx: _CallContext) -> None:
        """Stop a pager that would never end: repeated tokens, or more than ``max_pages``."""
        ctx.pages += 1
        token = result.get("next_page_token")
        if token is None:
            return
        if not isinstance(token, str) or not token:
            raise MalformedResponseError(
                f"Alpaca answered {path} ({ctx.what}) with a next_page_token that is not a "
                f"non-empty string: {_snippet(token)}; nothing was returned"
            )
        if token in ctx.tokens:
            raise MalformedResponseError(
                f"Alpaca sent the same next_page_token twice on {path} ({ctx.what}, page {ctx.pages}): "
                f"following it would fetch the same pages forever, so the call stopped and returned "
                f"nothing. Retry later; if it persists, the vendor's pagination is broken"
            )
        has_data = any(value for key, value in result.items() if key != "next_page_token")
        ctx.empty_pages = 0 if has_data else ctx.empty_pages + 1
        if ctx.empty_pages >= MAX_EMPTY_PAGES:
            raise MalformedResponseError(
                f"Alpaca answered {path} ({ctx.what}) with {ctx.empty_pages} pages in a row that hold "
                f"no data but point to a next page: the call stopped and returned nothing. Retry "
                f"later; if it persists, the vendor's pagination is broken"
            )
        if ctx.pages >= self.max_pages:
            raise MalformedResponseError(
                f"{ctx.what} on {path} needs more than max_pages={self.max_pages} pages; the call "
                f"stopped and returned nothing. Ask for a shorter range or fewer symbols, or raise max_pages"
            )
        ctx.tokens.add(token)

    @staticmethod
    def _json_body(response: Any, path: str) -> dict:
        content = response.content
        if not content.strip():
            raise MalformedResponseError(f"Alpaca answered {path} with an empty body")
        try:
            result = json.loads(content)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            raise MalformedResponseError(
                f"Alpaca answered {path} with a body that is not valid JSON (truncated?)"
            ) from None
        if not isinstance(result, dict):
            raise MalformedResponseError(f"Alpaca answered {path} with JSON that is not an object")
        return result

    def _send(self, url: str, params: Any, ctx: _CallContext) -> dict:
        """One HTTP GET with the limiter, the deadline, counting and **the** retry policy.

        Retried: :data:`RETRYABLE_STATUS`, timeouts, connection errors and blown deadlines, at
        most ``max_retries`` times and ``max_retry_seconds`` per call. 401/403 raise
        :class:`AuthenticationError` at once; other statuses a :class:`SourceError`; a 2xx body
        that is not a JSON object :class:`MalformedResponseError`.
        """
        import requests

        path = urlsplit(url).path
        attempt = 0
        while True:
            self.rate_limiter.acquire()
            with self._count_lock:
                self._requests_made += 1
                if attempt:
                    self._retries_made += 1
            started = time.monotonic()
            status: int | None = None
            retry_after: float | None = None
            try:
                with _Deadline(self.request_deadline) as deadline:
                    try:
                        # stream=False: the body is read inside get(), under the deadline
                        response = self._http.get(url, params=params, headers=self._headers,
                                                  timeout=self.timeout, allow_redirects=False)
                    except (requests.exceptions.RequestException, OSError):
                        if deadline.expired:
                            raise _DeadlineExceeded() from None
                        raise
            except _DeadlineExceeded:
                problem = f"no complete answer within request_deadline={self.request_deadline:g} s"
                final = (
                    f"Alpaca request to {path} took longer than {self.request_deadline:g} s "
                    f"(request_deadline) {{when}}: the server is stalled or too slow; retry later "
                    f"or raise request_deadline"
                )
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as exc:
                problem = type(exc).__name__
                final = f"Alpaca unreachable on {path} {{when}} ({problem}, timeout {self.timeout:g} s)"
            except requests.exceptions.RequestException as exc:  # a bad URL or header: not transient
                raise SourceError(
                    f"the request to Alpaca on {path} could not be made ({type(exc).__name__}): "
                    f"{_snippet(str(exc), 200, raw=True)}"
                ) from None
            except OSError as exc:  # a socket error requests did not wrap: like a connection error
                problem = type(exc).__name__
                final = f"Alpaca unreachable on {path} {{when}} ({problem}, timeout {self.timeout:g} s)"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return self._json_body(response, path)
                body = _snippet(response.text, 300, raw=True)
                if status in (401, 403):
                    extra = (
                        f" (HTTP 403 can also mean your plan does not cover feed={self.feed.value!r})"
                        if status == 403
                        else ""
                    )
                    raise AuthenticationError(
                        f"Alpaca rejected the API keys with HTTP {status} on {path}: {body}. "
                        f"Check APCA_API_KEY_ID and APCA_API_SECRET_KEY (or ALPACA_API_KEY and "
                        f"ALPACA_SECRET_KEY){extra}",
                        status_code=status,
                    )
                if status not in RETRYABLE_STATUS:
                    raise SourceError(f"Alpaca answered HTTP {status} on {path}: {body}", status_code=status)
                retry_after = self._retry_after(response.headers, path)
                problem = f"HTTP {status}"
                final = f"Alpaca kept answering HTTP {status} on {path} {{when}}: {body}"

            ctx.retry_spent += time.monotonic() - started
            error = RateLimitError if status == 429 else SourceUnavailableError
            if attempt >= self.max_retries:
                raise error(final.replace("{when}", f"after {attempt + 1} attempts"), status_code=status)
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if ctx.retry_spent + delay > self.max_retry_seconds:
                when = (
                    f"after {attempt + 1} attempts (gave up: waiting {delay:.3g} s more would take "
                    f"this call past max_retry_seconds={self.max_retry_seconds:g}, "
                    f"{ctx.retry_spent:.3g} s already spent retrying)"
                )
                raise error(final.replace("{when}", when), status_code=status)
            ctx.retry_spent += delay
            attempt += 1
            logger.warning(
                "Alpaca %s on %s: retry %d/%d in %.2f s", problem, path, attempt, self.max_retries, delay
            )
            self._sleep(delay)

    def _call(self, fn: Callable, request: Any, what: str) -> Any:
        """Run one SDK method as one call (its pages share the page and retry budgets); shape
        errors inside the SDK become :class:`MalformedResponseError`."""
        previous = getattr(self._local, "call", None)
        self._local.call = _CallContext(what)
        try:
            return fn(request)
        except SourceError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise MalformedResponseError(
                f"unexpected response shape for {what}: {_snippet(str(exc), 200, raw=True)}"
            ) from None
        finally:
            self._local.call = previous


    # -- bars ----------------------------------------------------------------------------

    def get_bars(
        self,
        symbols: str | Iterable[str],
        start: str | date | datetime,
        end: str | date | datetime,
        timeframe: str = "1Day",
    ) -> pd.DataFrame:
        """**Raw** bars for every symbol in one paginated request (see the module docstring for
        the shape). Always ``adjustment=raw``, whatever the source was built with: this is what
        fills the cache, which adjusts at read time."""
        return self._fetch_bars(symbols, start, end, timeframe, "raw")

    def get_bars_adjusted(
        self,
        symbols: str | Iterable[str],
        start: str | date | datetime,
        end: str | date | datetime,
        timeframe: str = "1Day",
        adjustment: str | None = None,
    ) -> pd.DataFrame:
        """Bars adjusted by Alpaca (``adjustment``: raw, split, dividend or all; default the
        source's ``adjustment``), for a direct, **uncached** request.

        Never store these: Alpaca adjusts as of today, so they go stale at the next split or
        dividend. The cache keeps raw bars and adjusts them as of any date instead.
        """
        return self._fetch_bars(symbols, start, end, timeframe,
                                self.adjustment.value if adjustment is None else adjustment)

    def _fetch_bars(self, symbols: str | Iterable[str], start: str | date | datetime,
                    end: str | date | datetime, timeframe: str, adjustment: str) -> pd.DataFrame:
        from alpaca.data.enums import Adjustment
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

        tf = parse_timeframe(check_timeframe(timeframe))
        try:
            adjust = Adjustment(str(adjustment).strip().lower())
        except ValueError:
            raise ValueError(f"unknown adjustment {adjustment!r}: use one of "
                             f"{', '.join(a.value for a in Adjustment)}") from None
        syms = normalize_symbols(symbols)
        start_dt, end_dt = request_window(start, end)
        if not syms:
            return empty_bars_frame()
        unit = {"Min": TimeFrameUnit.Minute, "Hour": TimeFrameUnit.Hour, "Day": TimeFrameUnit.Day}[tf.unit]
        request = StockBarsRequest(
            symbol_or_symbols=syms,
            timeframe=TimeFrame(tf.amount, unit),
            start=start_dt,
            end=end_dt,
            feed=self.feed,
            adjustment=adjust,
        )
        raw = self._call(self._stock.get_stock_bars, request, "stock bars")
        frame = _parse_bars(raw)
        logger.debug("Alpaca %s bars: %d rows for %d symbols", tf.name, len(frame), len(syms))
        return frame

    # -- option chain --------------------------------------------------------------------

    def get_option_chain(
        self,
        underlying: str,
        expiration_gte: str | date | None = None,
        expiration_lte: str | date | None = None,
    ) -> pd.DataFrame:
        """The latest snapshot of every contract on ``underlying`` (columns
        :data:`OPTION_CHAIN_COLUMNS`).

        Snapshots carry no open interest: ``open_interest`` and ``open_interest_date`` (the
        session it was counted on, usually the previous one) come from the trading API's option
        contracts listing, one paginated request per chain. When that listing is unavailable
        (keys not valid there, host unreachable) both stay empty and a warning says why.
        """
        from alpaca.data.requests import OptionChainRequest

        sym = normalize_symbol(underlying)
        gte = to_date(expiration_gte) if expiration_gte is not None else None
        lte = to_date(expiration_lte) if expiration_lte is not None else None
        request = OptionChainRequest(
            underlying_symbol=sym,
            feed=self.options_feed,
            expiration_date_gte=gte,
            expiration_date_lte=lte,
        )
        raw = self._call(self._option.get_option_chain, request, "option chain")
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise MalformedResponseError("option chain: 'snapshots' is not an object")
        if not raw:
            return empty_option_chain()
        underlying_price = self._underlying_price(sym)
        interest = self._open_interest(sym, gte, lte)
        now = now_utc()
        rows = []
        skipped = 0
        for contract, snap in raw.items():
            try:
                _, expiration, option_type, strike = parse_occ_symbol(contract)
            except ValueError:
                skipped += 1
                continue
            if (gte and expiration < gte) or (lte and expiration > lte):
                continue
            row = _option_row(contract, snap, expiration, option_type, strike, underlying_price, now)
            row["open_interest"], row["open_interest_date"] = interest.get(row["contract_symbol"], (None, None))
            rows.append(row)
        if skipped:
            logger.warning("option chain %s: skipped %d contract(s) with non-OCC symbols", sym, skipped)
        rows.sort(key=lambda r: (r["expiration"], r["strike"], r["option_type"], r["contract_symbol"]))
        return _option_frame(rows)

    def _open_interest(self, underlying: str, gte: date | None,
                       lte: date | None) -> dict[str, tuple[float | None, date | None]]:
        """``{contract: (open interest, its date)}`` from ``GET /v2/options/contracts`` (all
        pages, one call); empty with a warning when the trading API cannot be used."""
        from alpaca.trading.requests import GetOptionContractsRequest

        request = GetOptionContractsRequest(underlying_symbols=[underlying], expiration_date_gte=gte,
                                            expiration_date_lte=lte, limit=OPTION_CONTRACTS_PAGE_SIZE)

        def every_page(first: Any) -> dict[str, tuple[float | None, date | None]]:
            found: dict[str, tuple[float | None, date | None]] = {}
            page = first
            while True:
                raw = self._trading.get_option_contracts(page)
                if not isinstance(raw, dict):
                    raise MalformedResponseError("option contracts: the answer is not an object")
                found.update(_parse_option_contracts(raw.get("option_contracts")))
                token = raw.get("next_page_token")
                if token is None:
                    return found
                page = page.model_copy(update={"page_token": token})

        try:
            return self._call(every_page, request, "option contracts")
        except MalformedResponseError:
            raise
        except SourceError as exc:
            hint = (f" (keys for live trading need {TRADING_URL_ENV}=https://api.alpaca.markets or "
                    "paper=False)" if isinstance(exc, AuthenticationError) else "")
            logger.warning("no open interest for %s: the option contracts listing on %s failed: %s%s",
                           underlying, self.trading_url, exc, hint)
            return {}

    # -- corporate actions ---------------------------------------------------------------

    def get_corporate_actions(
        self,
        symbols: str | Iterable[str],
        start: str | date | datetime,
        end: str | date | datetime,
    ) -> pd.DataFrame:
        """Splits, reverse splits, cash and stock dividends and name changes of ``symbols`` with
        an ex-date (for a name change, its effective date) from ``start`` to ``end`` inclusive,
        as :func:`cachelib.corporate_actions.actions_frame` rows with ``source="alpaca"``.

        One paginated ``GET /v1/corporate-actions`` for all symbols (pages of
        :data:`CORPORATE_ACTIONS_PAGE_SIZE`, Alpaca's maximum; symbol lists longer than
        :data:`CORPORATE_ACTIONS_SYMBOLS_PER_REQUEST` are split). Other action types (spin-offs,
        mergers, redemptions...) are not asked for, and ignored with a debug log if sent anyway.
        Two cash dividends of one symbol on one ex-date (a regular and a special one) are summed.
        """
        from alpaca.data.enums import CorporateActionsType
        from alpaca.data.requests import CorporateActionsRequest

        from cachelib.corporate_actions import actions_frame

        syms = normalize_symbols(symbols)
        first, last = to_date(start, "start"), to_date(end, "end")
        if last < first:
            raise ValueError(f"end ({end!r}) is before start ({start!r})")
        rows: list[dict[str, Any]] = []
        step = CORPORATE_ACTIONS_SYMBOLS_PER_REQUEST
        for i in range(0, len(syms), step):
            group = syms[i:i + step]
            request = CorporateActionsRequest(
                symbols=group,
                types=[CorporateActionsType(t) for t in _ALPACA_ACTION_KEYS.values()],
                start=first,
                end=last,
                limit=None,  # the SDK's default 1000 would cap the whole call, not one page
            )
            raw = self._call(self._corporate.get_corporate_actions, request, "corporate actions")
            rows.extend(_parse_corporate_actions(raw, set(group), first, last, self.name))
        try:
            return actions_frame(_merge_actions(rows))
        except ValueError as exc:
            raise MalformedResponseError(f"corporate actions: {exc}") from None

    def _underlying_price(self, symbol: str) -> float | None:
        try:
            trade = self.get_latest_trade(symbol)
        except AuthenticationError:
            raise
        except SourceError as exc:
            logger.warning("no underlying price for %s: %s", symbol, exc)
            return None
        return None if trade is None else trade["price"]

    # -- latest --------------------------------------------------------------------------

    def get_latest_bar(self, symbol: str) -> dict | None:
        """The latest minute bar: keys timestamp (aware UTC), open, high, low, close, volume, vwap,
        trade_count; None when Alpaca has none."""
        from alpaca.data.requests import StockLatestBarRequest

        sym = normalize_symbol(symbol)
        raw = self._call(
            self._stock.get_stock_latest_bar,
            StockLatestBarRequest(symbol_or_symbols=sym, feed=self.feed),
            "latest bar",
        )
        bar = (raw or {}).get(sym)
        if bar is None:
            return None
        if not isinstance(bar, dict):
            raise MalformedResponseError(f"latest bar for {sym} is not an object")
        try:
            trade_count = bar.get("n")
            return {
                "timestamp": _parse_time(bar["t"]),
                "open": _number(bar["o"], "o"),
                "high": _number(bar["h"], "h"),
                "low": _number(bar["l"], "l"),
                "close": _number(bar["c"], "c"),
                "volume": _number(bar["v"], "v"),
                "vwap": _number(bar.get("vw"), "vw", optional=True),
                "trade_count": _count(trade_count, "n", f" of the latest {sym} bar"),
            }
        except KeyError as exc:
            raise MalformedResponseError(f"latest bar for {sym} lacks key {exc}") from None

    def get_latest_trade(self, symbol: str) -> dict | None:
        """The latest trade: keys timestamp (aware UTC), price, size; None when Alpaca has none."""
        from alpaca.data.requests import StockLatestTradeRequest

        sym = normalize_symbol(symbol)
        raw = self._call(
            self._stock.get_stock_latest_trade,
            StockLatestTradeRequest(symbol_or_symbols=sym, feed=self.feed),
            "latest trade",
        )
        trade = (raw or {}).get(sym)
        if trade is None:
            return None
        if not isinstance(trade, dict):
            raise MalformedResponseError(f"latest trade for {sym} is not an object")
        try:
            return {
                "timestamp": _parse_time(trade["t"]),
                "price": _number(trade["p"], "p"),
                "size": _number(trade["s"], "s"),
            }
        except KeyError as exc:
            raise MalformedResponseError(f"latest trade for {sym} lacks key {exc}") from None


# ---------------------------------------------------------------------------
# Parsing Alpaca JSON
# ---------------------------------------------------------------------------

#: Option contracts per page of ``GET /v2/options/contracts`` (Alpaca's maximum).
OPTION_CONTRACTS_PAGE_SIZE = 10_000
#: Corporate actions per page of ``GET /v1/corporate-actions`` (Alpaca's maximum; the SDK's too).
CORPORATE_ACTIONS_PAGE_SIZE = 1_000
#: Symbols per corporate-actions request (keeps the URL far below common 8 KB limits).
CORPORATE_ACTIONS_SYMBOLS_PER_REQUEST = 500

#: Alpaca's corporate-action list keys we handle -> our ``action_type``.
_ALPACA_ACTION_KEYS: dict[str, str] = {
    "forward_splits": "forward_split",
    "reverse_splits": "reverse_split",
    "cash_dividends": "cash_dividend",
    "stock_dividends": "stock_dividend",
    "name_changes": "name_change",
}


def _action_field(item: Mapping[str, Any], key: str, where: str) -> Any:
    value = item.get(key)
    if value is None:
        raise MalformedResponseError(f"corporate actions: {where} lacks the field {key!r}")
    return value


def _action_symbol(item: Mapping[str, Any], key: str, where: str) -> str:
    value = _action_field(item, key, where)
    try:
        return normalize_symbol(value)
    except ValueError as exc:
        raise MalformedResponseError(f"corporate actions: field {key!r} of {where}: {exc}") from None


def _action_date(item: Mapping[str, Any], key: str, where: str) -> date:
    value = _action_field(item, key, where)
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise MalformedResponseError(
            f"corporate actions: field {key!r} of {where} is not a YYYY-MM-DD date: {_snippet(value)}"
        ) from None


def _action_rate(item: Mapping[str, Any], key: str, where: str) -> float:
    value = _number(_action_field(item, key, where), key, where=f" of {where}")
    assert value is not None
    if not (math.isfinite(value) and value > 0):
        raise MalformedResponseError(
            f"corporate actions: field {key!r} of {where} must be a positive finite number, got {value!r}")
    return value


def _parse_corporate_actions(raw: Any, symbols: set[str], first: date, last: date,
                             source: str) -> list[dict[str, Any]]:
    """Alpaca's ``{"forward_splits": [...], ...}`` -> rows for ``actions_frame``.

    Keeps the actions of ``symbols`` (a name change when its old or new symbol is asked for)
    dated within ``[first, last]``; a missing or malformed field is a
    :class:`MalformedResponseError` naming it.
    """
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise MalformedResponseError("corporate actions: 'corporate_actions' is not an object")
    rows: list[dict[str, Any]] = []
    for key, items in raw.items():
        kind = _ALPACA_ACTION_KEYS.get(key)
        if kind is None:
            logger.debug("corporate actions: ignoring %s (%s): not modelled",
                         _snippet(key, 40, raw=True), len(items) if isinstance(items, list) else "?")
            continue
        if items is None:
            continue
        if not isinstance(items, list):
            raise MalformedResponseError(f"corporate actions: {key!r} is not a list")
        for n, item in enumerate(items):
            where = f"{key}[{n}]"
            if not isinstance(item, dict):
                raise MalformedResponseError(f"corporate actions: {where} is not an object")
            row: dict[str, Any] = {"action_type": kind, "source": source}
            if kind == "name_change":
                row["symbol"] = _action_symbol(item, "old_symbol", where)
                row["new_symbol"] = _action_symbol(item, "new_symbol", where)
                row["ex_date"] = _action_date(item, "process_date", where)
                wanted = row["symbol"] in symbols or row["new_symbol"] in symbols
            else:
                row["symbol"] = _action_symbol(item, "symbol", where)
                row["ex_date"] = _action_date(item, "ex_date", where)
                wanted = row["symbol"] in symbols
                if kind in ("forward_split", "reverse_split"):
                    row["ratio"] = _action_rate(item, "new_rate", where) / _action_rate(item, "old_rate", where)
                elif kind == "stock_dividend":
                    row["ratio"] = 1.0 + _action_rate(item, "rate", where)
                else:
                    row["amount"] = _action_rate(item, "rate", where)
            if wanted and first <= row["ex_date"] <= last:
                rows.append(row)
    return rows


def _merge_actions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``(symbol, action_type, ex_date)``: cash dividends on one ex-date are summed
    (regular plus special), identical repeats dropped; a conflicting repeat stays for
    ``actions_frame`` to refuse."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    extra: list[dict[str, Any]] = []
    for row in rows:
        key = (row["symbol"], row["action_type"], row["ex_date"])
        seen = out.get(key)
        if seen is None:
            out[key] = row
        elif row["action_type"] == "cash_dividend":
            seen["amount"] = seen["amount"] + row["amount"]
            logger.info("corporate actions: two cash dividends of %s on %s, summed", key[0], key[2])
        elif row != seen:
            extra.append(row)
    return [*out.values(), *extra]


def _open_interest_value(value: Any, where: str) -> float | None:
    """Alpaca's ``open_interest`` (a string of digits, sometimes a number) as a float."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise MalformedResponseError(
                f"field 'open_interest' of {where} is not a whole number: {_snippet(value)}")
        return float(int(text))
    count = _count(value, "open_interest", f" of {where}")
    if count is not None and count < 0:
        raise MalformedResponseError(f"field 'open_interest' of {where} is negative: {count}")
    return None if count is None else float(count)


def _parse_option_contracts(items: Any) -> dict[str, tuple[float | None, date | None]]:
    """``option_contracts`` of one page -> ``{contract symbol: (open interest, its date)}``."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise MalformedResponseError("option contracts: 'option_contracts' is not a list")
    found: dict[str, tuple[float | None, date | None]] = {}
    for n, item in enumerate(items):
        where = f"option contract {n}"
        if not isinstance(item, dict):
            raise MalformedResponseError(f"option contracts: {where} is not an object")
        symbol = item.get("symbol")
        if not isinstance(symbol, str) or not symbol.strip():
            raise MalformedResponseError(f"option contracts: field 'symbol' of {where} is missing")
        where = f"option contract {_snippet(symbol, 40, raw=True)}"
        interest = _open_interest_value(item.get("open_interest"), where)
        when = item.get("open_interest_date")
        day: date | None = None
        if when is not None:
            try:
                if not isinstance(when, str) or len(when) != 10:
                    raise ValueError
                day = date.fromisoformat(when)
            except ValueError:
                raise MalformedResponseError(
                    f"field 'open_interest_date' of {where} is not a YYYY-MM-DD date: {_snippet(when)}"
                ) from None
        found[symbol.strip().upper()] = (interest, day if interest is not None else None)
    return found



_INT64_MAX = 2**63 - 1


def _number(value: Any, key: str, optional: bool = False, where: str = "") -> float | None:
    """A JSON number as a float; anything else (bool, string, object, an int beyond float
    range) is a :class:`MalformedResponseError` naming the field. NaN and infinities pass:
    the store's row validation rejects such rows with a reason."""
    if value is None and optional:
        return None
    if type(value) not in (int, float):
        raise MalformedResponseError(f"field {key!r}{where} is not a number: {_snippet(value)}")
    try:
        return float(value)
    except OverflowError:
        raise MalformedResponseError(
            f"field {key!r}{where} is too large to be a number: {_snippet(value)}"
        ) from None


def _count(value: Any, key: str, where: str = "") -> int | None:
    """A count (``n``, trade_count) as an int, or None when absent.

    A JSON integer, or a float with a whole value, within the 64-bit range; anything else
    (1e30, 1.5, NaN, true, "7") is a :class:`MalformedResponseError` naming the field. A
    negative count passes through: the sync rejects that row with its reason.
    """
    if value is None:
        return None
    if type(value) is float:
        if not math.isfinite(value) or not value.is_integer():
            raise MalformedResponseError(
                f"field {key!r}{where} (a count) is not a whole number: {_snippet(value)}"
            )
        value = int(value)
    elif type(value) is not int:
        raise MalformedResponseError(f"field {key!r}{where} (a count) is not a number: {_snippet(value)}")
    if not -_INT64_MAX <= value <= _INT64_MAX:
        raise MalformedResponseError(
            f"field {key!r}{where} (a count) is outside the 64-bit integer range: {_snippet(value)}"
        )
    return value


def _parse_time(value: Any) -> pd.Timestamp:
    if not isinstance(value, str):
        raise MalformedResponseError(f"timestamp is not a string: {_snippet(value)}")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, OverflowError):
        raise MalformedResponseError(f"cannot read timestamp {_snippet(value)}") from None
    if ts is pd.NaT:
        raise MalformedResponseError(f"cannot read timestamp {_snippet(value)}")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


_REQUIRED_BAR_KEYS = ("t", "o", "h", "l", "c", "v")


def _where(symbols: list[str], times: list[Any], i: int) -> str:
    return f" of the {_snippet(symbols[i], 40, raw=True)} bar at {_snippet(times[i], 40, raw=True)}"


def _float_column(values: list[Any], key: str, symbols: list[str], times: list[Any],
                  optional: bool = False) -> np.ndarray:
    """``values`` as float64; the first bad one raises (via :func:`_number`) naming its bar."""
    for i, v in enumerate(values):
        if type(v) not in (int, float) and not (optional and v is None):
            _number(v, key, optional, _where(symbols, times, i))
    try:
        return np.array([np.nan if v is None else v for v in values], dtype="float64")
    except OverflowError:  # an int beyond float range
        for i, v in enumerate(values):
            if v is not None:
                _number(v, key, optional, _where(symbols, times, i))
        raise  # pragma: no cover - _number raised above


def _count_column(values: list[Any], key: str, symbols: list[str], times: list[Any]) -> Any:
    """``values`` as a nullable Int64 array; the first bad one raises naming its bar."""
    if not all(v is None or (type(v) is int and -_INT64_MAX <= v <= _INT64_MAX) for v in values):
        values = [_count(v, key, _where(symbols, times, i)) for i, v in enumerate(values)]
    return pd.array(values, dtype="Int64")


def _parse_bars(raw: Any) -> pd.DataFrame:
    """Alpaca's ``{symbol: [{t o h l c v n vw}, ...]}`` -> the canonical bars frame."""
    if raw is None:
        return empty_bars_frame()
    if not isinstance(raw, dict):
        raise MalformedResponseError("stock bars: 'bars' is not an object")
    symbols: list[str] = []
    times: list[Any] = []
    cols: dict[str, list] = {k: [] for k in ("o", "h", "l", "c", "v", "vw", "n")}
    for sym, bars in raw.items():
        if bars is None:
            continue
        if not isinstance(bars, list):
            raise MalformedResponseError(f"stock bars for {_snippet(sym)} are not a list")
        sym_u = str(sym).upper()
        for bar in bars:
            if not isinstance(bar, dict):
                raise MalformedResponseError(f"a bar for {_snippet(sym_u)} is not an object")
            missing = [k for k in _REQUIRED_BAR_KEYS if bar.get(k) is None]
            if missing:
                raise MalformedResponseError(f"a bar for {_snippet(sym_u)} lacks {', '.join(missing)}")
            symbols.append(sym_u)
            times.append(bar["t"])
            for k in cols:
                cols[k].append(bar.get(k))
    if not symbols:
        return empty_bars_frame()
    floats = {k: _float_column(cols[k], k, symbols, times, optional=(k == "vw"))
              for k in ("o", "h", "l", "c", "v", "vw")}
    trade_count = _count_column(cols["n"], "n", symbols, times)
    if not all(isinstance(t, str) for t in times):
        raise MalformedResponseError("bar timestamps must be RFC-3339 strings")
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime(times, utc=True, format="ISO8601")).as_unit("ns")
    except (ValueError, TypeError, OverflowError):
        raise MalformedResponseError("cannot read the bar timestamps as RFC-3339") from None
    frame = _bars_frame(
        symbols,
        stamps,
        {
            "open": floats["o"],
            "high": floats["h"],
            "low": floats["l"],
            "close": floats["c"],
            "volume": floats["v"],
            "vwap": floats["vw"],
            "trade_count": trade_count,
        },
    )
    frame = frame[~frame.index.duplicated(keep="last")]
    return frame.sort_index()


def _option_row(contract: str, snap: Any, expiration: date, option_type: str, strike: float,
                underlying_price: float | None, now: datetime) -> dict:
    if not isinstance(snap, dict):
        raise MalformedResponseError(f"snapshot of {contract} is not an object")

    def part(key: str) -> dict:
        value = snap.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise MalformedResponseError(f"{key} of {contract} is not an object")
        return value

    quote, trade, greeks, daily = part("latestQuote"), part("latestTrade"), part("greeks"), part("dailyBar")
    quote_time = quote.get("t")
    return {
        "contract_symbol": contract.upper(),
        "strike": strike,
        "option_type": option_type,
        "expiration": expiration,
        "bid": _number(quote.get("bp"), "bp", optional=True),
        "ask": _number(quote.get("ap"), "ap", optional=True),
        "last": _number(trade.get("p"), "p", optional=True),
        "volume": _number(daily.get("v"), "v", optional=True),
        "open_interest": None,  # not in snapshots: from the option contracts listing
        "implied_volatility": _number(snap.get("impliedVolatility"), "impliedVolatility", optional=True),
        "delta": _number(greeks.get("delta"), "delta", optional=True),
        "gamma": _number(greeks.get("gamma"), "gamma", optional=True),
        "theta": _number(greeks.get("theta"), "theta", optional=True),
        "vega": _number(greeks.get("vega"), "vega", optional=True),
        "rho": _number(greeks.get("rho"), "rho", optional=True),
        "underlying_price": underlying_price,
        "snapshot_time": _parse_time(quote_time) if quote_time is not None else pd.Timestamp(now),
    }


# ---------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------


def _demo_source(kwargs: dict, strict: bool) -> MarketDataSource:
    from cachelib.demo import DemoSource

    if not strict and kwargs:
        params: Mapping[str, inspect.Parameter]
        try:
            params = inspect.signature(DemoSource).parameters
        except (TypeError, ValueError):
            params = {}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
    return DemoSource(**kwargs)


def describe_source(name: str | None) -> str:
    """What ``get_source(name)`` will pick and why, for a run log (without building a source).

    >>> describe_source("demo")
    'demo (requested)'
    """
    choice = (name or "auto").strip().lower()
    if choice != "auto":
        return f"{choice} (requested)"
    if alpaca_keys_configured():
        return "alpaca (auto: Alpaca keys are configured)"
    return "demo (auto: no Alpaca keys configured; offline synthetic data)"


def get_source(name: str | None = "auto", **kwargs: Any) -> MarketDataSource:
    """A market-data source by name: ``"alpaca"``, ``"demo"`` or ``"auto"``.

    ``"auto"`` picks Alpaca when keys are given (``api_key=``/``secret_key=``) or configured in the
    environment (``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY`` or ``ALPACA_API_KEY``/``ALPACA_SECRET_KEY``),
    else the demo source. ``kwargs`` go to the chosen source's constructor (for ``"auto"`` falling
    back to demo, only those the demo source accepts). Logs one INFO line saying which and why.
    """
    choice = (name or "auto").strip().lower()
    source: MarketDataSource
    if choice == "alpaca":
        alpaca = AlpacaSource(**kwargs)
        logger.info("market data source: alpaca (requested; keys from %s)", alpaca.credentials_source)
        return alpaca
    if choice == "demo":
        source = _demo_source(kwargs, strict=True)
        logger.info("market data source: demo (requested)")
        return source
    if choice == "auto":
        pair = _env_pair()
        if kwargs.get("api_key") and kwargs.get("secret_key"):
            source = AlpacaSource(**kwargs)
            logger.info("market data source: alpaca (auto: keys passed as arguments)")
            return source
        if pair is not None:
            source = AlpacaSource(**kwargs)
            logger.info("market data source: alpaca (auto: %s set in the environment)", pair[2])
            return source
        alpaca_only = {"api_key", "secret_key", "url_override", "feed", "adjustment"}
        source = _demo_source({k: v for k, v in kwargs.items() if k not in alpaca_only}, strict=False)
        logger.info(
            "market data source: demo (auto: no Alpaca keys in APCA_API_KEY_ID/APCA_API_SECRET_KEY "
            "or ALPACA_API_KEY/ALPACA_SECRET_KEY)"
        )
        return source
    raise ValueError(f"unknown market data source {name!r}: use 'alpaca', 'demo' or 'auto'")


# ---------------------------------------------------------------------------
# Settings from the environment (jobs and deployments cannot pass Python objects)
# ---------------------------------------------------------------------------

#: HTTP retries per request inside ``AlpacaSource`` (default 5).
ENV_MAX_RETRIES = "CACHELIB_ALPACA_MAX_RETRIES"
#: Seconds of the first backoff (default 1.0).
ENV_BACKOFF_BASE = "CACHELIB_ALPACA_BACKOFF_BASE"
#: Requests per minute for the whole process (default 200, Alpaca's free plan; 0 = no limit).
ENV_RATE_LIMIT = "CACHELIB_ALPACA_RATE_LIMIT"
#: Seconds one source call may spend retrying (default 300).
ENV_MAX_RETRY_SECONDS = "CACHELIB_ALPACA_MAX_RETRY_SECONDS"
#: Seconds one HTTP request may take in total (default 120).
ENV_REQUEST_DEADLINE = "CACHELIB_ALPACA_REQUEST_DEADLINE"
DEFAULT_RATE_LIMIT = 200.0  # Alpaca free plan: 200 data requests per minute

_LIMITERS: dict[float, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def _env_number(name: str, kind: type[int] | type[float]) -> float | None:
    """The finite, non-negative number in environment variable ``name``, or None when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def shared_rate_limiter(per_minute: float) -> RateLimiter:
    """The process-wide limiter for ``per_minute`` requests/min (parallel jobs share one budget)."""
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(per_minute)
        if limiter is None:
            limiter = _LIMITERS[per_minute] = RateLimiter(per_minute or None)
        return limiter


def source_options(name: str | None) -> dict[str, Any]:
    """Constructor options for ``get_source(name)`` from the ``CACHELIB_ALPACA_*`` variables.

    ``"demo"`` takes none; for ``"auto"`` falling back to the demo source, :func:`get_source`
    drops the Alpaca-only ones itself. The rate limiter is shared by the whole process.
    """
    if (name or "auto").strip().lower() == "demo":
        return {}
    options: dict[str, Any] = {}
    retries = _env_number(ENV_MAX_RETRIES, int)
    if retries is not None:
        options["max_retries"] = retries
    for env, option in ((ENV_BACKOFF_BASE, "backoff_base"), (ENV_MAX_RETRY_SECONDS, "max_retry_seconds"),
                        (ENV_REQUEST_DEADLINE, "request_deadline")):
        value = _env_number(env, float)
        if value is not None:
            options[option] = value
    rate = _env_number(ENV_RATE_LIMIT, float)
    options["rate_limiter"] = shared_rate_limiter(DEFAULT_RATE_LIMIT if rate is None else rate)
    return options


@contextlib.contextmanager
def open_source(name: str | None) -> Iterator[MarketDataSource]:
    """``get_source(name)`` with the environment's options, closed afterwards (Alpaca holds
    HTTP sessions). The entry point for jobs that only know a source by name."""
    source = get_source(name, **source_options(name))
    try:
        yield source
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()
