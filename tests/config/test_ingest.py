"""Ingest: Elastic time formats, field lookup, data_counts accounting through the Runner, and the readers.

Known values are hand-computed (2023-11-20T00:00:00Z is epoch 1700438400). Tests marked xfail(strict)
describe behaviour that diverges from Elastic or from the module's own contract; each reason says how.
"""

from __future__ import annotations

import gzip
import io
import math

import orjson
import pytest

from streamad.config.errors import ConfigError
from streamad.config.job import Job
from streamad.engine.runner import Runner
from streamad.ingest.counts import DataCounts
from streamad.ingest.fields import MISSING, FieldGetter, keyword_string
from streamad.ingest.reader import iter_csv, iter_ndjson, read_records, sniff_format
from streamad.ingest.timeparse import TimeParser, days_from_civil, parse_iso8601

NOV20 = 1700438400  # 2023-11-20T00:00:00Z
HOUR = 3600


# --------------------------------------------------------------------------------------------- time
@pytest.mark.parametrize("fmt,value,expected", [
    ("epoch", 1700438422, 1700438422.0),
    ("epoch", 1700438422.358, 1700438422.358),
    ("epoch", "1700438422", 1700438422.0),
    ("epoch", "1700438422.358", 1700438422.358),
    ("epoch", 0, 0.0),
    ("epoch", -1, -1.0),
    ("epoch_ms", 1700438422358, 1700438422.358),
    ("epoch_ms", "1700438422358", 1700438422.358),
    ("epoch_ms", 1700438422358.0, 1700438422.358),
    # ISO-8601 is always accepted, whatever the format
    ("epoch", "2023-11-20T00:00:22.358Z", 1700438422.358),
    ("epoch_ms", "2023-11-20T00:00:22.358Z", 1700438422.358),
    ("epoch_ms", "2023-11-20T01:00:22.358+01:00", 1700438422.358),
    ("epoch_ms", "2023-11-20 00:00:22", 1700438422.0),
    ("epoch_ms", "2023-11-20", NOV20),
    ("epoch_ms", "1969-12-31T23:59:59Z", -1.0),
    ("dd/MM/yyyy", "2023-11-20T00:00:22Z", 1700438422.0),
    # Java DateTimeFormatter patterns
    ("yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "2023-11-20T00:00:22.358Z", 1700438422.358),
    ("yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "2023-11-20T05:30:22.358+05:30", 1700438422.358),
    ("yyyy-MM-dd'T'HH:mm:ss.SSSSSSX", "2023-11-20T00:00:22.358000Z", 1700438422.358),
    ("yyyy-MM-dd'T'HH:mm:ssZ", "2023-11-19T19:00:22-0500", 1700438422.0),
    ("yyyy-MM-dd HH:mm:ss", "2023-11-20 00:00:22", 1700438422.0),
    ("yyyy-MM-dd HH:mm:ss,SSS", "2023-11-20 00:00:22,358", 1700438422.358),
    ("dd/MMM/yyyy:HH:mm:ss Z", "20/Nov/2023:01:00:22 +0100", 1700438422.0),
    ("EEE, dd MMM yyyy HH:mm:ss z", "Mon, 20 Nov 2023 00:00:22 GMT", 1700438422.0),
    ("EEE MMM dd HH:mm:ss yyyy", "Mon Nov 20 00:00:22 2023", 1700438422.0),
    ("dd MMMM yyyy", "20 November 2023", NOV20),
    ("MMM d, yyyy h:mm:ss a", "Nov 19, 2023 7:00:22 PM", 1700438422.0 - 5 * HOUR),
    ("MMM d, yyyy h:mm:ss a", "Nov 20, 2023 12:00:22 AM", 1700438422.0),
    ("MMM d, yyyy h:mm:ss a", "Nov 20, 2023 12:00:22 pm", 1700438422.0 + 12 * HOUR),
    ("yyyyMMddHHmmss", "20231120000022", 1700438422.0),
    ("yyyy-MM-dd", "2023-11-20", NOV20),
    ("yy-MM-dd", "23-11-20", NOV20),
    ("yyyy-DDD", "2023-324", NOV20),
    ("yyyy-MM-dd HH:mm:ss z", "2023-11-19 19:00:22 EST", 1700438422.0),
    ("yyyy-MM-dd HH:mm:ss z", "2023-11-20 05:30:22 UTC+05:30", 1700438422.0),
    ("yyyy-MM-dd HH 'o''clock'", "2023-11-20 05 o'clock", NOV20 + 5 * HOUR),
    ("yyyy-MM-dd", "2024-02-29", 1709164800.0),
    ("yyyy-MM-dd", "2000-02-29", 951782400.0),
    ("uuuu-MM-dd", "1970-01-01", 0.0),
])
def test_time_formats_known_values(fmt, value, expected):
    t = TimeParser(fmt)(value)
    assert t is not None
    assert t == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("fmt,value", [
    ("epoch", None), ("epoch", True), ("epoch", False), ("epoch", "abc"), ("epoch", ""), ("epoch", "nan"),
    ("epoch", "NaN"), ("epoch", "inf"), ("epoch", "-Infinity"), ("epoch", float("nan")), ("epoch", float("inf")),
    ("epoch", [1700438422]), ("epoch", {"t": 1}), ("epoch", 1e300), ("epoch", -1e300), ("epoch", 253402300800),
    ("epoch_ms", 253402300800000), ("epoch_ms", "1e400"), ("epoch_ms", " "),
    ("yyyy-MM-dd", "2023-13-01"), ("yyyy-MM-dd", "2023-00-10"), ("yyyy-MM-dd", "2023-11-31"),
    ("yyyy-MM-dd", "2023-02-29"), ("yyyy-MM-dd", "1900-02-29"), ("yyyy-MM-dd", "2023-11-00"),
    ("yyyy-MM-dd", "2023/11/20"), ("yyyy-MM-dd", "2023-11-20x"), ("yyyy-MM-dd", 20231120),
    ("yyyy-MM-dd HH:mm:ss", "2023-11-20 25:00:00"), ("yyyy-MM-dd HH:mm:ss", "2023-11-20 00:61:00"),
    ("MMM d, yyyy h:mm:ss a", "Foo 20, 2023 1:00:00 PM"), ("MMM d, yyyy h:mm:ss a", "Nov 20, 2023 13:00:00 PM"),
    ("MMM d, yyyy h:mm:ss a", "Nov 20, 2023 0:00:00 AM"),
    ("yyyy-MM-dd HH:mm:ss z", "2023-11-20 00:00:22 XYZ"),
])
def test_invalid_times_rejected(fmt, value):
    assert TimeParser(fmt)(value) is None


@pytest.mark.parametrize("fmt", ["", "yyyy-MM-dd G", "yyyy Q", None, 5])
def test_unsupported_time_formats_are_config_errors(fmt):
    with pytest.raises(ConfigError) as err:
        TimeParser(fmt)
    assert err.value.field == "data_description.time_format"


def test_job_rejects_bad_time_format():
    with pytest.raises(ConfigError) as err:
        Job.from_dict({"job_id": "j", "analysis_config": {"detectors": [{"function": "count"}]},
                       "data_description": {"time_field": "t", "time_format": "yyyy-MM-dd G"}})
    assert err.value.field == "data_description.time_format"


def test_calendar_arithmetic_matches_datetime():
    from datetime import date
    for y, m, d in [(1, 1, 1), (1600, 2, 29), (1969, 12, 31), (1970, 1, 1), (2000, 3, 1), (2023, 11, 20), (9999, 12, 31)]:
        assert days_from_civil(y, m, d) == (date(y, m, d) - date(1970, 1, 1)).days
    assert parse_iso8601("not a date") is None and parse_iso8601("") is None


def test_huge_integer_time_is_invalid_not_a_crash():
    assert TimeParser("epoch")(10 ** 400) is None


def test_day_of_year_out_of_range_rejected():
    assert TimeParser("yyyy-DDD")("2023-999") is None
    assert TimeParser("yyyy-DDD")("2023-000") is None


def test_pattern_letter_K_is_zero_based():
    assert TimeParser("yyyy-MM-dd K:mm a")("2023-11-20 0:30 PM") == NOV20 + 12 * HOUR + 30 * 60


def test_hour_letters_k_and_K_and_end_of_day():
    assert TimeParser("yyyy-MM-dd K:mm a")("2023-11-20 11:30 AM") == NOV20 + 11 * HOUR + 30 * 60
    assert TimeParser("yyyy-MM-dd K:mm a")("2023-11-20 12:30 PM") is None  # K is 0-11
    assert TimeParser("yyyy-MM-dd kk:mm")("2023-11-20 24:30") == NOV20 + 30 * 60  # k is 1-24, 24 is hour 0
    assert TimeParser("yyyy-MM-dd HH:mm")("2023-11-20 24:00") == NOV20 + 24 * HOUR  # Java's end of day
    assert TimeParser("yyyy-DDD")("2024-366") == 1735603200  # leap year: 2024-12-31T00:00:00Z


def test_hour_24_with_minutes_rejected():
    assert TimeParser("yyyy-MM-dd HH:mm")("2023-11-20 24:30") is None


# --------------------------------------------------------------------------------------------- fields
def test_field_lookup_plain_nested_and_literal_dotted():
    doc = {"a": {"b": {"c": 1}}, "x.y": 2, "x": {"y": 3}, "top": "v", "n": None}
    assert FieldGetter("top")(doc) == "v"
    assert FieldGetter("a.b.c")(doc) == 1
    assert FieldGetter("a.b")(doc) == {"c": 1}
    assert FieldGetter("x.y")(doc) == 2  # a literal dotted key wins over the nested walk
    assert FieldGetter("n")(doc) is None  # explicit null is a value, not MISSING
    for path in ("nope", "a.b.c.d", "a.nope", "top.sub", "a.b.c.keyword.x"):
        assert FieldGetter(path)(doc) is MISSING


def test_field_lookup_arrays_are_returned_whole():
    doc = {"tags": ["x", "y"], "a": {"list": [1, 2]}}
    assert FieldGetter("tags")(doc) == ["x", "y"]
    assert FieldGetter("a.list")(doc) == [1, 2]
    assert FieldGetter("tags.0")(doc) is MISSING  # no positional access, as in Elasticsearch


def test_keyword_multi_field_falls_back_to_string_form():
    doc = {"response": 404, "ok": True, "f": 1.0, "g": 1.5, "big": 1e20, "s": "GET", "nested": {"code": 7},
           "obj": {"k": 1}, "nul": None, "explicit.keyword": "mine", "explicit": "other"}
    assert FieldGetter("response.keyword")(doc) == "404"
    assert FieldGetter("ok.keyword")(doc) == "true"
    assert FieldGetter("f.keyword")(doc) == "1"
    assert FieldGetter("g.keyword")(doc) == "1.5"
    assert FieldGetter("big.keyword")(doc) == "1e+20"
    assert FieldGetter("s.keyword")(doc) == "GET"
    assert FieldGetter("nested.code.keyword")(doc) == "7"
    assert FieldGetter("explicit.keyword")(doc) == "mine"
    assert FieldGetter("obj.keyword")(doc) is MISSING
    assert FieldGetter("nul.keyword")(doc) is MISSING
    assert FieldGetter("absent.keyword")(doc) is MISSING
    assert FieldGetter(".keyword")({".keyword": 1}) == 1


def test_keyword_string_scalars():
    assert keyword_string("a") == "a"
    assert keyword_string(False) == "false"
    assert keyword_string(-3) == "-3"
    assert keyword_string(2.0) == "2"
    assert keyword_string(0.1) == "0.1"
    assert keyword_string(None) is MISSING and keyword_string([1]) is MISSING and keyword_string({}) is MISSING


def test_keyword_of_string_array_is_multi_valued():
    assert FieldGetter("tags.keyword")({"tags": ["x", "y"]}) == ["x", "y"]


def test_path_through_array_of_objects():
    assert FieldGetter("a.b")({"a": [{"b": 1}, {"b": 2}]}) == [1, 2]


def test_path_mixing_literal_dots_and_nesting():
    assert FieldGetter("a.b.c")({"a.b": {"c": 5}}) == 5


# --------------------------------------------------------------------------------------------- data_counts
def make_job(**analysis_extra) -> Job:
    analysis = {"bucket_span": "1h", "detectors": [{"function": "count", "partition_field_name": "host"},
                                                   {"function": "mean", "field_name": "value"}]}
    analysis.update(analysis_extra)
    return Job.from_dict({"job_id": "counts", "analysis_config": analysis,
                          "data_description": {"time_field": "time", "time_format": "epoch_ms"}})


def run_job(job: Job, records, **kw):
    out: list[bytes] = []
    dead: list[tuple[bytes, str, str]] = []
    runner = Runner([job], out.append, lambda raw, jid, reason: dead.append((raw, jid, reason)), **kw)
    runner.run(records)
    return runner.engines[0], [orjson.loads(line) for line in out], dead


def rec(doc) -> tuple[bytes, dict, None]:
    return orjson.dumps(doc), doc, None


T0_MS = NOV20 * 1000


def test_data_counts_accounting():
    records = [
        rec({"time": T0_MS, "host": "a", "value": 1}),                     # processed
        rec({"time": T0_MS + 1000, "host": "b"}),                          # processed, 1 missing (value)
        rec({"time": "nope", "host": "a", "value": 2}),                    # invalid date
        (b"{not json", None, "invalid JSON: x"),                           # malformed
        rec({"time": T0_MS + 2 * HOUR * 1000, "value": 5}),                # processed, 1 missing (host)
        rec({"time": T0_MS + 10 * 60 * 1000, "host": "a", "value": 1}),     # out of order (bucket closed)
        rec({"host": "a", "value": 3}),                                    # no time field: invalid date
        rec({"time": None, "host": "a"}),                                  # null time: invalid date
        rec({"time": [T0_MS], "host": "a"}),                               # array time: invalid date
    ]
    engine, _, dead = run_job(make_job(), records)
    c = engine.counts
    assert c.input_record_count == 9
    assert c.processed_record_count == 3
    assert c.invalid_date_count == 4
    assert c.malformed_record_count == 1
    assert c.out_of_order_timestamp_count == 1
    assert c.input_record_count == (c.processed_record_count + c.invalid_date_count + c.malformed_record_count
                                    + c.out_of_order_timestamp_count)
    assert c.missing_field_count == 2
    assert c.input_bytes == sum(len(r[0]) for r in records)
    assert c.input_field_count == sum(len(r[1]) for r in records if r[1] is not None)
    assert c.earliest_record_timestamp == T0_MS
    assert c.latest_record_timestamp == T0_MS + 2 * HOUR * 1000
    # buckets T0 (data), T0+1h (empty), T0+2h (closed at the end of input)
    assert c.bucket_count == 3 and c.empty_bucket_count == 1
    assert c.latest_empty_bucket_timestamp == T0_MS + HOUR * 1000
    assert c.latest_bucket_timestamp == T0_MS + 2 * HOUR * 1000
    assert sorted(reason for _, _, reason in dead) == sorted(
        ["invalid_date"] * 4 + ["invalid JSON: x", "out_of_order"])
    assert all(jid == "counts" for _, jid, _ in dead)
    d = c.to_dict("counts")
    assert d["job_id"] == "counts" and "latest_sparse_bucket_timestamp" not in d
    assert DataCounts.restore({**c.snapshot(), "unknown": 1}) == c


def test_data_counts_timestamps_are_epoch_ms_of_fractional_seconds():
    job = Job.from_dict({"job_id": "ms", "analysis_config": {"bucket_span": "15m", "detectors": [{"function": "count"}]},
                         "data_description": {"time_field": "@timestamp", "time_format": "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"}})
    engine, _, _ = run_job(job, [rec({"@timestamp": "2023-11-20T00:00:22.358Z"}),
                                 rec({"@timestamp": "2023-11-20T00:00:22.359+00:00"}),
                                 rec({"@timestamp": "2023-11-20T00:00:21.001Z"})])
    c = engine.counts
    assert c.processed_record_count == 3
    assert c.earliest_record_timestamp == 1700438421001
    assert c.latest_record_timestamp == 1700438422359


def test_data_counts_epoch_seconds_string_times():
    job = Job.from_dict({"job_id": "s", "analysis_config": {"bucket_span": "5m", "detectors": [{"function": "count"}]},
                         "data_description": {"time_field": "t"}})
    engine, _, _ = run_job(job, [rec({"t": "1700438422.5"}), rec({"t": 1700438423})])
    assert engine.counts.earliest_record_timestamp == 1700438422500
    assert engine.counts.latest_record_timestamp == 1700438423000


def test_data_counts_within_latency_is_not_out_of_order():
    job = make_job(latency="2h")
    engine, _, _ = run_job(job, [rec({"time": T0_MS + 5 * 60 * 1000, "host": "a", "value": 1}),
                                 rec({"time": T0_MS + 2 * HOUR * 1000, "host": "a", "value": 1}),
                                 rec({"time": T0_MS + 10 * 60 * 1000, "host": "a", "value": 1}),
                                 rec({"time": T0_MS + 4 * HOUR * 1000, "host": "a", "value": 1}),
                                 rec({"time": T0_MS + HOUR * 1000 + 1, "host": "a", "value": 1})])
    c = engine.counts
    assert (c.processed_record_count, c.out_of_order_timestamp_count) == (4, 1)  # T0 bucket closed at T0+3h
    assert c.earliest_record_timestamp == T0_MS + 5 * 60 * 1000


def test_same_bucket_disorder_is_not_out_of_order():
    engine, _, _ = run_job(make_job(), [rec({"time": T0_MS + 50 * 60 * 1000, "host": "a", "value": 1}),
                                        rec({"time": T0_MS + 1000, "host": "a", "value": 1})])
    assert engine.counts.out_of_order_timestamp_count == 0
    assert engine.counts.earliest_record_timestamp == T0_MS + 1000


def test_first_record_honours_latency():
    job = make_job(latency="2h")
    engine, _, _ = run_job(job, [rec({"time": T0_MS + 2 * HOUR * 1000, "host": "a", "value": 1}),
                                 rec({"time": T0_MS + 10 * 60 * 1000, "host": "a", "value": 1})])
    assert engine.counts.out_of_order_timestamp_count == 0
    assert engine.counts.processed_record_count == 2


def test_null_and_missing_analysis_fields_are_counted_missing():
    engine, _, _ = run_job(make_job(), [rec({"time": T0_MS, "host": None, "value": None}),
                                        rec({"time": T0_MS + 1, "other": 1})])
    assert engine.counts.processed_record_count == 2
    assert engine.counts.missing_field_count == 4


def test_processed_field_count_excludes_time_field():
    engine, _, _ = run_job(make_job(), [rec({"time": T0_MS, "host": "a", "value": 1}),
                                        rec({"time": T0_MS + 1000, "host": "b"})])
    c = engine.counts
    assert c.processed_field_count == 2 * 2 - c.missing_field_count  # analysis fields: host, value


def test_huge_integer_metric_value_does_not_stop_the_run():
    data = b"time,host,value\n" + b"%d,a,%s\n" % (T0_MS, b"9" * 400) + b"%d,a,1\n" % (T0_MS + 2 * HOUR * 1000)
    engine, _, _ = run_job(make_job(), iter_csv(io.BytesIO(data)))
    assert engine.counts.input_record_count == 2


def test_huge_integer_csv_time_is_invalid_date():
    data = b"time,host,value\n" + b"1" * 400 + b",a,1\n"
    engine, _, _ = run_job(make_job(), iter_csv(io.BytesIO(data)))
    assert engine.counts.invalid_date_count == 1


# --------------------------------------------------------------------------------------------- readers
def test_ndjson_reader_blank_lines_crlf_and_bad_lines(tmp_path):
    p = tmp_path / "events.ndjson"
    p.write_bytes(b'{"a": 1}\n\n   \n{"b": [1, {"c": null}]}\r\n[1, 2]\n42\n"str"\nnull\n{bad json}\n'
                  b'{"x": NaN}\n\xff\xfe\n{"u": "\xc3\xa9"}\n{"last": true}')
    out = list(read_records(str(p)))
    docs = [d for _, d, e in out if e is None]
    errors = [(raw, e) for raw, d, e in out if e is not None]
    assert docs == [{"a": 1}, {"b": [1, {"c": None}]}, {"u": "\u00e9"}, {"last": True}]
    assert [raw for raw, _ in errors] == [b"[1, 2]", b"42", b'"str"', b"null", b"{bad json}", b'{"x": NaN}', b"\xff\xfe"]
    assert all(e.startswith(("invalid JSON", "expected a JSON object")) for _, e in errors)
    assert all(d is None for _, d, e in out if e is not None)
    assert out[1][0] == b'{"b": [1, {"c": null}]}'  # CRLF stripped from the raw bytes


def test_ndjson_reader_never_raises_on_deep_nesting_and_big_numbers():
    lines = b"[" * 5000 + b"]" * 5000 + b"\n" + b'{"n": ' + b"9" * 400 + b"}\n" + b'{"n": ' + b"9" * 30 + b"}\n"
    out = list(iter_ndjson(io.BytesIO(lines)))
    assert out[0][2] is not None and out[1][2] is not None
    assert out[2][1] == {"n": float("9" * 30)}


def test_csv_reader_types_quotes_and_bad_rows(tmp_path):
    p = tmp_path / "events.csv"
    p.write_bytes(b'time,host,value,msg\n'
                  b'1700438400,web-1,1.5,"hello, world"\n'
                  b'\n'
                  b'1700438401,web-2,-3,"multi\nline"\n'
                  b'1700438402,web-3,nan,x\n'
                  b'1700438403,web-4\n'
                  b'+7,.5,1e3,-inf\n'
                  b'007,,abc,"q""uote"\n')
    out = list(read_records(str(p)))
    docs = [d for _, d, e in out if e is None]
    assert docs == [
        {"time": 1700438400, "host": "web-1", "value": 1.5, "msg": "hello, world"},
        {"time": 1700438401, "host": "web-2", "value": -3, "msg": "multi\nline"},
        {"time": 1700438402, "host": "web-3", "value": "nan", "msg": "x"},
        {"time": 7, "host": 0.5, "value": 1000.0, "msg": "-inf"},
        {"time": 7, "host": "", "value": "abc", "msg": 'q"uote'},
    ]
    errors = [(raw, e) for raw, d, e in out if e is not None]
    assert errors == [(b"1700438403,web-4", "CSV row has 2 fields, header has 4")]


def test_csv_reader_invalid_utf8_and_oversized_field_do_not_raise():
    data = b"time,host\n1,\xff\xfe\n2," + b"x" * 200_000 + b"\n3,c\n"
    out = list(iter_csv(io.BytesIO(data)))
    assert out[0][1] == {"time": 1, "host": "\ufffd\ufffd"}
    assert out[1][1] is None and out[1][2].startswith("invalid CSV")
    assert out[-1][1] == {"time": 3, "host": "c"}


def test_csv_reader_empty_input_and_header_only():
    assert list(iter_csv(io.BytesIO(b""))) == []
    assert list(iter_csv(io.BytesIO(b"time,host\n"))) == []


@pytest.mark.parametrize("name,payload,kind", [
    ("e.ndjson.gz", b'{"a": 1}\n\n{"a": 2}\nnot json\n', "ndjson"),
    ("e.jsonl.gz", b'{"a": 1}\n\n{"a": 2}\nnot json\n', "ndjson"),
    ("e.csv.gz", b"a\n1\n\n2\n", "csv"),
    ("e.gz", b'{"a": 1}\n\n{"a": 2}\nnot json\n', "ndjson"),    # no inner extension: sniffed from content
    ("e.ndjson", b'{"a": 1}\n\n{"a": 2}\nnot json\n', "ndjson"),  # gzip magic without .gz suffix
])
def test_gzip_inputs(tmp_path, name, payload, kind):
    p = tmp_path / name
    p.write_bytes(gzip.compress(payload))
    out = list(read_records(str(p)))
    docs = [d for _, d, e in out if e is None]
    assert docs == [{"a": 1}, {"a": 2}]
    assert len(out) == (3 if kind == "ndjson" else 2)


def test_explicit_format_overrides_the_file_name(tmp_path):
    p = tmp_path / "data.txt"
    p.write_bytes(b"a,b\n1,2\n")
    assert [d for _, d, _ in read_records(str(p), fmt="csv")] == [{"a": 1, "b": 2}]
    assert [e is not None for _, _, e in read_records(str(p), fmt="ndjson")] == [True, True]
    q = tmp_path / "semi.txt"
    q.write_bytes(b"a;b\n1;x\n")
    assert [d for _, d, _ in read_records(str(q), fmt="csv", delimiter=";")] == [{"a": 1, "b": "x"}]


def test_sniff_format():
    assert sniff_format("x.csv", b"{") == "csv"
    assert sniff_format("x.tsv.gz", b"") == "csv"
    assert sniff_format("x.json", b"a,b") == "ndjson"
    assert sniff_format("x", b'  {"a": 1}') == "ndjson"
    assert sniff_format("x", b"") == "ndjson"
    assert sniff_format("x", b"time,host") == "csv"


def test_reader_feeds_runner_end_to_end(tmp_path):
    p = tmp_path / "e.ndjson.gz"
    lines = [orjson.dumps({"time": T0_MS + i * 60_000, "host": f"h{i % 2}", "value": i}) for i in range(10)]
    p.write_bytes(gzip.compress(b"\n".join(lines[:5] + [b"", b"{oops"] + lines[5:]) + b"\n"))
    engine, docs, _ = run_job(make_job(), read_records(str(p)))
    c = engine.counts
    assert (c.input_record_count, c.processed_record_count, c.malformed_record_count) == (11, 10, 1)
    assert any(d.get("result_type") == "bucket" for d in docs)


def test_truncated_gzip_yields_error_instead_of_raising(tmp_path):
    p = tmp_path / "cut.ndjson.gz"
    body = b"".join(orjson.dumps({"i": i}) + b"\n" for i in range(5000))
    p.write_bytes(gzip.compress(body)[:-100])
    out = list(read_records(str(p)))
    assert out and out[-1][2] is not None


def test_tsv_files_use_tab_delimiter(tmp_path):
    p = tmp_path / "e.tsv"
    p.write_bytes(b"time\thost\n1\ta\n")
    assert [d for _, d, _ in read_records(str(p))] == [{"time": 1, "host": "a"}]


def test_csv_utf8_bom_is_stripped():
    assert list(iter_csv(io.BytesIO(b"\xef\xbb\xbftime,host\n1,a\n")))[0][1] == {"time": 1, "host": "a"}


def test_csv_non_finite_numbers_stay_strings():
    # the CSV reader never turns a cell into a non-finite float
    out = list(iter_csv(io.BytesIO(b"v\ninf\n-inf\nnan\n1e999\n")))
    assert [d["v"] for _, d, _ in out] == ["inf", "-inf", "nan", "1e999"]
    assert all(not isinstance(d["v"], float) or math.isfinite(d["v"]) for _, d, _ in out)
