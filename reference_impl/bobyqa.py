"""Stage 1: BOBYQA as minqa 1.2.5's `bobyqa()` runs it inside lme4's `optwrap` (spec §5.3–§5.4).

pdfo's `classical` BOBYQA is Powell's Fortran without pdfo's safeguards; with scaling off and
`honour_x0` off (on, pdfo moves x0 onto nearby bounds) it follows minqa's evaluation path point
for point (tests/test_optimizers.py; cbpp: the same 18 evaluations). The Fortran is called
directly (`_powell`), with the preparation pdfo's `pdfo()` gives it for a box-constrained problem
restated: that wrapper spends milliseconds per call in `inspect.stack()`, more than a whole small
fit's deviance evaluations (tests/test_optimizers.py holds the two to the same path).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pdfo import fbobyqa_classical
from pdfo.gethuge import gethuge

DBL_MAX = np.finfo(float).max
EPS = np.finfo(float).eps
HUGEFUN = gethuge("fun")          # pdfo's extreme barrier: larger or non-finite values become this

# Powell's exit flag → minqa ierr and message
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
    raised: list[BaseException] = []

    def calfun(x):
        # an exception, KeyboardInterrupt included, must not cross the Fortran frames (f2py
        # prints "capi_return is NULL" and a failed call-back): it is kept, -DBL_MAX ends the run
        # (ftarget)
        try:
            f = float(fn(np.array(x, dtype=float)))
        except BaseException as e:                      # noqa: BLE001 — re-raised below
            raised.append(e)
            return -DBL_MAX
        return f if np.isfinite(f) else DBL_MAX

    x, fval, status, nfev = _powell(calfun, x0, np.asarray(lower, float), np.asarray(upper, float),
                                    rhobeg, rhoend, max(n + 2, 3), int(maxfun))
    if raised:
        raise raised[0]
    fn(x)
    code, message = _IERR.get(status, (0, "Normal exit from bobyqa"))
    return BobyqaResult(x, fval, nfev, code, message)


def _powell(calfun, x0, lower, upper, rhobeg, rhoend, npt, maxfun):
    """Powell's BOBYQA (pdfo's classical build) as `pdfo(method="bobyqa", options={"classical":
    True, "scale": False, "honour_x0": False, "ftarget": -DBL_MAX})` runs it on a box holding x0:
    rhobeg at least eps, rhoend at most rhobeg, maxfun above npt, x0 moved onto a bound within
    rhobeg/2 of it and at least rhobeg from it otherwise (Powell's own rule, applied as pdfo
    does before the Fortran sees it), values above pdfo's barrier or not finite set to it.
    Returns (x, f, exit flag, evaluations)."""
    rhobeg = max(rhobeg, EPS)
    if not 0 < rhoend <= rhobeg:
        rhoend = min(0.1 * rhobeg, 1e-6)
    x0 = np.clip(x0, lower, upper)
    at_lower, above_lower = x0 <= lower + rhobeg / 2, (x0 > lower + rhobeg / 2) & (x0 < lower + rhobeg)
    at_upper, below_upper = x0 >= upper - rhobeg / 2, (x0 < upper - rhobeg / 2) & (x0 > upper - rhobeg)
    x0[at_lower] = lower[at_lower]
    x0[above_lower] = lower[above_lower] + rhobeg
    x0[below_upper] = upper[below_upper] - rhobeg
    x0[at_upper] = upper[at_upper]
    def barrier(x):
        f = calfun(x)
        return f if np.isfinite(f) and f <= HUGEFUN else HUGEFUN

    x, f, status, *_ = fbobyqa_classical.mbobyqa(npt, x0, lower, upper, rhobeg, rhoend, 0,
                                                 max(maxfun, npt + 1), -DBL_MAX, barrier)
    return np.array(x, float), float(f), int(status), int(fbobyqa_classical.fbobyqa.nf)
