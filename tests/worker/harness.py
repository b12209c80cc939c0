"""Helpers for worker tests: a `streamad worker` subprocess, HTTP calls, produce and read topics."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(bootstrap: str, run: str, **extra) -> dict:
    env = dict(os.environ)
    for var in ("BROKER_URL", "APP_STORE", "WEB_PORT", "TOPIC_PARTITIONS", "PROCESSING_GUARANTEE"):
        env.pop(var, None)
    env.update(STREAMAD_BROKER=f"kafka://{bootstrap}", STREAMAD_APP_ID=f"streamad-{run}",
               STREAMAD_WORK_TOPIC=f"streamad-work-{run}", STREAMAD_JOBS_TOPIC=f"streamad-jobs-{run}",
               STREAMAD_SHARDS_TOPIC=f"streamad-shards-{run}",
               STREAMAD_RESULTS_TOPIC=f"streamad-results-{run}",
               STREAMAD_ANNOTATIONS_TOPIC=f"streamad-annotations-{run}",
               STREAMAD_DEAD_LETTER_TOPIC=f"streamad-dead-letter-{run}",
               STREAMAD_INPUT_TOPICS=f"in-{run}", STREAMAD_PARTITIONS="4", STREAMAD_OUTPUT_PARTITIONS="2",
               STREAMAD_WEB_HOST="127.0.0.1", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


class WorkerProc:
    def __init__(self, env: dict, datadir: Path, log: Path, port: int | None = None):
        # a restarted static member must keep its URL (Faust's assignor checks it)
        self.port = port or free_port()
        self.env = dict(env, STREAMAD_WEB_PORT=str(self.port), STREAMAD_DATA_DIR=str(datadir))
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> WorkerProc:
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "streamad", "worker", "--loglevel", "info"],
                                     cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("worker not ready:\n" + self.log.read_text(errors="replace")[-5000:])
            try:
                status, body = http("GET", self.url + "/healthz/ready", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def http(method: str, url: str, body=None, timeout: float = 30) -> tuple[int, object]:
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    ctype_json = raw[:1] in (b"{", b"[")
    return status, orjson.loads(raw) if ctype_json else raw


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def go():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            if topic not in await admin.list_topics():
                await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                    max_request_size=8 * 1024 * 1024)
        await producer.start()
        try:
            for v in values:
                await producer.send(topic, value=v, partition=0 if partitions == 1 else None)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def read_all(bootstrap: str, topics: list[str], quiet_s: float = 2.0, timeout: float = 60) -> list[bytes]:
    """Every message value of the topics, read until nothing new arrives for quiet_s."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def go():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                    auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        try:
            tps = []
            for t in topics:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                tps.extend(TopicPartition(t, p) for p in sorted(consumer.partitions_for_topic(t) or []))
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[bytes] = []
            last_new = time.monotonic()
            deadline = time.monotonic() + timeout
            while time.monotonic() - last_new < quiet_s and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=300)
                for msgs in batch.values():
                    if msgs:
                        last_new = time.monotonic()
                    out.extend(m.value for m in msgs)
            return out
        finally:
            await consumer.stop()

    return asyncio.run(go())


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
