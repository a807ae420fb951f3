"""Text rendering of a `CaseReport`: one readable table per (nAGQ, mode)."""
from __future__ import annotations

import math

from .compare import CaseReport, Comparison
from .diagnose import STAGES
from .diffs import Diff, worst


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.12g}" if math.isfinite(v) else str(v)
    text = str(v)
    return text if len(text) <= 22 else text[:21] + "…"


def _tol(d: Diff) -> str:
    if not isinstance(d.tol, dict):
        return d.tol
    parts = [f"rel {d.tol['rel']:.0e}" if d.tol["rel"] else "", f"abs {d.tol['abs']:.0e}" if d.tol["abs"] else ""]
    return " + ".join(p for p in parts if p) or "exact"


def _row(d: Diff) -> str:
    delta = "-" if d.abs is None else f"{d.abs:.2e}"
    return (f"  {d.quantity[:34]:<34} {_num(d.python):>22} {_num(d.r):>22} {delta:>9}  "
            f"{_tol(d):<21} {'ok' if d.ok else 'FAIL' if d.gating else 'info'}")


def shown_diffs(c: Comparison, verbose: bool) -> list[Diff]:
    """All diffs when verbose; else every failure, every optimum (stage 2) diff, and the worst
    diff of each other stage that was reached."""
    if verbose:
        return c.diffs
    out = []
    for stage in range(len(STAGES)):
        of_stage = [d for d in c.diffs if d.stage == stage]
        if stage == 2:
            out += of_stage
        else:
            w = worst(of_stage)
            out += [d for d in of_stage if not d.ok] or ([w] if w else [])
    return out


def render_text(report: CaseReport, verbose: bool = False) -> str:
    case = report.case
    link = f"({case.link})" if case.link else ""
    lines = [f"case {case.name or '(unnamed)'}: {case.formula}  {case.family}{link}, "
             f"{len(case.data)} rows" + (f", weights {case.weights}" if case.weights else "")
             + (f", offset {case.offset}" if case.offset else ""),
             f"saturated -2logLik (from the data): {_num(report.saturated)}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items())]
    header = (f"  {'quantity':<34} {'python':>22} {'glmer':>22} {'|diff|':>9}  {'tolerance':<21} ok")
    for c in report.results:
        stage = "" if c.diagnosis.stage_failed is None else f" (stage {STAGES[c.diagnosis.stage_failed]})"
        lines += ["", f"nAGQ {c.nAGQ} · {c.mode} mode · {c.verdict}{stage}"]
        if c.diagnosis.refusal:
            r = c.diagnosis.refusal
            lines += [f"  python: {r.python or 'fitted'}", f"  glmer:  {r.r or 'fitted'}"]
            if r.agree is not None:
                lines.append(f"  the reasons {'agree' if r.agree else 'differ'}")
        else:
            lines += [header] + [_row(d) for d in shown_diffs(c, verbose)]
        if c.referee is not None:
            lines.append("  glmmTMB (referee, Laplace): " + (
                c.referee.error or f"-2logLik {_num(c.referee.minus2loglik)}, theta "
                + " ".join(_num(t) for t in c.referee.theta)))
            lines += [_row(d) for d in c.referee_diffs if verbose or not d.ok]
        for text in [*c.diagnosis.notes, *(f"glmer: {m}" for m in c.r.messages)]:
            lines.append(f"  note: {text}")
    passed = sum(c.passed for c in report.results)
    lines += ["", f"{passed} of {len(report.results)} comparisons passed"]
    return "\n".join(lines)
