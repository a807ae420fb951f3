"""Formula + data → the matrices of a GLMM, as lme4's `glFormula` builds them (spec §1, §2.1).

X: R's `model.matrix` (terms by degree, treatment contrasts unless a lower-order term is missing,
interaction columns with the first variable varying fastest), then lme4's rank check (§1.4).
Zt: one level-major KhatriRao block per random term, terms reordered by decreasing number of
levels with lme4's tie quirk (§1.1); Λ(θ) from the column-major lower triangles (§1.2).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import ModelError
from .formula import Formula, Node, RandomTerm, Term, evaluate, parse_formula

RANK_TOL = 1e-7


@dataclass(frozen=True)
class Response:
    kind: str                      # numeric | logical | factor | cbind
    y: np.ndarray | None = None
    successes: np.ndarray | None = None
    failures: np.ndarray | None = None
    levels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReTerm:
    group: str
    levels: tuple[str, ...]
    cnms: tuple[str, ...]
    codes: np.ndarray = field(repr=False)
    mm: np.ndarray = field(repr=False)
    label: str = ""                # the term as lme4 names it in messages, e.g. "(1 + x | g)"

    @property
    def nc(self) -> int:
        return len(self.cnms)

    @property
    def nl(self) -> int:
        return len(self.levels)


@dataclass
class Design:
    formula: Formula
    response: Response
    X: np.ndarray
    X_names: list[str]
    X_dropped: list[str]
    offset: np.ndarray
    prior_weights: np.ndarray
    Zt: sp.csc_matrix
    reterms: list[ReTerm]
    Gp: np.ndarray
    theta0: np.ndarray
    lower: np.ndarray
    theta_names: list[str]
    messages: list[str]
    warnings: list[str]

    @property
    def N(self) -> int:
        return self.X.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def q(self) -> int:
        return self.Zt.shape[0]

    @property
    def factor_codes(self) -> list[np.ndarray]:
        return [t.codes for t in self.reterms]

    def T(self, theta) -> list[np.ndarray]:
        """The lower-triangular T_i of each term, filled column-major from theta (§1.2)."""
        theta = np.asarray(theta, float)
        out, k = [], 0
        for t in self.reterms:
            T = np.zeros((t.nc, t.nc))
            for j in range(t.nc):
                for i in range(j, t.nc):
                    T[i, j] = theta[k]
                    k += 1
            out.append(T)
        return out

    def Lambdat(self, theta) -> sp.csc_matrix:
        """Λ(θ)' = blockdiag(I_nl ⊗ T_i)' (§1.2)."""
        return sp.block_diag([sp.kron(sp.identity(t.nl), sp.csc_matrix(T.T))
                              for t, T in zip(self.reterms, self.T(theta))], format="csc")


# ---------------------------------------------------------------------------------------------
def build_design(formula, data: pd.DataFrame, weights=None, offset=None) -> Design:
    f = parse_formula(formula)
    if not isinstance(data, pd.DataFrame):
        raise ModelError("data must be a pandas DataFrame")
    N = len(data)
    if N == 0:
        raise ModelError("the data frame has no rows")
    used = f.columns() | ({weights} if isinstance(weights, str) else set()) | ({offset} if isinstance(offset, str) else set())
    _check_columns(data, used)
    messages, warnings = [], []

    response = _response(f.response, data)
    X_full, names = _model_matrix(f.intercept, _ordered_terms(f), data)
    X, names, dropped = _drop_rank_deficient(X_full, names)
    if dropped:
        k = len(dropped)
        messages.append(f"fixed-effect model matrix is rank deficient so dropping {k} "
                        + ("column / coefficient" if k == 1 else "columns / coefficients"))
    if _bad_scales(X):
        warnings.append("Some predictor variables are on very different scales: consider rescaling")

    off = np.zeros(N)
    for o in f.offsets:
        off = off + _evaluated(o, data)
    if offset is not None:
        off = off + _vector_arg(offset, data, N, "offset")
    pw = np.ones(N) if weights is None else _vector_arg(weights, data, N, "weights")
    bad = np.flatnonzero(pw < 0)
    if bad.size:
        raise ModelError(f"negative weights not allowed: weights row {bad[0]} is {pw[bad[0]]:g}")

    reterms = [_reterm(r, data) for r in f.random]
    if not reterms:
        raise ModelError("no random effects terms specified in formula (add a term like (1 | group))")
    nl = np.array([t.nl for t in reterms])
    if np.any(np.diff(nl) > 0):
        order = np.argsort(nl, kind="stable")[::-1]       # rev(order(nl)): ties reversed (§1.1)
        reterms = [reterms[i] for i in order]
    for t in reterms:
        if t.nl < 2:
            raise ModelError(f"grouping factor '{t.group}' has only {t.nl} level; glmer needs > 1 "
                             "(lme4: grouping factors must have > 1 sampled level)")
        if t.nl * t.nc > N:                 # checkZdims with glmer's allow.n = TRUE (§1.1)
            raise ModelError(f"number of observations (={N}) < number of random effects "
                             f"(={t.nl * t.nc}) for term {t.label}; "
                             "the random-effects parameters are probably unidentifiable")
    Zt = sp.vstack([_zt_block(t) for t in reterms], format="csc")
    Gp = np.concatenate([[0], np.cumsum([t.nl * t.nc for t in reterms])])
    theta0, lower, tnames = [], [], []
    for t in reterms:
        for j in range(t.nc):
            for i in range(j, t.nc):
                theta0.append(1.0 if i == j else 0.0)
                lower.append(0.0 if i == j else -np.inf)
                tnames.append(f"{t.group}.{t.cnms[i]}" if i == j else f"{t.group}.{t.cnms[i]}.{t.cnms[j]}")
    return Design(f, response, X, names, dropped, off, pw, Zt, reterms, Gp, np.array(theta0),
                  np.array(lower), tnames, messages, warnings)


def _check_columns(data: pd.DataFrame, used: set[str]) -> None:
    for col in sorted(used):
        if col not in data.columns:
            raise ModelError(f"column {col!r} is not in the data (columns: {', '.join(map(str, data.columns))})")
        if (data.columns == col).sum() > 1:
            raise ModelError(f"column {col!r} appears {(data.columns == col).sum()} times in the data")
        s = data[col]
        missing = s.isna().to_numpy()
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            missing |= ~np.isfinite(s.to_numpy(dtype=float, na_value=np.nan))
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise ModelError(f"column {col!r} has a missing or infinite value at row {row}; "
                             "remove or impute such rows first (lme4 would silently drop NA rows)")


def _vector_arg(arg, data, N, what) -> np.ndarray:
    if isinstance(arg, str) and not pd.api.types.is_numeric_dtype(data[arg]):
        raise ModelError(f"{what} column {arg!r} is not numeric")
    try:
        v = data[arg].to_numpy(dtype=float) if isinstance(arg, str) else np.asarray(arg, float)
    except (TypeError, ValueError):
        raise ModelError(f"{what} must be a column name or one number per row") from None
    if v.shape != (N,):
        raise ModelError(f"{what} must have one value per row ({N}), not shape {v.shape}")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ModelError(f"{what} has a missing or infinite value at row {bad[0]}")
    return v


def _evaluated(node: Node, data: pd.DataFrame) -> np.ndarray:
    """`evaluate(node, data)`, or ModelError naming the expression and the first row where it is
    NaN or infinite (log(0), a division by zero, …)."""
    v = evaluate(node, data)
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ModelError(f"{node.deparse()} is NaN or infinite at row {bad[0]} ({v[bad[0]]:g})")
    return v


def _is_categorical(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def _levels(s: pd.Series) -> tuple[list[str], np.ndarray]:
    """R's factor(): categories in order (unused dropped), else sorted unique values."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.remove_unused_categories()
        return [str(c) for c in cats.cat.categories], cats.cat.codes.to_numpy().astype(np.intp)
    values = s.to_numpy()
    uniq, codes = np.unique(values, return_inverse=True)
    if pd.api.types.is_bool_dtype(s):
        names = ["FALSE" if not u else "TRUE" for u in uniq]
    elif pd.api.types.is_numeric_dtype(s):
        names = [f"{u:.15g}" for u in uniq]
    else:
        names = [str(u) for u in uniq]
    return names, codes.astype(np.intp)


def _response(node: Node, data: pd.DataFrame) -> Response:
    if node.op == "call":                                    # cbind(successes, failures)
        return Response("cbind", successes=_evaluated(node.args[1], data), failures=_evaluated(node.args[2], data))
    s = data[node.value]
    if pd.api.types.is_bool_dtype(s):
        return Response("logical", y=s.to_numpy(dtype=float))
    if isinstance(s.dtype, pd.CategoricalDtype):               # binomial: y != levels(y)[1] (§2.1)
        levels, codes = _levels(s)
        return Response("factor", y=(codes != 0).astype(float), levels=tuple(levels))
    if _is_categorical(s):                                     # lme4's mkRespMod refuses text
        raise ModelError(f"response {node.value!r} holds text; glmer needs a numeric response "
                         "(or, for binomial, a factor or logical one)")
    return Response("numeric", y=s.to_numpy(dtype=float))


# ---- X --------------------------------------------------------------------------------------
def _ordered_terms(f: Formula) -> list[Term]:
    """R's terms(): variables in order of first appearance, terms by degree then formula order."""
    order: dict[str, int] = {}
    for t in f.terms:
        for v in t.variables:
            order.setdefault(v.deparse(), len(order))
    terms = [Term(tuple(sorted(t.variables, key=lambda v: order[v.deparse()]))) for t in f.terms]
    return sorted(terms, key=lambda t: len(t.variables))


def _columns_of(var: Node, data: pd.DataFrame, full: bool):
    """(names, matrix) of one variable: numeric → itself; factor → contrasts or indicators."""
    if var.op == "name" and _is_categorical(data[var.value]):
        levels, codes = _levels(data[var.value])
        if len(levels) < 2:                       # R's model.matrix, after dropping unused levels
            raise ModelError(f"contrasts can be applied only to factors with 2 or more levels: column "
                             f"'{var.value}' has {len(levels)} level(s) in the data ({', '.join(levels)})")
        keep = levels if full else levels[1:]
        offset = 0 if full else 1
        M = (codes[:, None] == (np.arange(len(keep)) + offset)[None, :]).astype(float)
        return [f"{var.deparse()}{lv}" for lv in keep], M
    return [var.deparse()], _evaluated(var, data)[:, None]


def _model_matrix(intercept: bool, terms: list[Term], data: pd.DataFrame):
    N = len(data)
    names, cols = (["(Intercept)"], [np.ones((N, 1))]) if intercept else ([], [])
    present = {()} if intercept else set()
    for t in terms:
        key = tuple(v.deparse() for v in t.variables)
        tnames, tcols = [""], np.ones((N, 1))
        for v in t.variables:
            margin = tuple(k for k in key if k != v.deparse())
            vnames, vcols = _columns_of(v, data, full=margin not in present)
            # the first variable varies fastest
            tnames = [f"{a}:{b}" if a else b for b in vnames for a in tnames]
            tcols = np.einsum("ni,nj->nji", tcols, vcols).reshape(N, -1)
        present.add(key)
        names += tnames
        cols.append(tcols)
    X = np.hstack(cols) if cols else np.zeros((N, 0))
    return X, names


def _drop_rank_deficient(X: np.ndarray, names: list[str]):
    """LINPACK dqrdc2's limited pivoting (tol 1e-7): a column whose norm, after projecting out
    the columns kept before it, falls below tol × its own norm moves to the end (§1.4)."""
    if X.shape[1] == 0:
        return X, names, []
    keep, Q = [], np.zeros((X.shape[0], 0))
    for j in range(X.shape[1]):
        x = X[:, j]
        norm = np.linalg.norm(x)
        r = x - Q @ (Q.T @ x)
        r = r - Q @ (Q.T @ r)
        rn = np.linalg.norm(r)
        if norm == 0 or rn < RANK_TOL * norm:
            continue
        keep.append(j)
        Q = np.column_stack([Q, r / rn])
    dropped = [names[j] for j in range(X.shape[1]) if j not in keep]
    return X[:, keep], [names[j] for j in keep], dropped


def _bad_scales(X: np.ndarray) -> bool:
    """lme4's checkScaleX: among non-0/1 columns, |log sd| or log sd ratios beyond log(1000)."""
    cont = [j for j in range(X.shape[1]) if not np.all(np.isin(X[:, j], (0.0, 1.0)))]
    if not cont:
        return False
    with np.errstate(over="ignore"):               # R's sd() of a column × 1e300 is Inf too
        sd = X[:, cont].std(axis=0, ddof=1)
    sd = sd[sd > 0]
    if sd.size == 0:
        return False
    logsd = np.log(sd)
    return bool(np.any(np.abs(logsd) > np.log(1000)) or (logsd.max() - logsd.min()) > np.log(1000))


# ---- random effects -------------------------------------------------------------------------
def _reterm(r: RandomTerm, data: pd.DataFrame) -> ReTerm:
    """Levels of the grouping factor (R's `a:b` interaction: first factor slowest, unused
    combinations dropped) and the term's raw model matrix."""
    codes, levels = np.zeros(len(data), np.intp), [""]
    for g in r.group:
        lv, c = _levels(data[g])
        codes = codes * len(lv) + c
        levels = [f"{a}:{b}" if a else b for a in levels for b in lv]
    used, codes = np.unique(codes, return_inverse=True)
    mm, cnms = _model_matrix(r.intercept, _ordered_terms_of(r.terms), data)
    return ReTerm(r.group_name, tuple(levels[i] for i in used), tuple(cnms), codes.astype(np.intp), mm,
                  r.to_r())


def _ordered_terms_of(terms) -> list[Term]:
    return sorted(terms, key=lambda t: len(t.variables))


def _zt_block(t: ReTerm) -> sp.csc_matrix:
    """KhatriRao(fac2sparse(g), t(mm)): row (level·nc + j) holds mm[n, j] for obs n in level."""
    N = len(t.codes)
    rows = (t.codes[:, None] * t.nc + np.arange(t.nc)[None, :]).ravel()
    cols = np.repeat(np.arange(N), t.nc)
    return sp.csc_matrix((t.mm.ravel(), (rows, cols)), shape=(t.nl * t.nc, N))
