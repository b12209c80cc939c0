"""`SeriesBank`: the models of many series of one detector feature, as one struct-of-arrays state.

One numba call updates or scores a whole batch of series, so per-series cost stays in the
microseconds. State is bytes for RocksDB and changelogs: a version byte, the parameters and the
state matrix, bit-exact both ways.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from streamad.kernels import layout as L
from streamad.kernels import modes as MM
from streamad.kernels import series as K
from streamad.kernels.special import norm_ppf
from streamad.kernels.trend import SCALES as _TREND_SCALES


@dataclass(frozen=True)
class ModelParams:
    bucket_span: int
    side: int = 0  # 0 two-sided, -1 low values anomalous, +1 high values anomalous
    nonnegative: bool = False
    integer: bool | None = None  # None: learn from the data
    seasonal: bool = True
    multi_bucket: bool = True
    decay_multiplier: float = 4.0  # x Elastic's default 0.0005 per standard (30 min) bucket

    def vector(self) -> np.ndarray:
        span = float(self.bucket_span)
        P = np.zeros(L.NPARAMS)
        P[L.P_SPAN] = span
        P[L.P_SIDE] = self.side
        P[L.P_NONNEG] = 1.0 if self.nonnegative else 0.0
        P[L.P_INTEGER] = -1.0 if self.integer is None else (1.0 if self.integer else 0.0)
        P[L.P_SEASONAL] = 1.0 if self.seasonal else 0.0
        P[L.P_MULTI] = 1.0 if self.multi_bucket else 0.0
        P[L.P_DECAY] = 0.0005 * min(1.0, span / 1800.0) * self.decay_multiplier
        slot = 3600.0 if span <= 3600 else span
        P[L.P_SLOT] = slot if (self.seasonal and 86400 % slot == 0 and slot <= 14400) else 0.0
        # a level shift must last max(30 h, 5 test buckets) before it is accepted (§2.6)
        P[L.P_MIN_CHANGE] = float(math.ceil(max(30 * 3600, 5 * max(3600, span)) / span))
        P[L.P_N_MIN] = 5.0
        for k, scale in enumerate(_TREND_SCALES):
            P[L.P_LEV_ALPHA + k] = min(max(span / scale, 1e-5), 1.0)
        return P


@dataclass
class Scores:
    probability: np.ndarray
    p_single: np.ndarray
    p_multi: np.ndarray
    multi_bucket_impact: np.ndarray
    typical: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    p_model: np.ndarray  # probability before an open anomaly episode discounts a repeat of it (after §3.4)
    p_overall: np.ndarray  # single and multi-bucket combined, before any anomaly episode correction


@dataclass(frozen=True)
class ModelEvent:
    series: int
    time: int
    kind: str  # "level_shift" | "seasonality_added" | "seasonality_removed"


_EVENT_KINDS = {K.EVENT_LEVEL_SHIFT: "level_shift", K.EVENT_SEASONAL_ADDED: "seasonality_added",
                K.EVENT_SEASONAL_REMOVED: "seasonality_removed"}
_HEADER = struct.Struct("<BiiQ")  # version, ncols, nparams, rows


def _f64(a, n: int | None = None) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n if n is not None else 1, float(arr))
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"expected {n} values, got {arr.shape[0]}")
    return np.ascontiguousarray(arr)


class SeriesBank:
    """Models for many series; series are row indices, recycled after `remove`."""

    def __init__(self, params: ModelParams, capacity: int = 16):
        self.params = params
        self.P = params.vector()
        self.S = np.empty((max(capacity, 1), L.NCOLS))
        self._size = 0
        self._free: list[int] = []
        self._events: list[ModelEvent] = []

    def __len__(self) -> int:
        return self._size - len(self._free)

    def __setstate__(self, state: dict) -> None:
        """Unpickling (engine snapshots): a version 5 state matrix gains the anomaly-characteristics
        columns (`migrate_v5`); any other width than this layout's is refused."""
        S = state.get("S")
        if isinstance(S, np.ndarray) and S.ndim == 2 and S.shape[1] == L.V5_NCOLS:
            state["S"] = migrate_v5(S)
        elif not (isinstance(S, np.ndarray) and S.ndim == 2 and S.shape[1] == L.NCOLS):
            raise ValueError(f"unsupported model state of shape {getattr(S, 'shape', None)}")
        self.__dict__.update(state)

    def add(self, n: int = 1) -> np.ndarray:
        rows = []
        while self._free and len(rows) < n:
            rows.append(self._free.pop())
        need = n - len(rows)
        if self._size + need > self.S.shape[0]:
            grown = np.empty((max(self.S.shape[0] * 2, self._size + need), L.NCOLS))
            grown[: self._size] = self.S[: self._size]
            self.S = grown
        rows.extend(range(self._size, self._size + need))
        self._size += need
        out = np.asarray(rows, dtype=np.int64)
        K.init_rows(self.S, out)
        return out

    def remove(self, idx) -> None:
        for i in np.asarray(idx, dtype=np.int64).tolist():
            self._free.append(int(i))
        self._free.sort(reverse=True)

    def update(self, idx, t: int, x, weight=1.0, var_scale=1.0, scores: Scores | None = None) -> None:
        """Learn x; `scores` is what `score` gave the same values (it tracks anomaly episodes; None:
        not scored, the episodes stay as they are)."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        n = idx.shape[0]
        events = np.zeros(n, dtype=np.int64)
        if scores is None:
            prob = p_over = p_single = np.full(n, math.nan)
        else:
            prob, p_over, p_single = (_f64(a, n) for a in (scores.probability, scores.p_overall, scores.p_single))
        K.update(self.S, self.P, idx, float(t), _f64(x, n), _f64(weight, n), _f64(var_scale, n), events,
                 prob, p_over, p_single)
        if events.any():
            for k in np.nonzero(events)[0].tolist():
                self._events.append(ModelEvent(int(idx[k]), int(t), _EVENT_KINDS[int(events[k])]))

    def penalize_samples(self, idx) -> None:
        """After `update` of a bucket in which a row may have taken several samples (population
        analysis: one per over value), charge each row's mixture candidate Elastic's BIC term
        for that number of samples (`modes.bic_penalty`)."""
        rows, counts = np.unique(np.asarray(idx, dtype=np.int64), return_counts=True)
        if rows.shape[0] and counts.max() > 1:
            MM.bic_penalty(self.S, rows, counts.astype(np.float64), K.MAX_LOG_BF)

    def score(self, idx, t: int, x, var_scale=1.0, multi_bucket: bool = True) -> Scores:
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        n = idx.shape[0]
        out = [np.empty(n) for _ in range(9)]
        K.score(self.S, self.P, idx, float(t), _f64(x, n), _f64(var_scale, n), multi_bucket, *out)
        return Scores(*out)

    def predict(self, idx, t: int, percentile: float = 95.0):
        """(lower, median, upper) at time t at the given central percentile (model plot bounds)."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        n = idx.shape[0]
        lower, median, upper = np.empty(n), np.empty(n), np.empty(n)
        K.predict(self.S, self.P, idx, np.full(n, float(t)), _z_of(percentile), lower, median, upper)
        return lower, median, upper

    def forecast(self, idx, times, percentile: float = 95.0):
        """(pred, lower, upper), each shaped (len(times), len(idx)), from the current state.

        The state is never modified: forecasting is a pure function of it.
        """
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        times = np.asarray(times, dtype=np.float64).ravel()
        n, m = idx.shape[0], times.shape[0]
        rows = np.ascontiguousarray(np.tile(idx, m))
        at = np.ascontiguousarray(np.repeat(times, n))
        lower, median, upper = np.empty(n * m), np.empty(n * m), np.empty(n * m)
        K.predict(self.S, self.P, rows, at, _z_of(percentile), lower, median, upper)
        return median.reshape(m, n), lower.reshape(m, n), upper.reshape(m, n)

    def pop_events(self) -> list[ModelEvent]:
        events, self._events = self._events, []
        return events

    def row_state(self, i: int) -> np.ndarray:
        return self.S[i]

    def to_bytes(self, idx=None) -> bytes:
        rows = np.arange(self._size, dtype=np.int64) if idx is None else np.asarray(idx, dtype=np.int64)
        body = np.ascontiguousarray(self.S[rows]).tobytes()
        free = np.asarray(self._free if idx is None else [], dtype=np.int64).tobytes()
        params = struct.pack("<biB??d", self.params.side, self.params.bucket_span,
                             {None: 2, False: 0, True: 1}[self.params.integer],
                             self.params.nonnegative, self.params.seasonal, self.params.decay_multiplier)
        flags = struct.pack("<?I", self.params.multi_bucket, len(self._free) if idx is None else 0)
        return _HEADER.pack(L.STATE_VERSION, L.NCOLS, L.NPARAMS, rows.shape[0]) + params + flags + body + free

    @classmethod
    def from_bytes(cls, blob: bytes) -> SeriesBank:
        version, ncols, _nparams, rows = _HEADER.unpack_from(blob, 0)
        v5 = version == 5 and ncols == L.V5_NCOLS
        if not v5 and (version != L.STATE_VERSION or ncols != L.NCOLS):
            raise ValueError(f"unsupported model state version {version} with {ncols} columns")
        off = _HEADER.size
        side, span, integer, nonneg, seasonal, decay = struct.unpack_from("<biB??d", blob, off)
        off += struct.calcsize("<biB??d")
        multi, nfree = struct.unpack_from("<?I", blob, off)
        off += struct.calcsize("<?I")
        params = ModelParams(span, side, nonneg, {2: None, 0: False, 1: True}[integer], seasonal, multi, decay)
        bank = cls(params, capacity=rows)
        body = np.frombuffer(blob, dtype=np.float64, count=rows * ncols, offset=off).reshape(rows, ncols)
        bank.S[:rows] = migrate_v5(body) if v5 else body
        off += rows * ncols * 8
        bank._size = rows
        bank._free = np.frombuffer(blob, dtype=np.int64, count=nfree, offset=off).tolist()
        return bank


def migrate_v5(S: np.ndarray) -> np.ndarray:
    """A version 5 state matrix (496 columns) as version 6: the anomaly-characteristics model starts
    empty (no open episode, non-informative models) in the new columns and in the two it takes
    over (version 5's update counter and last-change time, never read); every other column keeps
    its bits."""
    out = np.zeros((S.shape[0], L.NCOLS))
    out[:, : L.V5_NCOLS] = S
    out[:, L.AM_START] = math.nan
    out[:, L.AM_LEN] = 0.0
    return out


def _z_of(percentile: float) -> float:
    """Normal quantile of a central interval's upper end: 95 -> 1.96."""
    if not (0.0 < percentile < 100.0):
        raise ValueError(f"percentile must be in (0, 100), got {percentile}")
    return float(norm_ppf(0.5 + percentile / 200.0))
