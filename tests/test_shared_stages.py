"""Fits that share a model share the optimizer stages already run on it (`fit._memo`,
`Model.stages`; issue 15): stage 1 is nAGQ = 0's at every nAGQ, and lme4 mode's path is also exact
mode's `lme4` start. Sharing must not change a digit: every fit on a shared model equals the same
fit on a model of its own. Reference only (no R)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import reference_impl as ri
from crosscheck.generate import draw_case
from crosscheck.sides import PythonSide, _model
from reference_impl.model import make_model

# generated cases of several families, links and structures, small enough for CI
CASES = [draw_case("thorough", i, max_groups=200).to_case((0, 1, 9)) for i in (2, 5, 8, 13)]


def _fingerprint(fit) -> str:
    """Every number a fit reports that an optimizer stage decides, to the last bit (repr)."""
    opt = fit.optinfo
    return repr((fit.minus2loglik, fit.theta, fit.fixef, fit.se, fit.u.tolist(), fit.vcov.tolist(), fit.messages,
                 fit.converged, [s.__dict__ for s in opt.stages], opt.start, opt.starts, opt.gradient,
                 None if opt.hessian is None else np.asarray(opt.hessian).tolist()))


def _fit(case, nAGQ, mode, model=None):
    try:
        return _fingerprint(ri.glmer(case.formula, case.data, family=case.family, link=case.link, nAGQ=nAGQ,
                                     weights=case.weights, offset=case.offset, mode=mode,
                                     control=case.control, model=model))
    except (ri.PirlsError, ri.ModelError, ri.OptimizerError) as e:
        return f"{type(e).__name__}: {e}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.family}-{c.link}-{c.formula}")
def test_fits_on_a_shared_model_equal_fits_on_their_own(case):
    shared = make_model(case.formula, case.data, case.family, case.link, case.weights, case.offset)
    for nAGQ in case.nagq:
        for mode in ("lme4", "exact"):
            assert _fit(case, nAGQ, mode, shared) == _fit(case, nAGQ, mode), (nAGQ, mode)
    stages = {key[:2] for key in shared.stages}
    assert {("bobyqa", "lme4"), ("bobyqa", "exact")} <= stages
    assert any(key[0] == "Nelder_Mead" for key in shared.stages)


def test_the_harness_builds_a_case_model_once_and_a_copy_its_own():
    case = CASES[0]
    exact, lme4 = PythonSide("exact"), PythonSide("lme4")
    first = lme4.fit(case, 1)
    assert first.ok
    model = _model(case)
    assert ("bobyqa", "lme4") in {key[:2] for key in model.stages}
    again = exact.fit(case, 1)
    assert again.ok and _model(case) is model
    assert ("bobyqa", "exact") in {key[:2] for key in model.stages}
    other = copy.copy(case)
    assert _model(other) is not model and not _model(other).stages
