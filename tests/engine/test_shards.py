"""A job's modelling sharded by partition value (`JobEngine(shards=N)`): the same bytes whatever N.

Each constructed job runs with N = 1 and N = 3 and 7 shards (and once with every shard request and
reply sent through bytes) over the same events, with interim flushes, a snapshot/restore in the
middle, model_size_stats and a forecast at the end; the documents must be byte-identical.
"""

from __future__ import annotations

import pickle

import numpy as np
import orjson
import pytest

from streamad.config.filters import Calendar, Filter
from streamad.config.job import Job
from streamad.engine.forecast import ForecastRequest
from streamad.engine.job import JobEngine
from streamad.engine.scorer import JobScorer
from streamad.engine.shard import CloseReply, CloseRequest, PartitionEngine, shard_of

T0 = 1_700_438_400  # a Monday 00:00 UTC
HOUR = 3600
DAYS = 12
HOSTS = [f"h{i:02d}" for i in range(12)]
SERVICES = ("api", "db", "web")
CLIENTS = [f"c{i}" for i in range(6)]


def _events(seed: int = 7) -> list[tuple[bytes, dict, None]]:
    """Hourly traffic of 12 hosts x 3 services: h11 falls idle after day 4, h10 starts on day 6, h03's
    level moves up for good on day 8 (a level shift), a few spikes, a rare service on two days."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(DAYS * 24):
        t0 = T0 + b * HOUR
        day, hour = divmod(b, 24)
        for h, host in enumerate(HOSTS):
            if host == "h11" and day >= 4:
                continue
            if host == "h10" and day < 6:
                continue
            for s, svc in enumerate(SERVICES):
                n = 1 + (h + s + b) % 3
                if host == "h05" and b == 200 and svc == "api":
                    n += 25
                for k in range(n):
                    base = 20.0 + 3 * h + 5 * s + 4 * np.sin(2 * np.pi * hour / 24)
                    if host == "h03" and day >= 8:
                        base += 60.0
                    if host == "h07" and b == 230 and svc == "db":
                        base *= 6
                    v = round(float(base + rng.normal()), 3)
                    doc = {"t": t0 + (k * 613 + h * 97 + s * 31) % HOUR, "host": host, "svc": svc, "v": v,
                           "dc": "eu" if h % 2 else "us", "client": CLIENTS[(h + k + b) % len(CLIENTS)]}
                    if host in ("h00", "h10"):
                        doc["pair"] = host
                    out.append(doc)
            if day in (5, 9) and hour == 13 and h % 4 == 1:
                out.append({"t": t0 + 1800, "host": host, "svc": "ftp", "v": 1.0, "dc": "eu",
                            "client": "c-rare"})
    out.sort(key=lambda d: d["t"])
    return [(orjson.dumps(d), d, None) for d in out]


EVENTS = _events()
FILTERS = {"quiet": Filter.from_dict({"filter_id": "quiet", "items": ["h0*"]}),
           "big": Filter.from_dict({"filter_id": "big", "items": ["db"]})}
CALENDARS = (Calendar.from_dict({"calendar_id": "ops", "job_ids": ["_all"], "events": [
    {"description": "deploy", "start_time": (T0 + 200 * HOUR) * 1000, "end_time": (T0 + 202 * HOUR) * 1000,
     "skip_result": False, "skip_model_update": True},
    {"description": "freeze", "start_time": (T0 + 229 * HOUR) * 1000, "end_time": (T0 + 231 * HOUR) * 1000}]}),)


def _job(job_id: str, detectors: list[dict], influencers=("host", "svc"), **extra) -> Job:
    body = {"job_id": job_id, "analysis_config": {"bucket_span": "1h", "detectors": detectors,
                                                  "influencers": list(influencers), **extra.pop("analysis", {})},
            "data_description": {"time_field": "t", "time_format": "epoch"},
            "model_plot_config": {"enabled": True, "annotations_enabled": True}, **extra}
    return Job.from_dict(body, filters=FILTERS)


JOBS = {
    # partition + by, two detectors on different partition fields, a count with empty buckets, latency
    "partition_by": _job("pb", [
        {"function": "mean", "field_name": "v", "by_field_name": "svc", "partition_field_name": "host"},
        {"function": "count", "by_field_name": "host", "partition_field_name": "svc"},
        {"function": "high_sum", "field_name": "v", "partition_field_name": "host"},
        {"function": "count"}], analysis={"latency": "2h"}),
    # population over a partition, rare and freq_rare per partition, time_of_day, metric
    "population_rare": _job("pr", [
        {"function": "sum", "field_name": "v", "over_field_name": "client", "partition_field_name": "host"},
        {"function": "rare", "by_field_name": "svc", "partition_field_name": "dc"},
        {"function": "freq_rare", "by_field_name": "svc", "over_field_name": "client", "partition_field_name": "dc"},
        {"function": "time_of_day", "by_field_name": "svc", "partition_field_name": "host"},
        # h10 (from day 6) and h00 are on different shards: time scores count from the job's first bucket
        {"function": "time_of_day", "partition_field_name": "pair"},
        {"function": "metric", "field_name": "v", "partition_field_name": "host"},
        {"function": "low_count", "partition_field_name": "host"}], influencers=("host", "client")),
    # custom rules with filter scopes (skip_result, skip_model_update with a condition); calendars
    "rules": _job("ru", [
        {"function": "count", "by_field_name": "svc", "partition_field_name": "host", "custom_rules": [
            {"actions": ["skip_result"], "scope": {"host": {"filter_id": "quiet", "filter_type": "include"}}},
            {"actions": ["skip_model_update"], "scope": {"svc": {"filter_id": "big"}},
             "conditions": [{"applies_to": "actual", "operator": "gt", "value": 4}]}]},
        {"function": "mean", "field_name": "v", "partition_field_name": "host", "custom_rules": [
            {"actions": ["skip_result"], "conditions": [{"applies_to": "diff_from_typical", "operator": "lt",
                                                         "value": 30}]}]}]),
}


def _run(job: Job, shards: int, wire: bool = False, *, restore_at: float = 0.5, forecast: bool = True) -> bytes:
    out: list[bytes] = []
    emit = out.append

    def doc(d: dict) -> None:
        emit(orjson.dumps(d))

    engine = JobEngine(job, doc, filters=FILTERS, calendars=CALENDARS, shards=shards, wire=wire)
    cut = int(len(EVENTS) * restore_at)
    for n, (raw, d, err) in enumerate(EVENTS):
        engine.feed(raw, d, err)
        if n % 4001 == 4000:
            engine.flush(calc_interim=True)  # interim results of the open buckets
        if n == cut:
            doc(engine.model_size_stats())
            engine = JobEngine.restore(engine.snapshot(), doc)
    engine.flush(calc_interim=True)
    engine.finish()
    doc(engine.model_size_stats())
    if forecast and job.job_id == "pb":
        engine.forecast(ForecastRequest("f1", 2 * 86400, (T0 + DAYS * 86400) * 1000, 0))
    if shards > 1:
        assert len(engine.active) > 1  # the data did spread over several shards
    return b"\n".join(out)


_ONE: dict[str, bytes] = {}


def _one(name: str) -> bytes:
    if name not in _ONE:
        _ONE[name] = _run(JOBS[name], 1)
    return _ONE[name]


@pytest.mark.parametrize("name", sorted(JOBS))
@pytest.mark.parametrize("shards", [3, 7])
def test_output_does_not_depend_on_the_shard_count(name, shards):
    one = _one(name)
    assert b'"result_type":"record"' in one
    assert _run(JOBS[name], shards) == one


def test_the_documents_cover_what_the_shards_must_merge():
    pb = _one("partition_by")
    assert b'"event":"model_change"' in pb  # a level shift annotation
    assert b'"result_type":"model_plot"' in pb and b'"result_type":"model_forecast"' in pb
    assert b'"is_interim":true' in pb
    ru = _one("rules")
    assert b'"scheduled_events":["deploy"]' in ru and b'"scheduled_events":["freeze"]' in ru
    pr = _one("population_rare")
    assert b'"function":"rare"' in pr and b'"over_field_name":"client"' in pr


@pytest.mark.parametrize("name", sorted(JOBS))
def test_requests_and_replies_through_bytes_change_nothing(name):
    assert _run(JOBS[name], 3, wire=True) == _one(name)


def test_one_shard_through_bytes_changes_nothing():
    assert _run(JOBS["rules"], 1, wire=True) == _one("rules")


def test_shard_of_is_stable_and_spreads():
    assert shard_of(None, 7) == 0 and shard_of("anything", 1) == 0
    assert [shard_of(h, 7) for h in HOSTS] == [shard_of(h, 7) for h in list(HOSTS)]
    assert len({shard_of(h, 7) for h in HOSTS}) > 3
    engine = JobEngine(JOBS["partition_by"], lambda d: None, shards=7)
    assert engine.shard_of("h01") == shard_of("h01", 7)


def test_requests_and_replies_are_plain_bytes():
    """A request/reply pair crosses bytes and a shard restores from its snapshot, with the same reply."""
    job = JOBS["partition_by"]
    engine = JobEngine(job, lambda d: None, shards=3)
    seen = []
    for raw, d, err in EVENTS[:3000]:
        engine.feed(raw, d, err)
    start = max(engine.open)
    close = engine.bucket_requests(start, interim=True)
    assert {i for i, _ in close.requests} == set(engine.active)
    for i, req in close.requests:
        blob = req.to_bytes()
        assert isinstance(blob, bytes) and b"streamad.engine.shard" in blob
        back = CloseRequest.from_bytes(blob)
        shard_copy = PartitionEngine.restore(engine.shards[i].snapshot())
        a = engine.shards[i].close(back).to_bytes()
        b = shard_copy.close(CloseRequest.from_bytes(blob)).to_bytes()
        assert a == b
        reply = CloseReply.from_bytes(a)
        seen.append(reply)
        assert reply.shard == i and len(reply.batches) == len(job.detectors)
    with pytest.raises(ValueError):
        CloseRequest.from_bytes(pickle.dumps({"x": 1}))


def _old_engine_state(self) -> dict:
    """A JobEngine's state as snapshots before shards held it (its detectors in the engine)."""
    state = self.__dict__.copy()
    for name in self._TRANSIENT:
        state.pop(name, None)
    state["detectors"] = state["shards"][0].detectors
    for name in ("gatherers", "n_shards", "shards", "active", "wire", "first_times", "close_seq", "shard_sizes"):
        del state[name]
    return state


def test_snapshots_from_before_shards_restore_and_continue(monkeypatch):
    job = JOBS["partition_by"]
    whole = _run(job, 1, forecast=False, restore_at=2.0)
    out: list[bytes] = []

    def doc(d: dict) -> None:
        out.append(orjson.dumps(d))

    engine = JobEngine(job, doc, filters=FILTERS, calendars=CALENDARS)
    cut = len(EVENTS) // 2
    for n, (raw, d, err) in enumerate(EVENTS):
        engine.feed(raw, d, err)
        if n % 4001 == 4000:
            engine.flush(calc_interim=True)
        if n == cut:
            with monkeypatch.context() as m:
                m.setattr(JobEngine, "__getstate__", _old_engine_state)
                blob = engine.snapshot()
            assert b"gatherers" not in blob
            engine = JobEngine.restore(blob, doc)
            assert engine.n_shards == 1 and engine.active == [0]
    engine.flush(calc_interim=True)
    engine.finish()
    doc(engine.model_size_stats())
    assert b"\n".join(out) == whole


def _batches(monkeypatch, job: Job, shards: int) -> list:
    """What the scorer is given, leaf by leaf: per bucket and detector the keys in order and the columns."""
    seen: list = []
    score = JobScorer.score_bucket

    def record(self, t, batches, event_count, interim, processing_time_ms=0):
        for b in batches:
            leaves = b.leaves()
            seen.append((t, interim, b.det.detector_index, [(lf.partition, lf.by, lf.over) for lf in leaves],
                         [repr(lf) for lf in leaves], b.normalizer_key(), [b.scopes[i] for i in b.ids.tolist()],
                         b.skipped, None if b.model_probability is None else b.model_probability.tobytes()))
        return score(self, t, batches, event_count, interim, processing_time_ms)

    with monkeypatch.context() as m:
        m.setattr(JobScorer, "score_bucket", record)
        _run(job, shards, forecast=False)
    return seen


@pytest.mark.parametrize("name", sorted(JOBS))
def test_the_scorer_gets_the_same_leaves_in_the_same_order(monkeypatch, name):
    one = _batches(monkeypatch, JOBS[name], 1)
    assert len(one) > 100
    assert _batches(monkeypatch, JOBS[name], 7) == one


def test_population_model_events_keep_the_one_engine_order():
    """A population model's rows are made in order of first appearance (zz, mm, aa here), not key
    order; its level shifts in one bucket are annotated in row order, whatever the shards."""
    rng = np.random.default_rng(3)
    docs = []
    for b in range(24 * 12):
        for host, first_day in (("zz", 0), ("mm", 1), ("aa", 2)):
            if b // 24 < first_day:
                continue
            for c in range(5):
                v = 10.0 + c + rng.normal() * 0.5 + (40.0 if b >= 24 * 8 else 0.0)
                docs.append({"t": T0 + b * HOUR + c * 60, "host": host, "client": f"c{c}", "v": round(float(v), 3)})
    docs.sort(key=lambda d: d["t"])
    job = Job.from_dict({"job_id": "pop", "analysis_config": {"bucket_span": "1h", "detectors": [
        {"function": "sum", "field_name": "v", "over_field_name": "client", "partition_field_name": "host"}],
        "influencers": ["host"]}, "data_description": {"time_field": "t", "time_format": "epoch"},
        "model_plot_config": {"enabled": False, "annotations_enabled": True}})
    assert len({shard_of(h, 7) for h in ("zz", "mm", "aa")}) > 1
    runs = {}
    for shards in (1, 7):
        out: list[bytes] = []
        engine = JobEngine(job, lambda d, out=out: out.append(orjson.dumps(d)), shards=shards)
        for d in docs:
            engine.feed(orjson.dumps(d), d, None)
        engine.finish()
        runs[shards] = out
    notes = [orjson.loads(o) for o in runs[1] if b'"result_type":"annotation"' in o]
    assert [n["partition_field_value"] for n in notes] == ["zz", "mm", "aa"]
    assert runs[7] == runs[1]
