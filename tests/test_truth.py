"""The exact marginal likelihood (reference_impl/truth.py) against AGQ and an independent grid.

Tolerances (measured on this machine in brackets):
* cbpp, spec §10's d25 values + the saturated constant: 1e-8 absolute [2.8e-13; 2.3e-10 at
  θ = 1.2, where 25 nodes are what limits]; exact-mode AGQ(25) per level: 1e-9 [4.1e-11].
* README example, a dense trapezoid grid of the Bernoulli likelihood written out here: 1e-10
  absolute per level [3.1e-13; the grid at h = 0.01 vs 0.005 differs by 3.6e-13].
* Laplace error on cbpp at §10's first devfun point: 0.08…0.09 [0.0843], and within 1e-3 of
  lme4's own d1 − d25 − C there [0.0851; lme4's Laplace carries §3.2's 8.5e-4 PIRLS quirk].
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

import reference_impl as ri
from models import readme_example
from reference_impl.agq import vector_agq_by_level
from reference_impl.model import make_model
from reference_impl.objective import DevianceFunction
from reference_impl.truth import TrueDeviance, truth_minus2loglik, truth_mle

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
README = "y ~ x1 + (1 | subject)"
# spec §10: devfun points and lme4's d25 (saturated-relative) there; the last is the nAGQ=25 optimum
D25 = [
    ([0.64, -1.4, -1, -1.1, -1.6], 100.025410578385),
    ([1.2, -1, -0.5, -1.5, -2], 113.600291035880),
    ([0.1, -1.3, -1, -1.1, -1.5], 113.678752986516),
    ([0.647519914522493, -1.399223727829201, -0.991408883812732, -1.127809594157945, -1.579480950704825],
     100.0100305401907),
]
D1_AT_FIRST = 184.067233271407              # lme4's Laplace devfun at D25[0]'s point


@pytest.fixture(scope="module")
def cbpp(R):
    return R.eval("lme4::cbpp")


@pytest.fixture(scope="module")
def cbpp_truth(cbpp):
    return TrueDeviance(make_model(CBPP, cbpp, "binomial"))


def exact_devfun(model, nAGQ):
    return DevianceFunction(model, nAGQ, np.zeros(model.N), mode="exact")


def test_truth_equals_agq25_on_cbpp(cbpp_truth):
    model = cbpp_truth.model
    r = model.response
    saturated = model.family.saturated_aic(r.y, r.n, r.pw)
    assert cbpp_truth.saturated.sum() == pytest.approx(saturated, rel=1e-14)
    f25 = exact_devfun(model, 25)
    for pars, d25 in D25:
        truth = cbpp_truth.by_level(pars)
        assert abs(truth.sum() - (d25 + saturated)) < 1e-8
        f25(pars)
        agq = vector_agq_by_level(model, np.array(pars[:1]), np.array(pars[1:]), f25.last.pirls, 25)
        assert np.max(np.abs(truth - (agq + cbpp_truth.saturated))) < 1e-9


def grid_minus2loglik(d, pars, h=0.005, R=14.0) -> np.ndarray:
    """Per subject −2 log ∫ Π Bernoulli(y_i | expit(β0 + β1 x_i + θu)) φ(u) du by the trapezoid
    rule on [−R, R] — nothing from reference_impl."""
    theta, b0, b1 = pars
    u = np.arange(-R, R + h / 2, h)
    out = []
    for _, grp in d.groupby("subject", observed=True):
        p = expit(b0 + b1 * grp.x1.to_numpy()[:, None] + theta * u[None, :])
        like = np.prod(np.where(grp.y.to_numpy()[:, None] == 1, p, 1 - p), axis=0)
        out.append(-2 * np.log(np.sum(like * np.exp(-u * u / 2)) * h / np.sqrt(2 * np.pi)))
    return np.array(out)


@pytest.mark.parametrize("pars", [[1.3, -1.0, 0.8], [0.2, 0.5, 0.1], [3.0, -2.0, 1.0]])
def test_truth_equals_dense_grid_on_readme_example(pars):
    d = readme_example()
    f = TrueDeviance(make_model(README, d, "binomial"))
    assert np.max(np.abs(f.by_level(pars) - grid_minus2loglik(d, pars))) < 1e-10
    assert truth_minus2loglik(README, d, "binomial", pars=pars) == pytest.approx(f(pars), rel=1e-15)


def test_laplace_error_on_cbpp(cbpp_truth):
    laplace = exact_devfun(cbpp_truth.model, 1)
    pars, d25 = D25[0]
    error = laplace(pars) - cbpp_truth(pars)
    assert 0.08 < error < 0.09
    assert abs(error - (D1_AT_FIRST - d25 - cbpp_truth.saturated.sum())) < 1e-3
    small_theta = D25[2][0]                            # θ = 0.1: u barely moves μ, Laplace ~ exact
    assert abs(laplace(small_theta) - cbpp_truth(small_theta)) < 1e-3


def test_truth_mle_on_readme_example():
    d = readme_example()
    par, value = truth_mle(README, d, "binomial")
    f = TrueDeviance(make_model(README, d, "binomial"))
    assert value == pytest.approx(f(par), rel=1e-15)
    agq = ri.glmer(README, d, "binomial", nAGQ=25, mode="exact")
    agq_par = np.concatenate([agq.theta, list(agq.fixef.values())])
    assert value <= f(agq_par) + 1e-10
    assert np.max(np.abs(par - agq_par)) < 1e-3
    steps = 1e-4 * np.eye(len(par))
    assert all(f(p) >= value - 1e-10 for p in np.concatenate([par + steps, par - steps]))


def test_truth_refuses_what_it_cannot_integrate():
    d = readme_example()
    with pytest.raises(ri.ModelError, match="single scalar"):
        truth_minus2loglik("y ~ x1 + (1 + x1 | subject)", d.assign(x1=d.x1 * 1.0), pars=[1, 0, 1, 0, 0])
    with pytest.raises(ri.ModelError, match="scale parameter"):
        truth_minus2loglik(README, d.assign(y=d.y + 1.0), "Gamma", pars=[1, 0, 0])
