"""The shard processor: applies model requests to a job's partition-value shards, once per sequence number.

Pure of Kafka and Faust, as `processor.JobProcessor` is. A job's frontend (on its work partition)
closes a bucket by sending each of its shards a request (`envelope.shard_request`) on the shards
topic, whose partition is the shard's index; the shard agent hands each message here, and publishes
the reply it returns to the job's work topic, where the job waits for it (`envelope.shard_reply`).

Exactly once: a shard applies requests in sequence order (`seq`); a request below its next is a
replay (the job restarted from a snapshot and asked again, or this shard restarted and re-read its
topic) and is answered from the replies kept since the job's last acknowledged sequence, so the
models learn each bucket once and the job gets every reply it needs (a reply it already has is
a duplicate there, recognised by (shard, seq)). A request of another incarnation of the job (deleted
and created again under its id) starts the shard afresh.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field

import numpy as np
import orjson

from streamad.config.job import Job
from streamad.engine.shard import CloseRequest, PartitionEngine
from streamad.runtime import envelope
from streamad.runtime.processor import Output, chunk_key, split_chunks


@dataclass
class ShardSlot:
    engine: PartitionEngine | None
    incarnation: str | None = None
    next_seq: int = 0
    replies: dict[int, bytes] = field(default_factory=dict)  # seq -> reply message, until acknowledged
    job_bytes: bytes = b""  # the job config the engine was built from or last updated with
    next_offset: int = 0  # next shards-topic offset this slot expects
    dirty: int = 0
    last_snapshot: float = field(default_factory=time.monotonic)


def slot_key(job_id: str, shard: int) -> str:
    return f"{job_id}\x00{shard}"


class ShardProcessor:
    def __init__(self):
        self.slots: dict[str, ShardSlot] = {}

    # ------------------------------------------------------------------ state
    def snapshot_chunks(self, key: str) -> list[tuple[str, bytes | None]]:
        """Table writes that persist a shard: its chunks, then the manifest (written last)."""
        slot = self.slots[key]
        blob = pickle.dumps((slot.engine, slot.replies, slot.job_bytes), protocol=5)
        chunks = split_chunks(blob)
        manifest = orjson.dumps({"chunks": len(chunks), "next_offset": slot.next_offset, "next_seq": slot.next_seq,
                                 "incarnation": slot.incarnation, "bytes": len(blob)})
        slot.dirty = 0
        slot.last_snapshot = time.monotonic()
        return [(chunk_key(key, i), c) for i, c in enumerate(chunks)] + [(key, manifest)]

    def load(self, key: str, get) -> ShardSlot | None:
        """Restore a shard from table reads (`get(key)`), or None if it has no state."""
        manifest = get(key)
        if manifest is None:
            return None
        meta = orjson.loads(manifest)
        blob = b"".join(get(chunk_key(key, i)) or b"" for i in range(meta["chunks"]))
        engine, replies, job_bytes = pickle.loads(blob)
        slot = ShardSlot(engine, meta["incarnation"], meta["next_seq"], replies, job_bytes, meta["next_offset"])
        self.slots[key] = slot
        return slot

    def forget(self) -> None:
        self.slots.clear()

    # ------------------------------------------------------------------ apply
    def apply(self, key: str, offset: int, value: bytes) -> list[Output] | None:
        """Apply one shards-topic message; None if this slot already applied its offset."""
        slot = self.slots.get(key)
        if slot is not None and offset < slot.next_offset:
            return None
        if slot is None:
            slot = self.slots[key] = ShardSlot(None)
        slot.next_offset = offset + 1
        slot.dirty += 1
        try:
            head, body = envelope.decode_shard_request(value)
        except ValueError as exc:
            return [_dead(key, value, f"bad shard message: {exc}")]
        job_id, shard, seq = head["j"], int(head["s"]), int(head["q"])
        if head["i"] != slot.incarnation:  # a job created again under this id: start afresh
            slot.engine, slot.incarnation, slot.next_seq, slot.replies, slot.job_bytes = None, head["i"], 0, {}, b""
        for old in [q for q in slot.replies if q <= int(head.get("a", -1))]:
            del slot.replies[old]
        if slot.engine is None:
            slot.next_seq = seq  # a shard joins at the close its first series came in
        if seq < slot.next_seq:  # a replay: answer again what is still unacknowledged
            kept = slot.replies.get(seq)
            return [Output("work", job_id, kept)] if kept is not None else []
        if seq > slot.next_seq:
            return [_dead(key, value, f"shard request {seq} skips {slot.next_seq}: requests were lost")]
        job_bytes = orjson.dumps(head["job"])
        if slot.engine is None:
            slot.engine = PartitionEngine(Job.from_dict(orjson.loads(job_bytes)), shard, int(head["n"]))
            slot.job_bytes = job_bytes
        elif job_bytes != slot.job_bytes:
            slot.engine.update_job(Job.from_dict(orjson.loads(job_bytes)))
            slot.job_bytes = job_bytes
        if head["k"] == "close":
            result = slot.engine.close(CloseRequest.from_bytes(body)).to_bytes()
        else:  # "forecast": the times to project to, as int64 bytes
            result = pickle.dumps(slot.engine.forecast(np.frombuffer(body, dtype=np.int64)), protocol=5)
        reply = envelope.shard_reply(shard, seq, head["i"], result)
        slot.replies[seq] = reply
        slot.next_seq = seq + 1
        return [Output("work", job_id, reply)]


def _dead(key: str, value: bytes, reason: str) -> Output:
    job_id = key.split("\x00", 1)[0]
    body = {"job_id": job_id, "reason": reason, "raw": value[:2000].decode("utf-8", "replace")}
    return Output("dead_letter", job_id, orjson.dumps(body), None)
