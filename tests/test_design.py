"""Formula → X, Zt, theta layout against lme4's `glFormula` (spec §1)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reference_impl.design import build_design
from reference_impl.errors import FormulaError, ModelError
from reference_impl.formula import parse_formula


def frame(seed=3, N=60):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "y": rng.integers(0, 2, N).astype(float),
        "x": rng.normal(size=N), "z": rng.uniform(1, 3, N),
        "f": pd.Categorical(rng.choice(["lo", "mid", "hi"], N), categories=["mid", "lo", "hi"]),
        "a": pd.Categorical([f"a{i % 5}" for i in range(N)]),
        "b": pd.Categorical([f"b{(i * 7) % 10}" for i in range(N)]),
        "c": pd.Categorical([f"c{(i * 3) % 5}" for i in range(N)]),
        "g": pd.Categorical([f"g{i // 6:02d}" for i in range(N)]),
        "sub": pd.Categorical([f"s{i % 3}" for i in range(N)]),
    })


R_DESIGN = """local({{
  gf <- lme4::glFormula({formula}, data = cc_test_design, family = binomial)
  rt <- gf$reTrms
  list(X = unname(gf$X), X_names = I(as.character(colnames(gf$X))), Zt = rt$Zt, theta = I(rt$theta), lower = I(rt$lower),
       groups = I(names(rt$cnms)), cnms = I(unname(unlist(rt$cnms))), Gp = I(rt$Gp),
       levels = lapply(rt$flist, function(f) I(levels(f))),
       theta_names = I(names(lme4::getME(suppressWarnings(suppressMessages(
         lme4::glmer({formula}, data = cc_test_design, family = binomial, nAGQ = 0))), "theta"))))
}})"""

FORMULAS = [
    "y ~ x + (1 | g)",
    "y ~ f * x + I(x^2) + log(z + 1) + (1 + x | g)",
    "y ~ 0 + f + f:x + (1 + x || g)",
    "y ~ x + (1 | a) + (1 | b) + (1 | c)",        # 5, 10, 5 levels: reordered b, c, a (tie reversed)
    "y ~ x + (1 | a) + (1 | c)",                  # 5, 5: no reordering
    "y ~ x + (1 | g/sub)",
    "y ~ x + (1 | a:sub) + (1 | a)",
    "y ~ -1 + (1 | g)",                           # no fixed effects: X is N×0
]


@pytest.fixture(scope="module")
def data(R):
    d = frame()
    R.assign("cc_test_design", d)
    return d


@pytest.mark.parametrize("formula", FORMULAS)
def test_design_equals_glFormula(R, data, formula):
    r = R.eval(R_DESIGN.format(formula=formula))
    d = build_design(formula, data)
    assert d.X_names == list(r["X_names"])
    np.testing.assert_allclose(d.X, np.asarray(r["X"]).reshape(d.X.shape), rtol=1e-14, atol=0)
    assert [t.group for t in d.reterms] == list(r["groups"])
    assert [c for t in d.reterms for c in t.cnms] == list(r["cnms"])
    assert list(d.Gp) == list(r["Gp"])
    for t in d.reterms:
        assert list(t.levels) == list(r["levels"][t.group])
    assert (d.Zt != r["Zt"]).nnz == 0
    np.testing.assert_array_equal(d.theta0, r["theta"])
    np.testing.assert_array_equal(d.lower, r["lower"])
    assert d.theta_names == list(r["theta_names"])


def test_lambda_layout_matches_lme4(R, data):
    """Λ' blocks [[T11, T21], [0, T22]] per level, theta column-major (§1.2)."""
    formula = "y ~ x + (1 + x | g)"
    theta = np.array([1.5, -0.3, 0.7])
    R.assign("cc_test_theta", theta)
    r = R.eval(f"local({{gf <- lme4::glFormula({formula}, data = cc_test_design, family = binomial); "
               "rt <- gf$reTrms; L <- rt$Lambdat; L@x <- cc_test_theta[rt$Lind]; L})")
    assert abs(build_design(formula, data).Lambdat(theta) - r).max() == 0


def test_rank_deficient_column_dropped_with_lme4_message(R, data):
    d = data.assign(x2=2 * data["x"])
    R.assign("cc_test_rank", d)
    r = R.eval("local({m <- NULL; withCallingHandlers(gf <- lme4::glFormula(y ~ x + x2 + z + (1 | g), "
               "data = cc_test_rank, family = binomial), message = function(e) {m <<- conditionMessage(e); "
               "invokeRestart('muffleMessage')}); list(X_names = I(colnames(gf$X)), msg = trimws(m))})")
    des = build_design("y ~ x + x2 + z + (1 | g)", d)
    assert des.X_names == list(r["X_names"])
    assert des.X_dropped == ["x2"]
    assert des.messages == [r["msg"]]


@pytest.mark.parametrize("formula, needle", [
    ('y ~ x + system("ls") + (1 | g)', "system"),
    ("y ~ x + eval(parse(text = 'q()')) + (1 | g)", "eval"),
    ("y ~ x; q() + (1 | g)", "'q'"),
    ("y ~ x; x + (1 | g)", "';'"),
    ('y ~ `system`("ls") + (1 | g)', "cannot be called"),        # a backticked name is a column
    ("y ~ x + (1 | g", "')'"),
    ("y ~ x$a + (1 | g)", "'$'"),
    ("y <- x", "'<'"),
    ("~ x + (1 | g)", "unexpected"),
])
def test_formula_outside_grammar_is_refused(formula, needle):
    with pytest.raises(FormulaError) as err:
        parse_formula(formula)
    assert needle in str(err.value)


def test_formula_round_trips_to_canonical_r():
    f = parse_formula("cbind(s, n - s) ~ x*f + offset(log(z)) + (1 + x || g)")
    assert f.to_r() == "cbind(s, n - s) ~ 1 + x + f + x:f + offset(log(z)) + (1 | g) + (0 + x | g)"
    assert parse_formula(f.to_r()).to_r() == f.to_r()


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.drop(columns="x"), "'x'"),
    (lambda d: d.assign(x=d["x"].where(d.index != 7)), "row 7"),
    (lambda d: d.iloc[:0], "no rows"),
])
def test_bad_data_names_column_and_row(data, edit, needle):
    with pytest.raises(ModelError) as err:
        build_design("y ~ x + (1 | g)", edit(data))
    assert needle in str(err.value)
