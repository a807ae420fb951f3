"""Why do the reference and glmer part? Evidence for one (case, nAGQ, mode), as a plain record.

`investigate(case, nAGQ, mode)` runs the staged diagnosis (`compare_case`) and adds what a person
needs to see the reason:

* the objective profile along the segment between glmer's and the reference's optima,
  evaluated by both deviance functions (R's lp0 on both sides, spec §3.3), and along each
  parameter axis through glmer's optimum (±2/√H_ii from glmer's Hessian: the objective rises by
  about 2 at the ends);
* the PIRLS iterations side by side at one parameter vector (default glmer's optimum): pdev
  after each iteration, step-halvings, iteration count (§3.2);
* ldL2, ‖u‖² and Σ devResid at both optima, by both implementations (§4.4);
* both sides' convergence diagnostics (optimizer, feval, gradient, Hessian eigenvalues, checkConv
  messages, §6.2);
* the fixed-modes Gauss–Newton answer: β from a loop that updates β by Gauss–Newton while
  holding the conditional modes û(θ, β) fixed, at glmer's θ̂. It solves the joint penalized
  (PQL-type) equations, which is what nAGQ = 0 optimizes (§4.1), not the Laplace objective of
  nAGQ ≥ 1 (§4.2: ldL2 depends on β through the weights); the profile along the segment from it
  to glmer's β̂ shows the components that separate the two.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from reference_impl.errors import ModelError
from reference_impl.model import make_model
from reference_impl.pirls import pirls

from .case import Case
from .compare import Comparison, compare_case
from .diagnose import STAGES, evaluations
from .diffs import plain
from .implementations import NoDevianceFunction, load
from .result import HARNESS_ERROR, TIMEOUT, FitResult
from .sides import REFUSALS, Evaluation, PirlsTrace, PythonSide, RSide
from .tolerances import Policy

COMPONENTS = ("value", "ldL2", "ussq", "drsum")
# t along a segment (steps of 1/8 and 1/16: t = 0 and 1, the two ends, are on the grid exactly)
SEGMENT_T = np.linspace(-0.5, 1.5, 17)          # pars = glmer + t (python − glmer)
FIXED_MODES_T = np.linspace(-0.25, 1.25, 25)    # β = β_GN + t (β_glmer − β_GN)
GN_TOL, GN_MAXIT = 1e-12, 500


@dataclass
class Curve:
    """Deviance-function values and components along a path, by both implementations."""

    label: str
    x: list[float]
    python: dict[str, list[float]]
    r: dict[str, list[float]]
    marks: dict[str, float] = field(default_factory=dict)     # where the optima sit on x


@dataclass
class FixedModes:
    """The fixed-modes Gauss–Newton β at glmer's θ̂, beside glmer's β̂ (see module doc)."""

    theta: list[float]
    beta: list[float]
    glmer_beta: list[float]
    iterations: int
    converged: bool                # False: β after GN_MAXIT steps (the loop converges linearly)
    max_abs_diff: float
    profile: Curve | None          # nAGQ ≥ 1: from (θ̂, β_GN) at x = 0 to glmer's (θ̂, β̂) at 1


@dataclass
class Investigation:
    case: dict[str, Any]
    nAGQ: int
    mode: str
    verdict: str
    stage_failed: str | None
    comparison: dict[str, Any]
    names: list[str] = field(default_factory=list)
    optima: dict[str, list[float]] = field(default_factory=dict)
    at_optima: dict[str, dict[str, float]] = field(default_factory=dict)   # "python@r", …
    segment: Curve | None = None
    axes: list[Curve] = field(default_factory=list)
    trace_at: list[float] = field(default_factory=list)
    traces: dict[str, dict[str, Any]] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)
    fixed_modes: FixedModes | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.comparison["passed"])

    @property
    def undecided(self) -> bool:
        """No verdict about the model: a harness failure or a side past its time limit."""
        return self.verdict in (HARNESS_ERROR, TIMEOUT)

    def to_json(self) -> dict[str, Any]:
        return plain(asdict(self))


def investigate(case: Case, nAGQ: int, mode: str = "lme4", at=None, policy: Policy | None = None,
                r_side: RSide | None = None, points: int = 21,
                python_timeout: float | None = None) -> Investigation:
    """Diagnose `case` at one nAGQ and mode and gather the evidence (module doc). `at`: the
    parameter vector of the PIRLS trace (lme4's: θ for nAGQ = 0, c(θ, β) otherwise); the
    reference's fit is bounded by `python_timeout` seconds, R's calls by `r_side.timeout`."""
    r_side = r_side or RSide()
    report = compare_case(case.with_nagq([nAGQ]), (mode,), policy, r_side, python_timeout=python_timeout)
    c = report.results[0]
    d = c.diagnosis
    inv = Investigation(report.to_json()["case"], nAGQ, c.mode, d.verdict,
                        None if d.stage_failed is None else STAGES[d.stage_failed], c.to_json(),
                        notes=list(d.notes))
    if not (c.python.ok and c.r.ok):
        inv.notes.append("no profiles: " + "; ".join(
            f"{side} refused ({fit.error})" for side, fit in (("glmer", c.r), ("the reference", c.python))
            if not fit.ok))
        return inv
    inv.names = list(c.r.theta_names) + (list(c.r.fixef) if nAGQ else [])
    inv.optima = {"r": c.r.pars.tolist(), "python": c.python.pars.tolist()}
    inv.diagnostics = {"r": r_diagnostics(c.r), "python": python_diagnostics(c.python)}
    at = c.r.pars if at is None else _parse_at(at, len(inv.names))
    inv.trace_at = at.tolist()
    impl = PythonSide(mode) if mode in ("lme4", "exact") else load(mode)
    devfun = r_side.devfun(case, nAGQ)
    try:
        both = _Both(case, nAGQ, impl, r_side, devfun)
        try:
            _profiles(inv, c, both, points)
        except NoDevianceFunction as e:
            inv.notes.append(f"no profiles, PIRLS traces or fixed-modes curve: {e}")
            return inv
        own = (impl.trace(case, nAGQ, at, both.lp0) if isinstance(impl, PythonSide)    # PIRLS per iteration
               else PirlsTrace([], [], None, f"{c.mode} exposes no PIRLS trace"))
        inv.traces = {"r": _trace_json(r_side.trace(devfun, at)), "python": _trace_json(own)}
        try:
            inv.fixed_modes = fixed_modes(case, c.r, both)
        except REFUSALS as e:
            inv.notes.append(f"fixed-modes Gauss–Newton from glmer's β stopped: {e}")
    finally:
        r_side.drop(devfun)
    return inv


class _Both:
    """Both deviance functions of one (case, nAGQ, implementation), evaluated at the same points."""

    def __init__(self, case: Case, nAGQ: int, impl, r_side: RSide, devfun: dict):
        self.case, self.nAGQ, self.r_side, self.devfun = case, nAGQ, r_side, devfun
        self.python = impl
        self.lp0 = np.asarray(devfun["lp0"], float)

    def evaluate(self, pars: list[np.ndarray]) -> tuple[list[Evaluation], list[Evaluation]]:
        return (evaluations(self.python, self.case, self.nAGQ, pars, self.lp0, strict=True),
                self.r_side.evaluate(self.devfun, pars))

    def curve(self, label: str, x, pars: list[np.ndarray], marks: dict[str, float]) -> Curve:
        py, r = self.evaluate(pars)
        return Curve(label, [float(v) for v in x], _columns(py), _columns(r), marks)


def _columns(evs: list[Evaluation]) -> dict[str, list[float]]:
    """Each component over `evs`; NaN for a part an implementation does not expose."""
    return {k: [np.nan if getattr(e, k) is None else float(getattr(e, k)) for e in evs] for k in COMPONENTS}


def _profiles(inv: Investigation, c: Comparison, both: _Both, points: int) -> None:
    r_opt, py_opt = c.r.pars, c.python.pars
    py, r = both.evaluate([r_opt, py_opt])
    for where, k in (("r", 0), ("python", 1)):
        inv.at_optima[f"python@{where}"] = {q: v[k] for q, v in _columns(py).items()}
        inv.at_optima[f"r@{where}"] = {q: v[k] for q, v in _columns(r).items()}
    step = py_opt - r_opt
    if np.any(step != 0):
        inv.segment = both.curve("glmer → python", SEGMENT_T, [r_opt + s * step for s in SEGMENT_T],
                                 {"glmer": 0.0, "python": 1.0})
    else:
        inv.notes.append("the two optima are identical: no segment to profile")
    widths = _axis_widths(c.r, r_opt)
    lower = np.concatenate([np.asarray(c.r.extra.get("theta_lower", []), float),
                            np.full(len(r_opt) - len(c.r.theta), -np.inf)])
    for i, name in enumerate(inv.names):
        x = np.linspace(max(r_opt[i] - widths[i], np.nan_to_num(lower[i], nan=-np.inf)),
                        r_opt[i] + widths[i], points)
        pars = [np.where(np.arange(len(r_opt)) == i, v, r_opt) for v in x]
        inv.axes.append(both.curve(name, x, pars, {"glmer": float(r_opt[i]),
                                                   "python": float(py_opt[i])}))


def _axis_widths(r: FitResult, pars: np.ndarray) -> np.ndarray:
    """±2/√H_ii from glmer's finite-difference Hessian where it is usable (nAGQ ≥ 1), else half
    the parameter's size (at least 0.05)."""
    fallback = 0.5 * np.maximum(np.abs(pars), 0.1)
    H = (r.extra.get("derivs") or {}).get("Hessian")
    if H is None or np.shape(H) != (len(pars), len(pars)):
        return fallback
    h = np.diag(np.asarray(H, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        w = 2.0 / np.sqrt(h)
    return np.where(np.isfinite(w) & (h > 0), w, fallback)


def _parse_at(at, n: int) -> np.ndarray:
    if isinstance(at, str):
        try:
            at = [float(v) for v in at.split(",")]
        except ValueError:
            raise ModelError(f"--at must be comma-separated numbers, not {at!r}") from None
    at = np.asarray(at, float).ravel()
    if at.size != n:
        raise ModelError(f"--at has {at.size} values; this deviance function takes {n}")
    return at


def _trace_json(t: PirlsTrace) -> dict[str, Any]:
    ev = t.evaluation
    return {"iterations": t.iterations, "pdev": t.pdev, "halvings": t.halvings, "error": t.error,
            "lines": t.lines, "value": None if ev is None else float(ev.value),
            "ldL2": None if ev is None else float(ev.ldL2)}


# -- convergence diagnostics ----------------------------------------------------------------------
def r_diagnostics(r: FitResult) -> dict[str, Any]:
    """glmer's optinfo: optimizer, feval, return codes, gradient and Hessian (derivs), messages."""
    x = r.extra
    derivs = x.get("derivs") or {}
    H = derivs.get("Hessian")
    return {"converged": r.converged, "optimizer": r.optimizer, "feval": r.feval,
            "conv_opt": x.get("conv_opt"), "optimizer_message": x.get("optimizer_message"),
            "checkConv": list(x.get("conv_lme4") or []), "messages": list(r.messages),
            "gradient": None if derivs.get("gradient") is None else np.ravel(derivs["gradient"]).tolist(),
            "hessian_eigenvalues": None if H is None else np.linalg.eigvalsh(np.asarray(H, float)).tolist()}


def python_diagnostics(py: FitResult) -> dict[str, Any]:
    """The reference's optimizer history; of another implementation, what its fit reports."""
    opt = py.extra.get("optinfo")
    if opt is None:
        return {"converged": py.converged, "optimizer": py.optimizer, "feval": py.feval, "stages": [],
                "checkConv": [], "messages": list(py.messages), "gradient": None, "hessian_eigenvalues": None}
    return {"converged": py.converged, "optimizer": py.optimizer, "feval": py.feval,
            "stages": [f"{s.optimizer}: {s.feval} evaluations, code {s.code} {s.message}".strip()
                       for s in opt.stages],
            "checkConv": list(opt.conv_messages), "messages": list(py.messages),
            "gradient": opt.gradient,
            "hessian_eigenvalues": None if opt.hessian is None
            else np.linalg.eigvalsh(np.asarray(opt.hessian, float)).tolist()}


# -- the fixed-modes Gauss–Newton loop --------------------------------------------------------------
def fixed_modes_beta(case: Case, theta, beta0) -> tuple[np.ndarray, int, bool]:
    """β from Gauss–Newton steps with the conditional modes held fixed: repeat û = mode at
    (θ, β) (converged u-only PIRLS, §3.2); β += (X'WX)⁻¹ X'W (y − μ)/μ.eta at û, until the step
    is below 1e-12 (relative) or GN_MAXIT steps. Its fixed point is the joint penalized mode's β
    (nAGQ = 0's, §4.1). Returns β, the steps taken and whether it converged."""
    m = make_model(case.formula, case.data, case.family, case.link, case.weights, case.offset)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging step ends in PIRLS's NaN test
        return _gauss_newton(m, np.asarray(theta, float), np.asarray(beta0, float))


def _gauss_newton(m, theta: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, int, bool]:
    fam, resp, X = m.family, m.response, m.X
    u = np.zeros(m.q)
    for it in range(1, GN_MAXIT + 1):
        offset = m.offset + X @ beta
        res = pirls(m, theta, offset + m.Zb(theta, u), offset, u, np.zeros(m.p), u_only=True,
                    mode="exact")
        u = res.u
        mueta = fam.mu_eta(res.eta)
        W = mueta ** 2 * resp.pw / fam.variance(res.mu)
        step = np.linalg.solve(X.T @ (W[:, None] * X), X.T @ (W * (resp.y - res.mu) / mueta))
        beta = beta + step
        if np.max(np.abs(step)) <= GN_TOL * (1.0 + np.max(np.abs(beta))):
            return beta, it, True
    return beta, GN_MAXIT, False


def fixed_modes(case: Case, r: FitResult, both: _Both) -> FixedModes:
    theta, glmer_beta = np.asarray(r.theta, float), np.array(list(r.fixef.values()))
    beta, iterations, converged = fixed_modes_beta(case, theta, glmer_beta)
    profile = None
    if both.nAGQ >= 1:
        ends = [np.concatenate([theta, beta + s * (glmer_beta - beta)]) for s in FIXED_MODES_T]
        profile = both.curve("β: fixed-modes Gauss–Newton → glmer", FIXED_MODES_T, ends,
                             {"fixed modes": 0.0, "glmer": 1.0})
    return FixedModes(theta.tolist(), beta.tolist(), glmer_beta.tolist(), iterations, converged,
                      float(np.max(np.abs(beta - glmer_beta))), profile)
