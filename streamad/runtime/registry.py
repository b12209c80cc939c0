"""The job registry: jobs and datafeeds in a compacted topic, so every worker sees the same ones.

Each worker reads the whole topic from the beginning and keeps following it; a write waits until
this worker has read it back (read-your-writes), so a `PUT` is visible to the next `GET`.
Keys are `job/<id>`, `datafeed/<id>`, `filter/<id>`, `calendar/<id>` and `lookback/<datafeed>/<run>/<topic:partition>` (a datafeed
lookback's progress, see `lookback`); a null value (tombstone) deletes.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamad.runtime.settings import Settings

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.jobs: dict[str, dict] = {}
        self.datafeeds: dict[str, dict] = {}
        self.lookbacks: dict[str, dict] = {}  # full key -> {"next": offset, "done": bool}
        self.filters: dict[str, dict] = {}
        self.calendars: dict[str, dict] = {}
        self.deleted_forecasts: dict[str, set[str]] = {}  # job_id -> forecast ids (DELETE _forecast)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._position = -1
        self._advanced = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.ready = asyncio.Event()
        self.listeners: list = []

    async def start(self) -> None:
        s = self.settings
        await ensure_topics(s, [(s.jobs_topic, 1, {"cleanup.policy": "compact"}),
                                (s.results_topic, s.output_partitions, {}),
                                (s.annotations_topic, s.output_partitions, {}),
                                (s.dead_letter_topic, s.output_partitions, {})])
        self._producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all",
                                          max_request_size=4 * 1024 * 1024, **s.client_kwargs())
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                          auto_offset_reset="earliest", **s.client_kwargs())
        await self._consumer.start()
        tp = TopicPartition(s.jobs_topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)
        end = (await self._consumer.end_offsets([tp]))[tp]
        self._task = asyncio.ensure_future(self._follow())
        await self._wait_for(end - 1)
        self.ready.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for _tp, messages in batches.items():
                for m in messages:
                    self._apply(m.key.decode(), m.value)
                    self._position = m.offset
            self._advanced.set()
            self._advanced.clear()

    def _apply(self, key: str, value: bytes | None) -> None:
        kind, _, ident = key.partition("/")
        if kind == "lookback":
            if value is None:
                self.lookbacks.pop(key, None)
            else:
                self.lookbacks[key] = orjson.loads(value)
            return
        if kind == "forecast":  # forecast/<job_id>/<forecast_id>: deleted (a tombstone forgets it)
            job_id, _, forecast_id = ident.partition("/")
            ids = self.deleted_forecasts.setdefault(job_id, set())
            if value is None:
                ids.discard(forecast_id)
            else:
                ids.add(forecast_id)
            for fn in self.listeners:
                fn(kind, ident)
            return
        table = {"job": self.jobs, "datafeed": self.datafeeds, "filter": self.filters,
                 "calendar": self.calendars}.get(kind)
        if table is None:
            return
        if value is None:
            table.pop(ident, None)
        else:
            table[ident] = orjson.loads(value)
        for fn in self.listeners:
            fn(kind, ident)

    async def _wait_for(self, offset: int) -> None:
        while self._position < offset:
            await asyncio.wait_for(self._advanced.wait(), timeout=30)

    async def put(self, key: str, value: dict | None) -> None:
        assert self._producer is not None
        meta = await (await self._producer.send(
            self.settings.jobs_topic, key=key.encode(), value=None if value is None else orjson.dumps(value),
            partition=0))
        await self._wait_for(meta.offset)

    async def send(self, topic: str, key: bytes, value: bytes, wait: bool = True):
        """Send; wait for the broker's ack, or (wait=False) return the delivery future to await later:
        `flush` never raises, so a caller that must know every send landed gathers the futures."""
        assert self._producer is not None
        fut = await self._producer.send(topic, key=key, value=value)
        if wait:
            return await fut
        return fut

    async def flush(self) -> None:
        if self._producer is not None:  # None before start (a first rebalance can come earlier)
            await self._producer.flush()

    def datafeed_for_job(self, job_id: str) -> tuple[str, dict] | None:
        for ident, feed in sorted(self.datafeeds.items()):
            if feed["config"].get("job_id") == job_id:
                return ident, feed
        return None


async def ensure_topics(settings: Settings, topics: list[tuple[str, int, dict]]) -> None:
    """Create the output and registry topics when missing (an existing topic is left as it is)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(name, n, 1, topic_configs={k: v for k, v in cfg.items()})
               for name, n, cfg in topics if name not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def wait_for_topics(settings: Settings, names: list[str], timeout_s: float) -> None:
    """Wait until the broker's metadata lists every partition of these topics with a leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.client_kwargs())
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + max(timeout_s, 0.0)
        while True:
            infos = await admin.describe_topics(names)
            if all(i.get("error_code", 0) == 0 and i.get("partitions")
                   and all(p.get("leader", -1) >= 0 for p in i["partitions"]) for i in infos):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics not ready: {names}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
