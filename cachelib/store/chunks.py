"""The intraday chunk codec: one (series, New York session) of bars as one compressed BLOB.

A chunk holds ``n`` bars of one session, sorted by time. Its payload, before compression, is
column-major: the seven bar columns (``open high low close volume vwap trade_count``) as
float64, ``7 * n`` values, then the bar times as ``n`` int32 *deltas* (the first is 0; the
row's ``first_ts`` is the first bar's epoch second). Floats are stored as their raw bits, so a
read returns exactly what was written (NaN vwap, -0.0, subnormals); a missing ``trade_count``
is NaN. Deltas compress to almost nothing (a minute series is 60, 60, 60, ...), where offsets
or epoch seconds would cost ~4 B per bar.

The payload is compressed with lz4's block format (``high_compression`` level 3), behind a
one-byte format tag. Measured on a year of minute bars (252 x 390) of demo-like data: lz4-HC3
21 B/bar and ~4 ms to read a year, against zlib-6 15-21 B/bar but 16-28 ms and zstd-3 16 B/bar
but 9-13 ms; plain lz4 (fast) 24 B/bar; HC level 9 compresses no better than 3 and costs 2x the
write time. Byte shuffling made these series compress worse. On bench/bench_store.py's
random-walk data (4-decimal vwap, lognormal volumes) lz4-HC3 gives 37.5 B/bar. Storing exact
cent prices and whole counts as scaled integer deltas (checked bit-exact per column, raw float64
otherwise) measured 27 B/bar there but decoded 1.7x slower: a candidate second format tag.

The columns are decoded straight into one preallocated ``7 x N`` array (one 2-D slice
assignment per chunk), which :func:`~cachelib.bars.frame_from_block` turns into a frame
without copying: per-chunk column concatenation costs more than the codec.
"""

from __future__ import annotations

from collections.abc import Sequence

import lz4.block
import numpy as np

__all__ = ["FORMAT_LZ4", "N_COLUMNS", "decode", "decode_many", "encode", "merge"]

#: The bar columns stored in a chunk, in :data:`cachelib.bars.BAR_COLUMNS` order.
N_COLUMNS = 7
#: The first byte of every chunk BLOB: lz4 block, column-major float64 x 7 + int32 time deltas.
FORMAT_LZ4 = 1
_HC_LEVEL = 3
_BYTES_PER_BAR = N_COLUMNS * 8 + 4


def encode(times: np.ndarray, values: np.ndarray) -> bytes:
    """The BLOB of one session: ``times`` (int64 epoch seconds, sorted, one session) and
    ``values`` (``7 x n`` float64)."""
    times = np.asarray(times, dtype=np.int64)
    deltas = np.diff(times, prepend=times[:1]).astype(np.int32)
    payload = np.ascontiguousarray(values, dtype=np.float64).tobytes() + deltas.tobytes()
    body = lz4.block.compress(payload, mode="high_compression", compression=_HC_LEVEL, store_size=False)
    return bytes((FORMAT_LZ4,)) + body


def _payload(blob: bytes, n: int) -> bytearray:
    """The uncompressed payload, in a fresh writable buffer (arrays over it may be modified)."""
    if not blob or blob[0] != FORMAT_LZ4:
        raise ValueError(f"unknown bar chunk format {blob[:1]!r}")
    return lz4.block.decompress(memoryview(blob)[1:], uncompressed_size=n * _BYTES_PER_BAR,
                                return_bytearray=True)


def decode(blob: bytes, n: int, first_ts: int) -> tuple[np.ndarray, np.ndarray]:
    """``(times int64, values 7 x n float64)`` of one chunk (arrays the caller may modify)."""
    times, values = decode_many([(blob, n, first_ts)])
    return times, values


def decode_many(chunks: Sequence[tuple[bytes, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``(blob, n, first_ts)`` chunks (in time order) into one ``times`` array and one
    ``7 x N`` values array."""
    if len(chunks) == 1:
        # One session (the common short read): the arrays are views of the payload, no copy.
        blob, n, first_ts = chunks[0]
        raw = _payload(blob, n)
        times = np.frombuffer(raw, np.int32, n, N_COLUMNS * n * 8).cumsum(dtype=np.int64)
        times += first_ts  # the first delta is 0
        return times, np.frombuffer(raw, np.float64, N_COLUMNS * n).reshape(N_COLUMNS, n)
    counts = [c[1] for c in chunks]
    total = sum(counts)
    values = np.empty((N_COLUMNS, total), dtype=np.float64)
    deltas = np.empty(total, dtype=np.int64)
    off = 0
    for blob, n, first_ts in chunks:
        raw = _payload(blob, n)
        values[:, off : off + n] = np.frombuffer(raw, np.float64, N_COLUMNS * n).reshape(N_COLUMNS, n)
        deltas[off : off + n] = np.frombuffer(raw, np.int32, n, N_COLUMNS * n * 8)
        deltas[off] = first_ts  # the chunk's first delta is 0: start it at its absolute time
        off += n
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
