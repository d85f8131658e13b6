"""Corporate actions and read-time adjustment (issue 11): the model and the method.

Expectations are literal numbers: the golden CSVs in ``tests/data`` (real splits and dividends
from the public record, adjusted closes worked out by hand) and small hand-written cases here.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from alpaca.data.enums import Adjustment

from cachelib.corporate_actions import (
    ACTION_COLUMNS,
    ACTION_TYPES,
    ActionRows,
    MissingClosesError,
    actions_frame,
    adjust_bars,
    adjust_block,
    adjusted_bars,
    bar_factors,
    check_adjustment,
    key_factors,
    needed_closes,
    price_volume_factors,
    symbol_history,
)

DATA = Path(__file__).parent / "data"
REL = 1e-12


def golden_actions() -> pd.DataFrame:
    raw = pd.read_csv(DATA / "corporate_actions_golden.csv", comment="#", dtype=str, keep_default_na=False)
    return actions_frame(raw.to_dict("records"))


def golden_closes() -> pd.DataFrame:
    return pd.read_csv(DATA / "raw_closes_golden.csv", comment="#", dtype={"session": str, "as_of": str})


def daily_bars(closes: dict[str, float], volume: float = 1_000_000.0) -> pd.DataFrame:
    """Daily bars in the canonical shape, every price equal to the close."""
    index = pd.DatetimeIndex(pd.to_datetime(list(closes)), name="date")
    c = np.array(list(closes.values()), dtype="float64")
    return pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "volume": volume, "vwap": c,
                         "trade_count": pd.array([7] * len(c), dtype="Int64")}, index=index)


def action(symbol: str, kind: str, ex_date: object, **fields: object) -> dict[str, object]:
    return {"symbol": symbol, "action_type": kind, "ex_date": ex_date, "source": "hand", **fields}


# --------------------------------------------------------------------------------------
# Golden: real events
# --------------------------------------------------------------------------------------

CASES = golden_closes()


@pytest.mark.parametrize("case", CASES.to_dict("records"),
                         ids=[f"{r.symbol}-{r.session}-{r.adjustment}-asof-{r.as_of}" for r in CASES.itertuples()])
def test_golden_adjusted_closes(case: dict) -> None:
    actions = golden_actions()
    actions = actions[actions.symbol == case["symbol"]]
    own = CASES[CASES.symbol == case["symbol"]].drop_duplicates("session")
    closes = dict(zip(own.session, own.raw_close))
    volumes = dict(zip(own.session, own.raw_volume))
    bars = daily_bars(closes)
    bars["volume"] = [float(volumes[s]) for s in closes]
    prev_close = {date.fromisoformat(s): c for s, c in closes.items()}
    out = adjusted_bars(bars, actions, case["adjustment"], date.fromisoformat(case["as_of"]), prev_close)
    row = out.loc[pd.Timestamp(case["session"])]
    for col in ("open", "high", "low", "close", "vwap"):
        assert row[col] == pytest.approx(case["expected_close"], rel=REL), col
    assert row["volume"] == pytest.approx(case["expected_volume"], rel=REL)
    assert row["trade_count"] == 7


def test_golden_actions_frame() -> None:
    frame = golden_actions()
    assert list(frame.columns) == list(ACTION_COLUMNS)
    assert list(zip(frame.symbol, frame.action_type, frame.ex_date)) == [
        ("AAPL", "cash_dividend", date(2020, 8, 7)),
        ("AAPL", "forward_split", date(2020, 8, 31)),
        ("AAPL", "cash_dividend", date(2020, 11, 6)),
        ("AAPL", "cash_dividend", date(2023, 8, 11)),
        ("AAPL", "cash_dividend", date(2024, 8, 12)),
        ("NVDA", "forward_split", date(2024, 6, 10)),
        ("TSLA", "forward_split", date(2022, 8, 25)),
    ]
    assert frame.ratio.tolist()[1] == 4.0 and math.isnan(frame.ratio.tolist()[0])
    assert frame.amount.tolist()[0] == 0.82 and math.isnan(frame.amount.tolist()[1])
    assert frame.new_symbol.tolist() == [None] * 7


def test_golden_needed_closes() -> None:
    aapl = golden_actions()
    aapl = aapl[aapl.symbol == "AAPL"]
    assert needed_closes(aapl, date(2024, 8, 12)) == [
        date(2020, 8, 6), date(2020, 11, 5), date(2023, 8, 10), date(2024, 8, 9)]
    assert needed_closes(aapl, date(2024, 8, 11)) == [date(2020, 8, 6), date(2020, 11, 5), date(2023, 8, 10)]
    # A read starting 2021 is not touched by the 2020 dividends: their closes are not needed.
    assert needed_closes(aapl, date(2024, 8, 12), since=date(2021, 1, 4)) == [date(2023, 8, 10), date(2024, 8, 9)]
    assert needed_closes(aapl, date(2024, 8, 12), adjustment="split") == []
    assert needed_closes(aapl, date(2024, 8, 12), adjustment="raw") == []


def test_action_rows_adjust_like_the_frame() -> None:
    # The store's plain rows (no frame per read) give the frame's factors: NVDA's 10:1 split
    # ex 2024-06-10 and a 0.25 dividend ex 2024-08-12 over a close of 200 on 2024-08-09.
    nan = math.nan
    rows = ActionRows([("forward_split", date(2024, 6, 10), 10.0, nan),
                       ("cash_dividend", date(2024, 8, 12), nan, 0.25)])
    frame = actions_frame([*NVDA, action("NVDA", "cash_dividend", "2024-08-12", amount=0.25)])
    keys = np.array([date(2024, 6, 7), date(2024, 8, 9), date(2024, 8, 12)], dtype="datetime64[D]")
    keys = keys.astype("datetime64[s]").astype("int64")
    closes = {date(2024, 8, 9): 200.0}
    for actions in (rows, frame):
        assert needed_closes(actions, date(2024, 8, 12)) == [date(2024, 8, 9)]
        price, volume = key_factors(keys, False, actions, "all", date(2024, 8, 12), closes)
        assert price.tolist() == pytest.approx([0.1 * 0.99875, 0.99875, 1.0])
        assert volume.tolist() == [10.0, 1.0, 1.0]
    # Plain dicts are neither: the error says what to pass.
    with pytest.raises(ValueError, match="actions must be a DataFrame"):
        key_factors(keys, False, NVDA, "split", date(2024, 8, 12), {})  # type: ignore[arg-type]


def test_read_after_old_dividends_needs_no_old_closes() -> None:
    aapl = golden_actions()
    aapl = aapl[aapl.symbol == "AAPL"]
    bars = daily_bars({"2024-08-09": 216.24, "2024-08-12": 217.53})
    out = adjusted_bars(bars, aapl, "all", date(2024, 8, 12), {date(2024, 8, 9): 216.24})
    assert out.close.tolist() == pytest.approx([215.99, 217.53], rel=REL)


# --------------------------------------------------------------------------------------
# The method on hand-written cases
# --------------------------------------------------------------------------------------


def test_as_of_before_and_after_the_ex_date() -> None:
    nvda = actions_frame([action("NVDA", "forward_split", "2024-06-10", ratio=10)])
    bars = daily_bars({"2024-06-07": 1208.88, "2024-06-10": 121.79})
    before = adjusted_bars(bars, nvda, "split", date(2024, 6, 7), {})
    after = adjusted_bars(bars, nvda, "split", date(2024, 6, 10), {})
    assert before.close.tolist() == [1208.88, 121.79]
    assert after.close.tolist() == pytest.approx([120.888, 121.79], rel=REL)
    assert after.volume.tolist() == [10_000_000.0, 1_000_000.0]
    # as_of as an ISO string or an aware instant (its New York date: 2024-06-10 00:30 EDT)
    as_text = adjusted_bars(bars, nvda, "split", "2024-06-10", {})  # type: ignore[arg-type]
    assert as_text.close.iloc[0] == pytest.approx(120.888)
    late = datetime(2024, 6, 10, 4, 30, tzinfo=timezone.utc)
    assert adjusted_bars(bars, nvda, "split", late, {}).close.iloc[0] == pytest.approx(120.888)
    early = datetime(2024, 6, 10, 3, 30, tzinfo=timezone.utc)  # 23:30 EDT on June 9
    assert adjusted_bars(bars, nvda, "split", early, {}).close.iloc[0] == 1208.88


def test_reverse_split_multiplies_prices_and_divides_volume() -> None:
    acts = actions_frame([action("XREV", "reverse_split", "2024-03-04", ratio=0.1)])
    bars = daily_bars({"2024-03-01": 1.23, "2024-03-04": 12.5}, volume=5_000_000.0)
    out = adjusted_bars(bars, acts, "split", date(2024, 3, 4), {})
    assert out.close.tolist() == pytest.approx([12.3, 12.5], rel=REL)
    assert out.volume.tolist() == pytest.approx([500_000.0, 5_000_000.0], rel=REL)


def test_stock_dividend_is_a_split_of_one_plus_rate() -> None:
    acts = actions_frame([action("XSD", "stock_dividend", "2024-03-04", ratio=1.05)])
    bars = daily_bars({"2024-03-01": 21.0})
    out = adjusted_bars(bars, acts, "split", date(2024, 3, 4), {})
    assert out.close.iloc[0] == pytest.approx(20.0, rel=REL)
    assert out.volume.iloc[0] == pytest.approx(1_050_000.0, rel=REL)
    assert adjusted_bars(bars, acts, "dividend", date(2024, 3, 4), {}).close.iloc[0] == 21.0


def test_dividend_after_a_holiday_uses_the_close_before_the_holiday() -> None:
    # Ex-date Friday 2024-07-05; Thursday July 4 is a holiday, so C is Wednesday's close.
    acts = actions_frame([action("XHOL", "cash_dividend", "2024-07-05", amount=0.5)])
    assert needed_closes(acts, date(2024, 7, 5)) == [date(2024, 7, 3)]
    bars = daily_bars({"2024-07-02": 40.0, "2024-07-03": 50.0, "2024-07-05": 49.6})
    with pytest.raises(MissingClosesError, match="2024-07-03") as err:
        adjusted_bars(bars, acts, "dividend", date(2024, 7, 5), {date(2024, 7, 4): 50.0})
    assert err.value.sessions == [date(2024, 7, 3)]
    out = adjusted_bars(bars, acts, "dividend", date(2024, 7, 5), {date(2024, 7, 3): 50.0})
    # factor 1 - 0.5 / 50 = 0.99
    assert out.close.tolist() == pytest.approx([39.6, 49.5, 49.6], rel=REL)
    assert out.volume.tolist() == [1_000_000.0] * 3


def test_all_combines_a_split_and_a_dividend() -> None:
    acts = actions_frame([
        action("XC", "cash_dividend", "2024-03-05", amount=1.0),   # C = 100 (2024-03-04)
        action("XC", "forward_split", "2024-03-07", ratio=2),
    ])
    bars = daily_bars({"2024-03-04": 100.0, "2024-03-05": 99.0, "2024-03-07": 49.0})
    prev = {date(2024, 3, 4): 100.0}
    # 100 x 0.99 / 2 = 49.5; 99 / 2 = 49.5
    assert adjusted_bars(bars, acts, "all", date(2024, 3, 7), prev).close.tolist() == pytest.approx(
        [49.5, 49.5, 49.0], rel=REL)
    assert adjusted_bars(bars, acts, "split", date(2024, 3, 7), prev).close.tolist() == pytest.approx(
        [50.0, 49.5, 49.0], rel=REL)
    assert adjusted_bars(bars, acts, "dividend", date(2024, 3, 7), prev).close.tolist() == pytest.approx(
        [99.0, 99.0, 49.0], rel=REL)
    assert adjusted_bars(bars, acts, "all", date(2024, 3, 7), prev).volume.tolist() == [
        2_000_000.0, 2_000_000.0, 1_000_000.0]


def test_nan_vwap_stays_nan_and_input_is_not_modified() -> None:
    acts = actions_frame([action("NVDA", "forward_split", "2024-06-10", ratio=10)])
    bars = daily_bars({"2024-06-06": 1200.0, "2024-06-07": 1208.88})
    bars.loc[pd.Timestamp("2024-06-06"), "vwap"] = np.nan
    bars["trade_count"] = pd.array([5, None], dtype="Int64")
    out = adjusted_bars(bars, acts, "split", date(2024, 6, 10), {})
    assert math.isnan(out.vwap.iloc[0]) and out.vwap.iloc[1] == pytest.approx(120.888)
    assert out.trade_count.iloc[0] == 5 and out.trade_count.isna().iloc[1]
    assert bars.close.tolist() == [1200.0, 1208.88]
    assert list(out.columns) == list(bars.columns) and out.index.equals(bars.index)


def test_intraday_bars_use_their_new_york_session() -> None:
    acts = actions_frame([action("NVDA", "forward_split", "2024-06-10", ratio=10)])
    times = pd.DatetimeIndex([
        "2024-06-07T19:59Z",   # 15:59 EDT June 7
        "2024-06-08T00:30Z",   # 20:30 EDT June 7 (after hours): a June 7 bar, adjusted
        "2024-06-10T03:59Z",   # 23:59 EDT June 9
        "2024-06-10T04:00Z",   # 00:00 EDT June 10: the ex-date, not adjusted
        "2024-06-10T13:30Z",   # 09:30 EDT June 10
    ], name="timestamp")
    for unit in ("ns", "us", "s"):
        index = times.as_unit(unit)
        price, volume = bar_factors(index, acts, "split", date(2024, 6, 10), {})
        assert price.tolist() == pytest.approx([0.1, 0.1, 0.1, 1.0, 1.0], rel=REL)
        assert volume.tolist() == [10.0, 10.0, 10.0, 1.0, 1.0]
    # The same instants in New York time give the same factors.
    price, _ = bar_factors(times.tz_convert("America/New_York"), acts, "split", date(2024, 6, 10), {})
    assert price.tolist() == pytest.approx([0.1, 0.1, 0.1, 1.0, 1.0], rel=REL)


def test_store_keys_and_an_in_place_block() -> None:
    """The store's path: int64 keys (seconds) and a 7 x N block in BAR_COLUMNS order."""
    acts = actions_frame([action("NVDA", "forward_split", "2024-06-10", ratio=10)])
    minute_keys = np.array([1717790340, 1717806600, 1717991940, 1717992000])  # 06-07 19:59Z, 06-08 00:30Z,
    price, volume = key_factors(minute_keys, True, acts, "split", date(2024, 6, 10), {})  # 06-10 03:59Z, 04:00Z
    assert price.tolist() == pytest.approx([0.1, 0.1, 0.1, 1.0], rel=REL)
    daily_keys = np.array([1717718400, 1717977600])  # UTC midnight of 2024-06-07 and 2024-06-10
    price, volume = key_factors(daily_keys, False, acts, "split", date(2024, 6, 10), {})
    assert price.tolist() == pytest.approx([0.1, 1.0], rel=REL) and volume.tolist() == [10.0, 1.0]
    # open, high, low, close, volume, vwap, trade_count
    block = np.array([[1200.0, 120.0], [1210.0, 122.0], [1190.0, 119.0], [1208.88, 121.79],
                      [1e6, 2e6], [np.nan, 121.0], [9.0, 8.0]])
    adjust_block(block, (price, volume))
    assert block[:, 0].tolist()[:5] == pytest.approx([120.0, 121.0, 119.0, 120.888, 1e7], rel=REL)
    assert math.isnan(block[5, 0]) and block[6, 0] == 9.0
    assert block[:, 1].tolist() == [120.0, 122.0, 119.0, 121.79, 2e6, 121.0, 8.0]
    with pytest.raises(ValueError, match="7 x N float64"):
        adjust_block(block[:6], (price, volume))
    with pytest.raises(ValueError, match="one value per bar"):
        adjust_block(block, (price[:1], volume[:1]))
    with pytest.raises(ValueError, match="integer seconds"):
        key_factors(np.array([1.5]), True, acts, "split", date(2024, 6, 10), {})


def test_price_volume_factors_on_session_days_in_any_order() -> None:
    acts = actions_frame([
        action("AAPL", "forward_split", "2020-08-31", ratio=4),
        action("AAPL", "cash_dividend", "2020-11-06", amount=0.205),
    ])
    days = np.array(["2020-11-06", "2020-08-28", "2020-11-05", "2020-08-31"], dtype="datetime64[D]")
    price, volume = price_volume_factors(days, acts, "all", date(2020, 11, 6), {date(2020, 11, 5): 119.03})
    # 1 - 0.205 / 119.03 = 118.825 / 119.03 = 0.998277745106275728
    d = 0.998277745106275728
    assert price.tolist() == pytest.approx([1.0, d / 4, d, d], rel=REL)
    assert volume.tolist() == [1.0, 4.0, 1.0, 1.0]
    empty = price_volume_factors(np.array([], dtype="datetime64[D]"), acts, "all", date(2020, 11, 6), {})
    assert [len(a) for a in empty] == [0, 0]


def test_alpaca_adjustment_enum_is_accepted() -> None:
    assert check_adjustment(Adjustment.SPLIT) == "split"
    assert [check_adjustment(a) for a in ("raw", "split", "dividend", "all")] == ["raw", "split", "dividend", "all"]


# --------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------

NVDA = [action("NVDA", "forward_split", "2024-06-10", ratio=10)]


@pytest.mark.parametrize("adjustment", ["adjusted", "SPLIT", " all", "", None, 1, ["all"]])
def test_unknown_adjustment(adjustment: object) -> None:
    bars = daily_bars({"2024-06-07": 1208.88})
    with pytest.raises(ValueError, match="adjustment must be one of"):
        adjusted_bars(bars, actions_frame(NVDA), adjustment, date(2024, 6, 10), {})  # type: ignore[arg-type]


@pytest.mark.parametrize("as_of", [None, 20240610, 1.5, "2024-13-01", "yesterday", ["2024-06-10"],
                                   float("nan"), pd.NaT, "２０２４-06-10"])
def test_as_of_must_be_a_date(as_of: object) -> None:
    bars = daily_bars({"2024-06-07": 1208.88})
    for adjustment in ("raw", "split"):
        with pytest.raises(ValueError, match="as_of"):
            adjusted_bars(bars, actions_frame(NVDA), adjustment, as_of, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="as_of"):
        needed_closes(actions_frame(NVDA), as_of)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount, close", [(50.0, 50.0), (60.0, 50.0), (0.5, 0.0), (0.5, -3.0)])
def test_dividend_not_below_the_close_is_refused(amount: float, close: float) -> None:
    acts = actions_frame([action("XD", "cash_dividend", "2024-03-05", amount=amount)])
    bars = daily_bars({"2024-03-04": 50.0})
    with pytest.raises(ValueError, match=r"cash dividend .* ex 2024-03-05: the dividend must be below"):
        adjusted_bars(bars, acts, "dividend", date(2024, 3, 5), {date(2024, 3, 4): close})


@pytest.mark.parametrize("close", ["abc", float("inf"), True, complex(1, 1)])
def test_a_prev_close_that_is_not_a_number_is_refused(close: object) -> None:
    acts = actions_frame([action("XD", "cash_dividend", "2024-03-05", amount=0.5)])
    bars = daily_bars({"2024-03-04": 50.0})
    with pytest.raises(ValueError, match="raw close of 2024-03-04"):
        adjusted_bars(bars, acts, "dividend", date(2024, 3, 5), {date(2024, 3, 4): close})  # type: ignore[dict-item]


def test_a_nan_prev_close_counts_as_missing() -> None:
    acts = actions_frame([action("XD", "cash_dividend", "2024-03-05", amount=0.5)])
    with pytest.raises(MissingClosesError) as err:
        adjusted_bars(daily_bars({"2024-03-04": 50.0}), acts, "all", date(2024, 3, 5), {date(2024, 3, 4): np.nan})
    assert err.value.sessions == [date(2024, 3, 4)]


@pytest.mark.parametrize("ratio", [0, -4, float("nan"), float("inf"), 1e9])
def test_bad_ratio_in_a_frame_not_built_by_actions_frame(ratio: float) -> None:
    acts = pd.DataFrame([{"symbol": "NVDA", "action_type": "forward_split", "ex_date": date(2024, 6, 10),
                          "ratio": ratio, "amount": np.nan, "new_symbol": None, "source": "x"}])
    with pytest.raises(ValueError, match="split ratio"):
        adjusted_bars(daily_bars({"2024-06-07": 1208.88}), acts, "split", date(2024, 6, 10), {})


def test_actions_of_two_symbols_are_refused() -> None:
    acts = golden_actions()
    with pytest.raises(ValueError, match=r"one symbol .*\['AAPL', 'NVDA', 'TSLA'\]"):
        adjusted_bars(daily_bars({"2020-01-02": 1.0}), acts, "split", date(2024, 8, 12), {})


def test_bad_factor_inputs() -> None:
    acts = actions_frame(NVDA)
    with pytest.raises(ValueError, match="session_days must be a datetime64"):
        price_volume_factors(np.array([1, 2]), acts, "split", date(2024, 6, 10), {})
    with pytest.raises(ValueError, match="NaT"):
        price_volume_factors(np.array(["2024-06-07", "NaT"], dtype="datetime64[D]"), acts, "split",
                             date(2024, 6, 10), {})
    with pytest.raises(ValueError, match="DatetimeIndex"):
        bar_factors(pd.RangeIndex(2), acts, "split", date(2024, 6, 10), {})
    with pytest.raises(ValueError, match="one value per bar"):
        adjust_bars(daily_bars({"2024-06-07": 1.0}), (np.ones(2), np.ones(2)))
    with pytest.raises(ValueError, match="actions must be a DataFrame"):
        adjusted_bars(daily_bars({"2024-06-07": 1.0}), NVDA, "split", date(2024, 6, 10), {})


# --------------------------------------------------------------------------------------
# The model: actions_frame
# --------------------------------------------------------------------------------------


def test_actions_frame_sorts_and_normalises() -> None:
    frame = actions_frame([
        action(" fb ", "name_change", "2022-06-09", new_symbol="meta"),
        action("AAPL", "forward_split", date(2020, 8, 31), ratio="4"),
        action("AAPL", "cash_dividend", "2020-08-31", amount=0.205, ratio=None, new_symbol=""),
    ])
    assert frame.values.tolist()[0][:3] == ["AAPL", "cash_dividend", date(2020, 8, 31)]
    assert frame.values.tolist()[1][:4] == ["AAPL", "forward_split", date(2020, 8, 31), 4.0]
    assert frame.values.tolist()[2][:3] == ["FB", "name_change", date(2022, 6, 9)]
    assert frame.new_symbol.tolist() == [None, None, "META"]
    assert ACTION_TYPES == ("forward_split", "reverse_split", "cash_dividend", "stock_dividend", "name_change")
    empty = actions_frame([])
    assert list(empty.columns) == list(ACTION_COLUMNS) and len(empty) == 0
    assert str(empty.ratio.dtype) == "float64"
    assert list(actions_frame(frame).values.tolist()[1][:4]) == ["AAPL", "forward_split", date(2020, 8, 31), 4.0]


@pytest.mark.parametrize("row, message", [
    (action("AAPL", "spin_off", "2020-08-31"), "action_type must be one of"),
    (action("AAPL", "forward_split", "2020-08-31"), "ratio is missing"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=0), "outside"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=-4), "outside"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=float("nan")), "ratio is missing"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=float("inf")), "finite"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=True), "must be a number"),
    (action("AAPL", "forward_split", "2020-08-31", ratio="four"), "must be a number"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=0.25), "needs a ratio above 1"),
    (action("AAPL", "reverse_split", "2020-08-31", ratio=10), "needs a ratio below 1"),
    (action("AAPL", "stock_dividend", "2020-08-31", ratio=0.05), "needs a ratio above 1"),
    (action("AAPL", "cash_dividend", "2020-08-07"), "amount .* is missing"),
    (action("AAPL", "cash_dividend", "2020-08-07", amount=-0.82), "positive"),
    (action("AAPL", "cash_dividend", "2020-08-07", amount=0.82, ratio=1.0), "ratio is only for"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=4, amount=1.0), "amount is only for"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=4, new_symbol="X"), "new_symbol is only for"),
    (action("FB", "name_change", "2022-06-09"), "new_symbol is missing"),
    (action("FB", "name_change", "2022-06-09", new_symbol="fb"), "same symbol"),
    (action("AAPL", "forward_split", "2020-02-30", ratio=4), "ex_date"),
    (action("AAPL", "forward_split", None, ratio=4), "ex_date"),
    (action("AAPL", "forward_split", 20200831, ratio=4), "ex_date"),
    (action("ＡAPL", "forward_split", "2020-08-31", ratio=4), "outside ASCII"),
    (action("A" * 10_000, "forward_split", "2020-08-31", ratio=4), "longer than"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=4, source=""), "source must name"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=4, source="x" * 1000), "at most 100"),
    (action("AAPL", "forward_split", "2020-08-31", ratio=4, fetched="now"), "unknown field"),
    ({"symbol": "AAPL"}, "action_type must be one of"),
])
def test_actions_frame_refuses_bad_rows(row: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        actions_frame([row])


def test_actions_frame_refuses_duplicates_and_non_rows() -> None:
    row = action("AAPL", "forward_split", "2020-08-31", ratio=4)
    with pytest.raises(ValueError, match="listed twice"):
        actions_frame([row, {**row, "symbol": "aapl", "ex_date": date(2020, 8, 31)}])
    for bad in ("AAPL", row, [["AAPL"]], [None]):
        with pytest.raises(ValueError, match="mapping"):
            actions_frame(bad)


# --------------------------------------------------------------------------------------
# Symbol changes
# --------------------------------------------------------------------------------------


def test_symbol_history_follows_name_changes_back() -> None:
    acts = actions_frame([
        action("FB", "name_change", "2022-06-09", new_symbol="META"),
        action("AAPL", "forward_split", "2020-08-31", ratio=4),
        # a ticker reused: OLD became MID, MID became NEW, and later NEW went back to OLD
        action("OLD", "name_change", "2010-01-04", new_symbol="MID"),
        action("MID", "name_change", "2015-01-02", new_symbol="NEW"),
        action("NEW", "name_change", "2020-01-02", new_symbol="OLD"),
    ])
    assert symbol_history(acts, "META") == [("FB", None, date(2022, 6, 8)), ("META", date(2022, 6, 9), None)]
    assert symbol_history(acts, "aapl") == [("AAPL", None, None)]
    assert symbol_history(acts, "OLD") == [
        ("OLD", None, date(2010, 1, 3)),
        ("MID", date(2010, 1, 4), date(2015, 1, 1)),
        ("NEW", date(2015, 1, 2), date(2020, 1, 1)),
        ("OLD", date(2020, 1, 2), None),
    ]
    with pytest.raises(ValueError, match="symbol"):
        symbol_history(acts, "ＭETA")
