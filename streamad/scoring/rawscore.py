"""Probability -> raw anomaly score (0..100) and back: Elastic's piecewise map (ELASTIC_MODEL §4.1)."""

from __future__ import annotations

import math

import numpy as np

DBL_MIN = 2.2250738585072014e-308
_L4 = -math.log(1e-4)  # 9.2103
_L50 = -math.log(1e-50)  # 115.129
_LMIN = -math.log(DBL_MIN)  # 708.396
MAX_ANOMALOUS_PROBABILITY = 0.035
LARGEST_SIGNIFICANT_PROBABILITY = 0.05


def anomaly_score(p: float) -> float:
    """Raw score of a probability: 0 for p >= 0.05, up to 100 at DBL_MIN; NaN-safe (NaN -> 0)."""
    if not (p < LARGEST_SIGNIFICANT_PROBABILITY):
        return 0.0
    p = max(p, DBL_MIN)
    if p >= 1e-4:
        return (1.0 / p - 20.0) / (10000.0 - 20.0)
    lp = -math.log(p)
    if p >= 1e-50:
        return 1.0 + 49.0 * (lp - _L4) / (_L50 - _L4)
    return min(50.0 + 50.0 * (lp - _L50) / (_LMIN - _L50), 100.0)


def inverse_anomaly_score(s: float) -> float:
    """The probability whose raw score is s (exact inverse on (0, 100]); 1 for s <= 0."""
    if not (s > 0.0):
        return 1.0
    if s <= 1.0:
        return 1.0 / (s * (10000.0 - 20.0) + 20.0)
    if s <= 50.0:
        return math.exp(-((s - 1.0) / 49.0 * (_L50 - _L4) + _L4))
    s = min(s, 100.0)
    return max(math.exp(-((s - 50.0) / 50.0 * (_LMIN - _L50) + _L50)), DBL_MIN)


def anomaly_scores(ps: np.ndarray) -> np.ndarray:
    return np.array([anomaly_score(float(p)) for p in np.asarray(ps, dtype=np.float64).ravel()])
