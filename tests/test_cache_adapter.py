"""cachelib.cache_adapter: the seed's get/set_market_data and the legacy JSON import.

Every expected value is written by hand from the hand-written input frames and files.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from freezegun import freeze_time
from pg_fixtures import engine_of

from cachelib import cache_adapter
from cachelib.cache_adapter import (
    get_market_data,
    import_legacy_file,
    migrate_legacy,
    set_market_data,
    split_source,
)
from cachelib.store import TradingCacheManager

DAILY = pd.DataFrame(
    {
        "open": [100.0, 101.0, 102.5, 102.0, 103.0],
        "high": [101.5, 102.0, 103.0, 103.5, 104.0],
        "low": [99.5, 100.5, 101.0, 101.5, 102.5],
        "close": [101.0, 101.5, 102.0, 102.5, 103.5],
        "volume": [1_000_000, 1_200_000, 900_000, 950_000, 1_100_000],
    },
    index=pd.DatetimeIndex(
        ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"], name="date"
    ),
)

# Hourly bars around the New York day 2024-01-02 (EST = UTC-5).
HOURLY = pd.DataFrame(
    {
        "open": [9.0, 10.0, 11.0, 12.0, 13.0],
        "high": [9.5, 10.5, 11.5, 12.5, 13.5],
        "low": [8.5, 9.5, 10.5, 11.5, 12.5],
        "close": [9.2, 10.2, 11.2, 12.2, 13.2],
        "volume": [100.0, 200.0, 300.0, 400.0, 500.0],
    },
    index=pd.DatetimeIndex(
        [
            "2024-01-02 04:30",  # 23:30 ET on Jan 1: outside
            "2024-01-02 14:30",  # 09:30 ET on Jan 2
            "2024-01-02 20:00",  # 15:00 ET on Jan 2
            "2024-01-03 04:30",  # 23:30 ET on Jan 2: inside (the whole New York day)
            "2024-01-03 05:30",  # 00:30 ET on Jan 3: outside
        ],
        tz="UTC",
    ),
)


@pytest.fixture(autouse=True)
def _private_default_db(tmp_path, monkeypatch):
    """Each test gets its own default database, and the shared manager is dropped after."""
    monkeypatch.setenv("TRADING_CACHE_DB", str(tmp_path / "default.db"))
    yield
    cache_adapter.close_default_cache()


def total_bars(db: str) -> int:
    with TradingCacheManager(db) as cache:
        return cache.get_stats()["total_entries"]


# -- get/set_market_data -------------------------------------------------------------------


def test_package_exposes_the_adapter():
    import cachelib

    assert cachelib.cache_adapter is cache_adapter


def test_set_keeps_only_the_range_and_get_round_trips(cache_url):
    db = cache_url
    assert set_market_data("spy", "2024-01-03", "2024-01-05", "alpaca", DAILY, db_path=db) == 3
    df = get_market_data("SPY", "2024-01-01", "2024-01-31", source="alpaca", db_path=db)
    assert list(df.index) == [pd.Timestamp(d) for d in ("2024-01-03", "2024-01-04", "2024-01-05")]
    assert df["close"].tolist() == [101.5, 102.0, 102.5]
    assert df["volume"].tolist() == [1_200_000.0, 900_000.0, 950_000.0]
    assert total_bars(db) == 3


def test_get_passes_adjustment_and_as_of_to_the_store(cache_url):
    """A hand-written 2:1 split ex 2024-01-05: the three earlier bars halve in price and double
    in volume once the read's as_of reaches the ex-date; raw and an earlier as_of are as stored."""
    db = cache_url
    set_market_data("SPY", "2024-01-02", "2024-01-08", "alpaca", DAILY, db_path=db)
    with TradingCacheManager(db) as cache:
        cache.store_corporate_actions([{"symbol": "SPY", "action_type": "forward_split",
                                        "ex_date": "2024-01-05", "ratio": 2.0}], source="alpaca")
    split = get_market_data("SPY", "2024-01-02", "2024-01-08", source="alpaca", db_path=db,
                            adjustment="split", as_of="2024-01-08")
    assert split["close"].tolist() == [50.5, 50.75, 51.0, 102.5, 103.5]
    assert split["volume"].tolist() == [2_000_000.0, 2_400_000.0, 1_800_000.0, 950_000.0, 1_100_000.0]
    before = get_market_data("SPY", "2024-01-02", "2024-01-08", db_path=db, adjustment="split",
                             as_of="2024-01-04")
    assert before["close"].tolist() == [101.0, 101.5, 102.0, 102.5, 103.5]
    raw = get_market_data("SPY", "2024-01-02", "2024-01-08", db_path=db, as_of="2024-01-08")
    assert raw["close"].tolist() == [101.0, 101.5, 102.0, 102.5, 103.5]
    with pytest.raises(ValueError, match="adjustment"):
        get_market_data("SPY", "2024-01-02", "2024-01-08", db_path=db, adjustment="splits")


def test_range_with_no_bars_writes_nothing(cache_url):
    db = cache_url
    assert set_market_data("SPY", "2023-06-01", "2023-06-30", "alpaca", DAILY, db_path=db) == 0
    assert get_market_data("SPY", "2023-01-01", "2024-12-31", db_path=db) is None


def test_any_source_takes_each_bar_from_the_best_source(cache_url):
    db = cache_url
    demo = DAILY.copy()
    demo[["open", "high", "low", "close"]] = [1.0, 1.5, 0.5, 1.0]
    set_market_data("SPY", "2024-01-02", "2024-01-08", "demo", demo, db_path=db)
    set_market_data("SPY", "2024-01-02", "2024-01-03", "alpaca", DAILY, db_path=db)
    for source in ("any", "ANY", None):
        df = get_market_data("SPY", "2024-01-02", "2024-01-08", source=source, db_path=db)
        assert df["close"].tolist() == [101.0, 101.5, 1.0, 1.0, 1.0], source
    demo_only = get_market_data("SPY", "2024-01-02", "2024-01-08", source="demo", db_path=db)
    assert demo_only["close"].tolist() == [1.0, 1.0, 1.0, 1.0, 1.0]


def test_folded_timeframe_source_is_split_and_intraday_range_is_whole_new_york_days(cache_url):
    db = cache_url
    assert set_market_data("QQQ", "2024-01-02", "2024-01-02", "alpaca_1Hour", HOURLY, db_path=db) == 3
    expected_times = [
        pd.Timestamp("2024-01-02 14:30", tz="UTC"),
        pd.Timestamp("2024-01-02 20:00", tz="UTC"),
        pd.Timestamp("2024-01-03 04:30", tz="UTC"),
    ]
    ways = ({"source": "alpaca", "timeframe": "1Hour"}, {"source": "alpaca_1Hour"}, {"timeframe": "1Hour"})
    for kwargs in ways:
        df = get_market_data("QQQ", "2024-01-01", "2024-01-05", db_path=db, **kwargs)
        assert list(df.index) == expected_times, kwargs
        assert df["close"].tolist() == [10.2, 11.2, 12.2]
    assert get_market_data("QQQ", "2024-01-01", "2024-01-05", source="alpaca", db_path=db) is None
    with TradingCacheManager(db) as cache:
        stats = cache.get_stats()
    assert (stats["sources"], stats["timeframes"]) == (["alpaca"], ["1Hour"])


@pytest.mark.parametrize(
    ("source", "timeframe", "expected"),
    [
        ("alpaca_1Hour", "1Day", ("alpaca", "1Hour")),
        ("alpaca_5Min", "5Min", ("alpaca", "5Min")),
        ("alpaca_1Day", "1Day", ("alpaca", "1Day")),
        ("alpha_vantage", "1Day", ("alpha_vantage", "1Day")),
        ("alpha_vantage_1Hour", "1Day", ("alpha_vantage", "1Hour")),
        ("alpaca", "1H", ("alpaca", "1Hour")),
    ],
)
def test_split_source(source, timeframe, expected):
    assert split_source(source, timeframe) == expected


def test_conflicting_folded_timeframe_is_refused():
    with pytest.raises(ValueError, match="pass one of them"):
        get_market_data("SPY", "2024-01-01", "2024-01-31", source="alpaca_1Hour", timeframe="5Min")


def test_set_refuses_any_reversed_range_and_invalid_bars(cache_url):
    db = cache_url
    with pytest.raises(ValueError, match="'any' is for reading"):
        set_market_data("SPY", "2024-01-02", "2024-01-08", "any", DAILY, db_path=db)
    with pytest.raises(ValueError, match="after"):
        set_market_data("SPY", "2024-01-08", "2024-01-02", "alpaca", DAILY, db_path=db)
    broken = DAILY.copy()
    broken.loc[pd.Timestamp("2024-01-08"), "high"] = 100.0  # below close 103.5
    with pytest.raises(ValueError, match="high"):
        set_market_data("SPY", "2024-01-02", "2024-01-08", "alpaca", broken, db_path=db)
    assert total_bars(db) == 0


def test_default_cache_follows_the_environment(tmp_path, monkeypatch):
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    monkeypatch.setenv("TRADING_CACHE_DB", str(first))
    assert set_market_data("SPY", "2024-01-02", "2024-01-08", "alpaca", DAILY) == 5
    assert cache_adapter.default_cache().db_path == first.resolve()
    monkeypatch.setenv("TRADING_CACHE_DB", str(second))
    assert get_market_data("SPY", "2024-01-01", "2024-01-31") is None
    assert cache_adapter.default_cache().db_path == second.resolve()
    monkeypatch.setenv("TRADING_CACHE_DB", str(first))
    assert len(get_market_data("SPY", "2024-01-01", "2024-01-31")) == 5
    assert total_bars(second) == 0


def test_trading_cache_url_wins_over_trading_cache_db(cache_url, tmp_path, monkeypatch):
    """``$TRADING_CACHE_URL`` (a PostgreSQL URL, or a SQLite file as ``sqlite:///``) names the
    default cache even when ``$TRADING_CACHE_DB`` is set; unset, the file is used again."""
    file_db = tmp_path / "file.db"
    monkeypatch.setenv("TRADING_CACHE_DB", str(file_db))
    if engine_of(cache_url) == "sqlite":
        url, shown = "sqlite:///" + str(Path(cache_url).resolve()), Path(cache_url).resolve()  # 4 slashes: absolute
    else:  # pgserver's URL has an empty password: shown as "***" like any other
        url, shown = cache_url, cache_url.replace("postgres:@", "postgres:***@", 1)
    monkeypatch.setenv("TRADING_CACHE_URL", url)
    assert set_market_data("SPY", "2024-01-02", "2024-01-08", "alpaca", DAILY) == 5
    assert cache_adapter.default_cache().db_path == shown
    assert get_market_data("SPY", "2024-01-01", "2024-01-31")["close"].tolist() == [
        101.0, 101.5, 102.0, 102.5, 103.5]
    monkeypatch.delenv("TRADING_CACHE_URL")
    assert get_market_data("SPY", "2024-01-01", "2024-01-31") is None
    assert cache_adapter.default_cache().db_path == file_db.resolve()
    assert total_bars(cache_url) == 5
    assert total_bars(str(file_db)) == 0


# -- legacy JSON files ---------------------------------------------------------------------

SPY_FILE = "SPY_2024-01-02_2024-01-04_alpaca.json"
SPY_PAYLOAD = {
    "metadata": {"symbol": "SPY", "source": "alpaca", "timeframe": "1Day",
                 "cached_at": "2024-01-05T01:00:00"},
    "data": [
        {"date": "2024-01-02", "open": 472.2, "high": 473.7, "low": 470.5, "close": 472.7, "volume": 123_000},
        {"date": "2024-01-03", "open": 470.4, "high": 471.2, "low": 468.2, "close": 468.8, "volume": 103_000},
        {"date": "2024-01-04", "open": 468.3, "high": 470.9, "low": 467.1, "close": 467.3, "volume": 84_000},
    ],
}
QQQ_FILE = "QQQ_2024-01-02_2024-01-02_alpaca_1Hour.json"  # timeframe only in the name
QQQ_PAYLOAD = {
    "metadata": {"symbol": "QQQ"},
    "data": [
        {"date": "2024-01-02T15:00:00+00:00", "open": 402.0, "high": 403.0, "low": 401.0, "close": 402.5,
         "volume": 5_000},
        {"date": "2024-01-02T16:00:00+00:00", "open": 402.5, "high": 404.0, "low": 402.0, "close": 403.5,
         "volume": 6_000},
    ],
}
AAPL_FILE = "AAPL_2024-01-02_2024-01-04_alpaca.json"  # truncated JSON
MSFT_FILE = "MSFT_2024-01-02_2024-01-04_polygon.json"  # third bar has high below close
MSFT_PAYLOAD = {
    "metadata": {"symbol": "MSFT", "source": "polygon"},
    "data": [
        {"date": "2024-01-02", "open": 373.9, "high": 375.9, "low": 366.8, "close": 370.9, "volume": 25_000},
        {"date": "2024-01-03", "open": 369.0, "high": 373.3, "low": 368.5, "close": 370.6, "volume": 23_000},
        {"date": "2024-01-04", "open": 370.7, "high": 370.0, "low": 366.0, "close": 367.9, "volume": 20_000},
    ],
}


@pytest.fixture
def legacy_dir(tmp_path) -> Path:
    directory = tmp_path / "market_data"
    directory.mkdir()
    (directory / SPY_FILE).write_text(json.dumps(SPY_PAYLOAD))
    (directory / QQQ_FILE).write_text(json.dumps(QQQ_PAYLOAD))
    (directory / AAPL_FILE).write_text(json.dumps(SPY_PAYLOAD).replace("SPY", "AAPL")[:150])
    (directory / MSFT_FILE).write_text(json.dumps(MSFT_PAYLOAD))
    (directory / "notes.txt").write_text("not a cache file")
    return directory


def assert_report(report, dry_run: bool) -> None:
    assert report.dry_run is dry_run
    assert report.files_seen == 4
    assert [r.path.name for r in report.imported] == [QQQ_FILE, SPY_FILE]
    assert [(r.symbol, r.source, r.timeframe, r.rows) for r in report.imported] == [
        ("QQQ", "alpaca", "1Hour", 2),
        ("SPY", "alpaca", "1Day", 3),
    ]
    assert [r.path.name for r in report.failed] == [AAPL_FILE, MSFT_FILE]
    assert report.failed[0].error.startswith("bad JSON:")
    assert report.failed[1].error == (
        "invalid bars: 1 invalid bar(s): high below max(open, close) (1); the first at 2024-01-04")
    assert all(r.rows == 0 for r in report.failed)
    assert report.rows_imported == 5
    as_dict = report.to_dict()
    counts = ("files_seen", "files_imported", "files_failed", "rows_imported")
    assert [as_dict[k] for k in counts] == [4, 2, 2, 5]


def test_migrate_imports_good_files_and_lists_bad_ones(cache, legacy_dir):
    report = migrate_legacy(cache, legacy_dir)
    assert_report(report, dry_run=False)
    assert cache.get_stats()["total_entries"] == 5
    spy = cache.get("SPY", "2024-01-01", "2024-01-31", source="alpaca")
    assert spy["close"].tolist() == [472.7, 468.8, 467.3]
    assert spy["volume"].tolist() == [123_000.0, 103_000.0, 84_000.0]
    qqq = cache.get("QQQ", "2024-01-02", "2024-01-02", source="alpaca", timeframe="1Hour")
    assert list(qqq.index) == [pd.Timestamp(t, tz="UTC") for t in ("2024-01-02 15:00", "2024-01-02 16:00")]
    assert qqq["close"].tolist() == [402.5, 403.5]
    # Nothing of the refused files, not even MSFT's two valid bars.
    assert cache.get("MSFT", "2024-01-01", "2024-01-31") is None
    assert cache.get("AAPL", "2024-01-01", "2024-01-31") is None
    assert cache.get_symbols() == ["QQQ", "SPY"]


def test_dry_run_validates_everything_and_writes_nothing(cache, legacy_dir):
    assert_report(migrate_legacy(cache, legacy_dir, dry_run=True), dry_run=True)
    assert cache.get_stats()["total_entries"] == 0
    # A dry run needs no database at all.
    assert_report(migrate_legacy(None, legacy_dir, dry_run=True), dry_run=True)


def test_migrating_twice_is_idempotent(cache, legacy_dir):
    migrate_legacy(cache, legacy_dir)
    again = migrate_legacy(cache, legacy_dir)
    assert_report(again, dry_run=False)
    assert cache.get_stats()["total_entries"] == 5
    assert cache.get("SPY", "2024-01-01", "2024-01-31")["close"].tolist() == [472.7, 468.8, 467.3]


def test_missing_directory_is_an_error(cache, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        migrate_legacy(cache, tmp_path / "nope")


def _bar(day: str, **changes) -> dict:
    bar = {"date": day, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 100}
    bar.update(changes)
    return bar


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("SPY-2024-01-02.json", json.dumps({"data": [_bar("2024-01-02")]}),
         "file name does not match SYMBOL_YYYY-MM-DD_YYYY-MM-DD_source.json"),
        ("SPY_2024-01-05_2024-01-02_alpaca.json", json.dumps({"data": [_bar("2024-01-02")]}),
         "bad file name: start 2024-01-05 is after end 2024-01-02"),
        ("SPY_2024-01-02_2024-01-02_alpaca.json", '{"metadata": {}, "data": [{"date": "2024-01-02", "op',
         "bad JSON: Unterminated string starting at: line 1 column 50 (char 49)"),
        ("SPY_2024-01-02_2024-01-02_alpaca.json", json.dumps({"metadata": {"symbol": "SPY"}}),
         "missing field 'data'"),
        ("SPY_2024-01-02_2024-01-03_alpaca.json",
         json.dumps({"data": [_bar("2024-01-02"), {"date": "2024-01-03", "open": 10.0, "close": 10.0}]}),
         "bar 1 is missing field(s) high, low, volume"),
        ("SPY_2024-01-02_2024-01-02_alpaca.json",
         json.dumps({"metadata": {"symbol": "QQQ"}, "data": [_bar("2024-01-02")]}),
         "symbol mismatch: the file name says SPY, the metadata says QQQ"),
        # Python's json reads the NaN literal the old cache wrote for a missing price.
        ("SPY_2024-01-02_2024-01-03_alpaca.json",
         json.dumps({"data": [_bar("2024-01-02"), _bar("2024-01-03", close=float("nan"))]}),
         "invalid bars: 1 invalid bar(s): NaN or infinite price (1); the first at 2024-01-03"),
        ("SPY_2024-01-02_2024-01-02_alpaca.json", json.dumps({"data": [_bar("2024-01-02", volume=-5)]}),
         "invalid bars: 1 invalid bar(s): negative volume (1); the first at 2024-01-02"),
        ("SPY_2024-01-02_2024-01-02_alpaca.json", json.dumps({"data": [_bar("someday")]}),
         "cannot read bar 0 date 'someday' as a date or time"),
        ("SPY_2024-01-02_2024-01-02_alpaca.json",
         json.dumps({"metadata": {"timeframe": "1Fortnight"}, "data": [_bar("2024-01-02")]}),
         "bad source or timeframe: unknown timeframe '1Fortnight'"),
    ],
    ids=["name", "reversed-dates", "truncated", "no-data", "missing-fields", "symbol-mismatch", "nan",
         "negative-volume", "bad-date", "bad-timeframe"],
)
def test_bad_files_are_refused_with_a_reason_and_store_nothing(cache, tmp_path, name, text, reason):
    path = tmp_path / name
    path.write_text(text)
    for dry_run in (True, False):
        result = import_legacy_file(cache, path, dry_run=dry_run)
        assert result.ok is False
        assert result.rows == 0
        assert result.error.startswith(reason), result.error
    assert cache.get_stats()["total_entries"] == 0


def test_metadata_source_and_timeframe_win_over_the_file_name(cache, tmp_path):
    path = tmp_path / "SPY_2024-01-02_2024-01-02_alpaca.json"
    path.write_text(json.dumps({
        "metadata": {"symbol": "spy", "source": "polygon", "timeframe": "1Hour"},
        "data": [_bar("2024-01-02T15:00:00Z"), _bar("2024-01-02T16:00:00Z")],
    }))
    result = import_legacy_file(cache, path)
    assert (result.ok, result.symbol, result.source, result.timeframe, result.rows) == (
        True, "SPY", "polygon", "1Hour", 2,
    )
    assert cache.get("SPY", "2024-01-02", "2024-01-02", source="polygon", timeframe="1Hour") is not None
    assert cache.get("SPY", "2024-01-02", "2024-01-02", source="alpaca") is None


def test_a_file_with_no_bars_is_imported_empty(cache, tmp_path):
    path = tmp_path / "SPY_2024-01-02_2024-01-02_alpaca.json"
    path.write_text(json.dumps({"metadata": {"symbol": "SPY"}, "data": []}))
    result = import_legacy_file(cache, path)
    assert (result.ok, result.rows, result.error) == (True, 0, None)


@freeze_time("2024-01-05 15:00:00")  # 10:00 in New York on Friday 2024-01-05
def test_legacy_bars_get_the_normal_ttl_rule(cache, tmp_path):
    path = tmp_path / "SPY_2024-01-02_2024-01-04_alpaca.json"
    path.write_text(json.dumps({"data": [_bar("2024-01-02"), _bar("2024-01-04")]}))
    assert import_legacy_file(cache, path).rows == 2
    now_s = int(datetime(2024, 1, 5, 15, 0, tzinfo=timezone.utc).timestamp())
    rows = cache.conn.execute("SELECT ts, expires_at FROM bars ORDER BY ts").fetchall()
    assert rows == [
        (int(datetime(2024, 1, 2, tzinfo=timezone.utc).timestamp()), now_s + 3652 * 86_400),  # 3 days old
        (int(datetime(2024, 1, 4, tzinfo=timezone.utc).timestamp()), now_s + 24 * 3600),  # 1 day old
    ]
