"""Job validation: each of Elastic's rules has a failing and a passing case; defaults are Elastic's."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamad.config.errors import ConfigError
from streamad.config.filters import Filter
from streamad.config.job import Job, default_query_delay_ms, java_string_hash
from streamad.config.units import parse_bytesize, parse_duration

ROOT = Path(__file__).resolve().parents[2]
REF = Path("/work/shared/reference") if Path("/work/shared/reference").exists() else ROOT.parent / "shared" / "reference"

BASE = {
    "analysis_config": {
        "bucket_span": "15m",
        "detectors": [{"function": "mean", "field_name": "responsetime", "by_field_name": "airline"}],
        "influencers": ["airline"],
    },
    "data_description": {"time_field": "timestamp"},
}


def with_(path: str, value):
    body = copy.deepcopy(BASE)
    target = body
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target.setdefault(k, {})
    if isinstance(target, list):
        target[int(keys[-1])] = value
    elif value is None:
        target.pop(keys[-1], None)
    else:
        target[keys[-1]] = value
    return body


def det(**kw):
    return with_("analysis_config.detectors", [kw])


FAILING = [
    ("bad id", {**BASE, "job_id": "Bad_ID"}, "job_id", "id_format"),
    ("id ends with -", {**BASE, "job_id": "abc-"}, "job_id", "id_format"),
    ("id too long", {**BASE, "job_id": "a" * 65}, "job_id", "id_format"),
    ("no detectors", with_("analysis_config.detectors", []), "analysis_config.detectors", "detectors_required"),
    ("count with field", det(function="count", field_name="x"), "analysis_config.detectors[0].field_name", "field_name_forbidden"),
    ("mean without field", det(function="mean"), "analysis_config.detectors[0].field_name", "field_name_required"),
    ("rare without by", det(function="rare"), "analysis_config.detectors[0].by_field_name", "by_field_name_required"),
    ("freq_rare without over", det(function="freq_rare", by_field_name="b"), "analysis_config.detectors[0].over_field_name", "over_field_name_required"),
    ("lat_long without field", det(function="lat_long"), "analysis_config.detectors[0].field_name", "field_name_required"),
    ("unknown function", det(function="mode", field_name="x"), "analysis_config.detectors[0].function", "function_unknown"),
    ("quote in field", det(function="mean", field_name='a"b'), "analysis_config.detectors[0].field_name", "field_name_characters"),
    ("backslash in by", det(function="count", by_field_name="a\\b"), "analysis_config.detectors[0].by_field_name", "field_name_characters"),
    ("metric with summary count", {**with_("analysis_config.summary_count_field_name", "doc_count"),
                                   "analysis_config": {**BASE["analysis_config"], "summary_count_field_name": "doc_count",
                                                       "detectors": [{"function": "metric", "field_name": "x"}]}},
     "analysis_config.detectors[0].function", "metric_with_summary_count"),
    ("filters and analyzer", {**BASE, "analysis_config": {**BASE["analysis_config"], "categorization_field_name": "msg",
                                                           "categorization_filters": ["x"], "categorization_analyzer": "standard"}},
     "analysis_config.categorization_filters", "categorization_filters_analyzer_exclusive"),
    ("mlcategory without categorization", det(function="count", by_field_name="mlcategory"), "analysis_config.detectors[0].by_field_name", "mlcategory_needs_categorization"),
    ("prune window not multiple", with_("analysis_config.model_prune_window", "20m"), "analysis_config.model_prune_window", "model_prune_window_multiple"),
    ("rule without scope or conditions", det(function="mean", field_name="x", custom_rules=[{"actions": ["skip_result"]}]),
     "analysis_config.detectors[0].custom_rules[0]", "rule_scope_or_conditions"),
    ("rare rule on actual", det(function="rare", by_field_name="b", custom_rules=[{"conditions": [{"applies_to": "actual", "operator": "gt", "value": 1}]}]),
     "analysis_config.detectors[0].custom_rules[0].conditions[0].applies_to", "rule_condition_time_only"),
    ("scope on foreign field", det(function="mean", field_name="x", by_field_name="b", custom_rules=[{"scope": {"host": {"filter_id": "safe"}}}]),
     "analysis_config.detectors[0].custom_rules[0].scope.host", "rule_scope_field"),
    ("missing filter", det(function="mean", field_name="x", by_field_name="b", custom_rules=[{"scope": {"b": {"filter_id": "nope"}}}]),
     "analysis_config.detectors[0].custom_rules[0].scope.b.filter_id", "rule_filter_exists"),
    ("sub-second latency", with_("analysis_config.latency", "500ms"), "analysis_config.latency", "latency_minimum"),
    ("small memory limit", {**BASE, "analysis_limits": {"model_memory_limit": "512kb"}}, "analysis_limits.model_memory_limit", "byte_size_minimum"),
    ("bad time unit", with_("analysis_config.bucket_span", "15 minutes"), "analysis_config.bucket_span", "time_value_format"),
    ("unknown field", with_("analysis_config.bucket_spam", "5m"), "analysis_config.bucket_spam", "unknown_field"),
    ("histogram must divide span", {**BASE, "datafeed_config": {"indices": ["t"], "aggregations": {"b": {"date_histogram": {"field": "timestamp", "fixed_interval": "7m"}}}}},
     "datafeed_config.aggregations", "histogram_interval_divides_bucket_span"),
    ("unsupported query", {**BASE, "datafeed_config": {"indices": ["t"], "query": {"geo_shape": {"x": {}}}}}, "datafeed_config.query.geo_shape", "query_not_supported"),
    ("pipeline aggregation", {**BASE, "datafeed_config": {"indices": ["t"], "aggregations": {"b": {"date_histogram": {"field": "timestamp", "fixed_interval": "5m"},
                                                                                                     "aggs": {"d": {"derivative": {"buckets_path": "x"}}}}}}},
     "datafeed_config.aggregations.b.d.derivative", "aggregation_not_supported"),
    ("script fields", {**BASE, "datafeed_config": {"indices": ["t"], "script_fields": {"x": {}}}}, "datafeed_config.script_fields", "script_fields_not_supported"),
]


@pytest.mark.parametrize("name,body,field,rule", FAILING, ids=[f[0] for f in FAILING])
def test_rule_violations_name_field_and_rule(name, body, field, rule):
    body = {"job_id": "j1", **body} if "job_id" not in body else body
    with pytest.raises(ConfigError) as err:
        Job.from_dict(body, filters={"safe": Filter.from_dict({"filter_id": "safe", "items": ["a*"]})})
    assert (err.value.field, err.value.rule) == (field, rule)
    assert field in str(err.value) and rule in str(err.value)


PASSING = [
    ("id with dash and underscore", {**BASE, "job_id": "a-b_c9"}),
    ("count without field", det(function="count", by_field_name="b")),
    ("aliases", det(function="avg", field_name="x")),
    ("rare with by", det(function="rare", by_field_name="b")),
    ("freq_rare", det(function="freq_rare", by_field_name="b", over_field_name="o")),
    ("lat_long", det(function="lat_long", field_name="loc")),
    ("summary count with mean", with_("analysis_config.summary_count_field_name", "doc_count")),
    ("categorization", {**BASE, "analysis_config": {**BASE["analysis_config"], "categorization_field_name": "msg",
                                                     "categorization_filters": ["\\d+"], "detectors": [{"function": "count", "by_field_name": "mlcategory"}]}}),
    ("prune window multiple", with_("analysis_config.model_prune_window", "30m")),
    ("rule with condition", det(function="mean", field_name="x", custom_rules=[{"conditions": [{"applies_to": "actual", "operator": "lt", "value": 5}]}])),
    ("rare rule on time", det(function="rare", by_field_name="b", custom_rules=[{"conditions": [{"applies_to": "time", "operator": "gte", "value": 0}]}])),
    ("scope with existing filter", det(function="mean", field_name="x", by_field_name="b", custom_rules=[{"scope": {"b": {"filter_id": "safe", "filter_type": "exclude"}}}])),
    ("latency 2s", with_("analysis_config.latency", "2s")),
    ("memory limit bare number", {**BASE, "analysis_limits": {"model_memory_limit": 64}}),
    ("aggregated datafeed", {**BASE, "analysis_config": {**BASE["analysis_config"], "summary_count_field_name": "doc_count"},
                             "datafeed_config": {"indices": ["t"], "aggregations": {"b": {"date_histogram": {"field": "timestamp", "fixed_interval": "5m"},
                                                                                          "aggs": {"timestamp": {"max": {"field": "timestamp"}}}}}}}),
]


@pytest.mark.parametrize("name,body", PASSING, ids=[p[0] for p in PASSING])
def test_valid_jobs_pass(name, body):
    body = {"job_id": "j1", **body} if "job_id" not in body else body
    job = Job.from_dict(body, filters={"safe": Filter.from_dict({"filter_id": "safe", "items": ["a*"]})})
    again = Job.from_dict(job.to_dict(), filters={"safe": Filter.from_dict({"filter_id": "safe", "items": ["a*"]})})
    assert again.to_dict() == job.to_dict()


def test_defaults_are_elastics():
    job = Job.from_dict({"analysis_config": {"detectors": [{"function": "count"}]}, "data_description": {}}, "defaults", now_ms=123)
    d = job.to_dict()
    assert d["analysis_config"]["bucket_span"] == "5m"
    assert d["analysis_limits"] == {"model_memory_limit": "1024mb", "categorization_examples_limit": 4}
    assert d["model_snapshot_retention_days"] == 10 and d["daily_model_snapshot_retention_after_days"] == 1
    assert d["results_index_name"] == "shared" and d["allow_lazy_open"] is False
    assert d["analysis_config"]["model_prune_window"] == "30d"
    assert d["analysis_config"]["detectors"][0]["detector_index"] == 0
    assert d["analysis_config"]["detectors"][0]["detector_description"] == "count"
    assert d["data_description"] == {"time_field": "time", "time_format": "epoch"}
    assert (d["job_type"], d["create_time"]) == ("anomaly_detector", 123) and d["job_version"]
    long_span = Job.from_dict({"analysis_config": {"bucket_span": "3d", "detectors": [{"function": "count"}]}}, "x")
    assert long_span.analysis_config.model_prune_window_s == 60 * 86400  # 20 x bucket_span beats 30d


def test_units():
    assert parse_duration("90000ms", "f") == 90.0 and parse_duration("2h", "f") == 7200
    assert parse_duration("10micros", "f") == pytest.approx(1e-5) and parse_duration("3nanos", "f") == pytest.approx(3e-9)
    assert parse_bytesize("10mb", "f") == 10 << 20 and parse_bytesize(2, "f") == 2 << 20 and parse_bytesize("1gb", "f") == 1 << 30
    with pytest.raises(ConfigError):
        parse_duration(5, "f")


def test_java_hash_and_query_delay_match_java():
    # Values computed by the JDK: "hello".hashCode() and new Random(seed).longs(60000, 120000) first value.
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("") == 0
    delay = default_query_delay_ms("high_sum_total_sales")
    assert 60000 <= delay < 120000
    assert default_query_delay_ms("high_sum_total_sales") == delay  # deterministic per job


def test_seed_create_job_example_validates():
    # The create-job example of seeds/004 (its braces are lost in the seed text; rebuilt here) and the
    # response Elastic documents for it, minus job_version and create_time.
    assert "PUT _ml/anomaly_detectors/total-requests" in (REF / "seeds" / "004_59b5e33356a1396d.txt").read_text()
    body = {"description": "Total sum of requests",
            "analysis_config": {"bucket_span": "10m",
                                "detectors": [{"detector_description": "Sum of total", "function": "sum", "field_name": "total"}]},
            "data_description": {"time_field": "timestamp", "time_format": "epoch_ms"}}
    d = Job.from_dict(body, "total-requests", now_ms=1562352500629).to_dict()
    assert d == {
        "job_id": "total-requests", "job_type": "anomaly_detector", "job_version": d["job_version"],
        "create_time": 1562352500629, "description": "Total sum of requests",
        "analysis_config": {"bucket_span": "10m",
                            "detectors": [{"detector_description": "Sum of total", "function": "sum",
                                           "field_name": "total", "detector_index": 0}],
                            "influencers": [], "model_prune_window": "30d"},
        "analysis_limits": {"model_memory_limit": "1024mb", "categorization_examples_limit": 4},
        "data_description": {"time_field": "timestamp", "time_format": "epoch_ms"},
        "model_snapshot_retention_days": 10, "daily_model_snapshot_retention_after_days": 1,
        "results_index_name": "shared", "allow_lazy_open": False,
    }


def test_sample_weblog_modules_validate_and_round_trip(tmp_path):
    files = sorted((ROOT / "config" / "modules" / "sample_weblogs").glob("*.json"))
    assert [f.stem for f in files] == ["low_request_rate", "response_code_rates", "url_scanning"]
    for f in files:
        out = subprocess.run([sys.executable, "-m", "streamad", "jobs", "validate", str(f)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        shown = json.loads(out.stdout)
        assert shown["analysis_limits"]["model_memory_limit"] == "10mb"
        assert shown["datafeed_config"]["indices"] == ["kibana_sample_data_logs"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"job_id": "x", "analysis_config": {"detectors": [{"function": "mean"}]}}))
    out = subprocess.run([sys.executable, "-m", "streamad", "jobs", "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "field_name_required" in out.stderr


def test_kibana_export_import_round_trip(tmp_path):
    src = REF / "elastic" / "anomaly_detection_jobs.example.json"
    out_dir = tmp_path / "jobs"
    r = subprocess.run([sys.executable, "-m", "streamad", "jobs", "import", str(src), "--out", str(out_dir)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exported = tmp_path / "export.json"
    r = subprocess.run([sys.executable, "-m", "streamad", "jobs", "export", *sorted(map(str, out_dir.glob("*.json"))),
                        "--output", str(exported)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    original = json.loads(src.read_text())
    again = json.loads(exported.read_text())
    assert [o["job"]["job_id"] for o in again] == sorted(o["job"]["job_id"] for o in original)
    by_id = {o["job"]["job_id"]: o for o in original}
    for item in again:
        ref = by_id[item["job"]["job_id"]]
        assert item["job"]["analysis_config"] == ref["job"]["analysis_config"]
        assert item["datafeed"]["query"] == ref["datafeed"]["query"]
        assert item["datafeed"].get("aggregations") == ref["datafeed"].get("aggregations")
