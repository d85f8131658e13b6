"""A loopback HTTP server that speaks Alpaca's market-data JSON, for tests.

The real alpaca-py client talks to it through ``url_override=stub.url`` or the env var
``APCA_API_DATA_URL`` (see :func:`alpaca_env`). Endpoints (those alpaca-py 0.44 calls):

* ``GET /v2/stocks/bars`` – symbols, timeframe, start, end, limit, page_token, sort, feed (bars
  registered with ``add_bars(..., feed="sip")`` are served to that feed only; bars registered
  without a feed to every feed that has none of its own for that timeframe). Rows sorted by symbol then time, pages of
  ``min(limit, stub.page_size)`` rows with ``next_page_token``. ``adjustment=split|dividend|all``
  serves bars adjusted from the stub's raw bars and corporate actions (see
  :meth:`AlpacaStub.adjusted_bar`, written independently of cachelib: it is the reference the
  cache's adjusted reads are compared with).
* ``GET /v1/corporate-actions`` – symbols, types, start, end, limit (default 100, max 1000),
  page_token, in Alpaca's JSON (``{"corporate_actions": {"forward_splits": [...], ...}}``),
  pages of ``min(limit, stub.corporate_actions_page_size)`` actions.
* ``GET /v2/options/contracts`` (the trading API; give the stub's URL as ``trading_url``) –
  underlying_symbols, expiration_date(_gte/_lte), type, limit (default 100, max 10000),
  page_token; the contracts of the registered snapshots plus :meth:`AlpacaStub.set_open_interest`.
* ``GET /v2/stocks/bars/latest?symbols=`` and ``GET /v2/stocks/trades/latest?symbols=``.
* ``GET /v1beta1/options/snapshots/{underlying}`` – filters expiration_date(_gte/_lte), type,
  strike_price_gte/lte, root_symbol; pages of ``min(limit, stub.option_page_size)``.

Usage::

    with AlpacaStub(page_size=5) as stub:
        stub.add_bars("AAPL", make_daily_bars("2024-01-02", 10))
        stub.add_faults("/v2/stocks/bars", 429, Fault(500), Fault.truncated())
        src = AlpacaSource("key", "secret", url_override=stub.url)
        ...
        stub.count("/v2/stocks/bars"); stub.requests[-1].headers["apca-api-key-id"]

Faults are queued per path pattern (``fnmatch`` style: ``"/v2/stocks/bars"``, ``"/v1beta1/*"``,
``"*"``) and consumed one per matching request, in order; ``None`` in a queue means "answer
normally this time". :meth:`AlpacaStub.set_persistent_fault` applies a fault to every matching
request until :meth:`AlpacaStub.clear_faults`.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")

TEST_KEY = "PKTESTKEY0123456789AB"
TEST_SECRET = "sEcReT0123456789abcdefghijklmnopqrstuvwxyz"

_ERROR_BODIES = {
    400: {"code": 40010001, "message": "invalid request"},
    401: {"code": 40110000, "message": "request is not authorized"},
    403: {"code": 40310000, "message": "forbidden"},
    404: {"code": 40410000, "message": "not found"},
    429: {"code": 42910000, "message": "rate limit exceeded"},
    500: {"code": 50010000, "message": "internal server error"},
    502: {"message": "bad gateway"},
    503: {"message": "service unavailable"},
    504: {"message": "gateway timeout"},
}


# ---------------------------------------------------------------------------
# Faults and records
# ---------------------------------------------------------------------------


@dataclass
class Fault:
    """One scripted misbehaviour.

    ``status``: answer with this HTTP status (and ``body`` or a default Alpaca-like error body)
    instead of the real answer; ``None`` keeps the real answer (useful with the options below).
    ``retry_after``: adds a ``Retry-After`` header. ``headers``: extra headers.
    ``delay``: sleep this many seconds before answering (a slow response / client timeout).
    ``truncate``: send the real 200 body cut in half (Content-Length matches the half: bad JSON).
    ``drop``: declare the full Content-Length, send half the body and close the connection.
    ``drip``: send the answer one byte every ``drip`` seconds (a stalled server that never
    trips a per-read timeout); from the status line on, or only the body if ``drip_body_only``.
    """

    status: int | None = 500
    body: str | None = None
    retry_after: float | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate: bool = False
    drop: bool = False
    drip: float = 0.0
    drip_body_only: bool = False

    @classmethod
    def http(cls, status: int, retry_after: float | str | None = None, body: Any = None) -> Fault:
        text = body if body is None or isinstance(body, str) else json.dumps(body)
        return cls(status=status, retry_after=retry_after, body=text)

    @classmethod
    def truncated(cls) -> Fault:
        return cls(status=None, truncate=True)

    @classmethod
    def dropped(cls) -> Fault:
        return cls(status=None, drop=True)

    @classmethod
    def slow(cls, seconds: float, status: int | None = None) -> Fault:
        return cls(status=status, delay=seconds)

    @classmethod
    def dripping(cls, every: float = 0.5, body_only: bool = False, status: int | None = None) -> Fault:
        """Answer normally (or with ``status``), but one byte every ``every`` seconds."""
        return cls(status=status, drip=every, drip_body_only=body_only)

    @classmethod
    def json_body(cls, payload: Any, status: int = 200) -> Fault:
        """Answer ``status`` with this JSON instead of the real answer (e.g. a wrong shape)."""
        return cls(status=status, body=json.dumps(payload))


def _as_fault(item: Fault | int | None) -> Fault | None:
    if item is None or isinstance(item, Fault):
        return item
    if isinstance(item, int):
        return Fault(status=item)
    raise TypeError(f"a fault is a Fault, an HTTP status int or None, got {item!r}")


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    time: float  # time.monotonic() on arrival
    status: int | None = None  # what the stub answered (None if the connection was dropped)


# ---------------------------------------------------------------------------
# Time helpers
# ---------------------------------------------------------------------------


def _rfc3339(value: str | datetime | date) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        return text + "Z"
    if isinstance(value, date):
        return _rfc3339(datetime.combine(value, dtime(0), tzinfo=NY))
    raise TypeError(f"cannot use {value!r} as a timestamp")


def _parse_instant(text: str) -> datetime:
    """RFC-3339 (any fraction length, Z or offset) or a bare date (UTC midnight)."""
    text = text.strip()
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), dtime(0), tzinfo=timezone.utc)
    text = text.replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:  # trim fractions beyond microseconds
        head, rest = text.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        tail = rest[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail}"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def ny_midnight_utc(day: str | date) -> datetime:
    """New York midnight of ``day`` as an aware UTC datetime (how Alpaca stamps daily bars)."""
    if isinstance(day, str):
        day = date.fromisoformat(day)
    return datetime.combine(day, dtime(0), tzinfo=NY).astimezone(timezone.utc)


def daily_bar(day: date, price: float) -> dict:
    """One daily bar as Alpaca's JSON has it, priced around ``price`` (o=price, h=price+2,
    l=price-1, c=price+1, v=1000, n=10, vw=price+0.5), stamped at New York midnight."""
    return {"t": ny_midnight_utc(day).isoformat().replace("+00:00", "Z"), "o": price, "h": price + 2,
            "l": price - 1, "c": price + 1, "v": 1000, "n": 10, "vw": price + 0.5}


def make_daily_bars(
    start: str | date,
    days: int,
    price: float = 100.0,
    step: float = 1.0,
    integral: bool = False,
    skip_weekends: bool = True,
) -> list[dict]:
    """``days`` daily bars from ``start`` stamped at New York midnight in UTC (04:00Z/05:00Z).

    ``integral=True`` makes every price a JSON integer (as Alpaca sends integral prices).
    """
    day = date.fromisoformat(start) if isinstance(start, str) else start
    out: list[dict] = []
    while len(out) < days:
        if not (skip_weekends and day.weekday() >= 5):
            p = price + step * len(out)
            o, h, l, c = p, p + 2, p - 1, p + 1
            if integral:
                o, h, l, c = (int(round(x)) for x in (o, h, l, c))
            out.append({
                "t": _rfc3339(ny_midnight_utc(day)),
                "o": o, "h": h, "l": l, "c": c,
                "v": 1_000_000 + len(out), "n": 5000 + len(out),
                "vw": (int(round(p + 0.5)) if integral else round(p + 0.5, 4)),
            })
        day += timedelta(days=1)
    return out


def make_minute_bars(
    day: str | date,
    start_et: str = "09:30",
    end_et: str = "16:00",
    every_minutes: int = 1,
    price: float = 50.0,
) -> list[dict]:
    """Minute bars on New York ``day`` from ``start_et`` (inclusive) to ``end_et`` (exclusive)."""
    day = date.fromisoformat(day) if isinstance(day, str) else day
    h0, m0 = map(int, start_et.split(":"))
    h1, m1 = map(int, end_et.split(":"))
    current = datetime.combine(day, dtime(h0, m0), tzinfo=NY)
    stop = datetime.combine(day, dtime(h1, m1), tzinfo=NY)
    out = []
    while current < stop:
        p = round(price + 0.01 * len(out), 2)
        out.append({
            "t": _rfc3339(current), "o": p, "h": p + 0.05, "l": p - 0.05, "c": p + 0.01,
            "v": 100 + len(out), "n": 3, "vw": p,
        })
        current += timedelta(minutes=every_minutes)
    return out


def make_option_snapshot(
    bid: float | None = 1.0,
    ask: float | None = 1.2,
    last: float | None = 1.1,
    quote_time: str | datetime | None = "2024-01-19T20:59:59.123456789Z",
    iv: float | None = 0.25,
    greeks: dict | None = None,
    daily_volume: int | None = None,
) -> dict:
    """One option snapshot as Alpaca sends it (keys the SDK's OptionsSnapshot parses)."""
    snap: dict[str, Any] = {}
    if bid is not None or ask is not None:
        snap["latestQuote"] = {
            "t": _rfc3339(quote_time) if quote_time is not None else "2024-01-19T20:59:59Z",
            "ax": "C", "ap": ask if ask is not None else 0, "as": 10,
            "bx": "X", "bp": bid if bid is not None else 0, "bs": 12, "c": "A",
        }
    if last is not None:
        snap["latestTrade"] = {
            "t": "2024-01-19T20:45:00.5Z", "x": "C", "p": last, "s": 1, "c": "I",
        }
    if iv is not None:
        snap["impliedVolatility"] = iv
    if greeks is None:
        greeks = {"delta": 0.5, "gamma": 0.05, "rho": 0.01, "theta": -0.1, "vega": 0.2}
    if greeks:
        snap["greeks"] = greeks
    if daily_volume is not None:
        snap["dailyBar"] = {
            "t": "2024-01-19T05:00:00Z", "o": 1, "h": 1.5, "l": 0.9, "c": 1.1,
            "v": daily_volume, "n": 10, "vw": 1.05,
        }
    return snap


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AlpacaStub/1.0"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed ACKs
    stub: AlpacaStub

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.stub._handle(self)

    def _write(self, status: int, body: bytes, headers: dict[str, str] | None = None,
               declared_length: int | None = None, close: bool = False) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body) if declared_length is None else declared_length))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            if close:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


    def _drip(self, status: int, body: bytes, headers: dict[str, str] | None, every: float,
              body_only: bool, stop: threading.Event) -> None:
        """Write the whole answer slowly: one byte, then ``every`` seconds, until done or the
        client hangs up (or the stub stops)."""
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                "Content-Type: application/json; charset=utf-8", f"Content-Length: {len(body)}",
                "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw_head = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        try:
            if body_only:
                self.wfile.write(raw_head)
                self.wfile.flush()
                raw = body
            else:
                raw = raw_head + body
            for i in range(len(raw)):
                self.wfile.write(raw[i:i + 1])
                self.wfile.flush()
                if stop.wait(every):
                    break
        except OSError:
            pass
        self.close_connection = True


class AlpacaStub:
    """A threaded loopback server with in-memory Alpaca market data, faults and request records.

    ``repeat_page_token``: when set, every paginated answer (bars, option chain) serves its first
    page with this ``next_page_token``, whatever token the client sent (a broken pager).
    ``endless_empty_pages``: when true, every paginated answer holds no data and a new
    ``next_page_token`` each time (a pager that never repeats itself and never ends).
    """

    def __init__(
        self,
        page_size: int = 10_000,
        option_page_size: int = 1_000,
        api_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.page_size = page_size
        self.option_page_size = option_page_size
        self.repeat_page_token: str | None = None
        self.endless_empty_pages = False
        self._empty_pages_served = 0
        # When set, requests whose APCA-API-KEY-ID/SECRET headers differ get a 401.
        self.api_key = api_key
        self.secret_key = secret_key
        self._bars: dict[str, dict[str, list[tuple[datetime, dict]]]] = {}
        #: Feed-specific bars: feed -> timeframe -> symbol -> [(time, bar)].
        self._feed_bars: dict[str, dict[str, dict[str, list[tuple[datetime, dict]]]]] = {}
        self._latest_bars: dict[str, dict] = {}
        self._latest_trades: dict[str, dict] = {}
        self._options: dict[str, dict[str, dict]] = {}
        self._actions: list[tuple[str, dict]] = []  # (Alpaca list key, item) in insertion order
        self._open_interest: dict[str, tuple[Any, Any]] = {}  # contract -> (open_interest, date)
        self.corporate_actions_page_size = 1_000
        self.option_contracts_page_size = 10_000
        #: Adjusted bars apply the actions with ex_date <= adjust_as_of (None: all of them).
        self.adjust_as_of: date | None = None
        self._faults: dict[str, deque] = {}
        self._persistent: dict[str, Fault] = {}
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> AlpacaStub:
        handler = type("AlpacaStubHandler", (_Handler,), {"stub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="alpaca-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> AlpacaStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to give alpaca-py (``url_override`` / ``APCA_API_DATA_URL``)."""
        if self._server is None:
            raise RuntimeError("the stub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- data ------------------------------------------------------------------------------

    def add_bars(self, symbol: str, bars: Iterable[dict], timeframe: str = "1Day", feed: str | None = None) -> None:
        """Register bars (dicts with ``t o h l c v n vw``; ``t`` a str, datetime or date);
        with ``feed``, served only to requests for that feed (``feed=iex``, ``feed=sip``...)."""
        books = self._bars if feed is None else self._feed_bars.setdefault(feed, {})
        book = books.setdefault(timeframe, {}).setdefault(symbol.upper(), [])
        for bar in bars:
            bar = dict(bar)
            bar["t"] = _rfc3339(bar["t"])
            book.append((_parse_instant(bar["t"]), bar))
        book.sort(key=lambda item: item[0])

    def set_latest_bar(self, symbol: str, bar: dict) -> None:
        bar = dict(bar)
        bar["t"] = _rfc3339(bar["t"])
        self._latest_bars[symbol.upper()] = bar

    def set_latest_trade(self, symbol: str, price: float, size: float = 100,
                         t: str | datetime = "2024-01-19T20:59:59.987654321Z", **extra: Any) -> None:
        self._latest_trades[symbol.upper()] = {
            "t": _rfc3339(t), "x": "V", "p": price, "s": size, "c": ["@"], "i": 52983525029461, "z": "C",
            **extra,
        }

    def add_option_snapshots(self, underlying: str, snapshots: dict[str, dict]) -> None:
        """Register ``{contract_symbol: snapshot}`` for ``underlying`` (see make_option_snapshot)."""
        self._options.setdefault(underlying.upper(), {}).update(snapshots)

    # -- corporate actions -----------------------------------------------------------------

    def add_corporate_action(self, list_key: str, item: dict) -> None:
        """Register one action as Alpaca sends it: ``list_key`` e.g. ``"forward_splits"``,
        ``item`` its JSON object (any content: hostile tests send broken ones)."""
        self._actions.append((list_key, dict(item)))

    def add_split(self, symbol: str, ex_date: str | date, new_rate: float, old_rate: float) -> None:
        """A forward (new_rate > old_rate) or reverse split; 4:1 is ``new_rate=4, old_rate=1``."""
        key = "forward_splits" if new_rate > old_rate else "reverse_splits"
        ex = _day(ex_date)
        item: dict[str, Any] = {
            "id": _uuid(f"{symbol}-{key}-{ex}"), "symbol": symbol.upper(), "new_rate": new_rate,
            "old_rate": old_rate, "process_date": (ex + timedelta(days=1)).isoformat(),
            "ex_date": ex.isoformat(), "record_date": (ex - timedelta(days=7)).isoformat(),
            "payable_date": (ex - timedelta(days=3)).isoformat(),
        }
        if key == "forward_splits":
            item["cusip"] = "000000000"
        else:
            item["old_cusip"], item["new_cusip"] = "000000000", "000000001"
        self.add_corporate_action(key, item)

    def add_cash_dividend(self, symbol: str, ex_date: str | date, rate: float, special: bool = False) -> None:
        """A cash dividend of ``rate`` per share."""
        ex = _day(ex_date)
        self.add_corporate_action("cash_dividends", {
            "id": _uuid(f"{symbol}-div-{ex}-{rate}-{special}"), "symbol": symbol.upper(), "cusip": "000000000",
            "rate": rate, "special": special, "foreign": False, "process_date": ex.isoformat(),
            "ex_date": ex.isoformat(), "record_date": ex.isoformat(),
            "payable_date": (ex + timedelta(days=14)).isoformat(),
        })

    def add_stock_dividend(self, symbol: str, ex_date: str | date, rate: float) -> None:
        """A stock dividend of ``rate`` new shares per share (0.05: 5 %)."""
        ex = _day(ex_date)
        self.add_corporate_action("stock_dividends", {
            "id": _uuid(f"{symbol}-sd-{ex}"), "symbol": symbol.upper(), "cusip": "000000000", "rate": rate,
            "process_date": ex.isoformat(), "ex_date": ex.isoformat(), "record_date": ex.isoformat(),
            "payable_date": ex.isoformat(),
        })

    def add_name_change(self, old_symbol: str, new_symbol: str, process_date: str | date) -> None:
        day = _day(process_date)
        self.add_corporate_action("name_changes", {
            "id": _uuid(f"{old_symbol}-{new_symbol}-{day}"), "old_symbol": old_symbol.upper(),
            "old_cusip": "000000000", "new_symbol": new_symbol.upper(), "new_cusip": "000000001",
            "process_date": day.isoformat(),
        })

    def set_open_interest(self, contract: str, open_interest: Any, open_interest_date: Any = None) -> None:
        """Open interest of ``contract`` in the contracts listing (sent as given: Alpaca sends a
        string such as ``"1234"``; hostile tests send anything)."""
        self._open_interest[contract.upper()] = (open_interest, open_interest_date)

    # -- faults ----------------------------------------------------------------------------

    def add_faults(self, pattern: str, *faults: Fault | int | None) -> None:
        """Queue faults (Fault, an HTTP status int, or None = answer normally) for a path pattern."""
        with self._lock:
            self._faults.setdefault(pattern, deque()).extend(_as_fault(f) for f in faults)

    add_fault = add_faults

    def set_persistent_fault(self, pattern: str, fault: Fault | int) -> None:
        """Apply ``fault`` to every matching request (after queued faults run out)."""
        with self._lock:
            self._persistent[pattern] = _as_fault(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._persistent.clear()

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for pattern, queue in self._faults.items():
                if queue and fnmatch.fnmatchcase(path, pattern):
                    return queue.popleft()
            for pattern, fault in self._persistent.items():
                if fnmatch.fnmatchcase(path, pattern):
                    return fault
        return None

    # -- records ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def count(self, pattern: str | None = None) -> int:
        """Requests received, optionally only those whose path matches ``pattern`` (fnmatch)."""
        with self._lock:
            if pattern is None:
                return len(self._requests)
            return sum(1 for r in self._requests if fnmatch.fnmatchcase(r.path, pattern))

    def counts(self) -> dict[str, int]:
        """``{path: requests}``."""
        out: dict[str, int] = {}
        for r in self.requests:
            out[r.path] = out.get(r.path, 0) + 1
        return out

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- request handling ------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        record = RecordedRequest(
            method="GET", path=path, params=params,
            headers={k.lower(): v for k, v in h.headers.items()}, time=time.monotonic(),
        )
        with self._lock:
            self._requests.append(record)

        fault = self._next_fault(path)
        if fault is not None and fault.delay and self._stop.wait(fault.delay):
            return

        if self.api_key is not None and (
            record.headers.get("apca-api-key-id") != self.api_key
            or record.headers.get("apca-api-secret-key") != self.secret_key
        ):
            record.status = 401
            h._write(401, json.dumps(_ERROR_BODIES[401]).encode())
            return

        if fault is not None and fault.status is not None:
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            body = fault.body if fault.body is not None else json.dumps(
                _ERROR_BODIES.get(fault.status, {"message": f"HTTP {fault.status}"}))
            record.status = fault.status
            if fault.drip:
                h._drip(fault.status, body.encode(), headers, fault.drip, fault.drip_body_only, self._stop)
                return
            h._write(fault.status, body.encode(), headers)
            return

        try:
            status, payload = self._route(path, params)
        except _BadRequest as exc:
            status, payload = 400, {"code": 40010001, "message": str(exc)}
        body = json.dumps(payload).encode()
        if fault is not None and fault.drip:
            record.status = status
            h._drip(status, body, dict(fault.headers), fault.drip, fault.drip_body_only, self._stop)
            return
        if fault is not None and fault.truncate:
            record.status = status
            h._write(status, body[: len(body) // 2])
            return
        if fault is not None and fault.drop:
            record.status = None
            h._write(status, body[: len(body) // 2], declared_length=len(body), close=True)
            return
        record.status = status
        h._write(status, body)

    def _route(self, path: str, params: dict[str, str]) -> tuple[int, dict]:
        if path == "/v2/stocks/bars":
            return 200, self._serve_bars(params)
        if path == "/v2/stocks/bars/latest":
            symbols = _symbols(params)
            return 200, {"bars": {s: self._latest_bar(s) for s in symbols if self._latest_bar(s)}}
        if path == "/v2/stocks/trades/latest":
            symbols = _symbols(params)
            return 200, {"trades": {s: self._latest_trades[s] for s in symbols if s in self._latest_trades}}
        prefix = "/v1beta1/options/snapshots/"
        if path.startswith(prefix) and len(path) > len(prefix):
            return 200, self._serve_chain(path[len(prefix):].upper(), params)
        if path == "/v1/corporate-actions":
            return 200, self._serve_actions(params)
        if path == "/v2/options/contracts":
            return 200, self._serve_contracts(params)
        return 404, {"code": 40410000, "message": "Not Found"}

    # -- corporate actions and adjusted bars (plain loops: an independent reference) ----------

    @staticmethod
    def _action_day(key: str, item: dict) -> date | None:
        text = item.get("process_date" if key == "name_changes" else "ex_date")
        try:
            return date.fromisoformat(text) if isinstance(text, str) else None
        except ValueError:
            return None

    def _serve_actions(self, params: dict[str, str]) -> dict:
        wanted = set(_symbols(params)) if params.get("symbols") else None
        types = {t.strip() for t in params.get("types", "").split(",") if t.strip()}
        start = date.fromisoformat(params["start"]) if params.get("start") else None
        end = date.fromisoformat(params["end"]) if params.get("end") else None
        rows = []
        for key, item in self._actions:
            if types and key.rstrip("s") not in types:
                continue
            names = {item.get("old_symbol"), item.get("new_symbol")} if key == "name_changes" else {item.get("symbol")}
            if wanted is not None and not (names & wanted):
                continue
            day = self._action_day(key, item)
            if day is not None and ((start and day < start) or (end and day > end)):
                continue
            rows.append((day or date.min, key, item))
        rows.sort(key=lambda r: (r[0], r[1]))
        if self.endless_empty_pages:
            return {"corporate_actions": {}, "next_page_token": self._fresh_token()}
        page, token = self._page(rows, params, default_limit=100, max_limit=1000,
                                 size=self.corporate_actions_page_size, repeat=self.repeat_page_token)
        out: dict[str, list] = {}
        for _, key, item in page:
            out.setdefault(key, []).append(item)
        return {"corporate_actions": out, "next_page_token": token}

    def _serve_contracts(self, params: dict[str, str]) -> dict:
        underlyings = {s.strip().upper() for s in params.get("underlying_symbols", "").split(",") if s.strip()}
        gte, lte = params.get("expiration_date_gte"), params.get("expiration_date_lte")
        contracts = {c for chain in self._options.values() for c in chain} | set(self._open_interest)
        rows = []
        for contract in sorted(contracts):
            root, expiration, kind, strike = _occ(contract)
            if underlyings and root not in underlyings:
                continue
            if (gte and expiration < date.fromisoformat(gte)) or (lte and expiration > date.fromisoformat(lte)):
                continue
            if params.get("type") and params["type"] != kind:
                continue
            interest, when = self._open_interest.get(contract, (None, None))
            rows.append({
                "id": _uuid(contract), "symbol": contract,
                "name": f"{root} {expiration:%b %d %Y} {strike:g} {kind.title()}", "status": "active",
                "tradable": True, "expiration_date": expiration.isoformat(), "root_symbol": root,
                "underlying_symbol": root, "underlying_asset_id": "00000000-0000-4000-8000-000000000001",
                "type": kind, "style": "american", "strike_price": f"{strike:g}", "size": "100",
                "open_interest": interest, "open_interest_date": when,
                "close_price": None, "close_price_date": None,
            })
        if self.endless_empty_pages:
            return {"option_contracts": [], "next_page_token": self._fresh_token()}
        page, token = self._page(rows, params, default_limit=100, max_limit=10_000,
                                 size=self.option_contracts_page_size, repeat=self.repeat_page_token)
        return {"option_contracts": page, "next_page_token": token}

    def _split_ratios(self, symbol: str) -> list[tuple[date, float]]:
        """``(ex_date, shares after / shares before)`` of the symbol's split-like actions."""
        out = []
        for key, item in self._actions:
            if key not in ("forward_splits", "reverse_splits", "stock_dividends") or item.get("symbol") != symbol:
                continue
            ex = self._action_day(key, item)
            if ex is None or (self.adjust_as_of is not None and ex > self.adjust_as_of):
                continue
            ratio = 1.0 + item["rate"] if key == "stock_dividends" else item["new_rate"] / item["old_rate"]
            out.append((ex, ratio))
        return out

    def _dividend_factors(self, symbol: str, timeframe: str) -> list[tuple[date, float]]:
        """``(ex_date, 1 - D / C)`` of the symbol's cash dividends, C the raw close of the last
        session before the ex-date (from the daily bars, else from the bars being served)."""
        out = []
        for key, item in self._actions:
            if key != "cash_dividends" or item.get("symbol") != symbol:
                continue
            ex = self._action_day(key, item)
            if ex is None or (self.adjust_as_of is not None and ex > self.adjust_as_of):
                continue
            previous = None
            for book in (self._bars.get("1Day", {}), self._bars.get(timeframe, {})):
                for ts, bar in book.get(symbol, []):
                    if ts.astimezone(NY).date() < ex:
                        previous = bar["c"]
                if previous is not None:
                    break
            if previous is not None:
                out.append((ex, 1.0 - item["rate"] / previous))
        return out

    def adjusted_bar(self, symbol: str, bar: dict, adjustment: str, timeframe: str = "1Day") -> dict:
        """``bar`` (raw) adjusted as Alpaca would: prices divided by the product of the ratios of
        later split-like actions and multiplied by ``1 - D/C`` of later cash dividends; volume
        multiplied by the split product. ``adjustment``: raw, split, dividend or all."""
        if adjustment == "raw":
            return bar
        day = _parse_instant(bar["t"]).astimezone(NY).date()
        price_factor, volume_factor = 1.0, 1.0
        if adjustment in ("split", "all"):
            for ex, ratio in self._split_ratios(symbol):
                if day < ex:
                    price_factor /= ratio
                    volume_factor *= ratio
        if adjustment in ("dividend", "all"):
            for ex, factor in self._dividend_factors(symbol, timeframe):
                if day < ex:
                    price_factor *= factor
        out = dict(bar)
        for key in ("o", "h", "l", "c", "vw"):
            if out.get(key) is not None:
                out[key] = out[key] * price_factor
        out["v"] = out["v"] * volume_factor
        return out

    def _latest_bar(self, symbol: str) -> dict | None:
        if symbol in self._latest_bars:
            return self._latest_bars[symbol]
        minutes = self._bars.get("1Min", {}).get(symbol)
        return minutes[-1][1] if minutes else None

    def _serve_bars(self, params: dict[str, str]) -> dict:
        symbols = _symbols(params)
        timeframe = params.get("timeframe")
        if not timeframe:
            raise _BadRequest("timeframe is required")
        start = _parse_instant(params["start"]) if params.get("start") else None
        end = _parse_instant(params["end"]) if params.get("end") else None
        descending = params.get("sort", "asc") == "desc"
        adjustment = params.get("adjustment", "raw")
        if adjustment not in ("raw", "split", "dividend", "all"):
            raise _BadRequest(f"invalid adjustment {adjustment!r}")
        feed_books = self._feed_bars.get(params.get("feed", ""), {})
        book = feed_books[timeframe] if timeframe in feed_books else self._bars.get(timeframe, {})
        rows: list[tuple[str, dict]] = []
        for sym in sorted(set(symbols)):
            series = [self.adjusted_bar(sym, bar, adjustment, timeframe) for ts, bar in book.get(sym, [])
                      if (start is None or ts >= start) and (end is None or ts <= end)]
            if descending:
                series.reverse()
            rows.extend((sym, bar) for bar in series)
        if self.endless_empty_pages:
            return {"bars": {}, "next_page_token": self._fresh_token()}
        page, token = self._page(rows, params, default_limit=1000, max_limit=10_000, size=self.page_size,
                                 repeat=self.repeat_page_token)
        bars: dict[str, list] = {}
        for sym, bar in page:
            bars.setdefault(sym, []).append(bar)
        return {"bars": bars, "next_page_token": token}

    def _serve_chain(self, underlying: str, params: dict[str, str]) -> dict:
        chain = self._options.get(underlying, {})
        gte = params.get("expiration_date_gte")
        lte = params.get("expiration_date_lte")
        exact = params.get("expiration_date")
        kind = params.get("type")
        strike_gte = float(params["strike_price_gte"]) if params.get("strike_price_gte") else None
        strike_lte = float(params["strike_price_lte"]) if params.get("strike_price_lte") else None
        root = params.get("root_symbol")
        rows = []
        for contract in sorted(chain):
            c_root, expiration, c_kind, strike = _occ(contract)
            if gte and expiration < date.fromisoformat(gte):
                continue
            if lte and expiration > date.fromisoformat(lte):
                continue
            if exact and expiration != date.fromisoformat(exact):
                continue
            if kind and kind != c_kind:
                continue
            if strike_gte is not None and strike < strike_gte:
                continue
            if strike_lte is not None and strike > strike_lte:
                continue
            if root and root.upper() != c_root:
                continue
            rows.append((contract, chain[contract]))
        if self.endless_empty_pages:
            return {"snapshots": {}, "next_page_token": self._fresh_token()}
        page, token = self._page(rows, params, default_limit=100, max_limit=1000, size=self.option_page_size,
                                 repeat=self.repeat_page_token)
        return {"snapshots": dict(page), "next_page_token": token}

    def _fresh_token(self) -> str:
        with self._lock:
            self._empty_pages_served += 1
            return f"empty-{self._empty_pages_served}"

    @staticmethod
    def _page(rows: list, params: dict[str, str], default_limit: int, max_limit: int,
              size: int, repeat: str | None = None) -> tuple[list, str | None]:
        try:
            limit = int(params.get("limit") or default_limit)
        except ValueError:
            raise _BadRequest("invalid limit") from None
        if not 1 <= limit <= max_limit:
            raise _BadRequest(f"limit must be between 1 and {max_limit}")
        if repeat is not None:  # a broken pager: always the first page, always the same token
            return rows[: min(limit, size)], repeat
        offset = 0
        if params.get("page_token"):
            try:
                offset = int(json.loads(base64.urlsafe_b64decode(params["page_token"]))["offset"])
            except (ValueError, KeyError, TypeError):
                raise _BadRequest("invalid page_token") from None
        per_page = min(limit, size)
        page = rows[offset: offset + per_page]
        nxt = offset + per_page
        token = base64.urlsafe_b64encode(json.dumps({"offset": nxt}).encode()).decode() if nxt < len(rows) else None
        return page, token


class _BadRequest(Exception):
    pass


def _symbols(params: dict[str, str]) -> list[str]:
    raw = params.get("symbols", "")
    symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
    if not symbols:
        raise _BadRequest("symbols is required")
    return symbols


def _uuid(text: str) -> str:
    """A stable UUID for a stub record (Alpaca's ids are UUIDs; the SDK's models insist)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, text))


def _day(value: str | date) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


def _occ(contract: str) -> tuple[str, date, str, float]:
    body = contract[-15:]
    root = contract[:-15]
    expiration = date(2000 + int(body[:2]), int(body[2:4]), int(body[4:6]))
    kind = "call" if body[6] == "C" else "put"
    return root, expiration, kind, int(body[7:]) / 1000.0


# ---------------------------------------------------------------------------
# pytest helpers
# ---------------------------------------------------------------------------


def alpaca_env(monkeypatch: Any, stub: AlpacaStub, key: str = TEST_KEY, secret: str = TEST_SECRET) -> None:
    """Point alpaca-py at ``stub`` via APCA_API_DATA_URL and APCA_API_BASE_URL (the trading API,
    for option contracts) and set APCA_* keys (ALPACA_* removed)."""
    monkeypatch.setenv("APCA_API_DATA_URL", stub.url)
    monkeypatch.setenv("APCA_API_BASE_URL", stub.url)
    monkeypatch.setenv("APCA_API_KEY_ID", key)
    monkeypatch.setenv("APCA_API_SECRET_KEY", secret)
    monkeypatch.delenv("ALPACA_API_KEY", raising=False)
    monkeypatch.delenv("ALPACA_SECRET_KEY", raising=False)


def alpaca_stub_fixture(scope: str = "function", name: str = "alpaca_stub", **stub_kwargs: Any):
    """A pytest fixture yielding a started :class:`AlpacaStub` (stopped afterwards).

    In a conftest or test module: ``alpaca_stub = alpaca_stub_fixture()``.
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _fixture():
        with AlpacaStub(**stub_kwargs) as stub:
            yield stub

    return _fixture


AMBIENT_KEY_VARS = ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY",
                    "APCA_API_DATA_URL", "APCA_API_BASE_URL")


def no_ambient_keys_fixture():
    """An autouse fixture that hides the developer's Alpaca variables from each test."""
    import pytest

    @pytest.fixture(autouse=True, name="_no_ambient_keys")
    def _fixture(monkeypatch):
        for var in AMBIENT_KEY_VARS:
            monkeypatch.delenv(var, raising=False)

    return _fixture


class Sleeps(list):
    """A sleep() that records instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
