"""A detector's scored series of one bucket: `Leaf` (one series) and `LeafBatch` (all of them, as arrays).

Bucket close scores every series of a detector, but only the few anomalous ones become records;
so the detector hands the scorer columns (probability, actual, typical, bounds) over all its series
and `Leaf` objects are built only for the leaves that are written out (records, model plot).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Leaf:
    """One scored series in one bucket: what the job scorer aggregates and writes as a record."""

    detector_index: int
    function: str
    function_description: str
    field_name: str | None
    partition: tuple[str, str] | None
    by: tuple[str, str] | None
    over: tuple[str, str] | None
    probability: float
    actual: list[float]
    typical: list[float]
    lower: float = math.nan
    upper: float = math.nan
    multi_bucket_impact: float | None = None
    # the probability before an open anomaly episode discounted this bucket as a repeat of it: what
    # the score quantiles learn (None: the same as probability)
    model_probability: float | None = None
    influences: dict[tuple[str, str], float] = field(default_factory=dict)
    skip_result: bool = False
    skip_quantiles: bool = False
    causes: list[dict] | None = None
    plot: bool = True


def scope_of(key: tuple) -> str:
    """The leaf normalizer's scope of a series key (partition, by, over): partition and person values.

    Members of a population (an over value) share one scope, "": Elastic keys the maximum score of a
    normalizer for members of a population analysis on nothing (`CMaximumScoreScope::key`), so a
    member's score is capped against the population's largest, not its own (else every member's
    own most unusual bucket would get the full max-score ceiling)."""
    part, by, over = key
    if over is not None:
        return ""
    return f"{part if part is not None else ''}\x00{by if by is not None else ''}"


class LeafBatch:
    """The leaves of one detector in one bucket, in series-key order, as columns.

    Leaf i is series `ids[i]`: `keys[ids[i]]` is its key (partition, by, over) and `scopes[ids[i]]` its
    normalizer scope (the detector's series table lists). `actual` and `typical` hold one array per
    value dimension (two for lat_long); `influences` is filled only for the anomalous leaves.
    """

    __slots__ = ("det", "keys", "ids", "probability", "actual", "typical", "lower", "upper", "mbi",
                 "descriptions", "skip", "skipped", "influences", "scopes", "plot", "model_probability",
                 "_leaves")

    def __init__(self, det, keys: list, ids: np.ndarray, probability: np.ndarray, actual: list, typical: list,
                 lower: np.ndarray, upper: np.ndarray, mbi: np.ndarray | None, descriptions,
                 skip: np.ndarray, influences: dict[int, dict], scopes: list[str], plot: bool = True,
                 skipped: bool | None = None, model_probability: np.ndarray | None = None):
        self.det = det
        self.keys = keys
        self.ids = ids
        self.probability = probability
        self.actual = actual
        self.typical = typical
        self.lower = lower
        self.upper = upper
        self.mbi = mbi
        self.descriptions = descriptions  # a str for all leaves, or a list of str
        self.skip = skip
        self.skipped = bool(skip.any()) if skipped is None else skipped  # any leaf skipped
        self.influences = influences
        self.scopes = scopes
        self.plot = plot
        # before an anomaly episode's discount (`Leaf.model_probability`); None: the same as probability
        self.model_probability = model_probability
        self._leaves: list[Leaf] | None = None

    @classmethod
    def of_leaves(cls, det, leaves: list[Leaf]) -> LeafBatch:
        """A batch over already built leaves (rare functions): `leaf(i)` returns them as they are."""
        n = len(leaves)
        keys = [_key_of_leaf(lf) for lf in leaves]
        batch = cls(det, keys, np.arange(n, dtype=np.int64),
                    np.asarray([lf.probability for lf in leaves], dtype=np.float64), [], [],
                    np.full(n, math.nan), np.full(n, math.nan), None, "",
                    np.asarray([lf.skip_result for lf in leaves], dtype=bool),
                    {i: lf.influences for i, lf in enumerate(leaves) if lf.influences},
                    [scope_of(k) for k in keys], plot=False)
        if any(lf.model_probability is not None for lf in leaves):
            batch.model_probability = np.asarray(
                [lf.probability if lf.model_probability is None else lf.model_probability for lf in leaves],
                dtype=np.float64)
        batch._leaves = leaves
        return batch

    def __len__(self) -> int:
        return self.probability.shape[0]

    def skip_all(self) -> None:
        """Every leaf's result is skipped (a scheduled event with skip_result)."""
        self.skip[:] = True
        self.skipped = True
        if self._leaves is not None:
            for lf in self._leaves:
                lf.skip_result = True

    def leaf(self, i: int) -> Leaf:
        if self._leaves is not None:
            return self._leaves[i]
        d = self.det
        part, by, over = self.keys[self.ids[i]]
        desc = self.descriptions if isinstance(self.descriptions, str) else self.descriptions[i]
        return Leaf(
            detector_index=d.detector_index, function=d.function, function_description=desc,
            field_name=d.field_name,
            partition=(d.partition_field_name, part) if d.partition_field_name else None,
            by=(d.by_field_name, by) if d.by_field_name else None,
            over=(d.over_field_name, over) if d.over_field_name else None,
            probability=float(self.probability[i]), actual=[float(a[i]) for a in self.actual],
            typical=[float(a[i]) for a in self.typical], lower=float(self.lower[i]), upper=float(self.upper[i]),
            multi_bucket_impact=None if self.mbi is None else float(self.mbi[i]),
            model_probability=None if self.model_probability is None else float(self.model_probability[i]),
            influences=self.influences.get(i, {}), skip_result=bool(self.skip[i]),
        )

    def normalizer_key(self) -> tuple:
        """(partition field, person field, function, field) of these leaves: their leaf normalizer."""
        if self._leaves is not None:
            lf = self._leaves[0]
            person = lf.over or lf.by
            return (lf.partition[0] if lf.partition else "", person[0] if person else "", lf.function,
                    lf.field_name or "")
        d = self.det
        return (d.partition_field_name or "", d.over_field_name or d.by_field_name or "", d.function,
                d.field_name or "")

    def leaves(self) -> list[Leaf]:
        return [self.leaf(i) for i in range(len(self))]


def _key_of_leaf(lf: Leaf) -> tuple:
    return tuple(p[1] if p else None for p in (lf.partition, lf.by, lf.over))
