"""Bucket close over arrays: the series table, leaf batches, and the vectorised scoring steps.

Each vectorised step is checked against the per-value code it replaces (bit for bit), and snapshots
of the older dict-based detector state still restore and continue byte-identically.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import orjson
import pytest

from streamad.config.job import Job
from streamad.engine.detector import DetectorState
from streamad.engine.job import JobEngine
from streamad.engine.leaves import scope_of
from streamad.engine.series import NEVER, SeriesTable, _scopes
from streamad.models import ModelParams, SeriesBank
from streamad.scoring.aggregate import DETECTORS, PEOPLE, _z, aggregate
from streamad.scoring.deviates import two_sided_deviates
from streamad.scoring.normalizer import Normalizer

T0 = 1_700_438_400


def _probabilities(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(3000), 10.0 ** -rng.uniform(0, 320, 3000), [1.0, 0.0, 1e-310, 5e-324],
                           1.0 - 10.0 ** -rng.uniform(1, 16, 500)])


def test_deviates_match_the_scalar_reference():
    ps = _probabilities()
    z = two_sided_deviates(ps, _z)
    ref = np.asarray([_z(p) for p in ps.tolist()])
    assert np.array_equal(z, ref)


@pytest.mark.parametrize("style", [PEOPLE, DETECTORS])
def test_aggregate_of_an_array_matches_the_list(style):
    ps = _probabilities(5)
    for sample in (ps, ps[:2], ps[:1], np.asarray([math.nan, 0.3, math.nan, 1e-9]), np.asarray([0.5, 0.7] * 400),
                   np.asarray([math.nan]), np.concatenate([[math.nan] * 40, ps[:1]]),
                   np.concatenate([ps[:100], [math.nan] * 5]), np.ones(50), np.full(40, math.nan)):
        assert aggregate(sample, style) == aggregate(sample.tolist(), style)


def test_touch_is_update_of_zero_scores():
    a, b = Normalizer(3600), Normalizer(3600)
    for n in (a, b):
        n.update(12.0, "x\x00y")
        n.end_bucket()
    scopes = ["x\x00y", "new\x00", "x\x00y2"]
    for s in scopes:
        a.update(0.0, s)
    b.touch(scopes)
    assert a.to_state() == b.to_state() and a.pending == b.pending


def test_table_ids_order_and_rows():
    table = SeriesTable(1, population=False)
    bank = SeriesBank(ModelParams(bucket_span=3600))
    keys = [("b", None, None), ("a", None, None), ("c", None, None)]
    sids = table.ids_of(keys)
    assert sids.tolist() == [0, 1, 2]
    assert [table.keys[i] for i in np.argsort(table.rank[sids])] == sorted(keys)
    # rows are given in the order asked (key order at close), as SeriesBank.add gives them
    order = sids[np.argsort(table.rank[sids])]
    assert table.rows_of(0, order, bank).tolist() == [0, 1, 2]
    assert table.rows[0][sids].tolist() == [1, 0, 2]
    more = table.ids_of([("aa", None, None), ("a", None, None)])
    assert more.tolist() == [3, 1]
    assert [table.keys[i] for i in np.argsort(table.rank)] == sorted(table.keys)
    assert table.scopes == [scope_of(k) for k in table.keys] == _scopes(table.keys)
    table.seen[[0, 3]] = T0
    assert table.known_keys() == [("b", None, None), ("aa", None, None)]
    back = pickle.loads(pickle.dumps(table))
    assert back.keys == table.keys and back.ids == table.ids and back.scopes == table.scopes
    assert np.array_equal(back.seen, table.seen) and np.array_equal(back.rank, table.rank)
    assert all(np.array_equal(x, y) for x, y in zip(back.rows, table.rows))
    assert back.seen[1] == NEVER


def test_population_series_share_their_model_row():
    table = SeriesTable(1, population=True)
    bank = SeriesBank(ModelParams(bucket_span=3600))
    sids = table.ids_of([("p", "b", "o1"), ("p", "b", "o2"), ("p", "c", "o1")])
    assert table.rows_of(0, sids, bank).tolist() == [0, 0, 1]
    assert table.model_key_of_rows(0) == {0: ("p", "b"), 1: ("p", "c")}


def _job() -> Job:
    return Job.from_dict({"job_id": "t", "analysis_config": {"bucket_span": "1h", "detectors": [
        {"function": "mean", "field_name": "v", "partition_field_name": "host"},
        {"function": "sum", "field_name": "v", "over_field_name": "host"},
        {"function": "count", "by_field_name": "host"}], "influencers": ["host"]},
        "model_plot_config": {"enabled": True}, "data_description": {"time_field": "t", "time_format": "epoch"}})


def _events() -> list:
    out = []
    rng = np.random.default_rng(11)
    for b in range(60):
        for h in range(12):
            if (h + b) % 7 == 0:
                continue
            v = 10.0 + h + rng.normal() + (40.0 if (b == 50 and h == 3) else 0.0)
            doc = {"t": T0 + b * 3600 + h, "host": f"h{h:02d}", "v": round(float(v), 3)}
            out.append((orjson.dumps(doc), doc, None))
    return out


def _v1_state(self) -> dict:
    """A detector's state as snapshots before the series table stored it (dicts, untrimmed banks)."""
    state = self.__dict__.copy()
    table = state.pop("table")
    state["known"] = {table.keys[i]: int(table.seen[i]) for i in table.known().tolist()}
    state["rows"] = []
    for f in range(len(self.banks)):
        if table.model_rows is not None:
            state["rows"].append(dict(table.model_rows[f]))
        else:
            have = np.flatnonzero(table.rows[f] >= 0).tolist()
            state["rows"].append({table.keys[i]: int(table.rows[f][i]) for i in have})
    return state


def test_dict_state_snapshots_restore_and_continue(monkeypatch):
    job, events = _job(), _events()
    whole: list[bytes] = []
    engine = JobEngine(job, lambda d: whole.append(orjson.dumps(d)))
    for raw, doc, err in events:
        engine.feed(raw, doc, err)
    engine.finish()

    pieces: list[bytes] = []
    emit = lambda d: pieces.append(orjson.dumps(d))  # noqa: E731
    engine = JobEngine(job, emit)
    cut = len(events) // 2
    for raw, doc, err in events[:cut]:
        engine.feed(raw, doc, err)
    with monkeypatch.context() as m:
        m.setattr(DetectorState, "__getstate__", _v1_state)
        blob = engine.snapshot()
    engine = JobEngine.restore(blob, emit)
    for raw, doc, err in events[cut:]:
        engine.feed(raw, doc, err)
    engine.finish()
    assert pieces == whole


def test_snapshot_keeps_only_the_bank_rows_in_use():
    engine = JobEngine(_job(), lambda d: None)
    for raw, doc, err in _events():
        engine.feed(raw, doc, err)
    engine.finish()
    blob = engine.snapshot()
    restored = JobEngine.restore(blob, lambda d: None)
    for det, back in zip(engine.detectors, restored.detectors):
        for bank, b2 in zip(det.banks, back.banks):
            assert b2.S.shape[0] == len(bank) and bank.S[: len(bank)].tobytes() == b2.S.tobytes()
    assert engine.detectors[0].banks[0].S.shape[0] >= len(engine.detectors[0].banks[0])


def test_packed_array_round_trips_every_bit_pattern():
    from streamad.engine.packed import PackedArray

    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 7))
    a[rng.random(a.shape) < 0.3] = 0.0
    a[rng.random(a.shape) < 0.3] = math.nan
    bits = a.view(np.uint64)
    bits[0, 0] = 0x8000000000000000  # -0.0
    bits[0, 1] = 0xFFF8000000000000  # a negative quiet NaN
    bits[0, 2] = 0x7FF0000000000001  # a signalling NaN payload
    bits[0, 3] = 0x7FF0000000000000  # inf
    for arr in (a, a[:0], a[:1]):
        back = pickle.loads(pickle.dumps(PackedArray(arr), protocol=5))
        assert isinstance(back, np.ndarray) and back.shape == arr.shape and back.tobytes() == arr.tobytes()
        back[...] = 1.0  # writable, as a bank's state must be
    assert len(pickle.dumps(PackedArray(a))) < a.nbytes


def test_pack_kernels_match_the_numpy_reference():
    from streamad.engine.packed import pack, pack_reference, unpack, unpack_reference

    rng = np.random.default_rng(4)
    for n in (0, 1, 7, 8, 9, 1000):
        a = rng.normal(size=n)
        a[rng.random(n) < 0.4] = 0.0
        a[rng.random(n) < 0.3] = math.nan
        if n:
            a.view(np.uint64)[0] = 0x8000000000000000
        bits = a.view(np.uint64)
        got, ref = pack(bits), pack_reference(bits)
        assert all(np.array_equal(x, y) for x, y in zip(got, ref))
        assert unpack((n,), *got).tobytes() == unpack_reference((n,), *ref).tobytes() == a.tobytes()
