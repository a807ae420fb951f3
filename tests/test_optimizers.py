"""Stage-1 BOBYQA, stage-2 Nelder–Mead and deriv12 against the R code lme4 runs (spec §5.4–§6.1):
the whole sequence of evaluated points must be the same."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from reference_impl import OptimizerError, PirlsError
from reference_impl.bobyqa import DBL_MAX, _powell, bobyqa
from reference_impl.deriv import deriv12
from reference_impl.nelder_mead import nelder_mead

# the same test functions, written once in each language
FUNCTIONS = {
    "rosenbrock2": ("function(x) 100 * (x[2] - x[1]^2)^2 + (1 - x[1])^2",
                    lambda x: 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2, [-1.2, 1.0]),
    # no sum(): R accumulates it in long double
    "quadratic-bound": ("function(x) (x[1] + 1)^2 + 3 * (x[2] - 2)^2 + 10 * (x[3] - 0.5)^2 + x[1] * x[2]",
                        lambda x: (x[0] + 1) ** 2 + 3 * (x[1] - 2) ** 2 + 10 * (x[2] - 0.5) ** 2 + x[0] * x[1],
                        [1.0, 1.0, 1.0]),
    # polynomials only: R's and numpy's log() may differ in the last bit, and BOBYQA's late
    # decisions amplify that to 1e-11
    "scalar": ("function(x) (x[1] - 0.3)^2 * (x[1] + 2) + 0.1 * x[1]",
               lambda x: (x[0] - 0.3) ** 2 * (x[0] + 2) + 0.1 * x[0], [1.0]),
}
LOWER = {"rosenbrock2": [-np.inf, -np.inf], "quadratic-bound": [0.0, -np.inf, 0.0], "scalar": [0.0]}
R_TRACE = """local({{
  pts <- list(); f <- {fn}
  g <- function(x) {{ pts[[length(pts) + 1]] <<- x; f(x) }}
  r <- {call}
  list(pts = do.call(rbind, pts), r = r)
}})"""


def traced(fn):
    pts = []

    def g(x):
        pts.append(np.array(x, float))
        return fn(np.asarray(x, float))
    return g, pts


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_nelder_mead_replays_lme4(R, name):
    rfn, pyfn, x0 = FUNCTIONS[name]
    n = len(x0)
    xst = np.full(n, 0.02)
    R.assign("cc_test_lower", np.array(LOWER[name]))
    R.assign("cc_test_x0", np.array(x0))
    out = R.eval(R_TRACE.format(fn=rfn, call="lme4::Nelder_Mead(g, cc_test_x0, lower = cc_test_lower, "
                                "control = list(maxfun = 2000))"))
    g, pts = traced(pyfn)
    res = nelder_mead(g, x0, LOWER[name], np.full(n, np.inf), xst=xst, xt=xst * 5e-4, maxfun=2000)
    rpts = np.asarray(out["pts"], float).reshape(-1, n)
    assert len(pts) == len(rpts) == out["r"]["feval"]
    np.testing.assert_array_equal(np.array(pts), rpts)
    np.testing.assert_array_equal(res.par, np.atleast_1d(out["r"]["par"]))
    assert res.code == out["r"]["NM.result"]


def test_nelder_mead_maxfun(R):
    rfn, pyfn, x0 = FUNCTIONS["rosenbrock2"]
    out = R.eval("local({r <- NULL; w <- NULL; withCallingHandlers(r <- lme4::Nelder_Mead("
                 f"{rfn}, c(-1.2, 1), control = list(maxfun = 20)), warning = function(e) {{w <<- conditionMessage(e); "
                 "invokeRestart('muffleWarning')}); list(code = r$NM.result, feval = r$feval, msg = r$message, w = w)})")
    res = nelder_mead(pyfn, x0, [-np.inf] * 2, [np.inf] * 2, xst=[0.02] * 2, xt=[1e-5] * 2, maxfun=20)
    assert (res.code, res.feval, res.message) == (out["code"], out["feval"], out["w"])


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_bobyqa_replays_minqa(R, name):
    rfn, pyfn, x0 = FUNCTIONS[name]
    n = len(x0)
    R.assign("cc_test_lower", np.array(LOWER[name]))
    R.assign("cc_test_x0", np.array(x0))
    out = R.eval(R_TRACE.format(fn=rfn, call="minqa::bobyqa(cc_test_x0, g, lower = cc_test_lower)"))
    g, pts = traced(pyfn)
    res = bobyqa(g, x0, LOWER[name], np.full(n, np.inf))
    rpts = np.asarray(out["pts"], float).reshape(-1, n)
    assert len(pts) == len(rpts)                      # checkObj + Fortran evaluations + rval
    np.testing.assert_allclose(np.array(pts), rpts, rtol=1e-12, atol=1e-14)
    assert res.feval == out["r"]["feval"]
    assert res.code == out["r"]["ierr"]
    np.testing.assert_allclose(res.par, np.atleast_1d(out["r"]["par"]), rtol=1e-12)


def test_bobyqa_maxfun_code_and_message(R):
    rfn, pyfn, x0 = FUNCTIONS["rosenbrock2"]
    out = R.eval(f"suppressWarnings(minqa::bobyqa(c(-1.2, 1), {rfn}, control = list(maxfun = 10))[c('ierr', 'msg')])")
    res = bobyqa(pyfn, x0, [-np.inf] * 2, [np.inf] * 2, maxfun=10)
    assert (res.code, res.message) == (out["ierr"], out["msg"])


def names_only_stack():
    """`inspect.stack()` as pdfo reads it — the names of the calling functions — without the
    source lookups that take a second per `pdfo()` call once pytest, R and the package are loaded
    (`inspect.getmodule` scans every module for each frame)."""
    frame, frames = sys._getframe(1), []
    while frame is not None:
        frames.append((frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, None, None))
        frame = frame.f_back
    return frames


def test_powell_follows_pdfo(monkeypatch):
    """The direct Fortran call evaluates the points `pdfo()` does, on boxes with x0 on, near and
    far from a bound, objectives infinite in part of the box, and small evaluation budgets."""
    import warnings

    from pdfo import _bobyqa, _common, pdfo

    for module in (_bobyqa, _common):
        monkeypatch.setattr(module, "stack", names_only_stack)

    rng = np.random.default_rng(15)
    for _ in range(60):
        n = int(rng.integers(1, 5))
        A, c = rng.normal(size=(n, n)), rng.normal(size=n)
        lower = np.where(rng.random(n) < 0.6, 0.0, -np.inf)
        x0 = np.maximum(np.abs(rng.normal(size=n)) * rng.choice([1, 1e-3, 0], size=n) + rng.choice([0, 0.3]), lower)
        upper, npt, maxfev = np.full(n, np.inf), max(n + 2, 3), int(rng.integers(2, 60))
        rhobeg = min(0.95, 0.2 * max(np.max(np.abs(x0)), 0.005))
        paths = ([], [])

        def f(x, path):
            path.append(x.copy())
            v = 0.5 * (x - c) @ (A @ A.T + 0.1 * np.eye(n)) @ (x - c) + np.sin(3 * x).sum()
            return DBL_MAX if x.sum() > 4 else float(v)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = pdfo(lambda x: f(x, paths[0]), x0.copy(), method="bobyqa", bounds=np.column_stack([lower, upper]),
                       options={"rhobeg": rhobeg, "rhoend": 1e-6 * rhobeg, "npt": npt, "maxfev": maxfev,
                                "ftarget": -DBL_MAX, "classical": True, "scale": False, "honour_x0": False,
                                "quiet": True})
        x, fx, status, nf = _powell(lambda x: f(x, paths[1]), x0.copy(), lower, upper, rhobeg, 1e-6 * rhobeg,
                                    npt, maxfev)
        assert np.array_equal(np.array(paths[0]), np.array(paths[1]))
        assert (x.tolist(), fx, status, nf) == (ref.x.tolist(), ref.fun, ref.status, ref.nfev)


def test_bobyqa_passes_an_error_of_the_objective_on_at_once_and_silently(capfd):
    """An error inside the Fortran run ends it at that evaluation, as an R error ends minqa's, and
    propagates unchanged, with nothing printed (f2py's "capi_return is NULL" / failed call-back)."""
    _, pyfn, x0 = FUNCTIONS["rosenbrock2"]
    calls = []

    def fn(x):
        calls.append(x)
        if len(calls) == 6:
            raise PirlsError("PIRLS loop resulted in NaN value")
        return pyfn(x)

    with pytest.raises(PirlsError, match="PIRLS loop resulted in NaN value"):
        bobyqa(fn, x0, [-np.inf] * 2, [np.inf] * 2)
    assert len(calls) == 6
    assert capfd.readouterr().err == ""


def test_deriv12_equals_lme4(R):
    rfn, pyfn, _ = FUNCTIONS["quadratic-bound"]
    x = np.array([0.3, 1.7, 0.45])
    R.assign("cc_test_x", x)
    out = R.eval(f"lme4:::deriv12({rfn}, cc_test_x)")
    g, H = deriv12(pyfn, x)
    np.testing.assert_array_equal(g, out["gradient"])
    np.testing.assert_array_equal(H, np.asarray(out["Hessian"]).reshape(3, 3))


def test_nelder_mead_refuses_a_degenerate_simplex_as_lme4_does():
    """A zero initial step leaves no simplex: lme4's message, as a refusal (not a crash)."""
    with pytest.raises(OptimizerError, match="cannot generate feasible simplex"):
        nelder_mead(lambda x: float(x @ x), [1.0, 2.0], [-np.inf] * 2, [np.inf] * 2,
                    xst=np.array([0.1, 0.0]), xt=np.array([1e-6, 1e-6]))
