"""Multimodal residual prior: a mixture of up to 3 normal-gamma modes on one state row.

A pragmatic stand-in for Elastic's `CMultimodalPrior` / `CXMeansOnline1d` (ELASTIC_MODEL §2.2):
each mode runs an online 2-means split candidate (left and right sub-clusters) and splits when the
two-cluster fit wins by a BIC margin with at least 12 in each part, each part >= 5 % of the mode
and the parts at least 4 sigma apart (X-means); a value far from every mode (tail p < 1e-5) opens
a new mode; values update the modes by their responsibilities; modes closer than 2 sigma merge;
with no free slot the two closest modes merge first. Mode weights age with the priors, so a mode that stops receiving data
fades. The predictive is the weighted mixture of the modes' Student-t predictives; a young mode (under
12 weight, not the heaviest) enters with a normal plug-in predictive instead, so that it gives
recurring values at it their mass without a heavy tail that would floor every other probability.
"""

from __future__ import annotations

import math

from numba import njit

from streamad.kernels import layout as L
from streamad.kernels.priors import ng_age, ng_nu, ng_scale, ng_update, t_logpdf, t_tails, tail_p

SPAWN_P = 1e-5
MERGE_SIGMAS = 2.0
SPLIT_SIGMAS = 4.0
SPLIT_MIN_COUNT = 12.0
SPLIT_MIN_FRACTION = 0.05
MIN_SHARE = 1e-4
NU_NORMAL = 1e8  # degrees of freedom at which t_tails is the normal tail
LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True)
def _col(j) -> int:
    return L.MM + j * L.MM_STRIDE


@njit(cache=True)
def n_modes(S, i) -> int:
    n = 0
    for j in range(L.MM_MODES):
        if S[i, _col(j)] > 0.0:
            n += 1
    return n


@njit(cache=True)
def _mode_var(S, i, j) -> float:
    c = _col(j) + 1
    return max(S[i, c + 3], 0.0) / max(S[i, c + 2], 0.5)


@njit(cache=True)
def _merge(S, i, j, k) -> None:
    """Merge mode k into mode j (moment matching of the two normal-gamma posteriors)."""
    cj = _col(j)
    ck = _col(k)
    wj = S[i, cj]
    wk = S[i, ck]
    w = wj + wk
    if w > 0.0:
        mj = S[i, cj + 1]
        mk = S[i, ck + 1]
        m = (wj * mj + wk * mk) / w
        vj = _mode_var(S, i, j)
        vk = _mode_var(S, i, k)
        v = (wj * (vj + (mj - m) ** 2) + wk * (vk + (mk - m) ** 2)) / w
        S[i, cj] = w
        S[i, cj + 1] = m
        S[i, cj + 2] = S[i, cj + 2] + S[i, ck + 2]
        S[i, cj + 3] = S[i, cj + 3] + S[i, ck + 3]
        S[i, cj + 4] = v * S[i, cj + 3]
        for q in range(6):
            S[i, cj + 5 + q] = 0.0
    for q in range(L.MM_STRIDE):
        S[i, ck + q] = 0.0


@njit(cache=True)
def _closest_pair(S, i):
    best = math.inf
    bj = -1
    bk = -1
    for j in range(L.MM_MODES):
        if S[i, _col(j)] <= 0.0:
            continue
        for k in range(j + 1, L.MM_MODES):
            if S[i, _col(k)] <= 0.0:
                continue
            s = math.sqrt(max(_mode_var(S, i, j), _mode_var(S, i, k), 1e-300))
            d = abs(S[i, _col(j) + 1] - S[i, _col(k) + 1]) / s
            if d < best:
                best = d
                bj = j
                bk = k
    return bj, bk, best


@njit(cache=True)
def _sub_update(S, i, j, z, q, var_floor) -> None:
    """Online 2-means inside mode j: z joins the nearer sub-cluster (weighted Welford)."""
    c = _col(j) + 5
    if S[i, c] <= 0.0:
        side = 0
    elif S[i, c + 3] <= 0.0:
        side = 3 if z != S[i, c + 1] else 0
    else:
        side = 0 if abs(z - S[i, c + 1]) <= abs(z - S[i, c + 4]) else 3
    n0 = S[i, c + side]
    n = n0 + q
    m0 = S[i, c + side + 1] if n0 > 0.0 else z
    m = m0 + q / n * (z - m0)
    v = (S[i, c + side + 2] * n0 + q * (z - m0) * (z - m)) / n
    S[i, c + side] = n
    S[i, c + side + 1] = m
    S[i, c + side + 2] = max(v, var_floor)


@njit(cache=True)
def _try_split(S, i, j, var_floor, extra_var) -> bool:
    """Split mode j into its two sub-clusters when they are clearly separate (BIC, distance).

    The sub-clusters' variances are those of the values themselves; the new modes also get the
    known within-sample variance extra_var (integer data: the rounding dither, as every mode
    update adds it), else a split leaves modes narrower than the dither whose densities at the
    integers beat every other candidate in the one-of-n."""
    c = _col(j) + 5
    nl = S[i, c]
    nr = S[i, c + 3]
    if nl < SPLIT_MIN_COUNT or nr < SPLIT_MIN_COUNT:
        return False
    n = nl + nr
    if min(nl, nr) < SPLIT_MIN_FRACTION * n:
        return False
    ml = S[i, c + 1]
    mr = S[i, c + 4]
    vl = max(S[i, c + 2], var_floor, 1e-300)
    vr = max(S[i, c + 5], var_floor, 1e-300)
    if abs(mr - ml) < SPLIT_SIGMAS * math.sqrt(max(vl, vr)):
        return False
    m = (nl * ml + nr * mr) / n
    v1 = (nl * (vl + (ml - m) ** 2) + nr * (vr + (mr - m) ** 2)) / n
    gain = 0.5 * n * math.log(v1) - 0.5 * nl * math.log(vl) - 0.5 * nr * math.log(vr) \
        + nl * math.log(nl / n) + nr * math.log(nr / n)
    if gain < 3.0 * math.log(n):
        return False
    free = -1
    for k in range(L.MM_MODES):
        if S[i, _col(k)] <= 0.0:
            free = k
            break
    if free < 0:
        return False
    w = S[i, _col(j)]
    for k, nn, mm, vv in ((j, nl, ml, vl), (free, nr, mr, vr)):
        ck = _col(k)
        S[i, ck] = w * nn / n
        S[i, ck + 1] = mm
        S[i, ck + 2] = S[i, ck]
        S[i, ck + 3] = 0.5 * S[i, ck] + 0.5
        S[i, ck + 4] = S[i, ck + 3] * (vv + extra_var)
        for q in range(6):
            S[i, ck + 5 + q] = 0.0
    return True


@njit(cache=True)
def mm_age(S, i, alpha) -> None:
    for j in range(L.MM_MODES):
        c = _col(j)
        if S[i, c] > 0.0:
            S[i, c] *= alpha
            ng_age(S, i, c + 1, alpha)
            S[i, c + 5] *= alpha
            S[i, c + 8] *= alpha


@njit(cache=True)
def _young(S, i, j, wmax) -> bool:
    """A mode is young until it has SPLIT_MIN_COUNT weight (unless it is the heaviest).

    A young mode, opened by one or a few far values, takes part with a normal (not Student-t)
    predictive: with nu ~ 2 its Cauchy-like tail would put a floor of about its share under the
    probability of every later value, however extreme and on either side (Elastic's
    CXMeansOnline1d only makes modes of >= 12 values), while a recurring value at the young
    mode is still given the mass the mode has earned.
    """
    w = S[i, _col(j)]
    return w < SPLIT_MIN_COUNT and w < wmax


@njit(cache=True)
def _weights(S, i):
    total = 0.0
    wmax = 0.0
    for j in range(L.MM_MODES):
        w = max(S[i, _col(j)], 0.0)
        total += w
        wmax = max(wmax, w)
    return total, wmax


@njit(cache=True)
def _mode_scale(S, i, j, vs, var_floor, young) -> float:
    """Predictive scale of mode j; a young mode's is its plug-in sd (no spread for the few values'
    uncertain mean, which would make it as wide as the distance it was opened at)."""
    if young:
        return math.sqrt(max(_mode_var(S, i, j), var_floor, 1e-300) * vs)
    return max(ng_scale(S, i, _col(j) + 1, vs), math.sqrt(var_floor * vs))


@njit(cache=True)
def _mode_logpdf(S, i, j, z, vs, var_floor, young) -> float:
    c = _col(j)
    scale = _mode_scale(S, i, j, vs, var_floor, young)
    u = (z - S[i, c + 1]) / scale
    if young:
        return -0.5 * u * u - math.log(scale) - 0.5 * LOG_2PI
    return t_logpdf(u, ng_nu(S, i, c + 1), scale)


@njit(cache=True)
def mm_logpdf(S, i, z, vs, var_floor) -> float:
    total, wmax = _weights(S, i)
    if not (total > 0.0):
        return -1e300
    best = -1e300
    lps = [0.0, 0.0, 0.0]
    for j in range(L.MM_MODES):
        c = _col(j)
        if S[i, c] > 0.0:
            lp = math.log(S[i, c] / total) + _mode_logpdf(S, i, j, z, vs, var_floor, _young(S, i, j, wmax))
        else:
            lp = -1e300
        lps[j] = lp
        best = max(best, lp)
    acc = 0.0
    for j in range(L.MM_MODES):
        acc += math.exp(lps[j] - best)
    return best + math.log(acc)


@njit(cache=True)
def mm_tail(S, i, z, vs, side, var_floor) -> float:
    """Weighted probability of a value at least as extreme, summed over the modes."""
    total, wmax = _weights(S, i)
    if not (total > 0.0):
        return 1.0
    p = 0.0
    for j in range(L.MM_MODES):
        c = _col(j)
        # a mode that has all but aged away (a share below MIN_SHARE) takes no part
        if S[i, c] > MIN_SHARE * total:
            young = _young(S, i, j, wmax)
            scale = _mode_scale(S, i, j, vs, var_floor, young)
            nu = NU_NORMAL if young else ng_nu(S, i, c + 1)
            F, G = t_tails((z - S[i, c + 1]) / scale, nu)
            p += S[i, c] / total * tail_p(F, G, side)
    return p


@njit(cache=True)
def mm_update(S, i, z, w, extra_var, var_floor) -> None:
    """Add a scaled residual z with weight w: open a mode when z is far from all, else share it."""
    if not (w > 0.0):
        return
    total = 0.0
    for j in range(L.MM_MODES):
        total += max(S[i, _col(j)], 0.0)
    if not (total > 0.0):
        c = _col(0)
        S[i, c] = w
        ng_update(S, i, c + 1, z, w, extra_var)
        _sub_update(S, i, 0, z, w, var_floor)
        return
    # responsibilities and the largest tail probability
    lps = [0.0, 0.0, 0.0]
    best = -1e300
    pmax = 0.0
    near = 0
    for j in range(L.MM_MODES):
        c = _col(j)
        if S[i, c] > 0.0:
            scale = max(ng_scale(S, i, c + 1, 1.0), math.sqrt(var_floor))
            nu = ng_nu(S, i, c + 1)
            u = (z - S[i, c + 1]) / scale
            lps[j] = math.log(S[i, c] / total) + t_logpdf(u, nu, scale)
            F, G = t_tails(u, nu)
            pj = 2.0 * min(F, G)
            if pj > pmax:
                pmax = pj
                near = j
        else:
            lps[j] = -1e300
        best = max(best, lps[j])
    if pmax < SPAWN_P and S[i, _col(near) + 3] > 1.0:
        free = -1
        for j in range(L.MM_MODES):
            if S[i, _col(j)] <= 0.0:
                free = j
                break
        if free < 0:
            bj, bk, _d = _closest_pair(S, i)
            _merge(S, i, bj, bk)
            free = bk
        c = _col(free)
        var_near = max(_mode_var(S, i, near), var_floor)
        S[i, c] = w
        S[i, c + 1] = z
        S[i, c + 2] = w
        S[i, c + 3] = 0.5 * w + 0.5
        S[i, c + 4] = S[i, c + 3] * var_near
        for q in range(6):
            S[i, c + 5 + q] = 0.0
        return
    acc = 0.0
    for j in range(L.MM_MODES):
        lps[j] = math.exp(lps[j] - best) if lps[j] > -1e299 else 0.0
        acc += lps[j]
    for j in range(L.MM_MODES):
        c = _col(j)
        r = lps[j] / acc
        if S[i, c] > 0.0 and r > 1e-6:
            S[i, c] += w * r
            ng_update(S, i, c + 1, z, w * r, extra_var)
            _sub_update(S, i, j, z, w * r, var_floor)
    for j in range(L.MM_MODES):
        if S[i, _col(j)] > 0.0 and _try_split(S, i, j, var_floor, extra_var):
            return
    # merge modes that have come together
    if n_modes(S, i) > 1:
        bj, bk, d = _closest_pair(S, i)
        if d < MERGE_SIGMAS:
            _merge(S, i, bj, bk)


@njit(cache=True)
def mm_mean(S, i) -> float:
    total = 0.0
    m = 0.0
    for j in range(L.MM_MODES):
        c = _col(j)
        if S[i, c] > 0.0:
            total += S[i, c]
            m += S[i, c] * S[i, c + 1]
    return m / total if total > 0.0 else 0.0


@njit(cache=True)
def bic_penalty(S, rows, counts, max_log_bf) -> None:
    """Elastic's BIC term for the mixture's extra parameters, once per bucket (ELASTIC_MODEL §2.2).

    COneOfNPrior weighs each candidate by 2 log L - k ln n per update with the n samples of that
    update; the mixture's k is its number of modes - 1, the single-distribution candidates' 0. A
    series has one sample a bucket (ln 1 = 0: no penalty), a population model has one per over
    value: there the mixture pays 0.5 (modes - 1) ln n in log weight each bucket, which it must earn
    back in likelihood. rows[k] took counts[k] samples this bucket; log weights stay relative to
    the best and at most max_log_bf below it, as the one-of-n update keeps them.
    """
    cm = L.LW + L.C_MULTIMODAL
    for k in range(rows.shape[0]):
        i = rows[k]
        n = counts[k]
        m = n_modes(S, i)
        if not (n > 1.0) or m < 2 or not (S[i, cm] > -math.inf):
            continue
        S[i, cm] -= 0.5 * (m - 1.0) * math.log(n)
        best = -math.inf
        for c in range(L.NCAND):
            best = max(best, S[i, L.LW + c])
        for c in range(L.NCAND):
            if S[i, L.LW + c] > -math.inf:
                S[i, L.LW + c] = max(S[i, L.LW + c] - best, -max_log_bf)
