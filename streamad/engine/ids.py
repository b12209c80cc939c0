"""Elastic's deterministic result document ids (`MachineLearningField.valuesToId` and friends)."""

from __future__ import annotations

_MASK = (1 << 64) - 1
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _MASK
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _MASK
    k ^= k >> 33
    return k


def murmur3_x64_128(data: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3 x64 128-bit: (h1, h2) as unsigned 64-bit integers."""
    n = len(data)
    h1 = h2 = seed & _MASK
    nblocks = n // 16
    for i in range(nblocks):
        k1 = int.from_bytes(data[16 * i:16 * i + 8], "little")
        k2 = int.from_bytes(data[16 * i + 8:16 * i + 16], "little")
        k1 = (k1 * _C1) & _MASK
        k1 = _rotl(k1, 31)
        k1 = (k1 * _C2) & _MASK
        h1 ^= k1
        h1 = _rotl(h1, 27)
        h1 = (h1 + h2) & _MASK
        h1 = (h1 * 5 + 0x52DCE729) & _MASK
        k2 = (k2 * _C2) & _MASK
        k2 = _rotl(k2, 33)
        k2 = (k2 * _C1) & _MASK
        h2 ^= k2
        h2 = _rotl(h2, 31)
        h2 = (h2 + h1) & _MASK
        h2 = (h2 * 5 + 0x38495AB5) & _MASK
    tail = data[16 * nblocks:]
    k1 = k2 = 0
    for j in range(len(tail) - 1, 7, -1):
        k2 ^= tail[j] << (8 * (j - 8))
    if len(tail) > 8:
        k2 = (k2 * _C2) & _MASK
        k2 = _rotl(k2, 33)
        k2 = (k2 * _C1) & _MASK
        h2 ^= k2
    for j in range(min(len(tail), 8) - 1, -1, -1):
        k1 ^= tail[j] << (8 * j)
    if tail:
        k1 = (k1 * _C1) & _MASK
        k1 = _rotl(k1, 31)
        k1 = (k1 * _C2) & _MASK
        h1 ^= k1
    h1 ^= n
    h2 ^= n
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    return h1, h2


def values_to_id(*values: str | None) -> str:
    """`valuesToId`: signed 128-bit BigInteger of MurmurHash3 of the concatenation, then `_<length>`."""
    combined = "".join(v for v in values if v is not None)
    h1, h2 = murmur3_x64_128(combined.encode("utf-8"))
    big = int.from_bytes(h1.to_bytes(8, "big") + h2.to_bytes(8, "big"), "big", signed=True)
    return f"{big}_{len(combined.encode('utf-16-le')) // 2}"


def bucket_id(job_id: str, ts_ms: int, span: int) -> str:
    return f"{job_id}_bucket_{ts_ms}_{span}"


def record_id(job_id: str, ts_ms: int, span: int, detector: int, by, over, partition) -> str:
    return f"{job_id}_record_{ts_ms}_{span}_{detector}_{values_to_id(by, over, partition)}"


def influencer_id(job_id: str, ts_ms: int, span: int, field: str, value) -> str:
    return f"{job_id}_influencer_{ts_ms}_{span}_{field}_{values_to_id(value)}"


def model_plot_id(job_id: str, ts_ms: int, span: int, detector: int, by, over, partition) -> str:
    return f"{job_id}_model_plot_{ts_ms}_{span}_{detector}_{values_to_id(by, over, partition)}"


def bucket_influencer_id(job_id: str, ts_ms: int, span: int, field: str) -> str:
    return f"{job_id}_bucket_influencer_{ts_ms}_{span}_{field}"
