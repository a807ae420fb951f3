"""`glmer()`: glmer's two-stage fit and every quantity it reports (spec §5–§7).

lme4 mode: stage 1 BOBYQA on theta for the nAGQ=0 objective, stage 2 lme4's Nelder–Mead on
c(theta, beta) from the stage-1 optimum (§5.2), `deriv12`, a final evaluation at the optimum,
`check.boundary`, `checkConv` and the reported quantities from the final state.
exact mode: the same objectives with converged PIRLS, minimized to a tight optimum from several
starts, the best kept (`_exact`).
"""
from __future__ import annotations

import copy
import platform
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import scipy
import scipy.linalg as la
from scipy import optimize
from scipy.linalg import lapack

from .bobyqa import bobyqa
from .convergence import BOUNDARY_TOL, check_boundary, check_conv
from .deriv import deriv12, gradient12
from .errors import ModelError, OptimizerError, PirlsError
from .model import Model, make_model
from .nelder_mead import nelder_mead
from .objective import DevianceFunction, check_agq, initial_lp0
from .pirls import NO_MODE, TOL_PWRSS

MODES = ("lme4", "exact")
NEWTON_MAXSTEPS = 5
EXACT_XT = 5e-2                 # exact mode's Nelder–Mead stops at xst·5e-2 (lme4: 5e-4); Newton finishes
NEWTON_DECREMENT = 1e-14        # g'H⁻¹g relative to 1 + |f|: below it f cannot move beyond rounding
# exact mode's refusal where the objective is NaN (or ±inf) at every start
NOT_FINITE = ("is not finite at any start (exact PIRLS counts a deviance outside the family's domain as NaN: "
              "μ leaving it at a row, or at an AGQ node)")
EXACT_ROUNDING = 1e-13          # an exact objective value this close (relative) to another is rounding
VCOV_FALLBACK = ("variance-covariance matrix computed from finite-difference Hessian is\n"
                 "not positive definite or contains NA values: falling back to var-cov estimated from RX")


@dataclass
class StageSummary:
    """One optimizer run: what was called, how it ended (MixedModels.jl's OptSummary)."""

    optimizer: str
    start: list[float]
    par: list[float]
    fval: float
    feval: int
    code: int
    message: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptSummary:
    stages: list[StageSummary] = field(default_factory=list)
    gradient: list[float] | None = None
    hessian: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)        # optimizer warnings (optwrap)
    conv_messages: list[str] = field(default_factory=list)   # checkConv
    start: str | None = None          # exact mode: the start whose polished optimum was kept
    starts: list[dict[str, Any]] = field(default_factory=list)   # exact mode: every start tried

    @property
    def feval(self) -> int:
        return self.stages[-1].feval if self.stages else 0


@dataclass
class GlmerFit:
    """A fitted GLMM; field names shared with the R side (docs/architecture.md)."""

    formula: str
    family: str
    link: str
    nAGQ: int
    mode: str
    fixef: dict[str, float]
    theta: list[float]
    theta_names: list[str]
    minus2loglik: float          # absolute scale: −2 × full log-likelihood, every nAGQ
    objective: float             # lme4's raw deviance-function value at the optimum
    deviance: float              # Σ deviance residuals (lme4's deviance())
    se: dict[str, float]
    vcov: np.ndarray
    se_rx: dict[str, float]
    ranef: dict[str, pd.DataFrame]
    condvar: dict[str, np.ndarray]
    fitted: np.ndarray
    residuals: np.ndarray        # deviance residuals sign(y − μ)·√devResid (§7)
    varcorr: dict[str, np.ndarray]   # per term σ² T T' (§7 VarCorr)
    u: np.ndarray
    ldL2: float
    ldRX2: float
    ussq: float
    drsum: float
    wrss: float
    aic_resp: float
    saturated: float             # −2 log L of the saturated model (§4.3 constant)
    nobs: int
    df: int
    converged: bool
    messages: list[str]
    optinfo: OptSummary
    versions: dict[str, str]
    model: Model = field(repr=False, compare=False)   # the design, family and response fitted: built once

    @property
    def loglik(self) -> float:
        return -0.5 * self.minus2loglik

    @property
    def aic(self) -> float:
        return self.minus2loglik + 2 * self.df

    @property
    def bic(self) -> float:
        return self.minus2loglik + np.log(self.nobs) * self.df

    @property
    def feval(self) -> int:
        return self.optinfo.feval

    @property
    def optimizer(self) -> str:
        return self.optinfo.stages[-1].optimizer if self.optinfo.stages else ""


@dataclass(frozen=True)
class Control:
    """The glmerControl settings the reference honours (R names in `from_dict`)."""

    maxfun: int = 10000
    tolPwrss: float = TOL_PWRSS
    calc_derivs: bool = True
    boundary_tol: float = BOUNDARY_TOL
    optCtrl: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, control: dict | None) -> "Control":
        control = {} if control is None else control
        if not isinstance(control, dict) or not isinstance(control.get("optCtrl") or {}, dict):
            raise ModelError(f"control must be a dict of glmerControl settings (optCtrl a dict), not {control!r}")
        control = dict(control)
        opt = dict(control.pop("optCtrl", None) or {})
        known = {"tolPwrss": "tolPwrss", "calc.derivs": "calc_derivs", "boundary.tol": "boundary_tol"}
        kw = {}
        for key, value in control.items():
            if key not in known:
                raise ModelError(f"unsupported control setting '{key}' (supported: optCtrl, {', '.join(known)})")
            kw[known[key]] = value
        unknown = set(opt) - {"maxfun", "xst", "xt", "rhobeg", "rhoend"}
        if unknown:
            raise ModelError(f"unsupported optCtrl setting(s): {', '.join(sorted(unknown))}")
        for key, value in [*control.items(), *opt.items()]:
            if key == "calc.derivs" and not isinstance(value, bool):
                raise ModelError(f"control setting 'calc.derivs' must be true or false, not {value!r}")
            if key not in ("calc.derivs", "xst", "xt") and not _is_number(value):
                raise ModelError(f"control setting '{key}' must be a number, not {value!r}")
        return cls(maxfun=int(opt.get("maxfun", 10000)), optCtrl=opt, **kw)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__}


# --------------------------------------------------------------------------------------------------
def devfun(formula, data, family="binomial", link=None, nAGQ=1, weights=None, offset=None,
           mode="lme4", control=None, lp0=None, model: Model | None = None) -> DevianceFunction:
    """The objective of `glmer(..., devFunOnly=TRUE)` (§9): for nAGQ=0 before stage 1, for
    nAGQ≥1 after it (its `lp0` holds the stage-1 optimum). `lp0=` replaces that restart point,
    to evaluate at another implementation's state. The result carries `start` and `xst` (§9).
    `model`: the one these arguments build, built already (a fit's `model`), not built again."""
    _check_mode(mode)
    model = model if model is not None else make_model(formula, data, family, link, weights, offset)
    ctrl = Control.from_dict(control)
    if nAGQ > 0 and lp0 is None:
        f0, _ = _stage1(model, ctrl, mode, nAGQ)
        f = _stage2_devfun(model, f0, nAGQ, mode, ctrl)
    else:
        f = DevianceFunction(model, nAGQ, lp0 if lp0 is not None else initial_lp0(model, mode, ctrl.tolPwrss)[0],
                             mode, ctrl.tolPwrss)
    return f


def glmer(formula, data, family="binomial", link=None, nAGQ=1, weights=None, offset=None,
          mode="lme4", control=None, starts=None, model: Model | None = None) -> GlmerFit:
    """Fit a GLMM as lme4 1.1-31's `glmer` does (`mode="lme4"`), or to the exact optimum of the
    same objective (`mode="exact"`). `starts` (exact mode): further named starts, each a parameter
    vector in lme4's layout (θ, then β for nAGQ > 0), e.g. another implementation's optimum, or
    `{"par": vector, "lp0": vector}` with the linear predictor (offset excluded, one per row)
    PIRLS restarts from there (§3.3): the exact objective at a point is its value where PIRLS
    from lp0 ends, and where there are several conditional modes, or the value is rounding (a
    perfect fit, gen:thorough:345), another implementation's lp0 may end lower. `model`: the one
    these arguments build, built already (a fit's `model`), not built again; the optimizer stages
    it has run already are not run again (`_memo`)."""
    _check_mode(mode)
    if not isinstance(nAGQ, (int, np.integer)) or isinstance(nAGQ, bool) or nAGQ < 0:
        raise ModelError(f"nAGQ must be a whole number >= 0, not {nAGQ!r}")
    ctrl = Control.from_dict(control)
    model = model if model is not None else make_model(formula, data, family, link, weights, offset)
    if nAGQ > 1:
        check_agq(model, nAGQ, mode)                           # lme4 refuses before any work
    starts = _given_starts(model, nAGQ, mode, starts)
    f, par, opt = _exact(model, ctrl, nAGQ, starts) if mode == "exact" else _path(model, ctrl, mode, nAGQ)
    conv, warn = check_conv(None if opt.gradient is None else np.asarray(opt.gradient), opt.hessian,
                            par, f.lower)
    opt.conv_messages = conv
    return _report(model, f, par, opt, mode, nAGQ, converged=not warn and all(s.code == 0 for s in opt.stages)
                   and not opt.warnings)


def _path(model: Model, ctrl: Control, mode: str, nAGQ: int) -> tuple[DevianceFunction, np.ndarray, OptSummary]:
    """The two stages (§5.2) in `mode`: the deviance function, its optimum and how it was reached."""
    f0, opt = _stage1(model, ctrl, mode, nAGQ)
    if nAGQ == 0:
        par = np.asarray(opt.stages[0].par)
        return f0, (_polish(f0, par, opt) if mode == "exact" else par), opt
    f, par = _stage2(_stage2_devfun(model, f0, nAGQ, mode, ctrl), ctrl, mode, opt)
    return f, par, opt


@dataclass
class _Candidate:
    """One polished start of exact mode: its deviance function, optimum, value and history."""

    f: DevianceFunction
    par: np.ndarray
    value: float
    opt: OptSummary


@dataclass
class _Given:
    """A start given to exact mode: its parameters and, optionally, PIRLS's restart point."""

    par: np.ndarray
    lp0: np.ndarray | None = None


def _given_starts(model: Model, nAGQ: int, mode: str, starts) -> dict[str, _Given | str]:
    """`glmer`'s `starts` for exact mode, each a `_Given`, or the reason it is not one (listed with
    the starts, as a start that cannot be evaluated is: another implementation's optimum may
    belong to another design)."""
    if not starts:
        return {}
    if mode != "exact":
        raise ModelError(f"starts are for mode 'exact' (lme4 mode starts where lme4 does), not {mode!r}")
    if not isinstance(starts, dict):
        raise ModelError(f"starts must be a dict of name: parameter vector, not {type(starts).__name__}")
    npar = model.nth + (model.p if nAGQ > 0 else 0)
    out = {}
    for name, start in starts.items():
        par, lp0 = (start.get("par"), start.get("lp0")) if isinstance(start, dict) else (start, None)
        par = np.asarray(par, float).ravel()
        lp0 = None if lp0 is None else np.asarray(lp0, float).ravel()
        if not (par.shape == (npar,) and bool(np.all(np.isfinite(par)))):
            out[str(name)] = (f"not {npar} finite numbers ({model.nth} theta"
                              + (f" + {model.p} beta" if nAGQ > 0 else "") + f"): {par.tolist()}")
        elif lp0 is not None and not (lp0.shape == (model.N,) and bool(np.all(np.isfinite(lp0)))):
            out[str(name)] = f"lp0 is not {model.N} finite numbers (one per row): {lp0.size} given"
        else:
            out[str(name)] = _Given(par, lp0)
    return out


def _exact(model: Model, ctrl: Control, nAGQ: int, given: dict[str, _Given | str] | None = None
           ) -> tuple[DevianceFunction, np.ndarray, OptSummary]:
    """exact mode: the exact objective minimized from several starts, the lowest optimum kept.

    Starts, in order: `path` — the two stages on the exact objective (`_path`); `lme4` — lme4
    mode's own optimum (its two stages, no R involved); `boundary` — every θ at 0 (feasible for
    every component, §1.2), β the GLM's; then the `given` ones (e.g. glmer's optimum, which the
    harness passes: where lme4 mode lands in another basin than glmer on a rough objective, no
    start of the reference's own reaches glmer's; with glmer's lp0, the value there is exactly
    the one the harness checks never-worse against). The path is always polished; a later start is polished
    (Newton or L-BFGS-B, as the path) only when its value is below the best optimum so far, as
    only then can it win without crossing into another basin: so the result is never worse
    than lme4's optimum (glmer's, to its numerical error) on the exact objective. A start that
    cannot be evaluated (PIRLS fails) is recorded with its reason; exact mode refuses only when
    no start can (`_refusal`). `OptSummary.start` names the winner, `starts` lists every start."""
    tried, best = [], None
    builtin = (("path", _start_path), ("lme4", _start_lme4), ("boundary", _start_boundary))
    for name, start in (*builtin, *((n, partial(_start_given, given=p)) for n, p in (given or {}).items())):
        try:
            cand = start(model, ctrl, nAGQ, best)
        except (PirlsError, OptimizerError) as e:
            tried.append({"start": name, "error": str(e)})
            continue
        if cand is None:
            continue
        if not np.isfinite(cand.value):
            tried.append({"start": name, "error": f"the objective is {cand.value} there", "finite": False})
            continue
        kept = best is None or cand.value < best.value
        tried.append({"start": name, "value": cand.value, "polished": cand.opt is not None})
        if kept:
            best = cand if cand.opt is not None else _polished(model, ctrl, nAGQ, best, cand, name)
            tried[-1].update(polished=True, optimum=best.value)
    if best is None:
        raise _refusal(tried)
    best.opt.start, best.opt.starts = best.opt.start or "path", tried
    return best.f, _on_boundary(best, ctrl), best.opt


def _on_boundary(best: _Candidate, ctrl: Control) -> np.ndarray:
    """exact mode's last step: each θ within boundary.tol of its bound is put on it where the
    objective there is no worse beyond rounding (EXACT_ROUNDING relative), so that the optimum
    lies in the same place on every CPU path (gen:gate:5: θ = (2.8e-9, 5.3e-9) on one, whose
    objective stood 1 ulp below that at 0, against 0 on another)."""
    if ctrl.boundary_tol <= 0:
        return best.par
    par, fval = check_boundary(_guarded(best.f), best.par, best.value, best.f.nth, ctrl.boundary_tol,
                               EXACT_ROUNDING * (1 + abs(best.value)))
    best.opt.stages[-1].par, best.opt.stages[-1].fval = list(par), fval
    return par


def _start_path(model: Model, ctrl: Control, nAGQ: int, best) -> _Candidate:
    f, par, opt = _path(model, ctrl, "exact", nAGQ)
    return _Candidate(f, par, f(par), opt)


def _start_lme4(model: Model, ctrl: Control, nAGQ: int, best: _Candidate | None) -> _Candidate | None:
    """lme4 mode's optimum (§5.2), unpolished, on the exact objective (the path's, or one
    restarting from lme4's lp0 when the path failed); None where lme4 mode has no such fit."""
    if nAGQ > 1 and not model.scalar_single:
        return None
    f_lme4, par, _ = _path(model, replace(ctrl, calc_derivs=False), "lme4", nAGQ)
    f = best.f if best is not None else DevianceFunction(model, nAGQ, f_lme4.lp0, "exact", ctrl.tolPwrss)
    return _Candidate(f, par, f(par), None)


def _start_given(model: Model, ctrl: Control, nAGQ: int, best: _Candidate | None, given: _Given | str
                 ) -> _Candidate:
    """A given start, unpolished, on the exact objective restarting from its lp0 (else the path's,
    or exact mode's own lp0 when the path failed)."""
    if isinstance(given, str):
        raise OptimizerError(given)
    if given.lp0 is None and best is not None:
        f = best.f
    else:
        lp0 = given.lp0 if given.lp0 is not None else initial_lp0(model, "exact", ctrl.tolPwrss)[0]
        f = DevianceFunction(model, nAGQ, lp0, "exact", ctrl.tolPwrss)
    return _Candidate(f, given.par, f(given.par), None)


def _start_boundary(model: Model, ctrl: Control, nAGQ: int, best: _Candidate | None) -> _Candidate | None:
    """θ = 0 (the GLM), β the exact nAGQ = 0 objective's β̂ there; unpolished."""
    if best is None:
        return None
    theta = np.zeros(model.nth)
    if nAGQ == 0:
        return _Candidate(best.f, theta, best.f(theta), None)
    glm = DevianceFunction(model, 0, best.f.lp0, "exact", ctrl.tolPwrss)
    glm(theta)
    par = np.concatenate([theta, glm.last.beta])
    return _Candidate(best.f, par, best.f(par), None)


def _polished(model: Model, ctrl: Control, nAGQ: int, best: _Candidate | None, cand: _Candidate,
              name: str) -> _Candidate:
    """`cand` polished as the path's optimum is (L-BFGS-B for nAGQ = 0, else Newton and §5.3's
    tail), its history a stage of its own."""
    opt = OptSummary(start=name)
    opt.stages.append(StageSummary("start", list(cand.par), list(cand.par), cand.value, 1, 0, name))
    par = _polish(cand.f, cand.par, opt) if nAGQ == 0 else _finish(cand.f, cand.par, ctrl, "exact", opt)
    return _Candidate(cand.f, par, cand.f(par), opt)


def _refusal(tried: list[dict]) -> PirlsError:
    """exact mode's refusal, saying which: the objective has no minimum (PIRLS ran off to infinity
    from every start: `pirls.NO_MODE`), it is not finite at any start (`NOT_FINITE`), or it
    could not be evaluated at, or minimized from, any start (a failed factorization, …)."""
    reasons = "; ".join(f"{t['start']}: {t['error']}" for t in tried)
    what = ("has no minimum" if all(NO_MODE in t["error"] for t in tried)
            else NOT_FINITE if all(t.get("finite") is False for t in tried)
            else "cannot be evaluated or minimized from any start")
    return PirlsError(f"exact mode: the exact objective {what} ({reasons})")


def _guarded(f: DevianceFunction):
    """exact mode's objective for the optimizers: +inf where PIRLS fails, i.e. outside the region
    where the objective can be evaluated, so a trial point there is rejected rather than ending
    the fit; lme4 mode's `f` itself (lme4 stops on the error, §3.2), and so any other objective
    polished here (truth.py's `TrueDeviance`)."""
    return _Guarded(f) if getattr(f, "mode", None) == "exact" else f


class _Guarded:
    """`f` with PirlsError read as +inf; every other attribute is `f`'s."""

    def __init__(self, f: DevianceFunction):
        self.f = f

    def __call__(self, pars) -> float:
        try:
            return self.f(pars)
        except PirlsError:
            return np.inf

    def __getattr__(self, name):
        return getattr(self.f, name)


def _check_mode(mode):
    if mode not in MODES:
        raise ModelError(f"mode must be one of {MODES}, not {mode!r}")


def _stage1(model: Model, ctrl: Control, mode: str, nAGQ: int) -> tuple[DevianceFunction, OptSummary]:
    """§5.2 steps 2–3: initial joint PIRLS, then BOBYQA on theta; the state is left at the optimum."""
    settings = {k: ctrl.optCtrl[k] for k in ("rhobeg", "rhoend") if k in ctrl.optCtrl}

    def run():
        lp0, _ = initial_lp0(model, mode, ctrl.tolPwrss)
        f0 = DevianceFunction(model, 0, lp0, mode, ctrl.tolPwrss)
        res = bobyqa(_guarded(f0), model.theta0, model.lower, np.full(model.nth, np.inf), maxfun=ctrl.maxfun,
                     **settings)
        f0(np.asarray(res.par, float))                # optwrap: fn(opt$par)
        return f0, res
    f0, res = _memo(model, ("bobyqa", mode), ctrl, run)
    opt = OptSummary()
    if res.code != 0:
        opt.warnings.append(f"convergence code {res.code} from bobyqa: {res.message}")
    par, fval = np.array(res.par, float), float(res.fval)          # the memo's stays as it is
    if nAGQ == 0 and ctrl.boundary_tol > 0:
        par, fval = check_boundary(f0, par, fval, model.nth, ctrl.boundary_tol)
    opt.stages.append(StageSummary("bobyqa", list(model.theta0), list(par), fval, res.feval, res.code, res.message,
                                   settings))
    return f0, opt


def _memo(model: Model, stage: tuple, ctrl: Control, run):
    """`run()`'s (deviance function, optimizer result), computed once per model, stage and the
    settings that decide it (`Model.stages`), each caller given its own copy of the deviance
    function in the state `run` left: a stage's result and that state are the same for every
    nAGQ and every fit that reaches it (stage 1 is nAGQ = 0's at every nAGQ; lme4 mode's whole
    path is also exact mode's `lme4` start), and evaluations rebind the state, never change it
    in place, so a shallow copy is independent."""
    key = (*stage, ctrl.tolPwrss, ctrl.maxfun, repr(sorted(ctrl.optCtrl.items())))
    if key not in model.stages:
        model.stages[key] = run()
    f, res = model.stages[key]
    return copy.copy(f), res


def _stage2_devfun(model: Model, f0: DevianceFunction, nAGQ: int, mode: str, ctrl: Control) -> DevianceFunction:
    """`updateGlmerDevfun` (§5.2 step 4): lp0 = the final stage-1 linear predictor; the stage-2
    start and Nelder–Mead steps come from that same state (§5.3, §9)."""
    f = DevianceFunction(model, nAGQ, f0.linpred(), mode, ctrl.tolPwrss)
    f.start = np.concatenate([f0.last.pars, f0.last.beta])
    xst = 0.2 * np.concatenate([np.full(model.nth, 0.1), np.minimum(np.sqrt(np.diag(f0.unsc())), 10.0)])
    f.xst = np.asarray(ctrl.optCtrl.get("xst", xst), float)
    f.xt = np.asarray(ctrl.optCtrl.get("xt", f.xst * (EXACT_XT if mode == "exact" else 5e-4)), float)
    return f


def _stage2(f: DevianceFunction, ctrl: Control, mode: str, opt: OptSummary) -> tuple[DevianceFunction, np.ndarray]:
    """§5.2 step 5 / §5.3: Nelder–Mead, deriv12, fn(opt$par), check.boundary; the deviance
    function (Nelder–Mead's, or a copy of it: `_memo`) and the optimum."""
    upper = np.full(f.npar, np.inf)

    def run():
        return f, nelder_mead(_guarded(f), f.start, f.lower, upper, xst=f.xst, xt=f.xt, maxfun=ctrl.maxfun)
    f, res = _memo(f.model, ("Nelder_Mead", mode, f.nAGQ), ctrl, run)
    if res.code == 4:                 # Nelder_Mead warns, then optwrap warns with the code
        opt.warnings += [res.message, f"convergence code 4 from Nelder_Mead: {res.message}"]
    opt.stages.append(StageSummary("Nelder_Mead", list(f.start), list(res.par), float(res.fval), res.feval,
                                   res.code if res.code == 4 else 0, res.message,
                                   {"xst": list(f.xst), "xt": list(f.xt)}))
    return f, _finish(f, np.array(res.par, float), ctrl, mode, opt)


def _finish(f: DevianceFunction, par: np.ndarray, ctrl: Control, mode: str, opt: OptSummary) -> np.ndarray:
    """After stage 2's optimizer (§5.3): exact mode's Newton steps, deriv12, fn(opt$par),
    check.boundary."""
    derivs = None
    if mode == "exact":
        par, derivs = _newton(f, par, opt)
    if ctrl.calc_derivs:
        g, H = derivs or deriv12(_guarded(f), par)
        opt.gradient, opt.hessian = list(g), H
    f(par)
    if ctrl.boundary_tol > 0:
        par, fval = check_boundary(_guarded(f), par, opt.stages[-1].fval, f.nth, ctrl.boundary_tol)
        opt.stages[-1].par, opt.stages[-1].fval = list(par), fval
    return par


def _newton(f: DevianceFunction, par: np.ndarray, opt: OptSummary) -> tuple[np.ndarray, tuple | None]:
    """exact mode: Newton steps from the Nelder–Mead optimum with `deriv12`'s Hessian there and
    its central gradient at each new point (§6.1), kept while they stay inside the bounds and
    lower the objective, until the predicted decrease g'H⁻¹g/2 is at rounding level.

    The exact objective is smooth (converged PIRLS) and the Nelder–Mead optimum is close, so one
    or two steps reach a tight optimum at 2n² + 3n evaluations, where L-BFGS-B on finite
    differences needs many times that. Returns the point with its (gradient, Hessian), the
    Hessian being the start's; when no step is taken (H not positive definite, a gradient not
    finite, a step leaving the bounds or not lowering f) it falls back to `_polish` and returns no derivatives."""
    fx, trial = f(par), _guarded(f)
    g, H = deriv12(trial, par, fx=fx)
    x, steps, feval = par, 0, 1 + 2 * par.size ** 2
    try:
        cho = la.cho_factor(H)
    except (la.LinAlgError, ValueError):          # not positive definite, or not finite
        cho = None
    while cho is not None and np.all(np.isfinite(g)) and steps < NEWTON_MAXSTEPS:   # an evaluation beside x failed: inf
        step = la.cho_solve(cho, g)
        if g @ step <= NEWTON_DECREMENT * (1.0 + abs(fx)):
            break
        x_new = x - step
        if np.any(x_new < f.lower):
            break
        f_new = trial(x_new)
        feval += 1
        if not f_new < fx:
            break
        x, fx, steps = x_new, f_new, steps + 1
        g = gradient12(trial, x)
        feval += 2 * x.size
    if steps == 0:
        return _polish(f, par, opt), None
    opt.stages.append(StageSummary("Newton", list(par), list(x), float(fx), feval, 0,
                                   f"{steps} Newton step(s) on deriv12's Hessian", {"delta": 1e-4}))
    return x, (g, H)


def _polish(f: DevianceFunction, par: np.ndarray, opt: OptSummary) -> np.ndarray:
    """exact mode: L-BFGS-B with central-difference gradients from the lme4-path optimum.

    The exact objective is smooth (converged PIRLS), so a quasi-Newton method reaches a tight
    optimum; the result is kept only if it does not raise the objective. Where its line search
    fails (on ill-conditioned designs PIRLS's rounding makes differences at h = 1e-6 noise),
    BOBYQA (§5.4, derivative-free) goes on from the better point."""
    lower = np.where(np.isfinite(f.lower), f.lower, -np.inf)
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    trial = _guarded(f)

    def grad(x):
        h = 1e-6 * np.maximum(1.0, np.abs(x))
        g = np.empty_like(x)
        for j in range(x.size):
            up, dn = x.copy(), x.copy()
            up[j] += h[j]
            if x[j] - h[j] < lower[j]:
                g[j] = (trial(up) - trial(x)) / h[j]
                continue
            dn[j] -= h[j]
            g[j] = (trial(up) - trial(dn)) / (2 * h[j])
        return g

    f_start = f(par)
    res = optimize.minimize(trial, par, jac=grad, method="L-BFGS-B", bounds=bounds,
                            options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 1000})
    better = res.fun <= f_start
    x = np.asarray(res.x if better else par, float)
    opt.stages.append(StageSummary("L-BFGS-B", list(par), list(x), float(min(res.fun, f_start)), int(res.nfev),
                                   0 if res.success else 1, str(res.message), {"ftol": 1e-15, "gtol": 1e-9}))
    if not res.success:
        rb = bobyqa(trial, x, f.lower, np.full(x.size, np.inf))
        if rb.fval < opt.stages[-1].fval:
            x = np.asarray(rb.par, float)
        opt.stages.append(StageSummary("bobyqa", opt.stages[-1].par, list(x), min(rb.fval, opt.stages[-1].fval),
                                       rb.feval, rb.code, rb.message))
    f(x)
    return x


# --------------------------------------------------------------------------------------------------
def _report(model: Model, f: DevianceFunction, par: np.ndarray, opt: OptSummary, mode: str,
            nAGQ: int, converged: bool) -> GlmerFit:
    """mkMerMod and its methods (§7), from the final evaluation at `par`."""
    if not np.array_equal(f.last.pars, par):
        f(par)
    ev = f.last
    d, resp, fam = model.design, model.response, model.family
    nth = model.nth
    beta = ev.beta if nAGQ == 0 else par[nth:]
    saturated = fam.saturated_aic(resp.y, resp.n, resp.pw)
    value = ev.value
    if mode == "lme4" and np.isnan(value) and opt.stages:
        value = opt.stages[-1].fval     # lme4's dev is opt$fval (§7): +Inf where every evaluation was NaN (§5.5)
    minus2 = value + saturated if nAGQ > 1 else value
    decomp = ev.pirls.decomp
    wrss = float(np.sum(resp.pw / fam.variance(ev.mu) * (resp.y - ev.mu) ** 2))
    sigma2 = (wrss + ev.ussq) / model.N if fam.has_scale else 1.0      # sigmaML² = pwrss / n (§7)
    V_rx = sigma2 * decomp.unsc()
    messages = list(model.messages) + list(model.warnings) + list(opt.warnings) + list(opt.conv_messages)
    V = V_rx
    if opt.hessian is not None and len(opt.hessian) > nth:
        V, ok = _vcov_hessian(opt.hessian, nth)
        if not ok:
            messages.append(VCOV_FALLBACK)
            V = V_rx
    names = list(d.X_names)
    ranef, condvar = _ranef(model, par[:nth], ev)
    devres = model.devresid(ev.mu)
    with np.errstate(invalid="ignore"):     # lme4: a devResid rounded below 0 gives NaN, and deviance() NaN
        residuals = np.sign(resp.y - ev.mu) * np.sqrt(devres if mode == "lme4" else np.maximum(devres, 0.0))
    return GlmerFit(
        formula=str(d.formula.to_r()) if hasattr(d.formula, "to_r") else str(d.formula),
        family=fam.name, link=fam.link.name, nAGQ=nAGQ, mode=mode,
        fixef=dict(zip(names, map(float, beta))), theta=list(map(float, par[:nth])),
        theta_names=list(d.theta_names), minus2loglik=float(minus2), objective=float(value),
        deviance=float(np.sum(residuals ** 2)) if mode == "lme4" else float(ev.drsum),
        se=dict(zip(names, map(float, np.sqrt(np.diag(V))))), vcov=V,
        se_rx=dict(zip(names, map(float, np.sqrt(np.diag(V_rx))))),
        ranef=ranef, condvar=condvar, fitted=ev.mu.copy(),
        residuals=residuals,
        varcorr=_varcorr(d, par[:nth], sigma2), u=ev.u.copy(),
        ldL2=float(ev.ldL2), ldRX2=float(decomp.ldRX2), ussq=float(ev.ussq), drsum=float(ev.drsum),
        wrss=wrss, aic_resp=float(ev.aic), saturated=float(saturated), nobs=model.N,
        df=model.p + nth + int(fam.has_scale), converged=converged, messages=messages,
        optinfo=opt, versions=versions(), model=model)


def _varcorr(design, theta: np.ndarray, sigma2: float) -> dict[str, np.ndarray]:
    """`VarCorr`: σ² T_i T_i' for each term, keyed `group` (`group.k` for a factor's later terms)."""
    out = {}
    for t, T in zip(design.reterms, design.T(theta)):
        out[t.group if t.group not in out else f"{t.group}.{len(out)}"] = sigma2 * T @ T.T
    return out


def _vcov_hessian(H: np.ndarray, nth: int) -> tuple[np.ndarray, bool]:
    """`vcov.merMod` with the Hessian: `(h + h')[β, β]`, h = H⁻¹ (§7); NA, hence the RX fallback,
    where R's `solve(H)` refuses: H not finite, exactly singular, or its reciprocal condition
    number (LAPACK's 1-norm estimate, as R's `La_solve`) below `.Machine$double.eps` (scipy's
    `solve` only warns, and only below eps/2: its inverse of such an H was taken where glmer's
    standard errors come from RX)."""
    n, rcond = len(H), 0.0
    if np.all(np.isfinite(H)):
        lu, piv, info = lapack.dgetrf(H)
        if info == 0:
            rcond, _ = lapack.dgecon(lu, np.linalg.norm(H, 1), norm="1")
    if not rcond >= np.finfo(float).eps:
        return np.full((n - nth,) * 2, np.nan), False
    h, _ = lapack.dgetrs(lu, piv, np.eye(n))
    V = (h + h.T)[nth:, nth:]
    ok = bool(np.all(np.isfinite(V)) and la.eigvalsh(V).min() > 0)
    return V, ok


def _ranef(model: Model, theta: np.ndarray, ev) -> tuple[dict, dict]:
    """b = Λû by term, level × column, and condVar faces `Λ_j A⁻¹ Λ_j'` (§7): Λ is block
    diagonal, so each face is `T A⁻¹_block T'` from A⁻¹'s diagonal block of that level."""
    d = model.design
    b = d.Lambdat(theta).T @ ev.u
    L = ev.pirls.decomp.L
    Ainv = L.Ainv_blocks() if model.single_term else L.solve_A(np.eye(model.q))
    ranef, condvar = {}, {}
    for i, (t, T) in enumerate(zip(d.reterms, d.T(theta))):
        lo = d.Gp[i]
        block = b[lo:lo + t.nl * t.nc].reshape(t.nl, t.nc)
        if model.single_term:
            blocks = Ainv
        else:
            idx = lo + np.arange(t.nl)[:, None] * t.nc + np.arange(t.nc)
            blocks = Ainv[idx[:, :, None], idx[:, None, :]]
        faces = np.einsum("ij,ljk,mk->iml", T, blocks, T)
        frame = pd.DataFrame(block, index=list(t.levels), columns=list(t.cnms))
        if t.group in ranef:                      # several terms of one factor share a data.frame
            ranef[t.group] = pd.concat([ranef[t.group], frame], axis=1)
            condvar[f"{t.group}.{i}"] = faces
        else:
            ranef[t.group], condvar[t.group] = frame, faces
    return ranef, condvar
