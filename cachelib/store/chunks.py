"""The intraday chunk codec: one (series, New York session) of bars as one compressed BLOB.

A chunk holds ``n`` bars of one session, sorted by time. Its payload, before compression, is
column-major: the seven bar columns (``open high low close volume vwap trade_count``) as
float64, ``7 * n`` values, then the bar times as ``n`` int32 *deltas* (the first is 0; the
row's ``first_ts`` is the first bar's epoch second). Floats are stored as their raw bits, so a
read returns exactly what was written (NaN vwap, -0.0, subnormals); a missing ``trade_count``
is NaN. Deltas compress to almost nothing (a minute series is 60, 60, 60, ...), where offsets
or epoch seconds would cost ~4 B per bar.

The payload is compressed with lz4's block format (``high_compression`` level 3), behind a
one-byte format tag. Format 2 (:data:`FORMAT_CENTS`, written whenever it is exact) stores the
four prices as int32 cents instead of float64: a price parsed from "450.12" is exactly
``45012 / 100`` in floating point, and the encoder checks every bit before choosing it, so
-0.0, NaN, inf, fractions of a cent and prices beyond $21M fall back to format 1 (the one
before it; files written then stay readable, and one read may mix both). The low mantissa
bytes of a float64 cent price are noise to lz4; as cents they compress to about half.

Measured on a year of minute bars (252 x 390) of bench/bench_store.py's random walk (cent
prices, 4-decimal vwap, lognormal volumes): format 1 24.2 B/bar of BLOB, format 2 21.9 B/bar
(23.5 B/bar on disk with SQLite's page overhead); keeping vwap as scaled integers too gave
20.7, and delta-encoded integers 18.0 but needed per-chunk Python work that made a year's read
1.4x slower. Earlier measurements (demo-like data): lz4-HC3 21 B/bar and ~4 ms to read a
year, against zlib-6 15-21 B/bar but 16-28 ms and zstd-3 16 B/bar but 9-13 ms; plain lz4
(fast) 24 B/bar; HC level 9 compresses only 1 % better than 3 at 2x the write time. Byte
shuffling made these series compress worse.

The columns are decoded straight into one preallocated ``7 x N`` array (one 2-D slice
assignment per chunk), which :func:`~cachelib.bars.frame_from_block` turns into a frame
without copying: per-chunk column concatenation costs more than the codec.
"""

from __future__ import annotations

from collections.abc import Sequence

import lz4.block
import numpy as np

__all__ = ["FORMAT_CENTS", "FORMAT_LZ4", "N_COLUMNS", "decode", "decode_many", "encode", "merge"]

#: The bar columns stored in a chunk, in :data:`cachelib.bars.BAR_COLUMNS` order.
N_COLUMNS = 7
#: The first byte of a chunk BLOB, its format. 1: lz4 block of column-major float64 x 7 +
#: int32 time deltas.
FORMAT_LZ4 = 1
#: 2: lz4 block of the four prices as int32 cents, then volume, vwap and trade_count as float64,
#: then int32 time deltas. Written whenever every price of the chunk is an exact cent.
FORMAT_CENTS = 2
#: Prices (open, high, low, close): the first four columns.
N_PRICES = 4
_HC_LEVEL = 3
_PAYLOAD_BYTES_PER_BAR = {
    FORMAT_LZ4: N_COLUMNS * 8 + 4,
    FORMAT_CENTS: N_PRICES * 4 + (N_COLUMNS - N_PRICES) * 8 + 4,
}


def encode(times: np.ndarray, values: np.ndarray) -> bytes:
    """The BLOB of one session: ``times`` (int64 epoch seconds, sorted, one session) and
    ``values`` (``7 x n`` float64). Format :data:`FORMAT_CENTS` when every price is exactly a
    whole number of cents, else :data:`FORMAT_LZ4`."""
    times = np.asarray(times, dtype=np.int64)
    deltas = np.diff(times, prepend=times[:1]).astype(np.int32)
    values = np.ascontiguousarray(values, dtype=np.float64)
    cents = _exact_cents(values[:N_PRICES])
    if cents is not None:
        tag, payload = FORMAT_CENTS, cents.tobytes() + values[N_PRICES:].tobytes() + deltas.tobytes()
    else:
        tag, payload = FORMAT_LZ4, values.tobytes() + deltas.tobytes()
    body = lz4.block.compress(payload, mode="high_compression", compression=_HC_LEVEL, store_size=False)
    return bytes((tag,)) + body


def _exact_cents(prices: np.ndarray) -> np.ndarray | None:
    """``prices`` as int32 cents if ``cents / 100`` gives back every float bit for bit (a price
    parsed from "450.12" does; -0.0, NaN, fractions of a cent and prices beyond $21M do not)."""
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.round(prices * 100.0)
    if not np.all(np.abs(scaled) < 2**31):  # also False for NaN
        return None
    cents = scaled.astype(np.int32)
    if not np.array_equal((cents / 100.0).view(np.int64), prices.view(np.int64)):
        return None
    return cents


def _payload(blob: bytes, n: int) -> tuple[int, bytearray]:
    """The chunk's format tag and its uncompressed payload, in a fresh writable buffer (arrays
    over it may be modified)."""
    tag = blob[0] if blob else -1
    size = _PAYLOAD_BYTES_PER_BAR.get(tag)
    if size is None:
        raise ValueError(f"unknown bar chunk format {bytes(blob[:1])!r}")
    return tag, lz4.block.decompress(memoryview(blob)[1:], uncompressed_size=n * size, return_bytearray=True)


def decode(blob: bytes, n: int, first_ts: int) -> tuple[np.ndarray, np.ndarray]:
    """``(times int64, values 7 x n float64)`` of one chunk (arrays the caller may modify)."""
    times, values = decode_many([(blob, n, first_ts)])
    return times, values


def decode_many(chunks: Sequence[tuple[bytes, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``(blob, n, first_ts)`` chunks (in time order) into one ``times`` array and one
    ``7 x N`` values array."""
    counts = [c[1] for c in chunks]
    total = sum(counts)
    values = np.empty((N_COLUMNS, total), dtype=np.float64)
    deltas = np.empty(total, dtype=np.int64)
    rest = N_COLUMNS - N_PRICES
    in_cents: list[tuple[int, int]] = []  # (offset, n) of the chunks whose prices are cents
    off = 0
    for blob, n, first_ts in chunks:
        tag, raw = _payload(blob, n)
        if tag == FORMAT_CENTS:
            values[:N_PRICES, off : off + n] = np.frombuffer(raw, np.int32, N_PRICES * n).reshape(N_PRICES, n)
            values[N_PRICES:, off : off + n] = np.frombuffer(raw, np.float64, rest * n, N_PRICES * n * 4).reshape(rest, n)
            deltas[off : off + n] = np.frombuffer(raw, np.int32, n, N_PRICES * n * 4 + rest * n * 8)
            in_cents.append((off, n))
        else:
            values[:, off : off + n] = np.frombuffer(raw, np.float64, N_COLUMNS * n).reshape(N_COLUMNS, n)
            deltas[off : off + n] = np.frombuffer(raw, np.int32, n, N_COLUMNS * n * 8)
        deltas[off] = first_ts  # the chunk's first delta is 0: start it at its absolute time
        off += n
    # Cents back to dollars: one division over the whole block in the usual case (k / 100 is
    # the float the price was parsed as; the encoder checked it bit for bit).
    if len(in_cents) == len(chunks):
        values[:N_PRICES] /= 100.0
    else:
        for start, n in in_cents:
            values[:N_PRICES, start : start + n] /= 100.0
    # One cumulative sum for every chunk, minus what earlier chunks carried into each one.
    running = np.cumsum(deltas)
    if len(chunks) > 1:
        starts = np.cumsum([0, *counts[:-1]])
        carried = running[starts] - deltas[starts]
        running -= np.repeat(carried, counts)
    return running, values


def merge(old_times: np.ndarray, old_values: np.ndarray, new_times: np.ndarray,
          new_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An upsert of sorted bars into sorted bars: a bar time in both keeps the new bar."""
    keep = ~np.isin(old_times, new_times, assume_unique=True)
    if keep.all() and (not len(old_times) or not len(new_times) or old_times[-1] < new_times[0]):
        # The intraday ingest's case: new bars after the old ones.
        return np.concatenate([old_times, new_times]), np.concatenate([old_values, new_values], axis=1)
    times = np.concatenate([old_times[keep], new_times])
    values = np.concatenate([old_values[:, keep], new_values], axis=1)
    order = np.argsort(times, kind="stable")
    return times[order], values[:, order]
