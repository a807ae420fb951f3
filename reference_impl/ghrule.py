"""Gauss–Hermite rule as lme4's `GHrule(k)` (spec §4.3).

Nodes and weights for ∫ f(z) φ(z) dz: `z = √2 x`, `w = w_H / Σ w_H` from the physicists' rule.
lme4's stored table (from fastGHQuad) agrees with this to 7e-14 absolute (4e-15 relative) for
k ≤ 100; the table, not this rule, carries most of that error.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import ModelError

MAX_NAGQ = 100


@lru_cache(maxsize=None)
def ghrule(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(z, w, ldnorm)` for a k-point rule, ldnorm = log φ(z); 1 ≤ k ≤ 100 as lme4 (`ord < 101`)."""
    if not 1 <= k <= MAX_NAGQ:
        raise ModelError(f"nAGQ = {k} is out of range: lme4's Gauss-Hermite rules need 1 <= nAGQ <= {MAX_NAGQ}")
    x, w = np.polynomial.hermite.hermgauss(k)
    z = np.sqrt(2.0) * x
    w = w / w.sum()
    ldnorm = -0.5 * z * z - 0.5 * np.log(2.0 * np.pi)
    for a in (z, w, ldnorm):
        a.setflags(write=False)
    return z, w, ldnorm
