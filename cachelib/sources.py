"""Market-data sources: the protocol every source speaks, the Alpaca source, and ``get_source``.

A source answers four questions:

* :meth:`MarketDataSource.get_bars` – historical bars for many symbols at once, as a frame with a
  ``(symbol, timestamp)`` MultiIndex (timestamps tz-aware UTC, exactly as the vendor stamped them:
  the bar start for intraday bars, New York midnight in UTC for daily bars) and the columns
  :data:`cachelib.bars.BAR_COLUMNS`.
* :meth:`MarketDataSource.get_option_chain` – the *latest* snapshot of an option chain, with the
  columns :data:`cachelib.bars.OPTION_COLUMNS`.
* :meth:`MarketDataSource.get_latest_bar` / :meth:`MarketDataSource.get_latest_trade`.

:class:`AlpacaSource` talks to Alpaca through the real alpaca-py SDK (``StockHistoricalDataClient``,
``OptionHistoricalDataClient``). The SDK builds the requests and follows ``next_page_token``; this
module hooks its single-request method (``RESTClient._one_request``) to count every HTTP request,
keep a client-side rate limit, apply a timeout, and retry each failed page with its own policy
(the SDK's own fixed 3 s retry is switched off). Keys never appear in messages or logs.
"""

from __future__ import annotations

import email.utils
import inspect
import logging
import os
import random
import threading
import time
from datetime import date, datetime, time as dtime, timedelta, timezone
from typing import Any, Callable, Iterable, Protocol, runtime_checkable
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
    "check_timeframe",
    "request_window",
    "empty_bars_frame",
    "empty_option_chain",
    "alpaca_keys_configured",
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

_KEY_HINT = (
    "set APCA_API_KEY_ID and APCA_API_SECRET_KEY (or ALPACA_API_KEY and ALPACA_SECRET_KEY), "
    "or pass api_key= and secret_key="
)
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 120.0  # never wait longer than this on a server's Retry-After


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class SourceError(RuntimeError):
    """A market-data source failed. ``status_code`` holds the HTTP status when there was one."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
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
    """What every market-data source offers (Alpaca, demo, replay...)."""

    name: str

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


_OPTION_FLOAT_COLUMNS = (
    "strike", "bid", "ask", "last", "volume", "open_interest", "implied_volatility",
    "delta", "gamma", "theta", "vega", "rho", "underlying_price",
)


def _option_frame(rows: list[dict]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name in OPTION_COLUMNS:
        values = [row[name] for row in rows]
        if name in _OPTION_FLOAT_COLUMNS:
            data[name] = np.array([np.nan if v is None else v for v in values], dtype="float64")
        elif name == "snapshot_time":
            stamps = pd.to_datetime(values, utc=True) if values else pd.DatetimeIndex([], tz="UTC")
            data[name] = pd.DatetimeIndex(stamps).as_unit("ns")
        elif name == "expiration":
            column = np.empty(len(values), dtype=object)
            column[:] = values
            data[name] = column
        else:
            data[name] = pd.array(values, dtype="str")
    return pd.DataFrame(data, columns=list(OPTION_COLUMNS))


def empty_option_chain() -> pd.DataFrame:
    """The canonical empty answer of ``get_option_chain`` (columns OPTION_COLUMNS)."""
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
        if max_per_minute is not None and max_per_minute < 0:
            raise ValueError("max_per_minute must be positive (or None/0 for no limit)")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.max_per_minute = max_per_minute
        self.burst = int(burst)
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
# Alpaca
# ---------------------------------------------------------------------------

_CLIENT_CLASSES: tuple[type, type] | None = None


def _client_classes() -> tuple[type, type]:
    """SDK client subclasses whose ``_one_request`` goes through :meth:`AlpacaSource._send`.

    Built lazily so importing this module (e.g. for the demo source) does not import alpaca-py.
    """
    global _CLIENT_CLASSES
    if _CLIENT_CLASSES is None:
        from alpaca.data.historical.option import OptionHistoricalDataClient
        from alpaca.data.historical.stock import StockHistoricalDataClient

        class _Guarded:
            _cachelib_source: "AlpacaSource"

            def _one_request(self, method: str, url: str, opts: dict, retry: int) -> dict:
                parent = super()._one_request  # type: ignore[misc]
                return self._cachelib_source._send(parent, method, url, opts)

        class _StockClient(_Guarded, StockHistoricalDataClient):
            pass

        class _OptionClient(_Guarded, OptionHistoricalDataClient):
            pass

        _CLIENT_CLASSES = (_StockClient, _OptionClient)
    return _CLIENT_CLASSES


class AlpacaSource:
    """Alpaca market data through alpaca-py, with counting, rate limiting, retries and timeouts.

    Parameters
    ----------
    api_key, secret_key:
        Keys; default to ``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY``, then
        ``ALPACA_API_KEY``/``ALPACA_SECRET_KEY``. Missing keys raise :class:`AuthenticationError`.
    url_override:
        Market-data base URL (default: env ``APCA_API_DATA_URL``, else Alpaca's).
    feed:
        Stock feed, one of alpaca's ``DataFeed`` values (iex, sip, delayed_sip, otc, boats, overnight).
    adjustment:
        raw, split, dividend or all.
    max_requests_per_minute:
        Client-side limit over every HTTP request (pages and retries included). None/0: no limit.
    max_retries:
        Retries per HTTP request for 429, 5xx, timeouts and connection errors.
    backoff_base, backoff_max:
        Exponential backoff ``min(backoff_max, backoff_base * 2**n)`` with "equal jitter"
        (between half and all of it). A 429's ``Retry-After`` is honoured instead.
    timeout:
        Seconds per HTTP request (connect and read).
    options_feed:
        ``opra`` or ``indicative`` for option chains (default: Alpaca chooses by subscription).
    sleep:
        Function used for backoff waits (tests pass a recorder).
    rate_limiter:
        A :class:`RateLimiter` to use instead of one built from ``max_requests_per_minute``.
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
    ) -> None:
        from alpaca.data.enums import Adjustment, DataFeed, OptionsFeed

        api_key, secret_key, self.credentials_source = self._resolve_keys(api_key, secret_key)
        self._secrets = tuple(s for s in (api_key, secret_key) if s)
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
        if options_feed is not None:
            try:
                self.options_feed = OptionsFeed(str(options_feed).strip().lower())
            except ValueError:
                raise ValueError(
                    f"unknown options_feed {options_feed!r}: use one of "
                    f"{', '.join(f.value for f in OptionsFeed)}"
                ) from None
        else:
            self.options_feed = None
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.timeout = float(timeout)
        self.jitter = jitter
        self._sleep = sleep if sleep is not None else time.sleep
        self._rng = random.Random()
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter(max_requests_per_minute)
        self.url_override = (url_override or os.environ.get(DATA_URL_ENV, "").strip() or None)
        if self.url_override:
            self.url_override = self.url_override.rstrip("/")

        self._count_lock = threading.Lock()
        self._requests_made = 0
        self._retries_made = 0

        stock_cls, option_cls = _client_classes()
        self._stock = stock_cls(api_key=api_key, secret_key=secret_key, raw_data=True,
                                url_override=self.url_override)
        self._option = option_cls(api_key=api_key, secret_key=secret_key, raw_data=True,
                                  url_override=self.url_override)
        for client in (self._stock, self._option):
            client._cachelib_source = self
            client._retry = 0  # the SDK's own fixed-wait retry loop is off: our policy governs
            client._retry_codes = []

    # -- bookkeeping ---------------------------------------------------------------------

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
        for client in (self._stock, self._option):
            client._session.close()

    def __enter__(self) -> "AlpacaSource":
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
            return api_key, secret_key, "arguments"
        pair = _env_pair()
        if pair is None:
            raise AuthenticationError("no Alpaca API keys configured: " + _KEY_HINT)
        return pair

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- the single-request hook ---------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        if self.jitter:
            delay = delay / 2 + self._rng.uniform(0, delay / 2)
        return delay

    @staticmethod
    def _retry_after(response: Any) -> float | None:
        if response is None:
            return None
        headers = getattr(response, "headers", None) or {}
        value = headers.get("Retry-After")
        if value:
            value = value.strip()
            try:
                seconds = float(value)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(value)
                except (TypeError, ValueError):
                    return None
                if when.tzinfo is None:
                    when = when.replace(tzinfo=timezone.utc)
                seconds = (when - now_utc()).total_seconds()
            return min(max(seconds, 0.0), _MAX_RETRY_AFTER)
        reset = headers.get("X-RateLimit-Reset")
        if reset:
            try:
                seconds = float(reset) - now_utc().timestamp()
            except ValueError:
                return None
            if 0 <= seconds <= _MAX_RETRY_AFTER:
                return seconds
        return None

    def _send(self, one_request: Callable, method: str, url: str, opts: dict) -> dict:
        """Send one SDK request with our limiter, timeout, counting and retry policy."""
        import requests
        from alpaca.common.exceptions import APIError

        opts = dict(opts)
        opts.setdefault("timeout", self.timeout)
        path = urlsplit(url).path
        attempt = 0
        while True:
            self.rate_limiter.acquire()
            with self._count_lock:
                self._requests_made += 1
                if attempt:
                    self._retries_made += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                result = one_request(method, url, opts, 0)
            except APIError as exc:
                status = exc.status_code
                body = self._redact(str(exc))[:300]
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
                    ) from None
                if status not in _RETRYABLE_STATUS:
                    raise SourceError(
                        f"Alpaca answered HTTP {status} on {path}: {body}", status_code=status
                    ) from None
                retry_after = self._retry_after(exc.response)
                problem = f"HTTP {status}"
                if attempt >= self.max_retries:
                    cls = RateLimitError if status == 429 else SourceUnavailableError
                    raise cls(
                        f"Alpaca kept answering HTTP {status} on {path} after {attempt + 1} attempts: {body}",
                        status_code=status,
                    ) from None
            except requests.exceptions.JSONDecodeError:
                raise MalformedResponseError(
                    f"Alpaca answered {path} with a body that is not valid JSON (truncated?)"
                ) from None
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as exc:
                problem = type(exc).__name__
                if attempt >= self.max_retries:
                    raise SourceUnavailableError(
                        f"Alpaca unreachable on {path} after {attempt + 1} attempts "
                        f"({problem}, timeout {self.timeout:g} s)"
                    ) from None
            else:
                if not isinstance(result, dict):
                    raise MalformedResponseError(
                        f"Alpaca answered {path} with an empty or non-object body"
                    )
                return result
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            attempt += 1
            logger.warning(
                "Alpaca %s on %s: retry %d/%d in %.2f s", problem, path, attempt, self.max_retries, delay
            )
            self._sleep(delay)

    def _call(self, fn: Callable, request: Any, what: str) -> Any:
        """Run one SDK method; shape errors inside the SDK become MalformedResponseError."""
        try:
            return fn(request)
        except SourceError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise MalformedResponseError(
                f"unexpected response shape for {what}: {self._redact(str(exc))[:200]}"
            ) from None

    # -- bars ----------------------------------------------------------------------------

    def get_bars(
        self,
        symbols: str | Iterable[str],
        start: str | date | datetime,
        end: str | date | datetime,
        timeframe: str = "1Day",
    ) -> pd.DataFrame:
        """Bars for every symbol in one paginated request (see the module docstring for the shape)."""
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

        tf = parse_timeframe(check_timeframe(timeframe))
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
            adjustment=self.adjustment,
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
        """The latest snapshot of every contract on ``underlying`` (columns OPTION_COLUMNS)."""
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
            rows.append(_option_row(contract, snap, expiration, option_type, strike, underlying_price, now))
        if skipped:
            logger.warning("option chain %s: skipped %d contract(s) with non-OCC symbols", sym, skipped)
        rows.sort(key=lambda r: (r["expiration"], r["strike"], r["option_type"], r["contract_symbol"]))
        return _option_frame(rows)

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
                "trade_count": None if trade_count is None else int(_number(trade_count, "n")),
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


def _number(value: Any, key: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if type(value) not in (int, float):
        raise MalformedResponseError(f"field {key!r} is not a number: {value!r}"[:200])
    return float(value)


def _parse_time(value: Any) -> pd.Timestamp:
    if not isinstance(value, str):
        raise MalformedResponseError(f"timestamp is not a string: {value!r}"[:200])
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise MalformedResponseError(f"cannot read timestamp {value!r}"[:200]) from None
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


_REQUIRED_BAR_KEYS = ("t", "o", "h", "l", "c", "v")


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
            raise MalformedResponseError(f"stock bars for {sym!r} are not a list")
        sym_u = str(sym).upper()
        for bar in bars:
            if not isinstance(bar, dict):
                raise MalformedResponseError(f"a bar for {sym_u} is not an object")
            missing = [k for k in _REQUIRED_BAR_KEYS if bar.get(k) is None]
            if missing:
                raise MalformedResponseError(f"a bar for {sym_u} lacks {', '.join(missing)}")
            symbols.append(sym_u)
            times.append(bar["t"])
            for k in cols:
                cols[k].append(bar.get(k))
    if not symbols:
        return empty_bars_frame()
    for k, values in cols.items():
        optional = k in ("vw", "n")
        bad = [v for v in values if type(v) not in (int, float) and not (optional and v is None)]
        if bad:
            raise MalformedResponseError(f"bar field {k!r} holds non-numbers, e.g. {bad[0]!r}"[:200])
    if not all(isinstance(t, str) for t in times):
        raise MalformedResponseError("bar timestamps must be RFC-3339 strings")
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime(times, utc=True, format="ISO8601")).as_unit("ns")
    except (ValueError, TypeError):
        raise MalformedResponseError("cannot read the bar timestamps as RFC-3339") from None
    try:
        trade_count = pd.array([None if v is None else v for v in cols["n"]], dtype="Int64")
    except (TypeError, ValueError):
        raise MalformedResponseError("bar field 'n' (trade count) holds non-integers") from None
    frame = _bars_frame(
        symbols,
        stamps,
        {
            "open": cols["o"],
            "high": cols["h"],
            "low": cols["l"],
            "close": cols["c"],
            "volume": cols["v"],
            "vwap": [np.nan if v is None else v for v in cols["vw"]],
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
        "open_interest": _number(snap.get("openInterest"), "openInterest", optional=True),
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
        try:
            params = inspect.signature(DemoSource).parameters
        except (TypeError, ValueError):
            params = {}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
    return DemoSource(**kwargs)


def get_source(name: str | None = "auto", **kwargs: Any) -> MarketDataSource:
    """A market-data source by name: ``"alpaca"``, ``"demo"`` or ``"auto"``.

    ``"auto"`` picks Alpaca when keys are given (``api_key=``/``secret_key=``) or configured in the
    environment (``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY`` or ``ALPACA_API_KEY``/``ALPACA_SECRET_KEY``),
    else the demo source. ``kwargs`` go to the chosen source's constructor (for ``"auto"`` falling
    back to demo, only those the demo source accepts). Logs one INFO line saying which and why.
    """
    choice = (name or "auto").strip().lower()
    if choice == "alpaca":
        source = AlpacaSource(**kwargs)
        logger.info("market data source: alpaca (requested; keys from %s)", source.credentials_source)
        return source
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
