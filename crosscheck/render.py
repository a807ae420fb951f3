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
    band = "-" if d.noise is None else f"{d.noise:.1e}"
    units = "" if d.noise_units is None else f"{d.noise_units:.2g}"
    state = ("ok" if d.ok else "info" if not d.gating else "noise" if d.within_noise else "FAIL")
    return (f"  {d.quantity[:34]:<34} {_num(d.python):>22} {_num(d.r):>22} {delta:>9}  "
            f"{_tol(d):<21} {band:>8} {units:>7}  {state}")


def _conditioning(k: dict) -> str:
    """Why a comparison is noisy (`Diagnoser.conditioning`), one line."""
    if not k:
        return ""
    return ("  conditioning: cond(X) " + _g(k.get("cond_X"), 3) + ", cond(Hessian) "
            + _g(k.get("cond_hessian"), 3) + ", PIRLS at glmer's optimum: "
            + f"{_g(k.get('pirls_iterations'))} iteration(s), {_g(k.get('pirls_halvings'))} step-halving(s)")


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
    header = (f"  {'quantity':<34} {'python':>22} {'glmer':>22} {'|diff|':>9}  {'tolerance':<21} "
              f"{'noise':>8} {'bands':>7}  ok")
    for c in report.results:
        stage = "" if c.diagnosis.stage_failed is None else f" (stage {STAGES[c.diagnosis.stage_failed]})"
        lines += ["", f"nAGQ {c.nAGQ} · {c.mode} mode · {c.verdict}{stage}"]
        if c.diagnosis.refusal:
            r = c.diagnosis.refusal
            lines += [f"  python: {r.python or 'fitted'}", f"  glmer:  {r.r or 'fitted'}"]
            if r.agree is not None:
                lines.append(f"  the reasons {'agree' if r.agree else 'differ'}")
        else:
            lines += [header] + [_row(d) for d in shown_diffs(c, verbose)] + [_conditioning(c.diagnosis.conditioning)]
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


# -- investigate and attribution ----------------------------------------------------------------------
def _g(v, digits: int = 10) -> str:
    return "-" if v is None else (f"{v:.{digits}g}" if isinstance(v, (int, float)) else str(v))


def render_investigation(inv) -> str:
    """Text view of an `investigate.Investigation` (the same numbers as the HTML report)."""
    lines = [f"nAGQ {inv.nAGQ} · {inv.mode} mode · {inv.verdict}"
             + (f" (the fits part at stage {inv.stage_failed})" if inv.stage_failed else
                " (no stage parts the fits)")]
    lines += [f"  note: {n}" for n in inv.notes]
    if inv.comparison.get("conditioning"):
        lines.append(_conditioning(inv.comparison["conditioning"]))
    if not inv.optima:
        return "\n".join(lines)
    lines.append(f"  {'parameter':<28} {'glmer optimum':>22} {'python optimum':>22} {'|diff|':>9}")
    for name, a, b in zip(inv.names, inv.optima["r"], inv.optima["python"]):
        lines.append(f"  {name:<28} {a:>22.15g} {b:>22.15g} {abs(a - b):>9.2e}")
    lines.append(f"  {'at optimum of':<16} {'by':<8} " + " ".join(f"{q:>20}" for q in ("value", "ldL2", "ussq", "drsum")))
    for key, ev in inv.at_optima.items():
        side, where = key.split("@")
        lines.append(f"  {'glmer' if where == 'r' else 'python':<16} {'glmer' if side == 'r' else 'python':<8} "
                     + " ".join(f"{ev[q]:>20.15g}" for q in ("value", "ldL2", "ussq", "drsum")))
    if inv.segment is not None:
        s = inv.segment
        worst = max(abs(a - b) for a, b in zip(s.python["value"], s.r["value"]))
        lines.append(f"  segment glmer → python (t = {s.x[0]:g}…{s.x[-1]:g}): objective at t = 0, 1: "
                     f"{_g(s.r['value'][s.x.index(0.0)] if 0.0 in s.x else None, 15)}, "
                     f"{_g(s.r['value'][s.x.index(1.0)] if 1.0 in s.x else None, 15)}; "
                     f"max |python − glmer| along it {worst:.2e}")
    for a in inv.axes:
        worst = max(abs(p - r) for p, r in zip(a.python["value"], a.r["value"]))
        lines.append(f"  axis {a.label}: {a.x[0]:.6g}…{a.x[-1]:.6g}, objective {min(a.r['value']):.10g}…"
                     f"{max(a.r['value']):.10g}, max |python − glmer| {worst:.2e}")
    tr = inv.traces
    if tr:
        lines.append("  PIRLS at (" + ", ".join(f"{v:.8g}" for v in inv.trace_at) + "):")
        lines.append(f"    {'iteration':>9} {'glmer pdev':>22} {'halvings':>8} {'python pdev':>22} {'halvings':>8}")
        r, p = tr["r"], tr["python"]
        for i in range(max(r["iterations"], p["iterations"])):
            cell = lambda t: (f"{t['pdev'][i]:>22.15g} {t['halvings'][i]:>8}" if i < t["iterations"]
                              else f"{'':>22} {'':>8}")
            lines.append(f"    {i + 1:>9} {cell(r)} {cell(p)}")
        for side, t in (("glmer", r), ("python", p)):
            if t["error"]:
                lines.append(f"    {side}: {t['error']}")
    for side, d in inv.diagnostics.items():
        lines.append(f"  {'glmer' if side == 'r' else 'python'}: converged {d['converged']}, {d['optimizer']} "
                     f"{d['feval']} evaluations" + (f", gradient max {max(map(abs, d['gradient'])):.2e}"
                                                    if d.get("gradient") else "")
                     + (f", Hessian eigenvalues {', '.join(f'{e:.4g}' for e in d['hessian_eigenvalues'])}"
                        if d.get("hessian_eigenvalues") else ""))
        lines += [f"    {m}" for m in (*d["checkConv"], *d["messages"])]
    fm = inv.fixed_modes
    if fm is not None:
        lines.append(f"  fixed-modes Gauss–Newton β at glmer's θ ({fm.iterations} steps"
                     + ("" if fm.converged else ", not converged") + "): "
                     + ", ".join(f"{b:.10g}" for b in fm.beta) + f"; glmer's β: "
                     + ", ".join(f"{b:.10g}" for b in fm.glmer_beta) + f"; max |diff| {fm.max_abs_diff:.2e}")
        if fm.profile is not None:
            v, ld = fm.profile.r["value"], fm.profile.r["ldL2"]
            i0, i1 = fm.profile.x.index(0.0), fm.profile.x.index(1.0)
            lines.append(f"    glmer's objective at the Gauss–Newton β {v[i0]:.10g} (ldL2 {ld[i0]:.10g}, "
                         f"rest {v[i0] - ld[i0]:.10g}); at glmer's β {v[i1]:.10g} (ldL2 {ld[i1]:.10g}, "
                         f"rest {v[i1] - ld[i1]:.10g})")
    return "\n".join(lines)


def render_attribution(att) -> str:
    """Text view of an `attribution.Attribution`: the error components per nAGQ."""
    lines = ["error attribution (−2logLik at each optimum, absolute scale)",
             f"  truth: {att.truth_method}", f"  truth −2logLik {att.truth.minus2loglik:.12g} at θ "
             + ", ".join(f"{v:.8g}" for v in att.truth.theta) + "; β " + ", ".join(f"{v:.8g}" for v in att.truth.beta)]
    for e in att.evidence:
        lines.append(f"    AGQ {e['nAGQ']}: " + (e.get("error") or f"{e['minus2loglik']:.12g}"
                                                  + (f" (change {e['change']:+.1e})" if e["change"] is not None else "")))
    lines += [f"  note: {n}" for n in att.notes]
    lines.append(f"  {'nAGQ':>4} {'component':<16} {'Δ −2logLik':>12} {'max|Δθ|':>10} {'max|Δβ|':>10}")
    for row in att.rows:
        for c in row.components:
            lines.append(f"  {row.nAGQ:>4} {c.name:<16} {c.d_minus2loglik:>+12.3e} {c.d_theta:>10.2e} {c.d_beta:>10.2e}")
        if row.truth_cost is not None:
            lines.append(f"  {row.nAGQ:>4} {'truth cost':<16} {row.truth_cost:>+12.3e}")
        lines += [f"       note: {n}" for n in row.notes]
    return "\n".join(lines)
