"""`deriv12`: finite-difference gradient and Hessian as lme4 computes them (spec §6.1)."""
from __future__ import annotations

import numpy as np


def deriv12(fn, x, delta: float = 1e-4, fx: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Central differences with step `delta`, argument vectors formed exactly as lme4's R code
    (`x + delta` and `x - delta` computed once, single components substituted), so the
    cancellation (×1e8) happens on the same floating-point numbers."""
    x = np.asarray(x, float)
    n = x.size
    if fx is None:
        fx = fn(x)
    xadd, xsub = x + delta, x - delta
    d2 = delta * delta
    g = np.empty(n)
    H = np.empty((n, n))
    at = _substituting(fn, x)
    for j in range(n):
        fadd, fsub = at((xadd, j)), at((xsub, j))
        H[j, j] = fadd / d2 - 2 * fx / d2 + fsub / d2
        g[j] = (fadd - fsub) / (delta + delta)
        for i in range(j):
            dd = (delta + delta) ** 2
            H[i, j] = H[j, i] = (at((xadd, i), (xadd, j)) / dd - at((xadd, i), (xsub, j)) / dd
                                 - at((xsub, i), (xadd, j)) / dd + at((xsub, i), (xsub, j)) / dd)
    return g, H


def gradient12(fn, x, delta: float = 1e-4) -> np.ndarray:
    """`deriv12`'s gradient alone (2n evaluations, the same argument vectors)."""
    x = np.asarray(x, float)
    xadd, xsub = x + delta, x - delta
    at = _substituting(fn, x)
    return np.array([(at((xadd, j)) - at((xsub, j))) / (delta + delta) for j in range(x.size)])


def _substituting(fn, x):
    """`at((src, j), ...)`: fn at x with component j taken from src, for each pair."""
    def at(*subs):
        y = x.copy()
        for src, j in subs:
            y[j] = src[j]
        return fn(y)
    return at
