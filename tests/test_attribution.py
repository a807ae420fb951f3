"""Error attribution against the exact likelihood, with real glmer and glmmTMB.

Stated tolerances: AGQ(25) equals the truth to 1e-8 in −2logLik (the truth is integrated to
1e-13 and maximized by L-BFGS-B); the Laplace approximation error is positive and of the size
measured here (README 0.0715, cbpp 0.0858); lme4 mode equals glmer to 1e-9 in −2logLik;
glmer lies 0…1e-3 above exact mode (cbpp nAGQ=1: 5.7e-4, the penultimate-weights factor, §3.2);
glmmTMB's Laplace equals exact mode's to 1e-5.
"""
from __future__ import annotations

import pytest

from crosscheck.attribution import attribute, not_attributable
from crosscheck.case import Case
from crosscheck.datasets import readme_example, simulated
from crosscheck.investigate import investigate
from crosscheck.render import render_attribution
from crosscheck.sides import RSide

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
VECTOR = "count ~ x + (1 + x | g)"


@pytest.fixture(scope="module")
def readme(R):
    return attribute(Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial",
                               nagq=[0, 1, 25], name="readme"), RSide(R))


@pytest.fixture(scope="module")
def cbpp(R):
    return attribute(Case.make(R.dataset("lme4", "cbpp"), CBPP, "binomial", nagq=[1, 9, 25],
                               name="cbpp"), RSide(R))


@pytest.mark.parametrize("which, laplace", [("readme", 0.0715), ("cbpp", 0.0858)])
def test_components(request, which, laplace):
    a = request.getfixturevalue(which)
    c = lambda k, name: a.component(k, name).d_minus2loglik          # noqa: E731
    assert "Gauss–Kronrod" in a.truth_method and a.evidence == []
    assert abs(c(25, "approximation")) < 1e-8
    assert c(1, "approximation") == pytest.approx(laplace, abs=1e-3)
    for row in a.rows:
        k = row.nAGQ
        assert abs(c(k, "implementation")) < 1e-9
        assert -1e-9 < c(k, "lme4 numerical") < 1e-3
        assert row.truth_cost > -1e-9
        e = row.estimates
        total = e["lme4"].minus2loglik - e["truth"].minus2loglik
        parts = sum(c(k, name) for name in ("approximation", "lme4 numerical", "implementation"))
        assert parts == pytest.approx(total, abs=1e-12)
    assert abs(c(1, "referee")) < 1e-5
    text = render_attribution(a)
    assert "truth cost" in text and "referee" in text


def test_cbpp_penultimate_weights(cbpp):
    """glmer's Laplace optimum lies 5.7e-4 above exact mode's: lme4 keeps the factor of the
    penultimate PIRLS weights (spec §3.2), README: 184.0531328 vs 184.0525637."""
    assert cbpp.component(1, "lme4 numerical").d_minus2loglik == pytest.approx(5.69e-4, abs=2e-5)
    assert cbpp.rows[0].estimates["exact"].minus2loglik == pytest.approx(184.0525637, abs=1e-6)


def test_vector_term_against_agq_truth(R):
    """One vector term: glmer refuses nAGQ = 5, the report says so and compares the exact-mode
    AGQ(5) fit with the truth (exact-mode AGQ at growing k, converged to 1e-7); AGQ(5) is
    closer to it than the Laplace approximation."""
    case = Case.make(simulated(), VECTOR, "poisson", nagq=[1, 5], name="vector")
    side = RSide(R)
    a = attribute(case, side)
    assert "exact-mode AGQ" in a.truth_method
    ks = [e["nAGQ"] for e in a.evidence]
    assert ks[:2] == [9, 15] and abs(a.evidence[-1]["change"]) <= 1e-7
    row1, row5 = a.rows
    assert {c.name for c in row1.components} == {"approximation", "lme4 numerical",
                                                 "implementation", "referee"}
    assert [c.name for c in row5.components] == ["approximation"]
    assert row5.estimates["glmer"].error and "single, scalar" in row5.estimates["glmer"].error
    assert any("no glmer fit at nAGQ = 5" in n for n in row5.notes)
    approx1, approx5 = (a.component(k, "approximation").d_minus2loglik for k in (1, 5))
    assert 0 < approx5 < approx1 / 10
    inv = investigate(case, 5, "exact", r_side=side)
    assert inv.verdict == "r-refused" and not inv.axes
    assert any("glmer refused" in n for n in inv.notes)


def test_not_attributable():
    data = simulated()
    assert "single random-effects term" in not_attributable(
        Case.make(data, "count ~ x + (1 | g) + (1 | h)", "poisson"))
    assert "scale parameter" in not_attributable(Case.make(data, "pos ~ x + (1 | g)", "Gamma"))
