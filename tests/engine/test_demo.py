"""The demo: each planted incident is found by the job that should find it (issue: pipeline)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streamad.commands.demo import JOBS, module_dir
from streamad.config.job import Job
from streamad.demo import weblogs
from streamad.demo.table import format_table, latest_records, top_anomalies
from streamad.engine.runner import Runner
from streamad.ingest.reader import read_records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "weblogs.ndjson"
    weblogs.write_ndjson(str(path))
    jobs = [Job.from_dict(orjson.loads(Path(module_dir(), f"{j}.json").read_bytes())) for j in JOBS]
    out: list[bytes] = []
    Runner(jobs, out.append).run(read_records(str(path), None))
    return out


def _docs(raw: list[bytes]) -> list[dict]:
    return [orjson.loads(b) for b in raw]


def _planted(rec: dict) -> bool:
    """True if a record is about a planted incident: its job's incident hour and entity, or the
    outage hour in any job (an outage empties every series)."""
    for inc in weblogs.incidents():
        if rec["timestamp"] == inc.start * 1000:
            if inc.kind == "outage":
                return True
            if rec["job_id"] == inc.job_id and inc.entity in (rec.get("over_field_value"),
                                                               rec.get("partition_field_value")):
                return True
    return False


def test_each_planted_incident_is_a_critical_anomaly_of_its_job(demo_run):
    records = latest_records(_docs(demo_run))
    for inc in weblogs.incidents():
        hits = [r for r in records if r["job_id"] == inc.job_id and r["timestamp"] == inc.start * 1000]
        assert hits, f"no record for {inc}"
        best = max(hits, key=lambda r: r["record_score"])
        assert best["record_score"] >= 75, (inc, best)
        if inc.entity:
            assert inc.entity in (best.get("over_field_value"), best.get("partition_field_value")), (inc, best)
        assert (best["actual"][0] > best["typical"][0]) == (inc.kind != "outage")


def test_planted_incidents_top_their_jobs_and_nothing_else_is_critical(demo_run):
    records = latest_records(_docs(demo_run))
    for job in JOBS:
        recs = sorted((r for r in records if r["job_id"] == job), key=lambda r: -r["record_score"])
        assert _planted(recs[0]), recs[0]
        others = [r for r in recs if not _planted(r) and r["record_score"] > 75]
        assert not others, others[:3]


def test_results_are_byte_identical_across_runs(demo_run, tmp_path):
    path = tmp_path / "weblogs.ndjson"
    weblogs.write_ndjson(str(path))
    jobs = [Job.from_dict(orjson.loads(Path(module_dir(), f"{j}.json").read_bytes())) for j in JOBS]
    again: list[bytes] = []
    Runner(jobs, again.append).run(read_records(str(path), None))
    assert b"".join(again) == b"".join(demo_run)


def test_renormalized_documents_keep_their_id_and_initial_score(demo_run):
    previous: dict[str, dict] = {}
    reemitted = 0
    for doc in _docs(demo_run):
        if doc["result_type"] != "record":
            continue
        before = previous.get(doc["_id"])
        if before is not None:
            reemitted += 1
            assert doc["initial_record_score"] == before["initial_record_score"]
            assert abs(doc["record_score"] - before["record_score"]) >= 0.5  # only moved scores go out
        previous[doc["_id"]] = doc
    assert reemitted > 0  # four weeks of history: early scores are revised as the normalizer learns


def test_table_shows_the_planted_incidents(demo_run):
    table = format_table(top_anomalies(_docs(demo_run), per_job=3))
    assert "10.99.1.7" in table and "response.keyword=404" in table and "low_request_rate" in table
    assert table.splitlines()[0].split()[:4] == ["job", "time", "(UTC)", "severity"]


def test_scripts_demo_runs_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "streamad", "demo", "--dir", str(tmp_path), "--per-job", "2"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "critical" in proc.stdout and (tmp_path / "results.ndjson").stat().st_size > 0
