"""The noise band's perturbations and its reading of a flat objective (crosscheck/noise.py)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from crosscheck import diffs as D
from crosscheck.case import Case
from crosscheck.compare import compare_case
from crosscheck.noise import WITHIN, NoiseBand, objective_floor, stopping_rounded, ulp_moved
from crosscheck.sides import PythonSide, RSide
from crosscheck.tolerances import Tolerance
from reference_impl.errors import DOWNDATE_NOT_PD, HALVINGS_FAILED, NAN_VALUE, NOT_CONVERGED

LME4_PIRLS_ERRORS = (NAN_VALUE, HALVINGS_FAILED, NOT_CONVERGED, DOWNDATE_NOT_PD)

FIXTURES = Path(__file__).parent / "fixtures"


def test_stopping_test_on_its_threshold_is_rounding_s_choice():
    """gen:thorough:52 (binomial(cauchit), quasi-separated) at θ = (4724.83, 884.18), nAGQ 0: the
    relative change of the penalized deviance lands on tolPwrss = 1e-7 within its own rounding,
    so the test moved by ±1e-5 of itself takes both decisions — three PIRLS iterations apart, the
    lagged factor and the objective 0.088 apart (glmer stops at the earlier one)."""
    case = Case.load(FIXTURES / "pirls-stopping-knife-edge.json")
    theta = np.array([4724.82838085848, 884.180186586871])
    low, high = (PythonSide("lme4").evaluate(c, 0, [theta], None)[0] for c in stopping_rounded(case))
    assert low.iterations != high.iterations
    assert abs(low.value - high.value) > 0.05


def test_the_stopping_band_makes_that_difference_noise(R):
    """The same case against glmer: where the two sides' objectives part at the reference's
    optimum, the difference is within the band, and the band says it moved the stopping test."""
    case = Case.load(FIXTURES / "pirls-stopping-knife-edge.json").with_nagq((0,))
    (c,) = compare_case(case, ("lme4",), noise="all").results
    assert c.passed, c.verdict
    assert c.diagnosis.noise.stopping == 1e-5
    for d in c.diffs:
        if d.stage == 1 and d.gating and not d.ok:
            assert d.within_noise and d.noise_units <= WITHIN, d


def test_a_perfect_fit_s_optimum_is_noise(R):
    """gen:thorough:83 (binomial(logit), 5 rows, nested): the deviance is ~1e-15 at every θ, so
    each optimizer stops where rounding leads it. Each deviance function rates the two optima
    equal within its rounding floor: the objective is flat, and θ's differences are noise."""
    case = Case.load(FIXTURES / "flat-objective.json").with_nagq((0,))
    (c,) = compare_case(case, ("lme4",), noise="all").results
    band = c.diagnosis.noise
    assert c.passed, c.verdict
    assert band.flat and band.flat_gap <= WITHIN * max(band.floor, 1e-300)
    for d in c.diffs:
        if d.stage == 2 and d.gating and not d.ok:
            assert d.within_noise and d.noise >= abs(d.abs), d


def _band(flat: bool, apart: bool) -> NoiseBand:
    band = NoiseBand(flat_gap=1e-15 if flat else 1.0, floor=1e-14, apart=apart)
    band.add("r", [D.scalar("objective@r", 1.0, 1.0 + 1e-16, Tolerance(0, 0), 1)])
    band.add("r", [D.scalar("se[x]", 1.0, 1.0 + 1e-9, Tolerance(0, 0), 3)])
    return band


def test_flat_objective_widens_the_optimum_and_its_consequences_only_where_the_optima_lie_apart():
    """Stage 2's band becomes at least the difference where the objective is flat; stage 3's only
    where the optima lie apart (an SE difference at one optimum stays the SEs' own); never
    where the objective tells the optima apart, and never for exact mode's never-worse checks."""
    theta = D.scalar("theta[g]", 0.0, 0.8, Tolerance(1e-6, 0), 2)
    se = D.scalar("se[x]", 2.0, 3.0, Tolerance(1e-6, 0), 3)
    excess = D.scalar("minus2loglik_excess", 1.0, 0.0, Tolerance(1e-9, 0), 2)
    assert _band(flat=True, apart=False).of(theta) == 0.8
    assert _band(flat=True, apart=False).of(se) < 1e-8
    assert _band(flat=True, apart=True).of(se) == 1.0
    assert _band(flat=False, apart=True).of(theta) is None
    assert _band(flat=False, apart=True).of(se) < 1e-8
    assert _band(flat=True, apart=True).of(excess) < 1e-15


def test_ulp_moves_keep_zeros_and_the_floor_grows_with_the_terms():
    (a,), (b,) = ulp_moved([np.array([0.0, 1.0, -2.0])])
    assert a[0] == b[0] == 0.0 and a[1] < 1.0 < b[1] and a[2] < -2.0 < b[2]
    assert abs(a[1] - 1.0) < 1e-14
    assert objective_floor(100, 1e3) == 100 * np.finfo(float).eps * 1001


def test_exact_mode_allows_lme4_s_pirls_error_and_always_checks_never_worse(R):
    """gen:thorough:5 (binomial, near-collinear x, x2; 20 rows), nAGQ 1, exact mode: at exact
    mode's optimum lme4 stops PIRLS after 2 iterations and glmer's objective stands 2.3e-5
    relative above the exact one — lme4's PIRLS error, which the reference's lme4 mode measures
    at the same point, so it is within the band. Without the band the stage fails, and exact
    mode's never-worse check is made all the same."""
    case = Case.load(FIXTURES / "exact-lme4-pirls-error.json")
    (c,) = compare_case(case, ("exact",), noise="failing").results
    assert c.passed and c.diagnosis.noise.lme4_pirls, c.verdict
    for d in c.diffs:
        if d.stage == 1 and d.gating and not d.ok:
            assert d.within_noise, d
    (bare,) = compare_case(case, ("exact",), noise="none").results
    assert bare.diagnosis.stage_failed == 1
    excess = next(d for d in bare.diffs if d.quantity == "minus2loglik_excess")
    assert excess.ok and excess.python <= excess.r + 1e-8


THETA_WHERE_LME4_REFUSES = (6248486.196021947, 7847329.953869487)   # exact's optimum on one CPU path


def test_exact_mode_where_lme4_s_pirls_gives_no_value_does_not_gate(R, monkeypatch):
    """gen:thorough:172, shrunk to 4 rows (gaussian(log), crossed), nAGQ 0: exact mode's optimum
    lies at θ ≈ 1e7 (where exactly moves with the CPU path, the objective being flat there; the
    test puts the reference's optimum at one such θ), where glmer's PIRLS fails — it did not
    converge at θ = 9.3e6, the downdate is not positive definite at (6.2e6, 7.8e6) — and so does
    the reference's lme4 mode from glmer's lp0. That is lme4's PIRLS, not a difference of the objectives: the evaluation
    is reported, noted, and does not fail stage 1 (it did: objective-mismatch)."""
    case = Case.load(FIXTURES / "exact-where-lme4-pirls-refuses.json")
    fit = PythonSide.fit

    def at_such_a_theta(self, c, nAGQ, *args, **kwargs):   # exact's optimum there moves with the CPU path
        return replace(fit(self, c, nAGQ, *args, **kwargs), theta=list(THETA_WHERE_LME4_REFUSES))

    monkeypatch.setattr(PythonSide, "fit", at_such_a_theta)
    (c,) = compare_case(case, ("exact",), noise="none").results
    (ev,) = [d for d in c.diffs if d.quantity == "evaluation@python optimum"]
    assert ev.r.startswith(LME4_PIRLS_ERRORS) and ev.python is None and not ev.gating
    assert c.diagnosis.stage_failed != 1 and any("nor does lme4's PIRLS" in n for n in c.diagnosis.notes), c.verdict


def test_a_refusal_where_glmer_s_own_deviance_function_refuses_is_noise(R):
    """gen:thorough:4 (binomial, quasi-separated, crossed; 64 rows), nAGQ 0: the reference's
    BOBYQA tries θ = (63.66, 0), where PIRLS's step-halvings fail — and so do glmer's, from the
    same lp0; glmer's optimizer, parted from it by rounding, never goes there. Where the
    reference refuses so, the verdict says it; where it fits, it agrees."""
    case = Case.load(FIXTURES / "refused-where-glmer-refuses.json")
    theta = np.array([63.65987483, 0.0])
    r_side = RSide()
    devfun = r_side.devfun(case, 0)
    (at_r,) = r_side.evaluate(devfun, [theta])
    (at_py,) = PythonSide("lme4").evaluate(case, 0, [theta], np.asarray(devfun["lp0"], float))
    assert at_r.error and at_py.error and "step-halvings" in at_r.error and "step-halvings" in at_py.error
    (c,) = compare_case(case, ("lme4",), noise="failing").results
    assert c.passed, c.verdict
    if not c.python.ok:
        assert c.verdict == "within-noise" and "glmer's own deviance function stops too" in c.diagnosis.notes[0]


def test_a_sweep_refits_the_row_orders_only_where_an_optimum_needs_them(R):
    """`noise="failing"`: a difference at identical parameters (stage 1) is read against the
    deviance functions' evaluations on the row orders, which the refits do not move; the refits
    come only once an optimum or what follows from it (stages 2–3) stands outside tolerance, on
    the row orders already evaluated, one at a time until each difference is within noise.
    gen:thorough:5, exact mode: stage 1 alone, no refit; gen:thorough:109, lme4 mode: stages 1–3,
    each difference within noise, with as many refits as that took and the verdict of all of them."""
    (stage1,) = compare_case(Case.load(FIXTURES / "exact-lme4-pirls-error.json"), ("exact",), noise="failing").results
    assert {d.stage for d in stage1.diffs if d.gating and not d.ok} == {1}
    assert stage1.diagnosis.noise.orders == 3 and stage1.diagnosis.noise.refitted == 0
    later_case = Case.load(FIXTURES / "noise-objective-and-optimum.json")
    (later,) = compare_case(later_case, ("lme4",), noise="failing").results
    outside = [d for d in later.diffs if d.gating and not d.ok]
    assert {d.stage for d in outside} >= {1, 2}
    assert 1 <= later.diagnosis.noise.refitted <= later.diagnosis.noise.orders
    assert later.passed and all(d.within_noise for d in outside), later.verdict
    (every,) = compare_case(later_case, ("lme4",), noise="all").results
    assert every.diagnosis.noise.refitted == every.diagnosis.noise.orders >= 3 and every.verdict == later.verdict
