"""Issue 9, section 2 "Network: nothing hangs, retries are bounded once".

Everything runs the real alpaca-py SDK against the loopback stub (tests/alpaca_stub.py); only
``sleep`` is a recorder, so retry waits are asserted without being slept.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
import traceback
from datetime import datetime, timedelta, timezone

import pytest
from alpaca_stub import (  # tests/ is on sys.path (tests/conftest.py)
    TEST_KEY,
    TEST_SECRET,
    AlpacaStub,
    Fault,
    Sleeps,
    alpaca_env,
    alpaca_stub_fixture,
    make_daily_bars,
    no_ambient_keys_fixture,
)

from cachelib.sources import (
    ALPACA_SDK_VERSION,
    AlpacaSource,
    MalformedResponseError,
    RateLimiter,
    RateLimitError,
    SourceError,
    SourceUnavailableError,
)

alpaca_stub = alpaca_stub_fixture()

BARS = "/v2/stocks/bars"
CHAIN = "/v1beta1/options/snapshots/*"
LATEST_TRADE = "/v2/stocks/trades/latest"
LATEST_BAR = "/v2/stocks/bars/latest"


_no_ambient_keys = no_ambient_keys_fixture()


def make_source(stub: AlpacaStub, **kwargs) -> AlpacaSource:
    kwargs.setdefault("max_requests_per_minute", None)
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 0.05)
    kwargs.setdefault("sleep", Sleeps())
    kwargs.setdefault("timeout", 5.0)
    return AlpacaSource(TEST_KEY, TEST_SECRET, url_override=stub.url, **kwargs)


def one_bar(**fields) -> dict:
    bar = {"t": "2024-01-02T05:00:00Z", "o": 10, "h": 12, "l": 9, "c": 11, "v": 1000, "n": 7, "vw": 10.5}
    bar.update(fields)
    return bar


# ---------------------------------------------------------------------------
# 1. A repeated next_page_token, and a cap on pages
# ---------------------------------------------------------------------------


def test_a_repeated_page_token_stops_the_pager_with_a_clear_error(alpaca_stub):
    alpaca_stub.page_size = 2
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 6))
    alpaca_stub.repeat_page_token = "c3R1Y2s="  # every page says "next: the same token"
    src = make_source(alpaca_stub)  # no client-side limit: before the fix this looped at full speed

    started = time.monotonic()
    with pytest.raises(MalformedResponseError) as info:
        src.get_bars("AAPL", "2024-01-02", "2024-01-10")
    assert time.monotonic() - started < 3
    assert alpaca_stub.count(BARS) == 2  # page 1 gives the token, page 2 repeats it: stop
    message = str(info.value)
    assert "next_page_token" in message and "/v2/stocks/bars" in message and "stock bars" in message


def test_a_repeated_page_token_on_the_option_chain(alpaca_stub):
    alpaca_stub.option_page_size = 1
    alpaca_stub.add_option_snapshots("AAPL", {"AAPL240126P00050000": {}, "AAPL240126C00050000": {}})
    alpaca_stub.repeat_page_token = "again"
    src = make_source(alpaca_stub)
    with pytest.raises(MalformedResponseError, match="next_page_token"):
        src.get_option_chain("AAPL")
    assert alpaca_stub.count(CHAIN) == 2


@pytest.mark.parametrize("call", ["bars", "chain"])
def test_a_pager_of_new_tokens_and_no_data_stops_after_a_few_pages(alpaca_stub, call):
    """A server that never repeats a token but never sends data either: without a check this
    runs for max_pages pages (about 50 minutes at 200 requests a minute)."""
    alpaca_stub.endless_empty_pages = True
    src = make_source(alpaca_stub)
    started = time.monotonic()
    with pytest.raises(MalformedResponseError, match="3 pages in a row that hold no data"):
        if call == "bars":
            src.get_bars("AAPL", "2024-01-02", "2024-01-10")
        else:
            src.get_option_chain("AAPL")
    assert time.monotonic() - started < 3
    assert alpaca_stub.count(BARS if call == "bars" else CHAIN) == 3


def test_max_pages_caps_one_call(alpaca_stub):
    alpaca_stub.page_size = 1
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 5))  # 5 pages of 1 bar
    src = make_source(alpaca_stub, max_pages=3)
    with pytest.raises(MalformedResponseError, match="max_pages=3"):
        src.get_bars("AAPL", "2024-01-02", "2024-01-10")
    assert alpaca_stub.count(BARS) == 3

    alpaca_stub.reset_counts()
    exact = make_source(alpaca_stub, max_pages=5)  # the cap counts pages of one call, not of the source
    assert len(exact.get_bars("AAPL", "2024-01-02", "2024-01-10")) == 5
    assert len(exact.get_bars("AAPL", "2024-01-02", "2024-01-10")) == 5
    assert alpaca_stub.count(BARS) == 10


def test_a_page_token_that_is_not_a_string_is_malformed(alpaca_stub):
    alpaca_stub.add_faults(BARS, Fault.json_body({"bars": {}, "next_page_token": {"offset": 1}}))
    src = make_source(alpaca_stub)
    with pytest.raises(MalformedResponseError, match="next_page_token"):
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert alpaca_stub.count(BARS) == 1


# ---------------------------------------------------------------------------
# 2. A total deadline per request
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("body_only", [False, True], ids=["drip-from-status-line", "drip-body"])
def test_a_dripping_server_cannot_hold_a_request_past_its_deadline(alpaca_stub, body_only, caplog):
    caplog.set_level(logging.DEBUG)
    alpaca_stub.set_latest_trade("AAPL", 100)
    alpaca_stub.set_persistent_fault(LATEST_TRADE, Fault.dripping(0.3, body_only=body_only))
    # timeout=5 s per read never trips: a byte arrives every 0.3 s.
    src = make_source(alpaca_stub, timeout=5.0, request_deadline=1.0, max_retries=1)
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError) as info:
        src.get_latest_trade("AAPL")
    elapsed = time.monotonic() - started
    assert elapsed < 2 * 1.0 + 1.5  # two attempts of 1 s each, plus slack
    assert alpaca_stub.count(LATEST_TRADE) == 2 == src.requests_made
    assert "took longer than 1 s" in str(info.value) and "request_deadline" in str(info.value)


def test_a_slow_but_steady_answer_within_the_deadline_is_fine(alpaca_stub):
    alpaca_stub.set_latest_trade("AAPL", 100)
    alpaca_stub.add_faults(LATEST_TRADE, Fault.dripping(0.001))  # ~300 bytes in ~0.3 s
    src = make_source(alpaca_stub, request_deadline=10.0)
    assert src.get_latest_trade("AAPL")["price"] == 100.0
    assert src.requests_made == 1
    assert src.get_latest_trade("AAPL")["price"] == 100.0  # the connection pool still works
    assert src.requests_made == 2


# ---------------------------------------------------------------------------
# 3. Retry-After: unusable values ignored, waits capped, total retry time bounded
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "NaN", "-5", "inf", "-inf", "1e999", "soon", "",
                                   "Wed, 21 Oct 2015 07:28:00 GMT", f"{TEST_SECRET}"])
def test_an_unusable_retry_after_falls_back_to_the_backoff(alpaca_stub, value, caplog):
    caplog.set_level(logging.DEBUG)
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3))
    alpaca_stub.add_faults(BARS, Fault(status=429, headers={"Retry-After": value}))
    src = make_source(alpaca_stub, backoff_base=0.02, backoff_max=0.02)
    assert len(src.get_bars("AAPL", "2024-01-02", "2024-01-05")) == 3
    assert alpaca_stub.count(BARS) == 2
    assert len(src._sleep) == 1 and 0.01 <= src._sleep[0] <= 0.02  # the jittered backoff
    assert TEST_SECRET not in caplog.text


@pytest.mark.parametrize(("value", "cap", "expected"), [
    ("86400", None, 60.0),  # default cap: 60 s
    ("1e300", None, 60.0),
    ("86400", 2.5, 2.5),
    ("0", None, 0.0),
    ("7", None, 7.0),
])
def test_retry_after_is_capped(alpaca_stub, value, cap, expected):
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3))
    alpaca_stub.add_faults(BARS, Fault(status=503, headers={"Retry-After": value}))
    kwargs = {} if cap is None else {"max_retry_after": cap}
    src = make_source(alpaca_stub, **kwargs)
    assert len(src.get_bars("AAPL", "2024-01-02", "2024-01-05")) == 3
    assert src._sleep == [expected]


def test_retry_after_as_a_future_http_date(alpaca_stub):
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3))
    when = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    alpaca_stub.add_faults(BARS, Fault(status=429, headers={"Retry-After": when}))
    src = make_source(alpaca_stub)
    src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert len(src._sleep) == 1 and 25 <= src._sleep[0] <= 30


def test_the_total_retry_time_of_a_call_is_bounded(alpaca_stub):
    alpaca_stub.set_persistent_fault(BARS, Fault(status=503, headers={"Retry-After": "10"}))
    src = make_source(alpaca_stub, max_retries=10, max_retry_seconds=25)
    with pytest.raises(SourceUnavailableError) as info:
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert src._sleep == [10.0, 10.0]  # a third wait would cross 25 s
    assert alpaca_stub.count(BARS) == 3
    assert "max_retry_seconds=25" in str(info.value) and info.value.status_code == 503


def test_the_retry_budget_is_shared_by_the_pages_of_one_call(alpaca_stub):
    alpaca_stub.page_size = 1
    alpaca_stub.add_bars("AAPL", make_daily_bars("2024-01-02", 3))
    # Page 1 fails twice, page 2 fails twice: 4 waits of 4 s > 13 s of budget.
    alpaca_stub.add_faults(BARS, *[Fault(status=429, headers={"Retry-After": "4"})] * 2, None,
                           *[Fault(status=429, headers={"Retry-After": "4"})] * 2)
    src = make_source(alpaca_stub, max_retries=5, max_retry_seconds=13)
    with pytest.raises(RateLimitError, match="max_retry_seconds=13"):
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert src._sleep == [4.0, 4.0, 4.0]
    alpaca_stub.clear_faults()
    assert len(src.get_bars("AAPL", "2024-01-02", "2024-01-05")) == 3  # a new call, a new budget


# ---------------------------------------------------------------------------
# 4. One retry layer
# ---------------------------------------------------------------------------


def test_a_persistent_failure_costs_exactly_max_retries_plus_one_requests(alpaca_stub):
    alpaca_stub.set_persistent_fault("*", 502)
    src = make_source(alpaca_stub, max_retries=4)
    with pytest.raises(SourceUnavailableError):
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert alpaca_stub.count() == 5 == src.requests_made


def test_network_tasks_do_not_retry_what_the_source_retried():
    from tasks.market_data import fetch_and_store_bars, snapshot_option_chains

    for task in (fetch_and_store_bars, snapshot_option_chains):
        assert task.retries == 0
        assert task.retry_condition_fn is None


def test_a_persistent_failure_through_the_prefect_task(prefect_harness, cache_url, monkeypatch):
    """The task, run by Prefect: one retry layer, so exactly max_retries + 1 requests, and no
    chain stored."""
    from cachelib.store import TradingCacheManager
    from tasks.market_data import snapshot_option_chains

    with AlpacaStub() as stub:
        alpaca_env(monkeypatch, stub)
        monkeypatch.setenv("CACHELIB_ALPACA_RATE_LIMIT", "0")
        monkeypatch.setenv("CACHELIB_ALPACA_BACKOFF_BASE", "0.001")
        monkeypatch.setenv("CACHELIB_ALPACA_MAX_RETRIES", "2")
        stub.set_persistent_fault(CHAIN, 503)
        state = snapshot_option_chains(cache_url, "AAPL", source="alpaca", return_state=True)
        assert state.is_failed()
        assert isinstance(state.result(raise_on_failure=False), SourceUnavailableError)
        assert stub.count(CHAIN) == 3
    with TradingCacheManager(cache_url) as cache:
        assert cache.get_stats()["tables"]["raw_options_chain"] == 0


# ---------------------------------------------------------------------------
# 5. Keys never leave in a message or a log line
# ---------------------------------------------------------------------------


def _all_text(exc: BaseException, caplog) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc.args) + caplog.text


@pytest.mark.parametrize("scenario", [
    "bar-field", "bar-field-clipped", "bar-time", "error-body-500", "error-body-422", "header",
    "not-json", "symbol-key", "symbol-key-bad-bar", "symbol-key-upper",
])
def test_the_keys_never_appear_whatever_the_server_echoes(alpaca_stub, caplog, scenario):
    caplog.set_level(logging.DEBUG)
    echo = f"{TEST_KEY}:{TEST_SECRET}"
    faults = {
        "bar-field": Fault.json_body({"bars": {"AAPL": [one_bar(o=echo)]}}),
        # 70 characters before the secret: clipping the message at 80 before redacting would
        # leave the secret's first characters behind.
        "bar-field-clipped": Fault.json_body({"bars": {"AAPL": [one_bar(o="x" * 70 + TEST_SECRET)]}}),
        "bar-time": Fault.json_body({"bars": {"AAPL": [one_bar(t=echo)]}}),
        "error-body-500": Fault.http(500, body={"message": echo}),
        "error-body-422": Fault.http(422, body={"message": echo}),
        "header": Fault(status=429, headers={"Retry-After": TEST_SECRET, "X-Echo": echo}),
        "not-json": Fault(status=200, body=f"<html>{echo}</html>"),
        "symbol-key": Fault.json_body({"bars": {echo: ["not a bar"]}}),
        # a symbol key is upper-cased before it is shown: the secret must go in any case
        "symbol-key-bad-bar": Fault.json_body({"bars": {TEST_SECRET.lower(): [one_bar(o="x")]}}),
        "symbol-key-upper": Fault.json_body({"bars": {TEST_SECRET.upper(): [one_bar(o="x")]}}),
    }
    alpaca_stub.set_persistent_fault(BARS, faults[scenario])
    src = make_source(alpaca_stub, max_retries=1)
    with pytest.raises(SourceError) as info:
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    text = (_all_text(info.value, caplog) + repr(src)).casefold()
    for key in (TEST_KEY, TEST_SECRET):
        assert key.casefold() not in text
        assert key[:10].casefold() not in text  # no clipped remains either


def test_log_lines_are_redacted_too(alpaca_stub, caplog):
    caplog.set_level(logging.DEBUG)
    src = make_source(alpaca_stub)
    logging.getLogger("cachelib.sources").warning("server said %s", f"key={TEST_KEY} secret={TEST_SECRET}")
    assert "server said key=*** secret=***" in caplog.text
    assert src is not None


# ---------------------------------------------------------------------------
# 6. The alpaca-py adapter: pinned, and checked
# ---------------------------------------------------------------------------


def test_the_adapter_is_pinned_to_the_installed_sdk():
    """Fails loudly when alpaca-py changes: update the adapter section of cachelib/sources.py,
    re-run this file, then bump ALPACA_SDK_VERSION and constraints.txt together."""
    import alpaca
    from alpaca.common.rest import RESTClient

    from cachelib.sources import _sdk_contract_problems

    assert alpaca.__version__ == ALPACA_SDK_VERSION == "0.44.0"
    assert _sdk_contract_problems() == []
    assert list(__import__("inspect").signature(RESTClient.get).parameters) == ["self", "path", "data", "kwargs"]


def test_the_adapter_overrides_no_private_sdk_method(alpaca_stub):
    from cachelib.sources import _client_classes

    for cls in _client_classes():
        own = {name for klass in cls.__mro__ if klass.__module__ == "cachelib.sources" for name in vars(klass)}
        assert "get" in own
        assert not {"_one_request", "_request", "_retry", "_retry_codes", "_session"} & own
    alpaca_stub.set_latest_trade("AAPL", 1)
    src = make_source(alpaca_stub)
    src.get_latest_trade("AAPL")
    assert src.requests_made == 1 == alpaca_stub.count()  # the SDK's request went through our get()
    src.close()
    src.get_latest_trade("AAPL")  # closing drops the connections; the source still works
    assert src.requests_made == 2 == alpaca_stub.count()


def test_the_contract_check_notices_a_changed_sdk():
    from cachelib.sources import _sdk_contract_problems

    class PagerWithoutGet:
        def get(self, path, data=None, **kwargs):
            return {}

        def _get_marketdata(self, path, params):
            return self._request("GET", path, params)  # pages no longer go through get()

    class RenamedGet:
        def get(self, url, params=None):
            return {}

    assert _sdk_contract_problems(PagerWithoutGet) == [
        "RESTClient._get_marketdata no longer fetches its pages through self.get() following next_page_token"]
    problems = _sdk_contract_problems(RenamedGet)
    assert len(problems) == 2 and "RESTClient.get(self, path, data, **kwargs) changed" in problems[0]


def test_another_sdk_version_with_a_broken_contract_is_refused(monkeypatch):
    import alpaca
    from alpaca.common.rest import RESTClient

    import cachelib.sources as sources

    monkeypatch.setattr(sources, "_CLIENT_CLASSES", None)
    monkeypatch.setattr(alpaca, "__version__", "9.9.9")
    monkeypatch.setattr(RESTClient, "_get_marketdata", lambda self, path, params: {})
    with pytest.raises(RuntimeError) as info:
        AlpacaSource(TEST_KEY, TEST_SECRET, url_override="http://127.0.0.1:9")
    assert "alpaca-py 9.9.9" in str(info.value) and "alpaca-py==0.44.0" in str(info.value)


# ---------------------------------------------------------------------------
# 7. Numbers that do not fit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "field"), [
    ({"n": 1e30}, "'n'"),
    ({"n": 1e25}, "'n'"),
    ({"n": 2**63}, "'n'"),
    ({"n": 1.5}, "'n'"),
    ({"n": True}, "'n'"),
    ({"n": "7"}, "'n'"),
    ({"n": math.nan}, "'n'"),
    ({"n": math.inf}, "'n'"),
    ({"v": 10**400}, "'v'"),
    ({"o": True}, "'o'"),
    ({"c": [1]}, "'c'"),
    ({"vw": 10**400}, "'vw'"),
])
def test_numbers_that_do_not_fit_are_malformed(alpaca_stub, fields, field):
    alpaca_stub.add_faults(BARS, Fault.json_body({"bars": {"AAPL": [one_bar(), one_bar(t="2024-01-03T05:00:00Z",
                                                                                       **fields)]}}))
    src = make_source(alpaca_stub)
    with pytest.raises(MalformedResponseError) as info:
        src.get_bars("AAPL", "2024-01-02", "2024-01-05")
    message = str(info.value)
    assert field in message and "AAPL" in message and "2024-01-03T05:00:00Z" in message


def test_a_whole_float_count_is_accepted(alpaca_stub):
    alpaca_stub.add_faults(BARS, Fault.json_body({"bars": {"AAPL": [one_bar(n=5000.0)]}}))
    frame = make_source(alpaca_stub).get_bars("AAPL", "2024-01-02", "2024-01-05")
    assert frame["trade_count"].tolist() == [5000]


def test_the_latest_bar_count_is_checked_too(alpaca_stub):
    alpaca_stub.set_latest_bar("AAPL", one_bar(n=1e30))
    with pytest.raises(MalformedResponseError, match="'n'"):
        make_source(alpaca_stub).get_latest_bar("AAPL")


def test_a_negative_count_is_rejected_row_by_row_by_the_sync(alpaca_stub, cache):
    from cachelib.sync import sync_bars

    alpaca_stub.add_bars("AAPL", [one_bar(), one_bar(t="2024-01-03T05:00:00Z", n=-3)])
    report = sync_bars(cache, make_source(alpaca_stub), ["AAPL"], "2024-01-02", "2024-01-03",
                       now=datetime(2024, 2, 1, tzinfo=timezone.utc))
    assert report.rows_written == 1 and report.rows_rejected == 1
    assert report.rejections[0]["reason"] == "negative or infinite trade_count"


# ---------------------------------------------------------------------------
# 8. Numeric knobs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("timeout", math.inf), ("timeout", math.nan), ("timeout", -1.0), ("timeout", 0), ("timeout", 1e300),
    ("timeout", True), ("timeout", "30"),
    ("request_deadline", math.inf), ("request_deadline", 0),
    ("max_retries", -1), ("max_retries", 1.5), ("max_retries", True), ("max_retries", 10**6),
    ("backoff_base", math.nan), ("backoff_max", math.inf), ("backoff_base", -0.5),
    ("max_retry_seconds", -1), ("max_retry_seconds", math.nan),
    ("max_retry_after", math.inf), ("max_pages", 0), ("max_pages", 2.0),
    ("max_requests_per_minute", math.nan), ("max_requests_per_minute", math.inf),
    ("max_requests_per_minute", -1),
])
def test_numeric_knobs_are_validated_by_name(alpaca_stub, name, value):
    with pytest.raises(ValueError) as info:
        make_source(alpaca_stub, **{name: value})
    assert str(info.value).startswith(name)
    assert alpaca_stub.count() == 0


def test_rate_limiter_knobs_are_validated():
    with pytest.raises(ValueError, match="max_per_minute"):
        RateLimiter(math.nan)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(60, burst=0)
    assert RateLimiter(0).interval == 0.0 and RateLimiter(None).interval == 0.0


@pytest.mark.parametrize("variable", ["CACHELIB_ALPACA_BACKOFF_BASE", "CACHELIB_ALPACA_RATE_LIMIT",
                                      "CACHELIB_ALPACA_MAX_RETRY_SECONDS", "CACHELIB_ALPACA_REQUEST_DEADLINE"])
@pytest.mark.parametrize("raw", ["nan", "inf", "-1"])
def test_environment_knobs_are_validated_by_name(monkeypatch, variable, raw):
    from tasks.market_data import source_options

    monkeypatch.setenv(variable, raw)
    with pytest.raises(ValueError, match=variable):
        source_options("alpaca")


def test_environment_knobs_reach_the_source(monkeypatch):
    from tasks.market_data import source_options

    monkeypatch.setenv("CACHELIB_ALPACA_MAX_RETRY_SECONDS", "45")
    monkeypatch.setenv("CACHELIB_ALPACA_REQUEST_DEADLINE", "12.5")
    options = source_options("alpaca")
    assert (options["max_retry_seconds"], options["request_deadline"]) == (45.0, 12.5)
    src = AlpacaSource(TEST_KEY, TEST_SECRET, **options)
    assert (src.max_retry_seconds, src.request_deadline) == (45.0, 12.5)
