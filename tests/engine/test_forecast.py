"""Forecasts: models projected forward without changing them (ELASTIC_MODEL §6.2, ELASTIC_API §4.8-4.9)."""

from __future__ import annotations

import math

import orjson
import pytest

from streamad.config.job import Job
from streamad.engine.forecast import ForecastRequest
from streamad.engine.job import JobEngine

HOUR = 3600
BASE = 472223 * HOUR  # an hour boundary
DAYS = 14


def _level(host_level: float, h: int) -> float:
    return host_level * (1 + 0.5 * math.sin(2 * math.pi * h / 24))


def _engine(detector: dict) -> tuple[JobEngine, list[dict]]:
    job = Job.from_dict({"job_id": "fc", "analysis_config": {"bucket_span": "1h", "detectors": [detector]},
                         "data_description": {"time_field": "t", "time_format": "epoch"}})
    out: list[dict] = []
    engine = JobEngine(job, out.append)
    for h in range(24 * DAYS):
        for host, level in (("a", 100.0), ("b", 10.0)):
            raw = orjson.dumps({"t": BASE + h * HOUR + 10, "host": host, "v": _level(level, h)})
            engine.feed(raw, orjson.loads(raw), None)
    engine.flush(advance_time=BASE + 24 * DAYS * HOUR)
    return engine, out


def _forecast(engine, out, duration_s: int) -> list[dict]:
    n = len(out)
    engine.forecast(ForecastRequest("f1", duration_s, 1_700_000_000_000, 14 * 86400))
    return out[n:]


def test_a_daily_pattern_is_projected_forward_with_bounds_and_the_state_is_unchanged():
    engine, out = _engine({"function": "mean", "field_name": "v", "by_field_name": "host"})
    before = engine.snapshot()
    docs = _forecast(engine, out, 2 * 86400)
    assert engine.snapshot() == before
    points, stats = docs[:-1], docs[-1]
    assert len(points) == 2 * 48 and len({d["_id"] for d in points}) == len(points)
    assert stats["result_type"] == "model_forecast_request_stats" and stats["forecast_status"] == "finished"
    assert stats["processed_record_count"] == 96
    assert stats["forecast_start_timestamp"] == (BASE + 24 * DAYS * HOUR) * 1000
    assert stats["forecast_end_timestamp"] == stats["forecast_start_timestamp"] + 2 * 86400 * 1000
    assert stats["forecast_expiry_timestamp"] == 1_700_000_000_000 + 14 * 86400 * 1000
    for d in points:
        h = (d["timestamp"] // 1000 - BASE) // HOUR
        truth = _level(100.0 if d["by_field_value"] == "a" else 10.0, h)
        assert d["forecast_lower"] <= d["forecast_prediction"] <= d["forecast_upper"]
        assert abs(d["forecast_prediction"] - truth) <= 0.15 * truth + 1.0, (h, d, truth)
        assert d["model_feature"] == "mean" and d["by_field_name"] == "host"


def test_the_horizon_stops_at_the_length_of_history_seen():
    engine, out = _engine({"function": "mean", "field_name": "v", "by_field_name": "host"})
    stats = _forecast(engine, out, 60 * 86400)[-1]
    assert stats["forecast_end_timestamp"] - stats["forecast_start_timestamp"] == DAYS * 86400 * 1000


@pytest.mark.parametrize("detector", [
    {"function": "count", "over_field_name": "host"},
    {"function": "rare", "by_field_name": "host"},
])
def test_population_and_rare_jobs_cannot_be_forecast(detector):
    engine, out = _engine(detector)
    docs = _forecast(engine, out, 86400)
    assert len(docs) == 1 and docs[0]["forecast_status"] == "failed"
    assert "cannot be forecast" in docs[0]["forecast_messages"][0]


def test_a_job_without_a_full_bucket_reports_a_failed_forecast():
    job = Job.from_dict({"job_id": "fc", "analysis_config": {"bucket_span": "1h", "detectors": [{"function": "count"}]},
                         "data_description": {"time_field": "t", "time_format": "epoch"}})
    out: list[dict] = []
    JobEngine(job, out.append).forecast(ForecastRequest("f0", 86400, 5, 0))
    assert [d["forecast_status"] for d in out] == ["failed"]
    assert "forecast_expiry_timestamp" not in out[0]


def test_streamad_run_forecast_flag_writes_the_same_forecast_twice(tmp_path):
    import subprocess
    import sys

    job = tmp_path / "job.json"
    job.write_bytes(orjson.dumps({"job_id": "cli", "analysis_config": {
        "bucket_span": "1h", "detectors": [{"function": "mean", "field_name": "v"}]},
        "data_description": {"time_field": "t", "time_format": "epoch"}}))
    data = tmp_path / "in.ndjson"
    data.write_bytes(b"".join(orjson.dumps({"t": BASE + h * HOUR + 5, "v": _level(40.0, h)}) + b"\n"
                              for h in range(24 * 5)))
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}.ndjson"
        subprocess.run([sys.executable, "-m", "streamad", "run", "--job", str(job), "--input", str(data),
                        "--output", str(out), "--forecast", "12h", "--quiet"], check=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    docs = [orjson.loads(line) for line in outs[0].splitlines()]
    points = [d for d in docs if d["result_type"] == "model_forecast"]
    assert len(points) == 12 and points[0]["timestamp"] == (BASE + 5 * 86400) * 1000
    assert docs[-1]["result_type"] == "model_forecast_request_stats" and docs[-1]["forecast_status"] == "finished"
