"""The score normalizer (ELASTIC_MODEL §4.3) on synthetic probability streams."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamad.scoring.normalizer import QUANTILE_DECAY_INTERVALS, Normalizer
from streamad.scoring.rawscore import MAX_ANOMALOUS_PROBABILITY, anomaly_score


def _bucket(norm: Normalizer, p: float) -> float:
    """What the job scorer does for one final bucket: update, normalize, close the bucket."""
    s = anomaly_score(p) if p < MAX_ANOMALOUS_PROBABILITY else 0.0
    norm.update(s)
    out = norm.normalize(s, p)
    norm.end_bucket()
    return out


def test_largest_anomaly_maps_to_about_100_and_noise_stays_below_25():
    """Relative to what has been seen: once a real anomaly has been, calibrated noise (uniform p,
    its most extreme buckets included) scores below 25, and a larger anomaly scores higher."""
    norm = Normalizer(300)
    rng = np.random.default_rng(2)
    for p in rng.uniform(0.0, 1.0, 2000):
        _bucket(norm, float(p))
    assert _bucket(norm, 1e-40) > 90.0
    later = [_bucket(norm, float(p)) for p in rng.uniform(0.0, 1.0, 4000)]
    assert max(later) < 25.0
    assert _bucket(norm, 1e-12) < _bucket(norm, 1e-60)


@pytest.mark.parametrize("span", [60, 300, 1800, 3600, 86400])
def test_max_scores_and_digest_age_at_elastic_rates(span):
    """Max scores age by exp(-2 d') per bucket, d' = 0.0005 min(1, bl/1800) max(bl/1800, 1); the
    digest by exp(-0.0005 min(1, bl/1800)) once every QUANTILE_DECAY_INTERVALS sampling intervals."""
    norm = Normalizer(span)
    norm.update(10.0)
    norm.end_bucket()
    start_total = norm.digest.total
    buckets = 40
    for _ in range(buckets):
        norm.update(0.0)
        norm.end_bucket()
    rate = 0.0005 * min(1.0, span / 1800.0) * max(span / 1800.0, 1.0)
    assert norm.max_scores[""][0] == pytest.approx(10.0 * math.exp(-2.0 * rate * (buckets + 1)), rel=1e-12)
    fed = (buckets + 1) // norm.count_per_sample
    agings = fed // QUANTILE_DECAY_INTERVALS
    weights = np.arange(fed)  # sample j is aged once per decay point after it
    expect = sum(math.exp(-0.0005 * min(1.0, span / 1800.0)) ** (agings - min(j // QUANTILE_DECAY_INTERVALS, agings))
                 for j in weights)
    assert start_total <= 1.0
    assert norm.digest.total == pytest.approx(expect, rel=1e-12)


def test_state_round_trips_and_continues_identically():
    rng = np.random.default_rng(9)
    a = Normalizer(600)
    for p in rng.uniform(0.0, 0.1, 300):
        _bucket(a, float(p))
    b = Normalizer.from_state(a.to_state(), 600)
    assert b.to_state() == a.to_state()
    for p in rng.uniform(0.0, 0.1, 100):
        assert _bucket(a, float(p)) == _bucket(b, float(p))
    assert b.to_state() == a.to_state()


def test_digest_queries_equal_plain_sums_through_adds_ages_and_pickles():
    """The digest's cached prefix sums answer exactly as sums over its centroids do, however the
    adds, compressions, agings and pickle round trips interleave."""
    import bisect
    import pickle
    import random

    from streamad.scoring.normalizer import Digest

    def reference(d, key, q):
        below = sum(d.weights[:bisect.bisect_left(d.keys, key)]) / d.total
        at = sum(d.weights[:bisect.bisect_right(d.keys, key)]) / d.total
        acc, quant = 0.0, d.keys[-1]
        for k, w in zip(d.keys, d.weights):
            acc += w
            if acc >= q * d.total:
                quant = k
                break
        return below, at, quant

    rng = random.Random(7)
    d = Digest()
    d.add(0)
    for _ in range(4000):
        op = rng.random()  # each change comes after a query, so a stale cache would be read
        if op < 0.8:
            d.add(rng.choice([0, 0, 0, rng.randrange(1, 100_000)]), rng.choice([1.0, 0.5, 2.0]))
        elif op < 0.95:
            d.age(rng.choice([0.97, 0.5]))
        else:
            d = pickle.loads(pickle.dumps(d))
        key, q = rng.randrange(0, 100_000), rng.choice([0.0, 0.1, 0.5, 0.9, 1.0])
        assert (d.fraction_below(key), d.fraction_at_or_below(key), d.quantile(q)) == reference(d, key, q)
