"""Staged diagnosis of one (case, nAGQ, mode): where do the two fits part?

0. design — X column names and values, Zt, θ layout and bounds, the saturated constant;
1. objective at identical parameters — each deviance function at both optima (R's lp0 on both
   sides, spec §3.3), component-wise (ldL2, ||u||², Σ devResid) and the conditional modes u;
2. optimum — −2 log L (absolute scale), θ, β absolutely and in SE units, deviance;
3. derived — standard errors (Hessian and RX), conditional modes b, fitted values.

In exact mode the reference answers a different question (the converged optimum of the same
model), so only what must hold for it gates: design, objectives, and that its optimum is at least
as good as glmer's; parameter and derived differences are reported as glmer's numerical error.
An implementation under test other than the reference (`implementations.py`) is judged by its
tolerance class; in class "exact" its optimum is judged on the reference's exact objective
(never worse than glmer's parameters), and stage 1 runs only where it has a deviance function.

The diagnosis stops at the first stage that fails; the verdict follows from that stage.

Neither side is a function of the model alone: on a rough or ill-conditioned problem, rounding
(the order of a sum, a CPU's SIMD kernels) moves objectives, optima and SEs. So each difference
carries its noise band (`noise.py`: how far each side moves when the same rows come in another
order), and a stage fails only on a difference outside its tolerance *and* beyond noise. A
comparison whose only such differences are within noise is `within-noise` (passing); the
diagnosis then goes on to the next stage. `conditioning` says why a case is noisy: cond(X), the
condition number of the optimizer's Hessian, and the reference's PIRLS iterations and
step-halvings at glmer's optimum. The band is measured for every comparison (`noise="all"`,
compare and investigate) or only where a comparison would otherwise fail (`"failing"`, sweeps);
there its refits on the row orders wait until an optimum, or what follows from it, stands outside
its tolerance: a difference at identical parameters (stage 1) is read against evaluations alone.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import cpu_path
from . import diffs as D
from .case import Case
from .diffs import Diff
from .noise import (MORE_ORDERS, ROW_ORDERS, STOPPING_ROUNDING, NoiseBand, borderline, objective_floor,
                    row_orders, stopping_rounded, ulp_moved)
from .result import FitResult
from .rbridge import RBridgeError
from .implementations import NoDevianceFunction
from .sides import PythonSide, RSide, saturated
from .tolerances import Policy

STAGES = ("design", "objective", "optimum", "derived")
VERDICT_OF_STAGE = {0: "design-mismatch", 1: "objective-mismatch", 2: "optimizer-only",
                    3: "se-mismatch"}
PASSING = ("match", "within-noise")
SKIPPED = "skipped"         # outside what the implementation claims (`Capabilities`): not compared
NOISE = ("all", "failing", "none")


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
    noise: NoiseBand | None = None
    conditioning: dict[str, float | int | None] = field(default_factory=dict)
    mode: str = "lme4"

    @property
    def passed(self) -> bool:
        """A passing verdict, refusals that agree, and exact mode fitting what glmer refuses (its
        job: the right answer where lme4's PIRLS gives up; whether it must, on a model at the edge
        of its domain, is decided by last bits — pirls-zero-deviance on another CPU path)."""
        return (self.verdict in (*PASSING, SKIPPED) or (self.verdict == "both-refused" and bool(self.refusal.agree))
                or (self.mode == "exact" and self.verdict == "r-refused"))


# Refusals the reference words differently from lme4 (its messages name the column, row, value):
# (lme4's text, the reference's), as regular expressions; each pair is exercised against real R
# in tests/test_bad_input.py.
PIRLS_BREAKDOWN = (r"^(PIRLS loop resulted in NaN value|Downdated VtV is not positive definite|"
                   r"pwrssUpdate did not converge in \(maxit\) iterations|\(maxstephalfit\) PIRLS step-halvings)")
SAME_REFUSAL = [
    (r"^NA/NaN/Inf in ", r"has a missing or infinite value at row|is NaN or infinite at row"),
    (r"^all\(weights >= 0\) is not TRUE$", r"^negative weights not allowed"),
    (r"^y values must be 0 <= y <= 1$", r"^binomial response must be in \[0, 1\]"),
    (r"^response must be numeric( or factor)?$", r"^response '.+' holds text|^a factor response "),
    (r"^Invalid grouping factor specification", r"^the data frame has no rows$"),
    # PIRLS breaking down (§3.2): which of its checks trips first — NaN weights, a factor that
    # rounding made indefinite, no convergence, halvings that fail — is decided by last bits
    # (gen:gate:5 gives either on one machine, depending on numpy's SIMD kernels)
    (PIRLS_BREAKDOWN, PIRLS_BREAKDOWN),
]


def reasons_agree(python: str, r: str) -> bool:
    """The reference's and lme4's refusal messages say the same thing: one contains the other
    (the reference quotes lme4's text), or they are a known pair of `SAME_REFUSAL`."""
    norm = [" ".join(s.lower().replace("‘", "'").replace("’", "'").split()) for s in (python, r)]
    return (norm[0] == norm[1] or norm[0] in norm[1] or norm[1] in norm[0]
            or any(re.search(r_text, r) and re.search(py_text, python) for r_text, py_text in SAME_REFUSAL))


class Diagnoser:
    """Runs the stages for one (case, nAGQ) against one Python mode. R's deviance functions (of the
    case and of each row order) and glmer's refits on the row orders are made once per nAGQ and
    shared between modes."""

    def __init__(self, case: Case, policy: Policy, r_side: RSide, noise: str = "all",
                 python_timeout: float | None = None, impls: dict | None = None):
        if noise not in NOISE:
            raise ValueError(f"noise must be one of {NOISE}, not {noise!r}")
        self.case, self.policy, self.r_side, self.noise = case, policy, r_side, noise
        self.python_timeout = python_timeout            # seconds per fit of the reference (band refits)
        self.impls = dict(impls or {})                  # name → implementation compared (else the reference's mode)
        self._devfuns: dict[tuple[int, int | None], dict] = {}   # (nAGQ, row order) → R's devfun
        self._exact_at: tuple[float, float] | None = None   # exact objective at (the optimum, glmer's)
        self._evaluations: dict = {}                  # (nAGQ, mode) → stage 1's points and values
        self._expected: dict[int, dict[str, FitResult]] = {}   # nAGQ → the fits to be diagnosed (`expect`)
        self._r_at: dict[tuple[int, str], list] = {}   # (nAGQ, mode) → R's devfun at stage 1's points
        self._r_refits: dict[int, list[FitResult]] = {}
        self._notes: list[str] = []                   # what stage 1 found and did not gate
        self._orders = row_orders(case, ROW_ORDERS + MORE_ORDERS) if noise != "none" else []
        self._row_cases: dict[int, Case] = {}          # row order → the case in it, made once
        self._cpu_path = cpu_path.CpuPath()

    def close(self) -> None:
        self._cpu_path.close()
        self.r_side.drop(*self._devfuns.values())
        self._devfuns.clear()

    def side(self, mode: str, timeout: float | None = None):
        """The implementation compared under the name `mode`: the reference for "lme4" and "exact"."""
        return self.impls[mode] if mode in self.impls else PythonSide(mode, timeout)

    def run(self, nAGQ: int, mode: str, py: FitResult, r: FitResult) -> Diagnosis:
        if not (py.ok and r.ok):
            return self._refused(nAGQ, mode, py, r)
        klass = self.side(mode).tolerances
        tol = lambda q: self.policy.get(klass, nAGQ, q)      # noqa: E731 — one policy lookup per diff
        self._exact_at = None
        stages = (lambda: design(py, r, tol),
                  lambda: self.objective(nAGQ, mode, py, r, tol),
                  lambda: optimum(klass, py, r, tol, self._exact_at),
                  lambda: derived(klass, py, r, tol))
        out, self._notes = Diagnosis(), []
        for k, stage in enumerate(stages):
            diffs = stage()
            out.diffs += diffs
            outside = [d for d in diffs if d.gating and not d.ok]
            refits = self.noise == "all" or k > 1       # stage 1's quantities move with evaluations only
            if out.noise is None and k > 0 and (self.noise == "all" or (outside and self.noise == "failing")):
                out.noise = self.band(nAGQ, mode, py, r, tol, self.noise == "all")
            if out.noise is not None and outside and refits and out.noise.refitted < out.noise.orders:
                self.refits_into(out.noise, nAGQ, mode, py, r, tol, outside)
            if out.noise is not None:
                if k == 2:
                    out.noise.apart = any(not d.ok for d in diffs if d.quantity.startswith(("theta[", "fixef[")))
                out.noise.annotate(out.diffs)
                if out.noise.orders == ROW_ORDERS and borderline(outside):
                    self.widen(out.noise, nAGQ, mode, py, r, tol)
                    out.noise.annotate(out.diffs)
            if [d for d in outside if not d.within_noise]:
                out.stage_failed, out.verdict = k, VERDICT_OF_STAGE[k]
                break
        if klass == "exact" and out.stage_failed in (0, 1) and self._exact_at is not None:
            # never worse is checked whatever stage failed first (issue 13)
            out.diffs += [d for d in optimum(klass, py, r, tol, self._exact_at)
                          if d.quantity in ("minus2loglik_excess", "optimum_gap")]
            if out.noise is not None:
                out.noise.annotate(out.diffs)
        beyond_tol = [d for d in out.diffs if d.gating and not d.ok]
        if out.stage_failed is None and beyond_tol:
            out.verdict = "within-noise"
            out.notes.append(
                f"{len(beyond_tol)} difference(s) outside tolerance, each within the spread that "
                f"rounding alone produces on the two sides (row order, {out.noise.orders} orders; ulps; "
                + ("PIRLS's stopping test" if mode == "lme4" else "lme4's PIRLS error, which glmer carries")
                + (", a flat objective" if out.noise.flat else "") + "): "
                + ", ".join(f"{d.quantity} {d.noise_units:.2g} band(s)" for d in beyond_tol[:4])
                + (" …" if len(beyond_tol) > 4 else ""))
        out.notes += self._notes
        out.conditioning = self.conditioning(nAGQ, mode, py, r)
        return out

    def _refused(self, nAGQ: int, mode: str, py: FitResult, r: FitResult) -> Diagnosis:
        """A refusal; in lme4 mode, where glmer fits and the reference stopped at a parameter
        vector where glmer's own deviance function stops too, with the same reason, the two
        optimizers only took different paths (they are the same algorithm, so rounding parted
        them): `within-noise`, the refusal kept. The optimizer's path itself is not checked."""
        out = _refused(py, r)
        out.mode = mode
        at = py.extra.get("failed_at")
        if mode != "lme4" or out.verdict != "python-refused" or at is None or self.noise == "none":
            return out
        at = np.asarray(at, float)
        k = nAGQ if at.size > len(r.theta) else 0           # stage 1's point (θ only) or stage 2's
        try:
            (ev,) = self.r_side.evaluate(self._devfun(k, None, self.case), [at])
        except RBridgeError:
            return out
        if ev.error and reasons_agree(py.error, ev.error):
            out.verdict = "within-noise"
            out.notes.append(f"the reference stopped at {np.array2string(at, precision=6)} (nAGQ {k}), where "
                             f"glmer's own deviance function stops too ({ev.error}); glmer's optimizer "
                             "took another path, parted from the reference's by rounding")
        return out

    # -- the noise band -----------------------------------------------------------------------------
    def band(self, nAGQ: int, mode: str, py: FitResult, r: FitResult, tol, refits: bool = True) -> NoiseBand:
        """Both sides on each row order (`_row_orders_into`: deviance functions at stage 1's points
        and, with `refits`, refits); both deviance functions at stage 1's points moved by a few ulps
        and, in lme4 mode, the reference's with its stopping test rounded (in exact mode, its lme4
        mode's: lme4's PIRLS error, which glmer carries); with `noise="all"`, where this CPU has
        AVX-512 kernels, the reference again with them off. Each compared with the same side
        unperturbed. Without `refits` the band holds stage 1's quantities only, which no refit
        moves: a sweep (`noise="failing"`) refits only where an optimum or what follows from it
        stands outside its tolerance (`refits_into`)."""
        t0 = time.perf_counter()
        band = NoiseBand()
        points, at_r, at_py = self._evaluations.get((nAGQ, mode), (None, None, None))
        lp0 = np.asarray(self.devfun(nAGQ)["lp0"], float) if points is not None else None
        impl = self.side(mode)
        reference = isinstance(impl, PythonSide)
        if points is not None:
            devfun = self.devfun(nAGQ)
            moved = [p for pattern in ulp_moved(points) for p in pattern]     # one call per side
            for side, at in (("r", self.r_side.evaluate(devfun, moved)),
                             ("python", evaluations(impl, self.case, nAGQ, moved, lp0))):
                for k in range(0, len(moved) if at else 0, len(points)):
                    band.add(side, _evaluation_diffs(at[k:k + len(points)], at_r if side == "r" else at_py, tol))
            if reference and mode == "lme4":
                for case_s in stopping_rounded(self.case):
                    band.add("python", _evaluation_diffs(PythonSide(mode).evaluate(case_s, nAGQ, points, lp0), at_py, tol))
                band.stopping = STOPPING_ROUNDING
                gaps = [abs(at[1].value - at[0].value) for at in (at_r, at_py)]
                band.flat_gap = max(gaps) if np.all(np.isfinite(gaps)) else None
                band.floor = objective_floor(len(self.case.data) + np.size(at_r[0].u), at_r[0].value)
            else:       # what glmer's objective carries by design: lme4's PIRLS error at these points
                exact = at_py if reference else PythonSide("exact").evaluate(self.case, nAGQ, points, lp0)
                band.add("python", _evaluation_diffs(PythonSide("lme4").evaluate(self.case, nAGQ, points, lp0), exact, tol))
                band.lme4_pirls = True
        if self.noise == "all" and reference and cpu_path.available():
            fit_c, at_c = self._cpu_path.refit(self.case, nAGQ, mode, py.saturated, points, lp0)
            if fit_c.ok:
                band.add("python", [*optimum(impl.tolerances, fit_c, py, tol, None),
                                    *derived(impl.tolerances, fit_c, py, tol)])
                band.add("python", _evaluation_diffs(at_c, at_py, tol) if points is not None else [])
            band.cpu_paths.append("numpy AVX-512 off")
        self._row_orders_into(band, range(ROW_ORDERS), nAGQ, mode, py, r, tol, refits)
        band.seconds = time.perf_counter() - t0
        return band

    def refits_into(self, band: NoiseBand, nAGQ: int, mode: str, py: FitResult, r: FitResult, tol,
                    outside: list[Diff]) -> None:
        """The refits on the row orders `band` has measured at stage 1's points only, one order at
        a time until each of the differences `outside` their tolerance is within noise. A band
        only widens with each order (a largest spread), so a difference within noise after some
        orders is within noise after all of them: the verdict is the one all refits give, and
        the refits a sweep needs where the first order already covers a difference are one, not
        ROW_ORDERS. The band's numbers are then those of the orders refitted (`refitted`)."""
        t0 = time.perf_counter()
        for j in range(band.refitted, band.orders):
            self._row_orders_into(band, (j,), nAGQ, mode, py, r, tol, True, evaluate=False)
            band.annotate(outside)
            if all(d.within_noise for d in outside):
                break
        band.seconds += time.perf_counter() - t0

    def widen(self, band: NoiseBand, nAGQ: int, mode: str, py: FitResult, r: FitResult, tol) -> None:
        """MORE_ORDERS further row orders: the band is the largest of a few draws, and a
        difference a few bands out may lie inside the spread that more draws would show."""
        t0 = time.perf_counter()
        self._row_orders_into(band, range(band.orders, band.orders + MORE_ORDERS), nAGQ, mode, py, r, tol,
                              band.refitted == band.orders)
        band.seconds += time.perf_counter() - t0

    def _row_orders_into(self, band: NoiseBand, orders, nAGQ: int, mode: str, py: FitResult, r: FitResult,
                         tol, refits: bool, evaluate: bool = True) -> None:
        """Widen `band` by both sides on row orders `orders`: with `refits`, refits compared with
        the original rows' fits; with `evaluate`, deviance functions at stage 1's points (each
        order's own lp0, §3.3)."""
        points, at_r, at_py = self._evaluations.get((nAGQ, mode), (None, None, None))
        r_refits = self._r_refits.setdefault(nAGQ, [])
        impl = self.side(mode, self.python_timeout)
        for j in orders:
            order = self._orders[j]
            case_j = self._in_order(j)
            if refits:
                if j == len(r_refits):
                    r_refits.append(self.r_side.fit(case_j, nAGQ, r.saturated, keep_devfun=True))
                    self.adopt(nAGQ, r_refits[j], j)
                C_j = saturated(case_j)
                sides = {"r": (r_refits[j], r), "python": (impl.fit(case_j, nAGQ, C_j), py)}
                for side, (fit_j, fit) in sides.items():
                    if not fit_j.ok:
                        band.refused[side] += fit_j.failure is None
                        band.unfinished[side] += fit_j.failure is not None
                        continue
                    band.add(side, design_noise(fit_j, fit, tol))
                    band.add(side, optimum(impl.tolerances, fit_j, fit, tol, None))
                    band.add(side, derived(impl.tolerances, _in_order(fit_j, order), fit, tol))
                band.refitted += 1
            if not evaluate:
                continue
            band.orders += 1
            if points is None:
                continue
            try:            # glmer's start (PIRLS at lp0) may fail in another row order
                devfun = self._devfun(nAGQ, j, case_j)
            except RBridgeError:
                band.refused["r"] += 1
                continue
            band.add("r", _evaluation_diffs(self.r_side.evaluate(devfun, points), at_r, tol))
            at_j = evaluations(impl, case_j, nAGQ, points, np.asarray(devfun["lp0"], float))
            band.add("python", _evaluation_diffs(at_j, at_py, tol) if at_j else [])

    def _in_order(self, j: int) -> Case:
        """The case in row order `j`, one object for every nAGQ and mode: the reference builds
        one model per case object and keeps the stages run on it (`sides._model`)."""
        if j not in self._row_cases:
            self._row_cases[j] = self.case.with_rows(self._orders[j])
        return self._row_cases[j]

    def adopt(self, nAGQ: int, r: FitResult, order: int | None = None) -> None:
        """Take the deviance function glmer's fit `r` optimized (`RSide.fit(keep_devfun=True)`) as
        R's for (nAGQ, row order): none is built again (glmer(devFunOnly = TRUE) runs stage 1 a
        second time, half of a fit), and it is dropped with the others (`close`)."""
        devfun = r.extra.pop("devfun", None)
        if devfun is None:
            return
        if (nAGQ, order) in self._devfuns:
            self.r_side.drop(devfun)
        else:
            self._devfuns[nAGQ, order] = devfun

    def expect(self, nAGQ: int, fits: dict[str, FitResult]) -> None:
        """The fits (mode → fit) that `run` will diagnose at this nAGQ, in that order: stage 1 then
        asks R's deviance function at glmer's and each one's optimum in one call (the bridge
        costs ~5 ms a call, R's evaluations ~0.3 ms each), in the order separate calls would."""
        self._expected[nAGQ] = fits

    def _r_evaluations(self, nAGQ: int, mode: str, devfun: dict, points: list) -> list:
        """R's deviance function at stage 1's `points` for (nAGQ, mode), evaluated in one call
        with glmer's and the optimum of each fit expected after this one (`expect`)."""
        if (nAGQ, mode) not in self._r_at:
            fits = self._expected.get(nAGQ, {})
            later = list(fits)[list(fits).index(mode) + 1:] if mode in fits else []
            batch = {mode: points, **{m: [points[0], fits[m].pars] for m in later
                                      if fits[m].ok and fits[m].pars is not None}}
            values = self.r_side.evaluate(devfun, [p for ps in batch.values() for p in ps])
            for m, ps in batch.items():
                self._r_at[nAGQ, m], values = values[:len(ps)], values[len(ps):]
        return self._r_at.pop((nAGQ, mode))

    def devfun(self, nAGQ: int) -> dict:
        """R's deviance function of the case as given (stage 1's), made once."""
        return self._devfun(nAGQ, None, self.case)

    def _devfun(self, nAGQ: int, order: int | None, case: Case) -> dict:
        """R's deviance function of `case` (the original rows, or row order `order`), made once."""
        if (nAGQ, order) not in self._devfuns:
            self._devfuns[nAGQ, order] = self.r_side.devfun(case, nAGQ)
        return self._devfuns[nAGQ, order]

    def conditioning(self, nAGQ: int, mode: str, py: FitResult, r: FitResult) -> dict:
        """Why a case is noisy: cond(X), cond of glmer's (else the reference's) Hessian at the
        optimum, and the reference's PIRLS iterations and step-halvings at glmer's optimum."""
        X = py.extra.get("X")
        H = _hessian(r)
        H = H if H is not None else _hessian(py)
        ev = self._evaluations.get((nAGQ, mode), (None, None, [None]))[2][0]
        return {"cond_X": _cond(X), "cond_hessian": _cond(H),
                "pirls_iterations": getattr(ev, "iterations", None),
                "pirls_halvings": getattr(ev, "halvings", None)}

    # -- stage 1 ------------------------------------------------------------------------------------
    def objective(self, nAGQ: int, mode: str, py: FitResult, r: FitResult, tol) -> list[Diff]:
        """Stage 1: both deviance functions at both optima (R's lp0 on both sides). For an
        implementation other than the reference, in tolerance class "exact", also the reference's
        exact objective at its optimum and glmer's (stage 2 judges the optimum on it)."""
        devfun = self.devfun(nAGQ)
        points = [r.pars, py.pars]
        lp0 = np.asarray(devfun["lp0"], float)
        impl = self.side(mode)
        if not isinstance(impl, PythonSide) and impl.tolerances == "exact":
            at_r_exact, at_py_exact = PythonSide("exact").evaluate(self.case, nAGQ, points, lp0)
            if np.isfinite(at_r_exact.value) and np.isfinite(at_py_exact.value):
                self._exact_at = (at_py_exact.value, at_r_exact.value)
                self._notes.append(f"the exact objective (the reference's exact mode) at {mode}'s optimum: "
                                   f"{at_py_exact.value!r}; at glmer's: {at_r_exact.value!r}")
        try:
            at_py = evaluations(impl, self.case, nAGQ, points, lp0, strict=True)
        except NoDevianceFunction as e:
            self._notes.append(f"stage 1 (objective at identical parameters) not run: {e}")
            return []
        at_r = self._r_evaluations(nAGQ, mode, devfun, points)
        if isinstance(impl, PythonSide) and mode == "exact":
            self._exact_at = (py.objective, at_py[0].value)
        self._evaluations[nAGQ, mode] = (points, at_r, at_py)
        diffs = _evaluation_diffs(at_py, at_r, tol)
        if isinstance(impl, PythonSide) and mode == "exact":
            self._lme4_refusals_into(diffs, nAGQ, points, at_r, at_py, lp0)
        return diffs

    def _lme4_refusals_into(self, diffs, nAGQ, points, at_r, at_py, lp0) -> None:
        """Exact mode, stage 1: where glmer's deviance function gives no value at a point (it
        refuses, or it is NaN: AGQ nodes outside the family's domain) that the exact objective
        evaluates, and the reference's lme4 mode (from glmer's lp0) gives none either, for the
        same reason, that is lme4's PIRLS, which glmer carries by design (as its PIRLS error,
        `band`): the differences at that point are reported, noted, and do not gate
        (gen:thorough:172, θ = 9.3e6 on 6 rows; gen:thorough:88, poisson(identity) at nAGQ 9)."""
        for k, where in enumerate(("r", "python")):
            reason = _no_value(at_r[k])
            if reason is None or _no_value(at_py[k]) is not None:
                continue
            (lme4,) = PythonSide("lme4").evaluate(self.case, nAGQ, [points[k]], lp0)
            lme4_reason = _no_value(lme4)
            if lme4_reason is None or not reasons_agree(lme4_reason, reason):
                continue
            for d in diffs:
                if d.quantity.endswith(f"@{where}") or d.quantity == f"evaluation@{where} optimum":
                    d.gating = False
            self._notes.append(f"glmer's deviance function gives no value at the {where} optimum ({reason}), "
                               "nor does lme4's PIRLS (the reference's lme4 mode, from glmer's lp0); the exact "
                               "objective is evaluated there")


def evaluations(impl, case: Case, nAGQ: int, points, lp0, strict: bool = False) -> list | None:
    """`impl`'s deviance function at `points`; None where it has none for this case (or, `strict`,
    NoDevianceFunction saying why)."""
    if not hasattr(impl, "evaluate"):
        if strict:
            raise NoDevianceFunction(f"{impl.name} exposes no deviance function")
        return None
    try:
        return impl.evaluate(case, nAGQ, points, lp0)
    except NoDevianceFunction:
        if strict:
            raise
        return None


def _no_value(ev) -> str | None:
    """Why an evaluation has no value (its error, or a NaN objective); None where it has one."""
    return ev.error or (None if np.isfinite(ev.value) else f"the objective is {ev.value}")


def _evaluation_diffs(at_py, at_r, tol) -> list[Diff]:
    """Stage 1's diffs: the two lists of evaluations at glmer's and the reference's optimum."""
    out = []
    for where, e_py, e_r in zip(("r", "python"), at_py, at_r):
        if e_py.error or e_r.error:
            out.append(D.equal(f"evaluation@{where} optimum", e_py.error, e_r.error, 1))
            continue
        out.append(D.scalar(f"objective@{where}", e_py.value, e_r.value, tol("objective"), 1))
        out += [D.scalar(f"{q}@{where}", getattr(e_py, q), getattr(e_r, q), tol(q), 1)
                for q in ("ldL2", "ussq", "drsum") if getattr(e_py, q) is not None]    # parts it exposes
        if e_py.u is not None:
            out.append(D.array(f"u@{where}", e_py.u, e_r.u, tol("u"), 1))
    return out


def _hessian(fit: FitResult) -> np.ndarray | None:
    info = fit.extra.get("optinfo")
    H = getattr(info, "hessian", None)
    if H is None and isinstance(info, dict):
        H = (info.get("derivs") or {}).get("Hessian")
    return None if H is None else np.atleast_2d(np.asarray(H, float))


def _cond(A) -> float | None:
    if A is None:
        return None
    A = A.toarray() if hasattr(A, "toarray") else np.asarray(A, float)
    if A.size == 0 or not np.all(np.isfinite(A)):
        return None
    return float(np.linalg.cond(A))


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
    """Stage 0, of what the implementation's fit exposes (X_names, X, Zt, theta_lower in `extra`;
    the reference all of them)."""
    p, q = py.extra, r.extra
    out = [D.equal("theta_names", py.theta_names, r.theta_names, 0)]
    if "X_names" in p:
        out.append(D.equal("X_names", p["X_names"], q["X_names"], 0))
        if out[-1].ok and "X" in p:
            out.append(D.array("X", p["X"], q["X"], tol("X"), 0))
    if "Zt" in p:
        out.append(D.sparse_pattern("Zt", p["Zt"], q["Zt"], 0))
        if out[-1].ok:
            out.append(D.array("Zt", p["Zt"], q["Zt"], tol("Zt"), 0))
    if "theta_lower" in p:
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


def design_noise(fit_j: FitResult, fit: FitResult, tol) -> list[Diff]:
    """The one design quantity that rounding moves with the row order: the saturated constant
    (R's lme4 value, the reference's computed from the data); X, Zt and θ's bounds are exact."""
    a, b = fit_j.extra.get("saturated_lme4", fit_j.saturated), fit.extra.get("saturated_lme4", fit.saturated)
    return [] if a is None or b is None else [D.scalar("saturated", a, b, tol("saturated"), 0)]


def optimum(mode: str, py: FitResult, r: FitResult, tol, exact_at: tuple[float, float] | None) -> list[Diff]:
    """`mode` a tolerance class. lme4: the two optima must coincide. exact: the implementation
    and glmer optimize different functions (converged vs lme4's PIRLS), so the optimum is judged
    on the exact objective, `exact_at` = its values at (the implementation's optimum, glmer's) —
    `minus2loglik_excess` = exact at its optimum − exact at glmer's optimum ≤ tol (never worse);
    `optimum_gap` = the same difference in absolute value (how far glmer's optimum is from the
    exact one, in −2 log L units), −2 log L (glmer's carries its PIRLS error), θ, β and the deviance
    are reported, informational."""
    out = _informational_in_exact(mode, [D.scalar("minus2loglik", py.minus2loglik, r.minus2loglik,
                                                  tol("minus2loglik"), 2)])
    if mode == "exact" and exact_at is not None:
        at_optimum, at_r = exact_at
        out += [D.at_most("minus2loglik_excess", at_optimum, at_r, tol("minus2loglik_excess"), 2),
                *_informational_in_exact(mode, [D.scalar("optimum_gap", at_r - at_optimum, 0.0,
                                                         tol("optimum_gap"), 2)])]
    params = D.named("theta", dict(zip(py.theta_names, py.theta)), dict(zip(r.theta_names, r.theta)),
                     tol("theta"), 2)
    params += D.named("fixef", py.fixef, r.fixef, tol("fixef"), 2)
    if list(py.fixef) == list(r.fixef) == list(r.se) and all(np.isfinite(list(r.se.values()))):
        params += D.named("fixef_se_units", py.fixef, r.fixef, tol("fixef_se_units"), 2, scale=r.se)
    if py.deviance is not None:             # below: what an implementation other than the reference may not expose
        params.append(D.scalar("deviance", py.deviance, r.deviance, tol("deviance"), 2))
    return out + _informational_in_exact(mode, params)


def derived(mode: str, py: FitResult, r: FitResult, tol) -> list[Diff]:
    """SEs, conditional modes and fitted values at each side's optimum. In exact mode these are
    informational: they follow the optimum's location (judged in stage 2) and, for Hessian-based
    SEs, lme4's second differences of a piecewise objective (§5.7, §6.1)."""
    out = D.named("se", py.se, r.se, tol("se"), 3) if py.se else []
    if r.se_rx and py.se_rx:                 # an implementation other than the reference may have none
        out += D.named("se_rx", py.se_rx, r.se_rx, tol("se_rx"), 3)
    for group, re_r in (r.ranef or {}).items() if py.ranef is not None else ():
        re_py = (py.ranef or {}).get(group)
        if re_py is None:
            out.append(D.equal("ranef groups", sorted(py.ranef or {}), sorted(r.ranef), 3))
            continue
        out.append(D.array(f"ranef[{group}]", re_py["values"], re_r["values"], tol("ranef"), 3))
    if py.fitted is not None:
        out.append(D.array("fitted", py.fitted, r.fitted, tol("fitted"), 3))
    return _informational_in_exact(mode, out)


def _informational_in_exact(mode: str, diffs: list[Diff]) -> list[Diff]:
    """In exact mode `diffs` are reported but do not gate, except equality of names."""
    for d in diffs:
        d.gating = mode != "exact" or d.tol == "equal"
    return diffs
