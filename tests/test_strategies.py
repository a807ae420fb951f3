"""Generated cases are valid for every family/link/structure: the reference builds them, or
refuses them with a ModelError naming the problem (never another exception)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_impl as ri
from crosscheck.strategies import FAMILY_LINKS, STRUCTURES, cases
from reference_impl.model import make_model


@given(case=cases(max_groups=30))
def test_generated_cases_build_or_are_refused_cleanly(case):
    try:
        model = make_model(case.formula, case.data, case.family, case.link, case.weights)
    except ri.ModelError as err:
        assert str(err)
        return
    assert model.N == len(case.data)
    assert model.q == sum(t.nl * t.nc for t in model.design.reterms)
    assert model.scalar_single == case.scalar


@pytest.mark.parametrize("family, link", FAMILY_LINKS)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_family_link_structure_fits_or_refuses(family, link, structure):
    """One small drawn case per pair and structure, fitted in lme4 mode."""
    check_fit(family, link, structure)


@settings(max_examples=1, deadline=None)
@given(st.data())
def check_fit(family, link, structure, data):
    data = data.draw(cases(max_groups=12, min_groups=6, family_link=(family, link), structure=structure))
    assert (data.family, data.link, data.structure) == (family, link, structure)
    try:
        fit = ri.glmer(data.formula, data.data, data.family, data.link, nAGQ=1)
    except ri.PirlsError as err:             # lme4's own refusals (separation, negative eta, …)
        assert str(err)
        return
    assert fit.theta and fit.fixef
    assert fit.minus2loglik == fit.minus2loglik or fit.family not in ("binomial", "poisson")
