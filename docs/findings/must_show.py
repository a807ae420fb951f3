"""Issue 13's must-show numbers from a stored sweep (the figures docs/findings.md's analysis quotes).

    .venv/bin/python docs/findings/must_show.py STORE RUN_ID [--recheck]

Per nAGQ, over the generated cases: exact-mode comparisons both sides fit, how many carry the
never-worse check (`minus2loglik_excess`: exact at its optimum − exact at glmer's parameters)
and how many exceed 1e-8; exact mode's refusals of fits glmer makes (a refusal, not a timeout or
a harness error; a glmer "fit" whose −2logLik is NaN, as at nAGQ 9 where the quadrature nodes
leave the family's domain, is not counted as one); cases refused by both sides at every nAGQ;
timeouts; where the worker-seconds went. With --recheck, each comparison worse by more than 1e-8
is compared again with the code of this checkout (its stored case, that nAGQ, exact mode, the
noise band where failing).
"""
from __future__ import annotations

import json
import sqlite3
import sys

from crosscheck.case import Case
from crosscheck.compare import compare_case

WORSE = 1e-8


def main(store: str, run: str, recheck: bool = False) -> None:
    db = sqlite3.connect(store)
    q = lambda sql, *a: db.execute(sql, (run, *a)).fetchall()   # noqa: E731
    gen = "c.run_id = ? AND c.case_key LIKE 'gen:%'"          # timed-out cases have no name
    print(f"run {run}: {q(f'SELECT count(*) FROM cases c WHERE {gen}')[0][0]} generated cases, "
          f"by status {dict(q(f'SELECT status, count(*) FROM cases c WHERE {gen} GROUP BY status'))}")
    for (k,) in q(f"SELECT DISTINCT f.nagq FROM fits f JOIN cases c USING (case_id) WHERE {gen} ORDER BY 1"):
        both = q(f"""SELECT f.fit_id FROM fits f JOIN cases c USING (case_id) WHERE {gen} AND f.nagq = ?
                     AND f.mode = 'exact' AND f.python_error IS NULL AND f.r_error IS NULL
                     AND f.verdict NOT IN ('timeout', 'harness-error')""", k)
        excess = q(f"""SELECT c.name, d.abs FROM diffs d JOIN fits f USING (fit_id) JOIN cases c USING (case_id)
                       WHERE {gen} AND f.nagq = ? AND f.mode = 'exact' AND d.quantity = 'minus2loglik_excess'""", k)
        worse = sorted(((a, n) for n, a in excess if a is not None and a > WORSE), reverse=True)
        rechecked = [(n, _recheck(db, run, n, k)) for _, n in worse] if recheck else []
        glmer_fits = q(f"""SELECT f.python_error FROM fits f JOIN cases c USING (case_id) WHERE {gen}
                           AND f.nagq = ? AND f.mode = 'exact' AND f.r_error IS NULL AND f.r_m2ll IS NOT NULL
                           AND f.verdict NOT IN ('timeout', 'harness-error')""", k)
        refused = sum(e is not None for (e,) in glmer_fits)
        nan = q(f"""SELECT count(*) FROM fits f JOIN cases c USING (case_id) WHERE {gen} AND f.nagq = ?
                    AND f.mode = 'exact' AND f.r_error IS NULL AND f.r_m2ll IS NULL""", k)[0][0]
        print(f"nAGQ {k}: exact both fit {len(both)}, never-worse check present {len(excess)} "
              f"({100 * len(excess) / max(len(both), 1):.1f} %), worse by > {WORSE:g}: {len(worse)} "
              f"{[(n, f'{a:.3g}') for a, n in worse[:8]]}; glmer fits {len(glmer_fits)} (and {nan} with a NaN "
              f"−2logLik), exact refuses {refused} ({100 * refused / max(len(glmer_fits), 1):.2f} %)")
        for name, (verdict, excess_now) in rechecked:
            print(f"  rechecked {name} nAGQ {k}: {verdict}, exact − glmer's parameters {excess_now:.3g}")
    cases = q(f"""SELECT c.name, min(f.python_error IS NOT NULL AND f.r_error IS NOT NULL) FROM fits f
                  JOIN cases c USING (case_id) WHERE {gen} GROUP BY c.case_id""")
    none = sum(all_refused for _, all_refused in cases)
    print(f"generated cases refused by both sides at every nAGQ (both modes): {none} of {len(cases)} "
          f"({100 * none / max(len(cases), 1):.1f} %)")
    print(worker_seconds(db, run))


def worker_seconds(db, run: str, keys: set[str] | None = None) -> str:
    """Where the sweep's worker-seconds went, from the stored per-comparison timings (glmer's fit
    counted once per nAGQ; the diagnosis without its noise band); over the cases `keys` only when
    given (their case_key)."""
    among, args = ("", (run,)) if keys is None else (" AND case_key IN (SELECT value FROM json_each(?))",
                                                     (run, json.dumps(sorted(keys))))

    def q(sql):
        return db.execute(sql + among, args).fetchall()
    parts = dict.fromkeys(("noise band", "timeouts", "exact fits", "glmer", "lme4 fits", "diagnosis"), 0.0)
    parts["timeouts"] = q("SELECT coalesce(sum(seconds), 0) FROM cases WHERE run_id = ? AND status = 'timeout'")[0][0]
    done = 0.0
    for seconds, report in q("SELECT seconds, report_json FROM cases WHERE run_id = ? AND status = 'done'"):
        done += seconds
        glmer_counted = set()
        for r in json.loads(report)["results"]:
            t = r.get("timings") or {}
            if r["nAGQ"] not in glmer_counted:
                parts["glmer"] += t.get("r_fit", 0.0)
                glmer_counted.add(r["nAGQ"])
            parts[f"{r['mode']} fits"] += t.get("python_fit", 0.0)
            parts["noise band"] += t.get("noise", 0.0)
            parts["diagnosis"] += t.get("diagnosis", 0.0) - t.get("noise", 0.0)
    other = done + parts["timeouts"] - sum(parts.values())
    return (f"worker-seconds {done + parts['timeouts']:.0f}: "
            + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()) + f", other {other:.0f}")


def _recheck(db, run: str, name: str, nAGQ: int) -> tuple[str, float]:
    doc = json.loads(db.execute("SELECT case_json FROM cases WHERE run_id = ? AND name = ?", (run, name)).fetchone()[0])
    case = Case.from_json({**doc, "nagq": [nAGQ]})
    (c,) = compare_case(case, modes=("exact",), noise="failing").results
    (excess,) = [d for d in c.diffs if d.quantity == "minus2loglik_excess"]
    return c.verdict, excess.python - excess.r


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--recheck" in sys.argv[3:])
