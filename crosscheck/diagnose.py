"""Staged diagnosis of one (case, nAGQ, mode): where do the two fits part?

0. design — X column names and values, Zt, θ layout and bounds, the saturated constant;
1. objective at identical parameters — each deviance function at both optima (R's lp0 on both
   sides, spec §3.3), component-wise (ldL2, ||u||², Σ devResid) and the conditional modes u;
2. optimum — −2 log L (absolute scale), θ, β absolutely and in SE units, deviance;
3. derived — standard errors (Hessian and RX), conditional modes b, fitted values.

In exact mode the reference answers a different question (the converged optimum of the same
model), so only what must hold for it gates: design, objectives, and that its optimum is at least
as good as glmer's; parameter and derived differences are reported as glmer's numerical error.

The diagnosis stops at the first stage that fails; the verdict follows from that stage.

glmer is not a function of the model alone: on a rough or flat objective, rounding (the order of
a sum) forks its optimizer's path. So when lme4 mode parts from glmer only at stage 2 or 3, glmer
is refitted on the same data with its rows permuted (`ROW_ORDERS` fixed orders); if every
difference that failed there is no larger than glmer's own spread (the largest |glmer(permuted) −
glmer| of that quantity), the verdict is `lme4-noise` (passing): glmer differs from itself as much.
Those differences stay in the diagnosis, informational, and a note gives glmer's spread.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from . import diffs as D
from .case import Case
from .diffs import Diff
from .result import FitResult
from .sides import PythonSide, RSide
from .tolerances import Policy

STAGES = ("design", "objective", "optimum", "derived")
VERDICT_OF_STAGE = {0: "design-mismatch", 1: "objective-mismatch", 2: "optimizer-only",
                    3: "se-mismatch"}
PASSING = ("match", "lme4-noise")
ROW_ORDERS = 3                 # permuted row orders glmer is refitted on (seeds 0, 1, 2)


@dataclass
class Refusal:
    python: str | None
    r: str | None
    agree: bool | None

    def to_json(self):
        return {"python": self.python, "r": self.r, "agree": self.agree}


@dataclass
class Diagnosis:
    diffs: list[Diff] = field(default_factory=list)
    stage_failed: int | None = None
    verdict: str = "match"
    refusal: Refusal | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict in PASSING or (self.verdict == "both-refused" and bool(self.refusal.agree))


# Refusals the reference words differently from lme4 (its messages name the column, row, value):
# (lme4's text, the reference's), as regular expressions; each pair is exercised against real R
# in tests/test_bad_input.py.
SAME_REFUSAL = [
    (r"^NA/NaN/Inf in ", r"has a missing or infinite value at row|is NaN or infinite at row"),
    (r"^all\(weights >= 0\) is not TRUE$", r"^negative weights not allowed"),
    (r"^y values must be 0 <= y <= 1$", r"^binomial response must be in \[0, 1\]"),
    (r"^response must be numeric( or factor)?$", r"^response '.+' holds text|^a factor response "),
    (r"^Invalid grouping factor specification", r"^the data frame has no rows$"),
]


def reasons_agree(python: str, r: str) -> bool:
    """The reference's and lme4's refusal messages say the same thing: one contains the other
    (the reference quotes lme4's text), or they are a known pair of `SAME_REFUSAL`."""
    norm = [" ".join(s.lower().replace("‘", "'").replace("’", "'").split()) for s in (python, r)]
    return (norm[0] == norm[1] or norm[0] in norm[1] or norm[1] in norm[0]
            or any(re.search(r_text, r) and re.search(py_text, python) for r_text, py_text in SAME_REFUSAL))


class Diagnoser:
    """Runs the stages for one (case, nAGQ) against one Python mode; R's deviance function is
    built once per nAGQ and shared between modes."""

    def __init__(self, case: Case, policy: Policy, r_side: RSide):
        self.case, self.policy, self.r_side = case, policy, r_side
        self._devfuns: dict[int, dict] = {}
        self._python_at_r: float | None = None      # the reference's objective at glmer's optimum
        self._permuted: dict[int, list[tuple[np.ndarray, FitResult]]] = {}

    def close(self) -> None:
        for devfun in self._devfuns.values():
            self.r_side.drop(devfun)
        self._devfuns.clear()

    def run(self, nAGQ: int, mode: str, py: FitResult, r: FitResult) -> Diagnosis:
        if not (py.ok and r.ok):
            return _refused(py, r)
        tol = lambda q: self.policy.get(mode, nAGQ, q)      # noqa: E731 — one policy lookup per diff
        stages = (lambda: design(py, r, tol),
                  lambda: self.objective(nAGQ, mode, py, r, tol),
                  lambda: optimum(mode, py, r, tol, self._python_at_r),
                  lambda: derived(mode, py, r, tol))
        out = Diagnosis()
        for k, stage in enumerate(stages):
            diffs = stage()
            out.diffs += diffs
            if not all(d.ok for d in diffs if d.gating):
                out.stage_failed, out.verdict = k, VERDICT_OF_STAGE[k]
                break
        if mode == "lme4" and out.stage_failed in (2, 3):
            self.lme4_noise(nAGQ, py, r, tol, out)
        return out

    # -- glmer against itself ---------------------------------------------------------------------
    def lme4_noise(self, nAGQ: int, py: FitResult, r: FitResult, tol, out: Diagnosis) -> None:
        """`lme4-noise` when every failing stage-2/3 difference is within glmer's own spread: the
        largest |glmer(rows permuted) − glmer| of that quantity over the first row orders."""
        failing = [d for d in out.diffs if d.gating and not d.ok]
        spread: dict[str, float] = {}
        for k, (order, r_k) in enumerate(self._permuted_fits(nAGQ, py.saturated)):
            if not r_k.ok:
                continue
            for d in [*optimum("lme4", r_k, r, tol, None), *derived("lme4", _in_order(r_k, order), r, tol)]:
                if d.abs is not None:
                    key = _element(d.quantity)
                    spread[key] = max(spread.get(key, 0.0), d.abs)
            if all(d.abs is not None and d.abs <= spread.get(_element(d.quantity), -1.0) for d in failing):
                for d in failing:
                    d.gating = False
                out.verdict = "lme4-noise"
                out.notes.append(
                    f"glmer refitted on the same data in {k + 1} other row order(s) moves as far as the "
                    "reference is from it: " + ", ".join(f"{_element(d.quantity)} {spread[_element(d.quantity)]:.2e}"
                                                         for d in failing[:4]) + (" …" if len(failing) > 4 else ""))
                return

    def _permuted_fits(self, nAGQ: int, C: float | None):
        """glmer on `ROW_ORDERS` row permutations of the case, fitted once per nAGQ, lazily."""
        fits = self._permuted.setdefault(nAGQ, [])
        for k in range(ROW_ORDERS):
            if k == len(fits):
                order = np.random.default_rng(k).permutation(len(self.case.data))
                fits.append((order, self.r_side.fit(self.case.with_rows(order), nAGQ, C)))
            yield fits[k]

    # -- stage 1 ------------------------------------------------------------------------------------
    def objective(self, nAGQ: int, mode: str, py: FitResult, r: FitResult, tol) -> list[Diff]:
        if nAGQ not in self._devfuns:
            self._devfuns[nAGQ] = self.r_side.devfun(self.case, nAGQ)
        devfun = self._devfuns[nAGQ]
        points = {"r": r.pars, "python": py.pars}
        at_r = self.r_side.evaluate(devfun, list(points.values()))
        at_py = PythonSide(mode).evaluate(self.case, nAGQ, list(points.values()),
                                          np.asarray(devfun["lp0"], float))
        self._python_at_r = at_py[0].value
        out = []
        for where, e_py, e_r in zip(points, at_py, at_r):
            if e_py.error or e_r.error:
                out.append(D.equal(f"evaluation@{where} optimum", e_py.error, e_r.error, 1))
                continue
            out.append(D.scalar(f"objective@{where}", e_py.value, e_r.value, tol("objective"), 1))
            out += [D.scalar(f"{q}@{where}", getattr(e_py, q), getattr(e_r, q), tol(q), 1)
                    for q in ("ldL2", "ussq", "drsum")]
            out.append(D.array(f"u@{where}", e_py.u, e_r.u, tol("u"), 1))
        return out


def _element(quantity: str) -> str:
    """`fitted[7 of 20]` → `fitted` (an array's worst element), `theta[g.x]` unchanged."""
    return re.sub(r"\[[^\]]* of [^\]]*\]$", "", quantity)


def _in_order(fit: FitResult, order: np.ndarray) -> FitResult:
    """A fit of the rows in `order`, with its per-row results put back in the original order."""
    if fit.fitted is None:
        return fit
    fitted = np.empty_like(np.asarray(fit.fitted, float))
    fitted[order] = fit.fitted
    return replace(fit, fitted=fitted)


def _refused(py: FitResult, r: FitResult) -> Diagnosis:
    if not py.ok and not r.ok:
        verdict, agree = "both-refused", reasons_agree(py.error, r.error)
    else:
        verdict, agree = ("r-refused" if not r.ok else "python-refused"), None
    return Diagnosis(verdict=verdict, refusal=Refusal(py.error, r.error, agree))


# -- stages 0, 2, 3: from the two fits alone ---------------------------------------------------------
def design(py: FitResult, r: FitResult, tol) -> list[Diff]:
    p, q = py.extra, r.extra
    out = [D.equal("X_names", p["X_names"], q["X_names"], 0),
           D.equal("theta_names", py.theta_names, r.theta_names, 0)]
    if out[0].ok:
        out.append(D.array("X", p["X"], q["X"], tol("X"), 0))
    out.append(D.sparse_pattern("Zt", p["Zt"], q["Zt"], 0))
    if out[-1].ok:
        out.append(D.array("Zt", p["Zt"], q["Zt"], tol("Zt"), 0))
    out.append(D.array("theta_lower", np.nan_to_num(p["theta_lower"], neginf=-1e308),
                       np.nan_to_num(q["theta_lower"], neginf=-1e308), tol("theta_lower"), 0))
    lme4_C = q.get("saturated_lme4")
    if lme4_C is not None:
        saturated = D.scalar("saturated", py.saturated, lme4_C, tol("saturated"), 0)
        # lme4's aic − deviance is NaN on some fits it returns (its aic is not finite there):
        # lme4's quirk, reported, not a difference of design
        saturated.gating = bool(np.isfinite(lme4_C))
        out.append(saturated)
    return out


def optimum(mode: str, py: FitResult, r: FitResult, tol, python_at_r: float | None) -> list[Diff]:
    """lme4 mode: the two optima must coincide. exact mode: exact and glmer optimize different
    functions (converged vs lme4's PIRLS), so the optimum is judged on the exact objective —
    `minus2loglik_excess` = exact at its optimum − exact at glmer's optimum ≤ tol (never worse) and
    `optimum_gap` = the same difference in absolute value (how far glmer's optimum is from the
    exact one, in −2 log L units); θ, β and the deviance are reported, informational."""
    out = [D.scalar("minus2loglik", py.minus2loglik, r.minus2loglik, tol("minus2loglik"), 2)]
    if mode == "exact" and python_at_r is not None:
        out += [D.at_most("minus2loglik_excess", py.objective, python_at_r,
                          tol("minus2loglik_excess"), 2),
                D.scalar("optimum_gap", python_at_r - py.objective, 0.0, tol("optimum_gap"), 2)]
    params = D.named("theta", dict(zip(py.theta_names, py.theta)), dict(zip(r.theta_names, r.theta)),
                     tol("theta"), 2)
    params += D.named("fixef", py.fixef, r.fixef, tol("fixef"), 2)
    if list(py.fixef) == list(r.fixef) and all(np.isfinite(list(r.se.values()))):
        params += D.named("fixef_se_units", py.fixef, r.fixef, tol("fixef_se_units"), 2, scale=r.se)
    params.append(D.scalar("deviance", py.deviance, r.deviance, tol("deviance"), 2))
    return out + _informational_in_exact(mode, params)


def derived(mode: str, py: FitResult, r: FitResult, tol) -> list[Diff]:
    """SEs, conditional modes and fitted values at each side's optimum. In exact mode these are
    informational: they follow the optimum's location (judged in stage 2) and, for Hessian-based
    SEs, lme4's second differences of a piecewise objective (§5.7, §6.1)."""
    out = D.named("se", py.se, r.se, tol("se"), 3)
    if r.se_rx:
        out += D.named("se_rx", py.se_rx, r.se_rx, tol("se_rx"), 3)
    for group, re_r in (r.ranef or {}).items():
        re_py = (py.ranef or {}).get(group)
        if re_py is None:
            out.append(D.equal("ranef groups", sorted(py.ranef or {}), sorted(r.ranef), 3))
            continue
        out.append(D.array(f"ranef[{group}]", re_py["values"], re_r["values"], tol("ranef"), 3))
    out.append(D.array("fitted", py.fitted, r.fitted, tol("fitted"), 3))
    return _informational_in_exact(mode, out)


def _informational_in_exact(mode: str, diffs: list[Diff]) -> list[Diff]:
    """In exact mode `diffs` are reported but do not gate, except equality of names."""
    for d in diffs:
        d.gating = mode != "exact" or d.tol == "equal"
    return diffs
