"""The results index: every result document of the output topics, last one per `_id` wins.

Each worker follows the results and annotations topics from the beginning so that the REST result
APIs answer from any worker, as Elasticsearch answers from its results index. It holds documents
in memory: fine for the retention a stream worker needs to serve; large deployments index the
topic into Elasticsearch and query there.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer

from streamad.runtime.settings import Settings


class ResultsIndex:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.docs: dict[str, dict[str, dict]] = {}  # job_id -> _id -> doc
        self.deleted_forecasts: set[tuple[str, str]] = set()  # (job_id, forecast_id): never indexed again
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                          auto_offset_reset="earliest", **s.client_kwargs())
        await self._consumer.start()
        tps = []
        for topic in (s.results_topic, s.annotations_topic):
            parts = self._consumer.partitions_for_topic(topic) or set()
            if not parts:
                await self._consumer._client.force_metadata_update()  # noqa: SLF001
                parts = self._consumer.partitions_for_topic(topic) or set()
            from aiokafka import TopicPartition

            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.ensure_future(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for _tp, messages in batches.items():
                for m in messages:
                    self.add(orjson.loads(m.value))

    def add(self, doc: dict) -> None:
        """Index a document (the last one per `_id` wins); a deleted forecast's stay out, and an
        expired forecast goes when its request stats (its last document) arrive."""
        job_id = doc.get("job_id", "")
        forecast_id = doc.get("forecast_id")
        if forecast_id is not None and (job_id, forecast_id) in self.deleted_forecasts:
            return
        self.docs.setdefault(job_id, {})[doc.get("_id", "")] = doc
        expiry = doc.get("forecast_expiry_timestamp")
        if expiry is not None and doc.get("result_type") == "model_forecast_request_stats" \
                and expiry <= time.time() * 1000:
            self.delete_forecasts(job_id, [forecast_id])

    def drop(self, job_id: str) -> None:
        self.docs.pop(job_id, None)

    def prune(self, job_id: str, retention_days: int) -> int:
        """Forget a job's results older than `retention_days` before its latest result (Elastic's
        results_retention_days; its nightly maintenance deletes them). Returns how many went."""
        docs = self.docs.get(job_id)
        if not docs:
            return 0
        # age from the latest bucket: forecasts are dated ahead, and expire on their own terms
        latest = max((d["timestamp"] for d in docs.values() if d.get("result_type") == "bucket"), default=None)
        if latest is None:
            return 0
        cutoff = latest - retention_days * 86_400_000
        old = [k for k, d in docs.items() if isinstance(d.get("timestamp"), int) and d["timestamp"] < cutoff
               and d.get("result_type") in _RETAINED]
        for k in old:
            del docs[k]
        return len(old)

    def forecasts(self, job_id: str) -> dict[str, dict]:
        """A job's forecasts by id: their request stats documents."""
        return {d["forecast_id"]: d for d in self.of_type(job_id, "model_forecast_request_stats")}

    def delete_forecasts(self, job_id: str, forecast_ids) -> int:
        """Forget these forecasts' documents (`model_forecast` and request stats), and keep them out
        when the results topic is read again (DELETE _forecast; expiry). Returns how many went."""
        ids = set(forecast_ids)
        self.deleted_forecasts.update((job_id, f) for f in ids)
        docs = self.docs.get(job_id, {})
        gone = [k for k, d in docs.items() if d.get("forecast_id") in ids]
        for k in gone:
            del docs[k]
        return len(gone)

    def expire_forecasts(self, job_id: str, now_ms: int) -> list[str]:
        """Delete the forecasts whose `forecast_expiry_timestamp` has passed (Elastic's daily
        maintenance deletes them); every worker computes the same from the wall clock."""
        ids = sorted(f for f, d in self.forecasts(job_id).items()
                     if d.get("forecast_expiry_timestamp") is not None and d["forecast_expiry_timestamp"] <= now_ms)
        if ids:
            self.delete_forecasts(job_id, ids)
        return ids

    def of_type(self, job_id: str, result_type: str) -> list[dict]:
        return [d for d in self.docs.get(job_id, {}).values() if d.get("result_type") == result_type]

    def get(self, job_id: str, doc_id: str) -> dict | None:
        return self.docs.get(job_id, {}).get(doc_id)


# what results_retention_days removes (annotations, data_counts and model_size_stats stay)
_RETAINED = frozenset({"bucket", "record", "influencer", "bucket_influencer", "model_plot"})


def query(docs: list[dict], params: dict, score_field: str, default_sort: str) -> tuple[int, list[dict]]:
    """Elastic's result query parameters: score threshold, start/end, exclude_interim, sort, desc, page."""
    threshold = float(params.get(score_field, 0.0) or 0.0)
    start = _time_ms(params.get("start"))
    end = _time_ms(params.get("end"))
    exclude_interim = _bool(params.get("exclude_interim", False))
    out = [d for d in docs if d.get(score_field, 0.0) >= threshold
           and (start is None or d["timestamp"] >= start) and (end is None or d["timestamp"] < end)
           and not (exclude_interim and d.get("is_interim"))]
    sort = params.get("sort") or default_sort
    desc = _bool(params.get("desc", False))
    out.sort(key=lambda d: (d.get(sort, 0), d["timestamp"], d.get("_id", "")), reverse=desc)
    page = params.get("page") or {}
    frm = int(page.get("from", params.get("from", 0)))
    size = int(page.get("size", params.get("size", 100)))
    return len(out), [{k: v for k, v in d.items() if k != "_id"} for d in out[frm:frm + size]]


def _bool(v) -> bool:
    """A boolean request parameter as Elasticsearch reads it: a bare `?flag` (empty value) is true."""
    return v is True or (isinstance(v, str) and v.lower() in ("true", ""))


def _time_ms(v) -> int | None:
    if v is None or v == "" or v == -1 or v == "-1":
        return None
    if isinstance(v, int | float):
        return int(v if v >= 1e10 else v * 1000)
    text = str(v)
    if text.lstrip("-").isdigit():
        n = int(text)
        return n if len(text) >= 10 and n >= 1e10 else n * 1000 if len(text) < 10 else n
    from streamad.ingest.timeparse import parse_iso8601

    t = parse_iso8601(text)
    if t is None:
        raise ValueError(f"cannot parse time {v!r}")
    return int(round(t * 1000))
