"""The derivatives exact mode's Newton steps use (`Link.mu_eta2`, `Family.dvariance`) against
central differences of the functions lme4 evaluates (`linkinv`, `mu_eta`, `variance`)."""
from __future__ import annotations

import numpy as np
import pytest

from reference_impl.families import FAMILIES, LINKS, make_family

# η inside every link's domain and away from the clamps: 0.3…1.2 keeps μ in (0, 1) for the
# binomial links and positive for the others.
ETA = np.linspace(0.3, 1.2, 7)
H = 1e-5


@pytest.mark.parametrize("name", sorted(LINKS))
def test_mu_eta2_is_the_derivative_of_mu_eta(name):
    link = LINKS[name]
    eta = ETA if name != "log" else ETA - 2.0
    central = (link.mu_eta(eta + H) - link.mu_eta(eta - H)) / (2 * H)
    np.testing.assert_allclose(link.mu_eta2(eta), central, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dvariance_is_the_derivative_of_the_variance(family):
    fam = make_family(family, "log")
    mu = np.linspace(0.2, 0.8, 7)
    central = (fam.variance(mu + H) - fam.variance(mu - H)) / (2 * H)
    np.testing.assert_allclose(fam.dvariance(mu), central, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mu", [[1.0, 2.0], [1.5, 2.0]])
def test_gamma_aic_at_a_zero_deviance_is_rs(R, mu):
    """An exact fit (deviance 0) makes the dispersion 0: R's `Gamma()$aic` gives NaN there, and
    so does the reference (it raised ZeroDivisionError, a crash, in the thorough sweep)."""
    y, one = np.array([1.0, 2.0]), np.ones(2)
    expected = R.eval(f"suppressWarnings(Gamma()$aic(c(1, 2), 1, c({mu[0]}, {mu[1]}), c(1, 1), 0))")
    got = make_family("Gamma", "log").aic(y, one, np.array(mu), one, 0.0)
    np.testing.assert_equal(got, float(np.asarray(expected).ravel()[0]))


@pytest.mark.parametrize("y, wt", [
    ([0, 1, 1, 0, 0, 1], [1] * 6),                  # 0/1: one log a row (the term of y's own outcome)
    ([0, 1, 1, 0, 0, 1], [2] * 6),                  # all successes or all failures of 2 trials
    ([0, 0.25, 0.5, 1, 0.75, 0.5], [4] * 6),        # proportions: both terms
])
def test_binomial_devresid_and_aic_are_rs(R, y, wt):
    """`binomial()$dev.resids` and `$aic` at μ from the probit tail's 0 (R's y log(y/μ) is 0 for
    y = 0; the reference computed 0·log(0/0) = NaN there before) to 1 − 1e-3."""
    mu = [0.0, 0.3, 0.999, 1e-10, 0.7, 1e-300]
    vec = lambda v: "c(" + ", ".join(repr(float(x)) for x in v) + ")"      # noqa: E731
    dev_r = np.asarray(R.eval(f"binomial()$dev.resids({vec(y)}, {vec(mu)}, {vec(wt)})"), float)
    aic_r = float(np.asarray(R.eval(f"binomial()$aic({vec(y)}, rep(1, 6), {vec(mu)}, {vec(wt)}, 0)")).ravel()[0])
    fam, y, mu, wt = make_family("binomial", "probit"), np.array(y, float), np.array(mu), np.array(wt, float)
    np.testing.assert_allclose(fam.devresid(y, mu, wt), dev_r, rtol=1e-15, atol=0)
    np.testing.assert_allclose(fam.aic_at(y, np.ones(6), wt)(mu, 0.0), aic_r, rtol=1e-12)


def test_poisson_devresid_is_rs_where_mu_is_0(R):
    """y = 0 at μ = 0 (an identity link at its boundary): R's deviance residual 2μ = 0, not NaN."""
    y, mu, wt = np.array([0.0, 0.0, 3.0, 1.0]), np.array([0.0, 2.0, 3.0, 0.5]), np.array([1.0, 1.0, 1.0, 2.0])
    dev_r = np.asarray(R.eval("poisson()$dev.resids(c(0, 0, 3, 1), c(0, 2, 3, 0.5), c(1, 1, 1, 2))"), float)
    np.testing.assert_allclose(make_family("poisson", "identity").devresid(y, mu, wt), dev_r, rtol=1e-15, atol=0)
