"""Periodicity tests on an expanding window of slot means (ELASTIC_MODEL §2.4, §11.2).

The window holds 168 slot means. Slots start at the base slot (1 h for bucket spans up to 1 h);
when the window fills it is compressed by merging pairs (2 h, then 4 h), so it covers 7, 14, then
28 days, and then slides. Tests run once a day from 3 days of data: daily and weekly periods and
the strongest autocorrelation period, each by an F-test of the explained variance on the linearly
detrended window (minus the other modelled components), gated by autocorrelation at one period lag
and at least 3 repeats. A component is added when p < 1e-4 and removed when p > 0.4, or when
after a week it predicts worse than no component.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamad.kernels import layout as L
from streamad.kernels import seasonal as SE
from streamad.kernels.special import betainc

DAY = 86400.0
WEEK = 7.0 * DAY
P_ADD = 1e-4
P_REMOVE = 0.4


@njit(cache=True)
def slot_len(S, i, base) -> float:
    return base * 2.0 ** S[i, L.WIN_LEVEL]


@njit(cache=True)
def _compress(S, i, slot, end_abs) -> None:
    """Merge pairs of slots: the window now has slots twice as long."""
    vals = np.empty(L.WIN_LEN)
    start_abs = end_abs - L.WIN_LEN
    for k in range(L.WIN_LEN):
        vals[k] = S[i, L.WIN + (start_abs + k) % L.WIN_LEN]
        S[i, L.WIN + k] = math.nan
    filled = 0
    first_new = start_abs // 2 if start_abs % 2 == 0 else start_abs // 2 + 1
    for n in range(first_new, end_abs // 2):
        a = vals[2 * n - start_abs]
        b = vals[2 * n + 1 - start_abs]
        if a == a and b == b:
            v = 0.5 * (a + b)
        elif a == a:
            v = a
        else:
            v = b
        S[i, L.WIN + n % L.WIN_LEN] = v
        filled += 1
    S[i, L.WIN_FILLED] = filled
    S[i, L.WIN_LEVEL] += 1.0


@njit(cache=True)
def _clear_window(S, i) -> None:
    for k in range(L.WIN_LEN):
        S[i, L.WIN + k] = math.nan
    S[i, L.WIN_FILLED] = 0.0


@njit(cache=True)
def push(S, i, base, t) -> None:
    """Close the slots that end at or before t; accumulation of t's value is the caller's."""
    slot = slot_len(S, i, base)
    while t >= S[i, L.WIN_SLOT_T] + slot:
        cnt = S[i, L.WIN_SLOT_CNT]
        s_abs = int(S[i, L.WIN_SLOT_T] // slot)
        S[i, L.WIN + s_abs % L.WIN_LEN] = S[i, L.WIN_SLOT_SUM] / cnt if cnt > 0.0 else math.nan
        S[i, L.WIN_FILLED] += 1.0
        S[i, L.WIN_SLOT_SUM] = 0.0
        S[i, L.WIN_SLOT_CNT] = 0.0
        S[i, L.WIN_SLOT_T] += slot
        if S[i, L.WIN_FILLED] >= L.WIN_LEN and S[i, L.WIN_LEVEL] < L.MAX_WIN_LEVEL:
            end_abs = int(S[i, L.WIN_SLOT_T] // slot)
            _compress(S, i, slot, end_abs)
            slot = slot_len(S, i, base)
            S[i, L.WIN_SLOT_T] = math.floor(S[i, L.WIN_SLOT_T] / slot) * slot
        if S[i, L.WIN_SLOT_T] + slot <= t - L.WIN_LEN * slot:  # long gap: jump ahead
            S[i, L.WIN_SLOT_T] = math.floor(t / slot) * slot - L.WIN_LEN * slot


@njit(cache=True)
def window_values(S, i, slot, t_end, exclude, span_unused):
    """Slot means of the window ending at t_end minus the modelled components other than `exclude`.

    Returns (values with NaN gaps, absolute index of the first slot).
    """
    end_abs = int(t_end // slot)
    start_abs = end_abs - L.WIN_LEN
    y = np.empty(L.WIN_LEN)
    for k in range(L.WIN_LEN):
        s = start_abs + k
        v = S[i, L.WIN + s % L.WIN_LEN]
        if v == v:
            for c in range(L.NCOMP):
                if c != exclude:
                    v -= SE.comp_value(S, i, c, s * slot, slot)
        y[k] = v
    return y, start_abs


@njit(cache=True)
def _detrend(y):
    """Remove a least-squares line through the non-NaN values in place; returns their count."""
    n = 0
    mt = 0.0
    my = 0.0
    for k in range(y.shape[0]):
        if y[k] == y[k]:
            n += 1
            mt += k
            my += y[k]
    if n < 2:
        return n
    mt /= n
    my /= n
    sxy = 0.0
    sxx = 0.0
    for k in range(y.shape[0]):
        if y[k] == y[k]:
            sxy += (k - mt) * (y[k] - my)
            sxx += (k - mt) ** 2
    slope = sxy / sxx if sxx > 0.0 else 0.0
    for k in range(y.shape[0]):
        if y[k] == y[k]:
            y[k] = y[k] - my - slope * (k - mt)
    return n


@njit(cache=True)
def acf(y, lag) -> float:
    num = 0.0
    d0 = 0.0
    d1 = 0.0
    for k in range(y.shape[0] - lag):
        a = y[k]
        b = y[k + lag]
        if a == a and b == b:
            num += a * b
            d0 += a * a
            d1 += b * b
    return num / math.sqrt(d0 * d1) if d0 > 0.0 and d1 > 0.0 else 0.0


@njit(cache=True)
def period_test(y, start_abs, per):
    """F-test of a profile of `per` slots on detrended values y (modified in place).

    Returns (explained variance fraction, p-value, autocorrelation at lag per, profile).
    """
    prof = np.zeros(per)
    n = _detrend(y)
    if per < 2 or n < 3 * per or n < 12:
        return 0.0, 1.0, 0.0, prof
    cnts = np.zeros(per)
    for k in range(y.shape[0]):
        if y[k] == y[k]:
            g = (start_abs + k) % per
            prof[g] += y[k]
            cnts[g] += 1.0
    groups = 0
    ssb = 0.0
    for g in range(per):
        if cnts[g] > 0.0:
            groups += 1
            ssb += prof[g] * prof[g] / cnts[g]
            prof[g] /= cnts[g]
    ssw = 0.0
    for k in range(y.shape[0]):
        if y[k] == y[k]:
            d = y[k] - prof[(start_abs + k) % per]
            ssw += d * d
    total = ssb + ssw
    if not (total > 0.0) or groups < 2 or n - groups < 2:
        return 0.0, 1.0, 0.0, prof
    ev = ssb / total
    r = acf(y, per)
    if not (ssw > 0.0):
        return 1.0, 0.0, r, prof
    d1 = groups - 1.0
    d2 = n - groups * 1.0
    F = (ssb / d1) / (ssw / d2)
    pval = betainc(0.5 * d2, 0.5 * d1, d2 / (d2 + d1 * F))
    return ev, pval, r, prof


@njit(cache=True)
def best_lag(y, lo, hi) -> int:
    """The shortest local maximum of autocorrelation in [lo, hi] within 10 % of the largest (or 0).

    Multiples of a period correlate about as well as the period itself; prefer the shortest.
    """
    best = 0.0
    for q in range(lo, hi + 1):
        best = max(best, acf(y, q))
    if not (best > 0.0):
        return 0
    for q in range(lo, hi + 1):
        r = acf(y, q)
        if r >= 0.9 * best and r >= acf(y, q - 1) and r >= acf(y, q + 1):
            return q
    return 0


@njit(cache=True)
def run_tests(S, i, base, t_end, span) -> int:
    """Test for periodic components to add or remove. Returns +1 added, -1 removed, 0 nothing.

    On success the component is switched on (off) here; the caller resets the residual model.
    """
    slot = slot_len(S, i, base)
    # removal: a component that predicts worse than none after a week, or whose period no
    # longer explains variance in the window
    for k in range(L.NCOMP):
        if SE.stale(S, i, k, t_end, WEEK):
            SE.comp_clear(S, i, k)
            _clear_window(S, i)  # the window still shows the old pattern: start afresh
            return -1
        if SE.comp_on(S, i, k):
            per = int(round(SE.comp_period(S, i, k) / slot))
            if per * slot == SE.comp_period(S, i, k):
                y, start = window_values(S, i, slot, t_end, k, span)
                _ev, pval, _r, _prof = period_test(y, start, per)
                n = 0
                for q in range(L.WIN_LEN):
                    if y[q] == y[q]:
                        n += 1
                if n >= 3 * per and pval > P_REMOVE:
                    SE.comp_clear(S, i, k)
                    _clear_window(S, i)
                    return -1
    # daily (or another short period) in component 0, weekly in component 1
    for k in range(L.NCOMP):
        if SE.comp_on(S, i, k):
            continue
        candidates = np.zeros(2)
        if k == 0:
            candidates[0] = DAY
        else:
            candidates[0] = WEEK
        y, start = window_values(S, i, slot, t_end, -1, span)
        work = y.copy()
        _detrend(work)
        if k == 0:
            lag = best_lag(work, 4, L.WIN_LEN // 3)
            if lag > 0 and acf(work, lag) > 0.6 and abs(lag * slot - DAY) > 0.5 * slot \
                    and (DAY % (lag * slot) != 0.0 or lag * slot < 0.25 * DAY):
                candidates[1] = lag * slot
        for q in range(2):
            period = candidates[q]
            if period <= 0.0 or period % slot != 0.0 or period < 4.0 * span:
                continue
            per = int(round(period / slot))
            trial = y.copy()
            ev, pval, r, prof = period_test(trial, start, per)
            if pval < P_ADD and r > 0.4 and ev > 0.1:
                SE.comp_init(S, i, k, period, prof, per, ev, 1.0, t_end)
                return 1
    return 0
