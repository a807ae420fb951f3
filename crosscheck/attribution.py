"""Error attribution: whose error is each difference from the exact marginal likelihood?

For a model with one random-effects term (binomial or Poisson: families whose lme4 objective is a
likelihood, §4.2), per nAGQ k, at each fit's own optimum, on the absolute −2 log L scale:

    approximation    exact_k − truth        the Laplace / AGQ-k approximation itself (exact mode:
                                            converged PIRLS, tight optimum)
    lme4 numerical   glmer − exact_k        lme4's PIRLS stopping rule and penultimate-weights
                                            factor, its optimizer's tolerances (§3.2, §5.7)
    implementation   lme4 mode − glmer      the reference's reproduction of glmer
    referee          glmmTMB − exact_1      glmmTMB's Laplace (k = 1, informational)

each also as max |Δθ| and max |Δβ| between the two optima. The first three telescope: lme4 mode −
truth is their sum. `truth cost` = truth(glmer's estimates) − truth(MLE) ≥ 0 is what glmer's
estimates lose on the exact likelihood, all errors together.

The truth:
* scalar term — `reference_impl.truth`: per-level adaptive Gauss–Kronrod to ~1e-13, no
  Gauss–Hermite node (independent of the AGQ code), MLE by `truth_mle`;
* vector term (glmer refuses nAGQ > 1 there) — exact-mode AGQ (`reference_impl.agq`, product rule
  checked against brute-force 2-D integration in tests/test_agq_vector.py) fitted at k = 9, 15, 25,
  35, … nodes per dimension until two successive optima agree to `VECTOR_TOL` in −2 log L; that
  sequence is recorded as the evidence of convergence.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import reference_impl as ri
from reference_impl.errors import ModelError
from reference_impl.model import make_model
from reference_impl.objective import DevianceFunction, initial_lp0
from reference_impl.truth import TrueDeviance, truth_mle

from .case import Case
from .diffs import plain
from .result import FitResult
from .sides import GlmmTMBSide, PythonSide, RSide, saturated

VECTOR_KS = (9, 15, 25, 35, 45, 60)
VECTOR_TOL = 1e-7
COMPONENTS = (("approximation", "exact", "truth", "the Laplace / AGQ approximation (exact mode − truth)"),
              ("lme4 numerical", "glmer", "exact", "lme4's numerical error (glmer − exact mode)"),
              ("implementation", "lme4", "glmer", "implementation difference (lme4 mode − glmer)"),
              ("referee", "glmmTMB", "exact", "glmmTMB's Laplace − exact mode (informational)"))


@dataclass
class Estimate:
    """One fit's optimum on the attribution's terms (or why there is none)."""

    minus2loglik: float | None = None
    theta: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def of(cls, fit: FitResult) -> Estimate:
        if not fit.ok:
            return cls(error=fit.error)
        return cls(float(fit.minus2loglik), list(map(float, fit.theta)), list(map(float, fit.fixef.values())))

    @property
    def pars(self) -> np.ndarray:
        return np.array([*self.theta, *self.beta])


@dataclass
class Component:
    name: str
    what: str
    d_minus2loglik: float | None
    d_theta: float | None
    d_beta: float | None


@dataclass
class Row:
    nAGQ: int
    estimates: dict[str, Estimate]
    components: list[Component]
    truth_cost: float | None            # truth(glmer's estimates) − truth(MLE)
    notes: list[str] = field(default_factory=list)


@dataclass
class Attribution:
    case: dict[str, Any]
    truth_method: str
    truth: Estimate
    evidence: list[dict[str, Any]]      # vector term: the AGQ sequence behind the truth
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return plain(asdict(self))

    def component(self, nAGQ: int, name: str) -> Component:
        row = next(r for r in self.rows if r.nAGQ == nAGQ)
        return next(c for c in row.components if c.name == name)


def not_attributable(case: Case) -> str | None:
    """Why the attribution cannot be made for `case` (None when it can)."""
    try:
        m = make_model(case.formula, case.data, case.family, case.link, case.weights, case.offset)
    except ModelError as e:
        return str(e)
    if not m.single_term:
        return "error attribution needs a single random-effects term (one grouping factor)"
    if m.family.has_scale:
        return (f"family '{case.family}' has a scale parameter: lme4's objective is not a marginal "
                "likelihood for it, so there is no exact value to attribute errors against")
    return None


def attribute(case: Case, r_side: RSide | None = None, referee: bool = True) -> Attribution:
    """The error components of `case` at each of its nAGQ values (module doc)."""
    reason = not_attributable(case)
    if reason:
        raise ModelError(reason)
    r_side = r_side or RSide()
    C = saturated(case)
    model = make_model(case.formula, case.data, case.family, case.link, case.weights, case.offset)
    fits = {k: {"exact": PythonSide("exact").fit(case, k, C), "glmer": r_side.fit(case, k, C),
                "lme4": PythonSide("lme4").fit(case, k, C)} for k in case.nagq}
    notes = []
    if referee:
        if "glmmTMB" in r_side.versions:
            if 1 in fits:
                fits[1]["glmmTMB"] = GlmmTMBSide(r_side.session, r_side.timeout).fit(case, C)
        else:
            notes.append("glmmTMB is not installed: no referee")
    if model.scalar_single:
        method, evidence, truth_f, truth = _scalar_truth(case, model, fits)
    else:
        method, evidence, truth_f, truth = _vector_truth(case, model, C)
    rows = [_row(k, {name: Estimate.of(f) for name, f in by_side.items()}, truth, truth_f)
            for k, by_side in fits.items()]
    spec = {**case.spec(), "saturated_minus2loglik": C}
    return Attribution(spec, method, truth, evidence, rows, notes)


def _scalar_truth(case: Case, model, fits):
    laplace = fits.get(1, {}).get("exact")
    start = laplace.pars if laplace is not None and laplace.ok else None
    pars, value = truth_mle(case.formula, case.data, case.family, case.link, case.weights,
                            case.offset, start=start)
    nth = model.nth
    method = ("exact marginal likelihood: adaptive Gauss–Kronrod per level to 1e-13 relative "
              "(reference_impl.truth), maximized by L-BFGS-B")
    return method, [], TrueDeviance(model), Estimate(float(value), pars[:nth].tolist(), pars[nth:].tolist())


def _vector_truth(case: Case, model, C: float):
    """Exact-mode AGQ fits at growing k until successive optima agree to VECTOR_TOL."""
    evidence, previous = [], None
    for k in VECTOR_KS:
        try:
            fit = ri.glmer(case.formula, case.data, case.family, case.link, nAGQ=k, weights=case.weights,
                           offset=case.offset, mode="exact")
        except ModelError as e:                   # too many nodes for this nc
            evidence.append({"nAGQ": k, "error": str(e)})
            break
        value = fit.minus2loglik
        evidence.append({"nAGQ": k, "minus2loglik": value, "theta": fit.theta,
                         "beta": list(fit.fixef.values()),
                         "change": None if previous is None else value - previous.minus2loglik})
        if previous is not None and abs(value - previous.minus2loglik) <= VECTOR_TOL:
            f = DevianceFunction(model, k, initial_lp0(model, "exact")[0], "exact")
            method = (f"exact-mode AGQ (product rule, {k}^{model.design.reterms[0].nc} nodes per "
                      f"level): fitted at k = {', '.join(str(e['nAGQ']) for e in evidence)}, the "
                      f"last two optima agree to {abs(value - previous.minus2loglik):.1e} in −2logLik")
            return (method, evidence, lambda pars: f(pars) + C,
                    Estimate(value, list(fit.theta), list(fit.fixef.values())))
        previous = fit
    raise ModelError("the exact-mode AGQ sequence did not converge to "
                     f"{VECTOR_TOL:g} in −2logLik by nAGQ = {evidence[-1]['nAGQ']}: no truth")


def _row(k: int, est: dict[str, Estimate], truth: Estimate, truth_f) -> Row:
    est = {"truth": truth, **est}
    out, notes = [], []
    for name, a, b, what in COMPONENTS:
        if a not in est or not all(est[s].error is None for s in (a, b)):
            continue
        ea, eb = est[a], est[b]
        out.append(Component(name, what, ea.minus2loglik - eb.minus2loglik,
                             _max_abs(ea.theta, eb.theta), _max_abs(ea.beta, eb.beta)))
    glmer = est["glmer"]
    if glmer.error:
        notes.append(f"no glmer fit at nAGQ = {k} for this model ({glmer.error}); the exact-mode "
                     "fit is compared against the truth instead")
    cost = None if glmer.error else float(truth_f(glmer.pars) - truth.minus2loglik)
    return Row(k, est, out, cost, notes)


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.subtract(a, b)))) if len(a) else 0.0
