"""The job processor: applies work-topic messages to job engines, exactly once per offset.

Pure of Kafka and Faust: the worker's detector agent hands it (job_id, partition, offset, value)
and publishes what it returns. With `shards` > 0 a job's models live in that many shards on the
shards topic (`runtime.shards`): the engine here gathers and scores, sends each bucket's model
requests as outputs, and scores the bucket when the last reply has come back through the work log.
A control that would change the job while buckets wait for replies is held, with everything after
it (`backlog`), until they are scored: the engine sees the order `streamad run` gives it.

Each engine remembers the next offset it expects on its work partition; a message below it was already applied (a replay after a crash or a rebalance) and is
skipped, so results, models and data_counts never count an event twice. Snapshots are the engine
bytes plus that offset, split into chunks that fit a Kafka message.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from streamad.config.errors import ConfigError
from streamad.config.filters import Calendar, Filter
from streamad.config.job import Job
from streamad.engine.forecast import ForecastRequest
from streamad.engine.job import JobEngine
from streamad.ingest.reader import decode_json
from streamad.runtime import envelope

CHUNK_BYTES = 900 * 1024  # below the producer's default 1 MB request size, far below the broker's 8 MiB


@dataclass
class Output:
    topic: str  # "results" | "annotations" | "dead_letter" | "shards" | "work"
    key: str
    value: bytes
    doc: dict | None = None
    partition: int | None = None  # an explicit partition (shard requests), else by key


@dataclass
class JobSlot:
    engine: JobEngine | None
    next_offset: int = 0
    closed: bool = False
    datafeed_start_ms: int | None = None
    datafeed_end_ms: int | None = None
    sources: dict = field(default_factory=dict)  # "topic:partition" -> last input offset applied
    run: int | None = None  # the datafeed run whose forwarded events the job applies
    backlog: list = field(default_factory=list)  # work messages held until pending model replies are in
    acked: int = -1  # shard replies up to this sequence are covered by the job's last snapshot
    dirty: int = 0  # events and controls applied since the last snapshot
    last_snapshot: float = field(default_factory=time.monotonic)


def reason_class(reason: str) -> str:
    """A bounded metric label for a dead-letter reason."""
    if reason in ("invalid_date", "out_of_order", "closed_job"):
        return reason
    if reason.startswith("query failed"):
        return "query_failed"
    return "malformed"


# controls that may run while model replies are pending (they queue behind them in the engine)
_NOT_HELD = frozenset({"tick", "stats", "delete"})


class JobProcessor:
    def __init__(self, on_event: Callable[[str, str, dict | None], None] | None = None, shards: int = 0):
        self.slots: dict[str, JobSlot] = {}
        self.shards = shards  # 0: the engine keeps its shards in process
        self._out: list[Output] = []
        self._job_id = ""
        self.on_event = on_event or (lambda kind, job_id, info: None)

    # ------------------------------------------------------------------ state
    def snapshot_chunks(self, job_id: str) -> list[tuple[str, bytes | None]]:
        """Table writes that persist a job: its chunks, then the manifest (written last)."""
        slot = self.slots[job_id]
        blob = slot.engine.snapshot() if slot.engine is not None else b""
        chunks = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
        if slot.engine is not None and slot.engine.remote:
            slot.acked = slot.engine.scored_seq
        # held work messages (see `apply`) are chunked too: a long hold can gather many batches
        held = split_chunks(pickle.dumps(slot.backlog, protocol=5)) if slot.backlog else []
        manifest = orjson.dumps({"chunks": len(chunks), "next_offset": slot.next_offset, "closed": slot.closed,
                                 "start": slot.datafeed_start_ms, "end": slot.datafeed_end_ms,
                                 "sources": slot.sources, "run": slot.run, "bytes": len(blob),
                                 "acked": slot.acked, "held_chunks": len(held)})
        slot.dirty = 0
        slot.last_snapshot = time.monotonic()
        return ([(chunk_key(job_id, i), c) for i, c in enumerate(chunks)]
                + [(chunk_key(job_id, f"held{i}"), c) for i, c in enumerate(held)] + [(job_id, manifest)])

    def load(self, job_id: str, get: Callable[[str], bytes | None]) -> JobSlot | None:
        """Restore a job from table reads (`get(key)`), or None if it has no state."""
        manifest = get(job_id)
        if manifest is None:
            return None
        meta = orjson.loads(manifest)
        blob = b"".join(get(chunk_key(job_id, i)) or b"" for i in range(meta["chunks"]))
        engine = JobEngine.restore(blob, self._emit, self._dead_letter) if blob else None
        slot = JobSlot(engine, meta["next_offset"], meta["closed"], meta.get("start"), meta.get("end"),
                       dict(meta.get("sources", {})), meta.get("run"),
                       _held(meta, job_id, get), meta.get("acked", -1))
        if engine is not None and engine.remote:
            self._connect(slot, job_id)
        self.slots[job_id] = slot
        return slot

    def _connect(self, slot: JobSlot, job_id: str) -> None:
        """Wire a sharded engine's model requests to outputs on the shards topic."""
        config: list = [None, None]  # the job the requests carry, as a dict (built once per job update)

        def send(shard: int, kind: str, seq: int, body: bytes) -> None:
            engine = slot.engine
            if config[0] is not engine.job:
                config[:] = [engine.job, engine.job.to_dict()]
            value = envelope.shard_request(job_id, shard, engine.n_shards, seq, slot.acked, engine.incarnation,
                                           kind, config[1], body)
            self._out.append(Output("shards", f"{job_id}\x00{shard}", value, None, shard))
        slot.engine.connect(send)

    def forget(self) -> None:
        """Drop every in-memory engine (after a rebalance the table is the truth)."""
        self.slots.clear()

    # ------------------------------------------------------------------ apply
    def apply(self, job_id: str, offset: int, value: bytes) -> list[Output] | None:
        """Apply one work message; None if it was already applied (offset below the job's next)."""
        slot = self.slots.get(job_id)
        if slot is not None and offset < slot.next_offset:
            return None
        if slot is None:
            slot = self.slots[job_id] = JobSlot(None)
        self._out = []
        self._job_id = job_id
        try:
            kind, body = envelope.decode(value)
        except ValueError as exc:
            self._dead_letter(value, job_id, f"bad work message: {exc}")
            kind, body = "skip", b""
        slot.next_offset = offset + 1
        slot.dirty += 1
        if kind == "reply":
            self._reply(slot, job_id, body)
            return self._out
        if slot.engine is not None and slot.engine.remote and (
                slot.backlog or (slot.engine.pending and kind == "control" and body["type"] not in _NOT_HELD)):
            slot.backlog.append(value)  # applied once the buckets before it are scored
            return self._out
        self._apply(slot, job_id, kind, body)
        return self._out

    def _apply(self, slot: JobSlot, job_id: str, kind: str, body) -> None:
        self._apply_one(slot, job_id, kind, body)
        self._steps(slot, job_id)

    def _steps(self, slot: JobSlot, job_id: str) -> None:
        """Run the steps (stats) that waited for model replies and are due now."""
        if slot.engine is not None and slot.engine.remote:
            for step in slot.engine.take_steps():
                if step == "stats":
                    self._stats(slot, job_id)

    def _apply_one(self, slot: JobSlot, job_id: str, kind: str, body) -> None:
        if kind == "data":
            self._data(slot, job_id, body)
        elif kind == "sourced":  # one forwarded event (work logs written before batches)
            src, raw = body
            self._sourced(slot, job_id, f"{src['t']}:{src['p']}", [(src["o"], raw)])
        elif kind == "batch":
            topic, partition, events, run = body
            if run is not None and slot.run is not None and run != slot.run:
                events = []  # forwarded by an earlier run of the datafeed that had not stopped yet
            self._sourced(slot, job_id, f"{topic}:{partition}", events)
            slot.dirty += max(len(events) - 1, 0)
        elif kind == "control":
            self._control(slot, job_id, body)

    def _reply(self, slot: JobSlot, job_id: str, body) -> None:
        """A shard's answer: score what it completes, then apply what was held behind it."""
        head, blob = body
        engine = slot.engine
        if engine is None or not engine.remote or head.get("i") != engine.incarnation:
            return  # for a deleted incarnation of the job
        engine.take_reply(int(head["s"]), int(head["q"]), blob)
        self._steps(slot, job_id)
        while slot.backlog and slot.engine is not None and not slot.engine.pending:
            value = slot.backlog.pop(0)
            self._apply(slot, job_id, *envelope.decode(value))

    def _stats_after(self, slot: JobSlot, job_id: str) -> None:
        """The job's stats documents once its pending model replies are in (now if none is)."""
        if slot.engine.defer("stats"):
            self._stats(slot, job_id)

    def _sourced(self, slot: JobSlot, job_id: str, where: str, events) -> None:
        """Forwarded events of one input partition, each applied once: a position at or below the
        job's last one on that partition was forwarded twice (a replay, or a second writer)."""
        last = slot.sources.get(where, -1)
        for source_offset, raw in events:
            if source_offset > last:
                last = slot.sources[where] = source_offset
                self._data(slot, job_id, raw)

    def _data(self, slot: JobSlot, job_id: str, raw: bytes) -> None:
        if slot.engine is None or slot.closed:
            self._dead_letter(raw, job_id, "closed_job")
            return
        raw_rec, doc, error = decode_json(raw)
        if doc is not None and (slot.datafeed_start_ms is not None or slot.datafeed_end_ms is not None):
            t = slot.engine.event_time_ms(doc)
            if t is not None and ((slot.datafeed_start_ms is not None and t < slot.datafeed_start_ms)
                                  or (slot.datafeed_end_ms is not None and t >= slot.datafeed_end_ms)):
                return  # outside the datafeed's [start, end): not this datafeed's data
        self.on_event("consumed", job_id, None)
        before = slot.engine.counts.processed_record_count
        slot.engine.feed(raw_rec, doc, error)
        if slot.engine.counts.processed_record_count > before:
            self.on_event("processed", job_id, None)

    def _control(self, slot: JobSlot, job_id: str, cmd: dict) -> None:
        kind = cmd["type"]
        if kind == "open":
            try:
                filters, calendars = _context(cmd)
                if slot.engine is None:
                    slot.engine = JobEngine(Job.from_dict(cmd["job"]), self._emit, self._dead_letter,
                                            filters=filters, calendars=calendars, shards=max(self.shards, 1),
                                            remote=self.shards > 0,
                                            incarnation=cmd.get("incarnation") or f"{job_id}@{slot.next_offset - 1}")
                    if self.shards > 0:
                        self._connect(slot, job_id)
                else:
                    job = Job.from_dict(cmd["job"])
                    if job.to_dict() != slot.engine.job.to_dict():  # updated (`_update`) while closed
                        slot.engine.update_job(job, filters, calendars)
                    elif "filters" in cmd:
                        slot.engine.use_context(filters, calendars)
            except (ConfigError, ValueError) as exc:  # a job the API would refuse today: never stop the worker
                self._dead_letter(orjson.dumps(cmd), job_id, f"bad job: {exc}")
                return
            slot.closed = False
        elif slot.engine is None:
            return
        elif kind == "datafeed":
            # a (re)start: like Elastic's datafeed, it continues after the latest record the job has
            # seen, so the run's lookback may re-read what earlier runs applied (dropped by time
            # here) and gets back what they forwarded but never applied (the job was closed, or the
            # events were past `end`): each planned partition's position goes back to the run's first
            latest = slot.engine.counts.latest_record_timestamp
            start = cmd.get("start")
            if latest is not None:
                start = latest + 1 if start is None else max(int(start), latest + 1)
            slot.datafeed_start_ms = start
            slot.datafeed_end_ms = cmd.get("end")
            slot.run = cmd.get("run")
            for where, first in (cmd.get("plan") or {}).items():
                slot.sources[where] = int(first) - 1
            if cmd.get("job"):
                slot.engine.use_datafeed(Job.from_dict(cmd["job"]))
        elif kind == "update":  # the job's _update API: rules, descriptions, model plot, ...
            try:
                slot.engine.update_job(Job.from_dict(cmd["job"]), *_context(cmd))
            except (ConfigError, ValueError) as exc:
                self._dead_letter(orjson.dumps(cmd), job_id, f"bad job update: {exc}")
        elif kind == "forecast":
            slot.engine.forecast(ForecastRequest(cmd["forecast_id"], int(cmd["duration_s"]), int(cmd["create_ms"]),
                                                 int(cmd.get("expires_in_s", 0))))
        elif kind == "context":  # a filter or calendar of this job changed
            try:
                slot.engine.use_context(*_context(cmd))
            except ConfigError as exc:
                self._dead_letter(orjson.dumps(cmd), job_id, f"bad filters or calendars: {exc}")
        elif kind == "flush":
            slot.engine.flush(calc_interim=bool(cmd.get("calc_interim")), advance_time=cmd.get("advance_time"),
                              skip_time=cmd.get("skip_time"))
            self._stats_after(slot, job_id)
        elif kind == "close":
            if not slot.closed:
                # finish first: it flushes a datafeed aggregation's last summary into its bucket
                slot.engine.finish()
                if slot.datafeed_end_ms is not None:
                    slot.engine.flush(advance_time=slot.datafeed_end_ms / 1000.0)
                slot.closed = True
            self._stats_after(slot, job_id)
        elif kind == "stats":
            self._stats_after(slot, job_id)
        elif kind == "delete":
            # a job created again under this id starts from nothing: positions and range too
            slot.engine = None
            slot.backlog = []
            slot.closed = True
            slot.sources = {}
            slot.datafeed_start_ms = slot.datafeed_end_ms = slot.run = None

    def stats_outputs(self, job_id: str) -> list[Output]:
        """data_counts and model_size_stats documents of a job as they are now."""
        slot = self.slots.get(job_id)
        if slot is None or slot.engine is None or slot.engine.pending:
            return []  # (while model replies are pending the counts are not those of a finished step)
        saved, self._out = self._out, []
        self._stats(slot, job_id)
        out, self._out = self._out, saved
        return out

    def _stats(self, slot: JobSlot, job_id: str) -> None:
        counts = slot.engine.counts.to_dict(job_id)
        self._out.append(Output("results", job_id, orjson.dumps({**counts, "_id": f"{job_id}_data_counts"}), None))
        size = slot.engine.model_size_stats()
        self._out.append(Output("results", job_id, orjson.dumps({**size, "_id": f"{job_id}_model_size_stats"}), size))

    # ------------------------------------------------------------------ engine callbacks
    def _emit(self, doc: dict) -> None:
        topic = "annotations" if doc.get("result_type") == "annotation" else "results"
        self._out.append(Output(topic, self._job_id, orjson.dumps(doc), doc))

    def _dead_letter(self, raw: bytes, job_id: str, reason: str) -> None:
        self.on_event("rejected", job_id, {"reason": reason_class(reason)})
        body = {"job_id": job_id, "reason": reason, "raw": raw.decode("utf-8", "replace")}
        self._out.append(Output("dead_letter", job_id, orjson.dumps(body), None))


def _context(cmd: dict) -> tuple[dict[str, Filter], tuple[Calendar, ...]]:
    """The filters and calendars an open or context control message carries."""
    filters = {fid: Filter.from_dict(body, fid) for fid, body in (cmd.get("filters") or {}).items()}
    calendars = tuple(Calendar.from_dict(body, body.get("calendar_id")) for body in cmd.get("calendars") or [])
    return filters, calendars


def _held(meta: dict, job_id: str, get: Callable[[str], bytes | None]) -> list[bytes]:
    """The work messages a snapshot held (none in a snapshot from before shards)."""
    n = meta.get("held_chunks", 0)
    if not n:
        return []
    return pickle.loads(b"".join(get(chunk_key(job_id, f"held{i}")) or b"" for i in range(n)))


def split_chunks(blob: bytes) -> list[bytes]:
    """A snapshot in pieces that each fit a Kafka message (at least one, maybe empty)."""
    return [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]


def chunk_key(job_id: str, i: int | str) -> str:
    return f"{job_id}\x00{i}"


def loads_snapshot(blob: bytes) -> JobEngine:  # for tools and tests
    return pickle.loads(blob)
