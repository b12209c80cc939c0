"""The results index's retention, without Kafka."""

from __future__ import annotations

import time

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


def test_deleted_and_expired_forecasts_leave_the_index_and_stay_out_when_read_again():
    index = ResultsIndex(Settings())

    def forecast(fid, expiry=None):
        stats = {"_id": f"j_model_forecast_request_stats_{fid}", "job_id": "j", "forecast_id": fid,
                 "result_type": "model_forecast_request_stats", "forecast_status": "finished"}
        if expiry is not None:
            stats["forecast_expiry_timestamp"] = expiry
        return [{"_id": f"j_model_forecast_{fid}_{t}", "job_id": "j", "forecast_id": fid,
                 "result_type": "model_forecast", "timestamp": t} for t in (1, 2)] + [stats]

    now = int(time.time() * 1000)
    docs = forecast("a", expiry=now + 500) + forecast("b") + forecast("c", expiry=now + 2000)
    docs.append({"_id": "b1", "job_id": "j", "result_type": "bucket", "timestamp": 1})
    for doc in docs:
        index.add(doc)
    assert sorted(index.forecasts("j")) == ["a", "b", "c"]
    assert index.delete_forecasts("j", ["b"]) == 3
    assert sorted(index.forecasts("j")) == ["a", "c"]
    for doc in docs:  # the results topic read again (a restart): b stays out
        index.add(doc)
    assert sorted(index.forecasts("j")) == ["a", "c"]
    assert index.expire_forecasts("j", now + 1000) == ["a"]
    assert sorted(index.forecasts("j")) == ["c"] and index.expire_forecasts("j", now + 1000) == []
    assert sorted(index.docs["j"]) == ["b1", "j_model_forecast_c_1", "j_model_forecast_c_2",
                                       "j_model_forecast_request_stats_c"]


def test_a_forecast_already_expired_when_read_again_is_not_indexed():
    """After a restart the results topic is read again: a forecast that expired meanwhile goes as
    soon as its request stats (its last document) arrive, not at the next retention check."""
    index = ResultsIndex(Settings())
    past, future = int(time.time() * 1000) - 1, int(time.time() * 1000) + 3_600_000
    for fid, expiry in (("old", past), ("new", future)):
        index.add({"_id": f"j_model_forecast_{fid}_1", "job_id": "j", "forecast_id": fid,
                   "result_type": "model_forecast", "timestamp": 1})
        index.add({"_id": f"j_model_forecast_request_stats_{fid}", "job_id": "j", "forecast_id": fid,
                   "result_type": "model_forecast_request_stats", "forecast_status": "finished",
                   "forecast_expiry_timestamp": expiry})
    assert sorted(index.forecasts("j")) == ["new"]
    assert sorted(index.docs["j"]) == ["j_model_forecast_new_1", "j_model_forecast_request_stats_new"]
