"""Aggregating probabilities: joint of less likely samples, extreme samples, `CAnomalyScore::compute`.

ELASTIC_MODEL §3.3 and §4.2. Everything is in log space so that combining many tiny probabilities
never underflows to 0 or produces NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamad.kernels.special import log_gammainc_upper, norm_ppf
from streamad.scoring.deviates import two_sided_deviates
from streamad.scoring.rawscore import DBL_MIN, MAX_ANOMALOUS_PROBABILITY, anomaly_score, inverse_anomaly_score

_LOG_DBL_MIN = math.log(DBL_MIN)
_MANY = 32  # from this many probabilities an array is aggregated vectorised (below, the list code is faster)


@dataclass(frozen=True)
class Style:
    joint_weight: float
    extreme_weight: float
    min_extreme: int
    max_extreme: int


PEOPLE = Style(0.0, 1.0, 1, 1)
ATTRIBUTES = Style(0.5, 0.5, 1, 5)
DETECTORS = Style(0.5, 0.5, 1, 1)


def _z(p: float) -> float:
    """z with p = 2 * Phi(-z): the two-sided normal deviate of a probability."""
    p = min(max(p, DBL_MIN), 1.0)
    if p >= 1.0:
        return 0.0
    if p > 1e-300:
        return -norm_ppf(p / 2.0)
    # asymptotic inverse for the deep tail: p/2 ~ phi(z)/z
    lp = math.log(p / 2.0)
    z = math.sqrt(-2.0 * lp)
    for _ in range(3):
        z = math.sqrt(max(-2.0 * lp - 2.0 * math.log(z) - math.log(2.0 * math.pi), 1.0))
    return z


def log_joint_probability(ps, rho: float = 0.0) -> float:
    """log P of the joint of less likely samples (chi-square survival of the Mahalanobis distance)."""
    ps = [p for p in ps if p == p]
    n = len(ps)
    if n == 0:
        return 0.0
    if n == 1:
        return math.log(min(max(ps[0], DBL_MIN), 1.0))
    zs = [_z(p) for p in ps]
    s = sum(zs)
    q = sum(z * z for z in zs)
    m = (q - rho * s * s / (n * rho + 1.0 - rho)) / (1.0 - rho)
    return min(log_gammainc_upper(n / 2.0, max(m, 0.0) / 2.0), 0.0)


def log_extreme_probability(ps, m: int = 1) -> float:
    """log P that the m smallest of n probabilities are this small (binomial tail at the m-th smallest)."""
    ps = sorted(min(max(p, DBL_MIN), 1.0) for p in ps if p == p)
    n = len(ps)
    if n == 0:
        return 0.0
    m = max(1, min(m, n))
    pm = ps[m - 1]
    if m == 1:
        # 1 - (1 - p)^n computed stably
        return math.log(max(-math.expm1(n * math.log1p(-pm)), DBL_MIN)) if pm < 1.0 else 0.0
    # P(Bin(n, pm) >= m) in log space
    terms = []
    for k in range(m, n + 1):
        terms.append(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                     + k * math.log(pm) + ((n - k) * math.log1p(-pm) if pm < 1.0 else 0.0))
    top = max(terms)
    value = top + math.log(sum(math.exp(t - top) for t in terms))
    return min(value / (1.0 + math.log(m) / 2.1), 0.0)


def _log_joint_many(ps: np.ndarray) -> float:
    """`log_joint_probability` (rho 0) of an array of two or more probabilities, without NaN."""
    n = ps.shape[0]
    zs = two_sided_deviates(ps, _z)
    # running sums add in order, as Python's sum does (np.sum would add pairwise)
    s = float(np.cumsum(zs)[-1])
    q = float(np.cumsum(zs * zs)[-1])
    rho = 0.0
    m = (q - rho * s * s / (n * rho + 1.0 - rho)) / (1.0 - rho)
    return min(log_gammainc_upper(n / 2.0, max(m, 0.0) / 2.0), 0.0)


def _log_smallest_many(ps: np.ndarray) -> float:
    """`log_extreme_probability(ps, 1)` of an array without NaN."""
    pm = min(max(float(ps.min()), DBL_MIN), 1.0)
    return math.log(max(-math.expm1(ps.shape[0] * math.log1p(-pm)), DBL_MIN)) if pm < 1.0 else 0.0


def aggregate(ps, style: Style = PEOPLE) -> tuple[float, float]:
    """`CAnomalyScore::compute`: (probability, raw score) of a node from its children's probabilities.

    `ps` is a list, or an array (a detector's leaves: the z values and sums are then vectorised).
    """
    if isinstance(ps, np.ndarray):
        if ps.shape[0] >= _MANY and style.min_extreme == style.max_extreme == 1:
            ps = ps[ps == ps]
            if ps.shape[0] > 1:
                return _combine(_log_joint_many(ps), _log_smallest_many(ps), style)
        ps = ps.tolist()
    ps = [p for p in ps if p == p]
    if not ps:
        return 1.0, 0.0
    log_pj = log_joint_probability(ps)
    n = len(ps)
    log_pe = min(log_extreme_probability(ps, m) for m in range(style.min_extreme, min(n, style.max_extreme) + 1))
    return _combine(log_pj, log_pe, style)


def _combine(log_pj: float, log_pe: float, style: Style) -> tuple[float, float]:
    log_max = math.log(MAX_ANOMALOUS_PROBABILITY)
    if log_pj > log_max and log_pe > log_max:
        p = math.exp(style.joint_weight * log_pj + style.extreme_weight * log_pe)
        return min(max(p, DBL_MIN), 1.0), 0.0
    raw = 0.0
    for weight, lp, floor in ((style.joint_weight, log_pj, -1e5), (style.extreme_weight, log_pe, -1500.0)):
        if weight <= 0.0:
            continue
        if lp < _LOG_DBL_MIN:
            u = min((lp - _LOG_DBL_MIN) / (floor - _LOG_DBL_MIN), 1.0)
            raw += (0.8 + 0.2 * u) * weight * 100.0
        else:
            raw += 0.8 * weight * anomaly_score(math.exp(lp))
    return inverse_anomaly_score(min(raw / 0.8, 100.0)), raw
