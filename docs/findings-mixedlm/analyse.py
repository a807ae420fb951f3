"""The numbers of docs/findings-mixedlm.md's analysis, from the census's results store:

    python docs/findings-mixedlm/analyse.py path/to/results.sqlite

(standard library and numpy only). Per comparison: the reference's exact objective at mixedlm's
optimum and at glmer's (the diagnosis's note), stage 1's values of both deviance functions, the
verdicts, and the fit times as `crosscheck run` recorded them."""
import json, re, sqlite3, sys
from collections import Counter, defaultdict
import numpy as np

con = sqlite3.connect(sys.argv[1]); con.row_factory = sqlite3.Row
run = con.execute("select run_id from runs order by created desc limit 1").fetchone()[0]
rows = con.execute("select c.case_key, c.family, c.link, c.structure, c.stratum, c.nrow, c.report_json, c.status "
                   "from cases c where run_id=?", (run,)).fetchall()
EXACT = re.compile(r"exact objective .* at mixedlm's optimum: ([-0-9.e+inf]+); at glmer's: ([-0-9.e+inf]+)")
status = Counter(r["status"] for r in rows)
print("run", run, "cases", len(rows), dict(status))
closer, n_obj, obj_examples = Counter(), 0, []
excess, boundary, opt_fams = [], Counter(), Counter()
refused_by_glmer, refused_by_ml, ml_errors = Counter(), Counter(), Counter()
ratios = defaultdict(list)
better = Counter()
for r in rows:
    if not r["report_json"]:
        continue
    rep = json.loads(r["report_json"])
    fam = f"{r['family']}({r['link']})" if r["family"] else "?"
    for res in rep["results"]:
        k, v = res["nAGQ"], res["verdict"]
        t = res.get("timings") or {}
        if t.get("python_fit") and t.get("r_fit") and res["python"].get("error") is None and res["r"].get("error") is None:
            ratios[k].append(t["python_fit"] / t["r_fit"])
        m = next((EXACT.search(n) for n in res["notes"] if EXACT.search(n)), None)
        if m:
            ex_ml, ex_r = float(m.group(1)), float(m.group(2))
            better["mixedlm better" if ex_ml < ex_r - 1e-9 * (1 + abs(ex_r)) else
                   "glmer better" if ex_ml > ex_r + 1e-9 * (1 + abs(ex_r)) else "same"] += 1
        if v == "objective-mismatch" and m:
            d = {x["quantity"]: x for x in res["diffs"]}
            n_obj += 1
            for where, ex in (("r", ex_r), ("python", ex_ml)):
                q = d.get(f"objective@{where}")
                if q is None or not isinstance(q["python"], float) or not isinstance(q["r"], float):
                    closer["mixedlm's deviance function gives no finite value"] += 1
                    continue
                e_ml, e_r = abs(q["python"] - ex), abs(q["r"] - ex)
                closer["mixedlm closer to exact" if e_ml < e_r else "glmer closer to exact"] += 1
            obj_examples.append((r["case_key"], k, fam, r["stratum"]))
        if v == "optimizer-only":
            x = next((x for x in res["diffs"] if x["quantity"] == "minus2loglik_excess"), None)
            if x:
                excess.append(x["python"] - x["r"])
            th = list((res["python"].get("theta") or {}).values())
            boundary["θ all 0" if th and all(abs(t) < 1e-8 for t in th) else "θ not all 0"] += 1
            opt_fams[fam] += 1
        if v == "r-refused":
            refused_by_glmer[fam] += 1
        if v == "python-refused":
            refused_by_ml[fam] += 1
            ml_errors[res["python"]["error"][:90]] += 1
print("exact objective, mixedlm's optimum vs glmer's (all comparisons with both):", dict(better))
print("objective-mismatch comparisons", n_obj, dict(closer))
print("  examples", obj_examples[:8])
if excess:
    e = np.array(excess); print("optimizer-only: n", len(e), "excess median", np.median(e), "max", e.max(), "min", e.min(), dict(boundary))
    print("  by family", dict(opt_fams))
print("r-refused (mixedlm fits, glmer refuses)", dict(refused_by_glmer))
print("python-refused", dict(refused_by_ml), dict(ml_errors))
for k, v in sorted(ratios.items()):
    print(f"time mixedlm/glmer nAGQ {k}: n {len(v)} median {np.median(v):.2f} p90 {np.percentile(v, 90):.2f}")
BOTH_FIT = ("match", "within-noise", "optimizer-only", "objective-mismatch", "design-mismatch", "se-mismatch")
groups = defaultdict(Counter)
for r in rows:
    if not r["report_json"] or not r["case_key"].startswith("gen:"):
        continue
    kind = "Gamma, inverse.gaussian, gaussian" if r["family"] in ("Gamma", "inverse.gaussian", "gaussian") else r["family"]
    for res in json.loads(r["report_json"])["results"]:
        if res["verdict"] in BOTH_FIT:
            groups[kind, res["nAGQ"]]["both fit"] += 1
            groups[kind, res["nAGQ"]][res["verdict"]] += 1
for (kind, k), c in sorted(groups.items()):
    print(f"generated, {kind}, nAGQ {k}: both fit {c['both fit']}, match {c['match']}, optimizer-only {c['optimizer-only']}")
