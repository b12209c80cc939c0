"""Two-sided normal deviates of many probabilities at once (the joint probability's z values).

`aggregate` turns every leaf probability of a detector into z with p = 2 Phi(-z); one numba loop
over the array replaces a Python call per leaf. Bit-identical to `aggregate._z`, the plain-Python
reference it is tested against.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from streamad.kernels.special import norm_ppf
from streamad.scoring.rawscore import DBL_MIN

_DEEP_TAIL = 1e-300  # below this `_z` uses its asymptotic inverse (done per value, in Python)


@njit(cache=True)
def _body_deviates(p, out) -> None:
    for k in range(p.shape[0]):
        out[k] = -norm_ppf(p[k] / 2.0)


def two_sided_deviates(ps: np.ndarray, scalar) -> np.ndarray:
    """z of each probability (no NaN); `scalar` is the per-value function, used in the deep tail."""
    p = np.minimum(np.maximum(np.asarray(ps, dtype=np.float64), DBL_MIN), 1.0)
    z = np.zeros(p.shape[0])
    body = (p < 1.0) & (p > _DEEP_TAIL)
    if body.all():
        _body_deviates(p, z)
    elif body.any():
        out = np.empty(int(body.sum()))
        _body_deviates(np.ascontiguousarray(p[body]), out)
        z[body] = out
    for k in np.flatnonzero(p <= _DEEP_TAIL).tolist():
        z[k] = scalar(float(p[k]))
    return z
