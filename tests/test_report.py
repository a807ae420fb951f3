"""The HTML reports, rendered in headless Chromium: the screenshot is not blank, and the numbers
read back from the page (`--dump-dom`, by element id, exact value in `data-value`) are the
report's own. Chromium is Debian's `chromium`, installed by `make`; without it these tests fail.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from crosscheck.attribution import attribute
from crosscheck.case import Case
from crosscheck.compare import compare_case
from crosscheck.datasets import readme_example
from crosscheck.investigate import investigate
from crosscheck.report import investigation_html, records, run_summary
from crosscheck.sides import RSide
from crosscheck.store import Store

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium "
                    "(APT_PACKAGES); or apt-get install chromium")
    return path


def render(chromium, html_path, tmp_path):
    """(screenshot as an RGB(A) array, {id: (text, data-value)}) of the page."""
    from matplotlib.image import imread

    png = tmp_path / "page.png"
    common = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*common, f"--screenshot={png}", "--window-size=1200,2000",
                    f"file://{html_path}"], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([*common, "--dump-dom", f"file://{html_path}"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    parser = _Ids()
    parser.feed(dom)
    return imread(str(png)), parser.values


class _Ids(HTMLParser):
    """Text and data-value of every element with an id."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, tuple[str, str | None]] = {}
        self._open: list[tuple[str, str | None, list[str]]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self._open.append((a["id"], a.get("data-value"), []))

    def handle_data(self, data):
        for _, _, text in self._open:
            text.append(data)

    def handle_endtag(self, tag):
        if self._open and tag in ("td", "span", "p"):
            ident, value, text = self._open.pop()
            self.values[ident] = ("".join(text).strip(), value)


def not_blank(image) -> float:
    """Share of pixels that are not white."""
    rgb = np.asarray(image)[..., :3]
    return float(np.mean(np.any(rgb < 0.95, axis=-1)))


def test_investigation_report(R, chromium, tmp_path):
    case = Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=[0, 1], name="readme")
    side = RSide(R)
    invs = [investigate(case, k, r_side=side) for k in (0, 1)]
    att = attribute(case, side)
    path = tmp_path / "investigate.html"
    path.write_text(investigation_html(invs, att))
    image, ids = render(chromium, path, tmp_path)
    assert image.shape[0] >= 1900 and not_blank(image) > 0.03
    assert ids["verdict-1"][0] == "match" and ids["stage-1"][0] == "none"
    inv1 = invs[1].to_json()
    for i, v in enumerate(inv1["optima"]["r"]):
        assert float(ids[f"opt-1-r-{i}"][1]) == v
    for i, v in enumerate(inv1["traces"]["python"]["pdev"]):
        assert float(ids[f"trace-1-python-{i}"][1]) == v
    assert int(ids["iterations-1-r"][0]) == inv1["traces"]["r"]["iterations"]
    assert float(ids["at-1-python-r-ldL2"][1]) == inv1["at_optima"]["python@r"]["ldL2"]
    fm = inv1["fixed_modes"]
    assert float(ids["fm-1-diff"][1]) == fm["max_abs_diff"]
    assert float(ids["fm-1-value-gn"][1]) > float(ids["fm-1-value-glmer"][1]) + 0.05
    assert float(ids["attr-1-lme4-numerical-m2ll"][1]) == att.component(1, "lme4 numerical").d_minus2loglik
    assert float(ids["truth-m2ll"][1]) == att.truth.minus2loglik
    assert ids["attr-1-approximation-m2ll"][0] == "0.07148"            # the text shown, 4 digits


def test_run_report(R, chromium, tmp_path):
    """`crosscheck report`: from a JSONL of CaseReport JSON, and from a run of the store (case
    files with data: groups and group sizes, and a downloadable case file per worst case)."""
    side = RSide(R)
    cases = [Case.make(readme_example(), "y ~ x1 + (1 | subject)", "binomial", nagq=[0, 1], name="readme"),
             Case.make(R.dataset("lme4", "cbpp"), CBPP, "binomial", nagq=[0, 1], name="cbpp")]
    reports = [compare_case(c, ("lme4", "exact"), r_side=side, noise="failing").to_json() for c in cases]
    jsonl = tmp_path / "results.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in reports))
    out = tmp_path / "run.html"
    cli = [sys.executable, "-m", "crosscheck.cli", "report"]
    p = subprocess.run([*cli, "--jsonl", str(jsonl), "--out", str(out)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    image, ids = render(chromium, out, tmp_path)
    assert not_blank(image) > 0.03
    s = run_summary(records(reports))
    assert ids["cases"][0] == "2"
    assert int(ids["verdict-count-1-lme4-match"][0]) == 2
    for k, qs in s["distributions"].items():
        for q, by_mode in qs.items():
            for m, d in by_mode.items():
                base = f"dist-{k}-{q.replace('_', '-')}-{m}"
                assert int(ids[f"{base}-n"][0]) == d["n"]
                assert float(ids[f"{base}-max"][1]) == d["max"]
    assert float(ids["worst-0-excess"][1]) == s["worst"][0]["excess"]
    assert "theta" in s["distributions"][1]

    store = Store(tmp_path / "results.sqlite")
    run_id = store.new_run({"test": True})
    for c, r in zip(cases, reports):
        store.add(run_id, {"key": f"file:{c.name}", "status": "done", "case": c.to_json(), "report": r})
    out2 = tmp_path / "store.html"
    p = subprocess.run([*cli, "--run", run_id, "--store", str(tmp_path / "results.sqlite"),
                        "--out", str(out2)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    html = out2.read_text()
    assert 'download="file-readme.json"' in html or 'download="file-cbpp.json"' in html
    recs = records({"case": c.to_json(), "report": r} for c, r in zip(cases, reports))
    assert [r["features"]["groups"] for r in recs] == [3, 15]
    assert recs[1]["features"]["group_size"] == pytest.approx(56 / 15)
    bad = subprocess.run([*cli, "--run", "no-such-run", "--store", str(tmp_path / "results.sqlite"),
                          "--out", str(out2)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "error:" in bad.stderr
