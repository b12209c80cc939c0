"""Anomaly-characteristics model (ELASTIC_MODEL §3.4, Elastic's `CTimeSeriesAnomalyModel`).

An anomaly episode of a series is open while its buckets' probability (single and multi-bucket
combined, before this model) stays below `OPEN_P` = 0.1. Its features are its length in buckets
(last - first anomalous bucket) and the mean absolute prediction error of its buckets whose
single-bucket probability is below 0.1. Two bivariate normal-Wishart models, one for episodes
whose errors sum positive and one for negative, learn those features: during an episode each such
bucket adds the episode's features so far with weight 1 / (1 + length), and its close adds them
once more with the rest of a unit weight, 1 - 1 / (1 + length). The models relax towards
non-informative at 0.05 x the model decay (and, as Elastic's multivariate priors do, x 0.5 per
dimension).

A bucket in an episode then has p_anom, the one-sided-above probability of the episode's features
(the geometric mean of the joint of the marginals and the joint of the conditionals,
`features_p`, as Elastic's `CMultivariatePrior::probabilityOfLessLikelySamples`), and its raw
anomaly score (§4.1) becomes (1 - alpha) score(p) + alpha score(p_anom), alpha rising from 0 at
p = 0.1 to 1/2 at p <= 1e-4 (`combine`), but the probability never less than p (`probability`;
Elastic lets a rare episode lower p too): a series whose spikes are routine scores its routine
spikes less anomalous, an episode larger than those seen before keeps more of its
anomalousness, and none is made more anomalous than its buckets are.

The blend is the one of Elastic 6.5 to 8.0 (`CTimeSeriesAnomalyModel::probability` in
`lib/maths/CTimeSeriesModel.cc` and the first `lib/maths/time_series/` version). Later versions
(and ELASTIC_MODEL §3.4) blend log probabilities instead, exp((1 - alpha) ln p + alpha lambda
ln p_anom) with alpha = 1/2 (1 - x + x y): at p <= 1e-4 that halves -ln p of a routine episode,
which turns a moderately rare first spike into noise (p_anom = 1: 2e-5 -> 4.5e-3, raw score
1.75 -> 0.02), while the score blend halves its raw score (-> 1.2e-4, 0.87); for very rare
buckets the two are close (1e-30: raw 28.7 -> 12.7 by logs, 14.3 by scores; 1e-60: 51.9 -> 28.7
and 26.0). NAB (standard / low_FP /
low_FN): log blend 57.28 / 51.00 / 61.83 (48 of 69 windows), score blend 57.91 / 49.71 / 62.90
(50 windows: the three the log blend had lost come back), 58.42 / 50.04 / 64.26 without the
former `series.run_power` stand-in (51 windows).

The one departure from Elastic, never lowering p: an episode that outlasts those seen before
(any sustained change not yet accepted as a level shift, §2.6) would otherwise score every
bucket more anomalous than the last. NAB: letting it lower p scores 57.55 (score blend), 54.89
(log blend, with the `series.episode_power` stand-in).

State: columns `AM_START`, `AM_LEN`, `AM_SUM`, `AM_N`, `AM_ABS` (the open episode) and two models
of `AM_MOD_STRIDE` columns at `AM_MOD`: weight k (the Gaussian precision, which equals the Wishart
degrees of freedom: both start at 0, grow by the sample weight and age by the same factor), the
mean (2) and the scatter matrix (11, 12, 22). `score` evaluates the episode as `step` will leave
it (Elastic samples the model before it computes the probability) without changing state.
"""

from __future__ import annotations

import math

from numba import njit

from streamad.kernels import layout as L
from streamad.kernels.priors import t_tails, tail_p
from streamad.kernels.special import norm_ppf

DBL_MIN = 2.2250738585072014e-308
OPEN_P = 0.1  # 2 x LARGEST_SIGNIFICANT_PROBABILITY: an episode is open while p stays below this
LOG_A = -math.log(OPEN_P)  # a
LOG_B = -math.log(1e-4)  # b: SMALL_PROBABILITY
DECAY = 0.05 * 0.25  # x the model decay: the prior's 0.05, times 0.5^dimension (multivariate priors)
MIN_CV = 1e-4  # MINIMUM_COEFFICIENT_OF_VARIATION
DIM = 2.0


@njit(cache=True)
def _model(sum_err) -> int:
    """Model column base for an episode whose errors sum to sum_err: positive first, else negative."""
    return L.AM_MOD if sum_err > 0.0 else L.AM_MOD + L.AM_MOD_STRIDE


@njit(cache=True)
def informative(k) -> bool:
    """A normal-Wishart model says something once its degrees of freedom pass dimension + 1."""
    return k > DIM + 1.0


@njit(cache=True)
def _add(k, m1, m2, w11, w12, w22, x1, x2, n):
    """Normal-Wishart parameters after a sample (x1, x2) of weight n (pooled weighted moments, with
    Elastic's floor on the scatter diagonal: a coefficient of variation of MIN_CV)."""
    if not (n > 0.0):
        return k, m1, m2, w11, w12, w22
    if k > 0.0:
        t = k + n
        d1 = x1 - m1
        d2 = x2 - m2
        f = k * n / t
        m1 = m1 + n / t * d1
        m2 = m2 + n / t * d2
        w11 = w11 + f * d1 * d1
        w12 = w12 + f * d1 * d2
        w22 = w22 + f * d2 * d2
        k = t
    else:
        k = n
        m1 = x1
        m2 = x2
        w11 = 0.0
        w12 = 0.0
        w22 = 0.0
    if informative(k):
        a1 = max(m1, 1e-8)
        a2 = max(m2, 1e-8)
        dev = math.sqrt(a1 * a1 + a2 * a2) * MIN_CV
        floor = k * dev * dev
        w11 = max(w11, floor)
        w22 = max(w22, floor)
    return k, m1, m2, w11, w12, w22


@njit(cache=True)
def add(S, i, c, x1, x2, n) -> None:
    """Add the sample (x1, x2) of weight n to the model at column c."""
    k, m1, m2, w11, w12, w22 = _add(S[i, c], S[i, c + 1], S[i, c + 2], S[i, c + 3], S[i, c + 4], S[i, c + 5],
                                    x1, x2, n)
    S[i, c] = k
    S[i, c + 1] = m1
    S[i, c + 2] = m2
    S[i, c + 3] = w11
    S[i, c + 4] = w12
    S[i, c + 5] = w22


@njit(cache=True)
def age(S, i, alpha) -> None:
    """Relax both models towards non-informative by alpha (of the residual priors' decay): the
    weight and the scatter shrink together, so the mean and covariance estimates stay."""
    a = alpha ** DECAY
    for c in (L.AM_MOD, L.AM_MOD + L.AM_MOD_STRIDE):
        if informative(S[i, c]):
            S[i, c] *= a
            S[i, c + 3] *= a
            S[i, c + 4] *= a
            S[i, c + 5] *= a


@njit(cache=True)
def _above(x, m, k, nu, rate) -> float:
    """One-sided-above probability of x under a normal-gamma (m, precision k, shape nu / 2, rate):
    Student-t with nu degrees of freedom, scale^2 = rate (k + 1) / (shape k)."""
    scale = math.sqrt(max(rate * (k + 1.0) / (0.5 * nu * k), 1e-300))
    F, G = t_tails((x - m) / scale, nu)
    return tail_p(F, G, 1)


@njit(cache=True)
def _joint(p1, p2) -> float:
    """Joint probability of two independent less likely samples (chi-squared with 2 dof, §3.3)."""
    z1 = -norm_ppf(max(p1, DBL_MIN) / 2.0)
    z2 = -norm_ppf(max(p2, DBL_MIN) / 2.0)
    return min(max(math.exp(-0.5 * (z1 * z1 + z2 * z2)), DBL_MIN), 1.0)


@njit(cache=True)
def features_p(k, m1, m2, w11, w12, w22, x1, x2) -> float:
    """One-sided-above probability of features (x1, x2) under an informative normal-Wishart model:
    sqrt(joint of the two marginal probabilities x joint of the two conditional ones)."""
    nu = k
    v = nu - DIM - 1.0
    pm1 = _above(x1, m1, k, nu, 0.5 * w11)
    pm2 = _above(x2, m2, k, nu, 0.5 * w22)
    c11 = w11 / v
    c12 = w12 / v
    c22 = w22 / v
    mean1 = m1 + (c12 / c22 * (x2 - m2) if c22 > 0.0 else 0.0)
    var1 = max(c11 - (c12 * c12 / c22 if c22 > 0.0 else 0.0), MIN_CV * abs(mean1))
    mean2 = m2 + (c12 / c11 * (x1 - m1) if c11 > 0.0 else 0.0)
    var2 = max(c22 - (c12 * c12 / c11 if c11 > 0.0 else 0.0), MIN_CV * abs(mean2))
    pc1 = _above(x1, mean1, k, nu, 0.5 * var1 * v)
    pc2 = _above(x2, mean2, k, nu, 0.5 * var2 * v)
    p = math.sqrt(_joint(pm1, pm2) * _joint(pc1, pc2))
    return min(max(p, DBL_MIN), 1.0) if p == p else 1.0


_L4 = -math.log(1e-4)
_L50 = -math.log(1e-50)
_LMIN = -math.log(DBL_MIN)


@njit(cache=True)
def raw_score(p) -> float:
    """Elastic's `CTools::anomalyScore` (ELASTIC_MODEL §4.1, `scoring.rawscore.anomaly_score`)."""
    if not (p < 0.05):
        return 0.0
    p = max(p, DBL_MIN)
    if p >= 1e-4:
        return (1.0 / p - 20.0) / (10000.0 - 20.0)
    lp = -math.log(p)
    if p >= 1e-50:
        return 1.0 + 49.0 * (lp - _L4) / (_L50 - _L4)
    return min(50.0 + 50.0 * (lp - _L50) / (_LMIN - _L50), 100.0)


@njit(cache=True)
def inverse_raw_score(s) -> float:
    """Elastic's `CTools::inverseAnomalyScore` (`scoring.rawscore.inverse_anomaly_score`)."""
    if not (s > 0.0):
        return 1.0
    if s <= 1.0:
        return 1.0 / (s * (10000.0 - 20.0) + 20.0)
    if s <= 50.0:
        return math.exp(-((s - 1.0) / 49.0 * (_L50 - _L4) + _L4))
    s = min(s, 100.0)
    return max(math.exp(-((s - 50.0) / 50.0 * (_LMIN - _L50) + _L50)), DBL_MIN)


@njit(cache=True)
def combine(p, p_anom) -> float:
    """The bucket probability p (< OPEN_P) corrected by p_anom, as Elastic's
    `CTimeSeriesAnomalyModel::probability` does it in 6.5 to 8.0: the raw anomaly scores (§4.1) of
    p and p_anom are blended with alpha = 1/2 min((ln p - ln 0.1) / (ln 1e-4 - ln 0.1), 1) and the
    result is at most OPEN_P. (ELASTIC_MODEL §3.4 gives the later log-space blend; module
    docstring.)"""
    lp = math.log(max(p, DBL_MIN))
    alpha = 0.5 * min(max((-lp - LOG_A) / (LOG_B - LOG_A), 0.0), 1.0)
    s = (1.0 - alpha) * raw_score(p) + alpha * raw_score(p_anom)
    return min(max(inverse_raw_score(s), DBL_MIN), OPEN_P)


@njit(cache=True)
def step(S, i, tb, err, p_single, p, w) -> None:
    """The episode and models after a bucket at tb (time / bucket span) with probability p (before
    this model), single-bucket probability p_single and prediction error err; w scales the update
    weights (skip_model_update). NaN p (not scored) leaves everything as it is."""
    if not (p < OPEN_P):
        if p == p and S[i, L.AM_START] == S[i, L.AM_START]:
            length = S[i, L.AM_LEN]
            add(S, i, _model(S[i, L.AM_SUM]), length, S[i, L.AM_ABS], (1.0 - 1.0 / (1.0 + length)) * w)
            S[i, L.AM_START] = math.nan
            S[i, L.AM_LEN] = 0.0
            S[i, L.AM_SUM] = 0.0
            S[i, L.AM_N] = 0.0
            S[i, L.AM_ABS] = 0.0
        return
    if S[i, L.AM_START] != S[i, L.AM_START]:
        S[i, L.AM_START] = tb
        S[i, L.AM_LEN] = 0.0
        S[i, L.AM_SUM] = 0.0
        S[i, L.AM_N] = 0.0
        S[i, L.AM_ABS] = 0.0
    if p_single < OPEN_P and abs(err) < math.inf:
        length = max(tb - S[i, L.AM_START], 0.0)
        n = S[i, L.AM_N] + 1.0
        S[i, L.AM_LEN] = length
        S[i, L.AM_SUM] += err
        S[i, L.AM_ABS] += (abs(err) - S[i, L.AM_ABS]) / n
        S[i, L.AM_N] = n
        add(S, i, _model(S[i, L.AM_SUM]), length, S[i, L.AM_ABS], w / (1.0 + length))


@njit(cache=True)
def probability(S, i, tb, err, p_single, p):
    """(corrected p, p_anom) of a bucket at tb with probability p (before this model), as `step`
    will leave the episode and its model; no state change. p_anom = 1: no correction (no episode,
    or the episode's model is not informative yet)."""
    if not (p < OPEN_P):
        return p, 1.0
    start = S[i, L.AM_START]
    if start == start:
        length = S[i, L.AM_LEN]
        total = S[i, L.AM_SUM]
        n = S[i, L.AM_N]
        mean_abs = S[i, L.AM_ABS]
    else:
        start = tb
        length = 0.0
        total = 0.0
        n = 0.0
        mean_abs = 0.0
    c = _model(total)
    k, m1, m2, w11, w12, w22 = S[i, c], S[i, c + 1], S[i, c + 2], S[i, c + 3], S[i, c + 4], S[i, c + 5]
    if p_single < OPEN_P and abs(err) < math.inf:
        length = max(tb - start, 0.0)
        total += err
        n += 1.0
        mean_abs += (abs(err) - mean_abs) / n
        c = _model(total)
        k, m1, m2, w11, w12, w22 = _add(S[i, c], S[i, c + 1], S[i, c + 2], S[i, c + 3], S[i, c + 4],
                                        S[i, c + 5], length, mean_abs, 1.0 / (1.0 + length))
    if not informative(k):
        return p, 1.0
    pa = features_p(k, m1, m2, w11, w12, w22, length, mean_abs)
    # the correction only ever discounts (module docstring: Elastic's also lowers p)
    return max(combine(p, pa), p), pa


@njit(cache=True)
def init(S, i) -> None:
    S[i, L.AM_START] = math.nan
    S[i, L.AM_LEN] = 0.0
    for c in range(L.AM, L.AM_MOD + 2 * L.AM_MOD_STRIDE):
        S[i, c] = 0.0
