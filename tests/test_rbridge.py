"""The R bridge and r_scripts/glmer.R against real R (reference values: spec §10)."""

import subprocess
import threading
import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import binom

from crosscheck.rbridge import R_SCRIPTS, RBridgeError, RTimeout, check_column_types
from crosscheck.result import FitResult
from reference_impl import FormulaError

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
REL = 1e-8


def close(actual, expected, rel=REL):
    return np.asarray(actual) == pytest.approx(np.asarray(expected), rel=rel, abs=0)


@pytest.fixture(scope="module")
def cbpp(R):
    return R.dataset("lme4", "cbpp")


@pytest.fixture(scope="module")
def fit1(R, cbpp):
    return R.fit(cbpp, CBPP, "binomial", nAGQ=1)


# -- conversion -------------------------------------------------------------------------------

def test_r_values_convert_to_plain_python(R):
    assert R.eval("NULL") is None
    assert R.eval("1 + 1") == 2.0 and isinstance(R.eval("1 + 1"), float)
    assert R.eval("3L") == 3 and R.eval("TRUE") is True and R.eval("'a'") == "a"
    assert R.eval("c(a = 1, b = 2)") == {"a": 1.0, "b": 2.0}
    np.testing.assert_array_equal(R.eval("I(3)"), [3.0])
    assert R.eval("I(3L)").dtype == np.int64
    assert R.eval("c('x', NA)") == ["x", None]
    assert R.eval("list(a = 1, b = list(2L, 'z'))") == {"a": 1.0, "b": [2, "z"]}
    np.testing.assert_array_equal(R.eval("matrix(1:6, 2)"), [[1, 3, 5], [2, 4, 6]])
    f = R.eval("factor(c('b', NA, 'a'), levels = c('b', 'a'))")
    assert list(f.categories) == ["b", "a"] and list(f.codes) == [0, -1, 1]
    df = R.eval("data.frame(x = 1:2, s = c('u', 'v'))")
    assert list(df.columns) == ["x", "s"] and df["s"].tolist() == ["u", "v"]
    m = R.eval("Matrix::sparseMatrix(i = c(1, 3), j = c(2, 2), x = c(5, 6), dims = c(3, 3))")
    assert isinstance(m, sp.csc_matrix)
    np.testing.assert_array_equal(m.toarray(), [[0, 5, 0], [0, 0, 0], [0, 6, 0]])


MIXED = ("list(a = 1, b = I(c(2, NA)), f = factor(c('x', NA)), o = factor('b', ordered = TRUE), "
         "d = data.frame(p = 1:2, q = c('u', NA)), r = data.frame(z = 1, row.names = 'w'), "
         "m = matrix(c('a', 'b'), 1), n = NULL, i = c(1L, NA), l = c(TRUE, NA), s = NA_character_, "
         "v = c(x = 1, y = NA), e = numeric(0), u = list(1, 'a', list()), "
         "z = Matrix::sparseMatrix(i = 1, j = 2, x = 5, dims = c(2, 2)))")


def _both_ways(R, code: str):
    """`code`'s value converted from `cc_flat`'s vectors and node by node."""
    from crosscheck import rbridge

    with R._converting():
        raw = R._guarded("cc_eval", R._parse(code))
        return rbridge._converted(raw), rbridge._to_python(raw)


def _assert_same(a, b, path="value"):
    assert type(a) is type(b), path
    if isinstance(a, (dict, list)):
        assert (list(a) if isinstance(a, dict) else len(a)) == (list(b) if isinstance(b, dict) else len(b)), path
        for k, x, y in (((k, a[k], b[k]) for k in a) if isinstance(a, dict) else zip(range(len(a)), a, b)):
            _assert_same(x, y, f"{path}[{k!r}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), path
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, pd.Categorical):
        assert a.equals(b) and list(a.categories) == list(b.categories) and a.ordered == b.ordered, path
    elif sp.issparse(a):
        assert a.shape == b.shape and (a != b).nnz == 0, path
    else:
        assert a == b or (a != a and b != b), path


@pytest.mark.parametrize("code", [MIXED, f"cc_glmer_fit(lme4::cbpp, '{CBPP}', 'binomial', keep_devfun = TRUE)"],
                         ids=["every-kind", "fit-record"])
def test_values_cross_as_four_vectors_as_they_do_node_by_node(R, code):
    """`cc_flat` (bridge.R) and `_Flat` give what converting each node gives, to the type."""
    flat, by_node = _both_ways(R, code)
    _assert_same(flat, by_node)


def test_a_value_without_a_flat_form_converts_node_by_node(R):
    """Complex numbers have no flat form: cc_flat says so (NULL), the node-by-node path converts."""
    import rpy2.rinterface as ri

    from crosscheck import rbridge

    with R._converting():
        assert rbridge._call_raw("cc_flat", R._guarded("cc_eval", R._parse("list(1i)"))) is ri.NULL
    assert R.eval("list(a = 1i)") == {"a": 1j}


def test_python_values_convert_to_r(R):
    R.assign("m", np.arange(6.0).reshape(2, 3))
    assert R.eval("identical(m, matrix(c(0, 3, 1, 4, 2, 5), 2))") is True
    assert R.call("is.list", {"a": [1, 2], "b": None}) is True
    assert R.call("paste", "a", "b", sep="-") == "a-b"
    assert R.call("class", [1, 2]) == "integer" and R.call("class", [1.5, 2]) == "numeric"


def test_categorical_levels_survive_in_given_order(R):
    df = pd.DataFrame({
        "f": pd.Categorical(["b", "a", None, "c"], categories=["c", "a", "b", "unused"]),
        "o": pd.Categorical(["lo", "hi", "lo", "hi"], categories=["lo", "hi"], ordered=True),
        "n": pd.array([1, None, 3, 4], dtype="Int64"),
        "s": ["p", None, "q", "r"],
        "x": [0.5, np.nan, 1.5, 2.5],
    })
    R.assign("df", df)
    assert R.eval("levels(df$f)") == ["c", "a", "b", "unused"]
    assert R.eval("as.character(df$f)") == ["b", "a", None, "c"]
    assert R.eval("is.ordered(df$o) && identical(levels(df$o), c('lo', 'hi'))") is True
    assert R.eval("vapply(df, function(c) class(c)[1], '')") == {
        "f": "factor", "o": "ordered", "n": "integer", "s": "character", "x": "numeric"}
    pd.testing.assert_frame_equal(R.eval("df")[["f", "o"]], df[["f", "o"]])


def test_categories_that_collide_in_r_are_refused(R):
    # 1 and "1" are distinct pandas categories but the same R level.
    df = pd.DataFrame({"g": pd.Categorical([1, "1"])})
    with pytest.raises(RBridgeError, match="'g'"):
        R.assign("bad", df)


def test_changed_column_types_are_detected(R):
    df = pd.DataFrame({"f": pd.Categorical(["b", "a"], categories=["b", "a"]), "x": [1.0, 2.0]})
    R.assign("df2", df)
    check_column_types(df, R.call("cc_column_types", "df2"))
    R.eval("df2$x <- as.character(df2$x)")
    with pytest.raises(RBridgeError, match="'x'"):
        check_column_types(df, R.call("cc_column_types", "df2"))
    R.eval("df2$x <- as.numeric(df2$x); df2$f <- factor(as.character(df2$f))")  # alphabetical
    with pytest.raises(RBridgeError, match="'f'"):
        check_column_types(df, R.call("cc_column_types", "df2"))


def test_columns_without_r_type_are_refused(R):
    with pytest.raises(RBridgeError, match="'when'"):
        R.assign("bad", pd.DataFrame({"when": pd.to_datetime(["2020-01-01"])}))


def test_r_failures_outside_records_raise(R):
    with pytest.raises(RBridgeError, match="boom"):
        R.eval("stop('boom')")
    with pytest.raises(RBridgeError, match="parse"):
        R.eval("1 +")
    with pytest.raises(RBridgeError, match="not a package/data set name"):
        R.dataset("lme4", "cbpp; q()")


def test_calls_from_other_threads(R):
    results = []
    threads = [threading.Thread(target=lambda k=k: results.append(R.call("sum", [k, 1.0])))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [1.0, 2.0, 3.0, 4.0]


def test_timeout_interrupts_sleep_and_r_stays_usable(R):
    start = time.monotonic()
    with pytest.raises(RTimeout):
        R.call("Sys.sleep", 30, timeout=1)
    assert time.monotonic() - start < 5
    assert R.eval("1 + 2") == 3.0


def test_timeout_interrupts_r_loop(R):
    R.eval("spin <- function() { s <- 0; repeat s <- s + 1 }")
    with pytest.raises(RTimeout):
        R.call("spin", timeout=0.5)
    assert R.call("sum", [1, 2], timeout=5) == 3


# -- glmer fits (spec §10) --------------------------------------------------------------------

def test_cbpp_laplace_matches_reference(fit1):
    assert fit1["ok"] and fit1["warnings"] == [] and fit1["messages"] == []
    v = fit1["value"]
    assert close(v["theta"]["herd.(Intercept)"], 0.642069927729179)
    assert close(list(v["fixef"].values()), [-1.398342864471145, -0.991924974975739,
                                             -1.128216215943340, -1.579745413649192])
    assert list(v["fixef"]) == ["(Intercept)", "period2", "period3", "period4"]
    assert close(v["minus2loglik_raw"], 184.053132779061)
    assert v["objective"] == v["minus2loglik_raw"]
    assert close(v["deviance"], 73.4742835742572)
    assert close(list(v["se"].values()), [0.231214048099463, 0.303150644541277,
                                          0.322830153225840, 0.422049159426317])
    assert close(list(v["se_rx"].values()), [0.227852370150887, 0.305347508855581,
                                             0.326001186439926, 0.428701866597525])
    assert "differ by >1e-04" in v["se_rx_warnings"][0]
    assert close(v["vcov"][0], [0.0534599360385409, -0.0254346289308176,
                                -0.0253489138948358, -0.0254102128915789])
    assert close([v[k] for k in ("ldL2", "ussq", "wrss", "ldRX2", "aic_resp")],
                 [16.89693050772732, 9.72521115920488, 63.06742749494108,
                  9.63151404578412, 157.430991112128])
    assert close(v["u"][:3], [0.9183258879254, -0.4658267164272, 0.6321208823260], rel=1e-10)
    assert close(v["fitted"][:3], [0.3081647241383582, 0.1417733702969584, 0.1259855551689356])
    assert close(v["ranef"]["herd"]["condvar"][0, 0, :3],
                 [0.1212599062017, 0.1335869662025, 0.0883799210716], rel=1e-10)
    assert (v["optimizer"], v["feval"], v["conv_opt"], v["converged"]) == (
        "Nelder_Mead", 285, 0, True)
    assert close(np.diag(v["derivs"]["Hessian"]), [65.502243041992, 48.43449783325,
                                                   26.25506973267, 22.645717620850,
                                                   12.391887664795], rel=1e-10)
    assert v["X"].shape == (56, 4) and v["Zt"].shape == (15, 56)
    assert v["versions"]["lme4"] == "1.1-31"


def saturated_constant(cbpp):
    """-2 x saturated binomial log-likelihood, from the data alone (spec §4.3)."""
    y, n = cbpp["incidence"].to_numpy(), cbpp["size"].to_numpy()
    return -2 * binom.logpmf(y, n, y / n).sum()


def test_cbpp_agq_reports_raw_scale_and_lme4s_saturated_constant(R, cbpp):
    rec = R.fit(cbpp, CBPP, "binomial", nAGQ=9)
    v = rec["value"]
    assert close(saturated_constant(cbpp), 83.9567075378712, rel=1e-12)
    assert close(v["objective"], 100.010036066812)
    assert close(v["minus2loglik_raw"], 100.010036066812)
    assert close(v["saturated_lme4"], saturated_constant(cbpp), rel=1e-12)
    assert close(v["theta"]["herd.(Intercept)"], 0.647517861083275)
    assert v["nAGQ"] == 9 and v["feval"] == 184


def test_timeout_interrupts_a_fit(R, cbpp, fit1):
    verbagg = R.dataset("lme4", "VerbAgg")
    with pytest.raises(RTimeout):
        R.fit(verbagg, "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "binomial",
              timeout=0.3)
    assert R.fit(cbpp, CBPP, "binomial")["value"]["fixef"] == fit1["value"]["fixef"]


def test_constant_response_is_an_error_record(R):
    data = pd.DataFrame({"y": np.ones(10), "g": pd.Categorical(list("aabbccddee"))})
    rec = R.fit(data, "y ~ 1 + (1 | g)", "binomial")
    assert rec["ok"] is False and rec["value"] is None
    assert "Response is constant" in rec["error"]
    failed = FitResult.from_r(rec)
    assert not failed.ok and "Response is constant" in failed.error


def test_convergence_warnings_are_data(R, cbpp):
    rec = R.fit(cbpp, CBPP, "binomial", control={"optCtrl": {"maxfun": 10}})
    assert rec["ok"]
    v = rec["value"]
    assert v["converged"] is False and v["conv_opt"] == 4
    assert v["messages"] == rec["warnings"]
    assert any(m.startswith("convergence code 1 from bobyqa") for m in v["messages"])
    assert any(m.startswith("Model failed to converge") for m in v["messages"])


def test_unknown_columns_and_families_are_error_records(R, cbpp):
    assert "'sz'" in R.fit(cbpp, "incidence ~ period + (1 | herd)", "poisson",
                           weights="sz")["error"]
    assert "unsupported family" in R.fit(cbpp, CBPP, "quasi")["error"]
    with pytest.raises(FormulaError, match="function 'system'"):
        R.fit(cbpp, "y ~ system('true')", "binomial")            # refused before R sees it
    # glmer.R's own check, for callers that reach it directly
    assert "not a two-sided formula" in R.call("cc_glmer_fit", data=cbpp, formula="system('true')",
                                               family="binomial")["error"]


def test_fit_result_from_r(fit1):
    res = FitResult.from_r(fit1)
    assert res.ok and res.side == "r" and res.theta_names == ["herd.(Intercept)"]
    assert res.theta == [fit1["value"]["theta"]["herd.(Intercept)"]]
    assert res.nAGQ == 1 and res.optimizer == "Nelder_Mead" and res.converged
    assert "X" in res.extra and "fixef" not in res.extra
    assert list(res.se_rx) == list(res.fixef) and res.u.shape == (15,)


# -- deviance functions (spec §9, §10) --------------------------------------------------------

POINTS = np.array([[0.64, -1.4, -1, -1.1, -1.6], [1.2, -1, -0.5, -1.5, -2],
                   [0.1, -1.3, -1, -1.1, -1.5]])


@pytest.mark.parametrize("nAGQ, values", [
    (1, [184.067233271407, 197.810241771453, 197.635070812124]),
    (9, [100.025415765308, 113.600383058788, 113.678752986516]),
])
def test_devfun_values_at_spec_points(R, cbpp, nAGQ, values):
    created = R.devfun(cbpp, CBPP, "binomial", nAGQ=nAGQ)["value"]
    assert close(created["start"], [0.641838555348909, -1.360475727626307, -0.976173236093890,
                                    -1.111072783643023, -1.559675683772963])
    assert close(created["xst"], [0.02, 0.0455158045799846, 0.0606572349982271,
                                  0.0647020737902957, 0.0848903819043271])
    assert close(created["lp0"][:3], [-0.803543632933663, -1.779716869027553,
                                      -1.914616416576686])
    evals = R.devfun_eval(created["id"], POINTS)["value"]
    states = [e["value"] for e in evals]
    assert close([s["value"] for s in states], values)
    if nAGQ == 1:
        for s in states:
            assert s["value"] == pytest.approx(s["ldL2"] + s["ussq"] + s["aic"], rel=1e-10)
    assert not np.array_equal(states[0]["u"], states[1]["u"])  # copies, not lme4's live vectors
    assert R.devfun_drop(created["id"])["ok"]
    assert not R.devfun_eval(created["id"], POINTS[0])["ok"]


def test_devfun_nagq0(R, cbpp):
    created = R.devfun(cbpp, CBPP, "binomial", nAGQ=0)["value"]
    assert created["xst"] is None and list(created["start"]) == [1.0]
    assert close(created["lp0"][:3], [-0.715042772463632, -1.649976882252590,
                                      -1.786270153152871])
    states = [e["value"] for e in R.devfun_eval(created["id"], [[1.0], [0.3], [0.64]])["value"]]
    assert close([s["value"] for s in states], [186.723145113705, 189.373187156876,
                                                184.108798976847])
    assert close(states[0]["beta"], [-1.404588623004283, -0.934934109788958,
                                     -1.071227380689239, -1.512466025918154])
    R.devfun_drop(created["id"])


@pytest.mark.parametrize("nAGQ", [0, 1, 9])
def test_a_fit_keeps_the_deviance_function_devfunonly_builds(R, cbpp, nAGQ):
    """`keep_devfun`: glmer's own run, its deviance function noted as glmer(devFunOnly = TRUE)
    returns it (the harness then builds none a second time). The fit is the same to the last
    bit; the description (lp0, stage-2 start, NM steps, bounds) too; and both functions give the
    same values at glmer's optimum and the spec's points."""
    plain = R.fit(cbpp, CBPP, "binomial", nAGQ=nAGQ)["value"]
    keeping = R.fit(cbpp, CBPP, "binomial", nAGQ=nAGQ, keep_devfun=True)["value"]
    kept = keeping.pop("devfun")
    built = R.devfun(cbpp, CBPP, "binomial", nAGQ=nAGQ)["value"]
    for name in ("fixef", "theta", "objective", "fitted", "vcov"):
        assert np.array_equal(np.asarray(list(plain[name].values()) if isinstance(plain[name], dict) else plain[name]),
                              np.asarray(list(keeping[name].values()) if isinstance(keeping[name], dict) else keeping[name])), name
    assert kept["id"] != built["id"]
    for name in ("nAGQ", "lp0", "start", "xst", "lower", "X_names"):
        assert np.array_equal(np.asarray(kept[name], dtype=object), np.asarray(built[name], dtype=object)), name
    optimum = [*plain["theta"].values(), *(plain["fixef"].values() if nAGQ else [])]
    points = [optimum] + ([list(p) for p in POINTS] if nAGQ else [[0.3], [1.0]])
    values = [[e["value"]["value"] for e in R.devfun_eval(f["id"], points)["value"]] for f in (kept, built)]
    assert close(values[0], values[1], rel=1e-12) and close(values[0][0], plain["objective"], rel=1e-10)
    for f in (kept, built):
        assert R.devfun_drop(f["id"])["ok"]


# -- glmmTMB, data sets, scripts --------------------------------------------------------------

def test_glmmtmb_referee_agrees_with_laplace(R, cbpp, fit1):
    rec = R.fit_glmmtmb(cbpp, CBPP, "binomial")
    tmb = FitResult.from_r(rec, side="glmmtmb")
    assert tmb.ok and tmb.converged and tmb.theta_names == ["herd.(Intercept)"]
    assert tmb.theta[0] == pytest.approx(0.642069927729179, rel=1e-3)
    assert tmb.minus2loglik_raw == pytest.approx(184.053132779061, abs=1e-2)
    assert list(tmb.fixef.values()) == pytest.approx(list(fit1["value"]["fixef"].values()),
                                                    abs=1e-3)


def test_datasets(R):
    vb = R.dataset("lme4", "VerbAgg")
    assert list(vb["r2"].cat.categories) == ["N", "Y"] and len(vb) == 7584
    assert len(R.dataset("mlmRev", "Contraception")) == 1934


def test_glmer_script_runs_standalone():
    out = subprocess.run(["Rscript", str(R_SCRIPTS / "glmer.R"), "--help"],
                         capture_output=True, text=True, check=True)
    assert "usage" in out.stdout
