"""A minimal Faust app for the foundation integration test: per-key counts in a RocksDB table.

Idempotent under at-least-once delivery: each table value keeps the last source offset applied for
its key (a key always lives on one partition, so its offsets only grow), and a redelivered event is
published again marked `replay` but never counted twice. Names come from env vars so every test run
uses fresh topics.
"""

import os

import faust
import orjson

APP_ID = os.environ.get("STREAMAD_IT_APP", "streamad-it")
IN_TOPIC = os.environ.get("STREAMAD_IT_IN", "streamad-it-in")
OUT_TOPIC = os.environ.get("STREAMAD_IT_OUT", "streamad-it-out")
PARTITIONS = int(os.environ.get("STREAMAD_IT_PARTITIONS", "4"))

app = faust.App(
    APP_ID,
    broker=f"kafka://{os.environ.get('STREAMAD_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}",
    store="rocksdb://",
    topic_partitions=PARTITIONS,
    table_standby_replicas=0,
    topic_disable_leader=True,
    web_enabled=False,
)
source = app.topic(IN_TOPIC, key_type=bytes, value_type=bytes, partitions=PARTITIONS)
sink = app.topic(OUT_TOPIC, key_type=bytes, value_type=bytes)
counts = app.Table("counts", key_type=str, value_type=bytes, partitions=PARTITIONS)


@app.agent(source)
async def count(stream):
    async for event in stream.events():
        key = event.key.decode()
        offset = event.message.offset
        prev = counts.get(key)
        state = orjson.loads(prev) if prev else {"count": 0, "offset": -1}
        if offset <= state["offset"]:
            await sink.send(key=event.key, value=orjson.dumps({"key": key, "offset": offset, "replay": True}))
            continue
        state = {"count": state["count"] + 1, "offset": offset}
        counts[key] = orjson.dumps(state)
        await sink.send(key=event.key, value=orjson.dumps({"key": key, "offset": offset, "count": state["count"]}))
