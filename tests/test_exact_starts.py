"""Exact mode's starts (issue 13): every start is polished on the exact objective unless it lies
above the best optimum so far, the lowest is kept and named, and a start that cannot be evaluated
is recorded rather than ending the fit. Reference only (no R): glmer's parameters stand in as
lme4 mode's, which reproduces them (tests/test_reference_vs_glmer.py)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reference_impl as ri
from crosscheck.case import Case
from crosscheck.datasets import readme_example
from crosscheck.noise import row_orders
from reference_impl import fit as fitmod
from reference_impl import pirls as pirls_module
from reference_impl.errors import NOT_CONVERGED, OptimizerError, PirlsError

CASES = Path(__file__).parent / "corpus" / "cases"
FIXTURES = Path(__file__).parent / "fixtures"

# gen:thorough:83 (5 rows): separated, the deviance 0 to rounding at every start's optimum
PATH_FAILS = Case.make(pd.DataFrame({
    "g": pd.Categorical(["g000", "g001", "g002", "g003", "g004"]),
    "h": pd.Categorical(["h1", "h0", "h2", "h0", "h1"]),
    "x": [0.24760095731930098, -1.0216031825562701, -0.5644036207593883, -0.9741210196207187, 2.1847947042204043],
    "expo": [1.7134621748231427, 1.2163990560797036, 1.9184293111837223, 0.9694745616399709, 1.1056924707203515],
    "prop": [0.0, 0.0, 0.0, 0.0, 1.0], "trials": [3.0, 2.0, 1.0, 3.0, 5.0]}),
    "prop ~ x + offset(log(expo)) + (1 | g/h)", "binomial", weights="trials", nagq=(1,))


def _fit(case: Case, nAGQ: int, mode: str = "exact"):
    return ri.glmer(case.formula, case.data, family=case.family, link=case.link, nAGQ=nAGQ,
                    weights=case.weights, offset=case.offset, mode=mode, control=case.control)


def _exact_at(case: Case, nAGQ: int, pars) -> float:
    """The exact objective at `pars`, restarting from lme4 mode's lp0 (as the harness does with R's)."""
    kw = dict(family=case.family, link=case.link, weights=case.weights, offset=case.offset)
    lp0 = ri.devfun(case.formula, case.data, nAGQ=nAGQ, mode="lme4", **kw).lp0 if nAGQ else None
    return ri.devfun(case.formula, case.data, nAGQ=nAGQ, mode="exact", lp0=lp0, **kw)(pars)


def _pars(fit) -> np.ndarray:
    return np.array([*fit.theta, *(fit.fixef.values() if fit.nAGQ else [])])


README = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial")


def test_every_start_is_recorded_and_the_lowest_optimum_kept():
    fit = _fit(README, 1)
    starts = fit.optinfo.starts
    assert [s["start"] for s in starts] == ["path", "lme4", "boundary"]
    assert fit.optinfo.start == "path"
    assert fit.objective == min(s.get("optimum", s["value"]) for s in starts)
    assert all(s["polished"] == ("optimum" in s) for s in starts)
    lme4 = _fit(README, 1, "lme4")
    assert fit.objective <= _exact_at(README, 1, _pars(lme4)) + 1e-8


def test_another_start_wins_where_the_path_refuses(monkeypatch):
    """Separated: the deviance is 0 to rounding at both other starts' optima (~1e-15), so which
    of them wins is rounding's choice; the lowest is kept. (The path's Nelder–Mead once could not
    build a simplex here; since Newton's step weights are floored it can, so its failure is made.)"""
    def fails(model, ctrl, nAGQ, best):
        raise OptimizerError("cannot generate feasible simplex")

    monkeypatch.setattr(fitmod, "_start_path", fails)
    fit = _fit(PATH_FAILS, 1)
    assert fit.optinfo.starts[0] == {"start": "path", "error": "cannot generate feasible simplex"}
    optima = {s["start"]: s["optimum"] for s in fit.optinfo.starts[1:] if s.get("optimum") is not None}
    assert fit.optinfo.start == min(optima, key=optima.get) and fit.objective == min(optima.values())
    assert fit.optinfo.stages[0].optimizer == "start"
    assert fit.objective <= _exact_at(PATH_FAILS, 1, _pars(_fit(PATH_FAILS, 1, "lme4"))) + 1e-8


def test_a_lower_start_beats_the_path(monkeypatch):
    """The path's optimum moved uphill: lme4 mode's optimum is below it, is polished and wins."""
    start_path = fitmod._start_path

    def worse(model, ctrl, nAGQ, best):
        cand = start_path(model, ctrl, nAGQ, best)
        par = cand.par + np.r_[np.zeros(model.nth), np.full(cand.par.size - model.nth, 3.0)]
        return fitmod._Candidate(cand.f, par, cand.f(par), cand.opt)

    monkeypatch.setattr(fitmod, "_start_path", worse)
    fit = _fit(README, 1)
    path, lme4, boundary = fit.optinfo.starts
    assert lme4["polished"] and lme4["optimum"] < path["optimum"]
    assert fit.optinfo.start == "lme4"
    assert fit.objective == pytest.approx(_fit(README, 1).objective, abs=1e-7)


def test_refusal_only_when_no_start_can_be_evaluated(monkeypatch):
    def fails(model, ctrl, nAGQ, best):
        raise PirlsError("PIRLS loop resulted in NaN value")

    monkeypatch.setattr(fitmod, "_start_path", fails)
    monkeypatch.setattr(fitmod, "_start_lme4", fails)
    with pytest.raises(PirlsError, match=r"cannot be evaluated or minimized from any start \(path: PIRLS "
                                         r"loop resulted in NaN value; lme4: PIRLS loop"):
        _fit(README, 1)


def test_lme4_mode_records_no_start():
    fit = _fit(README, 1, "lme4")
    assert fit.optinfo.start is None and fit.optinfo.starts == []


def test_pinned_rounding_case_fits():
    """exact-pirls-rounding: exact PIRLS at θ0 refused (maxit, steps of rounding noise) where glmer fits."""
    case = Case.load(CASES / "exact-pirls-rounding.json")
    fit = _fit(case, 0)
    assert fit.objective <= _exact_at(case, 0, _pars(_fit(case, 0, "lme4"))) + 1e-8


def test_pinned_separation_case_fits_from_any_lp0():
    """exact-separation-stuck: perfectly separable, so the penalized deviance falls to the floor of
    the binomial clamps (§2.2) as β → ±∞; exact mode reaches it (below glmer's −2logLik) and its
    objective does not depend on lp0, even one far beyond the clamps on the wrong side of every y,
    where the deviance is flat and exact PIRLS used to stop (288.35) or refuse ('Downdated VtV')."""
    case = Case.load(CASES / "exact-separation-stuck.json")
    fit, lme4 = _fit(case, 0), _fit(case, 0, "lme4")
    assert fit.minus2loglik <= lme4.minus2loglik + 1e-8
    assert fit.objective <= _exact_at(case, 0, _pars(lme4)) + 1e-8
    kw = dict(family=case.family, link=case.link, weights=case.weights, offset=case.offset)
    f = ri.devfun(case.formula, case.data, nAGQ=0, mode="exact", **kw)
    wrong = -1e6 * (2.0 * f.model.response.y - 1.0)
    for lp0 in (f.lp0, ri.devfun(case.formula, case.data, nAGQ=0, mode="lme4", **kw).lp0, wrong):
        g = ri.devfun(case.formula, case.data, nAGQ=0, mode="exact", lp0=lp0, **kw)
        assert [g(p) for p in (_pars(fit), _pars(lme4))] == pytest.approx([fit.objective] * 2, abs=1e-12)


def test_newton_steps_end_where_the_gradient_is_not_finite(monkeypatch):
    """gen:thorough:143 (1683 rows, probit, crossed, quasi-separated), nAGQ 1: an evaluation beside
    a Newton step failed, the central gradient there was inf, and LAPACK refused it: the reference
    crashed (harness-error). The steps now end at the last finite gradient."""
    exact = _fit(README, 1).objective
    monkeypatch.setattr(fitmod, "gradient12", lambda f, x: np.full(x.size, np.inf))
    fit = _fit(README, 1)
    assert np.isfinite(fit.objective) and abs(fit.objective - exact) <= 1e-6 * exact


def test_exact_objective_is_the_same_on_every_row_order_of_a_near_collinear_design():
    """gen:thorough:56 (57 rows, inverse.gaussian(1/mu^2), x and x2 near-collinear: β ±1.1e4):
    the normal equations' rounding, cond(X)² eps, rested on β (5e-4 relative) and moved the
    exact nAGQ-0 objective by 2e-8 relative between row orders — more than exact mode's "never
    worse" allows. Newton's step taken as an increment leaves rounding (measured: 1.5e-13)."""
    case = Case.load(Path(__file__).parent / "fixtures" / "exact-near-collinear.json")
    theta = np.array([0.0745])
    values = []
    for order in row_orders(case, 4):
        c = case.with_rows(order)
        values.append(ri.devfun(c.formula, c.data, nAGQ=0, mode="exact", family=c.family, link=c.link,
                                weights=c.weights, offset=c.offset)(theta))
    assert max(values) - min(values) <= 1e-12 * abs(values[0]), values


def test_exact_mode_says_the_objective_has_no_minimum_where_pirls_runs_off_to_infinity():
    """gen:thorough:122, shrunk (tests/fixtures/exact-no-minimum.json): from every start, exact
    PIRLS lowers the penalized deviance at each step while max |η| grows. The refusal says "has no
    minimum" (not "cannot be evaluated") and keeps lme4's words, so that a refusal by both sides
    reads as one reason."""
    case = Case.load(Path(__file__).parent / "fixtures" / "exact-no-minimum.json")
    with pytest.raises(PirlsError, match=r"exact objective has no minimum \(path: pwrssUpdate did not converge in "
                                         r"\(maxit\) iterations: no conditional mode, .*; lme4: "):
        _fit(case, 0)


class _Flat:
    """An objective 1e-13 lower (`gain`, relative) anywhere θ1 is off its bound: how one CPU path
    saw gen:gate:5's exact optimum, θ = (2.8e-9, 5.3e-9) 1 ulp below θ = 0."""

    nth, lower = 2, np.array([0.0, 0.0, -np.inf])

    def __init__(self, gain: float):
        self.gain = gain

    def __call__(self, par) -> float:
        return 20.5 * (1 - self.gain * (par[0] > 0))


@pytest.mark.parametrize("gain, on_bound", [(np.finfo(float).eps, True), (1e-9, False)])
def test_exact_mode_puts_theta_on_its_bound_where_only_rounding_prefers_the_inside(gain, on_bound):
    """Exact mode's last step: θ within boundary.tol of its bound goes on it where the objective
    there is no worse beyond rounding — so that the optimum lies in one place on every CPU path
    (the gate failed on one, gen:gate:5) — and stays inside where that is better beyond rounding."""
    opt = fitmod.OptSummary()
    opt.stages.append(fitmod.StageSummary("Newton", [], [], 0.0, 0, 0, ""))
    f, start = _Flat(gain), np.array([2.8e-9, 0.0, 0.3])
    par = fitmod._on_boundary(fitmod._Candidate(f, start, f(start), opt), fitmod.Control())
    assert (par[0] == 0.0) == on_bound and par[2] == 0.3 and opt.stages[-1].par == list(par)


def test_exact_mode_says_the_objective_is_not_finite_where_agq_nodes_leave_the_domain():
    """gen:thorough:177, shrunk to 6 rows (Gamma(identity), nAGQ 9): quadrature nodes put μ below 0
    from every start, where the AGQ objective is NaN (glmer's "fit" there has a NaN deviance); the
    refusal says that it cannot be evaluated, and why."""
    case = Case.load(Path(__file__).parent / "fixtures" / "exact-agq-not-finite.json")
    with pytest.raises(PirlsError, match=r"exact objective is not finite at any start \(exact PIRLS counts .* "
                                         r"\(path: the objective is nan there; lme4: the objective is nan there"):
        _fit(case, 9)


OTHER_BASIN = Case.load(Path(__file__).parent / "fixtures" / "exact-worse-other-basin.json")


def _fit_from(case: Case, nAGQ: int, starts):
    return ri.glmer(case.formula, case.data, family=case.family, link=case.link, nAGQ=nAGQ,
                    weights=case.weights, offset=case.offset, mode="exact", starts=starts)


def test_a_given_start_in_a_lower_basin_wins():
    """gen:thorough:502: lme4 mode (and so every start of the reference's own) ends in a basin
    0.30 above the one glmer finds; glmer's optimum, given as a start, is polished and kept."""
    own = _fit(OTHER_BASIN, 1)
    # glmer's optimum there (run 20261201-133259-94f1): θ (h, g), β (intercept, x, x2)
    glmer_optimum = [3.0937674, 2.6364361, 2.2955819, 28394.740, -28399.153]
    given = _fit_from(OTHER_BASIN, 1, {"glmer": glmer_optimum})
    assert [s["start"] for s in given.optinfo.starts] == ["path", "lme4", "boundary", "glmer"]
    glmer_start = given.optinfo.starts[-1]
    assert given.objective <= min(own.objective, glmer_start["value"]) + 1e-9
    assert given.objective == min(s.get("optimum", s.get("value", np.inf)) for s in given.optinfo.starts)
    if own.objective > glmer_start["value"]:   # rounding may take the own starts to glmer's basin too
        assert given.optinfo.start == "glmer" and glmer_start["polished"]
        assert given.objective < own.objective - 0.25


PERFECT_FIT = Case.load(Path(__file__).parent / "fixtures" / "exact-perfect-fit-gamma.json")


def test_the_exact_objective_does_not_depend_on_the_calls_before():
    """gen:thorough:345 (Gamma(log), 6 rows, θ_g ≈ 4e3): PIRLS's first step there needs halving,
    which lme4 averages with the predictor's u of the previous call (§3.2). Exact mode halves
    toward u = 0 instead: its value at a point is the same whatever was evaluated before (it
    moved by 128 to 1024, the aic's rounding where the fit is perfect, while it depended on that)."""
    kw = dict(family=PERFECT_FIT.family, link=PERFECT_FIT.link, offset=PERFECT_FIT.offset)
    glmer_optimum = np.array([3985.7874411803596, 0.01119827501190981, 2.682469784303769, 0.6192781865577787,
                              -0.6389428293880408, -1.7279798118345158, -0.7581735477760456])
    points = [glmer_optimum, glmer_optimum * (1 + 1e-6), _pars(_fit(PERFECT_FIT, 1))]
    fresh = [ri.devfun(PERFECT_FIT.formula, PERFECT_FIT.data, nAGQ=1, mode="exact", **kw)(x) for x in points]
    f = ri.devfun(PERFECT_FIT.formula, PERFECT_FIT.data, nAGQ=1, mode="exact", **kw)
    assert [f(x) for x in points + points[::-1]] == fresh + fresh[::-1]


def test_a_given_start_restarts_pirls_from_its_own_lp0():
    """A start with an lp0 is evaluated, and polished, on the deviance function restarting from
    it: its value there is exactly that function's (the harness checks never-worse on it)."""
    kw = dict(family=PERFECT_FIT.family, link=PERFECT_FIT.link, offset=PERFECT_FIT.offset)
    own = _fit(PERFECT_FIT, 1)
    par = _pars(own)
    lp0 = ri.devfun(PERFECT_FIT.formula, PERFECT_FIT.data, nAGQ=1, mode="lme4", **kw).lp0 * 1.01
    fit = _fit_from(PERFECT_FIT, 1, {"moved": {"par": par, "lp0": lp0}})
    at = ri.devfun(PERFECT_FIT.formula, PERFECT_FIT.data, nAGQ=1, mode="exact", lp0=lp0, **kw)(par)
    assert fit.optinfo.starts[-1]["value"] == at
    assert fit.objective <= min(own.objective, at)


def test_a_given_start_above_the_best_is_not_polished():
    fit = _fit(README, 1)
    far = _fit_from(README, 1, {"far": [*fit.theta, *(b + 1.0 for b in fit.fixef.values())]})
    assert far.optinfo.start == fit.optinfo.start and "optimum" not in far.optinfo.starts[-1]
    assert far.objective == fit.objective


def test_a_start_that_does_not_fit_the_model_is_listed_with_its_reason():
    fit = _fit_from(README, 1, {"short": [1.0], "nan": [np.nan, 0.0, 0.0],
                                "lp0": {"par": [1.0, 0.0, 0.0], "lp0": [0.0]}})
    reasons = {s["start"]: s.get("error", "") for s in fit.optinfo.starts}
    assert reasons["short"].startswith("not 3 finite numbers (1 theta + 2 beta): [1.0]")
    assert reasons["nan"].startswith("not 3 finite numbers")
    assert reasons["lp0"] == f"lp0 is not {len(readme_example())} finite numbers (one per row): 1 given"
    assert fit.objective == _fit(README, 1).objective


def test_starts_are_exact_modes():
    with pytest.raises(ri.ModelError, match="starts are for mode 'exact'"):
        ri.glmer("y ~ x1 + (1 | subject)", readme_example(), mode="lme4", starts={"a": [1.0, 0.0, 0.0]})


def test_a_start_creeping_across_a_clamp_is_left_for_eta0(monkeypatch):
    """gen:thorough:23, nAGQ 0, at θ = (1.5, −2000, 1400): exact PIRLS's first step from lp0
    overshoots past the logit's clamp (max |η| 4327), where the deviance is flat and only the
    penalty moves u, one unit of η per step. The run is left at LP0_MAXIT steps, not EXACT_MAXIT,
    and the value is that of the run from η0 (31 steps), as it was when lp0's ran into EXACT_MAXIT:
    the value of a deviance function restarting from η0 itself."""
    case = Case.load(FIXTURES / "exact-pirls-creeping-start.json")
    f = ri.devfun(case.formula, case.data, family=case.family, link=case.link, nAGQ=0, mode="exact",
                  weights=case.weights, offset=case.offset)
    runs, run = [], pirls_module._pirls

    def counted(model, theta, eta, *args, **kwargs):
        try:
            res = run(model, theta, eta, *args, **kwargs)
        except PirlsError as e:
            runs.append((eta is model.eta0, args[-1], str(e)))
            raise
        runs.append((eta is model.eta0, res.iterations, res.pdev))
        return res
    monkeypatch.setattr(pirls_module, "_pirls", counted)
    theta = np.array([1.5, -2000.0, 1400.0])
    value = f(theta)
    (from_lp0, stopped, error), (from_eta0, iterations, pdev) = runs
    assert not from_lp0 and stopped == pirls_module.LP0_MAXIT and NOT_CONVERGED in error
    assert from_eta0 and iterations < pirls_module.LP0_MAXIT and pdev == f.last.pirls.pdev
    model = f.model
    from_eta0_alone = ri.devfun(case.formula, case.data, nAGQ=0, mode="exact", lp0=model.eta0 - model.offset,
                                model=model)(theta)
    assert abs(value - from_eta0_alone) <= 1e-12 * abs(value)


def test_a_cut_run_already_below_eta0_s_mode_is_run_to_its_own():
    """gen:thorough:548 (binomial(cloglog): the penalized deviance is not convex in u), nAGQ 0:
    at many θ the run from lp0 is still descending at LP0_MAXIT, already below the mode the run
    from η0 reaches; given EXACT_MAXIT it ends lower still. Exact mode's optimum is then
    −2logLik 101.82, not the 126.16 of η0's modes (where glmer's optimum lies)."""
    fit = _fit(Case.load(FIXTURES / "exact-pirls-lower-mode-from-lp0.json"), 0)
    assert fit.minus2loglik < 102.0


@pytest.mark.parametrize("numpy_path", [False, True], ids=["compiled", "numpy"])
def test_a_cut_run_goes_on_to_the_result_of_the_uncut_run(numpy_path, monkeypatch):
    """gen:thorough:548, nAGQ 0, θ = 0 from exact mode's lp0: the run is cut at LP0_MAXIT; going
    on from the cut (`pirls.Cut`) gives, to the last bit, what one run of EXACT_MAXIT gives,
    on the compiled path and on numpy's."""
    monkeypatch.setattr(pirls_module.compiled, "ENABLED", not numpy_path and pirls_module.compiled.ENABLED)
    case = Case.load(FIXTURES / "exact-pirls-lower-mode-from-lp0.json")
    f = ri.devfun(case.formula, case.data, family=case.family, link=case.link, nAGQ=0, mode="exact",
                  weights=case.weights, offset=case.offset)
    model = f.model
    start = (model, np.zeros(model.nth), model.offset + f.lp0, model.offset)
    zeros = (np.zeros(model.q), np.zeros(model.p), False, "exact", pirls_module.TOL_PWRSS)
    with pytest.raises(PirlsError, match=re.escape(NOT_CONVERGED)) as cut_run:
        pirls_module._pirls(*start, *zeros, pirls_module.LP0_MAXIT)
    cut = cut_run.value.cut
    assert cut.iterations == pirls_module.LP0_MAXIT == len(cut.trace)
    resumed = pirls_module._pirls(*start[:2], cut.eta, model.offset, cut.u, cut.beta, *zeros[2:],
                                  pirls_module.EXACT_MAXIT, cut=cut)
    uncut = pirls_module._pirls(*start, *zeros, pirls_module.EXACT_MAXIT)
    assert resumed.iterations == uncut.iterations > pirls_module.LP0_MAXIT
    assert resumed.trace == uncut.trace
    for field in ("u", "beta", "eta", "mu"):
        assert np.array_equal(getattr(resumed, field), getattr(uncut, field)), field
    assert (resumed.ldL2, resumed.drsum) == (uncut.ldL2, uncut.drsum)
