"""`crosscheck investigate` against the real glmer: the README example (nAGQ 0, 1) and cbpp.

Tolerances: lme4 mode reproduces glmer's deviance function to 1e-10 relative (docs/tolerances.md),
so profiles and PIRLS iterates are held to that; the fixed-modes Gauss–Newton β is converged to
1e-12, and PIRLS at nAGQ = 0 stops at a relative pdev change of 1e-7, so β agree to 1e-8.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from crosscheck.case import Case
from crosscheck.datasets import readme_example
from crosscheck.investigate import fixed_modes_beta, investigate
from crosscheck.sides import RSide

README = "y ~ x1 + (1 | subject)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
CLI = [sys.executable, "-m", "crosscheck.cli", "investigate"]
# lme4 step-halves once (iteration 4) at these README-example parameters
HALVING_AT = "5.580073859133202,-1.7503333114603659,-9.967287578024521"


@pytest.fixture(scope="module")
def readme_case():
    return Case.make(readme_example(), README, "binomial", nagq=[0, 1], name="readme")


@pytest.fixture(scope="module")
def inv(R, readme_case):
    side = RSide(R)
    return {k: investigate(readme_case, k, "lme4", r_side=side) for k in (0, 1)}


def close(a, b, rel=1e-10):
    return np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=rel, atol=0)


@pytest.mark.parametrize("k", [0, 1])
def test_readme_evidence_agrees(inv, k):
    """The fits never part; both deviance functions agree along every profile, and PIRLS takes
    the same iterations to the same pdev at glmer's optimum."""
    i = inv[k]
    assert i.verdict == "match" and i.stage_failed is None and i.passed
    assert len(i.names) == (1 if k == 0 else 3) and len(i.axes) == len(i.names)
    for key in ("python@r", "python@python"):
        other = "r@" + key.split("@")[1]
        for q in ("value", "ldL2", "ussq", "drsum"):
            assert close(i.at_optima[key][q], i.at_optima[other][q]), (key, q)
    curves = [i.segment, *i.axes] if i.segment else i.axes
    for c in curves:
        assert close(c.python["value"], c.r["value"]), c.label
        assert min(c.r["value"]) < max(c.r["value"])
    for c in i.axes:                                    # each axis has glmer's optimum as its minimum
        assert min(c.r["value"]) >= i.at_optima["r@r"]["value"] - 1e-9
    r, py = i.traces["r"], i.traces["python"]
    assert r["iterations"] == py["iterations"] >= 2
    assert close(r["pdev"], py["pdev"], 1e-12) and r["halvings"] == py["halvings"]
    assert any(line.startswith("pdev=") for line in r["lines"])
    assert i.trace_at == i.optima["r"]
    d = i.diagnostics["r"]
    assert d["converged"] and d["optimizer"] == ("bobyqa" if k == 0 else "Nelder_Mead")
    assert i.diagnostics["python"]["feval"] == d["feval"]


def test_fixed_modes_match_nagq0_not_nagq1(inv, readme_case):
    """Gauss–Newton with the conditional modes held fixed reproduces nAGQ = 0's β at its θ̂, but
    at nAGQ = 1's θ̂ it lands 0.33 away from glmer's β: there the Laplace objective is 0.081
    higher, its ldL2 higher and the penalized deviance part lower (README walk-through)."""
    fm0, fm1 = inv[0].fixed_modes, inv[1].fixed_modes
    assert fm0.max_abs_diff < 1e-8 and fm0.profile is None
    assert 0.3 < fm1.max_abs_diff < 0.35
    p = fm1.profile
    i0, i1 = p.x.index(0.0), p.x.index(1.0)
    value, ldL2 = np.array(p.r["value"]), np.array(p.r["ldL2"])
    assert value[i0] - value[i1] == pytest.approx(0.0808, abs=5e-4)
    assert ldL2[i0] - ldL2[i1] == pytest.approx(0.161, abs=1e-3)
    rest = value - ldL2
    assert rest[i1] - rest[i0] == pytest.approx(0.0805, abs=1e-3)
    assert close(p.python["value"], p.r["value"])
    beta, steps, converged = fixed_modes_beta(readme_case, fm1.theta, np.zeros(2))  # any start
    assert converged and fm1.converged and np.allclose(beta, fm1.beta, atol=1e-9) and steps > 10


def test_step_halving_trace_through_cli(tmp_path):
    """--at: lme4 step-halves once at the 4th iteration; the reference does the same, with the
    same pdev per iteration; lme4's own printed trace is kept. Bad input exits 2."""
    p = subprocess.run([*CLI, "--data", "R:lme4::cbpp", "--formula", "y ~ x + (1 | herd)",
                        "--family", "binomial"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "not in the data" in p.stderr
    path = Case.make(readme_example(), README, "binomial", name="readme").save(tmp_path / "c.json")
    args = [*CLI, "--case", str(path), "--nagq", "1", "--no-attribution", "--format", "json"]
    bad = subprocess.run([*args, "--at", "1,2"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--at has 2 values" in bad.stderr
    p = subprocess.run([*args, f"--at={HALVING_AT}"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    comparison = doc["investigations"][0]["comparison"]
    assert comparison["noise"]["orders"] == 3 and all(isinstance(d["noise"], float) for d in comparison["diffs"])
    assert doc["attribution"] is None and "not asked" in doc["attribution_skipped"]
    t = doc["investigations"][0]["traces"]
    assert t["r"]["halvings"] == t["python"]["halvings"] == [0, 0, 0, 1, 0, 0, 0]
    assert close(t["r"]["pdev"], t["python"]["pdev"], 1e-12)
    assert any("step-halving iteration 0" in line for line in t["r"]["lines"])


def test_cbpp_text(R):
    """cbpp at nAGQ = 1: PIRLS at glmer's optimum takes 2 iterations (spec §10); the text report
    shows every section and the attribution's components."""
    p = subprocess.run([*CLI, "--data", "R:lme4::cbpp", "--formula", CBPP, "--family", "binomial",
                        "--nagq", "1"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "nAGQ 1 · lme4 mode · match" in out and "PIRLS at (" in out
    assert "conditioning: cond(X) 4.65" in out and "2 iteration(s), 0 step-halving(s)" in out
    for text in ("segment glmer → python", "axis herd.(Intercept)", "fixed-modes Gauss–Newton",
                 "approximation", "lme4 numerical", "implementation", "referee", "truth cost"):
        assert text in out, text
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "PIRLS at (" in line) + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].split()[0].isdigit())
    assert [line.split()[0] for line in lines[start:end]] == ["1", "2"]
