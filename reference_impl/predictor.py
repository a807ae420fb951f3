"""lme4's predictor module at one θ (`merPredD` after `setTheta`, spec §1.2–§1.3, §3.1).

What PIRLS needs at a fixed θ, computed once per run: ZΛu, and for any weights W the factor of
`A = Λ'Z'WZΛ + I`. Λ(θ)'Z' is kept in the form the model's shape allows:

* one scalar term — θ z_i, one number per observation (A diagonal);
* one vector term — the rows T' mm_i (N×nc; A block diagonal);
* several terms — the sparse q×N matrix on Zt's pattern, factored by CHOLMOD (or densely
  when scikit-sparse is not importable).
"""
from __future__ import annotations

import copy

import numpy as np

from . import factor as factors
from .factor import BlockFactor, DenseFactor, DiagonalFactor, Factor, SparseFactor


class Predictor:
    """ZΛu and the factor of Λ'Z'WZΛ + I at one θ."""

    def Zb(self, u: np.ndarray) -> np.ndarray:
        """ZΛu (N)."""
        raise NotImplementedError

    def factor(self, sqrtW: np.ndarray) -> Factor:
        """L of Λ'Z'WZΛ + I, W = sqrtW²."""
        raise NotImplementedError


class SparsePredictor(Predictor):
    """Several terms: Λ'Z' sparse (q×N)."""

    def __init__(self, model, theta):
        self.model = model
        self.LamtZt = model.LamtZt(theta)
        self.ZLam = self.LamtZt.T          # once per θ: `.T` builds a matrix per call

    def Zb(self, u):
        return self.ZLam @ u

    def factor(self, sqrtW):
        # Λ'Z'W^½: a shallow copy shares Λ'Z''s pattern and takes values of its own (scipy's
        # constructors check the pattern, ~0.1 ms a call, more than CHOLMOD's factorization at
        # harness sizes); every column holds the same number of entries (Zt's pattern)
        LamtUt = copy.copy(self.LamtZt)
        LamtUt.data = (self.LamtZt.data.reshape(self.model.N, -1) * sqrtW[:, None]).ravel()
        if factors.cholmod is None:
            return DenseFactor(LamtUt)
        return SparseFactor(LamtUt, self.model.symbolic)


class DiagonalPredictor(Predictor):
    """One scalar term: (Λ'Z')_{fac_i, i} = θ z_i."""

    def __init__(self, model, theta):
        self.model = model
        self.thetaz = theta[0] * model.zvals

    def Zb(self, u):
        return self.thetaz * u[self.model.fac]

    def factor(self, sqrtW):
        return DiagonalFactor(self.thetaz * sqrtW, self.model.level_sums)


class BlockPredictor(Predictor):
    """One vector term: column i of Λ'Z' holds T' mm_i in the rows of level fac_i."""

    def __init__(self, model, theta):
        self.model = model
        term = model.design.reterms[0]
        self.mmT = term.mm @ model.design.T(theta)[0]             # row i = (T' mm_i)'

    def Zb(self, u):
        U = u.reshape(-1, self.mmT.shape[1])
        return np.einsum("ij,ij->i", self.mmT, U[self.model.fac])

    def factor(self, sqrtW):
        return BlockFactor(self.mmT * sqrtW[:, None], self.model.level_sums)


def predictor(model, theta: np.ndarray) -> Predictor:
    """The predictor at θ for the model's shape of A."""
    theta = np.asarray(theta, float)
    if model.scalar_single:
        return DiagonalPredictor(model, theta)
    if model.single_term:
        return BlockPredictor(model, theta)
    return SparsePredictor(model, theta)
