"""A GLMM problem: design, family and initialized response in one value (spec §1–§2).

Everything a deviance function needs and nothing that changes during a fit; and, once run, the
optimizer stages on it (`stages`), which are the same for every fit that reaches them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .design import Design, build_design
from .errors import ModelError
from .factor import analyze
from .families import Family, Response, make_family
from .predictor import predictor


@dataclass
class Model:
    design: Design
    family: Family
    response: Response
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # the optimizer stages run on this model, by stage and settings (fit._memo): computed once
    stages: dict = field(default_factory=dict, repr=False, compare=False)

    # --- sizes and data ------------------------------------------------------------------------
    @property
    def X(self) -> np.ndarray:
        return self.design.X

    @cached_property
    def X_contiguous(self) -> np.ndarray:
        """X in C order (the compiled loop takes one layout)."""
        return np.ascontiguousarray(self.X, dtype=float)

    @property
    def Zt(self) -> sp.csc_matrix:
        return self.design.Zt

    @property
    def offset(self) -> np.ndarray:
        return self.design.offset

    @property
    def N(self) -> int:
        return self.design.N

    @property
    def p(self) -> int:
        return self.design.p

    @property
    def q(self) -> int:
        return self.design.q

    @property
    def nth(self) -> int:
        return len(self.design.theta0)

    @property
    def lower(self) -> np.ndarray:
        return np.asarray(self.design.lower, float)

    @property
    def theta0(self) -> np.ndarray:
        return np.asarray(self.design.theta0, float)

    @cached_property
    def eta0(self) -> np.ndarray:
        """`offset + linkfun(mustart)`: lme4's start, offset added twice over glm.fit's (§2.1)."""
        with np.errstate(divide="ignore"):
            return self.offset + self.family.link.linkfun(self.response.mustart)

    @cached_property
    def devresid(self) -> Callable[[np.ndarray], np.ndarray]:
        """`devresid(mu)` for this response (§2.2), its μ-free parts computed once."""
        r = self.response
        return self.family.devresid_at(r.y, r.pw)

    @cached_property
    def aic(self) -> Callable[[np.ndarray, float], float]:
        """`aic(mu, dev)` for this response (§2.2), its μ-free parts computed once."""
        r = self.response
        return self.family.aic_at(r.y, r.n, r.pw)

    # --- random effects ------------------------------------------------------------------------
    @cached_property
    def scalar_single(self) -> bool:
        """One grouping factor with one column: A = Λ'Z'WZΛ + I is diagonal (§4.3)."""
        terms = self.design.reterms
        return len(terms) == 1 and terms[0].nc == 1

    @cached_property
    def single_term(self) -> bool:
        """One random-effects term: A is block diagonal, one nc×nc block per level."""
        return len(self.design.reterms) == 1

    @cached_property
    def fac(self) -> np.ndarray:
        """Level (0-based) of each observation for the first (with `single_term`, the only) term."""
        return np.asarray(self.design.factor_codes[0], np.intp)

    @cached_property
    def n_levels(self) -> int:
        """Levels of the first term."""
        return self.design.reterms[0].nl

    def level_sums(self, v: np.ndarray) -> np.ndarray:
        """`J @ v`: Σ_{i∈j} v_i for each level j of the first term, column by column for 2-D v
        (one bincount over the bins level·k + column, read in v's memory order)."""
        if v.ndim == 1:
            return np.bincount(self.fac, v, minlength=self.n_levels)
        k, order = v.shape[1], "F" if np.isfortran(v) else "C"
        if (k, order) not in self._level_bins:
            bins = self.fac[:, None] * k + np.arange(k)
            self._level_bins[k, order] = bins.ravel(order=order)
        sums = np.bincount(self._level_bins[k, order], v.ravel(order=order), minlength=self.n_levels * k)
        return sums.reshape(self.n_levels, k)

    @cached_property
    def _level_bins(self) -> dict[tuple[int, str], np.ndarray]:
        return {}

    @cached_property
    def by_level(self) -> tuple[np.ndarray, np.ndarray]:
        """`(order, starts)`: observations sorted by the first term's level (stable), level j's
        rows being `order[starts[j]:starts[j + 1]]`."""
        order = np.argsort(self.fac, kind="stable")
        return order, np.searchsorted(self.fac[order], np.arange(self.n_levels + 1))

    @cached_property
    def zvals(self) -> np.ndarray:
        """The single scalar term's model-matrix column, one value per observation."""
        return np.ascontiguousarray(self.design.reterms[0].mm[:, 0], float)

    @cached_property
    def _Zt_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, indptr) of Zt in CSC form: column n holds, term by term, the rows
        `Gp_t + level·nc_t + j`, j < nc_t (§1.1), explicit zeros included, so Λ'Z' keeps it."""
        d = self.design
        rows = np.hstack([d.Gp[i] + t.codes[:, None] * t.nc + np.arange(t.nc)[None, :]
                          for i, t in enumerate(d.reterms)])
        nnz = rows.size
        itype = np.int32 if max(nnz, self.q) < np.iinfo(np.int32).max else np.int64
        return rows.ravel().astype(itype), np.arange(0, nnz + 1, rows.shape[1], dtype=itype)

    def LamtZt_columns(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Λ(θ)'Z' column by column: the rows (N×k) and values (N×k) of each observation's
        column, T_t' mm_t[n] for each term t (§1.2)."""
        d = self.design
        values = np.hstack([t.mm @ T for t, T in zip(d.reterms, d.T(theta))])
        return self._Zt_pattern[0].reshape(values.shape), values

    def LamtZt(self, theta: np.ndarray) -> sp.csc_matrix:
        """Λ(θ)'Z' (q×N) on Zt's pattern."""
        _, values = self.LamtZt_columns(theta)
        indices, indptr = self._Zt_pattern
        return sp.csc_matrix((values.ravel(), indices, indptr), shape=(self.q, self.N))

    @cached_property
    def symbolic(self):
        """CHOLMOD's symbolic analysis of A = Λ'Z'WZΛ + I: its pattern does not depend on θ or W."""
        return analyze(self.LamtZt(self.theta0))

    def Zb(self, theta: np.ndarray, u: np.ndarray) -> np.ndarray:
        """ZΛu (N)."""
        return predictor(self, theta).Zb(u)


def make_model(formula, data: pd.DataFrame, family="binomial", link=None,
               weights=None, offset=None) -> Model:
    """Design + family + `family$initialize` + lme4's checks on the response (§2.1, §5.1)."""
    fam = make_family(family, link)
    design = build_design(formula, data, weights=weights, offset=offset)
    response = fam.initialize(design.response, np.asarray(design.prior_weights, float))
    _check_response_not_constant(design, response)
    return Model(design, fam, response, list(design.messages),
                 list(design.warnings) + list(response.warnings))


def _check_response_not_constant(design: Design, response: Response) -> None:
    """lme4's `check.response.not.const` on the model response (§5.1)."""
    r = design.response
    raw = (np.column_stack([r.successes, r.failures]) if r.kind == "cbind"
           else np.asarray(response.y))
    if len(raw) and np.all(raw == raw[0]):
        raise ModelError("Response is constant")
