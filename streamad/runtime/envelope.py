"""Messages on the work topic (key = job_id): one raw event, or one control command.

A data message is b"D" + the raw event bytes (the _data API), or b"S" + its source position +
the raw bytes (forwarded from an input topic), so the engine decodes it the same way `streamad run`
decodes a line, and a re-forwarded event is recognised by its position. A control message is
b"C" + JSON: open (with the job config), flush, close, delete, datafeed start/stop. Everything a
job's engine does is a function of this log, which is what makes replay after a crash exact.
"""

from __future__ import annotations

import orjson

DATA = b"D"
SOURCED = b"S"
CONTROL = b"C"


def data(raw: bytes) -> bytes:
    return DATA + raw


def sourced(head: bytes, raw: bytes) -> bytes:
    """A data message forwarded from an input topic: b"S" + JSON {t, p, o} + newline + raw."""
    return SOURCED + head + b"\n" + raw


def control(kind: str, **fields) -> bytes:
    return CONTROL + orjson.dumps({"type": kind, **fields})


def decode(value: bytes) -> tuple[str, bytes | dict]:
    """("data", raw), ("sourced", (source dict, raw)) or ("control", command dict); ValueError else."""
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
    if head == CONTROL:
        cmd = orjson.loads(body)
        if not isinstance(cmd, dict) or "type" not in cmd:
            raise ValueError("control message without a type")
        return "control", cmd
    raise ValueError(f"unknown work message kind {head!r}")
