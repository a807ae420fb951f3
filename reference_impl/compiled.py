"""PIRLS compiled with numba, for models whose A = Λ'Z'WZΛ + I is block diagonal with small
blocks (spec §3, issue 15).

At harness sizes (tens to a few thousand rows) an evaluation in numpy is about a hundred array
calls per PIRLS iteration, each costing more in overhead than in arithmetic; here one call runs
the whole loop. It covers one scalar term (q blocks 1×1), one vector term (nl blocks nc×nc) and
several terms with q ≤ DENSE_Q (A as one dense block), up to MAX_N rows; larger crossed models
stay with CHOLMOD, larger data with numpy's vectorized path.

`pirls._pirls` is the specification: `pirls_loop` is that loop step for step in both modes
(§3.1–§3.2, exact mode's Newton steps and stopping rules included), the element functions are
`families.py`'s (§2.2) on one number, and `tests/test_compiled.py` holds the two paths to each
other. With `GLMM_REFERENCE_KERNELS=numpy` in the environment, or without numba, only numpy's
path runs.

Λ'Z' arrives column by column (`Model.LamtZt_columns`): observation i's column has k entries,
rows `rows[i]` and values `vals[i]`, all in one diagonal block of A.
"""
from __future__ import annotations

import math
import os

import numpy as np

try:
    import numba
except ImportError:                       # numpy's path only
    numba = None

ENABLED = numba is not None and os.environ.get("GLMM_REFERENCE_KERNELS", "numba") != "numpy"
# rows up to which the loop pays: beyond, numpy's SIMD exp and log over whole arrays beat glibc's
# one number at a time (one scalar term, per evaluation: 0.78x numpy's time at N = 1000, 1.24x
# at 3000, 1.6x at 100 000)
MAX_N = 2000
DENSE_Q = 100          # several terms: A factored densely up to this q (q³/3 flops; CHOLMOD is faster beyond ~110)

LINKS = ("logit", "probit", "cloglog", "cauchit", "log", "identity", "inverse", "sqrt", "1/mu^2")
FAMILIES = ("binomial", "poisson", "Gamma", "inverse.gaussian", "gaussian")
LOGIT, PROBIT, CLOGLOG, CAUCHIT, LOG, IDENTITY, INVERSE, SQRT, INVSQUARE = range(len(LINKS))
BINOMIAL, POISSON, GAMMA, INVGAUSS, GAUSSIAN = range(len(FAMILIES))
# the loop's outcomes; pirls.py raises lme4's error for each
OK, NAN, HALVINGS, MAXIT, DOWNDATE = range(5)

EPS = float(np.finfo(float).eps)
ONE_M_EPS = 1.0 - EPS
DBL_MAX = float(np.finfo(float).max)
SQRT1_2 = math.sqrt(0.5)
SQRT_2PI = math.sqrt(2.0 * math.pi)
MAXSTEPHALFIT = 20
# exact mode's Newton step: the observed information, floored at this fraction of Fisher's W
# (pirls.newton_weights; 0.1 and 0.001 measured no better on gen:thorough:284, 915, 1330)
NEWTON_FLOOR = 0.01


def blocks(model) -> tuple[int, int] | None:
    """(block size, number of blocks) of A when the compiled loop takes this model, else None."""
    if not ENABLED or model.N > MAX_N:
        return None
    if model.single_term:
        term = model.design.reterms[0]
        return term.nc, term.nl
    if model.q <= DENSE_Q:
        return model.q, 1
    return None


def asynchronous(error: SystemError) -> BaseException:
    """What a compiled call raised as `SystemError`: an asynchronous exception (a signal
    handler's KeyboardInterrupt, a time limit's PyThreadState_SetAsyncExc) that arrived while numba
    turned the result into Python objects comes back as the cause of a SystemError; that cause,
    else the error itself."""
    cause = error.__cause__
    while cause is not None:
        if not isinstance(cause, Exception):
            return cause
        cause = cause.__cause__
    return error


def codes(family) -> tuple[int, int]:
    return FAMILIES.index(family.name), LINKS.index(family.link.name)


def _jit(f):
    return numba.njit(cache=True, error_model="numpy", nogil=True)(f) if numba is not None else f


# --- families and links on one number (families.py, spec §2.2) -------------------------------

@_jit
def _dlogis(eta):
    e = np.exp(-abs(eta))
    return e / (1.0 + e) ** 2


@_jit
def _ndtr(x):
    """scipy's (cephes') ndtr."""
    z = x * SQRT1_2
    if abs(z) < SQRT1_2:
        return 0.5 + 0.5 * math.erf(z)
    y = 0.5 * math.erfc(abs(z))
    return 1.0 - y if z > 0 else y


@_jit
def linkinv(link, eta):
    if link == LOGIT:
        p = 1.0 / (1.0 + np.exp(np.minimum(-eta, 709.0)))
        return np.maximum(np.minimum(p, ONE_M_EPS), EPS)
    if link == PROBIT:
        return np.minimum(_ndtr(eta), ONE_M_EPS)
    if link == CLOGLOG:
        return np.maximum(np.minimum(-math.expm1(-np.exp(eta)), ONE_M_EPS), EPS)
    if link == CAUCHIT:
        return np.minimum(0.5 + math.atan(eta) / math.pi, ONE_M_EPS)
    if link == LOG:
        return np.maximum(np.exp(eta), EPS)
    if link == IDENTITY:
        return eta
    if link == INVERSE:
        return 1.0 / eta
    if link == SQRT:
        return eta * eta
    return 1.0 / np.sqrt(eta)


@_jit
def mu_eta(link, eta):
    if link == LOGIT:
        return np.maximum(_dlogis(eta), EPS)
    if link == PROBIT:
        return np.exp(-0.5 * eta * eta) / SQRT_2PI
    if link == CLOGLOG:
        return np.maximum(np.exp(eta - np.exp(eta)), EPS)
    if link == CAUCHIT:
        return 1.0 / (math.pi * (1.0 + eta * eta))
    if link == LOG:
        return np.maximum(np.exp(eta), EPS)
    if link == IDENTITY:
        return 1.0
    if link == INVERSE:
        return -1.0 / (eta * eta)
    if link == SQRT:
        return 2.0 * eta
    return -1.0 / (2.0 * eta ** 1.5)


@_jit
def mu_eta2(link, eta):
    if link == LOGIT:
        e = np.exp(-abs(eta))
        return math.copysign(e * (1.0 - e) / ((1.0 + e) * (1.0 + e) * (1.0 + e)), -eta)
    if link == PROBIT:
        return -eta * (np.exp(-0.5 * eta * eta) / SQRT_2PI)
    if link == CLOGLOG:
        return np.exp(eta - np.exp(eta)) * -math.expm1(eta)
    if link == CAUCHIT:
        return -2.0 * eta / (math.pi * (1.0 + eta * eta) ** 2)
    if link == LOG:
        return np.exp(eta)
    if link == IDENTITY:
        return 0.0
    if link == INVERSE:
        return 2.0 / eta ** 3
    if link == SQRT:
        return 2.0
    return 0.75 / eta ** 2.5


@_jit
def variance(fam, mu):
    if fam == BINOMIAL:
        return np.maximum(mu * (1.0 - mu), EPS)
    if fam == POISSON:
        return mu
    if fam == GAMMA:
        return mu * mu
    if fam == INVGAUSS:
        return mu ** 3
    return 1.0


@_jit
def dvariance(fam, mu):
    if fam == BINOMIAL:
        return 1.0 - 2.0 * mu
    if fam == POISSON:
        return 1.0
    if fam == GAMMA:
        return 2.0 * mu
    if fam == INVGAUSS:
        return 3.0 * mu * mu
    return 0.0


@_jit
def _ylogy(y, m):
    if y == 0.0:                 # R's y_log_y: 0 whatever m, and no log
        return 0.0
    return y * np.log(y / m)


@_jit
def devresid(fam, y, mu, pw):
    if fam == BINOMIAL:
        return (_ylogy(y, mu) + _ylogy(1.0 - y, 1.0 - mu)) * (2.0 * pw)
    if fam == POISSON:
        return 2.0 * pw * (_ylogy(y, mu) - (y - mu))
    if fam == GAMMA:
        return -2.0 * pw * (np.log(y / mu) - (y - mu) / mu)
    if fam == INVGAUSS:
        return pw * (y - mu) ** 2 / (y * mu * mu)
    return pw * (y - mu) ** 2


# --- one working iteration's pieces (pirls.py, spec §2.3, §3.1) --------------------------------

@_jit
def _weights(fam, link, eta, mu, pw):
    """W^½ = mu.eta √(pw / V(mu)), and mu.eta, V (pirls `weights`)."""
    n = len(eta)
    mueta, V, sqrtW = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        mueta[i] = mu_eta(link, eta[i])
        V[i] = variance(fam, mu[i])
        sqrtW[i] = mueta[i] * np.sqrt(pw[i] / V[i])
    return mueta, V, sqrtW


_NO_WEIGHTS = (np.empty(0), np.empty(0), np.empty(0))


@_jit
def _step(fam, link, newton, y, pw, eta, mu, weights):
    """W^½ and working residual of the next step: Fisher's, or exact mode's safeguarded Newton
    (pirls `step`, `newton_weights`); `weights` are `_weights` at (η, μ), as `_response` gives
    them in exact mode."""
    mueta, V, sqrtW = weights
    r = (y - mu) / mueta
    if not newton:
        return sqrtW, r
    n = len(eta)
    sw, rn = np.empty(n), np.empty(n)
    for i in range(n):
        W = sqrtW[i] * sqrtW[i]
        Wobs = W - pw[i] * (y[i] - mu[i]) * (mu_eta2(link, eta[i]) / V[i]
                                             - mueta[i] * mueta[i] * dvariance(fam, mu[i]) / (V[i] * V[i]))
        Wstep = Wobs if Wobs > NEWTON_FLOOR * W else NEWTON_FLOOR * W
        if not np.isfinite(Wstep):
            return sqrtW, r
        sw[i], rn[i] = np.sqrt(Wstep), r[i] * (W / Wstep)
    return sw, rn


@_jit
def _all_finite(a):
    for x in a:
        if not np.isfinite(x):
            return False
    return True


@_jit
def _maxabs(a):
    """max |a_i| (0 for none), NaN if any is."""
    m = 0.0
    for x in a:
        if np.isnan(x):
            return np.nan
        m = max(m, abs(x))
    return m


@_jit
def _factor(rows, vals, sqrtW, b, nb):
    """Lower Cholesky factors of A's nb diagonal blocks (b×b), ldL2, and False where a pivot is
    not positive (lme4: `PIRLS loop resulted in NaN value`)."""
    L = np.zeros((nb, b, b))
    N, k = rows.shape
    for i in range(N):
        for j in range(k):
            l = rows[i, j] // b
            rj = rows[i, j] - l * b
            mj = vals[i, j] * sqrtW[i]
            for t in range(k):
                c = rows[i, t] - l * b
                if c <= rj:
                    L[l, rj, c] += mj * (vals[i, t] * sqrtW[i])
    logdiag = 0.0
    for l in range(nb):
        for j in range(b):
            L[l, j, j] += 1.0
        for j in range(b):
            s = L[l, j, j]
            for t in range(j):
                s -= L[l, j, t] * L[l, j, t]
            if not s > 0.0:
                return L, np.nan, False
            d = np.sqrt(s)
            L[l, j, j] = d
            logdiag += np.log(d)
            for i in range(j + 1, b):
                s = L[l, i, j]
                for t in range(j):
                    s -= L[l, i, t] * L[l, j, t]
                L[l, i, j] = s / d
    return L, 2.0 * logdiag, True


@_jit
def _LamtUt_dot(rows, vals, sqrtW, V, q):
    """Λ'Z'W^½ V (q×m) for V of shape N×m."""
    N, k = rows.shape
    out = np.zeros((q, V.shape[1]))
    for i in range(N):
        for j in range(k):
            m = vals[i, j] * sqrtW[i]
            for c in range(V.shape[1]):
                out[rows[i, j], c] += m * V[i, c]
    return out


@_jit
def _solve_L(L, B):
    """L⁻¹ B, block by block, B (q×m) overwritten."""
    nb, b, _ = L.shape
    for l in range(nb):
        o = l * b
        for c in range(B.shape[1]):
            for a in range(b):
                s = B[o + a, c]
                for t in range(a):
                    s -= L[l, a, t] * B[o + t, c]
                B[o + a, c] = s / L[l, a, a]
    return B


@_jit
def _solve_Lt(L, B):
    """L'⁻¹ B, block by block, B (q×m) overwritten."""
    nb, b, _ = L.shape
    for l in range(nb):
        o = l * b
        for c in range(B.shape[1]):
            for a in range(b - 1, -1, -1):
                s = B[o + a, c]
                for t in range(a + 1, b):
                    s -= L[l, t, a] * B[o + t, c]
                B[o + a, c] = s / L[l, a, a]
    return B


@_jit
def _gram(A):
    """A'A, summed in row order (no BLAS: the same digits on every CPU)."""
    n, m = A.shape
    G = np.empty((m, m))
    for a in range(m):
        for c in range(a, m):
            s = 0.0
            for i in range(n):
                s += A[i, a] * A[i, c]
            G[a, c] = G[c, a] = s
    return G


@_jit
def _dot(A, x):
    """A x, summed in column order (A' x as `_dot(A.T, x)`)."""
    n, m = A.shape
    out = np.empty(n)
    for i in range(n):
        s = 0.0
        for j in range(m):
            s += A[i, j] * x[j]
        out[i] = s
    return out


@_jit
def _RX(V, RZX):
    """Upper RX with RX'RX = V'V − RZX'RZX, and False where a pivot is ≤ 0 (lme4: `Downdated VtV
    is not positive definite`)."""
    M = _gram(V) - _gram(RZX)
    p = M.shape[0]
    R = np.zeros((p, p))
    for j in range(p):
        s = M[j, j]
        for t in range(j):
            s -= R[t, j] * R[t, j]
        if s <= 0.0:                       # NaN passes, as in Eigen's LLT: PIRLS's NaN test decides
            return R, False
        d = np.sqrt(s)
        R[j, j] = d
        for i in range(j + 1, p):
            s = M[j, i]
            for t in range(j):
                s -= R[t, j] * R[t, i]
            R[j, i] = s / d
    return R, True


@_jit
def _solve_normal(L, RZX, RX, bu, bbeta):
    """(u, β) of the penalized normal equations, blockwise (factor.Decomposition.solve_normal)."""
    cu = _solve_L(L, bu.copy().reshape(-1, 1))[:, 0].copy()
    rhs = bbeta - _dot(RZX.T, cu)
    p = len(rhs)
    beta = np.empty(p)
    for j in range(p):                     # RX' y = rhs
        s = rhs[j]
        for t in range(j):
            s -= RX[t, j] * beta[t]
        beta[j] = s / RX[j, j]
    for j in range(p - 1, -1, -1):         # RX β = y
        s = beta[j]
        for t in range(j + 1, p):
            s -= RX[j, t] * beta[t]
        beta[j] = s / RX[j, j]
    u = _solve_Lt(L, (cu - _dot(RZX, beta)).reshape(-1, 1))[:, 0].copy()
    return u, beta


@_jit
def _Zb(rows, vals, u):
    N, k = rows.shape
    out = np.empty(N)
    for i in range(N):
        s = 0.0
        for j in range(k):
            s += vals[i, j] * u[rows[i, j]]
        out[i] = s
    return out


@_jit
def _linpred(offset, X, beta, u_only, rows, vals, u):
    """offset (+ Xβ) + ZΛu (pirls `linpred`)."""
    zb = _Zb(rows, vals, u)
    return offset + zb if u_only else offset + _dot(X, beta) + zb


@_jit
def _response(fam, link, exact, y, pw, eta, u):
    """μ, Σ devResid and the penalized deviance at η (pirls `pdev_at`: exact mode NaN outside the
    family's domain), and in exact mode the `_weights` at η that decided the domain (the next
    step's, or the kept factor's; in lme4 mode none: its next step computes them)."""
    n = len(eta)
    mu = np.empty(n)
    drsum = 0.0
    for i in range(n):
        mu[i] = linkinv(link, eta[i])
        drsum += devresid(fam, y[i], mu[i], pw[i])
    if not exact:
        return mu, drsum, drsum + np.dot(u, u), _NO_WEIGHTS
    weights = _weights(fam, link, eta, mu, pw)
    if not _all_finite(weights[2]):
        return mu, drsum, np.nan, weights
    return mu, drsum, drsum + np.dot(u, u), weights


@_jit
def _rounding(change, pdev):
    return change <= 1e-10 * (1.0 + abs(pdev))


@_jit
def _settled(olddelu, u, olddelb, beta, oldpdev, pdev, decrement):
    step = max(_maxabs(u - olddelu), _maxabs(beta - olddelb))
    scale = 1.0 + max(_maxabs(u), _maxabs(beta))
    return (step <= 1e-12 * scale or abs(oldpdev - pdev) <= 8 * EPS * abs(pdev)
            or (pdev >= oldpdev and _rounding(decrement, pdev)))


@_jit
def pirls_loop(fam, link, exact, u_only, tol, maxit, y, pw, X, offset, eta, u, beta, rows, vals, b, nb,
               it0, oldpdev, drsum):
    """`pirls._pirls` compiled, from iteration `it0` (0, or a cut run's count: then `oldpdev` and
    `drsum` are its last iterate's, else DBL_MAX and NaN). Returns (status, u, β, η, μ, W^½ of
    the factor kept, its ldL2, Σ devResid, iterations, trace pdevs, trace halvings, max |η| per
    step, stuck)."""
    N, p = X.shape
    q = b * nb
    mu = np.empty(N)
    for i in range(N):
        mu[i] = linkinv(link, eta[i])
    if u_only:
        beta = np.zeros(p)
    nit = maxit - it0
    tr_pdev, tr_half, etas = np.empty(nit + 1), np.zeros(nit + 1, np.int64), np.empty(nit + 1)
    ntr, netas = 0, 0
    converged, stuck, pdev, decrement = False, False, np.nan, 0.0
    kept, ldL2 = np.empty(0), np.nan
    L = np.zeros((0, 0, 0))
    w = _NO_WEIGHTS                        # `_weights` at (η, μ) once computed
    status, it = OK, it0
    for it in range(it0, maxit):
        if len(w[0]) != N:
            w = _weights(fam, link, eta, mu, pw)
        olddelu, olddelb, oldeta, oldmu, olddrsum, oldw = u, beta, eta, mu, drsum, w
        sqrtW, r = _step(fam, link, exact and it > 0, y, pw, eta, mu, w)
        if not _all_finite(sqrtW):
            status = NAN
            break
        L, ldL2, ok = _factor(rows, vals, sqrtW, b, nb)
        if not ok:
            status = NAN
            break
        kept = sqrtW
        V = X * sqrtW.reshape(-1, 1)
        RZX, RX = np.zeros((q, p)), np.zeros((p, p))
        if not exact or not u_only:        # lme4 forms RX in every iteration (`check`)
            RZX = _solve_L(L, _LamtUt_dot(rows, vals, sqrtW, V, q))
            RX, ok = _RX(V, RZX)
            if not ok:
                status = DOWNDATE
                break
        if exact and it > 0 and not u_only:
            wr = sqrtW * r
            du, dbeta = _solve_normal(L, RZX, RX, _LamtUt_dot(rows, vals, sqrtW, wr.reshape(-1, 1), q)[:, 0] - u,
                                      _dot(V.T, wr))
            u, beta = u + du, beta + dbeta
        else:
            wz = sqrtW * ((eta - offset) + r)
            bu = _LamtUt_dot(rows, vals, sqrtW, wz.reshape(-1, 1), q)
            if u_only:
                u = _solve_Lt(L, _solve_L(L, bu))[:, 0].copy()
            else:
                u, beta = _solve_normal(L, RZX, RX, bu[:, 0].copy(), _dot(V.T, wz))
        eta = _linpred(offset, X, beta, u_only, rows, vals, u)
        mu, drsum, pdev, w = _response(fam, link, exact, y, pw, eta, u)
        if exact:
            d = sqrtW * (eta - oldeta)
            decrement = np.dot(d, d) + np.dot(u - olddelu, u - olddelu)
            converged = _settled(olddelu, u, olddelb, beta, oldpdev, pdev, decrement)
        else:
            converged = abs((oldpdev - pdev) / pdev) < tol
        if converged:
            tr_pdev[ntr], tr_half[ntr] = pdev, 0
            ntr += 1
            if exact:
                stuck = not _rounding(decrement, oldpdev)
                if it > 0 and not _rounding(pdev - oldpdev, oldpdev):
                    u, beta, eta, mu, drsum, pdev, w = olddelu, olddelb, oldeta, oldmu, olddrsum, oldpdev, oldw
            break
        halvings = 0
        while (np.isnan(pdev) or pdev > oldpdev) and halvings < MAXSTEPHALFIT:
            u = (olddelu + u) / 2.0
            if not u_only:
                beta = (olddelb + beta) / 2.0
            eta = _linpred(offset, X, beta, u_only, rows, vals, u)
            mu, drsum, pdev, w = _response(fam, link, exact, y, pw, eta, u)
            halvings += 1
        tr_pdev[ntr], tr_half[ntr] = pdev, halvings
        ntr += 1
        if exact:
            etas[netas] = _maxabs(eta)
            netas += 1
        if exact and it > 0 and not pdev <= oldpdev:
            stuck = not _rounding(decrement, oldpdev)
            u, beta, eta, mu, drsum, pdev, w = olddelu, olddelb, oldeta, oldmu, olddrsum, oldpdev, oldw
            converged = True
            break
        if np.isnan(pdev):
            status = NAN
            break
        if pdev - oldpdev > tol:
            status = HALVINGS
            break
        oldpdev = pdev
    if status == OK and not converged:
        status = MAXIT
    if status == OK and exact:             # the factor of the final weights
        kept = w[2]
        L, ldL2, ok = _factor(rows, vals, kept, b, nb)
        if not ok:
            status = NAN
    return (status, u, beta, eta, mu, kept, ldL2, drsum, it + 1, tr_pdev[:ntr], tr_half[:ntr],
            etas[:netas], stuck)
