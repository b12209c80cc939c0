"""Elastic's `data_counts` for a job: what came in, what was processed, what was rejected and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class DataCounts:
    processed_record_count: int = 0
    processed_field_count: int = 0
    input_bytes: int = 0
    input_field_count: int = 0
    invalid_date_count: int = 0
    missing_field_count: int = 0
    out_of_order_timestamp_count: int = 0
    empty_bucket_count: int = 0
    sparse_bucket_count: int = 0
    bucket_count: int = 0
    earliest_record_timestamp: int | None = None  # epoch ms
    latest_record_timestamp: int | None = None
    last_data_time: int | None = None
    latest_empty_bucket_timestamp: int | None = None
    latest_sparse_bucket_timestamp: int | None = None
    latest_bucket_timestamp: int | None = None
    input_record_count: int = 0
    malformed_record_count: int = 0  # streamad: undecodable events (not JSON/CSV); Elastic rejects those requests

    def record_input(self, nbytes: int, nfields: int) -> None:
        self.input_record_count += 1
        self.input_bytes += nbytes
        self.input_field_count += nfields

    def record_processed(self, t_ms: int, nfields: int, missing: int, now_ms: int | None = None) -> None:
        self.processed_record_count += 1
        self.processed_field_count += nfields
        self.missing_field_count += missing
        if self.earliest_record_timestamp is None or t_ms < self.earliest_record_timestamp:
            self.earliest_record_timestamp = t_ms
        if self.latest_record_timestamp is None or t_ms > self.latest_record_timestamp:
            self.latest_record_timestamp = t_ms
        self.last_data_time = now_ms if now_ms is not None else self.latest_record_timestamp

    def bucket(self, t_ms: int, empty: bool, sparse: bool) -> None:
        self.bucket_count += 1
        self.latest_bucket_timestamp = t_ms
        if empty:
            self.empty_bucket_count += 1
            self.latest_empty_bucket_timestamp = t_ms
        elif sparse:
            self.sparse_bucket_count += 1
            self.latest_sparse_bucket_timestamp = t_ms

    def to_dict(self, job_id: str) -> dict:
        out: dict = {"job_id": job_id}
        for k, v in asdict(self).items():
            if v is not None:
                out[k] = v
        return out

    def snapshot(self) -> dict:
        return asdict(self)

    @classmethod
    def restore(cls, state: dict) -> DataCounts:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names})
