"""Issue 9, section 3: every bad input is a ``ValueError`` naming the field, and a rejected
call leaves the store exactly as it was.

Expected values are written by hand from the issue; every store test runs on a real SQLite file
and on a real PostgreSQL schema (the ``cache`` fixture), and "exactly as it was" compares
``table_snapshot`` (every row of every table) before and after.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import pytest
from pg_fixtures import table_snapshot

from cachelib import bars as bars_module
from cachelib.bars import normalize_symbol, parse_occ_symbol, parse_timeframe, split_valid_rows
from cachelib.cache_adapter import LEGACY_MAX_BYTES, migrate_legacy

DAILY = pd.DataFrame(
    {
        "open": [100.0, 101.0],
        "high": [101.5, 102.0],
        "low": [99.5, 100.5],
        "close": [101.0, 101.5],
        "volume": [1_000_000, 1_200_000],
        "trade_count": [5000, 6000],
    },
    index=pd.DatetimeIndex(["2024-01-02", "2024-01-03"], name="date"),
)

CHAIN = pd.DataFrame(
    {
        "contract_symbol": ["AAPL240126C00100000", "AAPL240126P00100000"],
        "strike": [100.0, 100.0],
        "option_type": ["call", "put"],
        "expiration": [date(2024, 1, 26), date(2024, 1, 26)],
        "bid": [2.10, 1.95],
        "ask": [2.20, 2.05],
        "volume": [120, 80],
        "open_interest": [1500, 900],
        "implied_volatility": [0.25, 0.26],
        "delta": [0.52, -0.48],
    }
)

ENTRY = datetime(2024, 3, 15, 14, 0, tzinfo=timezone.utc)
EXIT = datetime(2024, 3, 15, 17, 30, tzinfo=timezone.utc)
TRADE = {"trade_id": "T1", "symbol": "AAPL", "entry_date": ENTRY, "entry_price": 100.0, "quantity": 10}


@pytest.fixture
def filled(cache):
    """A cache holding two daily bars, a chain and a trade: rejected calls must not touch them."""
    cache.set("SPY", DAILY, source="alpaca")
    cache.store_raw_options("AAPL", "2024-01-19", CHAIN, underlying_price=100.5)
    cache.archive_trade(TRADE)
    cache.record_coverage("SPY", [date(2024, 1, 2)], source="alpaca")
    return cache


# -- 1. symbols are validated before they are upper-cased --------------------------------------


@pytest.mark.parametrize(
    "symbol",
    [
        "ıbm",  # dotless i: upper-cases to IBM
        "ﬁ",  # a ligature: upper-cases to FI
        "spyß",  # upper-cases to SPYSS
        "ＳＰＹ",  # full-width letters
        "SP\u200bY",  # a zero-width space
        "SPY\x00",
        "\tSPY",
        "SPY\n",
        "",
        "   ",
        "A" * 33,
        "A" * 100_000,
    ],
)
def test_non_ascii_and_odd_symbols_are_refused_before_normalising(filled, symbol):
    before = table_snapshot(filled)
    with pytest.raises(ValueError, match="symbol"):
        normalize_symbol(symbol)
    with pytest.raises(ValueError, match="symbol"):
        filled.set(symbol, DAILY, source="alpaca")
    with pytest.raises(ValueError, match="symbol"):
        filled.get(symbol, "2024-01-02", "2024-01-03")
    with pytest.raises(ValueError, match="symbol"):
        filled.archive_trade({**TRADE, "trade_id": "T2", "symbol": symbol})
    assert table_snapshot(filled) == before


def test_symbol_messages_show_invisible_characters_and_stay_short():
    with pytest.raises(ValueError) as info:
        normalize_symbol("SP\u200bY")
    assert "'SP\\u200bY'" in str(info.value)
    with pytest.raises(ValueError) as info:
        normalize_symbol("A" * 100_000)
    assert len(str(info.value)) < 200


def test_plain_ascii_symbols_still_normalise():
    assert normalize_symbol(" brk.b ") == "BRK.B"
    assert normalize_symbol("btc/usd") == "BTC/USD"


@pytest.mark.parametrize(
    "contract", ["ﬁ240126P00050000", "AAPL٢٤٠١٢٦P00050000", "AAPL240126P0005000\x00", "AAPL241326P00050000", 5]
)
def test_occ_symbols_are_ascii_and_real(contract):
    with pytest.raises(ValueError, match="OCC"):
        parse_occ_symbol(contract)


def test_timeframes_take_ascii_digits_only():
    with pytest.raises(ValueError, match="timeframe"):
        parse_timeframe("١Day")  # an Arabic-Indic one


# -- 2. numbers that do not fit ------------------------------------------------------------------


@pytest.mark.parametrize("count", [1e25, 1.5, -1, 2.0**63])
def test_trade_counts_that_do_not_fit_are_refused(filled, count):
    before = table_snapshot(filled)
    frame = DAILY.copy()
    frame["trade_count"] = [5000, count]
    with pytest.raises(ValueError, match="trade_count"):
        filled.set("SPY", frame, source="alpaca")
    assert table_snapshot(filled) == before


def test_large_whole_trade_counts_read_back_exactly(cache):
    frame = DAILY.copy()
    frame["trade_count"] = [4_000_000_000, 2**53]
    cache.set("SPY", frame, source="alpaca")
    assert cache.get("SPY", "2024-01-02", "2024-01-03")["trade_count"].tolist() == [4_000_000_000, 2**53]


@pytest.mark.parametrize("ttl", [1e300, float("inf"), float("nan"), -1, True, "5", [1], 876_601])
def test_bad_ttl_hours_are_refused_everywhere(filled, ttl):
    before = table_snapshot(filled)
    with pytest.raises(ValueError, match="ttl_hours"):
        filled.set("QQQ", DAILY, source="alpaca", ttl_hours=ttl)
    with pytest.raises(ValueError, match="ttl_hours"):
        filled.record_coverage("QQQ", [date(2024, 1, 2)], source="alpaca", ttl_hours=ttl)
    with pytest.raises(ValueError, match="ttl_hours"):
        filled.store_raw_options("MSFT", "2024-01-19", CHAIN.assign(contract_symbol=None), ttl_hours=ttl)
    assert table_snapshot(filled) == before


def test_the_longest_ttl_is_accepted(cache):
    assert cache.set("SPY", DAILY, source="alpaca", ttl_hours=876_600) == 2


@pytest.mark.parametrize(
    "change, field",
    [
        ({"quantity": 1e300}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"entry_price": "abc"}, "entry_price"),
        ({"entry_price": 1e300, "exit_price": 1e-300, "exit_date": EXIT, "quantity": 1e15}, "realized_pnl"),
        ({"entry_date": "9999-12-31"}, "entry_date"),
    ],
)
def test_trade_numbers_that_do_not_fit_are_refused(filled, change, field):
    before = table_snapshot(filled)
    with pytest.raises(ValueError, match=field):
        filled.archive_trade({**TRADE, "trade_id": "T2", **change})
    assert table_snapshot(filled) == before


@pytest.mark.parametrize(
    "column, value",
    [("volume", 1e30), ("volume", 1.5), ("open_interest", -3), ("open_interest", 1e19), ("bid", True),
     ("strike", complex(100, 1))],
)
def test_option_numbers_that_do_not_fit_are_refused(filled, column, value):
    before = table_snapshot(filled)
    chain = CHAIN.copy().astype({column: object})
    chain.loc[1, column] = value
    with pytest.raises(ValueError, match=column):
        filled.store_raw_options("AAPL", "2024-01-22", chain, underlying_price=100.5)
    assert table_snapshot(filled) == before


def test_a_minute_query_over_all_years_returns_everything(cache):
    """The call: bounds from year 1 to 9999 are clamped to the keys a bar can have, so asking
    for everything gets everything (no OverflowError)."""
    idx = pd.DatetimeIndex(["1700-01-04 15:00", "2024-01-02 14:30", "2250-01-02 15:00"], tz="UTC")
    one = {"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 10.0}
    cache.set("SPY", pd.DataFrame([one] * 3, index=idx), source="alpaca", timeframe="1Min")
    df = cache.get("SPY", "0001-01-01", "9999-12-31", timeframe="1Min")
    assert df.index.tolist() == idx.tolist()
    assert cache.get("SPY", datetime.min, datetime.max, timeframe="1Min") is not None
    assert cache.exists("SPY", "0001-01-01", "9999-12-31", timeframe="1Min") is True
    assert cache.count_bars("SPY", "0001-01-01", "9999-12-31") == 3
    assert cache.get_trade_history(start="0001-01-01", end="9999-12-31").empty
    assert cache.delete("SPY", "0001-01-01", "9999-12-31", timeframe="1Min") == 3


@pytest.mark.parametrize("bad", [pd.NaT, np.datetime64("NaT"), float("nan"), [1], 20240102, True, object()])
def test_dates_that_are_not_dates_name_their_argument(filled, bad):
    before = table_snapshot(filled)
    calls = {
        "start": [
            lambda: filled.get("SPY", bad, "2024-01-03"),
            lambda: filled.exists("SPY", bad),
            lambda: filled.count_bars("SPY", bad),
            lambda: filled.delete("SPY", bad),
            lambda: filled.missing_sessions("SPY", bad, "2024-01-03"),
            lambda: filled.missing_sessions_many(["SPY"], bad, "2024-01-03"),
            lambda: filled.get_trade_history(start=bad),
            lambda: filled.delete_trades(start=bad),
        ],
        "end": [
            lambda: filled.get("SPY", "2024-01-02", bad),
            lambda: filled.count_bars("SPY", end=bad),
            lambda: filled.delete("SPY", end=bad),
        ],
        "trading_date": [
            lambda: filled.store_raw_options("AAPL", bad, CHAIN),
            lambda: filled.get_raw_options("AAPL", bad),
            lambda: filled.delete_raw_options(trading_date=bad),
        ],
        "before": [lambda: filled.delete_raw_options(before=bad)],
        "expiration": [lambda: filled.get_raw_options("AAPL", "2024-01-19", expiration=bad)],
        "snapshot_time": [lambda: filled.store_raw_options("AAPL", "2024-01-22", CHAIN, snapshot_time=bad)],
        "session": [lambda: filled.record_coverage("SPY", [bad], source="alpaca")],
        "entry_date": [lambda: filled.archive_trade({**TRADE, "trade_id": "T2", "entry_date": bad})],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(ValueError, match=name):
                fn()
    assert table_snapshot(filled) == before


def test_get_without_a_bound_says_which(cache):
    with pytest.raises(ValueError, match="end is required"):
        cache.get("SPY", "2024-01-02", None)


def test_sessions_must_be_a_list(filled):
    before = table_snapshot(filled)
    with pytest.raises(ValueError, match="sessions must be a list"):
        filled.record_coverage("SPY", "2024-01-02", source="alpaca")
    with pytest.raises(ValueError, match="rows_per_session"):
        filled.record_coverage("SPY", [date(2024, 1, 3)], source="alpaca",
                               rows_per_session={date(2024, 1, 3): 1.5})
    assert table_snapshot(filled) == before


@pytest.mark.parametrize("columns", [["close", "Close"], ["close", "close"], ["open", "OPEN", "close"]])
def test_duplicate_columns_are_named(filled, columns):
    before = table_snapshot(filled)
    frame = pd.DataFrame([[101.0] * len(columns)] * 2, columns=columns, index=DAILY.index)
    with pytest.raises(ValueError, match="duplicate columns") as info:
        filled.set("SPY", frame, source="alpaca")
    clash = [c for c in columns if [x.lower() for x in columns].count(c.lower()) > 1]
    assert all(repr(c) in str(info.value) for c in clash)
    assert table_snapshot(filled) == before


def test_duplicate_option_columns_are_named(filled):
    before = table_snapshot(filled)
    chain = CHAIN.copy()
    chain["Strike"] = chain["strike"]
    with pytest.raises(ValueError, match="duplicate columns.*strike"):
        filled.store_raw_options("AAPL", "2024-01-22", chain)
    assert table_snapshot(filled) == before


@pytest.mark.parametrize(
    "values",
    [
        [True, False],  # a bool column
        [complex(101, 0), complex(101.5, 2)],  # a complex column
        [101.0, True],  # an object column holding a bool
        [101.0, complex(101.5, 0)],  # an object column holding a complex
    ],
    ids=["bool", "complex", "object-bool", "object-complex"],
)
def test_bool_or_complex_prices_are_refused(filled, values):
    before = table_snapshot(filled)
    frame = DAILY.copy()
    frame["close"] = pd.Series(values, index=DAILY.index, dtype=object if len({type(v) for v in values}) > 1
                               else None)
    with pytest.raises(ValueError, match="'close'"):
        filled.set("SPY", frame, source="alpaca")
    assert table_snapshot(filled) == before


def test_a_vendors_bool_price_rejects_only_its_row():
    frame = DAILY.copy().astype({"close": object})
    frame.iloc[1, frame.columns.get_loc("close")] = True
    valid, rejections = split_valid_rows(frame)
    assert valid.index.tolist() == [pd.Timestamp("2024-01-02")]
    assert rejections == [("2024-01-03T00:00:00", "NaN or infinite price")]


# -- 3. reversed ranges --------------------------------------------------------------------------


def test_reversed_ranges_are_refused_everywhere(filled):
    before = table_snapshot(filled)
    late, early = "2024-02-01", "2024-01-01"
    calls = [
        lambda: filled.get("SPY", late, early),
        lambda: filled.exists("SPY", late, early),
        lambda: filled.count_bars("SPY", late, early),
        lambda: filled.delete("SPY", late, early),
        lambda: filled.missing_sessions("SPY", late, early),
        lambda: filled.missing_sessions_many(["SPY"], late, early),
        lambda: filled.get_trade_history(start=late, end=early),
        lambda: filled.delete_trades(start=late, end=early),
        lambda: filled.get("SPY", "2024-01-02T15:00:00Z", "2024-01-02T14:00:00Z", timeframe="1Min"),
        lambda: filled.missing_sessions("SPY", "2024-01-02T15:00:00Z", "2024-01-02T14:00:00Z",
                                        timeframe="1Min"),
    ]
    for fn in calls:
        with pytest.raises(ValueError, match=r"start '2024-0.*' is after end '2024-0"):
            fn()
    assert table_snapshot(filled) == before


def test_open_ranges_reach_any_year(filled):
    assert filled.count_bars("SPY", end="1850-01-01") == 0
    assert filled.count_bars("SPY", start="2300-01-01") == 0
    assert filled.count_bars("SPY", start="2024-01-03") == 1
    assert filled.get_trade_history(end="1850-01-01").empty


def test_missing_sessions_many_takes_a_comma_string_not_its_letters(cache):
    assert cache.missing_sessions_many("SPY,QQQ", "2024-01-02", "2024-01-03") == {
        "SPY": [date(2024, 1, 2), date(2024, 1, 3)],
        "QQQ": [date(2024, 1, 2), date(2024, 1, 3)],
    }


# -- 4. trades -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trade, words",
    [
        ({**TRADE, "trade_id": "N", "exit_date": datetime(2024, 3, 14, 14, 0, tzinfo=timezone.utc),
          "exit_price": 101.0}, "'N': exit_date 2024-03-14T14:00:00\\+00:00 is before entry_date"),
        ({"trade_id": "T1", "exit_date": datetime(2024, 3, 14, 14, 0, tzinfo=timezone.utc)},
         "'T1': exit_date .* is before entry_date 2024-03-15T14:00:00"),
        ({"trade_id": "T1", "entry_date": datetime(2024, 3, 16, tzinfo=timezone.utc)}, "'T1': .*before entry_date"),
        ({**TRADE, "trade_id": "N", "quantity": 0}, "'N': quantity"),
        ({**TRADE, "trade_id": "N", "entry_price": float("nan")}, "'N': entry_price"),
        ({**TRADE, "trade_id": "N", "entry_price": float("inf")}, "'N': entry_price"),
        ({**TRADE, "trade_id": "N", "entry_price": 0.0}, "'N': entry_price"),
        ({"trade_id": "T1", "exit_price": -1.0}, "'T1': exit_price"),
        ({"trade_id": "T1", "symbol": "MSFT"}, "'T1': symbol MSFT differs from the stored AAPL"),
        ({**TRADE, "trade_id": "N", "signal_confidence": 1.5}, "'N': signal_confidence"),
        ({**TRADE, "trade_id": "N", "signal_confidence": -0.1}, "'N': signal_confidence"),
        ({**TRADE, "trade_id": "x" * 201}, "trade_id is longer"),
    ],
    ids=["exit-before-entry", "update-exit-before-stored-entry", "update-entry-after-exit", "zero-qty",
         "nan-price", "inf-price", "zero-price", "negative-exit", "symbol-change", "confidence-high",
         "confidence-low", "long-id"],
)
def test_bad_trades_are_refused_and_change_nothing(filled, trade, words):
    filled.archive_trade({"trade_id": "T1", "exit_date": EXIT})  # T1 now has an exit at 17:30
    before = table_snapshot(filled)
    with pytest.raises(ValueError, match=words):
        filled.archive_trade(trade)
    assert table_snapshot(filled) == before


def test_an_exit_at_the_entry_and_edge_confidences_are_fine(cache):
    cache.archive_trade({**TRADE, "exit_date": ENTRY, "exit_price": 100.0, "signal_confidence": 1})
    cache.archive_trade({**TRADE, "trade_id": "T2", "signal_confidence": 0.0})
    df = cache.get_trade_history().set_index("trade_id")
    assert df.loc["T1", "holding_period_hours"] == 0.0
    assert df["signal_confidence"].tolist() == [1.0, 0.0]


# -- 5. options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "column, value, words",
    [
        ("contract_symbol", "AAPL240126P00105000", "contradicts.*strike 105.0 != 100.0"),
        ("contract_symbol", "AAPL240126C00100000", "contradicts.*option_type call != put"),
        ("contract_symbol", "AAPL240202P00100000", "contradicts.*expiration 2024-02-02 != 2024-01-26"),
        ("contract_symbol", "MSFT240126P00100000", "contradicts.*underlying MSFT != AAPL"),
        ("contract_symbol", "not-a-contract", "contract_symbol: not an OCC option symbol"),
        ("expiration", date(2024, 1, 12), "expiration 2024-01-12 is before the trading date 2024-01-19"),
        ("expiration", pd.NaT, "expiration is missing"),
        ("expiration", None, "expiration is missing"),
        ("implied_volatility", -0.2, "implied_volatility must be >= 0"),
        ("delta", -1.5, "delta must be between -1 and 1"),
    ],
)
def test_contradicting_or_impossible_option_rows_store_nothing(filled, column, value, words):
    before = table_snapshot(filled)
    chain = CHAIN.copy().astype({column: object})
    chain.at[1, column] = value
    if column == "expiration" and value is not pd.NaT and value is not None:
        chain["contract_symbol"] = None  # let the store build the symbol from the row
    with pytest.raises(ValueError, match=words):
        filled.store_raw_options("AAPL", "2024-01-19", chain, underlying_price=100.5)
    assert table_snapshot(filled) == before


def test_consistent_contracts_are_stored_including_adjusted_roots_and_same_day_expiry(cache):
    chain = CHAIN.copy()
    chain["contract_symbol"] = ["AAPL1240126C00100000", "AAPL240126P00100000"]
    assert cache.store_raw_options("AAPL", "2024-01-26", chain, underlying_price=100.5) == 2
    brk = CHAIN.iloc[:1].assign(contract_symbol="BRKB240126C00100000")
    assert cache.store_raw_options("BRK.B", "2024-01-19", brk) == 1


# -- 6. legacy import ----------------------------------------------------------------------------


def _bar(day: str, **changes) -> dict:
    bar = {"date": day, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 100}
    bar.update(changes)
    return bar


def _doc(*bars: dict) -> str:
    return json.dumps({"metadata": {"source": "alpaca"}, "data": list(bars)})


NASTY = {
    "AAA_2024-01-02_2024-01-02_alpaca.json": ('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                             "bad JSON: nested too deeply"),
    "AAB_2024-01-02_2024-01-02_alpaca.json": (_doc(_bar(12345)), "bar 0: 'date' must be a date string"),
    "AAC_2024-01-02_2024-01-02_alpaca.json": (_doc(_bar(True)), "bar 0: 'date' must be a date string"),
    "AAD_2024-01-02_2024-01-02_alpaca.json": (_doc(_bar(None)), "bar 0: 'date' must be a date string"),
    "AAE_2024-01-02_2024-01-03_alpaca.json": (_doc(_bar("2024-01-02"), _bar("2024-01-05")),
                                             "invalid bars: 1 bar(s) outside the file name's range "
                                             "2024-01-02..2024-01-03, the first at 2024-01-05"),
    "AAF_2024-01-02_2024-01-02_alpaca.json": ('{"data": [{"date": "2024-01-02", "open": 1' + "0" * 5000
                                             + ', "high": 11, "low": 9, "close": 10, "volume": 1}]}',
                                             "bad JSON: Exceeds the limit"),
    "AAG_2024-01-02_2024-01-02_alpaca.json": (_doc(_bar("2024-01-02", close=10**400)), "invalid bars: "),
    "AAH_2024-01-02_2024-01-02_alpaca.json": (_doc(_bar("2024-01-02", close=[1, 2])),
                                             "bar 0: field 'close' holds list"),
    "AAI_2024-01-02_2024-01-02_alpaca.json": (_doc(_bar("2024-01-02", close=True)),
                                             "bar 0: field 'close' holds bool"),
    "AAJ_2024-01-02_2024-01-02_alpaca.json": (b'{"data": [{"date": "2024-01-02\xff"}]}', "cannot read the file"),
    "AAK_2024-01-02_2024-01-02_alpaca.json": (_doc(_bar("2024-01-02", close=float("inf"))),
                                             "invalid bars: 1 invalid bar(s): NaN or infinite price"),
    "AAL_2024-01-02_2024-01-02_alpaca.json": (json.dumps({"metadata": {"symbol": {"a": 1}}, "data": []}),
                                             "bad metadata symbol: not a string"),
    "AAM_2024-01-02_2024-01-02_alpaca.json": (json.dumps({"metadata": {"source": "x" * 100}, "data": []}),
                                             "bad source or timeframe: source"),
    "AAN_2024-01-02_2024-01-02_alpaca.json": (_doc(_bar("2024-01-02", Close=11.0)), "invalid bars: duplicate"),
    "ıBM_2024-01-02_2024-01-02_alpaca.json": (_doc(_bar("2024-01-02")), "bad file name: symbol 'ıBM'"),
}


def test_a_directory_of_nasty_files_imports_the_good_one_and_lists_each_bad_one(cache, tmp_path):
    good = tmp_path / "SPY_2024-01-02_2024-01-03_alpaca.json"
    good.write_text(_doc(_bar("2024-01-02"), _bar("2024-01-03", close=10.75)))
    for name, (content, _) in NASTY.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    huge = tmp_path / "HUGE_2024-01-02_2024-01-02_alpaca.json"
    with open(huge, "wb") as fh:  # sparse: refused by its size before a byte is read
        fh.truncate(LEGACY_MAX_BYTES + 1)
    fifo = tmp_path / "FIFO_2024-01-02_2024-01-02_alpaca.json"
    os.mkfifo(fifo)  # open() would block forever: refused unread
    device = tmp_path / "ZERO_2024-01-02_2024-01-02_alpaca.json"
    device.symlink_to("/dev/zero")  # reading would never end
    folder = tmp_path / "DIR_2024-01-02_2024-01-02_alpaca.json"
    folder.mkdir()
    not_regular = "not a regular file"
    reasons = {**{n: r for n, (_, r) in NASTY.items()}, huge.name: "file is larger than 256 MiB",
               fifo.name: not_regular, device.name: not_regular, folder.name: not_regular}

    for dry_run in (True, False):
        report = migrate_legacy(cache, tmp_path, dry_run=dry_run)
        assert [r.path.name for r in report.imported] == [good.name]
        assert report.rows_imported == 2
        failed = {r.path.name: r.error for r in report.failed}
        assert sorted(failed) == sorted(reasons)
        for name, reason in reasons.items():
            assert failed[name].startswith(reason), (name, failed[name])
    assert cache.get("SPY", "2024-01-01", "2024-01-31")["close"].tolist() == [10.5, 10.75]
    assert cache.get_stats()["total_entries"] == 2


def test_legacy_dates_must_be_date_strings(cache, tmp_path):
    """12345 used to be imported as 1970-01-01; a string that is not a date is refused too."""
    for value in ("12345", "2024-01-02 and then some"):
        path = tmp_path / "SPY_2024-01-02_2024-01-02_alpaca.json"
        path.write_text(_doc(_bar(value)))
        report = migrate_legacy(cache, tmp_path)
        assert report.failed[0].error.startswith(f"cannot read bar 0 date {value!r}")
    assert cache.get_stats()["total_entries"] == 0


def test_any_exception_from_content_is_the_files_reason(cache, tmp_path, monkeypatch):
    """A failure nobody foresaw (here MemoryError while reading the JSON) is still only that
    file's reason; the file after it is imported."""
    (tmp_path / "AAA_2024-01-02_2024-01-02_alpaca.json").write_text(_doc(_bar("2024-01-02")))
    (tmp_path / "SPY_2024-01-02_2024-01-02_alpaca.json").write_text(_doc(_bar("2024-01-02")))
    real_loads = json.loads
    calls = []

    def failing_first(text, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("cannot allocate")
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr("cachelib.cache_adapter.json.loads", failing_first)
    report = migrate_legacy(cache, tmp_path)
    assert [(r.path.name, r.error) for r in report.failed] == [
        ("AAA_2024-01-02_2024-01-02_alpaca.json", "unreadable content (MemoryError: cannot allocate)")]
    assert [r.path.name for r in report.imported] == ["SPY_2024-01-02_2024-01-02_alpaca.json"]


def test_key_bounds_are_pandas_bounds():
    assert pd.Timestamp(bars_module.KEY_MIN, unit="s") >= pd.Timestamp.min
    assert pd.Timestamp(bars_module.KEY_MAX, unit="s") <= pd.Timestamp.max


@pytest.mark.parametrize("limit", [True, -1, 2**70, 1.0, "5"])
def test_trade_history_limit_must_be_a_count(filled, limit):
    with pytest.raises(ValueError, match="limit"):
        filled.get_trade_history(limit=limit)
