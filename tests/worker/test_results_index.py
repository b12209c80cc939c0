"""The results index's retention, without Kafka."""

from __future__ import annotations

from streamad.runtime.results import ResultsIndex
from streamad.runtime.settings import Settings

DAY = 86_400_000


def test_results_older_than_the_retention_leave_the_index_and_the_rest_stays():
    index = ResultsIndex(Settings())
    docs = [{"_id": f"b{d}", "job_id": "j", "result_type": "bucket", "timestamp": d * DAY} for d in range(10)]
    docs += [{"_id": "a0", "job_id": "j", "result_type": "annotation", "timestamp": 0},
             {"_id": "j_data_counts", "job_id": "j", "result_type": "data_counts"},
             {"_id": "k0", "job_id": "k", "result_type": "bucket", "timestamp": 0},
             # a forecast is dated ahead: it neither moves the age reference nor is pruned by it
             {"_id": "f30", "job_id": "j", "result_type": "model_forecast", "timestamp": 30 * DAY}]
    for doc in docs:
        index.docs.setdefault(doc["job_id"], {})[doc["_id"]] = doc
    assert index.prune("j", 3) == 6  # days 0..5 are more than 3 days before day 9
    assert sorted(index.docs["j"]) == ["a0", "b6", "b7", "b8", "b9", "f30", "j_data_counts"]
    assert list(index.docs["k"]) == ["k0"]  # other jobs untouched
    assert index.prune("j", 3) == 0
    assert index.prune("nope", 3) == 0
