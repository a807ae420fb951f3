"""Adaptive Gauss–Hermite beyond lme4: one vector random-effects term (exact mode only).

lme4 restricts nAGQ > 1 to a single scalar term (§4.3). With one grouping factor and nc
coefficients per level, A = Λ'Z'WZΛ + I is still block diagonal, so the likelihood factorizes
into one nc-dimensional integral per level j. §4.3 generalizes with a product rule over k^nc nodes
z, centred at the conditional mode û_j and scaled by the Cholesky factor L_j of the block A_j:

    −2 log L_j ≈ devc0_j + log|A_j| − 2 log mult_j,
    mult_j = Σ_z Π w · exp(|z|²/2 − ½(devc_j(û_j + L_j^{-T} z) − devc0_j)),

with devc_j(u) = |u_j|² + Σ_{i∈j} devResid_i on lme4's deviance-residual (saturated-relative)
scale, so `fit.saturated` converts it to the absolute scale as for §4.3. With nc = 1 this is
§4.3's rule. Only meaningful at a converged mode, hence exact mode.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from .errors import ModelError
from .ghrule import ghrule

MAX_NODES = 10 ** 6          # k^nc nodes per level
CHUNK_ENTRIES = 2 ** 22      # N × nodes evaluated at once (memory bound, ~32 MB per array)


def check_vector_agq(model, nAGQ: int) -> None:
    """Exact-mode AGQ needs one random-effects term and a product rule of reasonable size."""
    terms = model.design.reterms
    if len(terms) != 1:
        raise ModelError("nAGQ > 1 needs a single random-effects term (one grouping factor, scalar or "
                         f"vector); this model has {len(terms)} terms: "
                         + ", ".join(f"({' + '.join(t.cnms)} | {t.group})" for t in terms))
    nc = terms[0].nc
    if nAGQ ** nc > MAX_NODES:
        raise ModelError(f"nAGQ = {nAGQ} with nc = {nc} coefficients per level needs nAGQ^nc = "
                         f"{float(nAGQ) ** nc:.3g} quadrature nodes per level (at most {MAX_NODES:.0e}): "
                         "lower nAGQ")


def level_sums(model) -> sp.csr_matrix:
    """nl × N indicator of the single term's levels: `G @ v` sums v within each level."""
    t, N = model.design.reterms[0], model.N
    return sp.csr_matrix((np.ones(N), (t.codes, np.arange(N))), shape=(t.nl, N))


def precision_blocks(model, theta, eta: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """The diagonal blocks A_j = I + Σ_{i∈j} v_i v_i', v_i = W_i^½ T' z_i (nl × nc × nc) of
    A = Λ'Z'WZΛ + I at the weights of (eta, mu) (§3.1 step 2)."""
    fam, resp, d = model.family, model.response, model.design
    t = d.reterms[0]
    sqrtW = fam.mu_eta(eta) * np.sqrt(resp.pw / fam.variance(mu))
    V = (t.mm @ d.T(theta)[0]) * sqrtW[:, None]                    # row i: (W_i^½ T' z_i)'
    outer = (V[:, :, None] * V[:, None, :]).reshape(model.N, t.nc * t.nc)
    return np.eye(t.nc) + (level_sums(model) @ outer).reshape(t.nl, t.nc, t.nc)


def product_rule(k: int, nc: int) -> tuple[np.ndarray, np.ndarray]:
    """The k^nc-node product of `ghrule(k)`: nodes (K × nc) and log weights (K)."""
    z, w, _ = ghrule(k)
    grid = np.meshgrid(*([z] * nc), indexing="ij")
    logw = np.meshgrid(*([np.log(w)] * nc), indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1), np.sum([g.ravel() for g in logw], axis=0)


def vector_agq_by_level(model, theta, beta, res, k: int) -> np.ndarray:
    """Per level, `devc0_j + log|A_j| − 2 log mult_j` at c(theta, beta), from the converged
    PIRLS result `res` (u-only, exact mode); the deviance function's value is the sum."""
    fam, resp, t = model.family, model.response, model.design.reterms[0]
    nl, nc = t.nl, t.nc
    G = level_sums(model)
    L = np.linalg.cholesky(precision_blocks(model, theta, res.eta, res.mu))
    LinvT = np.swapaxes(np.linalg.inv(L), 1, 2)                           # L_j^{-T}
    uhat = res.u.reshape(nl, nc)
    devc0 = np.sum(uhat ** 2, axis=1) + G @ model.devresid(res.mu)
    offset = model.offset + model.X @ beta
    ZLam = model.LamtZt(theta).T.tocsr()                                  # N × q
    z, logw = product_rule(k, nc)
    chunk = max(1, CHUNK_ENTRIES // model.N)
    logmult = np.full(nl, -np.inf)
    for lo in range(0, len(z), chunk):
        zc = z[lo:lo + chunk]
        U = uhat[:, :, None] + LinvT @ zc.T[None, :, :]                   # nl × nc × K
        mu = fam.linkinv(offset[:, None] + ZLam @ U.reshape(nl * nc, -1))
        devc = np.sum(U ** 2, axis=1) + G @ fam.devresid(resp.y[:, None], mu, resp.pw[:, None])
        terms = logw[lo:lo + chunk] + 0.5 * np.sum(zc ** 2, axis=1) - 0.5 * (devc - devc0[:, None])
        logmult = np.logaddexp(logmult, logsumexp(terms, axis=1))
    ldA = 2.0 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)
    return devc0 + ldA - 2.0 * logmult
