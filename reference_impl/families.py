"""GLM families and links as lme4 1.1-31's compiled code evaluates them (spec §2).

lme4 does not use R's family functions inside PIRLS: `glmFamily.cpp` re-implements the inverse
links with their own clamps (§2.2). R's functions are used only for `linkfun` (the start
`eta0 = offset + linkfun(mustart)`, §2.1) and for links without a compiled version (sqrt).

The functions PIRLS and AGQ call on every observation (× node) clamp and combine in place on
their own temporaries: a fresh numpy temporary of that size is freshly mapped memory (glibc
returns the freed heap top to the system), and its page faults cost more than the arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special, stats

from .errors import ModelError

EPS = np.finfo(float).eps
Array = np.ndarray


@dataclass(frozen=True)
class Link:
    """A link: `linkfun` (mu → eta), `linkinv` (eta → mu), `mu_eta` = dmu/deta and `mu_eta2` =
    d²mu/deta² (unclamped; exact mode's Newton steps only, not lme4)."""

    name: str
    linkfun: Callable[[Array], Array]
    linkinv: Callable[[Array], Array]
    mu_eta: Callable[[Array], Array]
    mu_eta2: Callable[[Array], Array]


def _clamp01(p: Array) -> Array:
    """min(1 − eps, p), in place on the temporary `p`."""
    return np.minimum(p, 1.0 - EPS, out=p)


def _at_least_eps(p: Array) -> Array:
    """max(eps, p), in place on the temporary `p`."""
    return np.maximum(p, EPS, out=p)


def _plogis(eta: Array) -> Array:
    """R's `plogis`: `1 / (1 + exp(-eta))`, exp's argument capped at 709 so nothing overflows
    (beyond it the value is under eps, which the clamp of §2.2 returns anyway)."""
    p = np.negative(eta)
    np.minimum(p, 709.0, out=p)
    np.exp(p, out=p)
    p += 1.0
    return np.reciprocal(p, out=p)


def _dlogis(eta: Array) -> Array:
    e = np.exp(-np.abs(eta))
    return e / (1.0 + e) ** 2


def _d2logis(eta: Array) -> Array:
    """μ'' = μ'(1 − 2μ) = −sign(η) e(1 − e)/(1 + e)³, e = exp(−|η|): `_dlogis` times tanh(−η/2)
    on the same exp (1 − e loses digits only where μ'' is near 0)."""
    e = np.exp(-np.abs(eta))
    d = np.subtract(1.0, e)
    d *= e
    e += 1.0
    d /= e * e * e
    return np.copysign(d, -eta, out=d)


def _through_nan(f: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """`f` evaluated through NaN and ±inf outside its domain, as R and lme4's C++ do, without
    numpy's warnings: PIRLS's NaN test decides (§3.2)."""
    def g(x: Array) -> Array:
        with np.errstate(divide="ignore", invalid="ignore"):
            return f(x)
    return g


def _phi(eta: Array) -> Array:
    return np.exp(-0.5 * eta * eta) / np.sqrt(2.0 * np.pi)


LINKS: dict[str, Link] = {
    "logit": Link("logit", special.logit,
                  lambda eta: _at_least_eps(_clamp01(_plogis(eta))),
                  lambda eta: _at_least_eps(_dlogis(eta)),
                  _d2logis),
    "probit": Link("probit", special.ndtri,
                   lambda eta: _clamp01(special.ndtr(eta)),
                   _phi,
                   lambda eta: -eta * _phi(eta)),
    "cloglog": Link("cloglog", lambda mu: np.log(-np.log1p(-mu)),
                    lambda eta: _at_least_eps(_clamp01(-np.expm1(-np.exp(eta)))),
                    lambda eta: _at_least_eps(np.exp(eta - np.exp(eta))),
                    lambda eta: np.exp(eta - np.exp(eta)) * -np.expm1(eta)),
    "cauchit": Link("cauchit", lambda mu: stats.cauchy.ppf(mu),
                    lambda eta: _clamp01(0.5 + np.arctan(eta) / np.pi),
                    lambda eta: 1.0 / (np.pi * (1.0 + eta * eta)),
                    lambda eta: -2.0 * eta / (np.pi * (1.0 + eta * eta) ** 2)),
    "log": Link("log", np.log,
                lambda eta: _at_least_eps(np.exp(eta)),
                lambda eta: _at_least_eps(np.exp(eta)),
                np.exp),
    "identity": Link("identity", lambda mu: np.asarray(mu, float).copy(),
                     lambda eta: np.asarray(eta, float).copy(),
                     lambda eta: np.ones_like(eta, dtype=float),
                     lambda eta: np.zeros_like(eta, dtype=float)),
    "inverse": Link("inverse", lambda mu: 1.0 / mu,
                    lambda eta: 1.0 / eta,
                    lambda eta: -1.0 / (eta * eta),
                    lambda eta: 2.0 / eta ** 3),
    "sqrt": Link("sqrt", np.sqrt, lambda eta: eta * eta, lambda eta: 2.0 * eta,
                 lambda eta: np.full_like(eta, 2.0, dtype=float)),
    "1/mu^2": Link("1/mu^2", lambda mu: 1.0 / (mu * mu),
                   _through_nan(lambda eta: 1.0 / np.sqrt(eta)),
                   _through_nan(lambda eta: -1.0 / (2.0 * eta ** 1.5)),
                   lambda eta: 0.75 / eta ** 2.5),
}


def _ylogy(y: Array, m: Array) -> Array:
    """`y * log(y/m)`, 0 where y is 0 whatever m (R's `y_log_y`: 0·log(0/0) was NaN here, R's 0);
    m may be 0, so callers hold `np.errstate(divide="ignore", invalid="ignore")`."""
    v = np.ones(np.broadcast_shapes(np.shape(y), np.shape(m)))
    np.divide(y, m, out=v, where=np.not_equal(y, 0.0))       # log 1 = 0 where y is 0
    np.log(v, out=v)
    v *= y
    return v


def _own_outcome(success: Array) -> Callable[[Array], Array]:
    """`p ↦ p` where `success`, `p ↦ 1 − p` elsewhere, both exactly (±p plus 0 or 1): the
    probability of a 0/1 response's own outcome, whose log is the only nonzero term of devResid
    and aic. The signs are made once, for fixed data."""
    sign = np.where(success, 1.0, -1.0)
    complement = np.where(success, 0.0, 1.0)

    def own(p):
        v = np.multiply(sign, p)
        v += complement
        return v
    return own


def _xlogy_factor(x: Array) -> Callable[[Array], Array]:
    """`m ↦ x log m`, 0 where x == 0 (scipy's `xlogy` for fixed x, on numpy's vectorized log)."""
    zero = (x == 0.0).astype(float)

    def xlogm(m):
        return x * np.log(m + zero)              # log(m + 1) is finite where x == 0
    return xlogm


@dataclass(frozen=True)
class Response:
    """The glmResp data after `family$initialize` (§2.1): `y`, trials `n`, prior weights `pw`
    (trials × prior weights for cbind), and `mustart`."""

    y: Array
    n: Array
    pw: Array
    mustart: Array
    warnings: tuple[str, ...] = ()


class Family:
    """A distribution with a link; `devresid`, `aic` and `variance` follow `glmFamily.cpp` (§2.2)."""

    name = ""
    links: tuple[str, ...] = ()
    default_link = ""
    has_scale = False

    def __init__(self, link: str | None = None):
        link = link or self.default_link
        if link not in self.links:
            raise ModelError(f"link '{link}' is not available for family '{self.name}' "
                             f"(choose one of: {', '.join(self.links)})")
        self.link = LINKS[link]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(link={self.link.name!r})"

    def linkinv(self, eta: Array) -> Array:
        return self.link.linkinv(eta)

    def mu_eta(self, eta: Array) -> Array:
        return self.link.mu_eta(eta)

    def variance(self, mu: Array) -> Array:
        raise NotImplementedError

    def dvariance(self, mu: Array) -> Array:
        """dV/dmu (exact mode's Newton steps)."""
        raise NotImplementedError

    def devresid(self, y: Array, mu: Array, pw: Array) -> Array:
        return self.devresid_at(y, pw)(mu)

    def devresid_at(self, y: Array, pw: Array) -> Callable[[Array], Array]:
        """`devresid` as a function of μ for fixed data, its μ-free parts computed once (PIRLS
        asks at every iterate: `Model.devresid`); families define `devresid` or this."""
        return lambda mu: self.devresid(y, mu, pw)

    def aic(self, y: Array, n: Array, mu: Array, pw: Array, dev: float) -> float:
        return self.aic_at(y, n, pw)(mu, dev)

    def aic_at(self, y: Array, n: Array, pw: Array) -> Callable[[Array, float], float]:
        """`aic` as a function of `(mu, dev)` for fixed data, its μ-free parts (log-binomial
        coefficients, log y!) computed once; families define `aic` or this."""
        return lambda mu, dev: self.aic(y, n, mu, pw, dev)

    def initialize(self, response, prior_weights: Array) -> Response:
        """R's `family$initialize` for a `design.Response` (§2.1)."""
        raise NotImplementedError

    def saturated_aic(self, y: Array, n: Array, pw: Array) -> float:
        """−2 × the saturated log-likelihood, `aic(mu = y)`: the constant between lme4's nAGQ>1
        scale and the absolute scale (§4.3). μ-dependent (NaN) for families with a scale."""
        if self.has_scale:
            return float("nan")
        return self.aic(y, n, y, pw, 0.0)


def _single_column(response, family: str) -> Array:
    """The response of a non-binomial family: numeric or logical (lme4's mkRespMod)."""
    if response.kind in ("cbind", "factor"):
        what = "cbind(successes, failures)" if response.kind == "cbind" else "factor"
        raise ModelError(f"a {what} response is only for the binomial family, not '{family}'")
    return np.asarray(response.y, float)


class Binomial(Family):
    name = "binomial"
    links = ("logit", "probit", "cloglog", "cauchit", "log")
    default_link = "logit"

    def variance(self, mu):
        return _at_least_eps(mu * (1.0 - mu))

    def dvariance(self, mu):
        return 1.0 - 2.0 * mu

    def devresid_at(self, y, pw):
        """`2 pw (y log(y/μ) + (1 − y) log((1 − y)/(1 − μ)))`; for a 0/1 response one of the two
        terms is 0, the other `log(1/μ)` or `log(1/(1 − μ))`: one log per row, the same digits."""
        two_pw = 2.0 * pw
        if np.all((y == 0.0) | (y == 1.0)):
            own = _own_outcome(y == 1.0)

            def dev(mu):
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = own(mu)
                    np.log(np.divide(1.0, v, out=v), out=v)
                v *= two_pw
                return v
            return dev

        def dev(mu):
            with np.errstate(divide="ignore", invalid="ignore"):
                v = _ylogy(y, mu)
                v += _ylogy(1.0 - y, 1.0 - mu)
            v *= two_pw
            return v
        return dev

    def aic_at(self, y, n, pw):
        """`-2 Σ c_i log dbinom(round(m_i y_i), round(m_i), mu_i)` (§2.2)."""
        m = n if np.any(n > 1) else pw
        yy = np.round(m * y)
        m = np.round(m)
        c = np.where(m <= 0, 0.0, pw / np.where(m <= 0, 1.0, m))
        used = slice(None) if np.all(c != 0) else c != 0       # rows with c = 0 add nothing
        if np.all((yy == 0) | (yy == m)):          # all successes or all failures (0/1 data):
            own = _own_outcome(yy > 0)              # m log μ or m log(1 − μ), lchoose 0, one log per row

            def aic(mu, dev):
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = own(mu)
                    log_dbinom = np.multiply(m, np.log(v, out=v), out=v)
                return -2.0 * float((c * log_dbinom)[used].sum())
            return aic
        with np.errstate(divide="ignore", invalid="ignore"):
            lchoose = special.gammaln(m + 1) - special.gammaln(yy + 1) - special.gammaln(m - yy + 1)
        successes, failures = _xlogy_factor(yy), _xlogy_factor(m - yy)

        def aic(mu, dev):
            with np.errstate(divide="ignore", invalid="ignore"):
                log_dbinom = lchoose + successes(mu) + failures(1.0 - mu)
            return -2.0 * float((c * log_dbinom)[used].sum())
        return aic

    def initialize(self, response, prior_weights):
        warnings: list[str] = []
        if response.kind == "cbind":
            s = np.asarray(response.successes, float)
            f = np.asarray(response.failures, float)
            for side, v in (("successes", s), ("failures", f)):
                bad = np.flatnonzero(v < 0)
                if bad.size:
                    raise ModelError(f"binomial cbind() {side} must be >= 0: row {bad[0]} has {v[bad[0]]:g}")
            n = s + f
            with np.errstate(invalid="ignore", divide="ignore"):
                y = np.where(n == 0, 0.0, s / np.where(n == 0, 1.0, n))
            if np.any(np.abs(s - np.round(s)) > 1e-3) or np.any(np.abs(f - np.round(f)) > 1e-3):
                warnings.append("non-integer counts in a binomial glm!")
            pw = prior_weights * n
            mustart = (n * y + 0.5) / (n + 1.0)
            return Response(y, n, pw, mustart, tuple(warnings))
        y = np.asarray(response.y, float).copy()
        pw = np.asarray(prior_weights, float)
        y[pw == 0] = 0.0
        bad = np.flatnonzero((y < 0) | (y > 1))
        if bad.size:
            raise ModelError(f"binomial response must be in [0, 1] (0/1, logical, factor or "
                             f"proportion with weights): row {bad[0]} has y = {y[bad[0]]:g}")
        if np.any(np.abs(pw * y - np.round(pw * y)) > 1e-3):
            warnings.append("non-integer #successes in a binomial glm!")
        mustart = (pw * y + 0.5) / (pw + 1.0)
        return Response(y, np.ones_like(y), pw, mustart, tuple(warnings))


class Poisson(Family):
    name = "poisson"
    links = ("log", "sqrt", "identity")
    default_link = "log"

    def variance(self, mu):
        return mu

    def dvariance(self, mu):
        return np.ones_like(mu)

    def devresid(self, y, mu, pw):
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2.0 * pw * (_ylogy(y, mu) - (y - mu))

    def aic_at(self, y, n, pw):
        """`-2 Σ pw_i log dpois(y_i, mu_i)`, +Inf for non-integer y (§2.2)."""
        log_y_factorial = special.gammaln(y + 1)
        whole = y == np.round(y)
        ylog = _xlogy_factor(y)

        def aic(mu, dev):
            with np.errstate(divide="ignore", invalid="ignore"):
                log_dpois = ylog(mu) - mu - log_y_factorial
                if not whole.all():
                    log_dpois = np.where(whole, log_dpois, -np.inf)
                return -2.0 * float((log_dpois * pw).sum())
        return aic

    def initialize(self, response, prior_weights):
        y = _single_column(response, self.name)
        bad = np.flatnonzero(y < 0)
        if bad.size:
            raise ModelError(f"negative values not allowed for the 'Poisson' family: row {bad[0]} has y = {y[bad[0]]:g}")
        bad = np.flatnonzero(y != np.round(y))
        if bad.size:
            raise ModelError(f"Poisson counts must be whole numbers: row {bad[0]} has y = {y[bad[0]]:g}")
        return Response(y, np.ones_like(y), np.asarray(prior_weights, float), y + 0.1)


class _PositiveResponse(Family):
    """Families with a dispersion parameter (`useSc = 1`, §2.2), `mustart = y`."""

    has_scale = True

    def initialize(self, response, prior_weights):
        y = _single_column(response, self.name)
        bad = np.flatnonzero(y <= 0)
        if bad.size:
            raise ModelError(f"non-positive values not allowed for the '{self.name}' family: "
                             f"row {bad[0]} has y = {y[bad[0]]:g}")
        return Response(y, np.ones_like(y), np.asarray(prior_weights, float), y.copy())


class Gamma(_PositiveResponse):
    name = "Gamma"
    links = ("inverse", "log", "identity")
    default_link = "inverse"

    def variance(self, mu):
        return mu * mu

    def dvariance(self, mu):
        return 2.0 * mu

    def devresid(self, y, mu, pw):
        with np.errstate(divide="ignore", invalid="ignore"):      # mu ≤ 0: NaN, inf (§3.2)
            return -2.0 * pw * (np.log(y / mu) - (y - mu) / mu)

    def aic_at(self, y, n, pw):
        """`-2 Σ pw_i log dgamma(y_i, shape = 1/φ, scale = μ_i φ) + 2`, φ = dev / Σ pw (§2.2): the
        density written out, log y and Σ pw computed once (scipy.stats' logpdf spent a quarter
        of a small Gamma fit checking its arguments)."""
        log_y, wsum = np.log(y), float(np.sum(pw))

        def aic(mu, dev):
            disp = np.float64(dev) / wsum
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # dev = 0 (exact fit): C++'s inf
                shape = 1.0 / disp
                log_scale = np.log(mu * disp)
                logdens = (shape - 1.0) * log_y - y / (mu * disp) - special.gammaln(shape) - shape * log_scale
            return -2.0 * float(np.sum(pw * logdens)) + 2.0
        return aic


class InverseGaussian(_PositiveResponse):
    name = "inverse.gaussian"
    links = ("1/mu^2", "inverse", "log", "identity")
    default_link = "1/mu^2"

    def variance(self, mu):
        return mu ** 3

    def dvariance(self, mu):
        return 3.0 * mu * mu

    def devresid(self, y, mu, pw):
        return pw * (y - mu) ** 2 / (y * mu * mu)

    def aic(self, y, n, mu, pw, dev):
        wtsum = float(np.sum(pw))
        return wtsum * (np.log(dev / wtsum * 2.0 * np.pi) + 1.0) + 3.0 * float(np.sum(np.log(y) * pw)) + 2.0


class Gaussian(Family):
    """Gaussian with a non-identity link (identity is an LMM: lme4 redirects to lmer)."""

    name = "gaussian"
    links = ("log", "inverse")
    default_link = "log"
    has_scale = True

    def variance(self, mu):
        return np.ones_like(mu)

    def dvariance(self, mu):
        return np.zeros_like(mu)

    def devresid(self, y, mu, pw):
        return pw * (y - mu) ** 2

    def aic(self, y, n, mu, pw, dev):
        nn = float(mu.size)
        return nn * (np.log(2.0 * np.pi * dev / nn) + 1.0) + 2.0 - float(np.sum(np.log(pw)))

    def initialize(self, response, prior_weights):
        y = _single_column(response, self.name)
        if (self.link.name == "log" and np.any(y <= 0)) or (self.link.name == "inverse" and np.any(y == 0)):
            raise ModelError("cannot find valid starting values: please specify some "
                             f"(gaussian with link '{self.link.name}' needs y > 0)")
        return Response(y, np.ones_like(y), np.asarray(prior_weights, float), y.copy())


FAMILIES: dict[str, type[Family]] = {
    f.name: f for f in (Binomial, Poisson, Gamma, InverseGaussian, Gaussian)
}


def make_family(family: str | Family, link: str | None = None) -> Family:
    """A family instance from its R name (`"binomial"`, `"poisson"`, `"Gamma"`, …) and link."""
    if isinstance(family, Family):
        return family
    if family == "gaussian" and (link in (None, "identity")):
        raise ModelError("family 'gaussian' with the identity link is a linear mixed model "
                         "(lme4 refits it with lmer); not supported by glmer here")
    if family.startswith("quasi"):
        raise ModelError('"quasi" families cannot be used in glmer')
    if family not in FAMILIES:
        raise ModelError(f"unknown family '{family}' (choose one of: {', '.join(FAMILIES)})")
    return FAMILIES[family](link)
