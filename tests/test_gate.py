"""`crosscheck gate`: passes on its own baseline, fails on a monkeypatched regression and says
what changed (comparison, quantity, before, after)."""
from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import reference_impl.objective
from crosscheck.case import Case
from crosscheck.datasets import readme_example
from crosscheck.executors import serial
from crosscheck.gate import FORMAT, run_gate
from crosscheck.store import Store


def test_gate_passes_on_the_baseline_and_fails_on_a_regression(tmp_path, monkeypatch, R):
    Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=(0, 1),
              name="readme").save(tmp_path / "cases" / "readme.json")
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"format": FORMAT, "entries": {}, "config": {
        "generated": 1, "max_groups": 6, "nagq": [0, 1], "modes": ["lme4"]}}))
    store = Store(tmp_path / "r.sqlite")
    run_gate(baseline, store, serial, tmp_path / "out", update=True)
    pinned = json.loads(baseline.read_text())
    assert {"file:readme nAGQ=0 lme4", "file:readme nAGQ=1 lme4"} <= set(pinned["entries"])
    assert pinned["versions"]["R:lme4"] and pinned["policy"]["growth"] == 10

    found, _, text = run_gate(baseline, store, serial, tmp_path / "out")
    assert not [c for c in found if c.failing], text

    call = reference_impl.objective.DevianceFunction.__call__
    monkeypatch.setattr(reference_impl.objective.DevianceFunction, "__call__",
                        lambda self, pars: call(self, pars) + 1e-7)
    found, _, text = run_gate(baseline, store, serial, tmp_path / "out")
    failing = {(c.comparison, c.quantity): c for c in found if c.failing}
    grown = failing[("file:readme nAGQ=1 lme4", "objective")]
    assert grown.before < 1e-9 < grown.after and grown.why == "grew more than 10x"
    assert failing[("file:readme nAGQ=1 lme4", "verdict")].after == "objective-mismatch"
    assert "| FAIL | file:readme nAGQ=1 lme4 | objective |" in text
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert int(suite.get("failures")) >= 2
