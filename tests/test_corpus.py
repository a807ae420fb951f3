"""The pinned corpus and generated cases through the crosscheck pytest plugin."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings

from crosscheck.datasets import readme_example
from crosscheck.case import Case
from crosscheck.pytest_plugin import assert_passes, corpus_examples, target_objective
from crosscheck.strategies import cases
from reference_impl.design import build_design


@pytest.mark.corpus()
def test_pinned_case_reproduces_glmer(corpus_case, compare_case):
    """Every pinned case passes in lme4 mode at each of its nAGQ values (exact mode's verdicts are
    pinned by the gate's baseline)."""
    report = compare_case(corpus_case)
    assert [c.nAGQ for c in report.results] == list(corpus_case.nagq)
    assert_passes(report)


@pytest.mark.nagq(0, 1, 5, 25)
def test_readme_example_at_each_nagq(nagq, compare_case):
    case = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=(nagq,))
    (c,) = compare_case(case).results
    assert c.nAGQ == nagq and c.verdict == "match"


@settings(max_examples=6)
@corpus_examples(argname="case")
@given(case=cases(max_groups=8, min_groups=4, family_link=("binomial", "logit"), edge="none")
       .map(lambda g: g.to_case((0, 1))))
def test_lme4_mode_design_and_objective_agree_with_glmer(case, compare_case):
    """Whenever both sides fit a well-conditioned design, lme4 mode's design and deviance function
    at identical parameters are glmer's (stages 0 and 1); pinned cases first, then generated ones,
    steered by target(). (Near-collinear covariates, cond(X) ~ 1e6 and up, move both sides'
    PIRLS solutions by rounding times cond(X): docs/findings.md.)"""
    X = build_design(case.formula, case.data, case.weights, case.offset).X
    assume(X.shape[1] == 0 or np.linalg.cond(X) < 1e4)          # no fixed effects: nothing to condition
    report = compare_case(case)
    target_objective(report)
    for c in report.results:
        assert c.diagnosis.stage_failed not in (0, 1), (c.nAGQ, c.verdict, [d for d in c.diffs if not d.ok])
