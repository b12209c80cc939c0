"""The job engine: time-ordered events in, Elastic result documents out.

`JobEngine.feed(raw, doc, error)` applies the datafeed query and aggregations, parses the event
time, drops out-of-order events (counted), keeps buckets open for `latency`, and closes every
bucket whose end + latency has passed: detectors model and score it, the scorer writes bucket,
record and influencer documents, model plot and model-change annotations. Pure and deterministic:
the same events give the same documents, byte for byte.

The engine is a frontend over N shards (`shard.PartitionEngine`, `shards=N`, default 1): the frontend
gathers, and at bucket close `bucket_requests` splits each detector's gather dict by the shard of
its series' partition value (`shard.shard_of`) into one `CloseRequest` per shard that has ever had a
series; each shard models and scores its part (`PartitionEngine.close` -> `CloseReply`), and
`bucket_replies` merges the replies in series-key order and scores the bucket as one. The output
does not depend on N.
"""

from __future__ import annotations

import bisect
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson

from streamad.config.errors import ConfigError
from streamad.config.filters import Calendar, Filter
from streamad.config.job import Job
from streamad.datafeed.aggregation import DatafeedAggregator
from streamad.datafeed.query import compile_query
from streamad.engine import ids
from streamad.engine.detector import DetectorState
from streamad.engine.forecast import ForecastRequest, forecast_docs, forecast_plan
from streamad.engine.scorer import JobScorer, _r
from streamad.engine.shard import (
    CloseReply,
    CloseRequest,
    PartitionEngine,
    merge_batches,
    merge_events,
    merge_forecast,
    shard_of,
)
from streamad.ingest.counts import DataCounts
from streamad.ingest.fields import MISSING, FieldGetter
from streamad.ingest.timeparse import TimeParser

Emit = Callable[[dict], None]
DeadLetter = Callable[[bytes, str, str], None]


RENORMALIZE_EVERY_S = 86400


def _no_emit(doc: dict) -> None:
    raise RuntimeError("restored engine has no emit callback")


def _no_dead_letter(raw: bytes, job_id: str, reason: str) -> None:
    return None


def _count_fields(doc: dict) -> int:
    return len(doc)


def check_filters(job: Job, filters: dict[str, Filter]) -> None:
    """Every filter a rule scope names must be known before the first bucket closes."""
    for det in job.detectors:
        for r, rule in enumerate(det.custom_rules):
            for scope in rule.scope:
                if scope.filter_id not in filters:
                    raise ConfigError(
                        f"analysis_config.detectors[{det.detector_index}].custom_rules[{r}].scope."
                        f"{scope.field_name}.filter_id", "rule_filter_exists",
                        f"filter [{scope.filter_id}] does not exist (give the filters to the engine, e.g. "
                        f"streamad run --filters)")


@dataclass
class BucketClose:
    """A bucket close between its requests and its replies (frontend side)."""

    start: int
    interim: bool
    event_count: float
    scheduled: list  # the calendars' scheduled events in the bucket, in document order
    requests: list  # [(shard index, CloseRequest)], one per shard that has ever had a series
    seq: int = -1  # the close's sequence number (its requests carry it)
    replies: dict = field(default_factory=dict)  # remote shards: shard -> CloseReply received so far

    def complete(self) -> bool:
        return len(self.replies) == len(self.requests)


@dataclass
class ForecastWait:
    """A forecast between its requests to remote shards and their projections."""

    seq: int
    request: ForecastRequest
    plan: tuple  # (times or None, reason or None), fixed when the forecast was asked
    shards: list
    replies: dict = field(default_factory=dict)  # shard -> per detector, per feature columns

    def complete(self) -> bool:
        return len(self.replies) == len(self.shards)


class JobEngine:
    # end of the bucket of the first record when latency moved the first bucket boundary back; empty
    # buckets before the earliest record's bucket are then not reported (class default: old snapshots)
    _lead_end: int | None = None

    def __init__(self, job: Job, emit: Emit, dead_letter: DeadLetter | None = None, *,
                 filters: dict[str, Filter] | None = None, calendars: tuple[Calendar, ...] = (),
                 shards: int = 1, wire: bool = False, remote: bool = False, incarnation: str = ""):
        self.job = job
        self.emit = emit
        self.dead_letter = dead_letter or (lambda raw, job_id, reason: None)
        self.use_context(filters or {}, calendars)
        self.span = job.bucket_span_s
        self.latency = job.analysis_config.latency_s
        self.counts = DataCounts()
        self._set_datafeed(job)
        self.time_getter = FieldGetter(job.data_description.time_field)
        self.time_parser = TimeParser(job.data_description.time_format)
        summary = job.analysis_config.summary_count_field_name
        self.summary = FieldGetter(summary) if summary else None
        # gathering (key_of, accumulators) reads only the detector config: the models live in the shards
        self.gatherers = [DetectorState(job, d) for d in job.detectors]
        self.n_shards = max(1, int(shards))
        # remote: the shards live elsewhere (a worker's shards topic); requests go out through the
        # callback `connect` gives, replies come back through `take_reply`, and what they complete
        # is scored strictly in order (`_queue`: closes, forecasts and deferred steps)
        self.remote = remote
        self.incarnation = incarnation  # tells the shards of a job created again under its id apart
        self.shards = [] if remote else [PartitionEngine(job, i, self.n_shards) for i in range(self.n_shards)]
        self.active = [0] if self.n_shards == 1 else []  # shards that have had a series (called every close)
        self.wire = wire  # serialize every request and reply (what a topic between them would do)
        self._queue: list = []  # remote: BucketClose | ForecastWait | step name, oldest first
        self._steps: list[str] = []  # remote: deferred steps reached, for the caller (`take_steps`)
        self.send = None
        self.first_times: list[float | None] = [None] * len(job.detectors)  # first bucket with data
        self.close_seq = 0
        self.shard_sizes: dict[int, tuple[list, list]] = {}  # shard -> (series, model bytes) per detector
        self._part_shard: dict[str, int] = {}
        self.analysis_fields = sorted({f for d in job.detectors for f in
                                       (d.field_name, d.by_field_name, d.over_field_name, d.partition_field_name)
                                       if f})
        self.analysis_getters = [FieldGetter(f) for f in self.analysis_fields]
        self.scorer = JobScorer(job)
        self.open: dict[int, list] = {}  # bucket start -> [per-detector dict, event count]
        self.last_final_end: int | None = None  # end of the last finalized bucket
        self.latest_time: float | None = None
        self.plot = job.model_plot_config is not None and job.model_plot_config.enabled
        self.plot_terms = set(job.model_plot_config.terms) if job.model_plot_config else set()
        self.annotations = job.model_plot_config is not None and job.model_plot_config.annotations_enabled
        self.interim_ids: set[str] = set()
        self.has_rules = any(d.custom_rules for d in job.detectors)
        self.final_buckets = 0
        # renormalize about once a day of buckets (Elastic does when it persists quantiles)
        self.renormalize_every = max(1, RENORMALIZE_EVERY_S // self.span)

    def use_context(self, filters: dict[str, Filter], calendars: tuple[Calendar, ...] = ()) -> None:
        """The filter lists rule scopes name and the calendars (those of this job are kept); a worker
        calls it again when a filter or calendar changes while the job runs."""
        check_filters(self.job, filters)
        self.filters = dict(filters)
        self.calendars = tuple(c for c in calendars if c.applies_to(self.job.job_id, self.job.groups))

    def update_job(self, job: Job, filters: dict[str, Filter] | None = None,
                   calendars: tuple[Calendar, ...] | None = None) -> None:
        """Take a job update (Elastic's `_update`: descriptions, custom rules, model plot, groups,
        renormalization window, limits) while models and results history stay, with the filters and
        calendars of the updated job. What is analysed (bucket span, functions, fields) cannot
        change: ValueError."""
        def shape(j: Job) -> tuple:
            return (j.bucket_span_s, tuple((d.function, d.field_name, d.by_field_name, d.over_field_name,
                                            d.partition_field_name) for d in j.detectors))
        if shape(job) != shape(self.job):
            raise ValueError("an update cannot change the bucket span or the detectors' functions and fields")
        filters = self.filters if filters is None else filters
        check_filters(job, filters)
        feed_changed = job.datafeed_config != self.job.datafeed_config
        self.job = job
        if feed_changed:
            self._set_datafeed(job)
        self.use_context(filters, self.calendars if calendars is None else calendars)
        for state, det in zip(self.gatherers, job.detectors):
            state.job, state.det = job, det
        for shard in self.shards:
            shard.update_job(job)
        self.plot = job.model_plot_config is not None and job.model_plot_config.enabled
        self.plot_terms = set(job.model_plot_config.terms) if job.model_plot_config else set()
        self.annotations = job.model_plot_config is not None and job.model_plot_config.annotations_enabled
        self.has_rules = any(d.custom_rules for d in job.detectors)
        self.scorer.job = job
        self.scorer.window_s = job.renormalization_window_s

    def forecast(self, request: ForecastRequest) -> None:
        """Emit a forecast's documents (the models are read, never changed). Remote shards project
        their series when the request reaches them, after the buckets closed before it."""
        if not self.remote:
            for doc in forecast_docs(self, request):
                self.emit(doc)
            return
        plan = forecast_plan(self, request)
        shards = list(self.active) if plan[0] is not None else []
        wait = ForecastWait(self.close_seq, request, plan, shards)
        self.close_seq += 1  # the shards see closes and forecasts as one sequence
        self._queue.append(wait)
        for i in shards:
            self.send(i, "forecast", wait.seq, np.asarray(plan[0], dtype=np.int64).tobytes())
        self._drain()

    # ------------------------------------------------------------------ state
    # Callbacks and compiled queries are rebuilt from the job on restore, never stored.
    _TRANSIENT = ("emit", "dead_letter", "query", "_part_shard", "send")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in self._TRANSIENT:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        if "shards" not in state:  # a snapshot from before shards: its detectors become shard 0 of 1
            dets = state.pop("detectors")
            job = state["job"]
            state.update(gatherers=[DetectorState(job, d) for d in job.detectors], n_shards=1,
                         shards=[PartitionEngine(job, 0, 1, dets)], active=[0], wire=False,
                         first_times=[d.first_time for d in dets], close_seq=0, shard_sizes={})
        state.setdefault("remote", False)
        state.setdefault("incarnation", "")
        state.setdefault("_queue", [])
        state.setdefault("_steps", [])
        self.__dict__.update(state)
        self.send = None
        self._part_shard = {}
        self.emit = _no_emit
        self.dead_letter = _no_dead_letter
        feed = self.job.datafeed_config
        self.query = compile_query(feed.query) if feed is not None else None
        if getattr(self, "aggregator", None) is not None and not hasattr(self.aggregator, "_metrics_at"):
            self._set_datafeed(self.job)  # a snapshot from before per-level aggregation state: start afresh

    def snapshot(self) -> bytes:
        """The whole engine state (models, normalizers, open buckets, data_counts) as bytes."""
        return pickle.dumps(self, protocol=5)

    @classmethod
    def restore(cls, blob: bytes, emit: Emit, dead_letter: DeadLetter | None = None) -> JobEngine:
        """An engine that continues exactly where `snapshot` was taken."""
        engine = pickle.loads(blob)
        if not isinstance(engine, cls):
            raise ValueError("not a JobEngine snapshot")
        engine.emit = emit
        if dead_letter is not None:
            engine.dead_letter = dead_letter
        return engine

    def use_datafeed(self, job: Job) -> None:
        """Take a datafeed (query, aggregations) defined after the job was opened; models stay."""
        if job.datafeed_config == self.job.datafeed_config:
            return
        self.job = job
        self._set_datafeed(job)

    def _set_datafeed(self, job: Job) -> None:
        feed = job.datafeed_config
        self.query = compile_query(feed.query) if feed is not None else None
        summary = job.analysis_config.summary_count_field_name
        self.aggregator = (DatafeedAggregator(feed.aggregations, job.data_description.time_field,
                                              summary or "doc_count")
                           if feed is not None and feed.aggregations else None)

    def event_time_ms(self, doc: dict) -> int | None:
        """The event's time in epoch ms as this job reads it, None if it has none."""
        t = self.time_parser(self.time_getter(doc))
        return None if t is None else int(round(t * 1000))

    # ------------------------------------------------------------------ input
    def feed(self, raw: bytes, doc: dict | None, error: str | None = None) -> None:
        if error is not None or doc is None:
            self.counts.record_input(len(raw), 0)
            self.counts.malformed_record_count += 1
            self.dead_letter(raw, self.job.job_id, error or "malformed")
            return
        try:
            if self.query is not None and not self.query(doc):
                return
        except Exception as exc:  # a query on odd data never stops the job
            self.counts.record_input(len(raw), _count_fields(doc))
            self.dead_letter(raw, self.job.job_id, f"query failed: {exc}")
            return
        t = self.time_parser(self.time_getter(doc))
        if self.aggregator is not None:
            # the job receives the summary documents: those are its input records (Elastic counts the
            # aggregation leaf buckets); a raw event is counted only when it is rejected here
            if t is None:
                self.counts.record_input(len(raw), _count_fields(doc))
                self.counts.invalid_date_count += 1
                self.dead_letter(raw, self.job.job_id, "invalid_date")
                return
            if self.last_final_end is not None and t < self.last_final_end:
                self.counts.record_input(len(raw), _count_fields(doc))
                self._out_of_order(t, raw)
                return
            for t_agg, summary in self.aggregator.feed(doc, t):
                self._summary(summary, t_agg)
            return
        self.counts.record_input(len(raw), _count_fields(doc))
        if t is None:
            self.counts.invalid_date_count += 1
            self.dead_letter(raw, self.job.job_id, "invalid_date")
            return
        if self._out_of_order(t, raw):
            return
        self._record(doc, t)

    def _summary(self, doc: dict, t: float) -> None:
        """One summary document of the datafeed aggregation, received as an input record."""
        self.counts.record_input(len(orjson.dumps(doc)), len(doc))
        if self.last_final_end is not None and t < self.last_final_end:
            self.counts.out_of_order_timestamp_count += 1
            return
        self._record(doc, t)

    def _out_of_order(self, t: float, raw: bytes) -> bool:
        if self.last_final_end is not None and t < self.last_final_end:
            self.counts.out_of_order_timestamp_count += 1
            self.dead_letter(raw, self.job.job_id, "out_of_order")
            return True
        return False

    def _record(self, doc: dict, t: float) -> None:
        span = self.span
        if self.last_final_end is None:
            # ml-cpp: the first record's bucket less latency (whole buckets), so an earlier record
            # within latency is still accepted
            first = int(math.floor(t / span)) * span
            self.last_final_end = first - int(math.ceil(self.latency / span)) * span
            if self.last_final_end < first:
                self._lead_end = first
        self.advance(t)
        if t < self.last_final_end:
            self.counts.out_of_order_timestamp_count += 1
            return
        count = 1.0
        if self.summary is not None:
            raw = self.summary(doc)
            if raw is None or raw == "" or raw == "null" or raw is MISSING:
                return
            try:
                count = float(raw)
            except (TypeError, ValueError, OverflowError):
                return
            if not math.isfinite(count) or count < 0:
                return
        start = int(math.floor(t / span)) * span
        slot = self.open.get(start)
        if slot is None:
            slot = self.open[start] = [[{} for _ in self.gatherers], 0.0]
        missing = 0
        for getter in self.analysis_getters:
            v = getter(doc)
            if v is MISSING or v is None:
                missing += 1
        used = False
        for det, bucket in zip(self.gatherers, slot[0]):
            used = det.gather(bucket, doc, t, count) or used
        slot[1] += count
        # Elastic: analysis fields per record less the missing ones; the time field is not counted
        self.counts.record_processed(int(round(t * 1000)), len(self.analysis_fields) - missing, missing)
        if self.latest_time is None or t > self.latest_time:
            self.latest_time = t

    # ------------------------------------------------------------------ time
    def advance(self, t: float) -> None:
        """Finalize every bucket whose end + latency <= t (empty ones included)."""
        if self.last_final_end is None:
            return
        span = self.span
        while self.last_final_end + span + self.latency <= t:
            start = self.last_final_end
            self._finalize(start)
            self.last_final_end = start + span

    def flush(self, calc_interim: bool = False, advance_time: float | None = None,
              skip_time: float | None = None) -> None:
        """Elastic's flush: optionally skip or advance time, then interim results for open buckets."""
        if skip_time is not None:
            target = int(math.floor(skip_time / self.span)) * self.span
            for start in sorted(self.open):
                if start < target:
                    del self.open[start]
            if self.last_final_end is None or target > self.last_final_end:
                self.last_final_end = target
        if advance_time is not None:
            if self.aggregator is not None:
                # Elastic's datafeed posts the summaries of every histogram bucket complete by then first
                for t_agg, summary in self.aggregator.advance(advance_time):
                    self._summary(summary, t_agg)
            if self.last_final_end is None:
                self.last_final_end = int(math.floor(advance_time / self.span)) * self.span
            self.advance(advance_time + self.latency)
        if calc_interim and self.last_final_end is not None:
            latency_buckets = int(math.ceil(self.latency / self.span))
            for k in range(latency_buckets + 1):
                start = self.last_final_end + k * self.span
                if start in self.open:
                    self._bucket(start, interim=True)

    def finish(self) -> None:
        """End of input: close every open bucket (final results)."""
        if self.aggregator is not None:
            for t_agg, summary in self.aggregator.flush():
                self._summary(summary, t_agg)
        if self.open:
            last = max(self.open)
            self.advance(last + self.span + self.latency)
        if self.defer("renormalize"):
            self.renormalize()

    # ------------------------------------------------------------------ buckets
    def _finalize(self, start: int) -> None:
        if self._lead_end is not None and start < self._lead_end and start not in self.open:
            earliest = self.counts.earliest_record_timestamp
            if earliest is None or start * 1000 < earliest - earliest % (self.span * 1000):
                return  # an empty bucket before the first data, opened only for latency
        self._bucket(start, interim=False)
        self.open.pop(start, None)

    @property
    def detectors(self) -> list[DetectorState]:
        """The per-detector model states of a one-shard engine (a sharded engine keeps them in its shards)."""
        if self.n_shards != 1:
            raise AttributeError("a sharded engine keeps its detector states in its shards")
        return self.shards[0].detectors

    def shard_of(self, partition_value: str | None) -> int:
        """The shard that models a partition value's series (None, no partition field: shard 0)."""
        return shard_of(partition_value, self.n_shards)

    def _bucket(self, start: int, interim: bool) -> None:
        close = self.bucket_requests(start, interim)
        if self.remote:
            for i, req in close.requests:
                self.send(i, "close", req.seq, req.to_bytes())
            # sent: only who must answer is kept (a replay after a crash builds the requests again)
            close.requests = [(i, None) for i, _ in close.requests]
            self._queue.append(close)
            self._drain()
            return
        self.bucket_replies(close, [self._call(i, req) for i, req in close.requests])

    # ------------------------------------------------------------------ remote shards
    def connect(self, send) -> None:
        """Where a remote engine's shard requests go: `send(shard, kind, seq, body)`, kind "close"
        (body: a CloseRequest) or "forecast" (body: the times, int64)."""
        self.send = send

    @property
    def pending(self) -> bool:
        """True while requests sent to remote shards wait for replies."""
        return bool(self._queue)

    @property
    def scored_seq(self) -> int:
        """Every request up to this sequence number has been answered and used."""
        for item in self._queue:
            if not isinstance(item, str):
                return item.seq - 1
        return self.close_seq - 1

    def defer(self, step: str) -> bool:
        """True if nothing is pending (do `step` now); else `step` waits in line behind what is
        (`take_steps` hands it back when reached; "renormalize" the engine does itself)."""
        if not self._queue:
            return True
        self._queue.append(step)
        return False

    def take_steps(self) -> list[str]:
        steps, self._steps = self._steps, []
        return steps

    def take_reply(self, shard: int, seq: int, blob: bytes) -> None:
        """A remote shard's reply; a duplicate (a replayed request) or one nothing waits for is ignored."""
        for item in self._queue:
            if isinstance(item, str) or item.seq != seq:
                continue
            if isinstance(item, BucketClose):
                if shard not in item.replies and any(i == shard for i, _ in item.requests):
                    item.replies[shard] = CloseReply.from_bytes(blob)
            elif shard not in item.replies and shard in item.shards:
                item.replies[shard] = pickle.loads(blob)
            break
        self._drain()

    def _drain(self) -> None:
        """Score, in order, what the replies have completed."""
        while self._queue:
            item = self._queue[0]
            if isinstance(item, str):
                self._queue.pop(0)
                if item == "renormalize":
                    self.renormalize()
                else:
                    self._steps.append(item)
            elif item.complete():
                self._queue.pop(0)
                if isinstance(item, BucketClose):
                    self.bucket_replies(item, [item.replies[i] for i, _ in item.requests])
                else:
                    columns = None
                    if item.plan[0] is not None:
                        parts = [item.replies[i] for i in item.shards]
                        columns = merge_columns(parts, self.gatherers)
                    for doc in forecast_docs(self, item.request, item.plan, columns):
                        self.emit(doc)
            else:
                return

    def _call(self, i: int, req: CloseRequest) -> CloseReply:
        """A shard's reply to a request, in process (through bytes both ways when `wire`)."""
        shard = self.shards[i]
        if self.wire:
            return CloseReply.from_bytes(shard.close(CloseRequest.from_bytes(req.to_bytes())).to_bytes())
        return shard.close(req)

    def bucket_requests(self, start: int, interim: bool) -> BucketClose:
        """Close the bucket at `start`, first half: one request per shard that has ever had a series
        (every one, so that count functions see 0 for known series of an empty bucket)."""
        slot = self.open.get(start)
        buckets = slot[0] if slot else [{} for _ in self.gatherers]
        event_count = slot[1] if slot else 0.0
        t_ms = start * 1000
        # Elastic widens each scheduled event to whole buckets (start floored, end ceiled to the span)
        scheduled = sorted((ev for cal in self.calendars for ev in cal.events_in_bucket(t_ms, self.span * 1000)),
                           key=lambda ev: (ev.start_ms, ev.end_ms, ev.description))
        ndet = len(self.gatherers)
        first_times = self.first_times
        for d, bucket in enumerate(buckets):
            if bucket and first_times[d] is None:
                first_times[d] = float(start)
        n = self.n_shards
        if n == 1:
            per_shard = {0: buckets}
        else:
            per_shard = {}
            cache = self._part_shard
            for d, (g, bucket) in enumerate(zip(self.gatherers, buckets)):
                if not bucket:
                    continue
                if g.partition is None:
                    per_shard.setdefault(0, [None] * ndet)[d] = bucket
                    continue
                split: dict[int, dict] = {}
                for key, acc in bucket.items():
                    s = cache.get(key[0])
                    if s is None:
                        s = cache[key[0]] = shard_of(key[0], n)
                    sub = split.get(s)
                    if sub is None:
                        sub = split[s] = {}
                    sub[key] = acc
                for s, sub in split.items():
                    per_shard.setdefault(s, [None] * ndet)[d] = sub
            for s in per_shard:
                if s not in self.active:
                    bisect.insort(self.active, s)
        rules = filters = None
        if self.has_rules:
            rules = tuple(det.custom_rules for det in self.job.detectors)
            named = {scope.filter_id for det in self.job.detectors for rule in det.custom_rules
                     for scope in rule.scope}
            filters = {fid: self.filters[fid] for fid in sorted(named)}
        skip_update = any(ev.skip_model_update for ev in scheduled)
        pop_events = not interim and self.annotations
        seq = self.close_seq
        self.close_seq += 1
        requests = []
        for s in self.active:
            requests.append((s, CloseRequest(seq, start, interim, per_shard.get(s) or [None] * ndet, list(first_times),
                                             skip_update, rules, filters, pop_events)))
        return BucketClose(start, interim, event_count, scheduled, requests, seq)

    def bucket_replies(self, close: BucketClose, replies: list[CloseReply]) -> None:
        """Close a bucket, second half: merge the shards' replies (any order) in series-key order,
        score, and emit the bucket's documents."""
        start, interim = close.start, close.interim
        t_ms = start * 1000
        scheduled = close.scheduled
        skip_result = any(ev.skip_result for ev in scheduled)
        for r in replies:
            self.shard_sizes[r.shard] = (r.series, r.model_bytes, r.sizes)
        batches = []
        for d, det in enumerate(self.job.detectors):
            parts = [r.batches[d] for r in replies if r.batches[d] is not None]
            if not parts:
                continue
            batch = merge_batches(det, parts)
            if skip_result:
                batch.skip_all()
            batches.append(batch)
        if not interim:
            self.counts.bucket(t_ms, empty=close.event_count == 0, sparse=False)
        docs = self.scorer.score_bucket(start, batches, close.event_count, interim)
        if scheduled:
            docs[0]["scheduled_events"] = [ev.description for ev in scheduled]
        if self.plot and not interim:
            docs.extend(self._model_plot(start, [lf for b in batches if b.plot for lf in b.leaves()], interim))
        if not interim and self.annotations:
            docs.extend(self._annotations(start, replies))
        for doc in docs:
            self.emit(doc)
        if not interim:
            self.final_buckets += 1
            if self.final_buckets % self.renormalize_every == 0:
                self.renormalize()

    def renormalize(self) -> None:
        """Emit again, same ids, the window's documents whose normalized score has moved."""
        for doc in self.scorer.renormalize():
            self.emit(doc)

    def _model_plot(self, start: int, leaves, interim: bool) -> list[dict]:
        if interim:
            return []
        out = []
        ts = start * 1000
        jid = self.job.job_id
        for lf in sorted(leaves, key=lambda lf: (lf.detector_index, _key(lf))):
            if not lf.plot or lf.lower != lf.lower:
                continue
            if self.plot_terms and not any(p and p[1] in self.plot_terms for p in (lf.partition, lf.by)):
                continue
            doc: dict = {"job_id": jid, "result_type": "model_plot", "bucket_span": self.span,
                         "detector_index": lf.detector_index, "timestamp": ts}
            for pair, names in ((lf.partition, ("partition_field_name", "partition_field_value")),
                                (lf.over, ("over_field_name", "over_field_value")),
                                (lf.by, ("by_field_name", "by_field_value"))):
                if pair:
                    doc[names[0]], doc[names[1]] = pair
            doc["model_feature"] = lf.function_description
            doc.update(model_lower=_r(lf.lower), model_upper=_r(lf.upper), model_median=_r(lf.typical[0]),
                       actual=_r(lf.actual[0]))
            by = lf.by[1] if lf.by else None
            over = lf.over[1] if lf.over else None
            part = lf.partition[1] if lf.partition else None
            doc["_id"] = ids.model_plot_id(jid, ts, self.span, lf.detector_index, by, over, part)
            out.append(doc)
        return out

    def _annotations(self, start: int, replies: list[CloseReply]) -> list[dict]:
        out = []
        jid = self.job.job_id
        for d, det in enumerate(self.gatherers):
            for _f, _order, key, ev in merge_events([r.events[d] for r in replies]):
                text = ("Detected a level shift" if ev.kind == "level_shift"
                        else "Detected daily seasonality")
                doc = {"annotation": text, "create_time": ev.time * 1000, "create_username": "_xpack",
                       "timestamp": ev.time * 1000, "end_timestamp": ev.time * 1000 + self.span * 1000,
                       "job_id": jid, "modified_time": ev.time * 1000, "modified_username": "_xpack",
                       "type": "annotation", "event": "model_change", "detector_index": det.det.detector_index}
                if key is not None:
                    part, by = key[0], key[1]
                    if det.det.partition_field_name and part is not None:
                        doc["partition_field_name"], doc["partition_field_value"] = det.det.partition_field_name, part
                    if det.det.by_field_name and by is not None and not det.population:
                        doc["by_field_name"], doc["by_field_value"] = det.det.by_field_name, by
                doc["result_type"] = "annotation"
                doc["_id"] = f"{jid}_annotation_{ev.time * 1000}_{det.det.detector_index}_" \
                             f"{ids.values_to_id(*(key or ()), ev.kind)}"
                out.append(doc)
        return out

    def forecast_columns(self, times) -> list[list]:
        """Per detector, per feature: (series keys in key order, pred, lower, upper) over every shard."""
        return merge_columns([self.shards[i].forecast(times) for i in self.active], self.gatherers)

    def model_size_stats(self) -> dict:
        """Elastic's model_size_stats; by, over and partition counts per partition value, summed
        (`PartitionEngine.size_counts`). Remote shards' figures are those of their latest replies."""
        if self.remote:
            stats = [(self.shard_sizes[i][2], self.shard_sizes[i][1]) for i in self.active if i in self.shard_sizes]
        else:
            stats = [(self.shards[i].size_counts(), [st.model_bytes() for st in self.shards[i].detectors])
                     for i in self.active]
        by_count = over_count = part_count = model_bytes = 0
        for d, g in enumerate(self.gatherers):
            det = g.det
            for counts, sizes in stats:
                if not counts:
                    continue
                if det.by_field_name:
                    by_count += counts[d][0]
                if det.over_field_name:
                    over_count += counts[d][1]
                if det.partition_field_name:
                    part_count += counts[d][2]
                model_bytes += sizes[d]
        limit = self.job.model_memory_limit_bytes
        status = "hard_limit" if model_bytes > limit else "soft_limit" if model_bytes > 0.6 * limit else "ok"
        return {"job_id": self.job.job_id, "result_type": "model_size_stats", "model_bytes": model_bytes,
                "model_bytes_exceeded": max(model_bytes - limit, 0), "model_bytes_memory_limit": limit,
                "total_by_field_count": by_count, "total_over_field_count": over_count,
                "total_partition_field_count": part_count, "bucket_allocation_failures_count": 0,
                "memory_status": status, "timestamp": (self.last_final_end or 0) * 1000}


def merge_columns(parts: list, gatherers) -> list[list]:
    """Per detector, per feature: the shards' forecast columns merged in series-key order."""
    return [[merge_forecast([p[d][f] for p in parts]) for f in range(len(g.feature_sides))]
            for d, g in enumerate(gatherers)]


def _key(lf):
    return tuple((p[1] if p else "") for p in (lf.partition, lf.over, lf.by))
