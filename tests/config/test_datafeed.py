"""Datafeed: the query DSL subset on hand-written documents, and aggregations reproducing Elastic's summary docs.

Expected summary documents follow Elasticsearch's AggregationToJsonProcessor: one document per leaf bucket,
the time from the `max(<time_field>)` aggregation (epoch ms), one key per metric aggregation named after the
aggregation, and `doc_count`. Tests marked xfail(strict) document divergences from Elasticsearch.
"""

from __future__ import annotations

import io

import orjson
import pytest

from streamad.config.errors import ConfigError
from streamad.config.job import Job
from streamad.datafeed.aggregation import DatafeedAggregator, histogram_interval_s
from streamad.datafeed.query import compile_query
from streamad.engine.runner import Runner
from streamad.ingest.reader import iter_csv

T0 = 1700438400  # 2023-11-20T00:00:00Z
T0_MS = T0 * 1000


def matches(dsl: dict, docs: list[dict]) -> list[bool]:
    pred = compile_query(dsl)
    return [pred(d) for d in docs]


# --------------------------------------------------------------------------------------------- query
def test_match_all_and_match_none():
    assert matches({"match_all": {}}, [{}, {"a": 1}]) == [True, True]
    assert matches({"match_all": {"boost": 1.0}}, [{}]) == [True]
    assert matches({"match_none": {}}, [{}, {"a": 1}]) == [False, False]


def test_term():
    docs = [{"status": "error"}, {"status": "Error"}, {"status": ["ok", "error"]}, {"status": None}, {},
            {"status": {"x": "error"}}, {"other": "error"}]
    assert matches({"term": {"status": "error"}}, docs) == [True, False, True, False, False, False, False]
    assert matches({"term": {"status": {"value": "error", "boost": 2}}}, docs)[:3] == [True, False, True]
    assert matches({"term": {"status": {"value": "ERROR", "case_insensitive": True}}}, docs)[:3] == [True, True, True]


def test_term_numbers_booleans_and_keyword():
    docs = [{"code": 404}, {"code": "404"}, {"code": 404.0}, {"code": 500}, {"code": True}]
    assert matches({"term": {"code": 404}}, docs) == [True, True, True, False, False]
    assert matches({"term": {"code": "404"}}, docs) == [True, True, True, False, False]
    assert matches({"term": {"code.keyword": "404"}}, docs) == [True, True, True, False, False]
    assert matches({"term": {"code": True}}, docs) == [False, False, False, False, True]
    assert matches({"term": {"code": "true"}}, docs) == [False, False, False, False, True]
    assert matches({"term": {"flag": False}}, [{"flag": False}, {"flag": 0}, {"flag": "false"}]) == [True, False, True]
    assert matches({"term": {"n.keyword": "1.5"}}, [{"n": 1.5}]) == [True]
    assert matches({"term": {"host.name": "web"}}, [{"host": {"name": "web"}}, {"host.name": "web"}, {"host": "web"}]) == [
        True, True, False]


def test_terms():
    docs = [{"h": "a"}, {"h": "b"}, {"h": "c"}, {"h": ["c", "a"]}, {"h": 1}, {}, {"h": None}]
    assert matches({"terms": {"h": ["a", "b"]}}, docs) == [True, True, False, True, False, False, False]
    assert matches({"terms": {"h": ["1"], "boost": 1.0}}, docs) == [False, False, False, False, True, False, False]
    assert matches({"terms": {"h": []}}, docs) == [False] * len(docs)


def test_range_numbers():
    docs = [{"v": 5}, {"v": 10}, {"v": 15}, {"v": "12"}, {"v": "x"}, {"v": [1, 12]}, {}, {"v": True}, {"v": None}]
    assert matches({"range": {"v": {"gt": 5, "lte": 12}}}, docs) == [False, True, False, True, False, True, False,
                                                                     False, False]
    assert matches({"range": {"v": {"gte": 5, "lt": 10}}}, docs)[:3] == [True, False, False]
    assert matches({"range": {"v": {"from": 10, "to": 15}}}, docs)[:3] == [False, True, True]
    assert matches({"range": {"v": {"gte": "10"}}}, docs)[:3] == [False, True, True]
    assert matches({"range": {"v": {"gt": None, "lt": 6}}}, docs)[:2] == [True, False]
    assert matches({"range": {"v": {"gte": 1.5}}}, [{"v": 1.5}, {"v": 1.4999}]) == [True, False]


def test_range_dates():
    iso = {"range": {"@timestamp": {"gte": "2023-11-20T00:00:00Z", "lt": "2023-11-20T01:00:00+00:00"}}}
    docs = [{"@timestamp": T0_MS}, {"@timestamp": T0_MS - 1}, {"@timestamp": T0_MS + 3600_000},
            {"@timestamp": "2023-11-20T00:30:00Z"}, {"@timestamp": "2023-11-19T23:59:59Z"},
            {"@timestamp": "2023-11-20T02:00:00+02:00"}, {"@timestamp": "garbage"}, {}]
    assert matches(iso, docs) == [True, False, False, True, False, True, False, False]
    millis = {"range": {"@timestamp": {"gte": str(T0_MS), "lt": str(T0_MS + 3600_000), "format": "epoch_millis"}}}
    assert matches(millis, docs[:3]) == [True, False, False]


def test_bool():
    docs = [{"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 2}, {"a": 2, "b": 1}, {"a": 1, "c": 1}, {}]
    assert matches({"bool": {"must": [{"term": {"a": 1}}], "must_not": [{"term": {"b": 2}}]}}, docs) == [
        True, False, False, True, False]
    assert matches({"bool": {"filter": {"term": {"a": 1}}}}, docs) == [True, True, False, True, False]
    # should alone: at least one must match
    assert matches({"bool": {"should": [{"term": {"b": 1}}, {"term": {"c": 1}}]}}, docs) == [
        True, False, True, True, False]
    # should next to must/filter: optional unless minimum_should_match says otherwise
    assert matches({"bool": {"must": {"term": {"a": 1}}, "should": [{"term": {"c": 1}}]}}, docs) == [
        True, True, False, True, False]
    assert matches({"bool": {"filter": [{"term": {"a": 1}}], "should": [{"term": {"c": 1}}],
                             "minimum_should_match": 1}}, docs) == [True, False, False, True, False]
    three = [{"term": {"a": 1}}, {"term": {"b": 1}}, {"term": {"c": 1}}]
    assert matches({"bool": {"should": three, "minimum_should_match": 2}}, docs) == [True, False, False, True, False]
    assert matches({"bool": {"should": three, "minimum_should_match": "100%"}}, docs) == [True, False, False, False,
                                                                                        False]
    assert matches({"bool": {"should": three, "minimum_should_match": "-1"}}, docs) == [True, False, False, True, False]
    assert matches({"bool": {"should": three, "minimum_should_match": 4}}, docs) == [False] * 5
    assert matches({"bool": {}}, docs) == [True] * 5
    nested = {"bool": {"must_not": {"bool": {"should": [{"term": {"a": 2}}, {"bool": {"must_not": {"exists": {
        "field": "a"}}}}]}}}}
    assert matches(nested, docs) == [True, True, False, True, False]


def test_minimum_should_match_percentage_rounds_down():
    three = [{"term": {"a": 1}}, {"term": {"b": 1}}, {"term": {"c": 1}}]
    # 67% of 3 = 2.01 -> 2 clauses (Elasticsearch rounds down)
    assert matches({"bool": {"should": three, "minimum_should_match": "67%"}},
                   [{"a": 1, "b": 1}, {"a": 1}]) == [True, False]
    assert matches({"bool": {"should": three, "minimum_should_match": "50%"}}, [{"a": 1}, {}]) == [True, False]


def test_match_and_match_phrase():
    docs = [{"msg": "Connection REFUSED by host"}, {"msg": "connection ok"}, {"msg": "refused"}, {"msg": 404},
            {"msg": ["x", "host refused"]}, {}]
    assert matches({"match": {"msg": "refused host"}}, docs) == [True, False, True, False, True, False]
    assert matches({"match": {"msg": {"query": "refused host", "operator": "AND"}}}, docs) == [
        True, False, False, False, True, False]
    assert matches({"match": {"msg": 404}}, docs) == [False, False, False, True, False, False]
    assert matches({"match_phrase": {"msg": "connection refused"}}, docs) == [True, False, False, False, False, False]
    assert matches({"match_phrase": {"msg": "refused connection"}}, docs) == [False] * 6
    assert matches({"match_phrase": {"msg": {"query": "Host  Refused"}}}, docs) == [False, False, False, False, True,
                                                                                   False]


def test_exists():
    docs = [{"f": 1}, {"f": ""}, {"f": 0}, {"f": False}, {"f": None}, {"f": []}, {}, {"g": {"f": 1}}, {"f": ["a"]}]
    assert matches({"exists": {"field": "f"}}, docs) == [True, True, True, True, False, False, False, False, True]
    assert matches({"exists": {"field": "g.f"}}, docs)[-2] is True


def test_wildcard_and_prefix():
    docs = [{"h": "web-01"}, {"h": "web-1"}, {"h": "db-01"}, {"h": "WEB-01"}, {"h": 1234}, {"h": ["x", "web-9"]}, {},
            {"h": "web-01\nx"}]
    assert matches({"wildcard": {"h": "web-*"}}, docs) == [True, True, False, False, False, True, False, True]
    assert matches({"wildcard": {"h": {"value": "web-??"}}}, docs) == [True, False, False, False, False, False, False,
                                                                      False]
    assert matches({"wildcard": {"h": {"wildcard": "*-01"}}}, docs) == [True, False, True, True, False, False, False,
                                                                       False]
    assert matches({"wildcard": {"h": "12*"}}, docs)[4] is True
    assert matches({"wildcard": {"h": "web.01"}}, docs)[0] is False  # '.' is literal
    assert matches({"prefix": {"h": "web"}}, docs) == [True, True, False, False, False, True, False, True]
    assert matches({"prefix": {"h": {"value": "12"}}}, docs)[4] is True


def test_ids():
    assert matches({"ids": {"values": ["a", 1]}}, [{"_id": "a"}, {"_id": 1}, {"_id": "1"}, {"_id": "b"}, {}]) == [
        True, True, True, False, False]


@pytest.mark.parametrize("dsl,rule", [
    ({}, "query_single_clause"),
    ({"term": {"a": 1}, "match_all": {}}, "query_single_clause"),
    ([], "query_single_clause"),
    ({"query_string": {"query": "status:error"}}, "query_not_supported"),
    ({"geo_distance": {"loc": {}}}, "query_not_supported"),
    ({"term": {"a": [1]}}, "term_value"),
    ({"term": {"a": None}}, "term_value"),
    ({"term": {"a": 1, "b": 2}}, "query_single_field"),
    ({"term": "x"}, "query_clause_object"),
    ({"terms": {"a": "x"}}, "terms_values"),
    ({"range": {"t": {"gte": "now-1d"}}}, "range_now_not_supported"),
    ({"range": {"t": {"gte": True}}}, "range_bound_type"),
    ({"range": {"t": {"gte": "yesterday"}}}, "range_bound_format"),
    ({"range": {"t": {"gte": 1, "bogus": 2}}}, "range_unknown_key"),
    ({"range": {"t": 5}}, "range_object"),
    ({"bool": {"must": [], "mustnt": []}}, "query_unknown_bool_key"),
    ({"bool": {"should": [], "minimum_should_match": "lots"}}, "minimum_should_match_format"),
    ({"bool": {"should": [], "minimum_should_match": 1.5}}, "minimum_should_match_format"),
    ({"bool": []}, "query_clause_object"),
    ({"bool": {"must": [{"nope": {"f": 1}}]}}, "query_not_supported"),
    ({"exists": {"name": "f"}}, "exists_field"),
    ({"ids": {"values": "a"}}, "ids_values"),
    ({"match": {"m": {"operator": "and"}}}, "match_query"),
    ({"wildcard": {"h": {"value": 5}}}, "wildcard_value"),
    ({"prefix": {"h": ["a"]}}, "prefix_value"),
])
def test_unsupported_or_malformed_queries_are_config_errors(dsl, rule):
    with pytest.raises(ConfigError) as err:
        compile_query(dsl)
    assert err.value.rule == rule


def test_unknown_clause_is_not_supported_whatever_its_body():
    for dsl in ({"query_string": {"query": "a", "default_field": "msg"}}, {"geo_distance": {}}):
        with pytest.raises(ConfigError) as err:
            compile_query(dsl)
        assert err.value.rule == "query_not_supported"


def test_bool_errors_name_the_nested_path():
    with pytest.raises(ConfigError) as err:
        compile_query({"bool": {"filter": [{"match_all": {}}, {"bogus": {}}]}})
    assert err.value.field == "query.bool.filter[1].bogus"


def test_datafeed_query_filters_records_before_counting():
    job = Job.from_dict({"job_id": "q", "analysis_config": {"bucket_span": "1h", "detectors": [{"function": "count"}]},
                         "data_description": {"time_field": "t"},
                         "datafeed_config": {"indices": ["logs"], "query": {"term": {"level": "error"}}}})
    runner = Runner([job], lambda b: None)
    docs = [{"t": T0 + i, "level": "error" if i % 3 == 0 else "info"} for i in range(9)] + [{"t": "x", "level": "error"}]
    runner.run([(orjson.dumps(d), d, None) for d in docs])
    c = runner.engines[0].counts
    assert (c.input_record_count, c.processed_record_count, c.invalid_date_count) == (4, 3, 1)


def test_range_numeric_epoch_millis_bounds():
    dsl = {"range": {"@timestamp": {"gte": T0_MS, "lte": T0_MS + 1000, "format": "epoch_millis"}}}
    assert matches(dsl, [{"@timestamp": T0_MS + 1}, {"@timestamp": T0_MS + 2000}]) == [True, False]


def test_minimum_should_match_negative_integer():
    three = [{"term": {"a": 1}}, {"term": {"b": 1}}, {"term": {"c": 1}}]
    assert matches({"bool": {"should": three, "minimum_should_match": -1}}, [{"a": 1}]) == [False]


def test_minimum_should_match_negative_percentage():
    three = [{"term": {"a": 1}}, {"term": {"b": 1}}, {"term": {"c": 1}}]
    assert matches({"bool": {"should": three, "minimum_should_match": "-25%"}}, [{}, {"a": 1, "b": 1}]) == [
        False, False]


def test_terms_with_object_values_match_nothing():
    try:
        pred = compile_query({"terms": {"f": [{"a": 1}, None]}})
    except ConfigError:
        return
    assert [pred(d) for d in ({"f": {"b": 2}}, {"f": [[1]]}, {"f": [None]})] == [False, False, False]


def test_exists_array_of_nulls():
    assert matches({"exists": {"field": "f"}}, [{"f": [None]}, {"f": [None, None]}]) == [False, False]


def test_range_from_to_include_flags():
    dsl = {"range": {"v": {"from": 5, "to": 10, "include_lower": False, "include_upper": False}}}
    assert matches(dsl, [{"v": 5}, {"v": 7}, {"v": 10}]) == [False, True, False]


def test_range_on_huge_integer_is_a_non_match_and_counts_add_up():
    assert matches({"range": {"v": {"gte": 0}}}, [{"v": 10 ** 400}]) == [False]
    job = Job.from_dict({"job_id": "q", "analysis_config": {"bucket_span": "1h", "detectors": [{"function": "count"}]},
                         "data_description": {"time_field": "t"},
                         "datafeed_config": {"indices": ["x"], "query": {"range": {"v": {"gte": 0}}}}})
    runner = Runner([job], lambda b: None)
    runner.run(iter_csv(io.BytesIO(b"t,v\n%d,%s\n" % (T0, b"9" * 400))))
    c = runner.engines[0].counts
    assert c.input_record_count == (c.processed_record_count + c.invalid_date_count + c.malformed_record_count
                                    + c.out_of_order_timestamp_count)


# --------------------------------------------------------------------------------------------- aggregations
def feed_all(agg: DatafeedAggregator, events: list[dict], time_field: str = "time") -> list[tuple[float, dict]]:
    out = []
    for doc in events:
        out += agg.feed(doc, doc[time_field] / 1000.0)
    return out + agg.flush()


HISTOGRAM_ONLY = {"buckets": {"date_histogram": {"field": "time", "fixed_interval": "60s"}, "aggregations": {
    "time": {"max": {"field": "time"}}, "value": {"avg": {"field": "value"}}, "total": {"sum": {"field": "value"}},
    "low": {"min": {"field": "value"}}, "high": {"max": {"field": "value"}}, "n": {"value_count": {"field": "value"}},
    "hosts": {"cardinality": {"field": "host"}}}}}


def ev(t_s: float, host: str | None = None, value=None) -> dict:
    doc: dict = {"time": int(t_s * 1000)}
    if host is not None:
        doc["host"] = host
    if value is not None:
        doc["value"] = value
    return doc


def test_histogram_summary_docs_hand_computed():
    events = [ev(T0 + 0, "a", 1), ev(T0 + 10, "b", 3), ev(T0 + 59, "a", 8), ev(T0 + 61, "a", 2),
              ev(T0 + 200, None, 4), ev(T0 + 230, "c", "n/a")]
    out = feed_all(DatafeedAggregator(HISTOGRAM_ONLY, "time"), events)
    assert out == [
        (T0 + 59.0, {"time": T0_MS + 59_000, "value": 4.0, "total": 12, "low": 1, "high": 8, "n": 3, "hosts": 2,
                     "doc_count": 3}),
        (T0 + 61.0, {"time": T0_MS + 61_000, "value": 2.0, "total": 2, "low": 2, "high": 2, "n": 1, "hosts": 1,
                     "doc_count": 1}),
        # "n/a" is no number: avg/sum/min/max ignore it, value_count counts every present value
        (T0 + 230.0, {"time": T0_MS + 230_000, "value": 4.0, "total": 4, "low": 4, "high": 4, "n": 2, "hosts": 1,
                      "doc_count": 2}),
    ]


def test_histogram_buckets_close_when_a_later_event_arrives():
    agg = DatafeedAggregator(HISTOGRAM_ONLY, "time", count_field="events")
    assert agg.feed(ev(T0 + 1, "a", 1), T0 + 1) == []
    assert agg.feed(ev(T0 + 59.5, "a", 1), T0 + 59.5) == []
    closed = agg.feed(ev(T0 + 60, "a", 1), T0 + 60)
    assert [(t, d["events"], d["time"]) for t, d in closed] == [(T0 + 59.5, 2, T0_MS + 59_500)]
    assert agg.advance(T0 + 119) == []
    assert [d["events"] for _, d in agg.advance(T0 + 120)] == [1]
    assert agg.flush() == []


TERMS_ABOVE_HISTOGRAM = {"host": {"terms": {"field": "host", "size": 10}, "aggs": {
    "buckets": {"date_histogram": {"field": "time", "fixed_interval": "1m"}, "aggs": {
        "time": {"max": {"field": "time"}}, "value": {"avg": {"field": "value"}}}}}}}


def test_terms_above_histogram_hand_computed():
    events = [ev(T0 + 0, "a", 1), ev(T0 + 10, "b", 3), ev(T0 + 20, "a", 5), ev(T0 + 59, "b", 7), ev(T0 + 70, "a", 2),
              ev(T0 + 130, "c", 4), ev(T0 + 131, None, 9)]
    out = feed_all(DatafeedAggregator(TERMS_ABOVE_HISTOGRAM, "time"), events)
    # Elasticsearch: one doc per (host, minute), time = max(time) within that host's minute, sorted by time
    assert [d for _, d in out] == [
        {"host": "a", "time": T0_MS + 20_000, "value": 3.0, "doc_count": 2},
        {"host": "b", "time": T0_MS + 59_000, "value": 5.0, "doc_count": 2},
        {"host": "a", "time": T0_MS + 70_000, "value": 2.0, "doc_count": 1},
        {"host": "c", "time": T0_MS + 130_000, "value": 4.0, "doc_count": 1},
    ]
    assert [t for t, _ in out] == [T0 + 20.0, T0 + 59.0, T0 + 70.0, T0 + 130.0]


def test_terms_size_keeps_top_doc_counts_ties_by_key():
    aggs = {"buckets": {"date_histogram": {"field": "time", "fixed_interval": "1m"}, "aggs": {
        "time": {"max": {"field": "time"}}, "host": {"terms": {"field": "host", "size": 2}}}}}
    events = [ev(T0 + i, h) for i, h in enumerate(["c", "b", "a", "c", "b", "d", "c"])]
    out = feed_all(DatafeedAggregator(aggs, "time"), events)
    assert sorted((d["host"], d["doc_count"]) for _, d in out) == [("b", 2), ("c", 3)]
    tie = feed_all(DatafeedAggregator(aggs, "time"), [ev(T0 + i, h) for i, h in enumerate(["z", "y", "x"])])
    assert sorted(d["host"] for _, d in tie) == ["x", "y"]


def test_terms_key_is_the_keyword_string():
    aggs = {"buckets": {"date_histogram": {"field": "time", "fixed_interval": "1m"}, "aggs": {
        "time": {"max": {"field": "time"}}, "status": {"terms": {"field": "status"}}}}}
    out = feed_all(DatafeedAggregator(aggs, "time"), [ev(T0) | {"status": 404}, ev(T0 + 1) | {"status": True}])
    assert sorted(d["status"] for _, d in out) == ["404", "true"]


@pytest.mark.parametrize("key,value,seconds", [
    ("fixed_interval", "5m", 300), ("fixed_interval", "90s", 90), ("interval", 60000, 60), ("interval", "1h", 3600),
    ("calendar_interval", "1d", 86400), ("calendar_interval", "minute", 60), ("calendar_interval", "hour", 3600),
])
def test_histogram_interval(key, value, seconds):
    assert histogram_interval_s({"b": {"date_histogram": {"field": "t", key: value}}}) == seconds


@pytest.mark.parametrize("aggs,rule", [
    ({}, "aggregations_object"),
    ({"v": {"avg": {"field": "v"}}}, "date_histogram_required"),
    ({"b": {"date_histogram": {"field": "t"}}}, "histogram_interval_required"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "500ms"}}}, "histogram_interval_whole_seconds"),
    ({"b": {"date_histogram": {"fixed_interval": "1m"}}}, "bucket_field_required"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "1m"}, "aggs": {
        "h": {"terms": {"field": "h"}}, "g": {"terms": {"field": "g"}}}}}, "aggregation_single_bucket_agg"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "1m"}, "aggs": {
        "c": {"date_histogram": {"field": "t", "fixed_interval": "1m"}}}}}, "date_histogram_once"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "1m"}, "aggs": {
        "p": {"percentiles": {"field": "v"}}}}}, "aggregation_not_supported"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "1m"}, "aggs": {
        "p": {"geo_centroid": {"field": "v"}}}}}, "aggregation_unknown"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "1m"}, "aggs": {
        "m": {"max": {"script": "doc.v"}}}}}, "aggregation_script_not_supported"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "1m"}, "aggs": {
        "m": {"max": {}}}}}, "metric_field_required"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "1m"}, "aggs": {
        "h": {"terms": {"field": "h", "size": 0}}}}}, "terms_size"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "1m"}, "aggs": {
        "h": {"terms": {"field": "h"}, "avg": {"field": "x"}}}}}, "aggregation_single_type"),
    ({"b": {"date_histogram": {"field": "t", "fixed_interval": "1m"}, "aggs": []}}, "aggregations_object"),
])
def test_aggregation_config_errors(aggs, rule):
    with pytest.raises(ConfigError) as err:
        DatafeedAggregator(aggs, "t")
    assert err.value.rule == rule


def agg_job(aggs: dict, **analysis) -> Job:
    return Job.from_dict({"job_id": "agg", "analysis_config": {
        "bucket_span": "5m", "summary_count_field_name": "doc_count",
        "detectors": [{"function": "count"}, {"function": "mean", "field_name": "value"}], **analysis},
        "data_description": {"time_field": "time", "time_format": "epoch_ms"},
        "datafeed_config": {"indices": ["metrics"], "aggregations": aggs}})


def run_agg_job(job: Job, events: list[dict]):
    out: list[bytes] = []
    runner = Runner([job], out.append)
    runner.run([(orjson.dumps(d), d, None) for d in events])
    return runner.engines[0].counts, [orjson.loads(b) for b in out]


def test_aggregated_datafeed_feeds_summary_docs_to_the_job():
    # 5m buckets of 1m summaries: minute k holds k+1 events
    events = [ev(T0 + 60 * k + i, "a", 10) for k in range(10) for i in range(k + 1)]
    counts, docs = run_agg_job(agg_job(HISTOGRAM_ONLY), events)
    assert counts.processed_record_count == 10  # one record per 1-minute summary doc
    assert counts.earliest_record_timestamp == T0_MS + 0  # minute 0 has one event at +0s
    assert counts.latest_record_timestamp == T0_MS + (9 * 60 + 9) * 1000
    buckets = {d["timestamp"]: d["event_count"] for d in docs if d.get("result_type") == "bucket"}
    assert buckets == {T0_MS: 1 + 2 + 3 + 4 + 5, T0_MS + 300_000: 6 + 7 + 8 + 9 + 10}


def test_aggregated_input_record_count_counts_summary_docs():
    events = [ev(T0 + 60 * k + i, "a", 10) for k in range(10) for i in range(k + 1)]
    counts, _ = run_agg_job(agg_job(HISTOGRAM_ONLY), events)
    assert counts.input_record_count == counts.processed_record_count == 10


def test_flush_advance_time_emits_the_complete_histogram_buckets():
    job = agg_job(HISTOGRAM_ONLY)
    out: list[bytes] = []
    runner = Runner([job], out.append)
    engine = runner.engines[0]
    for doc in [ev(T0 + 10, "a", 1), ev(T0 + 70, "a", 2), ev(T0 + 130, "a", 3)]:
        engine.feed(orjson.dumps(doc), doc)
    assert engine.counts.input_record_count == 2  # the minute of T0+130 is still open
    engine.flush(advance_time=T0 + 180)
    assert engine.counts.input_record_count == engine.counts.processed_record_count == 3
    engine.finish()
    assert engine.counts.input_record_count == 3


def test_aggregated_counts_add_up_with_rejected_raw_events():
    # rejected raw events (no valid time, or before the last final bucket) are counted as they are rejected;
    # the summary docs are the job's other input records
    events = [ev(T0 + 60 * k, "a", 10) for k in range(12)] + [{"time": "x", "value": 1}, ev(T0 + 1, "a", 1)]
    counts, _ = run_agg_job(agg_job(HISTOGRAM_ONLY), events)
    assert (counts.processed_record_count, counts.invalid_date_count, counts.out_of_order_timestamp_count) == (12, 1, 1)
    assert counts.input_record_count == 14


HISTOGRAM_THEN_TERMS = {"buckets": {"date_histogram": {"field": "time", "fixed_interval": "60s"}, "aggregations": {
    "time": {"max": {"field": "time"}},
    "host": {"terms": {"field": "host", "size": 10}, "aggregations": {"value": {"avg": {"field": "value"}}}}}}}


def test_histogram_level_max_time_is_shared_by_terms_docs():
    events = [ev(T0 + 0, "a", 1), ev(T0 + 10, "b", 3), ev(T0 + 20, "a", 5), ev(T0 + 59, "b", 7)]
    out = feed_all(DatafeedAggregator(HISTOGRAM_THEN_TERMS, "time"), events)
    assert sorted((d["host"], d["time"], d["value"], d["doc_count"]) for _, d in out) == [
        ("a", T0_MS + 59_000, 3.0, 2), ("b", T0_MS + 59_000, 5.0, 2)]


def test_terms_doc_key_is_the_aggregation_name():
    aggs = {"buckets": {"date_histogram": {"field": "time", "fixed_interval": "1m"}, "aggs": {
        "time": {"max": {"field": "time"}}, "airline": {"terms": {"field": "airline.keyword"}}}}}
    out = feed_all(DatafeedAggregator(aggs, "time"), [ev(T0) | {"airline": "AAL"}])
    assert out[0][1] == {"airline": "AAL", "time": T0_MS, "doc_count": 1}


def test_metric_without_values_is_omitted():
    # Elastic's AggregationToJsonProcessor writes only finite metric values: avg/min/max of nothing (NaN,
    # -/+Infinity) are omitted. Elasticsearch's sum of nothing is 0, not NaN (documented,
    # elastic/elasticsearch#71978), so a sum stays with 0. (This test used to expect the sum omitted too.)
    out = feed_all(DatafeedAggregator(HISTOGRAM_ONLY, "time"), [ev(T0, "a", "n/a")])
    doc = out[0][1]
    assert "value" not in doc and "low" not in doc and "high" not in doc
    assert doc["total"] == 0 and doc["doc_count"] == 1


def test_terms_on_array_field_counts_each_value():
    aggs = {"buckets": {"date_histogram": {"field": "time", "fixed_interval": "1m"}, "aggs": {
        "time": {"max": {"field": "time"}}, "tags": {"terms": {"field": "tags"}}}}}
    out = feed_all(DatafeedAggregator(aggs, "time"), [ev(T0) | {"tags": ["x", "y"]}])
    assert sorted((d["tags"], d["doc_count"]) for _, d in out) == [("x", 1), ("y", 1)]


def test_outer_terms_size_is_applied():
    aggs = {"buckets": {"date_histogram": {"field": "time", "fixed_interval": "1m"}, "aggs": {
        "time": {"max": {"field": "time"}}, "host": {"terms": {"field": "host", "size": 1}, "aggs": {
            "service": {"terms": {"field": "service", "size": 5}}}}}}}
    events = [ev(T0, "a") | {"service": "s"}, ev(T0 + 1, "a") | {"service": "t"}, ev(T0 + 2, "b") | {"service": "s"}]
    out = feed_all(DatafeedAggregator(aggs, "time"), events)
    assert {d["host"] for _, d in out} == {"a"}


def test_histogram_without_max_time_is_rejected():
    with pytest.raises(ConfigError):
        agg_job({"buckets": {"date_histogram": {"field": "time", "fixed_interval": "1m"}, "aggs": {
            "value": {"avg": {"field": "value"}}}}})
