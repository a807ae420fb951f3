"""The factorizations of one PIRLS working iteration (spec §3.1 steps 2–3).

`L L' = P (Λ'Z'WZΛ + I) P'` (ldL2 = log|A|), `RZX = L⁻¹ P Λ'Z'W X`, `RX'RX = X'WX − RZX'RZX`.
The fill-reducing permutation P changes none of these quantities beyond rounding, so each shape
of A gets its own factor:

* `DiagonalFactor` — one scalar term: A is diagonal, `L = diag(√A_jj)`.
* `BlockFactor` — one vector term: A is block diagonal, nl blocks nc×nc, batched Cholesky.
* `SparseFactor` — several terms: CHOLMOD's supernodal/simplicial LL' on the symbolic analysis
  done once per model (`Model.symbolic`), as lme4 does.
* `DenseFactor` — the scipy-only fallback for several terms when scikit-sparse is not importable
  (`cholmod is None`): dense Cholesky of A, fine for q up to a few thousand.

Λ'Z'W^½ arrives in the form its shape allows (`predictor.py`).
"""
from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np
import scipy.linalg as la
from scipy.linalg import lapack
import scipy.sparse as sp

from .errors import DOWNDATE_NOT_PD, NAN_VALUE, PirlsError

try:
    from sksparse import cholmod
except ImportError:                  # scipy-only fallback: DenseFactor
    cholmod = None


def not_positive_definite() -> PirlsError:
    """A = I + MM' lost its I to rounding (weights of 1e8 and more): lme4's CHOLMOD leaves a
    partial factor that PIRLS's NaN test, or else the RX downdate, stops on (§3.2)."""
    return PirlsError(NAN_VALUE)


class Factor:
    """L for A = (Λ'Z'W^½)(Λ'Z'W^½)' + I, with the products PIRLS needs."""

    ldL2: float

    def LamtUt_dot(self, v: np.ndarray) -> np.ndarray:
        """Λ'Z'W^½ v (q) for v of length N, or (q×k) for v of shape (N, k)."""
        raise NotImplementedError

    def solve_L(self, b: np.ndarray) -> np.ndarray:
        """L⁻¹ P b."""
        raise NotImplementedError

    def solve_Lt(self, b: np.ndarray) -> np.ndarray:
        """P' L'⁻¹ b."""
        raise NotImplementedError

    def solve_A(self, b: np.ndarray) -> np.ndarray:
        return self.solve_Lt(self.solve_L(b))


class DiagonalFactor(Factor):
    """Single scalar term: A is diagonal, `L = diag(√A_jj)` (§4.3: `sd_j = 1 / L_jj`).

    `m` holds the nonzeros of Λ'Z'W^½ (θ z_i √w_i, one per observation), `level_sums` is J @."""

    def __init__(self, m: np.ndarray, level_sums: Callable[[np.ndarray], np.ndarray]):
        self.m, self.level_sums = m, level_sums
        self.Ldiag = np.sqrt(1.0 + level_sums(m * m))
        self.ldL2 = 2.0 * float(np.sum(np.log(self.Ldiag)))

    def LamtUt_dot(self, v):
        return self.level_sums(self.m * v if v.ndim == 1 else self.m[:, None] * v)

    def solve_L(self, b):
        return b / (self.Ldiag if b.ndim == 1 else self.Ldiag[:, None])

    solve_Lt = solve_L

    def Ainv_blocks(self) -> np.ndarray:
        """A⁻¹'s diagonal as nl 1×1 blocks."""
        return (1.0 / self.Ldiag ** 2)[:, None, None]


class BlockFactor(Factor):
    """Single vector term: A = blockdiag_l(I + Σ_{i∈l} m_i m_i'), m_i = √w_i T' mm_i (row i of
    `M`, N×nc); `L` is the stack of the blocks' Cholesky factors (nl×nc×nc)."""

    def __init__(self, M: np.ndarray, level_sums: Callable[[np.ndarray], np.ndarray]):
        self.M, self.level_sums = M, level_sums
        N, nc = M.shape
        self.nc = nc
        S = level_sums((M[:, :, None] * M[:, None, :]).reshape(N, nc * nc)).reshape(-1, nc, nc)
        try:
            self.L = np.linalg.cholesky(S + np.eye(nc))
        except np.linalg.LinAlgError:
            raise not_positive_definite() from None
        self.ldL2 = 2.0 * float(np.sum(np.log(np.diagonal(self.L, axis1=1, axis2=2))))

    def LamtUt_dot(self, v):
        N, nc = self.M.shape
        if v.ndim == 1:
            return self.level_sums(self.M * v[:, None]).ravel()
        k = v.shape[1]
        return self.level_sums((self.M[:, :, None] * v[:, None, :]).reshape(N, nc * k)).reshape(-1, k)

    def solve_L(self, b):
        return _forward(self.L, b.reshape(len(self.L), self.nc, -1)).reshape(b.shape)

    def solve_Lt(self, b):
        return _backward(self.L, b.reshape(len(self.L), self.nc, -1)).reshape(b.shape)

    def Ainv_blocks(self) -> np.ndarray:
        """The nl diagonal blocks of A⁻¹, (L_l L_l')⁻¹."""
        return _backward(self.L, _forward(self.L, np.broadcast_to(np.eye(self.nc), self.L.shape)))


def _forward(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """X with L_l X_l = B_l for each lower-triangular block (L: n×c×c, B: n×c×k), row by row."""
    X = np.empty_like(B)
    for i in range(L.shape[1]):
        X[:, i] = (B[:, i] - np.einsum("nj,njk->nk", L[:, i, :i], X[:, :i])) / L[:, i, i, None]
    return X


def _backward(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """X with L_l' X_l = B_l for each lower-triangular block, from the last row up."""
    X = np.empty_like(B)
    for i in reversed(range(L.shape[1])):
        X[:, i] = (B[:, i] - np.einsum("nj,njk->nk", L[:, i + 1:, i], X[:, i + 1:])) / L[:, i, i, None]
    return X


class SparseFactor(Factor):
    """General terms: CHOLMOD's `P A P' = L L'` from the model's symbolic analysis (§3.1 step 2)."""

    def __init__(self, LamtUt: sp.csc_matrix, symbolic):
        self.LamtUt = LamtUt
        try:
            self.F = symbolic.cholesky_AAt(LamtUt, beta=1.0)
        except cholmod.CholmodNotPositiveDefiniteError:
            raise not_positive_definite() from None
        with np.errstate(invalid="ignore"):         # simplicial LDL': a negative pivot in D
            self.ldL2 = float(self.F.logdet())
        if np.isnan(self.ldL2):
            raise not_positive_definite()

    def LamtUt_dot(self, v):
        return self.LamtUt @ v

    def solve_L(self, b):
        return self.F.solve_L(self.F.apply_P(b), use_LDLt_decomposition=False)

    def solve_Lt(self, b):
        return self.F.apply_Pt(self.F.solve_Lt(b, use_LDLt_decomposition=False))


def analyze(LamtZt: sp.csc_matrix):
    """CHOLMOD's symbolic analysis of Λ'Z'(Λ'Z')' + I: fill-reducing P and the pattern of L."""
    return cholmod.analyze_AAt(LamtZt)


class DenseFactor(Factor):
    """General terms without CHOLMOD: dense lower Cholesky of A (P = I)."""

    def __init__(self, LamtUt: sp.csc_matrix):
        self.LamtUt = LamtUt.tocsr()
        A = (self.LamtUt @ self.LamtUt.T).toarray()
        A[np.diag_indices_from(A)] += 1.0
        try:
            self.L = la.cholesky(A, lower=True)
        except la.LinAlgError:
            raise not_positive_definite() from None
        self.ldL2 = 2.0 * float(np.sum(np.log(np.diag(self.L))))

    def LamtUt_dot(self, v):
        return self.LamtUt @ v

    def solve_L(self, b):
        return la.solve_triangular(self.L, b, lower=True)

    def solve_Lt(self, b):
        return la.solve_triangular(self.L, b, lower=True, trans="T")


class Decomposition:
    """L, RZX and RX at one set of weights (`updateXwts` + `updateDecomp`, §3.1).

    V, RZX and RX are formed when first used; lme4 forms them in every iteration, and PIRLS's lme4
    mode asks for them there (`check`) so that a failed downdate fails where lme4's does."""

    def __init__(self, L: Factor, X: np.ndarray, sqrtW: np.ndarray):
        self.L, self.X, self.sqrtW = L, X, sqrtW

    @property
    def ldL2(self) -> float:
        return self.L.ldL2

    @cached_property
    def V(self) -> np.ndarray:
        """W^½ X."""
        return self.X * self.sqrtW[:, None]

    @cached_property
    def RZX(self) -> np.ndarray:
        return self.L.solve_L(self.L.LamtUt_dot(self.V))

    @cached_property
    def RX(self) -> np.ndarray:
        RX, info = lapack.dpotrf(self.V.T @ self.V - self.RZX.T @ self.RZX, lower=False, clean=True)
        if info != 0:
            raise PirlsError(DOWNDATE_NOT_PD)
        return RX

    def check(self) -> None:
        """Form RX now: raises PirlsError where lme4's `updateDecomp` fails (§3.1 step 3)."""
        self.RX

    @property
    def ldRX2(self) -> float:
        return 2.0 * float(np.sum(np.log(np.diag(self.RX))))

    def solve_u(self, wz: np.ndarray) -> np.ndarray:
        """u-only step: u = A⁻¹ Λ'Z'W z (`solveU`), `wz` = W^½ z."""
        return self.L.solve_A(self.L.LamtUt_dot(wz))

    def solve_joint(self, wz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint step (`solve`): the penalized weighted least squares for (u, β), blockwise."""
        return self.solve_normal(self.L.LamtUt_dot(wz), self.V.T @ wz)

    def solve_normal(self, bu: np.ndarray, bbeta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, β) solving the penalized normal equations [U'U + I, U'V; V'U, V'V] (u, β) = (bu, bβ)
        with this factor (U = W^½ZΛ, V = W^½X), blockwise: L, then RZX and RX."""
        cu = self.L.solve_L(bu)
        rhs = bbeta - self.RZX.T @ cu
        if not rhs.size:                 # no fixed effects (`y ~ 0 + (1 | g)`): LAPACK refuses n = 0
            return self.L.solve_Lt(cu), rhs
        # NaN in z (an overflowing (y − μ)/μ.eta) flows through, as in lme4, to PIRLS's NaN test
        beta = la.solve_triangular(self.RX, la.solve_triangular(self.RX, rhs, trans="T", check_finite=False),
                                   check_finite=False)
        u = self.L.solve_Lt(cu - self.RZX @ beta)
        return u, beta

    def unsc(self) -> np.ndarray:
        """(RX'RX)⁻¹: the unscaled fixed-effects covariance (`pp$unsc()`, §7); 0×0 for p = 0."""
        if not self.RX.size:
            return np.zeros((0, 0))
        RXinv = la.solve_triangular(self.RX, np.eye(self.RX.shape[0]))
        return RXinv @ RXinv.T
