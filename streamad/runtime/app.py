"""The Faust worker: router, detector and shard agents, the engine-state tables and the timers.

    input topics --router--> streamad-work (key job_id) --detector--> results / annotations / dead-letter
                                 ^                           |   \\--> table "engines" (RocksDB, changelog)
                                 |  model replies            v  model requests (partition = shard)
                                 +------------------ streamad-shards --shard--> table "shards"

The router forwards each event of a started datafeed's topics to the work topic, keyed by job id,
with its source position so that a re-forwarded event (router replay) is applied once. What was on
the topics before the datafeed started is forwarded by lookbacks, one plain consumer per input
partition, which hand each partition over to the router once they have caught up (`lookback`). The REST
API writes control messages (open, flush, close, ...) to the same topic, so each job's engine is a
function of one ordered log. The detector agent does not ack events until a snapshot of the
engine that covers them is in the table: Kafka's committed offset never passes the table's state,
and a replay skips what the snapshot already holds (see `processor`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import re
import time
import uuid

import faust
import orjson

from streamad.runtime import envelope, lookback, metrics
from streamad.runtime.processor import JobProcessor, Output, chunk_key
from streamad.runtime.registry import Registry
from streamad.runtime.results import ResultsIndex
from streamad.runtime.settings import Settings
from streamad.runtime.shards import ShardProcessor

log = logging.getLogger("streamad.worker")

ROUTER_WITHIN_S = 0.02  # the router's batching window: at most this much added latency
# the producer waits this long to fill a batch: results go out as many small documents, and one
# produce request per document made socket writes the worker's largest cost (bench profile)
PRODUCER_LINGER_S = 0.005


class Worker:
    """Everything a worker process holds, wired into one Faust app."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry = Registry(settings)
        self.results = ResultsIndex(settings)
        self.registry.listeners.append(self._registry_changed)
        # a job's models live in `partitions` shards on the shards topic (one per partition), keyed by
        # the partition value: the detector agent gathers and scores, shard agents model
        self.processor = JobProcessor(self._on_event, shards=settings.partitions)
        self.shard_processor = ShardProcessor()
        self.pending: dict[str, list] = {}  # job_id (or shard slot key) -> unacked events covered by no snapshot yet
        self.inflight: dict[str, list] = {}  # job_id (or shard slot key) -> sends not yet known delivered
        self.ready = False
        self._seen: dict[tuple[str, int], int] = {}  # router: last offset handed to it per input partition
        self._skipped: dict[str, int] = {}  # router: last offset it skipped per lookback record (this assignment)
        self._router_start: dict[tuple[str, int], int] = {}  # router: its first offset since the assignment
        self._live: set[str] = set()  # lookback records handed to the router here
        self._lookbacks: dict[str, asyncio.Task] = {}  # lookback record key -> task forwarding it
        self._feeds: dict = {}
        self._caught_up: set = set()
        self._lookback_ends: dict = {}  # datafeed key -> targets when its lookback began
        self._final: dict = {}  # datafeed key -> targets when its end was reached
        self._last_tick: dict[str, float] = {}
        self._ending: set[str] = set()
        self._generation = 0  # bumped on every rebalance
        self.app = self._make_app()
        from streamad.runtime.api import install

        install(self)

    # ------------------------------------------------------------------ app
    def _make_app(self) -> faust.App:
        s = self.settings
        credentials = None
        if s.sasl_mechanism:
            credentials = faust.SASLCredentials(username=s.sasl_username, password=s.sasl_password,
                                                mechanism=s.sasl_mechanism,
                                                ssl_context=s.client_kwargs().get("ssl_context"))
        elif s.security_protocol == "SSL":
            credentials = s.client_kwargs()["ssl_context"]
        extra = {}
        if s.static_member_id:
            extra["consumer_group_instance_id"] = s.static_member_id
        app = faust.App(
            s.app_id, broker=s.broker, broker_credentials=credentials, store="rocksdb://",
            datadir=s.data_dir, web_port=s.web_port, web_bind=s.web_host, web_enabled=True,
            topic_partitions=s.partitions, topic_replication_factor=1, table_standby_replicas=0,
            producer_max_request_size=4 * 1024 * 1024, producer_linger=PRODUCER_LINGER_S,
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False, topic_allow_declare=True, broker_session_timeout=s.session_timeout,
            broker_heartbeat_interval=min(3.0, s.session_timeout / 5),
            consumer_metadata_max_age_ms=int(s.metadata_max_age * 1000), **extra,
        )
        self.work_topic = app.topic(s.work_topic, key_type=bytes, value_type=bytes, value_serializer="raw",
                                    key_serializer="raw", partitions=s.partitions, internal=True)
        self.shards_topic = app.topic(s.shards_topic, key_type=bytes, value_type=bytes, value_serializer="raw",
                                      key_serializer="raw", partitions=s.partitions, internal=True)
        self.results_topic = app.topic(s.results_topic, key_serializer="raw", value_serializer="raw")
        self.annotations_topic = app.topic(s.annotations_topic, key_serializer="raw", value_serializer="raw")
        self.dead_topic = app.topic(s.dead_letter_topic, key_serializer="raw", value_serializer="raw")
        names = [t.strip() for t in s.input_topics.split(",") if t.strip()] or ["streamad-events"]
        self.input_topics = app.topic(*names, key_serializer="raw", value_serializer="raw")
        self.table = app.Table("engines", key_type=str, value_type=bytes,
                               partitions=s.partitions,
                               extra_topic_configs={"max.message.bytes": str(8 * 1024 * 1024)})
        self.shard_table = app.Table("shards", key_type=str, value_type=bytes, partitions=s.partitions,
                                     extra_topic_configs={"max.message.bytes": str(8 * 1024 * 1024)})
        self.topics = {"results": self.results_topic, "annotations": self.annotations_topic,
                       "dead_letter": self.dead_topic, "shards": self.shards_topic, "work": self.work_topic}

        app.service(_Lifecycle(self))
        app.agent(self.input_topics, name="router")(self._route)
        app.agent(self.work_topic, name="detector")(self._detect)
        app.agent(self.shards_topic, name="shard")(self._shard)
        app.timer(interval=max(s.snapshot_seconds / 2, 0.5))(self._tick)
        app.timer(interval=5.0)(self._lag)
        app.timer(interval=60.0)(self._retention)
        app.timer(interval=1.0)(self._realtime)
        app.timer(interval=0.5)(self._supervise_lookbacks)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        return app

    # ------------------------------------------------------------------ router
    async def _route(self, stream) -> None:
        # the registry must be replayed first: an event read while it is still empty would be
        # dropped as read by no job, and its offset committed
        await self.registry.ready.wait()
        # batches of what arrived within ROUTER_WITHIN_S, acked (Faust) only once forwarded
        async for events in stream.take_events(envelope.BATCH_EVENTS, within=ROUTER_WITHIN_S):
            groups: dict[tuple[str, int], list] = {}
            for event in events:
                msg = event.message
                raw = msg.value if isinstance(msg.value, bytes) else bytes(msg.value or b"")
                groups.setdefault((msg.topic, msg.partition), []).append((msg.offset, raw))
            sent = []
            for (topic, partition), items in groups.items():
                # no await between these two: a lookback hands a partition over between batches;
                # `_seen` only grows within an assignment (a batch from before a rebalance can come
                # late; reading further than needed is what a lookback can afford)
                at = (topic, partition)
                self._seen[at] = max(self._seen.get(at, -1), items[-1][0])
                for job_id, run in self.jobs_reading(topic, partition, items[-1][0]):
                    for value in envelope.batches(topic, partition, items, run):
                        sent.append(await self.work_topic.send(key=job_id.encode(), value=value))
            try:
                # the batch is acked when this step ends: a forward that failed must not be
                # committed past (Faust's commit flushes the producer, which never raises)
                await asyncio.gather(*sent)
            except Exception as exc:
                log.critical("router: forwarding to the work topic failed, restarting from the committed "
                             "offsets: %r", exc)
                await self.app.crash(exc)
                raise

    def jobs_reading(self, topic: str, partition: int, last_offset: int | None = None) -> list[tuple[str, int | None]]:
        """(job, datafeed run) the router forwards this partition's events to: started datafeeds on
        the topic whose lookback of the partition is done (until then their lookback forwards it).
        With `last_offset` (a router batch), remembers up to where the router skipped each other one."""
        out = []
        for feed_id, feed in self.registry.datafeeds.items():
            if feed.get("state") != "started":
                continue
            job = self.registry.jobs.get(feed["config"]["job_id"])
            if job is None or job.get("state") != "opened":
                continue
            if not any(fnmatch.fnmatchcase(topic, pat) for pat in feed["config"].get("indices", [])):
                continue
            where = f"{topic}:{partition}"
            if self._handed_off(feed_id, feed, where):
                out.append((feed["config"]["job_id"], feed.get("run")))
            elif last_offset is not None:
                key = lookback.record_key(feed_id, feed.get("run"), where)
                self._skipped[key] = max(self._skipped.get(key, -1), last_offset)
        return sorted(set(out), key=lambda jr: jr[0])

    def _handed_off(self, feed_id: str, feed: dict, where: str) -> bool:
        if where not in (feed.get("lookback") or {}):
            return True  # no past to read there when the datafeed started
        key = lookback.record_key(feed_id, feed.get("run"), where)
        if key in self._live:
            return True
        record = self.registry.lookbacks.get(key)
        if not (record and record.get("done")):
            return False
        # handed off elsewhere (an earlier owner of the partition); trusted only if this router has
        # not skipped an event at or after that hand-off: if the record reached us late, those
        # events are nobody's, and a local lookback from the hand-off offset must forward them
        return self._skipped.get(key, -1) < int(record.get("next", 0))

    @property
    def generation(self) -> int:
        """How many rebalances this worker has seen (a lookback started in an older one is stale)."""
        return self._generation

    def hand_off(self, task: lookback.Lookback) -> bool:
        """Flip a partition live for the router; refused (False) for a lookback started before the
        last rebalance (the partition may be another worker's now)."""
        if task.generation != self._generation:
            return False
        self._live.add(task.key)
        return True

    async def _supervise_lookbacks(self) -> None:
        """Run a lookback for every started datafeed's partition that this worker's router holds and
        that is not handed off yet; stop those whose partition or datafeed went away."""
        try:
            await self._supervise_lookbacks_once()
        except Exception as exc:  # noqa: BLE001 - a failed round (e.g. mid-rebalance) is retried next tick
            log.warning("lookback supervision failed, retried: %r", exc)

    async def _supervise_lookbacks_once(self) -> None:
        if not self.ready or not self.registry.ready.is_set():
            return
        generation = self._generation
        assigned = {(tp.topic, tp.partition) for tp in self.app.consumer.assignment()
                    if tp.topic != self.settings.work_topic}
        wanted: dict[str, tuple] = {}
        for feed_id, feed in list(self.registry.datafeeds.items()):
            job_id = feed["config"]["job_id"]
            job = self.registry.jobs.get(job_id)
            if feed.get("state") != "started" or job is None or job.get("state") != "opened":
                continue
            for where, first in (feed.get("lookback") or {}).items():
                if lookback.split_where(where) not in assigned or self._handed_off(feed_id, feed, where):
                    continue
                key = lookback.record_key(feed_id, feed.get("run"), where)
                record = self.registry.lookbacks.get(key) or {}
                wanted[key] = (feed_id, feed.get("run"), job_id, where, max(first, record.get("next", first)))
        for key in [k for k, t in self._lookbacks.items() if k not in wanted or t.done()]:
            task = self._lookbacks.pop(key)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        missing = [lookback.split_where(w[3]) for k, w in wanted.items()
                   if k not in self._lookbacks and lookback.split_where(w[3]) not in self._router_start]
        if missing:
            await self._fetch_router_starts(missing)
        if generation != self._generation:
            return  # a rebalance came while we waited: the assignment above is stale
        for key, (feed_id, run, job_id, where, first) in wanted.items():
            if key in self._lookbacks:
                continue
            at = lookback.split_where(where)
            task = lookback.Lookback(self, feed_id, run, job_id, where, first,
                                     lambda at=at: self._router_next(at), generation)
            self._lookbacks[key] = asyncio.ensure_future(self._run_lookback(task))

    async def _run_lookback(self, task: lookback.Lookback) -> None:
        try:
            await task.run_until_handed_off()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the supervisor starts it again from its record
            log.error("datafeed %s: lookback of %s failed, retried: %s", task.feed_id, task.where, exc)
            await asyncio.sleep(1.0)

    def _router_next(self, at: tuple[str, int]) -> int | None:
        """The next offset the router will be handed on an input partition (None: not known yet)."""
        seen = self._seen.get(at)
        return seen + 1 if seen is not None else self._router_start.get(at)

    async def _fetch_router_starts(self, ats: list[tuple[str, int]]) -> None:
        """Where the router starts on these partitions since its assignment: the group's committed
        offset, or the log start when nothing is committed (auto_offset_reset = earliest)."""
        from aiokafka import TopicPartition

        tps = [TopicPartition(t, p) for t, p in ats]
        generation = self._generation
        committed = await lookback.group_offsets(self.settings, self.app.conf.id, tps)
        firsts, _ = await self._offsets(tps, None)
        if generation != self._generation:
            return  # a rebalance happened meanwhile: fetched again on the next round
        for tp in tps:
            self._router_start[(tp.topic, tp.partition)] = (committed[tp] if committed[tp] is not None
                                                            else firsts[tp])

    async def input_partitions(self, patterns: list[str]) -> list:
        """Every partition of the input topics that match these patterns (from a metadata request)."""
        from aiokafka import TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        names = [t for t in self.input_topics.topics if any(fnmatch.fnmatchcase(t, p) for p in patterns)]
        if not names:
            return []
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap, **self.settings.client_kwargs())
        await admin.start()
        try:  # a fresh consumer knows no topic
            for _ in range(10):
                infos = await admin.describe_topics(names)
                # 3 = unknown topic: it has no past (the router reads it from its start once it
                # exists); any other error (a leader being elected, ...) must not look like "empty"
                failed = [i for i in infos if i.get("error_code", 0) not in (0, 3)]
                if not failed:
                    return [TopicPartition(info["topic"], part["partition"])
                            for info in infos for part in info.get("partitions") or []]
                await asyncio.sleep(0.5)
            raise RuntimeError(f"topic metadata unavailable: {failed}")
        finally:
            await admin.close()

    async def lookback_plan(self, patterns: list[str], start_ms: int | None) -> dict[str, int]:
        """For a datafeed starting now: per input partition, the first offset at or after start_ms
        (its end when there is none) ("topic:partition" -> offset). The lookback reads from there.
        Every partition is listed, empty ones too: the router skips the job on a partition until
        its lookback hands it over, and events arriving meanwhile are the lookback's to forward."""
        return {where: first for where, (first, _end) in (await self._partition_offsets(patterns, start_ms)).items()}

    async def _partition_offsets(self, patterns: list[str], start_ms: int | None) -> dict[str, tuple[int, int]]:
        """Per input partition of these topics ("topic:partition"): (first offset at or after
        start_ms, or the beginning when None; end offset)."""
        tps = await self.input_partitions(patterns)
        if not tps:
            return {}
        firsts, ends = await self._offsets(tps, start_ms)
        return {f"{tp.topic}:{tp.partition}": (firsts[tp], ends[tp]) for tp in tps}

    async def _offsets(self, tps, start_ms) -> tuple[dict, dict]:
        """Per partition: (first offset at or after start_ms, or the beginning when None; end offset)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        client = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False,
                                  **self.settings.client_kwargs())
        await client.start()
        try:
            plain = {tp: TopicPartition(tp.topic, tp.partition) for tp in tps}
            ends = await client.end_offsets(list(plain.values()))
            if start_ms is None:
                found = await client.beginning_offsets(list(plain.values()))
                firsts = {tp: found[p] for tp, p in plain.items()}
            else:
                hits = await client.offsets_for_times({p: int(start_ms) for p in plain.values()})
                firsts = {tp: hits[p].offset if hits.get(p) is not None else ends[p] for tp, p in plain.items()}
            return firsts, {tp: ends[p] for tp, p in plain.items()}
        finally:
            await client.stop()

    # ------------------------------------------------------------------ real time
    async def _realtime(self) -> None:
        """Started datafeeds, on the job's owner, once the job has applied its lookback (every event
        on its topics when the datafeed started, see `_targets`):

        - every `frequency`, append flush(calc_interim, advance_time = now - query_delay), as Elastic's
          datafeed does after each search: buckets close on time even when no event comes (low_count
          sees the zeros of an outage) and the open bucket has interim results;
        - a datafeed with an `end` stops once now - query_delay reaches it and the job has applied
          every event on its topics at that moment, and closes its job as Elastic does ("when a
          datafeed that has a specified end date stops, it automatically closes the job").
        """
        if not self.ready:
            return
        now = time.time()
        for feed in list(self.registry.datafeeds.values()):
            cfg = feed["config"]
            job_id = cfg["job_id"]
            if feed.get("state") != "started" or job_id in self._ending:
                continue
            if not self._owns(job_id):
                continue
            job = self.registry.jobs.get(job_id)
            if job is not None and job.get("state") == "closed":
                # a crash between closing the job at its datafeed's end and stopping the datafeed
                feed_id = cfg.get("datafeed_id")
                if feed_id:
                    await self.registry.put(f"datafeed/{feed_id}", {**feed, "state": "stopped"})
                continue
            if job is None or job.get("state") != "opened":
                continue
            from streamad.config.job import Job, parse_datafeed

            key = (job_id, feed.get("run"), feed.get("start"), feed.get("end"))
            for book in (self._feeds, self._lookback_ends, self._final):
                for old in [k for k in book if k[0] == job_id and k != key]:
                    del book[old]
            self._caught_up = {k for k in self._caught_up if k[0] != job_id or k == key}
            parsed = self._feeds.get(key)
            if parsed is None:
                parsed = parse_datafeed(cfg, job_id, Job.from_dict(job["config"]).bucket_span_s)
                self._feeds[key] = parsed
            if key not in self._caught_up:
                if key not in self._lookback_ends:
                    self._lookback_ends[key] = await self._targets(cfg.get("indices", []), feed.get("start"))
                if not self._applied(job_id, self._lookback_ends[key]):
                    continue
                self._caught_up.add(key)
            end = feed.get("end")
            if end is not None and now - parsed.query_delay_s >= end / 1000.0:
                if key not in self._final:
                    self._final[key] = await self._targets(cfg.get("indices", []), feed.get("start"))
                if self._applied(job_id, self._final[key]):
                    self._ending.add(job_id)
                    asyncio.ensure_future(self._end_datafeed(job_id))
                continue
            if now - self._last_tick.get(job_id, 0.0) < parsed.frequency_s:
                continue
            self._last_tick[job_id] = now
            await self.send_control(job_id, "flush", calc_interim=True,
                                    advance_time=now - parsed.query_delay_s)

    async def _end_datafeed(self, job_id: str) -> None:
        from streamad.runtime.api import Api

        try:
            await Api(self).close_job(job_id, datafeed_first=False)
            log.info("datafeed of %s reached its end: job closed, datafeed stopped", job_id)
        except Exception as exc:  # noqa: BLE001 - retried on the next tick
            log.error("closing %s at its datafeed end failed: %s", job_id, exc)
        finally:
            self._ending.discard(job_id)

    def _owns(self, job_id: str) -> bool:
        from aiokafka.partitioner import DefaultPartitioner

        parts = sorted(tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.settings.work_topic)
        if not parts:
            return False
        p = DefaultPartitioner()(job_id.encode(), list(range(self.settings.partitions)), [])
        return p in parts

    def _applied(self, job_id: str, targets: dict[str, int]) -> bool:
        """True when the job has applied, on every input partition, the event before each target."""
        slot = self.processor.slots.get(job_id)
        if slot is None:
            if targets:  # not loaded here since a restart or rebalance: a tick makes the detector load it
                asyncio.ensure_future(self.send_control(job_id, "tick"))
            return not targets
        return all(slot.sources.get(where, -1) >= end - 1 for where, end in targets.items())

    async def _targets(self, patterns: list[str], start_ms: int | None) -> dict[str, int]:
        """The end offset of each input partition of these topics that holds an event at or after
        the datafeed's start ("topic:partition" -> offset): what the job must apply to be caught up."""
        return {where: end for where, (first, end) in (await self._partition_offsets(patterns, start_ms)).items()
                if first < end}

    # ------------------------------------------------------------------ detector
    async def _detect(self, stream) -> None:
        async for event in stream.noack().events():
            job_id = (event.key or b"").decode("utf-8", "replace")
            msg = event.message
            slot = self.processor.slots.get(job_id)
            if slot is None:
                slot = self.processor.load(job_id, self._table_get)
                log.debug("job %s loaded from the table at work offset %s: %s", job_id, msg.offset,
                         None if slot is None else (slot.next_offset, slot.sources))
            started = time.perf_counter()
            outputs = self.processor.apply(job_id, msg.offset, msg.value)
            if outputs is None:  # already applied before a restart or rebalance
                event.ack()
                continue
            self.pending.setdefault(job_id, []).append(event)
            await self._publish(job_id, outputs, time.perf_counter() - started)
            slot = self.processor.slots[job_id]
            control = msg.value[:1] == envelope.CONTROL
            if (control or slot.dirty >= self.settings.snapshot_events
                    or time.monotonic() - slot.last_snapshot >= self.settings.snapshot_seconds):
                await self._snapshot(job_id)

    # ------------------------------------------------------------------ shards
    async def _shard(self, stream) -> None:
        """Model requests: each (job, shard) slot applies them once, in sequence order, and answers on
        the job's work log. Acked, as the detector's events, only once a snapshot covers them."""
        async for event in stream.noack().events():
            key = (event.key or b"").decode("utf-8", "replace")
            msg = event.message
            if msg.value[:1] == envelope.CONTROL:  # a tick: snapshot this partition's dirty slots
                for slot_key, slot in list(self.shard_processor.slots.items()):
                    if slot.dirty and self._shard_partition(slot_key) == msg.partition:
                        await self._shard_snapshot(slot_key)
                event.ack()
                continue
            if key not in self.shard_processor.slots:
                self.shard_processor.load(key, self.shard_table.get)
            outputs = self.shard_processor.apply(key, msg.offset, msg.value)
            if outputs is None:
                event.ack()
                continue
            self.pending.setdefault(key, []).append(event)
            await self._publish(key, outputs, 0.0)
            slot = self.shard_processor.slots[key]
            if (slot.dirty >= self.settings.snapshot_events
                    or time.monotonic() - slot.last_snapshot >= self.settings.snapshot_seconds):
                await self._shard_snapshot(key)

    @staticmethod
    def _shard_partition(slot_key: str) -> int:
        return int(slot_key.rsplit("\x00", 1)[1])

    async def _shard_snapshot(self, key: str) -> None:
        sent = self.inflight.pop(key, [])
        if sent:
            await asyncio.gather(*sent)  # replies delivered before the state that made them is saved
        _write_snapshot(self.shard_table, key, self.shard_processor.snapshot_chunks(key))
        await self.app.producer.flush()
        for ev in self.pending.pop(key, []):
            ev.ack()

    async def _publish(self, job_id: str, outputs: list[Output], seconds: float) -> None:
        final_buckets = 0
        inflight = self.inflight.setdefault(job_id, [])
        for out in outputs:
            inflight.append(await self.topics[out.topic].send(key=out.key.encode(), value=out.value,
                                                              partition=out.partition))
            doc = out.doc
            if doc is None:
                continue
            rtype = doc.get("result_type", "")
            if rtype in ("bucket", "record", "influencer", "model_plot", "annotation"):
                metrics.RESULTS_EMITTED.labels(job_id, rtype).inc()
            if rtype == "bucket" and not doc.get("is_interim"):
                final_buckets += 1
            if rtype == "record" and not doc.get("is_interim") and doc.get("record_score") == doc.get(
                    "initial_record_score"):
                from streamad.demo.table import severity

                metrics.ANOMALIES.labels(job_id, severity(doc["record_score"])).inc()
            if rtype == "model_size_stats":
                metrics.MODEL_BYTES.labels(job_id).set(doc["model_bytes"])
                metrics.set_memory_status(job_id, doc["memory_status"])
                metrics.SERIES_MODELLED.labels(job_id).set(
                    doc["total_by_field_count"] + doc["total_over_field_count"] + doc["total_partition_field_count"])
        for _ in range(final_buckets):
            metrics.BUCKET_FINALIZATION.labels(job_id).observe(seconds / final_buckets)

    async def _snapshot(self, job_id: str) -> None:
        # results first: a snapshot must never cover documents that were not delivered
        sent = self.inflight.pop(job_id, [])
        if sent:
            await asyncio.gather(*sent)
        size = _write_snapshot(self.table, job_id, self.processor.snapshot_chunks(job_id))
        # the changelog must hold the snapshot before its events are acked: otherwise a committed
        # offset can pass a snapshot that a rebalance's table recovery (or a crash) then never sees
        await self.app.producer.flush()
        metrics.SNAPSHOT_BYTES.labels(job_id).set(size)
        slot = self.processor.slots[job_id]
        if slot.engine is not None:
            for out in self.processor.stats_outputs(job_id):
                await self._publish(job_id, [out], 0.0)
        for ev in self.pending.pop(job_id, []):
            ev.ack()

    def _table_get(self, key: str) -> bytes | None:
        return self.table.get(key)

    async def _tick(self) -> None:
        """Ask idle jobs and shards with unsnapshotted work for a snapshot (tables are written from
        the agents)."""
        now = time.monotonic()
        for job_id, slot in list(self.processor.slots.items()):
            if slot.dirty and now - slot.last_snapshot >= self.settings.snapshot_seconds:
                slot.last_snapshot = now  # one tick per interval
                await self.work_topic.send(key=job_id.encode(), value=envelope.control("tick"))
        ticked = set()
        for key, slot in list(self.shard_processor.slots.items()):
            if slot.dirty and now - slot.last_snapshot >= self.settings.snapshot_seconds:
                slot.last_snapshot = now
                partition = self._shard_partition(key)
                if partition not in ticked:
                    ticked.add(partition)
                    await self.shards_topic.send(key=b"tick", value=envelope.control("tick"), partition=partition)

    def _registry_changed(self, kind: str, ident: str) -> None:
        """A forecast deleted through any worker leaves this one's results index too (the registry
        is read before the results topic, so a replay never indexes it again)."""
        if kind == "forecast":
            job_id, _, forecast_id = ident.partition("/")
            if forecast_id in self.registry.deleted_forecasts.get(job_id, ()):
                self.results.delete_forecasts(job_id, [forecast_id])

    async def _retention(self) -> None:
        """Results older than a job's results_retention_days leave the results index, and so do
        forecasts past their expiry."""
        now_ms = int(time.time() * 1000)
        for job_id, entry in list(self.registry.jobs.items()):
            days = entry["config"].get("results_retention_days")
            if days:
                self.results.prune(job_id, int(days))
            self.results.expire_forecasts(job_id, now_ms)

    async def _lag(self) -> None:
        consumer = self.app.consumer
        lags: dict[str, int] = {}
        for tp in consumer.assignment():
            try:
                pos = await consumer.position(tp)
                hw = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - a partition in flux has no lag to report
                continue
            if pos is not None and hw is not None:
                lags[tp.topic] = lags.get(tp.topic, 0) + max(hw - pos, 0)
        for topic, lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic).set(lag)

    async def _on_revoked(self, sender, revoked, **kwargs) -> None:
        self._generation += 1
        # a lookback still forwarding here while the partition's next owner resumes it could land
        # events after the new owner's: stop them and wait until Kafka holds what they sent
        await lookback.cancel_all(self._lookbacks)
        await self.registry.flush()
        self._seen.clear()
        self._skipped.clear()
        self._router_start.clear()
        self.processor.forget()
        self.shard_processor.forget()
        self.pending.clear()
        self.inflight.clear()
        self.ready = False

    async def _on_assigned(self, sender, assigned, **kwargs) -> None:
        self._generation += 1
        self._seen.clear()
        self._skipped.clear()
        self._router_start.clear()
        self.processor.forget()
        self.shard_processor.forget()
        self.pending.clear()
        self.inflight.clear()
        self.ready = True

    def _on_event(self, kind: str, job_id: str, info: dict | None) -> None:
        if kind == "consumed":
            metrics.EVENTS_CONSUMED.labels(job_id).inc()
        elif kind == "processed":
            metrics.EVENTS_PROCESSED.labels(job_id).inc()
        elif kind == "rejected":
            metrics.EVENTS_REJECTED.labels(job_id, info["reason"]).inc()

    # ------------------------------------------------------------------ control
    async def send_control(self, job_id: str, kind: str, **fields) -> None:
        """Append a control message to the job's work log and wait until Kafka has it.

        REST calls use the registry's own aiokafka producer (same default partitioner as Faust's):
        waiting on Faust's producer from a web handler while agents use it was seen to hang.
        An `open` carries a fresh incarnation id: the shards of a job deleted and created again
        under its id must tell its requests from the old job's."""
        if kind == "open":
            fields.setdefault("incarnation", uuid.uuid4().hex)
        await self.registry.send(self.settings.work_topic, job_id.encode(), envelope.control(kind, **fields))

    async def send_data(self, job_id: str, raws: list[bytes]) -> None:
        """Append `_data` events to the job's work log; raises if any send failed (flush never does)."""
        sent = [await self.registry.send(self.settings.work_topic, job_id.encode(), envelope.data(raw), wait=False)
                for raw in raws]
        await asyncio.gather(*sent)


def _write_snapshot(table, key: str, writes: list[tuple[str, bytes | None]]) -> int:
    """Write a snapshot's chunks and then its manifest (last) to a table, drop the chunks the previous
    manifest had beyond the new ones; the bytes written."""
    old = table.get(key)
    old_meta = orjson.loads(old) if old else {}
    size = 0
    for k, value in writes:
        table[k] = value
        size += len(value or b"")
    meta = orjson.loads(writes[-1][1])
    for i in range(meta["chunks"], old_meta.get("chunks", 0)):
        table.pop(chunk_key(key, i), None)
    for i in range(meta.get("held_chunks", 0), old_meta.get("held_chunks", 0)):
        table.pop(chunk_key(key, f"held{i}"), None)
    return size


class _Lifecycle(faust.Service):
    """Starts the registry and the results index with the app; loads jobs from STREAMAD_JOBS_DIR."""

    def __init__(self, worker: Worker, **kwargs):
        self.worker = worker
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self.worker.registry.start()
        await self.worker.results.start()

    async def on_started(self) -> None:
        jobs_dir = self.worker.settings.jobs_dir
        if jobs_dir:
            self.add_future(self._load_jobs(jobs_dir))

    async def _load_jobs(self, jobs_dir: str) -> None:
        from streamad.runtime.api import Api

        api = Api(self.worker)
        for name in sorted(os.listdir(jobs_dir)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(jobs_dir, name), "rb") as f:
                    body = orjson.loads(f.read())
                await api.ensure_running(body, re.sub(r"\.json$", "", name))
            except Exception as exc:  # noqa: BLE001 - one bad file never stops the worker
                log.error("jobs dir: %s: %s", name, exc)

    async def on_stop(self) -> None:
        await self.worker.results.stop()
        await self.worker.registry.stop()
