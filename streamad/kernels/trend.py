"""Trend: an ensemble of exponentially smoothed levels at 4 time scales, with mean reversion.

A pragmatic form of Elastic's 8-regression `CTrendComponent` (ELASTIC_MODEL §2.3): each level
learns at its own rate (about 6 h, 1.5 d, 6 d and 24 d memories, in buckets), each keeps an EW
mean squared one-step prediction error over the last ~24 buckets (`series.LEV_ERR_BUCKETS`), and
the prediction weights the levels by inverse error: the level that predicted best lately leads,
so a series that settles after a burst or moves to a new regime is followed by the fast level
without waiting a day for the slow levels' old errors to fade.
Forecasts revert towards the slowest level as the horizon grows past each level's memory.
"""

from __future__ import annotations

import math

from numba import njit

from streamad.kernels import layout as L

SCALES = (6.0 * 3600.0, 1.5 * 86400.0, 6.0 * 86400.0, 24.0 * 86400.0)


@njit(cache=True)
def init(S, i, x) -> None:
    for k in range(L.NLEV):
        S[i, L.LEV + k] = x
        S[i, L.LEV_E + k] = 0.0
    S[i, L.LEV_N] = 0.0


@njit(cache=True)
def weights(S, i, out) -> None:
    """Normalised inverse-error weights of the levels (equal until errors are known)."""
    total = 0.0
    emax = 0.0
    for k in range(L.NLEV):
        emax = max(emax, S[i, L.LEV_E + k])
    floor = max(emax * 1e-6, 1e-300)
    for k in range(L.NLEV):
        out[k] = 1.0 / max(S[i, L.LEV_E + k], floor)
        total += out[k]
    for k in range(L.NLEV):
        out[k] /= total


@njit(cache=True)
def value(S, i) -> float:
    w = [0.0, 0.0, 0.0, 0.0]
    total = 0.0
    emax = 0.0
    for k in range(L.NLEV):
        emax = max(emax, S[i, L.LEV_E + k])
    floor = max(emax * 1e-6, 1e-300)
    for k in range(L.NLEV):
        w[k] = 1.0 / max(S[i, L.LEV_E + k], floor)
        total += w[k]
    v = 0.0
    for k in range(L.NLEV):
        v += w[k] / total * S[i, L.LEV + k]
    return v


@njit(cache=True)
def forecast(S, i, horizon) -> float:
    """Level expected `horizon` seconds ahead: faster levels fade into the slowest one."""
    w = [0.0, 0.0, 0.0, 0.0]
    total = 0.0
    emax = 0.0
    for k in range(L.NLEV):
        emax = max(emax, S[i, L.LEV_E + k])
    floor = max(emax * 1e-6, 1e-300)
    for k in range(L.NLEV):
        w[k] = 1.0 / max(S[i, L.LEV_E + k], floor)
        if k < L.NLEV - 1:
            w[k] *= math.exp(-max(horizon, 0.0) / SCALES[k])
        total += w[k]
    v = 0.0
    for k in range(L.NLEV):
        v += w[k] / total * S[i, L.LEV + k]
    return v


@njit(cache=True)
def update(S, i, P, target, weight, err_beta) -> None:
    """Move each level towards target (value minus seasonal) with its rate times weight."""
    n = S[i, L.LEV_N]
    for k in range(L.NLEV):
        e = target - S[i, L.LEV + k]
        if n >= 1.0:
            S[i, L.LEV_E + k] += err_beta * min(weight, 1.0) * (e * e - S[i, L.LEV_E + k])
        alpha = max(P[L.P_LEV_ALPHA + k], 1.0 / (n + 1.0))
        S[i, L.LEV + k] += min(alpha * weight, 1.0) * e
    S[i, L.LEV_N] = n + weight


@njit(cache=True)
def shift(S, i, delta) -> None:
    for k in range(L.NLEV):
        S[i, L.LEV + k] += delta
