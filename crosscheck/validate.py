"""Up-front checks of a case's values against its specification, for the command line and case files.

`Case.make` checks names: the formula grammar, family and link, that the columns exist, nAGQ in
0..100. `check_case` checks the values a fit would refuse only late or obscurely (lme4: "Value 1.25
out of range (0, 1)" for trials < successes) or not at all (lme4 drops NA rows silently): each
problem is a `CaseError` naming the column, row or parameter, so `crosscheck compare` and `repro`
end with exit code 2 before anything is fitted. The rules are lme4 1.1-31's (spec §1–§2), written
out here rather than borrowed from the reference, which the comparison exists to test; only the
formula grammar and the family/link table are shared.

`compare_case` does not call it: through the Python API both sides' refusals are compared
(`both-refused`, `r-refused`, `python-refused`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from reference_impl.errors import ModelError
from reference_impl.families import make_family
from reference_impl.formula import Formula, Node, RandomTerm, evaluate, parse_formula

from .case import Case, CaseError

# the response values each family accepts (binomial: rows with zero prior weight are exempt, as
# `binomial()$initialize` sets their y to 0 first)
RESPONSE_RANGE = {
    "binomial": (lambda y: (y >= 0) & (y <= 1), "in [0, 1] (0/1 or a proportion)"),
    "poisson": (lambda y: (y >= 0) & (y == np.round(y)), "a whole number >= 0"),
    "Gamma": (lambda y: y > 0, "> 0"),
    "inverse.gaussian": (lambda y: y > 0, "> 0"),
    ("gaussian", "log"): (lambda y: y > 0, "> 0 (gaussian with the log link)"),
    ("gaussian", "inverse"): (lambda y: y != 0, "non-zero (gaussian with the inverse link)"),
}


def check_case(case: Case) -> Case:
    """`case` itself, or CaseError naming the first problem a fit of it would meet."""
    data, f = case.data, parse_formula(case.formula)
    if len(data) == 0:
        raise CaseError("the data have no rows")
    for column in sorted(f.columns() | {c for c in (case.weights, case.offset) if c}):
        _complete(data, column)
    try:
        family = make_family(case.family, case.link)
    except ModelError as e:
        raise CaseError(str(e)) from None
    for node in _expressions(f):
        _finite(node, data)
    weights = _weights(case)
    if case.offset is not None and not _is_numeric(data[case.offset]):
        raise CaseError(f"offset column {case.offset!r} is not numeric")
    _response(f.response, data, case.family, family.link.name, weights)
    _random_terms(f, data, case.nagq)
    return case


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype)


def _complete(data: pd.DataFrame, column: str) -> None:
    """No NA, NaN or ±Inf in a column the model uses."""
    s = data[column]
    bad = s.isna().to_numpy()
    if _is_numeric(s) and not pd.api.types.is_bool_dtype(s):
        bad |= ~np.isfinite(s.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise CaseError(f"column {column!r} has {rows.size} missing or infinite value(s), the first at "
                        f"row {rows[0]} ({s.iloc[rows[0]]}); lme4 would drop NA rows silently and "
                        "refuse Inf: remove or impute them first")


def _expressions(f: Formula) -> list[Node]:
    """Every arithmetic expression of the formula: transformed terms, offsets, cbind() sides."""
    variables = [v for t in f.terms for v in t.variables]
    variables += [v for r in f.random for t in r.terms for v in t.variables]
    sides = list(f.response.args[1:]) if f.response.op == "call" else []
    return [v for v in variables if v.op != "name"] + list(f.offsets) + sides


def _finite(node: Node, data: pd.DataFrame) -> np.ndarray:
    try:
        values = evaluate(node, data)
    except ModelError as e:
        raise CaseError(str(e)) from None
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise CaseError(f"{node.deparse()} is NaN or infinite at row {bad[0]} ({values[bad[0]]:g})")
    return values


def _weights(case: Case) -> np.ndarray:
    if case.weights is None:
        return np.ones(len(case.data))
    s = case.data[case.weights]
    if not _is_numeric(s):
        raise CaseError(f"weights column {case.weights!r} is not numeric")
    w = s.to_numpy(dtype=float)
    negative = np.flatnonzero(w < 0)
    if negative.size:
        raise CaseError(f"weights column {case.weights!r} is negative at row {negative[0]} "
                        f"({w[negative[0]]:g}); prior weights must be >= 0")
    return w


def _response(node: Node, data: pd.DataFrame, family: str, link: str, weights: np.ndarray) -> None:
    """lme4's mkRespMod and `family$initialize` rules (spec §2.1), and checkResponse."""
    if node.op == "call":                                               # cbind(successes, failures)
        if family != "binomial":
            raise CaseError(f"a cbind(successes, failures) response is for family 'binomial' only, "
                            f"not {family!r}")
        sides = [_finite(side, data) for side in node.args[1:]]
        for what, side, values in zip(("successes", "failures"), node.args[1:], sides):
            negative = np.flatnonzero(values < 0)
            if negative.size:
                i = negative[0]
                raise CaseError(f"cbind() {what} {side.deparse()} is negative at row {i} ({values[i]:g})"
                                + ("; are there fewer trials than successes?" if what == "failures" else ""))
        rows = np.column_stack(sides)
    else:
        name, s = node.value, data[node.value]
        if isinstance(s.dtype, pd.CategoricalDtype):                   # binomial: y != first level
            if family != "binomial":
                raise CaseError(f"response {name!r} is a factor; family {family!r} needs a numeric response")
            rows = s.cat.codes.to_numpy()[:, None]
        elif not _is_numeric(s):
            raise CaseError(f"response {name!r} holds text; glmer needs a numeric response (or, for "
                            "binomial, a factor or logical one)")
        else:
            y = s.to_numpy(dtype=float)
            ok, wanted = RESPONSE_RANGE.get(family) or RESPONSE_RANGE[(family, link)]
            exempt = weights == 0 if family == "binomial" else False
            bad = np.flatnonzero(~(ok(y) | exempt))
            if bad.size:
                raise CaseError(f"response {name!r} must be {wanted} for family {family!r}: "
                                f"row {bad[0]} has {y[bad[0]]:g}")
            rows = y[:, None]
    if len(np.unique(rows, axis=0)) < 2:
        first = ", ".join(f"{v:g}" for v in rows[0])
        raise CaseError(f"the response {node.deparse()} is constant (every row: {first}); "
                        "glmer refuses a constant response")


def _random_terms(f: Formula, data: pd.DataFrame, nagq: tuple[int, ...]) -> None:
    """At least one term; each grouping factor with 2 or more levels and at most one random effect
    per row (checkNlevels, checkZdims with glmer's allow.n); nAGQ > 1 only for one scalar term."""
    if not f.random:
        raise CaseError("the formula has no random-effects term such as (1 | group); glmer needs one")
    N = len(data)
    for r in f.random:
        levels = len(data[list(r.group)].drop_duplicates())
        if levels < 2:
            raise CaseError(f"grouping factor {r.group_name!r} has {levels} level; glmer needs at least 2")
        columns = int(r.intercept) + len(r.terms)             # at least: a factor adds more
        if levels * columns > N:
            raise CaseError(f"term {r.to_r()} has {levels} levels × {columns} column(s) = "
                            f"{levels * columns} random effects for {N} rows; glmer allows at most "
                            "one per row")
    agq = [k for k in nagq if k > 1]
    if agq and not (len(f.random) == 1 and _scalar(f.random[0], data)):
        terms = ", ".join(r.to_r() for r in f.random)
        raise CaseError(f"nAGQ = {agq[0]} needs a single random-effects term with one column, like "
                        f"(1 | g); this formula has {terms} (use nAGQ 0 or 1)")


def _scalar(r: RandomTerm, data: pd.DataFrame) -> bool:
    """The term's model matrix has one column: (1 | g), or (0 + x | g) with x numeric."""
    if r.intercept:
        return not r.terms
    return len(r.terms) == 1 and all(v.op != "name" or _is_numeric(data[v.value])
                                     for v in r.terms[0].variables)
