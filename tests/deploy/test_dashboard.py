"""The Grafana dashboard (deploy/grafana/streamad.json) queries only metrics a real worker exports, with
labels those metrics have; the worker is started from the chart's env on the real broker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamad.runtime import metrics

from ..worker.harness import http, wait_for
from .conftest import JOB

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "streamad.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
# Labels Prometheus adds to every target scraped through the ServiceMonitor (or a plain scrape config).
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "endpoint", "container"}
PROMQL_WORDS = {"sum", "rate", "increase", "histogram_quantile", "max", "min", "count", "avg", "by", "without",
                "or", "and", "unless", "vector", "label_values", "time", "le"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(d: dict):
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows


def _queries(d: dict) -> list[str]:
    """Every PromQL expression: panel targets and templating variable queries."""
    out = [t["expr"] for p in _panels(d) for t in p.get("targets", [])]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            out.append(q["query"] if isinstance(q, dict) else q)
    assert out
    return out


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def _metric_names(expr: str) -> set[str]:
    """Identifiers used as metric names: followed by a selector, a range or a closing argument."""
    bare = re.sub(r"\[[^\]]*\]", "", _strip_strings(expr))  # ranges [$__rate_interval]
    bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", bare)  # grouping labels
    bare = re.sub(r"\blabel_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)", r"(\1)", bare)  # Grafana's (metric, label)
    names = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b\s*(\(?)", bare):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_WORDS or re.fullmatch(r"[0-9.e]+", word):
            continue
        # a label matcher's name inside {...} is not a metric
        before = bare[: m.start()]
        if before.count("{") > before.count("}"):
            continue
        names.add(word)
    return names


def _exported(name: str) -> str:
    """The family name a series name belongs to (histogram series -> the histogram)."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in metrics.METRIC_NAMES:
            return name[: -len(suffix)]
    return name


def _dashboard_metrics() -> set[str]:
    return {_exported(n) for q in _queries(_dashboard()) for n in _metric_names(q)}


def _label_names(metric: str) -> set[str]:
    for collector in metrics.REGISTRY._collector_to_names:  # noqa: SLF001 - the registry's own metrics
        if metric in metrics.REGISTRY._collector_to_names[collector]:  # noqa: SLF001
            return set(collector._labelnames)  # noqa: SLF001
    raise AssertionError(f"{metric} is not in streamad.runtime.metrics.REGISTRY")


def test_dashboard_covers_the_issue_panels():
    exprs = "\n".join(_queries(_dashboard()))
    for needle in ("rate(streamad_events_consumed_total", "sum by (reason)", "streamad_consumer_lag_records",
                   "histogram_quantile(0.5, sum by (le) (rate(streamad_bucket_finalization_seconds_bucket",
                   "histogram_quantile(0.99, sum by (le) (rate(streamad_bucket_finalization_seconds_bucket",
                   "sum by (result_type)", "sum by (severity)", "streamad_series_modelled",
                   "streamad_model_bytes", "streamad_memory_status"):
        assert needle in exprs, needle


def test_dashboard_metrics_are_the_workers():
    used = _dashboard_metrics()
    assert used, "no metric names parsed out of the dashboard"
    assert used <= set(metrics.METRIC_NAMES), used - set(metrics.METRIC_NAMES)
    # the parser sees what it should: every streamad_* word of the JSON is a parsed metric
    words = {_exported(w) for w in re.findall(r"streamad_[a-z_]+", DASHBOARD.read_text())}
    assert words == used, words ^ used


def test_dashboard_labels_exist_on_their_metrics():
    for expr in _queries(_dashboard()):
        flat = _strip_strings(expr)
        names = {_exported(n) for n in _metric_names(expr)}
        allowed = TARGET_LABELS | {"le"} | set().union(*(_label_names(n) for n in names))
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", flat):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in allowed, f"{label!r} grouped on but not a label of {names}: {expr}"
        for selector in re.findall(r"\{([^}]*)\}", flat):
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector):
                assert label in allowed, f"{label!r} matched on but not a label of {names}: {expr}"
        for arg in re.findall(r"label_values\([^,]*,\s*([a-zA-Z_]+)\)", flat):
            assert arg in allowed, expr


def test_dashboard_json_is_grafana_shaped():
    d = _dashboard()
    ids = [p["id"] for p in _panels(d)]
    assert len(ids) == len(set(ids))
    assert d["uid"] and d["schemaVersion"] >= 36
    names = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "namespace", "pod", "job_id"} <= names
    for p in _panels(d):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


@pytest.mark.kafka
def test_worker_exports_every_dashboard_metric(chart_worker):
    worker, _manifests, _run = chart_worker

    def scrape() -> str:
        status, body = http("GET", worker.url + "/metrics")
        assert status == 200
        return body.decode()

    def samples(text: str) -> dict[str, list]:
        out: dict[str, list] = {}
        for fam in text_string_to_metric_families(text):
            out.setdefault(fam.name, []).extend(fam.samples)
        return out

    def driven(text: str) -> bool:
        s = samples(text)
        return (any(x.name == "streamad_bucket_finalization_seconds_count" and x.value > 0
                    for x in s.get("streamad_bucket_finalization_seconds", []))
                and any(x.labels.get("reason") == "malformed" for x in s.get("streamad_events_rejected", []))
                and any(x.value > 0 for x in s.get("streamad_series_modelled", [])))

    text = wait_for(lambda: (lambda t: t if driven(t) else None)(scrape()), 180,
                    "the job's buckets, series and the malformed event in /metrics")
    for name in sorted(_dashboard_metrics()):
        assert f"# HELP {name} " in text, f"{name} is in the dashboard but not exported"
        assert re.search(rf"^# TYPE {name} (counter|gauge|histogram)$", text, re.M), name

    # and the series the dashboard groups by carry those labels, for the job the chart loaded
    by_name: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            by_name.setdefault(s.name, []).append(s.labels)
    for series, labels in [("streamad_events_consumed_total", {"job_id"}),
                           ("streamad_events_processed_total", {"job_id"}),
                           ("streamad_events_rejected_total", {"job_id", "reason"}),
                           ("streamad_bucket_finalization_seconds_bucket", {"job_id", "le"}),
                           ("streamad_results_emitted_total", {"job_id", "result_type"}),
                           ("streamad_series_modelled", {"job_id"}),
                           ("streamad_model_bytes", {"job_id"}),
                           ("streamad_memory_status", {"job_id", "status"}),
                           ("streamad_snapshot_bytes", {"job_id"}),
                           ("streamad_consumer_lag_records", {"topic"}),
                           ("streamad_jobs_open", set())]:
        assert by_name.get(series), f"no {series} samples"
        assert any(set(lbl) == labels and lbl.get("job_id", JOB) == JOB for lbl in by_name[series]), \
            (series, by_name[series][:3])
