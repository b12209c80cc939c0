"""Multimodal prior, one-of-n and multi-bucket helpers against plain-Python references."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from streamad.kernels import layout as L
from streamad.kernels import modes as MM
from streamad.kernels import priors as PR
from streamad.kernels import series as K
from streamad.kernels.special import student_t_sf

RNG = np.random.default_rng(31)


def _row():
    S = np.zeros((1, L.NCOLS))
    K.init_rows(S, np.array([0], dtype=np.int64))
    return S


def _modes(S):
    out = []
    for j in range(L.MM_MODES):
        c = L.MM + j * L.MM_STRIDE
        if S[0, c] > 0:
            w, m, p, a, b = S[0, c:c + 5]
            out.append((w, m, p, a, b))
    return out


def _ref_t_logpdf(z, nu, scale):
    return (math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi) - math.log(scale)
            - (nu + 1) / 2 * math.log1p(z * z / nu))


def _scale(p, a, b, vs=1.0):
    return math.sqrt(max(b * (p + 1) / (max(a, 0.5) * max(p, 1e-9)) * vs, 1e-300))


def test_mixture_density_and_tail_match_reference():
    S = _row()
    values = np.where(RNG.random(2000) < 0.3, RNG.normal(-20, 1, 2000), RNG.normal(10, 2, 2000))
    for v in values:
        MM.mm_update(S, 0, float(v), 1.0, 0.0, 1e-12)
    modes = _modes(S)
    assert len(modes) == 2
    assert sorted(round(m[1]) for m in modes) == [-20, 10]
    total = sum(m[0] for m in modes)
    assert sorted(m[0] / total for m in modes)[0] == pytest.approx(0.3, abs=0.04)
    for z in (-25.0, -20.0, -5.0, 0.0, 10.0, 40.0):
        terms = [math.log(w / total) + _ref_t_logpdf((z - m) / _scale(p, a, b), 2 * max(a, 0.5), _scale(p, a, b))
                 for w, m, p, a, b in modes]
        top = max(terms)
        ref = top + math.log(sum(math.exp(t - top) for t in terms))
        assert MM.mm_logpdf(S, 0, z, 1.0, 1e-12) == pytest.approx(ref, rel=1e-9)
        ref_p = sum(w / total * min(max(2 * student_t_sf(abs(z - m) / _scale(p, a, b), 2 * max(a, 0.5)), 2.2250738585072014e-308), 1.0)
                    for w, m, p, a, b in modes)
        assert MM.mm_tail(S, 0, z, 1.0, 0, 1e-12) == pytest.approx(ref_p, rel=1e-9)


def test_unimodal_data_stays_one_mode_and_close_modes_merge():
    for data in (RNG.normal(5, 3, 3000), RNG.standard_t(4, 3000), RNG.exponential(2.0, 3000), np.full(500, 2.0)):
        S = _row()
        for v in data:
            MM.mm_update(S, 0, float(v), 1.0, 0.0, 1e-12)
        assert MM.n_modes(S, 0) <= 2  # heavy tails may hold a small tail mode, never a split body
        assert _modes(S)[0][0] > 0.8 * sum(m[0] for m in _modes(S))


def test_far_outliers_open_a_mode_and_mode_count_is_bounded():
    S = _row()
    for v in RNG.normal(0, 1, 500):
        MM.mm_update(S, 0, float(v), 1.0, 0.0, 1e-12)
    for level in (100.0, 300.0, 900.0, 5000.0):
        MM.mm_update(S, 0, level, 1.0, 0.0, 1e-12)
        assert MM.n_modes(S, 0) <= L.MM_MODES
    assert any(abs(m[1] - 5000.0) < 1e-9 for m in _modes(S))
    assert np.isfinite(S[0, L.MM:L.MM + L.MM_MODES * L.MM_STRIDE]).all()


def _ref_outlier_derate(age, out_rate, shift_left):
    """Plain reference: Elastic's derate (1 -> 0 over 3 weeks), floored at MIN_DERATE only while the
    series' outlier rate is above the 2e-3 its residual model predicts; an accepted level shift's
    derate (falling over 3 days) on top."""
    d = 1.0 - age / (21 * 86400.0)
    if out_rate > 2e-3:
        d = max(d, 0.25)
    else:
        d = max(d, 0.0)
    if shift_left > 0.0:
        d = max(d, min(shift_left / (3 * 86400.0), 1.0))
    return d


def test_outlier_derate_floor_only_for_recurring_outliers():
    day = 86400.0
    for age in (0.0, 2 * day, 10 * day, 15.75 * day, 18 * day, 21 * day, 60 * day):
        for rate in (0.0, 1e-3, 2e-3, 2.0001e-3, 0.01, 0.3):
            for left in (-5.0, 0.0, 0.5 * day, 2 * day, 4 * day):
                got = K.outlier_derate(age, rate, left)
                assert got == pytest.approx(_ref_outlier_derate(age, rate, left), rel=1e-12, abs=1e-15)
    # after three weeks: rare outliers are damped as Elastic damps them, recurring ones keep the floor
    assert K._outlier_weight(1e-9, K.outlier_derate(30 * day, 0.0, 0.0)) == pytest.approx(0.01)
    assert K._outlier_weight(1e-9, K.outlier_derate(30 * day, 0.01, 0.0)) == pytest.approx(0.01 + 0.49 * 0.25)


def test_outlier_weight_matches_formula():
    for derate in (0.0, 0.3, 1.0):
        wmin = 0.01 + 0.49 * derate
        k = -math.log(wmin) / (math.log(1e-5) * (math.log(1e-5) - math.log(1e-3)))
        for pv in (0.5, 1e-3, 3e-4, 1e-4, 2e-5, 1e-5, 1e-9, 0.0):
            if pv >= 1e-3:
                ref = 1.0
            elif pv <= 1e-5:
                ref = wmin
            else:
                ref = math.exp(-k * math.log(pv) * (math.log(pv) - math.log(1e-3)))
            assert K._outlier_weight(pv, derate) == pytest.approx(ref, rel=1e-12)


def test_joint_probability_matches_reference():
    nd = NormalDist()
    for p1, p2, rho in ((0.5, 0.5, 0.45), (1e-3, 0.2, 0.45), (1e-10, 1e-12, 0.45), (0.01, 0.01, 0.0), (1e-300, 0.9, 0.45)):
        z = [-nd.inv_cdf(max(p, 1e-300) / 2) for p in (p1, p2)]
        m = (sum(v * v for v in z) - rho * sum(z) ** 2 / (2 * rho + 1 - rho)) / (1 - rho)
        ref = math.exp(-0.5 * max(m, 0.0))  # chi-square survival with 2 dof
        assert K._joint2(p1, p2, rho) == pytest.approx(max(ref, 2.2250738585072014e-308), rel=1e-6)


def test_multi_bucket_feature_is_geometric_mean_of_window():
    S = _row()
    vals = RNG.normal(0, 1, 20)
    for n, v in enumerate(vals):
        pos = int(S[0, L.MB_POS])
        S[0, L.MB_R + pos] = v
        S[0, L.MB_POS] = (pos + 1) % L.MB_LEN
        S[0, L.MB_CNT] = min(S[0, L.MB_CNT] + 1, L.MB_LEN)
        recent = vals[max(0, n - 11): n + 1][::-1]
        w = 0.9 ** np.arange(recent.size)
        assert K.mb_feature(S, 0) == pytest.approx(np.sum(w * recent) / np.sum(w))


def test_multi_bucket_spread_matches_weighted_mean_of_independent_residuals():
    """mb_spread: sd of the window's weighted mean per unit residual sd, newest residual included."""
    S = _row()
    for cnt in range(0, L.MB_LEN + 3):
        S[0, L.MB_CNT] = min(cnt, L.MB_LEN)
        n = min(cnt, L.MB_LEN - 1) + 1
        w = 0.9 ** np.arange(n)
        assert K.mb_spread(S, 0) == pytest.approx(math.sqrt(np.sum(w * w)) / np.sum(w), rel=1e-12)
    rng = np.random.default_rng(3)  # and empirically: the weighted mean of 12 unit normals
    w = 0.9 ** np.arange(L.MB_LEN)
    sims = (rng.normal(size=(20000, L.MB_LEN)) @ w) / w.sum()
    assert np.std(sims) == pytest.approx(K.mb_spread(S, 0), rel=0.03)


def test_candidate_weights_are_a_softmax_over_eligible_candidates():
    S = _row()
    for v in RNG.poisson(3.0, 200):
        PR.ng_update(S, 0, L.NM, float(v), 1.0, 0.0)
        PR.ga_update(S, 0, L.GA_N, float(v) + 1.0, 1.0)
        S[0, L.PO_A] += v
        S[0, L.PO_B] += 1.0
    lw = np.array([-3.0, -1.0, 0.0, -2.0, -0.5])
    S[0, L.LW:L.LW + 5] = lw
    out = np.empty(5)
    K.candidate_weights(S, 0, True, out)
    e = np.exp(lw[:4] - lw[:4].max())  # multimodal has < 2 modes: not eligible
    assert np.allclose(out[:4], e / e.sum()) and out[4] == 0.0
    K.candidate_weights(S, 0, False, out)  # not integer: no Poisson
    e = np.exp(lw[:3] - lw[:3].max())
    assert np.allclose(out[:3], e / e.sum()) and out[3] == 0.0


def test_mixture_tail_is_weighted_sum_of_candidate_tails():
    S = _row()
    for v in RNG.gamma(2.0, 3.0, 400):
        PR.ng_update(S, 0, L.NM, float(v), 1.0, 0.0)
        PR.ng_update(S, 0, L.LN, math.log(v + 1.0), 1.0, 0.0)
        PR.ga_update(S, 0, L.GA_N, float(v) + 1.0, 1.0)
        MM.mm_update(S, 0, float(v), 1.0, 0.0, 1e-12)
    S[0, L.OFFSET] = 1.0
    wts = np.array([0.2, 0.5, 0.3, 0.0, 0.0])
    for z in (0.5, 6.0, 30.0, -3.0):
        y = z + 1.0
        normal = PR.t_tails((z - S[0, L.NM]) / PR.ng_scale(S, 0, L.NM, 1.0), PR.ng_nu(S, 0, L.NM))
        # below the skewed candidates' support (y <= 0) the normal judges in their place; on their
        # short side (below their median) they are never surer than the normal
        def skewed(F, G, normal=normal):
            return (max(F, normal[0]), G) if F < 0.5 else (F, G)

        parts = [normal,
                 skewed(*PR.ln_tails(S, 0, L.LN, y, 1.0)) if y > 0 else normal,
                 skewed(*PR.ga_tails(S, 0, L.GA_N, y, 1.0)) if y > 0 else normal]
        for side in (-1, 0, 1):
            ref = sum(w * PR.tail_p(F, G, side) for w, (F, G) in zip(wts, parts))
            got = K.mixture_tail(S, 0, z, z, 1.0, side, False, wts)
            assert got == pytest.approx(min(max(ref, 2.2250738585072014e-308), 1.0), rel=1e-12)


def test_young_mode_takes_part_with_a_normal_plug_in_predictive():
    """A mode of fewer than SPLIT_MIN_COUNT weight (not the heaviest) is a normal at its own mean and
    sd, with no Student-t tail: it gives recurring values at it their mass and puts no floor under
    the probability of values far from every mode."""
    S = _row()
    c0, c1 = L.MM, L.MM + L.MM_STRIDE
    S[0, c0:c0 + 5] = (200.0, 0.0, 200.0, 100.5, 100.5 * 4.0)  # sd 2
    S[0, c1:c1 + 5] = (1.0, 50.0, 0.1, 0.55, 0.55 * 4.0)  # young: weight 1, sd 2, mean very uncertain
    total = 201.0
    nd = NormalDist(50.0, 2.0)
    for z in (0.0, 3.0, 50.0, 53.0, 80.0, -40.0):
        main = math.log(200 / total) + _ref_t_logpdf(z / _scale(200, 100.5, 402.0), 201.0, _scale(200, 100.5, 402.0))
        young = math.log(1 / total) + math.log(nd.pdf(z)) if abs(z - 50) < 30 else -1e300
        top = max(main, young)
        ref = top + math.log(math.exp(main - top) + (math.exp(young - top) if young > -1e299 else 0.0))
        if abs(z - 50) < 30:
            assert MM.mm_logpdf(S, 0, z, 1.0, 1e-12) == pytest.approx(ref, rel=1e-9)
        ref_p = 200 / total * 2 * student_t_sf(abs(z) / _scale(200, 100.5, 402.0), 201.0) \
            + 1 / total * 2 * NormalDist().cdf(-abs(z - 50.0) / 2.0)
        assert MM.mm_tail(S, 0, z, 1.0, 0, 1e-12) == pytest.approx(max(ref_p, 1e-300), rel=1e-6)
    # 30 sd beyond the young mode the mixture is as small as the main mode alone makes it
    assert MM.mm_tail(S, 0, 110.0, 1.0, 0, 1e-12) < 1e-30


def _ref_episode_step(ep, p, dev, open_p=0.1):
    """Open anomaly episode after a bucket (plain reference): sign x most extreme -ln p, 0 = none."""
    if math.isnan(p):
        return ep
    if not p < open_p or dev == 0 or math.isnan(dev):
        return 0.0
    lp = -math.log(max(p, 2.2250738585072014e-308))
    sign = math.copysign(1.0, dev)
    return sign * max(abs(ep), lp) if ep * sign > 0 else sign * lp


def _ref_episode_power(ep, p, dev, open_p=0.1, power=0.5, news=1.2):
    """Weight of log p: a bucket repeating an open episode (same sign, -ln p not beyond `news` times
    the episode's most extreme) counts `power`."""
    if ep == 0 or math.isnan(ep) or not p < open_p or not ep * dev > 0:
        return 1.0
    return 1.0 if -math.log(max(p, 2.2250738585072014e-308)) > news * abs(ep) else power


def test_episode_state_and_power_match_reference():
    assert (K.EP_OPEN, K.EP_POWER, K.EP_NEWS) == (0.1, 0.5, 1.2)
    rng = np.random.default_rng(17)
    cases = [(0.0, 0.5, 1.0), (0.0, 1e-6, 1.0), (0.0, 1e-6, -1.0), (13.8, 1e-6, 1.0), (13.8, 1e-7, 1.0), (13.8, 1e-8, 1.0),
             (13.8, 1e-5, -1.0), (-13.8, 1e-5, -1.0), (-13.8, 1e-5, 2.0), (5.0, 0.2, 1.0), (5.0, math.nan, 1.0),
             (5.0, 1e-3, 0.0), (5.0, 1e-3, math.nan), (5.0, 0.0, 1.0), (5.0, 1e-320, -1.0), (0.0, 0.1, 1.0)]
    cases += [(float(e), float(p), float(d)) for e, p, d in
              zip(rng.choice([-1.0, 1.0], 300) * rng.exponential(10.0, 300) * (rng.random(300) < 0.7),
                  10.0 ** -rng.exponential(4.0, 300), rng.normal(0, 2, 300))]
    for ep, p, dev in cases:
        got = K.episode_step(ep, p, dev)
        ref = _ref_episode_step(ep, p, dev)
        assert got == pytest.approx(ref, rel=1e-15, abs=0.0) or (got == 0.0 and ref == 0.0)
        assert K.episode_power(ep, p, dev) == _ref_episode_power(ep, p, dev)


def _ref_split(w, left, right, extra_var):
    """The two modes a split makes (plain reference): each takes its sub-cluster's share of the
    mode's weight, its mean, and its variance plus the known within-sample variance extra_var."""
    (nl, ml, vl), (nr, mr, vr) = left, right
    n = nl + nr
    out = []
    for nn, mm, vv in ((nl, ml, vl), (nr, mr, vr)):
        weight = w * nn / n
        a = 0.5 * weight + 0.5
        out.append((weight, mm, weight, a, a * (vv + extra_var)))
    return out


def test_split_modes_keep_the_integer_dither_variance():
    """Integer counts: a split's modes get the dither's 1/12 on top of their values' own variance,
    so that no mode ends up narrower than the rounding (its density at the integers would win the
    one-of-n by the width alone)."""
    for extra in (0.0, 1.0 / 12.0):
        S = _row()
        c = L.MM
        S[0, c:c + 5] = (100.0, 0.5, 100.0, 50.5, 50.5 * 0.3)
        left, right = (80.0, 0.0, 0.001), (20.0, 2.0, 0.002)  # n, mean, variance of each sub-cluster
        S[0, c + 5:c + 11] = (*left, *right)
        assert MM._try_split(S, 0, 0, 1e-12, extra)
        got = sorted(_modes(S), key=lambda m: m[1])
        for g, r in zip(got, _ref_split(100.0, left, right, extra)):
            assert g == pytest.approx(r, rel=1e-12)
    # fed integer counts with the dither, every mode stays at least as wide as the dither
    S = _row()
    for v in np.where(RNG.random(3000) < 0.8, 1, 2 + RNG.poisson(1.0, 3000)):
        MM.mm_update(S, 0, float(v), 1.0, 1.0 / 12.0, 1e-12)
    assert MM.n_modes(S, 0) >= 2
    for _w, _m, _p, a, b in _modes(S):
        assert b / a >= 1.0 / 12.0 * 0.999
