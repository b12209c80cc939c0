"""Messages on the work topic (key = job_id): one raw event, or one control command.

A data message is b"D" + the raw event bytes (the _data API), b"S" + its source position + the
raw bytes (forwarded from an input topic), or b"B" + a batch of consecutive events of one input
partition with their positions (a lookback forwards the past in batches: one work message per
event costs far more than the engine), so the engine decodes each event the same way `streamad run`
decodes a line, and a re-forwarded event is recognised by its position. A control message is
b"C" + JSON: open (with the job config), flush, close, delete, datafeed start/stop. A shard's
answer to a model request is b"R" + JSON {s, q, i} + newline + the reply. Everything a job's
engine does is a function of this log, which is what makes replay after a crash exact.

On the shards topic (partition = shard index) a model request is b"M" + JSON {j: job id, s: shard,
n: shard count, q: sequence, a: the job's acknowledged sequence, i: incarnation, k: "close" |
"forecast", job: the job config} + newline + the request.
"""

from __future__ import annotations

import orjson

DATA = b"D"
SOURCED = b"S"
BATCH = b"B"
CONTROL = b"C"
REPLY = b"R"
SHARD = b"M"


def data(raw: bytes) -> bytes:
    return DATA + raw


def sourced(head: bytes, raw: bytes) -> bytes:
    """A data message forwarded from an input topic: b"S" + JSON {t, p, o} + newline + raw."""
    return SOURCED + head + b"\n" + raw


def batch(topic: str, partition: int, offsets: list[int], raws: list[bytes], run: int | None = None) -> bytes:
    """Events of one input partition: b"B" + JSON {t, p, o: [offsets], n: [byte lengths], r: run} +
    newline + the raw events back to back (lengths, not separators: a raw event may hold any byte).
    `run` is the datafeed run that forwarded them: a job drops what a stale run still sends."""
    meta = {"t": topic, "p": partition, "o": offsets, "n": [len(r) for r in raws]}
    if run is not None:
        meta["r"] = run
    return BATCH + orjson.dumps(meta) + b"\n" + b"".join(raws)


# one work message per batch of consecutive events: per-message Kafka and Faust costs dwarf the
# engine's per-event cost; the byte cap keeps a batch far below the broker's 1 MB message limit
BATCH_EVENTS = 500
BATCH_BYTES = 256 * 1024


def batches(topic: str, partition: int, events: list[tuple[int, bytes]], run: int | None = None) -> list[bytes]:
    """`batch` messages for consecutive (offset, raw) events of one partition, each within the caps."""
    out: list[bytes] = []
    offsets: list[int] = []
    raws: list[bytes] = []
    size = 0
    for offset, raw in events:
        if offsets and (len(offsets) >= BATCH_EVENTS or size + len(raw) > BATCH_BYTES):
            out.append(batch(topic, partition, offsets, raws, run))
            offsets, raws, size = [], [], 0
        offsets.append(offset)
        raws.append(raw)
        size += len(raw)
    if offsets:
        out.append(batch(topic, partition, offsets, raws, run))
    return out


def control(kind: str, **fields) -> bytes:
    return CONTROL + orjson.dumps({"type": kind, **fields})


def shard_request(job_id: str, shard: int, count: int, seq: int, acked: int, incarnation: str, kind: str,
                  job: dict, body: bytes) -> bytes:
    head = {"j": job_id, "s": shard, "n": count, "q": seq, "a": acked, "i": incarnation, "k": kind, "job": job}
    return SHARD + orjson.dumps(head) + b"\n" + body


def decode_shard_request(value: bytes) -> tuple[dict, bytes]:
    """(header, request bytes) of a shards-topic message; ValueError else."""
    if value[:1] != SHARD:
        raise ValueError(f"not a shard request: {value[:1]!r}")
    meta, sep, body = value[1:].partition(b"\n")
    if not sep:
        raise ValueError("shard request without a header line")
    head = orjson.loads(meta)
    if not isinstance(head, dict) or not {"j", "s", "n", "q", "i", "k", "job"} <= head.keys():
        raise ValueError("shard request header incomplete")
    return head, body


def shard_reply(shard: int, seq: int, incarnation: str, body: bytes) -> bytes:
    return REPLY + orjson.dumps({"s": shard, "q": seq, "i": incarnation}) + b"\n" + body


def decode(value: bytes) -> tuple[str, bytes | dict]:
    """("data", raw), ("sourced", (source dict, raw)), ("batch", (topic, partition, [(offset, raw)], run))
    ("control", command dict) or ("reply", (header dict, reply bytes)); ValueError else."""
    if not value:
        raise ValueError("empty work message")
    head, body = value[:1], value[1:]
    if head == DATA:
        return "data", body
    if head == SOURCED:
        meta, sep, raw = body.partition(b"\n")
        if not sep:
            raise ValueError("sourced message without a header line")
        return "sourced", (orjson.loads(meta), raw)
    if head == BATCH:
        meta, sep, blob = body.partition(b"\n")
        if not sep:
            raise ValueError("batch message without a header line")
        info = orjson.loads(meta)
        offsets, sizes = info["o"], info["n"]
        if len(offsets) != len(sizes) or sum(sizes) != len(blob):
            raise ValueError("batch message lengths do not match its body")
        events, at = [], 0
        for offset, size in zip(offsets, sizes):
            events.append((offset, blob[at:at + size]))
            at += size
        return "batch", (info["t"], info["p"], events, info.get("r"))
    if head == CONTROL:
        cmd = orjson.loads(body)
        if not isinstance(cmd, dict) or "type" not in cmd:
            raise ValueError("control message without a type")
        return "control", cmd
    if head == REPLY:
        meta, sep, blob = body.partition(b"\n")
        if not sep:
            raise ValueError("reply message without a header line")
        return "reply", (orjson.loads(meta), blob)
    raise ValueError(f"unknown work message kind {head!r}")
