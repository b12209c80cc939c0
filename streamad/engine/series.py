"""`SeriesTable`: one detector's series as arrays: id per key, key order, last bucket seen, model rows.

Bucket close then works on index arrays over all series of a detector rather than per-series
dicts: the bucket's keys become ids with one dict lookup each, the leaves are put in key order by
an argsort of a kept rank (no per-bucket sort of Python tuples), and the model rows of each feature
are an array lookup. The keys' order is the natural tuple order: a configured field's value is
always a string and an unconfigured one always None, so it is the order `sorted` gives the keys.
Snapshots keep the keys and the arrays (zlib-packed); ids, rank and scopes are rebuilt on restore.
"""

from __future__ import annotations

import bisect
import zlib

import numpy as np

NEVER = np.iinfo(np.int64).min  # `seen` of a series that never had a value


def _grow(a: np.ndarray, n: int, fill) -> np.ndarray:
    out = np.full(n, fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


class SeriesTable:
    """Series ids (0, 1, ... in order of first appearance) of one detector."""

    def __init__(self, nfeat: int, population: bool):
        self.population = population
        self.keys: list[tuple] = []
        self.seen = np.empty(0, dtype=np.int64)  # bucket start of the last bucket with a value, NEVER if none
        self.rows = [np.empty(0, dtype=np.int64) for _ in range(nfeat)]  # bank row per feature, -1 if none
        # population analysis models (partition, by) shared by every over value: model key -> row
        self.model_rows: list[dict] | None = [{} for _ in range(nfeat)] if population else None
        self._index()

    def _index(self) -> None:
        self.ids: dict[tuple, int] = {k: i for i, k in enumerate(self.keys)}
        self.scopes: list[str] = _scopes(self.keys)
        self._sorted_keys = sorted(self.keys)
        self._sorted_ids = [self.ids[k] for k in self._sorted_keys]
        self.rank = np.empty(len(self.keys), dtype=np.int64)
        self.rank[np.asarray(self._sorted_ids, dtype=np.int64)] = np.arange(len(self.keys), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def ids_of(self, keys: list) -> np.ndarray:
        """The ids of `keys` (distinct keys), registering the new ones."""
        get = self.ids.get
        out = [get(k, -1) for k in keys]
        if -1 in out:
            new = [k for k, sid in zip(keys, out) if sid < 0]
            base = len(self.keys)
            self.ids.update(zip(new, range(base, base + len(new))))
            self.keys.extend(new)
            self.scopes.extend(_scopes(new))
            self._added(new)
            out = [get(k) for k in keys]
        return np.asarray(out, dtype=np.int64)

    def _added(self, new: list) -> None:
        n = len(self.keys)
        self.seen = _grow(self.seen, n, NEVER)
        self.rows = [_grow(r, n, -1) for r in self.rows]
        if len(new) * 8 > n:
            self._sorted_keys = sorted(self.keys)
            self._sorted_ids = [self.ids[k] for k in self._sorted_keys]
        else:
            for k in sorted(new):
                i = bisect.bisect_left(self._sorted_keys, k)
                self._sorted_keys.insert(i, k)
                self._sorted_ids.insert(i, self.ids[k])
        self.rank = np.empty(n, dtype=np.int64)
        self.rank[np.asarray(self._sorted_ids, dtype=np.int64)] = np.arange(n, dtype=np.int64)

    def known(self) -> np.ndarray:
        """Ids of the series that have had a value (Elastic's known series)."""
        return np.flatnonzero(self.seen != NEVER)

    def known_keys(self) -> list[tuple]:
        keys = self.keys
        return [keys[i] for i in self.known().tolist()]

    def rows_of(self, f: int, sids: np.ndarray, bank) -> np.ndarray:
        """Bank rows of feature f for `sids` (in that order), adding models for new series in order."""
        rows = self.rows[f]
        r = rows[sids]
        if r.min() < 0:
            new = sids[r < 0]
            if self.model_rows is None:
                rows[new] = bank.add(new.shape[0])
            else:
                table = self.model_rows[f]
                fresh = []
                for sid in new.tolist():
                    k = self.keys[sid]
                    mk = (k[0], k[1])
                    if mk not in table:
                        table[mk] = -1
                        fresh.append(mk)
                if fresh:
                    for mk, row in zip(fresh, bank.add(len(fresh)).tolist()):
                        table[mk] = row
                for sid in new.tolist():
                    k = self.keys[sid]
                    rows[sid] = table[(k[0], k[1])]
            r = rows[sids]
        return r

    def model_key_of_rows(self, f: int) -> dict[int, tuple]:
        """Bank row -> model key (the series key; (partition, by) in population analysis)."""
        if self.model_rows is not None:
            return {r: k for k, r in self.model_rows[f].items()}
        rows = self.rows[f]
        have = np.flatnonzero(rows >= 0)
        keys = self.keys
        return dict(zip(rows[have].tolist(), (keys[i] for i in have.tolist())))

    # ------------------------------------------------------------------ state
    def __getstate__(self) -> dict:
        return {"keys": self.keys, "seen": _pack(self.seen), "rows": [_pack(r) for r in self.rows],
                "model_rows": self.model_rows, "population": self.population}

    def __setstate__(self, state: dict) -> None:
        self.population = state["population"]
        self.keys = state["keys"]
        self.seen = _unpack(state["seen"])
        self.rows = [_unpack(r) for r in state["rows"]]
        self.model_rows = state["model_rows"]
        self._index()

    @classmethod
    def of_dicts(cls, nfeat: int, population: bool, known: dict, rows: list[dict]) -> SeriesTable:
        """The table of a detector state kept as dicts (snapshots before the table)."""
        table = cls(nfeat, population)
        keys = list(known)
        if not population:
            keys += [k for f in range(nfeat) for k in rows[f] if k not in known]
        sids = table.ids_of(list(dict.fromkeys(keys)))
        table.seen[sids[: len(known)]] = np.asarray(list(known.values()), dtype=np.int64)
        if population:
            table.model_rows = [dict(r) for r in rows]
            for sid, k in enumerate(table.keys):
                for f in range(nfeat):
                    table.rows[f][sid] = rows[f].get((k[0], k[1]), -1)
        else:
            for f in range(nfeat):
                for k, r in rows[f].items():
                    table.rows[f][table.ids[k]] = r
        return table


def _scopes(keys: list) -> list[str]:
    """`scope_of` of each key (inline: this runs once per new series)."""
    return ["" if over is not None else f"{'' if part is None else part}\x00{'' if by is None else by}"
            for part, by, over in keys]


def _pack(a: np.ndarray) -> tuple:
    return (str(a.dtype), a.shape[0], zlib.compress(np.ascontiguousarray(a).tobytes(), 1))


def _unpack(packed: tuple) -> np.ndarray:
    dtype, n, blob = packed
    return np.frombuffer(zlib.decompress(blob), dtype=dtype, count=n).copy()
