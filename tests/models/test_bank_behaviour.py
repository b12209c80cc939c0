"""SeriesBank behaviour on synthetic series: what users rely on (ELASTIC_MODEL §2-§3)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamad.kernels import anomaly as AM
from streamad.kernels import series as K
from streamad.models import ModelParams, SeriesBank
from streamad.scoring.rawscore import anomaly_score

DAY = 86400


def _daily(t: float) -> float:
    return 100.0 + 40.0 * math.sin(2.0 * math.pi * t / DAY)


def _run(bank: SeriesBank, idx, times, values):
    """The engine's order per bucket: score against the prediction, then learn the value."""
    out = []
    for t, v in zip(times, values):
        x = np.atleast_1d(np.asarray(v, dtype=float))
        out.append(bank.score(idx, int(t), x, 1.0))
        bank.update(idx, int(t), x, 1.0, 1.0, out[-1])
    return out


def _steady(span: int, seed: int, days: int, level: float = 50.0):
    """A bank with one series that has learned `days` of noisy level `level` at this bucket span."""
    bank = SeriesBank(ModelParams(bucket_span=span))
    idx = bank.add(1)
    rng = np.random.default_rng(seed)
    times = np.arange(0, days * DAY, span)
    _run(bank, idx, times, level + rng.normal(0, 1.0, times.size))
    return bank, idx, rng


def test_level_shift_after_a_transient_of_the_other_sign_is_accepted():
    """A rise that ends before it could be accepted, then a lasting drop: the drop's run of large
    errors starts afresh at the first large error of the other sign, so the drop is absorbed
    after the usual ~30 h (a run that could only end once large errors became rare would never
    end while they stay large the other way)."""
    span = 600
    bank, idx, rng = _steady(span, 12, 6)
    up = np.arange(6 * DAY, 6 * DAY + 20 * 3600, span)
    _run(bank, idx, up, 65.0 + rng.normal(0, 1.0, up.size))
    bank.pop_events()
    down_start = 6 * DAY + 20 * 3600
    down = np.arange(down_start, down_start + 3 * DAY, span)
    scores = _run(bank, idx, down, 35.0 + rng.normal(0, 1.0, down.size))
    events = [e for e in bank.pop_events() if e.kind == "level_shift"]
    assert events and down_start + 29 * 3600 <= events[0].time <= down_start + 40 * 3600
    assert abs(scores[-1].typical[0] - 35.0) < 1.5


def test_buckets_deep_in_an_unaccepted_shift_weigh_less_but_a_bigger_jump_is_news():
    """While a shift waits its ~30 h to be accepted (ELASTIC_MODEL §2.6), its buckets say the same
    thing again and again: each is one more bucket of one open anomaly episode, whose buckets that
    are no more extreme than its most extreme one report half their log probability
    (`episode_power`), while what the normalizers learn (p_model) is the probability as the
    anomaly-characteristics model (§3.4) corrected it. A bucket well beyond the run is news."""
    span = 600
    bank, idx, rng = _steady(span, 4, 4)
    shift = np.arange(4 * DAY, 4 * DAY + 45 * span, span)
    scores = _run(bank, idx, shift, 60.0 + rng.normal(0, 1.0, shift.size))
    surprise = [-math.log10(s.p_model[0]) for s in scores]
    reported = [-math.log10(s.probability[0]) for s in scores]
    assert all(s.probability[0] >= s.p_model[0] >= s.p_overall[0] for s in scores)
    assert max(-math.log10(s.p_overall[0]) for s in scores[:15]) > 20.0
    assert max(surprise[:15]) > 10.0
    assert np.mean(reported[35:]) < 0.5 * max(surprise[:15])
    assert all(e.kind != "level_shift" for e in bank.pop_events())
    jump = bank.score(idx, int(shift[-1]) + span, np.array([90.0]), 1.0)
    assert jump.probability[0] < 1e-30
    assert jump.probability[0] < 1e-20 * min(s.probability[0] for s in scores[30:])


def test_buckets_that_repeat_an_open_anomaly_episode_weigh_half_and_escalation_is_news():
    """An anomaly episode is open while buckets keep p < 0.1 (ELASTIC_MODEL §3.4). A bucket that
    continues it with an error of the same sign and is no more extreme than its most extreme
    reported bucket (-ln p not beyond 1.2 times the episode's) repeats news already given: its
    log p counts half. The first bucket, a clearly more extreme one and a bucket of the other sign
    keep their full weight. The discount applies to the probability as the anomaly-characteristics
    model has corrected it (`anomaly.probability`), which p_model keeps."""
    span = 600
    bank, idx, rng = _steady(span, 9, 4)
    t0 = 4 * DAY
    values = [58.0, 56.0, 57.0, 75.0, 57.0, 40.0]
    lp, la, lm = [], [], []
    for k, v in enumerate(values):
        t = int(t0 + k * span)
        x = np.array([v])
        s = bank.score(idx, t, x, 1.0)
        err = K.am_error(bank.S, 0, float(t), float(span), v, 1.0)
        p_am, _ = AM.probability(bank.S, 0, t / span, err, s.p_single[0], s.p_overall[0])
        assert s.p_model[0] == p_am >= s.p_overall[0]  # no run of large errors here; the correction
        # only discounts
        lp.append(math.log(s.probability[0]))
        la.append(math.log(p_am))
        lm.append(math.log(s.p_overall[0]))
        bank.update(idx, t, x, 1.0, 1.0, s)
    assert lp[0] == la[0] and lp[0] < math.log(1e-6)  # first bucket: full news
    assert la[0] > lm[0]  # the §3.4 model discounts it: this series has had episodes like it
    most = la[0]
    for k in range(1, len(values)):
        repeat = values[k] > 50.0 and la[k] >= 1.2 * most and la[k] < math.log(0.1)
        if repeat:
            assert lp[k] == pytest.approx(0.5 * la[k], rel=1e-9)
        else:
            assert lp[k] == pytest.approx(la[k], rel=1e-12)
        if values[k] > 50.0:
            most = min(most, lp[k])  # the episode's most extreme bucket as reported
    assert lp[3] == la[3] and lp[3] < lp[0]  # escalation: more extreme than the episode so far
    assert lp[5] == la[5] and lp[5] < math.log(1e-6)  # the other sign: news
    assert any(lp[k] > la[k] for k in (1, 2, 4))  # and some repeats were discounted
    # not scored (no probabilities given to update): no episode opens, so only the §3.4 model's
    # correction of each bucket as an episode of its own remains
    bank2, idx2, _ = _steady(span, 9, 4)
    for k, v in enumerate(values):
        t = int(t0 + k * span)
        s = bank2.score(idx2, t, np.array([v]), 1.0)
        err = K.am_error(bank2.S, 0, float(t), float(span), v, 1.0)
        assert s.probability[0] == AM.probability(bank2.S, 0, t / span, err, s.p_single[0], s.p_overall[0])[0]
        bank2.update(idx2, t, np.array([v]), 1.0, 1.0)


def test_routine_spikes_are_discounted_and_a_larger_one_is_news_to_the_anomaly_model():
    """The anomaly-characteristics model (ELASTIC_MODEL §3.4) of a series with a one-bucket spike
    of about +8 sd every day: another such spike has ordinary episode features (p_anom well above
    the bucket's own probability) and scores less anomalous than the model alone says (its raw
    anomaly score, ELASTIC_MODEL §4.1, loses alpha of itself: 0.38 at p ~ 5e-4); a spike three times
    as large has novel features (tiny p_anom), keeps at least half of its raw score and stays far
    more anomalous than the routine one. Neither is made more anomalous than the model says."""
    span = 600
    bank = SeriesBank(ModelParams(bucket_span=span))
    idx = bank.add(1)
    rng = np.random.default_rng(17)
    times = np.arange(0, 8 * DAY, span)
    values = 50.0 + rng.normal(0, 1.0, times.size)
    values[100::150] += 8.0 + rng.normal(0, 0.5, values[100::150].size)
    _run(bank, idx, times, values)
    t = int(times[-1]) + span
    out = {}
    for v in (58.0, 74.0):
        s = bank.score(idx, t, np.array([v]), 1.0)
        err = K.am_error(bank.S, 0, float(t), float(span), v, 1.0)
        p_am, p_anom = AM.probability(bank.S, 0, t / span, err, s.p_single[0], s.p_overall[0])
        assert s.probability[0] == p_am == s.p_model[0] >= s.p_overall[0]
        out[v] = (s.p_overall[0], s.probability[0], p_anom)
    (p_r, q_r, a_r), (p_n, q_n, a_n) = out[58.0], out[74.0]
    assert p_r < 1e-3 and a_r > 0.05  # routine: discounted
    assert anomaly_score(q_r) < 0.7 * anomaly_score(p_r)
    assert a_n < 1e-4 and anomaly_score(q_n) >= 0.5 * anomaly_score(p_n)  # novel: keeps over half
    assert q_n < 1e-10 * q_r


def test_daily_pattern_learned_trough_drop_flagged_peak_not():
    span = 900
    bank = SeriesBank(ModelParams(bucket_span=span))
    idx = bank.add(1)
    rng = np.random.default_rng(1)
    times = np.arange(0, 10 * DAY, span)
    values = [_daily(t) + rng.normal(0, 2.0) for t in times]
    _run(bank, idx, times, values)
    assert any(e.kind == "seasonality_added" for e in bank.pop_events())
    # day 10: the normal peak (140 at 6 h) is not anomalous; 140 in the trough (60 at 18 h) is
    # not either way round: a drop in the trough to 35 is.
    t_peak = 10 * DAY + 6 * 3600 - span // 2
    t_trough = 10 * DAY + 18 * 3600 - span // 2
    day_times = np.arange(10 * DAY, t_peak + span, span)
    day_values = [_daily(t) + rng.normal(0, 2.0) for t in day_times]
    peak = _run(bank, idx, day_times, day_values)[-1]
    assert peak.probability[0] > 0.05
    assert abs(peak.typical[0] - _daily(t_peak + span / 2)) < 8.0
    rest = np.arange(t_peak + span, t_trough, span)
    _run(bank, idx, rest, [_daily(t) + rng.normal(0, 2.0) for t in rest])
    copy = SeriesBank.from_bytes(bank.to_bytes())
    normal_trough = _run(copy, idx, [t_trough], [_daily(t_trough + span / 2)])[-1]
    assert normal_trough.probability[0] > 0.05
    drop = _run(bank, idx, [t_trough], [_daily(t_trough + span / 2) - 25.0])[-1]
    assert drop.probability[0] < 1e-4
    assert drop.typical[0] > drop.lower[0] > _daily(t_trough + span / 2) - 25.0


def test_level_shift_flagged_then_absorbed_with_event():
    span = 600
    bank = SeriesBank(ModelParams(bucket_span=span))
    idx = bank.add(1)
    rng = np.random.default_rng(2)
    times = np.arange(0, 6 * DAY, span)
    _run(bank, idx, times, 50.0 + rng.normal(0, 1.0, times.size))
    bank.pop_events()
    after = np.arange(6 * DAY, 9 * DAY, span)
    scores = _run(bank, idx, after, 65.0 + rng.normal(0, 1.0, after.size))
    probs = np.array([s.probability[0] for s in scores])
    assert probs[0] < 1e-6  # flagged at once
    events = [e for e in bank.pop_events() if e.kind == "level_shift"]
    assert len(events) == 1
    assert 6 * DAY + 29 * 3600 <= events[0].time <= 6 * DAY + 40 * 3600  # after 30 h of evidence
    # absorbed: the last day after the change is normal again, typical at the new level
    last_day = probs[-(DAY // span):]
    assert np.mean(last_day < 0.01) < 0.03
    assert abs(scores[-1].typical[0] - 65.0) < 1.5


def test_poisson_counts_at_low_rates_are_calibrated():
    n_series = 60
    span = 3600
    bank = SeriesBank(ModelParams(bucket_span=span, nonnegative=True, integer=True, seasonal=False))
    idx = bank.add(3 * n_series)
    rates = np.repeat([0.3, 2.0, 6.0], n_series)
    rng = np.random.default_rng(3)
    p_single, p_final = [], []
    for b in range(400):
        x = rng.poisson(rates).astype(float)
        sc = bank.score(idx, b * span, x, 1.0)
        bank.update(idx, b * span, x, 1.0, 1.0)
        if b >= 100:
            p_single.append(sc.p_single)
            p_final.append(sc.probability)
    ps = np.concatenate(p_single)
    pf = np.concatenate(p_final)
    for alpha in (0.01, 0.05, 0.1):
        assert np.mean(ps <= alpha) <= 1.3 * alpha + 0.002, alpha
        assert np.mean(pf <= alpha) <= 1.5 * alpha + 0.002, alpha
    assert 0.4 < np.mean(ps) < 0.6
    # the Poisson candidate carries the model: typical is the rate
    typ = bank.score(idx, 400 * span, np.zeros(idx.size), 1.0).typical
    for k, rate in enumerate((0.3, 2.0, 6.0)):
        assert abs(np.mean(typ[k * n_series:(k + 1) * n_series]) - rate) < 0.25 * rate + 0.2  # median ~ mean


def test_heavy_tailed_data_stays_calibrated():
    """Log-normal values: the skewed candidates keep false alarms within a few times nominal."""
    span = 300
    bank = SeriesBank(ModelParams(bucket_span=span, nonnegative=True))
    idx = bank.add(100)
    rng = np.random.default_rng(4)
    probs = []
    for b in range(600):
        x = np.exp(rng.normal(1.0, 0.8, idx.size))
        sc = bank.score(idx, b * span, x, 1.0)
        bank.update(idx, b * span, x, 1.0, 1.0)
        if b >= 200:
            probs.append(sc.p_single)
    ps = np.concatenate(probs)
    assert np.mean(ps < 1e-3) < 5e-3
    assert np.mean(ps < 1e-5) < 1e-3
    assert np.mean(ps < 0.05) < 0.07


def test_bimodal_values_are_normal_in_both_modes_but_not_between():
    span = 300
    bank = SeriesBank(ModelParams(bucket_span=span, seasonal=False, multi_bucket=False))
    idx = bank.add(1)
    rng = np.random.default_rng(5)
    values = np.where(rng.random(3000) < 0.5, rng.normal(0.0, 1.0, 3000), rng.normal(30.0, 1.0, 3000))
    _run(bank, idx, np.arange(3000) * span, values)
    t = 3000 * span
    both = bank.score(np.zeros(3, dtype=np.int64), t, np.array([0.5, 29.5, 15.0]), 1.0)
    assert both.probability[0] > 0.1
    assert both.probability[1] > 0.1
    assert both.probability[2] < 1e-3


def test_white_noise_gets_no_seasonality_and_no_events():
    span = 1800
    bank = SeriesBank(ModelParams(bucket_span=span))
    idx = bank.add(20)
    rng = np.random.default_rng(6)
    for b in range(14 * DAY // span):
        bank.update(idx, b * span, rng.normal(10.0, 2.0, idx.size), 1.0, 1.0)
    assert bank.pop_events() == []


def test_new_series_is_quiet_while_learning():
    bank = SeriesBank(ModelParams(bucket_span=300))
    idx = bank.add(1)
    scores = _run(bank, idx, np.arange(5) * 300, [1.0, 1000.0, -50.0, 3.0, 1e6])
    assert all(s.probability[0] == 1.0 for s in scores)


def test_one_sided_models_ignore_the_other_side():
    span = 300
    rng = np.random.default_rng(7)
    values = 20.0 + rng.normal(0, 1.0, 2000)
    out = {}
    for side in (-1, 1):
        bank = SeriesBank(ModelParams(bucket_span=span, side=side))
        idx = bank.add(1)
        _run(bank, idx, np.arange(2000) * span, values)
        out[side] = bank.score(np.zeros(2, dtype=np.int64), 2000 * span, np.array([30.0, 10.0]), 1.0, False)
    assert out[1].probability[0] < 1e-6 and out[1].probability[1] == 1.0
    assert out[-1].probability[1] < 1e-6 and out[-1].probability[0] == 1.0


def test_seasonality_that_stops_is_removed_and_not_re_added():
    span = 3600
    bank = SeriesBank(ModelParams(bucket_span=span))
    idx = bank.add(1)
    rng = np.random.default_rng(8)
    kinds = []
    for b in range(30 * 24):
        t = b * span
        x = 100.0 + (30.0 * math.sin(2 * math.pi * t / DAY) if b < 8 * 24 else 0.0) + rng.normal(0, 2)
        bank.update(idx, t, np.array([x]), 1.0, 1.0)
        kinds += [(e.kind, e.time // DAY) for e in bank.pop_events()]
    assert kinds[0] == ("seasonality_added", 3)
    assert kinds[1][0] == "seasonality_removed" and 8 < kinds[1][1] <= 16
    assert len(kinds) == 2


def test_repeated_indices_update_sequentially():
    """Population models feed several values of one bucket into one series: its residual models
    learn every value, one after another, while its trend steps once per bucket (a row's
    consecutive samples share one step, `trend_run`); other rows in the batch change nothing."""
    from streamad.kernels import layout as L

    a = SeriesBank(ModelParams(bucket_span=60, seasonal=False))
    b = SeriesBank(ModelParams(bucket_span=60, seasonal=False))
    ia, ib = a.add(1), b.add(2)
    rng = np.random.default_rng(9)
    for t in range(0, 6000, 60):
        xs = rng.normal(5, 1, 3)
        a.update(np.repeat(ia, 3), t, xs, 1.0, 1.0)
        b.update(np.array([ib[0]] * 3 + [ib[1]]), t, np.append(xs, 7.0), 1.0, 1.0)
    assert a.S[ia[0]].tobytes() == b.S[ib[0]].tobytes()
    assert a.S[ia[0], L.N_EFF] == pytest.approx(300.0)
    assert a.S[ia[0], L.LEV_N] == pytest.approx(100.0)


def test_population_of_long_tailed_counts_keeps_a_long_tail():
    """Population analysis: every over value's bucket value is one sample of a shared model. Per-client
    distinct counts are long-tailed integers (most 1, a few heavy clients around 10): a skewed
    candidate, not a mixture of narrow modes at the integers, must model them, so that a heavy
    client's usual count is at worst moderately unusual while a far larger one stays extreme."""
    rng = np.random.default_rng(5)
    bank = SeriesBank(ModelParams(bucket_span=3600, side=1, nonnegative=True, integer=True,
                                  seasonal=False, multi_bucket=False))
    row = bank.add(1)[0]
    heavy = np.array([9.0, 10.0, 11.0, 12.0])
    for b in range(400):
        n = int(rng.integers(12, 30))
        x = np.minimum(rng.zipf(2.6, n), 8).astype(float)
        x[0] = rng.choice(heavy)  # a heavy client every bucket
        if b == 200:
            x[1] = 60.0  # a far value opens a mode of its own
        idx = np.full(n, row, dtype=np.int64)
        bank.update(idx, b * 3600, np.sort(x), 1.0, 1.0)  # in value order, as the detector feeds it
        bank.penalize_samples(idx)
    p = bank.score(np.full(3, row, dtype=np.int64), 400 * 3600, np.array([2.0, 11.0, 60.0]), 1.0,
                   multi_bucket=False).probability
    assert p[0] > 0.05
    assert p[1] > 1e-9  # the heavy client's usual count: unusual at most
    assert p[2] < 1e-6 * p[1]  # a far larger count stays far more extreme


def test_population_mixture_pays_elastic_bic_term_per_bucket():
    """A row that took n samples in a bucket: its mixture's log weight drops by 0.5 (modes - 1) ln n
    (COneOfNPrior's k ln n with k = modes - 1); one sample a bucket (individual series) costs nothing."""
    from streamad.kernels import layout as L
    from streamad.kernels import series as K

    bank = SeriesBank(ModelParams(bucket_span=3600, seasonal=False, multi_bucket=False))
    row = bank.add(1)[0]
    S = bank.S
    c = L.MM
    S[row, c:c + 5] = (50.0, 0.0, 50.0, 25.5, 25.5)
    S[row, c + L.MM_STRIDE:c + L.MM_STRIDE + 5] = (50.0, 10.0, 50.0, 25.5, 25.5)
    lw = np.array([-1.0, 0.0, -2.0, -math.inf, -0.5])
    S[row, L.LW:L.LW + L.NCAND] = lw
    bank.penalize_samples(np.array([row]))  # one sample: unchanged
    assert np.array_equal(S[row, L.LW:L.LW + L.NCAND], lw)
    bank.penalize_samples(np.full(20, row))
    want = lw.copy()
    want[L.C_MULTIMODAL] -= 0.5 * math.log(20.0)
    want = np.where(np.isfinite(want), np.maximum(want - want[np.isfinite(want)].max(), -K.MAX_LOG_BF), want)
    assert np.allclose(S[row, L.LW:L.LW + L.NCAND], want) and S[row, L.LW + L.C_POISSON] == -math.inf
