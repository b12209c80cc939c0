"""The Kafka worker on the real broker: same documents as `streamad run`, across crashes and
rebalances; dead letters; REST errors; /metrics over HTTP."""

from __future__ import annotations

import os
import uuid

import orjson
import pytest

from streamad.commands.demo import JOBS, module_dir
from streamad.config.job import Job
from streamad.demo import weblogs
from streamad.engine.runner import Runner
from streamad.ingest.reader import decode_json

from .harness import WorkerProc, http, produce, read_all, wait_for, worker_env

pytestmark = pytest.mark.kafka
DAYS = 8


def _job_bodies(topic: str) -> dict[str, dict]:
    out = {}
    for name in JOBS:
        with open(os.path.join(module_dir(), f"{name}.json"), "rb") as f:
            body = orjson.loads(f.read())
        body["datafeed_config"]["indices"] = [topic]
        out[name] = body
    return out


@pytest.fixture(scope="module")
def demo_events() -> list[bytes]:
    events = []
    for _t, doc in weblogs.generate(days=DAYS):
        events.append(orjson.dumps(doc))
    return events


def _embedded(bodies: dict[str, dict], events: list[bytes]) -> tuple[dict[str, bytes], dict[str, dict]]:
    """Last-wins documents by _id and the final data_counts of `streamad run` on the same input."""
    jobs = [Job.from_dict(bodies[name], job_id=name) for name in JOBS]
    out: list[bytes] = []
    runner = Runner(jobs, out.append)
    runner.run(decode_json(e) for e in events)
    docs = {}
    for line in out:
        doc = orjson.loads(line)
        docs[doc["_id"]] = line.rstrip(b"\n")
    counts = {e.job.job_id: e.counts.to_dict(e.job.job_id) for e in runner.engines}
    return docs, counts


def _start_jobs(url: str, bodies: dict[str, dict]) -> None:
    for name, body in bodies.items():
        status, resp = http("PUT", f"{url}/_ml/anomaly_detectors/{name}", body)
        assert status == 200, resp
        assert http("POST", f"{url}/_ml/anomaly_detectors/{name}/_open")[0] == 200
        status, resp = http("POST", f"{url}/_ml/datafeeds/datafeed-{name}/_start")
        assert status == 200 and resp["started"], resp


def _worker_docs(bootstrap: str, run: str) -> dict[str, bytes]:
    docs = {}
    for value in read_all(bootstrap, [f"streamad-results-{run}", f"streamad-annotations-{run}"]):
        doc = orjson.loads(value)
        if "result_type" in doc and doc["result_type"] != "model_size_stats":
            docs[doc["_id"]] = value
    return docs


def _counts(url: str, job: str) -> dict:
    status, body = http("GET", f"{url}/_ml/anomaly_detectors/{job}/_stats")
    assert status == 200, body
    return body["jobs"][0]["data_counts"]


def _finish(url_of, bodies, expected_counts, n_events: int) -> None:
    """Wait until every job has read every event, close the jobs, wait for their final counts."""
    for name in bodies:
        seen = []

        def read_all_events(name=name, seen=seen):
            seen.append(_counts(url_of(), name).get("input_record_count"))
            return seen[-1] == n_events
        try:
            wait_for(read_all_events, 240, f"{name} to read {n_events} events")
        except AssertionError:
            tasks = http("GET", url_of() + "/debug/tasks")[1]
            raise AssertionError(f"{name} read {seen[-5:]} of {n_events} events\n{tasks.decode()}") from None
    for name in bodies:
        status, resp = http("POST", f"{url_of()}/_ml/anomaly_detectors/{name}/_close")
        assert status == 200 and resp["closed"], resp
    for name in bodies:
        want = {k: v for k, v in expected_counts[name].items()}
        wait_for(lambda name=name, want=want: _counts(url_of(), name) == want, 120, f"{name} final data_counts")


def test_worker_documents_equal_streamad_run(kafka_bootstrap, tmp_path, demo_events):
    run = uuid.uuid4().hex[:8]
    topic = f"in-{run}"
    bodies = _job_bodies(topic)
    expected, counts = _embedded(bodies, demo_events)
    produce(kafka_bootstrap, topic, demo_events)
    worker = WorkerProc(worker_env(kafka_bootstrap, run), tmp_path / "w1", tmp_path / "w1.log").start()
    try:
        _start_jobs(worker.url, bodies)
        _finish(lambda: worker.url, bodies, counts, len(demo_events))
        got = _worker_docs(kafka_bootstrap, run)
        status, recs = http("GET", f"{worker.url}/_ml/anomaly_detectors/response_code_rates/results/records"
                                   "?record_score=50&desc=true&sort=record_score")
    finally:
        worker.stop()
    assert got.keys() == expected.keys()
    assert [k for k in expected if got[k] != expected[k]] == []
    assert status == 200 and recs["count"] >= 1
    assert recs["records"] == sorted(recs["records"], key=lambda r: -r["record_score"])
