"""Residual prior kernels against slow plain-Python references (random and adversarial input)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamad.kernels import layout as L
from streamad.kernels import priors as PR

RNG = np.random.default_rng(11)


def _row():
    return np.zeros((1, L.NCOLS))


def _ref_ng_batch(xs, ws, extra):
    """Normal-gamma posterior from scratch (p = a = b = 0) by batch weighted moments."""
    W = sum(ws)
    m = sum(w * x for x, w in zip(xs, ws)) / W
    ss = sum(w * (x - m) ** 2 for x, w in zip(xs, ws))
    return m, W, 0.5 * W, 0.5 * ss + 0.5 * W * extra


@pytest.mark.parametrize("case", range(8))
def test_ng_update_matches_batch_posterior(case):
    n = int(RNG.integers(1, 60))
    scale = 10.0 ** RNG.uniform(-6, 8)
    xs = (RNG.standard_t(3, n) * scale + RNG.normal() * 1e3).tolist()
    ws = RNG.uniform(0.01, 1.0, n).tolist()
    if case == 0:
        xs = [5.0] * n  # constant
    extra = 1.0 / 12.0 if case % 2 else 0.0
    S = _row()
    for x, w in zip(xs, ws):
        PR.ng_update(S, 0, L.NM, x, w, extra)
    m, p, a, b = _ref_ng_batch(xs, ws, extra)
    assert S[0, L.NM] == pytest.approx(m, rel=1e-9, abs=1e-9 * scale)
    assert S[0, L.NM + 1] == pytest.approx(p, rel=1e-12)
    assert S[0, L.NM + 2] == pytest.approx(a, rel=1e-12)
    assert S[0, L.NM + 3] == pytest.approx(b, rel=1e-6, abs=1e-12 * scale * scale * n)


def test_ng_update_ignores_bad_weights():
    S = _row()
    PR.ng_update(S, 0, L.NM, 3.0, 1.0, 0.0)
    before = S.copy()
    for w in (0.0, -1.0, math.nan):
        PR.ng_update(S, 0, L.NM, 100.0, w, 0.0)
    assert np.array_equal(S, before)


def test_ng_age_matches_reference():
    for _ in range(50):
        S = _row()
        p, a, b = RNG.uniform(0, 100), RNG.uniform(0.5, 100), RNG.uniform(0, 1e4)
        S[0, L.NM + 1: L.NM + 4] = (p, a, b)
        alpha = RNG.uniform(0.0, 1.0)
        PR.ng_age(S, 0, L.NM, alpha)
        f = min((alpha * a + (1 - alpha)) / a, 1.0)
        assert S[0, L.NM + 1] == pytest.approx(alpha * p)
        assert S[0, L.NM + 2] == pytest.approx(a * f)
        assert S[0, L.NM + 3] == pytest.approx(b * f)
        # aging keeps the variance estimate b/a
        if a > 0:
            assert S[0, L.NM + 3] / S[0, L.NM + 2] == pytest.approx(b / a)


def _ref_t_logpdf(z, nu, scale):
    c = math.gamma((nu + 1) / 2) / (math.gamma(nu / 2) * math.sqrt(nu * math.pi)) if nu < 300 else 1 / math.sqrt(2 * math.pi)
    return math.log(c / scale) - (nu + 1) / 2 * math.log(1 + z * z / nu)


def test_t_logpdf_matches_reference_and_integrates_to_one():
    for nu in (1.0, 2.5, 7.0, 40.0, 250.0):
        for z in (-30.0, -2.0, 0.0, 0.3, 5.0):
            assert PR.t_logpdf(z, nu, 2.0) == pytest.approx(_ref_t_logpdf(z, nu, 2.0), rel=1e-9, abs=1e-9)
        grid = np.linspace(-200, 200, 400001)
        dens = np.exp([PR.t_logpdf(float(g) / 1.5, nu, 1.5) for g in grid[::100]])  # density of x = 1.5 z
        assert np.trapezoid(dens, grid[::100]) == pytest.approx(1.0, abs=2e-2 if nu < 2 else 1e-3)


def test_tail_p_sidedness():
    assert PR.tail_p(0.2, 0.8, 0) == pytest.approx(0.4)
    assert PR.tail_p(0.2, 0.8, -1) == pytest.approx(0.4)
    assert PR.tail_p(0.2, 0.8, 1) == 1.0
    assert PR.tail_p(0.0, 1.0, 0) == 2.2250738585072014e-308
    assert PR.tail_p(math.nan, math.nan, 0) == 1.0


def _ref_gamma_p(a, x):
    """Closed forms: integer a (Poisson sums, each side summed directly) and a = 1/2 (erf)."""
    if a == 0.5:
        return math.erf(math.sqrt(x))
    n = int(a)
    terms = [math.exp(-x + k * math.log(x) - math.lgamma(k + 1)) for k in range(n + 2000)]
    return math.fsum(terms[n:]), math.fsum(terms[:n])


@pytest.mark.parametrize("a", [1.0, 2.0, 5.0, 30.0])
def test_gamma_pq_against_closed_forms(a):
    for x in (1e-8, 0.1, 1.0, a, 2 * a + 3, 60.0, 700.0):
        P, Q = PR.gamma_pq(a, x)
        refP, refQ = _ref_gamma_p(a, x)
        assert P == pytest.approx(refP, rel=1e-9, abs=1e-300)
        if refQ > 1e-300:
            assert Q == pytest.approx(refQ, rel=1e-8)
        assert P + Q == pytest.approx(1.0)


def test_gamma_pq_half_integer_and_adversarial():
    for x in (1e-6, 0.3, 2.0, 9.0):
        assert PR.gamma_pq(0.5, x)[0] == pytest.approx(_ref_gamma_p(0.5, x), rel=1e-9)
    assert PR.gamma_pq(3.0, 0.0) == (0.0, 1.0)
    assert PR.gamma_pq(3.0, -1.0) == (0.0, 1.0)
    assert PR.gamma_pq(3.0, math.inf) == (1.0, 0.0)
    assert PR.gamma_pq(math.nan, 1.0) == (0.0, 1.0)
    P, Q = PR.gamma_pq(1e4, 1e4)
    assert 0.45 < P < 0.55 and P + Q == pytest.approx(1.0)


def _ref_digamma(k):
    acc = 0.0
    while k < 8:
        acc -= 1 / k
        k += 1
    return acc + math.log(k) - 1 / (2 * k) - 1 / (12 * k ** 2) + 1 / (120 * k ** 4) - 1 / (252 * k ** 6)


def test_gamma_shape_estimate_against_ml_equation():
    """ga_params solves log k - digamma(k) = log(mean) - mean(log y) (ML), to ~2 %."""
    for k_true in (0.3, 1.0, 4.0, 25.0, 300.0):
        y = RNG.gamma(k_true, 2.0, 20000)
        S = _row()
        for v in y:
            PR.ga_update(S, 0, L.GA_N, float(v), 1.0)
        k, rate = PR.ga_params(S, 0, L.GA_N)
        s = math.log(np.mean(y)) - np.mean(np.log(y))
        lo, hi = 1e-3, 1e7
        for _ in range(200):  # bisection on the ML equation
            mid = math.sqrt(lo * hi)
            if math.log(mid) - _ref_digamma(mid) > s:
                lo = mid
            else:
                hi = mid
        assert k == pytest.approx(lo, rel=0.02)
        assert k / rate == pytest.approx(np.mean(y), rel=1e-9)


def test_gamma_shift_keeps_mean_consistent():
    S = _row()
    for v in RNG.gamma(3.0, 1.0, 500):
        PR.ga_update(S, 0, L.GA_N, float(v), 1.0)
    mean = S[0, L.GA_S] / S[0, L.GA_N]
    PR.ga_shift(S, 0, L.GA_N, 2.5)
    assert S[0, L.GA_S] / S[0, L.GA_N] == pytest.approx(mean + 2.5)


def test_log_normal_moments_round_trip():
    for mean, var in ((1.0, 0.5), (1e6, 1e12), (3.0, 1e-10), (1e-5, 1e-2), (1e150, 1e299)):
        S = _row()
        PR.ln_set_moments(S, 0, L.LN, mean, var, 10.0)
        m, v = PR.ln_moments(S, 0, L.LN)
        assert m == pytest.approx(mean, rel=1e-3)
        assert np.isfinite(S[0, L.LN:L.LN + 4]).all()
        if var / mean ** 2 > 1e-9:
            assert v == pytest.approx(var, rel=1e-3)


def _ref_negbin_pmf(k, r, q):
    return math.exp(math.lgamma(k + r) - math.lgamma(k + 1) - math.lgamma(r) + r * math.log(q) + k * math.log1p(-q))


def test_poisson_mid_p_tails_against_summation():
    for a, b in ((0.5, 2.0), (30.0, 10.0), (400.0, 100.0), (3.0, 1000.0)):
        S = _row()
        S[0, L.PO_A], S[0, L.PO_B] = a, b
        q = b / (b + 1)
        for x in (0.0, 1.0, 2.0, 3.0, 7.0, 20.0):
            below = sum(_ref_negbin_pmf(k, a, q) for k in range(int(x)))
            pmf = _ref_negbin_pmf(x, a, q)
            F, G = PR.po_tails(S, 0, L.PO_A, x)
            assert F == pytest.approx(below + pmf / 2, rel=1e-7, abs=1e-300)
            assert G == pytest.approx(1 - below - pmf / 2, rel=1e-6, abs=1e-12)
            assert PR.po_logpmf(S, 0, L.PO_A, x) == pytest.approx(math.log(pmf) if pmf > 0 else -math.inf, rel=1e-9)


def test_t_quantile_close_to_bisection():
    from streamad.kernels.special import student_t_cdf

    for nu in (3.0, 5.0, 12.0, 100.0):
        for z in (1.0, 1.959963984540054, 2.5):
            p = 0.5 * (1 + math.erf(z / math.sqrt(2)))
            lo, hi = 0.0, 50.0
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if student_t_cdf(mid, nu) < p else (lo, mid)
            assert PR.t_quantile(z, nu) == pytest.approx(lo, rel=1e-6 if nu < 10 else 2e-3)


def test_gamma_shift_keeps_variance():
    """Shifting the gamma's offset moves its mean and keeps its spread (ML shape k (m'/m)^2)."""
    for k_true, delta in ((3.0, 2.5), (40.0, 60.0), (0.7, 0.3)):
        S = _row()
        for v in RNG.gamma(k_true, 1.0, 2000):
            PR.ga_update(S, 0, L.GA_N, float(v), 1.0)
        k0, rate0 = PR.ga_params(S, 0, L.GA_N)
        var0 = k0 / rate0 ** 2
        PR.ga_shift(S, 0, L.GA_N, delta)
        k1, rate1 = PR.ga_params(S, 0, L.GA_N)
        assert k1 / rate1 == pytest.approx(k0 / rate0 + delta, rel=1e-9)
        assert k1 / rate1 ** 2 == pytest.approx(var0, rel=0.03)


def test_digamma_matches_reference():
    for k in (0.05, 0.5, 1.0, 3.7, 8.0, 50.0, 1e5):
        assert PR.digamma(k) == pytest.approx(_ref_digamma(k), rel=1e-12, abs=1e-12)


def test_gamma_dither_adds_the_known_variance():
    """Constant integer values with the 1/12 rounding dither: the ML gamma has variance ~1/12."""
    S = _row()
    for _ in range(500):
        PR.ga_update_var(S, 0, L.GA_N, 40.0, 1.0, 1.0 / 12.0)
    k, rate = PR.ga_params(S, 0, L.GA_N)
    assert k / rate == pytest.approx(40.0)
    assert k / rate ** 2 == pytest.approx(1.0 / 12.0, rel=0.02)
    T = _row()
    for v in (3.0, 5.0, 8.0):
        PR.ga_update_var(T, 0, L.GA_N, v, 0.5, 0.2)
    assert T[0, L.GA_L] == pytest.approx(sum(0.5 * (math.log(v) - 0.1 / v ** 2) for v in (3.0, 5.0, 8.0)))
