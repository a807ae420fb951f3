"""Self-contained HTML reports: one file, plots embedded as base64 PNG (matplotlib, Agg), every
number also as text in an element with a stable id and its exact value in `data-value`.

* `investigation_html(investigations, attribution)` — `crosscheck investigate`: verdict and the
  stage where the fits part, the error attribution, profiles, PIRLS traces, components,
  convergence diagnostics, the fixed-modes Gauss–Newton comparison.
* `run_html(records)` — a sweep (`crosscheck report`): verdict counts, per-nAGQ distributions of
  log10 differences per quantity, the worst cases with their case files, differences against
  data-set features. `records` are CaseReport JSON dicts, bare or wrapped as the store's JSONL
  lines (`{"key", "status", "case", "report"}`); features come from a record's `features`, else
  from its case file's data when it has one, else what the report itself says (rows, θ).
"""
from __future__ import annotations

import base64
import io
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import jinja2
import numpy as np

from reference_impl.design import build_design
from reference_impl.errors import ModelError

from .calibrate import base_quantity
from .case import Case
from .diffs import Diff

WORST = 20
MARKERS = ("o", "x", "s", "^", "v")                 # marker per mode (lme4, exact, then --impl's); colour C0, C1, …


def _legend(ax) -> None:
    """A legend, where something was plotted with a label (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _styles(modes) -> list[tuple[str, str]]:
    """(mode, marker) for the modes present: the reference's two first, then others by name."""
    present = sorted(set(modes), key=lambda m: (m not in ("lme4", "exact"), m != "lme4", m))
    return [(m, MARKERS[i % len(MARKERS)]) for i, m in enumerate(present)]
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("crosscheck", "templates"),
                          autoescape=jinja2.select_autoescape(["html", "j2"]),
                          undefined=jinja2.StrictUndefined)


def _num(v, digits: int = 10) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}g}" if math.isfinite(v) else str(v)


_ENV.filters["num"] = _num
_ENV.filters["exact"] = lambda v: "" if v is None else (v if isinstance(v, str) else repr(float(v)))
_ENV.filters["slug"] = lambda s: "".join(c if c.isalnum() else "-" for c in str(s)).strip("-")


# -- plots ---------------------------------------------------------------------------------------------
def _figure(nrows: int = 1, ncols: int = 1, width: float = 7.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    with warnings.catch_warnings():            # pyparsing's deprecations inside mathtext labels
        warnings.simplefilter("ignore", DeprecationWarning)
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _floats(values) -> np.ndarray:
    """JSON numbers (non-finite ones are strings there) as a float array."""
    return np.array([float(v) for v in values])


def _marks(ax, curve) -> None:
    """A dotted line and a label at each optimum; optima closer than 1% of the range share one."""
    span = max(curve["x"]) - min(curve["x"]) or 1.0
    groups: list[tuple[float, list[str]]] = []
    for name, x in curve["marks"].items():
        near = next((g for g in groups if abs(g[0] - x) < 0.01 * span), None)
        if near:
            near[1].append(name)
        else:
            groups.append((x, [name]))
    for x, names in groups:
        ax.axvline(x, color="grey", lw=0.8, ls=":")
        ax.annotate(" = ".join(names), (x, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                    ha="center", va="bottom")


def _curve_axes(ax, curve, keys=("value",), diff_ax=None) -> None:
    """A profile: glmer (line) and python (dots) for each component; python − glmer below."""
    for k in keys:
        ax.plot(curve["x"], _floats(curve["r"][k]), "-", label=f"glmer {k}")
        ax.plot(curve["x"], _floats(curve["python"][k]), ".", label=f"python {k}")
    _marks(ax, curve)
    ax.set_title(curve["label"], fontsize=9)
    if diff_ax is not None:
        diff_ax.plot(curve["x"], _floats(curve["python"]["value"]) - _floats(curve["r"]["value"]), ".-")
        diff_ax.set_ylabel("python − glmer", fontsize=8)


def profile_png(curve: dict) -> str:
    fig, ax = _figure(2, 1, height=4.0)
    _curve_axes(ax[0, 0], curve, diff_ax=ax[1, 0])
    ax[0, 0].set_ylabel("deviance function", fontsize=8)
    ax[0, 0].legend(fontsize=7)
    return _png(fig)


def axes_png(curves: list[dict]) -> str:
    n = len(curves)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, ax = _figure(rows, cols, width=3.0 * cols, height=2.5 * rows)
    for i, c in enumerate(curves):
        _curve_axes(ax[i // cols, i % cols], c)
    for j in range(n, rows * cols):
        ax[j // cols, j % cols].axis("off")
    return _png(fig)


def fixed_modes_png(curve: dict) -> str:
    """The Laplace objective and its parts along β: Gauss–Newton (fixed modes) → glmer."""
    fig, ax = _figure(1, 2, width=8.0, height=3.2)
    x, value, ldL2 = curve["x"], _floats(curve["r"]["value"]), _floats(curve["r"]["ldL2"])
    i0 = x.index(0.0)
    ax[0, 0].plot(x, value, "-", label="objective (glmer)")
    ax[0, 0].plot(x, _floats(curve["python"]["value"]), ".", label="objective (python)")
    ax[0, 1].plot(x, ldL2 - ldL2[i0], "-", label="ldL2 − ldL2(GN)")
    rest = value - ldL2
    ax[0, 1].plot(x, rest - rest[i0], "-", label="(objective − ldL2) − same at GN")
    for a in ax[0]:
        _marks(a, curve)
        a.set_xlabel("t: β = β_GN + t (β_glmer − β_GN), θ = glmer's", fontsize=8)
        a.legend(fontsize=7)
    return _png(fig)


def trace_png(traces: dict) -> str:
    fig, ax = _figure(height=2.8)
    for side, t in traces.items():
        if t["pdev"]:
            pdev = _floats(t["pdev"])
            gap = np.maximum(np.abs(pdev - pdev[-1]), 1e-17)
            ax[0, 0].semilogy(range(1, len(gap) + 1), gap, "o-" if side == "r" else "x--",
                              label="glmer" if side == "r" else "python")
    ax[0, 0].set_xlabel("PIRLS iteration", fontsize=8)
    ax[0, 0].set_ylabel("|pdev − final pdev|", fontsize=8)
    ax[0, 0].legend(fontsize=7)
    return _png(fig)


# -- investigate -----------------------------------------------------------------------------------------
def investigation_html(investigations, attribution=None, title: str | None = None) -> str:
    """The `crosscheck investigate` report of one case (one Investigation per nAGQ)."""
    invs = [i.to_json() for i in investigations]
    att = attribution.to_json() if attribution is not None else None
    case = invs[0]["case"] if invs else att["case"]
    for inv in invs:
        for c in inv["axes"]:
            c["maxdiff"] = float(np.nanmax(np.abs(np.subtract(_floats(c["python"]["value"]),
                                                              _floats(c["r"]["value"])))))
        for d in inv["diagnostics"].values():
            d["max_gradient"] = float(np.max(np.abs(_floats(d["gradient"])))) if d["gradient"] else None
        inv["plots"] = {
            "segment": profile_png(inv["segment"]) if inv["segment"] else None,
            "axes": axes_png(inv["axes"]) if inv["axes"] else None,
            "trace": trace_png(inv["traces"]) if inv["traces"] else None,
            "fixed_modes": fixed_modes_png(inv["fixed_modes"]["profile"])
            if inv["fixed_modes"] and inv["fixed_modes"]["profile"] else None}
    return _ENV.get_template("investigation.html.j2").render(
        title=title or f"crosscheck investigate: {case.get('name') or case['formula']}",
        case=case, investigations=invs, attribution=att)


# -- sweeps ------------------------------------------------------------------------------------------------
def case_features(case: Case) -> dict[str, Any]:
    """Rows, and levels and mean rows per level of each grouping factor (empty when the design
    cannot be built)."""
    out: dict[str, Any] = {"nrow": len(case.data)}
    try:
        design = build_design(case.formula, case.data, weights=case.weights, offset=case.offset)
    except ModelError:
        return out
    levels = {t.group: t.nl for t in design.reterms}
    out["groups"] = sum(levels.values())
    out["group_size"] = design.N / max(levels.values()) if levels else None
    return out


def _features(record: dict, report: dict) -> dict[str, Any]:
    if record.get("features"):
        return dict(record["features"])
    case = record.get("case") or {}
    if "data" in case:
        try:
            return case_features(Case.from_json(case))
        except ModelError:
            pass
    return {"nrow": report["case"].get("nrow")}


def records(rows: Iterable[dict]) -> list[dict]:
    """Each record as {key, status, error, report, features, case_file}; bare CaseReport JSON
    dicts are accepted too."""
    out = []
    for i, row in enumerate(rows):
        report = row["report"] if "report" in row else row
        if report is None:
            out.append({"key": row.get("key", str(i)), "status": row.get("status"),
                        "error": row.get("error"), "report": None, "features": {}, "case_file": None})
            continue
        case = row.get("case") or {}
        case_file = None
        if "data" in case:
            case_file = "data:application/json;base64," + base64.b64encode(
                json.dumps(case).encode()).decode()
        out.append({"key": row.get("key") or report["case"].get("name") or str(i),
                    "status": row.get("status", "done"), "error": row.get("error"), "report": report,
                    "features": _features(row, report), "case_file": case_file})
    return out


def _log10(d: dict) -> float | None:
    """log10 of a diff's relative difference (absolute when r is 0), floored at 1e-17."""
    v = d.get("rel")
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        v = d.get("abs")
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return math.log10(max(v, 1e-17))


def run_summary(records: list[dict]) -> dict[str, Any]:
    """The numbers of the run report: verdict counts, per-nAGQ log10 diff distributions per
    quantity, worst cases, per-(case, nAGQ) points for the feature plots."""
    verdicts: dict[tuple, int] = defaultdict(int)
    dist: dict[int, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    worst, points = [], []
    for rec in records:
        if rec["report"] is None:
            verdicts[("harness", rec["status"] or "error")] += 1
            continue
        for res in rec["report"]["results"]:
            verdicts[(res["nAGQ"], res["mode"], res["verdict"])] += 1
            logs = []
            for d in res["diffs"]:
                lv = _log10(d)
                if lv is not None and d["tol"] != "equal":
                    dist[res["nAGQ"]][base_quantity(d["quantity"])][res["mode"]].append(lv)
                    logs.append(lv)
            ranked = [Diff.from_json(d) for d in res["diffs"] if isinstance(d["tol"], dict)
                      and isinstance(d["abs"], (int, float)) and isinstance(d["r"], (int, float))]
            if ranked:
                w = max(ranked, key=lambda d: d.excess)
                worst.append({"key": rec["key"], "nAGQ": res["nAGQ"], "mode": res["mode"],
                              "verdict": res["verdict"], "quantity": w.quantity, "abs": w.abs,
                              "rel": w.rel, "excess": w.excess, "case_file": rec["case_file"]})
            theta = list((res["r"].get("theta") or {}).values())
            points.append({"nAGQ": res["nAGQ"], "mode": res["mode"], "worst_log10": max(logs, default=None),
                           "theta": theta[0] if theta else None, **rec["features"]})
    worst.sort(key=lambda w: -w["excess"])
    table = {k: {q: {m: {"n": len(v), "median": float(np.median(v)), "max": max(v)}
                     for m, v in by_mode.items()} for q, by_mode in sorted(qs.items())}
             for k, qs in sorted(dist.items())}
    return {"verdicts": [{"key": list(k), "count": n} for k, n in sorted(verdicts.items(), key=str)],
            "distributions": table, "raw": {k: {q: dict(m) for q, m in qs.items()} for k, qs in dist.items()},
            "worst": worst[:WORST], "points": points}


def distributions_png(raw: dict[str, dict[str, list[float]]], nAGQ: int) -> str:
    quantities = sorted(raw)
    fig, ax = _figure(height=0.35 * len(quantities) + 1.2)
    for m, (mode, marker) in enumerate(_styles(k for q in quantities for k in raw[q])):
        for i, q in enumerate(quantities):
            v = raw[q].get(mode, [])
            ax[0, 0].plot(v, np.full(len(v), i + (m - 0.5) * 0.3), marker, color=f"C{m}", ms=3,
                          alpha=0.6, label=f"{mode} mode" if i == 0 else None)
    ax[0, 0].set_yticks(range(len(quantities)), quantities, fontsize=7)
    ax[0, 0].set_xlabel("log10 relative difference (python vs glmer)", fontsize=8)
    ax[0, 0].set_title(f"nAGQ = {nAGQ}", fontsize=9)
    _legend(ax[0, 0])
    return _png(fig)


FEATURES = (("nrow", "rows"), ("groups", "groups"), ("group_size", "mean group size"),
            ("theta", "glmer θ (first)"))


def features_png(points: list[dict]) -> str:
    fig, ax = _figure(1, len(FEATURES), width=11.0, height=2.8)
    for i, (key, label) in enumerate(FEATURES):
        for m, (mode, marker) in enumerate(_styles(p["mode"] for p in points)):
            pts = [(p[key], p["worst_log10"]) for p in points
                   if p["mode"] == mode and p.get(key) is not None and p["worst_log10"] is not None]
            if pts:
                ax[0, i].plot(*zip(*pts), marker, color=f"C{m}", ms=3, alpha=0.6, label=f"{mode} mode")
        ax[0, i].set_xlabel(label, fontsize=8)
    ax[0, 0].set_ylabel("worst log10 rel. diff", fontsize=8)
    _legend(ax[0, 0])
    return _png(fig)


def run_html(rows: Iterable[dict], title: str = "crosscheck run") -> str:
    """The run report of a sweep's records (module doc)."""
    recs = records(rows)
    s = run_summary(recs)
    plots = {k: distributions_png(s["raw"][k], k) for k in s["distributions"]}
    return _ENV.get_template("run.html.j2").render(
        title=title, summary=s, plots=plots, features=features_png(s["points"]) if s["points"] else None,
        cases=len(recs))
