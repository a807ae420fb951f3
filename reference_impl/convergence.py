"""lme4's post-fit checks: `check.boundary` (§5.6) and `checkConv`/`checkHess` (§6.2)."""
from __future__ import annotations

import numpy as np
import scipy.linalg as la

SINGULAR_TOL = 1e-4
GRAD_TOL = 2e-3
HESS_TOL = 1e-6
BOUNDARY_TOL = 1e-5


def check_boundary(devfun, par: np.ndarray, fval: float, nth: int, tol: float = BOUNDARY_TOL,
                   slack: float = 0.0):
    """Try each theta within `tol` of its lower bound on the bound; keep it if the objective
    drops below the optimizer's `fval` (§5.6) — exact mode: below `fval + slack`, its rounding.
    Returns `(par, fval)`, state left at `par`."""
    lower = devfun.lower
    bdiff = par[:nth] - lower[:nth]
    edge = np.flatnonzero((bdiff > 0) & (bdiff < tol))
    if edge.size == 0:
        return par, fval
    par = par.copy()
    for i in edge:
        trial = par.copy()
        trial[i] = lower[i]
        if devfun(trial) < fval + slack:
            par[i] = lower[i]
    return par, devfun(par)


def check_conv(gradient, hessian, coefs: np.ndarray, lbound: np.ndarray) -> tuple[list[str], bool]:
    """`checkConv` with glmerControl's defaults: `(messages, is_warning)`.

    The singular-fit note is a message in lme4; every other finding is a warning.
    """
    if np.any(coefs[lbound == 0] < SINGULAR_TOL):
        return ["boundary (singular) fit: see help('isSingular')"], False
    if gradient is None:
        return [], False
    if np.any(np.isnan(gradient)):
        return ["Gradient contains NAs"], True
    messages = []
    try:
        scgrad = la.solve_triangular(la.cholesky(hessian), gradient)      # R⁻¹g, H = R'R
        if np.any(np.isnan(scgrad)):
            raise la.LinAlgError
    except (la.LinAlgError, ValueError):
        messages.append("unable to evaluate scaled gradient")
    else:
        maxmingrad = float(np.max(np.minimum(np.abs(scgrad), np.abs(gradient))))
        if maxmingrad > GRAD_TOL:
            messages.append(f"Model failed to converge with max|grad| = {_g(maxmingrad)} "
                            f"(tol = {_g(GRAD_TOL)}, component 1)")
    messages += check_hess(hessian)
    return messages, bool(messages)


def check_hess(H: np.ndarray, tol: float = HESS_TOL) -> list[str]:
    """`checkHess`: negative, zero or badly scaled eigenvalues of the deviance Hessian."""
    try:
        ev = la.eigvalsh(H)
    except (la.LinAlgError, ValueError):
        return ["Problem with Hessian check (infinite or missing values?)"]
    negative = int(np.sum(ev < -tol))
    if negative:
        return [f"Model failed to converge: degenerate  Hessian with {negative} negative eigenvalues"]
    out = []
    try:
        la.cholesky(H)
        chol_ok = True
    except la.LinAlgError:
        chol_ok = False
    if np.any(np.abs(ev) < tol) or not chol_ok:
        out.append(" Hessian is numerically singular: parameters are not uniquely determined")
    else:
        if ev.max() * tol > 1:
            out.append("Model is nearly unidentifiable: very large eigenvalue\n - Rescale variables?")
        if ev.min() / ev.max() < tol:
            out.append("Model is nearly unidentifiable: large eigenvalue ratio\n - Rescale variables?")
    return out


def _g(x: float) -> str:
    """R's `%g`."""
    return f"{x:g}"
