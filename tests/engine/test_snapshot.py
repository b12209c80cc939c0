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


def test_a_snapshot_of_version_5_models_restores_and_continues(events):
    """An engine snapshot taken before the anomaly-characteristics model (model layout version 5,
    496 columns a series) restores: its banks gain the new columns, empty."""
    import pickle

    import numpy as np

    from streamad.kernels import layout as L

    with open(os.path.join(module_dir(), f"{JOBS[0]}.json"), "rb") as f:
        job = Job.from_dict(orjson.loads(f.read()))
    out: list[dict] = []
    engine = JobEngine(job, out.append)
    half = len(events) // 2
    for raw, doc, err in events[:half]:
        engine.feed(raw, doc, err)
    old = pickle.loads(engine.snapshot())
    banks = [b for det in old.detectors for b in det.banks]
    assert banks
    for b in banks:  # as version 5 kept them
        b.S = np.ascontiguousarray(b.S[:, : L.V5_NCOLS])
    engine = JobEngine.restore(pickle.dumps(old, protocol=5), out.append)
    for det in engine.detectors:
        for b in det.banks:
            assert b.S.shape[1] == L.NCOLS and np.isnan(b.S[: b._size, L.AM_START]).all()
    for raw, doc, err in events[half:]:
        engine.feed(raw, doc, err)
    engine.finish()
    assert any(d.get("result_type") == "bucket" for d in out)


def test_restore_rejects_foreign_bytes():
    import pickle

    with pytest.raises(ValueError):
        JobEngine.restore(pickle.dumps({"not": "an engine"}), lambda d: None)
