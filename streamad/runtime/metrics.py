"""Prometheus metrics of a worker, defined once (base units, `_total` counters, bounded labels).

Labels are job ids (bounded by the jobs configured), reasons (a fixed set), result types and
topics; series keys (by/over/partition values) never become labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_CONSUMED = Counter(
    "streamad_events_consumed_total", "Events read from input topics and routed to a job.",
    ["job_id"], registry=REGISTRY)
EVENTS_PROCESSED = Counter(
    "streamad_events_processed_total", "Events a job's engine accepted into a bucket.",
    ["job_id"], registry=REGISTRY)
EVENTS_REJECTED = Counter(
    "streamad_events_rejected_total", "Events a job rejected, by reason (sent to the dead-letter topic).",
    ["job_id", "reason"], registry=REGISTRY)
BUCKET_FINALIZATION = Histogram(
    "streamad_bucket_finalization_seconds", "Time to finalize one bucket of a job (model, score, documents).",
    ["job_id"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY)
RESULTS_EMITTED = Counter(
    "streamad_results_emitted_total", "Result documents published, by result type.",
    ["job_id", "result_type"], registry=REGISTRY)
ANOMALIES = Counter(
    "streamad_anomalies_total", "Final record results by Kibana severity band.",
    ["job_id", "severity"], registry=REGISTRY)
SERIES_MODELLED = Gauge(
    "streamad_series_modelled", "Series (by/over/partition combinations) a job models.",
    ["job_id"], registry=REGISTRY)
MODEL_BYTES = Gauge(
    "streamad_model_bytes", "Estimated model memory of a job in bytes.", ["job_id"], registry=REGISTRY)
MEMORY_STATUS = Gauge(
    "streamad_memory_status", "1 for the job's current memory status (ok, soft_limit, hard_limit).",
    ["job_id", "status"], registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "streamad_consumer_lag_records", "Records between this worker's position and the end of its input partitions.",
    ["topic"], registry=REGISTRY)
SNAPSHOT_BYTES = Gauge(
    "streamad_snapshot_bytes", "Size of a job's last engine snapshot written to the state table.",
    ["job_id"], registry=REGISTRY)
JOBS_OPEN = Gauge("streamad_jobs_open", "Jobs this worker runs an engine for.", registry=REGISTRY)

MEMORY_STATUSES = ("ok", "soft_limit", "hard_limit")
REJECT_REASONS = ("malformed", "invalid_date", "out_of_order", "closed_job")

METRIC_NAMES = (
    "streamad_events_consumed_total", "streamad_events_processed_total", "streamad_events_rejected_total",
    "streamad_bucket_finalization_seconds", "streamad_results_emitted_total", "streamad_anomalies_total",
    "streamad_series_modelled", "streamad_model_bytes", "streamad_memory_status",
    "streamad_consumer_lag_records", "streamad_snapshot_bytes", "streamad_jobs_open",
)


def set_memory_status(job_id: str, status: str) -> None:
    for s in MEMORY_STATUSES:
        MEMORY_STATUS.labels(job_id, s).set(1.0 if s == status else 0.0)
