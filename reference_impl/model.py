"""A GLMM problem: design, family and initialized response in one value (spec §1–§2).

Everything a deviance function needs and nothing that changes during a fit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .design import Design, build_design
from .errors import ModelError
from .families import Family, Response, make_family


@dataclass
class Model:
    design: Design
    family: Family
    response: Response
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    # --- sizes and data ------------------------------------------------------------------------
    @property
    def X(self) -> np.ndarray:
        return self.design.X

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

    # --- random effects ------------------------------------------------------------------------
    @cached_property
    def scalar_single(self) -> bool:
        """One grouping factor with one column: A = Λ'Z'WZΛ + I is diagonal (§4.3)."""
        terms = self.design.reterms
        return len(terms) == 1 and terms[0].nc == 1

    @cached_property
    def fac(self) -> np.ndarray:
        """Level (0-based) of each observation for the single scalar term."""
        return np.asarray(self.design.factor_codes[0], np.intp)

    @cached_property
    def zvals(self) -> np.ndarray:
        """The single scalar term's model-matrix column, one value per observation."""
        Zt = self.Zt.tocsc()
        out = np.zeros(self.N)
        cols = np.repeat(np.arange(self.N), np.diff(Zt.indptr))
        np.add.at(out, cols, Zt.data)
        return out

    def LamtZt(self, theta: np.ndarray) -> sp.csc_matrix:
        """Λ(θ)'Z' (q×N)."""
        return (self.design.Lambdat(np.asarray(theta, float)) @ self.Zt).tocsc()

    def Zb(self, theta: np.ndarray, u: np.ndarray) -> np.ndarray:
        """ZΛu (N)."""
        if self.scalar_single:
            return theta[0] * self.zvals * u[self.fac]
        return self.LamtZt(theta).T @ u


def make_model(formula, data: pd.DataFrame, family="binomial", link=None,
               weights=None, offset=None) -> Model:
    """Design + family + `family$initialize` + lme4's checks on the response (§2.1, §5.1)."""
    fam = make_family(family, link)
    design = build_design(formula, data, weights=weights, offset=offset)
    response = fam.initialize(design.response, np.asarray(design.prior_weights, float))
    _check_response_not_constant(design, response)
    if design.q >= design.N:
        raise ModelError(f"number of observations (={design.N}) <= number of random effects (={design.q}); "
                         "the random-effects parameters are probably unidentifiable")
    return Model(design, fam, response, list(design.messages),
                 list(design.warnings) + list(response.warnings))


def _check_response_not_constant(design: Design, response: Response) -> None:
    """lme4's `check.response.not.const` on the model response (§5.1)."""
    r = design.response
    raw = (np.column_stack([r.successes, r.failures]) if r.kind == "cbind"
           else np.asarray(response.y))
    if len(raw) and np.all(raw == raw[0]):
        raise ModelError("Response is constant")
