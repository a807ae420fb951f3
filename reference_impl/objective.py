"""glmer's deviance functions as values: callables over lme4's parameter vector (spec §4).

* nAGQ = 0 — `f(theta)`: joint (u, β) PIRLS, `ldL2 + ||u||² + aic(μ)` (§4.1).
* nAGQ = 1 — `f(c(theta, beta))`: u-only PIRLS with Xβ in the offset, same formula (§4.2).
* nAGQ > 1 — `f(c(theta, beta))`: adaptive Gauss–Hermite per level of the single scalar term,
  `Σ devc0 + ldL2 − 2 log Π mult`, on the deviance-residual scale (§4.3); in exact mode also
  one vector term, by a product rule (agq.py).

Every call restarts PIRLS from `eta = offset + lp0` (§3.3), so values do not depend on history.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .agq import check_vector_agq, vector_agq_by_level
from .errors import ModelError, PirlsError
from .ghrule import ghrule
from .pirls import TOL_PWRSS, PirlsResult, pirls

SQRT_2PI = np.sqrt(2.0 * np.pi)
AGQ_BLOCK = 2 ** 15


@dataclass
class Evaluation:
    """What one evaluation leaves behind (lme4's `pp`/`resp` state, §4.4)."""

    pars: np.ndarray
    value: float
    pirls: PirlsResult
    aic: float
    beta: np.ndarray            # β used: PIRLS β̂ for nAGQ=0, pars[nth:] otherwise

    @property
    def u(self):
        return self.pirls.u

    @property
    def mu(self):
        return self.pirls.mu

    @property
    def eta(self):
        return self.pirls.eta

    @property
    def ldL2(self):
        return self.pirls.ldL2

    @property
    def ussq(self):
        return self.pirls.ussq

    @property
    def drsum(self):
        return self.pirls.drsum


class DevianceFunction:
    """The objective glmer optimizes, at a fixed `lp0`; `f(pars) -> float`.

    `f.last` holds the state of the most recent evaluation; `f.lp0` the restart point.
    """

    def __init__(self, model, nAGQ: int, lp0: np.ndarray, mode: str = "lme4", tol: float = TOL_PWRSS):
        if mode not in ("lme4", "exact"):
            raise ModelError(f"mode must be 'lme4' or 'exact', not {mode!r}")
        if nAGQ > 1:
            check_agq(model, nAGQ, mode)
        self.model, self.nAGQ, self.mode = model, int(nAGQ), mode
        self.lp0 = np.asarray(lp0, float)
        self.tol = tol
        self.nth = model.nth
        self.npar = self.nth + (model.p if nAGQ > 0 else 0)
        self.lower = np.concatenate([model.lower, np.full(self.npar - self.nth, -np.inf)])
        # lme4's predictor keeps u (and nAGQ = 0's β) between calls, which a step-halving in
        # PIRLS's first iteration averages with (§3.2): lme4 mode's values depend on the calls
        # before; exact mode's are a function of (pars, lp0) alone, halving toward u = 0, β = 0
        self._u = np.zeros(model.q)
        self._beta = np.zeros(model.p)
        self.last: Evaluation | None = None
        self.nevals = 0

    def __call__(self, pars) -> float:
        pars = np.array(pars, dtype=float, ndmin=1)
        if pars.shape != (self.npar,):
            raise ModelError(f"parameter vector has length {pars.size}; this deviance function takes "
                             f"{self.npar} ({self.nth} theta" + (f" + {self.model.p} beta)" if self.nAGQ else ")"))
        m = self.model
        theta = pars[:self.nth]
        eta = m.offset + self.lp0
        try:
            if self.nAGQ == 0:
                res = pirls(m, theta, eta, m.offset, self._u, self._beta, u_only=False,
                            mode=self.mode, tol=self.tol)
                beta = res.beta
            else:
                beta = pars[self.nth:]
                res = pirls(m, theta, eta, m.offset + m.X @ beta, self._u, self._beta, u_only=True,
                            mode=self.mode, tol=self.tol)
        except PirlsError as e:
            e.at = pars
            raise
        if self.mode == "lme4":
            self._u = res.u
            self._beta = res.beta
        aic = m.aic(res.mu, res.drsum)
        if self.nAGQ <= 1:
            value = res.ldL2 + res.ussq + aic
        else:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # nodes far out: C's inf/NaN
                value = self._agq(theta, beta, res)
        self.nevals += 1
        self.last = Evaluation(pars, float(value), res, aic, beta)
        return float(value)

    def _agq(self, theta, beta, res: PirlsResult) -> float:
        """§4.3: per level j, `devc0_j + log L_jj² − 2 log mult_j`, mult by the GH rule."""
        m = self.model
        if not m.scalar_single:                      # exact mode, one vector term (agq.py)
            return float(np.sum(vector_agq_by_level(m, theta, beta, res, self.nAGQ)))
        z, w, ldnorm = ghrule(self.nAGQ)
        offset = m.offset + m.X @ beta
        devc0 = res.u ** 2 + m.level_sums(m.devresid(res.mu))
        sd = 1.0 / res.decomp.L.Ldiag
        moving = z != 0.0
        uk = res.u[:, None] + sd[:, None] * z[moving][None, :]                  # q × k
        # eta at node k, observation i of level j: offset_i + θ z_i (û_j + sd_j z_k) = a_i + b_i z_k
        thetaz = theta[0] * m.zvals
        a, b = offset + thetaz * res.u[m.fac], thetaz * sd[m.fac]
        devck = uk ** 2 + devresid_sums(m, a, b, z[moving])
        terms = np.exp(-0.5 * (devck - devc0[:, None]) - ldnorm[moving]) * (w[moving] / SQRT_2PI)
        mult = terms.sum(axis=1) + w[~moving].sum()
        if self.mode == "lme4":
            return float(devc0.sum() + res.ldL2 - 2.0 * np.log(np.prod(mult)))
        return float(devc0.sum() + res.ldL2 - 2.0 * np.sum(np.log(mult)))

    # -- lme4's state accessors, for comparison with `environment(devfun)` -----------------------
    def unsc(self) -> np.ndarray:
        """(RX'RX)⁻¹ of the last evaluation (`pp$unsc()`)."""
        return self.last.pirls.decomp.unsc()

    def linpred(self) -> np.ndarray:
        """`pp$linPred(1)` = Xβ + ZΛu of the last evaluation, without offset (§3.3)."""
        ev, m = self.last, self.model
        return m.X @ ev.beta + m.Zb(ev.pars[:self.nth], ev.u)


def devresid_sums(model, a: np.ndarray, b: np.ndarray, z: np.ndarray) -> np.ndarray:
    """`Σ_{i∈j} devResid_i(linkinv(a_i + b_i z_k))` for every level j and node k (q × k).

    Computed over blocks of whole levels holding about AGQ_BLOCK (i, k) pairs, so that the
    temporaries stay in cache; within a block everything is vectorized over nodes and levels."""
    fam, resp = model.family, model.response
    order, starts = model.by_level
    a, b, y, pw = a[order], b[order], resp.y[order], resp.pw[order]
    rows = max(1, AGQ_BLOCK // len(z))
    bounds = np.unique(np.r_[np.searchsorted(starts, np.arange(0, model.N, rows)), len(starts) - 1])
    sums = np.empty((len(starts) - 1, len(z)))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        r = slice(starts[lo], starts[hi])
        dev = fam.devresid(y[r], fam.linkinv(a[r] + z[:, None] * b[r]), pw[r])          # k × rows
        sums[lo:hi] = np.add.reduceat(dev, starts[lo:hi] - starts[lo], axis=1).T
    return sums


def check_agq(model, nAGQ: int, mode: str = "lme4") -> None:
    """lme4's restriction (§4.3) and the GH rule's range; exact mode also takes one vector term."""
    ghrule(nAGQ)
    if mode == "exact":
        return check_vector_agq(model, nAGQ)
    if not model.scalar_single:
        raise ModelError("nAGQ > 1 is only available for models with a single, scalar random-effects term "
                         f"(this model has {len(model.design.reterms)} term(s) with "
                         f"{[t.nc for t in model.design.reterms]} column(s))")


def initial_lp0(model, mode: str = "lme4", tol: float = TOL_PWRSS) -> tuple[np.ndarray, PirlsResult]:
    """Joint PIRLS at the initial theta from `eta0 = offset + linkfun(mustart)` (§5.2 step 2);
    `lp0 = Xβ + ZΛu` of its result."""
    theta = model.theta0
    res = pirls(model, theta, model.eta0, model.offset, np.zeros(model.q), np.zeros(model.p),
                u_only=False, mode=mode, tol=tol)
    return model.X @ res.beta + model.Zb(theta, res.u), res
