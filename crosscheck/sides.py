"""The sides of a comparison, behind one interface: fit a case, build its deviance function,
evaluate it at given parameter vectors. All return the same types (`FitResult`, `Evaluation`),
so the comparison never asks which side a number came from.

`PythonSide` runs `reference_impl` in this process (mode "lme4" or "exact"); `RSide` runs glmer
through the embedded R (`crosscheck.rbridge`), and `GlmmTMBSide` glmmTMB's Laplace fit. The
reference and glmmTMB are implementations under test (`implementations.py`); glmer is the anchor.
"""
from __future__ import annotations

import functools
import platform
import traceback
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np

import reference_impl as ri
from reference_impl import compiled
from reference_impl.design import build_design
from reference_impl.families import make_family
from reference_impl.model import Model, make_model

from .case import Case
from .implementations import Capabilities
from .interrupt import Timeout, time_limit
from .machine import fingerprint
from .rbridge import RBridgeError, RSession, RTimeout
from .result import HARNESS_ERROR, TIMEOUT, FitResult
from .scales import absolute_minus2loglik, saturated_minus2loglik

REFUSALS = (ri.ModelError, ri.PirlsError, ri.OptimizerError, np.linalg.LinAlgError)
REFERENCE_LME4_VERSION = "1.1-31"          # the lme4 whose scales the reference reproduces


@dataclass
class Evaluation:
    """One deviance-function evaluation (spec §4.4): value and the PIRLS state behind it."""

    value: float
    ldL2: float
    ussq: float
    drsum: float
    u: np.ndarray
    error: str | None = None
    iterations: int | None = None     # PIRLS iterations and step-halvings behind it (reference only)
    halvings: int | None = None


@dataclass
class PirlsTrace:
    """PIRLS at one parameter vector, per iteration (spec §3.2): penalized deviance after the
    iteration (after any step-halving), step-halvings, and the evaluation it ends in (None when
    PIRLS failed; `error` says why). `lines`: lme4's own printed trace (R only)."""

    pdev: list[float]
    halvings: list[int]
    evaluation: Evaluation | None
    error: str | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return len(self.pdev)


def saturated(case: Case) -> float:
    """−2 log L of the saturated model, from the data (NaN where undefined or not computable):
    from the case's model (`_model`, which the reference's fits then share), else, where no
    model can be fitted (a constant response), from the response alone."""
    try:
        resp = _model(case).response
    except REFUSALS:
        try:
            design = build_design(case.formula, case.data, weights=case.weights, offset=case.offset)
            resp = make_family(case.family, case.link).initialize(design.response,
                                                                   np.asarray(design.prior_weights, float))
        except REFUSALS:
            return float("nan")
    return saturated_minus2loglik(case.family, resp.y, resp.n, resp.pw)


def python_versions() -> dict[str, str]:
    return {**_package_versions(), "reference PIRLS": "numba" if compiled.ENABLED else "numpy",
            **fingerprint()}


@functools.cache
def _package_versions() -> dict[str, str]:
    """Once per process: importlib.metadata takes 20 ms a package (0.3 s per compared case)."""
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "pandas", "rpy2", "pdfo", "numba", "hypothesis", "glmm-crosscheck"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _on_absolute_scale(fit: FitResult, case: Case, C: float, lme4_version: str | None) -> FitResult:
    fit.saturated = C
    if fit.ok and fit.minus2loglik_raw is not None:
        fit.minus2loglik = absolute_minus2loglik(fit.minus2loglik_raw, fit.nAGQ or 0, C, lme4_version)
    return fit


def _refusal(side: str, error: BaseException, nAGQ: int) -> FitResult:
    """A refusal; anything but a documented refusal is a harness failure that keeps its
    traceback (a crash, not a verdict about the model)."""
    if isinstance(error, REFUSALS):
        at = getattr(error, "at", None)         # where the reference's deviance function stopped
        return FitResult(side=side, error=str(error), nAGQ=nAGQ,
                         extra={} if at is None else {"failed_at": [float(x) for x in at]})
    return harness_failure(side, error, nAGQ)


def harness_failure(side: str, error: BaseException, nAGQ: int | None) -> FitResult:
    """`error`, raised by the bridge or by code of the harness or the reference, as a side's
    HARNESS_ERROR (with the traceback)."""
    return FitResult(side=side, error=f"internal error: {type(error).__name__}: {error}", nAGQ=nAGQ,
                     extra={"failure": HARNESS_ERROR, "crash": True, "traceback": traceback.format_exc()})


class PythonSide:
    """`reference_impl` in `mode` ("lme4" or "exact"), an implementation named and judged by its
    mode (`implementations.py`); a fit past `timeout` seconds is a TIMEOUT."""

    capabilities = Capabilities()

    def __init__(self, mode: str = "lme4", timeout: float | None = None):
        self.mode = self.name = self.tolerances = mode
        self.timeout = timeout

    def versions(self) -> dict[str, str]:
        return {**python_versions(), "reference_mode": self.mode}

    def fit(self, case: Case, nAGQ: int, saturated_C: float | None = None,
            starts: dict[str, np.ndarray] | None = None) -> FitResult:
        """The reference's fit; `starts` (exact mode): further starts, e.g. glmer's optimum."""
        C = saturated(case) if saturated_C is None else saturated_C
        if self.timeout is not None:
            _compiled_pirls_loaded()
        try:
            with time_limit(self.timeout):
                fit = ri.glmer(case.formula, case.data, family=case.family, link=case.link, nAGQ=nAGQ,
                               weights=case.weights, offset=case.offset, mode=self.mode,
                               control=case.control, starts=starts if self.mode == "exact" else None,
                               model=_model(case))
        except Timeout:
            return FitResult(side="python", error=f"timeout: the reference's fit ran past {self.timeout:g} s",
                             nAGQ=nAGQ, extra={"failure": TIMEOUT})
        except Exception as e:                       # noqa: BLE001 — a crash is reported, not raised
            return _refusal("python", e, nAGQ)
        result = FitResult.from_reference(fit, fit.model.design)     # the design the fit was built on
        result.versions = self.versions()
        return _on_absolute_scale(result, case, C, REFERENCE_LME4_VERSION)

    def evaluate(self, case: Case, nAGQ: int, pars: list[np.ndarray], lp0: np.ndarray | None
                 ) -> list[Evaluation]:
        """The deviance function at each of `pars`, restarting PIRLS from `lp0` (R's, so that both
        sides evaluate the same function, §3.3) or from the reference's own when None."""
        f = self._devfun(case, nAGQ, lp0)
        return [_evaluate(f, p) for p in pars]

    def trace(self, case: Case, nAGQ: int, pars: np.ndarray, lp0: np.ndarray | None) -> PirlsTrace:
        """PIRLS at `pars`, per iteration (`PirlsResult.trace`), from `lp0` as in `evaluate`."""
        f = self._devfun(case, nAGQ, lp0)
        ev = _evaluate(f, pars)
        if ev.error:
            return PirlsTrace([], [], None, ev.error)
        steps = f.last.pirls.trace
        return PirlsTrace([p for p, _ in steps], [h for _, h in steps], ev)

    def _devfun(self, case: Case, nAGQ: int, lp0: np.ndarray | None):
        """The deviance function, on `case`'s model (`_model`)."""
        return ri.devfun(case.formula, case.data, family=case.family, link=case.link, nAGQ=nAGQ,
                         weights=case.weights, offset=case.offset, mode=self.mode, lp0=lp0,
                         control=case.control, model=_model(case))


# the reference's models of the cases seen last (`_model`), least recently used first: at most
# MODELS (a case, its row orders and the band's other variants) whose rows sum to at most
# MODEL_ROWS (the newest is always kept)
_models: dict[int, tuple[Case, Model]] = {}
MODELS = 16
MODEL_ROWS = 1_000_000


def _model(case: Case) -> Model:
    """`case`'s model, built once while it is among the last cases seen: a comparison fits each
    nAGQ in both modes, evaluates for its diagnosis, and refits its row orders (the band) the
    same way, and a model keeps the optimizer stages run on it (`Model.stages`: stage 1 is the
    same at every nAGQ, lme4 mode's path is exact mode's `lme4` start). Cases are told apart by
    identity, as the Diagnoser keeps its row orders' cases."""
    hit = _models.pop(id(case), None)
    model = hit[1] if hit is not None and hit[0] is case else make_model(
        case.formula, case.data, case.family, case.link, case.weights, case.offset)
    _models[id(case)] = case, model
    while len(_models) > MODELS or (len(_models) > 1 and sum(m.N for _, m in _models.values()) > MODEL_ROWS):
        del _models[next(iter(_models))]
    return model


@functools.cache
def _compiled_pirls_loaded() -> None:
    """numba compiles (or loads from its cache) the PIRLS loop on its first call in a process; a
    time limit that lands inside that compilation is swallowed by llvmlite's ctypes callback
    ("Exception ignored", a traceback on stderr) and the limit is lost. So a small fit in both
    modes loads every signature once per process, before any time limit."""
    from .datasets import readme_example
    for mode in ("lme4", "exact"):
        ri.glmer("y ~ x1 + (1 | subject)", readme_example(), "binomial", nAGQ=1, mode=mode)


def _evaluate(f, p) -> Evaluation:
    """One evaluation of a reference deviance function; a PIRLS refusal is an Evaluation with
    `error` set."""
    try:
        value = f(p)
    except REFUSALS as e:
        return Evaluation(np.nan, np.nan, np.nan, np.nan, np.array([]), str(e))
    ev = f.last
    steps = ev.pirls.trace
    return Evaluation(value, ev.ldL2, ev.ussq, ev.drsum, np.array(ev.u, float),
                      iterations=len(steps), halvings=sum(h for _, h in steps))


class RSide:
    """glmer through the embedded R."""

    name = "r"

    def __init__(self, session: RSession | None = None, timeout: float | None = None):
        self.session = session or RSession.get()
        self.timeout = timeout

    @property
    def versions(self) -> dict[str, str]:
        return self.session.versions()

    def _args(self, case: Case) -> dict:
        return dict(link=case.link, weights=case.weights, offset=case.offset,
                    control=case.control or None, timeout=self.timeout)

    def fit(self, case: Case, nAGQ: int, saturated_C: float | None = None,
            keep_devfun: bool = False) -> FitResult:
        """glmer's fit; with `keep_devfun`, `extra["devfun"]` is the deviance function it optimized
        (as `devfun` gives it; the caller drops it), so that none is built a second time."""
        C = saturated(case) if saturated_C is None else saturated_C
        try:
            record = self.session.fit(case.data, case.formula, case.family, nAGQ=nAGQ,
                                      keep_devfun=keep_devfun, **self._args(case))
        except RTimeout as e:
            return FitResult(side="r", error=f"timeout: {e}", nAGQ=nAGQ, extra={"failure": TIMEOUT})
        except ri.ModelError:                      # the formula outside the grammar: bad input
            raise
        except Exception as e:                     # noqa: BLE001 — the bridge failed, not glmer
            return harness_failure("r", e, nAGQ)
        result = FitResult.from_r(record)
        result.nAGQ = nAGQ
        return _on_absolute_scale(result, case, C, self.versions.get("lme4"))

    def devfun(self, case: Case, nAGQ: int) -> dict:
        """R's deviance function for the case (registered in R): id, lp0, start, …"""
        record = self.session.devfun(case.data, case.formula, case.family, nAGQ=nAGQ,
                                     **self._args(case))
        if not record["ok"]:
            raise RBridgeError(f"glmer(devFunOnly = TRUE) failed: {record['error']}")
        return record["value"]

    def evaluate(self, devfun: dict, pars: list[np.ndarray]) -> list[Evaluation]:
        record = self.session.devfun_eval(devfun["id"], np.vstack(pars), timeout=self.timeout)
        if not record["ok"]:
            raise RBridgeError(f"evaluating glmer's deviance function failed: {record['error']}")
        out = []
        for row in record["value"]:
            if not row["ok"]:
                out.append(Evaluation(np.nan, np.nan, np.nan, np.nan, np.array([]), row["error"]))
                continue
            v = row["value"]
            out.append(Evaluation(v["value"], v["ldL2"], v["ussq"], v["drsum"], np.asarray(v["u"], float)))
        return out

    def trace(self, devfun: dict, pars: np.ndarray) -> PirlsTrace:
        """PIRLS at `pars`, per iteration (glmer.R's `cc_devfun_trace`)."""
        record = self.session.devfun_trace(devfun["id"], pars, timeout=self.timeout)
        if not record["ok"]:
            raise RBridgeError(f"tracing glmer's PIRLS failed: {record['error']}")
        v = record["value"]
        s = v["state"]
        ev = None if s is None else Evaluation(s["value"], s["ldL2"], s["ussq"], s["drsum"],
                                               np.asarray(s["u"], float))
        return PirlsTrace([float(x) for x in v["pdev"]], [int(h) for h in v["halvings"]], ev,
                          v["error"], list(v["lines"]))

    def drop(self, *devfuns: dict) -> None:
        if devfuns:
            self.session.devfun_drop(*(f["id"] for f in devfuns))


class GlmmTMBSide:
    """glmmTMB's Laplace fit (nAGQ = 1 only): the referee of `compare --referee`, and an
    implementation under test (`--impl glmmtmb`), judged as an independent fit of the likelihood."""

    name = "glmmtmb"
    tolerances = "exact"
    capabilities = Capabilities(nagq=(1,))

    def __init__(self, session: RSession | None = None, timeout: float | None = None):
        self.session = session or RSession.get()
        self.timeout = timeout

    def versions(self) -> dict[str, str]:
        return dict(self.session.versions())

    def fit(self, case: Case, nAGQ: int = 1, saturated_C: float | None = None) -> FitResult:
        try:
            record = self.session.fit_glmmtmb(case.data, case.formula, case.family, link=case.link,
                                              weights=case.weights, offset=case.offset,
                                              timeout=self.timeout)
        except RTimeout as e:
            return FitResult(side="glmmtmb", error=f"timeout: {e}", nAGQ=1, extra={"failure": TIMEOUT})
        except ri.ModelError:
            raise
        except Exception as e:                     # noqa: BLE001 — the bridge failed, not glmmTMB
            return harness_failure("glmmtmb", e, 1)
        result = FitResult.from_r(record, side="glmmtmb")
        result.nAGQ = 1
        result.versions = {**result.versions, **self.versions()}
        return _on_absolute_scale(result, case, saturated(case) if saturated_C is None else saturated_C,
                                  None)


def reference_lme4() -> PythonSide:
    """The built-in implementation `lme4`: the reference in lme4 mode."""
    return PythonSide("lme4")


def reference_exact() -> PythonSide:
    """The built-in implementation `exact`: the reference in exact mode."""
    return PythonSide("exact")
