"""Implementations under test (`--impl`, issue 14): loading by name, file and module; capabilities;
a deliberately wrong implementation fails at the stage where it is wrong; mixedlm on cbpp."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from crosscheck.case import Case
from crosscheck.compare import compare_case
from crosscheck.implementations import Capabilities, load, structure
from crosscheck.sides import PythonSide
from reference_impl.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "alternating.py") + ":Alternating"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def cbpp(r_session):
    return Case.make(r_session.dataset("lme4", "cbpp"), CBPP, "binomial", nagq=(0, 1), name="cbpp")


class ShiftedObjective(PythonSide):
    """The reference's lme4 mode, whose deviance function is off by 1e-3: wrong at stage 1 only."""

    def __init__(self):
        super().__init__("lme4")
        self.name = "shifted"

    def evaluate(self, case, nAGQ, pars, lp0):
        out = super().evaluate(case, nAGQ, pars, lp0)
        for ev in out:
            ev.value += 1e-3
        return out


def test_load_names_files_and_modules():
    assert load("lme4").name == "lme4" and load("exact").tolerances == "exact"
    assert load(EXAMPLE).name == "alternating"
    assert load("crosscheck.sides:reference_exact").name == "exact"
    for spec, words in (("nonesuch", "not a built-in"), ("examples/none.py:X", "no file"),
                        ("crosscheck.sides:nonesuch", "no attribute"), ("crosscheck.case:Case", "missing")):
        with pytest.raises((ModelError, TypeError), match=words):
            load(spec)


def test_capabilities_name_what_is_not_claimed(cbpp):
    caps = Capabilities(families={"poisson": ("log",)}, nagq=(1,), structures=("vector",), weights=False)
    assert "nAGQ = 0" in caps.unsupported(cbpp, 0)
    assert "binomial" in caps.unsupported(cbpp, 1)
    assert "scalar" in replace(caps, families=None).unsupported(cbpp, 1)
    assert replace(caps, families=None, structures=("scalar",)).unsupported(cbpp, 1) is None
    assert [structure(f) for f in ("y ~ (1 | g)", "y ~ (x | g)", "y ~ (1 | g) + (1 | h)")] == \
        ["scalar", "vector", "several"]


def test_wrong_objective_fails_at_stage_1(cbpp, r_session):
    from crosscheck.sides import RSide
    report = compare_case(cbpp.with_nagq([1]), (ShiftedObjective(),), r_side=RSide(r_session), noise="none")
    (c,) = report.results
    assert (c.mode, c.verdict, c.diagnosis.stage_failed) == ("shifted", "objective-mismatch", 1)
    bad = [d for d in c.diffs if not d.ok]
    assert {d.quantity for d in bad} == {"objective@r", "objective@python"}
    assert all(abs(d.abs - 1e-3) < 1e-9 for d in bad)


def test_users_alternating_fit_from_a_file(tmp_path):
    """The README's worked example, as a user runs it: nAGQ 0 (its alternation reaches the joint
    mode) passes; nAGQ 1 fails at the optimum, worse than glmer on the exact objective; nAGQ 9
    is not claimed."""
    out = subprocess.run([sys.executable, "-m", "crosscheck", "compare", "--impl", EXAMPLE,
                          "--data", "R:lme4::cbpp", "--family", "binomial", "--formula", CBPP,
                          "--nagq", "0,1,9", "--format", "json", "--noise", "none"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 1, out.stderr
    results = {r["nAGQ"]: r for r in json.loads(out.stdout)["results"]}
    assert results[0]["verdict"] == "match"
    assert (results[1]["verdict"], results[1]["stage_failed"]) == ("optimizer-only", "optimum")
    excess = next(d for d in results[1]["diffs"] if d["quantity"] == "minus2loglik_excess")
    assert excess["python"] - excess["r"] > 0.01         # 0.056 worse in −2 log L
    assert results[9]["verdict"] == "skipped" and results[9]["passed"]
    assert any("stage 1" in n and "no deviance function" in n for n in results[0]["notes"])


def test_mixedlm_on_cbpp(tmp_path):
    """The issue's command: a verdict per nAGQ, mixedlm's version recorded, its coefficient names
    and level order mapped onto lme4's, stage 1 run through its deviance function."""
    pytest.importorskip("mixedlm")
    out = subprocess.run([sys.executable, "-m", "crosscheck", "compare", "--impl", "mixedlm",
                          "--data", "R:lme4::cbpp", "--family", "binomial", "--nagq", "0,1,9",
                          "--format", "json", "--formula", CBPP], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert out.returncode in (0, 1), out.stderr
    doc = json.loads(out.stdout)
    assert doc["versions"]["mixedlm"]
    assert [r["nAGQ"] for r in doc["results"]] == [0, 1, 9]
    for r in doc["results"]:
        assert r["mode"] == "mixedlm" and r["verdict"] not in ("harness-error", "timeout", "skipped")
        assert "period2" in r["python"]["fixef"]
        quantities = {d["quantity"].split("[")[0] for d in r["diffs"]}
        assert {"Zt", "X", "objective@r", "minus2loglik_excess"} <= quantities


def test_investigate_repro_and_gate_take_impl(tmp_path):
    """`investigate --impl`: the diagnosis and the notes of what it could not run; `repro --impl`:
    a script that fits with the implementation; `gate --impl`: a baseline gates the
    implementations it was measured on."""
    cli = [sys.executable, "-m", "crosscheck"]
    case = ["--data", "R:lme4::cbpp", "--family", "binomial", "--formula", CBPP, "--nagq", "1"]
    out = subprocess.run([*cli, "investigate", "--impl", EXAMPLE, *case, "--no-attribution", "--format", "json"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 1, out.stderr
    (inv,) = json.loads(out.stdout)["investigations"]
    assert (inv["mode"], inv["verdict"], inv["stage_failed"]) == ("alternating", "optimizer-only", "optimum")
    assert any("no profiles" in n and "no deviance function" in n for n in inv["notes"])

    out = subprocess.run([*cli, "repro", "--impl", EXAMPLE, *case, "--name", "cbpp", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    run = subprocess.run([sys.executable, str(tmp_path / "r" / "cbpp.py")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("alternating") and "nAGQ 1: -2logLik 184.10859" in run.stdout

    out = subprocess.run([*cli, "gate", "--impl", "exact", "--baseline", str(ROOT / "tests/corpus/baseline.json"),
                          "--out", str(tmp_path / "g")], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 2 and "gates lme4, exact, not exact" in out.stderr


def test_mixedlm_adapter_puts_terms_in_lme4s_order():
    """mixedlm keeps the formula's term order, lme4 sorts by levels: θ comes back in lme4's
    order, and its deviance function, given lme4's parameter vector, is at its own optimum where
    the fit says (−2 log L); the offset() term goes over as a vector."""
    pytest.importorskip("mixedlm")
    from crosscheck.generate import draw_case
    from crosscheck.mixedlm_impl import MixedLM
    impl = MixedLM()
    for index in (17, 9):                        # (1 | g) + (1 | h), h with more levels; 9 with offset(log(expo))
        case = draw_case("thorough", index, max_groups=200).to_case((1,))
        fit = impl.fit(case, 1)
        assert fit.ok, fit.error
        assert fit.theta_names[0].startswith("h.") and any("θ is lme4's in the order [1, 0]" in m for m in fit.messages)
        (ev,) = impl.evaluate(case, 1, [fit.pars], None)
        assert abs(ev.value - fit.minus2loglik) < 1e-6 * fit.minus2loglik
    assert "offset(" in case.formula


def test_pytest_plugin_takes_an_implementation(tmp_path):
    """A project's cross-check test run with `pytest --crosscheck-impl FILE:ATTR` compares that
    implementation (the plugin's --impl): the user's alternating fit matches at nAGQ 0."""
    (tmp_path / "test_mine.py").write_text(
        "from crosscheck.case import Case\n"
        "from crosscheck.pytest_plugin import assert_passes\n\n"
        "def test_cbpp(compare_case, r_session):\n"
        f"    case = Case.make(r_session.dataset('lme4', 'cbpp'), {CBPP!r}, 'binomial', nagq=(0,))\n"
        "    report = compare_case(case)\n"
        "    assert [c.mode for c in report.results] == ['alternating']\n"
        "    assert_passes(report)\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py",
                        "--crosscheck-impl", EXAMPLE], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout + p.stderr


def test_mixedlm_prints_nothing(capsys):
    """mixedlm prints its R-like messages (a rank-deficient X) on stdout, where `compare --format
    json` writes its JSON: the adapter keeps them in the fit's messages instead."""
    pytest.importorskip("mixedlm")
    import pandas as pd

    from crosscheck.mixedlm_impl import MixedLM
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(8), 6)
    x = rng.normal(size=g.size)
    data = pd.DataFrame({"y": rng.poisson(np.exp(0.5 + 0.3 * x + rng.normal(size=8)[g])), "x": x, "x_again": x,
                         "g": pd.Categorical(g)})
    fit = MixedLM().fit(Case.make(data, "y ~ x + x_again + (1 | g)", "poisson", nagq=(1,)), 1)
    assert capsys.readouterr().out == ""
    assert any("rank deficient" in m for m in fit.messages), fit.messages


def test_glmmtmb_as_implementation(cbpp, r_session):
    """glmmTMB through the same R: nAGQ 0 not claimed (skipped), nAGQ 1 compared, with its version."""
    from crosscheck.sides import RSide
    report = compare_case(cbpp, ("glmmtmb",), r_side=RSide(r_session), noise="none")
    verdicts = {c.nAGQ: c.verdict for c in report.results}
    assert verdicts[0] == "skipped" and verdicts[1] == "match", verdicts
    assert report.versions.get("R:glmmTMB") or report.versions.get("glmmTMB")
