"""The job and shard processors talking through simulated logs, without Kafka: exact whatever the
interleaving, and across crashes that restart either side from its last snapshot."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from streamad.commands.demo import module_dir
from streamad.config.job import Job
from streamad.demo import weblogs
from streamad.engine.runner import Runner
from streamad.ingest.reader import decode_json
from streamad.runtime import envelope
from streamad.runtime.processor import JobProcessor
from streamad.runtime.shards import ShardProcessor

MULTI = {  # two partitioned detectors, by and over fields, a rule with a time condition
    "job_id": "multi", "analysis_config": {
        "bucket_span": "1h", "influencers": ["clientip", "response.keyword"],
        "detectors": [
            {"function": "count", "partition_field_name": "response.keyword", "by_field_name": "extension.keyword"},
            {"function": "high_distinct_count", "field_name": "url.keyword", "over_field_name": "clientip",
             "partition_field_name": "response.keyword"},
            {"function": "mean", "field_name": "bytes",
             "custom_rules": [{"actions": ["skip_result"],
                               "conditions": [{"applies_to": "actual", "operator": "lt", "value": 10}]}]}]},
    "data_description": {"time_field": "timestamp", "time_format": "epoch_ms"},
    "model_plot_config": {"enabled": True, "annotations_enabled": True},
}


def _job(name: str) -> dict:
    if name == "multi":
        return MULTI
    return orjson.loads(Path(module_dir(), f"{name}.json").read_bytes())


def _events(days: int) -> list[bytes]:
    return [orjson.dumps(doc) for _, doc in weblogs.generate(days=days)]


def _embedded(job: dict, raws: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    runner = Runner([Job.from_dict(job)], out.append)
    runner.run(decode_json(raw) for raw in raws)
    return [line.rstrip(b"\n") for line in out]


class Cluster:
    """One job's work log and its shards' logs; the processors read them as agents would, in an
    order a random generator picks, with snapshots, and crashes that restart from them."""

    def __init__(self, job_id: str, shards: int, seed: int):
        self.job_id, self.n, self.rng = job_id, shards, random.Random(seed)
        self.work: list[bytes] = []
        self.shard_logs: list[list[bytes]] = [[] for _ in range(shards)]
        self.jp, self.sp = JobProcessor(shards=shards), ShardProcessor()
        self.job_at, self.job_committed = 0, 0
        self.shard_at = [0] * shards
        self.shard_committed = [0] * shards
        self.job_table: dict[str, bytes] = {}
        self.shard_table: dict[str, bytes] = {}
        self.results: list[bytes] = []
        self.dead: list[dict] = []

    def _deliver(self, outputs) -> None:
        for o in outputs or []:
            if o.topic == "shards":
                self.shard_logs[o.partition].append(o.value)
            elif o.topic == "work":
                self.work.append(o.value)
            elif o.topic == "dead_letter":
                self.dead.append(orjson.loads(o.value))
            else:
                self.results.append(o.value)

    def step(self, crashes: bool) -> bool:
        choices = []
        if self.job_at < len(self.work):
            choices += ["job"] * 4
        choices += [p for p in range(self.n) if self.shard_at[p] < len(self.shard_logs[p])]
        if not choices:
            return False
        pick = self.rng.choice(choices)
        if pick == "job":
            self._deliver(self.jp.apply(self.job_id, self.job_at, self.work[self.job_at]))
            self.job_at += 1
        else:
            p = pick
            key = self._key_of(self.shard_logs[p][self.shard_at[p]])
            if key not in self.sp.slots:
                self.sp.load(key, self.shard_table.get)
            self._deliver(self.sp.apply(key, self.shard_at[p], self.shard_logs[p][self.shard_at[p]]))
            self.shard_at[p] += 1
        roll = self.rng.random()
        if roll < 0.05 and self.job_id in self.jp.slots:
            self.job_table.update(self.jp.snapshot_chunks(self.job_id))
            self.job_committed = self.job_at
        elif roll < 0.10:
            for key in list(self.sp.slots):
                self.shard_table.update(self.sp.snapshot_chunks(key))
            self.shard_committed = list(self.shard_at)
        elif crashes and roll < 0.115:  # the job side dies: back to its snapshot and committed offset
            self.jp = JobProcessor(shards=self.n)
            self.jp.load(self.job_id, self.job_table.get)
            self.job_at = self.job_committed
        elif crashes and roll < 0.13:  # the shard side dies
            self.sp = ShardProcessor()
            self.shard_at = list(self.shard_committed)
        return True

    @staticmethod
    def _key_of(value: bytes) -> str:
        head, _ = envelope.decode_shard_request(value)
        return f"{head['j']}\x00{head['s']}"

    def run(self, crashes: bool) -> None:
        while self.step(crashes):
            pass


def _stats_doc(line: bytes) -> bool:
    """data_counts and model_size_stats: the worker's, not `streamad run`'s."""
    doc_id = orjson.loads(line)["_id"]
    return doc_id.endswith("_data_counts") or doc_id.endswith("_model_size_stats")


def _last_wins(lines: list[bytes]) -> dict[str, bytes]:
    return {orjson.loads(line)["_id"]: line for line in lines if not _stats_doc(line)}


@pytest.mark.parametrize(("name", "shards", "days"), [("response_code_rates", 3, 3), ("multi", 5, 2),
                                                      ("url_scanning", 2, 2)])
def test_sharded_worker_path_equals_streamad_run(name, shards, days):
    job = _job(name)
    raws = _events(days)
    expected = _embedded(job, raws)
    cluster = Cluster(job["job_id"], shards, seed=1)
    cluster.work = [envelope.control("open", job=job)] + [envelope.data(r) for r in raws] + [envelope.control("close")]
    cluster.run(crashes=False)
    got = [line for line in cluster.results if not _stats_doc(line)]
    assert got == expected  # the same documents in the same order, byte for byte
    partitioned = any(d.get("partition_field_name") for d in job["analysis_config"]["detectors"])
    used = sum(1 for log in cluster.shard_logs if log)
    assert used >= 2 if partitioned else used == 1
    counts = [orjson.loads(x) for x in cluster.results if b'_data_counts"' in x][-1]
    assert counts["processed_record_count"] == len(raws)


def _work_log(job: dict, raws: list[bytes]) -> list[bytes]:
    """open, the events with interim flushes among them and an update halfway, close."""
    log = [envelope.control("open", job=job)]
    for i, raw in enumerate(raws):
        log.append(envelope.data(raw))
        if i % 700 == 699:
            log.append(envelope.control("flush", calc_interim=True))
        if i == len(raws) // 2:
            log.append(envelope.control("update", job={**job, "description": "updated halfway"}))
    return log + [envelope.control("close")]


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_sharded_worker_path_is_exact_across_crashes_of_either_side(seed):
    job = _job("multi")
    raws = _events(2)
    log = _work_log(job, raws)
    in_process = JobProcessor()  # the engine with its shards in process, as `streamad run`
    expected_lines: list[bytes] = []
    for offset, value in enumerate(log):
        expected_lines += [o.value for o in in_process.apply("multi", offset, value)
                           if o.topic in ("results", "annotations")]
    expected = _last_wins(expected_lines)
    assert any(b'"is_interim":true' in line for line in expected_lines)
    cluster = Cluster("multi", 4, seed=seed)
    cluster.work = list(log)
    cluster.run(crashes=True)
    assert _last_wins(cluster.results) == expected
    assert not cluster.dead
    counts = [orjson.loads(x) for x in cluster.results if b'_data_counts"' in x][-1]
    assert counts["processed_record_count"] == len(raws) and counts["input_record_count"] == len(raws)
    assert counts == orjson.loads(in_process.stats_outputs("multi")[0].value)


def test_a_control_waits_for_pending_replies_and_the_events_behind_it_too():
    job = _job("response_code_rates")
    raws = _events(2)
    proc = JobProcessor(shards=2)
    proc.apply("response_code_rates", 0, envelope.control("open", job=job))
    at = 1
    requests = []
    for raw in raws[:1000]:
        requests += [o for o in proc.apply("response_code_rates", at, envelope.data(raw)) if o.topic == "shards"]
        at += 1
    slot = proc.slots["response_code_rates"]
    assert requests and slot.engine.pending  # buckets closed, nothing answered
    updated = {**job, "description": "changed"}
    proc.apply("response_code_rates", at, envelope.control("update", job=updated))
    proc.apply("response_code_rates", at + 1, envelope.data(raws[1000]))
    assert len(slot.backlog) == 2 and slot.engine.job.description != "changed"
    shards = ShardProcessor()
    offsets: dict[int, int] = {}  # shards-topic partition -> next offset
    at += 2
    for o in requests:
        offset = offsets.get(o.partition, 0)
        offsets[o.partition] = offset + 1
        for reply in shards.apply(Cluster._key_of(o.value), offset, o.value) or []:
            proc.apply("response_code_rates", at, reply.value)
            at += 1
    assert not slot.engine.pending and not slot.backlog and slot.engine.job.description == "changed"
