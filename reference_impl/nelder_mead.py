"""Stage 2: lme4's own Nelder–Mead (`src/optimizer.cpp`, from NLopt 2.2.4's nldrmd; spec §5.5).

Replayed step for step: same initial simplex and bound handling, strict comparisons, first
occurrences of the best and worst vertex, the centroid as (Σ vertices − worst)/n, inside
contraction only, shrink re-evaluating every vertex in column order. The only stopping rules
that are live in lme4 are the x-tolerance `xt`, coincident points, and `maxfun` (the f
tolerances are never consulted).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OptimizerError

ALPHA, GAMMA, BETA, DELTA = 1.0, 2.0, 0.5, 0.5
XCVG, MAXFUN = 3, 4
MESSAGES = {XCVG: "parameter values converged to within tolerance"}


@dataclass
class NelderMeadResult:
    par: np.ndarray
    fval: float
    feval: int
    code: int          # NM.result: 3 xcvg, 4 maxfun
    message: str


class _Stop(Exception):
    def __init__(self, code: int):
        self.code = code


def _close(a, b):
    return np.abs(a - b) <= 1e-13 * (np.abs(a) + np.abs(b))


def nelder_mead(fn, x0, lower, upper, xst, xt, maxfun: int = 10000) -> NelderMeadResult:
    x0 = np.array(x0, dtype=float, ndmin=1)
    lb, ub = np.asarray(lower, float), np.asarray(upper, float)
    xst, xt = np.asarray(xst, float), np.asarray(xt, float)
    n = x0.size
    if np.any(x0 < lb) or np.any(x0 > ub):
        raise OptimizerError("initial x is not a feasible point")
    pts = _initial_simplex(x0, lb, ub, xst)
    best = {"f": np.inf, "x": x0.copy(), "n": 0}

    def F(x):
        f = float(fn(x.copy()))
        best["n"] += 1
        if f < best["f"]:
            best["f"], best["x"] = f, x.copy()
        if best["n"] > maxfun:
            raise _Stop(MAXFUN)
        return f

    def reflect(c, scale, xold):
        """`reflectpt`: c + scale (c − xold), clamped; None when it collapses onto c or xold."""
        xnew = np.minimum(np.maximum(c + scale * (c - xold), lb), ub)
        if np.all(_close(xnew, c)) or np.all(_close(xnew, xold)):
            raise _Stop(XCVG)
        return xnew

    try:
        vals = np.array([F(pts[:, i]) for i in range(n + 1)])
        while True:
            il, ih = _first_argmin(vals), _first_argmax(vals)
            fl, fh = vals[il], vals[ih]
            total = pts[:, 0].copy()
            for i in range(1, n + 1):
                total += pts[:, i]
            c = (total - pts[:, ih]) / n
            spread = np.max(np.abs(pts - c[:, None]), axis=1)
            if np.all((spread < xt) | (spread == 0)):
                raise _Stop(XCVG)
            xr = reflect(c, ALPHA, pts[:, ih])
            fr = F(xr)
            if fr < fl:
                xe = reflect(c, GAMMA, pts[:, ih])
                fe = F(xe)
                if fe < vals[ih]:
                    pts[:, ih], vals[ih] = xe, fe
                else:
                    pts[:, ih], vals[ih] = xr, fr
                continue
            if fr < fh:
                pts[:, ih], vals[ih] = xr, fr
                continue
            xc = reflect(c, -BETA, pts[:, ih])
            fc = F(xc)
            if fc < fr and fc < fh:
                pts[:, ih], vals[ih] = xc, fc
                continue
            for i in range(n + 1):
                if i != il:
                    pts[:, i] = reflect(pts[:, il].copy(), -DELTA, pts[:, i])
            vals = np.array([F(pts[:, i]) for i in range(n + 1)])
    except _Stop as stop:
        code = stop.code
    message = MESSAGES.get(code, f"failure to converge in {maxfun} evaluations")
    return NelderMeadResult(best["x"], best["f"], best["n"], code, message)


def _initial_simplex(x0, lb, ub, xst):
    n = x0.size
    pts = np.tile(x0[:, None], (1, n + 1))
    for i in range(n):
        v = x0[i] + xst[i]
        step = abs(xst[i])
        if v > ub[i]:
            v = ub[i] if ub[i] - x0[i] > step * 0.1 else x0[i] - step
        if v < lb[i]:
            if x0[i] - lb[i] > step * 0.1:
                v = lb[i]
            else:
                v = x0[i] + step
                if v > ub[i]:
                    v = 0.5 * ((ub[i] if ub[i] - x0[i] > x0[i] - lb[i] else lb[i]) + x0[i])
        if _close(v, x0[i]):
            raise OptimizerError("cannot generate feasible simplex")
        pts[i, i + 1] = v
    return pts


def _first_argmin(v):
    k = 0
    for i in range(1, v.size):
        if v[i] < v[k]:
            k = i
    return k


def _first_argmax(v):
    k = 0
    for i in range(1, v.size):
        if v[i] > v[k]:
            k = i
    return k
