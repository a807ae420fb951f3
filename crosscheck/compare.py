"""Compare a case: glmer and each implementation under test fitted per nAGQ, diagnosed in stages,
one verdict each.

`compare_case(case, modes)` → `CaseReport`, whose `to_json()` is the documented JSON (README).
`modes` name the implementations (`implementations.load`): "lme4" and "exact" are the reference's
modes, anything else an implementation such as "mixedlm"; a (case, nAGQ) outside what an
implementation claims is `skipped`, with why. The JSON:
top level `versions`, `case`, `results`; one result per (nAGQ, mode) with `nAGQ`, `mode`,
`python`, `r`, `diffs`, `stage_failed`, `verdict` (+ `refusal`, `r_warnings`, `referee`, `notes`,
`timings`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import diffs as D
from .case import Case
from .diagnose import SKIPPED, STAGES, Diagnoser, Diagnosis, Refusal
from .diffs import Diff
from .implementations import load
from .rbridge import RBridgeError, RTimeout
from .result import HARNESS_ERROR, TIMEOUT, FitResult
from .scales import agq_is_relative
from .sides import GlmmTMBSide, PythonSide, RSide, python_versions, saturated
from .tolerances import Policy, Tolerance

CANONICAL_LINKS = {"binomial": "logit", "poisson": "log", "Gamma": "inverse",
                   "inverse.gaussian": "1/mu^2", "gaussian": "identity"}
REFEREE_TOL = Tolerance(1e-3, 1e-3)      # glmmTMB is a different optimizer: agreement, not identity


@dataclass
class Comparison:
    nAGQ: int
    mode: str
    python: FitResult
    r: FitResult
    diagnosis: Diagnosis
    referee: FitResult | None = None
    referee_diffs: list[Diff] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return self.diagnosis.verdict

    @property
    def passed(self) -> bool:
        return self.diagnosis.passed

    @property
    def diffs(self) -> list[Diff]:
        return self.diagnosis.diffs

    def to_json(self) -> dict[str, Any]:
        d = self.diagnosis
        out = {"nAGQ": self.nAGQ, "mode": self.mode, "verdict": d.verdict, "passed": self.passed,
               "stage_failed": None if d.stage_failed is None else STAGES[d.stage_failed],
               "python": self.python.summary(), "r": self.r.summary(),
               "diffs": [x.to_json() for x in d.diffs],
               "refusal": d.refusal.to_json() if d.refusal else None,
               "r_warnings": list(self.r.messages), "notes": list(d.notes),
               "noise": d.noise.to_json() if d.noise else None, "conditioning": {k: D.plain(v) for k, v in d.conditioning.items()},
               "timings": self.timings}
        if self.referee is not None:
            out["referee"] = {"side": "glmmTMB", **self.referee.summary(),
                              "diffs": [x.to_json() for x in self.referee_diffs]}
        return out


@dataclass
class CaseReport:
    case: Case
    versions: dict[str, str]
    results: list[Comparison]
    saturated: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.results)

    @property
    def undecided(self) -> list[Comparison]:
        """The comparisons without a verdict about the model (HARNESS_ERROR, TIMEOUT)."""
        return [c for c in self.results if c.verdict in (HARNESS_ERROR, TIMEOUT)]

    def to_json(self) -> dict[str, Any]:
        return {"versions": self.versions,
                "case": {**self.case.spec(), "saturated_minus2loglik": D.plain(self.saturated)},
                "results": [c.to_json() for c in self.results]}


def compare_case(case: Case, modes=("lme4",), policy: Policy | None = None,
                 r_side: RSide | None = None, referee: bool = False, noise: str = "all",
                 python_timeout: float | None = None) -> CaseReport:
    """Fit `case` with glmer and the reference (each mode) for every nAGQ of the case; diagnose,
    with the noise band measured for every comparison (`noise="all"`), only where a comparison
    would otherwise fail (`"failing"`) or never (`"none"`). R's calls are bounded by
    `r_side.timeout`, the reference's fits by `python_timeout` (seconds; a side past it: TIMEOUT)."""
    policy = policy or Policy()
    r_side = r_side or RSide()
    t0 = time.perf_counter()
    C = saturated(case)
    impls = [PythonSide(m, python_timeout) if m in ("lme4", "exact") else load(m) for m in modes]
    # saturated() builds the reference's model, which its fits then share: the first one's time
    model_s = time.perf_counter() - t0 if any(isinstance(i, PythonSide) for i in impls) else 0.0
    diagnoser = Diagnoser(case, policy, r_side, noise, python_timeout, {i.name: i for i in impls})
    tmb = None
    results = []
    try:
        for nAGQ in case.nagq:
            t0 = time.perf_counter()
            r = r_side.fit(case, nAGQ, C, keep_devfun=True)
            t_r = time.perf_counter() - t0
            diagnoser.adopt(nAGQ, r)
            if referee and nAGQ == 1 and tmb is None:
                tmb = GlmmTMBSide(r_side.session, r_side.timeout).fit(case, 1, C)
            fits = {}                         # mode → (its fit, seconds, its place in `results`)
            for impl in impls:
                mode = impl.name
                unclaimed = impl.capabilities.unsupported(case, nAGQ)
                if unclaimed is not None:
                    results.append(Comparison(nAGQ, mode, FitResult("python", error=f"not claimed: {unclaimed}", nAGQ=nAGQ),
                                              r, Diagnosis(verdict=SKIPPED, mode=mode, notes=[
                                                  f"{mode} does not claim to fit {unclaimed}: not compared"])))
                    continue
                t0 = time.perf_counter()
                py = impl.fit(case, nAGQ, C, **_glmer_start(impl, r, diagnoser, nAGQ))
                seconds = time.perf_counter() - t0
                if isinstance(impl, PythonSide):
                    seconds, model_s = seconds + model_s, 0.0
                fits[mode] = py, seconds, len(results)
                results.append(None)
            diagnoser.expect(nAGQ, {mode: py for mode, (py, _, _) in fits.items()})
            for mode, (py, t_py, slot) in fits.items():
                t0 = time.perf_counter()
                diagnosis = _diagnose(diagnoser, nAGQ, mode, py, r)
                timings = {"r_fit": t_r, "python_fit": t_py, "diagnosis": time.perf_counter() - t0,
                           "noise": diagnosis.noise.seconds if diagnosis.noise else 0.0}
                diagnosis.notes += _notes(case, nAGQ, r)
                comparison = Comparison(nAGQ, mode, py, r, diagnosis, timings=timings)
                if tmb is not None and nAGQ == 1:
                    comparison.referee = tmb
                    comparison.referee_diffs = referee_diffs(tmb, r, py)
                    comparison.diagnosis.notes += referee_notes(case)
                results[slot] = comparison
    finally:
        diagnoser.close()
    versions = {**python_versions(), **{f"R:{k}" if k != "R" else k: v
                                        for k, v in r_side.versions.items()}}
    for impl in impls:
        if not isinstance(impl, PythonSide):
            versions.update(impl.versions())
    return CaseReport(case, versions, results, C)


def _glmer_start(impl, r: FitResult, diagnoser: Diagnoser, nAGQ: int) -> dict:
    """Exact mode also starts from glmer's optimum (issue 13): on a rough objective lme4 mode may
    land in another basin than glmer, and exact mode is then never worse than glmer only if it
    tries glmer's point too — with glmer's lp0 (R's deviance function's, which stage 1 evaluates
    from), so that the start's value is the one stage 1 computes there, also where that value
    depends on lp0 (several conditional modes; a perfect fit, whose value is rounding). Passed
    as data; the reference itself knows no R."""
    if not (isinstance(impl, PythonSide) and impl.mode == "exact" and r.ok and r.pars is not None):
        return {}
    try:
        lp0 = np.asarray(diagnoser.devfun(nAGQ)["lp0"], float)
    except RBridgeError:                    # stage 1 will say so; the start goes without lp0
        lp0 = None
    return {"starts": {"glmer": {"par": np.asarray(r.pars, float), "lp0": lp0}}}


def _diagnose(diagnoser: Diagnoser, nAGQ: int, mode: str, py: FitResult, r: FitResult) -> Diagnosis:
    """The diagnosis, or no verdict about the model where a side, or the diagnosis itself, failed
    for the harness's reasons (HARNESS_ERROR) or ran past its time limit (TIMEOUT)."""
    failures = {py.failure, r.failure} - {None}
    if failures:
        return Diagnosis(verdict=HARNESS_ERROR if HARNESS_ERROR in failures else TIMEOUT,
                         refusal=Refusal(py.error, r.error, None))
    try:
        return diagnoser.run(nAGQ, mode, py, r)
    except RTimeout as e:
        return Diagnosis(verdict=TIMEOUT, notes=[f"diagnosis: {e}"])
    except Exception as e:                  # noqa: BLE001 — the harness failed, not a side
        return Diagnosis(verdict=HARNESS_ERROR, notes=[f"diagnosis failed: {type(e).__name__}: {e}"])


def _notes(case: Case, nAGQ: int, r: FitResult) -> list[str]:
    notes = []
    if nAGQ > 1:
        relative, assumption = agq_is_relative(r.versions.get("lme4") if r.ok else None)
        notes.append("lme4 reports nAGQ > 1 relative to the saturated model; shown on the absolute "
                     "scale (raw value + saturated constant, computed from the data)"
                     if relative else "lme4 reports nAGQ > 1 on the absolute scale")
        if assumption:
            notes.append(assumption)
    if r.ok and not r.converged:
        notes.append("glmer reported a convergence problem (its messages are in r_warnings)")
    zero = int((case.data[case.weights] == 0).sum()) if case.weights is not None else 0
    if zero:
        notes.append(f"{zero} row(s) have zero prior weight ({case.weights!r}): both sides keep them, "
                     "and they contribute nothing to the likelihood")
    return notes


def referee_diffs(tmb: FitResult, r: FitResult, py: FitResult) -> list[Diff]:
    """glmmTMB against glmer and the reference (informational: not part of the verdict)."""
    if not tmb.ok or not r.ok:
        return []
    out = [D.scalar("glmmTMB vs glmer: minus2loglik", tmb.minus2loglik, r.minus2loglik, REFEREE_TOL, 2)]
    out += D.named("glmmTMB vs glmer: theta", dict(zip(tmb.theta_names, tmb.theta)),
                   dict(zip(r.theta_names, r.theta)), REFEREE_TOL, 2)
    out += D.named("glmmTMB vs glmer: fixef", tmb.fixef, r.fixef, REFEREE_TOL, 2)
    if py.ok:
        out.append(D.scalar("glmmTMB vs python: minus2loglik", tmb.minus2loglik, py.minus2loglik,
                            REFEREE_TOL, 2))
    return out


def referee_notes(case: Case) -> list[str]:
    link = case.link or CANONICAL_LINKS.get(case.family)
    if link == CANONICAL_LINKS.get(case.family):
        return []
    return [f"glmmTMB's Laplace uses the observed Hessian of the log-likelihood, lme4's the expected "
            f"(Fisher) weights; for the non-canonical link {link!r} of {case.family} the two "
            f"approximate different objectives, so glmmTMB's differences from glmer here are not "
            f"errors of either"]
