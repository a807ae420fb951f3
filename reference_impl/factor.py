"""The factorizations of one PIRLS working iteration (spec §3.1 steps 2–3).

`L L' = Λ'Z'WZΛ + I` (ldL2 = log|A|), `RZX = L⁻¹ Λ'Z'W X`, `RX'RX = X'WX − RZX'RZX`.
The permutation CHOLMOD applies does not change any of these quantities beyond rounding, so
`L` here is unpermuted: diagonal when there is a single scalar term, dense otherwise.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from .errors import PirlsError


class Factor:
    """L for A = (Λ'Z'W^½)(Λ'Z'W^½)' + I, with the products PIRLS needs."""

    ldL2: float

    def LamtUt_dot(self, v: np.ndarray) -> np.ndarray:
        """Λ'Z'W^½ v (q) for v of length N, or (q×k) for v of shape (N, k)."""
        raise NotImplementedError

    def solve_L(self, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def solve_Lt(self, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def solve_A(self, b: np.ndarray) -> np.ndarray:
        return self.solve_Lt(self.solve_L(b))


class DiagonalFactor(Factor):
    """Single scalar term: A is diagonal, `L = diag(√A_jj)` (§4.3: `sd_j = 1 / L_jj`)."""

    def __init__(self, theta: float, z: np.ndarray, sqrtW: np.ndarray, fac: np.ndarray, q: int):
        self.fac, self.q = fac, q
        self.m = theta * z * sqrtW                       # the nonzeros of Λ'Z'W^½
        self.Ldiag = np.sqrt(1.0 + np.bincount(fac, self.m * self.m, minlength=q))
        self.ldL2 = 2.0 * float(np.sum(np.log(self.Ldiag)))

    def LamtUt_dot(self, v):
        if v.ndim == 1:
            return np.bincount(self.fac, self.m * v, minlength=self.q)
        return np.stack([np.bincount(self.fac, self.m * v[:, k], minlength=self.q)
                         for k in range(v.shape[1])], axis=1)

    def solve_L(self, b):
        return b / (self.Ldiag if b.ndim == 1 else self.Ldiag[:, None])

    solve_Lt = solve_L


class DenseFactor(Factor):
    """General terms: dense lower Cholesky of A."""

    def __init__(self, LamtZt: sp.csc_matrix, sqrtW: np.ndarray):
        self.LamtUt = (LamtZt @ sp.diags(sqrtW)).tocsr()
        A = (self.LamtUt @ self.LamtUt.T).toarray()
        A[np.diag_indices_from(A)] += 1.0
        self.L = la.cholesky(A, lower=True)
        self.ldL2 = 2.0 * float(np.sum(np.log(np.diag(self.L))))

    def LamtUt_dot(self, v):
        return self.LamtUt @ v

    def solve_L(self, b):
        return la.solve_triangular(self.L, b, lower=True)

    def solve_Lt(self, b):
        return la.solve_triangular(self.L, b, lower=True, trans="T")


def make_factor(model, theta: np.ndarray, sqrtW: np.ndarray) -> Factor:
    if model.scalar_single:
        return DiagonalFactor(float(theta[0]), model.zvals, sqrtW, model.fac, model.q)
    return DenseFactor(model.LamtZt(theta), sqrtW)


class Decomposition:
    """L, RZX and RX at one set of weights (`updateXwts` + `updateDecomp`, §3.1)."""

    def __init__(self, model, theta: np.ndarray, sqrtW: np.ndarray):
        self.sqrtW = sqrtW
        self.L = make_factor(model, theta, sqrtW)
        self.V = model.X * sqrtW[:, None]
        self.RZX = self.L.solve_L(self.L.LamtUt_dot(self.V))
        try:
            self.RX = la.cholesky(self.V.T @ self.V - self.RZX.T @ self.RZX, lower=False)
        except la.LinAlgError:
            raise PirlsError("Downdated VtV is not positive definite") from None
        self.ldRX2 = 2.0 * float(np.sum(np.log(np.diag(self.RX))))

    @property
    def ldL2(self) -> float:
        return self.L.ldL2

    def solve_u(self, wz: np.ndarray) -> np.ndarray:
        """u-only step: u = A⁻¹ Λ'Z'W z (`solveU`), `wz` = W^½ z."""
        return self.L.solve_A(self.L.LamtUt_dot(wz))

    def solve_joint(self, wz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint step (`solve`): the penalized weighted least squares for (u, β), blockwise."""
        cu = self.L.solve_L(self.L.LamtUt_dot(wz))
        rhs = self.V.T @ wz - self.RZX.T @ cu
        beta = la.solve_triangular(self.RX, la.solve_triangular(self.RX, rhs, trans="T"))
        u = self.L.solve_Lt(cu - self.RZX @ beta)
        return u, beta

    def unsc(self) -> np.ndarray:
        """(RX'RX)⁻¹: the unscaled fixed-effects covariance (`pp$unsc()`, §7)."""
        RXinv = la.solve_triangular(self.RX, np.eye(self.RX.shape[0]))
        return RXinv @ RXinv.T
