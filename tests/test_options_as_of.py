"""Option chains as of a time of their trading date, and the open interest's date.

Hand-written snapshots of one January day (New York = UTC-5): 10:00 and 14:00 New York time.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from freezegun import freeze_time

from cachelib.bars import OPTION_COLUMNS
from cachelib.demo import DemoSource
from cachelib.sources import OPTION_CHAIN_COLUMNS
from cachelib.sync import sync_option_chains

NY = ZoneInfo("America/New_York")
DAY = date(2024, 1, 19)
AT_10 = datetime(2024, 1, 19, 15, 0, tzinfo=timezone.utc)  # 10:00 New York
AT_14 = datetime(2024, 1, 19, 19, 0, tzinfo=timezone.utc)  # 14:00 New York
CALL_100 = "AAPL240216C00100000"
PUT_100 = "AAPL240216P00100000"
CALL_105 = "AAPL240216C00105000"


def chain(rows: list[tuple[str, float, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"contract_symbol": c, "strike": k, "option_type": t, "expiration": "2024-02-16", "bid": b, "ask": a}
         for c, k, t, b, a in rows]
    )


SNAP_10 = chain([(CALL_100, 100.0, "call", 5.0, 5.2), (PUT_100, 100.0, "put", 1.0, 1.1)])
# 14:00: the call moved, the put was not quoted again, and a new contract appeared.
SNAP_14 = chain([(CALL_100, 100.0, "call", 6.0, 6.3), (CALL_105, 105.0, "call", 2.0, 2.1)])


def bids(frame: pd.DataFrame | None) -> dict[str, float] | None:
    return None if frame is None else dict(zip(frame["contract_symbol"], frame["bid"], strict=True))


@pytest.fixture
def two_snapshots(cache):
    assert cache.store_raw_options("AAPL", DAY, SNAP_10, 190.0, snapshot_time=AT_10) == 2
    assert cache.store_raw_options("AAPL", DAY, SNAP_14, 191.0, snapshot_time=AT_14) == 2
    return cache


def test_as_of_returns_the_chain_as_it_stood(two_snapshots):
    cache = two_snapshots
    assert bids(cache.get_raw_options("AAPL", DAY, as_of="2024-01-19T12:00")) == {CALL_100: 5.0, PUT_100: 1.0}
    assert bids(cache.get_raw_options("AAPL", DAY, as_of=datetime(2024, 1, 19, 15, 0))) == {
        CALL_100: 6.0, PUT_100: 1.0, CALL_105: 2.0}
    assert cache.get_raw_options("AAPL", DAY, as_of="2024-01-19T09:00") is None
    assert bids(cache.get_raw_options("AAPL", DAY)) == {CALL_100: 6.0, PUT_100: 1.0, CALL_105: 2.0}
    # Exactly at a snapshot's time it counts; aware times are honoured (17:00Z = 12:00 NY).
    assert bids(cache.get_raw_options("AAPL", DAY, as_of="2024-01-19T10:00"))[CALL_100] == 5.0
    assert bids(cache.get_raw_options("AAPL", DAY, as_of="2024-01-19T14:00:00-05:00"))[CALL_100] == 6.0
    assert bids(cache.get_raw_options("AAPL", DAY, as_of=pd.Timestamp("2024-01-19T17:00Z")))[CALL_100] == 5.0
    at_noon = cache.get_raw_options("AAPL", DAY, as_of="2024-01-19T12:00")
    assert at_noon["underlying_price"].tolist() == [190.0, 190.0]
    assert set(at_noon["snapshot_time"]) == {pd.Timestamp(AT_10)}
    # Filters apply to the past chain too.
    assert bids(cache.get_raw_options("AAPL", DAY, option_type="put", as_of="2024-01-19T15:00")) == {PUT_100: 1.0}


def test_the_main_table_keeps_one_row_per_contract(two_snapshots):
    stats = two_snapshots.get_options_stats()
    assert stats["total_rows"] == 3  # CALL_100 (14:00), PUT_100 (10:00), CALL_105 (14:00)
    assert two_snapshots.conn.execute("SELECT COUNT(*) FROM raw_options_history").fetchone()[0] == 1


def test_an_earlier_snapshot_stored_late_goes_to_the_history(cache):
    cache.store_raw_options("AAPL", DAY, SNAP_14, 191.0, snapshot_time=AT_14)
    cache.store_raw_options("AAPL", DAY, SNAP_10, 190.0, snapshot_time=AT_10)
    assert bids(cache.get_raw_options("AAPL", DAY)) == {CALL_100: 6.0, PUT_100: 1.0, CALL_105: 2.0}
    assert bids(cache.get_raw_options("AAPL", DAY, as_of="2024-01-19T12:00")) == {CALL_100: 5.0, PUT_100: 1.0}
    # Storing the same snapshot again writes no history.
    cache.store_raw_options("AAPL", DAY, SNAP_14, 191.0, snapshot_time=AT_14)
    assert cache.conn.execute("SELECT COUNT(*) FROM raw_options_history").fetchone()[0] == 1


@pytest.mark.parametrize("as_of", ["2024-01-19T23:30:00-05:00", "2024-01-20T03:00:00Z"])
def test_an_aware_as_of_is_read_in_new_york(two_snapshots, as_of):
    # Both are late on the 19th in New York, though one is the 20th in UTC.
    assert bids(two_snapshots.get_raw_options("AAPL", DAY, as_of=as_of))[CALL_100] == 6.0


@pytest.mark.parametrize(("as_of", "message"), [
    ("2024-01-20T12:00", "not on the trading date"),
    ("2024-01-19T19:00:00-12:00", "not on the trading date"),  # 02:00 on the 20th in New York
    (datetime(2024, 1, 18, 15, 0), "not on the trading date"),
    (date(2024, 1, 19), "a time on"),
    ("2024-01-19", "a time on"),
    ("noon", "cannot read"),
    ("2024-01-19T12:00\u00a0", "cannot read"),
    (12.0, "datetime or ISO"),
    (pd.NaT, "NaT"),
])
def test_as_of_on_another_day_or_not_a_time_is_refused(two_snapshots, as_of, message):
    with pytest.raises(ValueError, match=message):
        two_snapshots.get_raw_options("AAPL", DAY, as_of=as_of)


def test_delete_and_expiry_take_the_history_too(two_snapshots):
    cache = two_snapshots
    cache.store_raw_options("MSFT", DAY, chain([("MSFT240216C00400000", 400.0, "call", 9.0, 9.5)]),
                            snapshot_time=AT_10, ttl_hours=0)
    cache.store_raw_options("MSFT", DAY, chain([("MSFT240216C00400000", 400.0, "call", 9.9, 10.0)]),
                            snapshot_time=AT_14, ttl_hours=0)
    assert cache.cleanup_expired() == 2  # the MSFT row and its replaced snapshot
    assert cache.delete_raw_options("AAPL", DAY) == 3
    assert cache.get_raw_options("AAPL", DAY, as_of="2024-01-19T12:00") is None
    assert cache.conn.execute("SELECT COUNT(*) FROM raw_options_history").fetchone()[0] == 0


# ---------------------------------------------------------------------------
# The open interest's date
# ---------------------------------------------------------------------------


def test_open_interest_date_is_one_column_everywhere():
    assert OPTION_CHAIN_COLUMNS == OPTION_COLUMNS
    assert OPTION_COLUMNS[-1] == "open_interest_date"


def test_open_interest_and_its_date_are_stored(cache):
    frame = SNAP_10.assign(open_interest=[1234, None], open_interest_date=[date(2024, 1, 18), None])
    cache.store_raw_options("AAPL", DAY, frame, snapshot_time=AT_10)
    got = cache.get_raw_options("AAPL", DAY).set_index("contract_symbol")
    assert list(got.reset_index().columns[: len(OPTION_COLUMNS)]) == list(OPTION_COLUMNS)
    assert got.loc[CALL_100, "open_interest"] == 1234 and got.loc[CALL_100, "open_interest_date"] == date(2024, 1, 18)
    assert type(got.loc[CALL_100, "open_interest_date"]) is date
    assert pd.isna(got.loc[PUT_100, "open_interest"]) and got.loc[PUT_100, "open_interest_date"] is None
    # ...and kept in the history with the snapshot it belonged to.
    cache.store_raw_options("AAPL", DAY, SNAP_14, snapshot_time=AT_14)
    past = cache.get_raw_options("AAPL", DAY, as_of="2024-01-19T12:00").set_index("contract_symbol")
    assert past.loc[CALL_100, "open_interest_date"] == date(2024, 1, 18)


def test_a_bad_open_interest_date_is_refused(cache):
    with pytest.raises(ValueError, match="open_interest_date"):
        cache.store_raw_options("AAPL", DAY, SNAP_10.assign(open_interest_date="2024-13-01"), snapshot_time=AT_10)
    assert cache.get_raw_options("AAPL", DAY) is None


def test_the_demo_chain_keeps_its_open_interest_date(cache):
    with freeze_time("2024-03-18 15:00:00"):  # 11:00 New York, Monday
        report = sync_option_chains(cache, DemoSource(), ["MSFT"])
        got = cache.get_raw_options("MSFT", "2024-03-18")
    assert report.rows_written == len(got) > 0
    assert set(got["open_interest_date"]) == {date(2024, 3, 15)}  # the previous session
