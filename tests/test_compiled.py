"""The compiled PIRLS (`reference_impl/compiled.py`) against numpy's path (`pirls._numpy_pirls`),
which it must follow step for step (issue 15).

Element functions: within 1e-14 relative of families.py's (glibc's exp, log and erf against
numpy's SIMD kernels and scipy's cephes ndtr: a few ulps). Objectives at identical parameters:
1e-10 relative in lme4 mode, the tolerance the lme4 comparison holds
(tests/test_reference_vs_glmer.py), 1e-8 in exact mode (EXACT_RTOL), on generated cases of every
family/link pair and structure ("none" stratum: well conditioned, so rounding cannot move
PIRLS's result further).
Refusals: the same error at the same parameters.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from crosscheck.generate import draw_case
from crosscheck.interrupt import Timeout, time_limit
from crosscheck.strategies import FAMILY_LINKS, STRUCTURES
from reference_impl import compiled
from reference_impl.errors import PirlsError
from reference_impl.families import LINKS, make_family
from reference_impl.model import make_model
from reference_impl.objective import DevianceFunction, initial_lp0

pytestmark = pytest.mark.skipif(compiled.numba is None, reason="numba is not installed")

OBJ_RTOL = 1e-10
# exact mode's PIRLS stops where rounding exceeds the decrease (1e-10 relative, pirls._settled) and
# ldL2 follows the mode's last digits: 2.1e-9 measured with numpy's AVX-512 kernels off
EXACT_RTOL = 1e-8
ELEMENT_RTOL = 1e-14
ETA = np.array([-800.0, -40.0, -8.0, -1.0, -1e-3, 0.0, 1e-3, 0.3, 1.0, 3.0, 8.0, 40.0, 800.0, np.nan])
MU = np.array([1e-300, 1e-12, 0.01, 0.3, 0.5, 0.9, 1.0 - 1e-12, 1.0, 2.5, 40.0])


def elementwise(f, *args):
    return np.array([f(*a) for a in zip(*args)], dtype=float)


def close(a, b, rtol=ELEMENT_RTOL):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=0.0, equal_nan=True)


@pytest.mark.parametrize("link", compiled.LINKS)
def test_link_functions_match_families(link):
    k, ref = compiled.LINKS.index(link), LINKS[link]
    with np.errstate(all="ignore"):
        for name in ("linkinv", "mu_eta", "mu_eta2"):
            close(elementwise(lambda e: getattr(compiled, name)(k, e), ETA), getattr(ref, name)(ETA.copy()))


@pytest.mark.parametrize("family", compiled.FAMILIES)
def test_family_functions_match_families(family):
    k = compiled.FAMILIES.index(family)
    fam = make_family(family, "log")
    y = np.where(MU <= 1.0, 1.0 - MU, MU) if family == "binomial" else MU[::-1].copy()
    pw = np.linspace(0.5, 3.0, MU.size)
    with np.errstate(all="ignore"):
        close(elementwise(lambda m: compiled.variance(k, m), MU), fam.variance(MU.copy()))
        close(elementwise(lambda m: compiled.dvariance(k, m), MU), fam.dvariance(MU.copy()))
        close(elementwise(lambda a, m, w: compiled.devresid(k, a, m, w), y, MU, pw), fam.devresid(y, MU.copy(), pw))


def generated(i: int):
    """A well-conditioned small case of pair i, its structure cycling through all five."""
    family_link, structure = FAMILY_LINKS[i], STRUCTURES[i % len(STRUCTURES)]
    case = draw_case("compiled", i, max_groups=12, family_link=family_link, structure=structure,
                     edge="none").to_case()
    return make_model(case.formula, case.data, case.family, case.link, case.weights, case.offset)


def values(model, nAGQ, mode, numpy_path, monkeypatch):
    """The objective at θ₀ scaled by 0.5, 1, 2 (β at the initial fit's, nudged), or its refusal."""
    monkeypatch.setattr(compiled, "ENABLED", not numpy_path)
    try:
        lp0, res = initial_lp0(model, mode)
        f = DevianceFunction(model, nAGQ, lp0, mode)
        pts = [s * model.theta0 for s in (0.5, 1.0, 2.0)]
        if nAGQ:
            pts = [np.concatenate([t, res.beta + d]) for t, d in zip(pts, (0.0, 0.05, -0.05))]
        return np.array([f(p) for p in pts]), f.last.pirls
    except PirlsError as e:
        return str(e), None


@pytest.mark.parametrize("mode", ["lme4", "exact"])
@pytest.mark.parametrize("nAGQ", [0, 1])
@pytest.mark.parametrize("i", range(len(FAMILY_LINKS)), ids=lambda i: "-".join(FAMILY_LINKS[i]))
def test_objective_compiled_equals_numpy(i, nAGQ, mode, monkeypatch):
    model = generated(i)
    assert compiled.blocks(model) is not None
    fast, res = values(model, nAGQ, mode, False, monkeypatch)
    slow, _ = values(model, nAGQ, mode, True, monkeypatch)
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow
        return
    np.testing.assert_allclose(fast, slow, rtol=OBJ_RTOL if mode == "lme4" else EXACT_RTOL, atol=0.0)
    # the decomposition formed afterwards from the kept weights is the one the loop factored
    assert abs(res.decomp.ldL2 - res.ldL2) <= 1e-12 * (1.0 + abs(res.ldL2))


@pytest.mark.parametrize("index", [12, 18])
def test_refusal_compiled_equals_numpy(index, monkeypatch):
    """Generated cases PIRLS refuses in lme4 mode at θ₀ (a NaN deviance; a downdate that is not
    positive definite): the same error from both paths."""
    case = draw_case("bench", index, max_groups=200).to_case()
    model = make_model(case.formula, case.data, case.family, case.link, case.weights, case.offset)
    assert compiled.blocks(model) is not None
    fast, _ = values(model, 0, "lme4", False, monkeypatch)
    slow, _ = values(model, 0, "lme4", True, monkeypatch)
    assert isinstance(slow, str) and fast == slow


def test_an_interruption_during_a_compiled_call_stays_itself():
    """A time limit (`crosscheck.interrupt.time_limit`: PyThreadState_SetAsyncExc) or Ctrl-C that
    arrives while numba boxes the loop's result came back as SystemError (a harness crash instead
    of a timeout): the fit raises the interruption itself."""
    model = generated(0)
    lp0, res = initial_lp0(model)
    f = DevianceFunction(model, 1, lp0)
    pars = np.concatenate([model.theta0, res.beta])
    raised = Counter()
    for k in range(120):              # without the fix about a quarter came back as SystemError
        try:
            with time_limit(1e-4 * (1 + k % 7)):
                for _ in range(200):
                    f(pars)
        except Timeout:
            raised["timeout"] += 1
        except Exception as e:                    # noqa: BLE001 — what the fix must prevent
            raised[type(e).__name__] += 1
    assert raised["timeout"] == sum(raised.values()) > 0, raised
