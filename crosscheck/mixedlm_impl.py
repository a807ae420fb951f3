"""mixedlm (PyPI; an lme4 clone with a Rust backend) as an implementation under test (issue 14):
`--impl mixedlm`, installed with `pip install 'glmm-crosscheck[mixedlm]'`.

What the adapter does for mixedlm, and nothing more:
- the response goes over as numbers: y and the prior weights the reference's `design` and family
  make of it (spec §2.1), because mixedlm's formulas have no `cbind(successes, failures)`; a
  binomial count response becomes the proportion with weights successes + failures, as glmer
  does internally;
- mixedlm names a factor's coefficients by position (`period.1`); where its model matrix has the
  same columns as lme4's, the coefficients take lme4's names and the renaming is listed in the
  fit's messages (otherwise its own names stay, and stage 0 reports them);
- mixedlm orders a grouping factor's levels as strings ("1", "10", "11", …, "2"), lme4 by the
  factor's levels: where its Zt's rows are lme4's in another order, they (and, for one term, the
  conditional modes) are put in lme4's order, and the fit's messages say so;
- its deviance function is on the deviance scale (−2 log L − the saturated constant) at every
  nAGQ, lme4's at nAGQ ≤ 1 on −2 log L (§4.1, §4.3): the saturated constant is added there.
  For families with a dispersion lme4's value holds the estimated dispersion's density, and no
  constant converts one into the other, so stage 1 is not run for them.
Everything mixedlm returns is taken as it is; `extra["mixedlm"]` keeps its optimizer's message.
"""
from __future__ import annotations

import warnings
from importlib import metadata

import numpy as np

from reference_impl.design import build_design
from reference_impl.families import make_family

from .case import Case
from .implementations import Capabilities, NoDevianceFunction
from .result import FitResult
from .sides import REFUSALS, Evaluation, _refusal, harness_failure, saturated

FAMILIES = {"binomial": "Binomial", "poisson": "Poisson", "Gamma": "Gamma",
            "inverse.gaussian": "InverseGaussian", "gaussian": "Gaussian"}
Y, W = "crosscheck_y", "crosscheck_w"            # the columns the response goes over in


class MixedLM:
    name = "mixedlm"
    tolerances = "exact"                          # an independent fit of glmer's likelihood
    capabilities = Capabilities()

    def __init__(self):
        try:
            import mixedlm
        except ImportError:
            from reference_impl.errors import ModelError
            raise ModelError("--impl mixedlm: mixedlm is not installed "
                             "(pip install 'glmm-crosscheck[mixedlm]')") from None
        self.mixedlm = mixedlm

    def versions(self) -> dict[str, str]:
        return {"mixedlm": metadata.version("mixedlm")}

    def fit(self, case: Case, nAGQ: int, saturated_C: float | None = None) -> FitResult:
        ml = self.mixedlm
        try:
            data, formula, family, design = self._problem(case)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                m = ml.glmer(formula, data, family=family, nAGQ=nAGQ, weights=W,
                             offset=case.offset)
        except REFUSALS as e:
            return _refusal("python", e, nAGQ)
        except Exception as e:                     # noqa: BLE001 — mixedlm's refusal is its exception
            if isinstance(e, (KeyboardInterrupt, MemoryError)):
                raise
            return FitResult(side="python", error=f"{type(e).__name__}: {e}", nAGQ=nAGQ)
        try:
            return self._result(m, case, nAGQ, design, caught, saturated(case) if saturated_C is None else saturated_C)
        except Exception as e:                     # noqa: BLE001 — the adapter failed, not mixedlm
            return harness_failure("python", e, nAGQ)

    def evaluate(self, case: Case, nAGQ: int, pars: list[np.ndarray], lp0) -> list[Evaluation]:
        """mixedlm's deviance function (`mkGlmerDevfun`) at `pars`, on lme4's scale; its own start
        (it takes no lp0); only the value (no ldL2, ‖u‖², Σ devResid)."""
        if make_family(case.family, case.link).has_scale and nAGQ <= 1:
            raise NoDevianceFunction(f"mixedlm's deviance function is on the deviance scale; for the "
                                     f"{case.family} family (a dispersion) no constant puts it on lme4's")
        ml = self.mixedlm
        data, formula, family, _ = self._problem(case)
        parsed = ml.glFormula(formula, data, family=family, weights=data[W].to_numpy(),
                              offset=None if case.offset is None else data[case.offset].to_numpy(float))
        f = ml.mkGlmerDevfun(parsed, nAGQ=nAGQ)
        shift = saturated(case) if nAGQ <= 1 else 0.0
        out = []
        for p in pars:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    value = float(f(np.asarray(p, float))) + shift
                out.append(Evaluation(value, None, None, None, None))
            except Exception as e:                 # noqa: BLE001 — a refusal at that point
                if isinstance(e, (KeyboardInterrupt, MemoryError)):
                    raise
                out.append(Evaluation(np.nan, None, None, None, None, f"{type(e).__name__}: {e}"))
        return out

    def _problem(self, case: Case):
        """mixedlm's data, formula and family for `case` (module doc), and the reference's design."""
        design = build_design(case.formula, case.data, weights=case.weights, offset=case.offset)
        fam = make_family(case.family, case.link)
        resp = fam.initialize(design.response, np.asarray(design.prior_weights, float))
        data = case.data.copy()
        data[Y], data[W] = resp.y, resp.pw
        formula = f"{Y} ~ {case.formula.split('~', 1)[1]}"
        family = getattr(self.mixedlm.families, FAMILIES[case.family])(case.link or fam.link.name)
        return data, formula, family, design

    def _result(self, m, case: Case, nAGQ: int, design, caught, C: float) -> FitResult:
        X = np.asarray(m.getME("X"), float)
        names, renamed = _lme4_names(list(m.fixef()), X, design)
        Zt, order = m.getME("Zt").tocsr(), _lme4_rows(m.getME("Zt"), design.Zt)
        reordered = order is not None and bool(np.any(order != np.arange(len(order))))
        if reordered:
            Zt = Zt[order]
        beta = dict(zip(names, map(float, m.fixef().values())))
        V = np.asarray(m.vcov(), float)
        m2ll = -2.0 * float(m.logLik().value)
        ranef = {g: {"levels": None, "terms": list(cols), "values": np.column_stack(list(cols.values()))}
                 for g, cols in m.ranef().items()}
        if order is not None and len(ranef) == 1 and len(design.reterms) == 1:
            (g, re), nc = next(iter(ranef.items())), design.reterms[0].nc
            re["values"] = re["values"][order[::nc] // nc]
        messages = [str(w.message) for w in caught] + [f"mixedlm's {a!r} is lme4's {b!r}" for a, b in renamed]
        if reordered:
            messages.append("mixedlm orders the levels as strings: its Zt rows (and modes) put in lme4's order")
        return FitResult(
            side="python", fixef=beta, theta=[float(t) for t in np.atleast_1d(m.theta)],
            theta_names=list(design.theta_names), minus2loglik=m2ll, minus2loglik_raw=m2ll - (C if nAGQ > 1 else 0.0),
            saturated=C, objective=m2ll - (C if nAGQ > 1 else 0.0), deviance=float(m.deviance),
            se=dict(zip(names, map(float, np.sqrt(np.diag(V))))), vcov=V, ranef=ranef,
            fitted=np.asarray(m.fitted(), float), converged=bool(m.converged), messages=messages,
            optimizer=str(m.optimizer), nAGQ=nAGQ, versions=self.versions(),
            extra={"X": X, "X_names": names, "Zt": Zt.tocsc(),
                   "theta_lower": np.asarray(m.getME("lower"), float), "mixedlm": str(m.message)})


def _lme4_names(names: list[str], X: np.ndarray, design) -> tuple[list[str], list[tuple[str, str]]]:
    """mixedlm's coefficient names as lme4's where each of its columns equals lme4's column at the
    same position (to rounding), with the (mixedlm, lme4) pairs renamed; else its own names."""
    ref = np.asarray(design.X, float)
    if X.shape != ref.shape or not np.allclose(X, ref, rtol=1e-12, atol=1e-12):
        return names, []
    return list(design.X_names), [(a, b) for a, b in zip(names, design.X_names) if a != b]


def _lme4_rows(Zt, lme4_Zt) -> np.ndarray | None:
    """`order` with Zt[order] equal to lme4's Zt (rows matched by their pattern and values), or
    None where no order of the rows gives it."""
    A, B = Zt.tocsr(), lme4_Zt.tocsr()
    if A.shape != B.shape:
        return None
    key = lambda M, i: (tuple(M.indices[M.indptr[i]:M.indptr[i + 1]]),       # noqa: E731
                        tuple(np.round(M.data[M.indptr[i]:M.indptr[i + 1]], 12)))
    rows = {}
    for i in range(A.shape[0]):
        rows.setdefault(key(A, i), []).append(i)
    order = []
    for i in range(B.shape[0]):
        match = rows.get(key(B, i))
        if not match:
            return None
        order.append(match.pop(0))
    return np.asarray(order)
