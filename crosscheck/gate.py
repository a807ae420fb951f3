"""The CI gate on numerical changes: `crosscheck gate --baseline FILE`.

It re-runs a pinned corpus — the committed case files of a directory (`tests/corpus/cases/`) plus
derandomized generated cases (`gen:gate:<i>`, drawn from a fixed seed) — through the sweep, and
compares every (case, nAGQ, mode) with the baseline file. The baseline holds, per comparison, the
verdicts it had, and per quantity (θ, β, objective, SE, … as in `calibrate.base_quantity`) the
largest |python − glmer| and its noise band: the larger of the row-order spread of both sides
(`noise.py`) and the spread of the difference itself between CPU paths. `--update-baseline`
measures it on this machine twice — as it is, with the band for every comparison, and again in
workers with numpy's AVX-512 kernels off (`machine.SIMULATED_CPU`) — and records both machines'
fingerprints.

Policy (`changes`) — the gate fails when
- a comparison that passed no longer passes (a difference beyond both its tolerance and its noise
  band, or a side refuses), or a failing one changes to another failing verdict;
- a difference grows past GROWTH × the larger of its baseline value and its baseline noise band
  (and of FLOOR: rounding at 1e-16 may grow to 1e-12 unnoticed; the tolerances then still apply);
- a pinned comparison did not run, or a new one does not pass;
- a comparison ran on another case than the baseline's (`case_identity`, its digest to 10
  significant digits): a generated case is a function of the strategies and the hypothesis
  version, a file case of the file, and differences measured on another case say nothing about
  the code.
A verdict that is among those the baseline saw is no change; a flip between two passing verdicts
(`match` and `within-noise`: both within the spread rounding alone produces), a comparison that
starts to pass, and differences that shrink are reported and do not fail.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reference_impl.errors import ModelError

from .case import Case
from .store import Store, case_digest, dumps

GROWTH = 10.0
FLOOR = 1e-12
IDENTITY_DIGITS = 10               # a case's numbers, as far as its identity goes (`case_identity`)
CASE_CHANGED = ("another case than the baseline's: the case file, the strategies or hypothesis (the baseline "
                "records its version) changed; check why, then --update-baseline")
FORMAT = "glmm-crosscheck-baseline"
DEFAULTS = {"corpus": "cases", "generated": 6, "seed": "gate", "max_groups": 12,
            "nagq": [0, 1, 9], "modes": ["lme4", "exact"]}


class BaselineError(ModelError):
    """A baseline file that is missing or cannot be read; names the file and the field."""


@dataclass
class Change:
    comparison: str                 # "<case key> nAGQ=<k> <mode>"
    quantity: str                   # a quantity, or "verdict"
    before: Any
    after: Any
    failing: bool
    why: str


def load_baseline(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BaselineError(f"baseline {path} does not exist (write it with --update-baseline)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BaselineError(f"baseline {path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BaselineError(f"baseline {path}: not a {FORMAT} file")
    for key in ("config", "entries"):
        if not isinstance(doc.get(key), dict):
            raise BaselineError(f"baseline {path}: field {key!r} must be an object")
    for key, entry in doc["entries"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("verdicts"), list) \
                or not isinstance(entry.get("diffs"), dict):
            raise BaselineError(f"baseline {path}: entry {key!r} lacks 'verdicts' (a list) or 'diffs' "
                                "(rewrite it with --update-baseline)")
    return doc


def corpus_files(baseline_path: Path, config: dict[str, Any]) -> list[Path]:
    directory = baseline_path.parent / config["corpus"]
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def measure(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Per comparison: its verdict, passed, its case (`case_identity`), and per quantity the largest
    |Δ| and its noise band."""
    entries: dict[str, dict[str, Any]] = {}
    digests = {r["case_key"]: [d] if (d := case_identity(r["case_json"])) else []
               for r in store.query("SELECT case_key, case_json FROM cases WHERE run_id = ?", run_id)}
    for r in store.query(
            "SELECT c.case_key, c.status, f.fit_id, f.nagq, f.mode, f.verdict, f.passed FROM cases c "
            "LEFT JOIN fits f USING (case_id) WHERE c.run_id = ?", run_id):
        if r["fit_id"] is None:
            entries[r["case_key"]] = {"verdicts": [r["status"]], "passed": False, "diffs": {}, "noise": {},
                                      "digests": digests[r["case_key"]]}
            continue
        rows = store.query("SELECT base, max(abs(abs)) AS worst, max(noise) AS noise FROM diffs "
                           "WHERE fit_id = ? AND abs IS NOT NULL GROUP BY base", r["fit_id"])
        label = r["verdict"] + (" (reasons differ)" if r["verdict"] == "both-refused" and not r["passed"] else "")
        entries[f"{r['case_key']} nAGQ={r['nagq']} {r['mode']}"] = {
            "verdicts": [label], "passed": bool(r["passed"]), "digests": digests[r["case_key"]],
            "diffs": {d["base"]: d["worst"] for d in rows},
            "noise": {d["base"]: d["noise"] for d in rows if d["noise"] is not None}}
    return entries


def case_identity(case_json: str | None) -> str | None:
    """The digest of a stored case with every number rounded to IDENTITY_DIGITS significant digits:
    the same key drawn on another CPU path is the same case, though its data may differ in the last
    bits (gen:gate:3's offset column is numpy's SIMD log of the exposure; a Gamma response scales
    with μ = numpy's exp), while a redrawn or edited case differs in far more than that."""
    if case_json is None:
        return None

    def rounded(v):
        if isinstance(v, float):
            return float(f"{v:.{IDENTITY_DIGITS}g}")
        if isinstance(v, list):
            return [rounded(x) for x in v]
        return {k: rounded(x) for k, x in v.items()} if isinstance(v, dict) else v
    return case_digest(rounded(json.loads(case_json)))


def merge(measured: list[dict[str, dict]]) -> dict[str, dict]:
    """One baseline from the measurements of several CPU paths: every verdict seen, passed only
    where it passed on all, the largest difference, and a band that covers each path's row-order
    spread and how far the difference itself moved between paths."""
    out = {}
    for key in sorted(set().union(*measured)):
        seen = [m[key] for m in measured if key in m]
        diffs, noise = {}, {}
        for q in set().union(*(e["diffs"] for e in seen)):
            values = [_num(e["diffs"][q]) for e in seen if q in e["diffs"]]
            diffs[q] = max(values)
            bands = [e["noise"][q] for e in seen if q in e.get("noise", {})]
            noise[q] = max([*bands, max(values) - min(values) if max(values) != min(values) else 0.0])
        out[key] = {"verdicts": sorted({v for e in seen for v in e["verdicts"]}),
                    "passed": all(e["passed"] for e in seen) and len(seen) == len(measured),
                    "digests": sorted({d for e in seen for d in e.get("digests", [])}),
                    "diffs": diffs, "noise": noise}
    return out


def changes(before: dict[str, dict], after: dict[str, dict]) -> list[Change]:
    """What changed between a baseline and a `measure`, by the policy above."""
    out = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if a is None:
            out.append(Change(key, "verdict", _verdicts(b), "not run", True, "pinned comparison did not run"))
            continue
        if b is None:
            out.append(Change(key, "verdict", None, _verdicts(a), not a["passed"], "new comparison"))
            continue
        if b.get("digests") and a.get("digests") and not set(a["digests"]) <= set(b["digests"]):
            out.append(Change(key, "case", _short(b["digests"]), _short(a["digests"]), True, CASE_CHANGED))
            continue
        (verdict,) = a["verdicts"]
        if verdict not in b["verdicts"]:
            why, failing = (("still passes", False) if a["passed"] and b["passed"]
                            else ("now passes", False) if a["passed"]
                            else ("stopped passing", True) if b["passed"]
                            else ("a failing comparison changed its verdict", True))
            out.append(Change(key, "verdict", _verdicts(b), verdict, failing, why))
        for q in sorted(set(b["diffs"]) & set(a["diffs"])):
            x, y = _num(b["diffs"][q]), _num(a["diffs"][q])
            band = _num(b.get("noise", {}).get(q, 0.0))
            if y > GROWTH * max(x, band, FLOOR):
                out.append(Change(key, q, x, y, True, f"grew past {GROWTH:g}x max(baseline, noise band "
                                                      f"{band:.2g})"))
            elif x > max(band, FLOOR) and y < x / GROWTH:
                out.append(Change(key, q, x, y, False, "shrank"))
    return out


def _short(digests: list[str]) -> str:
    return " / ".join(d[:12] for d in digests)


def _verdicts(entry: dict) -> str:
    return " / ".join(entry["verdicts"])


def _num(v) -> float:
    return math.inf if v is None or v == "Inf" else float(v)


def baseline_doc(config: dict[str, Any], entries: dict[str, dict], versions: dict,
                 machines: list[dict]) -> dict[str, Any]:
    return {"format": FORMAT, "version": 2,
            "policy": {"growth": GROWTH, "floor": FLOOR, "text": __doc__.split("Policy (`changes`) — ")[1].strip()},
            "config": config, "versions": versions, "machines": machines, "entries": entries}


def write_baseline(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json.loads(dumps(doc)), indent=1, sort_keys=True) + "\n")


def render(changes_: list[Change], n: int) -> str:
    """Markdown: what changed (case, nAGQ, mode, quantity, before, after), failing first."""
    failing = [c for c in changes_ if c.failing]
    lines = [f"# crosscheck gate: {'FAILED' if failing else 'passed'}", "",
             f"{n} comparisons; {len(failing)} failing change(s), "
             f"{len(changes_) - len(failing)} other change(s). Policy: a difference may grow to "
             f"{GROWTH:g}x the larger of its baseline and its noise band (floor {FLOOR:g}); passing "
             "comparisons must keep passing.", ""]
    if changes_:
        lines += ["| | comparison | quantity | before | after | why |", "|---|---|---|---|---|---|"]
        lines += [f"| {'FAIL' if c.failing else 'note'} | {c.comparison} | {c.quantity} | "
                  f"{_show(c.before)} | {_show(c.after)} | {c.why} |"
                  for c in sorted(changes_, key=lambda c: not c.failing)]
    return "\n".join(lines) + "\n"


def _show(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def junit_cases(changes_: list[Change], entries: dict[str, dict]) -> list[dict]:
    by_entry: dict[str, list[Change]] = {}
    for c in changes_:
        by_entry.setdefault(c.comparison, []).append(c)
    out = []
    for key in sorted(set(entries) | set(by_entry)):
        t = {"classname": "crosscheck.gate", "name": key}
        failed = [c for c in by_entry.get(key, []) if c.failing]
        if failed:
            t["failure"] = (failed[0].why, "\n".join(
                f"{c.quantity}: before {_show(c.before)} after {_show(c.after)} ({c.why})" for c in failed))
        out.append(t)
    return out


def run_gate(baseline_path: Path, store: Store, executor, out: Path, update: bool = False,
             simulated=None, modes: tuple[str, ...] | None = None) -> tuple[list[Change], str, str]:
    """Re-run the pinned corpus, compare with the baseline, write `gate.md` and `junit.xml` into
    `out`. With `update`, measure the noise band of every comparison, measure again with the
    executor `simulated` (workers on another CPU path, `machine.SIMULATED_CPU`) and write the new
    baseline from both instead. `modes`: the implementations gated (`--impl`): with `update` they
    replace the baseline's; otherwise they must be the baseline's, which was measured on them.
    Returns the changes, the run id and the Markdown report."""
    from .outputs import junit_xml, verdict_table
    from .sweep import SweepConfig, start, sweep

    doc = None if update else load_baseline(baseline_path)
    gate_config = {**DEFAULTS, **(doc or _lenient(baseline_path))["config"]}
    if modes is not None and update:
        gate_config["modes"] = list(modes)
    elif modes is not None and list(modes) != list(gate_config["modes"]):
        raise BaselineError(f"{baseline_path} gates {', '.join(gate_config['modes'])}, not "
                            f"{', '.join(modes)}: measure a baseline of its own with --update-baseline")
    config = SweepConfig(cases=gate_config["generated"], seed=gate_config["seed"],
                         max_groups=gate_config["max_groups"], datasets=(),
                         files=tuple(map(str, corpus_files(baseline_path, gate_config))),
                         nagq=tuple(gate_config["nagq"]), modes=tuple(gate_config["modes"]),
                         noise="all" if update else "failing")
    for path in config.files:                # a corrupt case file is bad input, not a finding
        Case.load(path)
    runs = [(executor, config)] + ([(simulated, replace(config, noise="failing"))] if update and simulated else [])
    measured, machines = [], []
    for run_executor, run_config in runs:
        run_id = start(store, run_config)
        sweep(store, run_id, run_config, run_executor)
        measured.append(measure(store, run_id))
        machines += _machines(store, run_id)
    entries = merge(measured)
    found = changes(doc["entries"], entries) if doc else []
    out.mkdir(parents=True, exist_ok=True)
    seen = "; ".join(f"{m.get('cpu')} (numpy SIMD up to {(m.get('numpy SIMD') or '-').split()[-1]}, "
                     f"OpenBLAS {m.get('OpenBLAS core')})" for m in (doc or {}).get("machines", []))
    text = (render(found, len(entries)) + (f"\nBaseline measured on: {seen}.\n" if seen else "")
            + f"\n## Verdicts of run {run_id}\n\n" + verdict_table(store, run_id) + "\n")
    (out / "gate.md").write_text(text)
    junit_xml("crosscheck.gate", junit_cases(found, entries)).write(
        out / "junit.xml", encoding="unicode", xml_declaration=True)
    if update:
        row = store.query("SELECT v.json FROM cases c JOIN versions v USING (versions_id) "
                          "WHERE c.run_id = ? LIMIT 1", run_id)
        write_baseline(baseline_path, baseline_doc(gate_config, entries,
                                                   json.loads(row[0]["json"]) if row else {}, machines))
    return found, run_id, text


def _lenient(path: Path) -> dict[str, Any]:
    """The configuration of the baseline being rewritten (any version; none: the defaults)."""
    try:
        doc = json.loads(path.read_text())
        return {"config": doc["config"] if isinstance(doc.get("config"), dict) else {}}
    except (OSError, ValueError, AttributeError):
        return {"config": {}}


def _machines(store: Store, run_id: str) -> list[dict]:
    """The machine fingerprints (`machine.fingerprint`) a run's results were computed on."""
    from . import machine

    found = {dumps(machine.of(json.loads(r["json"])))
             for r in store.query("SELECT DISTINCT v.json FROM cases c JOIN versions v USING (versions_id) "
                                  "WHERE c.run_id = ?", run_id)}
    return [json.loads(f) for f in sorted(found)]
