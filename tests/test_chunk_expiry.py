"""Expiry of intraday session chunks (issue 10 review): a write never shortens the expiry of
live bars it leaves in place, and migration v4 moves only the bars still valid.

The expiry tests run on both engines (the ``cache`` fixture); migration v4 is a SQLite file's
history and stays on SQLite.
"""

from __future__ import annotations

import sqlite3

import numpy as np
from freezegun import freeze_time
from test_store_chunks import _V3_DDL, NOW, bits, minute_frame

from cachelib.store import TradingCacheManager

# NOW is 2024-06-03 15:00Z = 1717426800; every session below is historical (default TTL 10 years).
TEN_YEARS = 2_032_959_600  # NOW + 3652 days
ONE_HOUR = 1_717_430_400  # NOW + 1 h
FIVE_HOURS = 1_717_444_800  # NOW + 5 h
SESSION = "2024-05-31 13:30"  # Friday 09:30 New York


def chunk_expiry(cache) -> list[tuple]:
    return cache.conn.execute(
        "SELECT s.symbol, c.n_bars, c.expires_at FROM bar_chunks c JOIN series s USING (series_id) "
        "ORDER BY s.symbol"
    ).fetchall()


def closes(cache, symbol: str) -> list[float] | None:
    got = cache.get(symbol, "2024-05-31", "2024-05-31", timeframe="1Min")
    return None if got is None else got["close"].tolist()


def test_ttl_zero_on_one_bar_of_a_live_session_does_not_expire_the_rest(cache):
    # The review's repro: 390 minute bars, then ONE of them rewritten with ttl_hours=0.
    with freeze_time(NOW):
        cache.set("SPY", minute_frame(SESSION, [float(i) for i in range(1, 391)]), source="alpaca",
                  timeframe="1Min")
        cache.set("SPY", minute_frame("2024-05-31 16:50", [999.0]), source="alpaca", timeframe="1Min",
                  ttl_hours=0)
        # set_many takes the same path: one bar of QQQ's live session, ttl_hours=0.
        cache.set("QQQ", minute_frame(SESSION, [1.0, 2.0, 3.0]), source="alpaca", timeframe="1Min")
        cache.set_many({"QQQ": minute_frame("2024-05-31 13:33", [4.0])}, source="alpaca", timeframe="1Min",
                       ttl_hours=0)

        got = closes(cache, "SPY")
        assert len(got) == 390
        assert got[199:202] == [200.0, 999.0, 202.0]  # the written bar lives with its session
        assert closes(cache, "QQQ") == [1.0, 2.0, 3.0, 4.0]
        assert chunk_expiry(cache) == [("QQQ", 4, TEN_YEARS), ("SPY", 390, TEN_YEARS)]
        assert cache.cleanup_expired() == 0
        assert cache.count_bars(timeframe="1Min") == 394


def test_ttl_zero_over_a_whole_session_still_expires_it(cache):
    with freeze_time(NOW):
        cache.set("SPY", minute_frame(SESSION, [1.0, 2.0, 3.0]), source="alpaca", timeframe="1Min")
        cache.set("QQQ", minute_frame(SESSION, [1.0, 2.0, 3.0]), source="alpaca", timeframe="1Min")
        # Every bar replaced: the same three, and (QQQ) the three plus one more.
        cache.set("SPY", minute_frame(SESSION, [5.0, 6.0, 7.0]), source="alpaca", timeframe="1Min", ttl_hours=0)
        cache.set("QQQ", minute_frame(SESSION, [5.0, 6.0, 7.0, 8.0]), source="alpaca", timeframe="1Min",
                  ttl_hours=0)
        assert closes(cache, "SPY") is None
        assert closes(cache, "QQQ") is None
        assert chunk_expiry(cache) == [("QQQ", 4, 1_717_426_800), ("SPY", 3, 1_717_426_800)]
        assert cache.cleanup_expired() == 7
        assert cache.count_bars(timeframe="1Min") == 0


def test_a_merge_keeps_the_later_expiry_of_the_chunk_and_the_write(cache):
    with freeze_time(NOW):
        # A 1-hour chunk, then a default-TTL bar: the chunk now lives 10 years.
        cache.set("SPY", minute_frame(SESSION, [1.0, 2.0]), source="alpaca", timeframe="1Min", ttl_hours=1)
        cache.set("SPY", minute_frame("2024-05-31 13:32", [3.0]), source="alpaca", timeframe="1Min")
        # A 10-year chunk, then a 1-hour bar: still 10 years.
        cache.set("QQQ", minute_frame(SESSION, [1.0, 2.0]), source="alpaca", timeframe="1Min")
        cache.set("QQQ", minute_frame("2024-05-31 13:31", [9.0]), source="alpaca", timeframe="1Min", ttl_hours=1)
        # A 1-hour chunk, then a 5-hour bar: 5 hours.
        cache.set("IWM", minute_frame(SESSION, [1.0, 2.0]), source="alpaca", timeframe="1Min", ttl_hours=1)
        cache.set("IWM", minute_frame("2024-05-31 13:40", [3.0]), source="alpaca", timeframe="1Min", ttl_hours=5)
        # A 10-year chunk wholly replaced by a 1-hour write: 1 hour (the write's).
        cache.set("DIA", minute_frame(SESSION, [1.0, 2.0]), source="alpaca", timeframe="1Min")
        cache.set("DIA", minute_frame(SESSION, [3.0, 4.0]), source="alpaca", timeframe="1Min", ttl_hours=1)
        assert chunk_expiry(cache) == [("DIA", 2, ONE_HOUR), ("IWM", 3, FIVE_HOURS), ("QQQ", 2, TEN_YEARS),
                                       ("SPY", 3, TEN_YEARS)]
        assert closes(cache, "QQQ") == [1.0, 9.0]
    with freeze_time("2024-06-03 17:00:00"):  # two hours later: DIA's chunk has expired
        assert closes(cache, "DIA") is None
        # A write into the expired chunk drops its old bars and takes the write's expiry.
        cache.set("DIA", minute_frame("2024-05-31 13:35", [8.0]), source="alpaca", timeframe="1Min", ttl_hours=1)
        assert closes(cache, "DIA") == [8.0]
        assert chunk_expiry(cache)[0] == ("DIA", 1, 1_717_437_600)  # 17:00Z + 1 h


# -- migration v4 of a v3 file holding expired minute bars ------------------------------------------

EXPIRED = 1_717_426_800  # == NOW: expired (a bar is valid while expires_at > now)
FAR = 2_000_000_000


def test_v4_migration_moves_only_live_bars_and_keeps_them_bit_identical(tmp_path):
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    conn.executescript(_V3_DDL)
    conn.executemany("INSERT INTO series VALUES (?,?,?,?,?)",
                     [(1, "stock", "X", "1Min", "alpaca"), (2, "stock", "Y", "1Min", "alpaca")])
    conn.executemany("INSERT INTO bars VALUES (?,?,?,?,?,?,?,?,?,?)", [
        # The review's repro: bar 2 retracted with ttl_hours=0 (its row rewritten, expired).
        (1, 1717162200, 1.0, 1.0, 1.0, 1.0, 1, 1.0, 3, FAR - 10),
        (1, 1717162260, 99.0, 99.0, 99.0, 99.0, 1, 99.0, 3, EXPIRED),
        (1, 1717162320, 5e-324, 5e-324, 5e-324, 5e-324, 0.5, None, None, FAR),
        # A session whose only bars expired: no chunk at all.
        (1, 1717075800, 4.0, 4.0, 4.0, 4.0, 1, 4.0, 1, EXPIRED - 100),
        (1, 1717075860, 4.0, 4.0, 4.0, 4.0, 1, 4.0, 1, EXPIRED),
        # Y: live bars whose expiries differ, the later of them one second past an expired one.
        (2, 1717162200, 190.5, 190.75, 190.25, 190.5, 1200, 190.51, 42, EXPIRED + 1),
        (2, 1717162260, 2.2250738585072014e-308, 1.0, 1e-310, 0.1, 3, 1e300, 9007199254740992, EXPIRED + 3600),
        (2, 1717162320, 7.0, 7.0, 7.0, 7.0, 1, 7.0, 1, EXPIRED),
    ])
    conn.commit()
    conn.close()

    with freeze_time(NOW):
        cache = TradingCacheManager(path)
        assert cache.conn.execute("SELECT COUNT(*) FROM bars").fetchone() == (0,)  # expired rows gone too
        assert cache.conn.execute(
            "SELECT series_id, session, first_ts, last_ts, n_bars, expires_at FROM bar_chunks ORDER BY 1, 2"
        ).fetchall() == [(1, 19874, 1717162200, 1717162320, 2, FAR), (2, 19874, 1717162200, 1717162260, 2, 1717430400)]
        x = cache.get("X", "2024-05-30", "2024-05-31", timeframe="1Min")
        assert x["close"].tolist() == [1.0, 5e-324]  # not [1.0, 99.0, 5e-324]
        assert x.index.asi8.tolist() == [1717162200 * 10**9, 1717162320 * 10**9]
        assert bits(x["open"]) == bits([1.0, 5e-324])
        assert bits(x["close"]) == bits([1.0, 5e-324])
        assert np.isnan(x["vwap"].iloc[1])
        assert x["trade_count"].isna().tolist() == [False, True]
        y = cache.get("Y", "2024-05-31", "2024-05-31", timeframe="1Min")
        for column, expected in (("open", [190.5, 2.2250738585072014e-308]), ("high", [190.75, 1.0]),
                                 ("low", [190.25, 1e-310]), ("close", [190.5, 0.1]), ("volume", [1200.0, 3.0]),
                                 ("vwap", [190.51, 1e300])):
            assert bits(y[column]) == bits(expected), column
        assert y["trade_count"].tolist() == [42, 9007199254740992]
        assert cache.count_bars(timeframe="1Min") == 4
        assert cache.cleanup_expired() == 0
        cache.close()
