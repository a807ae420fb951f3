"""Stage 1: BOBYQA as minqa 1.2.5's `bobyqa()` runs it inside lme4's `optwrap` (spec §5.3–§5.4).

pdfo's `classical` BOBYQA is Powell's Fortran without pdfo's safeguards; with scaling off and
`honour_x0` off (on, pdfo moves x0 onto nearby bounds) it follows minqa's evaluation path point
for point (tests/test_optimizers.py; cbpp: the same 18 evaluations).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from pdfo import pdfo

DBL_MAX = np.finfo(float).max

# pdfo exit flag → minqa ierr and message
_IERR = {
    3: (1, "bobyqa -- maximum number of function evaluations exceeded"),
    2: (3, "bobyqa -- a trust region step failed to reduce q"),
    20: (5, "bobyqa detected too much cancellation in denominator"),
}


@dataclass
class BobyqaResult:
    par: np.ndarray
    fval: float
    feval: int
    code: int          # minqa's ierr
    message: str


def bobyqa(fn, x0, lower, upper, rhobeg=None, rhoend=None, maxfun=10000) -> BobyqaResult:
    """Minimize `fn` over the box with minqa's defaults: npt = n+2 (3 when n = 1),
    rhobeg = min(0.95, 0.2 max|x0|), rhoend = 1e-6 rhobeg; non-finite values become DBL_MAX.
    Like minqa, `fn` is evaluated once at x0 before the Fortran run (`checkObj`) and once at
    the result after it (`rval`), so the evaluation history is minqa's. An exception from `fn`
    ends the run and propagates, as from minqa's R callback."""
    x0 = np.array(x0, dtype=float, ndmin=1)
    if np.all(x0 == 0):
        x0[:] = 0.001                                   # optwrap's "minor kludge"
    n = x0.size
    rhobeg = float(rhobeg) if rhobeg is not None else min(0.95, 0.2 * float(np.max(np.abs(x0))))
    rhoend = float(rhoend) if rhoend is not None else 1e-6 * rhobeg
    fn(x0)
    raised: list[Exception] = []

    def calfun(x):
        # an exception must not cross the Fortran frames (f2py prints "capi_return is NULL"
        # and a failed call-back): it is kept, -DBL_MAX ends the run (ftarget), pdfo returns
        try:
            f = float(fn(np.array(x, dtype=float)))
        except Exception as e:                          # noqa: BLE001 — re-raised below
            raised.append(e)
            return -DBL_MAX
        return f if np.isfinite(f) else DBL_MAX

    bounds = np.column_stack([np.asarray(lower, float), np.asarray(upper, float)])
    options = {"rhobeg": rhobeg, "rhoend": rhoend, "npt": max(n + 2, 3), "maxfev": int(maxfun),
               "ftarget": -DBL_MAX, "classical": True, "scale": False, "honour_x0": False,
               "quiet": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pdfo(calfun, x0, method="bobyqa", bounds=bounds, options=options)
    if raised:
        raise raised[0]
    fn(np.asarray(res.x, float))
    code, message = _IERR.get(res.status, (0, "Normal exit from bobyqa"))
    return BobyqaResult(np.asarray(res.x, float), float(res.fun), int(res.nfev), code, message)
