"""Score normalization (ELASTIC_MODEL §4.3): raw scores -> 0..100 against the history of scores seen.

A `Normalizer` keeps a compact quantile digest of past raw scores (discretized to 1/1000), the
maximum score per scope (partition/person), and maps a new score to min(noise ceiling, percentile
ceiling, max ceiling, probability ceiling). The digest is fed the largest score of each sampling
interval of `count_per_sample` buckets, and ages; max scores age each bucket and a scope unseen for
50 buckets is forgotten. Deterministic, and `to_state`/`from_state` round-trip exactly.
"""

from __future__ import annotations

import bisect
import math

from streamad.scoring.rawscore import MAX_ANOMALOUS_PROBABILITY

KNOTS = ((0.0, 0.0), (70.0, 1.0), (85.0, 1.2), (90.0, 1.5), (95.0, 3.0), (97.0, 20.0), (99.0, 50.0),
         (99.9, 90.0), (100.0, 100.0))
_LN_005 = math.log(0.05)
_LN_1E4 = math.log(1e-4)
MAX_CENTROIDS = 256
QUANTILE_DECAY_INTERVALS = 20
SCOPE_FORGET_BUCKETS = 50


def knot_score(percentile: float) -> float:
    """Piecewise-linear map from a percentile (0..100) to a normalized score ceiling."""
    if percentile <= 0.0:
        return 0.0
    for (x0, y0), (x1, y1) in zip(KNOTS, KNOTS[1:]):
        if percentile <= x1:
            return y0 + (y1 - y0) * (percentile - x0) / (x1 - x0)
    return 100.0


def count_per_sample(bucket_span: int) -> int:
    return max(1, int(3600 // min(max(2 * bucket_span, 300), 3600)))


class Digest:
    """Weighted sorted centroids over integer keys (score x 1000); merges the lightest neighbours.

    Prefix sums of the weights are kept between changes (`_prefix`, left-to-right sums exactly as
    `sum(weights[:i])` adds them), so a normalization pass over a window of results costs a few
    bisections per score instead of sums over every centroid. They are not part of the state."""

    __slots__ = ("keys", "weights", "total", "_prefix")

    def __init__(self):
        self.keys: list[int] = []
        self.weights: list[float] = []
        self.total = 0.0
        self._prefix: list[float] | None = None

    def __getstate__(self):
        # what the default pickling of the three data slots gives: snapshots stay as they were
        return None, {"keys": self.keys, "weights": self.weights, "total": self.total}

    def __setstate__(self, state) -> None:
        slots = state[1] if isinstance(state, tuple) else state
        self.keys, self.weights, self.total = slots["keys"], slots["weights"], slots["total"]
        self._prefix = None

    def add(self, key: int, weight: float = 1.0) -> None:
        self._prefix = None
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            self.weights[i] += weight
        else:
            self.keys.insert(i, key)
            self.weights.insert(i, weight)
            if len(self.keys) > MAX_CENTROIDS:
                self._compress()
        self.total += weight

    def _compress(self) -> None:
        # merge the adjacent pair with the smallest combined weight, keeping the larger key
        # (never merge into key 0, which counts the zero scores exactly)
        best, best_w = -1, math.inf
        for j in range(1, len(self.keys) - 1):
            w = self.weights[j] + self.weights[j + 1]
            if w < best_w:
                best, best_w = j, w
        if best < 0:
            return
        self.weights[best + 1] += self.weights[best]
        del self.keys[best]
        del self.weights[best]

    def age(self, factor: float) -> None:
        self._prefix = None
        self.weights = [w * factor for w in self.weights]
        self.total *= factor

    def _sums(self) -> list[float]:
        """prefix[i] = sum(weights[:i]), added left to right as `sum` does."""
        prefix = self._prefix
        if prefix is None:
            prefix = [0]  # `sum` starts from the int 0, so an empty slice sums to 0 as it does there
            acc = 0
            for w in self.weights:
                acc = acc + w
                prefix.append(acc)
            self._prefix = prefix
        return prefix

    def fraction_below(self, key: int) -> float:
        if self.total <= 0.0:
            return 0.0
        return self._sums()[bisect.bisect_left(self.keys, key)] / self.total

    def fraction_at_or_below(self, key: int) -> float:
        if self.total <= 0.0:
            return 0.0
        return self._sums()[bisect.bisect_right(self.keys, key)] / self.total

    def quantile(self, q: float) -> int:
        if not self.keys:
            return 0
        target = q * self.total
        # the first centroid whose running weight reaches the target (weights are not negative)
        j = bisect.bisect_left(self._sums(), target, 1) - 1
        return self.keys[j] if j < len(self.keys) else self.keys[-1]

    def to_state(self) -> list:
        return [self.keys[:], [float(w) for w in self.weights], float(self.total)]

    @classmethod
    def from_state(cls, state) -> Digest:
        d = cls()
        d.keys, d.weights, d.total = list(state[0]), list(state[1]), float(state[2])
        return d


class Normalizer:
    """One normalizer set member (root, partition, person, leaf, influencer...)."""

    def __init__(self, bucket_span: int, decay: float = 0.0005):
        self.bucket_span = bucket_span
        # the job's decay rate is per standard (30 min) bucket, derated for shorter buckets (§0);
        # the max scores age at it rescaled to a per-bucket rate for longer ones, the digest at it
        # once every QUANTILE_DECAY_INTERVALS sampling intervals (§4.3)
        self.digest_decay = decay * min(bucket_span / 1800.0, 1.0)
        self.decay = self.digest_decay * max(bucket_span / 1800.0, 1.0)
        self.count_per_sample = count_per_sample(bucket_span)
        self.digest = Digest()
        self.max_scores: dict[str, list] = {}  # scope -> [max score, buckets since last seen]
        self.interval_max = 0.0
        self.interval_buckets = 0
        self.intervals = 0
        self.pending = False

    def update(self, score: float, scope: str = "") -> bool:
        """Record a final score; returns True on a 'big change' (new max > 1.1 x old max in its scope)."""
        score = float(score) if score == score else 0.0
        self.pending = True
        self.interval_max = max(self.interval_max, score)
        entry = self.max_scores.get(scope)
        if entry is None:
            self.max_scores[scope] = [score, 0]
            return score > 0.0
        entry[1] = 0
        if score > entry[0]:
            big = score > 1.1 * entry[0]
            entry[0] = score
            return big
        return False

    def touch(self, scopes) -> None:
        """`update(0.0, scope)` for every scope, in bulk: a bucket's unremarkable leaves (raw score 0)."""
        if not scopes:
            return
        self.pending = True
        self.interval_max = max(self.interval_max, 0.0)
        table = self.max_scores
        for scope in scopes:
            entry = table.get(scope)
            if entry is None:
                table[scope] = [0.0, 0]
            else:
                entry[1] = 0

    def end_bucket(self) -> None:
        """Close one bucket: feed the digest at interval ends, age max scores and the digest."""
        if self.pending:
            self.interval_buckets += 1
        self.pending = False
        if self.interval_buckets >= self.count_per_sample:
            self.digest.add(int(math.floor(1000.0 * self.interval_max + 0.5)))
            self.interval_max = 0.0
            self.interval_buckets = 0
            self.intervals += 1
            if self.intervals % QUANTILE_DECAY_INTERVALS == 0:
                self.digest.age(math.exp(-self.digest_decay))
        factor = math.exp(-2.0 * self.decay)
        forget = []
        for scope, entry in self.max_scores.items():
            entry[0] *= factor
            entry[1] += 1
            if entry[1] > SCOPE_FORGET_BUCKETS:
                forget.append(scope)
        for scope in forget:
            del self.max_scores[scope]

    def normalize(self, score: float, probability: float, scope: str = "") -> float:
        """The 0..100 score of a raw score against history (0 if nothing seen yet)."""
        if not (score > 0.0) or not (probability < MAX_ANOMALOUS_PROBABILITY):
            return 0.0
        key = int(math.floor(1000.0 * score + 0.5))
        digest = self.digest
        seen = digest.total > 0.0 or self.interval_max > 0.0
        if not seen:
            return 0.0
        # feed the open interval's max virtually so the first anomaly is judged against itself
        lo = digest.fraction_below(key)
        hi = digest.fraction_at_or_below(key)
        total = digest.total
        if self.interval_max > 0.0:
            ik = int(math.floor(1000.0 * self.interval_max + 0.5))
            lo = (lo * total + (1.0 if ik < key else 0.0)) / (total + 1.0)
            hi = (hi * total + (1.0 if ik <= key else 0.0)) / (total + 1.0)
        c1 = 0.5 * (knot_score(100.0 * lo) + knot_score(100.0 * hi))
        f0 = digest.fraction_at_or_below(0)
        q50 = digest.quantile(0.5)
        c0 = 1.0 * max(1.0 + 10.0 * (key - q50) / 1000.0, 0.0) + 100.0 * max(2.0 * min(2.0 * f0, 1.0) - 1.0, 0.0)
        entry = self.max_scores.get(scope)
        top = max(entry[0] if entry else 0.0, score)
        c2 = 100.0 * min(1.5 * score / top, 0.5 + 0.5 * score / top) if top > 0.0 else 100.0
        lp = math.log(max(probability, 1e-308))
        c3 = 100.0 * (0.05 + 0.95 * (lp - _LN_005) / (_LN_1E4 - _LN_005))
        out = min(c0, c1, c2, c3, 100.0)
        return max(out, 0.0)

    def to_state(self) -> list:
        return [self.digest.to_state(), {k: list(v) for k, v in sorted(self.max_scores.items())},
                self.interval_max, self.interval_buckets, self.intervals]

    @classmethod
    def from_state(cls, state, bucket_span: int, decay: float = 0.0005) -> Normalizer:
        n = cls(bucket_span, decay)
        n.digest = Digest.from_state(state[0])
        n.max_scores = {k: list(v) for k, v in state[1].items()}
        n.interval_max, n.interval_buckets, n.intervals = float(state[2]), int(state[3]), int(state[4])
        return n
