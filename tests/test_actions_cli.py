"""cache-manager and corporate actions (issue 11): the ``actions`` command, and ``query``/``export
--adjustment --as-of --feed``.

The actions are hand-written and stored through ``store_corporate_actions``; every expected
table, record and price below is written by hand from them (NVDA's 10:1 split ex 2024-06-10 is
from the public record; the prices are made up).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cli_support import at, shown

from cachelib.cli import build_parser, main
from cachelib.store import TradingCacheManager

FETCHED = "2024-06-12T14:00:00Z"

ACTIONS = [
    {"symbol": "NVDA", "action_type": "forward_split", "ex_date": "2024-06-10", "ratio": 10.0},
    {"symbol": "NVDA", "action_type": "cash_dividend", "ex_date": "2024-06-11", "amount": 0.01},
    {"symbol": "NVDA", "action_type": "cash_dividend", "ex_date": "2024-03-05", "amount": 0.04},
    {"symbol": "XYZ", "action_type": "reverse_split", "ex_date": "2024-02-01", "ratio": 0.1},
    {"symbol": "FB", "action_type": "name_change", "ex_date": "2022-06-09", "new_symbol": "META"},
]

# Raw NVDA closes around the split (made up, 10x before the ex-date as a real split looks).
NVDA = pd.DataFrame(
    {"open": [1200.0, 1210.0, 121.0, 122.0], "high": [1220.0, 1230.0, 123.0, 124.0],
     "low": [1190.0, 1200.0, 120.0, 121.0], "close": [1210.0, 1200.0, 122.0, 123.0],
     "volume": [40_000_000, 30_000_000, 300_000_000, 310_000_000]},
    index=pd.DatetimeIndex(["2024-06-06", "2024-06-07", "2024-06-10", "2024-06-11"]),
)


@pytest.fixture
def db(cache_url) -> str:
    """The cache, once per engine (a SQLite file, a PostgreSQL schema)."""
    with TradingCacheManager(cache_url) as cache:
        cache.store_corporate_actions(ACTIONS, source="alpaca", fetched_at=FETCHED)
        cache.set("NVDA", NVDA, source="alpaca", feed="sip")
    return cache_url


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- actions -------------------------------------------------------------------------------------


def test_actions_table_lists_a_symbols_actions_by_ex_date(capsys, db):
    code, out, err = run(capsys, *at(db), "actions", "nvda")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "ex_date     symbol  action         ratio  amount  new_symbol  source  fetched (UTC)",
        "----------  ------  -------------  -----  ------  ----------  ------  ----------------",
        "2024-03-05  NVDA    cash_dividend           0.04              alpaca  2024-06-12 14:00",
        "2024-06-10  NVDA    forward_split     10                      alpaca  2024-06-12 14:00",
        "2024-06-11  NVDA    cash_dividend           0.01              alpaca  2024-06-12 14:00",
        "3 corporate actions",
    ]


def test_actions_range_and_json(capsys, db):
    code, out, err = run(capsys, *at(db), "actions", "NVDA", "--start", "2024-06-01", "--end",
                         "2024-06-10", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == [{
        "symbol": "NVDA", "action_type": "forward_split", "ex_date": "2024-06-10", "ratio": 10.0, "amount": None,
        "new_symbol": None, "source": "alpaca", "fetched_at": "2024-06-12T14:00:00+00:00",
    }]


def test_actions_of_a_reverse_split_and_of_a_new_symbol(capsys, db):
    code, out, _ = run(capsys, *at(db), "actions", "XYZ")
    assert code == 0
    assert out.splitlines()[2] == "2024-02-01  XYZ     reverse_split    0.1" + " " * 22 + "alpaca  2024-06-12 14:00"
    # A name change is filed under the old symbol and listed for the new one too.
    code, out, _ = run(capsys, *at(db), "actions", "META", "--json")
    assert [(r["symbol"], r["action_type"], r["ex_date"], r["new_symbol"]) for r in json.loads(out)] == [
        ("FB", "name_change", "2022-06-09", "META")]


def test_actions_with_nothing_cached_says_so_and_exits_0(capsys, db):
    code, out, err = run(capsys, *at(db), "actions", "SPY")
    assert (code, out, err) == (0, "", "No corporate actions cached for SPY\n")
    code, out, err = run(capsys, *at(db), "actions", "NVDA", "--source", "demo", "--start", "2024-01-01",
                         "--end", "2024-12-31", "--json")
    assert (code, json.loads(out)) == (0, [])
    assert err == "No corporate actions cached for NVDA from demo in 2024-01-01 .. 2024-12-31\n"


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_actions_on_a_missing_cache_creates_nothing(capsys, tmp_path, request, engine):
    missing = str(tmp_path / "nope.db") if engine == "sqlite" else request.getfixturevalue("pg_url")
    code, out, err = run(capsys, *at(missing), "actions", "NVDA")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: no cache at {shown(missing)}; ")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no cache at"):  # nothing created on the server either
        TradingCacheManager(missing, create=False)


@pytest.mark.parametrize("argv", [
    ["actions"],                                        # no symbol
    ["actions", "NVDA", "--start", "2024-13-01"],       # not a day
    ["actions", "NVDA", "--end", "10 June"],
    ["actions", "NVDA", "--start", "2024-06-10T10:00"],  # a time: ex-dates are days
    ["actions", "NVDA", "--start", "2024-06-11", "--end", "2024-06-10"],  # reversed
    ["actions", "NVDĂ"],                                # not an ASCII ticker
    ["actions", "NVDA", "--source", ""],
])
def test_actions_usage_errors_exit_2(capsys, db, argv):
    code, out, err = run(capsys, *at(db), *argv)
    assert (code, out) == (2, "")
    assert "Traceback" not in err and "usage: cache-manager actions" in err


# -- query / export --adjustment --as-of --feed --------------------------------------------------

WEEK = ("--start", "2024-06-06", "--end", "2024-06-11")


def closes(out: str) -> list[float]:
    return [r["close"] for r in json.loads(out)]


def test_query_is_raw_by_default(capsys, db):
    code, out, _ = run(capsys, *at(db), "query", "NVDA", *WEEK, "--json")
    assert (code, closes(out)) == (0, [1210.0, 1200.0, 122.0, 123.0])


def test_query_split_adjusted_as_of_before_and_after_the_ex_date(capsys, db):
    code, out, _ = run(capsys, *at(db), "query", "NVDA", *WEEK, "--adjustment", "split",
                       "--as-of", "2024-06-10", "--json")
    assert code == 0
    records = json.loads(out)
    assert [r["close"] for r in records] == [121.0, 120.0, 122.0, 123.0]
    assert [r["volume"] for r in records] == [400_000_000, 300_000_000, 300_000_000, 310_000_000]
    # As a user saw it on 2024-06-07, before the split: the raw prices.
    code, out, _ = run(capsys, *at(db), "query", "NVDA", *WEEK, "--adjustment", "split",
                       "--as-of", "2024-06-07", "--json")
    assert (code, closes(out)) == (0, [1210.0, 1200.0, 122.0, 123.0])


def test_query_table_with_all_adjustments(capsys, db):
    # as of 2024-06-11: split 10 for the bars before 06-10; dividend 0.01 ex 06-11 on a raw
    # close of 122 the session before -> factor 1 - 0.01/122 on the bars before 06-11.
    code, out, err = run(capsys, *at(db), "query", "NVDA", *WEEK, "--adjustment", "all",
                         "--as-of", "2024-06-11", "--json")
    assert (code, err) == (0, "")
    factor = 1 - 0.01 / 122.0
    assert closes(out) == pytest.approx([121.0 * factor, 120.0 * factor, 122.0 * factor, 123.0], rel=1e-12)


def test_export_csv_split_adjusted(capsys, db):
    code, out, _ = run(capsys, *at(db), "export", "NVDA", *WEEK, "--format", "csv",
                       "--adjustment", "split", "--as-of", "2024-06-11")
    assert code == 0
    rows = out.splitlines()
    assert rows[0] == "date,open,high,low,close,volume,vwap,trade_count"
    assert rows[1] == "2024-06-06,120.0,122.0,119.0,121.0,400000000,,"


def test_query_by_feed(capsys, db):
    code, out, _ = run(capsys, *at(db), "query", "NVDA", *WEEK, "--feed", "SIP", "--json")
    assert (code, len(json.loads(out))) == (0, 4)
    code, out, err = run(capsys, *at(db), "query", "NVDA", *WEEK, "--feed", "iex")
    assert (code, out) == (0, "")
    assert err == "No cached 1Day bars for NVDA (feed iex) in 2024-06-06 .. 2024-06-11\n"


@pytest.mark.parametrize("argv", [
    ["--adjustment", "splits"],
    ["--adjustment", ""],
    ["--as-of", "2024-06-31"],
    ["--as-of", "yesterday"],
    ["--as-of", "2024-06-10T16:00"],
    ["--feed", "s i p"],
    ["--feed", "ſip"],  # a non-ASCII letter that upper-cases to S
    ["--feed", "x" * 33],
])
@pytest.mark.parametrize("command", ["query", "export"])
def test_malformed_adjustment_as_of_and_feed_are_usage_errors(capsys, db, command, argv):
    code, out, err = run(capsys, *at(db), command, "NVDA", *WEEK, *argv)
    assert (code, out) == (2, "")
    assert f"usage: cache-manager {command}" in err and "Traceback" not in err
    assert argv[0] in err


def test_help_documents_the_new_flags():
    for command in ("query", "export"):
        text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
        for flag in ("--adjustment", "{raw,split,dividend,all}", "--as-of DATE", "--feed FEED",
                     "today in New York"):
            assert flag in text, (command, flag)
    text = build_parser()._subparsers._group_actions[0].choices["actions"].format_help()
    assert "corporate actions" in text and "--start DATE" in text


@pytest.mark.parametrize(("as_of", "expected"), [("9999-12-31", [121.0, 120.0, 122.0, 123.0]),
                                                 ("0001-01-01", [1210.0, 1200.0, 122.0, 123.0])])
def test_as_of_at_the_ends_of_the_calendar(capsys, db, as_of, expected):
    code, out, err = run(capsys, *at(db), "query", "NVDA", *WEEK, "--adjustment", "split",
                         "--as-of", as_of, "--json")
    assert (code, err, closes(out)) == (0, "", expected)
