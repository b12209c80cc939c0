"""The embedded runner behind `streamad run`: one input, every job, documents as NDJSON bytes.

Each record is decoded once and fed to every job in job order; each job keeps its own datafeed
query, aggregations, buckets and models. Output is the concatenation of each document's orjson
bytes in emission order (job by job per record), so the same input gives the same bytes.

STREAMAD_SHARDS=N (or `streamad run --shards N`) runs each job's modelling in N shards
(`JobEngine(shards=N)`); STREAMAD_SHARD_WIRE=1 sends every shard request and reply through bytes.
The output is the same whatever N: both are there to check that.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import orjson

from streamad.config.job import Job
from streamad.engine.job import JobEngine


def dumps(doc: dict) -> bytes:
    return orjson.dumps(doc)


class Runner:
    def __init__(self, jobs: list[Job], write: Callable[[bytes], None], dead_letter=None, **engine_kw):
        self.write = write
        if "shards" not in engine_kw and os.environ.get("STREAMAD_SHARDS"):
            engine_kw["shards"] = int(os.environ["STREAMAD_SHARDS"])
        if "wire" not in engine_kw and os.environ.get("STREAMAD_SHARD_WIRE"):
            engine_kw["wire"] = os.environ["STREAMAD_SHARD_WIRE"] == "1"
        self.engines = [JobEngine(job, self._emit, dead_letter, **engine_kw) for job in jobs]

    def _emit(self, doc: dict) -> None:
        self.write(dumps(doc) + b"\n")

    def run(self, records: Iterable[tuple[bytes, dict | None, str | None]], progress=None) -> None:
        engines = self.engines
        for n, (raw, doc, error) in enumerate(records):
            for engine in engines:
                engine.feed(raw, doc, error)
            if progress is not None and n % 10000 == 0:
                progress(n)
        for engine in engines:
            engine.finish()
