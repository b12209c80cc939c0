"""Fuzz: arbitrary lines and JSON values through the readers and the Runner never raise, and data_counts add up.

The engine's accounting (streamad/engine/job.py, JobEngine.feed): every record that reaches a job (an undecodable
one, or a decoded one its datafeed query keeps) adds 1 to input_record_count and exactly 1 to one of
malformed_record_count, invalid_date_count, out_of_order_timestamp_count or processed_record_count. Out of
order is Elastic's rule with latency 0: a time before the start of the bucket of the latest time seen.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamad.config.job import Job
from streamad.datafeed.query import compile_query
from streamad.engine.runner import Runner
from streamad.ingest.fields import FieldGetter
from streamad.ingest.reader import iter_csv, iter_ndjson
from streamad.ingest.timeparse import TimeParser

T0_MS = 1700438400000  # 2023-11-20T00:00:00Z
WINDOW_MS = 6 * 3600 * 1000
SPAN_S = 900
PARSE = TimeParser("epoch_ms")
TIME = FieldGetter("time")

QUERY = {"bool": {
    "must": [{"exists": {"field": "host"}}],
    "should": [{"range": {"value": {"gte": 0}}}, {"wildcard": {"host": "*a*"}}, {"match": {"host": "b c"}},
               {"terms": {"host.keyword": ["1", "true", "x"]}}, {"prefix": {"extra.k": "z"}},
               {"match_phrase": {"host": "a b"}}, {"range": {"time": {"lt": "2023-11-20T03:00:00Z"}}}],
    "must_not": [{"term": {"value": "bad"}}],
    "minimum_should_match": 1,
}}


def job(job_id: str, query: dict | None = None) -> Job:
    body = {"job_id": job_id, "analysis_config": {
        "bucket_span": f"{SPAN_S}s", "influencers": ["host"],
        "detectors": [{"function": "count", "partition_field_name": "host"}, {"function": "mean", "field_name": "value"}]},
        "data_description": {"time_field": "time", "time_format": "epoch_ms"}}
    if query is not None:
        body["datafeed_config"] = {"indices": ["events"], "query": query}
    return Job.from_dict(body)


JOBS = (job("plain"), job("queried", QUERY))
PREDICATE = compile_query(QUERY)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.integers(min_value=2 ** 64, max_value=10 ** 400), st.integers(max_value=-(2 ** 64)))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=10)
in_window = st.integers(T0_MS, T0_MS + WINDOW_MS)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _near_or_invalid(value) -> bool:
    """Keep valid times inside the window: a valid time in 1970 would close millions of empty buckets."""
    t = PARSE(value)  # huge ints are invalid dates (test_ingest.py); orjson never yields them anyway
    return t is None or T0_MS / 1000 <= t <= (T0_MS + WINDOW_MS) / 1000


time_values = st.one_of(
    in_window, in_window, in_window.map(str), in_window.map(lambda t: t + 0.25), in_window.map(_iso),
    st.sampled_from(["NaN", "nan", "Infinity", "-inf", "", " ", "1e400", "0x10", "null", "true", "2023-02-30"]),
    st.floats(min_value=3e14), st.integers(min_value=10 ** 15), json_values,
).filter(_near_or_invalid)
host_values = st.one_of(st.sampled_from(["a", "b", "a b", "x", "b c"]), st.integers(0, 3), json_values)
value_values = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([1e308, -1e308, "NaN", "nan", "1.5", "bad", "inf"]),
                         json_values)
docs = st.fixed_dictionaries({}, optional={"time": time_values, "host": host_values, "value": value_values,
                                           "extra": json_values, "time.keyword": json_values})


def _dump(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


good_docs = st.fixed_dictionaries({"time": st.one_of(in_window, in_window.map(_iso)),
                                   "host": st.sampled_from(["a", "b", "x"]), "value": st.floats(-100, 100)},
                                  optional={"extra": json_values})
lines = st.one_of(
    good_docs.map(_dump), good_docs.map(_dump), good_docs.map(_dump), good_docs.map(_dump), good_docs.map(_dump),
    docs.map(_dump), docs.map(_dump), docs.map(_dump),
    json_values.map(_dump),                                 # non-objects, NaN tokens, huge numbers
    docs.map(lambda d: _dump(d)[:-1]),                       # truncated objects
    st.binary(max_size=60),                                  # arbitrary bytes (may hold newlines)
    st.sampled_from([b"", b"   ", b"\r", b"\xef\xbb\xbf{}", b"{}", b"[]", b"\x00"]),
)


def expected_counts(records, predicate=None) -> dict:
    """data_counts the engine must report, derived from Elastic's rules, not from the engine's code."""
    c = {"input": 0, "malformed": 0, "invalid": 0, "ooo": 0, "processed": 0, "earliest": None, "latest": None}
    latest = None
    for _, doc, error in records:
        if error is not None or doc is None:
            c["input"] += 1
            c["malformed"] += 1
            continue
        if predicate is not None and not predicate(doc):
            continue
        c["input"] += 1
        t = PARSE(TIME(doc))
        if t is None:
            c["invalid"] += 1
        elif latest is not None and t < math.floor(latest / SPAN_S) * SPAN_S:
            c["ooo"] += 1
        else:
            c["processed"] += 1
            latest = t if latest is None else max(latest, t)
            ms = int(round(t * 1000))
            c["earliest"] = ms if c["earliest"] is None else min(c["earliest"], ms)
            c["latest"] = ms if c["latest"] is None else max(c["latest"], ms)
    return c


def run_and_check(records) -> None:
    out: list[bytes] = []
    dead: list[tuple] = []
    runner = Runner(list(JOBS), out.append, lambda raw, jid, reason: dead.append((jid, reason)))
    runner.run(records)
    for engine, predicate in zip(runner.engines, (None, PREDICATE)):
        c = engine.counts
        want = expected_counts(records, predicate)
        got = {"input": c.input_record_count, "malformed": c.malformed_record_count, "invalid": c.invalid_date_count,
               "ooo": c.out_of_order_timestamp_count, "processed": c.processed_record_count,
               "earliest": c.earliest_record_timestamp, "latest": c.latest_record_timestamp}
        assert got == want, engine.job.job_id
        assert c.input_record_count == (c.processed_record_count + c.invalid_date_count + c.malformed_record_count
                                        + c.out_of_order_timestamp_count)
        assert 0 <= c.missing_field_count <= 2 * c.processed_record_count
        assert c.empty_bucket_count <= c.bucket_count
        rejected = sum(1 for jid, _ in dead if jid == engine.job.job_id)
        assert rejected == c.malformed_record_count + c.invalid_date_count + c.out_of_order_timestamp_count
    for line in out:
        assert line.endswith(b"\n")
        assert orjson.loads(line)["job_id"] in ("plain", "queried")


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


@FUZZ
@given(st.lists(lines, max_size=40))
def test_ndjson_lines_through_reader_and_runner(raw_lines):
    records = list(iter_ndjson(io.BytesIO(b"\n".join(raw_lines))))
    for raw, doc, error in records:
        assert isinstance(raw, bytes)
        assert (doc is None) != (error is None)
        assert doc is None or isinstance(doc, dict)
    run_and_check(records)


@FUZZ
@given(st.lists(st.one_of(good_docs, docs), max_size=30))
def test_decoded_documents_through_runner(doc_list):
    records = []
    for doc in doc_list:
        try:
            decoded = orjson.loads(_dump(doc))  # the shapes a decoder can produce (no ints beyond 64 bits)
        except orjson.JSONDecodeError as exc:
            records.append((_dump(doc), None, str(exc)))
            continue
        records.append((_dump(doc), decoded, None))
    run_and_check(records)


csv_cells = st.one_of(in_window.map(str), st.text(max_size=8),
                      st.sampled_from(["", "nan", "-inf", "1e999", "+1", ".5", "007", "a,b", '"q"'])
                      ).filter(lambda s: _near_or_invalid(s) and _near_or_invalid(s.strip()))


@FUZZ
@given(st.binary(max_size=300))
def test_csv_reader_arbitrary_bytes_never_raise(blob):
    for raw, doc, error in iter_csv(io.BytesIO(b"time,host,value\n" + blob)):
        assert isinstance(raw, bytes)
        assert (doc is None) != (error is None)
        if doc is not None:
            assert set(doc) == {"time", "host", "value"}
            assert all(not isinstance(v, float) or math.isfinite(v) for v in doc.values())


@FUZZ
@given(st.lists(st.lists(csv_cells, min_size=1, max_size=4), max_size=30))
def test_csv_rows_through_reader_and_runner(rows):
    import csv as csv_module

    buf = io.StringIO()
    writer = csv_module.writer(buf, lineterminator="\n")
    writer.writerow(["time", "host", "value"])
    writer.writerows(rows)
    records = list(iter_csv(io.BytesIO(buf.getvalue().encode())))
    run_and_check([r for r in records if r[1] is None or _near_or_invalid(r[1]["time"])])


def _decoded(value):
    try:
        return orjson.loads(_dump(value))
    except orjson.JSONDecodeError:
        return "undecodable"


@FUZZ
@given(json_values.map(_decoded))
def test_query_predicate_never_raises(value):
    doc = {"time": value, "host": value, "value": value, "extra": value}
    assert PREDICATE(doc) in (True, False)
    assert PREDICATE({"host": value}) in (True, False)


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=3))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["keyword", "b", "x"]), inner, max_size=3)),
    max_leaves=8)
_DOCS = st.dictionaries(st.sampled_from(["a", "a.keyword", "b", "a.b", "c"]), _VALUES, max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCS, path=st.sampled_from(["a.keyword", "b.keyword", "c.keyword", "a.b.keyword", "a", "a.b"]))
def test_keyword_fast_path_matches_the_walk(doc, path):
    """`X.keyword` answered without the walk (X top-level and no object or array) equals the walk."""
    fast = FieldGetter(path)
    slow = FieldGetter(path)
    slow._top_keyword = None  # the general path: literal key, walk, keyword form of the base
    assert repr(fast(doc)) == repr(slow(doc)), (doc, path)
