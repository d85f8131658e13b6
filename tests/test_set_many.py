"""``set_many``: several symbols' bars in one transaction (issue 10 §3), on both engines."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pandas as pd
import pytest
from freezegun import freeze_time
from pg_fixtures import engine_of, schema_url

from cachelib.store import TradingCacheManager
from cachelib.store.postgres import close_pools

NOW = "2024-06-03 15:00:00"
DAYS = pd.DatetimeIndex(["2024-05-30", "2024-05-31"], name="date")


def daily(closes: list[float], **extra) -> pd.DataFrame:
    return pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes, "volume": 10.0, **extra},
                        index=DAYS[: len(closes)])


def snapshot(cache) -> list[tuple]:
    return cache.conn.execute("SELECT * FROM bars ORDER BY series_id, ts").fetchall()


@pytest.fixture
def other_cache_url(cache_url: str, tmp_path) -> Iterator[str]:
    """A second, separate cache on the same engine as ``cache_url`` (a sibling file, or a
    sibling schema on the same server)."""
    if engine_of(cache_url) == "sqlite":
        yield str(tmp_path / "other.db")
        return
    options = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(cache_url).query))["options"]
    url = schema_url(cache_url, options.removeprefix("-csearch_path=") + "_other")
    yield url
    close_pools(url)


@freeze_time(NOW)
def test_dict_and_multiindex_forms_write_the_same_bars(cache_url, other_cache_url):
    frames = {"spy": daily([500.0, 501.5], trade_count=[10, 11]), "AAPL": daily([190.25])}
    a = TradingCacheManager(cache_url)
    assert a.set_many(frames, source="alpaca") == 3
    multi = pd.concat({"SPY": frames["spy"], "AAPL": frames["AAPL"]}, names=["symbol", "timestamp"])
    b = TradingCacheManager(other_cache_url)
    assert b.set_many(multi, source="alpaca") == 3
    for cache in (a, b):
        spy = cache.get("SPY", "2024-05-01", "2024-05-31")
        assert spy["close"].tolist() == [500.0, 501.5] and spy["trade_count"].tolist() == [10, 11]
        assert cache.get("AAPL", "2024-05-01", "2024-05-31")["close"].tolist() == [190.25]
        assert cache.get_symbols() == ["AAPL", "SPY"]
    assert snapshot(a) == snapshot(b) and len(snapshot(a)) == 3
    a.close()
    b.close()


@freeze_time(NOW)
def test_one_bad_frame_and_nothing_is_written(cache):
    cache.set("SPY", daily([1.0]), source="alpaca")
    before = snapshot(cache)
    frames = {"SPY": daily([2.0, 3.0]), "AAPL": daily([190.0, -1.0])}
    with pytest.raises(ValueError, match="non-positive price"):
        cache.set_many(frames, source="alpaca")
    assert snapshot(cache) == before
    assert cache.conn.execute("SELECT symbol FROM series").fetchall() == [("SPY",)]
    with pytest.raises(ValueError, match="duplicate bar times"):
        cache.set_many({"SPY": daily([2.0]), "spy": daily([3.0])}, source="alpaca")
    assert snapshot(cache) == before


@freeze_time(NOW)
def test_intraday_set_many_writes_chunks(cache):
    idx = pd.date_range("2024-05-31 13:30", periods=2, freq="1min", tz="UTC")
    frame = pd.DataFrame({"close": [10.0, 11.0]}, index=idx)
    assert cache.set_many({"SPY": frame, "QQQ": frame * 2}, source="alpaca", timeframe="1Min") == 4
    assert cache.get("QQQ", "2024-05-31", "2024-05-31", timeframe="1Min")["close"].tolist() == [20.0, 22.0]
    assert cache.get_stats()["tables"]["bar_chunks"] == 2


def test_empty_input_writes_nothing(cache):
    assert cache.set_many({}, source="alpaca") == 0
    assert cache.set_many({"SPY": daily([])}, source="alpaca") == 0
    empty = pd.DataFrame({"close": []}, index=pd.MultiIndex.from_arrays([[], pd.DatetimeIndex([])],
                                                                       names=["symbol", "timestamp"]))
    assert cache.set_many(empty, source="alpaca") == 0
    assert cache.get_stats()["total_entries"] == 0


@pytest.mark.parametrize("frames, message", [
    (["SPY"], "set_many takes"),
    (daily([1.0]), "set_many takes"),
    ({"SPY": [1.0]}, "must be a pandas DataFrame"),
    ({"": daily([1.0])}, "symbol is empty"),
    ({"SPY": daily([1.0])}, None),
])
def test_bad_types_are_refused(cache, frames, message):
    if message is None:
        with pytest.raises(ValueError, match="source must be"):
            cache.set_many(frames, source="")
    else:
        with pytest.raises(ValueError, match=message):
            cache.set_many(frames, source="alpaca")
    assert cache.get_stats()["total_entries"] == 0


def _close_open_volume(cache, symbol: str) -> list[tuple]:
    got = cache.get(symbol, "2024-05-01", "2024-05-31")
    return list(zip(got["open"].tolist(), got["close"].tolist(), got["volume"].tolist(), strict=True))


@freeze_time(NOW)
def test_frames_of_any_column_order_and_block_layout_land_by_column_name(cache):
    """set_many stacks frames of one layout block by block; frames that differ in column order,
    pandas block layout or dtypes must still land column by column, by name."""
    plain = pd.DataFrame({"open": [1.0, 2.0], "close": [1.5, 2.5], "volume": [10, 20]}, index=DAYS)
    reordered = pd.DataFrame({"volume": [30, 40], "close": [3.5, 4.5], "open": [3.0, 4.0]}, index=DAYS)
    fragmented = plain.copy()
    fragmented[["open", "close"]] += 100.0  # pandas now holds these columns in blocks of their own
    assert len(fragmented._mgr.blocks) > len(plain._mgr.blocks)
    float_volume = plain.astype({"volume": "float64"}) * 2
    nullable = plain.assign(trade_count=pd.array([7, None], dtype="Int64"))
    frames = {"PLAIN": plain, "REORD": reordered, "FRAG": fragmented, "FLOATV": float_volume, "NULLS": nullable}
    assert cache.set_many(frames, source="alpaca") == 10
    assert _close_open_volume(cache, "PLAIN") == [(1.0, 1.5, 10.0), (2.0, 2.5, 20.0)]
    assert _close_open_volume(cache, "REORD") == [(3.0, 3.5, 30.0), (4.0, 4.5, 40.0)]
    assert _close_open_volume(cache, "FRAG") == [(101.0, 101.5, 10.0), (102.0, 102.5, 20.0)]
    assert _close_open_volume(cache, "FLOATV") == [(2.0, 3.0, 20.0), (4.0, 5.0, 40.0)]
    counts = cache.get("NULLS", "2024-05-01", "2024-05-31")["trade_count"]
    assert counts.iloc[0] == 7 and counts.isna().tolist() == [False, True]
    # Same layout everywhere (the fast path), the second frame's columns a reordered copy.
    assert cache.set_many({"PLAIN": plain + 1, "REORD": (reordered + 1)[["open", "close", "volume"]]},
                          source="alpaca") == 4
    assert _close_open_volume(cache, "REORD") == [(4.0, 4.5, 31.0), (5.0, 5.5, 41.0)]


@freeze_time(NOW)
def test_intraday_frames_in_other_time_zones_land_at_the_same_instants(cache):
    utc = pd.DataFrame({"close": [10.0]}, index=pd.DatetimeIndex(["2024-05-31 13:30"], tz="UTC"))
    new_york = pd.DataFrame({"close": [20.0]}, index=pd.DatetimeIndex(["2024-05-31 09:30"], tz="America/New_York"))
    assert cache.set_many({"SPY": utc, "QQQ": new_york}, source="alpaca", timeframe="1Min") == 2
    for symbol, close in (("SPY", 10.0), ("QQQ", 20.0)):
        got = cache.get(symbol, "2024-05-31", "2024-05-31", timeframe="1Min")
        assert got.index.tolist() == [pd.Timestamp("2024-05-31 13:30", tz="UTC")]
        assert got["close"].tolist() == [close]


@freeze_time(NOW)
def test_merges_into_stored_chunks_of_every_symbol_when_looked_up_in_batches(cache, monkeypatch):
    """An intraday set_many reads the stored chunks of all its series in batches of ranges:
    every symbol's new bars merge into its own chunk, across batch boundaries."""
    import cachelib.store.bars as bars_room

    monkeypatch.setattr(bars_room, "_RANGES_PER_QUERY", 2)
    first = pd.date_range("2024-05-31 13:30", periods=2, freq="1min", tz="UTC")
    later = pd.date_range("2024-05-31 13:32", periods=1, freq="1min", tz="UTC")
    symbols = ["AAA", "BBB", "CCC", "DDD", "EEE"]
    cache.set_many({s: pd.DataFrame({"close": [10.0 + i, 11.0 + i]}, index=first) for i, s in enumerate(symbols)},
                   source="alpaca", timeframe="1Min")
    cache.set_many({s: pd.DataFrame({"close": [50.0 + i]}, index=later) for i, s in enumerate(symbols)},
                   source="alpaca", timeframe="1Min")
    for i, s in enumerate(symbols):
        got = cache.get(s, "2024-05-31", "2024-05-31", timeframe="1Min")
        assert got["close"].tolist() == [10.0 + i, 11.0 + i, 50.0 + i]
    assert cache.get_stats()["tables"]["bar_chunks"] == 5
