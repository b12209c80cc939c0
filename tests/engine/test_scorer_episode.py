"""The job scorer's score quantiles learn the models' undiscounted probabilities.

A bucket that only repeats an open anomaly episode has its probability discounted by the model
(`series.episode_power`); its Leaf carries the undiscounted `model_probability`. The normalizers
must learn that one: a long episode whose repeats entered the quantiles discounted would teach them
that such scores are rarer than they are and lift every later moderate score.
"""

from __future__ import annotations

from streamad.config.job import Job
from streamad.engine.leaves import Leaf, LeafBatch
from streamad.engine.scorer import JobScorer
from streamad.scoring.rawscore import anomaly_score

SPAN = 600


def _job() -> Job:
    return Job.from_dict({
        "job_id": "t",
        "analysis_config": {"bucket_span": f"{SPAN}s", "detectors": [{"function": "mean", "field_name": "v"}],
                            "influencers": ["host"]},
        "data_description": {"time_field": "timestamp", "time_format": "epoch"},
    })


def _leaf(p: float, pm: float | None) -> list[LeafBatch]:
    leaf = Leaf(detector_index=0, function="mean", function_description="mean", field_name="v", partition=None,
                by=None, over=None, probability=p, actual=[1.0], typical=[0.0], model_probability=pm,
                influences={("host", "a"): 1.0})
    return [LeafBatch.of_leaves(_job().detectors[0], [leaf])]


def test_normalizers_learn_the_model_probability_and_score_the_discounted_one():
    plain, split = JobScorer(_job()), JobScorer(_job())
    for k in range(400):
        p = 1e-12 if k % 50 == 7 else 0.5
        plain.score_bucket(k * SPAN, _leaf(p, None), 1, False)
        split.score_bucket(k * SPAN, _leaf(p ** 0.5 if p < 0.1 else p, p), 1, False)
    # same quantiles and max scores in every normalizer (root, leaf, influencers): they learned the
    # same (undiscounted) probabilities
    assert len(plain.normalizers) == 4
    assert plain.state() == split.state()
    # a discounted repeat scores lower than the bucket it repeats, against the same history
    t = 400 * SPAN
    full = plain.score_bucket(t, _leaf(1e-12, None), 1, False)[0]["initial_anomaly_score"]
    half = split.score_bucket(t, _leaf(1e-6, 1e-12), 1, False)[0]["initial_anomaly_score"]
    assert 0.0 < half < full
    # and the raw score of the bucket is the discounted one
    assert split.history[-1][2][0][3] == anomaly_score(1e-6)
