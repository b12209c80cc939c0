"""A datafeed's lookback: the events already on its topics when it started, read by a consumer of its own.

Elastic's datafeed first searches the past (from `start`), then follows real time. Here the router
follows each input partition live for every job, and a started datafeed's past is read, per input
partition, by a plain aiokafka consumer (no group, no shared offsets) that forwards the events to
the job's work log with their source positions. The router forwards a partition's events to the
job only once the lookback of that partition has caught up with it (the hand-off):

- the router records the last offset it was handed on every partition (`seen`); until the hand-off
  it skips the job on that partition (and commits past those events: they are the lookback's);
- the lookback reads until its position reaches the router's next offset (one past `seen`, or the
  group's committed offset when the router was handed nothing yet since its assignment), waits
  until Kafka holds what it forwarded, checks again with no await in between, and flips the
  partition live. Events forwarded by both are applied once (the processor skips positions at or
  below the job's last one), and no event is skipped by both.

Progress is kept in the registry topic (`lookback/<datafeed>/<run>/<topic:partition>`: next offset,
done), written after the forwarded events are delivered, so after a crash or a rebalance the new
owner of the partition resumes from there: re-forwarded events are duplicates, skipped by position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streamad.runtime import envelope

log = logging.getLogger("streamad.lookback")


def record_key(feed_id: str, run: str | int | None, where: str) -> str:
    """The registry key of one partition's lookback progress."""
    return f"lookback/{feed_id}/{run}/{where}"


def split_where(where: str) -> tuple[str, int]:
    topic, _, partition = where.rpartition(":")
    return topic, int(partition)


class Lookback:
    """Forwards one input partition's past to one job, then hands the partition to the router."""

    def __init__(self, worker, feed_id: str, run, job_id: str, where: str, first: int,
                 router_next: Callable[[], int | None], generation: int = 0):
        self.worker = worker
        self.feed_id = feed_id
        self.run = run
        self.job_id = job_id
        self.where = where
        self.first = first
        self.router_next = router_next  # the router's next offset on the partition (None: not known yet)
        self.generation = generation  # the worker's rebalance count when it started
        self.forwarded = 0
        self._sent: list = []  # delivery futures since the last check

    @property
    def key(self) -> str:
        return record_key(self.feed_id, self.run, self.where)

    async def run_until_handed_off(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        settings = self.worker.settings
        registry = self.worker.registry
        topic, partition = split_where(self.where)
        tp = TopicPartition(topic, partition)
        client = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                  auto_offset_reset="earliest", **settings.client_kwargs())
        await client.start()
        try:
            client.assign([tp])
            client.seek(tp, self.first)
            position = self.first
            saved, saved_at = position, time.monotonic()
            job_key = self.job_id.encode()
            while True:
                need = self.router_next()
                if need is not None and position >= need:
                    await self._delivered()  # the forwarded events are in Kafka before the router's
                    need = self.router_next()
                    if need is not None and position >= need:
                        if not self.worker.hand_off(self):  # synchronous: no router event slips in between
                            return  # a rebalance since this lookback began: the next owner resumes it
                        # shielded: a cancel (the key is no longer wanted) must not drop the record
                        await asyncio.shield(registry.put(self.key, {"next": position, "done": True}))
                        log.info("datafeed %s: lookback of %s handed to the router at offset %d "
                                 "(%d events forwarded)", self.feed_id, self.where, position, self.forwarded)
                        return
                fetched = (await client.getmany(tp, timeout_ms=200, max_records=2000)).get(tp, [])
                events = [(m.offset, m.value if m.value is not None else b"") for m in fetched]
                for value in envelope.batches(topic, partition, events, self.run):
                    self._sent.append(await registry.send(settings.work_topic, job_key, value, wait=False))
                self.forwarded += len(events)
                position = await client.position(tp)
                if position > saved and time.monotonic() - saved_at >= settings.lookback_save_seconds:
                    await self._delivered()
                    if self.generation != self.worker.generation:
                        return
                    await registry.put(self.key, {"next": position, "done": False})
                    saved, saved_at = position, time.monotonic()
        finally:
            await client.stop()

    async def _delivered(self) -> None:
        """Wait until Kafka holds every batch sent so far; raise if one failed (the supervisor then
        starts the lookback again from its last record: nothing is recorded past a lost batch)."""
        sent, self._sent = self._sent, []
        if sent:
            await asyncio.gather(*sent)


async def group_offsets(settings, group_id: str, tps: list) -> dict:
    """The committed offset of each partition for a consumer group (None where nothing is committed)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, **settings.client_kwargs())
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group_id, partitions=list(tps))
    finally:
        await admin.close()
    out = {}
    for tp in tps:
        meta = found.get(tp)
        out[tp] = meta.offset if meta is not None and meta.offset is not None and meta.offset >= 0 else None
    return out


async def cancel_all(tasks: dict[str, asyncio.Task]) -> None:
    for task in tasks.values():
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    tasks.clear()
