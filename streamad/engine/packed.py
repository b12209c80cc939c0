"""`PackedArray`: a float64 array that pickles compactly and bit-exactly (model state in snapshots).

A `SeriesBank` state matrix is mostly +0.0 and NaN while its models are young, and still about half
so later. So the pickle keeps two bitmaps (which entries are +0.0, which are the canonical NaN, in
`np.packbits` order) and the bits of the other entries only; any other bit pattern (-0.0, other NaN
payloads) is kept as it is, so unpickling gives back the very same bits. One numba pass each way
(`pack_reference` / `unpack_reference` are the plain numpy versions the tests hold them to).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NAN_BITS = np.float64(np.nan).view(np.uint64)  # 0x7ff8000000000000, numba's and numpy's NaN


class PackedArray:
    """Wraps a float64 array for pickling; `pickle.loads` returns the array itself."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array

    def __reduce__(self):
        a = np.ascontiguousarray(self.array, dtype=np.float64)
        return unpack, (a.shape, *pack(a.view(np.uint64).reshape(-1)))


@njit(cache=True)
def _pack(bits, nan_bits_value, zero_map, nan_map, rest) -> int:
    m = 0
    for k in range(bits.shape[0]):
        b = bits[k]
        if b == 0:
            zero_map[k >> 3] |= np.uint8(128 >> (k & 7))
        elif b == nan_bits_value:
            nan_map[k >> 3] |= np.uint8(128 >> (k & 7))
        else:
            rest[m] = b
            m += 1
    return m


@njit(cache=True)
def _unpack(zero_map, nan_map, rest, nan_bits_value, out) -> None:
    m = 0
    for k in range(out.shape[0]):
        bit = np.uint8(128 >> (k & 7))
        if zero_map[k >> 3] & bit:
            out[k] = 0
        elif nan_map[k >> 3] & bit:
            out[k] = nan_bits_value
        else:
            out[k] = rest[m]
            m += 1


def pack(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(+0.0 bitmap, NaN bitmap, other entries) of a flat uint64 view of float64 values."""
    nbytes = (bits.shape[0] + 7) // 8
    zero_map, nan_map = np.zeros(nbytes, dtype=np.uint8), np.zeros(nbytes, dtype=np.uint8)
    rest = np.empty(bits.shape[0], dtype=np.uint64)
    m = _pack(bits, _NAN_BITS, zero_map, nan_map, rest)
    return zero_map, nan_map, rest[:m]


def unpack(shape: tuple, zero_map: np.ndarray, nan_map: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """The array a `PackedArray` pickled."""
    out = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=np.uint64)
    _unpack(zero_map, nan_map, rest, _NAN_BITS, out)
    return out.view(np.float64).reshape(shape)


def pack_reference(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    zero, nan = bits == 0, bits == _NAN_BITS
    return np.packbits(zero), np.packbits(nan), bits[~(zero | nan)]


def unpack_reference(shape: tuple, zero_map: np.ndarray, nan_map: np.ndarray, rest: np.ndarray) -> np.ndarray:
    size = int(np.prod(shape, dtype=np.int64))
    zero = np.unpackbits(zero_map, count=size).view(bool)
    nan = np.unpackbits(nan_map, count=size).view(bool)
    bits = np.zeros(size, dtype=np.uint64)
    bits[nan] = _NAN_BITS
    bits[~(zero | nan)] = rest
    return bits.view(np.float64).reshape(shape)
