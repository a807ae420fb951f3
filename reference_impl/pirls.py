"""Penalized iteratively re-weighted least squares (spec §3).

`lme4` mode replays `pwrssUpdate` exactly: DBL_MAX start, relative tolerance on the penalized
deviance checked before step-halving, halving by averaging with the previous iterate (no
re-weighting), and the factor of the *penultimate* weights kept with the last iterate (§3.2).
`exact` mode iterates to machine precision and refactors at the final weights, so u is the
conditional mode and ldL2 belongs to it. Its steps are Newton's (the observed information of the
penalized deviance, `newton_weights`), floored at a hundredth of Fisher's: Fisher scoring, lme4's
step, only converges linearly for non-canonical links and on small designs cycles for hundreds
of iterations. Taken as increments from the gradient at the iterate (not as a fresh solve for
(u, β)), their rounding shrinks with the step instead of resting on β: the normal equations
carry cond(X)² eps. The factor kept, and so the Laplace objective, uses lme4's (Fisher) weights.
Exact mode's first step from lp0 is Fisher's (Newton's from a linear predictor that is no iterate
can leave the family's domain), a deviance outside that domain counts as NaN, and the loop stops
at the previous iterate when no halving of a descent step lowers the deviance (issue 13). A run
that fails, or stops although its step promised a decrease beyond rounding (a plateau of the
family's clamps, §2.2), is repeated from glmer's start η0 and the lower result kept, so the value
does not depend on lp0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from . import compiled
from .errors import DOWNDATE_NOT_PD, HALVINGS_FAILED, NAN_VALUE, NOT_CONVERGED, PirlsError
from .factor import Decomposition
from .predictor import predictor

DBL_MAX = np.finfo(float).max
TOL_PWRSS = 1e-7          # glmerControl(tolPwrss)
MAXIT = 100               # mkGlmerDevfun: maxit = 100L
MAXSTEPHALFIT = 20
EXACT_MAXIT = 200
# exact mode's run from lp0 while η0 is still to be tried: Newton's steps from a start in the
# mode's basin converge within a few tens of iterations (over the exact fits of the first 60
# thorough cases, 99.6 % of the lp0 runs that converged did so within 50); a run still going is
# creeping — across a clamp's plateau (§2.2), where only the penalty moves u, max |η| falling by
# one per step from 4327 (gen:thorough:23) — and ran into EXACT_MAXIT: 56 % of those fits' PIRLS time
LP0_MAXIT = 50
# exact mode's refusal where PIRLS runs off to infinity: lme4's words kept, so that the harness
# reads the two refusals as the same
NO_MODE = (": no conditional mode, the penalized deviance keeps falling as the linear predictor grows"
           " without bound (separation)")
DIVERGING = 20                      # …seen over this many last steps


@dataclass
class PirlsResult:
    """State after PIRLS: the last iterate and the decomposition lme4 keeps with it (formed by
    `kept` when first asked for: the compiled loop leaves only its weights and ldL2)."""

    u: np.ndarray
    beta: np.ndarray               # joint β̂ (nAGQ=0); zeros when β sits in the offset
    eta: np.ndarray
    mu: np.ndarray
    ldL2: float
    drsum: float
    iterations: int
    kept: Callable[[], Decomposition]
    trace: list[tuple[float, int]] = field(default_factory=list)   # (pdev, step-halvings)
    stuck: bool = False            # exact: stopped where a descent step promised more (plateau)

    @cached_property
    def decomp(self) -> Decomposition:
        return self.kept()

    @property
    def ussq(self) -> float:
        return float(self.u @ self.u)

    @property
    def pdev(self) -> float:
        return self.drsum + self.ussq


@dataclass(frozen=True)
class Cut:
    """Where a run stopped at its iteration limit (`PirlsError.cut`): the iterate (u, β, η), its
    Σ devResid and penalized deviance, the iterations done and their trace. Exact mode goes on
    from here (`_exact_pirls`), as the same run with a higher limit would: the loop's state
    between iterations is exactly this."""

    iterations: int
    u: np.ndarray
    beta: np.ndarray
    eta: np.ndarray
    drsum: float
    trace: list

    @property
    def pdev(self) -> float:
        return self.trace[-1][0]


def _resumed(cut: Cut | None) -> tuple[int, float, float, list]:
    """The loop's state before its first iteration: (iteration, oldpdev, drsum, trace so far), a
    fresh run's or, with `cut`, the cut run's."""
    return (0, DBL_MAX, np.nan, []) if cut is None else (cut.iterations, cut.pdev, cut.drsum, list(cut.trace))


def pirls(model, theta, eta, offset, u_prev, beta_prev, u_only: bool, mode: str = "lme4",
          tol: float = TOL_PWRSS, maxit: int = MAXIT) -> PirlsResult:
    """Run PIRLS at `theta` from the linear predictor `eta` (offset included).

    `offset` is the response's offset during the run (for u-only it carries Xβ, §4.2);
    `u_prev`, `beta_prev` are the predictor's values before the run, used only by a step-halving
    in the first iteration, as in lme4. `maxit` is lme4 mode's; exact mode's runs take
    LP0_MAXIT or EXACT_MAXIT (`_exact_pirls`).
    """
    if mode != "exact":
        return _pirls(model, theta, eta, offset, u_prev, beta_prev, u_only, mode, tol, maxit)
    return _exact_pirls(model, theta, eta, offset, u_prev, beta_prev, u_only, tol)


def _exact_pirls(model, theta, eta, offset, u_prev, beta_prev, u_only, tol) -> PirlsResult:
    """Exact mode: PIRLS from `eta`, and again from glmer's start η0 = offset + linkfun(mustart)
    (§5.2) when that run fails (within LP0_MAXIT iterations) or sticks, the lower penalized
    deviance kept. A run cut at LP0_MAXIT is given EXACT_MAXIT where η0's fails too or ends above
    where the cut run already stood: its own mode lies lower still (gen:thorough:548,
    binomial(cloglog), −2logLik 101.8 against η0's 126.2); it goes on from where it was cut
    (`Cut`), to the result the uncut run would have had. A family's clamps (§2.2) make the
    deviance flat where μ sits at a bound on the wrong side of y, e.g. from an lp0 beyond them
    under separation; no descent step leaves such a plateau, η0 is inside them."""
    def run(eta, u_prev, beta_prev, maxit, cut=None) -> tuple[PirlsResult | None, PirlsError | None]:
        try:
            return _pirls(model, theta, eta, offset, u_prev, beta_prev, u_only, "exact", tol, maxit, cut=cut), None
        except PirlsError as e:
            return None, e
    if eta is model.eta0:
        return _pirls(model, theta, eta, offset, u_prev, beta_prev, u_only, "exact", tol, EXACT_MAXIT)
    first, failure = run(eta, u_prev, beta_prev, LP0_MAXIT)
    if first is not None and not first.stuck:
        return first
    again, _ = run(model.eta0, np.zeros(model.q), np.zeros(model.p), EXACT_MAXIT)
    cut = getattr(failure, "cut", None)
    if cut is not None and (again is None or cut.pdev < again.pdev):
        first, failure = run(cut.eta, cut.u, cut.beta, EXACT_MAXIT, cut)
    kept = [res for res in (first, again) if res is not None]
    if not kept:
        raise failure
    return min(kept, key=lambda res: res.pdev)


def _pirls(model, theta, eta, offset, u_prev, beta_prev, u_only, mode, tol, maxit, cut: Cut | None = None
           ) -> PirlsResult:
    """One run of the loop; with `cut`, the run that stopped there going on (η, u_prev, beta_prev
    are the cut's iterate) up to `maxit` iterations in all."""
    blocks = compiled.blocks(model)
    if blocks is not None:
        return _compiled_pirls(model, blocks, theta, eta, offset, u_prev, beta_prev, u_only, mode, tol, maxit,
                               cut)
    # one errstate for the whole run (7 µs each, several per iteration otherwise): PIRLS
    # computes through inf and NaN as lme4's C++ does, and its own tests decide
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _numpy_pirls(model, theta, eta, offset, u_prev, beta_prev, u_only, mode, tol, maxit, cut)


ERRORS = {compiled.NAN: NAN_VALUE, compiled.HALVINGS: HALVINGS_FAILED, compiled.DOWNDATE: DOWNDATE_NOT_PD}


def _compiled_pirls(model, blocks, theta, eta, offset, u_prev, beta_prev, u_only, mode, tol, maxit, cut
                    ) -> PirlsResult:
    """`_numpy_pirls` as one compiled call (compiled.py), for A of small diagonal blocks
    (`blocks`: their size and number)."""
    exact = mode == "exact"
    b, nb = blocks
    rows, vals = model.LamtZt_columns(theta)
    resp = model.response
    it0, oldpdev, drsum0, trace = _resumed(cut)
    try:
        (status, u, beta, eta, mu, sqrtW, ldL2, drsum, iterations, pdevs, halvings, etas,
         stuck) = compiled.pirls_loop(*compiled.codes(model.family), exact, u_only, float(tol), int(maxit),
                                      _f64(resp.y), _f64(resp.pw), model.X_contiguous, _f64(offset), _f64(eta),
                                      _f64(u_prev), _f64(beta_prev), rows, vals, b, nb, it0, oldpdev, drsum0)
    except SystemError as e:
        raise compiled.asynchronous(e) from None
    trace = trace + list(zip(pdevs.tolist(), halvings.tolist()))
    if status == compiled.MAXIT:
        raise _not_converged(exact and _diverging(trace, etas.tolist()), Cut(iterations, u, beta, eta, drsum, trace))
    if status != compiled.OK:
        raise PirlsError(ERRORS[status])

    def kept():
        return Decomposition(predictor(model, theta).factor(sqrtW), model.X, sqrtW)
    return PirlsResult(u, beta, eta, mu, ldL2, drsum, iterations, kept, trace, stuck)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=float)


def _numpy_pirls(model, theta, eta, offset, u_prev, beta_prev, u_only, mode, tol, maxit, cut) -> PirlsResult:
    fam, resp, X = model.family, model.response, model.X
    exact = mode == "exact"
    pred = predictor(model, theta)
    mu = fam.linkinv(eta)
    u, beta = u_prev, beta_prev if not u_only else np.zeros(model.p)

    def linpred(u, beta):
        zb = pred.Zb(u)
        return offset + zb if u_only else offset + X @ beta + zb

    last = [None, None, None]          # (eta, mu, weights) of the last call: exact mode asks twice

    def weights(eta, mu):
        """mu.eta, V(mu) and W^½ = mu.eta √(pw / V(mu)) at (eta, mu) (§2.3); inf or NaN where
        V(mu) ≤ 0 (mu outside the family's range), as in lme4: the loop refuses them (NaN)."""
        if last[0] is not eta or last[1] is not mu:
            mueta, V = fam.mu_eta(eta), fam.variance(mu)
            last[:] = eta, mu, (mueta, V, mueta * np.sqrt(resp.pw / V))
        return last[2]

    def step(eta, mu, first):
        """W^½ and the working residual r (the working response is z = η − offset + r) of the
        next least-squares step (§2.3); ±inf and NaN where lme4's are (mu.eta = 0 in probit's
        tail), for the NaN test."""
        mueta, V, sqrtW = weights(eta, mu)
        r = (resp.y - mu) / mueta
        newton = newton_weights(fam, resp, eta, mu, mueta, V, sqrtW, r) if exact and not first else None
        return newton if newton is not None else (sqrtW, r)

    def pdev_at(eta, mu, u):
        """Σ devResid and the penalized deviance; exact mode: NaN outside the family's domain
        (non-finite weights, e.g. μ ≤ 0 for an identity-link Poisson, where devResid is finite
        but meaningless), so that step-halving keeps the iterate inside it."""
        drsum = float(model.devresid(mu).sum())
        if exact and not np.all(np.isfinite(weights(eta, mu)[2])):
            return drsum, np.nan
        return drsum, drsum + float(u @ u)

    converged, stuck = False, False
    it0, oldpdev, drsum, trace = _resumed(cut)
    etas = []                          # exact mode: max |η| after each step that did not settle
    for it in range(it0, maxit):
        olddelu, olddelb, oldeta, oldmu, olddrsum = u, beta, eta, mu, drsum
        sqrtW, r = step(eta, mu, it == 0)
        if not np.all(np.isfinite(sqrtW)):
            # lme4's factorizations carry NaN weights through (no pivot test fails on NaN) and
            # the NaN deviance ends the loop below; CHOLMOD and scipy refuse NaN input instead
            raise PirlsError(NAN_VALUE)
        decomp = Decomposition(pred.factor(sqrtW), X, sqrtW)
        if not exact:
            decomp.check()
        if exact and it > 0 and not u_only:
            # Newton's step as an increment, from the gradient at the iterate (η is its linear
            # predictor from the second iteration on): the normal equations' rounding, cond(X)²
            # eps, then shrinks with the step instead of resting on β (±1e4 near-collinear
            # coefficients moved by 5e-4 relative between row orders, the deviance by 1e-8)
            wr = sqrtW * r
            du, dbeta = decomp.solve_normal(decomp.L.LamtUt_dot(wr) - u, decomp.V.T @ wr)
            u, beta = u + du, beta + dbeta
        elif u_only:
            u = decomp.solve_u(sqrtW * ((eta - offset) + r))
        else:
            u, beta = decomp.solve_joint(sqrtW * ((eta - offset) + r))
        eta = linpred(u, beta)
        mu = fam.linkinv(eta)
        drsum, pdev = pdev_at(eta, mu, u)
        if exact:
            decrement = float(np.sum((sqrtW * (eta - oldeta)) ** 2) + np.sum((u - olddelu) ** 2))
            converged = _settled(olddelu, u, olddelb, beta, oldpdev, pdev, decrement)
        else:
            # pdev = 0, or DBL_MAX / pdev at the first iteration: C++'s inf/NaN
            converged = abs(np.float64(oldpdev - pdev) / pdev) < tol
        if converged:
            trace.append((pdev, 0))
            if exact:
                stuck = not _rounding(decrement, oldpdev)
                if it > 0 and not _rounding(pdev - oldpdev, oldpdev):
                    # settled by a rise beyond rounding (a wild step where W is ~eps under
                    # separation): the previous iterate is the lower
                    u, beta, eta, mu, drsum, pdev = olddelu, olddelb, oldeta, oldmu, olddrsum, oldpdev
            break
        halvings = 0
        while (np.isnan(pdev) or pdev > oldpdev) and halvings < MAXSTEPHALFIT:
            u = (olddelu + u) / 2.0
            if not u_only:
                beta = (olddelb + beta) / 2.0
            eta = linpred(u, beta)
            mu = fam.linkinv(eta)
            drsum, pdev = pdev_at(eta, mu, u)
            halvings += 1
        trace.append((pdev, halvings))
        if exact:
            etas.append(float(np.max(np.abs(eta), initial=0.0)))
        if exact and it > 0 and not pdev <= oldpdev:
            # no step along a descent direction lowers the deviance: the previous iterate is
            # the minimum to rounding (ill-conditioned steps are noise there) or, when the step
            # promised a decrease beyond rounding, a plateau (`stuck`)
            stuck = not _rounding(decrement, oldpdev)
            u, beta, eta, mu, drsum, pdev = olddelu, olddelb, oldeta, oldmu, olddrsum, oldpdev
            converged = True
            break
        if np.isnan(pdev):
            raise PirlsError(NAN_VALUE)
        if pdev - oldpdev > tol:
            raise PirlsError(HALVINGS_FAILED)
        oldpdev = pdev
    if not converged:
        raise _not_converged(exact and _diverging(trace, etas), Cut(maxit, u, beta, eta, drsum, trace))
    if exact:
        _, _, sqrtW = weights(eta, mu)
        decomp = Decomposition(pred.factor(sqrtW), X, sqrtW)
    return PirlsResult(u, beta, eta, mu, decomp.ldL2, drsum, it + 1, lambda: decomp, trace, stuck)


def newton_weights(fam, resp, eta, mu, mueta, V, sqrtW, r):
    """Exact mode's (safeguarded) Newton step: W^½ and working residual from the observed
    information ½ ∂²dev/∂η² = W − pw (y − μ)(μ''/V − μ'² V'/V²) (W = pw μ'²/V, Fisher's), floored
    at NEWTON_FLOOR·W (also where it is NaN): the Hessian stays positive definite, the step a
    descent direction. Fisher's residual (y − μ)/μ' becomes W (y − μ)/(μ' W_step). None where
    the information is not finite: the caller takes Fisher's step. Runs under `pirls`'s errstate.

    Where the information is negative (y far above μ for Gamma or inverse.gaussian with the
    identity link) the floor stands in for it. Fisher's W there, as before, overstated the
    curvature by far more: PIRLS crept for hundreds of iterations, ran into EXACT_MAXIT at many
    θ, and the optimizer, reading those as +inf, stopped short of the optimum (gen:thorough:284,
    inverse.gaussian(identity), nAGQ 0: −2logLik 15295.379 then, 15288.213 now, in a quarter of
    the time). Where the penalized deviance is not convex in u (non-canonical links) the steps
    also decide which of its local minima PIRLS reaches: over the first 600 thorough cases the
    floor moved exact mode's −2logLik in 41 of 1219 fits, 20 lower and 21 higher (−475 to +33;
    `docs/findings/compare_runs.py`, README)."""
    W = sqrtW * sqrtW
    Wobs = W - resp.pw * (resp.y - mu) * (fam.link.mu_eta2(eta) / V - mueta * mueta * fam.dvariance(mu) / (V * V))
    Wstep = np.fmax(Wobs, compiled.NEWTON_FLOOR * W)
    if not np.all(np.isfinite(Wstep)):
        return None
    return np.sqrt(Wstep), r * (W / Wstep)


def _not_converged(diverging: bool, cut: Cut) -> PirlsError:
    """lme4's maxit refusal (exact mode: saying so where PIRLS runs off to infinity, NO_MODE),
    carrying where the run stopped (`cut`)."""
    e = PirlsError(NOT_CONVERGED + (NO_MODE if diverging else ""))
    e.cut = cut
    return e


def _diverging(trace, etas) -> bool:
    """Exact mode at its iteration limit: over the last DIVERGING steps the penalized deviance
    only fell and max |η| only grew, so the infimum lies at infinity (e.g. separation), where no
    number of iterations converges."""
    pdevs, grow = [p for p, _ in trace[-DIVERGING:]], etas[-DIVERGING:]
    return (len(grow) == DIVERGING and all(b <= a for a, b in zip(pdevs, pdevs[1:]))
            and all(b > a for a, b in zip(grow, grow[1:])))


def _settled(olddelu, u, olddelb, beta, oldpdev, pdev, decrement) -> bool:
    """Exact mode: the step no longer moves (u, β) or the penalized deviance, or it did not lower
    the deviance although its quadratic model promised at most 1e-10 relative (`decrement`,
    ‖W^½ Δη‖² + ‖Δu‖²): rounding then exceeds the decrease (on ill-conditioned designs the
    computed step is noise of 1e-6 and the deviance rises by 1e-12, forever)."""
    step = max(np.max(np.abs(u - olddelu), initial=0.0), np.max(np.abs(beta - olddelb), initial=0.0))
    scale = 1.0 + max(np.max(np.abs(u), initial=0.0), np.max(np.abs(beta), initial=0.0))
    return (step <= 1e-12 * scale or abs(oldpdev - pdev) <= 8 * np.finfo(float).eps * abs(pdev)
            or (pdev >= oldpdev and _rounding(decrement, pdev)))


def _rounding(change: float, pdev: float) -> bool:
    """`change` of the penalized deviance `pdev` (a step's promised decrease, or a rise) is below
    rounding (a relative 1e-10: ill-conditioned steps are noise of that size)."""
    return change <= 1e-10 * (1.0 + abs(pdev))
