"""The job processor and the work-message envelope, without Kafka: exactly-once by position, batches."""

from __future__ import annotations

import orjson
import pytest

from streamad.runtime import envelope
from streamad.runtime.processor import JobProcessor

JOB = {"job_id": "j", "analysis_config": {"bucket_span": "1h", "detectors": [{"function": "count"}]},
       "data_description": {"time_field": "t", "time_format": "epoch"}}


def _events(n: int) -> list[bytes]:
    return [orjson.dumps({"t": 1_700_000_000 + 60 * i, "i": i}) for i in range(n)]


def _open(proc: JobProcessor) -> int:
    proc.apply("j", 0, envelope.control("open", job=JOB))
    return 1


def _results(outputs) -> list[bytes]:
    return [o.value for o in outputs if o.topic == "results"]


def test_batch_round_trips_raw_bytes_including_newlines():
    raws = [b'{"a":\n1}', b"", b"\x00\xff", b'{"b":2}']
    kind, (topic, partition, events, run) = envelope.decode(envelope.batch("in", 3, [7, 8, 9, 12], raws, 42))
    assert (kind, topic, partition, run) == ("batch", "in", 3, 42)
    assert events == list(zip([7, 8, 9, 12], raws))


def test_batch_with_lengths_that_do_not_match_is_refused():
    good = envelope.batch("in", 0, [1, 2], [b"ab", b"cd"])
    with pytest.raises(ValueError, match="lengths"):
        envelope.decode(good[:-1])


def test_batches_give_the_same_results_as_single_events_and_skip_replayed_positions():
    events = _events(300)
    single = JobProcessor()
    at = _open(single)
    out_single = []
    for i, raw in enumerate(events):
        head = orjson.dumps({"t": "in", "p": 0, "o": i})
        out_single += single.apply("j", at, envelope.sourced(head, raw))
        at += 1
    out_single += single.apply("j", at, envelope.control("close"))

    batched = JobProcessor()
    at = _open(batched)
    out_batched = []
    # overlapping batches, as a lookback resumed from older progress and the router re-forwarding send
    for lo, hi in ((0, 120), (100, 250), (30, 60), (240, 300)):
        out_batched += batched.apply("j", at, envelope.batch("in", 0, list(range(lo, hi)), events[lo:hi]))
        at += 1
    out_batched += batched.apply("j", at, envelope.control("close"))

    assert len([r for r in _results(out_single) if b'"result_type":"bucket"' in r]) >= 5
    assert _results(out_batched) == _results(out_single)
    counts = single.slots["j"].engine.counts.to_dict("j")
    assert counts == batched.slots["j"].engine.counts.to_dict("j")
    assert counts["input_record_count"] == 300
    assert batched.slots["j"].sources == {"in:0": 299}


def test_a_work_offset_below_the_next_one_is_not_applied_again():
    proc = JobProcessor()
    at = _open(proc)
    raw = _events(1)[0]
    assert proc.apply("j", at, envelope.batch("in", 0, [0], [raw])) is not None
    assert proc.apply("j", at, envelope.batch("in", 0, [0], [raw])) is None  # work-topic replay
    assert proc.slots["j"].engine.counts.to_dict("j")["input_record_count"] == 1


def test_a_malformed_batch_goes_to_the_dead_letter_output():
    proc = JobProcessor()
    at = _open(proc)
    out = proc.apply("j", at, envelope.BATCH + b'{"t":"in","p":0,"o":[1],"n":[5]}\nab')
    dead = [orjson.loads(o.value) for o in out if o.topic == "dead_letter"]
    assert len(dead) == 1 and "bad work message" in dead[0]["reason"]


def test_batches_split_at_the_event_and_byte_caps_and_keep_every_event_in_order():
    big = b"x" * (envelope.BATCH_BYTES // 3)
    events = [(i, big if i % 7 == 0 else orjson.dumps({"i": i})) for i in range(1, 1300)]
    values = envelope.batches("in", 2, events)
    decoded = [envelope.decode(v)[1] for v in values]
    assert all(t == "in" and p == 2 and r is None for t, p, _, r in decoded)
    assert [e for _, _, evs, _ in decoded for e in evs] == events
    assert max(len(evs) for _, _, evs, _ in decoded) <= envelope.BATCH_EVENTS
    assert all(sum(len(r) for _, r in evs) <= envelope.BATCH_BYTES for _, _, evs, _ in decoded)
    assert len(values) > -(-len(events) // envelope.BATCH_EVENTS)  # the byte cap split some
    assert envelope.batches("in", 0, []) == []


def _counts(proc: JobProcessor) -> dict:
    return proc.slots["j"].engine.counts.to_dict("j")


def test_a_stale_datafeed_run_is_dropped_and_a_new_run_resumes_after_the_latest_record():
    """A restart (new run) rewinds each planned partition's position to the run's first offset, keeps
    only events after the latest record seen (Elastic's datafeed resumes there) and drops what the
    previous run still forwards."""
    events = _events(300)
    proc = JobProcessor()
    at = _open(proc)
    proc.apply("j", at, envelope.control("datafeed", run=1, plan={"in:0": 0}))
    at += 1
    proc.apply("j", at, envelope.batch("in", 0, list(range(0, 100)), events[0:100], run=1))
    at += 1
    proc.apply("j", at, envelope.control("close"))  # stops the run; its lookback still sends 100..149
    at += 1
    proc.apply("j", at, envelope.batch("in", 0, list(range(100, 150)), events[100:150], run=1))
    at += 1
    assert _counts(proc)["input_record_count"] == 100 and proc.slots["j"].sources["in:0"] == 149
    proc.apply("j", at, envelope.control("open", job=JOB))
    at += 1
    proc.apply("j", at, envelope.control("datafeed", run=2, plan={"in:0": 0}))
    at += 1
    assert proc.slots["j"].sources["in:0"] == -1 and proc.slots["j"].run == 2
    # the stale run 1 still forwards: dropped, nothing counted, position unchanged
    proc.apply("j", at, envelope.batch("in", 0, list(range(150, 200)), events[150:200], run=1))
    at += 1
    assert _counts(proc)["input_record_count"] == 100 and proc.slots["j"].sources["in:0"] == -1
    # run 2 re-reads from the start: the first 100 are before the latest record (dropped by time),
    # the 200 the job never applied are counted once
    proc.apply("j", at, envelope.batch("in", 0, list(range(0, 300)), events, run=2))
    at += 1
    assert _counts(proc)["input_record_count"] == 300
    assert proc.slots["j"].sources["in:0"] == 299


def test_a_deleted_job_created_again_reads_its_topics_from_the_start():
    events = _events(50)
    proc = JobProcessor()
    at = _open(proc)
    proc.apply("j", at, envelope.batch("in", 0, list(range(50)), events))
    proc.apply("j", at + 1, envelope.control("delete"))
    proc.apply("j", at + 2, envelope.control("open", job=JOB))
    proc.apply("j", at + 3, envelope.batch("in", 0, list(range(50)), events))
    assert _counts(proc)["input_record_count"] == 50


def test_an_update_made_while_the_job_was_closed_applies_when_it_opens_again():
    proc = JobProcessor()
    at = _open(proc)
    proc.apply("j", at, envelope.control("close"))
    updated = {**JOB, "description": "now with model plot", "model_plot_config": {"enabled": True}}
    proc.apply("j", at + 1, envelope.control("open", job=updated))
    engine = proc.slots["j"].engine
    assert engine.plot is True and engine.job.description == "now with model plot"
