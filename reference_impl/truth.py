"""The exact marginal likelihood of a single-scalar-term GLMM, for error attribution.

    −2 log L(θ, β) = Σ_j −2 log ∫ Π_{i∈j} p(y_i | u) φ(u) du        (absolute scale, §4.2, §8)

Each level's integral is computed by adaptive Gauss–Kronrod quadrature (`scipy.integrate.quad_vec`,
all levels at once) to ~1e-13 relative, after the change of variables u = û_j + sd_j z of §4.3
(û_j the converged conditional mode, sd_j = A_jj^{-½}):

    −2 log L_j = devc0_j + log A_jj − 2 log(∫ exp(−½(devc_j(û_j + sd_j z) − devc0_j)) dz / √(2π)) + C_j

with C_j the level's share of −2 log L(saturated) (`Family.saturated_aic`). No Gauss–Hermite node
is used, so this is independent of objective.py's and agq.py's rules. Families with a scale
parameter have no such likelihood in lme4 (§4.2 uses `aic` with an estimated dispersion): refused.
"""
from __future__ import annotations

import numpy as np
from scipy.integrate import quad_vec

from .agq import level_sums, precision_blocks
from .errors import ModelError
from .fit import OptSummary, _polish, glmer
from .model import Model, make_model
from .pirls import pirls

EPSREL = 1e-13
LOG_TAIL = -100.0     # the integrand at the ends of the range, relative to its value 1 at the mode


class TrueDeviance:
    """`f(c(theta, beta)) = −2 log L` exactly, absolute scale; `f.by_level(pars)` per level.

    Callable like a `DevianceFunction` (same parameter vector, `lower`, `nth`)."""

    def __init__(self, model: Model):
        if not model.scalar_single:
            raise ModelError("the exact marginal likelihood is implemented for a single scalar "
                             "random-effects term only")
        if model.family.has_scale:
            raise ModelError(f"family '{model.family.name}' has a scale parameter: lme4's objective is "
                             "not a marginal likelihood for it, so there is no exact value to compare with")
        self.model, self.nth = model, model.nth
        self.lower = np.concatenate([model.lower, np.full(model.p, -np.inf)])
        self.G = level_sums(model)
        resp, fam = model.response, model.family
        self.saturated = np.array([fam.saturated_aic(resp.y, resp.n, resp.pw * (model.fac == j))
                                   for j in range(self.G.shape[0])])

    def __call__(self, pars) -> float:
        return float(np.sum(self.by_level(pars)))

    def by_level(self, pars) -> np.ndarray:
        """−2 log L_j for each level j (sums to the total)."""
        m, fam = self.model, self.model.family
        pars = np.asarray(pars, float)
        theta, beta = pars[:self.nth], pars[self.nth:]
        offset = m.offset + m.X @ beta
        res = pirls(m, theta, offset, offset, np.zeros(m.q), np.zeros(m.p), u_only=True, mode="exact")
        A = precision_blocks(m, theta, res.eta, res.mu)[:, 0, 0]
        sd = 1.0 / np.sqrt(A)

        def devc(u):
            mu = fam.linkinv(offset + m.Zb(theta, u))
            return u ** 2 + self.G @ m.devresid(mu)

        devc0 = devc(res.u)

        def integrand(z):
            return np.exp(-0.5 * (devc(res.u + sd * z) - devc0))

        Z = 16.0
        while any(np.max(-0.5 * (devc(res.u + sd * s * Z) - devc0)) > LOG_TAIL for s in (-1.0, 1.0)):
            Z *= 2.0
        integral, _ = quad_vec(integrand, -Z, Z, epsabs=0.0, epsrel=EPSREL, norm="max", points=(0.0,))
        return devc0 + np.log(A) - 2.0 * np.log(integral / np.sqrt(2.0 * np.pi)) + self.saturated


def truth_minus2loglik(formula, data, family="binomial", link=None, weights=None, offset=None, *,
                       pars) -> float:
    """The exact −2 log L at `pars = c(theta, beta)`, on `GlmerFit.minus2loglik`'s scale."""
    return TrueDeviance(make_model(formula, data, family, link, weights, offset))(pars)


def truth_mle(formula, data, family="binomial", link=None, weights=None, offset=None,
              start=None) -> tuple[np.ndarray, float]:
    """The exact maximum-likelihood c(theta, beta) and its −2 log L: L-BFGS-B on `TrueDeviance`
    (as exact mode's polish, §5) from `start`, by default the exact-mode Laplace optimum."""
    f = TrueDeviance(make_model(formula, data, family, link, weights, offset))
    if start is None:
        fit = glmer(formula, data, family, link, nAGQ=1, weights=weights, offset=offset, mode="exact")
        start = np.concatenate([fit.theta, list(fit.fixef.values())])
    par = _polish(f, np.asarray(start, float), OptSummary())
    return par, f(par)
