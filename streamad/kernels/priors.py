"""Conjugate residual priors on one state row: normal-gamma, log-normal, gamma, Poisson.

Each works on columns of `S[i]` starting at a base column. Updates are weighted (outlier and
change weights, empty-bucket weights), aging keeps the mean estimate and widens its uncertainty
(ELASTIC_MODEL §2.2), predictives are Student-t (normal, log-normal on log scale), plug-in gamma
and negative binomial (Poisson). Tail probabilities come as (F, 1 - F), each computed directly.
"""

from __future__ import annotations

import math

from numba import njit

from streamad.kernels.special import (
    negbin_cdf,
    negbin_logpmf,
    negbin_sf,
    student_t_cdf,
    student_t_sf,
)

DBL_MIN = 2.2250738585072014e-308
LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True)
def ng_update(S, i, c, x, w, extra_var) -> None:
    """Weighted normal-gamma update with one sample x (columns c..c+3 = m, p, a, b).

    extra_var adds known within-sample variance (1/12 for integer data: the rounding dither).
    """
    if not (w > 0.0):
        return
    m = S[i, c]
    p = S[i, c + 1]
    if p <= 0.0:
        S[i, c] = x
        S[i, c + 1] = w
        S[i, c + 2] += 0.5 * w
        S[i, c + 3] += 0.5 * w * extra_var
        return
    d = x - m
    S[i, c + 3] += 0.5 * p * w * d * d / (p + w) + 0.5 * w * extra_var
    S[i, c] = m + w * d / (p + w)
    S[i, c + 1] = p + w
    S[i, c + 2] += 0.5 * w


@njit(cache=True)
def ng_age(S, i, c, alpha) -> None:
    """Forget: precision of the mean scales by alpha; (a, b) shrink towards a = 1 keeping b/a."""
    S[i, c + 1] *= alpha
    a = S[i, c + 2]
    if a > 0.0:
        f = min((alpha * a + (1.0 - alpha)) / a, 1.0)
        S[i, c + 2] = a * f
        S[i, c + 3] *= f


@njit(cache=True)
def ng_floor(S, i, c, var_floor) -> None:
    """Variance floor: b >= floor * a (MINIMUM_COEFFICIENT_OF_VARIATION)."""
    if S[i, c + 3] < var_floor * S[i, c + 2]:
        S[i, c + 3] = var_floor * S[i, c + 2]


@njit(cache=True)
def ng_scale(S, i, c, vs) -> float:
    """Scale of the Student-t predictive (variance scale vs applied)."""
    p = max(S[i, c + 1], 1e-9)
    a = max(S[i, c + 2], 0.5)
    b = max(S[i, c + 3], 0.0)
    return math.sqrt(max(b * (p + 1.0) / (a * p) * vs, 1e-300))


@njit(cache=True)
def ng_nu(S, i, c) -> float:
    return 2.0 * max(S[i, c + 2], 0.5)


@njit(cache=True)
def ng_var(S, i, c) -> float:
    """Predictive variance (finite version: b/a * (p+1)/p)."""
    p = max(S[i, c + 1], 1e-9)
    a = max(S[i, c + 2], 0.5)
    return max(S[i, c + 3], 0.0) * (p + 1.0) / (a * p)


@njit(cache=True)
def t_logpdf(z, nu, scale) -> float:
    return (math.lgamma(0.5 * (nu + 1.0)) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi)
            - math.log(scale) - 0.5 * (nu + 1.0) * math.log1p(z * z / nu))


@njit(cache=True)
def t_tails(z, nu):
    """(F, 1 - F) of Student's t at z."""
    return student_t_cdf(z, nu), student_t_sf(z, nu)


@njit(cache=True)
def tail_p(F, G, side) -> float:
    """Probability of a value at least as extreme from (F, 1 - F): two-sided 2 min(F, G) or one-sided."""
    if side < 0:
        p = 2.0 * F
    elif side > 0:
        p = 2.0 * G
    else:
        p = 2.0 * min(F, G)
    if not (p == p):
        return 1.0
    return min(max(p, DBL_MIN), 1.0)


# ---------------------------------------------------------------- log-normal (NG on log y)
@njit(cache=True)
def ln_logpdf(S, i, c, y, vs) -> float:
    if not (y > 0.0):
        return -1e300
    ly = math.log(y)
    scale = ng_scale(S, i, c, vs)
    nu = ng_nu(S, i, c)
    return t_logpdf((ly - S[i, c]) / scale, nu, scale) - ly


@njit(cache=True)
def ln_tails(S, i, c, y, vs):
    if not (y > 0.0):
        return 0.0, 1.0
    scale = ng_scale(S, i, c, vs)
    return t_tails((math.log(y) - S[i, c]) / scale, ng_nu(S, i, c))


@njit(cache=True)
def ln_moments(S, i, c):
    """Mean and variance of y under the log-normal with the posterior mean parameters."""
    s2 = max(S[i, c + 3], 0.0) / max(S[i, c + 2], 0.5)
    mean = math.exp(min(S[i, c] + 0.5 * s2, 700.0))
    return mean, (math.exp(min(s2, 700.0)) - 1.0) * mean * mean


@njit(cache=True)
def ln_set_moments(S, i, c, mean, var, n) -> None:
    """Re-fit the log-normal to a mean and variance of y, with confidence n (moment matching)."""
    mean = min(max(mean, 1e-300), 1e300)
    ratio = max(var, 0.0) / mean / mean
    s2 = min(max(math.log1p(ratio) if ratio < 1e300 else 690.0, 1e-12), 690.0)
    S[i, c] = math.log(mean) - 0.5 * s2
    S[i, c + 1] = n
    S[i, c + 2] = 0.5 * n + 0.5
    S[i, c + 3] = s2 * S[i, c + 2]


# ---------------------------------------------------------------- gamma (plug-in shape by ML)
@njit(cache=True)
def gamma_pq(a, x):
    """Regularized incomplete gammas (P(a, x), Q(a, x)), the smaller one computed directly.

    Series below x = a + 1, Lentz continued fraction above. Local (not special.py's) because the
    mutually recursive pair there cannot be loaded from numba's cache.
    """
    if not (x > 0.0) or not (a > 0.0):
        return 0.0, 1.0
    if x == math.inf:
        return 1.0, 0.0
    lead = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:
        term = 1.0 / a
        total = term
        ap = a
        for _ in range(100000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        P = min(total * math.exp(lead), 1.0)
        return P, 1.0 - P
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for n in range(1, 100000):
        an = -n * (n - a)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    Q = min(math.exp(lead) * h, 1.0)
    return 1.0 - Q, Q


@njit(cache=True)
def ga_params(S, i, c):
    """(shape, rate) from the weighted sufficient statistics (count, sum y, sum log y)."""
    n = S[i, c]
    if not (n > 0.0):
        return 1.0, 1.0
    mean = max(S[i, c + 1] / n, 1e-300)
    s = math.log(mean) - S[i, c + 2] / n
    if not (s > 1e-9):
        k = 1e6
    else:
        k = (3.0 - s + math.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)
        k = min(max(k, 0.05), 1e6)
    return k, k / mean


@njit(cache=True)
def ga_update(S, i, c, y, w) -> None:
    ga_update_var(S, i, c, y, w, 0.0)


@njit(cache=True)
def ga_update_var(S, i, c, y, w, extra_var) -> None:
    """Add y with weight w; extra_var is known within-sample variance (1/12: integer dither), added
    as E[log(y + u)] ~ log y - var/(2 y^2), which widens the ML shape by exactly that variance."""
    if y > 0.0 and w > 0.0:
        S[i, c] += w
        S[i, c + 1] += w * y
        S[i, c + 2] += w * (math.log(y) - 0.5 * extra_var / (y * y))


@njit(cache=True)
def ga_age(S, i, c, alpha) -> None:
    S[i, c] *= alpha
    S[i, c + 1] *= alpha
    S[i, c + 2] *= alpha


@njit(cache=True)
def digamma(k) -> float:
    """psi(k) for k > 0: recurrence up to 8, then the asymptotic series."""
    acc = 0.0
    while k < 8.0:
        acc -= 1.0 / k
        k += 1.0
    k2 = 1.0 / (k * k)
    return acc + math.log(k) - 0.5 / k - k2 * (1.0 / 12.0 - k2 * (1.0 / 120.0 - k2 / 252.0))


@njit(cache=True)
def ga_shift(S, i, c, delta) -> None:
    """Move the statistics to y + delta, keeping the fitted gamma's variance.

    The sum moves exactly. The sum of logs is set so that the ML shape is the one of a gamma with
    the new mean and the old variance: k' = k (mean'/mean)^2, log k' - psi(k') = log mean' - mean
    log y'. (Keeping log mean - mean log y instead would keep the coefficient of variation, and a
    large shift of the offset would stretch the distribution by mean'/mean.)
    """
    n = S[i, c]
    if n > 0.0:
        mean = S[i, c + 1] / n
        k, _rate = ga_params(S, i, c)
        S[i, c + 1] += delta * n
        if not (mean > 0.0 and mean + delta > 0.0):
            return
        k = k * ((mean + delta) / mean) ** 2
        k = min(max(k, 0.05), 1e6)
        s = max(math.log(k) - digamma(k), 1e-12)
        S[i, c + 2] = n * (math.log(mean + delta) - s)


@njit(cache=True)
def ga_logpdf(S, i, c, y, vs) -> float:
    if not (y > 0.0):
        return -1e300
    k, rate = ga_params(S, i, c)
    k = k / vs  # variance scale: keep the mean, stretch the variance
    rate = rate / vs
    return k * math.log(rate) + (k - 1.0) * math.log(y) - rate * y - math.lgamma(k)


@njit(cache=True)
def ga_tails(S, i, c, y, vs):
    if not (y > 0.0):
        return 0.0, 1.0
    k, rate = ga_params(S, i, c)
    k = k / vs
    rate = rate / vs
    return gamma_pq(k, rate * y)


# ---------------------------------------------------------------- Poisson (gamma on the rate)
@njit(cache=True)
def po_logpmf(S, i, c, x) -> float:
    a = max(S[i, c], 1e-6)
    b = S[i, c + 1]
    return negbin_logpmf(math.floor(x + 0.5), a, b / (b + 1.0))


@njit(cache=True)
def po_tails(S, i, c, x):
    """Mid-p tails of the negative binomial predictive: (P(X<k) + P(X=k)/2, P(X>k) + P(X=k)/2)."""
    a = max(S[i, c], 1e-6)
    b = S[i, c + 1]
    q = b / (b + 1.0)
    k = max(math.floor(x + 0.5), 0.0)
    pmf = math.exp(negbin_logpmf(k, a, q))
    return negbin_cdf(k, a, q) - 0.5 * pmf, negbin_sf(k, a, q) + 0.5 * pmf


@njit(cache=True)
def t_quantile(z, nu) -> float:
    """Student-t quantile from the normal quantile z (Cornish-Fisher in 1/nu, Newton below nu = 10)."""
    if nu > 1e6:
        return z
    nu = max(nu, 1.0)
    z3 = z * z * z
    z5 = z3 * z * z
    z7 = z5 * z * z
    q = z + (z3 + z) / (4.0 * nu) + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * nu * nu) \
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * nu ** 3)
    if nu < 10.0:  # the expansion is rough for few degrees of freedom: Newton on the CDF
        p = 0.5 * math.erfc(-z / math.sqrt(2.0))
        for _ in range(3):
            dens = math.exp(t_logpdf(q, nu, 1.0))
            if not (dens > 0.0):
                break
            q -= (student_t_cdf(q, nu) - p) / dens
    return q
