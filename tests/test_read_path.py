"""The read path's fast lanes (issue 10 latency targets) answer exactly as the general ones."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from cachelib.bars import frame_from_block, frame_from_rows, key_range, parse_timeframe, to_date
from cachelib.store import chunks


def test_frame_from_rows_builds_the_canonical_frame_bit_for_bit():
    rows = [(86_400, 1.5, 2.0, -0.0, 1.75, 100.0, None, 7), (172_800, 2.5, 3.0, 2.0, 2.25, 0.0, 2.1, None)]
    frame = frame_from_rows(rows, "1Day")
    assert list(frame.columns) == ["open", "high", "low", "close", "volume", "vwap", "trade_count"]
    assert [str(t) for t in frame.dtypes] == ["float64"] * 6 + ["Int64"]
    assert frame.index.name == "date" and list(frame.index) == [pd.Timestamp("1970-01-02"), pd.Timestamp("1970-01-03")]
    assert np.signbit(frame["low"].iloc[0]) and frame["low"].iloc[0] == 0.0  # -0.0 kept
    assert np.isnan(frame["vwap"].iloc[0]) and frame["vwap"].iloc[1] == 2.1
    assert frame["trade_count"].tolist() == [7, pd.NA]
    frame.loc[frame.index[0], "close"] = 9.0  # a read frame is the caller's to change
    frame["extra"] = 1
    assert frame["close"].tolist() == [9.0, 2.25]
    empty = frame_from_rows([], "5Min")
    assert len(empty) == 0 and str(empty.index.dtype) == "datetime64[ns, UTC]" and empty.index.name == "timestamp"


def test_frame_from_block_shares_the_float_columns_and_masks_missing_counts():
    values = np.array([[1.0, 2.0], [3.0, 4.0], [0.5, 1.0], [2.0, 3.0], [10.0, 20.0], [np.nan, 1.5], [np.nan, 4.0]])
    frame = frame_from_block(np.array([60, 120]), values, "1Min")
    assert list(frame.index) == [pd.Timestamp("1970-01-01 00:01", tz="UTC"), pd.Timestamp("1970-01-01 00:02", tz="UTC")]
    assert frame["trade_count"].tolist() == [pd.NA, 4]
    assert np.shares_memory(frame["open"].to_numpy(), values)


def test_decoding_one_chunk_or_several_gives_the_same_writable_arrays():
    times = np.array([1_700_000_000, 1_700_000_060, 1_700_000_180], dtype=np.int64)
    values = np.arange(21, dtype=np.float64).reshape(7, 3)
    blob = chunks.encode(times, values)
    one_t, one_v = chunks.decode(blob, 3, 1_700_000_000)
    assert one_t.tolist() == [1_700_000_000, 1_700_000_060, 1_700_000_180]
    assert one_v[3].tolist() == [9.0, 10.0, 11.0]
    one_v *= 2  # adjusted reads scale the block in place
    assert one_v[0].tolist() == [0.0, 2.0, 4.0]
    two_t, two_v = chunks.decode_many([(blob, 3, 1_700_000_000), (blob, 3, 1_700_000_000)])
    assert two_t.tolist() == [1_700_000_000, 1_700_000_060, 1_700_000_180] * 2
    assert two_v[6].tolist() == [18.0, 19.0, 20.0] * 2


def test_remembered_timeframes_and_fast_dates_answer_like_the_general_path():
    assert parse_timeframe("5Min") is parse_timeframe("5Min")
    assert parse_timeframe(" 1Day ").name == "1Day"
    with pytest.raises(ValueError, match="unknown timeframe '61Min'"):
        parse_timeframe("61Min")
    with pytest.raises(ValueError, match="unknown timeframe '61Min'"):  # refusals are not remembered
        parse_timeframe("61Min")
    assert to_date("2024-03-01") == date(2024, 3, 1)
    assert to_date(" 2024-03-01 ") == date(2024, 3, 1)
    with pytest.raises(ValueError, match=r"cannot read start '2024-13-01' as a date"):
        to_date("2024-13-01", "start")
    # A New York day in summer (UTC-4): 04:00 UTC to 03:59:59 UTC the next day.
    assert key_range("2024-07-01", "2024-07-01", True) == (1_719_806_400, 1_719_892_799)
    assert key_range(date(2024, 7, 1), date(2024, 7, 1), True) == (1_719_806_400, 1_719_892_799)
    assert key_range("2024-03-01", date(2024, 3, 31), False) == (1_709_251_200, 1_711_843_200)


def test_a_whole_new_york_day_ends_at_the_next_midnight_across_dst_changes():
    """A date-only intraday end used the offset of its own midnight for the next one: on a DST
    change day the range ran an hour into the next day (spring) or stopped an hour short (fall)."""
    from cachelib.bars import key_range

    # 2024-03-10: 00:00 EST = 05:00Z; the next midnight, 2024-03-11 00:00 EDT, is 04:00Z.
    assert key_range("2024-03-10", "2024-03-10", True) == (1710046800, 1710129599)
    # 2024-11-03: 00:00 EDT = 04:00Z; 2024-11-04 00:00 EST = 05:00Z.
    assert key_range("2024-11-03", "2024-11-03", True) == (1730606400, 1730696399)
    # An ordinary day: 24 hours.
    assert key_range("2024-07-15", "2024-07-15", True) == (1721016000, 1721102399)
