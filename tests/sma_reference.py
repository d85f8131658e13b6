"""An independent, plain-Python SMA crossover: the yardstick for the tick-flow engine.

Written from the rules alone and sharing no code with ``cachelib`` (do not import it here):

* SMA of the last n closes = ``sum(closes[-n:]) / n``; a cross on bar i needs both SMAs on
  bars i-1 and i. Above: ``f[i-1] <= s[i-1] and f[i] > s[i]``; below: ``f[i-1] >= s[i-1] and
  f[i] < s[i]``. Enter on a cross above when flat, exit on a cross below when long.
* A signal on bar i fills at the open of bar i+1 (dropped on the session's last bar).
* An open position is closed at the last close, stamped last bar start + 1 bar.
* Excursion: entry price, highs/lows of the bars held, and the exit fill's open.
* confidence = ``min(1.0, abs(f - s) / s / 0.0002)``; "strong" when >= 0.5.
"""

from __future__ import annotations

from datetime import timedelta


def reference_trades(bars, *, fast=10, slow=30, quantity=100.0, strategy="sma_crossover", symbol="TEST",
                     bar_interval=timedelta(minutes=1)):
    """``bars``: iterable of (timestamp, open, high, low, close, volume). Returns trades as dicts."""
    closes, trades = [], []
    pos = pending = prev = last = None

    def close_trade(ts, price, reason):
        e = pos["entry_price"]
        trades.append({
            "trade_id": f"{strategy}:{symbol}:{pos['entry_date'].isoformat()}", "symbol": symbol,
            "entry_date": pos["entry_date"], "entry_price": e, "quantity": float(quantity),
            "exit_date": ts, "exit_price": price, "exit_reason": reason,
            "realized_pnl": (price - e) * quantity, "realized_pnl_pct": (price / e - 1) * 100,
            "holding_period_hours": (ts - pos["entry_date"]).total_seconds() / 3600,
            "strategy_name": strategy, "signal_strength": pos["strength"],
            "signal_confidence": pos["confidence"], "broker_account": "backtest",
            "max_profit_pct": (pos["hi"] / e - 1) * 100, "max_drawdown_pct": (pos["lo"] / e - 1) * 100,
        })

    for bar in bars:
        ts, o, h, lo, c, _v = bar
        last = bar
        if pending is not None and pending[0] == "enter":
            pos = {"entry_date": ts, "entry_price": o, "hi": max(o, h), "lo": min(o, lo),
                   "strength": pending[1], "confidence": pending[2]}
        elif pending is not None:  # exit at this open
            pos["hi"], pos["lo"] = max(pos["hi"], o), min(pos["lo"], o)
            close_trade(ts, o, "signal")
            pos = None
        elif pos is not None:
            pos["hi"], pos["lo"] = max(pos["hi"], h), min(pos["lo"], lo)
        pending = None
        closes.append(c)
        if len(closes) >= slow:
            f, s = sum(closes[-fast:]) / fast, sum(closes[-slow:]) / slow
            if prev is not None:
                if prev[0] <= prev[1] and f > s and pos is None:
                    conf = min(1.0, abs(f - s) / s / 0.0002)
                    pending = ("enter", "strong" if conf >= 0.5 else "weak", conf)
                elif prev[0] >= prev[1] and f < s and pos is not None:
                    pending = ("exit",)
            prev = (f, s)
    if pos is not None:
        close_trade(last[0] + bar_interval, last[4], "session_close")
    return trades


# --- test data helpers (no trading logic) ------------------------------------------------------


def load_bars_csv(path):
    """Rows of ``timestamp,open,high,low,close,volume`` (ISO-8601 UTC) as bar tuples."""
    import csv
    from datetime import datetime

    with open(path, newline="") as fh:
        return [
            (datetime.fromisoformat(r["timestamp"]), float(r["open"]), float(r["high"]), float(r["low"]),
             float(r["close"]), float(r["volume"]))
            for r in csv.DictReader(fh)
        ]


def random_walk_day(seed, start, n=390, *, cents=True, flat_stretches=False):
    """A seeded random walk of ``n`` consistent one-minute bars starting at ``start`` (aware UTC).

    ``flat_stretches`` holds the price still for a while now and then, so SMA ties occur.
    """
    import random

    rng = random.Random(seed)
    price = 20.0 + 380.0 * rng.random()
    rnd = (lambda x: round(x, 2)) if cents else (lambda x: x)
    bars, flat = [], 0
    for i in range(n):
        if flat_stretches and flat == 0 and rng.random() < 0.03:
            flat = rng.randint(10, 40)
        if flat:
            flat -= 1
            o = h = lo = c = rnd(price)
        else:
            o = rnd(price * (1 + rng.gauss(0, 0.0002)))
            c = rnd(o * (1 + rng.gauss(0, 0.001)))
            h = rnd(max(o, c) * (1 + abs(rng.gauss(0, 0.0005))))
            lo = rnd(min(o, c) * (1 - abs(rng.gauss(0, 0.0005))))
            h, lo = max(h, o, c), min(lo, o, c)
        bars.append((start + timedelta(minutes=i), o, h, lo, c, float(rng.randint(100, 50_000))))
        price = c
    return bars
