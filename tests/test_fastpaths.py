"""The fast paths (`predictor.py`, `factor.py`) against the general dense one (issue 5).

One scalar term → diagonal A, one vector term → batched nc×nc blocks, several terms → CHOLMOD
with the symbolic analysis of the model; the general path is Λ'Z' as a sparse matrix and a dense
Cholesky of A (what the reference does without scikit-sparse). Tolerances: factor quantities
1e-12 relative (one factorization, rounding only); objectives 1e-10 relative (PIRLS on top, the
tolerance the lme4 comparison holds, tests/test_reference_vs_glmer.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import reference_impl as ri
from models import simulated
from reference_impl import compiled, factor, model as model_module, pirls as pirls_module
from reference_impl.factor import (BlockFactor, DenseFactor, DiagonalFactor, SparseFactor)
from reference_impl.ghrule import ghrule
from reference_impl.model import make_model
from reference_impl.objective import DevianceFunction, initial_lp0
from reference_impl.predictor import SparsePredictor, predictor

FACTOR_RTOL = 1e-12
OBJ_RTOL = 1e-10

CASES = {   # name: (formula, family, the fast path's factor)
    "scalar": ("cbind(succ, trials - succ) ~ x + (1 | g)", "binomial", DiagonalFactor),
    "vector": ("count ~ x + (1 + x | g)", "poisson", BlockFactor),
    "crossed": ("cbind(succ, trials - succ) ~ x + (1 | g) + (1 | h)", "binomial", SparseFactor),
    "nested": ("count ~ x + (1 | g/nest)", "poisson", SparseFactor),
}


@pytest.fixture(autouse=True)
def numpy_path(monkeypatch):
    """These are numpy's paths; the compiled loop is held to them in tests/test_compiled.py."""
    monkeypatch.setattr(compiled, "ENABLED", False)


def rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


@pytest.fixture(scope="module")
def data():
    return simulated(seed=3, n_g=15, n_per=10)


def use_general_path(monkeypatch):
    """Every model on the general path from here on: sparse Λ'Z', dense Cholesky of A."""
    def general(model, theta):
        return SparsePredictor(model, np.asarray(theta, float))
    monkeypatch.setattr(factor, "cholmod", None)
    monkeypatch.setattr(pirls_module, "predictor", general)
    monkeypatch.setattr(model_module, "predictor", general)


def dense_A(model, theta, sqrtW):
    LamtUt = (model.design.Lambdat(theta) @ model.Zt @ sp.diags(sqrtW)).toarray()
    return LamtUt @ LamtUt.T + np.eye(model.q)


def theta_at(model, rng):
    """A θ with all entries away from 0 (diagonals positive, off-diagonals of either sign)."""
    lower = np.isfinite(model.lower)
    return np.where(lower, rng.uniform(0.3, 1.5, model.nth), rng.uniform(-0.5, 0.5, model.nth))


@pytest.mark.parametrize("name", CASES)
def test_LamtZt_keeps_Zt_pattern_and_values(data, name):
    formula, family, _ = CASES[name]
    m = make_model(formula, data, family)
    theta = theta_at(m, np.random.default_rng(1))
    assert np.array_equal(m.LamtZt(m.theta0).toarray(), m.Zt.toarray())
    expected = (m.design.Lambdat(theta) @ m.Zt).toarray()
    assert np.max(np.abs(m.LamtZt(theta).toarray() - expected)) <= FACTOR_RTOL * np.max(np.abs(expected))
    assert np.array_equal(m.LamtZt(theta).indices, m.LamtZt(m.theta0).indices)


@pytest.mark.parametrize("name", CASES)
def test_fast_factor_equals_dense_cholesky(data, name):
    """ldL2, A⁻¹b, RZX'RZX (P-invariant) and A⁻¹'s diagonal blocks of the fast factor equal the
    dense ones."""
    formula, family, kind = CASES[name]
    m = make_model(formula, data, family)
    rng = np.random.default_rng(2)
    theta, sqrtW = theta_at(m, rng), rng.uniform(0.2, 2.0, m.N)
    L = predictor(m, theta).factor(sqrtW)
    assert type(L) is kind
    A = dense_A(m, theta, sqrtW)
    assert rel(L.ldL2, np.linalg.slogdet(A)[1]) < FACTOR_RTOL
    b = rng.normal(size=(m.q, 3))
    assert rel(L.solve_A(b), np.linalg.solve(A, b)) < 1e-10          # κ(A) enters: 1e-10
    V = m.X * sqrtW[:, None]
    RZX = L.solve_L(L.LamtUt_dot(V))
    U = (m.design.Lambdat(theta) @ m.Zt @ sp.diags(sqrtW)).toarray()
    assert rel(RZX.T @ RZX, (U @ V).T @ np.linalg.solve(A, U @ V)) < 1e-10
    assert rel(L.LamtUt_dot(V[:, 0]), U @ V[:, 0]) < FACTOR_RTOL
    if kind in (DiagonalFactor, BlockFactor):                  # condVar's blocks of A⁻¹ (§7)
        nc, Ainv = m.design.reterms[0].nc, np.linalg.inv(A)
        blocks = [Ainv[j * nc:(j + 1) * nc, j * nc:(j + 1) * nc] for j in range(m.n_levels)]
        assert rel(L.Ainv_blocks(), np.stack(blocks)) < 1e-10


def points(f, rng):
    """Three parameter vectors around the initial state: θ scaled, β moved."""
    theta = theta_at(f.model, rng)
    if f.nAGQ == 0:
        return [theta, 0.7 * theta, 1.3 * theta]
    beta = initial_lp0(f.model)[1].beta
    return [np.concatenate([s * theta, beta + d]) for s, d in ((1.0, 0.0), (0.7, 0.2), (1.3, -0.15))]


def objective_values(model, nAGQ, mode, lp0, pts):
    f = DevianceFunction(model, nAGQ, lp0, mode)
    return np.array([f(p) for p in pts]), f


@pytest.mark.parametrize("mode", ["lme4", "exact"])
@pytest.mark.parametrize("nAGQ", [0, 1])
@pytest.mark.parametrize("name", CASES)
def test_objective_fast_equals_general(data, name, nAGQ, mode, monkeypatch):
    formula, family, kind = CASES[name]
    m = make_model(formula, data, family)
    lp0 = initial_lp0(m)[0]
    f_fast = DevianceFunction(m, nAGQ, lp0, mode)
    pts = points(f_fast, np.random.default_rng(4))
    fast, f_fast = objective_values(m, nAGQ, mode, lp0, pts)
    assert type(f_fast.last.pirls.decomp.L) is kind
    use_general_path(monkeypatch)
    general, f_general = objective_values(make_model(formula, data, family), nAGQ, mode, lp0, pts)
    assert type(f_general.last.pirls.decomp.L) is DenseFactor
    assert rel(fast, general) < OBJ_RTOL


def agq_dense(model, theta, beta, res, k):
    """§4.3 written densely from a PIRLS result: A dense at the weights of the kept factor, every
    node at every observation at once, level sums by the indicator matrix."""
    fam, resp = model.family, model.response
    z, w, ldnorm = ghrule(k)
    fac = model.design.reterms[0].codes
    G = np.zeros((model.q, model.N))
    G[fac, np.arange(model.N)] = 1.0
    A = dense_A(model, theta, res.decomp.sqrtW)
    sd = 1.0 / np.sqrt(np.diag(A))
    offset = model.offset + model.X @ beta
    devc0 = res.u ** 2 + G @ fam.devresid(resp.y, res.mu, resp.pw)
    uk = res.u[:, None] + sd[:, None] * z[None, :]
    etak = offset[:, None] + theta[0] * model.zvals[:, None] * uk[fac, :]
    devck = uk ** 2 + G @ fam.devresid(resp.y[:, None], fam.linkinv(etak), resp.pw[:, None])
    mult = (np.exp(-0.5 * (devck - devc0[:, None]) - ldnorm) * (w / np.sqrt(2 * np.pi))).sum(axis=1)
    return devc0.sum() + np.linalg.slogdet(A)[1] - 2.0 * np.sum(np.log(mult))


@pytest.mark.parametrize("mode", ["lme4", "exact"])
def test_scalar_agq9_fast_equals_general(data, mode, monkeypatch):
    """nAGQ = 9: the diagonal factor and the blocked, level-sorted AGQ equal PIRLS on the general
    path followed by §4.3 evaluated densely."""
    formula, family, _ = CASES["scalar"]
    m = make_model(formula, data, family)
    lp0 = initial_lp0(m)[0]
    pts = points(DevianceFunction(m, 9, lp0, mode), np.random.default_rng(5))
    fast, _ = objective_values(m, 9, mode, lp0, pts)
    use_general_path(monkeypatch)
    f = DevianceFunction(make_model(formula, data, family), 1, lp0, mode)       # the same PIRLS
    general = []
    for p in pts:
        f(p)
        general.append(agq_dense(f.model, p[:1], p[1:], f.last.pirls, 9))
    assert type(f.last.pirls.decomp.L) is DenseFactor
    assert rel(fast, general) < OBJ_RTOL


@pytest.mark.parametrize("name", ["crossed", "nested"])
def test_cholmod_equals_dense_fallback(data, name, monkeypatch):
    """Several terms: CHOLMOD (permuted, analysed once per model) and the scipy-only fallback
    give one objective; the fallback never touches CHOLMOD."""
    pytest.importorskip("sksparse")
    formula, family, _ = CASES[name]
    m = make_model(formula, data, family)
    lp0 = initial_lp0(m)[0]
    pts = points(DevianceFunction(m, 1, lp0), np.random.default_rng(6))
    with_cholmod, _ = objective_values(m, 1, "exact", lp0, pts)
    assert "symbolic" in vars(m)                                     # analysed once, kept
    monkeypatch.setattr(factor, "cholmod", None)
    m2 = make_model(formula, data, family)
    without, f = objective_values(m2, 1, "exact", lp0, pts)
    assert type(f.last.pirls.decomp.L) is DenseFactor and "symbolic" not in vars(m2)
    assert rel(with_cholmod, without) < OBJ_RTOL


def test_fit_without_cholmod(data, monkeypatch):
    """The scipy-only fallback fits a crossed model to the same optimum as CHOLMOD."""
    formula, family, _ = CASES["crossed"]
    fit = ri.glmer(formula, data, family=family, mode="exact")
    monkeypatch.setattr(factor, "cholmod", None)
    fallback = ri.glmer(formula, data, family=family, mode="exact")
    assert fallback.minus2loglik == pytest.approx(fit.minus2loglik, rel=1e-10)
    assert rel(fallback.theta, fit.theta) < 1e-5                     # optimizer tolerance
