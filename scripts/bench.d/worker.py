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
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import orjson  # noqa: E402

sys.path.insert(0, os.path.join(common.ROOT, "tests", "worker"))
from aiokafka.partitioner import murmur2  # noqa: E402
from harness import WorkerProc, http, produce, worker_env  # noqa: E402

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
    extra = {"STREAMAD_PARTITIONS": str(WORK_PARTITIONS), **extra}
    env = worker_env(bootstrap(), run, STREAMAD_INPUT_TOPICS=",".join(topics), **extra)
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


def start_feeds(url: str, names, end_ms: int | None) -> None:
    """Start each datafeed as a lookback over [beginning, end_ms), as tests/worker/test_worker.py does:
    the events are on the topic already, and once read the datafeed stops and closes its job (as
    Elastic's does). end_ms None: a real-time datafeed (give it a `frequency` longer than the run, or
    its flushes with advance_time = now - query_delay close every bucket of these 2023 times)."""
    for name in names:
        query = "" if end_ms is None else f"?end={end_ms}"
        status, resp = http("POST", f"{url}/_ml/datafeeds/datafeed-{name}/_start{query}")
        if status != 200 or not resp.get("started"):
            raise RuntimeError(f"start datafeed-{name}: {status} {resp}")


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (0 when unknown)."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def broker_pid() -> int | None:
    port = os.environ.get("STREAMAD_KAFKA_PORT", "9092")
    try:
        with open(os.path.join(common.ROOT, ".kafka", f"run-{port}", "kafka.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def consumed(urls: list[str], names) -> dict[str, int]:
    """Events each job has applied, from the workers' live /metrics (summed over workers)."""
    out = {name: 0 for name in names}
    for url in urls:
        for key, value in scrape(url).items():
            if key.startswith("streamad_events_consumed_total{"):
                job = key.split('job_id="', 1)[1].split('"', 1)[0]
                if job in out:
                    out[job] += int(value)
    return out


def input_counts(url: str, names, n: int | None = None) -> dict[str, int]:
    """input_record_count per job from `_stats`. A job its datafeed's `end` closed has read everything
    (the worker closes it only then): it counts as n, because an aggregated datafeed's job counts
    its summary documents, not the events (Elastic)."""
    out = {}
    for name in names:
        status, body = http("GET", f"{url}/_ml/anomaly_detectors/{name}/_stats")
        if status != 200:
            out[name] = -1
            continue
        job = body["jobs"][0]
        count = job["data_counts"].get("input_record_count", 0)
        out[name] = n if n is not None and job.get("state") == "closed" and count > 0 else count
    return out


STALL_S = 60.0  # 30 s in quick mode: a healthy worker never goes that long without applying an event


class Stalled(RuntimeError):
    """No job applied a single event for STALL_S seconds (a hung worker)."""


def wait_counts(urls: list[str], names, n: int, timeout: float, poll: float = 0.25,
                timeline: list | None = None, stats: bool = True) -> tuple[float, float | None]:
    """(when every job had applied n events per the live /metrics, when `_stats` said so too).

    `timeline` gets (perf_counter, fewest events applied by any job) at every poll."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    t_metrics = None
    progress, moved = -1, time.monotonic()
    while time.monotonic() < deadline:
        if t_metrics is None:
            last = consumed(urls, names)
            if timeline is not None:
                timeline.append((time.perf_counter(), min(last.values())))
            total = sum(last.values())
            if total != progress:
                progress, moved = total, time.monotonic()
            elif time.monotonic() - moved > STALL_S:
                raise Stalled(f"no event applied for {STALL_S:.0f}s; applied so far {last} of {n} each")
            if all(v >= n for v in last.values()):
                t_metrics = time.perf_counter()
                if not stats:
                    return t_metrics, None
        if t_metrics is not None:
            last = input_counts(urls[0], names, n)
            if all(v >= n for v in last.values()):
                return t_metrics, time.perf_counter()
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


STATS = True  # also wait for `_stats` data_counts (published at snapshots); off in quick mode


def run_jobs(procs: list[WorkerProc], bodies: dict[str, dict], n: int, end_ms: int, timeout: float) -> dict:
    """PUT + _open every job, then time from the first datafeed _start until every job applied n events."""
    urls = [w.url for w in procs]
    put_open(urls[0], bodies)
    pids = [w.proc.pid for w in procs] + [broker_pid()]
    cpu0 = [cpu_seconds(p) for p in pids]
    started = time.perf_counter()
    start_feeds(urls[0], bodies, end_ms)
    timeline: list = []
    t_metrics, t_stats = wait_counts(urls, list(bodies), n, timeout, timeline=timeline, stats=STATS)
    cpu1 = [cpu_seconds(p) for p in pids]
    first = next((t for t, v in timeline if v > 0), t_metrics)
    t20 = next((t, v) for t, v in timeline + [(t_metrics, n)] if v >= 0.2 * n)
    t80 = next((t, v) for t, v in timeline + [(t_metrics, n)] if v >= 0.8 * n)
    steady = (t80[1] - t20[1]) / (t80[0] - t20[0]) if t80[0] > t20[0] else None
    elapsed = t_metrics - started
    t_end = t_stats if t_stats is not None else t_metrics
    worker_cpu = [round(b - a, 2) for a, b in zip(cpu0[:-1], cpu1[:-1])]
    return {"events": n, "jobs": len(bodies), "seconds": round(elapsed, 3),
            "events_per_s": round(n / elapsed, 1), "job_events_per_s": round(n * len(bodies) / elapsed, 1),
            "stats_seconds": round(t_stats - started, 3) if t_stats else None,
            "events_per_s_by_stats": round(n / (t_stats - started), 1) if t_stats else None,
            "worker_cpu_s": worker_cpu, "broker_cpu_s": round(cpu1[-1] - cpu0[-1], 2),
            "worker_cpu_utilization": [round(c / (t_end - started), 3) for c in worker_cpu],
            "events_per_worker_cpu_s": round(n / max(sum(worker_cpu), 1e-9), 1),
            "first_event_applied_s": round(first - started, 2),
            "steady_events_per_s": round(steady, 1) if steady else None}


# ---------------------------------------------------------------------- py-spy
def pyspy_start(pid: int, path: str) -> subprocess.Popen | None:
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(exe):
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--output", path,
                             "--rate", "100", "--nonblocking", "--function"],
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
        follower = None
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
                    if arrived[closes] < sent:
                        raise RuntimeError(f"bucket {closes} was closed before its watermark was produced")
                    delays.append(arrived[closes] - sent)
                    lines = lines[1:]
                futures = [await producer.send(topic, v, partition=0) for v in lines]
                await asyncio.gather(*futures)
                produced += len(lines)
                t1 = time.perf_counter()
                seen, moved = -1, time.perf_counter()
                while True:  # let the worker catch up, so the next watermark meets an idle worker
                    counts = await asyncio.to_thread(consumed, [url], [job_id])
                    if counts[job_id] >= produced:
                        break
                    if counts[job_id] != seen:
                        seen, moved = counts[job_id], time.perf_counter()
                    elif time.perf_counter() - moved > STALL_S:
                        raise Stalled(f"latency job applied {seen} of {produced} events, then nothing for {STALL_S:.0f}s")
                    await asyncio.sleep(0.1)
                catchup.append(time.perf_counter() - t1)
            return delays, catchup, produced
        finally:
            if follower is not None:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
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
def renamed(body: dict, job_id: str) -> dict:
    out = dict(body, job_id=job_id)
    out["datafeed_config"] = dict(body["datafeed_config"], job_id=job_id, datafeed_id=f"datafeed-{job_id}")
    return out


def scaleout_ids(count: int, partitions: int) -> list[str]:
    """`count` job ids spread evenly over the work partitions (murmur2 of the key, as Kafka's default)."""
    per = -(-count // partitions)
    used: dict[int, int] = {}
    ids, k = [], 0
    while len(ids) < count:
        jid = f"bench-rcr-{k}"
        p = (murmur2(jid.encode()) & 0x7FFFFFFF) % partitions
        if used.get(p, 0) < per:
            ids.append(jid)
            used[p] = used.get(p, 0) + 1
        k += 1
    return ids


def diagnose(procs: list[WorkerProc], out: str, name: str) -> list[str]:
    """Before a hung worker is stopped: its py-spy dump and asyncio task stacks, saved under `out`."""
    paths = []
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    for k, w in enumerate(procs):
        base = os.path.join(out, f"stall-{name}-{k}")
        try:
            if os.path.exists(exe) and w.proc is not None:
                dump = subprocess.run([exe, "dump", "--pid", str(w.proc.pid)], capture_output=True, text=True,
                                      timeout=30)
                with open(base + ".pyspy.txt", "w") as f:
                    f.write(dump.stdout + dump.stderr)
            status, body = http("GET", w.url + "/debug/tasks", timeout=10)
            with open(base + ".tasks.txt", "wb") as f:
                f.write(body if isinstance(body, bytes) else str(body).encode())
            paths.append(base)
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            common.log(f"worker: diagnostics of {name} failed: {exc}")
    return paths


def attempt(name: str, fn, result: dict, tries: int = 2):
    """Run a phase; a hung worker (Stalled) is recorded and the phase is run again with fresh workers."""
    for k in range(tries):
        try:
            return fn(k)
        except (Stalled, AssertionError) as exc:  # AssertionError: harness "worker not ready"
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, AssertionError):
                reason += " (the worker process exited during start-up)"
            common.log(f"worker: {name} failed (try {k + 1}/{tries}): {reason}")
            result.setdefault("stalls", []).append({"phase": name, "try": k + 1, "reason": reason})
    raise Stalled(f"{name}: failed {tries} times")


def delete_topics(tag: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    async def go():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if tag in t]
            if names:
                await admin.delete_topics(names)
            return len(names)
        finally:
            await admin.close()

    try:
        return asyncio.run(go())
    except Exception as exc:  # noqa: BLE001 - clean-up only
        common.log(f"worker: topic clean-up failed: {exc}")
        return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--skip-scaleout", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--keep-topics", action="store_true")
    p.add_argument("--latency-series", type=int, default=10_000)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    quick = args.quick
    global STATS, STALL_S
    STATS = not quick
    STALL_S = 30.0 if quick else 60.0
    result: dict = {"mode": "quick" if quick else "full", "bootstrap": bootstrap()}
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-in-{tag}"
    lat_topic = f"bench-lat-{tag}"
    days, rate = (2, 150.0) if quick else (7, 150.0)
    events = common.weblog_events(days, rate)
    n = len(events)
    end_ms = (common.T0 + days * 86400) * 1000  # the end of the generated data's last hour
    common.log(f"worker: producing {n} web-log events to {topic} (1 partition)")
    t = time.perf_counter()
    produce(bootstrap(), topic, events, partitions=1)
    result["produce_events_per_s"] = round(n / (time.perf_counter() - t), 1)
    produce(bootstrap(), lat_topic, [], partitions=1)  # create it before the worker subscribes
    del events
    try:
        common.log("worker: bare aiokafka consumer (read + orjson.loads)")
        result["bare"] = bare_consume(topic, n)
        raw = os.path.join(args.out, "profile-worker.raw")

        # ---- 3. one worker, the three sample jobs
        def ceiling(k: int) -> dict:
            t = time.perf_counter()
            (w,) = start_workers(f"c{k}{tag}", [topic], args.out, 1)
            result["worker_start_s"] = round(time.perf_counter() - t, 2)
            spy = None
            try:
                # quick: py-spy samples the ceiling run itself (non-blocking sampling, a few % of a
                # core); full: the ceiling run is clean and a second run of the same jobs is profiled
                if args.profile and quick:
                    spy = pyspy_start(w.proc.pid, raw)
                common.log(f"worker: ceiling run, 3 sample jobs over {n} events" + (" (py-spy on)" if spy else ""))
                try:
                    c = run_jobs([w], common.sample_job_bodies(topic), n, end_ms, timeout=900)
                except Stalled:
                    diagnose([w], args.out, f"ceiling{k}")
                    raise
                pyspy_stop(spy)
                c["profiled"] = spy is not None
                spy = None
                if args.profile and not quick:
                    close_jobs(w.url, common.SAMPLE_JOBS)
                    common.log("worker: py-spy profile of the same run (new job ids)")
                    bodies = {f"p-{name}": renamed(body, f"p-{name}")
                              for name, body in common.sample_job_bodies(topic).items()}
                    spy = pyspy_start(w.proc.pid, raw)
                    time.sleep(0.5)
                    c["profile_run"] = run_jobs([w], bodies, n, end_ms, timeout=900)
                    pyspy_stop(spy)
                    spy = None
                return c
            finally:
                pyspy_stop(spy)
                stop_workers([w])

        c = attempt("ceiling", ceiling, result)
        c["ratio"] = round(c["events_per_s"] / result["bare"]["events_per_s"], 5)
        result["ceiling"] = c
        if args.profile and os.path.exists(raw):
            from profiles import pyspy_top

            result["profile_worker"] = pyspy_top(raw)

        if not args.skip_latency:
            series = args.latency_series
            buckets = 2 if quick else 10

            def lat_phase(k: int) -> dict:
                topic_k = lat_topic if k == 0 else f"{lat_topic}-{k}"  # a re-run must not see the last one's events
                if k > 0:
                    produce(bootstrap(), topic_k, [], partitions=1)
                (w,) = start_workers(f"l{k}{tag}", [topic_k], args.out, 1)
                try:
                    common.log(f"worker: watermark-to-result delay, {series} series x {buckets} buckets")
                    job = f"lat{k}"
                    # events are produced while the job runs: a real-time datafeed whose wall-clock
                    # flushes never come (buckets close on event time only)
                    body = common.highcard_body(job, topic_k)
                    body["datafeed_config"]["frequency"] = "36500d"
                    put_open(w.url, {job: body})
                    start_feeds(w.url, [job], None)
                    try:
                        lat = latency(w.url, f"l{k}{tag}", topic_k, job, series, buckets)
                    except Stalled:
                        diagnose([w], args.out, f"latency{k}")
                        raise
                    lat["snapshot_bytes"] = scrape(w.url).get(f'streamad_snapshot_bytes{{job_id="{job}"}}')
                    return lat
                finally:
                    stop_workers([w])

            result["latency"] = attempt("latency", lat_phase, result)

        # ---- 4. scale-out: identical jobs, one worker then two (2 work partitions: one per worker)
        if not args.skip_scaleout:
            jobs = 2 if quick else 4
            partitions = 2
            ids = scaleout_ids(jobs, partitions)
            base = common.sample_job_bodies(topic)["response_code_rates"]
            bodies = {jid: renamed(base, jid) for jid in ids}
            scale: dict = {"jobs": ids, "job_template": "response_code_rates", "work_partitions_count": partitions,
                           "work_partition_of_job": {j: (murmur2(j.encode()) & 0x7FFFFFFF) % partitions
                                                     for j in ids}}
            for count in (1, 2):
                def scale_phase(k: int, count: int = count) -> dict:
                    common.log(f"worker: scale-out, {count} worker(s), {jobs} jobs over {n} events")
                    procs = start_workers(f"s{count}{k}{tag}", [topic], args.out, count,
                                          STREAMAD_PARTITIONS=str(partitions))
                    try:
                        try:
                            r = run_jobs(procs, bodies, n, end_ms, timeout=900)
                        except Stalled:
                            diagnose(procs, args.out, f"scaleout{count}-{k}")
                            raise
                        r["per_worker_events_consumed"] = [sum(consumed([pw.url], ids).values()) for pw in procs]
                        return r
                    finally:
                        stop_workers(procs)

                scale[f"workers_{count}"] = attempt(f"scale-out {count}", scale_phase, result)
            scale["speedup"] = round(scale["workers_2"]["events_per_s"] / scale["workers_1"]["events_per_s"], 3)
            result["scaleout"] = scale
    except Exception as exc:  # noqa: BLE001 - keep what was measured, say what failed
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if not args.keep_topics:
            result["topics_deleted"] = delete_topics(tag)
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
