"""Reference speed beside glmer at harness sizes (issue 15): the generated cases of one seed,
each fitted by glmer and by the reference in both modes in this one process.

    .venv/bin/python benchmarks/harness_size.py [--cases 40] [--seed bench] [--nagq 0,1] [--repeat 1]

Each fit is timed as `crosscheck compare` times it (`RSide.fit` and `PythonSide(mode).fit`, the
saturated constant computed once beforehand), in CPU seconds of this process (R is embedded in
it; BLAS single-threaded), the least of `--repeat` runs. Each reference fit is of a fresh copy of
the case, so that it builds its model and runs every stage itself, as glmer does (in a comparison
the fits of one case share them: `sides._model`). Per (mode, nAGQ), over the comparisons
where both sides fit: the median and p90 of the per-fit ratio reference / glmer, against the
targets median ≤ 1.0 and p90 ≤ 2.0.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections import defaultdict

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # before numpy and R load their BLAS

import numpy as np  # noqa: E402

from crosscheck.generate import draw_case  # noqa: E402
from crosscheck.sides import PythonSide, RSide, saturated  # noqa: E402

MODES = ("lme4", "exact")
TARGET_MEDIAN, TARGET_P90 = 1.0, 2.0


def cpu_time(fit, repeat: int):
    """The least CPU time of `repeat` calls of `fit()`, and the last call's result."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.process_time()
        result = fit()
        best = min(best, time.process_time() - t0)
    return best, result


def measure(cases, nagq, repeat: int) -> list[dict]:
    """One row per (case, nAGQ, mode): both sides' CPU seconds, None where that side refused."""
    r_side, sides = RSide(), {m: PythonSide(m) for m in MODES}
    rows = []
    for name, case in cases:
        C = saturated(case)
        for k in (k for k in nagq if k in case.nagq):
            t_r, r = cpu_time(lambda: r_side.fit(case, k, C), repeat)
            for mode in MODES:
                t_py, py = cpu_time(lambda: sides[mode].fit(copy.copy(case), k, C), repeat)
                rows.append({"case": name, "N": len(case.data), "formula": case.formula,
                             "family": f"{case.family}/{case.link}", "nAGQ": k, "mode": mode,
                             "glmer": t_r if r.ok else None, "reference": t_py if py.ok else None})
            ms = {r_["mode"]: f"{r_['reference'] * 1e3:8.1f}" if r_["reference"] else "refused" for r_ in rows[-2:]}
            print(f"  {name:>12} N={len(case.data):<5} nAGQ={k}  glmer {t_r * 1e3:8.1f}  lme4 {ms['lme4']}  "
                  f"exact {ms['exact']} ms", flush=True)
    return rows


def summary(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (mode, nAGQ): count, median and p90 of reference / glmer where both fit."""
    ratios = defaultdict(list)
    for r in rows:
        if r["glmer"] and r["reference"]:
            ratios[r["mode"], r["nAGQ"]].append(r["reference"] / r["glmer"])
    return {key: {"n": len(v), "median": float(np.median(v)), "p90": float(np.percentile(v, 90))}
            for key, v in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][0]))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--seed", default="bench")
    ap.add_argument("--max-groups", type=int, default=200, help="as the thorough sweep")
    ap.add_argument("--nagq", default="0,1")
    ap.add_argument("--repeat", type=int, default=1, help="timings per fit; the least is kept")
    ap.add_argument("--json", help="write the rows and the summary here")
    a = ap.parse_args(argv)
    nagq = tuple(int(k) for k in a.nagq.split(","))
    cases = [(f"gen:{a.seed}:{i}", draw_case(a.seed, i, max_groups=a.max_groups).to_case(nagq))
             for i in range(a.cases)]
    warm = cases[0][1]
    RSide().fit(warm, warm.nagq[0])
    for mode in MODES:
        PythonSide(mode).fit(warm, warm.nagq[0])
    load0 = os.getloadavg()
    rows = measure(cases, nagq, a.repeat)
    table = summary(rows)
    Ns = [len(c.data) for _, c in cases]
    print(f"\n{a.cases} generated cases (seed {a.seed!r}, up to {a.max_groups} groups, N {min(Ns)}–{max(Ns)}, "
          f"median {int(np.median(Ns))}); CPU time, least of {a.repeat}; load average "
          f"{load0[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end\n")
    print("| mode | nAGQ | comparisons | median reference / glmer | p90 |\n|---|---:|---:|---:|---:|")
    for (mode, k), s in table.items():
        print(f"| {mode} | {k} | {s['n']} | {s['median']:.2f}× | {s['p90']:.2f}× |")
    met = all(s["median"] <= TARGET_MEDIAN and s["p90"] <= TARGET_P90 for s in table.values())
    print(f"\ntargets median ≤ {TARGET_MEDIAN}×, p90 ≤ {TARGET_P90}×: " + ("met" if met else "MISSED"))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"rows": rows, "summary": [{"mode": m, "nAGQ": k, **s} for (m, k), s in table.items()],
                       "load": [load0[0], os.getloadavg()[0]]}, fh, indent=1)


if __name__ == "__main__":
    main()
