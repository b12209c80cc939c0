"""Per-series time-series model kernels: update with a bucket's sample, then probability of a value.

All state lives in a float64 matrix `S[series, column]` (columns in `layout`); parameters in a
float64 vector `P`. A series' prediction is level + daily seasonal component; the residual
distribution is a one-of-n mixture of a normal-gamma prior (Student-t predictive) and, for
non-negative integer data without seasonality, a Poisson prior (negative binomial predictive),
weighted by their decayed predictive log likelihoods. Updates are down-weighted for outliers
(ELASTIC_MODEL §2.1), priors age at the configured decay rate, a sustained run of large errors is
accepted as a level shift, and a periodicity test on a 168-slot window adds a daily component.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamad.kernels import layout as L
from streamad.kernels.special import (
    betainc,
    negbin_cdf,
    negbin_logpmf,
    negbin_sf,
    norm_ppf,
    student_t_cdf,
    student_t_ppf,
    student_t_sf,
)

DAY = 86400.0
WEEK3 = 21 * DAY
DBL_MIN = 2.2250738585072014e-308
EVENT_NONE, EVENT_LEVEL_SHIFT, EVENT_DAILY_ADDED = 0, 1, 2
_MB_DECAY = 0.9
_MB_RHO = 0.45


@njit(cache=True)
def init_rows(S, rows) -> None:
    for k in range(rows.shape[0]):
        i = rows[k]
        for c in range(S.shape[1]):
            S[i, c] = 0.0
        S[i, L.T_FIRST] = math.nan
        S[i, L.FLAGS_INT] = 1.0
        S[i, L.FLAGS_NONNEG] = 1.0
        S[i, L.NG_A] = 1.0
        for j in range(L.WIN_LEN):
            S[i, L.WIN + j] = math.nan


@njit(cache=True)
def seasonal(S, i, t, span) -> float:
    """The daily component at the middle of the bucket starting at t (linear between 36 knots)."""
    if S[i, L.DAY_ON] == 0.0:
        return 0.0
    phase = ((t + 0.5 * span) % DAY) / DAY * L.KNOTS - 0.5
    j0 = int(math.floor(phase))
    f = phase - j0
    a = (j0 + L.KNOTS) % L.KNOTS
    b = (j0 + 1 + L.KNOTS) % L.KNOTS
    return (1.0 - f) * S[i, L.DAY_K + a] + f * S[i, L.DAY_K + b]


@njit(cache=True)
def _ng_scale(S, i, vs) -> float:
    """Scale of the Student-t predictive of the normal-gamma prior (variance scale vs applied)."""
    p = max(S[i, L.NG_P], 1e-9)
    a = max(S[i, L.NG_A], 0.5)
    b = max(S[i, L.NG_B], 0.0)
    var = b * (p + 1.0) / (a * p) * vs
    return math.sqrt(max(var, 1e-24))


@njit(cache=True)
def _tail(F, side) -> float:
    """Probability of a value at least as extreme, from its predictive CDF value F."""
    if side < 0:
        p = 2.0 * F
    elif side > 0:
        p = 2.0 * (1.0 - F)
    else:
        p = 2.0 * min(F, 1.0 - F)
    return min(max(p, DBL_MIN), 1.0)


@njit(cache=True)
def _t_tail(z, nu, side) -> float:
    if side < 0:
        return min(max(2.0 * student_t_cdf(z, nu), DBL_MIN), 1.0)
    if side > 0:
        return min(max(2.0 * student_t_sf(z, nu), DBL_MIN), 1.0)
    return min(max(2.0 * student_t_sf(abs(z), nu), DBL_MIN), 1.0)


@njit(cache=True)
def _nb_tail(x, a, b, side) -> float:
    """Mid-p tail of the negative binomial predictive of a gamma(a, b)-Poisson model."""
    r = max(a, 1e-6)
    q = b / (b + 1.0)
    k = math.floor(x + 0.5)
    if k < 0.0:
        k = 0.0
    pmf = math.exp(negbin_logpmf(k, r, q))
    below = negbin_cdf(k, r, q) - 0.5 * pmf  # P(X < k) + P(X = k) / 2
    above = negbin_sf(k, r, q) + 0.5 * pmf
    if side < 0:
        p = 2.0 * below
    elif side > 0:
        p = 2.0 * above
    else:
        p = 2.0 * min(below, above)
    return min(max(p, DBL_MIN), 1.0)


@njit(cache=True)
def _outlier_weight(pv, derate) -> float:
    """Winsorisation weight of an update from its one-tail p-value (ELASTIC_MODEL §2.1)."""
    if pv >= 1e-3:
        return 1.0
    wmin = 0.01 + 0.49 * derate
    if pv <= 1e-5:
        return wmin
    l5 = math.log(1e-5)
    l3 = math.log(1e-3)
    k = -math.log(wmin) / (l5 * (l5 - l3))
    lp = math.log(pv)
    return math.exp(-k * lp * (lp - l3))


@njit(cache=True)
def _age(S, i, dt, decay) -> None:
    if dt <= 0.0:
        return
    alpha = math.exp(-decay * dt)
    S[i, L.NG_P] *= alpha
    a = S[i, L.NG_A]
    if a > 0.0:
        f = min((alpha * a + (1.0 - alpha)) / a, 1.0)
        S[i, L.NG_A] = a * f
        S[i, L.NG_B] *= f
    S[i, L.PO_A] *= alpha
    S[i, L.PO_B] *= alpha
    S[i, L.MB_P] *= alpha
    a = S[i, L.MB_A]
    if a > 0.0:
        f = min((alpha * a + (1.0 - alpha)) / a, 1.0)
        S[i, L.MB_A] = a * f
        S[i, L.MB_B] *= f
    S[i, L.N_EFF] *= alpha
    S[i, L.LW_NORMAL] *= alpha
    S[i, L.LW_POISSON] *= alpha


@njit(cache=True)
def _ng_update(S, i, base, x, w, integer) -> None:
    """Weighted normal-gamma update with one sample; base is the column of m (m, p, a, b follow)."""
    m = S[i, base]
    p = S[i, base + 1]
    if p <= 0.0:
        S[i, base] = x
        S[i, base + 1] = w
        S[i, base + 2] += 0.5 * w
        if integer:
            S[i, base + 3] += w / 24.0
        return
    d = x - m
    S[i, base + 3] += 0.5 * p * w * d * d / (p + w) + (w / 24.0 if integer else 0.0)
    S[i, base] = m + w * d / (p + w)
    S[i, base + 1] = p + w
    S[i, base + 2] += 0.5 * w


@njit(cache=True)
def _mb_feature(S, i) -> float:
    """Geometrically weighted mean of the multi-bucket window (newest weight 1)."""
    n = int(S[i, L.MB_CNT])
    pos = int(S[i, L.MB_POS])
    total = 0.0
    weight = 0.0
    w = 1.0
    for k in range(n):
        j = (pos - 1 - k + L.MB_LEN) % L.MB_LEN
        total += w * S[i, L.MB_R + j]
        weight += w
        w *= _MB_DECAY
    return total / weight if weight > 0.0 else 0.0


@njit(cache=True)
def _push_slot(S, i, slot) -> None:
    cnt = S[i, L.WIN_SLOT_CNT]
    j = int((S[i, L.WIN_SLOT_T] // slot) % L.WIN_LEN)
    S[i, L.WIN + j] = S[i, L.WIN_SLOT_SUM] / cnt if cnt > 0.0 else math.nan
    S[i, L.WIN_FILLED] += 1.0
    S[i, L.WIN_SLOT_SUM] = 0.0
    S[i, L.WIN_SLOT_CNT] = 0.0


@njit(cache=True)
def daily_test(S, i, slot, t_end):
    """F-test of a daily profile on the window's linearly detrended slot means.

    Returns (passed, explained variance fraction, p-value). The window covers the WIN_LEN slots
    before t_end; at least 3 days of data are needed.
    """
    per_day = int(round(DAY / slot))
    if per_day < 4 or abs(per_day * slot - DAY) > 1e-6:
        return False, 0.0, 1.0
    nslots = L.WIN_LEN - (L.WIN_LEN % per_day)
    y = np.empty(nslots)
    ph = np.empty(nslots, dtype=np.int64)
    tt = np.empty(nslots)
    n = 0
    start_slot = int(t_end // slot) - nslots
    for k in range(nslots):
        s = start_slot + k
        v = S[i, L.WIN + (s % L.WIN_LEN)]
        if v == v:
            y[n] = v
            ph[n] = s % per_day
            tt[n] = k
            n += 1
    if n < 3 * per_day or n < 24:
        return False, 0.0, 1.0
    # linear detrend
    mt = 0.0
    my = 0.0
    for k in range(n):
        mt += tt[k]
        my += y[k]
    mt /= n
    my /= n
    sxy = 0.0
    sxx = 0.0
    for k in range(n):
        sxy += (tt[k] - mt) * (y[k] - my)
        sxx += (tt[k] - mt) ** 2
    slope = sxy / sxx if sxx > 0.0 else 0.0
    for k in range(n):
        y[k] = y[k] - my - slope * (tt[k] - mt)
    sums = np.zeros(per_day)
    cnts = np.zeros(per_day)
    for k in range(n):
        sums[ph[k]] += y[k]
        cnts[ph[k]] += 1.0
    groups = 0
    ssb = 0.0
    for g in range(per_day):
        if cnts[g] > 0.0:
            groups += 1
            ssb += sums[g] * sums[g] / cnts[g]
    ssw = 0.0
    for k in range(n):
        d = y[k] - sums[ph[k]] / cnts[ph[k]]
        ssw += d * d
    total = ssb + ssw
    if total <= 0.0 or groups < 4 or n - groups < 2:
        return False, 0.0, 1.0
    d1 = groups - 1.0
    d2 = n - groups * 1.0
    ev = ssb / total
    if ssw <= 0.0:
        return True, 1.0, 0.0
    F = (ssb / d1) / (ssw / d2)
    pval = betainc(0.5 * d2, 0.5 * d1, d2 / (d2 + d1 * F))
    # lag-one-day autocorrelation of the detrended series (periodic, not just clustered)
    num = 0.0
    den0 = 0.0
    den1 = 0.0
    start = start_slot
    for k in range(nslots - per_day):
        v0 = S[i, L.WIN + ((start + k) % L.WIN_LEN)]
        v1 = S[i, L.WIN + ((start + k + per_day) % L.WIN_LEN)]
        if v0 == v0 and v1 == v1:
            a = v0 - my - slope * (k - mt)
            b = v1 - my - slope * (k + per_day - mt)
            num += a * b
            den0 += a * a
            den1 += b * b
    acf = num / math.sqrt(den0 * den1) if den0 > 0.0 and den1 > 0.0 else 0.0
    return (pval < 1e-4 and acf > 0.4 and ev > 0.2), ev, pval


@njit(cache=True)
def _add_daily(S, i, slot, t_end, ev) -> None:
    """Initialise the daily knots from the window profile and reset the residual priors' confidence."""
    per_day = int(round(DAY / slot))
    nslots = L.WIN_LEN - (L.WIN_LEN % per_day)
    sums = np.zeros(per_day)
    cnts = np.zeros(per_day)
    start_slot = int(t_end // slot) - nslots
    total = 0.0
    tc = 0.0
    for k in range(nslots):
        s = start_slot + k
        v = S[i, L.WIN + (s % L.WIN_LEN)]
        if v == v:
            sums[s % per_day] += v
            cnts[s % per_day] += 1.0
            total += v
            tc += 1.0
    mean = total / tc
    prof = np.empty(per_day)
    for g in range(per_day):
        prof[g] = sums[g] / cnts[g] - mean if cnts[g] > 0.0 else 0.0
    for j in range(L.KNOTS):
        centre = (j + 0.5) / L.KNOTS * per_day - 0.5
        g0 = int(math.floor(centre))
        f = centre - g0
        S[i, L.DAY_K + j] = (1.0 - f) * prof[(g0 + per_day) % per_day] + f * prof[(g0 + 1) % per_day]
        S[i, L.DAY_W + j] = 3.0
    S[i, L.DAY_ON] = 1.0
    S[i, L.DAY_EV] = ev
    # The residual spread was inflated by the daily swing: keep its location, shrink its
    # variance by the explained fraction, and hold it with little confidence so it re-learns.
    keep = max(1.0 - ev, 0.05)
    a = S[i, L.NG_A]
    b = S[i, L.NG_B]
    n_keep = min(S[i, L.NG_P], 12.0)
    ratio = b / a if a > 0.0 else 0.0
    S[i, L.NG_P] = n_keep
    S[i, L.NG_A] = 0.5 * n_keep + 0.5
    S[i, L.NG_B] = ratio * keep * S[i, L.NG_A]
    S[i, L.NG_M] = 0.0
    S[i, L.LW_POISSON] = -math.inf
    S[i, L.LW_NORMAL] = 0.0
    S[i, L.MB_CNT] = 0.0
    S[i, L.MB_P] = 0.0
    S[i, L.MB_A] = 1.0
    S[i, L.MB_B] = 0.0


@njit(cache=True)
def update(S, P, idx, t, x, w, vs, events) -> None:
    """Update the models of series idx[k] with sample x[k] of the bucket starting at t.

    w is the update weight (1 normally; less for empty buckets or skip_model_update), vs the count
    variance scale. events[k] receives EVENT_* when this update changed the model's structure.
    """
    span = P[L.P_SPAN]
    decay = P[L.P_DECAY]
    slot = P[L.P_SLOT]
    nmin = P[L.P_N_MIN]
    for k in range(idx.shape[0]):
        i = idx[k]
        xi = x[k]
        wi = w[k]
        events[k] = EVENT_NONE
        if not (xi == xi) or abs(xi) == math.inf or not (wi > 0.0):
            continue
        vsi = vs[k] if vs[k] > 0.0 and vs[k] == vs[k] else 1.0
        if S[i, L.T_FIRST] != S[i, L.T_FIRST]:
            S[i, L.T_FIRST] = t
            S[i, L.T_LAST] = t
            S[i, L.LEVEL] = xi
            S[i, L.CD_LAST_CHANGE] = t
            if slot > 0.0:
                S[i, L.WIN_SLOT_T] = math.floor(t / slot) * slot
                S[i, L.WIN_NEXT_TEST] = t + 3.0 * DAY
        dt = (t - S[i, L.T_LAST]) / span
        if dt > 0.0:
            _age(S, i, dt, decay)
            S[i, L.T_LAST] = t
        if xi != math.floor(xi):
            S[i, L.FLAGS_INT] = 0.0
        if xi < 0.0:
            S[i, L.FLAGS_NONNEG] = 0.0
        integer = S[i, L.FLAGS_INT] > 0.0 if P[L.P_INTEGER] < 0.0 else P[L.P_INTEGER] > 0.0
        pred = S[i, L.LEVEL] + seasonal(S, i, t, span)
        r = xi - pred
        informative = S[i, L.N_EFF] >= nmin
        w_out = 1.0
        w_change = 1.0
        if informative:
            scale = _ng_scale(S, i, vsi)
            nu = 2.0 * max(S[i, L.NG_A], 0.5)
            z = (r - S[i, L.NG_M]) / scale
            F = student_t_cdf(z, nu)
            derate = max(1.0 - (t - S[i, L.T_FIRST]) / WEEK3, 0.0)
            w_out = _outlier_weight(min(F, 1.0 - F), derate)
            # change detection: a sustained run of large errors of one sign is a level shift
            noise = math.sqrt(max(S[i, L.NG_B] / max(S[i, L.NG_A], 0.5), 1e-24) * vsi)
            dev = r - S[i, L.NG_M]
            large = 1.0 if abs(dev) > 3.0 * noise else 0.0
            beta = max(span / (4.0 * max(3600.0, span)), 0.05)
            S[i, L.CD_FRAC] += beta * (large - S[i, L.CD_FRAC])
            sign = 1.0 if dev > 0.0 else -1.0
            if large > 0.0 and (S[i, L.CD_LEN] == 0.0 or sign == S[i, L.CD_SIGN]):
                S[i, L.CD_LEN] += 1.0
                S[i, L.CD_SUM] += dev
                S[i, L.CD_SIGN] = sign
            elif S[i, L.CD_FRAC] < 0.25:
                S[i, L.CD_LEN] = 0.0
                S[i, L.CD_SUM] = 0.0
            if S[i, L.CD_LEN] > 0.0:
                w_change = 0.1
            if S[i, L.CD_LEN] >= P[L.P_MIN_CHANGE] and S[i, L.CD_FRAC] > 0.5:
                shift = S[i, L.CD_SUM] / S[i, L.CD_LEN]
                S[i, L.LEVEL] += shift
                r -= shift
                pred += shift
                S[i, L.CD_LEN] = 0.0
                S[i, L.CD_SUM] = 0.0
                S[i, L.CD_FRAC] = 0.0
                S[i, L.CD_LAST_CHANGE] = t
                S[i, L.MB_CNT] = 0.0
                S[i, L.PO_A] = 0.0
                S[i, L.PO_B] = 0.0
                w_change = 1.0
                w_out = 1.0
                events[k] = EVENT_LEVEL_SHIFT
            # one-of-n evidence: predictive log likelihood of this value under each candidate
            lpdf = math.lgamma(0.5 * (nu + 1.0)) - math.lgamma(0.5 * nu) - 0.5 * math.log(nu * math.pi) \
                - math.log(scale) - 0.5 * (nu + 1.0) * math.log1p(z * z / nu)
            S[i, L.LW_NORMAL] += lpdf
            if integer and S[i, L.FLAGS_NONNEG] > 0.0 and S[i, L.DAY_ON] == 0.0 and S[i, L.PO_B] > 0.0 \
                    and S[i, L.LW_POISSON] > -math.inf:
                q = S[i, L.PO_B] / (S[i, L.PO_B] + 1.0)
                S[i, L.LW_POISSON] += negbin_logpmf(math.floor(xi + 0.5), max(S[i, L.PO_A], 1e-6), q)
            else:
                S[i, L.LW_POISSON] = -math.inf
        weight = wi * w_out * w_change
        # level: running mean early, then exponential smoothing
        n_level = S[i, L.LEVEL_N]
        alpha = max(P[L.P_LEVEL_ALPHA], 1.0 / (n_level + 1.0))
        old_level = S[i, L.LEVEL]
        S[i, L.LEVEL] += min(alpha * weight, 1.0) * (r - (S[i, L.NG_M] if informative else 0.0))
        S[i, L.LEVEL_N] = n_level + wi
        # daily component: share the error with the two nearest knots
        if S[i, L.DAY_ON] > 0.0:
            e = xi - old_level - seasonal(S, i, t, span)
            phase = ((t + 0.5 * span) % DAY) / DAY * L.KNOTS - 0.5
            j0 = int(math.floor(phase))
            f = phase - j0
            cap = 10.0 * DAY / span / L.KNOTS
            for jj, wj in ((j0, 1.0 - f), (j0 + 1, f)):
                j = (jj + L.KNOTS) % L.KNOTS
                c = min(S[i, L.DAY_W + j] + weight * wj, cap)
                S[i, L.DAY_W + j] = c
                if c > 0.0:
                    S[i, L.DAY_K + j] += weight * wj / c * e
            mk = 0.0
            for j in range(L.KNOTS):
                mk += S[i, L.DAY_K + j]
            mk /= L.KNOTS
            for j in range(L.KNOTS):
                S[i, L.DAY_K + j] -= mk
            S[i, L.LEVEL] += mk
        # residual priors
        _ng_update(S, i, L.NG_M, r / math.sqrt(vsi), weight, integer)
        if integer and S[i, L.FLAGS_NONNEG] > 0.0:
            S[i, L.PO_A] += weight * xi
            S[i, L.PO_B] += weight
        S[i, L.N_EFF] += wi
        # variance floor relative to the level (MINIMUM_COEFFICIENT_OF_VARIATION)
        floor = (1e-4 * max(abs(S[i, L.LEVEL]), 1e-8)) ** 2
        if S[i, L.NG_B] < floor * S[i, L.NG_A]:
            S[i, L.NG_B] = floor * S[i, L.NG_A]
        # multi-bucket window of scaled residuals and its own prior
        pos = int(S[i, L.MB_POS])
        S[i, L.MB_R + pos] = r / math.sqrt(vsi)
        S[i, L.MB_POS] = (pos + 1) % L.MB_LEN
        S[i, L.MB_CNT] = min(S[i, L.MB_CNT] + 1.0, L.MB_LEN)
        if S[i, L.MB_CNT] >= 9.0:
            _ng_update(S, i, L.MB_M, _mb_feature(S, i), wi * w_change, False)
            mfloor = (1e-4 * max(abs(S[i, L.LEVEL]), 1e-8)) ** 2
            if S[i, L.MB_B] < mfloor * S[i, L.MB_A]:
                S[i, L.MB_B] = mfloor * S[i, L.MB_A]
        # periodicity test window
        if slot > 0.0 and P[L.P_SEASONAL] > 0.0:
            while t >= S[i, L.WIN_SLOT_T] + slot:
                _push_slot(S, i, slot)
                S[i, L.WIN_SLOT_T] += slot
                if S[i, L.WIN_SLOT_T] + slot <= t - L.WIN_LEN * slot:
                    S[i, L.WIN_SLOT_T] = math.floor(t / slot) * slot - L.WIN_LEN * slot
            S[i, L.WIN_SLOT_SUM] += xi
            S[i, L.WIN_SLOT_CNT] += 1.0
            if S[i, L.DAY_ON] == 0.0 and t >= S[i, L.WIN_NEXT_TEST]:
                S[i, L.WIN_NEXT_TEST] = t + DAY
                passed, ev, _pv = daily_test(S, i, slot, S[i, L.WIN_SLOT_T])
                if passed:
                    _add_daily(S, i, slot, S[i, L.WIN_SLOT_T], ev)
                    events[k] = EVENT_DAILY_ADDED


@njit(cache=True)
def _joint2(p1, p2, rho) -> float:
    """Joint probability of two less likely samples with correlation rho (§3.3)."""
    z1 = -norm_ppf(max(p1, DBL_MIN) / 2.0)
    z2 = -norm_ppf(max(p2, DBL_MIN) / 2.0)
    s = z1 + z2
    q = z1 * z1 + z2 * z2
    m = (q - rho * s * s / (2.0 * rho + 1.0 - rho)) / (1.0 - rho)
    return min(max(math.exp(-0.5 * max(m, 0.0)), DBL_MIN), 1.0)


@njit(cache=True)
def score(S, P, idx, t, x, vs, use_multi, prob, p_single, p_multi, mbi, typical, lower, upper) -> None:
    """Probability of x[k] for series idx[k] at bucket t (no state change), with typical and 95 % bounds."""
    span = P[L.P_SPAN]
    side = int(P[L.P_SIDE])
    nmin = P[L.P_N_MIN]
    nonneg = P[L.P_NONNEG] > 0.0
    z975 = 1.959963984540054
    for k in range(idx.shape[0]):
        i = idx[k]
        xi = x[k]
        vsi = vs[k] if vs[k] > 0.0 and vs[k] == vs[k] else 1.0
        pred = S[i, L.LEVEL] + seasonal(S, i, t, span)
        typ = pred + S[i, L.NG_M] * math.sqrt(vsi)
        if not (xi == xi) or S[i, L.N_EFF] < nmin or S[i, L.T_FIRST] != S[i, L.T_FIRST]:
            prob[k] = 1.0
            p_single[k] = 1.0
            p_multi[k] = 1.0
            mbi[k] = 0.0
            typical[k] = typ if typ == typ else (xi if xi == xi else 0.0)
            lower[k] = typical[k]
            upper[k] = typical[k]
            continue
        scale = _ng_scale(S, i, vsi)
        nu = 2.0 * max(S[i, L.NG_A], 0.5)
        z = (xi - typ) / scale
        pn = _t_tail(z, nu, side)
        ps = pn
        # one-of-n mixture with the Poisson candidate
        lwp = S[i, L.LW_POISSON]
        if lwp > -math.inf and S[i, L.PO_B] > 0.0 and S[i, L.DAY_ON] == 0.0:
            lwn = S[i, L.LW_NORMAL]
            mx = max(lwn, lwp)
            wn = math.exp(lwn - mx)
            wp = math.exp(lwp - mx)
            pp = _nb_tail(xi, S[i, L.PO_A], S[i, L.PO_B], side)
            ps = (wn * pn + wp * pp) / (wn + wp)
            if wp > wn:
                typ = S[i, L.PO_A] / S[i, L.PO_B]
        ps = min(max(ps, DBL_MIN), 1.0)
        pm = 1.0
        if use_multi and P[L.P_MULTI] > 0.0 and S[i, L.MB_CNT] >= 9.0 and S[i, L.MB_P] > 0.0:
            feat = _mb_feature(S, i)
            mp = max(S[i, L.MB_P], 1e-9)
            ma = max(S[i, L.MB_A], 0.5)
            mvar = max(S[i, L.MB_B], 0.0) * (mp + 1.0) / (ma * mp)
            mscale = math.sqrt(max(mvar, 1e-24))
            pm = _t_tail((feat - S[i, L.MB_M]) / mscale, 2.0 * ma, side)
        p = _joint2(ps, pm, _MB_RHO) if pm < 1.0 else ps
        prob[k] = min(max(p, DBL_MIN), 1.0)
        p_single[k] = ps
        p_multi[k] = pm
        ls = math.log(max(ps, DBL_MIN))
        lm = math.log(max(pm, DBL_MIN))
        lo = min(ls, lm)
        hi = min(max(ls, lm), -0.001)
        impact = 5.0 * lo / hi / math.log(1000.0) * (ls - lm)
        impact = min(max(impact, -5.0), 5.0)
        mbi[k] = math.floor(impact * 100.0) / 100.0
        half = student_t_ppf(0.975, nu) * scale if nu < 1e6 else z975 * scale
        typical[k] = max(typ, 0.0) if nonneg else typ
        lo_b = typ - half
        up_b = typ + half
        lower[k] = max(lo_b, 0.0) if nonneg else lo_b
        upper[k] = max(up_b, 0.0) if nonneg else up_b


@njit(cache=True)
def predict(S, P, idx, t, lower, median, upper, z) -> None:
    """Bounds at percentile with normal quantile z, without changing state (forecasts, model plot)."""
    span = P[L.P_SPAN]
    nonneg = P[L.P_NONNEG] > 0.0
    for k in range(idx.shape[0]):
        i = idx[k]
        typ = S[i, L.LEVEL] + seasonal(S, i, t, span) + S[i, L.NG_M]
        scale = _ng_scale(S, i, 1.0) if S[i, L.NG_P] > 0.0 else 0.0
        nu = 2.0 * max(S[i, L.NG_A], 0.5)
        half = student_t_ppf(0.5 + 0.5 * math.erf(z / math.sqrt(2.0)), nu) * scale if scale > 0.0 else 0.0
        median[k] = max(typ, 0.0) if nonneg else typ
        lower[k] = max(typ - half, 0.0) if nonneg else typ - half
        upper[k] = max(typ + half, 0.0) if nonneg else typ + half
