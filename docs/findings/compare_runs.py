"""Two stored sweeps over the same case keys, side by side (issue 15's before/after figures).

    .venv/bin/python docs/findings/compare_runs.py OLD_STORE OLD_RUN NEW_STORE NEW_RUN

Over the case keys both runs hold with the same case (digest: a generated key is redrawn when the
strategies or hypothesis change, and was by hypothesis's local constants before 2026-12-01):
seconds, timeouts, where the worker-seconds went
(`must_show.worker_seconds` over those keys), the verdicts per (case, nAGQ, mode): how many
comparisons changed verdict, and the reference's exact-mode −2logLik per (case, nAGQ): how many
fits moved by more than 1e-6, and the largest moves either way (fits whose −2logLik is not finite
in either run left out).
"""
from __future__ import annotations

import json
import math
import sqlite3
import sys

from must_show import worker_seconds

MOVED = 1e-6


def _run(store: str, run: str):
    db = sqlite3.connect(store)
    status, m2ll, verdicts = {}, {}, {}
    for key, st, seconds, digest, report in db.execute(
            "SELECT case_key, status, seconds, digest, report_json FROM cases WHERE run_id = ?", (run,)):
        status[key] = st, seconds, digest
        for r in json.loads(report)["results"] if report else []:
            verdicts[key, r["nAGQ"], r["mode"]] = r["verdict"]
            value = r["python"].get("minus2loglik")
            if r["mode"] == "exact" and value is not None:
                m2ll[key, r["nAGQ"]] = float(value)
    return db, status, m2ll, verdicts


def main(old_store: str, old_run: str, new_store: str, new_run: str) -> None:
    (old_db, old, old_m2ll, old_v), (new_db, new, new_m2ll, new_v) = _run(old_store, old_run), _run(new_store, new_run)
    keys = {k for k in set(old) & set(new) if old[k][2] == new[k][2]}
    print(f"{len(set(old) & set(new)) - len(keys)} shared keys left out: another case in each run (digest)")
    for name, db, run, status in (("old", old_db, old_run, old), ("new", new_db, new_run, new)):
        timeouts = sorted(k for k in keys if status[k][0] == "timeout")
        print(f"{name} {run}: {len(keys)} cases, {sum(status[k][1] for k in keys):.0f} s in cases, "
              f"{len(timeouts)} timeouts {timeouts}\n  {worker_seconds(db, run, keys)}")
    compared = sorted(k for k in set(old_v) & set(new_v) if k[0] in keys)
    changed = [(k, old_v[k], new_v[k]) for k in compared if old_v[k] != new_v[k]]
    print(f"verdicts over {len(compared)} comparisons: {len(changed)} changed"
          + "".join(f"; {k[0]} nAGQ {k[1]} {k[2]} {a} → {b}" for k, a, b in changed[:8]))
    shared = {k for k in set(old_m2ll) & set(new_m2ll) if k[0] in keys}
    moves = sorted((d, k) for d, k in ((new_m2ll[k] - old_m2ll[k], k) for k in shared) if math.isfinite(d))
    lower = [(d, k) for d, k in moves if d < -MOVED]
    higher = [(d, k) for d, k in moves if d > MOVED][::-1]
    print(f"exact −2logLik, new − old, over {len(moves)} fits: {len(lower)} lower, {len(higher)} higher "
          f"(by more than {MOVED:g})")
    for what, rows in (("lowest", lower), ("highest", higher)):
        print(f"  {what}: " + ", ".join(f"{k[0]} nAGQ {k[1]} {d:+.4g}" for d, k in rows[:8]))


if __name__ == "__main__":
    main(*sys.argv[1:5])
