"""The demo market-data source: deterministic, realistic-looking synthetic US stock data.

:class:`DemoSource` is the embedded default source (users without Alpaca keys, and every test).
It speaks the same protocol as the Alpaca source (``get_bars``, ``get_option_chain``,
``get_latest_bar``, ``get_latest_trade``, ``get_corporate_actions``) and needs no network.

**Corporate actions.** Bars are *raw*, as a vendor's unadjusted bars: NVDA has a 4:1 forward
split with ex-date 2024-06-10 (:data:`DEMO_SPLITS`), so its raw prices before that day are 4x
the split-adjusted model path (about 490 $ in January 2024, about 120 $ after the split) and its
raw volumes 1/4 of it; AAPL and KO pay quarterly cash dividends (:data:`DEMO_DIVIDENDS`).
:meth:`DemoSource.get_corporate_actions` lists them, so the cache can adjust the demo's bars
exactly as it adjusts Alpaca's.

The model
---------
**Calendar.** Bars exist only for NYSE (XNYS) sessions, taken from :mod:`cachelib.market_hours`:
390 one-minute bars 09:30-15:59 ET on a full day, 210 (09:30-12:59) on an early close, none on
weekends and holidays. Timestamps follow Alpaca: intraday bars are stamped with their start
instant (UTC), daily bars with New York midnight expressed in UTC (05:00Z winter, 04:00Z summer).

**Per-symbol personality** (seed independent, from ``crc32(symbol)``; a few well-known tickers
get their approximate early-2024 price and volatility): a reference price (20-500 $ at
2024-01-01), an annual volatility (15-60 %), a small drift, an average daily volume, an average
trade size and an option-skew shape.

**Daily closes** (depend on the seed): the log close on the *i*-th weekday counted from
2024-01-01 is ``log(ref_price) + trend(i) + x_i`` where ``x`` is a slowly mean-reverting AR(1)
(Ornstein-Uhlenbeck) walk with the symbol's daily volatility, ``x = 0`` on 2024-01-01, simulated
forward and backward from there in fixed blocks of 512 weekdays, each block with its own random
stream ``(seed, symbol, direction, block)``. So any day's close is reachable at random access
(the path is cached per symbol, vectorised, a few hundred microseconds for 30 years) and prices
stay in a plausible range whatever the date. Holidays are weekdays without a session: their
step is simply folded into the next session's move.

**Intraday path** (a Brownian bridge): each session opens at the previous session's close times
a small overnight gap (partly in the direction of the day's move, capped at 2 %) and ends exactly
at that day's daily close. In between, the minute path is a Brownian bridge whose per-minute
variance follows a U-shape (busier after the open and before the close). Minute bar high/low
extend beyond open/close by random excursions; prices are rounded to cents and OHLC made
consistent *after* rounding; the vwap is the typical price (high + low + close) / 3 nudged
towards the longer wick, 4 decimals, always within [low, high]; volumes are positive integers
(stored as float) following a U-shaped intraday profile (about 2.5x busier in the first and last
half hours than at midday, plus a closing bump) with lognormal noise; trade counts are positive
integers no larger than the volume.

**Randomness and determinism.** Minute-level draws for a symbol come in calendar-year blocks
from ``numpy.random.default_rng([seed, crc32(symbol), 3, year])``: one 64-bit word per weekday
minute, split into 8/16-bit fields mapped through quantile tables (much cheaper than drawing
variates), plus a few day-level normals. Every computation is row-wise per day (per-day
exponentials use ``math.exp``), so a day's bars depend only on ``(seed, symbol, day)``, never
on the range that was requested: a sub-range is exactly a slice of a larger range. Internally
prices are simulated as whole float32 cents and converted to dollars (``cents / 100``) on output.
Aggregated timeframes are computed from the 1-minute bars:
``5Min/15Min/30Min/1Hour`` are bucketed from the session open (1Hour: 09:30, 10:30, ...; the
last bucket of a day may be shorter) and ``1Day`` is the whole session (open = first open,
high = max high, low = min low, close = last close, volume and trade_count = sums, vwap = the
volume-weighted mean of the minute vwaps). Daily bars are cached per (seed, symbol, month),
process-wide.

**Time.** "Now" is read only through :func:`cachelib.clock.now_utc` (so freezegun controls it),
unless a fixed ``now`` is passed to the constructor. Only *completed* bars are returned: during
a session, today's minute bars stop at the last finished minute, a 5Min/1Hour bucket appears
once it is complete, and today's daily bar appears only after the close. Future sessions have
no bars.

**Option chains** (a snapshot "as of now"): the snapshot time is now clamped to the end of the
last completed minute (or the close of the current/previous session when the market is shut);
spot is that minute's close. Strikes cover spot +-20 % in steps of 0.5 (spot < 10), 1 (< 50),
2.5 (< 100), 5 (< 500) or 10. Expirations: the next 4 weekly Fridays and the third Fridays of
the next 3 months (strictly after the snapshot date; a Friday holiday moves to the previous
session). Implied volatility follows a smile ``iv = base * term(T) + a*m**2 - skew*m`` with
``m = ln(K/S)``, clipped to [0.05, 3]. Prices and greeks are Black-Scholes (see
:func:`black_scholes`) with r = 4 % and no dividends, T in years of 365 days to the expiration
day's close. Quotes are the theoretical price +- half a spread, floored/ceiled to the tick
(0.01 under 3 $, 0.05 above); bid >= 0, ask - bid >= 0.01, last within [bid, ask]; volume and
open interest are deterministic integers (open interest peaks at the money and on monthlies;
volume grows through the session). Greek conventions: ``theta`` per calendar day, ``vega`` per
1 volatility point, ``rho`` per 1 % of rate; deltas are kept at least 1e-6 inside (0, 1) / (-1, 0).
Put-call parity ``C - P = S - K exp(-rT)`` holds exactly on the theoretical prices, and on the
quoted mids within the half-spreads.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd

from cachelib import market_hours as mh
from cachelib.bars import (
    BAR_COLUMNS,
    NY,
    OPTION_COLUMNS,
    normalize_symbol,
    normalize_symbols,
    occ_symbol,
    parse_timeframe,
    to_date,
)
from cachelib.clock import now_utc
from cachelib.sources import OPTION_CHAIN_COLUMNS

__all__ = [
    "ANNOUNCE_DAYS",
    "DEMO_DIVIDENDS",
    "DEMO_SPLITS",
    "DEFAULT_SYMBOLS",
    "DEMO_TIMEFRAMES",
    "RISK_FREE_RATE",
    "DemoSource",
    "black_scholes",
]

#: Constant risk-free rate (annual, continuously compounded) used for option prices.
RISK_FREE_RATE = 0.04
#: Timeframes the demo source serves (anything else raises ``ValueError``).
DEMO_TIMEFRAMES: tuple[str, ...] = ("1Min", "5Min", "15Min", "30Min", "1Hour", "1Day")
#: A handy universe of well-known tickers (the source serves any valid symbol unless restricted).
DEFAULT_SYMBOLS: tuple[str, ...] = (
    "SPY", "QQQ", "IWM", "DIA", "AAPL", "MSFT", "AMZN", "GOOGL", "META", "TSLA",
    "NVDA", "AMD", "NFLX", "JPM", "XOM", "KO",
)

# Approximate (price at 2024-01-01, annual volatility, average daily volume) of a few tickers,
# so that charts of familiar names look familiar. Everything else comes from the symbol's hash.
_KNOWN: dict[str, tuple[float, float, float]] = {
    "SPY": (475.0, 0.13, 75e6),
    "QQQ": (405.0, 0.18, 45e6),
    "IWM": (200.0, 0.21, 30e6),
    "DIA": (375.0, 0.13, 3e6),
    "AAPL": (190.0, 0.23, 55e6),
    "MSFT": (375.0, 0.24, 22e6),
    "AMZN": (150.0, 0.32, 45e6),
    "GOOGL": (140.0, 0.30, 28e6),
    "GOOG": (141.0, 0.30, 20e6),
    "META": (350.0, 0.38, 17e6),
    "TSLA": (245.0, 0.55, 100e6),
    "NVDA": (122.5, 0.50, 180e6),  # split-adjusted: raw 490 $ and 45 M shares before its split
    "AMD": (145.0, 0.50, 55e6),
    "NFLX": (485.0, 0.38, 5e6),
    "JPM": (170.0, 0.22, 9e6),
    "XOM": (100.0, 0.25, 17e6),
    "KO": (59.0, 0.14, 13e6),
}

_ORIGIN = date(2024, 1, 1)  # a Monday: weekday index 0, where the daily path is anchored
_EARLIEST = date(1990, 1, 2)  # the trading calendar starts in 1990
_WEEKDAYS_PER_YEAR = 261.0
_BLOCK = 512  # weekdays per block of the daily path
_PHI = math.exp(-1.0 / (2 * _WEEKDAYS_PER_YEAR))  # AR(1) coefficient: ~2-year mean reversion
_MAX_MIN = 390
_NS_MIN = 60_000_000_000
_NS_DAY = 86_400 * 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SUPPORTED = {(1, "Min"): 1, (5, "Min"): 5, (15, "Min"): 15, (30, "Min"): 30, (1, "Hour"): 60, (1, "Day"): 0}
_FLOAT_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")
_PRICE_COLUMNS = ("open", "high", "low", "close")
_CHUNK = 64  # sessions simulated at a time (keeps the working set in the CPU cache)

# Process-wide caches (the data depend only on (seed, symbol, day), so instances share them).
_CACHE_LOCK = threading.RLock()
_SYMBOL_CACHE_SIZE = 20_000  # (seed, symbol) -> parameters and daily path
_DAILY_CACHE_MONTHS = 30_000  # (seed, symbol, month) -> daily bars (~0.6 KB each)


# ---------------------------------------------------------------------------
# Small numeric helpers
# ---------------------------------------------------------------------------


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation, |rel. error| < 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
         1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
         6.680131188771972e01, -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
         -2.549671010506202e00, 4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    p = np.asarray(p, dtype="float64")
    out = np.empty_like(p)
    lo = p < 0.02425
    hi = p > 1 - 0.02425
    mid = ~(lo | hi)
    q = p[mid] - 0.5
    r = q * q
    out[mid] = ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
                / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1))
    for mask, sign, pp in ((lo, 1.0, p[lo]), (hi, -1.0, 1 - p[hi])):
        q = np.sqrt(-2 * np.log(pp))
        out[mask] = sign * ((((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
                            / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1))
    return out


# Quantile tables indexed by a 16-bit random field: uniform, standard normal, half-normal,
# mean-one lognormal. Looking a field up is far cheaper than drawing a fresh variate.
_U16 = (np.arange(65536, dtype="float64") + 0.5) / 65536.0
_LUT_NORMAL = _norm_ppf(_U16)
_LUT_NORMAL /= _LUT_NORMAL.std()
_LUT_LOGN = np.exp(0.45 * _LUT_NORMAL - 0.5 * 0.45**2).astype("float32")
_LUT_NORMAL = _LUT_NORMAL.astype("float32")

_erfc = np.frompyfunc(math.erfc, 1, 1)
_exp_obj = np.frompyfunc(math.exp, 1, 1)


def _exp(x: np.ndarray) -> np.ndarray:
    """Element-wise ``math.exp``: bit-identical for a value wherever it sits in the array."""
    return np.asarray(_exp_obj(np.asarray(x, dtype="float64")), dtype="float64")


def _ncdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, accurate in both tails (erfc based)."""
    x = np.asarray(x, dtype="float64")
    return 0.5 * np.asarray(_erfc(-x / math.sqrt(2.0)), dtype="float64")


def _npdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * np.asarray(x, dtype="float64") ** 2) / math.sqrt(2 * math.pi)


def _weekday_index(day: date) -> int:
    """Number of weekdays from 2024-01-01 (index 0) to ``day`` (a weekday)."""
    days = (day - _ORIGIN).days
    return (days // 7) * 5 + days % 7


def _crc(symbol: str) -> int:
    return zlib.crc32(symbol.encode("utf-8"))


def _to_ns(instant: datetime) -> int:
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _from_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(ns) // 1000)


# ---------------------------------------------------------------------------
# Black-Scholes
# ---------------------------------------------------------------------------


def black_scholes(
    S: Any, K: Any, T: Any, r: Any, sigma: Any, option_type: Any = "call"
) -> dict[str, Any]:
    """Black-Scholes price and greeks of a European option on a non-dividend-paying stock.

    ``S`` spot, ``K`` strike, ``T`` time to expiry in years, ``r`` continuously compounded
    risk-free rate, ``sigma`` annual volatility, ``option_type`` ``'call'``/``'put'`` (or
    ``'C'``/``'P'``). Scalars give floats; arrays (broadcast together) give arrays.

    Returns ``dict(price, delta, gamma, theta, vega, rho)`` with these conventions:

    * ``delta`` = dV/dS; call in (0, 1), put in (-1, 0). ``gamma`` = d2V/dS2 (same for call
      and put).
    * ``theta`` = dV/dt **per calendar day** (the annual theta divided by 365; usually < 0).
    * ``vega`` = change in price **per 1 volatility point** (dV/dsigma / 100).
    * ``rho`` = change in price **per 1 % of rate** (dV/dr / 100).

    At ``T <= 0`` the price is the intrinsic value, delta is 0/+-1 and the other greeks 0.

    >>> round(black_scholes(100, 100, 1, 0.05, 0.2, "call")["price"], 4)
    10.4506
    >>> round(black_scholes(100, 100, 1, 0.05, 0.2, "put")["price"], 4)
    5.5735
    """
    scalar = all(np.ndim(v) == 0 for v in (S, K, T, r, sigma, option_type))
    S, K, T, r, sigma = (np.asarray(v, dtype="float64") for v in (S, K, T, r, sigma))
    kinds = np.char.lower(np.asarray(option_type, dtype=str))
    is_call = np.isin(kinds, ("call", "c"))
    if not np.all(is_call | np.isin(kinds, ("put", "p"))):
        raise ValueError(f"option_type must be 'call' or 'put', got {option_type!r}")
    if np.any(sigma <= 0):
        raise ValueError("sigma must be positive")
    S, K, T, r, sigma, is_call = np.broadcast_arrays(S, K, T, r, sigma, is_call)
    live = T > 0
    Tl = np.where(live, T, 1.0)
    sq = np.sqrt(Tl)
    d1 = (np.log(S / K) + (r + 0.5 * sigma**2) * Tl) / (sigma * sq)
    d2 = d1 - sigma * sq
    disc = np.exp(-r * Tl)
    pdf1 = _npdf(d1)
    nd1, nd2 = _ncdf(d1), _ncdf(d2)
    nmd1, nmd2 = _ncdf(-d1), _ncdf(-d2)
    call_price = S * nd1 - K * disc * nd2
    put_price = K * disc * nmd2 - S * nmd1
    price = np.where(is_call, call_price, put_price)
    delta = np.where(is_call, nd1, -nmd1)
    gamma = pdf1 / (S * sigma * sq)
    vega = S * pdf1 * sq / 100.0
    decay = -S * pdf1 * sigma / (2 * sq)
    theta = np.where(is_call, decay - r * K * disc * nd2, decay + r * K * disc * nmd2) / 365.0
    rho = np.where(is_call, K * Tl * disc * nd2, -K * Tl * disc * nmd2) / 100.0
    if not np.all(live):
        intrinsic = np.where(is_call, np.maximum(S - K, 0.0), np.maximum(K - S, 0.0))
        itm = np.where(is_call, S > K, K > S)
        price = np.where(live, price, intrinsic)
        delta = np.where(live, delta, np.where(itm, np.where(is_call, 1.0, -1.0), 0.0))
        zero = np.zeros_like(price)
        gamma, theta, vega, rho = (np.where(live, g, zero) for g in (gamma, theta, vega, rho))
    out = {"price": price, "delta": delta, "gamma": gamma, "theta": theta, "vega": vega, "rho": rho}
    if scalar:
        return {k: float(v) for k, v in out.items()}
    return out


# ---------------------------------------------------------------------------
# Calendar helpers (cached per month; seed independent)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Month:
    key: int  # year * 12 + month
    year: int
    dates: tuple[date, ...]  # sessions of the month
    ordinals: np.ndarray  # date.toordinal() of each session
    rows: np.ndarray  # position of each session among the weekdays of its year
    wd_index: np.ndarray  # weekday index (from 2024-01-01) of each session
    prev_wd_index: np.ndarray  # weekday index of the previous session
    open_ns: np.ndarray
    close_ns: np.ndarray
    midnight_ns: np.ndarray  # New York midnight of the session date, in UTC
    minutes: np.ndarray  # session length in minutes (390, or 210 on early closes)


_MONTHS: dict[int, _Month] = {}
_MONTHS_LOCK = threading.Lock()


def _month_info(key: int) -> _Month:
    info = _MONTHS.get(key)
    if info is not None:
        return info
    year, month = divmod(key - 1, 12)
    month += 1
    first = date(year, month, 1)
    last = (date(year + (month == 12), month % 12 + 1, 1)) - timedelta(days=1)
    sessions = mh.sessions_in_range(max(first, _EARLIEST), last)
    wd = [_weekday_index(d) for d in sessions]
    prev: list[int] = []
    for i, d in enumerate(sessions):
        if i:
            prev.append(wd[i - 1])
            continue
        try:
            prev.append(_weekday_index(mh.previous_session(d)))
        except ValueError:  # the first session the calendar knows
            prev.append(wd[0] - 1)
    opens, closes, mids, mins = [], [], [], []
    for d in sessions:
        o, c = mh.session_bounds(d)
        opens.append(_to_ns(o))
        closes.append(_to_ns(c))
        mids.append(_to_ns(datetime.combine(d, time(0), tzinfo=NY).astimezone(UTC)))
        mins.append(min(_MAX_MIN, int((c - o).total_seconds() // 60)))
    info = _Month(
        key=key,
        year=year,
        dates=tuple(sessions),
        ordinals=np.array([d.toordinal() for d in sessions], dtype="int64"),
        rows=np.array(wd, dtype="int64") - _first_weekday_index(year),
        wd_index=np.array(wd, dtype="int64"),
        prev_wd_index=np.array(prev, dtype="int64"),
        open_ns=np.array(opens, dtype="int64"),
        close_ns=np.array(closes, dtype="int64"),
        midnight_ns=np.array(mids, dtype="int64"),
        minutes=np.array(mins, dtype="int64"),
    )
    with _MONTHS_LOCK:
        _MONTHS[key] = info
    return info


def _first_weekday_index(year: int) -> int:
    """Weekday index of the first weekday of ``year``."""
    first = date(year, 1, 1)
    while first.weekday() >= 5:
        first += timedelta(days=1)
    return _weekday_index(first)


def _month_key(day: date) -> int:
    return day.year * 12 + day.month


# Intraday profiles per session length: per-minute variance share (sqrt), bridge fraction,
# volume profile (mean 1 over a full day). Entries past the session's end are neutral.
_PROFILES: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _profile(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prof = _PROFILES.get(n)
    if prof is not None:
        return prof
    k = np.arange(_MAX_MIN, dtype="float64")
    left = n - 1 - k
    valid = k < n
    var = np.where(valid, 1.0 + 1.6 * np.exp(-k / 25.0) + 0.6 * np.exp(-left / 30.0), 0.0)
    var /= var.sum()
    frac = np.minimum(np.cumsum(var), 1.0)
    frac[n - 1:] = 1.0
    vol = np.where(valid, 1.0 + 3.0 * np.exp(-k / 18.0) + 1.8 * np.exp(-left / 25.0), 0.0)
    vol[n - 1] *= 2.0  # the closing minute
    kf = np.arange(_MAX_MIN, dtype="float64")
    full = 1.0 + 3.0 * np.exp(-kf / 18.0) + 1.8 * np.exp(-(_MAX_MIN - 1 - kf) / 25.0)
    full[-1] *= 2.0
    vol /= full.mean()
    prof = (np.sqrt(var).astype("float32"), frac.astype("float32"), vol.astype("float32"))
    _PROFILES[n] = prof
    return prof


# ---------------------------------------------------------------------------
# Per-symbol state: personality and the cached daily path
# ---------------------------------------------------------------------------


class _Symbol:
    """Parameters of one symbol and its daily log-close path for one seed."""

    def __init__(self, symbol: str, seed: int) -> None:
        self.symbol = symbol
        self.crc = _crc(symbol)
        self.seed = seed
        rng = np.random.default_rng([self.crc, 0x5A11])
        u = rng.random(8)
        price, vol, adv = _KNOWN.get(symbol, (0.0, 0.0, 0.0))
        if not price:
            price = 20.0 * math.exp(u[0] * math.log(25.0))
            vol = 0.15 + 0.45 * u[1]
            adv = 10 ** (5.8 + 1.7 * u[2])
        self.price = price
        self.vol = vol
        self.sig = vol / math.sqrt(_WEEKDAYS_PER_YEAR)  # per-weekday volatility
        self.mu = -0.01 + 0.09 * u[3]  # annual trend
        self.adv = adv
        self.vpm = adv / _MAX_MIN  # average shares per minute
        self.trade_size = 60.0 + 160.0 * u[4]
        self.iv_base = float(np.clip(vol * (0.95 + 0.25 * u[5]), 0.08, 1.5))
        # smile iv = base + a*m**2 - skew*m (m = ln K/S): a >= 10*skew keeps both wings above
        # the at-the-money level beyond |m| ~ 0.1 while the put wing stays the steeper one
        self.smile_a = 1.6 + 1.0 * u[6]
        self.smile_skew = 0.05 + 0.10 * u[7]
        # The daily path, forward (weekday index 0, 1, 2, ...) and backward (0, -1, -2, ...):
        # the AR(1) state x, the log close and the close. Grown in whole blocks, so every value
        # is computed the same way whatever range was asked for first.
        log0 = math.log(price)
        self._fwd = [np.zeros(1), np.array([log0]), np.array([math.exp(log0)])]
        self._bwd = [np.zeros(1), np.array([log0]), np.array([math.exp(log0)])]
        self._lock = threading.Lock()

    def _extend(self, path: list[np.ndarray], direction: int, needed: int) -> list[np.ndarray]:
        xs_l, logs_l, closes_l = [path[0]], [path[1]], [path[2]]
        x = path[0][-1]
        total = len(path[0])
        block = (total - 1) // _BLOCK
        j = np.arange(1, _BLOCK + 1, dtype="float64")
        phij = _PHI**j
        sign = 1 if direction == 1 else -1
        while total <= needed:
            rng = np.random.default_rng([self.seed, self.crc, direction, block])
            e = rng.standard_normal(_BLOCK) * self.sig
            xs = phij * (x + np.cumsum(e / phij))
            years = sign * (block * _BLOCK + j) / _WEEKDAYS_PER_YEAR
            logs = math.log(self.price) + self.mu * 8.0 * np.tanh(years / 8.0) + xs
            xs_l.append(xs)
            logs_l.append(logs)
            closes_l.append(np.exp(logs))
            x = xs[-1]
            total += _BLOCK
            block += 1
        return [np.concatenate(xs_l), np.concatenate(logs_l), np.concatenate(closes_l)]

    def daily_close(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(log close, close)`` of the daily model on the given weekday indices."""
        idx = np.asarray(idx, dtype="int64")
        if idx.size:
            hi, lo = int(idx.max()), int(idx.min())
            if hi >= len(self._fwd[0]) or -lo >= len(self._bwd[0]):
                with self._lock:
                    if hi >= len(self._fwd[0]):
                        self._fwd = self._extend(self._fwd, 1, hi)
                    if -lo >= len(self._bwd[0]):
                        self._bwd = self._extend(self._bwd, 2, -lo)
        fwd, bwd = self._fwd, self._bwd
        pos = idx >= 0
        i_f = np.where(pos, idx, 0)
        i_b = np.where(pos, 0, -idx)
        return (np.where(pos, fwd[1][i_f], bwd[1][i_b]), np.where(pos, fwd[2][i_f], bwd[2][i_b]))

    def year_draws(self, year: int) -> tuple[np.ndarray, np.ndarray]:
        """Random words for every weekday minute of a year, ``(weekdays, 390)`` uint64, and
        ``(weekdays, 4)`` day-level normals. Each 64-bit word is split into fields (see
        :func:`_simulate_rows`)."""
        n = _first_weekday_index(year + 1) - _first_weekday_index(year)
        rng = np.random.default_rng([self.seed, self.crc, 3, year])
        raw = rng.bit_generator.random_raw(n * _MAX_MIN).astype("<u8", copy=False)
        return raw.reshape(n, _MAX_MIN), rng.standard_normal((n, 4))


_SYMBOLS: dict[tuple[int, str], _Symbol] = {}
_DAILY: OrderedDict[tuple[int, str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()


@dataclass
class _Sim:
    """1-minute bars of a run of sessions as ``(days, 390)`` arrays.

    Prices are float32 *cents* (whole numbers, exact below $167,772), ``vwap`` float64 in units of
    $0.0001 (whole numbers), volume and trade counts float32 whole numbers. Minutes past a
    session's end (early closes) hold neutral values (volume 0, high 0, low +inf), so that row
    reductions give the daily bar.
    """

    minutes: np.ndarray  # session length per day
    open_ns: np.ndarray
    close_ns: np.ndarray
    midnight_ns: np.ndarray
    ordinals: np.ndarray
    cols: dict[str, np.ndarray]
    day_bars: dict[str, np.ndarray] | None = None

    @property
    def full(self) -> bool:
        return bool(np.all(self.minutes == _MAX_MIN))

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(bar start ns, minute of session, day position, columns in dollars)`` of the real
        minutes, in time order."""
        n = len(self.minutes)
        kk = np.arange(_MAX_MIN, dtype="int64")
        ts = self.open_ns[:, None] + kk[None, :] * _NS_MIN
        k = np.broadcast_to(kk, (n, _MAX_MIN))
        day = np.broadcast_to(np.arange(n, dtype="int64")[:, None], (n, _MAX_MIN))
        if self.full:
            def pick(a: np.ndarray) -> np.ndarray:
                return a.reshape(-1)
        else:
            mask = kk[None, :] < self.minutes[:, None]
            def pick(a: np.ndarray, mask: np.ndarray = mask) -> np.ndarray:
                return a[mask]
        c = self.cols
        cols = {name: np.divide(pick(c[name]), 100.0, dtype="float64") for name in _PRICE_COLUMNS}
        cols["volume"] = pick(c["volume"]).astype("float64")
        cols["vwap"] = np.divide(pick(c["vwap"]), 1e4)
        cols["trade_count"] = pick(c["trade_count"]).astype("int64")
        return pick(ts), pick(k), pick(day), cols

    def daily(self) -> dict[str, np.ndarray]:
        return self.day_bars if self.day_bars is not None else _daily_bars(self.cols, self.minutes)


def _daily_bars(c: dict[str, np.ndarray], minutes: np.ndarray) -> dict[str, np.ndarray]:
    """Daily bars (dollars) from ``(days, 390)`` minute arrays in :class:`_Sim` units."""
    n = len(minutes)
    volume = c["volume"].sum(axis=1, dtype="float64")
    pv = np.multiply(c["vwap"], c["volume"]).sum(axis=1)
    high = c["high"].max(axis=1).astype("float64") / 100.0
    low = c["low"].min(axis=1).astype("float64") / 100.0
    return {
        "open": c["open"][:, 0].astype("float64") / 100.0,
        "high": high,
        "low": low,
        "close": c["close"][np.arange(n), minutes - 1].astype("float64") / 100.0,
        "volume": volume,
        "vwap": np.clip(pv / volume / 1e4, low, high),
        "trade_count": c["trade_count"].sum(axis=1, dtype="float64").astype("int64"),
    }


def _simulate_rows(
    sym: _Symbol,
    words: np.ndarray,
    Z: np.ndarray,
    log_c: np.ndarray,
    log_p: np.ndarray,
    closes: tuple[np.ndarray, np.ndarray],
    n_min: int,
    split: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Minute bars (``(days, 390)``, see :class:`_Sim` for units) of sessions lasting ``n_min``.

    ``split``: per day, raw price / adjusted price (4 before a 4:1 split): prices are simulated
    at the raw scale, volumes and trade sizes divided by it. None: 1 everywhere.

    Fields of each minute's 64-bit random word (little-endian): bytes 0-1 the path increment
    (normal quantile table), byte 2 / byte 3 the upper / lower wick, bytes 4-5 the volume noise
    (lognormal quantile table), byte 7 the mean trade size (byte 6 is unused).
    """
    f32 = np.float32
    sd_k, frac, vprof = _profile(n_min)
    u16 = words.view("<u2").reshape(words.shape + (4,))
    u8 = words.view("u1").reshape(words.shape + (8,))
    # Per-day quantities use math.exp (scalar libm), not numpy's vectorised exp, so that a day's
    # values cannot depend on its position in the array (i.e. on the requested range).
    C, P = closes
    if split is not None:
        C, P = C * split, P * split
    ret = log_c - log_p
    sig = sym.sig
    gap = np.clip(0.3 * ret + 0.25 * sig * Z[:, 0], -0.02, 0.02)
    O = P * _exp(gap) * 100.0  # cents from here on
    C = C * 100.0
    sd_day = O * sig * _exp(0.25 * Z[:, 1] - 0.03)
    vmult = _exp(0.3 * Z[:, 2] - 0.045) * (0.75 + 0.3 * np.minimum(np.abs(ret) / sig, 4.0))

    # Brownian bridge from O to C with the U-shaped variance profile.
    sdp = np.multiply(sd_day.astype(f32)[:, None], sd_k)  # per-minute sd, cents
    path = _LUT_NORMAL.take(u16[:, :, 0].astype(np.intp))
    path *= sdp
    np.cumsum(path, axis=1, out=path)
    pull = ((C - O) - path[:, n_min - 1]).astype(f32)
    path += frac * pull[:, None]
    path += O.astype(f32)[:, None]
    close = np.rint(path, out=path)
    np.maximum(close, f32(1.0), out=close)
    open_ = np.empty_like(close)
    open_[:, 0] = np.maximum(np.rint(O), 1.0)
    open_[:, 1:] = close[:, :-1]

    # Wicks: whole cents beyond max/min(open, close); the low stays >= 1 cent.
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    sdp *= f32(1.6 / 65025.0)
    up = u8[:, :, 2].astype(f32)
    up *= up
    up *= sdp
    np.rint(up, out=up)
    down = u8[:, :, 3].astype(f32)
    down *= down
    down *= sdp
    np.rint(down, out=down)
    np.minimum(down, bottom - f32(1.0), out=down)
    high = np.add(top, up, out=top)
    low = np.subtract(bottom, down, out=bottom)

    # vwap: the typical price shifted towards the longer wick by 0.3 of the difference. The
    # typical price lies at least a third of the range inside [low, high] and the shift is at
    # most 0.3 of it, so the vwap stays inside (in $0.0001 units, float64).
    typical = np.add(high, low)
    typical += close
    typical = typical.astype("float64")
    typical *= 100.0 / 3.0
    up -= down
    up *= f32(30.0)
    typical += up
    vwap = np.rint(typical, out=typical)

    # Volume: U-shaped profile x day multiplier x lognormal noise; trades of a random mean size.
    volume = _LUT_LOGN.take(u16[:, :, 2].astype(np.intp))
    volume *= vprof
    volume *= (sym.vpm * vmult if split is None else sym.vpm * vmult / split).astype(f32)[:, None]
    np.rint(volume, out=volume)
    np.maximum(volume, f32(1.0), out=volume)
    size = u8[:, :, 7].astype(f32)
    if split is None:
        size *= f32(sym.trade_size * 0.8 / 255.0)
        size += f32(sym.trade_size * 0.6)
    else:  # trade sizes in raw shares: a trade count does not change with a split
        size *= (sym.trade_size * 0.8 / 255.0 / split).astype(f32)[:, None]
        size += (sym.trade_size * 0.6 / split).astype(f32)[:, None]
    trades = np.divide(volume, size, out=size)
    np.rint(trades, out=trades)
    np.maximum(trades, f32(1.0), out=trades)  # <= volume: mean sizes are >= 36 shares

    if n_min < _MAX_MIN:  # neutral padding past the early close
        volume[:, n_min:] = 0.0
        trades[:, n_min:] = 0.0
        vwap[:, n_min:] = 0.0
        high[:, n_min:] = 0.0
        low[:, n_min:] = np.inf
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume,
            "vwap": vwap, "trade_count": trades}


def _simulate(sym: _Symbol, months: list[tuple[_Month, np.ndarray]], daily: bool = False) -> _Sim:
    """1-minute bars for the chosen sessions (``(month, positions of sessions in it)`` pairs).

    Sessions are simulated :data:`_CHUNK` at a time (the working set stays in cache). With
    ``daily=True`` only the daily aggregates are kept (``_Sim.day_bars``), not the minutes.
    """
    meta: dict[str, list[np.ndarray]] = {k: [] for k in ("wd", "prev", "mins", "open", "close", "mid", "ord")}
    by_year: dict[int, list[np.ndarray]] = {}
    for info, pos in months:
        by_year.setdefault(info.year, []).append(info.rows[pos])
        meta["wd"].append(info.wd_index[pos])
        meta["prev"].append(info.prev_wd_index[pos])
        meta["mins"].append(info.minutes[pos])
        meta["open"].append(info.open_ns[pos])
        meta["close"].append(info.close_ns[pos])
        meta["mid"].append(info.midnight_ns[pos])
        meta["ord"].append(info.ordinals[pos])
    cat = {k: (np.concatenate(v) if v else np.zeros(0, dtype="int64")) for k, v in meta.items()}
    N = cat["mins"]
    n = len(N)
    sim = _Sim(N, cat["open"], cat["close"], cat["mid"], cat["ord"], {})
    if n == 0:
        sim.cols = {c: np.zeros((0, _MAX_MIN)) for c in BAR_COLUMNS}
        sim.day_bars = {c: np.zeros(0) for c in BAR_COLUMNS}
        return sim
    words_l, z_l = [], []
    for year, rows in by_year.items():  # months arrive in time order, so years do too
        w, z = sym.year_draws(year)
        rows = np.concatenate(rows)
        words_l.append(w[rows])
        z_l.append(z[rows])
    words = np.concatenate(words_l) if len(words_l) > 1 else words_l[0]
    Z = np.concatenate(z_l) if len(z_l) > 1 else z_l[0]
    log_c, close_c = sym.daily_close(cat["wd"])
    log_p, close_p = sym.daily_close(cat["prev"])
    split = _split_multipliers(sym.symbol, cat["ord"])

    # Sessions shorter than 390 minutes (early closes, a few a year) get their own profile:
    # simulated apart, one pass per length, and patched in below.
    short: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    for n_min in np.unique(N[N != _MAX_MIN]):
        rows = np.flatnonzero(n_min == N)
        part = _simulate_rows(sym, words[rows], Z[rows], log_c[rows], log_p[rows],
                              (close_c[rows], close_p[rows]), int(n_min),
                              None if split is None else split[rows])
        short.append((rows, _daily_bars(part, N[rows]) if daily else part))

    parts = []
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        cut = slice(lo, hi)
        cols = _simulate_rows(sym, words[cut], Z[cut], log_c[cut], log_p[cut],
                              (close_c[cut], close_p[cut]), _MAX_MIN,
                              None if split is None else split[cut])
        parts.append(_daily_bars(cols, N[cut]) if daily else cols)
    if len(parts) == 1:
        merged = parts[0]
    else:
        merged = {c: np.concatenate([p[c] for p in parts]) for c in BAR_COLUMNS}
    for rows, part in short:
        for c in BAR_COLUMNS:
            merged[c][rows] = part[c]
    if daily:
        sim.day_bars = merged
    else:
        sim.cols = merged
    return sim


def _aggregate(cols: dict[str, np.ndarray], starts: np.ndarray) -> dict[str, np.ndarray]:
    """Aggregate consecutive minute bars into groups beginning at ``starts``."""
    n = len(cols["open"])
    if len(starts) == 0:
        return {c: cols[c][:0] for c in BAR_COLUMNS}
    ends = np.append(starts[1:], n) - 1
    volume = np.add.reduceat(cols["volume"], starts)
    high = np.maximum.reduceat(cols["high"], starts)
    low = np.minimum.reduceat(cols["low"], starts)
    vwap = np.clip(np.add.reduceat(cols["vwap"] * cols["volume"], starts) / volume, low, high)
    return {
        "open": cols["open"][starts],
        "high": high,
        "low": low,
        "close": cols["close"][ends],
        "volume": volume,
        "vwap": vwap,
        "trade_count": np.add.reduceat(cols["trade_count"], starts),
    }


def _frame(parts: list[tuple[str, np.ndarray, dict[str, np.ndarray]]]) -> pd.DataFrame:
    """The canonical ``(symbol, timestamp)`` frame from per-symbol ``(symbol, ts_ns, columns)``."""
    parts = [p for p in parts if len(p[1])]
    if parts:
        ts = np.concatenate([p[1] for p in parts])
        counts = [len(p[1]) for p in parts]
        symbols = [p[0] for p in parts]
        data = {c: np.concatenate([p[2][c] for p in parts]) for c in BAR_COLUMNS}
    else:
        ts = np.zeros(0, dtype="int64")
        counts, symbols = [], []
        data = {c: np.zeros(0) for c in BAR_COLUMNS}
    uniq, codes = np.unique(ts, return_inverse=True)
    times = pd.DatetimeIndex(uniq.view("M8[ns]")).tz_localize("UTC")
    index = pd.MultiIndex(
        levels=[pd.Index(symbols, dtype="str"), times],
        codes=[np.repeat(np.arange(len(symbols)), counts), codes.reshape(-1)],
        names=["symbol", "timestamp"],
        verify_integrity=False,
    )
    out = {}
    for c in BAR_COLUMNS:
        out[c] = np.asarray(data[c], dtype="int64" if c == "trade_count" else "float64")
    return pd.DataFrame(out, index=index, columns=list(BAR_COLUMNS))


def _empty_chain() -> pd.DataFrame:
    data: dict[str, Any] = {}
    for c in OPTION_CHAIN_COLUMNS:
        if c in ("contract_symbol", "option_type"):
            data[c] = pd.Series([], dtype="str")
        elif c in ("expiration", "open_interest_date"):
            data[c] = pd.Series([], dtype=object)
        elif c in ("volume", "open_interest"):
            data[c] = pd.Series([], dtype="int64")
        elif c == "snapshot_time":
            data[c] = pd.Series(pd.DatetimeIndex([], tz="UTC").as_unit("ns"))
        else:
            data[c] = pd.Series([], dtype="float64")
    return pd.DataFrame(data, columns=list(OPTION_CHAIN_COLUMNS))


def _third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def _expiry_session(friday: date) -> date:
    """The Friday itself when it is a session, else the session before it."""
    return friday if mh.is_session(friday) else mh.previous_session(friday)


# ---------------------------------------------------------------------------
# Corporate actions
# ---------------------------------------------------------------------------

#: Forward splits of the demo: symbol -> (ex-date, shares after / shares before). The daily
#: model is the split-adjusted path; raw prices before the ex-date are ``ratio`` times it, raw
#: volumes and trade sizes ``1 / ratio`` (so trade counts keep their size).
DEMO_SPLITS: dict[str, tuple[date, float]] = {"NVDA": (date(2024, 6, 10), 4.0)}
#: Quarterly cash dividends of the demo: symbol -> (months, anchor day, amount per share). The
#: ex-date is the first session on or after the anchor day of each of those months. The raw
#: path does not drop by the amount (0.1-0.8 % of the price, inside a day's normal move).
DEMO_DIVIDENDS: dict[str, tuple[tuple[int, ...], int, float]] = {
    "AAPL": ((2, 5, 8, 11), 10, 0.24),
    "KO": ((3, 6, 9, 12), 14, 0.485),
}
#: Corporate actions are known this many days before their ex-date (the announcement).
ANNOUNCE_DAYS = 30


def _split_multipliers(symbol: str, ordinals: np.ndarray) -> np.ndarray | None:
    """Raw / adjusted price multiplier of each session (by ordinal), or None when all are 1."""
    split = DEMO_SPLITS.get(symbol)
    if split is None or not len(ordinals) or int(np.min(ordinals)) >= split[0].toordinal():
        return None
    return np.where(ordinals < split[0].toordinal(), split[1], 1.0)


def _first_session_from(day: date) -> date:
    return day if mh.is_session(day) else mh.next_session(day)


def _demo_actions(symbol: str, first: date, last: date) -> list[dict[str, Any]]:
    """The demo's corporate-action rows of ``symbol`` with an ex-date in ``[first, last]``."""
    rows: list[dict[str, Any]] = []
    split = DEMO_SPLITS.get(symbol)
    if split is not None and first <= split[0] <= last:
        rows.append({"symbol": symbol, "action_type": "forward_split", "ex_date": split[0],
                     "ratio": split[1], "source": DemoSource.name})
    dividend = DEMO_DIVIDENDS.get(symbol)
    if dividend is not None:
        months, anchor, amount = dividend
        lo, hi = mh.EARLIEST_SUPPORTED, mh.LATEST_SUPPORTED
        for year in range(max(first.year, _EARLIEST.year), last.year + 1):
            for month in months:
                day = date(year, month, anchor)
                if not lo <= day <= hi - timedelta(days=14):
                    continue
                ex = _first_session_from(day)
                if first <= ex <= last:
                    rows.append({"symbol": symbol, "action_type": "cash_dividend", "ex_date": ex,
                                 "amount": amount, "source": DemoSource.name})
    return rows


# ---------------------------------------------------------------------------
# The source
# ---------------------------------------------------------------------------


class DemoSource:
    """Deterministic synthetic market data (see the module docstring for the model).

    ``DemoSource(seed=42, symbols_universe=None, now=None)``: the same ``(seed, symbol, day)``
    always gives the same bars. ``symbols_universe`` restricts the symbols served (others get no
    data, like unknown tickers at a vendor); ``None`` serves any valid symbol. ``now`` pins the
    source's clock (an aware datetime, naive = UTC); by default the clock is
    :func:`cachelib.clock.now_utc`. ``requests_made`` counts ``get_*`` calls.
    """

    name = "demo"
    #: The demo's one "feed": with :attr:`name`, the identity of the series it fills.
    feed_name = "demo"

    def __init__(
        self,
        seed: int = 42,
        symbols_universe: Iterable[str] | None = None,
        now: datetime | None = None,
    ) -> None:
        self.seed = int(42 if seed is None else seed) & 0xFFFFFFFFFFFFFFFF
        self.symbols_universe: tuple[str, ...] | None = (
            None if symbols_universe is None
            else tuple(dict.fromkeys(normalize_symbol(s) for s in symbols_universe))
        )
        self._universe = None if self.symbols_universe is None else frozenset(self.symbols_universe)
        self._fixed_now = None if now is None else now_utc(now)
        self.requests_made = 0

    def __repr__(self) -> str:
        return f"DemoSource(seed={self.seed}, symbols_universe={self.symbols_universe!r})"

    # -- plumbing -----------------------------------------------------------

    def _now(self) -> datetime:
        return now_utc(self._fixed_now)

    def _symbol(self, symbol: str) -> _Symbol:
        key = (self.seed, symbol)
        state = _SYMBOLS.get(key)
        if state is None:
            with _CACHE_LOCK:
                state = _SYMBOLS.get(key)
                if state is None:
                    if len(_SYMBOLS) >= _SYMBOL_CACHE_SIZE:
                        _SYMBOLS.clear()
                    state = _SYMBOLS[key] = _Symbol(symbol, self.seed)
        return state

    def _serves(self, symbol: str) -> bool:
        return self._universe is None or symbol in self._universe

    @staticmethod
    def _window(start: Any, end: Any) -> tuple[int, int]:
        """``(start_ns, end_ns)`` inclusive; date-only values are whole New York days."""

        def bound(value: Any, is_end: bool) -> int:
            if isinstance(value, pd.Timestamp):
                value = value.to_pydatetime()
            date_only = (isinstance(value, str) and len(value.strip()) == 10) or (
                isinstance(value, date) and not isinstance(value, datetime)
            )
            if date_only:
                day = to_date(value) + timedelta(days=1 if is_end else 0)
                return _to_ns(datetime.combine(day, time(0), tzinfo=NY).astimezone(UTC)) - (
                    1 if is_end else 0
                )
            if isinstance(value, str):
                try:
                    value = datetime.fromisoformat(value.strip())
                except ValueError:
                    raise ValueError(f"cannot read {value!r} as a date or time") from None
            if not isinstance(value, datetime):
                raise ValueError(f"cannot read {value!r} as a date or time")  # noqa: TRY004
            return _to_ns(now_utc(value))

        lo, hi = bound(start, False), bound(end, True)
        if hi < lo:
            raise ValueError(f"end ({end!r}) is before start ({start!r})")
        return lo, hi

    def _sessions_by_month(self, d0: date, d1: date) -> list[tuple[_Month, np.ndarray]]:
        out = []
        lo, hi = d0.toordinal(), d1.toordinal()
        for key in range(_month_key(d0), _month_key(d1) + 1):
            info = _month_info(key)
            pos = np.flatnonzero((info.ordinals >= lo) & (info.ordinals <= hi))
            if len(pos):
                out.append((info, pos))
        return out

    def _daily_months(self, sym: _Symbol, infos: list[_Month]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Daily bars of whole months (clock ignored) as ``(floats (6, days), trade_count)``; the
        float rows are open, high, low, close, volume, vwap. Cached per (seed, symbol, month)."""
        results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        missing = []
        for info in infos:
            cached = _DAILY.get((self.seed, sym.symbol, info.key))
            if cached is None:
                missing.append(info)
            else:
                results[info.key] = cached
        if missing:
            agg = _simulate(sym, [(info, np.arange(len(info.dates))) for info in missing], daily=True).daily()
            floats = np.stack([agg[c] for c in _FLOAT_COLUMNS])
            trades = agg["trade_count"]
            offset = 0
            with _CACHE_LOCK:
                for info in missing:
                    m = len(info.dates)
                    part = (floats[:, offset:offset + m].copy(), trades[offset:offset + m].copy())
                    offset += m
                    results[info.key] = part
                    _DAILY[(self.seed, sym.symbol, info.key)] = part
                while len(_DAILY) > _DAILY_CACHE_MONTHS:
                    _DAILY.popitem(last=False)
        return [results[info.key] for info in infos]

    def _day_range(self, lo_ns: int, hi_ns: int, now: datetime) -> tuple[date, date] | None:
        d0 = max(_from_ns(lo_ns).astimezone(NY).date(), _EARLIEST)
        d1 = min(_from_ns(hi_ns).astimezone(NY).date(), mh.today_et(now))
        return (d0, d1) if d0 <= d1 else None

    # -- bars -----------------------------------------------------------------

    def get_bars(
        self,
        symbols: str | Iterable[str],
        start: str | date | datetime,
        end: str | date | datetime,
        timeframe: str = "1Day",
    ) -> pd.DataFrame:
        """Bars of ``symbols`` from ``start`` to ``end`` (both inclusive) at ``timeframe``.

        ``start``/``end``: a date or ``YYYY-MM-DD`` means the whole New York day; a datetime is an
        instant (naive = UTC) and bars are kept when their timestamp lies in ``[start, end]``
        (daily bars are stamped at New York midnight, as Alpaca does). Timeframes: 1Min, 5Min,
        15Min, 30Min, 1Hour, 1Day (``ValueError`` otherwise). Only bars completed by now are
        returned. The frame has a ``(symbol, timestamp)`` MultiIndex (sorted) and the columns
        BAR_COLUMNS (float64; ``trade_count`` int64).
        """
        self.requests_made += 1
        tf = parse_timeframe(timeframe)
        minutes_per_bar = _SUPPORTED.get((tf.amount, tf.unit))
        if minutes_per_bar is None:
            raise ValueError(
                f"unsupported timeframe {timeframe!r}: the demo source serves " + ", ".join(DEMO_TIMEFRAMES)
            )
        names = [s for s in sorted(normalize_symbols(symbols)) if self._serves(s)]
        lo_ns, hi_ns = self._window(start, end)
        now = self._now()
        now_ns = _to_ns(now)
        days = self._day_range(lo_ns, hi_ns, now)
        if days is None or not names:
            return _frame([])
        chosen = self._sessions_by_month(*days)
        if not chosen:
            return _frame([])
        parts = []
        for name in names:
            sym = self._symbol(name)
            if minutes_per_bar == 0:
                bars = self._daily_months(sym, [info for info, _ in chosen])
                ts = np.concatenate([info.midnight_ns[pos] for info, pos in chosen])
                done = np.concatenate([info.close_ns[pos] for info, pos in chosen])
                floats = np.concatenate([f[:, pos] for (f, _), (_, pos) in zip(bars, chosen)], axis=1)
                cols = {c: floats[i] for i, c in enumerate(_FLOAT_COLUMNS)}
                cols["trade_count"] = np.concatenate([t[pos] for (_, t), (_, pos) in zip(bars, chosen)])
            else:
                sim = _simulate(sym, chosen)
                ts, k, day, cols = sim.flat()
                if minutes_per_bar == 1:
                    done = ts + _NS_MIN
                else:
                    starts = np.flatnonzero(k % minutes_per_bar == 0)
                    ts = ts[starts]
                    cols = _aggregate(cols, starts)
                    done = np.minimum(ts + minutes_per_bar * _NS_MIN, sim.close_ns[day[starts]])
            keep = (ts >= lo_ns) & (ts <= hi_ns) & (done <= now_ns)
            if not keep.all():
                ts = ts[keep]
                cols = {c: v[keep] for c, v in cols.items()}
            parts.append((name, ts, cols))
        return _frame(parts)

    # -- latest -------------------------------------------------------------

    def _last_minute(self, symbol: str, now: datetime) -> tuple[int, dict[str, float], int] | None:
        """``(bar start ns, bar columns, random 16-bit field)`` of the last minute completed at ``now``."""
        if not self._serves(symbol):
            return None
        today = mh.today_et(now)
        day = None
        k = -1
        if today >= _EARLIEST and mh.is_session(today):
            o, c = mh.session_bounds(today)
            if now >= c:
                day = today
            else:
                done = int((now - o).total_seconds() // 60)
                if done >= 1:
                    day, k = today, done - 1
        if day is None:
            try:
                day = mh.previous_session(today)
            except ValueError:
                return None
        info = _month_info(_month_key(day))
        pos = np.flatnonzero(info.ordinals == day.toordinal())
        ts, _, _, cols = _simulate(self._symbol(symbol), [(info, pos)]).flat()
        i = len(ts) - 1 if k < 0 else k
        row = {c: cols[c][i] for c in BAR_COLUMNS}
        noise = (int(ts[i] // _NS_MIN) * 2654435761 + self._symbol(symbol).crc) >> 7
        return int(ts[i]), row, noise & 0xFFFF

    def get_latest_bar(self, symbol: str) -> dict | None:
        """The last *completed* 1-minute bar at now: ``dict(timestamp, open, high, low, close,
        volume, vwap, trade_count)`` (timestamp = bar start, aware UTC), or ``None``."""
        self.requests_made += 1
        found = self._last_minute(normalize_symbol(symbol), self._now())
        if found is None:
            return None
        ts, row, _ = found
        out: dict[str, Any] = {"timestamp": _from_ns(ts)}
        for c in BAR_COLUMNS:
            out[c] = int(row[c]) if c == "trade_count" else float(row[c])
        return out

    def get_latest_trade(self, symbol: str) -> dict | None:
        """The last trade at now: ``dict(timestamp, price, size)`` - the close of the last completed
        minute bar, stamped within that minute. ``None`` for symbols not served."""
        self.requests_made += 1
        found = self._last_minute(normalize_symbol(symbol), self._now())
        if found is None:
            return None
        ts, row, noise = found
        offset_us = 30_000_000 + (noise * 29_000_000) // 65536  # 30-59 s into the minute
        sizes = (100, 100, 100, 200, 50, 10, 1, 5, 300, 25, 100, 400, 2, 100, 500, 20)
        return {
            "timestamp": _from_ns(ts) + timedelta(microseconds=offset_us),
            "price": float(row["close"]),
            "size": int(sizes[noise % len(sizes)]),
        }

    # -- corporate actions ----------------------------------------------------

    def get_corporate_actions(
        self,
        symbols: str | Iterable[str],
        start: str | date | datetime,
        end: str | date | datetime,
    ) -> pd.DataFrame:
        """The demo's corporate actions of ``symbols`` with an ex-date from ``start`` to ``end``
        (inclusive), as :func:`cachelib.corporate_actions.actions_frame` rows (``source="demo"``).

        :data:`DEMO_SPLITS` (NVDA 4:1, ex 2024-06-10: its raw prices drop 4x that day) and the
        quarterly :data:`DEMO_DIVIDENDS` (AAPL, KO). An action is known from
        :data:`ANNOUNCE_DAYS` days before its ex-date, as an announcement would be.
        """
        from cachelib.corporate_actions import actions_frame

        self.requests_made += 1
        first, last = to_date(start, "start"), to_date(end, "end")
        if last < first:
            raise ValueError(f"end ({end!r}) is before start ({start!r})")
        last = min(last, mh.today_et(self._now()) + timedelta(days=ANNOUNCE_DAYS))
        rows = []
        for symbol in normalize_symbols(symbols):
            if self._serves(symbol) and first <= last:
                rows.extend(_demo_actions(symbol, first, last))
        return actions_frame(rows)

    # -- options --------------------------------------------------------------

    def get_option_chain(
        self,
        underlying: str,
        expiration_gte: str | date | None = None,
        expiration_lte: str | date | None = None,
    ) -> pd.DataFrame:
        """A snapshot of ``underlying``'s option chain as of now (columns OPTION_CHAIN_COLUMNS:
        OPTION_COLUMNS and ``open_interest_date``, the previous session).

        ``snapshot_time`` is now clamped to the end of the last completed minute (the close when
        the market is shut); ``underlying_price`` is that minute's close. Greeks follow
        :func:`black_scholes` (r = 4 %, no dividends): ``theta`` per calendar day, ``vega`` per
        1 vol point, ``rho`` per 1 % rate. Deltas are clipped to at least 1e-6 away from 0 and
        +-1 (deep in-the-money short-dated contracts would otherwise round to exactly 1).
        ``expiration_gte``/``expiration_lte`` filter by expiration date (inclusive).
        """
        self.requests_made += 1
        symbol = normalize_symbol(underlying)
        now = self._now()
        found = self._last_minute(symbol, now)
        if found is None:
            return _empty_chain()
        bar_ts, row, _ = found
        sym = self._symbol(symbol)
        S = float(row["close"])
        snap_ns = bar_ts + _NS_MIN
        snapshot = _from_ns(snap_ns)
        snap_day = snapshot.astimezone(NY).date()

        expirations = self._expirations(snap_day)
        gte = to_date(expiration_gte) if expiration_gte is not None else None
        lte = to_date(expiration_lte) if expiration_lte is not None else None
        expirations = [
            (e, monthly) for e, monthly in expirations
            if (gte is None or e >= gte) and (lte is None or e <= lte)
        ]
        if not expirations:
            return _empty_chain()

        inc = 0.5 if S < 10 else 1.0 if S < 50 else 2.5 if S < 100 else 5.0 if S < 500 else 10.0
        k_lo = math.ceil(0.8 * S / inc - 1e-9)
        k_hi = math.floor(1.2 * S / inc + 1e-9)
        strikes = np.round(np.arange(k_lo, k_hi + 1) * inc, 3)
        strikes = strikes[strikes > 0]
        if len(strikes) == 0:
            return _empty_chain()

        # elapsed share of the snapshot's session (volume builds up during the day)
        o, c = mh.session_bounds(snap_day)
        elapsed = min(1.0, max(0.0, (snapshot - o) / (c - o)))
        day_rng = np.random.default_rng([self.seed, sym.crc, 6, snap_day.toordinal()])
        iv_level = sym.iv_base * math.exp(0.08 * float(day_rng.standard_normal()))

        nk = len(strikes)
        parts = []
        for exp, monthly in expirations:  # sorted by date
            T = max((_to_ns(mh.session_bounds(exp)[1]) - snap_ns) / (365.0 * _NS_DAY), 1e-6)
            K = np.concatenate([strikes, strikes])
            kinds = np.array(["call"] * nk + ["put"] * nk)
            m = np.log(K / S)
            term = 1.0 + 0.12 * math.exp(-T * 12.0)
            iv = np.clip(iv_level * term + sym.smile_a * m**2 - sym.smile_skew * m, 0.05, 3.0)
            g = black_scholes(S, K, T, RISK_FREE_RATE, iv, kinds)
            theo = g["price"]
            tick = np.where(theo >= 3.0, 0.05, 0.01)
            half = np.maximum(0.005 + 0.006 * theo, tick / 2)
            bid = np.maximum(np.round(np.floor((theo - half) / tick + 1e-9) * tick, 2), 0.0)
            ask = np.round(np.ceil((theo + half) / tick - 1e-9) * tick, 2)
            ask = np.maximum(ask, bid + 0.01)
            rng = np.random.default_rng([self.seed, sym.crc, 4, exp.toordinal()])
            u_oi = rng.random(2 * nk)
            rng_day = np.random.default_rng([self.seed, sym.crc, 5, exp.toordinal(), snap_day.toordinal()])
            u_last = rng_day.random(2 * nk)
            z_vol = rng_day.standard_normal(2 * nk)
            peak = np.exp(-(m**2) / (2 * 0.07**2)) + 0.02
            oi = np.rint(sym.adv / 1500.0 * (3.0 if monthly else 1.0) * (1.0 + 0.5 * math.exp(-T * 52.0))
                         * peak * (0.3 + 1.4 * u_oi))
            volume = np.rint(oi * 0.2 * elapsed * np.exp(0.6 * z_vol - 0.18))
            last = np.clip(np.round(bid + (ask - bid) * u_last, 2), np.maximum(bid, 0.01), ask)
            delta = np.where(kinds == "call", np.clip(g["delta"], 1e-6, 1 - 1e-6),
                             np.clip(g["delta"], -1 + 1e-6, -1e-6))
            order = np.lexsort((kinds == "put", K))  # by strike, call before put
            expiration = np.empty(2 * nk, dtype=object)
            expiration[:] = [exp] * (2 * nk)
            parts.append({
                "contract_symbol": [occ_symbol(symbol, exp, kinds[i], K[i]) for i in order],
                "strike": K[order],
                "option_type": kinds[order].tolist(),
                "expiration": expiration,
                "bid": bid[order],
                "ask": ask[order],
                "last": last[order],
                "volume": volume[order].astype("int64"),
                "open_interest": oi[order].astype("int64"),
                "implied_volatility": iv[order],
                "delta": delta[order],
                "gamma": g["gamma"][order],
                "theta": g["theta"][order],
                "vega": g["vega"][order],
                "rho": g["rho"][order],
            })
        data: dict[str, Any] = {}
        for c in OPTION_COLUMNS[:OPTION_COLUMNS.index("underlying_price")]:
            if c in ("contract_symbol", "option_type"):
                data[c] = pd.array([v for part in parts for v in part[c]], dtype="str")
            else:
                data[c] = np.concatenate([part[c] for part in parts])
        n = len(data["strike"])
        data["underlying_price"] = np.full(n, S)
        data["snapshot_time"] = pd.DatetimeIndex(np.full(n, snap_ns).view("M8[ns]")).tz_localize("UTC")
        counted = np.empty(n, dtype=object)  # open interest is counted overnight: the previous session
        counted[:] = [mh.previous_session(snap_day)] * n
        data["open_interest_date"] = counted
        return pd.DataFrame(data, columns=list(OPTION_CHAIN_COLUMNS))

    @staticmethod
    def _expirations(snap_day: date) -> list[tuple[date, bool]]:
        """Next 4 weekly and next 3 monthly expirations strictly after ``snap_day``."""
        found: dict[date, bool] = {}
        friday = snap_day + timedelta(days=(4 - snap_day.weekday()) % 7)
        weeklies = 0
        while weeklies < 4:
            exp = _expiry_session(friday)
            if exp > snap_day:
                found.setdefault(exp, False)
                weeklies += 1
            friday += timedelta(days=7)
        year, month = snap_day.year, snap_day.month
        monthlies = 0
        while monthlies < 3:
            exp = _expiry_session(_third_friday(year, month))
            if exp > snap_day:
                found[exp] = True
                monthlies += 1
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return sorted(found.items())
