"""Shared helpers of the benchmark sections: paths, jobs, generated inputs, RSS, result printing.

Every section is a script that prints its figures as one JSON object on its last stdout line, so
the driver (bench.py) can run it in a fresh process (clean RSS, no numba state carried between
sections) and still read its numbers.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import orjson  # noqa: E402

SAMPLE_JOBS = ("low_request_rate", "response_code_rates", "url_scanning")
MODULE_DIR = os.path.join(ROOT, "config", "modules", "sample_weblogs")
T0 = 1_700_438_400  # 2023-11-20T00:00:00Z, the web-log generator's start


def sample_job_bodies(topic: str | None = None) -> dict[str, dict]:
    """The three sample web-log job bodies (datafeed indices set to `topic` when given)."""
    out = {}
    for name in SAMPLE_JOBS:
        with open(os.path.join(MODULE_DIR, f"{name}.json"), "rb") as f:
            body = orjson.loads(f.read())
        if topic is not None:
            body["datafeed_config"]["indices"] = [topic]
        out[name] = body
    return out


def sample_jobs():
    from streamad.config.job import Job

    return [Job.from_dict(body, job_id=name) for name, body in sample_job_bodies().items()]


def highcard_body(job_id: str = "highcard", topic: str | None = None, span: str = "1h") -> dict:
    """`mean(value)` partitioned by `host`: one series per distinct host."""
    body = {
        "job_id": job_id,
        "description": "benchmark: mean of value by host (high cardinality)",
        "analysis_config": {
            "bucket_span": span,
            "detectors": [{"function": "mean", "field_name": "value", "partition_field_name": "host"}],
        },
        "analysis_limits": {"model_memory_limit": "64gb"},
        "data_description": {"time_field": "timestamp", "time_format": "epoch_ms"},
    }
    if topic is not None:
        body["datafeed_config"] = {"datafeed_id": f"datafeed-{job_id}", "job_id": job_id, "indices": [topic],
                                   "query": {"match_all": {}}}
    return body


def highcard_job(job_id: str = "highcard"):
    from streamad.config.job import Job

    return Job.from_dict(highcard_body(job_id))


def highcard_bucket(series: int, bucket: int, span: int = 3600, seed: int = 1) -> list[bytes]:
    """One event per series in bucket `bucket`, spread over the bucket, in time order."""
    rng = random.Random(seed * 1_000_003 + bucket)
    start_ms = (T0 + bucket * span) * 1000
    step = span * 1000 / series
    return [orjson.dumps({"timestamp": start_ms + int(s * step), "host": f"host-{s:07d}",
                          "value": round(100.0 + 10.0 * rng.random() + (s % 17), 3)})
            for s in range(series)]


def write_highcard(path: str, series: int, buckets: int, span: int = 3600) -> int:
    n = 0
    with open(path, "wb") as f:
        for b in range(buckets):
            lines = highcard_bucket(series, b, span)
            f.write(b"\n".join(lines) + b"\n")
            n += len(lines)
    return n


def weblog_events(days: int, base_rate: float) -> list[bytes]:
    from streamad.demo import weblogs

    return [orjson.dumps(doc) for _, doc in weblogs.generate(days=days, base_rate=base_rate)]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_bytes": mem,
            "python": sys.version.split()[0]}


def emit(result: dict) -> None:
    """The section's figures: one JSON object, the last line on stdout."""
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=True, default=float), flush=True)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def warm_numba() -> None:
    """Compile (or load from cache) every kernel a run touches: a small run of each job kind."""
    from streamad.engine.runner import Runner
    from streamad.ingest.reader import decode_json

    events = weblog_events(days=3, base_rate=20)
    Runner(sample_jobs(), lambda b: None).run(decode_json(e) for e in events)
    lines = highcard_bucket(50, 0) + highcard_bucket(50, 1) + highcard_bucket(50, 2)
    Runner([highcard_job()], lambda b: None).run(decode_json(e) for e in lines)
