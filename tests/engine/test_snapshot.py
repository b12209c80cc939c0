"""Engine snapshots: restore anywhere and continue with byte-identical output (the worker's basis)."""

from __future__ import annotations

import os

import orjson
import pytest

from streamad.commands.demo import JOBS, module_dir
from streamad.config.job import Job
from streamad.demo import weblogs
from streamad.engine.job import JobEngine
from streamad.ingest.reader import read_records


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    path = tmp_path_factory.mktemp("snap") / "weblogs.ndjson"
    weblogs.write_ndjson(str(path), days=10)
    return list(read_records(str(path), None))


@pytest.mark.parametrize("name", JOBS)
def test_snapshot_restore_continues_byte_identically(events, name):
    with open(os.path.join(module_dir(), f"{name}.json"), "rb") as f:
        job = Job.from_dict(orjson.loads(f.read()))
    whole: list[bytes] = []
    engine = JobEngine(job, lambda d: whole.append(orjson.dumps(d)))
    for raw, doc, err in events:
        engine.feed(raw, doc, err)
    engine.finish()

    pieces: list[bytes] = []
    emit = lambda d: pieces.append(orjson.dumps(d))  # noqa: E731
    engine = JobEngine(job, emit)
    cuts = {len(events) // 3, len(events) // 2 + 17, len(events) - 5}
    for n, (raw, doc, err) in enumerate(events):
        if n in cuts:
            engine = JobEngine.restore(engine.snapshot(), emit)
        engine.feed(raw, doc, err)
    engine = JobEngine.restore(engine.snapshot(), emit)
    engine.finish()
    assert pieces == whole
    assert engine.counts.to_dict(job.job_id) == JobEngine.restore(engine.snapshot(), emit).counts.to_dict(job.job_id)


def test_restore_rejects_foreign_bytes():
    import pickle

    with pytest.raises(ValueError):
        JobEngine.restore(pickle.dumps({"not": "an engine"}), lambda d: None)
