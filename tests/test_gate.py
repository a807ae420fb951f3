"""`crosscheck gate`: the baseline carries each difference's noise band (row orders here, and a
simulated other CPU), the unchanged code passes on this machine and on the simulated one, and every
injected numerical change of the table fails the gate naming the comparison and the quantity."""
from __future__ import annotations

import functools
import json
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest

import reference_impl.families
import reference_impl.fit
import reference_impl.objective
from crosscheck.case import Case
from crosscheck.datasets import readme_example
from crosscheck.executors import SubprocessPool, serial
from crosscheck.gate import FORMAT, Change, case_identity, changes, merge, run_gate
from crosscheck.machine import SIMULATED_CPU
from crosscheck.store import Store
from reference_impl.factor import Decomposition
from reference_impl.predictor import predictor

REAL_PIRLS = reference_impl.objective.pirls


def tol_pwrss_1e6(monkeypatch):
    """lme4's tolPwrss 1e-7 → 1e-6 (§3.2)."""
    monkeypatch.setattr(reference_impl.objective, "pirls", lambda *a, **k: REAL_PIRLS(*a, **{**k, "tol": 1e-6}))


def final_weights_factor(monkeypatch):
    """lme4 keeps the factor of the penultimate PIRLS weights (§3.2): replaced by the final one."""
    def pirls(model, theta, *a, **k):
        res = REAL_PIRLS(model, theta, *a, **k)
        fam, resp = model.family, model.response
        sqrtW = fam.mu_eta(res.eta) * np.sqrt(resp.pw / fam.variance(res.mu))
        res.decomp = Decomposition(predictor(model, theta).factor(sqrtW), model.X, sqrtW)
        res.ldL2 = res.decomp.ldL2
        return res
    monkeypatch.setattr(reference_impl.objective, "pirls", pirls)


def gh_nodes_off(monkeypatch):
    """The Gauss–Hermite nodes 1e-10 relative off (§4.3)."""
    real = reference_impl.objective.ghrule

    def ghrule(k):
        z, w, _ = real(k)
        z = z * (1 + 1e-10)
        return z, w, -0.5 * z * z - 0.5 * np.log(2 * np.pi)
    monkeypatch.setattr(reference_impl.objective, "ghrule", ghrule)


def deriv12_delta_1e3(monkeypatch):
    """deriv12's step δ 1e-4 → 1e-3 (§6.1)."""
    monkeypatch.setattr(reference_impl.fit, "deriv12",
                        functools.partial(reference_impl.fit.deriv12, delta=1e-3))


def binomial_devresid_off(monkeypatch):
    """The binomial deviance residuals 1e-9 relative off (§2.4)."""
    real = reference_impl.families.Binomial.devresid
    monkeypatch.setattr(reference_impl.families.Binomial, "devresid",
                        lambda self, y, mu, pw: real(self, y, mu, pw) * (1 + 1e-9))


INJECTED = [tol_pwrss_1e6, final_weights_factor, gh_nodes_off, deriv12_delta_1e3, binomial_devresid_off]


def wide_covariate() -> pd.DataFrame:
    """The README example with x1 in hundreds: deriv12's fixed step δ is then a large step in β, so
    its truncation error in the SEs (∝ δ²) stands far above their rounding noise (∝ 1/δ²)."""
    d = readme_example()
    d["x1"] = d["x1"] * 100.0
    return d


@pytest.fixture(scope="module")
def pinned(tmp_path_factory, R):
    """A baseline of the README example's wide-covariate twin at nAGQ 0, 1 and 9 in lme4 mode
    (the injected changes are all to lme4's numerics), written as `--update-baseline` writes it:
    noise bands here and in a worker with AVX-512 off."""
    tmp = tmp_path_factory.mktemp("gate")
    Case.make(wide_covariate(), "y ~ x1 + (1 | subject)", "binomial", nagq=(0, 1, 9),
              name="wide").save(tmp / "cases" / "wide.json")
    baseline = tmp / "baseline.json"
    baseline.write_text(json.dumps({"format": FORMAT, "entries": {}, "config": {
        "generated": 0, "nagq": [0, 1, 9], "modes": ["lme4"]}}))
    store = Store(tmp / "r.sqlite")
    run_gate(baseline, store, serial, tmp / "out", update=True,
             simulated=SubprocessPool(1, 300, tmp / "workers.log", env=SIMULATED_CPU))
    return tmp, baseline, store


def test_baseline_records_noise_bands_and_both_machines(pinned):
    _, baseline, _ = pinned
    doc = json.loads(baseline.read_text())
    assert doc["version"] == 2 and doc["versions"]["R:lme4"] and doc["policy"]["growth"] == 10
    assert len(doc["machines"]) == 2
    assert any(m.get("NPY_DISABLE_CPU_FEATURES") for m in doc["machines"])
    assert all("AVX512F" not in m["numpy SIMD"] for m in doc["machines"] if m.get("NPY_DISABLE_CPU_FEATURES"))
    entry = doc["entries"]["file:wide nAGQ=1 lme4"]
    assert entry["verdicts"] == ["match"] and entry["passed"]
    assert [len(d) for d in entry["digests"]] == [16]      # both paths ran the same case
    for q in ("objective", "theta", "fixef", "se"):
        assert isinstance(entry["noise"][q], float) and entry["noise"][q] >= 0, q
    assert entry["noise"]["theta"] > 0           # glmer's optimum moves with row order


@pytest.mark.parametrize("where", ["here", "simulated CPU"])
def test_unchanged_code_passes(pinned, where):
    tmp, baseline, store = pinned
    executor = serial if where == "here" else SubprocessPool(1, 300, tmp / "workers.log", env=SIMULATED_CPU)
    found, _, text = run_gate(baseline, store, executor, tmp / f"out-{where}")
    assert not [c for c in found if c.failing], text


@pytest.mark.parametrize("inject", INJECTED, ids=lambda f: f.__name__)
def test_injected_change_fails_the_gate_naming_comparison_and_quantity(pinned, monkeypatch, inject):
    tmp, baseline, store = pinned
    inject(monkeypatch)
    found, _, text = run_gate(baseline, store, serial, tmp / inject.__name__)
    failing = [c for c in found if c.failing]
    assert failing, f"{inject.__doc__}: the gate did not notice\n{text}"
    assert all(c.comparison.startswith("file:wide nAGQ=") and c.quantity for c in failing)
    assert f"| FAIL | {failing[0].comparison} | {failing[0].quantity} |" in text
    suite = ET.parse(tmp / inject.__name__ / "junit.xml").getroot()
    assert int(suite.get("failures")) >= 1


def entry(verdicts, passed, diffs, noise=None):
    return {"verdicts": verdicts, "passed": passed, "diffs": diffs, "noise": noise or {}}


def test_policy_reads_growth_against_the_larger_of_baseline_and_noise():
    before = {"k": entry(["match"], True, {"theta": 1e-11, "se": 1e-9}, {"theta": 1e-8, "se": 1e-10})}
    assert changes(before, {"k": entry(["match"], True, {"theta": 9e-8, "se": 9e-9})}) == []
    (c,) = changes(before, {"k": entry(["match"], True, {"theta": 2e-7, "se": 1e-9})})
    assert (c.comparison, c.quantity, c.failing) == ("k", "theta", True) and "noise band" in c.why


def test_policy_on_verdicts():
    before = {"a": entry(["match"], True, {}), "b": entry(["objective-mismatch"], False, {}),
              "c": entry(["both-refused", "r-refused"], False, {}), "d": entry(["match"], True, {})}
    after = {"a": entry(["within-noise"], True, {}), "b": entry(["optimizer-only"], False, {}),
             "c": entry(["r-refused"], False, {}), "e": entry(["match"], True, {})}
    got = {(c.comparison, c.failing, c.why) for c in changes(before, after)}
    assert got == {("a", False, "still passes"),
                   ("b", True, "a failing comparison changed its verdict"),
                   ("d", True, "pinned comparison did not run"), ("e", False, "new comparison")}
    assert not any(isinstance(c, Change) and c.before == c.after for c in changes(before, after))


def test_a_comparison_on_another_case_fails_as_such():
    """A generated key drawn as another case (new strategies, another hypothesis) or an edited case
    file: its differences are not compared, the gate fails naming the case."""
    before = {"k": {**entry(["match"], True, {"theta": 1e-11}), "digests": ["a" * 16, "c" * 16]}}
    (c,) = changes(before, {"k": {**entry(["match"], True, {"theta": 1e-11}), "digests": ["b" * 16]}})
    assert (c.comparison, c.quantity, c.failing) == ("k", "case", True) and "--update-baseline" in c.why
    for seen in ("a", "c"):       # either case a baseline measured on two CPU paths ran
        assert changes(before, {"k": {**entry(["match"], True, {"theta": 1e-11}), "digests": [seen * 16]}}) == []


def test_a_case_is_itself_on_another_cpu_path_and_another_when_redrawn():
    """gen:gate:3's offset column, numpy's SIMD log, differs in the last bit with AVX-512 off:
    the same case. A number moved by 1e-6 is another."""
    data = readme_example()
    data["x"] = np.log(data["x1"] + 0.5)
    doc = Case.make(data, "y ~ x + (1 | subject)", "binomial", nagq=(1,)).to_json()

    def moved(by):
        out = json.loads(json.dumps(doc))
        column = next(c for c in out["data"]["columns"] if c["name"] == "x")
        column["values"] = [by(v) for v in column["values"]]
        return json.dumps(out)
    same = case_identity(json.dumps(doc))
    assert case_identity(moved(lambda v: float(np.nextafter(v, np.inf)))) == same
    assert case_identity(moved(lambda v: v * (1 + 1e-6))) != same


def test_merge_of_two_cpu_paths_covers_the_difference_between_them():
    here = {"k": entry(["match"], True, {"theta": 1e-10, "se": "Inf"}, {"theta": 1e-11}),
            "r": entry(["r-refused"], False, {})}
    there = {"k": entry(["within-noise"], True, {"theta": 4e-10, "se": "Inf"}, {"theta": 2e-11})}
    merged = merge([here, there])
    assert merged["k"]["verdicts"] == ["match", "within-noise"] and merged["k"]["passed"]
    assert merged["k"]["diffs"]["theta"] == 4e-10 and merged["k"]["noise"]["theta"] == pytest.approx(3e-10)
    assert merged["k"]["noise"]["se"] == 0.0
    assert merged["r"]["verdicts"] == ["r-refused"] and not merged["r"]["passed"]
