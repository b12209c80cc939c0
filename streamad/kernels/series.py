"""Per-series time-series model kernels: update with a bucket's value, then its probability.

All state lives in a float64 matrix `S[series, column]` (columns in `layout`), parameters in a
float64 vector `P`; every kernel loops over a batch of series. A series' prediction is the trend
ensemble plus its seasonal components (`trend`, `seasonal`); the residual, scaled by the count and
seasonal variance scales, is modelled by a one-of-n mixture (`priors`, `modes`) of normal,
log-normal, gamma, Poisson (raw non-negative integers, no seasonality) and a 3-mode normal mixture,
weighted by their decayed predictive log likelihoods (ELASTIC_MODEL §2.2). Updates are
down-weighted for outliers (§2.1); a sustained run of large errors of one sign is accepted as a
level shift (§2.6); periodicity tests on an expanding window add and remove seasonal components
(§2.4, `periodicity`). Probabilities use the 50 % baseline band and the 12-bucket multi-bucket
feature (§3.1, §3.2).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamad.kernels import anomaly as AM
from streamad.kernels import layout as L
from streamad.kernels import modes as MM
from streamad.kernels import periodicity as PT
from streamad.kernels import priors as PR
from streamad.kernels import seasonal as SE
from streamad.kernels import trend as TR
from streamad.kernels.special import norm_ppf

DAY = 86400.0
WEEK3 = 21.0 * DAY
# Outliers are damped less early in a job (ELASTIC_MODEL §2.1: w_min = 0.01 + 0.49 derate, the derate
# falling to 0 over 3 weeks). In a series whose outliers recur (`outlier_derate`) it falls no lower
# than this, so a far value keeps a quarter of its early weight (w_min ~ 0.13): recurring spikes and
# jumps of real data widen the residual model instead of scoring as near-impossible at every
# recurrence, and a model that has settled on too thin a tail can still learn that it was wrong.
MIN_DERATE = 0.25
OUT_RATE_MODEL = 2e-3  # rate of one-tailed p < 1e-3 outliers (either side) the residual model predicts
DBL_MIN = 2.2250738585072014e-308
EVENT_NONE, EVENT_LEVEL_SHIFT, EVENT_SEASONAL_ADDED, EVENT_SEASONAL_REMOVED = 0, 1, 2, 3
MB_DECAY = 0.9
MB_RHO = 0.45
MB_MIN = 9.0
MB_CLIP = 4.0  # residual sd at which the multi-bucket window clips a residual
MAX_LOG_BF = 30.0  # a candidate's log weight never falls further than this below the best
JOIN_LOG_BF = 5.0  # log weight below the best at which a candidate joins once it can take part
# change detection starts this long after the first value (ELASTIC_MODEL §2.6: CChangePointTest is
# active only after firstValueTime + 3 days); before, a young model's large errors are its own
# inexperience (no seasonality yet, a thin residual model), not a change of the series
CHANGE_START = 3.0 * DAY
Z50 = 0.6744897501960817  # half-width of the 50 % normal interval
EP_OPEN = 0.1  # an anomaly episode is open while the bucket probability stays below this (§3.4)
EP_POWER = 0.5  # weight of log p for an episode bucket that is no more extreme than the episode so far
EP_NEWS = 1.2  # an episode bucket whose -ln p passes this multiple of the episode's most extreme is news
LEV_ERR_BUCKETS = 24.0  # memory, in buckets, of the trend levels' prediction errors that weight them
MAX_ABS = 1e100  # larger magnitudes are not learned (their squares would overflow) and score as extreme


@njit(cache=True)
def init_rows(S, rows) -> None:
    for k in range(rows.shape[0]):
        i = rows[k]
        for c in range(S.shape[1]):
            S[i, c] = 0.0
        S[i, L.T_FIRST] = math.nan
        S[i, L.FLAGS_INT] = 1.0
        S[i, L.FLAGS_NONNEG] = 1.0
        S[i, L.LW + L.C_POISSON] = 0.0
        for j in range(L.WIN_LEN):
            S[i, L.WIN + j] = math.nan
        AM.init(S, i)


@njit(cache=True)
def prediction(S, i, t, span) -> float:
    """Trend plus seasonal components at the middle of the bucket starting at t."""
    return TR.value(S, i) + SE.value(S, i, t, span)


@njit(cache=True)
def _var_floor(S, i) -> float:
    """MINIMUM_COEFFICIENT_OF_VARIATION relative to the level (scaled-residual units)."""
    return (1e-4 * max(abs(TR.value(S, i)), 1e-8)) ** 2


@njit(cache=True)
def _poisson_ok(S, i, integer) -> bool:
    return integer and S[i, L.FLAGS_NONNEG] > 0.0 and not SE.comp_on(S, i, 0) and not SE.comp_on(S, i, 1)


@njit(cache=True)
def candidate_weights(S, i, integer, out) -> None:
    """Normalised one-of-n weights from the log weights; 0 for candidates that cannot take part."""
    best = -math.inf
    for c in range(L.NCAND):
        out[c] = S[i, L.LW + c]
    if not _poisson_ok(S, i, integer) or not (S[i, L.PO_B] > 0.0):
        out[L.C_POISSON] = -math.inf
    if not (S[i, L.GA_N] > 0.0):
        out[L.C_GAMMA] = -math.inf
        out[L.C_LOGNORMAL] = -math.inf
    if MM.n_modes(S, i) < 2:
        out[L.C_MULTIMODAL] = -math.inf
    for c in range(L.NCAND):
        best = max(best, out[c])
    total = 0.0
    for c in range(L.NCAND):
        out[c] = math.exp(out[c] - best) if out[c] > -math.inf else 0.0
        total += out[c]
    for c in range(L.NCAND):
        out[c] /= total


@njit(cache=True)
def mixture_tail(S, i, z, x, vs, side, integer, wts) -> float:
    """One-of-n probability of a value at least as extreme: sum of weight x candidate tail."""
    p = 0.0
    used = 0.0
    for c in range(L.NCAND):
        w = wts[c]
        if w < 1e-4:
            continue
        used += w
        if c == L.C_NORMAL:
            F, G = PR.t_tails((z - S[i, L.NM]) / PR.ng_scale(S, i, L.NM, vs), PR.ng_nu(S, i, L.NM))
        elif c == L.C_LOGNORMAL or c == L.C_GAMMA:
            y = z + S[i, L.OFFSET]
            if not (y > 0.0):
                # outside the skewed candidate's support (its offset was learnt on other data):
                # it cannot judge this value, and the normal candidate judges in its place
                F, G = PR.t_tails((z - S[i, L.NM]) / PR.ng_scale(S, i, L.NM, vs), PR.ng_nu(S, i, L.NM))
            else:
                if c == L.C_LOGNORMAL:
                    F, G = PR.ln_tails(S, i, L.LN, y, vs)
                else:
                    F, G = PR.ga_tails(S, i, L.GA_N, y, vs)
                if F < 0.5:
                    # the short side, towards the support's edge that the offset put just below
                    # the smallest value seen: the skewed fit says nothing about it beyond the
                    # data, and is never allowed to be surer than the normal candidate there
                    Fn, _Gn = PR.t_tails((z - S[i, L.NM]) / PR.ng_scale(S, i, L.NM, vs), PR.ng_nu(S, i, L.NM))
                    F = max(F, Fn)
        elif c == L.C_POISSON:
            F, G = PR.po_tails(S, i, L.PO_A, x)
        else:
            p += w * MM.mm_tail(S, i, z, vs, side, _var_floor(S, i))
            continue
        p += w * PR.tail_p(F, G, side)
    return min(max(p / used, DBL_MIN), 1.0) if used > 0.0 else 1.0


@njit(cache=True)
def _logpdfs(S, i, z, x, integer, var_floor, out) -> None:
    """Predictive log density of scaled residual z under each candidate (-1e300 if not available)."""
    scale = PR.ng_scale(S, i, L.NM, 1.0)
    out[L.C_NORMAL] = PR.t_logpdf((z - S[i, L.NM]) / scale, PR.ng_nu(S, i, L.NM), scale)
    y = z + S[i, L.OFFSET]
    if S[i, L.GA_N] > 0.0:
        out[L.C_LOGNORMAL] = PR.ln_logpdf(S, i, L.LN, y, 1.0)
        out[L.C_GAMMA] = PR.ga_logpdf(S, i, L.GA_N, y, 1.0)
    else:
        out[L.C_LOGNORMAL] = -1e300
        out[L.C_GAMMA] = -1e300
    if _poisson_ok(S, i, integer) and S[i, L.PO_B] > 0.0:
        out[L.C_POISSON] = PR.po_logpmf(S, i, L.PO_A, x)
    else:
        out[L.C_POISSON] = -1e300
    out[L.C_MULTIMODAL] = MM.mm_logpdf(S, i, z, 1.0, var_floor) if MM.n_modes(S, i) > 0 else -1e300


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
def outlier_derate(age, out_rate, shift_left) -> float:
    """The derate of the outlier weights (ELASTIC_MODEL §2.1) of a series `age` seconds after its
    first value, with `out_rate` its rate of outliers (`OUT_RATE`) so far and `shift_left` seconds
    left of the derate after an accepted level shift (<= 0: none).

    Elastic's falls from 1 to 0 over 3 weeks (w_min 0.5 -> 0.01). Ours stops at MIN_DERATE for a
    series whose outliers recur: recurring spikes and jumps must widen its residual model instead of
    scoring as near-impossible at every recurrence. While its outliers are no more frequent than its
    own residual model's tails predict (one-tailed p < 1e-3 on either side: a rate of
    OUT_RATE_MODEL = 2e-3), an outlier is not evidence of heavier tails, and it is damped as Elastic
    damps it."""
    derate = max(1.0 - age / WEEK3, MIN_DERATE if out_rate > OUT_RATE_MODEL else 0.0)
    if shift_left > 0.0:
        derate = max(derate, min(shift_left / (3.0 * DAY), 1.0))
    return derate


@njit(cache=True)
def _age(S, i, dt, decay) -> None:
    if dt <= 0.0:
        return
    alpha = math.exp(-decay * dt)
    PR.ng_age(S, i, L.NM, alpha)
    PR.ng_age(S, i, L.LN, alpha)
    PR.ga_age(S, i, L.GA_N, alpha)
    S[i, L.PO_A] *= alpha
    S[i, L.PO_B] *= alpha
    MM.mm_age(S, i, alpha)
    PR.ng_age(S, i, L.MB_M, alpha)
    AM.age(S, i, alpha)
    for c in range(L.NCAND):
        if S[i, L.LW + c] > -math.inf:
            S[i, L.LW + c] *= alpha


@njit(cache=True)
def _set_offset(S, i, z, vs) -> None:
    """Keep y = z + offset positive with a margin; shift the skewed candidates when it moves.

    Non-negative data start at offset = trend, so y is the value itself (minus seasonality) and
    the skewed candidates see the data's own skew, as Elastic's priors see raw values.
    """
    sd = math.sqrt(max(S[i, L.NM + 3] / max(S[i, L.NM + 2], 0.5), _var_floor(S, i), 1e-300))
    if not (S[i, L.GA_N] > 0.0):
        start = 2.0 * sd - S[i, L.NM]
        if S[i, L.FLAGS_NONNEG] > 0.0:
            start = max(TR.value(S, i) / math.sqrt(vs), 0.0)
        S[i, L.OFFSET] = max(start, 0.5 * sd - z, 0.0)
        return
    need = 0.1 * sd - z
    if need > S[i, L.OFFSET]:
        delta = need + 0.5 * sd - S[i, L.OFFSET]
        mean, var = PR.ln_moments(S, i, L.LN)
        PR.ln_set_moments(S, i, L.LN, mean + delta, var, S[i, L.LN + 1])
        PR.ga_shift(S, i, L.GA_N, delta)
        S[i, L.OFFSET] += delta


@njit(cache=True)
def _reset_residuals(S, i, keep_fraction, t) -> None:
    """After a seasonal component is added or removed: refit the residual model with little
    confidence from the normal candidate's moments (ELASTIC_MODEL §2.1 step 6)."""
    keep = max(keep_fraction, 0.05)
    a = S[i, L.NM + 2]
    ratio = S[i, L.NM + 3] / a if a > 0.0 else 0.0
    n = min(S[i, L.NM + 1], 12.0)
    var = max(ratio * keep, 1e-300)
    S[i, L.NM] = 0.0
    S[i, L.NM + 1] = n
    S[i, L.NM + 2] = 0.5 * n + 0.5
    S[i, L.NM + 3] = var * S[i, L.NM + 2]
    sd = math.sqrt(var)
    S[i, L.OFFSET] = 3.0 * sd
    PR.ln_set_moments(S, i, L.LN, 3.0 * sd, var, n)
    k = 9.0
    S[i, L.GA_N] = n
    S[i, L.GA_S] = n * 3.0 * sd
    S[i, L.GA_L] = n * (math.log(3.0 * sd) - 1.0 / (2.0 * k) - 1.0 / (12.0 * k * k))
    for j in range(L.MM_MODES * L.MM_STRIDE):
        S[i, L.MM + j] = 0.0
    S[i, L.MM] = n
    for j in range(4):
        S[i, L.MM + 1 + j] = S[i, L.NM + j]
    S[i, L.PO_A] = 0.0
    S[i, L.PO_B] = 0.0
    for c in range(L.NCAND):
        S[i, L.LW + c] = 0.0
    S[i, L.MB_CNT] = 0.0
    for j in range(4):
        S[i, L.MB_M + j] = 0.0
    S[i, L.DERATE_T] = t + 3.0 * DAY
    S[i, L.CD_LEN] = 0.0
    S[i, L.CD_SUM] = 0.0
    S[i, L.CD_FRAC] = 0.0


@njit(cache=True)
def mb_feature(S, i) -> float:
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
        w *= MB_DECAY
    return total / weight if weight > 0.0 else 0.0


@njit(cache=True)
def mb_feature_with(S, i, z) -> float:
    """`mb_feature` of the window as it will be once z, the newest residual, has joined it."""
    n = min(int(S[i, L.MB_CNT]), L.MB_LEN - 1)
    pos = int(S[i, L.MB_POS])
    total = z
    weight = 1.0
    w = MB_DECAY
    for k in range(n):
        j = (pos - 1 - k + L.MB_LEN) % L.MB_LEN
        total += w * S[i, L.MB_R + j]
        weight += w
        w *= MB_DECAY
    return total / weight


@njit(cache=True)
def mb_spread(S, i) -> float:
    """sqrt(sum w^2) / sum w of the window's geometric weights once the newest residual joins it."""
    n = min(int(S[i, L.MB_CNT]), L.MB_LEN - 1) + 1
    w = 1.0
    s1 = 0.0
    s2 = 0.0
    for _ in range(n):
        s1 += w
        s2 += w * w
        w *= MB_DECAY
    return math.sqrt(s2) / s1


@njit(cache=True)
def mb_clip(S, i, z) -> float:
    """A residual as the multi-bucket window keeps it: within MB_CLIP residual sd of the residual
    mean, so that one spike cannot make the next buckets look anomalous as a run."""
    m = S[i, L.NM]
    half = MB_CLIP * PR.ng_scale(S, i, L.NM, 1.0)
    return min(max(z, m - half), m + half)


@njit(cache=True)
def update(S, P, idx, t, x, w, vs, events, prob, p_over, p_single) -> None:
    """Update the models of series idx[k] with value x[k] of the bucket starting at t.

    w is the update weight (1 normally; less for empty buckets or skip_model_update), vs the count
    variance scale. events[k] receives EVENT_* when this update changed the model's structure.
    prob[k], p_over[k] and p_single[k] are what `score` gave this value (`Scores.probability`,
    `p_overall`, `p_single`; NaN: not scored): they open, extend or close the series' anomaly
    episodes (`episode_step`, `anomaly.step`).
    NaN, infinite or beyond +-1e100 values and non-positive weights leave the series unchanged.
    """
    span = P[L.P_SPAN]
    decay = P[L.P_DECAY]
    base_slot = P[L.P_SLOT]
    nmin = P[L.P_N_MIN]
    wts = np.empty(L.NCAND)
    lps = np.empty(L.NCAND)
    run = 1.0
    for k in range(idx.shape[0]):
        i = idx[k]
        xi = x[k]
        wi = w[k]
        events[k] = EVENT_NONE
        if k == 0 or idx[k - 1] != i:
            # samples of one row in a row (population analysis: one per over value) share one
            # bucket's trend step: the trend learns per bucket, not per sample (`trend_run`)
            run = trend_run(idx, k)
        if not (abs(xi) <= MAX_ABS) or not (wi > 0.0) or wi == math.inf:
            continue
        wi = min(wi, 1.0)
        vcount = vs[k] if vs[k] > 0.0 and vs[k] < math.inf else 1.0
        if p_over[k] < AM.OPEN_P or S[i, L.AM_START] == S[i, L.AM_START]:
            # the anomaly-characteristics model steps on the state that scored this value
            err = math.nan
            if p_over[k] < AM.OPEN_P and p_single[k] < AM.OPEN_P and S[i, L.T_FIRST] == S[i, L.T_FIRST]:
                err = am_error(S, i, t, span, xi, vcount)
            AM.step(S, i, t / span, err, p_single[k], p_over[k], wi)
        if S[i, L.T_FIRST] != S[i, L.T_FIRST]:
            S[i, L.T_FIRST] = t
            S[i, L.T_LAST] = t
            TR.init(S, i, xi)
            if base_slot > 0.0:
                S[i, L.WIN_SLOT_T] = math.floor(t / base_slot) * base_slot
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
        seas = SE.value(S, i, t, span)
        vsi = vcount * SE.var_scale(S, i, t, span)
        pred = TR.value(S, i) + seas
        r = xi - pred
        z = r / math.sqrt(vsi)
        var_floor = _var_floor(S, i) / vsi
        S[i, L.EP_LP] = episode_step(S[i, L.EP_LP], prob[k], z - S[i, L.NM])
        informative = S[i, L.N_EFF] >= nmin
        w_out = 1.0
        w_change = 1.0
        if informative:
            # outlier weight from the one-of-n tail (only when the normal candidate finds it far out)
            sd = PR.ng_scale(S, i, L.NM, 1.0)
            u = (z - S[i, L.NM]) / sd
            derate = outlier_derate(t - S[i, L.T_FIRST], S[i, L.OUT_RATE], S[i, L.DERATE_T] - t)
            pv = 1.0
            if abs(u) > 3.0:
                candidate_weights(S, i, integer, wts)
                pv = 0.5 * mixture_tail(S, i, z, xi, 1.0, 0, integer, wts)
                w_out = _outlier_weight(pv, derate)
            S[i, L.OUT_RATE] += max(span / DAY, 0.002) * ((1.0 if pv < 1e-3 else 0.0) - S[i, L.OUT_RATE])
            # change detection: a sustained run of large errors of one sign is a level shift
            if t - S[i, L.T_FIRST] >= CHANGE_START:
                noise = math.sqrt(max(S[i, L.NM + 3] / max(S[i, L.NM + 2], 0.5), var_floor))
                dev = z - S[i, L.NM]
                large = 1.0 if abs(dev) > 3.0 * noise else 0.0
                beta = max(span / (4.0 * max(3600.0, span)), 0.05)
                S[i, L.CD_FRAC] += beta * (large - S[i, L.CD_FRAC])
                sign = 1.0 if dev > 0.0 else -1.0
                if large > 0.0 and (S[i, L.CD_LEN] == 0.0 or sign == S[i, L.CD_SIGN]):
                    S[i, L.CD_LEN] += 1.0
                    S[i, L.CD_SUM] += dev * math.sqrt(vsi)
                    S[i, L.CD_SIGN] = sign
                elif large > 0.0:
                    # a large error of the other sign ends the run: a level shift is one-signed,
                    # and a run that only ended when the large-error rate fell could never end
                    # while the errors stay large the other way (a shift back after a transient)
                    S[i, L.CD_LEN] = 1.0
                    S[i, L.CD_SUM] = dev * math.sqrt(vsi)
                    S[i, L.CD_SIGN] = sign
                elif S[i, L.CD_FRAC] < 0.25:
                    S[i, L.CD_LEN] = 0.0
                    S[i, L.CD_SUM] = 0.0
                if S[i, L.CD_LEN] > 0.0 and S[i, L.CD_FRAC] > 0.25:
                    w_change = 0.1
                if S[i, L.CD_LEN] >= P[L.P_MIN_CHANGE] and S[i, L.CD_FRAC] > 0.5:
                    shift = S[i, L.CD_SUM] / S[i, L.CD_LEN]
                    TR.shift(S, i, shift)
                    S[i, L.CD_LEN] = 0.0
                    S[i, L.CD_SUM] = 0.0
                    S[i, L.CD_FRAC] = 0.0
                    S[i, L.MB_CNT] = 0.0
                    S[i, L.PO_A] = 0.0
                    S[i, L.PO_B] = 0.0
                    S[i, L.DERATE_T] = t + 3.0 * DAY
                    w_change = 1.0
                    w_out = 1.0
                    events[k] = EVENT_LEVEL_SHIFT
                    pred = TR.value(S, i) + seas
            # one-of-n evidence: predictive log likelihood of this value under each candidate
            _logpdfs(S, i, z, xi, integer, var_floor, lps)
            if not _poisson_ok(S, i, integer):
                S[i, L.LW + L.C_POISSON] = -math.inf
            best = -math.inf
            for c in range(L.NCAND):
                if S[i, L.LW + c] > -math.inf and lps[c] > -1e299:
                    S[i, L.LW + c] += wi * w_out * lps[c]
                    best = max(best, S[i, L.LW + c])
            for c in range(L.NCAND):
                if S[i, L.LW + c] > -math.inf:
                    if lps[c] > -1e299:
                        S[i, L.LW + c] = max(S[i, L.LW + c] - best, -MAX_LOG_BF)
                    else:  # not able to take part yet: joins a little below the best
                        S[i, L.LW + c] = -JOIN_LOG_BF
        weight = wi * w_out * w_change
        # decomposition: the trend follows value - seasonal; each component takes the error
        e = xi - pred
        SE.track_errors(S, i, t, span, e, weight, max(span / (3.0 * DAY), 0.002))
        TR.update(S, i, P, xi - seas, weight / run, 1.0 / LEV_ERR_BUCKETS)
        if SE.comp_on(S, i, 0) or SE.comp_on(S, i, 1):
            d2 = (r / math.sqrt(vcount)) ** 2
            for c in range(L.NCOMP):
                if SE.comp_on(S, i, c):
                    mk = SE.comp_update(S, i, c, t, span, e, weight, d2, wi)
                    TR.shift(S, i, mk)
        # residual priors on the residual after the decomposition update
        r = xi - prediction(S, i, t, span)
        z = r / math.sqrt(vsi)
        extra = (1.0 / 12.0) / vsi if integer else 0.0
        # the multi-bucket window keeps the residual clipped by the model that judged it, before
        # a spike has widened that model (else the spike itself sets its own clip)
        z_mb = mb_clip(S, i, z)
        PR.ng_update(S, i, L.NM, z, weight, extra)
        PR.ng_floor(S, i, L.NM, var_floor)
        if S[i, L.NM + 1] > 0.0 and S[i, L.NM + 3] > 0.0:
            _set_offset(S, i, z, vsi)
            y = z + S[i, L.OFFSET]
            # integer data: the rounding dither enters the skewed candidates too (its variance on
            # the log scale by the delta method), else on near-constant counts their variance
            # collapses and they win the one-of-n with a point mass
            PR.ng_update(S, i, L.LN, math.log(y), weight, extra / (y * y))
            PR.ng_floor(S, i, L.LN, 1e-8)
            PR.ga_update_var(S, i, L.GA_N, y, weight, extra)
        # the mixture is the candidate that must learn the tails the others call outliers, so it
        # takes tail values at full weight (else a real minority mode can never grow)
        MM.mm_update(S, i, z, wi * w_change, extra, var_floor)
        if _poisson_ok(S, i, integer):
            S[i, L.PO_A] += weight * xi
            S[i, L.PO_B] += weight
        S[i, L.N_EFF] += wi
        # multi-bucket window of scaled residuals and its own prior
        pos = int(S[i, L.MB_POS])
        S[i, L.MB_R + pos] = z_mb
        S[i, L.MB_POS] = (pos + 1) % L.MB_LEN
        S[i, L.MB_CNT] = min(S[i, L.MB_CNT] + 1.0, L.MB_LEN)
        if S[i, L.MB_CNT] >= MB_MIN:
            PR.ng_update(S, i, L.MB_M, mb_feature(S, i), wi * w_change, 0.0)
            PR.ng_floor(S, i, L.MB_M, var_floor)
        # periodicity test window
        if base_slot > 0.0 and P[L.P_SEASONAL] > 0.0:
            PT.push(S, i, base_slot, t)
            S[i, L.WIN_SLOT_SUM] += xi
            S[i, L.WIN_SLOT_CNT] += 1.0
            if t >= S[i, L.WIN_NEXT_TEST]:
                S[i, L.WIN_NEXT_TEST] = t + DAY
                before = S[i, L.COMP + 2] + S[i, L.COMP + L.COMP_STRIDE + 2]
                change = PT.run_tests(S, i, base_slot, S[i, L.WIN_SLOT_T], span)
                if change != 0:
                    after = S[i, L.COMP + 2] + S[i, L.COMP + L.COMP_STRIDE + 2]
                    _reset_residuals(S, i, 1.0 - max(after - before, 0.0), t)
                    events[k] = EVENT_SEASONAL_ADDED if change > 0 else EVENT_SEASONAL_REMOVED


@njit(cache=True)
def trend_run(idx, k) -> float:
    """Number of consecutive entries of idx from k on that are the row idx[k].

    A row that takes several samples in one update (a population model: every over value's value
    of the bucket, contiguous in key order) moves its trend by 1/run of each sample's step, so one
    bucket moves it as one sample would (Elastic's trend is a regression on time, whose learn rate
    is per unit of time, not per sample). A series has one sample a bucket: run 1, no change."""
    i = idx[k]
    n = 1
    while k + n < idx.shape[0] and idx[k + n] == i:
        n += 1
    return float(n)


@njit(cache=True)
def episode_step(ep, p, dev) -> float:
    """The episode state after a bucket of probability p and residual error dev.

    An anomaly episode is open while buckets keep p < EP_OPEN (ELASTIC_MODEL §3.4); its state is
    the sign of its errors times its most extreme -ln p so far (0: no episode). p is the
    probability the bucket was reported with (`score`'s, after `episode_power`), so the state is
    the most extreme bucket the episode has reported. A bucket of the other sign starts a new
    episode; NaN p (not scored) leaves the state as it is.
    """
    if p != p:
        return ep
    if not (p < EP_OPEN) or dev == 0.0 or dev != dev:
        return 0.0
    lp = -math.log(max(p, DBL_MIN))
    sign = 1.0 if dev > 0.0 else -1.0
    if ep * sign > 0.0:
        return sign * max(abs(ep), lp)
    return sign * lp


@njit(cache=True)
def episode_power(ep, p, dev) -> float:
    """Weight of log p for a bucket of probability p and error dev given the open episode ep.

    A bucket that continues an anomaly episode already reported (same sign of error) and is not
    clearly more extreme than the episode's most extreme reported bucket (-ln p beyond EP_NEWS
    times the episode's) repeats news already given: its log p counts
    EP_POWER, as Elastic's anomaly model halves log p for an episode like those seen before
    (§3.4). The first bucket of an episode, a clearly more extreme one and one of the other sign
    keep their full weight."""
    if not (ep != 0.0) or not (p < EP_OPEN) or not (ep * dev > 0.0):
        return 1.0
    if -math.log(max(p, DBL_MIN)) > EP_NEWS * abs(ep):
        return 1.0
    return EP_POWER


@njit(cache=True)
def _joint2(p1, p2, rho) -> float:
    """Joint probability of two less likely samples with correlation rho (§3.3), chi2 with 2 dof."""
    z1 = -norm_ppf(max(p1, DBL_MIN) / 2.0)
    z2 = -norm_ppf(max(p2, DBL_MIN) / 2.0)
    s = z1 + z2
    q = z1 * z1 + z2 * z2
    m = (q - rho * s * s / (2.0 * rho + 1.0 - rho)) / (1.0 - rho)
    return min(max(math.exp(-0.5 * max(m, 0.0)), DBL_MIN), 1.0)


@njit(cache=True)
def _residual_median(S, i, wts, vsi, integer) -> float:
    """Weighted median of the one-of-n residual candidates (in value units, Poisson excluded)."""
    med = 0.0
    total = 0.0
    for c in range(L.NCAND):
        w = wts[c]
        if w < 1e-4 or c == L.C_POISSON:
            continue
        if c == L.C_NORMAL:
            m = S[i, L.NM]
        elif c == L.C_LOGNORMAL:
            m = math.exp(min(S[i, L.LN], 700.0)) - S[i, L.OFFSET]
        elif c == L.C_GAMMA:
            k, rate = PR.ga_params(S, i, L.GA_N)
            m = k / rate * (1.0 - 1.0 / (9.0 * k)) ** 3 - S[i, L.OFFSET] if k > 0.2 else S[i, L.GA_S] / S[i, L.GA_N] - S[i, L.OFFSET]
        else:
            m = MM.mm_mean(S, i)
        med += w * m
        total += w
    return med / total * math.sqrt(vsi) if total > 0.0 else 0.0


@njit(cache=True)
def band_residual(S, i, t, span, r, vsi):
    """(residual r less the 50 % baseline band, the residual model's location), value units.

    No residual inside the uncertainty of the seasonal estimate (its knots' counts); the trend's
    uncertainty is left to the residual model."""
    loc = S[i, L.NM] * math.sqrt(vsi)
    n_band = SE.knot_count(S, i, t, span)
    band = Z50 * math.sqrt(PR.ng_var(S, i, L.NM) * vsi / max(n_band, 1.0)) if n_band < math.inf else 0.0
    d = r - loc
    return loc + (d - band if d > band else (d + band if d < -band else 0.0)), loc


@njit(cache=True)
def am_error(S, i, t, span, x, vcount) -> float:
    """Prediction error of x for the anomaly-characteristics model (ELASTIC_MODEL §3.4): the
    band-reduced residual less the residual location, over max(sqrt(seasonal variance scale), 1)."""
    seas_scale = SE.var_scale(S, i, t, span)
    xs = min(max(x, -MAX_ABS), MAX_ABS)
    rb, loc = band_residual(S, i, t, span, xs - prediction(S, i, t, span), vcount * seas_scale)
    return (rb - loc) / max(math.sqrt(seas_scale), 1.0)


@njit(cache=True)
def score(S, P, idx, t, x, vs, use_multi, prob, p_single, p_multi, mbi, typical, lower, upper, p_model,
          p_over) -> None:
    """Probability of x[k] for series idx[k] at bucket t (no state change), with typical and 95 % bounds.

    p_over[k] is the single- and multi-bucket probability combined, before the anomaly-characteristics
    model (`anomaly`) and the stand-in for its repeat discount (`episode_power`); it and p_single[k]
    open, extend and close the anomaly episodes in `update`. p_model[k] is the probability before
    the open anomaly episode discounts a bucket that repeats it (`episode_power`), after the
    anomaly-characteristics model's correction (`anomaly.probability`, as Elastic's normalizers see
    it): what the score quantiles learn."""
    span = P[L.P_SPAN]
    side = int(P[L.P_SIDE])
    nmin = P[L.P_N_MIN]
    nonneg = P[L.P_NONNEG] > 0.0
    wts = np.empty(L.NCAND)
    for k in range(idx.shape[0]):
        i = idx[k]
        xi = x[k]
        vcount = vs[k] if vs[k] > 0.0 and vs[k] < math.inf else 1.0
        seas_scale = SE.var_scale(S, i, t, span)
        vsi = vcount * seas_scale
        if S[i, L.T_FIRST] != S[i, L.T_FIRST]:
            pred = xi if (xi == xi and abs(xi) < math.inf) else 0.0
        else:
            pred = prediction(S, i, t, span)
        integer = S[i, L.FLAGS_INT] > 0.0 if P[L.P_INTEGER] < 0.0 else P[L.P_INTEGER] > 0.0
        candidate_weights(S, i, integer, wts)
        typ = pred + _residual_median(S, i, wts, vsi, integer)
        if wts[L.C_POISSON] > 0.5:
            typ = S[i, L.PO_A] / S[i, L.PO_B]
        if not (typ == typ) or abs(typ) == math.inf:
            typ = 0.0
        scale = PR.ng_scale(S, i, L.NM, vsi)
        half = PR.t_quantile(1.959963984540054, PR.ng_nu(S, i, L.NM)) * scale
        typical[k] = max(typ, 0.0) if nonneg else typ
        lower[k] = max(typ - half, 0.0) if nonneg else typ - half
        upper[k] = max(typ + half, 0.0) if nonneg else typ + half
        if not (xi == xi) or S[i, L.N_EFF] < nmin or S[i, L.T_FIRST] != S[i, L.T_FIRST]:
            prob[k] = 1.0
            p_model[k] = 1.0
            p_over[k] = 1.0
            p_single[k] = 1.0
            p_multi[k] = 1.0
            mbi[k] = 0.0
            continue
        xs = min(max(xi, -MAX_ABS), MAX_ABS)
        # 50 % baseline band
        r, loc = band_residual(S, i, t, span, xs - pred, vsi)
        z = r / math.sqrt(vsi)
        ps = mixture_tail(S, i, z, xs, 1.0, side, integer, wts)
        pm = 1.0
        if use_multi and P[L.P_MULTI] > 0.0 and S[i, L.MB_CNT] >= MB_MIN and S[i, L.MB_M + 1] > 0.0:
            feat = mb_feature_with(S, i, mb_clip(S, i, z))
            # never surer than the single-bucket model allows: with independent residuals of the
            # residual model's spread the window's weighted mean has spread sd * sqrt(sum w^2) /
            # sum w. The feature's own prior learns from calm stretches, and after a jump has
            # widened the residual model it would otherwise call every later bucket of a shift
            # impossible for as long as it takes to learn the new spread
            mscale = max(PR.ng_scale(S, i, L.MB_M, 1.0), mb_spread(S, i) * PR.ng_scale(S, i, L.NM, 1.0))
            F, G = PR.t_tails((feat - S[i, L.MB_M]) / mscale, PR.ng_nu(S, i, L.MB_M))
            # a run is anomalous in this bucket only if this bucket's own error continues it
            if (feat - S[i, L.MB_M]) * (z - S[i, L.NM]) > 0.0:
                pm = PR.tail_p(F, G, side)
        p = _joint2(ps, pm, MB_RHO) if pm < 1.0 else ps
        p_over[k] = min(max(p, DBL_MIN), 1.0)
        if p < AM.OPEN_P:
            # the anomaly-characteristics model: a bucket of an episode like those seen before
            # weighs less (ELASTIC_MODEL §3.4, `anomaly.probability`)
            p, _pa = AM.probability(S, i, t / span, (r - loc) / max(math.sqrt(seas_scale), 1.0), ps, p)
        p_model[k] = min(max(p, DBL_MIN), 1.0)
        ep_w = episode_power(S[i, L.EP_LP], p, xs - pred - loc)
        if ep_w != 1.0:
            p = math.exp(math.log(max(p, DBL_MIN)) * ep_w)
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


@njit(cache=True)
def predict(S, P, idx, times, z, lower, median, upper) -> None:
    """Median and bounds (normal quantile z) of series idx[k] at times[k], without changing state.

    Times after the last update are forecasts: the trend reverts towards its slowest level and
    the spread widens with the horizon (doubling the variance over a week, at most x4).
    """
    span = P[L.P_SPAN]
    nonneg = P[L.P_NONNEG] > 0.0
    wts = np.empty(L.NCAND)
    for k in range(idx.shape[0]):
        i = idx[k]
        t = times[k]
        if S[i, L.T_FIRST] != S[i, L.T_FIRST]:
            median[k] = 0.0
            lower[k] = 0.0
            upper[k] = 0.0
            continue
        h = max(t - S[i, L.T_LAST], 0.0)
        vsi = SE.var_scale(S, i, t, span)
        integer = S[i, L.FLAGS_INT] > 0.0 if P[L.P_INTEGER] < 0.0 else P[L.P_INTEGER] > 0.0
        candidate_weights(S, i, integer, wts)
        typ = TR.forecast(S, i, h) + SE.value(S, i, t, span) + _residual_median(S, i, wts, vsi, integer)
        if wts[L.C_POISSON] > 0.5:
            typ = S[i, L.PO_A] / S[i, L.PO_B]
        grow = min(1.0 + h / (7.0 * DAY), 4.0)
        scale = PR.ng_scale(S, i, L.NM, vsi * grow) if S[i, L.NM + 1] > 0.0 else 0.0
        half = PR.t_quantile(z, PR.ng_nu(S, i, L.NM)) * scale
        median[k] = max(typ, 0.0) if nonneg else typ
        lower[k] = max(typ - half, 0.0) if nonneg else typ - half
        upper[k] = max(typ + half, 0.0) if nonneg else typ + half
