"""Anomaly-characteristics model kernels (`streamad.kernels.anomaly`, ELASTIC_MODEL §3.4) against a
slow plain-Python reference, on random and adversarial input (NaN, infinities, constants, gaps)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from streamad.kernels import anomaly as AM
from streamad.kernels import layout as L

RNG = np.random.default_rng(29)
DBL_MIN = 2.2250738585072014e-308
OPEN_P = 0.1
A = -math.log(0.1)
B = -math.log(1e-4)
DECAY = 0.05 * 0.25
CV = 1e-4
MODEL_COLS = [L.AM_MOD + j for j in range(2 * L.AM_MOD_STRIDE)]
EPISODE_COLS = [L.AM_START, L.AM_LEN, L.AM_SUM, L.AM_N, L.AM_ABS]


# ----------------------------------------------------------------------------- plain reference
def _betainc_series(a, b, x):
    """I_x(a, b) by its hypergeometric series (x <= 0.5: each term at most about x times the last)."""
    front = math.exp(a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)) / a
    total, term, n = 1.0, 1.0, 0
    while True:
        term *= (a + b + n) / (a + 1.0 + n) * x
        total += term
        n += 1
        if term < 1e-17 * total or n > 100000:
            return front * total


def _ref_t_sf(z, nu):
    """P(T > z), Student's t with nu degrees of freedom, from the incomplete beta series."""
    if z < 0.0:
        return 1.0 - _ref_t_sf(-z, nu)
    if z == 0.0:
        return 0.5
    if math.isinf(z):
        return 0.0
    x = nu / (nu + z * z)
    if x <= 0.5:
        return 0.5 * _betainc_series(0.5 * nu, 0.5, x)
    return 0.5 * (1.0 - _betainc_series(0.5, 0.5 * nu, z * z / (nu + z * z)))


def _ref_above(x, m, k, nu, rate):
    """One-sided-above probability under a normal-gamma (m, precision k, shape nu / 2, rate)."""
    scale = math.sqrt(max(rate * (k + 1.0) / (0.5 * nu * k), 1e-300))
    return min(max(2.0 * _ref_t_sf((x - m) / scale, nu), DBL_MIN), 1.0)


def _ref_joint(ps):
    """Joint probability of independent less likely samples: chi-squared survival, len(ps) dof (2)."""
    z2 = sum(NormalDist().inv_cdf(max(p, DBL_MIN) / 2.0) ** 2 for p in ps)
    return min(max(math.exp(-0.5 * z2), DBL_MIN), 1.0)


def _ref_features_p(model, x):
    """One-sided-above probability of the feature vector x: sqrt(joint of the marginals x joint of
    the conditionals), each a normal-gamma predictive of the normal-Wishart model."""
    k, m, W = model["k"], model["m"], model["W"]
    nu = k
    v = nu - 3.0
    C = [[W[a][b] / v for b in range(2)] for a in range(2)]
    marg = [_ref_above(x[j], m[j], k, nu, 0.5 * W[j][j]) for j in range(2)]
    cond = []
    for j, o in ((0, 1), (1, 0)):
        mean = m[j] + (C[j][o] / C[o][o] * (x[o] - m[o]) if C[o][o] > 0.0 else 0.0)
        var = max(C[j][j] - (C[j][o] ** 2 / C[o][o] if C[o][o] > 0.0 else 0.0), CV * abs(mean))
        cond.append(_ref_above(x[j], mean, k, nu, 0.5 * var * v))
    return min(max(math.sqrt(_ref_joint(marg) * _ref_joint(cond)), DBL_MIN), 1.0)


def _ref_score(p):
    """Elastic's raw anomaly score (ELASTIC_MODEL §4.1), written out again."""
    if not (p < 0.05):
        return 0.0
    p = max(p, DBL_MIN)
    if p >= 1e-4:
        return (1.0 / p - 20.0) / 9980.0
    if p >= 1e-50:
        return 1.0 + 49.0 * (-math.log(p) - B) / (50.0 * math.log(10.0) - B)
    return min(50.0 + 50.0 * (-math.log(p) - 50.0 * math.log(10.0))
               / (-math.log(DBL_MIN) - 50.0 * math.log(10.0)), 100.0)


def _ref_inverse_score(s):
    lo, hi = DBL_MIN, 1.0  # the score falls as p rises: bisect on log p
    if not (s > 0.0):
        return 1.0
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if _ref_score(mid) > s:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def _ref_combine(p, p_anom):
    """Elastic 6.5-8.0: raw scores blended, alpha = 1/2 min((ln p - ln 0.1) / (ln 1e-4 - ln 0.1), 1)."""
    lp = math.log(max(p, DBL_MIN))
    alpha = 0.5 * min(max((-lp - A) / (B - A), 0.0), 1.0)
    s = (1.0 - alpha) * _ref_score(p) + alpha * _ref_score(p_anom)
    return min(max(_ref_inverse_score(s), DBL_MIN), OPEN_P)


def _empty_model():
    return {"k": 0.0, "m": [0.0, 0.0], "W": [[0.0, 0.0], [0.0, 0.0]]}


def _ref_add(model, x, n):
    """Normal-Wishart update with weight n: pooled weighted moments, then the scatter diagonal floor."""
    out = {"k": model["k"], "m": list(model["m"]), "W": [list(r) for r in model["W"]]}
    if not (n > 0.0):
        return out
    k = out["k"]
    if k > 0.0:
        d = [x[0] - out["m"][0], x[1] - out["m"][1]]
        for a in range(2):
            for b in range(2):
                out["W"][a][b] += k * n / (k + n) * d[a] * d[b]
        out["m"] = [out["m"][j] + n / (k + n) * d[j] for j in range(2)]
        out["k"] = k + n
    else:
        out = {"k": n, "m": [x[0], x[1]], "W": [[0.0, 0.0], [0.0, 0.0]]}
    if out["k"] > 3.0:
        floor = out["k"] * (math.hypot(max(out["m"][0], 1e-8), max(out["m"][1], 1e-8)) * CV) ** 2
        for j in range(2):
            out["W"][j][j] = max(out["W"][j][j], floor)
    return out


class RefAnomalyModel:
    """The episode and the two feature models, step by step as ELASTIC_MODEL §3.4 describes."""

    def __init__(self):
        self.models = [_empty_model(), _empty_model()]  # positive, negative
        self.episode = None  # dict(start, length, sum, n, mean_abs)

    def age(self, alpha):
        a = alpha ** DECAY
        for md in self.models:
            if md["k"] > 3.0:
                md["k"] *= a
                md["W"] = [[w * a for w in row] for row in md["W"]]

    @staticmethod
    def _which(total):
        return 0 if total > 0.0 else 1

    @staticmethod
    def _extended(ep, tb, err):
        ep = dict(ep)
        ep["length"] = max(tb - ep["start"], 0.0)
        ep["sum"] += err
        ep["n"] += 1.0
        ep["mean_abs"] += (abs(err) - ep["mean_abs"]) / ep["n"]
        return ep

    def step(self, tb, err, p_single, p, w):
        if not (p < OPEN_P):
            if p == p and self.episode is not None:
                ep = self.episode
                j = self._which(ep["sum"])
                self.models[j] = _ref_add(self.models[j], (ep["length"], ep["mean_abs"]),
                                          (1.0 - 1.0 / (1.0 + ep["length"])) * w)
                self.episode = None
            return
        if self.episode is None:
            self.episode = {"start": tb, "length": 0.0, "sum": 0.0, "n": 0.0, "mean_abs": 0.0}
        if p_single < OPEN_P and abs(err) < math.inf:
            self.episode = self._extended(self.episode, tb, err)
            ep = self.episode
            j = self._which(ep["sum"])
            self.models[j] = _ref_add(self.models[j], (ep["length"], ep["mean_abs"]), w / (1.0 + ep["length"]))

    def probability(self, tb, err, p_single, p):
        if not (p < OPEN_P):
            return p, 1.0
        ep = self.episode or {"start": tb, "length": 0.0, "sum": 0.0, "n": 0.0, "mean_abs": 0.0}
        model = self.models[self._which(ep["sum"])]
        if p_single < OPEN_P and abs(err) < math.inf:
            ep = self._extended(ep, tb, err)
            j = self._which(ep["sum"])
            model = _ref_add(self.models[j], (ep["length"], ep["mean_abs"]), 1.0 / (1.0 + ep["length"]))
        if not (model["k"] > 3.0):
            return p, 1.0
        pa = _ref_features_p(model, (ep["length"], ep["mean_abs"]))
        return max(_ref_combine(p, pa), p), pa

    def state(self):
        """The kernel's columns, in `EPISODE_COLS` then `MODEL_COLS` order."""
        ep = self.episode
        head = [math.nan, 0.0, 0.0, 0.0, 0.0] if ep is None else [ep["start"], ep["length"], ep["sum"], ep["n"],
                                                                   ep["mean_abs"]]
        body = []
        for md in self.models:
            body += [md["k"], md["m"][0], md["m"][1], md["W"][0][0], md["W"][0][1], md["W"][1][1]]
        return head + body


def _row():
    S = np.zeros((1, L.NCOLS))
    AM.init(S, 0)
    return S


def _model_row(md, sign=0):
    S = _row()
    c = L.AM_MOD + sign * L.AM_MOD_STRIDE
    S[0, c:c + 6] = [md["k"], md["m"][0], md["m"][1], md["W"][0][0], md["W"][0][1], md["W"][1][1]]
    return S


def _close(a, b, rel=1e-9, abs_=1e-12):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_)


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", range(6))
def test_add_matches_batch_weighted_moments(case):
    """Sequential weighted adds give the batch weighted mean and scatter (the floor not binding:
    errors of at least the lengths' size), and the plain sequential reference."""
    n = int(RNG.integers(4, 80))
    scale = 10.0 ** RNG.uniform(1, 6)
    xs = np.column_stack([RNG.integers(0, 30, n).astype(float), np.abs(RNG.standard_t(3, n)) * scale + scale])
    ws = RNG.uniform(0.02, 1.0, n)
    S = _row()
    for (x1, x2), w in zip(xs, ws):
        AM.add(S, 0, L.AM_MOD, x1, x2, w)
    W = ws.sum()
    m = (ws[:, None] * xs).sum(axis=0) / W
    d = xs - m
    scatter = (ws[:, None, None] * d[:, :, None] * d[:, None, :]).sum(axis=0)
    got = S[0, L.AM_MOD:L.AM_MOD + 6]
    assert got[0] == pytest.approx(W, rel=1e-12)
    assert got[1:3] == pytest.approx(m, rel=1e-9, abs=1e-9 * scale)
    floor = W * (math.hypot(max(m[0], 1e-8), max(m[1], 1e-8)) * CV) ** 2
    assert got[3] == pytest.approx(max(scatter[0, 0], floor), rel=1e-8)
    assert got[4] == pytest.approx(scatter[0, 1], rel=1e-7, abs=1e-7 * math.sqrt(scatter[0, 0] * scatter[1, 1]))
    assert got[5] == pytest.approx(max(scatter[1, 1], floor), rel=1e-8)
    ref = _empty_model()
    for (x1, x2), w in zip(xs, ws):
        ref = _ref_add(ref, (x1, x2), w)
    want = [ref["k"], *ref["m"], ref["W"][0][0], ref["W"][0][1], ref["W"][1][1]]
    assert all(_close(g, w) for g, w in zip(got.tolist(), want)), (got, want)


def test_add_floors_the_scatter_diagonal_by_the_whole_mean():
    """Elastic's floor: a coefficient of variation of 1e-4 of the mean vector's norm, so errors much
    smaller than the lengths have their spread raised to it."""
    S = _row()
    ref = _empty_model()
    rng = np.random.default_rng(3)
    for _ in range(30):
        x = (float(rng.integers(10, 20)), abs(rng.normal(1e-4, 1e-5)))
        w = float(rng.uniform(0.1, 1.0))
        AM.add(S, 0, L.AM_MOD, x[0], x[1], w)
        ref = _ref_add(ref, x, w)
        got = S[0, L.AM_MOD:L.AM_MOD + 6].tolist()
        want = [ref["k"], *ref["m"], ref["W"][0][0], ref["W"][0][1], ref["W"][1][1]]
        assert all(_close(g, v) for g, v in zip(got, want)), (got, want)
    floor = ref["k"] * (math.hypot(*ref["m"]) * CV) ** 2
    assert S[0, L.AM_MOD + 5] == pytest.approx(floor, rel=1e-9)


def test_add_of_constants_keeps_the_variance_floor_and_ignores_bad_weights():
    S = _row()
    ref = _empty_model()
    for _ in range(20):
        AM.add(S, 0, L.AM_MOD, 0.0, 7.25, 0.5)
        ref = _ref_add(ref, (0.0, 7.25), 0.5)
    before = S.copy()
    for w in (0.0, -1.0, math.nan):
        AM.add(S, 0, L.AM_MOD, 1.0, 1e6, w)
    assert np.array_equal(S, before, equal_nan=True)
    got = S[0, L.AM_MOD:L.AM_MOD + 6].tolist()
    want = [ref["k"], *ref["m"], ref["W"][0][0], ref["W"][0][1], ref["W"][1][1]]
    assert all(_close(g, w) for g, w in zip(got, want)), (got, want)
    assert got[3] > 0.0 and got[5] > 0.0  # a constant feature still has a (tiny) spread


def test_age_relaxes_informative_models_only():
    S = _row()
    for x in ((0.0, 2.0), (1.0, 3.0), (0.0, 2.5), (2.0, 5.0)):
        AM.add(S, 0, L.AM_MOD, x[0], x[1], 1.0)
    AM.add(S, 0, L.AM_MOD + L.AM_MOD_STRIDE, 0.0, 4.0, 1.0)  # one sample: not informative
    before = S.copy()
    alpha = 0.9
    AM.age(S, 0, alpha)
    a = alpha ** DECAY
    c = L.AM_MOD
    assert S[0, c] == pytest.approx(before[0, c] * a)
    assert S[0, c + 1:c + 3].tolist() == before[0, c + 1:c + 3].tolist()  # the mean stays
    assert S[0, c + 3:c + 6] == pytest.approx(before[0, c + 3:c + 6] * a)
    c2 = L.AM_MOD + L.AM_MOD_STRIDE
    assert S[0, c2:c2 + 6].tolist() == before[0, c2:c2 + 6].tolist()


def _random_model():
    md = _empty_model()
    n = int(RNG.integers(4, 60))
    scale = 10.0 ** RNG.uniform(-2, 5)
    corr = RNG.uniform(-1, 1)
    for _ in range(n):
        length = float(RNG.integers(0, 8)) if RNG.random() < 0.7 else 0.0
        err = abs(RNG.normal(2.0, 1.0) + corr * length) * scale
        md = _ref_add(md, (length, err), RNG.uniform(0.1, 1.0))
    return md, scale


@pytest.mark.parametrize("case", range(10))
def test_features_probability_matches_reference(case):
    md, scale = _random_model()
    if md["k"] <= 3.0:
        md = _ref_add(md, (1.0, scale), 5.0)
    S = _model_row(md)
    c = L.AM_MOD
    params = tuple(S[0, c:c + 6])
    points = [(md["m"][0], md["m"][1]), (0.0, 0.0), (0.0, md["m"][1] * 3.0), (40.0, md["m"][1]),
              (1e6, 1e9 * scale), (RNG.uniform(0, 10), RNG.uniform(0, 5) * scale)]
    for x in points:
        got = AM.features_p(*params, float(x[0]), float(x[1]))
        want = _ref_features_p(md, x)
        assert 0.0 < got <= 1.0
        assert got == pytest.approx(want, rel=1e-7) or math.log(got) == pytest.approx(math.log(want), rel=1e-7), x
    # below the means on both features: nothing unusual (one-sided above)
    assert AM.features_p(*params, 0.0, 0.0) >= AM.features_p(*params, 50.0, 50.0 * scale)


def test_combine_matches_formula_and_its_limits():
    for p in (0.099, 0.05, 0.01, 1e-3, 1e-4, 1e-6, 1e-30, 1e-60, 1e-200, DBL_MIN, 0.0):
        for pa in (1.0, 0.5, 0.04, 1e-3, 1e-40, DBL_MIN, 0.0):
            got = AM.combine(p, pa)
            want = _ref_combine(p, pa)
            assert 0.0 < got <= OPEN_P
            assert got == pytest.approx(want, rel=1e-9), (p, pa)
    # raw scores as `scoring.rawscore` has them
    from streamad.scoring.rawscore import anomaly_score, inverse_anomaly_score
    for p in (0.2, 0.049, 1e-3, 1e-4, 3e-5, 1e-50, 1e-51, 1e-300, DBL_MIN):
        assert AM.raw_score(p) == pytest.approx(anomaly_score(p), rel=1e-12)
        s = anomaly_score(p)
        assert AM.inverse_raw_score(s) == pytest.approx(inverse_anomaly_score(s), rel=1e-12)
    # an ordinary episode (p_anom = 1) leaves p just below 0.1 about as it is; a tiny p has its
    # raw score halved
    assert AM.combine(0.0999, 1.0) == pytest.approx(0.0999, rel=1e-2)
    assert anomaly_score(AM.combine(1e-20, 1.0)) == pytest.approx(0.5 * anomaly_score(1e-20), rel=1e-9)
    assert anomaly_score(AM.combine(2e-5, 1.0)) == pytest.approx(0.5 * anomaly_score(2e-5), rel=1e-9)
    # a rare episode's features count for half the score
    assert anomaly_score(AM.combine(1e-20, 1e-40)) == pytest.approx(
        0.5 * (anomaly_score(1e-20) + anomaly_score(1e-40)), rel=1e-9)


def _sequence(n, seed):
    """Adversarial (time/bucket, err, p_single, p, w) inputs: NaN and infinite values, constants,
    gaps, the 0.1 boundary."""
    rng = np.random.default_rng(seed)
    tb = 1000.0
    out = []
    const = rng.choice([True, False])
    for _ in range(n):
        tb += 1.0 if rng.random() < 0.85 else float(rng.integers(2, 40))  # gaps
        r = rng.random()
        if r < 0.55:
            p = 10.0 ** rng.uniform(-40, -1)
        elif r < 0.6:
            p = rng.choice([OPEN_P, np.nextafter(OPEN_P, 0.0), DBL_MIN, 0.0, math.nan, math.inf, 1.0])
        else:
            p = rng.uniform(0.1, 1.0)
        ps = p * rng.uniform(0.5, 30.0) if rng.random() < 0.9 else rng.choice([math.nan, 0.0, 1.0, OPEN_P])
        if const:
            err = 3.0
        else:
            err = rng.normal(0.0, 5.0) + (20.0 if rng.random() < 0.2 else 0.0)
            if rng.random() < 0.05:
                err = rng.choice([math.nan, math.inf, -math.inf, 0.0, 1e100, -1e100])
        w = rng.choice([1.0, 1.0, 1.0, rng.uniform(0.001, 1.0), 0.005])
        out.append((tb, float(err), float(ps), float(p), float(w)))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_step_and_probability_match_reference(seed):
    S = _row()
    ref = RefAnomalyModel()
    for tb, err, ps, p, w in _sequence(400, seed):
        got = AM.probability(S, 0, tb, err, ps, p)
        want = ref.probability(tb, err, ps, p)
        assert _close(got[0], want[0], rel=1e-7) and _close(got[1], want[1], rel=1e-7), (tb, err, ps, p, got, want)
        assert got[0] >= p or not (p < OPEN_P)  # the correction only discounts
        AM.step(S, 0, tb, err, ps, p, w)
        ref.step(tb, err, ps, p, w)
        if RNG.random() < 0.1:
            alpha = float(RNG.uniform(0.5, 1.0))
            AM.age(S, 0, alpha)
            ref.age(alpha)
        state = [S[0, c] for c in EPISODE_COLS + MODEL_COLS]
        assert all(_close(a, b) for a, b in zip(state, ref.state())), (state, ref.state())
        assert np.all(np.isfinite(S[0, MODEL_COLS]))


def test_probability_sees_the_episode_as_step_leaves_it():
    """Elastic samples the anomaly model before it computes the probability: `probability` on the
    state before the bucket is the features' probability under the models `step` leaves."""
    S = _row()
    rng = np.random.default_rng(5)
    tb = 0.0
    checked = 0
    for _ in range(600):
        tb += 1.0
        p = 10.0 ** rng.uniform(-12, -1) if rng.random() < 0.3 else 0.5
        ps = p
        err = rng.normal(0.0, 1.0) + 6.0
        before = AM.probability(S, 0, tb, err, ps, p)
        AM.step(S, 0, tb, err, ps, p, 1.0)
        if p < OPEN_P and S[0, L.AM_START] == S[0, L.AM_START]:
            c = L.AM_MOD if S[0, L.AM_SUM] > 0.0 else L.AM_MOD + L.AM_MOD_STRIDE
            if AM.informative(S[0, c]):
                pa = AM.features_p(*S[0, c:c + 6], S[0, L.AM_LEN], S[0, L.AM_ABS])
                assert before[1] == pa
                assert before[0] == max(AM.combine(p, pa), p)
                checked += 1
    assert checked > 50


def test_routine_features_get_a_large_p_anom_and_novel_ones_a_small_one():
    S = _row()
    tb = 0.0
    for k in range(300):  # single-bucket spikes of error about 10, every 5 buckets
        tb += 1.0
        spike = k % 5 == 0
        p = 1e-8 if spike else 0.5
        AM.step(S, 0, tb, 10.0 + 0.5 * math.sin(k), p, p, 1.0)
    tb += 1.0
    routine = AM.probability(S, 0, tb, 10.0, 1e-8, 1e-8)
    bigger = AM.probability(S, 0, tb, 40.0, 1e-8, 1e-8)
    assert routine[1] > 0.1 and bigger[1] < 1e-6
    # a routine spike keeps half its raw score (ELASTIC_MODEL §4.1), a novel one more
    from streamad.scoring.rawscore import anomaly_score
    assert anomaly_score(routine[0]) == pytest.approx(0.5 * anomaly_score(1e-8), rel=1e-3)
    assert bigger[0] < routine[0]
    # and a second bucket of an episode when every episode so far lasted one bucket: novel length
    AM.step(S, 0, tb, 10.0, 1e-8, 1e-8, 1.0)
    longer = AM.probability(S, 0, tb + 1.0, 10.0, 1e-8, 1e-8)
    assert longer[1] < 1e-6 and longer[0] == 1e-8  # never more anomalous than the bucket itself
