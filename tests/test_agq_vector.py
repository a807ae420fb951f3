"""Exact-mode AGQ for one vector random-effects term (reference_impl/agq.py).

Tolerances: against a brute-force 2-D grid integral (independent of the GH code), per level, the
error falls as k grows and is ≤ 1e-6 at k = 15 (measured 6.7e-9), ≤ 1e-10 at k = 25 (measured
4.8e-12); the grid itself is converged to 2e-15 (h = 0.02 vs 0.01). With nc = 1 the vector code
equals objective.py's scalar rule to 1e-12 relative (measured 1.3e-16).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import xlogy

import reference_impl as ri
from models import readme_example
from reference_impl.agq import vector_agq_by_level
from reference_impl.model import make_model
from reference_impl.objective import DevianceFunction, initial_lp0

SLOPE = "y ~ x + (1 + x | g)"
PARS = np.array([0.7, -0.2, 0.5, 0.3, 0.5])          # theta (T11, T21, T22), beta


@pytest.fixture(scope="module")
def slope_data() -> pd.DataFrame:
    """Poisson counts, 4 groups × 8 with a correlated random intercept and slope."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(4), 8)
    x = rng.normal(size=g.size)
    b = rng.normal(size=(4, 2)) * [0.7, 0.4]
    y = rng.poisson(np.exp(0.3 + 0.5 * x + b[g, 0] + b[g, 1] * x)).astype(float)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical([f"g{i}" for i in g]),
                         "h": pd.Categorical([f"h{i % 3}" for i in range(g.size)])})


def grid_minus2loglik(d: pd.DataFrame, pars: np.ndarray, h: float = 0.02, R: float = 9.0) -> np.ndarray:
    """Per group −2 log ∫ exp(−½ devc_j(u)) du / 2π on the deviance-residual scale, by a dense
    tensor grid over u ∈ [−R, R]² — Poisson deviance written out, nothing from reference_impl."""
    T = np.array([[pars[0], 0.0], [pars[1], pars[2]]])
    s = np.arange(-R, R + h / 2, h)
    U = np.stack(np.meshgrid(s, s, indexing="ij"))                     # 2 × n × n
    out = []
    for _, grp in d.groupby("g", observed=True):
        devc = np.sum(U ** 2, axis=0)
        for x, y in zip(grp.x, grp.y):
            b = np.tensordot(T, U, axes=1)                               # b = T u
            mu = np.exp(pars[3] + pars[4] * x + b[0] + b[1] * x)
            devc += 2.0 * (xlogy(y, y / mu) - (y - mu))
        low = devc.min()
        out.append(low - 2.0 * np.log(np.sum(np.exp(-0.5 * (devc - low))) * h * h / (2.0 * np.pi)))
    return np.array(out)


def agq_by_level(model, pars, k):
    f = DevianceFunction(model, k, initial_lp0(model, "exact")[0], mode="exact")
    value = f(pars)
    by_level = vector_agq_by_level(model, pars[:model.nth], pars[model.nth:], f.last.pirls, k)
    assert value == pytest.approx(by_level.sum(), rel=1e-15)
    return by_level


def test_converges_to_brute_force_integral(slope_data):
    model = make_model(SLOPE, slope_data, "poisson")
    truth = grid_minus2loglik(slope_data, PARS)
    errors = [np.max(np.abs(agq_by_level(model, PARS, k) - truth)) for k in (3, 5, 9, 15, 25)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[3] <= 1e-6 and errors[4] <= 1e-10, errors


@pytest.mark.parametrize("k", [2, 5, 9, 25])
def test_nc1_equals_scalar_rule(k):
    model = make_model("y ~ x1 + (1 | subject)", readme_example(), "binomial")
    pars = np.array([1.3, -1.0, 0.8])
    f = DevianceFunction(model, k, initial_lp0(model, "exact")[0], mode="exact")
    scalar = f(pars)
    vector = vector_agq_by_level(model, pars[:1], pars[1:], f.last.pirls, k).sum()
    assert vector == pytest.approx(scalar, rel=1e-12, abs=0)


def test_glmer_and_devfun_take_a_vector_term_in_exact_mode(slope_data):
    fit = ri.glmer(SLOPE, slope_data, family="poisson", nAGQ=5, mode="exact")
    # exact mode converges PIRLS, so the value does not depend on the restart point lp0
    f = ri.devfun(SLOPE, slope_data, family="poisson", nAGQ=5, mode="exact", lp0=np.zeros(len(slope_data)))
    par = np.concatenate([fit.theta, list(fit.fixef.values())])
    assert f(par) == pytest.approx(fit.objective, rel=1e-12)
    assert fit.minus2loglik == pytest.approx(fit.objective + fit.saturated, rel=1e-15)
    # an optimum: no step of 1e-3 along a coordinate (inside the bounds) lowers the objective
    steps = 1e-3 * np.eye(len(par))
    moved = [p for p in np.concatenate([par + steps, par - steps]) if np.all(p >= f.lower)]
    assert all(f(p) >= fit.objective - 1e-9 for p in moved)


def test_lme4_mode_still_refuses_with_lme4s_message(slope_data):
    with pytest.raises(ri.ModelError, match="single, scalar random-effects term"):
        ri.glmer(SLOPE, slope_data, family="poisson", nAGQ=5)


def test_exact_mode_refuses_several_terms(slope_data):
    with pytest.raises(ri.ModelError, match="single random-effects term .* 2 terms"):
        ri.glmer("y ~ x + (1 | g) + (1 | h)", slope_data, family="poisson", nAGQ=5, mode="exact")


def test_exact_mode_refuses_a_huge_product_rule(slope_data):
    d = slope_data.assign(x2=slope_data.x ** 2, x3=slope_data.x ** 3)
    with pytest.raises(ri.ModelError, match=r"nAGQ = 32 with nc = 4 .* 1\.05e\+06"):
        ri.glmer("y ~ x + (1 + x + x2 + x3 | g)", d, family="poisson", nAGQ=32, mode="exact")
