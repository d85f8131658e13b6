"""Review of the store speed-ups (helper RV14): ``set_many``'s frames read as ``set`` reads each
alone, the New York date rule across time zones, daily reads around a rolled-back new feed,
and intraday chunk look-ups past one query's 500 ranges. On both engines."""

from __future__ import annotations

import pandas as pd
import pytest
from pg_fixtures import table_snapshot

DAYS = pd.DatetimeIndex(["2024-06-03", "2024-06-04"])


def bars(closes: list[float], index: pd.Index = DAYS, **extra: object) -> pd.DataFrame:
    return pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes, "volume": [1, 2],
                         **extra}, index=index)


def stored(cache, symbol: str, column: str, timeframe: str = "1Day") -> list:
    frame = cache.get(symbol, "2024-06-01", "2024-06-30", timeframe=timeframe)
    return frame[column].tolist()


# -- set_many: frames that pd.concat would change ------------------------------------------------


def test_set_many_keeps_a_frames_transactions_next_to_anothers_trade_count(cache) -> None:
    # set() reads "transactions" as trade_count; concatenated next to a frame with a
    # trade_count column, B's counts used to be dropped silently (stored NULL).
    written = cache.set_many({"A": bars([10.0, 20.0], trade_count=[5, 6]),
                              "B": bars([10.0, 20.0], transactions=[7, 8])}, source="alpaca")
    assert written == 4
    assert stored(cache, "A", "trade_count") == [5, 6]
    assert stored(cache, "B", "trade_count") == [7, 8]


@pytest.mark.parametrize("column", ["volume", "trade_count"])
def test_set_many_refuses_true_false_values_next_to_anothers_integers(cache, column: str) -> None:
    # pd.concat makes bool next to int64 an int64 column: True used to be stored as 1.
    before = table_snapshot(cache)
    frames = {"A": bars([10.0, 20.0], trade_count=[1, 2]), "B": bars([10.0, 20.0], trade_count=[3, 4])}
    frames["B"][column] = [True, False]
    with pytest.raises(ValueError, match=f"^bars of B: column '{column}' holds true/false values, not numbers$"):
        cache.set_many(frames, source="alpaca")
    assert table_snapshot(cache) == before


def test_set_many_reads_close_in_one_frame_and_Close_in_another(cache) -> None:
    # Each frame alone is valid; concatenated they used to be "duplicate columns 'close', 'Close'".
    cache.set_many({"A": bars([10.0, 20.0]), "B": bars([30.0, 40.0]).rename(columns={"close": "Close"})},
                   source="alpaca")
    assert stored(cache, "A", "close") == [10.0, 20.0]
    assert stored(cache, "B", "close") == [30.0, 40.0]


def test_set_many_names_the_frame_with_a_repeated_column(cache) -> None:
    # Used to be pandas' "InvalidIndexError: Reindexing only valid with uniquely valued Index objects".
    twice = bars([10.0, 20.0], note=["x", "y"])
    twice.columns = ["open", "high", "low", "close", "volume", "open"]
    with pytest.raises(ValueError, match="^bars of B: duplicate columns 'open', 'open': keep one column per field$"):
        cache.set_many({"A": bars([10.0, 20.0]), "B": twice}, source="alpaca")
    assert cache.count_bars() == 0


def test_set_many_takes_a_time_column_next_to_a_time_index(cache) -> None:
    # Used to fail with "some bar times are missing (NaT)": the concatenation had both layouts.
    with_column = bars([30.0, 40.0]).reset_index(names="date")
    cache.set_many({"A": bars([10.0, 20.0]), "B": with_column}, source="alpaca")
    assert cache.get("B", "2024-06-01", "2024-06-30").index.tolist() == [pd.Timestamp("2024-06-03"),
                                                                        pd.Timestamp("2024-06-04")]
    assert stored(cache, "B", "close") == [30.0, 40.0]


def test_set_many_takes_an_alpaca_frame_next_to_a_plain_one(cache) -> None:
    # alpaca-py's (symbol, timestamp) frame for one symbol, a DatetimeIndex frame for another:
    # used to fail with "no bar times". Alpaca stamps daily bars at New York midnight.
    stamps = pd.DatetimeIndex(["2024-06-03 04:00", "2024-06-04 04:00"], tz="UTC")
    alpaca = bars([10.0, 20.0], index=pd.MultiIndex.from_arrays([["A", "A"], stamps], names=["symbol", "timestamp"]))
    cache.set_many({"A": alpaca, "B": bars([30.0, 40.0])}, source="alpaca")
    assert cache.get("A", "2024-06-01", "2024-06-30").index.tolist() == [pd.Timestamp("2024-06-03"),
                                                                        pd.Timestamp("2024-06-04")]
    assert stored(cache, "B", "close") == [30.0, 40.0]


def test_set_many_defaults_open_per_frame(cache) -> None:
    # A frame with only close next to one with open/high/low: A's open is its close, as in set().
    only_close = pd.DataFrame({"close": [10.0, 20.0]}, index=DAYS)
    cache.set_many({"A": only_close, "B": bars([30.0, 40.0])}, source="alpaca")
    assert stored(cache, "A", "open") == [10.0, 20.0]
    assert stored(cache, "A", "volume") == [0.0, 0.0]


@pytest.mark.parametrize("other_zone", ["UTC", "America/New_York", "Asia/Tokyo"])
def test_daily_instants_in_any_zone_are_new_york_sessions(cache, other_zone: str) -> None:
    # 2024-06-03 23:30 New York = 2024-06-04 03:30 UTC = 12:30 Tokyo: the 06-03 session, whether
    # the frames share a zone (stacked block by block) or not (read one by one).
    instant = pd.Timestamp("2024-06-04 03:30", tz="UTC")
    ny = pd.DatetimeIndex([instant]).tz_convert("America/New_York")
    other = pd.DatetimeIndex([instant]).tz_convert(other_zone)
    one = {"open": [10.0], "high": [10.0], "low": [10.0], "close": [10.0], "volume": [1.0]}
    cache.set_many({"A": pd.DataFrame(one, index=ny), "B": pd.DataFrame(one, index=other)}, source="alpaca")
    for symbol in ("A", "B"):
        assert cache.get(symbol, "2024-06-01", "2024-06-30").index.tolist() == [pd.Timestamp("2024-06-03")]


def test_set_many_large_integers_stay_exact_below_2_53(cache) -> None:
    # Blocks keep their dtype when stacked; an int64 trade count of 2**53 - 1 is stored exactly.
    cache.set_many({"A": bars([10.0, 20.0], trade_count=[2**53 - 1, 1]),
                    "B": bars([10.0, 20.0], trade_count=[3, 4])}, source="alpaca")
    assert stored(cache, "A", "trade_count") == [9007199254740991, 1]


# -- daily reads around a new feed rolled back ------------------------------------------------


def test_daily_reads_forget_a_rolled_back_feed(cache) -> None:
    cache.set("A", bars([1.0, 1.0]), source="alpaca", feed="iex")
    with pytest.raises(RuntimeError), cache.atomic():
        cache.set("A", bars([2.0, 2.0], index=pd.DatetimeIndex(["2024-06-04", "2024-06-05"])),
                  source="alpaca", feed="sip")
        assert stored(cache, "A", "close") == [2.0, 2.0]  # sip outranks iex: one feed answers
        raise RuntimeError("roll back")
    assert stored(cache, "A", "close") == [1.0, 1.0]
    # A new series after the rollback (SQLite may hand it the rolled-back id): its own source.
    cache.set("A", bars([3.0, 3.0], index=pd.DatetimeIndex(["2024-06-05", "2024-06-06"])), source="yahoo")
    assert stored(cache, "A", "close") == [1.0, 1.0, 3.0, 3.0]
    assert cache.get("A", "2024-06-01", "2024-06-30", source="yahoo")["close"].tolist() == [3.0, 3.0]


# -- intraday writes: stored chunks looked up 500 series per query ----------------------------


def test_intraday_merge_past_one_lookup_query(cache) -> None:
    # 501 series: the second write merges into chunks found by two look-up queries.
    one = {"open": [10.0], "high": [10.0], "low": [10.0], "close": [10.0], "volume": [1.0]}
    first = pd.DatetimeIndex(["2024-06-03 14:30"], tz="UTC")
    second = pd.DatetimeIndex(["2024-06-03 14:31"], tz="UTC")
    symbols = [f"S{i:03d}" for i in range(501)]
    cache.set_many({s: pd.DataFrame(one, index=first) for s in symbols}, source="alpaca", timeframe="1Min")
    cache.set_many({s: pd.DataFrame(one, index=second) for s in symbols}, source="alpaca", timeframe="1Min")
    for symbol in ("S000", "S499", "S500"):
        frame = cache.get(symbol, "2024-06-03", "2024-06-03", timeframe="1Min")
        assert frame.index.tolist() == [pd.Timestamp("2024-06-03 14:30", tz="UTC"),
                                        pd.Timestamp("2024-06-03 14:31", tz="UTC")]
