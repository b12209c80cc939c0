"""Warm-up: load every numba kernel a job touches before a worker starts consuming.

numba loads a kernel from its on-disk cache on the first call in a process, about a second for all
of them. In a worker that first call sat inside the event loop, in the first bucket close and the
first snapshot, and showed as a quarter of a short benchmark's profile. `warm_kernels` runs a small
synthetic job (every kernel family: counts, metrics, distinct counts, rare, shards on the wire,
forecast, snapshot and restore) so that the cost is paid once, before Faust starts.
"""

from __future__ import annotations

import time

import orjson

from streamad.config.job import Job
from streamad.engine.forecast import ForecastRequest
from streamad.engine.job import JobEngine

_JOB = {
    "job_id": "streamad-warmup",
    "analysis_config": {
        "bucket_span": "1h",
        "detectors": [
            {"function": "count", "partition_field_name": "host"},
            {"function": "high_mean", "field_name": "bytes", "by_field_name": "host"},
            {"function": "distinct_count", "field_name": "url", "over_field_name": "client"},
            {"function": "rare", "by_field_name": "status"},
            {"function": "count", "by_field_name": "url"},
        ],
        "influencers": ["host", "client"],
    },
    "data_description": {"time_field": "timestamp", "time_format": "epoch_ms"},
    "model_plot_config": {"enabled": True},
}
_FORECAST_JOB = {
    "job_id": "streamad-warmup-forecast",
    "analysis_config": {
        "bucket_span": "1h",
        "detectors": [{"function": "mean", "field_name": "bytes", "partition_field_name": "host"}],
    },
    "data_description": {"time_field": "timestamp", "time_format": "epoch_ms"},
}
_BUCKETS = 30


def _events():
    """Noisy hourly events with an incident in bucket 25 (a spike, a scan, a new status), so that
    anomalous leaves meet in one bucket and the joint-probability kernels run too (a detector with
    40 by values: from 32 leaves a detector's probabilities are aggregated vectorised)."""
    noise = 12345
    for b in range(_BUCKETS):
        for k in range(48):
            noise = (noise * 1103515245 + 12345) % 2**31
            t = (1_700_000_000 + b * 3600 + k * 70) * 1000
            incident = b == 25 and k >= 40
            doc = {"timestamp": t, "host": f"h{k % 2}",
                   "bytes": 100.0 + (noise % 1000) / 50.0 + (5000.0 if incident else 0.0),
                   "url": f"/scan{k}" if incident else f"/u{k % 40}", "client": f"c{k % 3}",
                   "status": "503" if incident else ("200" if k else "404")}
            yield orjson.dumps(doc), doc


def warm_kernels() -> float:
    """Run the warm-up job; returns the seconds it took."""
    started = time.perf_counter()
    for spec in (_JOB, _FORECAST_JOB):
        engine = JobEngine(Job.from_dict(spec), lambda doc: None, shards=2, wire=True)
        for raw, doc in _events():
            engine.feed(raw, doc, None)
        engine = JobEngine.restore(engine.snapshot(), lambda doc: None)
        engine.finish()
        if spec is _FORECAST_JOB:  # population and rare jobs cannot be forecast
            engine.forecast(ForecastRequest("warmup", 6 * 3600, 0, 0))
    return time.perf_counter() - started
