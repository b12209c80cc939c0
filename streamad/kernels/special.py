"""Special functions for tail probabilities, as numba kernels (no scipy at run time).

Normal, Student-t (through the regularized incomplete beta), regularized incomplete gamma and the
negative binomial tail. Accuracy ~1e-12 relative in the body of the distributions; tails are
computed directly (survival functions), never as 1 - cdf, so tiny probabilities keep their digits.
"""

from __future__ import annotations

import math

from numba import njit

_SQRT2 = math.sqrt(2.0)
_EPS = 1e-15
_TINY = 1e-300


@njit(cache=True)
def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


@njit(cache=True)
def norm_sf(x: float) -> float:
    return 0.5 * math.erfc(x / _SQRT2)


@njit(cache=True)
def log_norm_sf(x: float) -> float:
    """log(1 - Phi(x)), accurate far into the upper tail (asymptotic series past x = 30)."""
    if x < 30.0:
        return math.log(max(0.5 * math.erfc(x / _SQRT2), 1e-320))
    x2 = x * x
    series = 1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2)
    return -0.5 * x2 - math.log(x) - 0.5 * math.log(2.0 * math.pi) + math.log(series)


@njit(cache=True)
def norm_ppf(p: float) -> float:
    """Inverse of the standard normal CDF (Acklam's rational start, two Halley refinements)."""
    if not (p > 0.0):
        return -math.inf
    if not (p < 1.0):
        return math.inf
    a0, a1, a2, a3, a4, a5 = -3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00
    b0, b1, b2, b3, b4 = -5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01, -1.328068155288572e01
    c0, c1, c2, c3, c4, c5 = -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00
    d0, d1, d2, d3 = 7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        x = (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1.0)
    elif p > 1.0 - 0.02425:
        q = math.sqrt(-2.0 * math.log(1.0 - p))
        x = -(((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1.0)
    else:
        q = p - 0.5
        r = q * q
        x = (((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * q / (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1.0)
    for _ in range(2):
        if p < 0.5:
            e = norm_cdf(x) - p
        else:
            e = (1.0 - p) - norm_sf(x)  # == cdf(x) - p, without cancellation in the upper tail
        u = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
        x = x - u / (1.0 + 0.5 * x * u)
    return x


@njit(cache=True)
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta (modified Lentz)."""
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _TINY:
        d = _TINY
    d = 1.0 / d
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < _TINY:
            d = _TINY
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < _TINY:
            d = _TINY
        c = 1.0 + aa / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


@njit(cache=True)
def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if not (x > 0.0):
        return 0.0
    if not (x < 1.0):
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


@njit(cache=True)
def betainc_upper(a: float, b: float, x: float) -> float:
    """1 - I_x(a, b) computed directly (keeps small upper tails accurate)."""
    if not (x > 0.0):
        return 1.0
    if not (x < 1.0):
        return 0.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return 1.0 - math.exp(lbt) * _betacf(a, b, x) / a
    return math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


@njit(cache=True)
def student_t_sf(x: float, nu: float) -> float:
    """P(T > x) for Student's t with nu degrees of freedom (nu > 0)."""
    if x != x:
        return math.nan
    if nu > 1e7:
        return norm_sf(x)
    tail = 0.5 * betainc(0.5 * nu, 0.5, nu / (nu + x * x))
    return tail if x > 0.0 else 1.0 - tail


@njit(cache=True)
def student_t_cdf(x: float, nu: float) -> float:
    return student_t_sf(-x, nu)


@njit(cache=True)
def student_t_ppf(p: float, nu: float) -> float:
    """Quantile of Student's t by bisection on the tail (robust; used for bounds only)."""
    if not (p > 0.0):
        return -math.inf
    if not (p < 1.0):
        return math.inf
    if p == 0.5:
        return 0.0
    upper = p > 0.5
    q = 1.0 - p if upper else p
    lo, hi = 0.0, 1.0
    while student_t_sf(hi, nu) > q and hi < 1e300:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_sf(mid, nu) > q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    x = 0.5 * (lo + hi)
    return x if upper else -x


@njit(cache=True)
def _gamma_series(a: float, x: float) -> float:
    """P(a, x) by its power series; converges fast for x < a + 1."""
    term = 1.0 / a
    total = term
    ap = a
    for _ in range(10000):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return min(total * math.exp(-x + a * math.log(x) - math.lgamma(a)), 1.0)


@njit(cache=True)
def _gamma_log_cf(a: float, x: float) -> float:
    """log Q(a, x) by Lentz's continued fraction; converges fast for x >= a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return -x + a * math.log(x) - math.lgamma(a) + math.log(h)


# The two regularized functions are written without calling each other: numba's
# on-disk cache cannot reload mutually recursive functions.
@njit(cache=True)
def gammainc_lower(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x)."""
    if not (x > 0.0):
        return 0.0
    if x < a + 1.0:
        return _gamma_series(a, x)
    return 1.0 - math.exp(_gamma_log_cf(a, x))


@njit(cache=True)
def gammainc_upper(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x)."""
    if not (x > 0.0):
        return 1.0
    if x < a + 1.0:
        return 1.0 - _gamma_series(a, x)
    return math.exp(_gamma_log_cf(a, x))


@njit(cache=True)
def log_gammainc_upper(a: float, x: float) -> float:
    """log Q(a, x), finite where Q underflows (continued fraction in log space for large x)."""
    if not (x > 0.0):
        return 0.0
    if x < a + 1.0:
        return math.log(max(1.0 - _gamma_series(a, x), 1e-320))
    return _gamma_log_cf(a, x)


@njit(cache=True)
def negbin_cdf(k: float, r: float, p: float) -> float:
    """P(X <= k) for the negative binomial with r successes and success probability p (k >= 0)."""
    if k < 0.0:
        return 0.0
    return betainc(r, math.floor(k) + 1.0, p)


@njit(cache=True)
def negbin_sf(k: float, r: float, p: float) -> float:
    """P(X > k), computed directly."""
    if k < 0.0:
        return 1.0
    return betainc_upper(r, math.floor(k) + 1.0, p)


@njit(cache=True)
def negbin_logpmf(k: float, r: float, p: float) -> float:
    return math.lgamma(k + r) - math.lgamma(k + 1.0) - math.lgamma(r) + r * math.log(p) + k * math.log1p(-p)
