"""`crosscheck findings --run RUN_ID`: docs/findings.md from a stored sweep — the verdicts, the
distribution of |python − glmer| per nAGQ, mode and quantity, and every failure class with a
reproducer (shrunk by hypothesis when the case was generated) saved as a case file. A hand-written
analysis between `<!-- analysis -->` and `<!-- /analysis -->` in the existing document is kept.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from .corpus import REPRESENTATIVE, class_name, save_reproducers
from .outputs import QUANTITIES, fmt, harness_line, verdict_table
from .store import Store

PER_FIT_WORST = """
SELECT f.nagq, f.mode, d.base, max(abs(d.abs)) AS worst, max(NOT d.ok AND d.gating) AS outside,
       max(NOT d.ok AND d.gating AND NOT coalesce(d.within_noise, 0)) AS failed
FROM diffs d JOIN fits f USING (fit_id) JOIN cases c USING (case_id)
WHERE c.run_id = ? AND d.abs IS NOT NULL AND c.case_key LIKE ?
GROUP BY f.fit_id, d.base
"""


def distribution_table(store: Store, run_id: str, keys: str = "%") -> str:
    """Per (nAGQ, mode, quantity): how many fits, and percentiles of each fit's largest |Δ|."""
    values: dict[tuple, list[float]] = defaultdict(list)
    outside: dict[tuple, int] = defaultdict(int)
    failed: dict[tuple, int] = defaultdict(int)
    for r in store.query(PER_FIT_WORST, run_id, keys):
        key = (r["nagq"], r["mode"], r["base"])
        values[key].append(r["worst"])
        outside[key] += r["outside"]
        failed[key] += r["failed"]
    order = {q: i for i, q in enumerate(QUANTITIES)}
    lines = ["| nAGQ | mode | quantity | fits | median | 90 % | 99 % | max | past tolerance | beyond noise |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (k, mode, q), v in sorted(values.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                   order.get(kv[0][2], 99), kv[0][2])):
        if q not in order:
            continue
        # order statistics (no interpolation: a fit's worst |Δ| may be inf)
        p50, p90, p99 = np.percentile(v, [50, 90, 99], method="inverted_cdf")
        lines.append(f"| {k} | {mode} | {q} | {len(v)} | {fmt(p50)} | {fmt(p90)} | {fmt(p99)} | "
                     f"{fmt(max(v))} | {outside[(k, mode, q)]} | {failed[(k, mode, q)]} |")
    return "\n".join(lines)


BY_STRATUM = """
SELECT coalesce(c.stratum, '-') AS stratum, count(*) AS fits, sum(f.passed) AS passed,
       sum(f.verdict = 'within-noise') AS noise, sum(f.verdict = 'objective-mismatch') AS objective, sum(f.verdict = 'optimizer-only') AS optimizer,
       sum(f.verdict = 'se-mismatch') AS se, sum(f.verdict LIKE '%refused' AND NOT f.passed) AS refusals
FROM fits f JOIN cases c USING (case_id)
WHERE c.run_id = ? AND f.mode = ? AND c.case_key LIKE 'gen:%'
GROUP BY 1 ORDER BY 1
"""
BY_FAMILY = BY_STRATUM.replace("coalesce(c.stratum, '-') AS stratum", "f.nagq, c.family || '(' || c.link || ')'") \
    .replace("AND c.case_key LIKE 'gen:%'", "").replace("GROUP BY 1 ORDER BY 1", "GROUP BY 1, 2 ORDER BY 1, 2")
_VERDICT_COLUMNS = ("fits | passed | of which within noise | objective-mismatch | optimizer-only | se-mismatch | "
                    "refusals not agreeing |")


def stratum_table(store: Store, run_id: str, mode: str = "lme4") -> str:
    """`mode`'s verdicts of generated cases by stratum (`strategies.STRATA`)."""
    lines = ["| stratum | " + _VERDICT_COLUMNS, "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(v) for v in tuple(r)) + " |"
              for r in store.query(BY_STRATUM, run_id, mode)]
    return "\n".join(lines)


def family_table(store: Store, run_id: str, mode: str) -> str:
    """`mode`'s verdicts by nAGQ and family (link), every case of the run."""
    lines = ["| nAGQ | family | " + _VERDICT_COLUMNS, "|---|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(v) for v in tuple(r)) + " |"
              for r in store.query(BY_FAMILY, run_id, mode)]
    return "\n".join(lines)


def _class_section(store: Store, run_id: str, cls: dict, path: Path, how: str, base: Path) -> str:
    doc = json.loads(path.read_text())
    link = f"[{path.name}]({path.relative_to(base) if path.is_relative_to(base) else path})"
    lines = [f"### {class_name(cls)}", "",
             f"{cls['n']} fits; families: {cls['families']}; worst |Δ|/tolerance "
             f"{fmt(cls['worst'])}.", "",
             f"Reproducer {link}: `{doc['formula']}`, {doc['family']}({doc['link']}), "
             f"{doc['data']['nrow']} rows, nAGQ {doc['nagq'][0]}, {cls['mode']} — {how}.", "",
             *_worst_case(store, run_id, cls),
             f"    crosscheck compare --case {path} {_impl_option(cls['mode'])}",
             f"    crosscheck repro --case {path} {_impl_option(cls['mode'])}   # standalone R and Python scripts", ""]
    return "\n".join(lines)


def _impl_option(mode: str) -> str:
    return f"--mode {mode}" if mode in ("lme4", "exact") else f"--impl {mode}"


def _g(v) -> str:
    return f"{v:.10g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _worst_case(store: Store, run_id: str, cls: dict) -> list[str]:
    """What the class's worst case (as stored, before shrinking) says: both sides' −2 log L or
    refusals, the stage where they part and its differences beyond tolerance, the notes."""
    row = store.query(REPRESENTATIVE, run_id, cls["verdict"], cls["mode"], cls["nagq"], cls["kind"])[0]
    (report,) = store.query("SELECT report_json FROM cases WHERE run_id = ? AND case_key = ?", run_id, row["case_key"])
    res = next((r for r in json.loads(report[0] or "{}").get("results", [])
                if r["nAGQ"] == cls["nagq"] and r["mode"] == cls["mode"]), None)
    if res is None:
        return []
    side = lambda s: (f"refuses: {s['error']}" if s.get("error") else f"−2 log L {_g(s.get('minus2loglik'))}")  # noqa: E731
    bad = [d for d in res["diffs"] if not d.get("ok") and d.get("gating")][:4]
    return [f"Worst case {row['case_key']} (before shrinking): {cls['mode']} {side(res['python'])}; glmer "
            f"{side(res['r'])}; they part at stage {res['stage_failed'] or '-'}"
            + ("; beyond tolerance: " + ", ".join(f"{d['quantity']} {_g(d['python'])} against glmer's {_g(d['r'])}"
                                                  for d in bad) if bad else "") + ".",
            *[f"Note: {n}" for n in res.get("notes", [])[:3]], ""]


ANALYSIS = re.compile(r"<!-- analysis -->.*?<!-- /analysis -->\n", re.S)


def kept_analysis(out: Path) -> str:
    """The hand-written analysis of an existing findings document (between `<!-- analysis -->`
    and `<!-- /analysis -->`), which regenerating keeps; empty when there is none."""
    m = ANALYSIS.search(out.read_text()) if out.is_file() else None
    return m.group(0) if m else ""


def findings(store: Store, run_id: str, out: Path, corpus: Path, budget_s: float,
             max_classes: int = 40) -> str:
    """Write the findings document (and the reproducers into `corpus`); returns its text."""
    analysis = kept_analysis(out)
    run = store.run(run_id)
    versions = store.query("SELECT DISTINCT v.json FROM cases c JOIN versions v USING (versions_id) "
                           "WHERE c.run_id = ?", run_id)
    reproducers = save_reproducers(store, run_id, corpus, max_classes, budget_s)
    config = run["config"]
    parts = [
        f"# Findings of sweep {run_id}", "",
        f"The sweep, configured for {config['cases']} generated cases (seed "
        f"`{config['seed']}`, up to {config['max_groups']} groups) and lme4's "
        f"{', '.join(config['datasets'])}, nAGQ {', '.join(map(str, config['nagq']))} (> 1 for single "
        f"scalar-term models only), modes {', '.join(config['modes'])}. "
        f"{harness_line(store, run_id)}. Started {run['created']}; "
        + (f"finished {run['finished']}." if run["finished"] else f"status {run['status']}."), "",
        "Versions: " + "; ".join(", ".join(f"{k} {v}" for k, v in json.loads(r[0]).items())
                                 for r in versions) + ".", "",
        *([analysis] if analysis else []),
        "## Verdicts per nAGQ and mode", "", verdict_table(store, run_id), "",
        "## Distribution of |python − glmer| (generated cases)", "",
        "Each fit contributes its largest |Δ| per quantity (over θ's, β's, fitted values' elements); "
        "`past tolerance` counts fits where a gating difference of that quantity was outside its "
        "tolerance, `beyond noise` those where it was also more than 2 noise bands away (the "
        "band is measured only where a comparison would otherwise fail).", "",
        distribution_table(store, run_id, "gen:%"), "",
        f"## {config['modes'][0]} by stratum (generated cases)", "",
        stratum_table(store, run_id, config["modes"][0]), "",
        f"## {config['modes'][0]} by nAGQ and family", "", family_table(store, run_id, config["modes"][0]), "",
        "## Failure classes and their reproducers", "",
        "A class is (verdict, mode, nAGQ), a crash of the reference apart. Its worst case was shrunk "
        "by hypothesis (the same verdict for the same family and link) and saved as a case file.", ""]
    parts += [_class_section(store, run_id, cls, path, how, out.parent) for cls, path, how in reproducers]
    text = "\n".join(parts) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
