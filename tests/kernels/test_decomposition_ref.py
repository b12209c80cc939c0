"""Trend, seasonal and periodicity kernels against slow plain-Python references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamad.kernels import layout as L
from streamad.kernels import periodicity as PT
from streamad.kernels import seasonal as SE
from streamad.kernels import series as K
from streamad.kernels import trend as TR
from streamad.kernels.special import betainc

RNG = np.random.default_rng(21)
DAY = 86400.0


def _row():
    S = np.zeros((1, L.NCOLS))
    K.init_rows(S, np.array([0], dtype=np.int64))
    return S


# ------------------------------------------------------------------ seasonal components
def _ref_comp_value(knots, period, t, span):
    ph = ((t + 0.5 * span) % period) / period * 36 - 0.5
    j0 = math.floor(ph)
    f = ph - j0
    y = [knots[(j0 + d) % 36] for d in (-1, 0, 1, 2)]
    # Catmull-Rom written as its basis polynomials
    return (y[0] * (-f + 2 * f * f - f ** 3) + y[1] * (2 - 5 * f * f + 3 * f ** 3)
            + y[2] * (f + 4 * f * f - 3 * f ** 3) + y[3] * (-f * f + f ** 3)) / 2


def test_component_value_is_catmull_rom_of_the_knots():
    for period in (DAY, 7 * DAY, 12 * 3600.0):
        S = _row()
        prof = RNG.normal(0, 5, 36)
        SE.comp_init(S, 0, 0, period, prof, 36, 0.5, 1.0, 0.0)
        knots = S[0, L.SEAS:L.SEAS + 36].copy()
        assert abs(knots.mean()) < 1e-12  # identifiable: zero-mean knots
        assert np.allclose(knots, prof - prof.mean())
        for t in RNG.uniform(-1e9, 2e9, 40).tolist() + [0.0, period - 1.0]:
            assert SE.comp_value(S, 0, 0, t, 300.0) == pytest.approx(_ref_comp_value(knots, period, t, 300.0), abs=1e-9)
        assert SE.comp_value(S, 0, 1, 0.0, 300.0) == 0.0  # component 1 off


def test_component_init_interpolates_coarse_profiles():
    S = _row()
    prof = np.array([0.0, 10.0, 20.0, 10.0])  # 4 slots of 6 h
    SE.comp_init(S, 0, 0, DAY, prof, 4, 0.5, 1.0, 0.0)
    knots = S[0, L.SEAS:L.SEAS + 36]
    centres = (np.arange(36) + 0.5) / 36 * 4 - 0.5
    ref = np.interp(centres, np.arange(-1, 6), np.r_[prof[-1], prof, prof[:2]])
    assert np.allclose(knots, ref - ref.mean())


def test_component_update_matches_reference_and_stays_zero_mean():
    S = _row()
    SE.comp_init(S, 0, 0, DAY, RNG.normal(0, 1, 24), 24, 0.5, 1.0, 0.0)
    span = 900.0
    ref_k = S[0, L.SEAS:L.SEAS + 36].copy()
    ref_c = S[0, L.SEAS + 36:L.SEAS + 72].copy()
    ref_v = S[0, L.SEAS + 72:L.SEAS + 108].copy()
    cap = max(10 * DAY / span / 36, 4.0)
    for _ in range(300):
        t = float(RNG.integers(0, 10 ** 6)) * span
        e, w, d2 = RNG.normal(0, 3), RNG.uniform(0, 1), RNG.exponential()
        mk = SE.comp_update(S, 0, 0, t, span, e, w, d2, w)
        ph = ((t + 0.5 * span) % DAY) / DAY * 36 - 0.5
        j0 = math.floor(ph)
        f = ph - j0
        for jj, wj in ((j0, 1 - f), (j0 + 1, f)):
            j = jj % 36
            c = min(ref_c[j] + w * wj, cap)
            ref_c[j] = c
            ref_k[j] += w * wj / c * e
            ref_v[j] += min(w * wj / c, 1.0) * (d2 - ref_v[j])
        assert mk == pytest.approx(ref_k.mean(), abs=1e-12)
        ref_k -= ref_k.mean()
    assert np.allclose(S[0, L.SEAS:L.SEAS + 36], ref_k)
    assert np.allclose(S[0, L.SEAS + 36:L.SEAS + 72], ref_c)
    assert np.allclose(S[0, L.SEAS + 72:L.SEAS + 108], ref_v)
    # variance scale: ratio of the interpolated knot variance to the mean, clamped to [0.4, 25]
    for t in RNG.uniform(0, DAY, 20):
        ph = ((t + 450) % DAY) / DAY * 36 - 0.5
        j0 = math.floor(ph)
        f = ph - j0
        v = (1 - f) * ref_v[j0 % 36] + f * ref_v[(j0 + 1) % 36]
        assert SE.var_scale(S, 0, float(t), span) == pytest.approx(min(max(v / ref_v.mean(), 0.4), 25.0))


# ------------------------------------------------------------------ trend ensemble
def test_trend_update_and_prediction_match_reference():
    from streamad.models import ModelParams

    P = ModelParams(bucket_span=600).vector()
    S = _row()
    TR.init(S, 0, 10.0)
    lev = [10.0] * 4
    err = [0.0] * 4
    n = 0.0
    for _ in range(500):
        x, w = RNG.normal(10, 2) + (5 if RNG.random() < 0.01 else 0), RNG.uniform(0.01, 1)
        TR.update(S, 0, P, x, w, 0.05)
        for k in range(4):
            e = x - lev[k]
            if n >= 1:
                err[k] += 0.05 * min(w, 1) * (e * e - err[k])
            lev[k] += min(max(P[L.P_LEV_ALPHA + k], 1 / (n + 1)) * w, 1) * e
        n += w
    inv = [1 / max(e, max(err) * 1e-6) for e in err]
    ref = sum(i * v for i, v in zip(inv, lev)) / sum(inv)
    assert np.allclose(S[0, L.LEV:L.LEV + 4], lev)
    assert TR.value(S, 0) == pytest.approx(ref)
    # mean reversion: far forecasts go to the slowest level, the next step is the prediction
    assert TR.forecast(S, 0, 0.0) == pytest.approx(ref)
    assert TR.forecast(S, 0, 1e9) == pytest.approx(lev[3])


# ------------------------------------------------------------------ periodicity window and tests
def _ref_anova(y, start, per):
    ok = ~np.isnan(y)
    k = np.arange(y.size)[ok]
    v = y[ok]
    a, b = np.polyfit(k, v, 1)
    v = v - (a * k + b)
    g = (start + k) % per
    means = np.array([v[g == q].mean() if np.any(g == q) else 0.0 for q in range(per)])
    ssb = sum(np.sum(g == q) * means[q] ** 2 for q in range(per))
    ssw = np.sum((v - means[g]) ** 2)
    groups = len(set(g.tolist()))
    return ssb / (ssb + ssw), ssb, ssw, groups, v.size


@pytest.mark.parametrize("per", [6, 24, 42])
def test_period_test_matches_numpy_anova(per):
    n = L.WIN_LEN
    t = np.arange(n)
    y = 3 * np.sin(2 * np.pi * t / per) + RNG.normal(0, 2, n) + 0.01 * t
    y[RNG.random(n) < 0.1] = np.nan
    start = 1000 * per + 5
    ev, pval, r, prof = PT.period_test(y.copy(), start, per)
    ref_ev, ssb, ssw, groups, m = _ref_anova(y, start, per)
    assert ev == pytest.approx(ref_ev, rel=1e-9)
    d1, d2 = groups - 1, m - groups
    F = (ssb / d1) / (ssw / d2)
    assert pval == pytest.approx(betainc(0.5 * d2, 0.5 * d1, d2 / (d2 + d1 * F)), rel=1e-9)
    detr = y.copy()
    PT._detrend(detr)
    ok = ~np.isnan(detr[:-per]) & ~np.isnan(detr[per:])
    a, b = detr[:-per][ok], detr[per:][ok]
    assert r == pytest.approx(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)), rel=1e-9)


def test_period_test_adversarial_inputs():
    for y in (np.full(168, np.nan), np.zeros(168), np.full(168, 5.0), np.r_[np.zeros(100), np.full(68, np.nan)]):
        ev, pval, r, _ = PT.period_test(y.copy(), 0, 24)
        assert np.isfinite([ev, pval, r]).all() and pval >= 0.0 and not (pval < 1e-4 and ev > 0.1)


def test_best_lag_is_the_shortest_near_maximal_autocorrelation_peak():
    y = np.sin(2 * np.pi * np.arange(168) / 17) + RNG.normal(0, 0.3, 168)
    PT._detrend(y)
    r = {q: PT.acf(y, q) for q in range(4, 57)}
    peaks = [q for q in r if r[q] >= 0.9 * max(r.values()) and r[q] >= PT.acf(y, q - 1) and r[q] >= PT.acf(y, q + 1)]
    ref = min(peaks)
    assert PT.best_lag(y, 4, 56) == ref == 17
    assert PT.best_lag(np.zeros(168), 4, 56) == 0


def test_window_push_and_compression_match_reference():
    base = 3600.0
    S = _row()
    S[0, L.WIN_SLOT_T] = 0.0
    slots = {}  # reference: absolute hour -> list of values
    for t in np.arange(0, 10 * DAY, 900.0):
        PT.push(S, 0, base, float(t))
        v = float(RNG.normal())
        S[0, L.WIN_SLOT_SUM] += v
        S[0, L.WIN_SLOT_CNT] += 1
        slots.setdefault(int(t // base), []).append(v)
    # after 7 days the window compressed once: 2 h slots
    assert S[0, L.WIN_LEVEL] == 1.0
    end2 = int(S[0, L.WIN_SLOT_T] // (2 * base))
    for s2 in range(end2 - 60, end2):
        hours = [h for h in (2 * s2, 2 * s2 + 1) if h in slots]
        means = [np.mean(slots[h]) for h in hours]
        assert S[0, L.WIN + s2 % L.WIN_LEN] == pytest.approx(np.mean(means))


def test_run_tests_adds_daily_and_weekly_components():
    base = 3600.0
    S = _row()
    S[0, L.WIN_SLOT_T] = 0.0
    for t in np.arange(0, 27 * DAY, 3600.0):
        PT.push(S, 0, base, float(t))
        weekend = 15.0 if (t // DAY) % 7 in (5, 6) else 0.0
        S[0, L.WIN_SLOT_SUM] += 10 * math.sin(2 * math.pi * t / DAY) + weekend + RNG.normal()
        S[0, L.WIN_SLOT_CNT] += 1
    assert PT.run_tests(S, 0, base, S[0, L.WIN_SLOT_T], 3600.0) == 1
    assert SE.comp_on(S, 0, 0) and SE.comp_period(S, 0, 0) == DAY
    assert PT.run_tests(S, 0, base, S[0, L.WIN_SLOT_T], 3600.0) == 1
    assert SE.comp_on(S, 0, 1) and SE.comp_period(S, 0, 1) == 7 * DAY
    assert PT.run_tests(S, 0, base, S[0, L.WIN_SLOT_T], 3600.0) == 0


def test_samples_of_one_row_in_one_update_share_a_bucket_trend_step():
    """A row that takes n samples in one update (a population model) moves each trend level by
    1/n of each sample's step (plain reference of the levels); `trend_run` counts the row's
    consecutive entries; a row with one sample a bucket is updated as before."""
    from streamad.kernels import series as K
    from streamad.models import ModelParams, SeriesBank

    idx = np.array([3, 3, 3, 1, 3, 3], dtype=np.int64)
    assert [K.trend_run(idx, k) for k in range(6)] == [3.0, 2.0, 1.0, 1.0, 2.0, 1.0]
    params = ModelParams(bucket_span=3600, seasonal=False, multi_bucket=False)
    P = params.vector()
    bank = SeriesBank(params)
    row = bank.add(1)[0]
    single = SeriesBank(params)
    srow = single.add(1)[0]
    lev = None
    n = 0.0
    for b in range(20):  # under a day (no change detection), values never outliers (no down-weighting)
        xs = 5.0 + 0.1 * b + np.linspace(-0.5, 0.5, 8)
        bank.update(np.full(8, row), b * 3600, xs, 1.0, 1.0)
        single.update(np.array([srow]), b * 3600, xs[:1], 1.0, 1.0)
        if lev is None:
            lev = [xs[0]] * 4  # levels start at the first value, which then updates them
        for x in xs:
            for k in range(4):
                lev[k] += min(max(P[L.P_LEV_ALPHA + k], 1 / (n + 1)) * (1.0 / 8.0), 1) * (x - lev[k])
            n += 1.0 / 8.0
    assert np.allclose(bank.S[row, L.LEV:L.LEV + 4], lev)
    assert bank.S[row, L.LEV_N] == pytest.approx(20.0)
    assert single.S[srow, L.LEV_N] == pytest.approx(20.0)
