"""mixedlm (PyPI; an lme4 clone with a Rust backend) as an implementation under test (issue 14):
`--impl mixedlm`, installed with `pip install 'glmm-crosscheck[mixedlm]'`.

What the adapter does for mixedlm, and nothing more:
- the response goes over as numbers: y and the prior weights the reference's `design` and family
  make of it (spec §2.1), because mixedlm's formulas have no `cbind(successes, failures)`; a
  binomial count response becomes the proportion with weights successes + failures, as glmer
  does internally; the offset likewise (the formula's `offset()` terms, which mixedlm does not
  parse, and the offset column, summed), with the `offset()` terms taken out of the formula;
- mixedlm names a factor's coefficients by position (`period.1`); where its model matrix has the
  same columns as lme4's, the coefficients take lme4's names and the renaming is listed in the
  fit's messages (otherwise its own names stay, and stage 0 reports them);
- mixedlm orders a grouping factor's levels as strings ("1", "10", "11", …, "2"), lme4 by the
  factor's levels: where its Zt's rows are lme4's in another order, they (and, for one term, the
  conditional modes) are put in lme4's order, and the fit's messages say so;
- mixedlm keeps the random-effects terms in the formula's order, lme4 sorts them by their number
  of levels (§1.1): θ is put in lme4's order by matching terms (grouping factor and columns; an
  uncorrelated `||` term is one mixedlm term and several of lme4's), both in the fit and for
  its deviance function;
- its deviance function is on the deviance scale (−2 log L − the saturated constant) at every
  nAGQ, lme4's at nAGQ ≤ 1 on −2 log L (§4.1, §4.3): the saturated constant is added there.
  For families with a dispersion lme4's value holds the estimated dispersion's density, and no
  constant converts one into the other, so stage 1 is not run for them.
Everything mixedlm returns is taken as it is; `extra["mixedlm"]` keeps its optimizer's message.
What it prints (its R-like "messages", e.g. a rank-deficient X) goes into the fit's messages, never to
the console: `compare --format json` writes JSON on stdout.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import replace
from importlib import metadata

import numpy as np

from reference_impl.design import build_design
from reference_impl.families import make_family
from reference_impl.formula import parse_formula

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
    # every family and link glmer takes, but gaussian's inverse link (mixedlm: "identity, log")
    capabilities = Capabilities(families={"binomial": ("logit", "probit", "cloglog", "cauchit", "log"),
                                          "poisson": ("log", "sqrt", "identity"),
                                          "Gamma": ("inverse", "log", "identity"),
                                          "inverse.gaussian": ("1/mu^2", "inverse", "log", "identity"),
                                          "gaussian": ("log",)})

    def __init__(self):
        # one thread, as the harness's BLAS (Makefile): sweeps run a worker per core, and mixedlm's
        # rayon pool, one thread per core in each worker, oversubscribed them (2/3 of a sweep idle)
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
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
            printed = io.StringIO()
            with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
                warnings.simplefilter("always")
                m = ml.glmer(formula, data, family=family, nAGQ=nAGQ, weights=W, offset=_offset(design))
        except REFUSALS as e:
            return _refusal("python", e, nAGQ)
        except Exception as e:                     # noqa: BLE001 — mixedlm's refusal is its exception
            if isinstance(e, (KeyboardInterrupt, MemoryError)):
                raise
            return FitResult(side="python", error=f"{type(e).__name__}: {e}", nAGQ=nAGQ)
        try:
            return self._result(m, case, nAGQ, design, [*printed.getvalue().splitlines(), *(str(w.message) for w in caught)],
                                saturated(case) if saturated_C is None else saturated_C)
        except Exception as e:                     # noqa: BLE001 — the adapter failed, not mixedlm
            return harness_failure("python", e, nAGQ)

    def evaluate(self, case: Case, nAGQ: int, pars: list[np.ndarray], lp0) -> list[Evaluation]:
        """mixedlm's deviance function (`mkGlmerDevfun`) at `pars`, on lme4's scale; its own start
        (it takes no lp0); only the value (no ldL2, ‖u‖², Σ devResid)."""
        if make_family(case.family, case.link).has_scale and nAGQ <= 1:
            raise NoDevianceFunction(f"mixedlm's deviance function is on the deviance scale; for the "
                                     f"{case.family} family (a dispersion) no constant puts it on lme4's")
        ml = self.mixedlm
        data, formula, family, design = self._problem(case)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = ml.glFormula(formula, data, family=family, weights=data[W].to_numpy(), offset=_offset(design))
            f = ml.mkGlmerDevfun(parsed, nAGQ=nAGQ)
        shift = saturated(case) if nAGQ <= 1 else 0.0
        order = _theta_order(parsed.matrices.random_structures, design)
        out = []
        for p in pars:
            p = np.array(p, float)
            if order is not None:                  # lme4's θ into mixedlm's places
                p[order] = p[:len(order)].copy()
            try:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    value = float(f(p)) + shift
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
        parsed = parse_formula(case.formula)
        rhs = case.formula.split("~", 1)[1] if not parsed.offsets else \
            replace(parsed, offsets=()).to_r().split("~", 1)[1]
        formula = f"{Y} ~ {rhs}"
        family = getattr(self.mixedlm.families, FAMILIES[case.family])(case.link or fam.link.name)
        return data, formula, family, design

    def _result(self, m, case: Case, nAGQ: int, design, said: list[str], C: float) -> FitResult:
        X = np.asarray(m.getME("X"), float)
        names, renamed = _lme4_names(list(m.fixef()), X, design)
        Zt, order = m.getME("Zt").tocsr(), _lme4_rows(m.getME("Zt"), design.Zt)
        reordered = order is not None and bool(np.any(order != np.arange(len(order))))
        theta_order = _theta_order(m.matrices.random_structures, design)
        if reordered:
            Zt = Zt[order]
        beta = dict(zip(names, map(float, m.fixef().values())))
        V = np.asarray(m.vcov(), float)
        m2ll = -2.0 * float(m.logLik().value)
        groups = {frozenset(t.group.split(":")): t.group for t in design.reterms}    # g:h is lme4's h:g
        ranef = {groups.get(frozenset(g.split(":")), g): {"levels": None, "terms": list(cols),
                                                         "values": np.column_stack(list(cols.values()))}
                 for g, cols in m.ranef().items()}
        if order is not None and len(ranef) == 1 and len(design.reterms) == 1:
            (g, re), nc = next(iter(ranef.items())), design.reterms[0].nc
            re["values"] = re["values"][order[::nc] // nc]
        messages = said + [f"mixedlm's {a!r} is lme4's {b!r}" for a, b in renamed]
        if reordered:
            messages.append("mixedlm's Zt rows are lme4's in another order (levels sorted as strings, terms in the "
                            "formula's order): put in lme4's order")
        if theta_order is not None and np.any(theta_order != np.arange(len(theta_order))):
            messages.append(f"mixedlm's θ is lme4's in the order {theta_order.tolist()}: put in lme4's order")
        return FitResult(
            side="python", fixef=beta, theta=[float(t) for t in _in_order(np.atleast_1d(m.theta), theta_order)],
            theta_names=list(design.theta_names), minus2loglik=m2ll, minus2loglik_raw=m2ll - (C if nAGQ > 1 else 0.0),
            saturated=C, objective=m2ll - (C if nAGQ > 1 else 0.0), deviance=float(m.deviance),
            se=dict(zip(names, map(float, np.sqrt(np.diag(V))))), vcov=V, ranef=ranef,
            fitted=np.asarray(m.fitted(), float), converged=bool(m.converged), messages=messages,
            optimizer=str(m.optimizer), nAGQ=nAGQ, versions=self.versions(),
            extra={"X": X, "X_names": names, "Zt": Zt.tocsc(),
                   "theta_lower": np.asarray(m.getME("lower"), float), "mixedlm": str(m.message)})


def _offset(design) -> np.ndarray | None:
    return np.asarray(design.offset, float) if np.any(design.offset != 0) else None


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


def _theta_order(structures, design) -> np.ndarray | None:
    """`order` with lme4's θ_i at mixedlm's position order[i], matching terms by grouping factor
    (its factors, in any order) and columns; None where the terms do not match one to one."""
    def factors(group: str) -> frozenset:
        return frozenset(group.split(":"))
    places, k = {}, 0
    for s in structures:
        names = tuple(s.term_names)
        if s.correlated:
            n = len(names) * (len(names) + 1) // 2
            places[factors(s.grouping_factor), names] = list(range(k, k + n))
            k += n
        else:
            for name in names:
                places[factors(s.grouping_factor), (name,)] = [k]
                k += 1
    order = []
    for t in design.reterms:
        block = places.pop((factors(t.group), tuple(t.cnms)), None)
        if block is None or len(block) != t.nc * (t.nc + 1) // 2:
            return None
        order += block
    return np.asarray(order) if not places and k == len(order) else None


def _in_order(theta: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """mixedlm's θ in lme4's order (`_theta_order`), as it is where the terms did not match."""
    return theta if order is None else theta[order]
