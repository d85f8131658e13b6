"""The intraday chunk codec on its own: both formats give back every float bit, and a read
mixes chunks of either format (files written before format 2 stay readable)."""

from __future__ import annotations

import lz4.block
import numpy as np
import pytest

from cachelib.store import chunks

T0 = 1_704_205_800  # 2024-01-02 14:30 UTC


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def _values(prices: list[list[float]], volume=(100.0,), vwap=(float("nan"),), count=(float("nan"),)):
    n = len(prices[0])
    rest = [list(volume) * n if len(volume) == 1 else list(volume),
            list(vwap) * n if len(vwap) == 1 else list(vwap),
            list(count) * n if len(count) == 1 else list(count)]
    return np.array([*prices, *rest], dtype=np.float64)


def _format_1(times: np.ndarray, values: np.ndarray) -> bytes:
    """A chunk as cachelib wrote them before format 2 (tag 1, float64 columns, int32 deltas)."""
    deltas = np.diff(times, prepend=times[:1]).astype(np.int32)
    payload = np.ascontiguousarray(values, dtype=np.float64).tobytes() + deltas.tobytes()
    return bytes((1,)) + lz4.block.compress(payload, mode="high_compression", compression=3, store_size=False)


@pytest.mark.parametrize(
    ("prices", "tag"),
    [
        ([[450.12, 450.5], [451.0, 450.99], [449.01, 450.0], [450.5, 450.01]], chunks.FORMAT_CENTS),
        ([[0.01], [0.02], [0.01], [0.02]], chunks.FORMAT_CENTS),  # one bar, a penny stock
        ([[21_000_000.01], [21_000_000.02], [21_000_000.0], [21_000_000.01]], chunks.FORMAT_CENTS),
        ([[100.005], [100.01], [100.0], [100.01]], chunks.FORMAT_LZ4),  # half a cent
        ([[1e-300], [1e-300], [1e-300], [1e-300]], chunks.FORMAT_LZ4),  # subnormal-ish tiny
        ([[-0.0], [0.0], [0.0], [0.0]], chunks.FORMAT_LZ4),  # -0.0 is not 0 cents bit for bit
        ([[float("inf")], [1.0], [1.0], [1.0]], chunks.FORMAT_LZ4),
        ([[float("nan")], [1.0], [1.0], [1.0]], chunks.FORMAT_LZ4),
        ([[30_000_000.0], [30_000_000.0], [30_000_000.0], [30_000_000.0]], chunks.FORMAT_LZ4),  # > int32 cents
        ([[0.1 + 0.2], [1.0], [0.1], [0.3]], chunks.FORMAT_LZ4),  # 0.30000000000000004
    ],
)
def test_every_bit_comes_back_and_cents_only_when_exact(prices, tag):
    n = len(prices[0])
    times = T0 + 60 * np.arange(n, dtype=np.int64)
    values = _values(prices, volume=(1234.5,), vwap=(-0.0,), count=(7.0,))
    blob = chunks.encode(times, values)
    assert blob[0] == tag
    got_times, got_values = chunks.decode(blob, n, T0)
    assert got_times.tolist() == times.tolist()
    assert (_bits(got_values) == _bits(values)).all()


def test_nan_vwap_and_missing_trade_count_survive_in_cents_chunks():
    times = np.array([T0, T0 + 60, T0 + 3600], dtype=np.int64)
    values = _values([[10.0, 10.5, 11.0], [10.5, 11.0, 11.5], [9.99, 10.25, 10.75], [10.25, 10.75, 11.25]],
                     volume=(1e12, 0.5, 3.0), vwap=(float("nan"), 10.1234, float("inf")),
                     count=(float("nan"), 5.0, 2**53))
    blob = chunks.encode(times, values)
    assert blob[0] == chunks.FORMAT_CENTS
    got_times, got_values = chunks.decode(blob, 3, T0)
    assert got_times.tolist() == [T0, T0 + 60, T0 + 3600]
    assert (_bits(got_values) == _bits(values)).all()


def test_a_read_mixes_old_format_1_and_cents_chunks_in_time_order():
    day = 86_400
    a_times = T0 + 60 * np.arange(3, dtype=np.int64)
    a_vals = _values([[1.5, 1.25, 1.75], [2.0, 2.0, 2.0], [1.0, 1.0, 1.0], [1.5, 1.5, 1.5]])
    b_times = T0 + day + 60 * np.arange(2, dtype=np.int64)
    b_vals = _values([[3.333, 3.5], [4.0, 4.0], [3.0, 3.0], [3.5, 3.5]])  # not cents
    c_times = T0 + 2 * day + 60 * np.arange(2, dtype=np.int64)
    c_vals = _values([[5.01, 5.02], [6.0, 6.0], [5.0, 5.0], [5.5, 5.5]])
    blobs = [_format_1(a_times, a_vals), chunks.encode(b_times, b_vals), chunks.encode(c_times, c_vals)]
    assert [b[0] for b in blobs] == [1, 1, 2]
    times, values = chunks.decode_many([(blobs[0], 3, int(a_times[0])), (blobs[1], 2, int(b_times[0])),
                                        (blobs[2], 2, int(c_times[0]))])
    assert times.tolist() == [*a_times.tolist(), *b_times.tolist(), *c_times.tolist()]
    expected = np.concatenate([a_vals, b_vals, c_vals], axis=1)
    assert (_bits(values) == _bits(expected)).all()
    assert values[0].tolist() == [1.5, 1.25, 1.75, 3.333, 3.5, 5.01, 5.02]


def test_an_unknown_format_is_an_error_not_garbage():
    with pytest.raises(ValueError, match="unknown bar chunk format"):
        chunks.decode(b"\x07abc", 1, T0)
    with pytest.raises(ValueError, match="unknown bar chunk format"):
        chunks.decode(b"", 1, T0)
