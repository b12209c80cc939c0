"""Sections 3, 4 (+ the worker half of section 6): the Kafka worker on the real broker.

3. Ceiling: N web-log events are produced to a 1-partition topic first; a bare aiokafka consumer
   reads and `orjson.loads` them all (events/s); then one `streamad worker` (tests/worker/harness.py)
   runs the three sample jobs on that topic: PUT job (datafeed indices = [topic]), _open,
   datafeeds/datafeed-<id>/_start, and `GET _ml/anomaly_detectors/<id>/_stats` is polled until every
   job's data_counts.input_record_count is N. Worker events/s = N / (time from the first _start to
   then). Ratio = worker / bare, measured in the same run.
   Latency: a `mean(value) by host` job with S series (10k by default) on its own topic; bucket by
   bucket, the S events are produced, the worker is let catch up (its data_counts reach what was
   produced), then the next bucket's first event (the watermark that closes the bucket) is
   produced alone and the time until that bucket's result document arrives on the results topic
   is the delay. p50/p99 over the buckets.
4. Scale-out: four identical jobs (copies of response_code_rates, ids chosen so that they hash to
   four different work partitions) on the same topic, with one worker and then with two workers
   (fresh consumer groups each time). The router of a 1-partition input topic runs on one worker;
   the detector work (keyed by job id) spreads over both.
6. py-spy (raw stacks, non-blocking) samples the worker during a ceiling-like run.

Usage: worker.py --out DIR [--quick] [--profile] [--skip-scaleout] [--skip-latency]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import orjson  # noqa: E402

sys.path.insert(0, os.path.join(common.ROOT, "tests", "worker"))
from harness import WorkerProc, http, produce, worker_env  # noqa: E402

from aiokafka.partitioner import murmur2  # noqa: E402

WORK_PARTITIONS = 4


def bootstrap() -> str:
    port = os.environ.get("STREAMAD_KAFKA_PORT", "9092")
    return os.environ.get("STREAMAD_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")


# ---------------------------------------------------------------------- bare consumer
def bare_consume(topic: str, n: int) -> dict:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def go():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False, group_id=None,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            started = time.perf_counter()
            seen = 0
            while seen < n:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        orjson.loads(m.value)
                    seen += len(msgs)
            return seen, time.perf_counter() - started
        finally:
            await consumer.stop()

    seen, elapsed = asyncio.run(go())
    return {"events": seen, "seconds": round(elapsed, 3), "events_per_s": round(seen / elapsed, 1)}


# ---------------------------------------------------------------------- worker helpers
def start_workers(run: str, topics: list[str], out: str, count: int, **extra) -> list[WorkerProc]:
    env = worker_env(bootstrap(), run, STREAMAD_INPUT_TOPICS=",".join(topics),
                     STREAMAD_PARTITIONS=str(WORK_PARTITIONS), **extra)
    procs = []
    for k in range(count):
        w = WorkerProc(env, os.path.join(out, f"data-{run}-{k}"), _path(out, f"worker-{run}-{k}.log"))
        procs.append(w.start(timeout=180))
    if count > 1:  # every worker ready and no rebalance in flight, twice in a row
        settled = 0
        deadline = time.monotonic() + 120
        while settled < 2 and time.monotonic() < deadline:
            ok = all(_ready(w) for w in procs)
            settled = settled + 1 if ok else 0
            time.sleep(1.0)
    return procs


def _path(out: str, name: str):
    from pathlib import Path

    return Path(out) / name


def _ready(w: WorkerProc) -> bool:
    try:
        return http("GET", w.url + "/healthz/ready", timeout=5)[0] == 200
    except OSError:
        return False


def stop_workers(procs: list[WorkerProc]) -> None:
    for w in procs:
        w.stop()


def put_open(url: str, bodies: dict[str, dict]) -> None:
    for name, body in bodies.items():
        status, resp = http("PUT", f"{url}/_ml/anomaly_detectors/{name}", body)
        if status != 200:
            raise RuntimeError(f"PUT job {name}: {status} {resp}")
        status, resp = http("POST", f"{url}/_ml/anomaly_detectors/{name}/_open")
        if status != 200:
            raise RuntimeError(f"open {name}: {status} {resp}")


def start_feeds(url: str, names) -> None:
    for name in names:
        status, resp = http("POST", f"{url}/_ml/datafeeds/datafeed-{name}/_start")
        if status != 200 or not resp.get("started"):
            raise RuntimeError(f"start datafeed-{name}: {status} {resp}")


def input_counts(url: str, names) -> dict[str, int]:
    out = {}
    for name in names:
        status, body = http("GET", f"{url}/_ml/anomaly_detectors/{name}/_stats")
        out[name] = body["jobs"][0]["data_counts"].get("input_record_count", 0) if status == 200 else -1
    return out


def wait_counts(url: str, names, n: int, timeout: float, poll: float = 0.2) -> float:
    deadline = time.monotonic() + timeout
    last = {}
    while time.monotonic() < deadline:
        last = input_counts(url, names)
        if all(v >= n for v in last.values()):
            return time.perf_counter()
        time.sleep(poll)
    raise TimeoutError(f"jobs did not read {n} events in {timeout}s: {last}")


def close_jobs(url: str, names) -> None:
    for name in names:
        http("POST", f"{url}/_ml/anomaly_detectors/{name}/_close", timeout=120)


def scrape(url: str) -> dict[str, float]:
    """Selected /metrics samples: events consumed per job, bucket finalization sum/count."""
    status, body = http("GET", url + "/metrics")
    out: dict[str, float] = {}
    if status != 200:
        return out
    text = body.decode() if isinstance(body, bytes) else str(body)
    for line in text.splitlines():
        if line.startswith(("streamad_events_consumed_total", "streamad_bucket_finalization_seconds_sum",
                            "streamad_bucket_finalization_seconds_count", "streamad_snapshot_bytes")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def run_jobs(url: str, bodies: dict[str, dict], n: int, timeout: float) -> dict:
    put_open(url, bodies)
    started = time.perf_counter()
    start_feeds(url, bodies)
    done = wait_counts(url, list(bodies), n, timeout)
    elapsed = done - started
    return {"events": n, "jobs": len(bodies), "seconds": round(elapsed, 3),
            "events_per_s": round(n / elapsed, 1), "job_events_per_s": round(n * len(bodies) / elapsed, 1)}


def job_ids_on_distinct_partitions(prefix: str, count: int, partitions: int = WORK_PARTITIONS) -> list[str]:
    """Job ids whose work messages (key = job id, murmur2 like Kafka's default) land on distinct partitions."""
    ids, used, k = [], set(), 0
    while len(ids) < count:
        jid = f"{prefix}{k}"
        p = (murmur2(jid.encode()) & 0x7FFFFFFF) % partitions
        if p not in used or len(used) == partitions:
            ids.append(jid)
            used.add(p)
        k += 1
    return ids


# ---------------------------------------------------------------------- py-spy
def pyspy_start(pid: int, path: str) -> subprocess.Popen | None:
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(exe):
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--output", path,
                             "--rate", "100", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pyspy_stop(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------- latency
def latency(url: str, run: str, topic: str, job_id: str, series: int, buckets: int) -> dict:
    """Delay from a bucket's watermark event being produced to its bucket result on the results topic."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    results_topic = f"streamad-results-{run}"
    span = 3600

    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), acks="all", linger_ms=5)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False, group_id=None,
                                    auto_offset_reset="latest", fetch_max_wait_ms=20)
        await producer.start()
        await consumer.start()
        arrived: dict[int, float] = {}
        try:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            tps = [TopicPartition(results_topic, p) for p in sorted(consumer.partitions_for_topic(results_topic) or [])]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)

            async def follow():
                while True:
                    batch = await consumer.getmany(timeout_ms=100)
                    now = time.perf_counter()
                    for msgs in batch.values():
                        for m in msgs:
                            doc = orjson.loads(m.value)
                            if (doc.get("job_id") == job_id and doc.get("result_type") == "bucket"
                                    and not doc.get("is_interim")):
                                arrived.setdefault(doc["timestamp"] // 1000, now)

            follower = asyncio.ensure_future(follow())
            produced = 0
            delays, catchup = [], []
            for b in range(buckets + 1):
                lines = common.highcard_bucket(series, b, span)
                if b > 0:  # the watermark alone: it closes bucket b-1
                    closes = common.T0 + (b - 1) * span
                    sent = time.perf_counter()
                    await (await producer.send(topic, lines[0], partition=0))
                    produced += 1
                    deadline = sent + 120
                    while closes not in arrived and time.perf_counter() < deadline:
                        await asyncio.sleep(0.002)
                    if closes not in arrived:
                        raise TimeoutError(f"no bucket result for {closes} within 120 s")
                    delays.append(arrived[closes] - sent)
                    lines = lines[1:]
                futures = [await producer.send(topic, v, partition=0) for v in lines]
                await asyncio.gather(*futures)
                produced += len(lines)
                t1 = time.perf_counter()
                while True:  # let the worker catch up, so the next watermark meets an idle worker
                    counts = await asyncio.to_thread(input_counts, url, [job_id])
                    if counts[job_id] >= produced:
                        break
                    await asyncio.sleep(0.1)
                catchup.append(time.perf_counter() - t1)
            follower.cancel()
            return delays, catchup, produced
        finally:
            await consumer.stop()
            await producer.stop()

    delays, catchup, produced = asyncio.run(go())
    s = sorted(delays)

    def pct(q: float) -> float:
        return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]

    return {"series": series, "buckets_measured": len(delays), "events": produced,
            "p50_ms": round(pct(0.5) * 1000, 1), "p99_ms": round(pct(0.99) * 1000, 1),
            "max_ms": round(s[-1] * 1000, 1), "min_ms": round(s[0] * 1000, 1),
            "delays_ms": [round(d * 1000, 1) for d in delays],
            "catchup_s": [round(c, 2) for c in catchup]}


# ---------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--skip-scaleout", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--latency-series", type=int, default=10_000)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    quick = args.quick
    result: dict = {"mode": "quick" if quick else "full", "bootstrap": bootstrap()}
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-in-{tag}"
    lat_topic = f"bench-lat-{tag}"
    days, rate = (7, 150.0) if quick else (28, 150.0)
    events = common.weblog_events(days, rate)
    n = len(events)
    common.log(f"worker: producing {n} web-log events to {topic} (1 partition)")
    t = time.perf_counter()
    produce(bootstrap(), topic, events, partitions=1)
    result["produce_events_per_s"] = round(n / (time.perf_counter() - t), 1)
    produce(bootstrap(), lat_topic, [], partitions=1)  # create it before the worker subscribes
    del events

    common.log("worker: bare aiokafka consumer (read + orjson.loads)")
    bare = bare_consume(topic, n)
    result["bare"] = bare

    # ---- 3. one worker, the three sample jobs
    run1 = f"b1{tag}"
    common.log("worker: starting one worker")
    t = time.perf_counter()
    (w,) = start_workers(run1, [topic, lat_topic], args.out, 1)
    result["worker_start_s"] = round(time.perf_counter() - t, 2)
    spy = None
    try:
        common.log(f"worker: ceiling run, 3 sample jobs over {n} events")
        ceiling = run_jobs(w.url, common.sample_job_bodies(topic), n, timeout=900)
        ceiling["ratio"] = round(ceiling["events_per_s"] / bare["events_per_s"], 4)
        result["ceiling"] = ceiling
        close_jobs(w.url, common.SAMPLE_JOBS)
        if args.profile:
            common.log("worker: py-spy profile of the same run (new job ids)")
            bodies = {}
            for name, body in common.sample_job_bodies(topic).items():
                body = dict(body, job_id=f"p-{name}")
                body["datafeed_config"] = dict(body["datafeed_config"], job_id=f"p-{name}",
                                               datafeed_id=f"datafeed-p-{name}")
                bodies[f"p-{name}"] = body
            raw = os.path.join(args.out, "profile-worker.raw")
            spy = pyspy_start(w.proc.pid, raw)
            time.sleep(0.5)
            prof = run_jobs(w.url, bodies, n, timeout=900)
            pyspy_stop(spy)
            spy = None
            from profiles import pyspy_top

            result["profile_run"] = prof
            if os.path.exists(raw):
                result["profile_worker"] = pyspy_top(raw)
            close_jobs(w.url, bodies)
        if not args.skip_latency:
            series = args.latency_series
            buckets = 3 if quick else 12
            common.log(f"worker: watermark-to-result delay, {series} series x {buckets} buckets")
            put_open(w.url, {"lat": common.highcard_body("lat", lat_topic)})
            start_feeds(w.url, ["lat"])
            result["latency"] = latency(w.url, run1, lat_topic, "lat", series, buckets)
            result["latency"]["snapshot_bytes"] = scrape(w.url).get('streamad_snapshot_bytes{job_id="lat"}')
            close_jobs(w.url, ["lat"])
    finally:
        pyspy_stop(spy)
        stop_workers([w])

    # ---- 4. scale-out: four identical jobs, one worker then two
    if not args.skip_scaleout:
        ids = job_ids_on_distinct_partitions("bench-rcr-", 4)
        base = common.sample_job_bodies(topic)["response_code_rates"]
        bodies = {}
        for jid in ids:
            body = dict(base, job_id=jid)
            body["datafeed_config"] = dict(base["datafeed_config"], job_id=jid, datafeed_id=f"datafeed-{jid}")
            bodies[jid] = body
        scale: dict = {"jobs": ids, "work_partitions": {j: (murmur2(j.encode()) & 0x7FFFFFFF) % WORK_PARTITIONS
                                                        for j in ids}}
        for count in (1, 2):
            run = f"b{count + 1}{tag}"
            common.log(f"worker: scale-out, {count} worker(s), 4 jobs over {n} events")
            procs = start_workers(run, [topic], args.out, count)
            try:
                r = run_jobs(procs[0].url, bodies, n, timeout=900)
                r["per_worker_events_consumed"] = [
                    sum(v for k, v in scrape(pw.url).items() if k.startswith("streamad_events_consumed_total"))
                    for pw in procs]
                scale[f"workers_{count}"] = r
            finally:
                stop_workers(procs)
        scale["speedup"] = round(scale["workers_2"]["events_per_s"] / scale["workers_1"]["events_per_s"], 3)
        result["scaleout"] = scale
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
