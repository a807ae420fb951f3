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
