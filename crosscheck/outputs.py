"""A stored run as files: `results.jsonl` (one case per line: key, status, case spec, report),
`junit.xml` (one testcase per case × nAGQ × mode, failing when not passed) and `summary.md` (the
per-nAGQ tables `crosscheck run` prints).
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from xml.etree import ElementTree as ET

from .store import Store, StoreError

VERDICTS = ("match", "within-noise", "optimizer-only", "objective-mismatch", "design-mismatch", "se-mismatch",
            "r-refused", "python-refused", "both-refused", "harness-error", "timeout")
BOTH_FIT = VERDICTS[:6]
BEYOND_NOISE = VERDICTS[2:6]
# quantities shown in the worst-difference table, in diagnosis order
QUANTITIES = ("objective", "minus2loglik", "optimum_gap", "theta", "fixef", "fixef_se_units", "se",
              "ranef", "fitted")


def fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1e}"


def verdict_table(store: Store, run_id: str) -> str:
    """Per (nAGQ, mode): cases, % passed, the comparisons both sides fit and the share of them that
    differ beyond noise (or within it), count per verdict (both-refused split by agreement)."""
    rows = store.query(
        "SELECT f.nagq, f.mode, f.verdict, f.passed, count(*) AS n FROM fits f JOIN cases c "
        "USING (case_id) WHERE c.run_id = ? GROUP BY 1, 2, 3, 4 ORDER BY 1, 2", run_id)
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for r in rows:
        label = r["verdict"] if r["verdict"] != "both-refused" else (
            "both-refused" if r["passed"] else "both-refused (reasons differ)")
        counts[(r["nagq"], r["mode"])][label] += r["n"]
        counts[(r["nagq"], r["mode"])]["passed"] += r["n"] * r["passed"]
    labels = [*VERDICTS, "both-refused (reasons differ)"]
    head = ["nAGQ", "mode", "cases", "% passed", "both fit", "% beyond noise", "% within noise", *labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (k, mode), c in sorted(counts.items()):
        n = sum(c[v] for v in labels)
        fit = sum(c[v] for v in BOTH_FIT)
        share = lambda count: f"{100 * count / fit:.1f}" if fit else "-"     # noqa: E731
        lines.append(f"| {k} | {mode} | {n} | {100 * c['passed'] / n:.1f} | {fit} | "
                     f"{share(sum(c[v] for v in BEYOND_NOISE))} | {share(c['within-noise'])} | "
                     + " | ".join(str(c[v]) for v in labels) + " |")
    return "\n".join(lines)


def worst_table(store: Store, run_id: str) -> str:
    """Per (nAGQ, mode): the largest |Δ| of each quantity over the fitted cases."""
    rows = store.query(
        "SELECT f.nagq, f.mode, d.base, max(abs(d.abs)) AS worst FROM diffs d JOIN fits f "
        "USING (fit_id) JOIN cases c USING (case_id) WHERE c.run_id = ? AND d.abs IS NOT NULL "
        "GROUP BY 1, 2, 3", run_id)
    worst = defaultdict(dict)
    for r in rows:
        worst[(r["nagq"], r["mode"])][r["base"]] = r["worst"]
    head = ["nAGQ", "mode", *QUANTITIES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (k, mode), w in sorted(worst.items()):
        lines.append(f"| {k} | {mode} | " + " | ".join(fmt(w.get(q)) for q in QUANTITIES) + " |")
    return "\n".join(lines)


def harness_line(store: Store, run_id: str) -> str:
    rows = store.query("SELECT status, count(*) AS n FROM cases WHERE run_id = ? GROUP BY 1", run_id)
    c = {r["status"]: r["n"] for r in rows}
    return (f"{sum(c.values())} cases: {c.get('done', 0)} compared, {c.get('error', 0)} refused "
            f"by the case checks, {c.get('timeout', 0)} timed out, {c.get('harness-error', 0)} harness "
            f"errors, {c.get('crash', 0)} worker crashes")


def summary(store: Store, run_id: str) -> str:
    """The Markdown summary of a run (also what `crosscheck run` prints)."""
    run = store.run(run_id)
    return "\n".join([
        f"# crosscheck run {run_id}", "",
        f"{harness_line(store, run_id)}; status {run['status']}.", "",
        "## Verdicts per nAGQ and mode", "", verdict_table(store, run_id), "",
        "## Worst |python − glmer| per quantity", "", worst_table(store, run_id), ""])


def write_jsonl(store: Store, run_id: str, path: Path) -> None:
    with open(path, "w") as out:
        for c in store.cases(run_id):
            case, report = store.documents(c)
            if case:
                case.pop("data", None)
            out.write(json.dumps({"key": c["case_key"], "status": c["status"], "error": c["error"],
                                  "seconds": c["seconds"], "case": case, "report": report}) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """The records of a results.jsonl; StoreError naming the file and line of a damaged one."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            try:
                records += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as e:
                raise StoreError(f"{path}, line {number}: not a JSON record ({e.msg}); the file is "
                                 "damaged or cut short") from None
    return records


def junit_xml(suite: str, testcases: list[dict]) -> ET.ElementTree:
    """JUnit XML from dicts {classname, name, time, failure?: (message, text), error?: (…)}."""
    root = ET.Element("testsuite", name=suite, tests=str(len(testcases)),
                      failures=str(sum("failure" in t for t in testcases)),
                      errors=str(sum("error" in t for t in testcases)))
    for t in testcases:
        tc = ET.SubElement(root, "testcase", classname=t["classname"], name=t["name"],
                           time=f"{t.get('time') or 0:.3f}")
        for kind in ("failure", "error"):
            if kind in t:
                ET.SubElement(tc, kind, message=t[kind][0]).text = t[kind][1]
    return ET.ElementTree(root)


def junit(store: Store, run_id: str, suite: str = "crosscheck") -> ET.ElementTree:
    """One testcase per (case, nAGQ, mode) (a case that never compared: one testcase)."""
    testcases = []
    for c in store.cases(run_id):
        _, report = store.documents(c)
        if report is None:
            testcases.append({"classname": suite, "name": c["case_key"], "time": c["seconds"],
                              "error": (c["status"], c["error"] or "")})
            continue
        for r in report["results"]:
            t = {"classname": f"{suite}.{c['case_key']}", "name": f"nAGQ={r['nAGQ']} {r['mode']}",
                 "time": sum(r.get("timings", {}).values())}
            if not r["passed"]:
                failed = [d for d in r["diffs"] if not d["ok"] and d.get("gating", True)]
                text = "\n".join(f"{d['quantity']}: python {d['python']} glmer {d['r']} "
                                 f"|diff| {d['abs']} tol {d['tol']}" for d in failed[:20])
                if r.get("refusal"):
                    text += f"\npython: {r['refusal']['python']}\nglmer: {r['refusal']['r']}"
                t["failure"] = (r["verdict"], text)
            testcases.append(t)
    return junit_xml(suite, testcases)


def store_records(store: Store, run_id: str) -> list[dict]:
    """The run's cases as the HTML report takes them: key, status, error, case file, report."""
    store.run(run_id)                                      # StoreError for an unknown run
    return [{"key": c["case_key"], "status": c["status"], "error": c["error"],
             **dict(zip(("case", "report"), store.documents(c)))} for c in store.cases(run_id)]


def write_all(store: Store, run_id: str, out: Path) -> list[Path]:
    from .report import run_html

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.jsonl", out / "junit.xml", out / "summary.md", out / "report.html"]
    write_jsonl(store, run_id, paths[0])
    junit(store, run_id).write(paths[1], encoding="unicode", xml_declaration=True)
    paths[2].write_text(summary(store, run_id))
    paths[3].write_text(run_html(store_records(store, run_id), f"crosscheck run {run_id}"))
    return paths
