"""The CI gate on numerical changes: `crosscheck gate --baseline FILE`.

It re-runs a pinned corpus — the committed case files of a directory (`tests/corpus/cases/`) plus
derandomized generated cases (`gen:gate:<i>`, drawn from a fixed seed) — through the sweep, and
compares every (case, nAGQ, mode) with the baseline file, which holds its verdict and, per
quantity (θ, β, objective, SE, … as in `calibrate.base_quantity`), the largest |python − glmer|.

Policy — the gate fails when
- a comparison that passed no longer passes (some difference is past its tolerance, or a side
  refuses), or a failing one changes its verdict (a known discrepancy that turns into another);
- a difference grows past GROWTH × its baseline value (differences below FLOOR count as FLOOR:
  rounding noise at 1e-16 may grow to 1e-12 unnoticed; the tolerances then still apply);
- a pinned comparison did not run, or a new one does not pass.
A comparison that starts to pass (or to match where it was `lme4-noise`), and differences that
shrink, are reported and do not fail;
`--update-baseline` pins the new state.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reference_impl.errors import ModelError

from .case import Case
from .store import Store, dumps

GROWTH = 10.0
FLOOR = 1e-12
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
    return doc


def corpus_files(baseline_path: Path, config: dict[str, Any]) -> list[Path]:
    directory = baseline_path.parent / config["corpus"]
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def measure(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Per comparison: verdict, passed, and the largest |Δ| of each quantity."""
    entries: dict[str, dict[str, Any]] = {}
    for r in store.query(
            "SELECT c.case_key, c.status, f.fit_id, f.nagq, f.mode, f.verdict, f.passed FROM cases c "
            "LEFT JOIN fits f USING (case_id) WHERE c.run_id = ?", run_id):
        if r["fit_id"] is None:
            entries[r["case_key"]] = {"verdict": r["status"], "passed": False, "diffs": {}}
            continue
        diffs = {d["base"]: d["worst"] for d in store.query(
            "SELECT base, max(abs(abs)) AS worst FROM diffs WHERE fit_id = ? AND abs IS NOT NULL "
            "GROUP BY base", r["fit_id"])}
        entries[f"{r['case_key']} nAGQ={r['nagq']} {r['mode']}"] = {
            "verdict": r["verdict"], "passed": bool(r["passed"]), "diffs": diffs}
    return entries


def changes(before: dict[str, dict], after: dict[str, dict]) -> list[Change]:
    """What changed between two `measure`s, by the policy above."""
    out = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if a is None:
            out.append(Change(key, "verdict", b["verdict"], "not run", True, "pinned comparison did not run"))
            continue
        if b is None:
            out.append(Change(key, "verdict", None, a["verdict"], not a["passed"], "new comparison"))
            continue
        if a["verdict"] != b["verdict"] or a["passed"] != b["passed"]:
            improved = a["passed"] and (not b["passed"] or a["verdict"] == "match")
            out.append(Change(key, "verdict", b["verdict"], a["verdict"], not improved,
                              "verdict changed" if not improved else "now passes" if not b["passed"]
                              else "now matches"))
        for q in sorted(set(b["diffs"]) & set(a["diffs"])):
            x, y = b["diffs"][q], a["diffs"][q]
            if _num(y) > GROWTH * max(_num(x), FLOOR):
                out.append(Change(key, q, x, y, True, f"grew more than {GROWTH:g}x"))
            elif _num(x) > FLOOR and _num(y) < _num(x) / GROWTH:
                out.append(Change(key, q, x, y, False, "shrank"))
    return out


def _num(v) -> float:
    return math.inf if v is None or v == "Inf" else float(v)


def baseline_doc(config: dict[str, Any], entries: dict[str, dict], versions: dict) -> dict[str, Any]:
    return {"format": FORMAT, "version": 1,
            "policy": {"growth": GROWTH, "floor": FLOOR, "text": __doc__.split("Policy — ")[1].strip()},
            "config": config, "versions": versions, "entries": entries}


def write_baseline(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json.loads(dumps(doc)), indent=1, sort_keys=True) + "\n")


def render(changes_: list[Change], n: int) -> str:
    """Markdown: what changed (case, nAGQ, mode, quantity, before, after), failing first."""
    failing = [c for c in changes_ if c.failing]
    lines = [f"# crosscheck gate: {'FAILED' if failing else 'passed'}", "",
             f"{n} comparisons; {len(failing)} failing change(s), "
             f"{len(changes_) - len(failing)} other change(s). Policy: a difference may grow to "
             f"{GROWTH:g}x its baseline (floor {FLOOR:g}); passing comparisons must keep passing.", ""]
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


def run_gate(baseline_path: Path, store: Store, executor, out: Path,
             update: bool = False) -> tuple[list[Change], str, str]:
    """Re-run the pinned corpus, compare with the baseline (none yet: with `update` only), write
    `gate.md` and `junit.xml` into `out`; with `update`, write the new baseline. Returns the
    changes, the run id and the Markdown report."""
    from .outputs import junit_xml, verdict_table
    from .sweep import SweepConfig, start, sweep

    doc = None if update and not baseline_path.is_file() else load_baseline(baseline_path)
    gate_config = {**DEFAULTS, **(doc["config"] if doc else {})}
    config = SweepConfig(cases=gate_config["generated"], seed=gate_config["seed"],
                         max_groups=gate_config["max_groups"], datasets=(),
                         files=tuple(map(str, corpus_files(baseline_path, gate_config))),
                         nagq=tuple(gate_config["nagq"]), modes=tuple(gate_config["modes"]))
    for path in config.files:                # a corrupt case file is bad input, not a finding
        Case.load(path)
    run_id = start(store, config)
    sweep(store, run_id, config, executor)
    entries = measure(store, run_id)
    found = changes(doc["entries"], entries) if doc else []
    out.mkdir(parents=True, exist_ok=True)
    text = (render(found, len(entries)) + f"\n## Verdicts of run {run_id}\n\n"
            + verdict_table(store, run_id) + "\n")
    (out / "gate.md").write_text(text)
    junit_xml("crosscheck.gate", junit_cases(found, entries)).write(
        out / "junit.xml", encoding="unicode", xml_declaration=True)
    if update:
        row = store.query("SELECT v.json FROM cases c JOIN versions v USING (versions_id) "
                          "WHERE c.run_id = ? LIMIT 1", run_id)
        write_baseline(baseline_path, baseline_doc(gate_config, entries,
                                                   json.loads(row[0]["json"]) if row else {}))
    return found, run_id, text
