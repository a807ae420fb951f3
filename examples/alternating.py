"""A user's own GLMM fit, plugged into the harness (README: "Your own implementation").

    crosscheck compare --impl examples/alternating.py:Alternating --data R:lme4::cbpp \
        --family binomial --formula 'cbind(incidence, size - incidence) ~ period + (1 | herd)'

The fit many write first: at each θ, alternate PIRLS for u with β fixed and Gauss–Newton for β
with u fixed until neither moves, then score θ by the Laplace approximation at that (u, β), and
minimize over θ alone. For one scalar random-effects term of a binomial or Poisson model with
its canonical link. The alternation converges to the joint mode of the penalized deviance, which
is glmer's nAGQ = 0 answer; at nAGQ = 1 glmer maximizes the Laplace likelihood over β as well.
"""
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, gammaln

from crosscheck.implementations import Capabilities
from crosscheck.result import FitResult
from reference_impl.design import build_design
from reference_impl.families import make_family


class Alternating:
    name = "alternating"
    tolerances = "exact"
    capabilities = Capabilities(families={"binomial": ("logit",), "poisson": ("log",)}, nagq=(0, 1),
                                structures=("scalar",))

    def versions(self):
        return {"alternating": "example"}

    def fit(self, case, nAGQ, saturated_C=None):
        d = build_design(case.formula, case.data, weights=case.weights, offset=case.offset)
        resp = make_family(case.family, case.link).initialize(d.response, np.asarray(d.prior_weights, float))
        X, Z, Zt, off = d.X, d.Zt.T.tocsr(), d.Zt.tocsr(), d.offset
        Z2t = Z.multiply(Z).T.tocsr()                              # diag(Z'WZ) = (Z∘Z)'W
        y, pw, binomial = resp.y, resp.pw, case.family == "binomial"
        mean = expit if binomial else np.exp

        def mode(theta, beta, u):
            for _ in range(200):                                   # alternate until neither moves
                for _ in range(50):                                # PIRLS for u, β fixed
                    mu = mean(off + X @ beta + theta * (Z @ u))
                    W = pw * (mu * (1 - mu) if binomial else mu)
                    g = theta * (Zt @ (pw * (y - mu))) - u
                    H = theta ** 2 * (Z2t @ W) + 1
                    u = u + g / H
                    if np.max(np.abs(g / H)) < 1e-12:
                        break
                mu = mean(off + X @ beta + theta * (Z @ u))        # Gauss–Newton for β, u fixed
                W = pw * (mu * (1 - mu) if binomial else mu)
                step = np.linalg.solve(X.T @ (W[:, None] * X), X.T @ (pw * (y - mu)))
                beta = beta + step
                if np.max(np.abs(step)) < 1e-12:
                    break
            mu = mean(off + X @ beta + theta * (Z @ u))
            W = pw * (mu * (1 - mu) if binomial else mu)
            ldL2 = np.sum(np.log(theta ** 2 * (Z2t @ W) + 1))
            if binomial:
                m = np.round(pw)
                ll = gammaln(m + 1) - gammaln(m * y + 1) - gammaln(m - m * y + 1)
                ll = ll + m * (y * np.log(mu) + (1 - y) * np.log1p(-mu))
            else:
                ll = y * np.log(mu) - mu - gammaln(y + 1)
            return beta, u, mu, ldL2 + u @ u - 2 * np.sum(ll)

        start = (np.zeros(X.shape[1]), np.zeros(Z.shape[1]))
        res = minimize_scalar(lambda t: mode(t, *start)[3], bounds=(0.0, 10.0), method="bounded",
                              options={"xatol": 1e-8})
        beta, u, mu, value = mode(res.x, *start)
        return FitResult(side="python", fixef=dict(zip(d.X_names, beta)), theta=[float(res.x)],
                         theta_names=list(d.theta_names), minus2loglik=value, objective=value,
                         fitted=mu, u=u, converged=bool(res.success), nAGQ=nAGQ, saturated=saturated_C,
                         extra={"X_names": list(d.X_names), "X": X})
