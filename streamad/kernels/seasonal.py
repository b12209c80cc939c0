"""Seasonal components: 36 knots per period, cubic (Catmull-Rom) interpolated, with variance scale.

Component k of a row lives in columns `SEAS + k * SEAS_STRIDE`: 36 knot values, 36 knot counts,
36 knot residual variances. A value error is shared by the two knots nearest the bucket's middle
with gain weight/count, capped so the knots keep adapting (ELASTIC_MODEL §2.3); the component mean
is handed to the trend so components stay zero-mean (identifiable).
"""

from __future__ import annotations

import math

from numba import njit

from streamad.kernels import layout as L


@njit(cache=True)
def comp_on(S, i, k) -> bool:
    return S[i, L.COMP + k * L.COMP_STRIDE] > 0.0


@njit(cache=True)
def comp_period(S, i, k) -> float:
    return S[i, L.COMP + k * L.COMP_STRIDE + 1]


@njit(cache=True)
def _phase(t, span, period):
    """Knot coordinate of the middle of the bucket starting at t: (index, fraction)."""
    ph = ((t + 0.5 * span) % period) / period * L.KNOTS - 0.5
    j0 = math.floor(ph)
    return int(j0), ph - j0


@njit(cache=True)
def _cr(y0, y1, y2, y3, f) -> float:
    """Catmull-Rom cubic between y1 and y2."""
    return y1 + 0.5 * f * (y2 - y0 + f * (2.0 * y0 - 5.0 * y1 + 4.0 * y2 - y3 + f * (3.0 * (y1 - y2) + y3 - y0)))


@njit(cache=True)
def _interp(S, i, base, j0, f) -> float:
    n = L.KNOTS
    return _cr(S[i, base + (j0 - 1) % n], S[i, base + j0 % n], S[i, base + (j0 + 1) % n],
               S[i, base + (j0 + 2) % n], f)


@njit(cache=True)
def comp_value(S, i, k, t, span) -> float:
    if not comp_on(S, i, k):
        return 0.0
    j0, f = _phase(t, span, comp_period(S, i, k))
    return _interp(S, i, L.SEAS + k * L.SEAS_STRIDE, j0, f)


@njit(cache=True)
def value(S, i, t, span) -> float:
    total = 0.0
    for k in range(L.NCOMP):
        total += comp_value(S, i, k, t, span)
    return total


@njit(cache=True)
def var_scale(S, i, t, span) -> float:
    """Heteroscedastic seasonality: residual variance at this phase over its mean, in [0.4, 25]."""
    scale = 1.0
    for k in range(L.NCOMP):
        if not comp_on(S, i, k):
            continue
        base = L.SEAS + k * L.SEAS_STRIDE + 2 * L.KNOTS
        j0, f = _phase(t, span, comp_period(S, i, k))
        v = (1.0 - f) * S[i, base + j0 % L.KNOTS] + f * S[i, base + (j0 + 1) % L.KNOTS]
        mean = 0.0
        for j in range(L.KNOTS):
            mean += S[i, base + j]
        mean /= L.KNOTS
        if mean > 0.0 and v == v:
            scale *= v / mean
    return min(max(scale, 0.4), 25.0)


@njit(cache=True)
def knot_count(S, i, t, span) -> float:
    """Smallest count of the knots in use at t (for the baseline band), inf with no component."""
    c = math.inf
    for k in range(L.NCOMP):
        if comp_on(S, i, k):
            base = L.SEAS + k * L.SEAS_STRIDE + L.KNOTS
            j0, f = _phase(t, span, comp_period(S, i, k))
            c = min(c, (1.0 - f) * S[i, base + j0 % L.KNOTS] + f * S[i, base + (j0 + 1) % L.KNOTS])
    return c


@njit(cache=True)
def comp_update(S, i, k, t, span, e, weight, d2, wvar) -> float:
    """Move component k towards error e at t; returns the mean removed from the knots.

    d2 is the squared scaled residual for the knot variance estimate, updated with weight wvar.
    """
    base = L.SEAS + k * L.SEAS_STRIDE
    period = comp_period(S, i, k)
    j0, f = _phase(t, span, period)
    cap = max(10.0 * period / span / L.KNOTS, 4.0)
    for jj, wj in ((j0, 1.0 - f), (j0 + 1, f)):
        j = jj % L.KNOTS
        c = min(S[i, base + L.KNOTS + j] + weight * wj, cap)
        S[i, base + L.KNOTS + j] = c
        if c > 0.0:
            S[i, base + j] += weight * wj / c * e
            S[i, base + 2 * L.KNOTS + j] += min(wvar * wj / c, 1.0) * (d2 - S[i, base + 2 * L.KNOTS + j])
    mk = 0.0
    for j in range(L.KNOTS):
        mk += S[i, base + j]
    mk /= L.KNOTS
    for j in range(L.KNOTS):
        S[i, base + j] -= mk
    return mk


@njit(cache=True)
def comp_init(S, i, k, period, profile, nprof, ev, var0, t) -> None:
    """Switch component k on at time t with a period and an initial profile of nprof equally
    spaced values."""
    base = L.SEAS + k * L.SEAS_STRIDE
    c = L.COMP + k * L.COMP_STRIDE
    S[i, c] = 1.0
    S[i, c + 1] = period
    S[i, c + 2] = ev
    S[i, c + 3] = t
    S[i, c + 4] = 0.0
    S[i, c + 5] = 0.0
    mean = 0.0
    for j in range(L.KNOTS):
        centre = (j + 0.5) / L.KNOTS * nprof - 0.5
        g0 = int(math.floor(centre))
        f = centre - g0
        v = (1.0 - f) * profile[g0 % nprof] + f * profile[(g0 + 1) % nprof]
        S[i, base + j] = v
        mean += v
        S[i, base + L.KNOTS + j] = 3.0
        S[i, base + 2 * L.KNOTS + j] = var0
    mean /= L.KNOTS
    for j in range(L.KNOTS):
        S[i, base + j] -= mean


@njit(cache=True)
def track_errors(S, i, t, span, r, weight, beta) -> None:
    """EW squared prediction error of each component's model with and without it (r = value -
    prediction with all components)."""
    b = beta * min(weight, 1.0)
    for k in range(L.NCOMP):
        if comp_on(S, i, k):
            c = L.COMP + k * L.COMP_STRIDE
            without = r + comp_value(S, i, k, t, span)
            S[i, c + 4] += b * (r * r - S[i, c + 4])
            S[i, c + 5] += b * (without * without - S[i, c + 5])


@njit(cache=True)
def stale(S, i, k, t, min_age) -> bool:
    """A component older than min_age whose predictions are worse than none (ELASTIC_MODEL §2.3)."""
    c = L.COMP + k * L.COMP_STRIDE
    return comp_on(S, i, k) and t - S[i, c + 3] > min_age and S[i, c + 4] > S[i, c + 5]


@njit(cache=True)
def comp_clear(S, i, k) -> None:
    for q in range(L.COMP_STRIDE):
        S[i, L.COMP + k * L.COMP_STRIDE + q] = 0.0
    base = L.SEAS + k * L.SEAS_STRIDE
    for j in range(L.SEAS_STRIDE):
        S[i, base + j] = 0.0
