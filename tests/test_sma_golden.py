"""The engine's sma_crossover against a recorded day and against an independent reference.

* ``data/sma_golden_bars.csv``: 390 one-minute bars of 2024-03-15 (seeded random walk in cents).
* ``data/sma_golden_trades.csv``: the trades that day must produce, computed once with pandas
  ``rolling().mean()`` and checked by hand (e.g. the 17:31 cross above fills at 17:32's open
  171.73; the 17:34 cross below fills at 17:35's open 171.37; the last entry at 19:51 is closed
  at the 19:59 close 172.33, stamped 20:00). Smallest |fast - slow| that day: 0.006, so no
  rounding can flip a comparison.
* ``sma_reference.py``: a plain loop written from the rules, sharing no code with cachelib.
"""

from __future__ import annotations

import csv
import math
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from cachelib.tick_flow import RawTick, Trade, run_session, sma_crossover

try:
    from sma_reference import load_bars_csv, random_walk_day, reference_trades
except ImportError:  # tests/ became a package
    from tests.sma_reference import load_bars_csv, random_walk_day, reference_trades

DATA = Path(__file__).parent / "data"
EXCURSIONS = ("max_profit_pct", "max_drawdown_pct")
TRADE_FIELDS = (
    "trade_id", "symbol", "entry_date", "entry_price", "quantity", "exit_date", "exit_price", "exit_reason",
    "realized_pnl", "realized_pnl_pct", "holding_period_hours", "strategy_name", "signal_strength",
    "signal_confidence", "broker_account", "max_profit_pct", "max_drawdown_pct",
)


@pytest.fixture(scope="module")
def golden_bars() -> list[tuple]:
    return load_bars_csv(DATA / "sma_golden_bars.csv")


@pytest.fixture(scope="module")
def golden_trades() -> list[dict]:
    with open(DATA / "sma_golden_trades.csv", newline="") as fh:
        return [
            {
                "entry_date": datetime.fromisoformat(r["entry_date"]),
                "entry_price": float(r["entry_price"]),
                "exit_date": datetime.fromisoformat(r["exit_date"]),
                "exit_price": float(r["exit_price"]),
                "exit_reason": r["exit_reason"],
                "max_profit_pct": float(r["max_profit_pct"]),
                "max_drawdown_pct": float(r["max_drawdown_pct"]),
            }
            for r in csv.DictReader(fh)
        ]


def assert_same_trades(actual: list[dict], expected: list[dict]) -> None:
    """Exact equality of every field, except the excursions (to 1e-12)."""
    assert len(actual) == len(expected), (len(actual), len(expected))
    for n, (a, e) in enumerate(zip(actual, expected)):
        for key, value in e.items():
            if key in EXCURSIONS:
                assert math.isclose(a[key], value, rel_tol=0, abs_tol=1e-12), (n, key, a[key], value)
            else:
                assert a[key] == value, (n, key, a[key], value)


def engine_trades(bars, symbol="SPY", strategy=None, **kwargs) -> list[dict]:
    return [t.model_dump() for t in run_session(iter(bars), strategy, symbol, **kwargs)]


def test_golden_file_is_a_full_day(golden_bars: list[tuple], golden_trades: list[dict]) -> None:
    assert len(golden_bars) == 390
    assert golden_bars[0][0] == datetime(2024, 3, 15, 13, 30, tzinfo=timezone.utc)
    assert golden_bars[-1][0] == datetime(2024, 3, 15, 19, 59, tzinfo=timezone.utc)
    assert len(golden_trades) >= 3
    assert [t["exit_reason"] for t in golden_trades].count("session_close") == 1
    assert golden_trades[-1]["exit_reason"] == "session_close"


def test_engine_matches_golden_trades(golden_bars: list[tuple], golden_trades: list[dict]) -> None:
    assert_same_trades(engine_trades(golden_bars), golden_trades)


def test_engine_matches_golden_trades_from_validated_ticks(golden_bars, golden_trades) -> None:
    ticks = [RawTick(symbol="SPY", timestamp=t, open=o, high=h, low=lo, close=c, volume=v)
             for t, o, h, lo, c, v in golden_bars]
    assert_same_trades(engine_trades(ticks), golden_trades)


def test_reference_matches_golden_trades(golden_bars: list[tuple], golden_trades: list[dict]) -> None:
    assert_same_trades(reference_trades(golden_bars, symbol="SPY"), golden_trades)


def test_engine_equals_reference_on_golden_day_field_by_field(golden_bars: list[tuple]) -> None:
    engine = engine_trades(golden_bars)
    assert [tuple(t) for t in engine] == [TRADE_FIELDS] * len(engine)  # the trade_history columns
    assert_same_trades(engine, reference_trades(golden_bars, symbol="SPY"))
    first = engine[0]
    assert first["trade_id"] == "sma_crossover:SPY:2024-03-15T14:05:00+00:00"
    assert first["entry_date"].tzinfo is timezone.utc
    assert first["holding_period_hours"] == pytest.approx(44 / 60)
    assert first["realized_pnl"] == (172.80 - 172.98) * 100


def test_golden_trades_are_identical_on_a_second_replay(golden_bars: list[tuple]) -> None:
    strategy = sma_crossover()
    assert engine_trades(golden_bars, strategy=strategy) == engine_trades(golden_bars, strategy=strategy)


# --- several hundred synthetic days -------------------------------------------------------------

# (fast, slow, cents, flat stretches, days): the default parameters on most days; short windows
# for many more trades per day; unrounded prices; flat stretches that make the SMAs tie.
SYNTHETIC = [
    (10, 30, True, False, 180),
    (10, 30, False, False, 40),
    (10, 30, True, True, 40),
    (3, 7, True, False, 30),
    (2, 5, True, True, 30),
]


def _sessions(count: int, seed0: int):
    day = date(2023, 1, 2)
    for k in range(count):
        while day.weekday() >= 5:
            day += timedelta(days=1)
        yield seed0 + k, datetime(day.year, day.month, day.day, 14, 30, tzinfo=timezone.utc)
        day += timedelta(days=1)


@pytest.mark.parametrize(("fast", "slow", "cents", "flat", "days"), SYNTHETIC)
def test_engine_equals_reference_on_synthetic_days(fast, slow, cents, flat, days) -> None:
    strategy = sma_crossover(fast, slow, name=f"sma_{fast}_{slow}")
    total = session_closes = 0
    for seed, start in _sessions(days, seed0=1000 * fast + slow):
        bars = random_walk_day(seed, start, cents=cents, flat_stretches=flat)
        expected = reference_trades(bars, fast=fast, slow=slow, strategy=strategy.name, symbol="SYN")
        # alternate validated and trusted ticks: both paths must give the same trades
        actual = engine_trades(bars, "SYN", strategy, validate=bool(seed % 2))
        assert_same_trades(actual, expected)
        total += len(expected)
        session_closes += sum(t["exit_reason"] == "session_close" for t in expected)
    assert total > days  # the comparison covered real trading, not empty days
    assert 0 < session_closes < total


def test_synthetic_days_with_ties_do_tie() -> None:
    """The flat-stretch days really exercise the <= / >= edges of the cross rules."""
    ties = 0
    for seed, start in _sessions(20, seed0=7):
        closes = [b[4] for b in random_walk_day(seed, start, flat_stretches=True)]
        for i in range(29, len(closes)):
            ties += sum(closes[i - 9:i + 1]) / 10 == sum(closes[i - 29:i + 1]) / 30
    assert ties > 50


def _demo_days(frame, symbol: str):
    """Per-session bar tuples of one symbol from a DemoSource frame ((symbol, timestamp) index)."""
    day_frame = frame.xs(symbol, level="symbol")
    for _, day in day_frame.groupby(day_frame.index.tz_convert("America/New_York").date):
        yield [
            (ts.to_pydatetime().astimezone(timezone.utc), o, h, lo, c, v)
            for ts, o, h, lo, c, v in zip(
                day.index, day.open.tolist(), day.high.tolist(), day.low.tolist(), day.close.tolist(),
                day.volume.tolist(),
            )
        ]


@pytest.mark.parametrize(
    ("symbols", "start", "end"),
    [
        (["AAPL", "DEMO", "XYZ"], date(2024, 1, 1), date(2024, 3, 31)),  # ~180 sessions
        (["SPY"], date(2024, 11, 25), date(2024, 12, 31)),  # early closes: 11-29 and 12-24
    ],
)
def test_engine_equals_reference_on_demo_source_days(symbols, start, end) -> None:
    demo = pytest.importorskip("cachelib.demo")
    frame = demo.DemoSource(seed=11).get_bars(symbols, start, end, timeframe="1Min")
    sessions = trades = 0
    lengths = set()
    for symbol in symbols:
        for bars in _demo_days(frame, symbol):
            expected = reference_trades(bars, symbol=symbol)
            assert_same_trades(engine_trades(bars, symbol, validate=False), expected)
            sessions += 1
            trades += len(expected)
            lengths.add(len(bars))
    assert sessions >= 20 * len(symbols) and trades > sessions
    if end.month == 12:
        assert {390, 210} <= lengths  # full days and early closes


def test_trade_model_round_trips_the_reference_dicts(golden_bars: list[tuple]) -> None:
    for expected in reference_trades(golden_bars, symbol="SPY"):
        assert Trade(**expected).model_dump() == expected
