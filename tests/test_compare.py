"""The comparison layer against the real glmer (issue 3's "must show").

Tolerances are the package defaults (crosscheck/tolerances.py, measured in docs/tolerances.md)
unless a test states its own.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import reference_impl.design
import reference_impl.fit
import reference_impl.objective
from crosscheck.case import Case, CaseError
from crosscheck.compare import compare_case
from crosscheck.datasets import readme_example, simulated
from crosscheck.diagnose import reasons_agree
from crosscheck.noise import WITHIN
from crosscheck.sides import RSide

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
CLI = [sys.executable, "-m", "crosscheck.cli"]


def run_cli(*args, cwd=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def cbpp(R):
    return R.dataset("lme4", "cbpp")


def by_key(doc):
    return {(r["nAGQ"], r["mode"]): r for r in doc["results"]}


def diff(result, quantity):
    return next(d for d in result["diffs"] if d["quantity"] == quantity)


# -- through the command line ------------------------------------------------------------------
def test_cli_cbpp_both_modes(tmp_path):
    """cbpp: every lme4-mode result matches; exact mode's −2logLik is below glmer's at nAGQ = 1
    (glmer keeps the factor of the penultimate PIRLS weights, spec §3.2) and never above it."""
    p = run_cli("compare", "--data", "R:lme4::cbpp", "--formula", CBPP, "--family", "binomial",
                "--nagq", "0,1,9", "--mode", "both", "--format", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc) == {"versions", "case", "results"}
    for key in ("python", "numpy", "scipy", "rpy2", "R", "R:lme4", "R:Matrix"):
        assert doc["versions"][key]
    results = by_key(doc)
    assert set(results) == {(k, m) for k in (0, 1, 9) for m in ("lme4", "exact")}
    for (k, mode), r in results.items():
        assert r["verdict"] == "match" and r["stage_failed"] is None, (k, mode)
        assert {"fixef", "theta", "minus2loglik", "deviance", "se", "messages"} <= set(r["python"])
        assert all(set(d) >= {"quantity", "python", "r", "abs", "rel", "tol", "ok"} for d in r["diffs"])
        assert all(isinstance(d["noise"], float) for d in r["diffs"]), (k, mode)   # the default: --noise all
    laplace = results[(1, "exact")]
    bias = laplace["python"]["minus2loglik"] - laplace["r"]["minus2loglik"]
    assert -1e-3 < bias < -5e-4                       # measured: −5.69e-4 (README)
    assert diff(laplace, "minus2loglik")["abs"] == pytest.approx(-bias, rel=1e-12)
    assert diff(laplace, "minus2loglik_excess")["python"] <= diff(laplace, "minus2loglik_excess")["r"]
    lme4 = results[(1, "lme4")]
    assert diff(lme4, "minus2loglik")["abs"] < 1e-10
    assert lme4["r"]["minus2loglik"] == pytest.approx(184.053132779061, rel=1e-12)


def test_cli_readme_example_from_csv_text_output(tmp_path):
    path = tmp_path / "readme.csv"
    readme_example().to_csv(path, index=False)
    p = run_cli("compare", "--data", str(path), "--formula", "y ~ x1 + (1 | subject)",
                "--family", "binomial", "--nagq", "0,1,5", "--mode", "both", "--noise", "failing")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("lme4 mode · match") == 3 and p.stdout.count("exact mode · match") == 3
    assert "6 of 6 comparisons passed" in p.stdout


def test_cli_tolerance_overrides_change_the_verdict(tmp_path):
    """pyproject [tool.crosscheck.tolerances] and --tol reach the policy (the latter last). Exact
    mode's objective is 3e-6 relative from glmer's (lme4's unconverged PIRLS, which the noise band
    would allow: `--noise none` leaves the tolerance alone to judge)."""
    args = ["compare", "--data", "R:lme4::cbpp", "--formula", CBPP, "--family", "binomial",
            "--nagq", "1", "--mode", "exact", "--format", "json", "--noise", "none"]
    (tmp_path / "pyproject.toml").write_text(
        '[tool.crosscheck.tolerances]\n"exact.objective" = {rel = 1e-7, abs = 0}\n')
    strict = run_cli(*args, cwd=tmp_path)
    assert strict.returncode == 1, strict.stderr
    assert by_key(json.loads(strict.stdout))[(1, "exact")]["verdict"] == "objective-mismatch"
    relaxed = run_cli(*args, "--tol", "exact.objective=1e-4", cwd=tmp_path)
    assert relaxed.returncode == 0, relaxed.stderr
    bad = run_cli(*args, "--tol", "lme4.thetta=1")
    assert bad.returncode == 2 and "unknown quantity 'thetta'" in bad.stderr


def test_formula_injection_is_refused_before_r_runs(tmp_path):
    marker = tmp_path / "pwned"
    p = run_cli("compare", "--data", "R:lme4::cbpp", "--family", "binomial",
                "--formula", f'incidence ~ period + system("touch {marker}") + (1 | herd)')
    assert p.returncode == 2 and "function 'system'" in p.stderr and "Traceback" not in p.stderr
    case = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial").to_json()
    case["formula"] = f'y ~ x1 + (1 | subject) + eval(parse(text = "file.create(\'{marker}\')"))'
    (tmp_path / "evil.json").write_text(json.dumps(case))
    p = run_cli("compare", "--case", str(tmp_path / "evil.json"))
    assert p.returncode == 2 and "function 'eval'" in p.stderr
    assert not marker.exists()


def test_repro_scripts_reproduce_both_sides(tmp_path, R):
    case = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=(1,), name="readme")
    case.save(tmp_path / "readme.json")
    p = run_cli("repro", "--case", str(tmp_path / "readme.json"), "--out", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    r_out = subprocess.run(["Rscript", str(tmp_path / "out" / "readme.R")], capture_output=True,
                           text=True, timeout=120)
    py_out = subprocess.run([sys.executable, str(tmp_path / "out" / "readme.py")],
                            capture_output=True, text=True, timeout=120)
    assert r_out.returncode == 0 and py_out.returncode == 0, r_out.stderr + py_out.stderr
    r_val = float(r_out.stdout.split("-2logLik(raw) ")[1].split()[0])
    py_val = float(py_out.stdout.split("-2logLik(raw) ")[1].split()[0])
    fit = R.fit(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nAGQ=1)["value"]
    assert r_val == fit["minus2loglik_raw"]                    # %.17g round-trips
    assert py_val == pytest.approx(r_val, rel=1e-10)


def test_repro_with_large_data_writes_csv_beside_the_scripts(tmp_path):
    data = simulated(n_g=30, n_per=10)
    case = Case.make(data, "count ~ x + (1 | g)", "poisson", nagq=(0,), name="big")
    from crosscheck.repro import write_repro
    paths = write_repro(case, tmp_path)
    assert [p.name for p in paths] == ["big.R", "big.py", "data.csv"]
    r_out = subprocess.run(["Rscript", str(paths[0])], capture_output=True, text=True, timeout=120)
    py_out = subprocess.run([sys.executable, str(paths[1])], capture_output=True, text=True, timeout=120)
    assert r_out.returncode == 0 and py_out.returncode == 0, r_out.stderr + py_out.stderr
    r_val = float(r_out.stdout.split("-2logLik(raw) ")[1].split()[0])
    py_val = float(py_out.stdout.split("-2logLik(raw) ")[1].split()[0])
    assert py_val == pytest.approx(r_val, rel=1e-10)


# -- staged diagnosis ----------------------------------------------------------------------------
def test_perturbed_objective_is_an_objective_mismatch(monkeypatch, cbpp):
    """The reference's deviance function shifted by 1e-7: the design still agrees, stage 1 fails."""
    call = reference_impl.objective.DevianceFunction.__call__
    monkeypatch.setattr(reference_impl.objective.DevianceFunction, "__call__",
                        lambda self, pars: call(self, pars) + 1e-7)
    report = compare_case(Case.make(cbpp, CBPP, "binomial", nagq=(1,)), noise="failing")
    (c,) = report.results
    assert c.verdict == "objective-mismatch" and c.diagnosis.stage_failed == 1
    assert all(d.ok for d in c.diffs if d.stage == 0)
    failed = [d for d in c.diffs if not d.ok]
    assert {d.quantity for d in failed} >= {"objective@r", "objective@python"}
    assert all(abs(d.abs - 1e-7) < 1e-9 for d in failed if d.quantity.startswith("objective"))


def test_loose_optimizer_is_optimizer_only_beyond_glmers_own_spread(monkeypatch, cbpp):
    """Nelder–Mead stopped 1000x earlier: stage 1 still agrees, stage 2 fails, and glmer refitted
    on cbpp's rows in other orders stays put (cbpp is well conditioned), so the difference is
    the reference's — beyond noise."""
    nelder_mead = reference_impl.fit.nelder_mead
    monkeypatch.setattr(reference_impl.fit, "nelder_mead",
                        lambda fn, x0, lower, upper, xst, xt, **kw: nelder_mead(fn, x0, lower, upper, xst, xt * 1e3, **kw))
    (c,) = compare_case(Case.make(cbpp, CBPP, "binomial", nagq=(1,)), noise="failing").results
    assert c.verdict == "optimizer-only" and c.diagnosis.stage_failed == 2 and not c.passed
    assert all(d.ok for d in c.diffs if d.stage == 1)


def test_difference_within_the_sides_own_spread_is_within_noise(R):
    """gen:thorough:973 (inverse.gaussian(inverse), 15 rows): the Laplace objective is rough, and
    glmer lands 0.47 apart in −2 log L for different row orders of the same data; the reference
    lands within that spread, so the verdict is `within-noise` (passing), each difference outside
    its tolerance within WITHIN noise bands, with a note, and the conditioning shown."""
    case = Case.load(Path(__file__).parent / "corpus" / "cases" / "lme4-noise-rough-laplace.json")
    (c,) = compare_case(case.with_nagq((1,)), noise="failing").results
    assert c.passed and c.verdict in ("match", "within-noise") and c.diagnosis.stage_failed is None
    outside = [d for d in c.diffs if d.gating and not d.ok]
    assert all(d.within_noise and d.noise_units <= WITHIN for d in outside)
    if c.verdict == "within-noise":
        assert outside and any("row order" in n for n in c.diagnosis.notes)
    assert c.diagnosis.conditioning["cond_X"] >= 1 and c.diagnosis.conditioning["pirls_iterations"] >= 1


def test_every_difference_carries_its_noise_band(R):
    """`compare --format json`: every diff of a fitted comparison has a measured band (a number:
    0 for the design's exact parts), its size in bands, and the band's cost in the timings."""
    case = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=(0, 1))
    report = compare_case(case, ("lme4", "exact")).to_json()
    for res in report["results"]:
        assert res["noise"]["orders"] == 3 and res["timings"]["noise"] > 0
        assert set(res["conditioning"]) == {"cond_X", "cond_hessian", "pirls_iterations", "pirls_halvings"}
        for d in res["diffs"]:
            assert isinstance(d["noise"], float) and d["noise"] >= 0, d
            assert d["abs"] is None or isinstance(d["noise_units"], (float, str)), d
        theta = next(d for d in res["diffs"] if d["quantity"].startswith("theta["))
        assert theta["noise"] > 0                  # glmer's optimum moves with the row order


def test_perturbed_design_is_a_design_mismatch(monkeypatch, cbpp):
    """Fixed-effect columns in reversed order: caught in stage 0, before any objective."""
    model_matrix = reference_impl.design._model_matrix

    def reversed_columns(*args):
        X, names = model_matrix(*args)
        return X[:, ::-1], names[::-1]

    monkeypatch.setattr(reference_impl.design, "_model_matrix", reversed_columns)
    (c,) = compare_case(Case.make(cbpp, CBPP, "binomial", nagq=(0,)), noise="failing").results
    assert c.verdict == "design-mismatch" and c.diagnosis.stage_failed == 0
    (names,) = [d for d in c.diffs if d.quantity == "X_names"]
    assert not names.ok and names.python == names.r[::-1]
    assert not any(d.stage >= 1 for d in c.diffs)


def test_agq_scale_reconciled_on_cbpp(cbpp):
    """lme4 1.1-31 reports nAGQ > 1 relative to the saturated model (spec §4.3): both sides are put
    on the absolute scale with the constant computed from the data (cbpp: 83.9567)."""
    report = compare_case(Case.make(cbpp, CBPP, "binomial", nagq=(1, 9)), noise="failing")
    assert report.saturated == pytest.approx(83.9567075378712, rel=1e-12)
    laplace, agq = report.results
    assert agq.r.minus2loglik_raw == pytest.approx(100.010036066812, rel=1e-12)
    assert agq.r.minus2loglik == pytest.approx(100.010036066812 + 83.9567075378712, rel=1e-12)
    assert agq.python.minus2loglik == pytest.approx(agq.r.minus2loglik, rel=1e-12)
    assert abs(agq.r.minus2loglik - laplace.r.minus2loglik) < 0.1       # now comparable
    assert any("relative to the saturated model" in n for n in agq.diagnosis.notes)
    (sat,) = [d for d in agq.diffs if d.quantity == "saturated"]
    assert sat.ok and sat.abs < 1e-12                     # data vs lme4's own aic − deviance


def test_agq_scale_reconciled_on_a_poisson_case():
    data = simulated()
    report = compare_case(Case.make(data, "count ~ x + offset(log(expo)) + (1 | g)", "poisson",
                                    nagq=(1, 9)), noise="failing")
    y = data["count"].to_numpy()
    from scipy.stats import poisson
    assert report.saturated == pytest.approx(-2 * poisson.logpmf(y, y).sum(), rel=1e-12)
    laplace, agq = report.results
    assert agq.verdict == "match" and laplace.verdict == "match"
    assert agq.r.minus2loglik == pytest.approx(agq.r.minus2loglik_raw + report.saturated, rel=1e-14)
    assert abs(agq.r.minus2loglik - laplace.r.minus2loglik) < 0.5
    assert agq.r.minus2loglik_raw < laplace.r.minus2loglik - 0.9 * report.saturated


# -- refusals, warnings, timeouts ---------------------------------------------------------------
def test_constant_response_is_refused_by_both_with_the_same_reason():
    data = readme_example().assign(y=1)
    (c,) = compare_case(Case.make(data, "y ~ x1 + (1 | subject)", "binomial", nagq=(1,)), noise="failing").results
    assert c.verdict == "both-refused" and c.diagnosis.refusal.agree and c.passed
    assert "Response is constant" in c.r.error and "Response is constant" in c.python.error


def test_factor_with_one_level_in_the_data_is_refused_by_both():
    """A categorical covariate whose data hold one of its categories (gen:thorough:1930): R drops
    the unused levels and refuses the contrasts; the reference fitted an intercept-only model."""
    data = readme_example().assign(f=pd.Categorical(["b"] * 15, categories=["a", "b", "c"]))
    (c,) = compare_case(Case.make(data, "y ~ x1 + f + (1 | subject)", "binomial", nagq=(0,)), noise="failing").results
    assert c.verdict == "both-refused" and c.diagnosis.refusal.agree and c.passed
    assert "column 'f' has 1 level(s)" in c.python.error


def test_refusal_of_one_side_only(monkeypatch, cbpp):
    def refuse(*args, **kwargs):
        raise reference_impl.ModelError("refused on purpose")

    monkeypatch.setattr("reference_impl.glmer", refuse)
    (c,) = compare_case(Case.make(cbpp, CBPP, "binomial", nagq=(0,)), noise="failing").results
    assert c.verdict == "python-refused" and not c.passed
    assert c.diagnosis.refusal.python == "refused on purpose" and c.diagnosis.refusal.r is None


def test_maxfun_too_small_warnings_come_back_as_data(cbpp):
    case = Case.make(cbpp, CBPP, "binomial", nagq=(1,), control={"optCtrl": {"maxfun": 30}})
    (c,) = compare_case(case, noise="failing").results
    doc = c.to_json()
    assert "failure to converge in 30 evaluations" in doc["r_warnings"]
    assert c.verdict == "match"                 # both stop at the same 30th evaluation
    assert any("convergence code" in w for w in doc["r_warnings"])
    assert c.python.messages == c.r.messages and not c.r.converged
    assert any("convergence problem" in n for n in doc["notes"])


def test_timeout_interrupts_r_and_the_next_comparison_works(cbpp):
    case = Case.make(cbpp, CBPP, "binomial", nagq=(1,))
    (c,) = compare_case(case, r_side=RSide(timeout=0.01), noise="failing").results
    assert c.verdict == "timeout" and c.r.error.startswith("timeout")     # not a refusal of the model
    (c,) = compare_case(case, r_side=RSide(timeout=60), noise="failing").results
    assert c.verdict == "match"


def test_glmmtmb_referee_and_its_note_for_non_canonical_links(cbpp):
    (logit,) = compare_case(Case.make(cbpp, CBPP, "binomial", nagq=(1,)), referee=True, noise="failing").results
    assert logit.referee.ok and all(d.ok for d in logit.referee_diffs)
    assert not any("glmmTMB" in n for n in logit.diagnosis.notes)
    (probit,) = compare_case(Case.make(cbpp, CBPP, "binomial", "probit", nagq=(1,)),
                             referee=True, noise="failing").results
    assert any("observed Hessian" in n and "probit" in n for n in probit.diagnosis.notes)


# -- case files ----------------------------------------------------------------------------------
def test_case_file_round_trip(tmp_path):
    data = simulated().assign(flag=lambda d: d["x"] > 0, n=lambda d: np.arange(len(d)))
    data.loc[3, "x"] = np.inf
    case = Case.make(data, "y01 ~ x + (1 | g)", "binomial", weights="pw", nagq=(0, 1),
                     name="round", control={"tolPwrss": 1e-8})
    back = Case.load(case.save(tmp_path / "c.json"))
    pd.testing.assert_frame_equal(back.data, case.data)
    assert back.spec() == case.spec()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(family="binomial2"), "unknown family 'binomial2'"),
    (lambda d: d.update(nagq=[1, 101]), "nAGQ = 101 is outside 0..100"),
    (lambda d: d["data"]["columns"][0].update(values=["a"] * 15), "columns[0] ('y').values[0]: expected a whole number or null, got 'a'"),
    (lambda d: d["data"].update(nrow=14), "has 15 entries, nrow is 14"),
    (lambda d: d.update(weights="w"), "weights column 'w' is not in the data"),
    (lambda d: d.update(control={"optimizer": "nloptwrap"}), "control.optimizer: unsupported setting"),
    (lambda d: d.update(data_file="../../etc/passwd"), "give exactly one of 'data' and 'data_file'"),
])
def test_bad_case_files_name_the_problem(tmp_path, mutate, message):
    doc = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial").to_json()
    mutate(doc)
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(CaseError, match=re_escape(message)):
        Case.load(tmp_path / "bad.json")


def re_escape(text: str) -> str:
    import re
    return re.escape(text)


def test_pirls_breakdowns_are_one_reason():
    """Which of PIRLS's checks trips first on a model it cannot fit is decided by last bits
    (gen:gate:5: NaN weights or an indefinite factor, by numpy's SIMD kernels): the same reason.
    A crash of the reference is never lme4's reason."""
    lme4 = "Downdated VtV is not positive definite"
    assert reasons_agree("PIRLS loop resulted in NaN value", lme4)
    assert reasons_agree("pwrssUpdate did not converge in (maxit) iterations", lme4)
    assert not reasons_agree("internal error: ValueError: illegal value in 7th argument", lme4)
    assert not reasons_agree("PIRLS loop resulted in NaN value", "Response is constant")
