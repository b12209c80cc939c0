"""SeriesBank state: bit-exact bytes, bounded size, robustness to bad values, pure forecasts."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from streamad.kernels import layout as L
from streamad.models import ModelParams, SeriesBank

DAY = 86400


def _feed(bank: SeriesBank, idx, n: int, span: int, seed: int, start: int = 0):
    rng = np.random.default_rng(seed)
    for b in range(n):
        t = start + b * span
        x = 50 + 10 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 2, idx.size)
        x[::7] = rng.poisson(3, x[::7].size)  # some integer, some spiky series
        if b % 97 == 50 or b >= n - 2:
            x[::3] += 40.0  # anomalies: open episodes are part of the state (and of the snapshot)
        # the engine's order: score, then learn with the probabilities given (anomaly episodes)
        bank.update(idx, t, x, 1.0, 1.0, bank.score(idx, t, x, 1.0))
    return start + n * span


def test_state_round_trips_bit_exactly_and_continues_identically():
    span = 1800
    bank = SeriesBank(ModelParams(bucket_span=span, side=1, nonnegative=True, integer=None))
    idx = bank.add(30)
    t = _feed(bank, idx, 5 * DAY // span, span, seed=1)
    bank.remove(idx[[3, 9]])
    assert (bank.S[idx, L.EP_LP] != 0.0).any()  # some anomaly episodes are open in the snapshot
    assert (bank.S[idx, L.AM_START] == bank.S[idx, L.AM_START]).any()  # and anomaly-model episodes
    assert (bank.S[idx, L.AM_MOD] > 3.0).any()  # with informative episode models
    blob = bank.to_bytes()
    copy = SeriesBank.from_bytes(blob)
    assert copy.to_bytes() == blob
    assert copy.params == bank.params and len(copy) == len(bank) == 28
    live = np.setdiff1d(idx, idx[[3, 9]])
    _feed(bank, live, 200, span, seed=2, start=t)
    _feed(copy, live, 200, span, seed=2, start=t)
    assert copy.to_bytes() == bank.to_bytes()
    x = np.linspace(0, 100, live.size)
    a = bank.score(live, t + 200 * span, x, 1.0)
    b = copy.score(live, t + 200 * span, x, 1.0)
    for name in ("probability", "p_single", "p_multi", "multi_bucket_impact", "typical", "lower", "upper",
                 "p_model"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    # recycled rows come back from the free list after a restore too
    assert sorted(copy.add(2).tolist()) == sorted(idx[[3, 9]].tolist())


def test_state_is_at_most_4kb_per_series():
    bank = SeriesBank(ModelParams(bucket_span=300))
    bank.add(1000)
    assert len(bank.to_bytes()) / 1000 <= 4096
    sub = bank.to_bytes(np.array([5, 6], dtype=np.int64))
    assert len(sub) <= 2 * 4096 + 64


def _v5_blob(bank: SeriesBank) -> bytes:
    """The bank's bytes as layout version 5 wrote them: 496 columns, the update counter in column
    7 and the last level-change time in column 72 (both never read, taken over by version 6)."""
    S = bank.S[: bank._size, : L.V5_NCOLS].copy()
    S[:, 7] = np.arange(S.shape[0]) + 100.0
    S[:, 72] = 12345.0
    blob = bank.to_bytes()
    head = struct.calcsize("<BiiQ") + struct.calcsize("<biB??d") + struct.calcsize("<?I")
    body = bank._size * L.NCOLS * 8
    version = struct.pack("<BiiQ", 5, L.V5_NCOLS, L.NPARAMS, bank._size)
    return version + blob[struct.calcsize("<BiiQ"):head] + S.tobytes() + blob[head + body:]


def test_version_5_state_restores_with_an_empty_anomaly_model_and_continues():
    span = 1800
    bank = SeriesBank(ModelParams(bucket_span=span, side=0))
    idx = bank.add(12)
    t = _feed(bank, idx, 3 * DAY // span, span, seed=4)
    bank.remove(idx[[2]])
    old = SeriesBank.from_bytes(_v5_blob(bank))
    assert old.S.shape[1] == L.NCOLS and len(old) == len(bank) == 11
    kept = [c for c in range(L.V5_NCOLS) if c not in (L.AM_START, L.AM_LEN)]
    assert np.array_equal(old.S[: bank._size, kept], bank.S[: bank._size, kept], equal_nan=True)
    assert np.isnan(old.S[: bank._size, L.AM_START]).all() and not old.S[: bank._size, L.AM_LEN].any()
    assert not old.S[: bank._size, L.V5_NCOLS:].any()
    # it continues (the anomaly model learns afresh) and saves as version 6
    live = np.setdiff1d(idx, idx[[2]])
    _feed(old, live, 100, span, seed=5, start=t)
    assert np.isfinite(old.score(live, t + 100 * span, np.full(live.size, 60.0), 1.0).probability).all()
    assert old.to_bytes()[0] == L.STATE_VERSION == 6
    # a pickled version 5 bank (inside an engine snapshot) is brought up to date the same way
    pickled = SeriesBank.from_bytes(_v5_blob(bank))
    pickled.S = pickled.S[:, : L.V5_NCOLS].copy()
    pickled.S[:, 7] = 3.0
    restored = pickle.loads(pickle.dumps(pickled))
    assert restored.S.shape[1] == L.NCOLS and np.isnan(restored.S[:, L.AM_START]).all()
    # and any other width is refused
    pickled.S = np.zeros((3, 300))
    with pytest.raises(ValueError, match="unsupported model state"):
        pickle.loads(pickle.dumps(pickled))


def test_bad_state_bytes_are_rejected_clearly():
    blob = bytearray(SeriesBank(ModelParams(bucket_span=60)).to_bytes())
    blob[0] = 99
    with pytest.raises(ValueError, match="version"):
        SeriesBank.from_bytes(bytes(blob))


def test_mismatched_batch_lengths_raise():
    bank = SeriesBank(ModelParams(bucket_span=60))
    idx = bank.add(3)
    with pytest.raises(ValueError):
        bank.update(idx, 0, np.ones(2), 1.0, 1.0)


@pytest.mark.parametrize("side", [-1, 0, 1])
def test_no_nan_ever_reaches_a_probability(side):
    span = 300
    bank = SeriesBank(ModelParams(bucket_span=span, side=side))
    idx = bank.add(8)
    rng = np.random.default_rng(side + 5)
    bad = [np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.0, 5e15]
    t = 0
    for b in range(1500):
        t = b * span if b < 700 else b * span + 40 * DAY  # a long gap
        x = np.array([
            7.25,                                 # constant (not integer: for integer data a
                                                  # step of 1 is within the rounding dither)
            rng.normal(0, 1),                     # noise
            float(rng.poisson(0.05)),             # sparse counts
            rng.normal(1e12, 1e3),                # huge level, tiny relative spread
            1e300 if b % 97 == 0 else 1.0,        # astronomically large outliers
            rng.choice(bad),                      # nonsense
            -1e-9 * b,                            # drifting near zero
            np.nan if b % 3 else rng.normal(),    # mostly missing
        ])
        before = bank.score(idx, t, x, 1.0)  # the engine's order: score, then learn (anomaly episodes)
        bank.update(idx, t, x, 1.0, np.where(b % 5 == 0, 0.0, 1.0), before)
        sc = bank.score(idx, t, x, np.where(b % 11 == 0, np.nan, 1.0))
        for arr in (sc.probability, sc.p_single, sc.p_multi, sc.p_model, before.probability, before.p_model):
            assert np.all(np.isfinite(arr)) and np.all(arr > 0.0) and np.all(arr <= 1.0), (b, arr)
        assert np.all(np.isfinite(sc.multi_bucket_impact)) and np.all(np.abs(sc.multi_bucket_impact) <= 5.0)
        assert np.all(np.isfinite(sc.typical)) and np.all(np.isfinite(sc.lower)) and np.all(np.isfinite(sc.upper))
    # the constant series: its own value is normal, anything else (on the scored side) is anomalous
    other = 6.25 if side < 0 else 8.25
    sc = bank.score(np.array([0, 0], dtype=np.int64), t, np.array([7.25, other]), 1.0)
    assert sc.probability[0] > 0.1 and sc.probability[1] < 1e-6


def test_bad_weights_and_values_leave_the_model_unchanged():
    bank = SeriesBank(ModelParams(bucket_span=60))
    idx = bank.add(1)
    for b in range(50):
        bank.update(idx, b * 60, np.array([float(b % 5)]), 1.0, 1.0)
    before = bank.to_bytes()
    bank.update(idx, 50 * 60, np.array([np.nan]), 1.0, 1.0)
    bank.update(idx, 50 * 60, np.array([np.inf]), 1.0, 1.0)
    bank.update(idx, 50 * 60, np.array([3.0]), 0.0, 1.0)
    bank.update(idx, 50 * 60, np.array([3.0]), np.nan, 1.0)
    assert bank.to_bytes() == before


def test_forecast_leaves_state_unchanged_and_widens_with_horizon():
    span = 3600
    bank = SeriesBank(ModelParams(bucket_span=span, nonnegative=True))
    idx = bank.add(4)
    t = _feed(bank, idx, 12 * DAY // span, span, seed=3)
    before = bank.to_bytes()
    times = t + np.arange(0, 7 * DAY, span)
    pred, lower, upper = bank.forecast(idx, times, 95.0)
    assert bank.to_bytes() == before
    assert pred.shape == (times.size, idx.size)
    assert np.all(lower <= pred) and np.all(pred <= upper) and np.all(lower >= 0.0)
    width = upper - lower
    same_phase = 6 * DAY // span  # six days on, same time of day (the variance scale is seasonal)
    assert np.all(width[same_phase] > width[0])
    # the daily shape carries into the forecast (series 1 is seasonal, not a count series)
    day = pred[: DAY // span, 1]
    assert day.max() - day.min() > 10.0
    # predict() at the next bucket is the first forecast step
    lo, med, up = bank.predict(idx, int(times[0]))
    assert np.allclose(med, pred[0]) and np.allclose(lo, lower[0])
    with pytest.raises(ValueError):
        bank.predict(idx, int(times[0]), percentile=100.0)
